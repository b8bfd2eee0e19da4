//! The deployment files agree with the binary: every manifest parses, every `--flag` they
//! use exists in `--help`, probe paths and ports match the admin endpoint, the scrape port
//! matches, and stop timeouts leave room for the shutdown grace. A renamed flag, path or
//! default port breaks one of these tests.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use entra_redis_proxy::admin::{HEALTH_PATH, METRICS_PATH, READY_PATH};
use entra_redis_proxy::config::{duration, Settings};
use yaml_rust2::{Yaml, YamlLoader};

/// The repository root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every file under `deploy/` (recursively) whose name ends with one of `exts`.
fn deploy_files(exts: &[&str]) -> Vec<PathBuf> {
    fn walk(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, exts, out);
            } else if exts
                .iter()
                .any(|e| path.to_string_lossy().ends_with(&format!(".{e}")))
            {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join("deploy"), exts, &mut out);
    out.sort();
    out
}

/// Every YAML document of every manifest, with its file name.
fn yaml_docs() -> Vec<(String, Yaml)> {
    let files = deploy_files(&["yaml", "yml"]);
    assert!(files.len() >= 5, "manifests found: {files:?}");
    let mut docs = Vec::new();
    for f in files {
        let name = f.strip_prefix(root()).unwrap().display().to_string();
        let text = std::fs::read_to_string(&f).unwrap();
        let parsed = YamlLoader::load_from_str(&text)
            .unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"));
        assert!(!parsed.is_empty(), "{name} is empty");
        for d in parsed {
            assert!(
                d.as_hash().is_some(),
                "{name}: a document that is not a mapping"
            );
            docs.push((name.clone(), d));
        }
    }
    docs
}

/// The long flags the binary's `--help` lists.
fn help_flags() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_entra-redis-proxy"))
        .arg("--help")
        .output()
        .expect("run the binary");
    assert!(out.status.success(), "--help failed: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    flags_in(&text)
}

/// Every `--flag` token in `text` (the name only, without `=value`).
fn flags_in(text: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("--") {
        let start = i + pos;
        let preceded_ok = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        let mut end = start + 2;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'-') {
            end += 1;
        }
        if preceded_ok && end > start + 2 && bytes[start + 2].is_ascii_alphabetic() {
            flags.insert(text[start..end].to_owned());
        }
        i = end.max(start + 2);
    }
    flags
}

/// All strings in a YAML tree.
fn strings(y: &Yaml, out: &mut Vec<String>) {
    match y {
        Yaml::String(s) => out.push(s.clone()),
        Yaml::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Yaml::Hash(h) => h.iter().for_each(|(k, v)| {
            strings(k, out);
            strings(v, out);
        }),
        _ => {}
    }
}

/// Flags in the proxy's command lines: YAML strings that start with `--`, the Dockerfile's
/// `ENTRYPOINT`/`CMD` arrays, the unit's `ExecStart`.
fn used_flags() -> Vec<(String, String)> {
    let mut used = Vec::new();
    for (file, doc) in yaml_docs() {
        let mut all = Vec::new();
        strings(&doc, &mut all);
        for s in all.iter().filter(|s| s.starts_with("--")) {
            for f in flags_in(s) {
                used.push((file.clone(), f));
            }
        }
    }
    for line in read("Dockerfile").lines() {
        for kw in ["CMD [", "ENTRYPOINT ["] {
            if let Some(rest) = line.strip_prefix(kw) {
                let arr: Vec<String> = serde_json::from_str(&format!("[{rest}")).unwrap();
                for a in arr.iter().filter(|a| a.starts_with("--")) {
                    used.extend(flags_in(a).into_iter().map(|f| ("Dockerfile".into(), f)));
                }
            }
        }
    }
    for unit in deploy_files(&["service"]) {
        let name = unit.strip_prefix(root()).unwrap().display().to_string();
        let exec = exec_start(&std::fs::read_to_string(&unit).unwrap());
        used.extend(flags_in(&exec).into_iter().map(|f| (name.clone(), f)));
    }
    used
}

/// The `ExecStart=` value of a unit, continuation lines joined.
fn exec_start(unit: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in unit.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("ExecStart=") {
            inside = true;
            out.push_str(v);
        } else if inside {
            out.push(' ');
            out.push_str(line);
        } else {
            continue;
        }
        if out.ends_with('\\') {
            out.pop();
        } else {
            break;
        }
    }
    assert!(!out.is_empty(), "no ExecStart");
    out
}

/// The value of `--flag=value` or `--flag value` in a list of arguments.
fn arg_value(args: &[String], flag: &str) -> Option<String> {
    let eq = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix(&eq)
            .map(str::to_owned)
            .or_else(|| (a == flag).then(|| args.get(i + 1).cloned()).flatten())
    })
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr:?}"))
}

/// The admin port and the client port the binary uses by default.
fn default_ports() -> (u16, u16) {
    let s = Settings::default();
    (port_of(&s.admin_listen), port_of(&s.listen[0]))
}

fn str_list(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_flags_the_deployment_relies_on_exist() {
    let help = help_flags();
    for flag in [
        "--listen",
        "--upstream",
        "--credential",
        "--token-file",
        "--admin-listen",
        "--log-format",
        "--client-id",
        "--tenant-id",
        "--shutdown-grace",
        "--config",
    ] {
        assert!(help.contains(flag), "{flag} is not in --help: {help:?}");
    }
}

#[test]
fn every_flag_in_the_deploy_files_exists_in_the_binary() {
    let help = help_flags();
    let used = used_flags();
    assert!(used.len() >= 20, "too few flags found: {used:?}");
    let files: BTreeSet<&str> = used.iter().map(|(f, _)| f.as_str()).collect();
    for must in [
        "Dockerfile",
        "deploy/kubernetes/deployment.yaml",
        "deploy/kubernetes/deployment-native-sidecar.yaml",
        "deploy/compose/compose.yaml",
        "deploy/systemd/entra-redis-proxy.service",
    ] {
        assert!(files.contains(must), "no flag found in {must}");
    }
    let unknown: Vec<_> = used.iter().filter(|(_, f)| !help.contains(f)).collect();
    assert!(unknown.is_empty(), "flags not in --help: {unknown:?}");
}

#[test]
fn flag_extraction_finds_what_it_should() {
    let f = flags_in("x --admin-listen=0.0.0.0:9464 --log-format json a--b -- --9");
    assert_eq!(
        f.into_iter().collect::<Vec<_>>(),
        vec!["--admin-listen", "--log-format"]
    );
    let unit = "[Service]\nExecStart=/bin/p \\\n  --config /c \\\n  --listen x\nUser=y\n";
    assert_eq!(exec_start(unit), "/bin/p  --config /c  --listen x");
}

/// The proxy's container in a pod spec, and whether it is a native sidecar.
fn proxy_container(pod: &Yaml) -> Option<(Yaml, bool)> {
    for (key, native) in [("containers", false), ("initContainers", true)] {
        for c in pod[key].as_vec().into_iter().flatten() {
            if c["image"]
                .as_str()
                .is_some_and(|i| i.contains("entra-redis-proxy"))
            {
                return Some((c.clone(), native));
            }
        }
    }
    None
}

#[test]
fn kubernetes_probes_ports_and_scraping_match_the_admin_endpoint() {
    let (admin_port, client_port) = default_ports();
    let docs = yaml_docs();
    let mut deployments = 0;
    let mut native = 0;
    let annotated_sas: Vec<String> = docs
        .iter()
        .filter(|(_, d)| d["kind"].as_str() == Some("ServiceAccount"))
        .filter(|(_, d)| {
            d["metadata"]["annotations"]["azure.workload.identity/client-id"]
                .as_str()
                .is_some()
        })
        .filter_map(|(_, d)| d["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    assert!(
        !annotated_sas.is_empty(),
        "a workload-identity ServiceAccount"
    );

    for (file, d) in docs
        .iter()
        .filter(|(_, d)| d["kind"].as_str() == Some("Deployment"))
    {
        deployments += 1;
        let tpl = &d["spec"]["template"];
        let pod = &tpl["spec"];
        assert_eq!(
            tpl["metadata"]["labels"]["azure.workload.identity/use"].as_str(),
            Some("true"),
            "{file}: workload identity label (a string)"
        );
        let sa = pod["serviceAccountName"].as_str().unwrap_or_default();
        assert!(annotated_sas.iter().any(|s| s == sa), "{file}: SA {sa}");
        let ann = &tpl["metadata"]["annotations"];
        assert_eq!(ann["prometheus.io/scrape"].as_str(), Some("true"), "{file}");
        assert_eq!(
            ann["prometheus.io/port"].as_str(),
            Some(admin_port.to_string().as_str()),
            "{file}: scrape port"
        );
        assert_eq!(
            ann["prometheus.io/path"].as_str(),
            Some(METRICS_PATH),
            "{file}"
        );

        let (c, is_native) = proxy_container(pod).unwrap_or_else(|| panic!("{file}: proxy"));
        if is_native {
            native += 1;
            assert_eq!(c["restartPolicy"].as_str(), Some("Always"), "{file}");
            assert_eq!(
                c["startupProbe"]["httpGet"]["path"].as_str(),
                Some(HEALTH_PATH)
            );
        }
        let args = str_list(&c["args"]);
        let admin = arg_value(&args, "--admin-listen").expect("--admin-listen");
        assert_eq!(port_of(&admin), admin_port, "{file}: admin port");
        let listen = arg_value(&args, "--listen").expect("--listen");
        assert!(listen.starts_with("127.0.0.1:"), "{file}: loopback only");
        assert_eq!(port_of(&listen), client_port, "{file}");
        let ports = c["ports"].as_vec().expect("ports");
        let admin_named = ports
            .iter()
            .find(|p| p["name"].as_str() == Some("admin"))
            .expect("a port named admin");
        assert_eq!(
            admin_named["containerPort"].as_i64(),
            Some(admin_port.into())
        );
        for (probe, path) in [
            ("livenessProbe", HEALTH_PATH),
            ("readinessProbe", READY_PATH),
        ] {
            let get = &c[probe]["httpGet"];
            assert_eq!(get["path"].as_str(), Some(path), "{file}: {probe}");
            let port_ok = get["port"].as_str() == Some("admin")
                || get["port"].as_i64() == Some(admin_port.into());
            assert!(port_ok, "{file}: {probe} port");
        }
        // Requests and a memory limit.
        for k in ["cpu", "memory"] {
            assert!(!c["resources"]["requests"][k].is_badvalue(), "{file}: {k}");
        }
        assert!(!c["resources"]["limits"]["memory"].is_badvalue(), "{file}");
        // Kubernetes must wait longer than the proxy's grace before SIGKILL.
        let grace = arg_value(&args, "--shutdown-grace").expect("--shutdown-grace");
        let grace = duration::parse(&grace).unwrap();
        let period = pod["terminationGracePeriodSeconds"]
            .as_i64()
            .expect("period");
        assert!(
            Duration::from_secs(period as u64) > grace,
            "{file}: terminationGracePeriodSeconds {period} <= {grace:?}"
        );
    }
    assert_eq!((deployments, native), (2, 1));

    // The ServiceMonitor scrapes a Service port that targets the admin port.
    let svc = docs
        .iter()
        .find(|(_, d)| d["kind"].as_str() == Some("Service"))
        .map(|(_, d)| d)
        .expect("a metrics Service");
    let smon = docs
        .iter()
        .find(|(_, d)| d["kind"].as_str() == Some("ServiceMonitor"))
        .map(|(_, d)| d)
        .expect("a ServiceMonitor");
    let sel = smon["spec"]["selector"]["matchLabels"].as_hash().unwrap();
    for (k, v) in sel {
        assert_eq!(
            &svc["metadata"]["labels"][k.as_str().unwrap()],
            v,
            "selector"
        );
    }
    let ep = &smon["spec"]["endpoints"][0];
    assert_eq!(ep["path"].as_str(), Some(METRICS_PATH));
    let port = svc["spec"]["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|p| p["name"] == ep["port"])
        .expect("the ServiceMonitor's port exists on the Service");
    assert_eq!(port["port"].as_i64(), Some(admin_port.into()));
    assert_eq!(port["targetPort"].as_str(), Some("admin"));
}

#[test]
fn compose_shares_the_network_namespace_and_outlasts_the_grace() {
    let (admin_port, client_port) = default_ports();
    let docs = yaml_docs();
    let (_, compose) = docs
        .iter()
        .find(|(f, _)| f.ends_with("compose.yaml"))
        .expect("compose.yaml");
    let proxy = &compose["services"]["proxy"];
    let args = str_list(&proxy["command"]);
    let admin = arg_value(&args, "--admin-listen").unwrap();
    assert_eq!(port_of(&admin), admin_port);
    let listen = arg_value(&args, "--listen").unwrap();
    assert_eq!(listen, format!("127.0.0.1:{client_port}"));
    let published = str_list(&proxy["ports"]);
    assert!(
        published
            .iter()
            .all(|p| p.ends_with(&format!(":{admin_port}"))),
        "only the admin port is published: {published:?}"
    );
    assert_eq!(
        compose["services"]["app"]["network_mode"].as_str(),
        Some("service:proxy")
    );
    let grace = duration::parse(&arg_value(&args, "--shutdown-grace").unwrap()).unwrap();
    let stop = duration::parse(proxy["stop_grace_period"].as_str().unwrap()).unwrap();
    assert!(stop > grace, "stop_grace_period {stop:?} <= {grace:?}");
    assert!(
        arg_value(&args, "--client-secret-file").is_some(),
        "secret from a file"
    );
}

#[test]
fn dockerfile_matches_the_binary() {
    let (admin_port, client_port) = default_ports();
    let text = read("Dockerfile");
    assert!(
        text.contains("cargo build --release --locked"),
        "locked release build"
    );
    let expose: BTreeSet<u16> = text
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|l| l.split_whitespace().map(|p| p.parse::<u16>().unwrap()))
        .collect();
    assert_eq!(expose, BTreeSet::from([client_port, admin_port]));
    let health = text
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK"))
        .take(2)
        .collect::<String>();
    assert!(
        health.contains(&format!("/{admin_port}")) && health.contains(HEALTH_PATH),
        "HEALTHCHECK probes {HEALTH_PATH} on {admin_port}: {health}"
    );
    let user = text
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("USER");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "non-root: {user}"
    );
    assert!(text.contains("ca-certificates"));
    let cmd = text
        .lines()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("CMD");
    let cmd: Vec<String> = serde_json::from_str(cmd).unwrap();
    assert_eq!(
        port_of(&arg_value(&cmd, "--admin-listen").unwrap()),
        admin_port
    );
}

#[test]
fn systemd_unit_is_hardened_and_waits_for_the_grace() {
    let text = read("deploy/systemd/entra-redis-proxy.service");
    for line in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "RestartPreventExitStatus=64",
    ] {
        assert!(text.lines().any(|l| l == line), "{line}");
    }
    let exec = exec_start(&text);
    let args: Vec<String> = exec.split_whitespace().map(str::to_owned).collect();
    assert_eq!(
        arg_value(&args, "--credential").as_deref(),
        Some("managed-identity")
    );
    let grace = duration::parse(&arg_value(&args, "--shutdown-grace").unwrap()).unwrap();
    let stop = text
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec");
    assert!(duration::parse(stop).unwrap() > grace);
    // The unix socket lives in the unit's RuntimeDirectory.
    let dir = text
        .lines()
        .find_map(|l| l.strip_prefix("RuntimeDirectory="))
        .unwrap();
    assert!(args
        .iter()
        .any(|a| a.starts_with(&format!("unix:/run/{dir}/"))));
}

/// The `HEALTHCHECK` command, as the argument vector Docker runs (it must be valid JSON, or
/// Docker would run it through a shell as one string).
fn healthcheck_command() -> Vec<String> {
    let text = read("Dockerfile");
    let joined = text.replace("\\\n", " ");
    let line = joined
        .lines()
        .find(|l| l.starts_with("HEALTHCHECK"))
        .expect("HEALTHCHECK");
    let array = &line[line.find("CMD [").expect("exec form") + 4..];
    serde_json::from_str(array).expect("HEALTHCHECK CMD is a JSON array")
}

#[test]
fn dockerfile_healthcheck_command_works_against_the_binary() {
    let (admin_port, _) = default_ports();
    let cmd = healthcheck_command();
    let script = cmd.last().unwrap().clone();
    let default_target = format!("/dev/tcp/127.0.0.1/{admin_port}");
    assert!(script.contains(&default_target), "{script}");

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_entra-redis-proxy"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--upstream", "127.0.0.1:1", "--credential", "token-file"])
        .arg("--token-file")
        .arg(dir.path().join("token"))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The ephemeral admin port, from the `admin listening` log line.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let port = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(port) = text
            .lines()
            .filter(|l| l.contains("admin listening"))
            .find_map(|l| l.split("address=127.0.0.1:").nth(1))
            .and_then(|p| p.split_whitespace().next()?.parse::<u16>().ok())
        {
            break port;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no admin address: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let run = |script: &str| {
        Command::new(&cmd[0])
            .args(&cmd[1..cmd.len() - 1])
            .arg(script)
            .status()
            .unwrap()
            .success()
    };
    let here = script.replace(&default_target, &format!("/dev/tcp/127.0.0.1/{port}"));
    // Not ready (no token), yet healthy: the check passes.
    assert!(run(&here), "the health check fails against a serving proxy");
    let ready = here.replace(HEALTH_PATH, READY_PATH);
    assert!(!run(&ready), "the check must look at the status code");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!run(&here), "the health check passes with the proxy gone");
}

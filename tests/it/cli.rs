//! Drives the real binary: exit codes, error messages, `--print-config` precedence, `--help`.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_entra-redis-proxy");

/// The binary with a clean environment: none of the developer's ENTRA_REDIS_PROXY_* or
/// AZURE_* variables leak into a test.
fn proxy() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear();
    cmd.stdin(Stdio::null());
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run entra-redis-proxy")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn missing_upstream_exits_64_naming_the_key() {
    let out = run(&mut proxy());
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr: {err}");
    assert!(
        err.starts_with("entra-redis-proxy: configuration error: `upstream` is required"),
        "{err}"
    );
    assert!(err.contains("ENTRA_REDIS_PROXY_UPSTREAM"), "{err}");
    assert!(err.contains("--upstream"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn non_loopback_listen_exits_64_with_the_reason() {
    let out = run(proxy().args(["--upstream", "cache.example", "--listen", "0.0.0.0:6379"]));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr: {err}");
    assert!(
        err.contains("`listen` entry `0.0.0.0:6379` is not a loopback address"),
        "{err}"
    );
    assert!(
        err.contains("acts with the proxy's Entra identity"),
        "{err}"
    );
    assert!(err.contains("--allow-non-loopback"), "{err}");

    // Opting in is not enough: clients on the network must also present a password.
    let out = run(proxy().args([
        "--upstream",
        "cache.example",
        "--listen",
        "0.0.0.0:6379",
        "--allow-non-loopback",
        "--print-config",
    ]));
    assert_eq!(out.status.code(), Some(64), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--client-password-file"));
    // The same address is accepted once the operator opts in and sets a client password.
    let out = run(proxy().args([
        "--upstream",
        "cache.example",
        "--listen",
        "0.0.0.0:6379",
        "--allow-non-loopback",
        "--client-password-file",
        "/run/secrets/pw",
        "--print-config",
    ]));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
}

#[test]
fn non_loopback_from_environment_is_refused_too() {
    let out = run(proxy()
        .env("ENTRA_REDIS_PROXY_UPSTREAM", "cache.example")
        .env("ENTRA_REDIS_PROXY_LISTEN", "127.0.0.1:6379,0.0.0.0:6380"));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr: {err}");
    assert!(err.contains("`0.0.0.0:6380`"), "{err}");
}

#[test]
fn print_config_layers_file_env_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    std::fs::write(
        &file,
        r#"
upstream = "file.example"
scope = "file-scope"
refresh_margin = "1m"
max_connections = 11
username = "file-user"
client_secret_file = "/run/secrets/client-secret"
"#,
    )
    .unwrap();
    let out = run(proxy()
        .arg("--config")
        .arg(&file)
        .args([
            "--print-config",
            "--username",
            "flag-user",
            "--listen",
            "127.0.0.1:7001",
        ])
        .env("ENTRA_REDIS_PROXY_UPSTREAM", "env.example:7000")
        .env("ENTRA_REDIS_PROXY_REFRESH_MARGIN", "2m")
        .env("ENTRA_REDIS_PROXY_USERNAME", "env-user")
        .env("ENTRA_REDIS_PROXY_LISTEN", "127.0.0.1:7002"));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    let has = |line: &str| lines.contains(&line);
    // file only
    assert!(has("scope = \"file-scope\""), "{stdout}");
    assert!(has("max_connections = 11"), "{stdout}");
    // env over file
    assert!(has("upstream = \"env.example:7000\""), "{stdout}");
    assert!(has("refresh_margin = \"2m\""), "{stdout}");
    // flag over env over file
    assert!(has("username = \"flag-user\""), "{stdout}");
    assert!(has("listen = [\"127.0.0.1:7001\"]"), "{stdout}");
    // untouched default
    assert!(has("refresh_ratio = 0.7"), "{stdout}");
    // a secret's file path is shown, never a secret
    assert!(
        has("client_secret_file = \"/run/secrets/client-secret\""),
        "{stdout}"
    );
    assert!(has("# tenant_id = (not set)"), "{stdout}");
}

#[test]
fn printed_config_is_a_valid_config_file() {
    let first = run(proxy().args(["--upstream", "cache.example", "--print-config"]));
    assert_eq!(first.status.code(), Some(0));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("printed.toml");
    std::fs::write(&file, &first.stdout).unwrap();
    let second = run(proxy().arg("--config").arg(&file).arg("--print-config"));
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    assert_eq!(text(&first.stdout), text(&second.stdout));
}

#[test]
fn unknown_key_and_bad_value_in_file_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    std::fs::write(&file, "upstream = \"c.example\"\nrefresh_ration = 0.5\n").unwrap();
    let out = run(proxy().arg("--config").arg(&file));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("unknown key `refresh_ration`"), "{err}");

    std::fs::write(&file, "upstream = \"c.example\"\nrefresh_ratio = \"abc\"\n").unwrap();
    let out = run(proxy().arg("--config").arg(&file));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("`refresh_ratio`"), "{err}");
    assert!(err.contains("--refresh-ratio"), "{err}");
}

#[test]
fn bad_flag_exits_64_with_usage() {
    let out = run(proxy().args(["--upstream", "c.example", "--refresh-margin", "soon"]));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("--refresh-margin"), "{err}");
    assert!(err.contains("--help"), "{err}");
}

#[test]
fn help_lists_the_flags_and_exits_0() {
    let out = run(proxy().arg("--help"));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for flag in [
        "--config <PATH>",
        "--print-config",
        "--listen <ADDR>",
        "--allow-non-loopback",
        "--upstream <HOST[:PORT]>",
        "--refresh-margin <DURATION>",
        "--credential <KIND>",
        "--max-inline-len <BYTES>",
        "ENTRA_REDIS_PROXY_",
    ] {
        assert!(stdout.contains(flag), "--help lacks {flag}:\n{stdout}");
    }
    // Possible values of an enum flag are listed.
    assert!(stdout.contains("managed-identity"), "{stdout}");
}

#[test]
fn server_failure_exits_1_with_a_json_log_line() {
    // Occupy a loopback port so the proxy cannot listen on it (or fails for another reason
    // while the server is still a stub): either way it must exit 1 after logging the error.
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut child = proxy()
        .args([
            "--upstream",
            "127.0.0.1:1",
            "--listen",
            &addr,
            "--admin-listen",
            "",
        ])
        .args(["--credential", "token-file", "--log-format", "json"])
        .arg("--token-file")
        .arg(dir.path().join("no-token"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("proxy did not exit although its listen port {addr} is taken");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "stderr: {err}");
    let last = err.lines().last().expect("an error is logged");
    let event: serde_json::Value = serde_json::from_str(last).expect("log lines are JSON");
    assert_eq!(event["level"], "ERROR", "{last}");
    assert!(event["target"].is_string(), "{last}");
    let error = event["fields"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&addr),
        "the error names the busy address: {last}"
    );
}

#[test]
fn problem_found_by_the_server_at_start_up_exits_64() {
    // The CA file exists (so validation passes) but holds no certificate: the server finds
    // that while building the TLS client, and it is still the operator's configuration error.
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let mut child = proxy()
        .args([
            "--upstream",
            "127.0.0.1:1",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "",
        ])
        .args(["--credential", "token-file"])
        .arg("--token-file")
        .arg(dir.path().join("no-token"))
        .arg("--ca-file")
        .arg(&ca)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("proxy started although its CA file holds no certificate");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(64), "stderr: {err}");
    assert!(
        err.contains("entra-redis-proxy: configuration error:"),
        "{err}"
    );
}

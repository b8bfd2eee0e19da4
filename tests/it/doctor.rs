//! `entra-redis-proxy doctor` against a real TLS redis-server with ACL users and the mock
//! identity endpoint: every failure the operator kit names, with its exit code, the step that
//! fails and the remedy it prints.

use test_harness as support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::{RedisServer, Token, TokenFile};

/// The outcome of one doctor run.
struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// The line of `step` (the first one): `VERDICT [upstream] step time detail`.
    fn line(&self, step: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| step_of(l) == Some(step))
            .unwrap_or_else(|| panic!("no `{step}` line in:\n{}", self.stdout))
    }

    /// The verdict word of `step`.
    fn verdict(&self, step: &str) -> &str {
        self.line(step).split_whitespace().next().unwrap()
    }

    /// The remedy printed under `step`.
    fn remedy(&self, step: &str) -> String {
        let mut lines = self.stdout.lines();
        lines.find(|l| step_of(l) == Some(step));
        match lines.next() {
            Some(l) if l.trim_start().starts_with("->") => l.trim().to_owned(),
            _ => panic!("no remedy under `{step}` in:\n{}", self.stdout),
        }
    }
}

/// The step word of a report line (after the verdict and the optional `[upstream]`).
fn step_of(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace().skip(1);
    match words.next()? {
        w if w.starts_with('[') => words.next(),
        w => Some(w),
    }
}

/// Runs `doctor` with `args` and environment `envs` (the identity variables of this process
/// removed first).
fn doctor(args: &[String], envs: &[(&str, String)]) -> Outcome {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_entra-redis-proxy"));
    cmd.arg("doctor").args(args);
    for v in [
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_FEDERATED_TOKEN_FILE",
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "RUST_LOG",
    ] {
        cmd.env_remove(v);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.stdin(Stdio::null()).output().expect("run doctor");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The daemon's arguments for `server` with the token in `token_file`.
fn args_for(server: &RedisServer, token_file: &Path) -> Vec<String> {
    support::proxy_args(server, token_file)
}

/// Replaces the value of `flag` in `args`.
fn with(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    let i = args.iter().position(|a| a == flag).expect(flag);
    args[i + 1] = value.to_owned();
    args
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn every_check_passes_against_a_working_cache_and_never_prints_the_token() {
    let server = RedisServer::start().await;
    let rotator = support::Rotator::new(&server).await;
    let args = args_for(&server, &rotator.file.path);
    let out = doctor(&args, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    for step in [
        "config", "token", "claims", "dns", "tcp", "tls", "auth", "ping", "read",
    ] {
        assert_eq!(out.verdict(step), "ok", "{step}:\n{}", out.stdout);
    }
    let claims = out.line("claims");
    assert!(
        claims.contains(&format!("oid={}", rotator.current.oid)),
        "{claims}"
    );
    assert!(claims.contains("aud=https://redis.azure.com"), "{claims}");
    assert!(claims.contains("expires in"), "{claims}");
    assert!(
        claims.contains(&format!("AUTH username {}", rotator.current.oid)),
        "{claims}"
    );
    let tls = out.line("tls");
    assert!(tls.contains("TLSv1_3") || tls.contains("TLSv1_2"), "{tls}");
    assert!(
        tls.contains("verified for localhost") && tls.contains("SANs [localhost"),
        "{tls}"
    );
    assert!(tls.contains("expires in"), "{tls}");
    assert!(
        out.line("token").contains("token-file"),
        "which source answered"
    );
    assert!(out.stdout.contains("doctor: all"), "{}", out.stdout);
    for part in [rotator.current.payload(), rotator.current.signature()] {
        assert!(!out.stdout.contains(part) && !out.stderr.contains(part));
    }

    // --json: the same as one object.
    let mut json_args = args.clone();
    json_args.push("--json".into());
    let out = doctor(&json_args, &[]);
    assert_eq!(out.code, 0);
    let v: Value = serde_json::from_str(out.stdout.trim()).expect("one JSON object");
    assert_eq!(v["ok"], true);
    assert_eq!(v["exit_code"], 0);
    let checks = v["checks"].as_array().unwrap();
    let claims = checks.iter().find(|c| c["step"] == "claims").unwrap();
    assert_eq!(claims["facts"]["oid"], rotator.current.oid.as_str());
    assert_eq!(
        claims["facts"]["auth_username"],
        rotator.current.oid.as_str()
    );
    assert!(claims["facts"]["expires_in_seconds"].as_i64().unwrap() > 3000);
    let tls = checks.iter().find(|c| c["step"] == "tls").unwrap();
    assert_eq!(tls["facts"]["verified"], true);
    assert!(tls["facts"]["days_to_expiry"].as_i64().unwrap() > 0);
    assert!(!out.stdout.contains(rotator.current.signature()));
}

#[tokio::test]
async fn wrongpass_names_the_object_id_and_data_access_configuration() {
    let server = RedisServer::start().await;
    // A token for an identity the cache has no user (access policy assignment) for.
    let token = Token::mint(Duration::from_secs(3600));
    let file = TokenFile::new(&token);
    let out = doctor(&args_for(&server, &file.path), &[]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_eq!(out.verdict("auth"), "FAIL");
    assert!(out.line("auth").contains("WRONGPASS"), "{}", out.stdout);
    let remedy = out.remedy("auth");
    assert!(
        remedy.contains(&format!("object id {}", token.oid)),
        "{remedy}"
    );
    assert!(remedy.contains("Data Access Configuration"), "{remedy}");
    assert!(
        remedy.contains("Microsoft Entra Authentication"),
        "{remedy}"
    );
    assert_eq!(out.verdict("ping"), "skip");
    assert!(out.stdout.contains("first `auth`"), "{}", out.stdout);
}

#[tokio::test]
async fn noperm_says_the_policy_lacks_the_command() {
    let server = RedisServer::start().await;
    let mut admin = server.admin().await;
    let token = Token::mint(Duration::from_secs(3600));
    let password = format!(">{}", token.jwt);
    let reply = admin
        .cmd(&[
            "ACL",
            "SETUSER",
            token.oid.as_str(),
            "on",
            password.as_str(),
            "~*",
            "&*",
            "+@all",
            "-get",
        ])
        .await;
    assert_eq!(reply, support::Reply::ok());
    let file = TokenFile::new(&token);
    let out = doctor(&args_for(&server, &file.path), &[]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_eq!(out.verdict("auth"), "ok");
    assert_eq!(out.verdict("ping"), "ok");
    assert_eq!(out.verdict("read"), "FAIL");
    assert!(out.line("read").contains("NOPERM"), "{}", out.stdout);
    let remedy = out.remedy("read");
    assert!(
        remedy.contains("does not permit GET") && remedy.contains("policy"),
        "{remedy}"
    );
}

#[tokio::test]
async fn an_expired_token_file_means_its_agent_stopped() {
    let server = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    let jwt = entra_redis_proxy::token::jwt::unsigned_jwt(&serde_json::json!({
        "oid": "oid-expired", "aud": "https://redis.azure.com", "exp": now_secs() - 120,
    }));
    std::fs::write(&path, jwt).unwrap();
    let out = doctor(&args_for(&server, &path), &[]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_eq!(out.verdict("claims"), "FAIL");
    assert!(out.line("claims").contains("expired"), "{}", out.stdout);
    let remedy = out.remedy("claims");
    assert!(
        remedy.contains("the agent that writes this file stopped"),
        "{remedy}"
    );
    assert!(remedy.contains(&path.display().to_string()), "{remedy}");
    assert_eq!(out.verdict("tcp"), "skip");
}

#[tokio::test]
async fn a_wrong_audience_and_a_token_from_the_future_are_warnings() {
    let server = RedisServer::start().await;
    let mut admin = server.admin().await;
    let oid = format!("oid-{}", support::random_id());
    let jwt = entra_redis_proxy::token::jwt::unsigned_jwt(&serde_json::json!({
        "oid": oid, "aud": "https://management.azure.com", "exp": now_secs() + 3600,
        "iat": now_secs() + 600, "tid": "tenant-x", "idtyp": "app", "appid": "app-x",
    }));
    let password = format!(">{jwt}");
    assert_eq!(
        admin
            .cmd(&["ACL", "SETUSER", &oid, "on", &password, "~*", "&*", "+@all"])
            .await,
        support::Reply::ok()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, &jwt).unwrap();
    let out = doctor(&args_for(&server, &path), &[]);
    assert_eq!(out.code, 0, "warnings do not fail: {}", out.stdout);
    assert_eq!(out.verdict("claims"), "WARN");
    let line = out.line("claims");
    assert!(
        line.contains("tid=tenant-x") && line.contains("idtyp=app") && line.contains("appid=app-x"),
        "{line}"
    );
    let remedy = out.remedy("claims");
    assert!(
        remedy.contains("audience `https://management.azure.com`"),
        "{remedy}"
    );
    assert!(remedy.contains("clock"), "{remedy}");
}

#[tokio::test]
async fn tls_failures_name_the_cause() {
    let server = RedisServer::start().await;
    let rotator = support::Rotator::new(&server).await;
    let args = args_for(&server, &rotator.file.path);

    // Name mismatch: the certificate names localhost, not this.
    let out = doctor(
        &with(args.clone(), "--tls-server-name", "cache.example.net"),
        &[],
    );
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_eq!(out.verdict("tls"), "FAIL");
    let remedy = out.remedy("tls");
    assert!(
        remedy.contains("TLS name mismatch") && remedy.contains("cache.example.net"),
        "{remedy}"
    );
    assert!(
        remedy.contains("localhost"),
        "names what the certificate carries: {remedy}"
    );
    assert_eq!(out.verdict("auth"), "skip");

    // Untrusted CA: a CA file that is not the one that issued the cache's certificate.
    let dir = tempfile::tempdir().unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["other-ca".to_owned()]).unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, other.cert.pem()).unwrap();
    let out = doctor(
        &with(args, "--ca-file", &other_ca.display().to_string()),
        &[],
    );
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_eq!(out.verdict("tls"), "FAIL");
    let remedy = out.remedy("tls");
    assert!(
        remedy.contains("untrusted CA") && remedy.contains("ca_file"),
        "{remedy}"
    );
}

#[tokio::test]
async fn network_failures_name_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let token = Token::mint(Duration::from_secs(3600));
    let file = TokenFile::new(&token);
    let ca = dir.path().join("ca.pem");
    let ca_cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&ca, ca_cert.cert.pem()).unwrap();

    let refused = format!("127.0.0.1:{}", closed_port());
    let out = doctor(&support::proxy_args_to(&refused, &ca, &file.path), &[]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_eq!(out.verdict("dns"), "ok");
    assert_eq!(out.verdict("tcp"), "FAIL");
    assert!(
        out.remedy("tcp").contains("connection refused"),
        "{}",
        out.stdout
    );

    let started = Instant::now();
    let out = doctor(
        &support::proxy_args_to("no-such-cache.invalid:6380", &ca, &file.path),
        &[],
    );
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_eq!(out.verdict("dns"), "FAIL");
    assert!(
        out.remedy("dns").contains("does not resolve"),
        "{}",
        out.stdout
    );
    assert_eq!(out.verdict("tcp"), "skip");
    assert!(started.elapsed() < Duration::from_secs(15));
}

/// A loopback listener whose TCP connects hang: its accept backlog is 0 and nothing accepts,
/// so once the accept queue holds a connection the kernel drops further SYNs
/// (`net.ipv4.tcp_abort_on_overflow` 0, the default) and a connect sees no answer at all,
/// neither SYN-ACK nor RST. Returns the listener, the connections that fill its queue (both
/// kept open for as long as the port must hang) and its address.
async fn hanging_listener() -> (std::net::TcpListener, Vec<tokio::net::TcpStream>, String) {
    use std::os::fd::AsRawFd;
    if let Ok(v) = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_abort_on_overflow") {
        assert_eq!(
            v.trim(),
            "0",
            "net.ipv4.tcp_abort_on_overflow is set: an overflowing connect is reset, not dropped"
        );
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // listen() again on a listening socket only changes its backlog.
    assert_eq!(
        unsafe { libc::listen(listener.as_raw_fd(), 0) },
        0,
        "listen(fd, 0)"
    );
    let addr = listener.local_addr().unwrap().to_string();
    let mut queued = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        {
            Ok(Ok(s)) => queued.push(s),
            Ok(Err(e)) => panic!("connect to {addr} failed instead of hanging: {e}"),
            Err(_) => return (listener, queued, addr),
        }
    }
    panic!(
        "{} connects to {addr} completed and none hung: the setup cannot make a connect time out",
        queued.len()
    );
}

#[tokio::test]
async fn a_connect_timeout_names_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let token = Token::mint(Duration::from_secs(3600));
    let file = TokenFile::new(&token);
    let ca = dir.path().join("ca.pem");
    let ca_cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&ca, ca_cert.cert.pem()).unwrap();

    let (_listener, _queued, addr) = hanging_listener().await;
    let args = {
        let mut a = support::proxy_args_to(&addr, &ca, &file.path);
        a.extend(["--connect-timeout".into(), "500ms".into()]);
        a
    };
    let no_answer = format!("no answer from {addr}");

    let started = Instant::now();
    let out = doctor(&args, &[]);
    let took = started.elapsed();
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.verdict("dns"), "ok");
    assert_eq!(out.verdict("tcp"), "FAIL");
    assert!(
        out.line("tcp").contains("connect timed out after 500ms"),
        "timed out, not refused: {}",
        out.stdout
    );
    let remedy = out.remedy("tcp");
    assert!(
        remedy.contains(&no_answer) && remedy.contains("firewall"),
        "{remedy}"
    );
    assert!(!remedy.contains("refused"), "{remedy}");
    assert_eq!(out.verdict("tls"), "skip");
    assert!(took < Duration::from_secs(5), "took {took:?}");

    let mut json_args = args.clone();
    json_args.push("--json".into());
    let out = doctor(&json_args, &[]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let v: Value = serde_json::from_str(out.stdout.trim()).expect("one JSON object");
    assert_eq!(v["ok"], false);
    assert_eq!(v["exit_code"], 1);
    let checks = v["checks"].as_array().unwrap();
    let tcp = checks.iter().find(|c| c["step"] == "tcp").unwrap();
    assert_eq!(tcp["verdict"], "fail");
    assert!(
        tcp["detail"]
            .as_str()
            .unwrap()
            .contains("connect timed out after 500ms"),
        "{tcp}"
    );
    let remedy = tcp["remedy"].as_str().unwrap();
    assert!(
        remedy.contains(&no_answer) && remedy.contains("firewall"),
        "{remedy}"
    );
    let tls = checks.iter().find(|c| c["step"] == "tls").unwrap();
    assert_eq!(tls["verdict"], "skip");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn configuration_errors_exit_64_in_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    let ca = dir.path().join("ca.pem");
    let args = support::proxy_args_to("127.0.0.1:1", &ca, &token);
    let mut bad = args.clone();
    bad.extend(["--refresh-ratio".into(), "7".into()]);
    let out = doctor(&bad, &[]);
    assert_eq!(out.code, 64, "{}", out.stdout);
    assert_eq!(out.verdict("config"), "FAIL");
    assert!(
        out.line("config").contains("refresh_ratio"),
        "{}",
        out.stdout
    );
    bad.push("--json".into());
    let out = doctor(&bad, &[]);
    assert_eq!(out.code, 64);
    let v: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(v["exit_code"], 64);
    assert_eq!(v["checks"][0]["step"], "config");
    assert_eq!(v["checks"][0]["verdict"], "fail");
}

/// A running `mock-identity`, killed on drop: (process, address, identity header).
struct Mock {
    child: std::process::Child,
    addr: String,
    header: String,
    _dir: tempfile::TempDir,
}

impl Mock {
    fn start() -> Mock {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(support::mock_identity_bin())
            .arg("--ca-out")
            .arg(dir.path().join("ca.pem"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (mut addr, mut header) = (None, None);
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if line == "READY" {
                break;
            }
            if let Some(v) = line.strip_prefix("MOCK_IDENTITY_ADDR=") {
                addr = Some(v.to_owned());
            }
            if let Some(v) = line.strip_prefix("IDENTITY_HEADER=") {
                header = Some(v.to_owned());
            }
        }
        Mock {
            child,
            addr: addr.unwrap(),
            header: header.unwrap(),
            _dir: dir,
        }
    }

    /// POSTs `body` to the mock's `/control/{path}` over plain HTTP/1.1.
    async fn control(&self, path: &str, body: Value) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let body = body.to_string();
        let mut s = tokio::net::TcpStream::connect(&self.addr).await.unwrap();
        let request = format!(
            "POST /control/{path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        s.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).await.unwrap();
        let status = response.lines().next().unwrap_or_default();
        assert!(status.starts_with("HTTP/1.1 2"), "{status}");
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Arguments for a credential other than the token file, against `server`.
fn credential_args(server: &RedisServer, credential: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--upstream",
        &server.addr(),
        "--tls-server-name",
        "localhost",
        "--ca-file",
        &server.tls.ca_file.display().to_string(),
        "--token-timeout",
        "10s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(credential.iter().map(|s| s.to_string()));
    args
}

#[tokio::test]
async fn managed_identity_not_assigned_to_this_machine() {
    let server = RedisServer::start().await;
    let mock = Mock::start();
    mock.control(
        "identities",
        serde_json::json!({"client_ids": ["assigned-id"]}),
    )
    .await;
    let envs = [
        (
            "IDENTITY_ENDPOINT",
            format!("http://{}/msi/token", mock.addr),
        ),
        ("IDENTITY_HEADER", mock.header.clone()),
    ];
    let args = credential_args(
        &server,
        &[
            "--credential",
            "managed-identity",
            "--client-id",
            "unassigned-id",
        ],
    );
    let out = doctor(&args, &envs);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.verdict("token"), "FAIL");
    let remedy = out.remedy("token");
    assert!(
        remedy.contains("unassigned-id is not assigned to this VM / pod"),
        "{remedy}"
    );
    assert_eq!(out.verdict("claims"), "skip");
}

#[tokio::test]
async fn workload_identity_without_its_token_file() {
    let server = RedisServer::start().await;
    let args = credential_args(
        &server,
        &[
            "--credential",
            "workload-identity",
            "--tenant-id",
            "t-1",
            "--client-id",
            "c-1",
        ],
    );
    // No AZURE_FEDERATED_TOKEN_FILE at all: the same configuration error as at start-up.
    let out = doctor(&args, &[]);
    assert_eq!(out.code, 64, "{}", out.stdout);
    assert_eq!(out.verdict("config"), "FAIL");
    let remedy = out.remedy("config");
    assert!(
        remedy.contains("service account") && remedy.contains("azure.workload.identity/use"),
        "{remedy}"
    );

    // The variable is set but the projected file is not there.
    let dir = tempfile::tempdir().unwrap();
    let missing: PathBuf = dir.path().join("azure-identity-token");
    let out = doctor(
        &args,
        &[("AZURE_FEDERATED_TOKEN_FILE", missing.display().to_string())],
    );
    assert!(out.code == 1 || out.code == 64, "{}", out.stdout);
    let step = if out.code == 64 { "config" } else { "token" };
    assert_eq!(out.verdict(step), "FAIL");
    let remedy = out.remedy(step);
    assert!(
        remedy.contains("service account") && remedy.contains("azure.workload.identity/client-id"),
        "{remedy}"
    );
}

#[tokio::test]
async fn cluster_mode_checks_every_node_with_its_local_port() {
    let cluster = support::cluster::TlsCluster::start(3, 0).await;
    let rotator = support::cluster::ClusterRotator::new(&cluster).await;
    let seed = cluster.seed_addr().await;
    let mut args = support::proxy_args_to(&seed, &cluster.tls.ca_file, &rotator.file.path);
    args.extend(["--cluster", "--cluster-ports", "41000-41099"].map(String::from));
    let out = doctor(&args, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.verdict("cluster"), "ok");
    assert!(out.line("cluster").contains("3 node(s)"), "{}", out.stdout);
    let nodes: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| step_of(l) == Some("node"))
        .collect();
    assert_eq!(nodes.len(), 3, "{}", out.stdout);
    for (line, port) in nodes.iter().zip(41000..) {
        assert!(line.starts_with("ok"), "{line}");
        assert!(line.contains(&format!("local 127.0.0.1:{port}")), "{line}");
        assert!(line.contains("TLS, AUTH and PING ok"), "{line}");
    }
    // Every node the cluster names is checked.
    for addr in cluster.addrs() {
        assert!(
            nodes.iter().any(|l| l.contains(&addr)),
            "{addr} not checked: {}",
            out.stdout
        );
    }
}

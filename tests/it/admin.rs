//! End-to-end tests of the admin endpoint (`/metrics`, `/healthz`, `/readyz`), the Unix socket
//! listener and signal-driven shutdown.
//!
//! Most tests use a loopback port nobody listens on as the upstream, to drive readiness through
//! token-file states and failed connections; the others run a real TLS `redis-server` from the
//! harness. Everything binds `127.0.0.1:0` or a socket in a temporary directory.

use test_harness as support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use entra_redis_proxy::config::{CredentialKind, Settings};
use entra_redis_proxy::server::Proxy;
use entra_redis_proxy::token::jwt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::watch;

/// Longest wait for any condition in these tests.
const DEADLINE: Duration = Duration::from_secs(15);

/// Sends raw bytes to the admin endpoint and returns the whole response. A well-formed request
/// gets `Connection: close` after its request line, so that the server closes after answering
/// (it keeps connections alive otherwise).
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    try_raw(addr, request).await.unwrap()
}

/// [`raw`], with the I/O error (a connection the endpoint refused at its limit is reset).
async fn try_raw(addr: std::net::SocketAddr, request: &[u8]) -> std::io::Result<String> {
    let mut request = request.to_vec();
    if request.starts_with(b"GET ")
        || request.starts_with(b"HEAD ")
        || request.starts_with(b"POST ")
    {
        if let Some(i) = request.windows(2).position(|w| w == b"\r\n") {
            request.splice(i + 2..i + 2, b"Connection: close\r\n".iter().copied());
        }
    }
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(&request).await?;
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut out))
        .await
        .expect("admin response in time")?;
    Ok(String::from_utf8(out).unwrap())
}

/// `GET path`: status and body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let text = raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
    )
    .await;
    parse_response(&text)
}

/// An HTTP response's status and body.
fn parse_response(text: &str) -> (u16, String) {
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_owned())
}

/// Polls `GET path` until `pred(status, body)` holds, or panics after [`DEADLINE`].
async fn wait_for(
    addr: std::net::SocketAddr,
    path: &str,
    what: &str,
    pred: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let start = Instant::now();
    loop {
        // A connection made while the endpoint is still at its connection limit is closed at
        // once (reset, or closed without a byte): not an answer yet.
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let Some(text) = try_raw(addr, request.as_bytes())
            .await
            .ok()
            .filter(|t| !t.is_empty())
        else {
            assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let (status, body) = parse_response(&text);
        if pred(status, &body) {
            return (status, body);
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}; last {path}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback port with no listener (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Writes a token file the way real agents do: a new file renamed over the old one.
fn write_token(path: &Path, expires_at: SystemTime) {
    let exp = jwt::unix_seconds(expires_at) as u64;
    let token = jwt::unsigned_jwt(&serde_json::json!({ "oid": "test-oid", "exp": exp }));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, token).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A PEM CA file, so the connector never depends on the machine's trust store.
fn ca_file(dir: &Path) -> PathBuf {
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let path = dir.join("ca.pem");
    std::fs::write(&path, ca.cert.pem()).unwrap();
    path
}

/// Settings for a proxy on ephemeral ports, reading `dir/token`, upstream unreachable.
fn settings(dir: &Path) -> Settings {
    Settings {
        listen: vec!["127.0.0.1:0".into()],
        admin_listen: "127.0.0.1:0".into(),
        upstream: format!("127.0.0.1:{}", closed_port()),
        tls_server_name: Some("localhost".into()),
        ca_file: Some(ca_file(dir)),
        credential: CredentialKind::TokenFile,
        token_file: Some(dir.join("token")),
        token_file_poll: Duration::from_millis(20),
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        connect_timeout: Duration::from_secs(2),
        startup_wait: Duration::from_millis(100),
        // The cache is unreachable: warm connections would make every attempt here.
        warm_connections: 0,
        ..Settings::default()
    }
}

#[tokio::test]
async fn readiness_follows_the_token_and_the_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    let token_path = s.token_file.clone().unwrap();
    let (_stop, stop_rx) = watch::channel(false);
    let proxy = Proxy::start(s.plan().expect("valid settings"), stop_rx)
        .await
        .unwrap();
    let admin = proxy.admin_addr.expect("admin enabled");

    // Alive at once; not ready without a token, and the reason says why.
    assert_eq!(get(admin, "/healthz").await.0, 200);
    let (status, body) = get(admin, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.starts_with("not ready: no token yet"), "{body}");
    wait_for(admin, "/readyz", "the manager's last error", |s, b| {
        s == 503 && b.contains("no token yet; last error: cannot read token file")
    })
    .await;

    // A token that expires in 2 s: ready, then not ready once it expires.
    write_token(&token_path, SystemTime::now() + Duration::from_secs(2));
    wait_for(admin, "/readyz", "ready with a token", |s, _| s == 200).await;
    let (_, body) = wait_for(admin, "/readyz", "token expiry", |s, b| {
        s == 503 && b.contains("token expired")
    })
    .await;
    assert!(body.contains("last error:"), "{body}");
    assert!(
        !body.contains("eyJ"),
        "no token material in the reason: {body}"
    );

    // A fresh token: ready again.
    write_token(&token_path, SystemTime::now() + Duration::from_secs(3600));
    wait_for(admin, "/readyz", "ready with a new token", |s, _| s == 200).await;

    // A client (it need not send anything: the session connects at once) makes the proxy
    // try the (unreachable) cache: the client gets an error
    // reply, readiness turns 503 naming the failed connection.
    let mut client = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(DEADLINE, client.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert!(
        reply.starts_with("-ERR entra-redis-proxy cannot open the upstream connection"),
        "{reply}"
    );
    let (status, body) = get(admin, "/readyz").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("last upstream connection failed") && body.contains("127.0.0.1:"),
        "{body}"
    );
    assert_eq!(
        get(admin, "/healthz").await.0,
        200,
        "liveness is unaffected"
    );
}

#[tokio::test]
async fn metrics_report_token_expiry_and_upstream_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    write_token(
        s.token_file.as_ref().unwrap(),
        SystemTime::now() + Duration::from_secs(3600),
    );
    let (_stop, stop_rx) = watch::channel(false);
    let proxy = Proxy::start(s.plan().expect("valid settings"), stop_rx)
        .await
        .unwrap();
    let admin = proxy.admin_addr.unwrap();
    wait_for(admin, "/readyz", "a token", |s, _| s == 200).await;

    let text = raw(admin, b"GET /metrics HTTP/1.1\r\n\r\n").await;
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{text}"
    );
    let value = |body: &str, name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} missing"))
            .parse()
            .unwrap()
    };
    let left = value(
        &text,
        "entra_redis_proxy_token_seconds_until_expiry{upstream=\"default\"}",
    );
    assert!((3500.0..=3600.0).contains(&left), "{left}");
    let exp = value(
        &text,
        "entra_redis_proxy_token_expiration_timestamp_seconds{upstream=\"default\"}",
    );
    let now = jwt::unix_seconds(SystemTime::now());
    assert!(exp > now + 3500.0 && exp <= now + 3600.0, "{exp} vs {now}");
    assert!(
        value(
            &text,
            "entra_redis_proxy_token_refreshes_total{result=\"success\",upstream=\"default\"}"
        ) >= 1.0
    );

    // A failed connection is counted by reason, and no secret ever appears.
    let mut client = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    let mut reply = Vec::new();
    let _ = client.read_to_end(&mut reply).await;
    let (_, body) = wait_for(admin, "/metrics", "the connect error counter", |_, b| {
        b.contains("entra_redis_proxy_upstream_connect_errors_total{reason=\"connect\",upstream=\"default\"} 1")
    })
    .await;
    let token = std::fs::read_to_string(dir.path().join("token")).unwrap();
    assert!(!body.contains(token.trim()) && !body.contains("test-oid"));
}

#[tokio::test]
async fn bad_requests_get_errors_and_never_hurt_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let (_stop, stop_rx) = watch::channel(false);
    let proxy = Proxy::start(
        settings(dir.path()).plan().expect("valid settings"),
        stop_rx,
    )
    .await
    .unwrap();
    let admin = proxy.admin_addr.unwrap();

    // Idle connections that never send anything do not block others.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(admin).await.unwrap());
    }
    assert_eq!(get(admin, "/nope").await.0, 404);
    let post = raw(
        admin,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    assert!(
        post.to_ascii_lowercase().contains("allow: get, head"),
        "{post}"
    );
    let garbage = raw(admin, b"\x16\x03\x01\x00\xa5garbage\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
    // An endless header: refused with 431 once it passes the bound, not buffered forever.
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
    let mut s = TcpStream::connect(admin).await.unwrap();
    let _ = s.write_all(&huge).await; // the server may close before reading it all
    let mut out = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, s.read_to_end(&mut out)).await;
    assert!(
        out.starts_with(b"HTTP/1.1 431 "),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    // HEAD works for probes that use it.
    let head = raw(admin, b"HEAD /healthz HTTP/1.1\r\n\r\n").await;
    assert!(
        head.starts_with("HTTP/1.1 200 ") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase().contains("content-length: 3\r\n"),
        "HEAD keeps the length of the body it leaves out: {head}"
    );
    // A request head that never completes is cut after the header read timeout.
    let mut slow = TcpStream::connect(admin).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, slow.read_to_end(&mut out)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(12),
        "slow head closed after {took:?}: {:?}",
        String::from_utf8_lossy(&out)
    );

    assert_eq!(get(admin, "/healthz").await.0, 200);
    drop(idle);
}

#[tokio::test]
async fn scrapers_reuse_one_keep_alive_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (_stop, stop_rx) = watch::channel(false);
    let proxy = Proxy::start(
        settings(dir.path()).plan().expect("valid settings"),
        stop_rx,
    )
    .await
    .unwrap();
    let admin = proxy.admin_addr.unwrap();
    let mut s = TcpStream::connect(admin).await.unwrap();
    let mut buf = Vec::new();
    for (path, want) in [("/metrics", "200"), ("/healthz", "200"), ("/nope", "404")] {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        // Read exactly one response: its head, then Content-Length bytes.
        let (head, len) = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .expect("content-length")
                    .parse()
                    .unwrap();
                if buf.len() >= end + 4 + len {
                    buf.drain(..end + 4 + len);
                    break (head, len);
                }
            }
            let mut chunk = [0u8; 65536];
            let n = tokio::time::timeout(DEADLINE, s.read(&mut chunk))
                .await
                .expect("a response in time")
                .unwrap();
            assert!(
                n > 0,
                "the server closed a keep-alive connection after {path}"
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        assert!(
            head.starts_with(&format!("http/1.1 {want} ")),
            "{path}: {head}"
        );
        assert!(len > 0, "{path}");
        assert!(!head.contains("connection: close"), "{head}");
    }
}

#[tokio::test]
async fn admin_connections_beyond_the_limit_are_closed_at_once() {
    use entra_redis_proxy::admin::MAX_CONNECTIONS;
    let dir = tempfile::tempdir().unwrap();
    let (_stop, stop_rx) = watch::channel(false);
    let proxy = Proxy::start(
        settings(dir.path()).plan().expect("valid settings"),
        stop_rx,
    )
    .await
    .unwrap();
    let admin = proxy.admin_addr.unwrap();
    // Fill every slot with a connection that has sent part of a request head.
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let mut s = TcpStream::connect(admin).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // One more is closed without an answer, at once (not after a timeout).
    let mut extra = TcpStream::connect(admin).await.unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").await;
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, extra.read_to_end(&mut out)).await;
    assert!(out.is_empty(), "{:?}", String::from_utf8_lossy(&out));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Once they go, the endpoint answers again.
    drop(held);
    wait_for(admin, "/healthz", "a free slot", |s, _| s == 200).await;
}

#[tokio::test]
async fn admin_is_disabled_by_an_empty_address() {
    let dir = tempfile::tempdir().unwrap();
    let s = Settings {
        admin_listen: String::new(),
        ..settings(dir.path())
    };
    let (_stop, stop_rx) = watch::channel(false);
    let proxy = Proxy::start(s.plan().expect("valid settings"), stop_rx)
        .await
        .unwrap();
    assert!(proxy.admin_addr.is_none());
}

#[tokio::test]
async fn unix_socket_listener_has_its_mode_and_is_removed_on_drop() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("redis.sock");
    let s = Settings {
        listen: vec!["127.0.0.1:0".into(), format!("unix:{}", sock.display())],
        socket_mode: "0600".into(),
        ..settings(dir.path())
    };
    let (_stop, stop_rx) = watch::channel(false);
    let proxy = Proxy::start(s.plan().expect("valid settings"), stop_rx)
        .await
        .unwrap();
    assert_eq!(proxy.unix_paths, vec![sock.clone()]);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // A client on the socket gets a session: without a token, the proxy's error reply.
    let mut client = UnixStream::connect(&sock).await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(DEADLINE, client.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert!(
        reply.starts_with("-ERR entra-redis-proxy has no access token yet"),
        "{reply}"
    );

    drop(proxy);
    assert!(!sock.exists(), "socket file removed with the proxy");
}

#[test]
fn a_bad_socket_mode_is_refused_as_a_config_problem() {
    let dir = tempfile::tempdir().unwrap();
    let s = Settings {
        socket_mode: "0999".into(),
        ..settings(dir.path())
    };
    // Refused when the settings become a plan, before anything is bound.
    let err = s.plan().expect_err("refused");
    assert!(err.to_string().contains("socket_mode"), "{err}");
    let err = entra_redis_proxy::startup::StartupError::from(err);
    assert!(
        matches!(err, entra_redis_proxy::startup::StartupError::Config(_)),
        "{err}"
    );
    assert_eq!(err.exit_code(), 64);
}

// ------------------------------------------------------------------ with a real cache

/// Settings for an in-process proxy in front of the harness's redis-server.
fn settings_for(server: &support::RedisServer, token_file: &Path) -> Settings {
    Settings {
        listen: vec!["127.0.0.1:0".into()],
        admin_listen: "127.0.0.1:0".into(),
        upstream: server.addr(),
        tls_server_name: Some("localhost".into()),
        ca_file: Some(server.tls.ca_file.clone()),
        credential: CredentialKind::TokenFile,
        token_file: Some(token_file.to_owned()),
        token_file_poll: Duration::from_millis(20),
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        ..Settings::default()
    }
}

#[tokio::test]
async fn ready_with_a_real_cache_and_unready_once_it_refuses_the_token() {
    let server = support::RedisServer::start().await;
    let mut rotator = support::Rotator::new(&server).await;
    let (_stop, stop_rx) = watch::channel(false);
    let proxy = Proxy::start(
        settings_for(&server, &rotator.file.path)
            .plan()
            .expect("valid settings"),
        stop_rx,
    )
    .await
    .unwrap();
    let admin = proxy.admin_addr.unwrap();
    wait_for(admin, "/readyz", "ready before any connection", |s, _| {
        s == 200
    })
    .await;

    let mut client = support::RespClient::new(TcpStream::connect(proxy.addrs[0]).await.unwrap());
    assert_eq!(client.cmd(&["PING"]).await, support::Reply::status("PONG"));
    let (status, body) = get(admin, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let metrics = get(admin, "/metrics").await.1;
    assert!(
        metrics.contains("entra_redis_proxy_upstream_connections{upstream=\"default\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("entra_redis_proxy_client_connections{upstream=\"default\"} 1"),
        "{metrics}"
    );

    // The cache stops accepting the token (its user is gone, as at an expiry the proxy
    // could not prevent): new connections fail AUTH and readiness says so. (A warm
    // connection being opened as the user goes may fail first with the connection closed
    // under its AUTH; the next attempt, a refill or this client's, is refused.)
    let oid = rotator.current.oid.clone();
    rotator.admin.delete_user(&oid).await;
    let _second = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    let (_, body) = wait_for(admin, "/readyz", "the AUTH failure", |s, b| {
        s == 503 && b.contains("last upstream connection failed") && b.contains("refused AUTH")
    })
    .await;
    assert!(
        !body.contains(rotator.current.signature()),
        "no secret: {body}"
    );

    // A new token the cache accepts: the readiness probe reconnects without any client.
    rotator.rotate(0).await.unwrap();
    wait_for(admin, "/readyz", "recovery through the probe", |s, _| {
        s == 200
    })
    .await;
}

// ------------------------------------------------------------------ the binary and signals

/// The proxy binary, started with a config file; stderr goes to `dir/stderr.log`.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn start(dir: &Path, config: &str) -> Running {
        let cfg = dir.join("proxy.toml");
        std::fs::write(&cfg, config).unwrap();
        let log = dir.join("stderr.log");
        let child = Command::new(env!("CARGO_BIN_EXE_entra-redis-proxy"))
            .arg("--config")
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Running { child, log }
    }

    fn log(&self) -> String {
        support::redact(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name}");
    }

    /// Waits for exit, at most `within`.
    async fn wait(&mut self, within: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if start.elapsed() > within {
                let _ = self.child.kill();
                panic!("still running after {within:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until something accepts connections on the socket file.
    async fn wait_for_socket(&mut self, sock: &Path) {
        let start = Instant::now();
        while UnixStream::connect(sock).await.is_err() {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("exited early ({st}); log:\n{}", self.log());
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no listener on the socket; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config file for the binary: a unix socket listener, no admin endpoint.
fn binary_config(sock: &Path, upstream: &str, ca: &Path, token_file: &Path, grace: &str) -> String {
    format!(
        "listen = [\"unix:{sock}\"]\n\
         admin_listen = \"\"\n\
         upstream = \"{upstream}\"\n\
         tls_server_name = \"localhost\"\n\
         ca_file = \"{ca}\"\n\
         credential = \"token-file\"\n\
         token_file = \"{token}\"\n\
         startup_wait = \"100ms\"\n\
         shutdown_grace = \"{grace}\"\n",
        sock = sock.display(),
        ca = ca.display(),
        token = token_file.display(),
    )
}

#[tokio::test]
async fn sigterm_with_no_sessions_exits_zero_and_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("p.sock");
    let upstream = format!("127.0.0.1:{}", closed_port());
    let config = binary_config(
        &sock,
        &upstream,
        &ca_file(dir.path()),
        &dir.path().join("token"),
        "25s",
    );
    let mut p = Running::start(dir.path(), &config);
    p.wait_for_socket(&sock).await;
    let start = Instant::now();
    p.signal("TERM");
    let status = p.wait(DEADLINE).await;
    assert!(status.success(), "{status}; log:\n{}", p.log());
    assert!(!sock.exists(), "socket file removed at exit");
    let log = p.log();
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("open files limit"), "{log}");
    assert!(log.contains("no client connection left"), "{log}");
    // Nothing was in flight, so no waiting for the 25 s grace.
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

/// A proxy binary on a unix socket in front of a real cache, and a client on it.
struct SignalSetup {
    _server: support::RedisServer,
    rotator: support::Rotator,
    proxy: Running,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

async fn signal_setup(grace: &str) -> SignalSetup {
    let server = support::RedisServer::start().await;
    let rotator = support::Rotator::new(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("p.sock");
    let config = binary_config(
        &sock,
        &server.addr(),
        &server.tls.ca_file,
        &rotator.file.path,
        grace,
    );
    let mut proxy = Running::start(dir.path(), &config);
    proxy.wait_for_socket(&sock).await;
    SignalSetup {
        _server: server,
        rotator,
        proxy,
        sock,
        _dir: dir,
    }
}

impl SignalSetup {
    async fn client(&self) -> support::RespClient<UnixStream> {
        support::RespClient::new(UnixStream::connect(&self.sock).await.unwrap())
    }

    /// Waits until the cache runs `cmd` for one of the proxy's connections.
    async fn wait_for_cmd_in_flight(&mut self, cmd: &str) {
        let oid = self.rotator.current.oid.clone();
        let start = Instant::now();
        loop {
            let clients = self.rotator.admin.client_list().await;
            if clients.iter().any(|c| c.user == oid && c.cmd == cmd) {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{cmd} never ran: {:?}",
                clients.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn sigint_lets_the_command_in_flight_finish_then_exits_zero() {
    // SIGINT is the fast stop: grace / 5 = 5 s, sessions close at once after their replies.
    let mut s = signal_setup("25s").await;
    let mut client = s.client().await;
    assert_eq!(client.cmd(&["PING"]).await, support::Reply::status("PONG"));
    let mut idle = s.client().await;
    assert_eq!(idle.cmd(&["PING"]).await, support::Reply::status("PONG"));

    client.send(&["BLPOP", "ops:nothing", "2"]).await;
    s.wait_for_cmd_in_flight("blpop").await;
    let start = Instant::now();
    s.proxy.signal("INT");

    // The blocked command gets its own reply (the timeout's null), then the connection closes.
    assert_eq!(client.read_frame().await, support::Reply::Null);
    assert!(
        client.try_read_frame().await.is_err(),
        "closed after the reply"
    );
    // The idle client is closed at once, without an error reply.
    assert!(idle.try_read_frame().await.is_err());
    // No new connections while draining (or the socket is already gone).
    let status = s.proxy.wait(DEADLINE).await;
    let took = start.elapsed();
    assert!(status.success(), "{status}; log:\n{}", s.proxy.log());
    assert!(
        took >= Duration::from_millis(1500),
        "waited for BLPOP: {took:?}"
    );
    assert!(
        took < Duration::from_secs(10),
        "did not wait for the grace: {took:?}"
    );
    assert!(UnixStream::connect(&s.sock).await.is_err());
    assert!(!s.sock.exists());
    assert!(s.proxy.log().contains("all sessions closed; exiting"));
}

#[tokio::test]
async fn the_grace_period_bounds_shutdown_and_sigint_waits_a_fifth_of_it() {
    // (signal, shutdown_grace): both allow about 2 s; a session blocked forever cannot
    // hold the process longer.
    for (sig, grace) in [("TERM", "2s"), ("INT", "10s")] {
        let mut s = signal_setup(grace).await;
        let mut client = s.client().await;
        client.send(&["BLPOP", "ops:nothing", "0"]).await;
        s.wait_for_cmd_in_flight("blpop").await;
        let start = Instant::now();
        s.proxy.signal(sig);
        let status = s.proxy.wait(DEADLINE).await;
        let took = start.elapsed();
        assert!(status.success(), "{sig}: {status}; log:\n{}", s.proxy.log());
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_millis(4500),
            "{sig} with shutdown_grace {grace}: exited after {took:?}; log:\n{}",
            s.proxy.log()
        );
        assert!(!s.sock.exists());
    }
}

#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let mut s = signal_setup("25s").await;
    let mut client = s.client().await;
    client.send(&["BLPOP", "ops:nothing", "0"]).await;
    s.wait_for_cmd_in_flight("blpop").await;
    let start = Instant::now();
    s.proxy.signal("TERM");
    // Wait until the first signal is being handled, then send the second.
    let deadline = Instant::now() + DEADLINE;
    while !s.proxy.log().contains("shutting down") {
        assert!(Instant::now() < deadline, "{}", s.proxy.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.proxy.signal("TERM");
    let status = s.proxy.wait(DEADLINE).await;
    let took = start.elapsed();
    assert!(status.success(), "{status}; log:\n{}", s.proxy.log());
    // Without the second signal the session's own 5 s drain limit would end it.
    assert!(
        took < Duration::from_secs(3),
        "{took:?}; log:\n{}",
        s.proxy.log()
    );
    assert!(s.proxy.log().contains("second signal"));
}

#[tokio::test]
async fn sigint_under_pipelined_load_answers_every_command_it_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = signal_setup("25s").await;
    let stream = UnixStream::connect(&s.sock).await.unwrap();
    let (mut rd, mut wr) = tokio::io::split(stream);
    // The writer pipelines INCR until the proxy stops reading and closes.
    let writer = tokio::spawn(async move {
        let batch = support::encode_command(&["INCR", "ops:counter"]).repeat(200);
        let mut sent = 0usize;
        while wr.write_all(&batch).await.is_ok() {
            sent += 200;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        sent
    });
    // Let the load run, then signal in the middle of it.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    while buf.len() < 20_000 {
        let n = rd.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before the signal");
        buf.extend_from_slice(&chunk[..n]);
    }
    s.proxy.signal("INT");
    loop {
        match tokio::time::timeout(DEADLINE, rd.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("the connection stayed open after SIGINT"),
        }
    }
    let status = s.proxy.wait(DEADLINE).await;
    assert!(status.success(), "{status}; log:\n{}", s.proxy.log());
    let sent = writer.await.unwrap();

    // Replies are 1, 2, 3, ... with no gap and no partial frame at the end.
    let text = String::from_utf8(buf).unwrap();
    assert!(text.ends_with("\r\n"), "a reply was cut short");
    let replies: Vec<u64> = text
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_prefix(':').unwrap().parse().unwrap())
        .collect();
    for (i, v) in replies.iter().enumerate() {
        assert_eq!(*v, i as u64 + 1, "reply {i}");
    }
    // Every command that ran on the cache was answered: nothing forwarded was dropped.
    let ran = match s.rotator.admin.cmd(&["GET", "ops:counter"]).await {
        support::Reply::Bulk(b) => String::from_utf8(b).unwrap().parse::<usize>().unwrap(),
        other => panic!("GET: {other:?}"),
    };
    assert_eq!(ran, replies.len(), "commands run == replies received");
    assert!(ran <= sent && ran >= 1000, "ran {ran} of {sent} sent");
}

/// The admin address from a text log's `admin listening` line.
fn admin_addr_in(log: &str) -> Option<std::net::SocketAddr> {
    log.lines()
        .filter(|l| l.contains("admin listening"))
        .find_map(|l| l.split("address=").nth(1))
        .and_then(|a| a.split_whitespace().next()?.parse().ok())
}

/// [`signal_setup`] with the admin endpoint on an ephemeral port; returns its address.
async fn signal_setup_with_admin(grace: &str) -> (SignalSetup, std::net::SocketAddr) {
    let server = support::RedisServer::start().await;
    let rotator = support::Rotator::new(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("p.sock");
    let config = binary_config(
        &sock,
        &server.addr(),
        &server.tls.ca_file,
        &rotator.file.path,
        grace,
    )
    .replace("admin_listen = \"\"", "admin_listen = \"127.0.0.1:0\"");
    let mut proxy = Running::start(dir.path(), &config);
    proxy.wait_for_socket(&sock).await;
    let deadline = Instant::now() + DEADLINE;
    let admin = loop {
        if let Some(a) = admin_addr_in(&proxy.log()) {
            break a;
        }
        assert!(Instant::now() < deadline, "{}", proxy.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let s = SignalSetup {
        _server: server,
        rotator,
        proxy,
        sock,
        _dir: dir,
    };
    (s, admin)
}

/// A client that sends `INCR key` and reads its reply, every 10 ms, until the connection
/// closes; returns the replies it got (1, 2, 3, ... if none was lost).
fn steady_client(
    stream: UnixStream,
    key: &'static str,
) -> tokio::task::JoinHandle<Vec<support::Reply>> {
    tokio::spawn(async move {
        let mut c = support::RespClient::new(stream);
        let mut replies = Vec::new();
        loop {
            match c.try_cmd(&["INCR", key]).await {
                Ok(r) => replies.push(r),
                Err(_) => return replies,
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

#[tokio::test]
async fn sigterm_keeps_serving_clients_until_they_leave_then_exits() {
    // The classic-sidecar order: the app and the proxy get SIGTERM together, and the app
    // still needs Redis while it drains its own requests.
    let (mut s, admin) = signal_setup_with_admin("25s").await;
    wait_for(admin, "/readyz", "ready", |st, _| st == 200).await;
    let busy = steady_client(UnixStream::connect(&s.sock).await.unwrap(), "ops:steady");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    s.proxy.signal("TERM");

    // Readiness fails at once, so the pod leaves its Service...
    wait_for(admin, "/readyz", "not ready after SIGTERM", |st, b| {
        st == 503 && b.contains("shutting down")
    })
    .await;
    assert!(signalled.elapsed() < Duration::from_secs(2));
    // ...but the app is still served: a new connection is accepted and answered, and the
    // busy client keeps going for seconds.
    let mut late = s.client().await;
    assert_eq!(late.cmd(&["PING"]).await, support::Reply::status("PONG"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(late.cmd(&["PING"]).await, support::Reply::status("PONG"));
    assert!(s.proxy.child.try_wait().unwrap().is_none(), "still running");
    let ran_before = match s.rotator.admin.cmd(&["GET", "ops:steady"]).await {
        support::Reply::Bulk(b) => String::from_utf8(b).unwrap().parse::<u64>().unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(ran_before > 100, "the busy client was served: {ran_before}");

    // The app is done: its connections close, and the proxy exits after the quiet period,
    // long before the 25 s grace.
    drop(late);
    busy.abort();
    let _ = busy.await;
    let left = Instant::now();
    let status = s.proxy.wait(DEADLINE).await;
    assert!(status.success(), "{status}; log:\n{}", s.proxy.log());
    let took = left.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "exited {took:?} after the last client left"
    );
    let log = s.proxy.log();
    assert!(log.contains("no client connection left"), "{log}");
    assert!(log.contains("all sessions closed; exiting"), "{log}");
}

#[tokio::test]
async fn sigterm_grace_end_closes_a_client_that_keeps_sending_at_a_reply_boundary() {
    let (mut s, admin) = signal_setup_with_admin("3s").await;
    let stream = UnixStream::connect(&s.sock).await.unwrap();
    let (mut rd, mut wr) = tokio::io::split(stream);
    // Pipelines INCR without pause until the proxy closes.
    let writer = tokio::spawn(async move {
        let batch = support::encode_command(&["INCR", "ops:grace"]).repeat(100);
        let mut sent = 0usize;
        while wr.write_all(&batch).await.is_ok() {
            sent += 100;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sent
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    while buf.len() < 5_000 {
        let n = rd.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before the signal");
        buf.extend_from_slice(&chunk[..n]);
    }
    let signalled = Instant::now();
    s.proxy.signal("TERM");
    let mut at_signal_plus_1s = None;
    loop {
        match tokio::time::timeout(DEADLINE, rd.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("the connection stayed open after the grace period"),
        }
        if at_signal_plus_1s.is_none() && signalled.elapsed() >= Duration::from_secs(1) {
            at_signal_plus_1s = Some(buf.len());
            assert_eq!(
                get(admin, "/readyz").await.0,
                503,
                "not ready while serving"
            );
        }
    }
    let closed_after = signalled.elapsed();
    let status = s.proxy.wait(DEADLINE).await;
    assert!(status.success(), "{status}; log:\n{}", s.proxy.log());
    let sent = writer.await.unwrap();
    // Served through the grace period, closed at its end (not at the signal).
    assert!(
        closed_after >= Duration::from_millis(2000) && closed_after < Duration::from_secs(6),
        "closed {closed_after:?} after SIGTERM"
    );
    let at_1s = at_signal_plus_1s.expect("still open 1 s after SIGTERM");
    assert!(buf.len() > at_1s, "replies kept coming after the signal");

    // Replies are 1, 2, 3, ... with no gap and no partial frame, and every command the
    // cache ran was answered.
    let text = String::from_utf8(buf).unwrap();
    assert!(text.ends_with("\r\n"), "a reply was cut short");
    let replies: Vec<u64> = text
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_prefix(':').unwrap().parse().unwrap())
        .collect();
    for (i, v) in replies.iter().enumerate() {
        assert_eq!(*v, i as u64 + 1, "reply {i}");
    }
    let ran = match s.rotator.admin.cmd(&["GET", "ops:grace"]).await {
        support::Reply::Bulk(b) => String::from_utf8(b).unwrap().parse::<usize>().unwrap(),
        other => panic!("GET: {other:?}"),
    };
    assert_eq!(ran, replies.len(), "commands run == replies received");
    assert!(ran <= sent, "ran {ran} of {sent} sent");
    assert!(s.proxy.log().contains("grace period ending"));
}

#[tokio::test]
async fn default_settings_start_without_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let server = support::RedisServer::start().await;
    let rotator = support::Rotator::new(&server).await;
    std::fs::set_permissions(&rotator.file.path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("p.sock");
    // Nothing but what a deployment must say (where the cache is, how to get a token).
    let config = format!(
        "listen = [\"unix:{sock}\"]\n\
         admin_listen = \"127.0.0.1:0\"\n\
         upstream = \"{upstream}\"\n\
         tls_server_name = \"localhost\"\n\
         ca_file = \"{ca}\"\n\
         credential = \"token-file\"\n\
         token_file = \"{token}\"\n",
        sock = sock.display(),
        upstream = server.addr(),
        ca = server.tls.ca_file.display(),
        token = rotator.file.path.display(),
    );
    let mut p = Running::start(dir.path(), &config);
    p.wait_for_socket(&sock).await;
    let mut c = support::RespClient::new(UnixStream::connect(&sock).await.unwrap());
    assert_eq!(c.cmd(&["PING"]).await, support::Reply::status("PONG"));
    drop(c);
    p.signal("TERM");
    assert!(p.wait(DEADLINE).await.success());
    let log = p.log();
    assert!(log.contains("open files limit"), "{log}");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(
        warnings.is_empty(),
        "warnings at a default start: {warnings:#?}"
    );
}

//! Several caches from one proxy: two `[[upstreams]]` entries, each with its own listener,
//! cache, CA and identity (token file), served at once; tokens rotate independently; the
//! metrics are labelled by upstream; upstreams with the same identity share a token manager.

use test_harness as support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `listening` log lines: upstream name to its client listener address; and the admin address.
fn listeners(proxy: &Proxy) -> (HashMap<String, SocketAddr>, Option<SocketAddr>) {
    let mut out = HashMap::new();
    let mut admin = None;
    for line in proxy.raw_logs().lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let f = &v["fields"];
        let addr = f["address"].as_str().and_then(|a| a.parse().ok());
        match (f["message"].as_str(), f["upstream"].as_str(), addr) {
            (Some("listening"), Some(name), Some(addr)) => {
                out.insert(name.to_owned(), addr);
            }
            (Some("admin listening"), _, Some(addr)) => admin = Some(addr),
            _ => {}
        }
    }
    (out, admin)
}

async fn client(addr: SocketAddr) -> ProxyClient {
    RespClient::new(TcpStream::connect(addr).await.unwrap())
}

fn entry(name: &str, port: u16, server: &RedisServer, token_file: &std::path::Path) -> String {
    format!(
        "[[upstreams]]\nname = \"{name}\"\nlisten = [\"127.0.0.1:{port}\"]\nupstream = \"{}\"\n\
         tls_server_name = \"localhost\"\nca_file = \"{}\"\ncredential = \"token-file\"\n\
         token_file = \"{}\"\n\n",
        server.addr(),
        server.tls.ca_file.display(),
        token_file.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_caches_with_their_own_identities_at_once() {
    let (a, b) = tokio::join!(RedisServer::start(), RedisServer::start());
    let mut rot_a = Rotator::new(&a).await;
    let mut rot_b = Rotator::new(&b).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    // A third upstream reuses the first identity: it must share its token manager. (No warm
    // connections: the test counts each session's own connection and re-AUTHs.)
    let text = format!(
        "token_file_poll = \"50ms\"\nadmin_listen = \"127.0.0.1:0\"\nwarm_connections = 0\n\n{}{}{}",
        entry("sessions", free_port(), &a, &rot_a.file.path),
        entry("orders", free_port(), &b, &rot_b.file.path),
        entry("sessions-again", free_port(), &a, &rot_a.file.path),
    );
    std::fs::write(&config, text).unwrap();
    let args = vec!["--config".to_owned(), config.display().to_string()];
    let proxy = Proxy::start(&args, "info").await;
    let mut found = (HashMap::new(), None);
    assert!(
        wait_until(Duration::from_secs(10), || {
            found = listeners(&proxy);
            let done = found.0.len() == 3 && found.1.is_some();
            async move { done }
        })
        .await,
        "three listeners and the admin endpoint: {}",
        proxy.logs()
    );
    let (ports, admin) = (found.0, found.1.unwrap());

    // Each listener reaches its own cache.
    let mut ca = client(ports["sessions"]).await;
    let mut cb = client(ports["orders"]).await;
    let mut ca2 = client(ports["sessions-again"]).await;
    assert_eq!(ca.cmd(&["SET", "where", "a"]).await, Reply::ok());
    assert_eq!(cb.cmd(&["SET", "where", "b"]).await, Reply::ok());
    assert_eq!(ca2.cmd(&["GET", "where"]).await, Reply::bulk("a"));
    let mut admin_a = a.admin().await;
    let mut admin_b = b.admin().await;
    assert_eq!(admin_a.cmd(&["GET", "where"]).await, Reply::bulk("a"));
    assert_eq!(admin_b.cmd(&["GET", "where"]).await, Reply::bulk("b"));
    // Each authenticated as its own identity.
    let users = |list: Vec<ClientInfo>| list.into_iter().map(|c| c.user).collect::<Vec<_>>();
    assert_eq!(
        users(admin_a.client_list().await),
        [rot_a.current.oid.clone(), rot_a.current.oid.clone()]
    );
    assert_eq!(
        users(admin_b.client_list().await),
        [rot_b.current.oid.clone()]
    );

    // Two identities, two token managers (the third upstream shares the first's).
    let started = proxy.logs().matches("token manager started").count();
    assert_eq!(started, 2, "{}", proxy.logs());

    // Rotate only the orders identity: only its connection re-authenticates, and its old
    // user is deleted (emulated expiry) without touching the other cache.
    rot_b.rotate(1).await.expect("orders rotation");
    assert_eq!(cb.cmd(&["GET", "where"]).await, Reply::bulk("b"));
    rot_a.rotate(2).await.expect("sessions rotation");
    assert_eq!(ca.cmd(&["GET", "where"]).await, Reply::bulk("a"));
    assert_eq!(ca2.cmd(&["GET", "where"]).await, Reply::bulk("a"));
    assert_eq!(cb.cmd(&["GET", "where"]).await, Reply::bulk("b"));

    let m = scrape_metrics(admin).await;
    let s = |name: &str, labels: &str| {
        metric_value(&m, &format!("entra_redis_proxy_{name}{{{labels}}}"))
    };
    assert_eq!(s("client_connections", "upstream=\"sessions\""), 1.0);
    assert_eq!(s("client_connections", "upstream=\"orders\""), 1.0);
    assert_eq!(s("client_connections", "upstream=\"sessions-again\""), 1.0);
    assert_eq!(s("upstream_connections", "upstream=\"orders\""), 1.0);
    // Re-AUTHs: orders once (one rotation, one connection); sessions once per connection.
    assert_eq!(
        s("reauth_total", "result=\"success\",upstream=\"orders\""),
        1.0
    );
    assert_eq!(
        s("reauth_total", "result=\"success\",upstream=\"sessions\""),
        1.0
    );
    assert_eq!(
        s(
            "reauth_total",
            "result=\"success\",upstream=\"sessions-again\""
        ),
        1.0
    );
    // Token refreshes are counted for every upstream using the token.
    assert_eq!(
        s(
            "token_refreshes_total",
            "result=\"success\",upstream=\"orders\""
        ),
        2.0
    );
    assert_eq!(
        s(
            "token_refreshes_total",
            "result=\"success\",upstream=\"sessions\""
        ),
        2.0
    );
    assert_eq!(
        s(
            "token_refreshes_total",
            "result=\"success\",upstream=\"sessions-again\""
        ),
        2.0
    );
    assert!(s("token_seconds_until_expiry", "upstream=\"orders\"") > 3000.0);
    assert!(m.contains("entra_redis_proxy_build_info{version="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_the_upstream_that_is_not_ready() {
    let a = RedisServer::start().await;
    let rot_a = Rotator::new(&a).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    let missing = dir.path().join("no-token-yet");
    let text = format!(
        "token_file_poll = \"50ms\"\nadmin_listen = \"127.0.0.1:0\"\n\n{}{}",
        entry("good", free_port(), &a, &rot_a.file.path),
        entry("broken", free_port(), &a, &missing),
    );
    std::fs::write(&config, text).unwrap();
    let args = vec!["--config".to_owned(), config.display().to_string()];
    let proxy = Proxy::start(&args, "info").await;
    let mut admin = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            admin = listeners(&proxy).1;
            let done = admin.is_some();
            async move { done }
        })
        .await
    );
    // The good upstream's first token arrives a few milliseconds after the admin listener
    // opens: poll until it has it (a first read can name both), then the broken one must
    // still be named, with the error its manager met.
    let admin = admin.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = readyz(admin).await;
        if !out.contains("upstream good") && out.contains("cannot read token file") {
            break out;
        }
        assert!(std::time::Instant::now() < deadline, "last /readyz: {out}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.contains("upstream broken: no token yet"), "{out}");
}

/// One `GET /readyz`, the whole response as text.
async fn readyz(admin: SocketAddr) -> String {
    let mut s = TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

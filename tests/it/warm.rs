//! Warm connections (`--warm-connections N`): connected and authenticated before any client
//! asks, re-authenticated on every token, replaced when the cache closes them, refilled after
//! each use; a client that takes one is served exactly as by a fresh connection.

use test_harness as support;

use std::time::{Duration, Instant};

use support::*;

const WAIT: Duration = Duration::from_secs(15);

/// The harness's arguments with `warm` warm connections and the admin endpoint on.
fn warm_args(server: &RedisServer, token_file: &std::path::Path, warm: usize) -> Vec<String> {
    let mut args = proxy_args(server, token_file);
    set_flag(&mut args, "--admin-listen", "127.0.0.1:0");
    set_flag(&mut args, "--warm-connections", &warm.to_string());
    args
}

/// Waits until `warm_connections` is `n`; returns the last scrape.
async fn wait_warm(metrics: std::net::SocketAddr, n: f64) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let m = scrape_metrics(metrics).await;
        if proxy_metric(&m, "warm_connections{upstream=\"default\"}") == n {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "warm_connections never {n}:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_connections_wait_before_any_client_and_are_refilled_after_each_use() {
    let server = RedisServer::start().await;
    let rotator = Rotator::new(&server).await;
    let proxy = Proxy::start(&warm_args(&server, &rotator.file.path, 2), "debug").await;
    let metrics = admin_address(&proxy);
    let mut admin = server.admin().await;
    let user = rotator.current.oid.clone();

    // Before any client: two connections on the server, authenticated as the token's user.
    wait_warm(metrics, 2.0).await;
    assert_eq!(admin.clients_as(&user).await.len(), 2);

    // Clients take them (hits), one after another, each refilled behind it.
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut c = proxy.client().await;
        assert_eq!(
            c.cmd(&["SET", &format!("k{i}"), "v"]).await,
            Reply::ok(),
            "client {i}"
        );
        assert_eq!(c.cmd(&["GET", &format!("k{i}")]).await, Reply::bulk("v"));
        clients.push(c);
        wait_warm(metrics, 2.0).await;
    }
    let m = scrape_metrics(metrics).await;
    assert_eq!(
        proxy_metric(
            &m,
            "warm_connection_uses_total{result=\"hit\",upstream=\"default\"}"
        ),
        3.0
    );
    assert_eq!(
        proxy_metric(
            &m,
            "warm_connection_uses_total{result=\"miss\",upstream=\"default\"}"
        ),
        0.0
    );
    // Three sessions' connections plus two warm ones.
    assert_eq!(admin.clients_as(&user).await.len(), 5);

    // A session on a warm connection is an ordinary one: its state is its own.
    let mut c = proxy.client().await;
    assert_eq!(c.cmd(&["SELECT", "3"]).await, Reply::ok());
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", "mine"]).await, Reply::ok());
    assert_eq!(c.cmd(&["GET", "k0"]).await, Reply::Null);
    wait_warm(metrics, 2.0).await;
    let names: Vec<String> = admin
        .cmd(&["CLIENT", "LIST"])
        .await
        .text()
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" name=mine "))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        names.len(),
        1,
        "only the session's connection is named: {names:?}"
    );
    assert!(names[0].contains(" db=3 "), "{names:?}");
    let mut fresh = proxy.client().await;
    assert_eq!(fresh.cmd(&["GET", "k0"]).await, Reply::bulk("v"), "db 0");
    assert_eq!(fresh.cmd(&["CLIENT", "GETNAME"]).await, Reply::Null);
    drop(clients);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_warm_connections_are_reauthenticated_on_every_token() {
    let server = RedisServer::start().await;
    let mut rotator = Rotator::new(&server).await;
    let proxy = Proxy::start(&warm_args(&server, &rotator.file.path, 3), "debug").await;
    let metrics = admin_address(&proxy);
    let mut admin = server.admin().await;
    wait_warm(metrics, 3.0).await;

    for round in 0..3 {
        // The rotator waits until no connection is left on the old user, then deletes it:
        // the idle warm connections must have been re-authenticated (or the server would
        // have closed them with the user).
        let token = rotator.rotate(3).await.expect("rotation");
        let warm = admin.clients_as(&token.oid).await;
        assert_eq!(warm.len(), 3, "round {round}: {warm:?}");
        wait_warm(metrics, 3.0).await;

        // A client that takes one now runs as the new identity.
        let mut c = proxy.client().await;
        assert_eq!(
            c.cmd(&["ACL", "WHOAMI"]).await,
            Reply::bulk(token.oid.as_str()),
            "round {round}"
        );
        drop(c);
        // Its connection closes with it; the pool refills to three.
        let deadline = Instant::now() + WAIT;
        while admin.clients_as(&token.oid).await.len() != 3 {
            assert!(
                Instant::now() < deadline,
                "round {round}: pool not back to 3"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let m = scrape_metrics(metrics).await;
    assert_eq!(
        proxy_metric(&m, "warm_connections_discarded_total{upstream=\"default\"}"),
        0.0,
        "re-AUTHs succeeded; nothing was dropped"
    );
    assert!(!proxy.raw_logs().contains(rotator.current.signature()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_connections_the_cache_closed_are_dropped_and_the_client_is_served() {
    let server = RedisServer::start().await;
    let rotator = Rotator::new(&server).await;
    let proxy = Proxy::start(&warm_args(&server, &rotator.file.path, 2), "debug").await;
    let metrics = admin_address(&proxy);
    let mut admin = server.admin().await;
    let user = rotator.current.oid.clone();
    wait_warm(metrics, 2.0).await;

    // The cache closes both idle connections (a failover, an idle timeout).
    for c in admin.clients_as(&user).await {
        admin
            .cmd(&["CLIENT", "KILL", "ID", &c.id.to_string()])
            .await;
    }
    let deadline = Instant::now() + WAIT;
    while !admin.clients_as(&user).await.is_empty() {
        assert!(Instant::now() < deadline, "the kills did not take");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Give the closes time to reach the proxy's sockets.
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The next client is served (on a fresh connection): no error, no lost command.
    let mut c = proxy.client().await;
    assert_eq!(c.cmd(&["INCR", "n"]).await, Reply::Int(1));
    let m = wait_warm(metrics, 2.0).await;
    assert_eq!(
        proxy_metric(&m, "warm_connections_discarded_total{upstream=\"default\"}"),
        2.0
    );
    assert_eq!(
        proxy_metric(
            &m,
            "warm_connection_uses_total{result=\"miss\",upstream=\"default\"}"
        ),
        1.0
    );
    assert_eq!(
        proxy_metric(
            &m,
            "upstream_losses_total{outcome=\"closed\",upstream=\"default\"}"
        ),
        0.0
    );
    assert_eq!(c.cmd(&["INCR", "n"]).await, Reply::Int(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cache_is_retried_with_backoff_and_makes_the_proxy_unready() {
    let server = RedisServer::start().await;
    let rotator = Rotator::new(&server).await;
    // A port nothing listens on.
    let closed = free_port();
    let mut args = warm_args(&server, &rotator.file.path, 2);
    let at = args.iter().position(|a| a == "--upstream").unwrap();
    args[at + 1] = format!("127.0.0.1:{closed}");
    let proxy = Proxy::start(&args, "debug").await;
    let metrics = admin_address(&proxy);

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let m = scrape_metrics(metrics).await;
    let errors = proxy_metric(
        &m,
        "upstream_connect_errors_total{reason=\"connect\",upstream=\"default\"}",
    );
    // 100 ms doubling: about 4 attempts in 1.5 s, never a tight loop.
    assert!((1.0..=6.0).contains(&errors), "{errors} attempts in 1.5 s");
    assert_eq!(
        proxy_metric(&m, "warm_connections{upstream=\"default\"}"),
        0.0
    );
    assert_eq!(proxy_metric(&m, "ready{upstream=\"default\"}"), 0.0, "{m}");

    // A client gets the usual error reply, not a hang.
    let mut c = proxy.client().await;
    let reply = c.read_frame().await;
    assert!(
        reply
            .text()
            .is_some_and(|t| t.contains("cannot open the upstream connection")),
        "{reply:?}"
    );
}

#[test]
fn too_many_warm_connections_is_a_configuration_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_entra-redis-proxy"))
        .env_clear()
        .args(["--upstream", "cache.example", "--warm-connections", "5000"])
        .output()
        .expect("run the proxy");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("`warm_connections`"), "{err}");
    assert!(err.contains("connection limit"), "{err}");
}

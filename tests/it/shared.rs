//! Shared upstream connections (`--pool-size N`): many clients' stateless commands over N
//! pipelined connections, stateful clients pinned to connections of their own, re-AUTH of
//! the shared connections, and what a lost shared connection does to its clients.

use test_harness as support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

/// The harness's arguments with `--pool-size pool` and the admin endpoint on.
fn pool_args(server: &RedisServer, token_file: &std::path::Path, pool: usize) -> Vec<String> {
    let mut args = proxy_args(server, token_file);
    let at = args.iter().position(|a| a == "--admin-listen").unwrap();
    args[at + 1] = "127.0.0.1:0".into();
    args.extend(["--pool-size".to_owned(), pool.to_string()]);
    args
}

fn sample(m: &str, name: &str) -> f64 {
    metric_value(m, &format!("entra_redis_proxy_{name}"))
}

/// Connections on the server authenticated as `user`.
async fn on_server(admin: &mut Admin, user: &str) -> Vec<ClientInfo> {
    admin
        .client_list()
        .await
        .into_iter()
        .filter(|c| c.user == user)
        .collect()
}

/// Waits until `shared_connections` is `n`.
async fn wait_shared(metrics: std::net::SocketAddr, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = scrape_metrics(metrics).await;
        if sample(&m, "shared_connections{upstream=\"default\"}") == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "shared_connections never {n}:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_clients_share_four_connections_through_three_expiries() {
    let server = RedisServer::start().await;
    let mut rotator = Rotator::new(&server).await;
    let proxy = Proxy::start(&pool_args(&server, &rotator.file.path, 4), "info").await;
    let metrics = admin_address(&proxy);
    wait_shared(metrics, 4.0).await;

    // 300 clients, each counting on a key of its own with pipelines of 3 INCRs: every reply
    // must be the next number, so a lost, duplicated or misrouted reply shows.
    const CLIENTS: usize = 300;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for i in 0..CLIENTS {
        let mut c = proxy.client().await;
        let stop = stop.clone();
        let done = done.clone();
        workers.push(tokio::spawn(async move {
            let key = format!("count:{i}");
            let mut n = 0i64;
            let one = encode_command(&["INCR", &key]);
            let three = [one.clone(), one.clone(), one].concat();
            while !stop.load(Ordering::Relaxed) || n < 6 {
                let replies = c.pipeline(&three, 3).await;
                for r in replies {
                    n += 1;
                    assert_eq!(r, Reply::Int(n), "client {i}");
                }
                done.fetch_add(3, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            n
        }));
    }

    // Pinned: a transaction, a RESP2 subscriber, a client blocked in BLPOP 0.
    let mut multi = proxy.client().await;
    assert_eq!(multi.cmd(&["MULTI"]).await, Reply::ok());
    assert_eq!(multi.cmd(&["INCR", "txn"]).await, Reply::status("QUEUED"));
    assert_eq!(
        multi.cmd(&["EXEC"]).await,
        Reply::Array(vec![Reply::Int(1)])
    );
    let mut subscriber = proxy.client().await;
    assert_eq!(subscriber.cmd(&["PING"]).await, Reply::status("PONG"));
    assert_eq!(
        subscriber.cmd(&["SUBSCRIBE", "news"]).await,
        Reply::Array(vec![
            Reply::bulk("subscribe"),
            Reply::bulk("news"),
            Reply::Int(1)
        ])
    );
    let mut blocked = proxy.client().await;
    blocked.send(&["BLPOP", "queue", "0"]).await;

    // Every client so far has run commands: at most 4 shared connections plus the 3 pinned.
    let deadline = Instant::now() + Duration::from_secs(15);
    let user = rotator.current.oid.clone();
    loop {
        let conns = on_server(&mut rotator.admin, &user).await;
        let blpop = conns.iter().any(|c| c.cmd == "blpop");
        if blpop && conns.len() == 4 + 3 {
            break;
        }
        assert!(
            conns.len() <= 4 + 3,
            "more upstream connections than 4 shared + 3 pinned: {conns:?}"
        );
        assert!(
            Instant::now() < deadline,
            "never 4 + 3 connections: {conns:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Three expiries: each new token's user must be on all 7 connections before the old
    // user is deleted (which would close any connection still on it).
    for round in 0..3 {
        rotator
            .rotate(4 + 3)
            .await
            .unwrap_or_else(|e| panic!("rotation {round}: {e}\n{}", proxy.logs()));
        let before = done.load(Ordering::Relaxed);
        assert!(
            wait_until(Duration::from_secs(10), || {
                let done = done.clone();
                async move { done.load(Ordering::Relaxed) > before + 300 }
            })
            .await,
            "the clients stopped after rotation {round}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for (i, w) in workers.into_iter().enumerate() {
        let n = w.await.unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert!(n >= 6, "client {i} counted to {n}");
    }

    // The pinned clients are still served, with their state.
    let mut other = proxy.client().await;
    assert_eq!(other.cmd(&["LPUSH", "queue", "job"]).await, Reply::Int(1));
    assert_eq!(
        blocked.read_frame().await,
        Reply::Array(vec![Reply::bulk("queue"), Reply::bulk("job")])
    );
    assert_eq!(
        other.cmd(&["PUBLISH", "news", "hello"]).await,
        Reply::Int(1)
    );
    assert_eq!(
        subscriber.read_frame().await,
        Reply::Array(vec![
            Reply::bulk("message"),
            Reply::bulk("news"),
            Reply::bulk("hello")
        ])
    );
    assert_eq!(multi.cmd(&["MULTI"]).await, Reply::ok());
    assert_eq!(multi.cmd(&["INCR", "txn"]).await, Reply::status("QUEUED"));
    assert_eq!(
        multi.cmd(&["EXEC"]).await,
        Reply::Array(vec![Reply::Int(2)])
    );

    let m = scrape_metrics(metrics).await;
    for reason in ["transaction", "subscribe", "blocking"] {
        assert_eq!(
            sample(
                &m,
                &format!("pins_total{{reason=\"{reason}\",upstream=\"default\"}}")
            ),
            1.0,
            "{reason}:\n{m}"
        );
    }
    assert_eq!(sample(&m, "shared_connections{upstream=\"default\"}"), 4.0);
    assert!(sample(&m, "reauth_total{result=\"success\",upstream=\"default\"}") >= 3.0 * 7.0);
    assert_eq!(
        sample(&m, "reauth_total{result=\"failure\",upstream=\"default\"}"),
        0.0
    );
    let per_conn: f64 = (0..4)
        .map(|i| {
            sample(
                &m,
                &format!("shared_commands_total{{connection=\"resp2-{i}\",upstream=\"default\"}}"),
            )
        })
        .sum();
    assert!(per_conn >= done.load(Ordering::Relaxed) as f64, "{m}");
}

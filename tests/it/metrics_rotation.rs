//! The metrics move as they must while tokens rotate: refreshes, one re-AUTH per live
//! session per rotation, nothing left pending, and connection gauges back to zero.

use test_harness as support;

use std::time::{Duration, Instant};

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_rotations_and_connections() {
    let server = RedisServer::start().await;
    let mut rotator = Rotator::new(&server).await;
    let mut args = proxy_args(&server, &rotator.file.path);
    let at = args.iter().position(|a| a == "--admin-listen").unwrap();
    args[at + 1] = "127.0.0.1:0".into();
    let proxy = Proxy::start(&args, "info").await;
    let admin = admin_address(&proxy);

    const SESSIONS: usize = 5;
    let mut clients = Vec::new();
    for _ in 0..SESSIONS {
        let mut c = proxy.client().await;
        assert_eq!(c.cmd(&["PING"]).await, Reply::status("PONG"));
        clients.push(c);
    }
    let m = scrape_metrics(admin).await;
    assert_eq!(
        metric_value(
            &m,
            "entra_redis_proxy_client_connections{upstream=\"default\"}"
        ),
        SESSIONS as f64
    );
    assert_eq!(
        metric_value(
            &m,
            "entra_redis_proxy_upstream_connections{upstream=\"default\"}"
        ),
        SESSIONS as f64
    );
    let refreshes_before = metric_value(
        &m,
        "entra_redis_proxy_token_refreshes_total{result=\"success\",upstream=\"default\"}",
    );

    const ROTATIONS: usize = 3;
    for _ in 0..ROTATIONS {
        rotator.rotate(SESSIONS).await.expect("rotation");
    }
    let m = scrape_metrics(admin).await;
    assert!(
        metric_value(
            &m,
            "entra_redis_proxy_token_refreshes_total{result=\"success\",upstream=\"default\"}"
        ) >= refreshes_before + ROTATIONS as f64
    );
    assert_eq!(
        metric_value(
            &m,
            "entra_redis_proxy_reauth_total{result=\"success\",upstream=\"default\"}"
        ),
        (SESSIONS * ROTATIONS) as f64,
        "one re-AUTH per live session per rotation"
    );
    assert_eq!(
        metric_value(
            &m,
            "entra_redis_proxy_reauth_total{result=\"failure\",upstream=\"default\"}"
        ),
        0.0
    );
    assert_eq!(
        metric_value(&m, "entra_redis_proxy_reauth_pending{upstream=\"default\"}"),
        0.0
    );
    assert!(
        metric_value(
            &m,
            "entra_redis_proxy_token_seconds_until_expiry{upstream=\"default\"}"
        ) > 3000.0
    );
    assert!(
        metric_value(&m, "entra_redis_proxy_commands_total{upstream=\"default\"}")
            >= SESSIONS as f64
    );
    // No secret in the exposition.
    for t in &rotator.issued {
        assert!(!m.contains(&t.jwt) && !m.contains(t.signature()));
    }

    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape_metrics(admin).await;
        if metric_value(
            &m,
            "entra_redis_proxy_client_connections{upstream=\"default\"}",
        ) == 0.0
            && metric_value(
                &m,
                "entra_redis_proxy_upstream_connections{upstream=\"default\"}",
            ) == 0.0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gauges did not return to zero:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

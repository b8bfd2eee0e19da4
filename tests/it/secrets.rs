//! Tokens never reach the logs, even at `RUST_LOG=trace`, through connections, client AUTH,
//! RESET, Pub/Sub and several rotations.

use test_harness as support;

use std::time::Duration;

use support::{Proxy, RedisServer, Reply, Rotator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_in_trace_logs() {
    let server = RedisServer::start().await;
    let mut rotator = Rotator::new(&server).await;
    let proxy = Proxy::start(&support::proxy_args(&server, &rotator.file.path), "trace").await;

    let mut plain = proxy.client().await;
    let mut resp3 = proxy.client().await;
    let mut sub = proxy.client().await;
    assert!(matches!(resp3.cmd(&["HELLO", "3"]).await, Reply::Map(_)));
    assert_eq!(
        sub.cmd(&["SUBSCRIBE", "secrets"]).await,
        Reply::Array(vec![
            Reply::bulk("subscribe"),
            Reply::bulk("secrets"),
            Reply::Int(1)
        ])
    );
    for round in 0..4 {
        let value = format!("v{round}");
        assert_eq!(
            plain.cmd(&["SET", "s:k", value.as_str()]).await,
            Reply::ok()
        );
        assert_eq!(plain.cmd(&["GET", "s:k"]).await, Reply::bulk(&value));
        assert_eq!(plain.cmd(&["AUTH", "user", "pw"]).await, Reply::ok());
        assert_eq!(resp3.cmd(&["RESET"]).await, Reply::status("RESET"));
        assert_eq!(
            resp3.cmd(&["ACL", "WHOAMI"]).await,
            Reply::bulk(&rotator.current.oid)
        );
        assert_eq!(
            plain.cmd(&["PUBLISH", "secrets", value.as_str()]).await,
            Reply::Int(1)
        );
        assert_eq!(
            sub.read_frame().await,
            Reply::bulks(&["message", "secrets", &value])
        );
        rotator
            .rotate(3)
            .await
            .unwrap_or_else(|e| panic!("rotation {round}: {e}"));
    }
    // A fresh connection authenticates with the latest token.
    let mut late = proxy.client().await;
    assert_eq!(
        late.cmd(&["ACL", "WHOAMI"]).await,
        Reply::bulk(&rotator.current.oid)
    );
    assert_eq!(
        plain.cmd(&["ACL", "WHOAMI"]).await,
        Reply::bulk(&rotator.current.oid)
    );

    // The capture is complete enough to judge: it already mentions the last token's user
    // (an oid is not a secret), logged when the sessions re-authenticated with it.
    let logged = support::wait_until(Duration::from_secs(10), || {
        let logs = proxy.raw_logs();
        let oid = rotator.current.oid.clone();
        async move { logs.contains(&oid) }
    })
    .await;
    let logs = proxy.raw_logs();
    // The capture works: the log is at trace level and covers the sessions.
    assert!(
        logs.contains("\"level\":\"TRACE\"") || logs.contains("\"level\":\"DEBUG\""),
        "the log has no debug/trace records; log:\n{}",
        proxy.logs()
    );
    assert!(logs.lines().count() > 10, "suspiciously short log");
    assert!(
        logged,
        "the log never names the last token's user; log:\n{}",
        proxy.logs()
    );

    assert_eq!(rotator.issued.len(), 5);
    for (i, token) in rotator.issued.iter().enumerate() {
        let leaks = [
            ("the whole token", token.jwt.as_str()),
            ("its payload", token.payload()),
            ("its signature", token.signature()),
        ];
        for (what, secret) in leaks {
            assert!(!secret.is_empty());
            assert!(
                !logs.contains(secret),
                "token {i}: {what} appears in the trace log"
            );
        }
    }
}

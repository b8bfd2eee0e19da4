//! Before the first token arrives the listener is open; a client's command waits up to
//! `startup_wait`, then gets an error that names the credential and its last error, never a
//! silent close. Once a token arrives, new clients are served.

use test_harness as support;

use std::time::{Duration, Instant};

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_get_a_clear_error_until_the_first_token_then_service() {
    let server = RedisServer::start().await;
    let mut admin = server.admin().await;
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("not-yet");
    let mut args = proxy_args(&server, &token_path);
    args.extend(["--startup-wait".into(), "700ms".into()]);
    args.extend(["--retry-initial".into(), "100ms".into()]);
    args.extend(["--retry-max".into(), "200ms".into()]);
    let proxy = Proxy::start(&args, "info").await;

    let mut c = proxy.client().await;
    let t0 = Instant::now();
    c.send(&["PING"]).await;
    let reply = c.read_frame().await;
    let waited = t0.elapsed();
    let Reply::Error(text) = &reply else {
        panic!("expected an error, got {reply:?}");
    };
    assert!(text.starts_with("ERR "), "{text}");
    assert!(text.contains("no access token yet"), "{text}");
    assert!(text.contains("token-file"), "names the credential: {text}");
    assert!(
        text.contains("not-yet"),
        "names the last error (the missing file): {text}"
    );
    assert!(waited >= Duration::from_millis(600), "waited {waited:?}");
    assert!(c.read_until_closed().await.is_empty());

    // The token arrives: new clients are served.
    let token = Token::mint(Duration::from_secs(3600));
    admin.create_token_user(&token).await;
    let file = TokenFile::new(&token);
    std::fs::rename(&file.path, &token_path).unwrap();
    let mut c = proxy.client().await;
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]).await, Reply::bulk(&token.oid));
}

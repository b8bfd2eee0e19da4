//! A clock jump on the proxy's machine: the proxy's wall clock is moved (libfaketime) while the
//! cache's is not. The daemon stays up, sessions keep working, the log names the clock as the
//! likely cause, and once the clock is right again the new token is taken.

use test_harness as support;

use std::time::Duration;

use support::*;

/// libfaketime from Debian's `faketime` package (under the machine's multiarch directory).
fn libfaketime() -> std::path::PathBuf {
    std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime is missing: apt-get install faketime (scripts/test.sh does)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_jump_does_not_take_the_proxy_down() {
    let lib = libfaketime();
    let server = RedisServer::start().await;
    let mut rotator = Rotator::new(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();

    // Only the proxy (started now) runs under libfaketime; redis-server is already running.
    std::env::set_var("LD_PRELOAD", &lib);
    std::env::set_var("FAKETIME_TIMESTAMP_FILE", &offset);
    std::env::set_var("FAKETIME_NO_CACHE", "1");
    std::env::set_var("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let mut args = proxy_args(&server, &rotator.file.path);
    args.extend([
        "--retry-initial".into(),
        "200ms".into(),
        "--retry-max".into(),
        "500ms".into(),
    ]);
    let mut proxy = Proxy::start(&args, "info").await;
    for var in [
        "LD_PRELOAD",
        "FAKETIME_TIMESTAMP_FILE",
        "FAKETIME_NO_CACHE",
        "FAKETIME_DONT_FAKE_MONOTONIC",
    ] {
        std::env::remove_var(var);
    }
    let mut c = proxy.client().await;
    assert_eq!(c.cmd(&["SET", "k", "v"]).await, Reply::ok());

    // The proxy's clock jumps two hours ahead; then a new token (valid for an hour by the
    // cache's clock) arrives: to the proxy it looks expired.
    std::fs::write(&offset, "+2h\n").unwrap();
    let next = Token::mint(Duration::from_secs(3600));
    rotator.admin.create_token_user(&next).await;
    rotator.file.write(&next);
    let warned = wait_until(Duration::from_secs(10), || async {
        proxy.logs().contains("this machine's clock")
    })
    .await;
    assert!(
        warned,
        "the log does not point at the clock:\n{}",
        proxy.logs()
    );
    assert!(proxy.is_running(), "the daemon stays up");
    assert_eq!(c.cmd(&["GET", "k"]).await, Reply::bulk("v"));
    let mut d = proxy.client().await;
    assert_eq!(d.cmd(&["GET", "k"]).await, Reply::bulk("v"));

    // The clock is put right: the proxy takes the new token and the sessions move to it.
    std::fs::write(&offset, "+0\n").unwrap();
    let moved = wait_until(Duration::from_secs(15), || async {
        let mut e = proxy.client().await;
        e.cmd(&["ACL", "WHOAMI"]).await == Reply::bulk(&next.oid)
    })
    .await;
    assert!(moved, "the new token was not taken:\n{}", proxy.logs());
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]).await, Reply::bulk(&next.oid));
}

//! Local client authentication (`client_password_file`) and the Unix socket listener, end to
//! end against a real TLS redis-server.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::*;
use tokio::net::UnixStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_must_authenticate_locally_over_tcp_and_unix_socket() {
    let server = RedisServer::start().await;
    let rotator = Rotator::new(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("client-password");
    std::fs::write(&pw_file, "local-s3cret\n").unwrap();
    std::fs::set_permissions(&pw_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let sock = dir.path().join("proxy.sock");
    let mut args = proxy_args(&server, &rotator.file.path);
    for a in [
        "--client-password-file",
        pw_file.to_str().unwrap(),
        "--listen",
        &format!("unix:{}", sock.display()),
        "--socket-mode",
        "0600",
    ] {
        args.push(a.to_string());
    }
    let proxy = Proxy::start(&args, "info").await;

    // TCP: nothing is forwarded before AUTH.
    let mut c = proxy.client().await;
    let noauth = c.cmd(&["GET", "k"]).await;
    assert_eq!(
        noauth,
        Reply::Error("NOAUTH Authentication required.".into())
    );
    let wrong = c.cmd(&["AUTH", "nope"]).await;
    assert!(
        matches!(&wrong, Reply::Error(e) if e.starts_with("WRONGPASS")),
        "{wrong:?}"
    );
    assert!(
        c.cmd(&["PING"]).await.is_error(),
        "PING before AUTH is refused"
    );
    assert_eq!(
        c.cmd(&["AUTH", "any-user", "local-s3cret"]).await,
        Reply::ok()
    );
    assert_eq!(c.cmd(&["SET", "k", "v"]).await, Reply::ok());
    // The connection to the cache is still the Entra identity, not the local user.
    assert_eq!(
        c.cmd(&["ACL", "WHOAMI"]).await,
        Reply::bulk(&rotator.current.oid)
    );
    // RESET logs the client out again.
    assert_eq!(c.cmd(&["RESET"]).await, Reply::status("RESET"));
    assert!(c.cmd(&["GET", "k"]).await.is_error());

    // HELLO with AUTH authenticates and never reaches the cache with those credentials.
    let mut h = proxy.client().await;
    h.send(&["HELLO", "3", "AUTH", "x", "local-s3cret"]).await;
    h.protocol = Protocol::Resp3;
    let hello = h.read_frame().await;
    assert!(hello.field("proto").is_some(), "{hello:?}");
    assert_eq!(h.cmd(&["GET", "k"]).await, Reply::bulk("v"));

    // The Unix socket: mode as configured, same rules.
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let stream = UnixStream::connect(&sock).await.unwrap();
    let mut u = RespClient::new(stream);
    assert!(u.cmd(&["GET", "k"]).await.is_error());
    assert_eq!(u.cmd(&["AUTH", "local-s3cret"]).await, Reply::ok());
    assert_eq!(u.cmd(&["GET", "k"]).await, Reply::bulk("v"));

    // The password never reaches the logs.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!proxy.raw_logs().contains("local-s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_files_readable_by_others_are_warned_about() {
    let server = RedisServer::start().await;
    let rotator = Rotator::new(&server).await;
    std::fs::set_permissions(&rotator.file.path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("client-password");
    std::fs::write(&pw_file, "open-secret").unwrap();
    std::fs::set_permissions(&pw_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut args = proxy_args(&server, &rotator.file.path);
    args.extend([
        "--client-password-file".into(),
        pw_file.display().to_string(),
    ]);
    let proxy = Proxy::start(&args, "info").await;
    let mut c = proxy.client().await;
    assert_eq!(c.cmd(&["AUTH", "open-secret"]).await, Reply::ok());
    let logs = proxy.logs();
    for what in ["client password file", "token file"] {
        assert!(
            logs.contains(&format!("the {what} is readable by every user")),
            "no warning about the {what}: {logs}"
        );
    }
    assert!(!proxy.raw_logs().contains("open-secret"));
}

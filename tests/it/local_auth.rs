//! Local client authentication (`client_password_file`) and the Unix socket listener, end to
//! end against a real TLS redis-server.

use test_harness as support;
use test_harness::raw_conn;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use raw_conn::{normalise, show, RawConn};
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

/// Runs `script` (one frame expected per command) on `conn`; returns each reply, HELLO ids
/// normalised.
async fn run_script(conn: &mut RawConn, script: &[Vec<String>]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for args in script {
        out.push(normalise(&conn.cmd(args).await));
    }
    out
}

/// Requires the same replies, command by command, and returns them.
fn assert_same(script: &[Vec<String>], direct: &[Vec<u8>], proxied: &[Vec<u8>]) {
    for (i, args) in script.iter().enumerate() {
        let shown: Vec<&str> = args
            .iter()
            .map(|a| if a.len() > 40 { "<secret>" } else { a })
            .collect();
        assert_eq!(
            show(&direct[i]),
            show(&proxied[i]),
            "command {i} {shown:?}: direct (left) and proxied (right) replies differ"
        );
    }
}

fn script(lines: &[&[&str]]) -> Vec<Vec<String>> {
    lines
        .iter()
        .map(|l| l.iter().map(|a| a.to_string()).collect())
        .collect()
}

/// Without `client_password_file`: a client's AUTH is answered locally, but with
/// redis-server's own arity errors, and inside MULTI as redis-server answers it (`+QUEUED`,
/// its result at its place in EXEC's array; an arity error aborts the transaction). Compared
/// byte for byte with redis-server, in RESP2 and RESP3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_arity_and_auth_inside_multi_match_redis_server() {
    let server = RedisServer::start().await;
    let rotator = Rotator::new(&server).await;
    let proxy = Proxy::start(&proxy_args(&server, &rotator.file.path), "info").await;
    let (oid, jwt) = (rotator.current.oid.as_str(), rotator.current.jwt.as_str());
    let mut admin = server.admin().await;
    for resp3 in [false, true] {
        let mut lines: Vec<&[&str]> = Vec::new();
        if resp3 {
            lines.push(&["HELLO", "3"]);
        }
        // The token's own credentials: redis-server accepts them, as the proxy accepts any.
        let auth_ok: &[&str] = &["AUTH", oid, jwt];
        let hello4: &[&str] = &["HELLO", "4", "AUTH", oid, jwt];
        lines.extend_from_slice(&[
            &["AUTH"],
            &["AUTH", "a", "b", "c"],
            auth_ok,
            &["MULTI"],
            &["SET", "k", "v"],
            auth_ok,
            &["AUTH", "a", "b", "c"],
            &["GET", "k"],
            auth_ok,
            &["EXEC"],
            // Only local commands in the transaction.
            &["MULTI"],
            auth_ok,
            &["EXEC"],
            // An arity error while queueing aborts the transaction.
            &["MULTI"],
            &["SET", "k", "w"],
            &["AUTH"],
            &["GET", "k"],
            &["EXEC"],
            &["GET", "k"],
            // A transaction a WATCH aborts: its nil passes as it is.
            &["WATCH", "k"],
            &["SET", "k", "x"],
            &["MULTI"],
            auth_ok,
            &["EXEC"],
            // DISCARD forgets the local replies.
            &["MULTI"],
            auth_ok,
            &["DISCARD"],
            &["MULTI"],
            &["GET", "k"],
            &["EXEC"],
            // HELLO's arguments are checked before anything is authenticated.
            &["HELLO", "3", "AUTH", "u"],
            hello4,
            &["HELLO", "x"],
            &["HELLO", "2", "FOO"],
            &["PING"],
        ]);
        let s = script(&lines);
        let mut direct = RawConn::direct(&server, &rotator.current).await;
        let d = run_script(&mut direct, &s).await;
        drop(direct);
        assert_eq!(admin.cmd(&["FLUSHALL"]).await, Reply::ok());
        let mut proxied = RawConn::proxied(&proxy).await;
        let p = run_script(&mut proxied, &s).await;
        assert_same(&s, &d, &p);
        assert!(proxied.buffered().is_empty());
        let first_exec = 9 + usize::from(resp3);
        assert_eq!(
            show(&p[first_exec]),
            show(b"*5\r\n+OK\r\n+OK\r\n-ERR syntax error\r\n$1\r\nv\r\n+OK\r\n"),
            "the local results at their places"
        );
        assert_eq!(admin.cmd(&["FLUSHALL"]).await, Reply::ok());
    }
    assert!(!proxy.raw_logs().contains(jwt));
}

/// With `client_password_file`: unauthenticated clients get redis-server's errors in
/// redis-server's order (arity, HELLO version and options, then the password), and AUTH
/// inside MULTI yields `+OK` or `-WRONGPASS` at its place in EXEC's array. The direct run
/// authenticates as an ACL user whose password is the client password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_password_errors_and_auth_inside_multi_match_redis_server() {
    let server = RedisServer::start().await;
    let rotator = Rotator::new(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("client-password");
    std::fs::write(&pw_file, "local-s3cret\n").unwrap();
    std::fs::set_permissions(&pw_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut args = proxy_args(&server, &rotator.file.path);
    args.extend([
        "--client-password-file".into(),
        pw_file.display().to_string(),
    ]);
    let proxy = Proxy::start(&args, "info").await;
    let mut admin = server.admin().await;
    let created = admin
        .cmd(&[
            "ACL",
            "SETUSER",
            "app",
            "on",
            ">local-s3cret",
            "~*",
            "&*",
            "+@all",
        ])
        .await;
    assert_eq!(created, Reply::ok());
    for resp3 in [false, true] {
        let login: &[&str] = if resp3 {
            &["HELLO", "3", "AUTH", "app", "local-s3cret", "FOO"]
        } else {
            &["HELLO", "2", "AUTH", "app", "local-s3cret", "FOO"]
        };
        let hello: &[&str] = &["HELLO", if resp3 { "3" } else { "2" }];
        let lines: Vec<&[&str]> = vec![
            &["GET", "k"],
            &["AUTH"],
            &["AUTH", "a", "b", "c"],
            &["HELLO", "3"],
            &["HELLO", "3", "AUTH", "app"],
            &["HELLO", "x", "AUTH", "app", "local-s3cret"],
            &["HELLO", "4", "AUTH", "app", "local-s3cret"],
            &["HELLO", "3", "AUTH", "app", "wrong"],
            &["AUTH", "app", "wrong"],
            &["GET", "k"],
            // Authenticates, then fails on its last option: the protocol stays.
            login,
            &["SET", "k", "v"],
            hello,
            &["MULTI"],
            &["AUTH", "app", "wrong"],
            &["GET", "k"],
            &["AUTH", "app", "local-s3cret"],
            &["AUTH", "a", "b", "c"],
            &["EXEC"],
            &["MULTI"],
            &["AUTH"],
            &["EXEC"],
            &["GET", "k"],
        ];
        let s = script(&lines);
        let mut direct = RawConn::direct_unauthenticated(&server).await;
        let d = run_script(&mut direct, &s).await;
        drop(direct);
        assert_eq!(admin.cmd(&["FLUSHALL"]).await, Reply::ok());
        let mut proxied = RawConn::proxied(&proxy).await;
        let p = run_script(&mut proxied, &s).await;
        assert_same(&s, &d, &p);
        assert_eq!(admin.cmd(&["FLUSHALL"]).await, Reply::ok());
    }
    assert!(!proxy.raw_logs().contains("local-s3cret"));
}

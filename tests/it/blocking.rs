//! Blocking commands reach the cache exactly as the client sent them, survive upstream loss
//! and token rotations as one uninterrupted wait, and a `CLIENT UNBLOCK` from any connection
//! reaches the blocked client as it would directly. When the identity may not run
//! `CLIENT UNBLOCK`, the proxy falls back to bounded waits and a foreign unblock still gets
//! through.

use test_harness as support;

use std::time::Duration;

use support::*;

/// Waits until a proxied connection (not the harness's) is blocked in `cmd`, other than
/// `not`; returns its id.
async fn blocked_id(admin: &mut Admin, cmd: &str, not: Option<u64>) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let clients = admin.client_list().await;
        if let Some(c) = clients.iter().find(|c| c.cmd == cmd && Some(c.id) != not) {
            return c.id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no connection blocked in {cmd}: {:?}",
            clients.iter().map(|c| (c.id, &c.cmd)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The argument lists of the SLOWLOG entries for `name`.
async fn slowlog_args(admin: &mut Admin, name: &str) -> Vec<Vec<String>> {
    let Reply::Array(entries) = admin.cmd(&["SLOWLOG", "GET", "1000"]).await else {
        panic!("SLOWLOG GET");
    };
    entries
        .into_iter()
        .filter_map(|e| match e {
            Reply::Array(fields) => match fields.get(3) {
                Some(Reply::Array(args)) => Some(
                    args.iter()
                        .map(|a| a.text().unwrap_or_default())
                        .collect::<Vec<String>>(),
                ),
                _ => None,
            },
            _ => None,
        })
        .filter(|args| args.first().is_some_and(|a| a.eq_ignore_ascii_case(name)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blpop_forever_survives_kills_and_rotations_and_the_server_sees_it_unchanged() {
    let server = RedisServer::start().await;
    let mut rotator = Rotator::new(&server).await;
    let proxy = Proxy::start(&proxy_args(&server, &rotator.file.path), "info").await;
    let mut admin = server.admin().await;
    assert_eq!(
        admin
            .cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "0"])
            .await,
        Reply::ok()
    );
    admin.cmd(&["SLOWLOG", "RESET"]).await;

    let mut client = proxy.client().await;
    client.send(&["BLPOP", "jobs", "0"]).await;
    let mut id = blocked_id(&mut admin, "blpop", None).await;
    // Three upstream losses: each time the wait continues on a new connection.
    for _ in 0..3 {
        admin.cmd(&["CLIENT", "KILL", "ID", &id.to_string()]).await;
        id = blocked_id(&mut admin, "blpop", Some(id)).await;
    }
    // Two token rotations: the old user is deleted only once nothing uses it, so the blocked
    // connection re-authenticated (through the proxy's CLIENT UNBLOCK and re-issue).
    for _ in 0..2 {
        rotator
            .rotate(1)
            .await
            .expect("rotation under a blocked BLPOP");
        blocked_id(&mut admin, "blpop", None).await;
    }
    assert_eq!(admin.cmd(&["RPUSH", "jobs", "j1"]).await, Reply::Int(1));
    assert_eq!(client.read_frame().await, Reply::bulks(&["jobs", "j1"]));
    assert_eq!(client.cmd(&["PING"]).await, Reply::status("PONG"));

    // Every BLPOP the server ran is the client's, with the client's timeout.
    let blpops = slowlog_args(&mut admin, "blpop").await;
    assert!(!blpops.is_empty(), "the BLPOP ran");
    // Each rotation interrupted the wait with the proxy's CLIENT UNBLOCK (redis-server logs
    // no entry for a BLPOP it unblocked or whose connection it closed).
    let unblocks = slowlog_args(&mut admin, "client")
        .await
        .into_iter()
        .filter(|a| a.get(1).is_some_and(|s| s.eq_ignore_ascii_case("unblock")))
        .count();
    assert!(unblocks >= 2, "{unblocks} CLIENT UNBLOCK for 2 rotations");
    for args in &blpops {
        assert_eq!(args, &["BLPOP", "jobs", "0"], "the server saw {args:?}");
    }
    assert!(
        !proxy.raw_logs().contains(&rotator.current.jwt),
        "no token in the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_unblock_reaches_the_blocked_client_in_both_modes() {
    let server = RedisServer::start().await;
    let rotator = Rotator::new(&server).await;
    let proxy = Proxy::start(&proxy_args(&server, &rotator.file.path), "info").await;
    let mut admin = server.admin().await;

    for (mode, want) in [
        ("TIMEOUT", Reply::Null),
        (
            "ERROR",
            Reply::Error("UNBLOCKED client unblocked via CLIENT UNBLOCK".into()),
        ),
    ] {
        // `want` is what redis-server 7.0 answers a client unblocked directly (DESIGN.md).
        let mut client = proxy.client().await;
        client.send(&["BLPOP", "nothing", "0"]).await;
        let id = blocked_id(&mut admin, "blpop", None).await;
        assert_eq!(
            admin
                .cmd(&["CLIENT", "UNBLOCK", &id.to_string(), mode])
                .await,
            Reply::Int(1)
        );
        let got = tokio::time::timeout(Duration::from_secs(5), client.read_frame())
            .await
            .unwrap_or_else(|_| panic!("CLIENT UNBLOCK {mode} did not reach the client"));
        assert_eq!(got, want, "CLIENT UNBLOCK {mode}");
        assert_eq!(client.cmd(&["PING"]).await, Reply::status("PONG"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_client_unblock_waits_are_bounded_and_a_foreign_unblock_still_arrives() {
    let server = RedisServer::start().await;
    let mut admin = server.admin().await;
    // An access policy without CLIENT UNBLOCK (Azure's built-in ones may not allow it).
    let deny = ["-client|unblock"];
    let first = Token::mint(Duration::from_secs(3600));
    admin.create_token_user_with(&first, &deny).await;
    let file = TokenFile::new(&first);
    let proxy = Proxy::start(&proxy_args(&server, &file.path), "info").await;

    let mut client = proxy.client().await;
    client.send(&["BLPOP", "jobs", "0"]).await;
    let id = blocked_id(&mut admin, "blpop", None).await;

    // A new token: the proxy's CLIENT UNBLOCK is refused, so the wait cannot be interrupted
    // for its re-AUTH.
    let second = Token::mint(Duration::from_secs(3600));
    admin.create_token_user_with(&second, &deny).await;
    file.write(&second);
    assert!(
        wait_until(Duration::from_secs(20), || async {
            proxy.logs().contains("refuses CLIENT UNBLOCK")
        })
        .await,
        "the refusal is detected and logged"
    );
    // The old token expires (its user deleted, its connections closed): the wait goes on, on
    // a new connection.
    assert_eq!(admin.delete_user(&first.oid).await, 1);
    let id = blocked_id(&mut admin, "blpop", Some(id)).await;
    assert_eq!(admin.cmd(&["RPUSH", "jobs", "j1"]).await, Reply::Int(1));
    assert_eq!(client.read_frame().await, Reply::bulks(&["jobs", "j1"]));

    // From now on a wait is cut into bounded slices, and a foreign CLIENT UNBLOCK (before the
    // slice ends) is the client's.
    client.send(&["BLPOP", "jobs", "0"]).await;
    assert!(
        wait_until(Duration::from_secs(10), || {
            let admin = server.admin();
            async move {
                let info = admin.await.cmd(&["INFO", "clients"]).await;
                info.text().is_some_and(|t| t.contains("blocked_clients:1"))
            }
        })
        .await,
        "the second BLPOP waits"
    );
    assert_eq!(
        admin.cmd(&["CLIENT", "UNBLOCK", &id.to_string()]).await,
        Reply::Int(1)
    );
    let got = tokio::time::timeout(Duration::from_secs(5), client.read_frame())
        .await
        .expect("the foreign unblock reached the client");
    assert_eq!(got, Reply::Null);
    assert_eq!(client.cmd(&["PING"]).await, Reply::status("PONG"));
}

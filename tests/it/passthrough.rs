//! Commands pass through the proxy unchanged: values, pipelines, RESP3, transactions, Pub/Sub,
//! reply modes; client AUTH never replaces the Entra identity; protocol errors close only the
//! offending client.

use test_harness as support;

use support::{Proxy, ProxyClient, RedisServer, Reply, Rotator};

/// A server, a token, and a proxy in front of them.
struct Setup {
    proxy: Proxy,
    rotator: Rotator,
    server: RedisServer,
}

async fn setup() -> Setup {
    let server = RedisServer::start().await;
    let rotator = Rotator::new(&server).await;
    let proxy = Proxy::start(
        &support::proxy_args(&server, &rotator.file.path),
        "entra_redis_proxy=debug",
    )
    .await;
    Setup {
        proxy,
        rotator,
        server,
    }
}

impl Setup {
    async fn client(&self) -> ProxyClient {
        self.proxy.client().await
    }

    fn oid(&self) -> String {
        self.rotator.current.oid.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_get_and_whoami() {
    let s = setup().await;
    let mut c = s.client().await;
    assert_eq!(c.cmd(&["SET", "greeting", "hello"]).await, Reply::ok());
    assert_eq!(c.cmd(&["GET", "greeting"]).await, Reply::bulk("hello"));
    assert_eq!(c.cmd(&["GET", "missing"]).await, Reply::Null);
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]).await, Reply::bulk(s.oid()));
    // The write really reached the server.
    let mut admin = s.server.admin().await;
    assert_eq!(admin.cmd(&["GET", "greeting"]).await, Reply::bulk("hello"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_safe_values_up_to_16_mib() {
    let s = setup().await;
    let mut c = s.client().await;
    for size in [0usize, 1, 255, 65_536, 1 << 20, 16 << 20] {
        // Every byte value, CR and LF included, in a pattern that varies with the size.
        let value: Vec<u8> = (0..size).map(|i| ((i * 31 + size) % 256) as u8).collect();
        let key = format!("bin:{size}");
        assert_eq!(
            c.cmd(&[b"SET".as_slice(), key.as_bytes(), &value]).await,
            Reply::ok(),
            "SET of {size} bytes"
        );
        let got = c.cmd(&[b"GET".as_slice(), key.as_bytes()]).await;
        assert!(got == Reply::Bulk(value), "GET of {size} bytes: {got:?}");
        assert_eq!(
            c.cmd(&["STRLEN", key.as_str()]).await,
            Reply::Int(size as i64)
        );
    }
    // A key that is itself binary.
    let key = b"k\r\n\0\xff";
    assert_eq!(
        c.cmd(&[b"SET".as_slice(), key, b"v\r\n"]).await,
        Reply::ok()
    );
    assert_eq!(
        c.cmd(&[b"GET".as_slice(), key]).await,
        Reply::bulk(b"v\r\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_of_100k_commands_in_order() {
    let s = setup().await;
    let mut c = s.client().await;
    const N: usize = 100_000;
    let mut bytes = Vec::with_capacity(N * 40);
    for i in 0..N {
        if i % 2 == 0 {
            bytes.extend(support::encode_command(&["INCR", "pipeline:counter"]));
        } else {
            bytes.extend(support::encode_command(&["ECHO", &format!("m{i}")]));
        }
    }
    let replies = c.pipeline(&bytes, N).await;
    assert_eq!(replies.len(), N);
    for (i, reply) in replies.iter().enumerate() {
        let expected = if i % 2 == 0 {
            Reply::Int((i / 2 + 1) as i64)
        } else {
            Reply::bulk(format!("m{i}"))
        };
        assert_eq!(reply, &expected, "reply {i}");
    }
    assert_eq!(c.buffered(), 0, "no bytes beyond the expected replies");
    assert_eq!(c.cmd(&["PING"]).await, Reply::status("PONG"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_via_hello() {
    let s = setup().await;
    let mut c = s.client().await;
    let hello = c.cmd(&["HELLO", "3"]).await;
    assert!(matches!(hello, Reply::Map(_)), "HELLO 3: {hello:?}");
    assert_eq!(hello.field("proto"), Some(&Reply::Int(3)), "{hello:?}");
    assert_eq!(c.cmd(&["SET", "r3", "v"]).await, Reply::ok());
    assert_eq!(c.cmd(&["GET", "r3"]).await, Reply::bulk("v"));
    // RESP3 types that RESP2 does not have.
    assert_eq!(c.cmd(&["GET", "r3:missing"]).await, Reply::Null);
    assert_eq!(
        c.cmd(&["HSET", "r3:h", "f", "1"]).await,
        Reply::Int(1),
        "HSET"
    );
    assert_eq!(
        c.cmd(&["HGETALL", "r3:h"]).await,
        Reply::Map(vec![(Reply::bulk("f"), Reply::bulk("1"))])
    );
    assert_eq!(
        c.cmd(&["INCRBYFLOAT", "r3:f", "1.5"]).await,
        Reply::bulk("1.5")
    );
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]).await, Reply::bulk(s.oid()));
    // Back to RESP2.
    let hello = c.cmd(&["HELLO", "2"]).await;
    assert_eq!(hello.field("proto"), Some(&Reply::Int(2)), "{hello:?}");
    assert_eq!(c.cmd(&["HGETALL", "r3:h"]).await, Reply::bulks(&["f", "1"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_commands() {
    let s = setup().await;
    let mut c = s.client().await;
    c.send_raw(b"PING\r\n").await.unwrap();
    assert_eq!(c.read_frame().await, Reply::status("PONG"));
    c.send_raw(b"SET inline:k hello\r\nGET inline:k\r\n")
        .await
        .unwrap();
    assert_eq!(c.read_frame().await, Reply::ok());
    assert_eq!(c.read_frame().await, Reply::bulk("hello"));
    // An empty line gets no reply: the next reply belongs to the next command.
    c.send_raw(b"\r\nECHO after-empty-line\r\n").await.unwrap();
    assert_eq!(c.read_frame().await, Reply::bulk("after-empty-line"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_exec_and_discard() {
    let s = setup().await;
    let mut c = s.client().await;
    assert_eq!(c.cmd(&["MULTI"]).await, Reply::ok());
    assert_eq!(c.cmd(&["SET", "tx:a", "1"]).await, Reply::status("QUEUED"));
    assert_eq!(c.cmd(&["INCR", "tx:a"]).await, Reply::status("QUEUED"));
    assert_eq!(c.cmd(&["GET", "tx:a"]).await, Reply::status("QUEUED"));
    assert_eq!(
        c.cmd(&["EXEC"]).await,
        Reply::Array(vec![Reply::ok(), Reply::Int(2), Reply::bulk("2")])
    );
    assert_eq!(c.cmd(&["MULTI"]).await, Reply::ok());
    assert_eq!(c.cmd(&["INCR", "tx:a"]).await, Reply::status("QUEUED"));
    assert_eq!(c.cmd(&["DISCARD"]).await, Reply::ok());
    assert_eq!(c.cmd(&["GET", "tx:a"]).await, Reply::bulk("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_conflict_aborts_exec() {
    let s = setup().await;
    let mut a = s.client().await;
    let mut b = s.client().await;
    assert_eq!(a.cmd(&["SET", "watched", "0"]).await, Reply::ok());
    assert_eq!(a.cmd(&["WATCH", "watched"]).await, Reply::ok());
    assert_eq!(b.cmd(&["SET", "watched", "b"]).await, Reply::ok());
    assert_eq!(a.cmd(&["MULTI"]).await, Reply::ok());
    assert_eq!(
        a.cmd(&["SET", "watched", "a"]).await,
        Reply::status("QUEUED")
    );
    assert_eq!(a.cmd(&["EXEC"]).await, Reply::Null, "EXEC must abort");
    assert_eq!(a.cmd(&["GET", "watched"]).await, Reply::bulk("b"));
    // Without a conflict the same transaction commits.
    assert_eq!(a.cmd(&["WATCH", "watched"]).await, Reply::ok());
    assert_eq!(a.cmd(&["MULTI"]).await, Reply::ok());
    assert_eq!(
        a.cmd(&["SET", "watched", "a"]).await,
        Reply::status("QUEUED")
    );
    assert_eq!(a.cmd(&["EXEC"]).await, Reply::Array(vec![Reply::ok()]));
    assert_eq!(b.cmd(&["GET", "watched"]).await, Reply::bulk("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_keeps_the_database_per_connection() {
    let s = setup().await;
    let mut a = s.client().await;
    let mut b = s.client().await;
    assert_eq!(a.cmd(&["SELECT", "3"]).await, Reply::ok());
    assert_eq!(a.cmd(&["SET", "db:k", "in-3"]).await, Reply::ok());
    assert_eq!(
        b.cmd(&["GET", "db:k"]).await,
        Reply::Null,
        "db 0 has no key"
    );
    assert_eq!(b.cmd(&["SELECT", "3"]).await, Reply::ok());
    assert_eq!(b.cmd(&["GET", "db:k"]).await, Reply::bulk("in-3"));
    assert_eq!(a.cmd(&["GET", "db:k"]).await, Reply::bulk("in-3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_in_resp3() {
    let s = setup().await;
    let mut sub = s.client().await;
    let mut publisher = s.client().await;
    assert!(matches!(sub.cmd(&["HELLO", "3"]).await, Reply::Map(_)));
    sub.send(&["SUBSCRIBE", "news", "sport"]).await;
    for (i, channel) in ["news", "sport"].iter().enumerate() {
        assert_eq!(
            sub.read_frame().await,
            Reply::Push(vec![
                Reply::bulk("subscribe"),
                Reply::bulk(channel),
                Reply::Int(i as i64 + 1)
            ])
        );
    }
    assert_eq!(
        publisher.cmd(&["PUBLISH", "news", "first"]).await,
        Reply::Int(1)
    );
    assert_eq!(
        sub.read_frame().await,
        Reply::Push(vec![
            Reply::bulk("message"),
            Reply::bulk("news"),
            Reply::bulk("first")
        ])
    );
    // In RESP3 ordinary commands work while subscribed; their replies are not pushes.
    assert_eq!(sub.cmd(&["SET", "ps:k", "v"]).await, Reply::ok());
    assert_eq!(sub.cmd(&["GET", "ps:k"]).await, Reply::bulk("v"));
    assert_eq!(sub.cmd(&["ACL", "WHOAMI"]).await, Reply::bulk(s.oid()));
    assert_eq!(
        publisher.cmd(&["PUBLISH", "sport", "second"]).await,
        Reply::Int(1)
    );
    // A PING sent right after a publish: the message and the reply may come in either order
    // relative to each other on the wire, but both must arrive.
    sub.send(&["PING"]).await;
    let (reply, pushes) = sub.read_reply_collecting_pushes().await;
    assert_eq!(reply, Reply::status("PONG"));
    let mut messages = pushes;
    if messages.is_empty() {
        messages.push(sub.read_frame().await);
    }
    assert_eq!(
        messages,
        vec![Reply::Push(vec![
            Reply::bulk("message"),
            Reply::bulk("sport"),
            Reply::bulk("second")
        ])]
    );
    sub.send(&["UNSUBSCRIBE"]).await;
    let mut unsubscribed = [sub.read_frame().await, sub.read_frame().await];
    unsubscribed.sort_by_key(|r| format!("{r:?}"));
    let channels: Vec<_> = unsubscribed
        .iter()
        .map(|r| match r {
            Reply::Push(items) if items[0] == Reply::bulk("unsubscribe") => items[1].clone(),
            other => panic!("expected an unsubscribe push, got {other:?}"),
        })
        .collect();
    assert_eq!(channels, vec![Reply::bulk("news"), Reply::bulk("sport")]);
    assert_eq!(
        publisher.cmd(&["PUBLISH", "news", "nobody"]).await,
        Reply::Int(0)
    );
    assert_eq!(sub.cmd(&["PING"]).await, Reply::status("PONG"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reply_off_skip_on() {
    let s = setup().await;
    let mut c = s.client().await;
    // OFF: no replies at all, the OFF itself included.
    c.send(&["CLIENT", "REPLY", "OFF"]).await;
    c.send(&["SET", "reply:a", "1"]).await;
    c.send(&["INCR", "reply:a"]).await;
    c.send(&["CLIENT", "REPLY", "ON"]).await;
    assert_eq!(
        c.read_frame().await,
        Reply::ok(),
        "the reply to CLIENT REPLY ON"
    );
    assert_eq!(c.cmd(&["GET", "reply:a"]).await, Reply::bulk("2"));
    // SKIP: the next command's reply is skipped, and the SKIP itself has none.
    c.send(&["CLIENT", "REPLY", "SKIP"]).await;
    c.send(&["INCR", "reply:a"]).await;
    c.send(&["ECHO", "after-skip"]).await;
    assert_eq!(c.read_frame().await, Reply::bulk("after-skip"));
    assert_eq!(c.cmd(&["GET", "reply:a"]).await, Reply::bulk("3"));
    assert_eq!(c.buffered(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_auth_is_answered_locally() {
    let s = setup().await;
    let mut c = s.client().await;
    assert_eq!(c.cmd(&["AUTH", "someone", "secret"]).await, Reply::ok());
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]).await, Reply::bulk(s.oid()));
    assert_eq!(c.cmd(&["AUTH", "onlyapassword"]).await, Reply::ok());
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]).await, Reply::bulk(s.oid()));
    assert_eq!(c.cmd(&["SET", "after-auth", "ok"]).await, Reply::ok());
    assert_eq!(c.cmd(&["GET", "after-auth"]).await, Reply::bulk("ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_with_auth_keeps_the_entra_identity() {
    let s = setup().await;
    let mut c = s.client().await;
    let hello = c
        .cmd(&[
            "HELLO", "3", "AUTH", "someone", "secret", "SETNAME", "app-1",
        ])
        .await;
    assert!(matches!(hello, Reply::Map(_)), "HELLO 3 AUTH: {hello:?}");
    assert_eq!(hello.field("proto"), Some(&Reply::Int(3)));
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]).await, Reply::bulk(s.oid()));
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]).await, Reply::bulk("app-1"));
    assert_eq!(c.cmd(&["SET", "hello-auth", "ok"]).await, Reply::ok());
    assert_eq!(c.cmd(&["GET", "hello-auth"]).await, Reply::bulk("ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_error_closes_only_that_client() {
    let s = setup().await;
    let mut bystander = s.client().await;
    assert_eq!(bystander.cmd(&["SET", "bystander", "1"]).await, Reply::ok());
    for (round, garbage) in [&b"*abc\r\n"[..], b"*1\r\n$-5\r\n"].iter().enumerate() {
        let mut bad = s.client().await;
        assert_eq!(bad.cmd(&["PING"]).await, Reply::status("PONG"));
        bad.send_raw(garbage).await.unwrap();
        let frames = bad.read_until_closed().await;
        assert_eq!(frames.len(), 1, "one error reply, then close: {frames:?}");
        let text = frames[0].text().unwrap_or_default();
        assert!(
            frames[0].is_error() && text.starts_with("ERR Protocol error"),
            "{frames:?}"
        );
        assert_eq!(
            bystander.cmd(&["INCR", "bystander"]).await,
            Reply::Int(round as i64 + 2)
        );
    }
    assert_eq!(bystander.cmd(&["GET", "bystander"]).await, Reply::bulk("3"));
    // The proxy still accepts new clients.
    let mut fresh = s.client().await;
    assert_eq!(fresh.cmd(&["PING"]).await, Reply::status("PONG"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_in_resp2() {
    let s = setup().await;
    let mut sub = s.client().await;
    let mut publisher = s.client().await;
    assert_eq!(
        sub.cmd(&["SUBSCRIBE", "r2"]).await,
        Reply::Array(vec![
            Reply::bulk("subscribe"),
            Reply::bulk("r2"),
            Reply::Int(1)
        ])
    );
    // redis-server answers PING on a RESP2 subscriber with ["pong", message].
    assert_eq!(sub.cmd(&["PING"]).await, Reply::bulks(&["pong", ""]));
    assert_eq!(
        sub.cmd(&["PING", "hi"]).await,
        Reply::bulks(&["pong", "hi"])
    );
    assert_eq!(
        publisher.cmd(&["PUBLISH", "r2", "hello"]).await,
        Reply::Int(1)
    );
    assert_eq!(
        sub.read_frame().await,
        Reply::bulks(&["message", "r2", "hello"])
    );
    assert_eq!(
        sub.cmd(&["UNSUBSCRIBE"]).await,
        Reply::Array(vec![
            Reply::bulk("unsubscribe"),
            Reply::bulk("r2"),
            Reply::Int(0)
        ])
    );
    assert_eq!(sub.cmd(&["PING"]).await, Reply::status("PONG"));
    assert_eq!(sub.cmd(&["GET", "nothing"]).await, Reply::Null);
}

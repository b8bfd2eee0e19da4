//! Client-side caching through the proxy (issue 12): a redirect target subscribed to
//! `__redis__:invalidate` gets, through the proxy, exactly the bytes redis-server sends it
//! directly, whatever the protocols of the tracking client and of the target. A RESP2 target
//! through the proxy is a RESP2 subscriber served over RESP3, so its `invalidate` pushes must
//! become the `message` redis-server sends a RESP2 target.

use test_harness as support;
use test_harness::raw_conn;

use std::time::Duration;

use raw_conn::{normalise, show, RawConn};
use support::*;

/// How the invalidations of one scenario are caused.
#[derive(Clone, Copy, Debug)]
enum Scenario {
    /// Two tracked keys, one written, one deleted, then FLUSHALL (the null of "everything").
    Keys,
    /// BCAST PREFIX k: writes to matching keys (one MSET of two), one that does not match.
    Bcast,
    /// NOLOOP: the tracking client's own write is not reported, another's is.
    Noloop,
    /// OPTIN: only the key read after CLIENT CACHING yes is tracked.
    Optin,
    /// OPTOUT: the key read after CLIENT CACHING no is not tracked.
    Optout,
    /// A tracked key expires.
    Expired,
}

impl Scenario {
    fn options(self) -> &'static [&'static str] {
        match self {
            Scenario::Bcast => &["BCAST", "PREFIX", "k"],
            Scenario::Noloop => &["NOLOOP"],
            Scenario::Optin => &["OPTIN"],
            Scenario::Optout => &["OPTOUT"],
            _ => &[],
        }
    }
}

/// Connections of one run: straight to redis-server, or through the proxy.
enum Via<'a> {
    Direct(&'a RedisServer, &'a Token),
    Proxy(&'a Proxy),
}

impl Via<'_> {
    async fn conn(&self) -> RawConn {
        match self {
            Via::Direct(server, token) => RawConn::direct(server, token).await,
            Via::Proxy(proxy) => RawConn::proxied(proxy).await,
        }
    }
}

/// Runs one scenario; returns everything the target received (its subscription, the
/// invalidations, the reply to a PING that shows nothing else was on the way).
async fn run(
    via: &Via<'_>,
    admin: &mut Admin,
    s: Scenario,
    tracker3: bool,
    target3: bool,
) -> Vec<u8> {
    assert_eq!(admin.cmd(&["FLUSHALL"]).await, Reply::ok());
    let mut out = Vec::new();
    let mut target = via.conn().await;
    if target3 {
        out.extend(normalise(&target.cmd(&["HELLO", "3"]).await));
    }
    // The target's id through the proxy is its upstream connection's: what REDIRECT needs.
    let id = target.cmd(&["CLIENT", "ID"]).await;
    let id = std::str::from_utf8(&id[1..id.len() - 2])
        .unwrap()
        .to_owned();
    out.extend(target.cmd(&["SUBSCRIBE", "__redis__:invalidate"]).await);

    let mut tracker = via.conn().await;
    if tracker3 {
        tracker.cmd(&["HELLO", "3"]).await;
    }
    for k in ["k1", "k2"] {
        assert_eq!(admin.cmd(&["SET", k, "v"]).await, Reply::ok());
    }
    let mut tracking = vec!["CLIENT", "TRACKING", "on", "REDIRECT", id.as_str()];
    tracking.extend(s.options());
    assert_eq!(tracker.cmd(&tracking).await, b"+OK\r\n");
    let expected = match s {
        Scenario::Keys => {
            tracker.cmd(&["GET", "k1"]).await;
            tracker.cmd(&["GET", "k2"]).await;
            admin.cmd(&["SET", "k1", "w"]).await;
            admin.cmd(&["DEL", "k2"]).await;
            admin.cmd(&["FLUSHALL"]).await;
            3
        }
        Scenario::Bcast => {
            admin.cmd(&["SET", "k9", "w"]).await;
            admin.cmd(&["SET", "other", "w"]).await;
            admin.cmd(&["MSET", "k1", "a", "k2", "b"]).await;
            2
        }
        Scenario::Noloop => {
            tracker.cmd(&["GET", "k1"]).await;
            tracker.cmd(&["GET", "k2"]).await;
            tracker.cmd(&["SET", "k1", "own"]).await;
            admin.cmd(&["SET", "k2", "w"]).await;
            1
        }
        Scenario::Optin => {
            tracker.cmd(&["GET", "k2"]).await;
            assert_eq!(tracker.cmd(&["CLIENT", "CACHING", "yes"]).await, b"+OK\r\n");
            tracker.cmd(&["GET", "k1"]).await;
            admin.cmd(&["SET", "k2", "w"]).await;
            admin.cmd(&["SET", "k1", "w"]).await;
            1
        }
        Scenario::Optout => {
            assert_eq!(tracker.cmd(&["CLIENT", "CACHING", "no"]).await, b"+OK\r\n");
            tracker.cmd(&["GET", "k2"]).await;
            tracker.cmd(&["GET", "k1"]).await;
            admin.cmd(&["SET", "k2", "w"]).await;
            admin.cmd(&["SET", "k1", "w"]).await;
            1
        }
        Scenario::Expired => {
            admin.cmd(&["SET", "k1", "v", "PX", "100"]).await;
            tracker.cmd(&["GET", "k1"]).await;
            1
        }
    };
    for _ in 0..expected {
        out.extend(target.frame().await);
    }
    // Nothing else is on the way: the next frame is the PING's reply.
    let ping = target.cmd(&["PING"]).await;
    out.extend(ping);
    assert!(target.buffered().is_empty(), "{}", show(target.buffered()));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirected_invalidations_match_redis_server_in_every_protocol() {
    let server = RedisServer::start().await;
    let rotator = Rotator::new(&server).await;
    let proxy = Proxy::start(&proxy_args(&server, &rotator.file.path), "info").await;
    let mut admin = server.admin().await;
    let direct = Via::Direct(&server, &rotator.current);
    let proxied = Via::Proxy(&proxy);
    for s in [
        Scenario::Keys,
        Scenario::Bcast,
        Scenario::Noloop,
        Scenario::Optin,
        Scenario::Optout,
        Scenario::Expired,
    ] {
        for tracker3 in [false, true] {
            for target3 in [false, true] {
                let d = run(&direct, &mut admin, s, tracker3, target3).await;
                let p = run(&proxied, &mut admin, s, tracker3, target3).await;
                assert_eq!(
                    show(&d),
                    show(&p),
                    "{s:?}, tracking client RESP{}, target RESP{}: direct (left) and proxied (right) differ",
                    if tracker3 { 3 } else { 2 },
                    if target3 { 3 } else { 2 },
                );
                if !target3 {
                    let message = b"$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n";
                    assert!(
                        p.windows(message.len()).any(|w| w == message),
                        "{s:?}: a RESP2 target gets messages: {}",
                        show(&p)
                    );
                }
            }
        }
    }
}

/// A RESP2 client's own tracking without REDIRECT sends it nothing, even while it is
/// subscribed (through the proxy, while its upstream speaks RESP3); and a RESP2 target that
/// is not subscribed gets nothing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp2_clients_get_no_invalidations_where_redis_server_sends_none() {
    let server = RedisServer::start().await;
    let rotator = Rotator::new(&server).await;
    let proxy = Proxy::start(&proxy_args(&server, &rotator.file.path), "info").await;
    let mut admin = server.admin().await;
    for via in [Via::Direct(&server, &rotator.current), Via::Proxy(&proxy)] {
        let mut c = via.conn().await;
        assert_eq!(c.cmd(&["CLIENT", "TRACKING", "on"]).await, b"+OK\r\n");
        c.cmd(&["GET", "own"]).await;
        c.cmd(&["SUBSCRIBE", "other-channel"]).await;
        assert_eq!(admin.cmd(&["SET", "own", "w"]).await, Reply::ok());
        assert_eq!(c.frame_within(Duration::from_millis(300)).await, None);
        assert_eq!(c.cmd(&["PING"]).await, b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
        // After the last subscription ends, a redirect target gets nothing.
        c.cmd(&["UNSUBSCRIBE"]).await;
        let id = c.cmd(&["CLIENT", "ID"]).await;
        let id = std::str::from_utf8(&id[1..id.len() - 2])
            .unwrap()
            .to_owned();
        let mut tracker = via.conn().await;
        tracker.cmd(&["HELLO", "3"]).await;
        tracker
            .cmd(&["CLIENT", "TRACKING", "on", "REDIRECT", &id])
            .await;
        tracker.cmd(&["GET", "x"]).await;
        assert_eq!(admin.cmd(&["SET", "x", "w"]).await, Reply::ok());
        assert_eq!(c.frame_within(Duration::from_millis(300)).await, None);
        assert_eq!(c.cmd(&["PING"]).await, b"+PONG\r\n");
    }
}

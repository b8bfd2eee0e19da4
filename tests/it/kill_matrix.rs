//! Exact under every connection event (issue #12): what a client sees when the proxy's upstream
//! connection is killed (`CLIENT KILL ID <id>` from a direct admin connection) in each state a
//! session can be in.
//!
//! The rule (DESIGN.md, "When a connection is replaced"): the proxy either restores the state
//! the client built exactly, on a new upstream connection, or closes the client connection so
//! the client's own logic runs. Never a wrong reply. Each test is one row of issue #12's
//! outcome table; its name says the state, and its assertions say the outcome:
//!
//! - *restored*: the next replies are exactly those of the state the client built, and come
//!   from a new upstream connection (a new `CLIENT ID`);
//! - *closed*: the client reads EOF and no reply at all after the kill.
//!
//! "The proxy noticed the kill" is a condition, not a sleep: a client command written in the
//! instant before the proxy reads the upstream EOF is, to the proxy, a command in flight, and
//! closing the client is then the right answer. So after each kill the test waits for the
//! proxy's log to mention the upstream connection (with a deadline) before it sends anything.

use test_harness as support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::*;

/// How long a client may wait for the proxy to close it after the kill.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);
/// How long the test waits for a condition on the server (`CLIENT LIST`, `PUBSUB`).
const CONDITION_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the test waits for the proxy's log to show it noticed the kill.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(3);

/// One redis-server, its token user, the proxy in front of it and an admin connection.
struct Rig {
    /// Holds the token file and the token's ACL user.
    tokens: Rotator,
    /// The proxy under test.
    proxy: Proxy,
    /// Direct admin connection: kills, checks, publishes.
    admin: Admin,
    /// Kept last: dropped (killed) after the proxy.
    _server: RedisServer,
}

/// One line of `CLIENT LIST` as field → value.
type ClientLine = HashMap<String, String>;

impl Rig {
    /// A server and a proxy started with `extra` arguments after the harness's own.
    async fn start(extra: &[&str]) -> Rig {
        let server = RedisServer::start().await;
        let tokens = Rotator::new(&server).await;
        let mut args = proxy_args(&server, &tokens.file.path);
        args.extend(extra.iter().map(|a| a.to_string()));
        let proxy = Proxy::start(&args, "info,entra_redis_proxy=debug").await;
        let admin = server.admin().await;
        Rig {
            tokens,
            proxy,
            admin,
            _server: server,
        }
    }

    /// The ACL user the proxy authenticates as.
    fn oid(&self) -> String {
        self.tokens.current.oid.clone()
    }

    /// A new client of the proxy, with a shorter I/O timeout than the harness default.
    async fn client(&self) -> ProxyClient {
        let mut c = self.proxy.client().await;
        c.timeout = Duration::from_secs(10);
        c
    }

    /// `CLIENT LIST` of the proxy's connections (the harness's admin connections left out).
    async fn proxy_connections(&mut self) -> Vec<ClientLine> {
        let oid = self.oid();
        let text = match self.admin.cmd(&["CLIENT", "LIST"]).await {
            Reply::Bulk(b) | Reply::Verbatim(b) => String::from_utf8_lossy(&b).into_owned(),
            other => panic!("CLIENT LIST: {other:?}"),
        };
        text.lines()
            .map(|line| {
                line.split(' ')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect::<ClientLine>()
            })
            .filter(|c| c.get("user") == Some(&oid))
            .collect()
    }

    /// Polls `CLIENT LIST` until a proxy connection satisfies `pred`; returns it.
    async fn wait_connection(
        &mut self,
        row: &str,
        what: &str,
        pred: impl Fn(&ClientLine) -> bool,
    ) -> ClientLine {
        let deadline = Instant::now() + CONDITION_TIMEOUT;
        loop {
            let list = self.proxy_connections().await;
            if let Some(c) = list.iter().find(|c| pred(c)) {
                return c.clone();
            }
            if Instant::now() >= deadline {
                panic!(
                    "{row}: no upstream connection {what} within {CONDITION_TIMEOUT:?}; \
                     the proxy's connections: {list:#?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills upstream connection `id` from the admin connection and waits (with a deadline)
    /// until the proxy's log shows it noticed.
    async fn kill(&mut self, row: &str, id: i64) {
        let log_before = self.proxy.raw_logs().len();
        self.kill_now(row, id).await;
        self.wait_noticed(log_before).await;
    }

    /// Kills upstream connection `id` from the admin connection, and returns at once.
    async fn kill_now(&mut self, row: &str, id: i64) {
        let reply = self
            .admin
            .cmd(&["CLIENT", "KILL", "ID", &id.to_string()])
            .await;
        assert_eq!(
            reply,
            Reply::Int(1),
            "{row}: CLIENT KILL ID {id} must find the proxy's upstream connection"
        );
    }

    /// Waits until the proxy logs, after byte `offset` of its log, a line about its upstream
    /// connection or a session's end. Gives up quietly after [`NOTICE_TIMEOUT`]: this only
    /// keeps the next command from racing the proxy's read of the EOF.
    async fn wait_noticed(&self, offset: usize) {
        wait_until(NOTICE_TIMEOUT, || async {
            let logs = self.proxy.raw_logs();
            logs.get(offset..).is_some_and(|new| {
                new.lines().any(|l| {
                    let l = l.to_ascii_lowercase();
                    l.contains("upstream") || l.contains("session ended")
                })
            })
        })
        .await;
    }

    /// `SELECT db` then `GET key` on the admin connection (back to db 0 after).
    async fn admin_get(&mut self, db: &str, key: &str) -> Reply {
        assert_eq!(self.admin.cmd(&["SELECT", db]).await, Reply::ok());
        let value = self.admin.cmd(&["GET", key]).await;
        assert_eq!(self.admin.cmd(&["SELECT", "0"]).await, Reply::ok());
        value
    }
}

/// The upstream connection id of `c`, asked through the proxy (`CLIENT ID` is forwarded).
async fn client_id(row: &str, c: &mut ProxyClient) -> i64 {
    match c.cmd(&["CLIENT", "ID"]).await {
        Reply::Int(id) => id,
        other => panic!("{row}: CLIENT ID: {other:?}"),
    }
}

/// Asserts that the next command runs on a new upstream connection.
async fn assert_new_connection(row: &str, c: &mut ProxyClient, old: i64) -> i64 {
    let new = client_id(row, c).await;
    assert_ne!(
        new, old,
        "{row}: CLIENT ID after the kill names the killed connection"
    );
    new
}

/// What a client saw while waiting for the proxy to close it.
enum Watch {
    /// EOF, after these frames.
    Closed(Vec<Reply>),
    /// Still open after the wait, having received these frames.
    Open(Vec<Reply>),
}

async fn watch_for_close(c: &mut ProxyClient, within: Duration) -> Watch {
    let saved = c.timeout;
    let deadline = Instant::now() + within;
    let mut frames = Vec::new();
    let outcome = loop {
        c.timeout = deadline.saturating_duration_since(Instant::now());
        if c.timeout.is_zero() {
            break Watch::Open(frames);
        }
        match c.try_read_frame().await {
            Ok(frame) => frames.push(frame),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break Watch::Open(frames),
            Err(_) => break Watch::Closed(frames),
        }
    };
    c.timeout = saved;
    outcome
}

/// Asserts the *closed* outcome: the client reads EOF within [`CLOSE_WITHIN`] without sending
/// anything, and no reply before it.
async fn expect_closed(row: &str, c: &mut ProxyClient) {
    match watch_for_close(c, CLOSE_WITHIN).await {
        Watch::Closed(frames) => assert!(
            frames.is_empty(),
            "{row}: the client must read EOF and nothing else after the kill; it read {frames:?}"
        ),
        Watch::Open(frames) => panic!(
            "{row}: the proxy must close the client connection when its upstream connection is \
             killed, but it was still open {CLOSE_WITHIN:?} later (frames read: {frames:?})"
        ),
    }
}

/// Asserts the *closed* outcome for a client that may send its next command before noticing:
/// EOF without sending anything, or else EOF when it sends `probe`, with no reply either way.
async fn expect_closed_by_next_command(row: &str, c: &mut ProxyClient, probe: &[&str]) {
    match watch_for_close(c, CLOSE_WITHIN).await {
        Watch::Closed(frames) => assert!(
            frames.is_empty(),
            "{row}: the client must read EOF and nothing else after the kill; it read {frames:?}"
        ),
        Watch::Open(frames) => {
            assert!(
                frames.is_empty(),
                "{row}: frames arrived after the kill: {frames:?}"
            );
            // A closed socket may refuse the write: that is a close too.
            if c.send_raw(&encode_command(probe)).await.is_err() {
                return;
            }
            match watch_for_close(c, CLOSE_WITHIN).await {
                Watch::Closed(frames) => assert!(
                    frames.is_empty(),
                    "{row}: the proxy answered {probe:?} ({frames:?}) on a connection whose \
                     state it lost; it must close the client instead"
                ),
                Watch::Open(frames) => panic!(
                    "{row}: the client connection stayed open after the kill; {probe:?} was \
                     answered {frames:?} (the outcome must be: client closed)"
                ),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Restored
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_connection_is_restored() {
    let row = "fresh connection";
    let mut rig = Rig::start(&[]).await;
    let mut c = rig.client().await;
    let old = client_id(row, &mut c).await;
    rig.kill(row, old).await;
    assert_eq!(c.cmd(&["PING"]).await, Reply::status("PONG"), "{row}");
    assert_new_connection(row, &mut c, old).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_commands_only_is_restored() {
    let row = "only data commands run";
    let mut rig = Rig::start(&[]).await;
    let mut c = rig.client().await;
    assert_eq!(c.cmd(&["SET", "k", "v1"]).await, Reply::ok());
    assert_eq!(c.cmd(&["GET", "k"]).await, Reply::bulk("v1"));
    let old = client_id(row, &mut c).await;
    rig.kill(row, old).await;
    assert_eq!(c.cmd(&["GET", "k"]).await, Reply::bulk("v1"), "{row}");
    assert_eq!(c.cmd(&["INCR", "n"]).await, Reply::Int(1), "{row}");
    assert_new_connection(row, &mut c, old).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_is_restored() {
    let row = "SELECT 5";
    let mut rig = Rig::start(&[]).await;
    let mut c = rig.client().await;
    assert_eq!(c.cmd(&["SELECT", "5"]).await, Reply::ok());
    let old = client_id(row, &mut c).await;
    rig.kill(row, old).await;
    assert_eq!(c.cmd(&["SET", "k", "in-5"]).await, Reply::ok(), "{row}");
    assert_eq!(c.cmd(&["GET", "k"]).await, Reply::bulk("in-5"), "{row}");
    assert_new_connection(row, &mut c, old).await;
    assert_eq!(
        rig.admin_get("5", "k").await,
        Reply::bulk("in-5"),
        "{row}: the SET after the kill must land in db 5"
    );
    assert_eq!(
        rig.admin_get("0", "k").await,
        Reply::Null,
        "{row}: the SET after the kill landed in db 0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_inside_a_transaction_is_restored() {
    let row = "MULTI, SELECT 7, EXEC";
    let mut rig = Rig::start(&[]).await;
    let mut c = rig.client().await;
    assert_eq!(c.cmd(&["MULTI"]).await, Reply::ok());
    assert_eq!(c.cmd(&["SELECT", "7"]).await, Reply::status("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]).await, Reply::Array(vec![Reply::ok()]));
    // Seeds db 0 so that a read there would show a wrong value rather than nil.
    assert_eq!(rig.admin.cmd(&["SET", "seen", "db0"]).await, Reply::ok());
    assert_eq!(c.cmd(&["SET", "seen", "db7"]).await, Reply::ok());
    let old = client_id(row, &mut c).await;
    rig.kill(row, old).await;
    assert_eq!(
        c.cmd(&["GET", "seen"]).await,
        Reply::bulk("db7"),
        "{row}: a read after the kill must come from db 7"
    );
    assert_eq!(c.cmd(&["SET", "after", "x"]).await, Reply::ok(), "{row}");
    assert_new_connection(row, &mut c, old).await;
    assert_eq!(
        rig.admin_get("7", "after").await,
        Reply::bulk("x"),
        "{row}: the SET after the kill must land in db 7"
    );
    assert_eq!(
        rig.admin_get("0", "after").await,
        Reply::Null,
        "{row}: the SET after the kill landed in db 0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_is_restored() {
    let row = "HELLO 3";
    let mut rig = Rig::start(&[]).await;
    let mut c = rig.client().await;
    assert!(
        matches!(c.cmd(&["HELLO", "3"]).await, Reply::Map(_)),
        "{row}"
    );
    assert_eq!(rig.admin.cmd(&["HSET", "h", "f", "v"]).await, Reply::Int(1));
    let old = client_id(row, &mut c).await;
    rig.kill(row, old).await;
    assert_eq!(
        c.cmd(&["HGETALL", "h"]).await,
        Reply::Map(vec![(Reply::bulk("f"), Reply::bulk("v"))]),
        "{row}: HGETALL must still answer a RESP3 map"
    );
    assert_eq!(c.cmd(&["GET", "missing"]).await, Reply::Null, "{row}");
    assert_new_connection(row, &mut c, old).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_name_is_restored() {
    let row = "CLIENT SETNAME";
    let mut rig = Rig::start(&[]).await;
    let mut c = rig.client().await;
    assert_eq!(
        c.cmd(&["CLIENT", "SETNAME", "kill-matrix"]).await,
        Reply::ok()
    );
    let old = client_id(row, &mut c).await;
    rig.kill(row, old).await;
    assert_eq!(
        c.cmd(&["CLIENT", "GETNAME"]).await,
        Reply::bulk("kill-matrix"),
        "{row}"
    );
    let new = assert_new_connection(row, &mut c, old).await;
    let line = rig
        .wait_connection(row, "with the new id", |l| {
            l.get("id") == Some(&new.to_string())
        })
        .await;
    assert_eq!(
        line.get("name").map(String::as_str),
        Some("kill-matrix"),
        "{row}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_off_is_restored() {
    let row = "CLIENT REPLY OFF";
    let mut rig = Rig::start(&[]).await;
    let mut c = rig.client().await;
    let old = client_id(row, &mut c).await;
    c.send(&["CLIENT", "REPLY", "OFF"]).await;
    rig.wait_connection(row, "that ran CLIENT REPLY OFF", |l| {
        l.get("id") == Some(&old.to_string())
            && l.get("cmd").map(String::as_str) == Some("client|reply")
    })
    .await;
    rig.kill(row, old).await;
    c.send(&["SET", "after", "2"]).await;
    c.send(&["INCR", "n"]).await;
    // The first frame the client reads must be the +OK of CLIENT REPLY ON: the SET and INCR
    // sent after the kill got no reply.
    assert_eq!(
        c.cmd(&["CLIENT", "REPLY", "ON"]).await,
        Reply::ok(),
        "{row}: commands after the kill must still get no reply"
    );
    assert_eq!(c.cmd(&["GET", "after"]).await, Reply::bulk("2"), "{row}");
    assert_eq!(c.cmd(&["GET", "n"]).await, Reply::bulk("1"), "{row}");
    assert_new_connection(row, &mut c, old).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_under_reply_off_then_a_loss_close_the_client() {
    // The proxy cannot know whether a command that got no reply ran before the connection
    // went: replacing the connection could silently lose a write, so the client is closed.
    let row = "CLIENT REPLY OFF, a SET, then a kill";
    let mut rig = Rig::start(&[]).await;
    let mut c = rig.client().await;
    let old = client_id(row, &mut c).await;
    c.send(&["CLIENT", "REPLY", "OFF"]).await;
    c.send(&["SET", "before", "1"]).await;
    rig.wait_connection(row, "that ran the SET under REPLY OFF", |l| {
        l.get("id") == Some(&old.to_string()) && l.get("cmd").map(String::as_str) == Some("set")
    })
    .await;
    rig.kill(row, old).await;
    expect_closed(row, &mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_evict_is_restored() {
    let row = "CLIENT NO-EVICT ON";
    let mut rig = Rig::start(&[]).await;
    let mut c = rig.client().await;
    assert_eq!(c.cmd(&["CLIENT", "NO-EVICT", "ON"]).await, Reply::ok());
    let old = client_id(row, &mut c).await;
    rig.kill(row, old).await;
    let info = c.cmd(&["CLIENT", "INFO"]).await;
    let text = info
        .text()
        .unwrap_or_else(|| panic!("{row}: CLIENT INFO: {info:?}"));
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or("")
            .to_owned()
    };
    assert_ne!(
        field("id"),
        old.to_string(),
        "{row}: CLIENT INFO names the killed connection"
    );
    assert!(
        field("flags").contains('e'),
        "{row}: the new connection must have the no-evict flag `e`: {text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Closed
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_transaction_closes_the_client() {
    let row = "MULTI open";
    let mut rig = Rig::start(&[]).await;
    let mut c = rig.client().await;
    let old = client_id(row, &mut c).await;
    assert_eq!(c.cmd(&["MULTI"]).await, Reply::ok());
    assert_eq!(
        c.cmd(&["SET", "queued", "1"]).await,
        Reply::status("QUEUED")
    );
    rig.kill(row, old).await;
    expect_closed_by_next_command(row, &mut c, &["EXEC"]).await;
    assert_eq!(
        rig.admin_get("0", "queued").await,
        Reply::Null,
        "{row}: the queued SET must not have run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_closes_the_client() {
    let row = "WATCH k active";
    let mut rig = Rig::start(&[]).await;
    let mut c = rig.client().await;
    let old = client_id(row, &mut c).await;
    assert_eq!(c.cmd(&["WATCH", "k"]).await, Reply::ok());
    rig.kill(row, old).await;
    expect_closed_by_next_command(row, &mut c, &["MULTI"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_closes_the_client() {
    let row = "CLIENT TRACKING ON (RESP3)";
    let mut rig = Rig::start(&[]).await;
    let mut c = rig.client().await;
    assert!(matches!(c.cmd(&["HELLO", "3"]).await, Reply::Map(_)));
    let old = client_id(row, &mut c).await;
    assert_eq!(c.cmd(&["CLIENT", "TRACKING", "ON"]).await, Reply::ok());
    assert_eq!(rig.admin.cmd(&["SET", "k", "old"]).await, Reply::ok());
    assert_eq!(c.cmd(&["GET", "k"]).await, Reply::bulk("old"));
    rig.kill(row, old).await;
    // A caching client sends nothing while it serves from its cache: the proxy must close it
    // by itself, or the invalidation of this write never reaches it.
    assert_eq!(rig.admin.cmd(&["SET", "k", "new"]).await, Reply::ok());
    expect_closed(row, &mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_with_redirect_closes_the_client() {
    let row = "CLIENT TRACKING ON REDIRECT";
    let mut rig = Rig::start(&[]).await;
    let mut target = rig.client().await;
    let target_id = client_id(row, &mut target).await;
    target.send(&["SUBSCRIBE", "__redis__:invalidate"]).await;
    assert_eq!(
        target.read_frame().await,
        Reply::Array(vec![
            Reply::bulk("subscribe"),
            Reply::bulk("__redis__:invalidate"),
            Reply::Int(1)
        ])
    );
    let mut c = rig.client().await;
    let old = client_id(row, &mut c).await;
    assert_eq!(
        c.cmd(&[
            "CLIENT",
            "TRACKING",
            "ON",
            "REDIRECT",
            &target_id.to_string()
        ])
        .await,
        Reply::ok()
    );
    assert_eq!(rig.admin.cmd(&["SET", "k", "old"]).await, Reply::ok());
    assert_eq!(c.cmd(&["GET", "k"]).await, Reply::bulk("old"));
    rig.kill(row, old).await;
    expect_closed(row, &mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp2_subscriber_is_closed_by_default() {
    let row = "RESP2 subscriber (default)";
    let mut rig = Rig::start(&[]).await;
    let mut c = rig.client().await;
    let old = client_id(row, &mut c).await;
    subscribe_resp2(&mut c).await;
    rig.kill(row, old).await;
    expect_closed(row, &mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_subscriber_is_closed_by_default() {
    let row = "RESP3 subscriber (default)";
    let mut rig = Rig::start(&[]).await;
    let mut c = rig.client().await;
    assert!(matches!(c.cmd(&["HELLO", "3"]).await, Reply::Map(_)));
    let old = client_id(row, &mut c).await;
    subscribe_resp3(&mut c).await;
    rig.kill(row, old).await;
    expect_closed(row, &mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_is_closed_by_default() {
    let row = "MONITOR (default)";
    let mut rig = Rig::start(&[]).await;
    let mut c = rig.client().await;
    let old = client_id(row, &mut c).await;
    assert_eq!(c.cmd(&["MONITOR"]).await, Reply::ok());
    rig.kill(row, old).await;
    expect_closed(row, &mut c).await;
}

/// The in-flight command is held by the server (`CLIENT PAUSE WRITE` postpones writes, as
/// `CLIENT LIST` shows with flag `b`), so it is certainly sent and certainly unanswered when
/// its connection is killed. (A kill sent during a client's `DEBUG SLEEP 1` cannot test this:
/// redis-server writes the sleep's `+OK` before it reads the admin's `CLIENT KILL`, so the
/// proxy sees a reply and then an idle connection; and the harness's server refuses `DEBUG`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_blocking_command_in_flight_closes_the_client() {
    let row = "non-blocking command in flight";
    let mut rig = Rig::start(&[]).await;
    let mut c = rig.client().await;
    let old = client_id(row, &mut c).await;
    assert_eq!(
        rig.admin.cmd(&["CLIENT", "PAUSE", "20000", "WRITE"]).await,
        Reply::ok()
    );
    c.send(&["INCR", "inflight"]).await;
    rig.wait_connection(row, "holding the INCR (cmd=incr, flag b)", |l| {
        l.get("id") == Some(&old.to_string())
            && l.get("cmd").map(String::as_str) == Some("incr")
            && l.get("flags").is_some_and(|f| f.contains('b'))
    })
    .await;
    rig.kill(row, old).await;
    let outcome = watch_for_close(&mut c, CLOSE_WITHIN).await;
    assert_eq!(rig.admin.cmd(&["CLIENT", "UNPAUSE"]).await, Reply::ok());
    match outcome {
        Watch::Closed(frames) => assert!(
            frames.is_empty(),
            "{row}: the client must read EOF and no reply; it read {frames:?}"
        ),
        Watch::Open(frames) => {
            // Unpaused now: a proxy that re-sent the INCR would answer it here.
            let later = watch_for_close(&mut c, Duration::from_secs(2)).await;
            panic!(
                "{row}: the proxy must close the client whose command was in flight, but the \
                 connection stayed open (frames read: {frames:?}, then after CLIENT UNPAUSE: {})",
                match later {
                    Watch::Closed(f) => format!("{f:?} and EOF"),
                    Watch::Open(f) => format!("{f:?}, still open"),
                }
            );
        }
    }
    assert_eq!(
        rig.admin_get("0", "inflight").await,
        Reply::Null,
        "{row}: the INCR must not have been re-sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_its_own_connection_by_id_closes_the_client() {
    let row = "CLIENT KILL ID <own id> SKIPME no";
    let rig = Rig::start(&[]).await;
    let mut c = rig.client().await;
    let own = client_id(row, &mut c).await;
    self_kill(
        row,
        &rig,
        &mut c,
        &["CLIENT", "KILL", "ID", &own.to_string(), "SKIPME", "no"],
        Reply::Int(1),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_its_own_user_closes_the_client() {
    let row = "CLIENT KILL USER <own user> SKIPME no";
    let rig = Rig::start(&[]).await;
    let mut c = rig.client().await;
    let user = match c.cmd(&["ACL", "WHOAMI"]).await {
        Reply::Bulk(b) => String::from_utf8(b).expect("user name"),
        other => panic!("{row}: ACL WHOAMI: {other:?}"),
    };
    assert_eq!(user, rig.oid(), "{row}");
    self_kill(
        row,
        &rig,
        &mut c,
        &["CLIENT", "KILL", "USER", &user, "SKIPME", "no"],
        Reply::Int(1),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_its_own_address_closes_the_client() {
    let row = "CLIENT KILL ADDR <own upstream addr> SKIPME no";
    let rig = Rig::start(&[]).await;
    let mut c = rig.client().await;
    let addr = own_upstream_addr(row, &mut c).await;
    self_kill(
        row,
        &rig,
        &mut c,
        &["CLIENT", "KILL", "ADDR", &addr, "SKIPME", "no"],
        Reply::Int(1),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_its_own_address_old_form_closes_the_client() {
    let row = "CLIENT KILL <own upstream addr> (old form)";
    let rig = Rig::start(&[]).await;
    let mut c = rig.client().await;
    let addr = own_upstream_addr(row, &mut c).await;
    self_kill(row, &rig, &mut c, &["CLIENT", "KILL", &addr], Reply::ok()).await;
}

/// The client's upstream address, from `CLIENT INFO` through the proxy.
async fn own_upstream_addr(row: &str, c: &mut ProxyClient) -> String {
    let info = c.cmd(&["CLIENT", "INFO"]).await;
    info.text()
        .and_then(|t| {
            t.split_whitespace()
                .find_map(|kv| kv.strip_prefix("addr="))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("{row}: no addr in CLIENT INFO: {info:?}"))
}

/// Sends the client's own kill; it gets redis-server's reply, then EOF (not a revived session).
async fn self_kill(row: &str, rig: &Rig, c: &mut ProxyClient, kill: &[&str], reply: Reply) {
    let log_before = rig.proxy.raw_logs().len();
    assert_eq!(
        c.cmd(kill).await,
        reply,
        "{row}: redis-server's reply to the client's own kill"
    );
    rig.wait_noticed(log_before).await;
    expect_closed_by_next_command(row, c, &["PING"]).await;
}

// ---------------------------------------------------------------------------------------------
// Subscribers and MONITOR with --reconnect-subscribers
// ---------------------------------------------------------------------------------------------

/// `SUBSCRIBE c` in RESP2.
async fn subscribe_resp2(c: &mut ProxyClient) {
    c.send(&["SUBSCRIBE", "c"]).await;
    assert_eq!(
        c.read_frame().await,
        Reply::Array(vec![
            Reply::bulk("subscribe"),
            Reply::bulk("c"),
            Reply::Int(1)
        ])
    );
}

/// `SUBSCRIBE c` in RESP3.
async fn subscribe_resp3(c: &mut ProxyClient) {
    c.send(&["SUBSCRIBE", "c"]).await;
    assert_eq!(
        c.read_frame().await,
        Reply::Push(vec![
            Reply::bulk("subscribe"),
            Reply::bulk("c"),
            Reply::Int(1)
        ])
    );
}

/// Waits until channel `c` has a subscriber on an upstream connection other than `old`.
async fn wait_resubscribed(row: &str, rig: &mut Rig, old: i64) {
    rig.wait_connection(row, "subscribed to c on a new connection", |l| {
        l.get("id") != Some(&old.to_string()) && l.get("sub").map(String::as_str) == Some("1")
    })
    .await;
    let deadline = Instant::now() + CONDITION_TIMEOUT;
    loop {
        let n = rig.admin.cmd(&["PUBSUB", "NUMSUB", "c"]).await;
        if n == Reply::Array(vec![Reply::bulk("c"), Reply::Int(1)]) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{row}: PUBSUB NUMSUB c: {n:?}, want one subscriber"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp2_subscriber_is_resubscribed_with_the_flag() {
    let row = "RESP2 subscriber, --reconnect-subscribers";
    let mut rig = Rig::start(&["--reconnect-subscribers"]).await;
    let mut c = rig.client().await;
    let old = client_id(row, &mut c).await;
    subscribe_resp2(&mut c).await;
    rig.kill(row, old).await;
    wait_resubscribed(row, &mut rig, old).await;
    assert_eq!(
        rig.admin.cmd(&["PUBLISH", "c", "after-kill"]).await,
        Reply::Int(1)
    );
    // Silently: the next frame is the message, not a subscribe confirmation.
    assert_eq!(
        c.read_frame().await,
        Reply::Array(vec![
            Reply::bulk("message"),
            Reply::bulk("c"),
            Reply::bulk("after-kill")
        ]),
        "{row}"
    );
    c.send(&["PING"]).await;
    assert_eq!(
        c.read_frame().await,
        Reply::Array(vec![Reply::bulk("pong"), Reply::bulk("")]),
        "{row}: still a RESP2 subscriber"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_subscriber_is_resubscribed_with_the_flag() {
    let row = "RESP3 subscriber, --reconnect-subscribers";
    let mut rig = Rig::start(&["--reconnect-subscribers"]).await;
    let mut c = rig.client().await;
    assert!(matches!(c.cmd(&["HELLO", "3"]).await, Reply::Map(_)));
    let old = client_id(row, &mut c).await;
    subscribe_resp3(&mut c).await;
    rig.kill(row, old).await;
    wait_resubscribed(row, &mut rig, old).await;
    assert_eq!(
        rig.admin.cmd(&["PUBLISH", "c", "after-kill"]).await,
        Reply::Int(1)
    );
    assert_eq!(
        c.read_frame().await,
        Reply::Push(vec![
            Reply::bulk("message"),
            Reply::bulk("c"),
            Reply::bulk("after-kill")
        ]),
        "{row}"
    );
    // RESP3 subscribers may run any command: it runs on the new connection.
    assert_new_connection(row, &mut c, old).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_is_restarted_with_the_flag() {
    let row = "MONITOR, --reconnect-subscribers";
    let mut rig = Rig::start(&["--reconnect-subscribers"]).await;
    let mut c = rig.client().await;
    let old = client_id(row, &mut c).await;
    assert_eq!(c.cmd(&["MONITOR"]).await, Reply::ok());
    rig.kill(row, old).await;
    rig.wait_connection(row, "in MONITOR mode (flag O) on a new connection", |l| {
        l.get("id") != Some(&old.to_string()) && l.get("flags").is_some_and(|f| f.contains('O'))
    })
    .await;
    assert_eq!(
        rig.admin.cmd(&["ECHO", "after-kill-marker"]).await,
        Reply::bulk("after-kill-marker")
    );
    // Every frame is a MONITOR line (a timestamp first); the marker's line arrives.
    let deadline = Instant::now() + CONDITION_TIMEOUT;
    loop {
        let frame = c.read_frame().await;
        let line = match &frame {
            Reply::Status(s) if s.split(' ').next().is_some_and(is_timestamp) => s.clone(),
            other => panic!("{row}: a frame that is not a MONITOR line: {other:?}"),
        };
        if line.contains("after-kill-marker") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{row}: the marker's MONITOR line did not arrive"
        );
    }
}

fn is_timestamp(s: &str) -> bool {
    s.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    })
}

// ---------------------------------------------------------------------------------------------
// Blocking commands in flight
// ---------------------------------------------------------------------------------------------

/// A blocking command of the table, with what the test adds and what the client must get.
struct Blocking {
    /// The row's name.
    name: &'static str,
    /// `cmd=` in `CLIENT LIST` while it blocks.
    list_cmd: &'static str,
    /// The command, given its timeout argument.
    command: fn(&str) -> Vec<String>,
    /// Timeout arguments: (forever, two seconds).
    timeouts: (&'static str, &'static str),
    /// Admin commands run before the client blocks.
    setup: &'static [&'static [&'static str]],
    /// The admin command that gives the blocked client its element.
    feed: &'static [&'static str],
    /// The client's reply once fed.
    fed_reply: fn() -> Reply,
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn stream_reply(id: &str) -> Reply {
    Reply::Array(vec![Reply::Array(vec![
        Reply::bulk("s"),
        Reply::Array(vec![Reply::Array(vec![
            Reply::bulk(id),
            Reply::bulks(&["f", "new"]),
        ])]),
    ])])
}

const BLPOP: Blocking = Blocking {
    name: "BLPOP k",
    list_cmd: "blpop",
    command: |t| owned(&["BLPOP", "k", t]),
    timeouts: ("0", "2"),
    setup: &[],
    feed: &["RPUSH", "k", "v"],
    fed_reply: || Reply::bulks(&["k", "v"]),
};

const BLMOVE: Blocking = Blocking {
    name: "BLMOVE a b LEFT LEFT",
    list_cmd: "blmove",
    command: |t| owned(&["BLMOVE", "a", "b", "LEFT", "LEFT", t]),
    timeouts: ("0", "2"),
    setup: &[],
    feed: &["RPUSH", "a", "v"],
    fed_reply: || Reply::bulk("v"),
};

const BZPOPMIN: Blocking = Blocking {
    name: "BZPOPMIN z",
    list_cmd: "bzpopmin",
    command: |t| owned(&["BZPOPMIN", "z", t]),
    timeouts: ("0", "2"),
    setup: &[],
    feed: &["ZADD", "z", "1", "m"],
    fed_reply: || Reply::bulks(&["z", "m", "1"]),
};

const XREAD: Blocking = Blocking {
    name: "XREAD BLOCK STREAMS s $",
    list_cmd: "xread",
    command: |t| owned(&["XREAD", "BLOCK", t, "STREAMS", "s", "$"]),
    timeouts: ("0", "2000"),
    // An older entry: `$` must not return it, before or after the kill.
    setup: &[&["XADD", "s", "1-1", "f", "old"]],
    feed: &["XADD", "s", "5-1", "f", "new"],
    fed_reply: || stream_reply("5-1"),
};

const XREADGROUP: Blocking = Blocking {
    name: "XREADGROUP GROUP g c BLOCK STREAMS s >",
    list_cmd: "xreadgroup",
    command: |t| {
        owned(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "BLOCK",
            t,
            "STREAMS",
            "s",
            ">",
        ])
    },
    timeouts: ("0", "2000"),
    setup: &[
        &["XADD", "s", "1-1", "f", "old"],
        &["XGROUP", "CREATE", "s", "g", "$"],
    ],
    feed: &["XADD", "s", "5-1", "f", "new"],
    fed_reply: || stream_reply("5-1"),
};

/// Sends `b` with `timeout`, waits until the server shows it blocked, kills its connection.
/// Returns the client, the killed id and when the command was sent.
async fn block_then_kill(
    rig: &mut Rig,
    row: &str,
    b: &Blocking,
    timeout: &str,
    kill_at: Duration,
) -> (ProxyClient, i64, Instant) {
    for cmd in b.setup {
        let r = rig.admin.cmd(cmd).await;
        assert!(!r.is_error(), "{row}: setup {cmd:?}: {r:?}");
    }
    let mut c = rig.client().await;
    let old = client_id(row, &mut c).await;
    let sent = Instant::now();
    c.send(&(b.command)(timeout)).await;
    rig.wait_connection(row, &format!("blocked in {} (flag b)", b.list_cmd), |l| {
        l.get("id") == Some(&old.to_string())
            && l.get("cmd").map(String::as_str) == Some(b.list_cmd)
            && l.get("flags").is_some_and(|f| f.contains('b'))
    })
    .await;
    if let Some(wait) = (sent + kill_at).checked_duration_since(Instant::now()) {
        // The point in the wait at which the kill happens (the timing rows need it late
        // enough that a restarted wait is told apart from the remaining one).
        tokio::time::sleep(wait).await;
    }
    // The blocked client sends nothing, so nothing races the proxy's read of the EOF.
    rig.kill_now(row, old).await;
    (c, old, sent)
}

/// The blocked client is fed right after the kill (before any re-issued command can be seen
/// blocked): it must get the element, once, and the session goes on.
async fn blocking_is_reissued_and_fed(b: &Blocking, forever: bool) {
    let timeout = if forever { b.timeouts.0 } else { b.timeouts.1 };
    let row = format!("{} {timeout} in flight, fed after the kill", b.name);
    let row = row.as_str();
    let mut rig = Rig::start(&[]).await;
    let (mut c, old, _) = block_then_kill(&mut rig, row, b, timeout, Duration::ZERO).await;
    let r = rig.admin.cmd(b.feed).await;
    assert!(!r.is_error(), "{row}: {:?}: {r:?}", b.feed);
    match c.try_read_frame().await {
        Ok(reply) => assert_eq!(
            reply,
            (b.fed_reply)(),
            "{row}: the re-issued command's reply"
        ),
        Err(e) => panic!(
            "{row}: the proxy must re-issue the blocked command on a new connection and \
             return the element added after the kill; the client got {e} instead"
        ),
    }
    assert_eq!(c.cmd(&["PING"]).await, Reply::status("PONG"), "{row}");
    assert_new_connection(row, &mut c, old).await;
    match b.list_cmd {
        "blmove" => {
            assert_eq!(
                rig.admin.cmd(&["LRANGE", "b", "0", "-1"]).await,
                Reply::bulks(&["v"])
            );
            assert_eq!(rig.admin.cmd(&["LLEN", "a"]).await, Reply::Int(0));
        }
        "blpop" => assert_eq!(rig.admin.cmd(&["LLEN", "k"]).await, Reply::Int(0)),
        "bzpopmin" => assert_eq!(rig.admin.cmd(&["ZCARD", "z"]).await, Reply::Int(0)),
        _ => {}
    }
}

/// The 2-second wait with nothing added: the nil reply comes at the end of the client's own
/// wait, counted from when it sent the command, not restarted at the kill.
async fn blocking_times_out_on_time(b: &Blocking) {
    let timeout = b.timeouts.1;
    let row = format!("{} {timeout} in flight, nothing added", b.name);
    let row = row.as_str();
    let mut rig = Rig::start(&[]).await;
    // Killed 0.8 s into the 2 s wait: a restarted wait would end near 2.8 s.
    let (mut c, old, sent) =
        block_then_kill(&mut rig, row, b, timeout, Duration::from_millis(800)).await;
    let reply = c.try_read_frame().await;
    let elapsed = sent.elapsed();
    match reply {
        Ok(reply) => assert_eq!(reply, Reply::Null, "{row}: the timeout reply"),
        Err(e) => panic!(
            "{row}: the proxy must re-issue the blocked command for the time left and return \
             its timeout reply; the client got {e} instead"
        ),
    }
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_millis(2600),
        "{row}: the timeout reply came {elapsed:?} after the command (want about 2 s, not \
         restarted at the kill)"
    );
    assert_eq!(c.cmd(&["PING"]).await, Reply::status("PONG"), "{row}");
    assert_new_connection(row, &mut c, old).await;
}

macro_rules! blocking_rows {
    ($($b:ident: $forever_fed:ident, $two_s_fed:ident, $two_s_timeout:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $forever_fed() {
            blocking_is_reissued_and_fed(&$b, true).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $two_s_fed() {
            blocking_is_reissued_and_fed(&$b, false).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $two_s_timeout() {
            blocking_times_out_on_time(&$b).await;
        }
    )*};
}

blocking_rows! {
    BLPOP: blpop_forever_is_reissued, blpop_2s_is_reissued, blpop_2s_times_out_on_time;
    BLMOVE: blmove_forever_is_reissued, blmove_2s_is_reissued, blmove_2s_times_out_on_time;
    BZPOPMIN: bzpopmin_forever_is_reissued, bzpopmin_2s_is_reissued, bzpopmin_2s_times_out_on_time;
    XREAD: xread_forever_is_reissued, xread_2s_is_reissued, xread_2s_times_out_on_time;
    XREADGROUP: xreadgroup_forever_is_reissued, xreadgroup_2s_is_reissued,
        xreadgroup_2s_times_out_on_time;
}

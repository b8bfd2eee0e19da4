//! No connection left behind: RESP2 subscribers, blocking commands and idle sessions survive
//! token expiry and upstream loss (issue "No connection left behind").
//!
//! Azure's expiry is emulated for real here: tokens live a few seconds, a new one is written
//! to the token file every `PERIOD`, and each token's ACL user is deleted when its `exp`
//! passes — redis-server then closes every connection still authenticated with it.

use test_harness as support;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::*;

/// Lifetime of each token.
const TTL: Duration = Duration::from_secs(6);
/// A new token every PERIOD (so two are valid at any time, as with a real refresh).
const PERIOD: Duration = Duration::from_secs(3);

/// Issues short-lived tokens and deletes each token's user when it expires.
struct ExpiringTokens {
    file: TokenFile,
    /// Users deleted so far (emulated expiries).
    expired: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ExpiringTokens {
    async fn start(server: &RedisServer) -> ExpiringTokens {
        let mut admin = server.admin().await;
        let first = Token::mint(TTL);
        admin.create_token_user(&first).await;
        let file = TokenFile::new(&first);
        let expired = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let path = file.path.clone();
        let (e, s) = (expired.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut live: VecDeque<Token> = VecDeque::from([first]);
            let mut next = Instant::now() + PERIOD;
            while !s.load(Ordering::SeqCst) {
                let now_s = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                while live.front().is_some_and(|t| t.exp <= now_s) {
                    let t = live.pop_front().unwrap();
                    admin.delete_user(&t.oid).await;
                    e.fetch_add(1, Ordering::SeqCst);
                }
                if Instant::now() >= next {
                    let t = Token::mint(TTL);
                    admin.create_token_user(&t).await;
                    let tmp = path.with_extension(random_id());
                    std::fs::write(&tmp, &t.jwt).unwrap();
                    std::fs::rename(&tmp, &path).unwrap();
                    live.push_back(t);
                    next += PERIOD;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        ExpiringTokens {
            file,
            expired,
            stop,
            task: Some(task),
        }
    }

    fn expired(&self) -> usize {
        self.expired.load(Ordering::SeqCst)
    }

    async fn wait_expiries(&self, n: usize) {
        let target = self.expired() + n;
        let ok = wait_until(Duration::from_secs(60), || async {
            self.expired() >= target
        })
        .await;
        assert!(ok, "fewer than {n} expiries happened");
    }

    async fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

async fn proxy_for(server: &RedisServer, tokens: &ExpiringTokens) -> Proxy {
    Proxy::start(&proxy_args(server, &tokens.file.path), "info").await
}

/// Runs `args` on the admin connection until `pred` holds (true) or 15 s pass (false).
async fn admin_until(admin: &mut Admin, args: &[&str], pred: impl Fn(&Reply) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if pred(&admin.cmd(args).await) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn numsub(channel: &str, n: i64) -> Reply {
    Reply::Array(vec![Reply::bulk(channel), Reply::Int(n)])
}

fn message(channel: &str, payload: &str) -> Reply {
    Reply::Array(vec![
        Reply::bulk("message"),
        Reply::bulk(channel),
        Reply::bulk(payload),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp2_subscribers_survive_ten_expiries() {
    let server = RedisServer::start().await;
    let tokens = ExpiringTokens::start(&server).await;
    let proxy = proxy_for(&server, &tokens).await;

    // A real client: redis-cli in RESP2 subscribed mode.
    let mut cli = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &proxy.addr.port().to_string()])
        .args(["SUBSCRIBE", "news"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-cli");
    let cli_out = cli.stdout.take().unwrap();
    let cli_lines = std::thread::spawn(move || {
        BufReader::new(cli_out)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });

    // A raw RESP2 subscriber that also mixes in PING and (UN)SUBSCRIBE.
    let mut sub = proxy.client().await;
    sub.send(&["SUBSCRIBE", "news"]).await;
    assert_eq!(
        sub.read_frame().await,
        Reply::Array(vec![
            Reply::bulk("subscribe"),
            Reply::bulk("news"),
            Reply::Int(1)
        ])
    );
    // Both subscribers are in place before publishing starts.
    let mut admin = server.admin().await;
    assert!(
        admin_until(&mut admin, &["PUBSUB", "NUMSUB", "news"], |r| *r
            == numsub("news", 2))
        .await,
        "subscribers did not subscribe"
    );

    let mut publisher = proxy.client().await;
    let start_expired = tokens.expired();
    let mut sent = 0usize;
    let started = Instant::now();
    let mut expected_raw: Vec<Reply> = Vec::new();
    while tokens.expired() < start_expired + 10 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "expiries too slow"
        );
        let payload = format!("m-{sent}");
        let n = publisher.cmd(&["PUBLISH", "news", &payload]).await;
        assert_eq!(
            n,
            Reply::Int(2),
            "both subscribers must still be subscribed ({payload})"
        );
        expected_raw.push(message("news", &payload));
        sent += 1;
        if sent % 40 == 0 {
            // PING and a second channel on the subscriber, in RESP2 form.
            sub.send(&["PING"]).await;
            sub.send(&["SUBSCRIBE", "other"]).await;
            sub.send(&["UNSUBSCRIBE", "other"]).await;
            expected_raw.push(Reply::Array(vec![Reply::bulk("pong"), Reply::bulk("")]));
            expected_raw.push(Reply::Array(vec![
                Reply::bulk("subscribe"),
                Reply::bulk("other"),
                Reply::Int(2),
            ]));
            expected_raw.push(Reply::Array(vec![
                Reply::bulk("unsubscribe"),
                Reply::bulk("other"),
                Reply::Int(1),
            ]));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Everything arrives exactly once, in order, as RESP2.
    let mut got = Vec::with_capacity(expected_raw.len());
    while got.len() < expected_raw.len() {
        got.push(sub.read_frame().await);
    }
    for (i, (g, e)) in got.iter().zip(&expected_raw).enumerate() {
        assert_eq!(g, e, "frame {i} of the raw subscriber");
    }
    // Nothing more (no duplicates) within a moment.
    sub.timeout = Duration::from_millis(300);
    assert!(
        sub.try_read_frame().await.is_err(),
        "an unexpected extra frame"
    );

    let _ = Command::new("kill").arg(cli.id().to_string()).status();
    let _ = cli.wait();
    let lines = cli_lines.join().unwrap();
    let payloads: Vec<&String> = lines.iter().filter(|l| l.starts_with("m-")).collect();
    assert_eq!(
        payloads.len(),
        sent,
        "redis-cli received every message once"
    );
    for (i, p) in payloads.iter().enumerate() {
        assert_eq!(**p, format!("m-{i}"), "redis-cli message order");
    }
    tokens.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_commands_survive_expiries() {
    let server = RedisServer::start().await;
    let tokens = ExpiringTokens::start(&server).await;
    let proxy = proxy_for(&server, &tokens).await;

    let mut blpop = proxy.client().await;
    blpop.timeout = Duration::from_secs(120);
    blpop.send(&["BLPOP", "jobs", "0"]).await;
    let mut xread = proxy.client().await;
    xread.timeout = Duration::from_secs(120);
    xread
        .send(&["XREAD", "BLOCK", "0", "STREAMS", "events", "$"])
        .await;
    // A command pipelined behind the blocking one waits for it, as on redis-server.
    blpop.send(&["ECHO", "after"]).await;

    tokens.wait_expiries(3).await;
    let mut other = proxy.client().await;
    assert_eq!(other.cmd(&["RPUSH", "jobs", "job-1"]).await, Reply::Int(1));
    let id = other
        .cmd(&["XADD", "events", "*", "kind", "late"])
        .await
        .text()
        .expect("stream id");
    assert_eq!(
        blpop.read_frame().await,
        Reply::Array(vec![Reply::bulk("jobs"), Reply::bulk("job-1")])
    );
    assert_eq!(blpop.read_frame().await, Reply::bulk("after"));
    assert_eq!(
        xread.read_frame().await,
        Reply::Array(vec![Reply::Array(vec![
            Reply::bulk("events"),
            Reply::Array(vec![Reply::Array(vec![
                Reply::bulk(&id),
                Reply::Array(vec![Reply::bulk("kind"), Reply::bulk("late")]),
            ])]),
        ])])
    );

    // A finite timeout longer than one slice still ends when the client asked, with a nil.
    let t0 = Instant::now();
    assert_eq!(blpop.cmd(&["BLPOP", "empty", "5"]).await, Reply::Null);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(4900) && took < Duration::from_secs(8),
        "BLPOP 5 took {took:?}"
    );
    // The connections are alive and authenticated with a current token.
    assert_eq!(blpop.cmd(&["PING"]).await, Reply::status("PONG"));
    assert_eq!(xread.cmd(&["PING"]).await, Reply::status("PONG"));
    tokens.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_idle_and_blocked_sessions_and_closes_subscribers() {
    let mut server = RedisServer::start().await;
    let mut rotator = Rotator::new(&server).await;
    let proxy = Proxy::start(&proxy_args(&server, &rotator.file.path), "info").await;
    // A second proxy keeps the old behaviour for subscribers: silent resubscription.
    let mut resubscribing_args = proxy_args(&server, &rotator.file.path);
    resubscribing_args.push("--reconnect-subscribers".into());
    let resubscribing = Proxy::start(&resubscribing_args, "info").await;

    let mut idle = proxy.client().await;
    assert_eq!(idle.cmd(&["SELECT", "5"]).await, Reply::ok());
    assert_eq!(
        idle.cmd(&["CLIENT", "SETNAME", "idle-one"]).await,
        Reply::ok()
    );
    let subscribed = Reply::Array(vec![
        Reply::bulk("subscribe"),
        Reply::bulk("alerts"),
        Reply::Int(1),
    ]);
    let mut closed_sub = proxy.client().await;
    closed_sub.send(&["SUBSCRIBE", "alerts"]).await;
    assert_eq!(closed_sub.read_frame().await, subscribed);
    let mut sub = resubscribing.client().await;
    sub.send(&["SUBSCRIBE", "alerts"]).await;
    assert_eq!(sub.read_frame().await, subscribed);
    let mut blocked = proxy.client().await;
    blocked.send(&["BLPOP", "later", "30"]).await;
    let mut admin = server.admin().await;
    assert!(
        admin_until(&mut admin, &["CLIENT", "LIST"], |r| {
            r.text().is_some_and(|t| t.contains("cmd=blpop"))
        })
        .await
    );

    server.restart().await;
    // Run-time ACL users are gone after a restart; the identity still exists in Azure.
    let mut admin = server.admin().await;
    admin.create_token_user(&rotator.current).await;
    rotator.admin = server.admin().await;

    // By default a subscriber is closed: what was published during the gap is lost, and its
    // library resubscribes knowing that.
    let frames = closed_sub.read_until_closed().await;
    assert!(
        frames.is_empty(),
        "no frame for the closed subscriber: {frames:?}"
    );

    // The blocked BLPOP was re-issued on the new connection, with the time it had left.
    assert!(
        admin_until(&mut admin, &["CLIENT", "LIST"], |r| {
            r.text().is_some_and(|t| t.contains("cmd=blpop"))
        })
        .await,
        "the BLPOP is waiting again"
    );
    assert_eq!(admin.cmd(&["LPUSH", "later", "x"]).await, Reply::Int(1));
    assert_eq!(blocked.read_frame().await, Reply::bulks(&["later", "x"]));

    // The idle session continues on its database and name.
    assert_eq!(idle.cmd(&["SET", "after-restart", "1"]).await, Reply::ok());
    assert_eq!(
        idle.cmd(&["CLIENT", "GETNAME"]).await,
        Reply::bulk("idle-one")
    );
    admin.cmd(&["SELECT", "5"]).await;
    assert_eq!(admin.cmd(&["GET", "after-restart"]).await, Reply::bulk("1"));

    // With --reconnect-subscribers the subscriber was re-subscribed on the new connection.
    assert!(
        admin_until(&mut admin, &["PUBSUB", "NUMSUB", "alerts"], |r| {
            *r == numsub("alerts", 1)
        })
        .await,
        "subscriber not restored"
    );
    assert_eq!(
        admin.cmd(&["PUBLISH", "alerts", "back"]).await,
        Reply::Int(1)
    );
    assert_eq!(sub.read_frame().await, message("alerts", "back"));

    // And the restored connections re-authenticate on the next rotation.
    rotator.rotate(3).await.expect("rotation after restart");
    assert_eq!(idle.cmd(&["GET", "after-restart"]).await, Reply::bulk("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_sessions_are_reauthenticated_without_a_stray_reply() {
    let server = RedisServer::start().await;
    let mut rotator = Rotator::new(&server).await;
    let proxy = Proxy::start(&proxy_args(&server, &rotator.file.path), "info").await;
    let mut monitor = proxy.client().await;
    assert_eq!(monitor.cmd(&["MONITOR"]).await, Reply::ok());
    let mut writer = proxy.client().await;
    for i in 0..3 {
        rotator.rotate(2).await.expect("rotation");
        assert_eq!(
            writer.cmd(&["SET", "mon", &i.to_string()]).await,
            Reply::ok()
        );
        // Every frame the MONITOR client gets is a monitor line (`+<time> [...] ...`); the
        // proxy's AUTH shows as redis-server shows any AUTH, its +OK reply never.
        loop {
            let frame = monitor.read_frame().await;
            let Reply::Status(line) = &frame else {
                panic!("not a monitor line: {frame:?}");
            };
            assert!(
                line.starts_with(|c: char| c.is_ascii_digit()),
                "stray reply {line:?}"
            );
            if line.contains(&format!("\"SET\" \"mon\" \"{i}\"")) {
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reauth_keeps_the_session_and_a_good_token_fixes_it() {
    let server = RedisServer::start().await;
    let mut rotator = Rotator::new(&server).await;
    let proxy = Proxy::start(&proxy_args(&server, &rotator.file.path), "info").await;
    let mut c = proxy.client().await;
    assert_eq!(c.cmd(&["SET", "k", "1"]).await, Reply::ok());
    // A token the cache does not know (no ACL user): the re-AUTH gets WRONGPASS.
    let bad = Token::mint(Duration::from_secs(3600));
    rotator.file.write(&bad);
    let logged = wait_until(Duration::from_secs(10), || async {
        proxy.logs().contains("the cache refused the re-AUTH")
    })
    .await;
    assert!(logged, "no log of the refused re-AUTH:\n{}", proxy.logs());
    // The session is still there, logged in with the previous token.
    assert_eq!(c.cmd(&["GET", "k"]).await, Reply::bulk("1"));
    assert_eq!(
        c.cmd(&["ACL", "WHOAMI"]).await,
        Reply::bulk(&rotator.current.oid)
    );
    // A good token arrives: the same session moves to it.
    let good = rotator.rotate(1).await.expect("rotation to a good token");
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]).await, Reply::bulk(&good.oid));
    assert!(!proxy.raw_logs().contains(&bad.jwt));
}

//! Token rotation under load, with Azure's expiry emulated: each token has its own ACL user,
//! deleted once the proxy has moved every connection to the new token. Redis would disconnect a
//! connection still on a deleted user, so a client that keeps its upstream connection (same
//! `CLIENT ID`) through 20 rotations proves the proxy re-authenticated it, and a reply that
//! matches its command proves the proxy swallowed its own AUTH replies.

use test_harness as support;

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{Protocol, Proxy, ProxyClient, RedisServer, Reply, Rotator};

const PIPELINED_CLIENTS: usize = 20;
const MULTI_CLIENTS: usize = 3;
const RESP3_SUBSCRIBERS: usize = 3;
const RESP2_SUBSCRIBERS: usize = 2;
const ROTATIONS: usize = 20;

/// State shared by the test and its workers.
struct Shared {
    /// Set when the workers should finish.
    stop: AtomicBool,
    /// Every oid issued so far: the only users `ACL WHOAMI` may report.
    oids: Mutex<HashSet<String>>,
    /// Per worker, how many rounds it has completed (to wait for traffic between rotations).
    progress: Vec<AtomicU64>,
    /// Per subscriber channel, how many messages were published; `u64::MAX` while publishing.
    published: Vec<AtomicU64>,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn tick(&self, worker: usize) {
        self.progress[worker].fetch_add(1, Ordering::SeqCst);
    }

    fn is_issued_oid(&self, reply: &Reply) -> bool {
        let oids = self.oids.lock().unwrap();
        reply.text().is_some_and(|oid| oids.contains(&oid))
    }
}

/// What a worker proves at the end: it kept the same upstream connection.
struct Finished {
    name: String,
    client_id: i64,
    rounds: u64,
    /// Kept open until the test has looked at `CLIENT LIST`.
    _client: ProxyClient,
}

async fn client_id(c: &mut ProxyClient) -> i64 {
    match c.cmd(&["CLIENT", "ID"]).await {
        Reply::Int(id) => id,
        other => panic!("CLIENT ID: {other:?}"),
    }
}

/// Ends a worker: same upstream connection as at the start, still answering.
async fn finish(
    name: String,
    mut c: ProxyClient,
    id: i64,
    shared: &Shared,
    index: usize,
) -> Finished {
    assert_eq!(
        client_id(&mut c).await,
        id,
        "{name}: the upstream connection changed"
    );
    let whoami = c.cmd(&["ACL", "WHOAMI"]).await;
    assert!(
        shared.is_issued_oid(&whoami),
        "{name}: ACL WHOAMI = {whoami:?}"
    );
    Finished {
        name,
        client_id: id,
        rounds: shared.progress[index].load(Ordering::SeqCst),
        _client: c,
    }
}

/// Pipelines INCR / SET / GET / ECHO and checks every reply's value.
async fn pipelined(mut c: ProxyClient, id: i64, shared: Arc<Shared>, index: usize) -> Finished {
    let name = format!("pipelined-{index}");
    let counter = format!("rot:counter:{index}");
    let key = format!("rot:key:{index}");
    let mut count = 0i64;
    let mut seq = 0u64;
    while !shared.stopped() {
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for _ in 0..25 {
            seq += 1;
            let value = format!("{name}-v{seq}");
            count += 1;
            bytes.extend(support::encode_command(&["INCR", counter.as_str()]));
            expected.push(Reply::Int(count));
            bytes.extend(support::encode_command(&[
                "SET",
                key.as_str(),
                value.as_str(),
            ]));
            expected.push(Reply::ok());
            bytes.extend(support::encode_command(&["GET", key.as_str()]));
            expected.push(Reply::bulk(&value));
            bytes.extend(support::encode_command(&["ECHO", value.as_str()]));
            expected.push(Reply::bulk(&value));
        }
        let replies = c.pipeline(&bytes, expected.len()).await;
        for (i, (got, want)) in replies.iter().zip(&expected).enumerate() {
            assert_eq!(got, want, "{name}: reply {i} of a pipeline (seq {seq})");
        }
        assert_eq!(c.buffered(), 0, "{name}: bytes beyond the expected replies");
        shared.tick(index);
    }
    finish(name, c, id, &shared, index).await
}

/// Runs MULTI blocks, pipelined in one write, and checks EXEC's array.
async fn transactions(mut c: ProxyClient, id: i64, shared: Arc<Shared>, index: usize) -> Finished {
    let name = format!("multi-{index}");
    let counter = format!("rot:multi:{index}");
    let mut count = 0i64;
    while !shared.stopped() {
        count += 1;
        let marker = format!("{name}-{count}");
        let mut bytes = support::encode_command(&["MULTI"]);
        bytes.extend(support::encode_command(&["INCR", counter.as_str()]));
        bytes.extend(support::encode_command(&["ECHO", marker.as_str()]));
        bytes.extend(support::encode_command(&["EXEC"]));
        let replies = c.pipeline(&bytes, 4).await;
        assert_eq!(
            replies,
            vec![
                Reply::ok(),
                Reply::status("QUEUED"),
                Reply::status("QUEUED"),
                Reply::Array(vec![Reply::Int(count), Reply::bulk(&marker)]),
            ],
            "{name}: transaction {count}"
        );
        // And one sent command by command, so that tokens also arrive between them.
        count += 1;
        assert_eq!(c.cmd(&["MULTI"]).await, Reply::ok(), "{name}");
        assert_eq!(
            c.cmd(&["INCR", counter.as_str()]).await,
            Reply::status("QUEUED"),
            "{name}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(
            c.cmd(&["EXEC"]).await,
            Reply::Array(vec![Reply::Int(count)]),
            "{name}: transaction {count}"
        );
        shared.tick(index);
    }
    finish(name, c, id, &shared, index).await
}

/// Subscribes to its channel and checks that messages 1, 2, 3... arrive in order, none lost or
/// duplicated, interleaved with PINGs (allowed while subscribed, in both protocols).
async fn subscriber(
    mut c: ProxyClient,
    id: i64,
    shared: Arc<Shared>,
    index: usize,
    channel_index: usize,
    resp3: bool,
) -> Finished {
    let name = format!("subscriber-{index}-resp{}", if resp3 { 3 } else { 2 });
    let channel = format!("rot:channel:{channel_index}");
    let pong = if resp3 {
        Reply::status("PONG")
    } else {
        Reply::Array(vec![Reply::bulk("pong"), Reply::bulk("")])
    };
    let message = |n: u64| {
        let items = vec![
            Reply::bulk("message"),
            Reply::bulk(&channel),
            Reply::bulk(n.to_string()),
        ];
        if resp3 {
            Reply::Push(items)
        } else {
            Reply::Array(items)
        }
    };
    let mut received = 0u64;
    let mut stop_seen: Option<std::time::Instant> = None;
    loop {
        if shared.stopped() {
            let since = *stop_seen.get_or_insert_with(std::time::Instant::now);
            assert!(
                since.elapsed() < Duration::from_secs(30),
                "{name}: the publisher did not finish within 30 s of the stop"
            );
        }
        // Read before the PING: if the publisher had finished by then, all its messages
        // precede the PONG on this connection.
        let published = shared.published[channel_index].load(Ordering::SeqCst);
        c.send(&["PING"]).await;
        // Messages until the PONG.
        loop {
            let frame = c.read_frame().await;
            if frame == pong {
                break;
            }
            assert_eq!(
                frame,
                message(received + 1),
                "{name}: after {received} messages"
            );
            received += 1;
        }
        shared.tick(index);
        if published != u64::MAX {
            // The publisher has finished; everything it published arrived before this PONG.
            assert_eq!(
                received, published,
                "{name}: messages received vs published"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Leave subscribed mode and check the connection is an ordinary one again.
    c.send(&["UNSUBSCRIBE", channel.as_str()]).await;
    let confirmation = c.read_frame().await;
    let items = vec![
        Reply::bulk("unsubscribe"),
        Reply::bulk(&channel),
        Reply::Int(0),
    ];
    let want = if resp3 {
        Reply::Push(items)
    } else {
        Reply::Array(items)
    };
    assert_eq!(confirmation, want, "{name}");
    assert_eq!(c.cmd(&["PING"]).await, Reply::status("PONG"), "{name}");
    finish(name, c, id, &shared, index).await
}

/// Publishes numbered messages to every subscriber channel; each has exactly one subscriber.
async fn publisher(mut c: ProxyClient, id: i64, shared: Arc<Shared>, index: usize) -> Finished {
    let name = "publisher".to_string();
    let channels = shared.published.len();
    let mut n = 0u64;
    while !shared.stopped() {
        n += 1;
        let mut bytes = Vec::new();
        for ch in 0..channels {
            let channel = format!("rot:channel:{ch}");
            bytes.extend(support::encode_command(&[
                "PUBLISH",
                channel.as_str(),
                &n.to_string(),
            ]));
        }
        let replies = c.pipeline(&bytes, channels).await;
        assert_eq!(
            replies,
            vec![Reply::Int(1); channels],
            "{name}: message {n}"
        );
        shared.tick(index);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    for count in &shared.published {
        count.store(n, Ordering::SeqCst);
    }
    finish(name, c, id, &shared, index).await
}

/// Spends most of its time under `CLIENT REPLY OFF`, where an injected AUTH gets no reply.
async fn reply_off(mut c: ProxyClient, id: i64, shared: Arc<Shared>, index: usize) -> Finished {
    let name = "reply-off".to_string();
    let counter = "rot:reply-off";
    let mut count = 0i64;
    while !shared.stopped() {
        c.send(&["CLIENT", "REPLY", "OFF"]).await;
        for _ in 0..5 {
            c.send(&["INCR", counter]).await;
            count += 1;
            tokio::time::sleep(Duration::from_millis(4)).await;
        }
        c.send(&["CLIENT", "REPLY", "SKIP"]).await;
        c.send(&["CLIENT", "REPLY", "ON"]).await;
        assert_eq!(c.read_frame().await, Reply::ok(), "{name}: CLIENT REPLY ON");
        assert_eq!(
            c.cmd(&["GET", counter]).await,
            Reply::bulk(count.to_string()),
            "{name}"
        );
        c.send(&["CLIENT", "REPLY", "SKIP"]).await;
        c.send(&["INCR", counter]).await;
        count += 1;
        assert_eq!(
            c.cmd(&["ECHO", "after-skip"]).await,
            Reply::bulk("after-skip"),
            "{name}"
        );
        assert_eq!(c.buffered(), 0, "{name}: an unexpected reply");
        shared.tick(index);
    }
    finish(name, c, id, &shared, index).await
}

/// Sends RESET now and then (which logs the connection out upstream) and checks that the
/// next commands still run as a token's user, in RESP2, in database 0.
async fn resetter(mut c: ProxyClient, id: i64, shared: Arc<Shared>, index: usize) -> Finished {
    let name = "resetter".to_string();
    let key = "rot:reset";
    let mut round = 0u64;
    while !shared.stopped() {
        round += 1;
        let value = format!("r{round}");
        if round % 2 == 0 {
            assert!(
                matches!(c.cmd(&["HELLO", "3"]).await, Reply::Map(_)),
                "{name}"
            );
        }
        assert_eq!(c.cmd(&["SELECT", "5"]).await, Reply::ok(), "{name}");
        assert_eq!(
            c.cmd(&["SET", key, value.as_str()]).await,
            Reply::ok(),
            "{name}"
        );
        assert_eq!(
            c.cmd(&["CLIENT", "SETNAME", "resetter"]).await,
            Reply::ok(),
            "{name}"
        );
        assert_eq!(c.cmd(&["RESET"]).await, Reply::status("RESET"), "{name}");
        assert_eq!(c.protocol, Protocol::Resp2);
        let whoami = c.cmd(&["ACL", "WHOAMI"]).await;
        assert!(
            shared.is_issued_oid(&whoami),
            "{name}: ACL WHOAMI after RESET = {whoami:?}"
        );
        assert_eq!(c.cmd(&["CLIENT", "GETNAME"]).await, Reply::Null, "{name}");
        assert_eq!(
            c.cmd(&["GET", key]).await,
            Reply::Null,
            "{name}: RESET selects db 0"
        );
        assert_eq!(c.cmd(&["SELECT", "5"]).await, Reply::ok(), "{name}");
        assert_eq!(c.cmd(&["GET", key]).await, Reply::bulk(&value), "{name}");
        shared.tick(index);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    finish(name, c, id, &shared, index).await
}

/// Waits for every worker (each within a deadline) and re-raises the first worker's panic.
/// Waits (30 s at most) until every worker has made two more steps of progress.
async fn all_progress(shared: &Arc<Shared>) -> bool {
    let before: Vec<u64> = shared
        .progress
        .iter()
        .map(|p| p.load(Ordering::SeqCst))
        .collect();
    support::wait_until(Duration::from_secs(30), || {
        let shared = shared.clone();
        let before = before.clone();
        async move {
            shared
                .progress
                .iter()
                .zip(&before)
                .all(|(p, b)| p.load(Ordering::SeqCst) >= b + 2)
        }
    })
    .await
}

async fn join_all(handles: Vec<tokio::task::JoinHandle<Finished>>) -> Vec<Finished> {
    let mut finished = Vec::new();
    let mut first_panic = None;
    let mut hung = 0;
    for h in handles {
        let abort = h.abort_handle();
        match tokio::time::timeout(Duration::from_secs(60), h).await {
            Ok(Ok(f)) => finished.push(f),
            Ok(Err(e)) if e.is_panic() => {
                first_panic.get_or_insert(e.into_panic());
            }
            Ok(Err(e)) => panic!("a worker was cancelled: {e}"),
            Err(_) => {
                abort.abort();
                hung += 1;
            }
        }
    }
    if let Some(p) = first_panic {
        std::panic::resume_unwind(p);
    }
    assert_eq!(
        hung, 0,
        "{hung} worker(s) did not finish within 60 s of the stop"
    );
    finished
}

/// Blocks in BLPOP (timing out empty, or popping what it pushed) while tokens rotate.
async fn blocker(mut c: ProxyClient, id: i64, shared: Arc<Shared>, index: usize) -> Finished {
    let name = "blocker".to_string();
    let list = "rot:block";
    let mut round = 0u64;
    while !shared.stopped() {
        round += 1;
        assert_eq!(
            c.cmd(&["BLPOP", list, "0.05"]).await,
            Reply::Null,
            "{name}: BLPOP on an empty list times out"
        );
        let value = format!("b{round}");
        assert_eq!(
            c.cmd(&["RPUSH", list, value.as_str()]).await,
            Reply::Int(1),
            "{name}"
        );
        assert_eq!(
            c.cmd(&["BLPOP", list, "1"]).await,
            Reply::bulks(&[list, &value]),
            "{name}"
        );
        shared.tick(index);
    }
    finish(name, c, id, &shared, index).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_rotations_under_load_keep_every_connection() {
    let server = RedisServer::start().await;
    let mut rotator = Rotator::new(&server).await;
    let proxy = Proxy::start(
        &support::proxy_args(&server, &rotator.file.path),
        "entra_redis_proxy=debug",
    )
    .await;

    let subscribers = RESP3_SUBSCRIBERS + RESP2_SUBSCRIBERS;
    let workers = PIPELINED_CLIENTS + MULTI_CLIENTS + subscribers + 4;
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        oids: Mutex::new(HashSet::from([rotator.current.oid.clone()])),
        progress: (0..workers).map(|_| AtomicU64::new(0)).collect(),
        published: (0..subscribers).map(|_| AtomicU64::new(u64::MAX)).collect(),
    });

    // Connect everything first and note each upstream connection's id.
    let mut handles = Vec::new();
    let mut initial_ids = BTreeSet::new();
    let mut index = 0;
    let mut next = || {
        index += 1;
        index - 1
    };
    for _ in 0..PIPELINED_CLIENTS {
        let mut c = proxy.client().await;
        let id = client_id(&mut c).await;
        initial_ids.insert(id);
        handles.push(tokio::spawn(pipelined(c, id, shared.clone(), next())));
    }
    for _ in 0..MULTI_CLIENTS {
        let mut c = proxy.client().await;
        let id = client_id(&mut c).await;
        initial_ids.insert(id);
        handles.push(tokio::spawn(transactions(c, id, shared.clone(), next())));
    }
    for ch in 0..subscribers {
        let resp3 = ch < RESP3_SUBSCRIBERS;
        let mut c = proxy.client().await;
        let id = client_id(&mut c).await;
        initial_ids.insert(id);
        if resp3 {
            assert!(matches!(c.cmd(&["HELLO", "3"]).await, Reply::Map(_)));
        }
        let channel = format!("rot:channel:{ch}");
        let confirmation = c.cmd(&["SUBSCRIBE", channel.as_str()]).await;
        let items = vec![
            Reply::bulk("subscribe"),
            Reply::bulk(&channel),
            Reply::Int(1),
        ];
        let want = if resp3 {
            Reply::Push(items)
        } else {
            Reply::Array(items)
        };
        assert_eq!(confirmation, want);
        handles.push(tokio::spawn(subscriber(
            c,
            id,
            shared.clone(),
            next(),
            ch,
            resp3,
        )));
    }
    {
        let mut c = proxy.client().await;
        let id = client_id(&mut c).await;
        initial_ids.insert(id);
        handles.push(tokio::spawn(publisher(c, id, shared.clone(), next())));
        let mut c = proxy.client().await;
        let id = client_id(&mut c).await;
        initial_ids.insert(id);
        handles.push(tokio::spawn(reply_off(c, id, shared.clone(), next())));
        let mut c = proxy.client().await;
        let id = client_id(&mut c).await;
        initial_ids.insert(id);
        handles.push(tokio::spawn(resetter(c, id, shared.clone(), next())));
        let mut c = proxy.client().await;
        let id = client_id(&mut c).await;
        initial_ids.insert(id);
        handles.push(tokio::spawn(blocker(c, id, shared.clone(), next())));
    }
    assert_eq!(index, workers);
    assert_eq!(
        initial_ids.len(),
        workers,
        "one upstream connection per client"
    );

    for rotation in 1..=ROTATIONS {
        // Let every worker make progress between two rotations.
        let progressed = all_progress(&shared).await;
        if !progressed || handles.iter().any(|h| h.is_finished()) {
            // A worker failed (or stalled): stop and report its panic.
            shared.stop.store(true, Ordering::SeqCst);
            join_all(handles).await;
            panic!("before rotation {rotation}: a worker made no progress within 30 s");
        }
        // A new oid is legitimate as soon as it is minted (before the file names it).
        let rotate = rotator.rotate_with(workers, |token| {
            shared.oids.lock().unwrap().insert(token.oid.clone());
        });
        if let Err(e) = rotate.await {
            shared.stop.store(true, Ordering::SeqCst);
            panic!("rotation {rotation}: {e}");
        }
    }

    // Traffic after the last rotation, then stop.
    let progressed = all_progress(&shared).await;
    shared.stop.store(true, Ordering::SeqCst);
    let finished = join_all(handles).await;
    assert!(
        progressed,
        "a worker made no progress after the last rotation"
    );
    for f in &finished {
        assert!(
            f.rounds >= 2 * ROTATIONS as u64,
            "{} ran only {} rounds",
            f.name,
            f.rounds
        );
    }

    // The cache sees exactly the original connections, all on the last token's user.
    let final_ids: BTreeSet<i64> = finished.iter().map(|f| f.client_id).collect();
    assert_eq!(final_ids, initial_ids);
    let clients = rotator.admin.client_list().await;
    let on_current: BTreeSet<i64> = clients
        .iter()
        .filter(|c| c.user == rotator.current.oid)
        .map(|c| c.id as i64)
        .collect();
    assert_eq!(on_current, initial_ids, "CLIENT LIST: {clients:?}");
    assert_eq!(rotator.issued.len(), ROTATIONS + 1);
    // Every expired token's user is gone, as Azure's expiry would have it.
    let users = rotator.admin.cmd(&["ACL", "USERS"]).await;
    let mut want = vec![
        Reply::bulk(support::ADMIN_USER),
        Reply::bulk(&rotator.current.oid),
    ];
    want.sort_by_key(|r| r.text());
    match users {
        Reply::Array(mut users) => {
            users.retain(|u| u.text().as_deref() != Some("default"));
            users.sort_by_key(|r| r.text());
            assert_eq!(users, want);
        }
        other => panic!("ACL USERS: {other:?}"),
    }
    drop(proxy);
    drop(server);
}

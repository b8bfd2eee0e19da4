//! Bad input (issue 7): malformed RESP, oversized frames, slow and half-closed clients, clients
//! that never read, and connection churn, all against a real TLS redis-server through the
//! proxy. Each bad client gets redis-server's `-ERR Protocol error...` and is closed, while
//! another client's traffic goes on untouched; the proxy's memory and file descriptors stay
//! bounded.

use test_harness as support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

/// A server, a token, and the proxy in front of them.
struct Setup {
    _server: RedisServer,
    _rotator: Rotator,
    proxy: Proxy,
}

async fn setup() -> Setup {
    let server = RedisServer::start().await;
    let rotator = Rotator::new(&server).await;
    let proxy = Proxy::start(&proxy_args(&server, &rotator.file.path), "info").await;
    Setup {
        _server: server,
        _rotator: rotator,
        proxy,
    }
}

/// A client doing SET/GET round trips until stopped; counts them and records anything wrong.
struct Bystander {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Bystander {
    async fn start(proxy: &Proxy) -> Bystander {
        let mut client = proxy.client().await;
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (s, o, e) = (stop.clone(), ops.clone(), errors.clone());
        let task = tokio::spawn(async move {
            let mut i = 0u64;
            while !s.load(Ordering::SeqCst) {
                let value = format!("v{i}");
                let set = client.try_cmd(&["SET", "bystander", &value]).await;
                let get = client.try_cmd(&["GET", "bystander"]).await;
                match (set, get) {
                    (Ok(set), Ok(get)) if set == Reply::ok() && get == Reply::bulk(&value) => {}
                    other => {
                        e.lock().unwrap().push(format!("round trip {i}: {other:?}"));
                        return;
                    }
                }
                i += 1;
                o.store(i, Ordering::SeqCst);
            }
        });
        Bystander {
            stop,
            ops,
            errors,
            task,
        }
    }

    /// Waits for `n` more round trips (the bystander is making progress now).
    async fn progresses(&self, n: u64) {
        let target = self.ops.load(Ordering::SeqCst) + n;
        let ok = wait_until(Duration::from_secs(20), || async {
            self.ops.load(Ordering::SeqCst) >= target || !self.errors.lock().unwrap().is_empty()
        })
        .await;
        assert!(ok, "the bystander made no progress");
        let errors = self.errors.lock().unwrap().clone();
        assert!(errors.is_empty(), "the bystander saw: {errors:?}");
    }

    async fn finish(self) -> u64 {
        self.progresses(10).await;
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("bystander task");
        let errors = self.errors.lock().unwrap().clone();
        assert!(errors.is_empty(), "the bystander saw: {errors:?}");
        self.ops.load(Ordering::SeqCst)
    }
}

/// Sends `bytes` on a fresh connection and returns every frame until the proxy closes it.
async fn replies_until_closed(proxy: &Proxy, bytes: &[u8]) -> Vec<Reply> {
    let mut client = proxy.client().await;
    // The proxy may close before it has read everything; a failed write is fine then.
    let _ = client.send_raw(bytes).await;
    client.read_until_closed().await
}

fn protocol_error(reply: &Reply) -> bool {
    matches!(reply, Reply::Error(e) if e.starts_with("ERR Protocol error"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_commands_get_a_protocol_error_and_are_closed() {
    let s = setup().await;
    let bystander = Bystander::start(&s.proxy).await;
    bystander.progresses(10).await;

    let nested = {
        let mut v = Vec::new();
        for _ in 0..100_000 {
            v.extend_from_slice(b"*1\r\n");
        }
        v
    };
    let mut long_inline = b"SET k ".to_vec();
    long_inline.resize(3 * 1024 * 1024, b'a');
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "oversized bulk length",
            b"*2\r\n$3\r\nGET\r\n$536870913\r\n".to_vec(),
            "invalid bulk length",
        ),
        (
            "negative bulk length",
            b"*2\r\n$3\r\nGET\r\n$-5\r\nk\r\n".to_vec(),
            "invalid bulk length",
        ),
        (
            "bulk length that is not a number",
            b"*1\r\n$x1\r\nPING\r\n".to_vec(),
            "invalid bulk length",
        ),
        (
            "multibulk length that is not a number",
            b"*abc\r\n".to_vec(),
            "invalid multibulk length",
        ),
        (
            "too many arguments",
            b"*2000000000\r\n".to_vec(),
            "invalid multibulk length",
        ),
        (
            "array element that is an integer",
            b"*2\r\n$3\r\nGET\r\n:1\r\n".to_vec(),
            "expected '$', got ':'",
        ),
        (
            "array element that is a simple string",
            b"*1\r\n+PING\r\n".to_vec(),
            "expected '$', got '+'",
        ),
        ("deeply nested aggregates", nested, "expected '$', got '*'"),
        (
            "multi-megabyte inline line",
            long_inline,
            "too big inline request",
        ),
        (
            "unbalanced quotes inline",
            b"SET k \"abc\r\n".to_vec(),
            "unbalanced quotes in request",
        ),
        (
            "binary garbage after a command",
            b"*1\r\n$4\r\nPING\r\n*\xff\xfe\r\n".to_vec(),
            "invalid multibulk length",
        ),
    ];
    for (what, bytes, message) in &cases {
        // A valid command before the bad bytes is answered first.
        let mut input = encode_command(&["ECHO", "before"]);
        input.extend_from_slice(bytes);
        let replies = replies_until_closed(&s.proxy, &input).await;
        assert_eq!(
            replies.first(),
            Some(&Reply::bulk("before")),
            "{what}: the command before the bad bytes"
        );
        let rest = &replies[1..];
        assert!(
            rest.iter().any(protocol_error),
            "{what}: no protocol error, got {rest:?}"
        );
        let last = rest.last().expect("an error reply");
        assert!(
            protocol_error(last) && last.text().unwrap_or_default().contains(message),
            "{what}: the last reply before the close is {last:?}, want `{message}`"
        );
        bystander.progresses(5).await;
    }
    let ops = bystander.finish().await;
    eprintln!(
        "bad input: {} malformed clients closed, bystander did {ops} round trips meanwhile",
        cases.len()
    );
}

/// `*0`, `*-1` and empty lines are ignored by redis-server (no reply), and so by the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_negative_multibulk_are_ignored() {
    let s = setup().await;
    let mut c = s.proxy.client().await;
    c.send_raw(b"*0\r\n*-1\r\n*-7\r\n\r\n\n").await.unwrap();
    assert_eq!(c.cmd(&["PING"]).await, Reply::status("PONG"));
    assert_eq!(c.buffered(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_at_a_time_still_gets_correct_replies() {
    let s = setup().await;
    let bystander = Bystander::start(&s.proxy).await;
    let mut bytes = encode_command(&["SET", "trickle", "hello\r\nworld"]);
    bytes.extend_from_slice(&encode_command(&["GET", "trickle"]));
    bytes.extend_from_slice(b"PING\r\n");
    bytes.extend_from_slice(b"ECHO \"a b\"\r\n");
    bytes.extend_from_slice(&encode_command(&["HELLO", "3"]));
    bytes.extend_from_slice(&encode_command(&["SUBSCRIBE", "t"]));
    bytes.extend_from_slice(&encode_command(&["UNSUBSCRIBE", "t"]));
    let tcp = TcpStream::connect(s.proxy.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut client = RespClient::new(tcp);
    for b in &bytes {
        client.send_raw(std::slice::from_ref(b)).await.unwrap();
        // Pacing, so that each byte is a segment of its own.
        tokio::time::sleep(Duration::from_micros(300)).await;
    }
    assert_eq!(client.read_frame().await, Reply::ok());
    assert_eq!(client.read_frame().await, Reply::bulk("hello\r\nworld"));
    assert_eq!(client.read_frame().await, Reply::status("PONG"));
    assert_eq!(client.read_frame().await, Reply::bulk("a b"));
    client.protocol = Protocol::Resp3;
    assert!(matches!(client.read_frame().await, Reply::Map(_)));
    assert_eq!(
        client.read_frame().await,
        Reply::Push(vec![
            Reply::bulk("subscribe"),
            Reply::bulk("t"),
            Reply::Int(1)
        ])
    );
    assert_eq!(
        client.read_frame().await,
        Reply::Push(vec![
            Reply::bulk("unsubscribe"),
            Reply::bulk("t"),
            Reply::Int(0)
        ])
    );
    bystander.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closed_client_gets_all_its_replies() {
    let s = setup().await;
    let mut tcp = TcpStream::connect(s.proxy.addr).await.unwrap();
    let mut bytes = Vec::new();
    for _ in 0..2000 {
        bytes.extend_from_slice(&encode_command(&["INCR", "half"]));
    }
    bytes.extend_from_slice(&encode_command(&["GET", "half"]));
    tcp.write_all(&bytes).await.unwrap();
    tcp.shutdown().await.unwrap(); // FIN: no more commands
    let mut client = RespClient::new(tcp);
    let replies = client.read_until_closed().await;
    assert_eq!(
        replies.len(),
        2001,
        "every command answered before the close"
    );
    assert_eq!(replies[1999], Reply::Int(2000));
    assert_eq!(replies[2000], Reply::bulk("2000"));
}

// ---------------------------------------------------------------------------------------------
// The proxy process, seen from /proc
// ---------------------------------------------------------------------------------------------

/// Resident set size in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_never_reads_keeps_proxy_memory_bounded() {
    let s = setup().await;
    let pid = pid_listening_on(s.proxy.addr.port());
    let mut setter = s.proxy.client().await;
    let value = vec![b'x'; 16 * 1024];
    assert_eq!(
        setter.cmd(&[b"SET".as_slice(), b"big", &value]).await,
        Reply::ok()
    );
    let before = rss_kib(pid);

    // 40,000 GETs of a 16 KiB value: 640 MB of replies that nobody reads.
    let mut tcp = TcpStream::connect(s.proxy.addr).await.unwrap();
    let chunk: Vec<u8> = (0..1000)
        .flat_map(|_| encode_command(&["GET", "big"]))
        .collect();
    let mut written = 0usize;
    let mut blocked = false;
    for _ in 0..40 {
        match tokio::time::timeout(Duration::from_secs(3), tcp.write_all(&chunk)).await {
            Ok(Ok(())) => written += 1000,
            Ok(Err(e)) => panic!("write: {e}"),
            Err(_) => {
                blocked = true; // back-pressure: the proxy stopped reading this client
                break;
            }
        }
    }
    // Watch the proxy's memory for a while as the cache keeps answering.
    let mut peak = 0;
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        peak = peak.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let growth_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "never-reading client: {written} GETs written (writes blocked: {blocked}), proxy RSS \
         {before} KiB before, peak {peak} KiB (+{growth_mib} MiB)"
    );
    assert!(
        growth_mib < 64,
        "the proxy buffered replies nobody reads: RSS grew by {growth_mib} MiB"
    );

    // Others are served meanwhile, and the stuck client can still read everything.
    assert_eq!(setter.cmd(&["PING"]).await, Reply::status("PONG"));
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0usize;
    let want = written * (16 * 1024 + 11);
    while total < want.min(8 << 20) {
        let n = tokio::time::timeout(IO_TIMEOUT, tcp.read(&mut buf))
            .await
            .expect("replies flow again once the client reads")
            .expect("read");
        assert!(n > 0, "closed after {total} bytes");
        total += n;
    }
    drop(tcp);
    assert_eq!(setter.cmd(&["PING"]).await, Reply::status("PONG"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_connections_opened_and_dropped_leave_the_proxy_healthy() {
    let s = setup().await;
    let pid = pid_listening_on(s.proxy.addr.port());
    let baseline = fd_count(pid);
    let addr = s.proxy.addr;
    let mut handled = 0usize;
    for round in 0..40 {
        let mut tasks = Vec::new();
        for i in 0..50usize {
            tasks.push(tokio::spawn(async move {
                let mut tcp = TcpStream::connect(addr).await.expect("connect");
                match (round * 50 + i) % 4 {
                    // Dropped at once.
                    0 => {}
                    // A full round trip.
                    1 => {
                        tcp.write_all(b"PING\r\n").await.unwrap();
                        let mut b = [0u8; 7];
                        tokio::time::timeout(IO_TIMEOUT, tcp.read_exact(&mut b))
                            .await
                            .expect("PONG in time")
                            .expect("read PONG");
                        assert_eq!(&b, b"+PONG\r\n");
                    }
                    // Half a command, then gone.
                    2 => {
                        let _ = tcp.write_all(b"*2\r\n$3\r\nGET\r\n$10\r\nab").await;
                    }
                    // A command whose reply is never read.
                    _ => {
                        let _ = tcp.write_all(b"*1\r\n$4\r\nPING\r\n").await;
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("connection task");
            handled += 1;
        }
    }
    assert_eq!(handled, 2000);
    let mut last = fd_count(pid);
    let settled = wait_until(Duration::from_secs(30), || {
        last = fd_count(pid);
        let l = last;
        async move { l <= baseline + 4 }
    })
    .await;
    assert!(
        settled,
        "proxy fds: {baseline} before, still {last} after 2,000 dropped connections"
    );
    let mut c = s.proxy.client().await;
    assert_eq!(c.cmd(&["PING"]).await, Reply::status("PONG"));
    assert!(c.cmd(&["SET", "after", "churn"]).await == Reply::ok());
    eprintln!("churn: 2000 connections, proxy fds {baseline} before, {last} after");
}

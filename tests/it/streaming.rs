//! Large values stream through the proxy (issue 13, part 4): values around the streaming
//! threshold and far above it go through byte for byte in both directions, RESP2 and RESP3,
//! inside arrays and maps, pipelined with small commands, for several clients at once; the
//! proxy's memory stays bounded whatever the value's size, a client that stops reading still
//! stops the cache side, the bulk limit still refuses, and a re-AUTH waits for the end of a
//! streaming command. Against a real TLS redis-server, through the proxy binary.

use test_harness as support;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::raw_conn::RawConn;
use support::*;

/// The proxy's streaming threshold (`src/session/stream.rs`).
const THRESHOLD: usize = 64 * 1024;
const MIB: usize = 1024 * 1024;

struct Setup {
    _server: RedisServer,
    rotator: Rotator,
    proxy: Proxy,
    pid: u32,
}

async fn setup_with(extra: &[&str]) -> Setup {
    let server = RedisServer::start().await;
    let rotator = Rotator::new(&server).await;
    let mut args = proxy_args(&server, &rotator.file.path);
    args.extend(extra.iter().map(|s| s.to_string()));
    let proxy = Proxy::start(&args, "info").await;
    let pid = pid_listening_on(proxy.addr.port());
    let mut admin = server.admin().await;
    // 64 MiB values and more than one of them at once.
    admin
        .cmd(&["CONFIG", "SET", "client-query-buffer-limit", "1gb"])
        .await;
    Setup {
        _server: server,
        rotator,
        proxy,
        pid,
    }
}

async fn setup() -> Setup {
    setup_with(&[]).await
}

/// A value whose bytes depend on its length and a seed (and include CR and LF).
fn value(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 * 31 + seed as u64) as u8 ^ (i >> 12) as u8)
        .collect()
}

fn bulk_bytes(v: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", v.len()).into_bytes();
    out.extend_from_slice(v);
    out.extend_from_slice(b"\r\n");
    out
}

/// Sends `GET key` on a raw connection and checks the reply byte for byte, then that nothing
/// follows it (the next reply is PING's).
async fn get_exact(tcp: &mut TcpStream, key: &str, want: &[u8]) {
    tcp.write_all(&encode_command(&["GET", key])).await.unwrap();
    let expected = bulk_bytes(want);
    let mut got = vec![0u8; expected.len()];
    tokio::time::timeout(IO_TIMEOUT, tcp.read_exact(&mut got))
        .await
        .expect("GET reply in time")
        .expect("read the GET reply");
    assert!(
        got == expected,
        "GET {key}: {} bytes differ from the value's {} (first difference at {:?})",
        got.len(),
        expected.len(),
        got.iter().zip(&expected).position(|(a, b)| a != b)
    );
    tcp.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
    let mut pong = [0u8; 7];
    tokio::time::timeout(IO_TIMEOUT, tcp.read_exact(&mut pong))
        .await
        .expect("PONG in time")
        .expect("read PONG");
    assert_eq!(&pong, b"+PONG\r\n", "after GET {key}");
}

async fn set_raw(tcp: &mut TcpStream, key: &str, v: &[u8]) {
    let cmd = encode_command(&[b"SET".as_slice(), key.as_bytes(), v]);
    tcp.write_all(&cmd).await.unwrap();
    let mut ok = [0u8; 5];
    tokio::time::timeout(IO_TIMEOUT, tcp.read_exact(&mut ok))
        .await
        .expect("SET reply in time")
        .expect("read +OK");
    assert_eq!(&ok, b"+OK\r\n", "SET {key} ({} bytes)", v.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_around_the_threshold_and_large_round_trip_byte_for_byte() {
    let s = setup().await;
    let sizes = [
        THRESHOLD - 1,
        THRESHOLD,
        THRESHOLD + 1,
        2 * THRESHOLD + 7,
        MIB,
        64 * MIB,
    ];
    for resp3 in [false, true] {
        let mut tcp = TcpStream::connect(s.proxy.addr).await.unwrap();
        if resp3 {
            tcp.write_all(&encode_command(&["HELLO", "3"]))
                .await
                .unwrap();
            let mut c = RespClient::new(&mut tcp);
            c.protocol = Protocol::Resp3;
            assert!(matches!(c.read_frame().await, Reply::Map(_)));
            assert_eq!(c.buffered(), 0);
        }
        for (i, &len) in sizes.iter().enumerate() {
            let v = value(len, i as u8 + resp3 as u8 * 16);
            let key = format!("k{len}");
            set_raw(&mut tcp, &key, &v).await;
            get_exact(&mut tcp, &key, &v).await;
        }
    }
    // What the client sent is what the cache stored.
    let mut c = s.proxy.client().await;
    assert_eq!(
        c.cmd(&["STRLEN", &format!("k{}", 64 * MIB)]).await,
        Reply::Int(64 * MIB as i64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_inside_arrays_and_maps_in_resp2_and_resp3() {
    let s = setup().await;
    let big = value(3 * MIB + 5, 1);
    let mid = value(THRESHOLD + 1, 2);
    let small = b"small".to_vec();
    let mut c = s.proxy.client().await;
    c.timeout = Duration::from_secs(60);
    assert_eq!(c.cmd(&[b"SET".as_slice(), b"a", &big]).await, Reply::ok());
    assert_eq!(c.cmd(&[b"SET".as_slice(), b"b", &small]).await, Reply::ok());
    assert_eq!(c.cmd(&[b"SET".as_slice(), b"c", &mid]).await, Reply::ok());
    assert_eq!(
        c.cmd(&[b"RPUSH".as_slice(), b"list", &mid, &small, &big])
            .await,
        Reply::Int(3)
    );
    assert_eq!(
        c.cmd(&[b"HSET".as_slice(), b"hash", b"f1", &big, b"f2", &small])
            .await,
        Reply::Int(2)
    );
    for resp3 in [false, true] {
        if resp3 {
            assert!(matches!(c.cmd(&["HELLO", "3"]).await, Reply::Map(_)));
        }
        assert_eq!(
            c.cmd(&["MGET", "a", "missing", "b", "c"]).await,
            Reply::Array(vec![
                Reply::Bulk(big.clone()),
                Reply::Null,
                Reply::Bulk(small.clone()),
                Reply::Bulk(mid.clone()),
            ])
        );
        assert_eq!(
            c.cmd(&["LRANGE", "list", "0", "-1"]).await,
            Reply::Array(vec![
                Reply::Bulk(mid.clone()),
                Reply::Bulk(small.clone()),
                Reply::Bulk(big.clone()),
            ])
        );
        let pairs = match c.cmd(&["HGETALL", "hash"]).await {
            Reply::Map(m) if resp3 => m,
            Reply::Array(a) if !resp3 => {
                a.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect()
            }
            other => panic!("HGETALL (RESP3: {resp3}): {other:?}"),
        };
        let mut pairs: Vec<(Reply, Reply)> = pairs;
        pairs.sort_by_key(|(k, _)| format!("{k:?}"));
        assert_eq!(
            pairs,
            vec![
                (Reply::bulk("f1"), Reply::Bulk(big.clone())),
                (Reply::bulk("f2"), Reply::Bulk(small.clone())),
            ]
        );
        assert_eq!(c.buffered(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_commands_and_replies_pipelined_with_small_ones() {
    let s = setup().await;
    let big = value(5 * MIB + 3, 3);
    let mid = value(THRESHOLD, 4);
    let mut pipeline = Vec::new();
    pipeline.extend(encode_command(&["SET", "small", "1"]));
    pipeline.extend(encode_command(&[b"SET".as_slice(), b"big", &big]));
    pipeline.extend(encode_command(&["INCR", "small"]));
    pipeline.extend(encode_command(&["GET", "big"]));
    pipeline.extend(encode_command(&["GET", "small"]));
    pipeline.extend(encode_command(&[b"SET".as_slice(), b"mid", &mid]));
    pipeline.extend(encode_command(&["GET", "big"]));
    pipeline.extend(encode_command(&["GET", "mid"]));
    pipeline.extend(encode_command(&["PING"]));
    pipeline.extend(encode_command(&["STRLEN", "big"]));
    let mut c = s.proxy.client().await;
    c.timeout = Duration::from_secs(60);
    let replies = c.pipeline(&pipeline, 10).await;
    assert_eq!(
        replies,
        vec![
            Reply::ok(),
            Reply::ok(),
            Reply::Int(2),
            Reply::Bulk(big.clone()),
            Reply::bulk("2"),
            Reply::ok(),
            Reply::Bulk(big.clone()),
            Reply::Bulk(mid.clone()),
            Reply::status("PONG"),
            Reply::Int(big.len() as i64),
        ]
    );
    assert_eq!(c.buffered(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_clients_move_large_values_at_once() {
    let s = setup().await;
    let addr = s.proxy.addr;
    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            tokio::spawn(async move {
                let mut tcp = TcpStream::connect(addr).await.unwrap();
                for round in 0..3u8 {
                    let v = value(2 * MIB + i as usize * 1000 + round as usize, i * 8 + round);
                    let key = format!("client{i}");
                    set_raw(&mut tcp, &key, &v).await;
                    get_exact(&mut tcp, &key, &v).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a client's round trips");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_set_then_get_keeps_the_proxy_memory_small() {
    let s = setup().await;
    // Warm the proxy up (first-use allocations) before measuring.
    let mut tcp = TcpStream::connect(s.proxy.addr).await.unwrap();
    let warm = value(2 * MIB, 9);
    set_raw(&mut tcp, "warm", &warm).await;
    get_exact(&mut tcp, "warm", &warm).await;
    let before = rss_kib(s.pid);
    let sampler = RssSampler::start(s.pid);
    let v = value(64 * MIB, 5);
    set_raw(&mut tcp, "v", &v).await;
    get_exact(&mut tcp, "v", &v).await;
    let peak = sampler.stop().await;
    let growth_kib = peak.saturating_sub(before);
    eprintln!(
        "64 MiB SET + GET: proxy RSS {before} KiB before, peak {peak} KiB (+{growth_kib} KiB)"
    );
    assert!(
        growth_kib < 8 * 1024,
        "the proxy held the value: RSS grew by {growth_kib} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_a_large_reply_stops_the_cache_side() {
    let s = setup().await;
    let v = value(32 * MIB, 6);
    let mut setter = TcpStream::connect(s.proxy.addr).await.unwrap();
    set_raw(&mut setter, "v", &v).await;
    get_exact(&mut setter, "v", &v).await;
    let before = rss_kib(s.pid);
    let sampler = RssSampler::start(s.pid);

    // Eight GETs (256 MiB of replies) nobody reads for a while.
    let mut stuck = TcpStream::connect(s.proxy.addr).await.unwrap();
    for _ in 0..8 {
        stuck
            .write_all(&encode_command(&["GET", "v"]))
            .await
            .unwrap();
    }
    // Others are served meanwhile, large values included.
    let small = value(1000, 1);
    let mid = value(MIB, 2);
    for i in 0..20 {
        set_raw(&mut setter, &format!("other{i}"), &small).await;
        get_exact(&mut setter, &format!("other{i}"), &small).await;
    }
    set_raw(&mut setter, "mid", &mid).await;
    get_exact(&mut setter, "mid", &mid).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let peak = sampler.stop().await;
    let growth_kib = peak.saturating_sub(before);
    eprintln!("stuck reader: proxy RSS {before} KiB before, peak {peak} KiB (+{growth_kib} KiB)");
    assert!(
        growth_kib < 16 * 1024,
        "the proxy buffered the replies nobody reads: RSS grew by {growth_kib} KiB"
    );

    // Once it reads, every reply arrives whole and in order.
    let expected = bulk_bytes(&v);
    let mut got = vec![0u8; expected.len()];
    for i in 0..8 {
        tokio::time::timeout(IO_TIMEOUT, stuck.read_exact(&mut got))
            .await
            .expect("the replies flow again")
            .expect("read a reply");
        assert!(got == expected, "reply {i} differs");
    }
    get_exact(&mut stuck, "mid", &mid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_writer_sends_a_64_mib_set_in_small_pieces() {
    let s = setup().await;
    let v = value(64 * MIB, 7);
    let cmd = encode_command(&[b"SET".as_slice(), b"slow", &v]);
    let mut writer = TcpStream::connect(s.proxy.addr).await.unwrap();
    writer.set_nodelay(true).unwrap();
    let mut bystander = s.proxy.client().await;
    let before = rss_kib(s.pid);
    let sampler = RssSampler::start(s.pid);
    let mut sent = 0;
    let mut piece = 1usize;
    let mut n = 0u32;
    while sent < cmd.len() {
        let end = (sent + piece).min(cmd.len());
        writer.write_all(&cmd[sent..end]).await.unwrap();
        sent = end;
        n += 1;
        // Pieces from 1 byte to 64 KiB, a pause now and then.
        piece = (piece * 7 + 13) % (64 * 1024) + 1;
        if n % 64 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
            if n % 1024 == 0 {
                assert_eq!(bystander.cmd(&["PING"]).await, Reply::status("PONG"));
            }
        }
    }
    let mut ok = [0u8; 5];
    tokio::time::timeout(IO_TIMEOUT, writer.read_exact(&mut ok))
        .await
        .expect("SET reply in time")
        .expect("read +OK");
    assert_eq!(&ok, b"+OK\r\n");
    let peak = sampler.stop().await;
    let growth_kib = peak.saturating_sub(before);
    eprintln!("slow 64 MiB SET in {n} pieces: proxy RSS {before} KiB before, peak {peak} KiB (+{growth_kib} KiB)");
    assert!(
        growth_kib < 8 * 1024,
        "the proxy held the command: RSS grew by {growth_kib} KiB"
    );
    get_exact(&mut writer, "slow", &v).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bulk_limit_still_refuses_large_values_in_both_directions() {
    let s = setup_with(&["--max-bulk-len", &(MIB).to_string()]).await;
    let mut c = s.proxy.client().await;
    // Up to the limit, values stream as usual.
    let at_limit = value(MIB, 1);
    assert_eq!(
        c.cmd(&[b"SET".as_slice(), b"a", &at_limit]).await,
        Reply::ok()
    );
    assert_eq!(c.cmd(&["GET", "a"]).await, Reply::Bulk(at_limit.clone()));
    // One more byte from the client: redis-server's protocol error, and the connection closes,
    // after the reply to the command before it.
    let mut input = encode_command(&["ECHO", "before"]);
    input.extend(encode_command(&[
        b"SET".as_slice(),
        b"b",
        &value(MIB + 1, 2),
    ]));
    let mut refused = s.proxy.client().await;
    let _ = refused.send_raw(&input).await;
    let replies = refused.read_until_closed().await;
    assert_eq!(replies.first(), Some(&Reply::bulk("before")));
    assert!(
        matches!(replies.last(), Some(Reply::Error(e)) if e.contains("Protocol error: invalid bulk length")),
        "{replies:?}"
    );
    // Streaming has begun when the bad length comes: a later argument over the limit.
    let mut input = encode_command(&["ECHO", "before"]);
    let ok_part = value(MIB - 10, 3);
    input.extend_from_slice(b"*5\r\n$4\r\nMSET\r\n$1\r\nx\r\n");
    input.extend(bulk_bytes(&ok_part));
    input.extend_from_slice(b"$1\r\ny\r\n$1048577\r\n");
    let mut refused = s.proxy.client().await;
    let _ = refused.send_raw(&input).await;
    let replies = refused.read_until_closed().await;
    assert_eq!(replies.first(), Some(&Reply::bulk("before")));
    assert!(
        matches!(replies.last(), Some(Reply::Error(e)) if e.contains("Protocol error: invalid bulk length")),
        "{replies:?}"
    );
    // A value over the limit from the cache closes that client only.
    let mut admin = s._server.admin().await;
    admin
        .cmd(&[b"SET".as_slice(), b"huge", &value(MIB + 1, 4)])
        .await;
    let mut reader = s.proxy.client().await;
    let err = reader.try_cmd(&["GET", "huge"]).await;
    assert!(
        err.is_err(),
        "a reply over the limit reached the client: {err:?}"
    );
    assert_eq!(c.cmd(&["GET", "a"]).await, Reply::Bulk(at_limit));
}

/// A protocol error in a later argument of a command that is already streaming: the cache
/// has only part of that command and will never answer it, so the client gets the reply to
/// the command before it and the error at once (not after the drain's 1 s wait for a reply
/// that cannot come), byte for byte as redis-server answers the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_argument_inside_a_streaming_command_is_answered_at_once() {
    let s = setup().await;
    let mut input = encode_command(&["ECHO", "before"]);
    input.extend_from_slice(b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n");
    input.extend(bulk_bytes(&value(2 * THRESHOLD, 5)));
    input.extend_from_slice(b"x1\r\nz\r\n");
    // The command arrives in two parts, so that streaming has begun when the bad bytes come.
    let (first, rest) = input.split_at(THRESHOLD + THRESHOLD / 2);

    let mut direct = RawConn::direct(&s._server, &s.rotator.current).await;
    direct.send_raw(first).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    direct.send_raw(rest).await;
    let want = direct
        .read_to_close(Duration::from_secs(10))
        .await
        .expect("redis-server closes the connection");
    assert!(
        String::from_utf8_lossy(&want).contains("Protocol error"),
        "{}",
        String::from_utf8_lossy(&want)
    );

    let mut proxied = RawConn::proxied(&s.proxy).await;
    proxied.send_raw(first).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    proxied.send_raw(rest).await;
    let got = proxied
        .read_to_close(Duration::from_secs(10))
        .await
        .expect("the proxy closes the connection");
    let took = sent.elapsed();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want),
        "the proxy's bytes against redis-server's"
    );
    // The wait this test guards against is a fixed 1 s; a loaded machine answers in far less.
    assert!(
        took < Duration::from_millis(800),
        "the error took {took:?}: the session waited for a reply to the cut-off command"
    );
    // The key was never written (the command never reached the cache whole).
    let mut admin = s._server.admin().await;
    assert_eq!(admin.cmd(&["EXISTS", "k"]).await, Reply::Int(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_rotation_waits_for_the_end_of_a_streaming_command() {
    let mut s = setup().await;
    let v = value(16 * MIB, 8);
    let cmd = encode_command(&[b"SET".as_slice(), b"rotating", &v]);
    let mut writer = TcpStream::connect(s.proxy.addr).await.unwrap();
    // Half of the command, then a pause long enough for the proxy to see the new token.
    let half = cmd.len() / 2;
    writer.write_all(&cmd[..half]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before_rotation = Instant::now();
    let old_user = s.rotator.current.oid.clone();
    let mut watcher = s._server.admin().await;
    let rotation = {
        let rotator = &mut s.rotator;
        async move { rotator.rotate(1).await }
    };
    let rest = async {
        // The proxy must not put its AUTH inside the command: keep the command open for a
        // while after the new token is out (the proxy polls the file every 50 ms), check that
        // the connection is still on the old user, then finish the command.
        tokio::time::sleep(Duration::from_millis(800)).await;
        let on_old = watcher
            .client_list()
            .await
            .iter()
            .filter(|c| c.user == old_user)
            .count();
        assert_eq!(
            on_old, 1,
            "the connection re-authenticated in the middle of a command"
        );
        for piece in cmd[half..].chunks(256 * 1024) {
            writer.write_all(piece).await.unwrap();
        }
        let mut ok = [0u8; 5];
        tokio::time::timeout(IO_TIMEOUT, writer.read_exact(&mut ok))
            .await
            .expect("SET reply in time")
            .expect("read +OK");
        assert_eq!(&ok, b"+OK\r\n");
        Instant::now()
    };
    let (rotated, set_done) = tokio::join!(rotation, rest);
    rotated.expect("every connection re-authenticated, this one after its command");
    assert!(set_done > before_rotation);
    // The old user is gone: a connection still on it would have been closed by now.
    get_exact(&mut writer, "rotating", &v).await;
    let logs = s.proxy.logs();
    assert!(!logs.contains("frame was cut"), "no frame was cut: {logs}");
}

// ---------------------------------------------------------------------------------------------
// The proxy process, seen from /proc
// ---------------------------------------------------------------------------------------------

/// Samples a process's RSS every 20 ms until stopped; returns the peak in KiB.
struct RssSampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<u64>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut peak = 0;
            loop {
                peak = peak.max(rss_kib(pid));
                if stopped.try_recv().is_ok() {
                    return peak;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        RssSampler { stop, task }
    }

    async fn stop(self) -> u64 {
        let _ = self.stop.send(());
        self.task.await.expect("sampler")
    }
}

/// Resident set size in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

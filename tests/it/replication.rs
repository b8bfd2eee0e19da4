//! SYNC and PSYNC through the proxy (issue 12): after the reply to SYNC/PSYNC the connection
//! carries an RDB payload and the raw replication stream, which the session pipes unchanged.
//! `redis-cli --rdb` and `--replica` through the proxy against a real TLS redis-server.

use test_harness as support;
use test_harness::raw_conn;

use std::process::Stdio;
use std::time::Duration;

use raw_conn::{show, RawConn};
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Writes a small data set of every common type. At most four keys per database, so that no
/// dict grows (and rehashes) between two dumps: the dumps then list keys in the same order.
async fn write_data(admin: &mut Admin) {
    let big: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let cmds: Vec<Vec<Vec<u8>>> = vec![
        vec![b"SET".to_vec(), b"big".to_vec(), big],
        vec![
            b"RPUSH".to_vec(),
            b"list".to_vec(),
            b"a".to_vec(),
            b"\r\n$EOF:".to_vec(),
            b"c".to_vec(),
        ],
        vec![
            b"HSET".to_vec(),
            b"hash".to_vec(),
            b"f".to_vec(),
            b"v".to_vec(),
        ],
        vec![
            b"ZADD".to_vec(),
            b"zset".to_vec(),
            b"1.5".to_vec(),
            b"m".to_vec(),
        ],
        vec![
            b"PEXPIREAT".to_vec(),
            b"zset".to_vec(),
            b"4102444800000".to_vec(),
        ],
        vec![b"SELECT".to_vec(), b"3".to_vec()],
        vec![b"SET".to_vec(), b"in-db-3".to_vec(), b"12345".to_vec()],
        vec![b"SELECT".to_vec(), b"0".to_vec()],
    ];
    for c in cmds {
        let reply = admin.cmd(&c).await;
        assert!(!reply.is_error(), "{reply:?}");
    }
}

/// Reads an RDB length (`rdbLoadLen`); the bool: a special encoding follows instead.
fn rdb_len(b: &[u8], at: &mut usize) -> (u64, bool) {
    let first = b[*at];
    *at += 1;
    match first >> 6 {
        0 => ((first & 0x3f) as u64, false),
        1 => {
            let v = (((first & 0x3f) as u64) << 8) | b[*at] as u64;
            *at += 1;
            (v, false)
        }
        2 if first == 0x80 => {
            let v = u32::from_be_bytes(b[*at..*at + 4].try_into().unwrap()) as u64;
            *at += 4;
            (v, false)
        }
        2 => {
            let v = u64::from_be_bytes(b[*at..*at + 8].try_into().unwrap());
            *at += 8;
            (v, false)
        }
        _ => ((first & 0x3f) as u64, true),
    }
}

/// Skips an RDB string (`rdbGenericLoadStringObject`), returning its raw bytes if plain.
fn rdb_string(b: &[u8], at: &mut usize) -> Vec<u8> {
    let (len, special) = rdb_len(b, at);
    if !special {
        let s = b[*at..*at + len as usize].to_vec();
        *at += len as usize;
        return s;
    }
    match len {
        0 => *at += 1,
        1 => *at += 2,
        2 => *at += 4,
        3 => {
            let (clen, _) = rdb_len(b, at);
            let _ = rdb_len(b, at);
            *at += clen as usize;
        }
        other => panic!("unknown RDB string encoding {other}"),
    }
    Vec::new()
}

/// An RDB file cut in two: the auxiliary fields' names (their values hold times, memory use,
/// the replication id and offset), and the data: every database and key, up to the EOF opcode
/// (the checksum after it covers the auxiliary fields too).
fn rdb_parts(rdb: &[u8]) -> (Vec<Vec<u8>>, Vec<u8>) {
    assert!(
        rdb.starts_with(b"REDIS0010"),
        "not an RDB v10: {}",
        show(&rdb[..rdb.len().min(40)])
    );
    let mut at = 9;
    let mut aux = Vec::new();
    while rdb[at] == 0xFA {
        at += 1;
        aux.push(rdb_string(rdb, &mut at));
        rdb_string(rdb, &mut at);
    }
    assert_eq!(rdb[at], 0xFE, "the data starts with SELECTDB");
    assert_eq!(
        rdb[rdb.len() - 9],
        0xFF,
        "EOF opcode, then the 8-byte checksum"
    );
    (aux, rdb[at..rdb.len() - 9].to_vec())
}

/// `redis-cli --rdb` to `file` through `args` (connection arguments), with the password in
/// the environment, if any.
async fn redis_cli_rdb(args: &[String], password: Option<&str>, file: &std::path::Path) {
    let mut cmd = tokio::process::Command::new("redis-cli");
    cmd.args(args).arg("--rdb").arg(file).stdin(Stdio::null());
    if let Some(p) = password {
        cmd.env("REDISCLI_AUTH", p);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("redis-cli --rdb timed out")
        .expect("run redis-cli");
    assert!(
        out.status.success(),
        "redis-cli --rdb failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `redis-cli --rdb` through the proxy writes the same RDB as directly, for both transfer
/// forms redis-server uses: `$<len>` then the payload without CRLF (disk), and
/// `$EOF:<mark>` ... `<mark>` (diskless).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_rdb_through_the_proxy_gets_the_same_rdb() {
    let server = RedisServer::start().await;
    let rotator = Rotator::new(&server).await;
    let proxy = Proxy::start(&proxy_args(&server, &rotator.file.path), "info").await;
    let mut admin = server.admin().await;
    write_data(&mut admin).await;
    let dir = tempfile::tempdir().unwrap();
    let direct_args: Vec<String> = [
        "--tls",
        "--cacert",
        &server.tls.ca_file.display().to_string(),
        "--sni",
        "localhost",
        "-h",
        "127.0.0.1",
        "-p",
        &server.port.to_string(),
        "--user",
        &rotator.current.oid,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let proxied_args: Vec<String> = ["-h", "127.0.0.1", "-p", &proxy.addr.port().to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for diskless in ["yes", "no"] {
        for (k, v) in [
            ("repl-diskless-sync", diskless),
            ("repl-diskless-sync-delay", "0"),
        ] {
            assert_eq!(admin.cmd(&["CONFIG", "SET", k, v]).await, Reply::ok());
        }
        let direct = dir.path().join(format!("direct-{diskless}.rdb"));
        let proxied = dir.path().join(format!("proxied-{diskless}.rdb"));
        redis_cli_rdb(&direct_args, Some(&rotator.current.jwt), &direct).await;
        redis_cli_rdb(&proxied_args, None, &proxied).await;
        let direct = std::fs::read(&direct).unwrap();
        let proxied = std::fs::read(&proxied).unwrap();
        assert!(proxied.len() > 10_000, "{} bytes", proxied.len());
        let (d_aux, d_data) = rdb_parts(&direct);
        let (p_aux, p_data) = rdb_parts(&proxied);
        assert_eq!(d_aux, p_aux, "diskless {diskless}: auxiliary fields");
        assert!(d_data == p_data, "diskless {diskless}: the data differs");
        for key in ["big", "list", "hash", "zset", "in-db-3"] {
            assert!(
                p_data.windows(key.len()).any(|w| w == key.as_bytes()),
                "{key} is not in the dump"
            );
        }
        // The whole file, checksum included, is valid.
        let file = dir.path().join(format!("proxied-{diskless}.rdb"));
        let check = std::process::Command::new("redis-check-rdb")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "redis-check-rdb: {}",
            String::from_utf8_lossy(&check.stdout)
        );
    }
    // The proxy still serves ordinary clients.
    let mut c = proxy.client().await;
    assert_eq!(c.cmd(&["HGET", "hash", "f"]).await, Reply::bulk("v"));
}

/// `redis-cli --replica` through the proxy prints a write made after it synchronised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_replica_through_the_proxy_shows_later_writes() {
    let server = RedisServer::start().await;
    let rotator = Rotator::new(&server).await;
    let proxy = Proxy::start(&proxy_args(&server, &rotator.file.path), "debug").await;
    let mut admin = server.admin().await;
    assert_eq!(
        admin
            .cmd(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"])
            .await,
        Reply::ok()
    );
    write_data(&mut admin).await;
    let mut child = tokio::process::Command::new("redis-cli")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &proxy.addr.port().to_string(),
            "--replica",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run redis-cli --replica");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut wait_for = async |needle: &str, seen: &mut Vec<String>| {
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return;
                }
            }
            panic!("redis-cli --replica ended: {seen:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} from redis-cli --replica: {seen:?}"));
    };
    // It prints what the master sends; the master pings its replicas.
    wait_for("ping", &mut seen).await;
    assert_eq!(
        admin.cmd(&["SET", "after-sync", "later-value"]).await,
        Reply::ok()
    );
    wait_for("later-value", &mut seen).await;
    assert!(seen.iter().any(|l| l.contains("after-sync")), "{seen:?}");
    assert!(
        proxy.logs().contains("replication stream"),
        "the pipe is logged"
    );
    // The replica's connection is piped, never re-authenticated: it ends when its token does.
    child.kill().await.unwrap();
}

/// `PSYNC ? -1` through the proxy: `+FULLRESYNC`, the payload, then the replication stream
/// with a later write, exactly as redis-server sends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psync_through_the_proxy_streams_raw() {
    let server = RedisServer::start().await;
    let rotator = Rotator::new(&server).await;
    let proxy = Proxy::start(&proxy_args(&server, &rotator.file.path), "info").await;
    let mut admin = server.admin().await;
    for (k, v) in [
        ("repl-diskless-sync", "no"),
        ("repl-diskless-sync-delay", "0"),
    ] {
        assert_eq!(admin.cmd(&["CONFIG", "SET", k, v]).await, Reply::ok());
    }
    assert_eq!(admin.cmd(&["SET", "k", "v"]).await, Reply::ok());
    let mut c = RawConn::proxied(&proxy).await;
    // (redis-server refuses PSYNC while a reply is still to be written: no pipelining.)
    assert_eq!(c.cmd(&["PING", "before"]).await, b"$6\r\nbefore\r\n");
    c.send(&["PSYNC", "?", "-1"]).await;
    let full = c.frame().await;
    assert!(full.starts_with(b"+FULLRESYNC "), "{}", show(&full));
    // Keepalive newlines may precede the payload's length.
    let mut stream = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let wrote = std::sync::atomic::AtomicBool::new(false);
    loop {
        if let Some(chunk) = c.frame_or_bytes(Duration::from_millis(100)).await {
            stream.extend(chunk);
        }
        let text = String::from_utf8_lossy(&stream).into_owned();
        if text.contains("REDIS0010") && !wrote.swap(true, std::sync::atomic::Ordering::SeqCst) {
            assert_eq!(admin.cmd(&["SET", "later", "streamed"]).await, Reply::ok());
        }
        if text.contains("$8\r\nstreamed\r\n") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stream so far: {}",
            show(&stream)
        );
    }
    let start = stream.iter().position(|&b| b == b'$').unwrap();
    let text = &stream[start..];
    let nl = text.iter().position(|&b| b == b'\n').unwrap();
    let len: usize = std::str::from_utf8(&text[1..nl - 1])
        .unwrap()
        .parse()
        .unwrap();
    let after_rdb = &text[nl + 1 + len..];
    // No CRLF after the payload: the stream's first command follows at once.
    assert!(after_rdb.starts_with(b"*"), "{}", show(after_rdb));
    assert!(
        after_rdb
            .windows(b"$5\r\nlater\r\n".len())
            .any(|w| w == b"$5\r\nlater\r\n"),
        "{}",
        show(after_rdb)
    );
}

/// A refused SYNC (the user may not run it) is an ordinary error reply: the connection goes
/// on as a RESP connection, and the commands sent after it are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_sync_leaves_an_ordinary_connection() {
    let server = RedisServer::start().await;
    let rotator = Rotator::new(&server).await;
    let proxy = Proxy::start(&proxy_args(&server, &rotator.file.path), "info").await;
    let mut admin = server.admin().await;
    let oid = rotator.current.oid.clone();
    assert_eq!(
        admin
            .cmd(&["ACL", "SETUSER", &oid, "-sync", "-psync"])
            .await,
        Reply::ok()
    );
    let mut c = RawConn::proxied(&proxy).await;
    let mut bytes = encode_command(&["SYNC"]);
    bytes.extend(encode_command(&["PING", "after"]));
    c.send_raw(&bytes).await;
    let refused = c.frame().await;
    assert!(refused.starts_with(b"-NOPERM"), "{}", show(&refused));
    assert_eq!(c.frame().await, b"$5\r\nafter\r\n");
    assert_eq!(c.cmd(&["GET", "nothing"]).await, b"$-1\r\n");
}

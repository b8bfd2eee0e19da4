//! A refresh with 10,000 live sessions: every one is re-authenticated, spread over time, well
//! inside the refresh margin, and none is lost. Prints the time from token change to the last
//! re-AUTH and the latency of ordinary commands meanwhile (`bench/reauth-storm.sh` runs it
//! with a release build and more sessions).

use test_harness as support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Raises this process's open-files limit (children inherit it: redis-server and the proxy).
fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    getrlimit_nofile(&mut lim);
    let target = want.max(lim.rlim_cur);
    let new = libc::rlimit {
        rlim_cur: target as libc::rlim_t,
        rlim_max: (target as libc::rlim_t).max(lim.rlim_max),
    };
    if !setrlimit_nofile(&new) {
        // Not root: take what the hard limit allows.
        let soft = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        setrlimit_nofile(&soft);
    }
    getrlimit_nofile(&mut lim);
    lim.rlim_cur
}

fn getrlimit_nofile(lim: &mut libc::rlimit) {
    // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, lim);
    }
}

fn setrlimit_nofile(lim: &libc::rlimit) -> bool {
    // SAFETY: setrlimit only reads the struct we pass.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, lim) == 0 }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What redis-server reports about itself, from a new admin connection (the one that timed
/// out may be stuck mid-reply): how long that connection took to open and to answer PING
/// (quick: the server is not stalled), the `CLIENT LIST` lines of the harness's own admin
/// connections (the stuck one's `qbuf`, `obl`/`oll` and `cmd` show whether the server holds
/// the unanswered command, holds its reply, or never got it), `SLOWLOG GET`, `LATENCY
/// LATEST` (the test sets a 100 ms threshold), `INFO clients`/`stats`/`cpu`, and the tail of
/// its log. A connection that cannot be made is reported too.
async fn redis_diagnostics(server: &RedisServer) -> String {
    let mut out = String::new();
    let started = Instant::now();
    let fresh = tokio::time::timeout(Duration::from_secs(10), server.admin()).await;
    match fresh {
        Ok(mut admin) => {
            let opened = started.elapsed();
            let ping = Instant::now();
            let pong = tokio::time::timeout(Duration::from_secs(10), admin.cmd(&["PING"])).await;
            out.push_str(&format!(
                "--- a new admin connection: opened in {opened:?}, PING answered {:?} in {:?}\n",
                pong.is_ok(),
                ping.elapsed()
            ));
            if let Ok(Ok(Reply::Bulk(b) | Reply::Verbatim(b))) = tokio::time::timeout(
                Duration::from_secs(10),
                admin.conn.try_cmd(&["CLIENT", "LIST"]),
            )
            .await
            {
                let text = String::from_utf8_lossy(&b).into_owned();
                let own: Vec<&str> = text
                    .lines()
                    .filter(|l| l.contains(&format!(" user={ADMIN_USER} ")))
                    .collect();
                out.push_str(&format!(
                    "--- CLIENT LIST, the harness's admin connections\n{}\n",
                    redact(&own.join("\n"))
                ));
            }
            for args in [
                &["SLOWLOG", "GET", "20"][..],
                &["LATENCY", "LATEST"][..],
                &["INFO", "clients"][..],
                &["INFO", "stats"][..],
                &["INFO", "cpu"][..],
            ] {
                let reply = tokio::time::timeout(Duration::from_secs(10), admin.cmd(args)).await;
                let text = match reply {
                    Ok(Reply::Bulk(b)) | Ok(Reply::Verbatim(b)) => {
                        String::from_utf8_lossy(&b).into_owned()
                    }
                    Ok(other) => redact(&format!("{other:?}")),
                    Err(_) => "no reply within 10 s".to_owned(),
                };
                out.push_str(&format!("--- {}\n{}\n", args.join(" "), redact(&text)));
            }
        }
        Err(_) => out.push_str("--- a new admin connection was not accepted within 10 s\n"),
    }
    out.push_str(&format!(
        "--- redis-server log (tail)\n{}\n",
        tail(&server.log(), 40)
    ));
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Sends GET in a loop for `for_how_long`, returning each round trip's latency.
async fn latency_probe(addr: std::net::SocketAddr, for_how_long: Duration) -> Vec<Duration> {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.set_nodelay(true).unwrap();
    let mut buf = [0u8; 64];
    let mut out = Vec::new();
    let end = Instant::now() + for_how_long;
    while Instant::now() < end {
        let t = Instant::now();
        c.write_all(b"*2\r\n$3\r\nGET\r\n$5\r\nprobe\r\n")
            .await
            .unwrap();
        let n = c.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"$-1\r\n", "probe reply");
        out.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_sessions_survive_one_refresh() {
    let sessions: usize = std::env::var("STORM_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // The proxy holds two descriptors per session (client and upstream). Where the hard
    // limit cannot be raised (no CAP_SYS_RESOURCE, as on the CI machines: 20,000), the test
    // runs as many sessions as fit, and says so.
    let limit = raise_nofile(2 * sessions as u64 + 1024);
    let fit = (limit.saturating_sub(200) / 2) as usize;
    if fit < sessions {
        eprintln!(
            "open-files limit {limit}: running {fit} sessions instead of {sessions} \
             (each needs two descriptors in the proxy)"
        );
    }
    let sessions = sessions.min(fit);
    assert!(
        sessions >= 1000,
        "open-files limit {limit} is far too low for this test"
    );
    let server = RedisServer::start().await;
    let mut admin = server.admin().await;
    let maxclients = (sessions + 1000).to_string();
    assert_eq!(
        admin
            .cmd(&["CONFIG", "SET", "maxclients", &maxclients])
            .await,
        Reply::ok()
    );
    // So that LATENCY LATEST can show an event-loop stall if the DELUSER below is late.
    assert_eq!(
        admin
            .cmd(&["CONFIG", "SET", "latency-monitor-threshold", "100"])
            .await,
        Reply::ok()
    );
    let rotator = Rotator::new(&server).await;
    // Opening 10,000 upstream TLS connections (500 at a time, debug build) on a machine shared
    // with the other test binaries can take longer than the default 5 s handshake timeout;
    // what this test measures is the refresh, so opening gets room.
    let mut args = proxy_args(&server, &rotator.file.path);
    args.extend(
        [
            "--connect-timeout",
            "60s",
            "--tls-timeout",
            "60s",
            "--auth-timeout",
            "60s",
        ]
        .map(String::from),
    );
    let proxy = Proxy::start(&args, "info").await;

    // Open every session (bounded concurrency) and check each answers.
    let t_open = Instant::now();
    let mut clients = Vec::with_capacity(sessions);
    let addr = proxy.addr;
    for chunk in (0..sessions).collect::<Vec<_>>().chunks(500) {
        let mut set = tokio::task::JoinSet::new();
        for _ in chunk {
            set.spawn(async move {
                let mut c = TcpStream::connect(addr).await.unwrap();
                c.write_all(b"PING\r\n").await.unwrap();
                let mut buf = [0u8; 7];
                c.read_exact(&mut buf).await.unwrap();
                if &buf != b"+PONG\r\n" {
                    // An error reply: show all of it.
                    let mut rest = vec![0u8; 512];
                    let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut rest))
                        .await
                        .map_or(0, |r| r.unwrap_or(0));
                    let mut line = buf.to_vec();
                    line.extend_from_slice(&rest[..n]);
                    panic!(
                        "PING on a new session: {:?}",
                        String::from_utf8_lossy(&line)
                    );
                }
                c
            });
        }
        while let Some(c) = set.join_next().await {
            clients.push(c.unwrap());
        }
    }
    eprintln!("opened {sessions} sessions in {:?}", t_open.elapsed());

    let baseline = latency_probe(addr, Duration::from_secs(2)).await;

    // The refresh: new token and user; the old user is deleted once nobody uses it.
    let old = rotator.current.clone();
    let new = Token::mint(Duration::from_secs(3600));
    admin.create_token_user(&new).await;
    let probe = tokio::spawn(latency_probe(addr, Duration::from_secs(4)));
    let t0 = Instant::now();
    rotator.file.write(&new);
    let deadline = t0 + Duration::from_secs(90);
    let took = loop {
        let on_old = admin
            .client_list()
            .await
            .iter()
            .filter(|c| c.user == old.oid)
            .count();
        if on_old == 0 {
            break t0.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{on_old} sessions still on the old token after 90 s (half the default refresh margin)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // This ACL DELUSER once went unanswered in about one CI run in five: the harness wrote it
    // without a flush into a TLS stream whose task had spent its cooperative budget reading
    // the CLIENT LIST above, so it never left (docs/reliability.md; fixed in the harness, and
    // tested in tests/it/harness.rs). Should it stall again, wait less than the harness's
    // 20 s I/O timeout and print what redis-server was doing, from a fresh connection.
    let delete = tokio::time::timeout(
        Duration::from_secs(15),
        admin.cmd(&["ACL", "DELUSER", old.oid.as_str()]),
    )
    .await;
    match delete {
        Ok(Reply::Int(_)) => {}
        Ok(other) => panic!("ACL DELUSER {}: {other:?}", old.oid),
        Err(_) => {
            let report = redis_diagnostics(&server).await;
            panic!(
                "ACL DELUSER unanswered for 15 s after {sessions} sessions moved to the new \
                 token; redis-server meanwhile:\n{report}\nproxy log (tail):\n{}",
                tail(&proxy.logs(), 40)
            );
        }
    }
    let during = probe.await.unwrap();

    // Every session survived the emulated expiry.
    let mut alive = 0;
    for c in clients.iter_mut() {
        c.write_all(b"PING\r\n").await.unwrap();
        let mut buf = [0u8; 7];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"+PONG\r\n");
        alive += 1;
    }
    assert_eq!(alive, sessions);
    let on_new = admin
        .client_list()
        .await
        .iter()
        .filter(|c| c.user == new.oid)
        .count();
    assert_eq!(on_new, sessions, "every session on the new token");

    let mut b = baseline;
    b.sort();
    let mut d = during;
    d.sort();
    eprintln!(
        "re-AUTH of {sessions} sessions: token change to last re-AUTH {:?} (resolution 100 ms); \
         GET latency p50/p99 before {:?}/{:?}, during {:?}/{:?}",
        took,
        percentile(&b, 0.5),
        percentile(&b, 0.99),
        percentile(&d, 0.5),
        percentile(&d, 0.99),
    );
}

//! Shared upstream connections (`--pool-size N`): many clients' stateless commands over N
//! pipelined connections, stateful clients pinned to connections of their own, re-AUTH of
//! the shared connections, and what a lost shared connection does to its clients.

use test_harness as support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

/// A server, its first token's user, and a proxy in front of it with `--pool-size pool` and
/// the admin endpoint on, once its RESP2 shared connections are open.
struct Rig {
    server: RedisServer,
    rotator: Rotator,
    proxy: Proxy,
    /// The admin endpoint.
    metrics: std::net::SocketAddr,
}

impl Rig {
    async fn start(pool: usize) -> Rig {
        Rig::start_with(pool, "info", |_| {}).await
    }

    /// [`Rig::start`] at log level `log`, with `edit` applied to the proxy's arguments.
    async fn start_with(pool: usize, log: &str, edit: impl FnOnce(&mut Vec<String>)) -> Rig {
        let server = RedisServer::start().await;
        let rotator = Rotator::new(&server).await;
        let mut args = proxy_args(&server, &rotator.file.path);
        set_flag(&mut args, "--admin-listen", "127.0.0.1:0");
        args.extend(["--pool-size".to_owned(), pool.to_string()]);
        edit(&mut args);
        let proxy = Proxy::start(&args, log).await;
        let metrics = admin_address(&proxy);
        wait_shared(metrics, pool as f64).await;
        Rig {
            server,
            rotator,
            proxy,
            metrics,
        }
    }
}

/// Waits until `shared_connections` is `n`.
async fn wait_shared(metrics: std::net::SocketAddr, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = scrape_metrics(metrics).await;
        if proxy_metric(&m, "shared_connections{upstream=\"default\"}") == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "shared_connections never {n}:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_clients_share_four_connections_through_three_expiries() {
    let Rig {
        server: _server,
        mut rotator,
        proxy,
        metrics,
    } = Rig::start(4).await;

    // 300 clients, each counting on a key of its own with pipelines of 3 INCRs: every reply
    // must be the next number, so a lost, duplicated or misrouted reply shows.
    const CLIENTS: usize = 300;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for i in 0..CLIENTS {
        let mut c = proxy.client().await;
        let stop = stop.clone();
        let done = done.clone();
        workers.push(tokio::spawn(async move {
            let key = format!("count:{i}");
            let mut n = 0i64;
            let one = encode_command(&["INCR", &key]);
            let three = [one.clone(), one.clone(), one].concat();
            while !stop.load(Ordering::Relaxed) || n < 6 {
                let replies = c.pipeline(&three, 3).await;
                for r in replies {
                    n += 1;
                    assert_eq!(r, Reply::Int(n), "client {i}");
                }
                done.fetch_add(3, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            n
        }));
    }

    // Pinned: a transaction, a RESP2 subscriber, a client blocked in BLPOP 0.
    let mut multi = proxy.client().await;
    assert_eq!(multi.cmd(&["MULTI"]).await, Reply::ok());
    assert_eq!(multi.cmd(&["INCR", "txn"]).await, Reply::status("QUEUED"));
    assert_eq!(
        multi.cmd(&["EXEC"]).await,
        Reply::Array(vec![Reply::Int(1)])
    );
    let mut subscriber = proxy.client().await;
    assert_eq!(subscriber.cmd(&["PING"]).await, Reply::status("PONG"));
    assert_eq!(
        subscriber.cmd(&["SUBSCRIBE", "news"]).await,
        Reply::Array(vec![
            Reply::bulk("subscribe"),
            Reply::bulk("news"),
            Reply::Int(1)
        ])
    );
    let mut blocked = proxy.client().await;
    blocked.send(&["BLPOP", "queue", "0"]).await;

    // Every client so far has run commands: at most 4 shared connections plus the 3 pinned.
    let deadline = Instant::now() + Duration::from_secs(15);
    let user = rotator.current.oid.clone();
    loop {
        let conns = rotator.admin.clients_as(&user).await;
        let blpop = conns.iter().any(|c| c.cmd == "blpop");
        if blpop && conns.len() == 4 + 3 {
            break;
        }
        assert!(
            conns.len() <= 4 + 3,
            "more upstream connections than 4 shared + 3 pinned: {conns:?}"
        );
        assert!(
            Instant::now() < deadline,
            "never 4 + 3 connections: {conns:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Three expiries: each new token's user must be on all 7 connections before the old
    // user is deleted (which would close any connection still on it).
    for round in 0..3 {
        rotator
            .rotate(4 + 3)
            .await
            .unwrap_or_else(|e| panic!("rotation {round}: {e}\n{}", proxy.logs()));
        let before = done.load(Ordering::Relaxed);
        assert!(
            wait_until(Duration::from_secs(10), || {
                let done = done.clone();
                async move { done.load(Ordering::Relaxed) > before + 300 }
            })
            .await,
            "the clients stopped after rotation {round}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for (i, w) in workers.into_iter().enumerate() {
        let n = w.await.unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert!(n >= 6, "client {i} counted to {n}");
    }

    // The pinned clients are still served, with their state.
    let mut other = proxy.client().await;
    assert_eq!(other.cmd(&["LPUSH", "queue", "job"]).await, Reply::Int(1));
    assert_eq!(
        blocked.read_frame().await,
        Reply::Array(vec![Reply::bulk("queue"), Reply::bulk("job")])
    );
    assert_eq!(
        other.cmd(&["PUBLISH", "news", "hello"]).await,
        Reply::Int(1)
    );
    assert_eq!(
        subscriber.read_frame().await,
        Reply::Array(vec![
            Reply::bulk("message"),
            Reply::bulk("news"),
            Reply::bulk("hello")
        ])
    );
    assert_eq!(multi.cmd(&["MULTI"]).await, Reply::ok());
    assert_eq!(multi.cmd(&["INCR", "txn"]).await, Reply::status("QUEUED"));
    assert_eq!(
        multi.cmd(&["EXEC"]).await,
        Reply::Array(vec![Reply::Int(2)])
    );

    let m = scrape_metrics(metrics).await;
    for reason in ["transaction", "subscribe", "blocking"] {
        assert_eq!(
            proxy_metric(
                &m,
                &format!("pins_total{{reason=\"{reason}\",upstream=\"default\"}}")
            ),
            1.0,
            "{reason}:\n{m}"
        );
    }
    assert_eq!(
        proxy_metric(&m, "shared_connections{upstream=\"default\"}"),
        4.0
    );
    assert!(proxy_metric(&m, "reauth_total{result=\"success\",upstream=\"default\"}") >= 3.0 * 7.0);
    assert_eq!(
        proxy_metric(&m, "reauth_total{result=\"failure\",upstream=\"default\"}"),
        0.0
    );
    let per_conn: f64 = (0..4)
        .map(|i| {
            proxy_metric(
                &m,
                &format!("shared_commands_total{{connection=\"resp2-{i}\",upstream=\"default\"}}"),
            )
        })
        .sum();
    assert!(per_conn >= done.load(Ordering::Relaxed) as f64, "{m}");
}

/// The shared connection (named by the proxy) whose last command is `cmd`, if any.
async fn shared_running(admin: &mut Admin, cmd: &str) -> Option<ClientInfo> {
    admin
        .client_list()
        .await
        .into_iter()
        .find(|c| c.name.starts_with("entra-redis-proxy-shared-") && c.cmd == cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_shared_connection_closes_only_the_clients_with_commands_in_flight_on_it() {
    let Rig {
        server,
        rotator: _rotator,
        proxy,
        metrics,
    } = Rig::start(2).await;
    let mut admin = server.admin().await;
    // The others only read, so the one shared connection whose last command is SET below is
    // the one carrying the victim's.
    let mut idle: Vec<ProxyClient> = Vec::new();
    for i in 0..6 {
        assert_eq!(
            admin.cmd(&["SET", &format!("k{i}"), "v"]).await,
            Reply::ok()
        );
        let mut c = proxy.client().await;
        assert_eq!(c.cmd(&["GET", &format!("k{i}")]).await, Reply::bulk("v"));
        idle.push(c);
    }
    // Writes wait while the server is paused: a SET is then in flight on one shared
    // connection, which is killed before it runs.
    assert_eq!(
        admin.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]).await,
        Reply::ok()
    );
    let mut victim = proxy.client().await;
    victim.send(&["SET", "lost", "1"]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let target = loop {
        if let Some(t) = shared_running(&mut admin, "set").await {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "the SET never reached a shared connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    admin
        .cmd(&["CLIENT", "KILL", "ID", &target.id.to_string()])
        .await;
    assert_eq!(admin.cmd(&["CLIENT", "UNPAUSE"]).await, Reply::ok());
    // The client whose command may have run sees its connection close, not an error.
    let rest = victim.read_until_closed().await;
    assert!(rest.is_empty(), "a made-up reply: {rest:?}");
    // Every other client goes on (those that used the lost connection included), and the
    // pool opens a new connection.
    for (i, c) in idle.iter_mut().enumerate() {
        assert_eq!(c.cmd(&["GET", &format!("k{i}")]).await, Reply::bulk("v"));
    }
    wait_shared(metrics, 2.0).await;
    let mut late = proxy.client().await;
    assert_eq!(late.cmd(&["GET", "lost"]).await, Reply::Null);
    let m = scrape_metrics(metrics).await;
    assert_eq!(
        proxy_metric(
            &m,
            "upstream_losses_total{outcome=\"closed\",upstream=\"default\"}"
        ),
        1.0,
        "{m}"
    );
    assert!(proxy.logs().contains("shared connection lost"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reauth_of_a_shared_connection_reaches_no_client() {
    let Rig {
        server: _server,
        mut rotator,
        proxy,
        metrics,
    } = Rig::start(2).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(proxy.client().await);
    }
    for c in clients.iter_mut() {
        assert_eq!(c.cmd(&["SET", "k", "1"]).await, Reply::ok());
    }
    // A token the cache does not know: both shared connections get WRONGPASS for their
    // re-AUTH, which no client may see.
    let bad = Token::mint(Duration::from_secs(3600));
    rotator.file.write(&bad);
    let refused = wait_until(Duration::from_secs(10), || async {
        let m = scrape_metrics(metrics).await;
        proxy_metric(&m, "reauth_total{result=\"failure\",upstream=\"default\"}") >= 2.0
    })
    .await;
    assert!(refused, "no refused re-AUTH:\n{}", proxy.logs());
    for c in clients.iter_mut() {
        assert_eq!(c.cmd(&["GET", "k"]).await, Reply::bulk("1"));
        assert_eq!(
            c.cmd(&["ACL", "WHOAMI"]).await,
            Reply::bulk(&rotator.current.oid)
        );
    }
    // A good token: the shared connections move to it.
    let good = rotator.rotate(2).await.expect("rotation to a good token");
    for c in clients.iter_mut() {
        assert_eq!(c.cmd(&["ACL", "WHOAMI"]).await, Reply::bulk(&good.oid));
    }
    assert!(!proxy.raw_logs().contains(&bad.jwt));
    assert!(!proxy.raw_logs().contains(&good.jwt));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_clients_use_resp3_shared_connections_and_pins_keep_the_client_state() {
    let Rig {
        server,
        rotator: _rotator,
        proxy,
        metrics,
    } = Rig::start(2).await;
    let mut admin = server.admin().await;

    // RESP3 through the shared connections: the HELLO moves the session to them.
    let mut c3 = proxy.client().await;
    let hello = c3.cmd(&["HELLO", "3"]).await;
    assert_eq!(hello.field("proto"), Some(&Reply::Int(3)), "{hello:?}");
    assert_eq!(c3.cmd(&["SET", "k", "v"]).await, Reply::ok());
    assert_eq!(c3.cmd(&["HSET", "h", "f", "1"]).await, Reply::Int(1));
    let all = c3.cmd(&["HGETALL", "h"]).await;
    assert!(matches!(all, Reply::Map(_)), "RESP3 map expected: {all:?}");
    wait_shared(metrics, 4.0).await;
    let names: Vec<String> = admin
        .client_list()
        .await
        .into_iter()
        .map(|c| c.name)
        .collect();
    for n in ["resp2-0", "resp2-1", "resp3-0", "resp3-1"] {
        assert!(
            names.contains(&format!("entra-redis-proxy-shared-{n}")),
            "{n} not in {names:?}"
        );
    }
    // Back to RESP2, on the RESP2 connections.
    let hello = c3.cmd(&["HELLO", "2"]).await;
    assert!(matches!(hello, Reply::Array(_)), "{hello:?}");
    let all = c3.cmd(&["HGETALL", "h"]).await;
    assert_eq!(all, Reply::bulks(&["f", "1"]));

    // A client that set its library name while shared, then pins (CLIENT SETNAME): its
    // dedicated connection has the name, the library info and the protocol it chose.
    // (CLIENT SETINFO is redis-server 7.2's: an older server's refusal must come through
    // unchanged, and then there is no library info to restore.)
    let direct = admin.cmd(&["CLIENT", "SETINFO", "LIB-NAME", "probe"]).await;
    let mut c = proxy.client().await;
    for (attr, value) in [("LIB-NAME", "mylib"), ("LIB-VER", "1.2.3")] {
        let reply = c.cmd(&["CLIENT", "SETINFO", attr, value]).await;
        match &direct {
            Reply::Status(_) => assert_eq!(reply, Reply::ok()),
            refused => assert_eq!(&reply, refused),
        }
    }
    let hello = c.cmd(&["HELLO", "3"]).await;
    assert_eq!(hello.field("proto"), Some(&Reply::Int(3)));
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", "app"]).await, Reply::ok());
    let info = c.cmd(&["CLIENT", "INFO"]).await.text().unwrap_or_default();
    let mut want = vec!["name=app", "resp=3"];
    if direct == Reply::ok() {
        want.extend(["lib-name=mylib", "lib-ver=1.2.3"]);
    }
    for want in want {
        assert!(info.contains(want), "{want} not in {info}");
    }
    let m = scrape_metrics(metrics).await;
    assert_eq!(
        proxy_metric(&m, "pins_total{reason=\"client\",upstream=\"default\"}"),
        1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_auth_and_quit_in_the_shared_mode() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("client-password");
    std::fs::write(&password, "s3cret\n").unwrap();
    let Rig {
        server: _server,
        rotator: _rotator,
        proxy,
        metrics,
    } = Rig::start_with(2, "info", |args| {
        args.extend([
            "--client-password-file".to_owned(),
            password.display().to_string(),
        ])
    })
    .await;

    // An unauthenticated client is refused without a connection of its own.
    let mut c = proxy.client().await;
    for _ in 0..3 {
        assert_eq!(
            c.cmd(&["GET", "k"]).await,
            Reply::Error("NOAUTH Authentication required.".into())
        );
    }
    let m = scrape_metrics(metrics).await;
    assert!(!m.contains("entra_redis_proxy_pins_total{"), "{m}");
    let mut c = proxy.client().await;
    assert_eq!(
        c.cmd(&["AUTH", "wrong"]).await,
        Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
    );
    // Pipelined: the local AUTH reply comes in its place among the cache's replies.
    let bytes = [
        encode_command(&["AUTH", "s3cret"]),
        encode_command(&["SET", "k", "1"]),
        encode_command(&["AUTH", "user", "s3cret"]),
        encode_command(&["GET", "k"]),
        encode_command(&["QUIT"]),
    ]
    .concat();
    let replies = c.pipeline(&bytes, 5).await;
    assert_eq!(
        replies,
        vec![
            Reply::ok(),
            Reply::ok(),
            Reply::ok(),
            Reply::bulk("1"),
            Reply::ok()
        ]
    );
    assert!(c.read_until_closed().await.is_empty());
}

#[test]
fn pool_size_errors_name_the_key_and_the_fix() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_entra-redis-proxy"))
            .env_clear()
            .args(args)
            .output()
            .expect("run the proxy");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--upstream", "cache.example", "--pool-size", "500"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("`pool_size`") && err.contains("more than 64"),
        "{err}"
    );
    let (code, err) = run(&[
        "--upstream",
        "cache.example",
        "--pool-size",
        "4",
        "--cluster=true",
    ]);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("`pool_size`") && err.contains("cluster") && err.contains("pool_size = 0"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_clients_through_shared_connections_across_three_expiries() {
    let Rig {
        server: _server,
        mut rotator,
        proxy,
        metrics,
    } = Rig::start(2).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/shared_clients.py");
    let client = tokio::process::Command::new("python3")
        .arg(script)
        .args(["--port", &proxy.addr.port().to_string(), "--seconds", "12"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run python3 (scripts/test.sh installs redis-py)");
    // Three expiries while the clients run: each new token's user on every connection, then
    // the old user deleted (which closes any connection still on it).
    for round in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        rotator
            .rotate(2)
            .await
            .unwrap_or_else(|e| panic!("rotation {round}: {e}\n{}", proxy.logs()));
    }
    let output = tokio::time::timeout(Duration::from_secs(120), client.wait_with_output())
        .await
        .expect("shared_clients.py finished in time")
        .expect("shared_clients.py ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "no JSON summary ({e}, {}):\n{}\n{}",
            output.status,
            redact(&stdout),
            redact(&String::from_utf8_lossy(&output.stderr))
        )
    });
    assert!(
        output.status.success(),
        "{summary}\n{}\n{}",
        redact(&String::from_utf8_lossy(&output.stderr)),
        proxy.logs()
    );
    eprintln!("shared_clients.py: {summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert!(summary["ok"].as_u64().unwrap() > 1000, "{summary}");
    let m = scrape_metrics(metrics).await;
    for reason in ["transaction", "subscribe", "blocking"] {
        assert!(
            proxy_metric(
                &m,
                &format!("pins_total{{reason=\"{reason}\",upstream=\"default\"}}")
            ) >= 1.0,
            "no {reason} pin:\n{m}"
        );
    }
    // The shared connections carried most of the commands.
    let shared: f64 = ["resp2-0", "resp2-1", "resp3-0", "resp3-1"]
        .iter()
        .map(|c| {
            proxy_metric(
                &m,
                &format!("shared_commands_total{{connection=\"{c}\",upstream=\"default\"}}"),
            )
        })
        .sum();
    assert!(shared > 1000.0, "{m}");
    assert_eq!(
        proxy_metric(&m, "reauth_total{result=\"failure\",upstream=\"default\"}"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_session_takes_a_warm_connection() {
    let Rig {
        server: _server,
        rotator: _rotator,
        proxy,
        metrics,
    } = Rig::start_with(2, "info", |args| set_flag(args, "--warm-connections", "2")).await;
    let warm_ready = |m: &str| proxy_metric(m, "warm_connections{upstream=\"default\"}");
    assert!(
        wait_until(Duration::from_secs(15), || async {
            warm_ready(&scrape_metrics(metrics).await) == 2.0
        })
        .await
    );
    // Shared commands take no warm connection; the pin does, and the pool refills.
    let mut c = proxy.client().await;
    assert_eq!(c.cmd(&["SET", "k", "1"]).await, Reply::ok());
    let m = scrape_metrics(metrics).await;
    assert_eq!(warm_ready(&m), 2.0, "{m}");
    assert_eq!(c.cmd(&["WATCH", "k"]).await, Reply::ok());
    assert_eq!(c.cmd(&["GET", "k"]).await, Reply::bulk("1"));
    let m = scrape_metrics(metrics).await;
    assert_eq!(
        proxy_metric(
            &m,
            "warm_connection_uses_total{result=\"hit\",upstream=\"default\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        proxy_metric(&m, "pins_total{reason=\"watch\",upstream=\"default\"}"),
        1.0,
        "{m}"
    );
    assert!(
        wait_until(Duration::from_secs(15), || async {
            warm_ready(&scrape_metrics(metrics).await) == 2.0
        })
        .await,
        "the warm pool was not refilled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_replies_stream_through_a_shared_connection_byte_for_byte() {
    let Rig {
        server,
        rotator: _rotator,
        proxy,
        metrics,
    } = Rig::start(1).await;
    // Values set directly, so that the proxied clients send only small GETs (a large SET
    // would pin its client): the replies come over the one shared connection, in pieces.
    let mut admin = server.admin().await;
    let values: Vec<Vec<u8>> = (0..3u8)
        .map(|i| {
            (0..(3 << 20) + i as usize * 7919)
                .map(|j| (j as u8) ^ i)
                .collect()
        })
        .collect();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(
            admin
                .cmd(&[b"SET".as_slice(), format!("big:{i}").as_bytes(), v])
                .await,
            Reply::ok()
        );
    }
    let mut tasks = Vec::new();
    for c in 0..4 {
        let mut client = proxy.client().await;
        let values = values.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..3 {
                let i = (c + round) % values.len();
                let got = client.cmd(&["GET", &format!("big:{i}")]).await;
                assert!(got == Reply::Bulk(values[i].clone()), "client {c}, big:{i}");
                assert_eq!(client.cmd(&["PING"]).await, Reply::status("PONG"));
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let m = scrape_metrics(metrics).await;
    assert!(
        !m.contains("entra_redis_proxy_pins_total{"),
        "a client was pinned:\n{m}"
    );
    assert!(
        proxy_metric(
            &m,
            "shared_commands_total{connection=\"resp2-0\",upstream=\"default\"}"
        ) >= 24.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_redirected_to_a_shared_connection_are_dropped() {
    let Rig {
        server,
        rotator: _rotator,
        mut proxy,
        metrics,
    } = Rig::start_with(1, "debug", |_| {}).await;
    // HELLO's reply on the shared mode carries the RESP3 shared connection's id; a client
    // that takes it as a redirect target sends its invalidations there.
    let mut c3 = proxy.client().await;
    let hello = c3.cmd(&["HELLO", "3"]).await;
    let Some(Reply::Int(id)) = hello.field("id") else {
        panic!("no id in {hello:?}");
    };
    let mut admin = server.admin().await;
    let target = admin
        .client_list()
        .await
        .into_iter()
        .find(|c| c.id == *id as u64)
        .expect("the id is a connection");
    assert_eq!(target.name, "entra-redis-proxy-shared-resp3-0");
    let mut tracker = proxy.client().await;
    assert_eq!(
        tracker
            .cmd(&[
                "CLIENT",
                "TRACKING",
                "ON",
                "REDIRECT",
                &id.to_string(),
                "BCAST"
            ])
            .await,
        Reply::ok()
    );
    // Every SET now sends an invalidation push to the shared connection; the RESP3 client's
    // replies must be its own, in order, and the shared connection must stay up (a push
    // taken for a reply would shift every reply after it, and end in "a reply to no
    // command").
    for i in 0..50 {
        let v = i.to_string();
        assert_eq!(c3.cmd(&["SET", "tracked", &v]).await, Reply::ok());
        assert_eq!(c3.cmd(&["GET", "tracked"]).await, Reply::bulk(&v));
    }
    let mut c2 = proxy.client().await;
    assert_eq!(c2.cmd(&["GET", "tracked"]).await, Reply::bulk("49"));
    assert!(proxy.is_running());
    let logs = proxy.logs();
    assert!(
        !logs.contains("shared connection lost"),
        "a push broke the shared connection:\n{logs}"
    );
    assert!(logs.contains("dropped a push frame on a shared connection"));
    let m = scrape_metrics(metrics).await;
    assert_eq!(
        proxy_metric(
            &m,
            "upstream_losses_total{outcome=\"closed\",upstream=\"default\"}"
        ),
        0.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_connections_the_cache_closes_while_idle_are_replaced_unseen() {
    let Rig {
        server,
        rotator: _rotator,
        proxy,
        metrics,
    } = Rig::start(2).await;
    let mut idle = proxy.client().await;
    assert_eq!(idle.cmd(&["SET", "k", "1"]).await, Reply::ok());
    // The cache closes connections idle for a second (as Azure does after about ten
    // minutes): the shared ones go, and come back.
    let mut admin = server.admin().await;
    assert_eq!(
        admin.cmd(&["CONFIG", "SET", "timeout", "1"]).await,
        Reply::ok()
    );
    assert!(
        wait_until(Duration::from_secs(15), || async {
            proxy.logs().matches("shared connection lost").count() >= 2
        })
        .await,
        "the cache never closed an idle shared connection:\n{}",
        proxy.logs()
    );
    // (The idle admin connection was closed too: a new one.)
    let mut admin = server.admin().await;
    assert_eq!(
        admin.cmd(&["CONFIG", "SET", "timeout", "0"]).await,
        Reply::ok()
    );
    wait_shared(metrics, 2.0).await;
    // The client had nothing in flight: it never saw any of it (it has no upstream connection
    // of its own that the cache could time out).
    for _ in 0..10 {
        assert_eq!(idle.cmd(&["GET", "k"]).await, Reply::bulk("1"));
    }
    let m = scrape_metrics(metrics).await;
    assert_eq!(
        proxy_metric(
            &m,
            "upstream_losses_total{outcome=\"closed\",upstream=\"default\"}"
        ),
        0.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_shared_connection_a_client_gets_an_error_that_names_the_cause() {
    // The cache's port refuses connections.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let token = Token::mint(Duration::from_secs(3600));
    let file = TokenFile::new(&token);
    let ca = TlsMaterial::generate();
    let mut args = proxy_args_to(&format!("127.0.0.1:{closed}"), &ca.ca_file, &file.path);
    args.extend(
        ["--pool-size", "2", "--startup-wait", "700ms"]
            .iter()
            .map(|s| s.to_string()),
    );
    let proxy = Proxy::start(&args, "info").await;
    let mut c = proxy.client().await;
    c.send(&["PING"]).await;
    let replies = c.read_until_closed().await;
    match replies.as_slice() {
        [Reply::Error(e)] => {
            assert!(
                e.contains("cannot open the upstream connection") && e.contains("refused"),
                "{e}"
            );
            assert!(!e.contains(&token.jwt), "{e}");
        }
        other => panic!("want one error then the close, got {other:?}"),
    }
}

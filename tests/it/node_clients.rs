//! Real Node.js clients across a kill of their upstream connection (issue #12): node-redis 5
//! with RESP3 client-side caching must read no stale value, and ioredis after
//! `multi().select(7).exec()` must read and write nothing in the wrong database.
//!
//! The scripts live in tests/clients/ (versions pinned in its package.json and lock file;
//! scripts/test.sh runs `npm ci` there when node_modules is missing). Each prints
//! `{"event":"ready","client_id":N}` with its upstream connection id, waits for the line
//! `killed` on stdin while this test kills that connection from a direct admin connection, and
//! ends with one `{"event":"summary",...}` line.

use test_harness as support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use support::*;

/// Longest a script may take to reach its `ready` line, and then its summary.
const SCRIPT_STEP_TIMEOUT: Duration = Duration::from_secs(60);

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Panics with the fix if the pinned packages are not installed.
fn require_node_modules() {
    for package in ["redis", "ioredis"] {
        let dir = clients_dir().join("node_modules").join(package);
        assert!(
            dir.join("package.json").exists(),
            "{} is missing: run scripts/test.sh, or `npm ci` in tests/clients",
            dir.display()
        );
    }
}

/// A server, its token user, the proxy and an admin connection.
struct Rig {
    _tokens: Rotator,
    proxy: Proxy,
    admin: Admin,
    _server: RedisServer,
}

impl Rig {
    /// One-to-one (`pool_size` `None`) or with shared connections: then the script's
    /// `CLIENT ID` (and its tracking or SELECT) pins it to a connection of its own first, and
    /// the kill hits that one.
    async fn start(pool_size: Option<usize>) -> Rig {
        let server = RedisServer::start().await;
        let tokens = Rotator::new(&server).await;
        let mut args = proxy_args(&server, &tokens.file.path);
        if let Some(n) = pool_size {
            args.extend(["--pool-size".to_owned(), n.to_string()]);
        }
        let proxy = Proxy::start(&args, "info,entra_redis_proxy=debug").await;
        let admin = server.admin().await;
        Rig {
            _tokens: tokens,
            proxy,
            admin,
            _server: server,
        }
    }

    /// `SELECT db` then `GET key` on the admin connection (back to db 0 after).
    async fn admin_get(&mut self, db: &str, key: &str) -> Reply {
        assert_eq!(self.admin.cmd(&["SELECT", db]).await, Reply::ok());
        let value = self.admin.cmd(&["GET", key]).await;
        assert_eq!(self.admin.cmd(&["SELECT", "0"]).await, Reply::ok());
        value
    }
}

/// Runs `script` against the proxy, killing its upstream connection when it is ready; returns
/// the killed connection id and the script's summary.
async fn run_script(rig: &mut Rig, script: &str, extra: &[&str]) -> (i64, Value) {
    require_node_modules();
    let mut child = tokio::process::Command::new("node")
        .arg(clients_dir().join(script))
        .args(["--port", &rig.proxy.addr.port().to_string()])
        .args(extra)
        .current_dir(clients_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node (Node.js 20 is expected on the machine)");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let stderr = child.stderr.take().expect("stderr");
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            text.push_str(&l);
            text.push('\n');
        }
        text
    });

    let mut next_event = async |want: &str| -> Value {
        loop {
            let line = tokio::time::timeout(SCRIPT_STEP_TIMEOUT, stdout.next_line())
                .await
                .unwrap_or_else(|_| panic!("{script}: no `{want}` line in time"))
                .expect("read the script's stdout");
            let Some(line) = line else {
                panic!("{script} ended before its `{want}` line");
            };
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                panic!("{script} printed a line that is not JSON ({e}): {line}")
            });
            match v["event"].as_str() {
                Some(e) if e == want => return v,
                Some("failed") => panic!("{script} failed: {v}"),
                _ => {}
            }
        }
    };

    let ready = next_event("ready").await;
    let id = ready["client_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("{script}: no client_id in {ready}"));
    let reply = rig
        .admin
        .cmd(&["CLIENT", "KILL", "ID", &id.to_string()])
        .await;
    assert_eq!(
        reply,
        Reply::Int(1),
        "{script}: CLIENT KILL ID {id} must find the client's upstream connection"
    );
    stdin.write_all(b"killed\n").await.expect("tell the script");
    stdin.flush().await.expect("flush");
    let summary = next_event("summary").await;
    drop(stdin);
    let status = tokio::time::timeout(SCRIPT_STEP_TIMEOUT, child.wait())
        .await
        .unwrap_or_else(|_| panic!("{script} did not exit after its summary"))
        .expect("wait for node");
    let stderr = stderr.await.unwrap_or_default();
    if !stderr.trim().is_empty() {
        eprintln!("{script} stderr:\n{}", redact(&stderr));
    }
    eprintln!("{script} ({status}): {summary}");
    (id, summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_redis_client_side_cache_reads_nothing_stale_after_a_kill() {
    node_redis_cache_after_a_kill(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_redis_client_side_cache_reads_nothing_stale_after_a_kill_in_the_shared_mode() {
    node_redis_cache_after_a_kill(Some(2)).await;
}

async fn node_redis_cache_after_a_kill(pool_size: Option<usize>) {
    let mut rig = Rig::start(pool_size).await;
    let (killed, s) = run_script(&mut rig, "node_redis_cache.js", &["--key", "csc"]).await;
    assert_eq!(
        s["first_reads"],
        serde_json::json!(["old", "old"]),
        "reads before the kill: {s}"
    );
    // Otherwise the test proves nothing: the second read must have come from the cache.
    assert!(
        s["cache_hits_before_kill"].as_u64().unwrap_or(0) >= 1,
        "node-redis's client-side cache served no read before the kill: {s}"
    );
    assert_eq!(
        s["stale_reads"], 0,
        "node-redis served the value from before the kill (its cache was not invalidated: \
         the proxy must close a tracking client whose upstream connection is lost): {s}"
    );
    assert_eq!(
        s["fresh_reads"], 5,
        "every read after the kill must return the new value: {s}"
    );
    assert_ne!(
        s["client_id_after"].as_i64(),
        Some(killed),
        "the reads after the kill used the killed connection: {s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ioredis_keeps_database_7_chosen_in_a_transaction_after_a_kill() {
    ioredis_select_after_a_kill(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ioredis_keeps_database_7_chosen_in_a_transaction_after_a_kill_in_the_shared_mode() {
    ioredis_select_after_a_kill(Some(2)).await;
}

async fn ioredis_select_after_a_kill(pool_size: Option<usize>) {
    let mut rig = Rig::start(pool_size).await;
    // A read in db 0 would show this value instead of db 7's.
    assert_eq!(rig.admin.cmd(&["SET", "before", "db0"]).await, Reply::ok());
    let (killed, s) = run_script(&mut rig, "ioredis_select.js", &[]).await;
    assert_eq!(
        s["get_before"], "db7",
        "GET after the kill read from the wrong database: {s}"
    );
    assert_eq!(s["set_after"], "OK", "{s}");
    assert_eq!(s["get_after"], "db7", "{s}");
    assert_ne!(
        s["client_id_after"].as_i64(),
        Some(killed),
        "the commands after the kill used the killed connection: {s}"
    );
    assert_eq!(
        rig.admin_get("7", "after").await,
        Reply::bulk("db7"),
        "the SET after the kill must land in db 7: {s}"
    );
    assert_eq!(
        rig.admin_get("0", "after").await,
        Reply::Null,
        "the SET after the kill landed in db 0: {s}"
    );
    assert_eq!(
        rig.admin_get("0", "before").await,
        Reply::bulk("db0"),
        "db 0 was written: {s}"
    );
}

//! Cluster mode against a real Redis Cluster (three primaries with one replica each, TLS only,
//! ACL users, token expiry emulated on every node): cluster-aware clients (`redis-cli -c`,
//! redis-py's `RedisCluster`) work through the proxy's local ports, never receive a cache-side
//! address, and keep working through resharding, failover, a new node and token rotations.

use test_harness as support;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use support::cluster::*;
use support::*;
use tokio::net::TcpStream;

/// Arguments for a cluster-mode proxy in front of `cluster`, entering at node `seed`.
/// The certificate names only `localhost`: every node connection must verify that name,
/// although the cluster names its nodes by IP address.
fn cluster_proxy_args(
    cluster: &TlsCluster,
    seed: &str,
    token_file: &std::path::Path,
) -> Vec<String> {
    let mut args = proxy_args_to(seed, &cluster.tls.ca_file, token_file);
    let admin = args.iter().position(|a| a == "--admin-listen").unwrap();
    args[admin + 1] = "127.0.0.1:0".into();
    args.extend(["--cluster", "--cluster-refresh", "1s"].map(String::from));
    args
}

/// A cluster-mode proxy in front of `cluster` (see [`cluster_proxy_args`]), once it has a
/// listener for every node; and those listeners.
async fn start_proxy(
    cluster: &TlsCluster,
    seed: &str,
    rotator: &ClusterRotator,
) -> (Proxy, HashMap<String, SocketAddr>) {
    let proxy = Proxy::start(
        &cluster_proxy_args(cluster, seed, &rotator.file.path),
        "info",
    )
    .await;
    let listeners = wait_for_listeners(&proxy, cluster).await;
    (proxy, listeners)
}

/// The node listeners the proxy logged: cluster node address to local listener.
fn node_listeners(proxy: &Proxy) -> HashMap<String, SocketAddr> {
    let mut out = HashMap::new();
    for line in proxy.raw_logs().lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let f = &v["fields"];
        if f["message"] == "cluster node listening" {
            let node = f["node"].as_str().unwrap().to_owned();
            let addr = f["address"].as_str().unwrap().parse().unwrap();
            out.insert(node, addr);
        }
    }
    out
}

/// Waits until the proxy has a listener for every node of the cluster.
async fn wait_for_listeners(proxy: &Proxy, cluster: &TlsCluster) -> HashMap<String, SocketAddr> {
    let want: BTreeSet<String> = cluster.addrs().into_iter().collect();
    let mut got = HashMap::new();
    let ok = wait_until(Duration::from_secs(20), || {
        got = node_listeners(proxy);
        let have: BTreeSet<String> = got.keys().cloned().collect();
        let done = want.is_subset(&have);
        async move { done }
    })
    .await;
    assert!(
        ok,
        "listeners for every node {want:?}; have {got:?}; log:\n{}",
        proxy.logs()
    );
    got
}

/// Fails unless `addr` (`ip:port`) is one of the proxy's local listeners.
fn assert_local(addr: &str, local: &BTreeSet<String>, what: &str) {
    assert!(
        local.contains(addr),
        "{what}: {addr} is not a local listener of the proxy ({local:?})"
    );
}

fn local_set(proxy: &Proxy) -> BTreeSet<String> {
    let mut set: BTreeSet<String> = node_listeners(proxy)
        .values()
        .map(|a| a.to_string())
        .collect();
    set.insert(proxy.addr.to_string());
    set
}

fn text(r: &Reply) -> String {
    match r {
        Reply::Bulk(b) | Reply::Verbatim(b) => String::from_utf8_lossy(b).into_owned(),
        Reply::Status(s) | Reply::Error(s) => s.clone(),
        Reply::Int(n) => n.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// Checks every node address in a CLUSTER SLOTS reply (either protocol).
fn check_slots(reply: &Reply, local: &BTreeSet<String>) -> usize {
    let Reply::Array(ranges) = reply else {
        panic!("CLUSTER SLOTS: {reply:?}")
    };
    let mut nodes = 0;
    for range in ranges {
        let Reply::Array(items) = range else {
            panic!("range: {range:?}")
        };
        for node in &items[2..] {
            let Reply::Array(n) = node else {
                panic!("node: {node:?}")
            };
            assert_local(
                &format!("{}:{}", text(&n[0]), text(&n[1])),
                local,
                "CLUSTER SLOTS",
            );
            // Metadata: an `ip` entry, if any, is local too; no host name is left.
            if let Some(meta) = n.get(3) {
                let pairs: Vec<(String, String)> = match meta {
                    Reply::Map(m) => m.iter().map(|(k, v)| (text(k), text(v))).collect(),
                    Reply::Array(a) => a.chunks(2).map(|c| (text(&c[0]), text(&c[1]))).collect(),
                    other => panic!("metadata: {other:?}"),
                };
                for (k, v) in pairs {
                    assert!(k != "hostname", "a host name in CLUSTER SLOTS metadata");
                    if k == "ip" {
                        assert_eq!(v, "127.0.0.1");
                    }
                }
            }
            nodes += 1;
        }
    }
    nodes
}

/// Checks every node of a CLUSTER SHARDS reply; returns how many there are.
fn check_shards(reply: &Reply, local: &BTreeSet<String>) -> usize {
    fn pairs(r: &Reply) -> Vec<(String, &Reply)> {
        match r {
            Reply::Map(m) => m.iter().map(|(k, v)| (text(k), v)).collect(),
            Reply::Array(a) => a.chunks(2).map(|c| (text(&c[0]), &c[1])).collect(),
            other => panic!("not a map: {other:?}"),
        }
    }
    let Reply::Array(shards) = reply else {
        panic!("CLUSTER SHARDS: {reply:?}")
    };
    let mut count = 0;
    for shard in shards {
        let (_, nodes) = pairs(shard)
            .into_iter()
            .find(|(k, _)| k == "nodes")
            .expect("nodes");
        let Reply::Array(nodes) = nodes else {
            panic!("nodes: {nodes:?}")
        };
        for node in nodes {
            let fields: HashMap<String, String> =
                pairs(node).into_iter().map(|(k, v)| (k, text(v))).collect();
            assert!(
                !fields.contains_key("tls-port"),
                "tls-port left: {fields:?}"
            );
            assert!(
                !fields.contains_key("hostname"),
                "hostname left: {fields:?}"
            );
            assert_eq!(fields["ip"], "127.0.0.1", "{fields:?}");
            assert_eq!(fields["endpoint"], "127.0.0.1", "{fields:?}");
            assert_local(
                &format!("127.0.0.1:{}", fields["port"]),
                local,
                "CLUSTER SHARDS",
            );
            count += 1;
        }
    }
    count
}

/// The second field of each `CLUSTER NODES` line, without `@cport` and `,hostname`.
fn nodes_lines_addrs(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let field = l.trim_start_matches("txt:").split(' ').nth(1).unwrap();
            field.split(['@', ',']).next().unwrap().to_owned()
        })
        .collect()
}

async fn proxy_client(addr: SocketAddr) -> ProxyClient {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    RespClient::new(tcp)
}

/// A key whose slot `node` (index) does not serve, per the cluster's own view.
async fn key_not_on(cluster: &TlsCluster, node: usize, prefix: &str) -> (String, u16) {
    let slots = cluster.slots(node).await;
    let id = cluster.node_id(node).to_owned();
    let owned = |slot: u16| {
        slots
            .iter()
            .any(|r| r.primary_id == id && r.start <= slot && slot <= r.end)
    };
    let slot = (0..SLOTS as u16).find(|s| !owned(*s)).unwrap();
    (key_for_slot(slot, prefix), slot)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_and_redirects_name_only_local_listeners() {
    let cluster =
        TlsCluster::start_with_cert(3, 1, TlsMaterial::generate_for(&["localhost"])).await;
    let rotator = ClusterRotator::new(&cluster).await;
    let seed = cluster.addr(0);
    let (proxy, listeners) = start_proxy(&cluster, &seed, &rotator).await;
    let local = local_set(&proxy);
    // No two nodes share a listener, and none is a node's own port.
    let distinct: BTreeSet<_> = listeners.values().collect();
    assert_eq!(distinct.len(), listeners.len());
    let real: BTreeSet<String> = cluster.addrs().into_iter().collect();
    assert!(local.is_disjoint(&real));

    for proto in [2, 3] {
        let mut c = proxy_client(proxy.addr).await;
        if proto == 3 {
            let hello = c.cmd(&["HELLO", "3"]).await;
            assert!(!hello.is_error(), "{hello:?}");
        }
        let slots = c.cmd(&["CLUSTER", "SLOTS"]).await;
        assert_eq!(check_slots(&slots, &local), 6, "RESP{proto}: {slots:?}");
        let shards = c.cmd(&["CLUSTER", "SHARDS"]).await;
        assert_eq!(check_shards(&shards, &local), 6, "RESP{proto}: {shards:?}");
        let nodes = c.cmd(&["CLUSTER", "NODES"]).await;
        let addrs = nodes_lines_addrs(&text(&nodes));
        assert_eq!(addrs.len(), 6, "{nodes:?}");
        for a in &addrs {
            assert_local(a, &local, "CLUSTER NODES");
        }
        let primary_id = cluster.node_id(0).to_owned();
        let replicas = c.cmd(&["CLUSTER", "REPLICAS", &primary_id]).await;
        let Reply::Array(lines) = &replicas else {
            panic!("CLUSTER REPLICAS: {replicas:?}")
        };
        assert_eq!(lines.len(), 1, "{replicas:?}");
        for a in nodes_lines_addrs(&text(&lines[0])) {
            assert_local(&a, &local, "CLUSTER REPLICAS");
        }

        // A key served elsewhere: MOVED names a local listener, which serves it.
        let (key, slot) = key_not_on(&cluster, 0, &format!("moved{proto}")).await;
        let moved = c.cmd(&["SET", &key, "v"]).await;
        let Reply::Error(e) = &moved else {
            panic!("expected MOVED, got {moved:?}")
        };
        let parts: Vec<&str> = e.split(' ').collect();
        assert_eq!(parts[..2], ["MOVED", slot.to_string().as_str()], "{e}");
        assert_local(parts[2], &local, "MOVED");
        let mut there = proxy_client(parts[2].parse().unwrap()).await;
        assert_eq!(there.cmd(&["SET", &key, "v"]).await, Reply::ok());
        assert_eq!(there.cmd(&["GET", &key]).await, Reply::bulk("v"));

        // Inside MULTI, the redirect comes at queue time, rewritten too.
        assert_eq!(c.cmd(&["MULTI"]).await, Reply::ok());
        let queued = c.cmd(&["GET", &key]).await;
        assert!(
            matches!(&queued, Reply::Error(e) if e.starts_with("MOVED ") && local.contains(e.split(' ').nth(2).unwrap())),
            "{queued:?}"
        );
        let exec = c.cmd(&["EXEC"]).await;
        assert!(exec.is_error(), "{exec:?}");
        // Topology commands are refused inside MULTI (their reply would come unrewritten).
        assert_eq!(c.cmd(&["MULTI"]).await, Reply::ok());
        let refused = c.cmd(&["CLUSTER", "SLOTS"]).await;
        assert!(
            matches!(&refused, Reply::Error(e) if e.contains("inside MULTI")),
            "{refused:?}"
        );
        assert_eq!(c.cmd(&["DISCARD"]).await, Reply::ok());
    }

    // The metrics count the node listeners and the topology reads.
    let metrics = scrape_metrics(admin_address(&proxy)).await;
    assert!(
        metrics.contains("entra_redis_proxy_cluster_nodes{upstream=\"default\"} 6\n"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("entra_redis_proxy_cluster_topology_refreshes_total{result=\"success\",upstream=\"default\"} 0\n"),
        "{metrics}"
    );

    // redis-cli -c follows the redirects through the local ports: a SET and a GET in every
    // slot, read from its standard input by one redis-cli process.
    let keys: Vec<String> = (0..SLOTS as u16).map(|s| key_for_slot(s, "cli")).collect();
    let sets: String = keys.iter().map(|k| format!("SET {k} v-{k}\n")).collect();
    let out = redis_cli_stdin(proxy.addr, &sets, &local);
    assert_eq!(
        out.iter().filter(|l| *l == "OK").count(),
        SLOTS,
        "redis-cli -c SETs"
    );
    let gets: String = keys.iter().map(|k| format!("GET {k}\n")).collect();
    let out = redis_cli_stdin(proxy.addr, &gets, &local);
    let want: Vec<String> = keys.iter().map(|k| format!("v-{k}")).collect();
    assert!(
        out == want,
        "redis-cli -c GETs: {} replies, not the values set",
        out.len()
    );

    // ASK during a slot migration names a local listener too: a slot of node 0 marked as
    // migrating to node 1; a key not (yet) on node 0 is asked for on node 1.
    let slot = cluster
        .slots(0)
        .await
        .iter()
        .find(|r| r.primary_id == cluster.node_id(0))
        .unwrap()
        .start;
    let (a, b) = (cluster.node_id(0).to_owned(), cluster.node_id(1).to_owned());
    let slot_s = slot.to_string();
    let mut admin_b = cluster.admin(1).await;
    let mut admin_a = cluster.admin(0).await;
    assert_eq!(
        admin_b
            .cmd(&["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &a])
            .await,
        Reply::ok()
    );
    assert_eq!(
        admin_a
            .cmd(&["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &b])
            .await,
        Reply::ok()
    );
    let mut c = proxy_client(proxy.addr).await;
    let ask = c.cmd(&["GET", &key_for_slot(slot, "ask")]).await;
    let Reply::Error(e) = &ask else {
        panic!("expected ASK, got {ask:?}")
    };
    let parts: Vec<&str> = e.split(' ').collect();
    assert_eq!(parts[..2], ["ASK", slot_s.as_str()], "{e}");
    assert_eq!(parts[2], listeners[&cluster.addr(1)].to_string(), "{e}");
    let mut there = proxy_client(parts[2].parse().unwrap()).await;
    assert_eq!(there.cmd(&["ASKING"]).await, Reply::ok());
    assert_eq!(
        there.cmd(&["GET", &key_for_slot(slot, "ask")]).await,
        Reply::Null
    );
    for admin in [&mut admin_a, &mut admin_b] {
        assert_eq!(
            admin.cmd(&["CLUSTER", "SETSLOT", &slot_s, "STABLE"]).await,
            Reply::ok()
        );
    }
}

/// `redis-cli -c -h IP -p PORT` for the listener at `addr` (cluster mode: follows redirects).
fn redis_cli_c(addr: SocketAddr) -> std::process::Command {
    let mut cmd = std::process::Command::new("redis-cli");
    cmd.args([
        "-c",
        "-h",
        &addr.ip().to_string(),
        "-p",
        &addr.port().to_string(),
    ]);
    cmd
}

/// Runs `redis-cli -c -h 127.0.0.1 -p PORT` with `commands` (one per line) on its standard
/// input; returns the replies it printed. The redirects it announces ("-> Redirected to slot
/// [N] located at ADDR") must name local listeners; they are left out of the result.
fn redis_cli_stdin(addr: SocketAddr, commands: &str, local: &BTreeSet<String>) -> Vec<String> {
    use std::io::Write;
    let mut child = redis_cli_c(addr)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run redis-cli");
    let mut stdin = child.stdin.take().unwrap();
    let input = commands.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("redis-cli output");
    writer.join().unwrap().expect("write redis-cli's input");
    assert!(out.status.success(), "redis-cli: {out:?}");
    let mut replies = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        match line.strip_prefix("-> Redirected to slot [") {
            Some(rest) => {
                let target = rest.split(" located at ").nth(1).expect("redirect target");
                assert_local(target, local, "redis-cli redirected");
            }
            None => replies.push(line.to_owned()),
        }
    }
    replies
}

/// Runs `redis-cli -c -h 127.0.0.1 -p PORT args...` (cluster mode: follows redirects).
fn redis_cli(addr: SocketAddr, args: &[&str]) -> String {
    let out = redis_cli_c(addr)
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs tests/cluster_client.py through the proxy's seed listener; returns whether it exited
/// 0, and its JSON summary.
async fn python_client(seed: SocketAddr, extra: &[&str]) -> (bool, serde_json::Value) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cluster_client.py");
    let output = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new("python3")
            .arg(script)
            .args(["--host", "127.0.0.1", "--port", &seed.port().to_string()])
            .args(extra)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("cluster_client.py finished in time")
    .expect("run python3 (scripts/test.sh installs redis-py)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "cluster_client.py printed no JSON summary ({e}, {}):\n{}\n{}",
            output.status,
            redact(&stdout),
            redact(&String::from_utf8_lossy(&output.stderr))
        )
    });
    (output.status.success(), summary)
}

/// The node addresses a client learned, all of which must be local listeners.
fn learned_nodes(summary: &serde_json::Value, local: &BTreeSet<String>) -> BTreeSet<String> {
    let nodes: BTreeSet<String> = summary["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect();
    for n in &nodes {
        assert_local(n, local, "redis-py learned");
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_cluster_client_hits_every_slot_through_local_ports() {
    let cluster = TlsCluster::start(3, 1).await;
    let rotator = ClusterRotator::new(&cluster).await;
    let seed = cluster.addr(1);
    let (proxy, _) = start_proxy(&cluster, &seed, &rotator).await;
    // RESP2 over every slot in cluster pipelines of 64 keys (redis-py groups them by node:
    // pipelined traffic through every node listener), RESP3 one command at a time.
    for proto in ["2", "3"] {
        let (keys, pipeline) = if proto == "2" {
            (SLOTS.to_string(), "64")
        } else {
            ("2000".into(), "0")
        };
        let (ok, summary) = python_client(
            proxy.addr,
            &[
                "--keys",
                &keys,
                "--protocol",
                proto,
                "--prefix",
                &format!("py{proto}"),
                "--pipeline",
                pipeline,
            ],
        )
        .await;
        assert!(ok, "RESP{proto}: {summary}");
        assert_eq!(summary["failed"], 0, "{summary}");
        assert_eq!(
            summary["ok"].as_u64().unwrap(),
            2 * keys.parse::<u64>().unwrap()
        );
        let nodes = learned_nodes(&summary, &local_set(&proxy));
        assert_eq!(nodes.len(), 6, "every node, replicas included: {summary}");
    }
    // Every key landed on the node that serves its slot (checked on the cluster itself).
    let mut total = 0;
    for p in cluster.primaries().await {
        let mut admin = cluster.admin(p).await;
        match admin.cmd(&["DBSIZE"]).await {
            Reply::Int(n) => total += n,
            other => panic!("DBSIZE: {other:?}"),
        }
    }
    assert_eq!(total as usize, SLOTS + 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_failover_and_rotations_under_traffic_fail_no_command() {
    let cluster = TlsCluster::start(3, 1).await;
    let mut rotator = ClusterRotator::new(&cluster).await;
    let seed = cluster.addr(0);
    let (proxy, _) = start_proxy(&cluster, &seed, &rotator).await;

    let addr = proxy.addr;
    // The traffic runs until this test is done (the stop file), at most 150 s: a fixed 40 s
    // once ran out during a slow resharding, and the next rotation then found no connection
    // on any node.
    let stop_dir = tempfile::tempdir().unwrap();
    let stop = stop_dir.path().join("stop");
    let stop_arg = stop.display().to_string();
    let traffic = tokio::spawn(async move {
        python_client(
            addr,
            &[
                "--keys",
                "16384",
                "--duration",
                "150",
                "--until-file",
                &stop_arg,
                "--prefix",
                "moving",
            ],
        )
        .await
    });
    // Wait until the client has a connection to every primary (the token user's).
    let user = rotator.current.oid.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let lists = cluster.client_lists().await;
        if (0..3).all(|p| lists[p].iter().any(|c| c.user == user)) {
            break;
        }
        if std::time::Instant::now() >= deadline {
            // What the client saw decides whose fault it is: its summary comes when its run ends.
            std::fs::write(&stop, b"").unwrap();
            let (ok, summary) = traffic.await.unwrap();
            panic!(
                "redis-py did not reach every primary within 30 s: {lists:?}; the client \
                 (exit ok: {ok}) reported {summary}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    rotator
        .rotate(&cluster, Expect::EachPrimary(1))
        .await
        .expect("rotation before resharding");
    let (from, to) = (cluster.node_id(0).to_owned(), cluster.node_id(1).to_owned());
    cluster.reshard(&from, &to, 1000).await;
    rotator
        .rotate(&cluster, Expect::EachPrimary(1))
        .await
        .expect("rotation after resharding");
    let replica = cluster.replicas_of(2).await[0];
    cluster.failover(replica).await;
    rotator
        .rotate(&cluster, Expect::EachPrimary(1))
        .await
        .expect("rotation after failover");

    std::fs::write(&stop, b"").unwrap();
    let (ok, summary) = traffic.await.unwrap();
    assert!(ok, "{summary}\nproxy log:\n{}", proxy.logs());
    assert_eq!(summary["failed"], 0, "{summary}");
    assert!(summary["ok"].as_u64().unwrap() > 1000, "{summary}");
    learned_nodes(&summary, &local_set(&proxy));
    // The moved slots are served by the new owner, reached through its local listener.
    assert_eq!(cluster.slot_count(0, 0).await, 5461 - 1000);
    // No token, or part of one, in the proxy's log.
    let logs = proxy.raw_logs();
    for t in &rotator.issued {
        assert!(
            !logs.contains(t.signature()),
            "a token signature in the log"
        );
        assert!(!logs.contains(t.payload()), "a token payload in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_gets_a_listener_and_redirects_to_it_work() {
    let mut cluster = TlsCluster::start(3, 0).await;
    let rotator = ClusterRotator::new(&cluster).await;
    let seed = cluster.addr(0);
    // Two proxies: one re-reads the topology every second, the other only at start, so that
    // it first hears of the new node in a MOVED.
    // The first from a configured port range (ports already taken are skipped).
    let base: u16 = 23000 + rand::random::<u16>() % 9000;
    let range = base..=base + 19;
    let mut args = cluster_proxy_args(&cluster, &seed, &rotator.file.path);
    args.extend(["--cluster-ports".into(), format!("{base}-{}", base + 19)]);
    let fast = Proxy::start(&args, "info").await;
    let mut args = cluster_proxy_args(&cluster, &seed, &rotator.file.path);
    let at = args.iter().position(|a| a == "--cluster-refresh").unwrap();
    args[at + 1] = "1h".into();
    let slow = Proxy::start(&args, "info").await;
    wait_for_listeners(&fast, &cluster).await;
    wait_for_listeners(&slow, &cluster).await;

    let new = cluster.add_node().await;
    let new_id = cluster.node_id(new).to_owned();
    let from = cluster.node_id(1).to_owned();
    cluster.reshard(&from, &new_id, 50).await;
    let slot = cluster
        .slots(0)
        .await
        .iter()
        .find(|r| r.primary_id == new_id)
        .expect("the new node serves slots")
        .start;
    let key = key_for_slot(slot, "new-node");

    // The re-reading proxy opened a listener for the new node on its own.
    let fast_listeners = wait_for_listeners(&fast, &cluster).await;
    for l in fast_listeners.values() {
        assert!(range.contains(&l.port()), "{l} is outside {range:?}");
    }
    let new_local = fast_listeners[&cluster.addr(new)];
    let mut c = proxy_client(fast.addr).await;
    let moved = c.cmd(&["SET", &key, "fresh"]).await;
    assert_eq!(moved, Reply::Error(format!("MOVED {slot} {new_local}")));
    assert_eq!(redis_cli(fast.addr, &["SET", &key, "fresh"]).trim(), "OK");
    let mut there = proxy_client(new_local).await;
    assert_eq!(there.cmd(&["GET", &key]).await, Reply::bulk("fresh"));

    // The other one opens it when the MOVED names the node, before the client sees it.
    assert!(!node_listeners(&slow).contains_key(&cluster.addr(new)));
    let mut c = proxy_client(slow.addr).await;
    let moved = c.cmd(&["GET", &key]).await;
    let local = local_set(&slow);
    let Reply::Error(e) = &moved else {
        panic!("expected MOVED, got {moved:?}")
    };
    let target = e.strip_prefix(&format!("MOVED {slot} ")).expect("MOVED");
    assert_local(target, &local, "MOVED to a node first heard of");
    assert_eq!(
        node_listeners(&slow)[&cluster.addr(new)].to_string(),
        target
    );
    let mut there = proxy_client(target.parse().unwrap()).await;
    assert_eq!(there.cmd(&["GET", &key]).await, Reply::bulk("fresh"));
}

/// Warm connections in cluster mode: each node listener keeps its own, to its own node, so a
/// client that follows a redirect to a node listener is served at once by that node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_listener_keeps_warm_connections_to_its_own_node() {
    let cluster = TlsCluster::start(3, 0).await;
    let rotator = ClusterRotator::new(&cluster).await;
    let seed = cluster.addr(0);
    let mut args = cluster_proxy_args(&cluster, &seed, &rotator.file.path);
    let at = args.iter().position(|a| a == "--warm-connections").unwrap();
    args[at + 1] = "1".into();
    let proxy = Proxy::start(&args, "info").await;
    let listeners = wait_for_listeners(&proxy, &cluster).await;
    let metrics = admin_address(&proxy);
    // One for the seed listener and one per node listener.
    let want = (1 + listeners.len()) as f64;
    let mut m = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        m = scrape_metrics(metrics).await;
        if metric_value(
            &m,
            "entra_redis_proxy_warm_connections{upstream=\"default\"}",
        ) == want
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric_value(
            &m,
            "entra_redis_proxy_warm_connections{upstream=\"default\"}"
        ),
        want,
        "{m}"
    );
    for (node, local) in &listeners {
        let index = cluster.index_of_addr(node).expect("a cluster node");
        let mut c = proxy_client(*local).await;
        assert_eq!(
            c.cmd(&["CLUSTER", "MYID"]).await,
            Reply::bulk(cluster.node_id(index)),
            "the listener for {node}"
        );
    }
    let m = scrape_metrics(metrics).await;
    assert_eq!(
        metric_value(
            &m,
            "entra_redis_proxy_warm_connection_uses_total{result=\"hit\",upstream=\"default\"}"
        ),
        listeners.len() as f64,
        "{m}"
    );
}

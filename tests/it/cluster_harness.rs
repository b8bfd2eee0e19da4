//! Tests of the Redis Cluster harness itself (crates/test-harness/src/cluster.rs), talking directly to a
//! real TLS cluster, no proxy: creation, token users on every node, resharding, failover,
//! adding a node, the Python cluster client, and the exact bytes of the cluster topology
//! replies (what a cluster-aware proxy has to parse and rewrite).

use test_harness as support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::cluster::{
    key_for_slot, key_slot, raw_cmd, show_raw, ClusterRotator, Expect, TlsCluster, SLOTS,
};
use support::{wait_until, Protocol, Reply, Token};

/// Every slot appears exactly once in `CLUSTER SLOTS` of every node.
async fn assert_full_coverage(cluster: &TlsCluster) {
    for node in 0..cluster.len() {
        let mut covered = vec![0u8; SLOTS];
        for range in cluster.slots(node).await {
            for slot in range.start..=range.end {
                covered[usize::from(slot)] += 1;
            }
        }
        let bad: Vec<usize> = (0..SLOTS).filter(|&s| covered[s] != 1).collect();
        assert!(
            bad.is_empty(),
            "node {node}: {} slot(s) not covered exactly once, first {:?}",
            bad.len(),
            &bad[..bad.len().min(10)]
        );
    }
}

#[tokio::test]
async fn cluster_starts_with_three_primaries_three_replicas_and_full_coverage() {
    let cluster = TlsCluster::start(3, 1).await;
    assert_eq!(cluster.len(), 6);
    let primaries = cluster.primaries().await;
    let replicas = cluster.replicas().await;
    assert_eq!(
        primaries,
        vec![0, 1, 2],
        "the first nodes are the primaries"
    );
    assert_eq!(replicas, vec![3, 4, 5]);
    for &p in &primaries {
        let theirs = cluster.replicas_of(p).await;
        assert_eq!(theirs.len(), 1, "primary {p} has replicas {theirs:?}");
        assert_eq!(cluster.primary_of(theirs[0]).await, p);
        assert!(cluster.slot_count(0, p).await > 5000);
    }
    assert_full_coverage(&cluster).await;
    // Every node announces its TLS port in CLUSTER SLOTS (there is no plain port).
    let slots = cluster.slots(3).await;
    let announced: BTreeSet<String> = slots.iter().map(|r| r.primary_addr.clone()).collect();
    let expected: BTreeSet<String> = primaries.iter().map(|&p| cluster.addr(p)).collect();
    assert_eq!(announced, expected);
    assert_eq!(cluster.seed_addr().await, cluster.addr(0));
    // The replicas are listed too (the harness makes their replication offset non-zero).
    for range in &slots {
        let replica = cluster.index_of(&range.primary_id);
        let expected: Vec<String> = cluster
            .replicas_of(replica)
            .await
            .iter()
            .map(|&r| cluster.node_id(r).to_owned())
            .collect();
        assert_eq!(range.replica_ids, expected, "{range:?}");
    }
    // A write to a primary reaches its replica (replication works with `default` off).
    let key = key_for_slot(0, "replicated");
    let owner = slots.iter().find(|r| r.start == 0).expect("slot 0");
    let owner = cluster.index_of(&owner.primary_id);
    let mut admin = cluster.admin(owner).await;
    assert_eq!(admin.cmd(&["SET", key.as_str(), "v"]).await, Reply::ok());
    assert_eq!(admin.cmd(&["WAIT", "1", "5000"]).await, Reply::Int(1));
    let replica = cluster.replicas_of(owner).await[0];
    let mut on_replica = cluster.admin(replica).await;
    assert_eq!(on_replica.cmd(&["READONLY"]).await, Reply::ok());
    assert_eq!(
        on_replica.cmd(&["GET", key.as_str()]).await,
        Reply::bulk("v")
    );
}

#[tokio::test]
async fn key_slot_matches_the_server() {
    let cluster = TlsCluster::start(3, 0).await;
    let mut admin = cluster.admin(0).await;
    for key in [
        "",
        "a",
        "foo",
        "{user1000}.following",
        "foo{}{bar}",
        "{{x}}y",
        "x{y",
    ] {
        let reply = admin.cmd(&["CLUSTER", "KEYSLOT", key]).await;
        assert_eq!(
            reply,
            Reply::Int(i64::from(key_slot(key.as_bytes()))),
            "{key:?}"
        );
    }
    let key = key_for_slot(12345, "k");
    assert_eq!(
        admin.cmd(&["CLUSTER", "KEYSLOT", key.as_str()]).await,
        Reply::Int(12345)
    );
}

#[tokio::test]
async fn token_users_exist_on_every_node_until_deleted_everywhere() {
    let cluster = TlsCluster::start(3, 1).await;
    let token = Token::mint(Duration::from_secs(3600));
    cluster.create_token_user_all(&token).await;
    let mut conns = Vec::new();
    for node in 0..cluster.len() {
        let mut conn = cluster.connect_as(node, &token).await;
        assert_eq!(
            conn.cmd(&["ACL", "WHOAMI"]).await,
            Reply::bulk(&token.oid),
            "node {node}"
        );
        conns.push(conn);
    }
    // Another token's user does not exist anywhere.
    let other = Token::mint(Duration::from_secs(3600));
    let mut conn = cluster.connect(0).await;
    let reply = conn
        .cmd(&["AUTH", other.oid.as_str(), other.jwt.as_str()])
        .await;
    assert!(
        reply.text().unwrap_or_default().starts_with("WRONGPASS"),
        "{reply:?}"
    );

    assert_eq!(cluster.delete_user_all(&token.oid).await, 6);
    for (node, conn) in conns.iter_mut().enumerate() {
        // ACL DELUSER disconnects the user's connections on that node.
        let frames = conn.read_until_closed().await;
        assert!(frames.is_empty(), "node {node}: {frames:?}");
        let mut fresh = cluster.connect(node).await;
        let reply = fresh
            .cmd(&["AUTH", token.oid.as_str(), token.jwt.as_str()])
            .await;
        assert!(
            reply.text().unwrap_or_default().starts_with("WRONGPASS"),
            "node {node}: {reply:?}"
        );
    }
}

#[tokio::test]
async fn cluster_rotator_waits_for_every_node_then_expires_the_old_user() {
    let cluster = TlsCluster::start(3, 0).await;
    let mut rotator = ClusterRotator::new(&cluster).await;
    rotator.reauth_timeout = Duration::from_secs(10);
    let mut conns = Vec::new();
    for node in 0..cluster.len() {
        conns.push(cluster.connect_as(node, &rotator.current).await);
    }

    // A stand-in for the proxy: once the token file changes, re-AUTH the connection on every
    // node. The rotation completes, and the connections survive the old user's deletion.
    let old = rotator.current.clone();
    let path = rotator.file.path.clone();
    let reauth = async {
        let mut jwt = String::new();
        let changed = wait_until(Duration::from_secs(10), || {
            jwt = std::fs::read_to_string(&path).unwrap_or_default();
            let changed = !jwt.is_empty() && jwt != old.jwt;
            async move { changed }
        })
        .await;
        assert!(changed, "the token file did not change");
        let oid = oid_of(&jwt);
        for conn in conns.iter_mut() {
            let reply = conn.cmd(&["AUTH", oid.as_str(), jwt.as_str()]).await;
            assert_eq!(reply, Reply::ok());
        }
        jwt
    };
    let (rotated, jwt) = tokio::join!(rotator.rotate(&cluster, Expect::EachNode(1)), reauth);
    let new = rotated.expect("the rotation completes once every node's connection moved");
    assert_eq!(new.jwt, jwt);
    for (node, conn) in conns.iter_mut().enumerate() {
        assert_eq!(
            conn.cmd(&["ACL", "WHOAMI"]).await,
            Reply::bulk(&new.oid),
            "node {node}"
        );
    }
    for node in 0..cluster.len() {
        let mut fresh = cluster.connect(node).await;
        let reply = fresh
            .cmd(&["AUTH", old.oid.as_str(), old.jwt.as_str()])
            .await;
        assert!(
            reply.is_error(),
            "node {node}: the old user is gone: {reply:?}"
        );
    }

    // Nobody re-authenticates this time: the rotation times out, says where connections are
    // still on the old user, and keeps that user (nothing is disconnected).
    rotator.reauth_timeout = Duration::from_millis(500);
    let err = rotator
        .rotate(&cluster, Expect::Total(0))
        .await
        .expect_err("connections are still on the old user");
    for node in 0..cluster.len() {
        assert!(err.contains(&format!("node {node}: 1 on old")), "{err}");
    }
    for (node, conn) in conns.iter_mut().enumerate() {
        assert_eq!(
            conn.cmd(&["ACL", "WHOAMI"]).await,
            Reply::bulk(&new.oid),
            "node {node}: the old user was kept"
        );
    }
    // Nobody is on the previous (never used) token's user now, but Expect::Total(4) wants four
    // connections on the new one, over all nodes.
    let err = rotator
        .rotate(&cluster, Expect::Total(4))
        .await
        .expect_err("nobody is on the newest user");
    assert!(err.contains("want Total(4)"), "{err}");
}

/// The `oid` claim of the test token `jwt`.
fn oid_of(jwt: &str) -> String {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).expect("payload");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    let v: serde_json::Value = serde_json::from_slice(&json).expect("JSON payload");
    v["oid"].as_str().expect("oid claim").to_owned()
}

/// Which node owns each slot, by node index, as node `observer` sees it.
async fn owners(cluster: &TlsCluster, observer: usize) -> Vec<usize> {
    let mut owner = vec![usize::MAX; SLOTS];
    for range in cluster.slots(observer).await {
        let node = cluster.index_of(&range.primary_id);
        for slot in range.start..=range.end {
            owner[usize::from(slot)] = node;
        }
    }
    owner
}

#[tokio::test]
async fn reshard_moves_exactly_the_requested_slots_with_their_keys() {
    let cluster = TlsCluster::start(3, 0).await;
    let before = owners(&cluster, 2).await;
    let from_slots: Vec<u16> = (0..SLOTS as u16)
        .filter(|&s| before[usize::from(s)] == 0)
        .collect();
    // Keys in the first 150 slots of the source (redis-cli moves the lowest ones first, but
    // the test does not rely on it).
    let mut admin = cluster.admin(0).await;
    let keys: Vec<(u16, String)> = from_slots[..150]
        .iter()
        .map(|&s| (s, key_for_slot(s, "resharded")))
        .collect();
    for (_, key) in &keys {
        assert_eq!(
            admin.cmd(&["SET", key.as_str(), key.as_str()]).await,
            Reply::ok()
        );
    }

    cluster
        .reshard(cluster.node_id(0), cluster.node_id(1), 100)
        .await;

    for observer in 0..cluster.len() {
        let after = owners(&cluster, observer).await;
        let moved: Vec<usize> = (0..SLOTS).filter(|&s| before[s] != after[s]).collect();
        assert_eq!(
            moved.len(),
            100,
            "node {observer} sees {} moved",
            moved.len()
        );
        assert!(
            moved.iter().all(|&s| before[s] == 0 && after[s] == 1),
            "only slots of node 0 moved, all to node 1"
        );
        assert_eq!(
            cluster.slot_count(observer, 0).await + 100,
            from_slots.len(),
            "node {observer}"
        );
    }
    // Every key is on its slot's new owner; the old owner redirects.
    let after = owners(&cluster, 0).await;
    let mut on = [cluster.admin(0).await, cluster.admin(1).await];
    let mut moved_keys = 0;
    for (slot, key) in &keys {
        let owner = after[usize::from(*slot)];
        assert_eq!(
            on[owner].cmd(&["GET", key.as_str()]).await,
            Reply::bulk(key),
            "slot {slot} on node {owner}"
        );
        if owner == 1 {
            moved_keys += 1;
            let reply = on[0].cmd(&["GET", key.as_str()]).await;
            assert_eq!(
                reply,
                Reply::Error(format!("MOVED {slot} {}", cluster.addr(1))),
                "slot {slot}"
            );
        }
    }
    assert!(moved_keys > 0, "some of the keys' slots moved");
}

#[tokio::test]
async fn failover_swaps_the_roles_of_a_replica_and_its_primary() {
    let cluster = TlsCluster::start(3, 1).await;
    let replica = cluster.replicas().await[0];
    let primary = cluster.primary_of(replica).await;
    let before = owners(&cluster, 0).await;
    let slot = before.iter().position(|&o| o == primary).expect("a slot") as u16;
    let key = key_for_slot(slot, "failover");
    let mut admin = cluster.admin(primary).await;
    assert_eq!(admin.cmd(&["SET", key.as_str(), "kept"]).await, Reply::ok());
    assert_eq!(admin.cmd(&["WAIT", "1", "5000"]).await, Reply::Int(1));

    cluster.failover(replica).await;

    let primaries = cluster.primaries().await;
    assert!(primaries.contains(&replica), "{primaries:?}");
    assert!(!primaries.contains(&primary), "{primaries:?}");
    assert_eq!(cluster.primary_of(primary).await, replica);
    for observer in 0..cluster.len() {
        let after = owners(&cluster, observer).await;
        for s in 0..SLOTS {
            let expected = if before[s] == primary {
                replica
            } else {
                before[s]
            };
            assert_eq!(after[s], expected, "node {observer}, slot {s}");
        }
    }
    let mut new_primary = cluster.admin(replica).await;
    assert_eq!(
        new_primary.cmd(&["GET", key.as_str()]).await,
        Reply::bulk("kept")
    );
    let mut old_primary = cluster.admin(primary).await;
    assert_eq!(
        old_primary.cmd(&["GET", key.as_str()]).await,
        Reply::Error(format!("MOVED {slot} {}", cluster.addr(replica)))
    );
}

#[tokio::test]
async fn an_added_node_is_known_everywhere_and_has_the_token_users() {
    let mut cluster = TlsCluster::start(3, 0).await;
    let token = Token::mint(Duration::from_secs(3600));
    cluster.create_token_user_all(&token).await;
    let new = cluster.add_node().await;
    assert_eq!(new, 3);
    for observer in 0..cluster.len() {
        let topology = cluster.topology(observer).await;
        let ids: BTreeSet<&str> = topology.iter().map(|n| n.id.as_str()).collect();
        let expected: BTreeSet<&str> = (0..4).map(|i| cluster.node_id(i)).collect();
        assert_eq!(ids, expected, "node {observer}");
        let me = topology
            .iter()
            .find(|n| n.id == cluster.node_id(new))
            .expect("the new node");
        assert!(me.is_primary() && me.slots.is_empty(), "{me:?}");
        assert_eq!(me.addr, cluster.addr(new));
    }
    let mut conn = cluster.connect_as(new, &token).await;
    assert_eq!(conn.cmd(&["PING"]).await, Reply::status("PONG"));
    // The new node can take slots.
    cluster
        .reshard(cluster.node_id(1), cluster.node_id(new), 10)
        .await;
    assert_eq!(cluster.slot_count(0, new).await, 10);
}

/// Captures the exact bytes of the topology replies over TLS, in RESP2 and RESP3, and of the
/// redirection errors, and checks what a cluster-aware proxy relies on: the port announced is
/// the TLS port, addresses are 127.0.0.1. Run with `--nocapture` to see them.
#[tokio::test]
async fn raw_topology_replies_and_redirections() {
    let cluster = TlsCluster::start(3, 1).await;
    let owner = owners(&cluster, 0).await;
    let (p0, p1) = (0, 1);
    let id0 = cluster.node_id(p0).to_owned();
    let mut conn = cluster.admin(p0).await.conn;
    let mut out = String::new();
    let mut capture = async |conn: &mut support::cluster::NodeConn, label: &str, args: &[&str]| {
        let raw = raw_cmd(conn, args).await;
        out.push_str(&format!(
            "==== {label}: {} ({} bytes) ====\n{}\n",
            args.join(" "),
            raw.len(),
            show_raw(&raw)
        ));
        String::from_utf8_lossy(&raw).into_owned()
    };
    let tls_port = format!(":{}\r\n", cluster.port(p0));
    let slots2 = capture(&mut conn, "RESP2", &["CLUSTER", "SLOTS"]).await;
    assert!(slots2.starts_with('*'), "{slots2}");
    assert!(
        slots2.contains(&tls_port),
        "CLUSTER SLOTS announces the TLS port"
    );
    assert!(slots2.contains("$9\r\n127.0.0.1\r\n"));
    let shards2 = capture(&mut conn, "RESP2", &["CLUSTER", "SHARDS"]).await;
    assert!(
        shards2.contains(&tls_port),
        "CLUSTER SHARDS has the TLS port"
    );
    let nodes2 = capture(&mut conn, "RESP2", &["CLUSTER", "NODES"]).await;
    assert!(nodes2.contains(&format!(
        "{} 127.0.0.1:{}@{}",
        id0,
        cluster.port(p0),
        cluster.port(p0) + 10000
    )));
    let replicas2 = capture(&mut conn, "RESP2", &["CLUSTER", "REPLICAS", id0.as_str()]).await;
    assert!(replicas2.starts_with("*1\r\n$"), "{replicas2}");

    let hello = capture(&mut conn, "RESP3", &["HELLO", "3"]).await;
    assert!(hello.starts_with('%'), "{hello}");
    assert_eq!(conn.protocol, Protocol::Resp3);
    let slots3 = capture(&mut conn, "RESP3", &["CLUSTER", "SLOTS"]).await;
    assert!(slots3.contains(&tls_port));
    let shards3 = capture(&mut conn, "RESP3", &["CLUSTER", "SHARDS"]).await;
    assert!(shards3.contains('%'), "CLUSTER SHARDS uses maps in RESP3");
    let nodes3 = capture(&mut conn, "RESP3", &["CLUSTER", "NODES"]).await;
    assert!(nodes3.starts_with('='), "{nodes3}");
    let replicas3 = capture(&mut conn, "RESP3", &["CLUSTER", "REPLICAS", id0.as_str()]).await;
    assert!(replicas3.starts_with("*1\r\n"), "{replicas3}");

    // -MOVED: a key of a slot node 1 owns, asked on node 0.
    let slot1 = owner
        .iter()
        .position(|&o| o == p1)
        .expect("a slot of node 1") as u16;
    let key1 = key_for_slot(slot1, "moved");
    let moved = capture(&mut conn, "RESP3", &["GET", key1.as_str()]).await;
    assert_eq!(moved, format!("-MOVED {slot1} {}\r\n", cluster.addr(p1)));
    // -ASK: a slot of node 0 marked migrating to node 1, and a key that is not on node 0.
    let slot0 = owner
        .iter()
        .position(|&o| o == p0)
        .expect("a slot of node 0") as u16;
    let key0 = key_for_slot(slot0, "asked");
    let mut admin = cluster.admin(p0).await;
    let setslot = admin
        .cmd(&[
            "CLUSTER",
            "SETSLOT",
            &slot0.to_string(),
            "MIGRATING",
            cluster.node_id(p1),
        ])
        .await;
    assert_eq!(setslot, Reply::ok());
    let ask = capture(&mut conn, "RESP3", &["GET", key0.as_str()]).await;
    assert_eq!(ask, format!("-ASK {slot0} {}\r\n", cluster.addr(p1)));
    let stable = admin
        .cmd(&["CLUSTER", "SETSLOT", &slot0.to_string(), "STABLE"])
        .await;
    assert_eq!(stable, Reply::ok());
    let cross = capture(&mut conn, "RESP3", &["MGET", key0.as_str(), key1.as_str()]).await;
    assert!(cross.starts_with("-CROSSSLOT"), "{cross}");
    let hello2 = capture(&mut conn, "RESP2", &["HELLO", "2"]).await;
    assert!(hello2.starts_with('*'));
    let moved2 = capture(&mut conn, "RESP2", &["SET", key1.as_str(), "x"]).await;
    assert_eq!(moved2, format!("-MOVED {slot1} {}\r\n", cluster.addr(p1)));

    // With announced hostnames and `cluster-preferred-endpoint-type hostname` (how a cache
    // with DNS names may present itself), the endpoint becomes the hostname.
    for node in 0..cluster.len() {
        let mut admin = cluster.admin(node).await;
        for (k, v) in [
            ("cluster-announce-hostname", "localhost"),
            ("cluster-preferred-endpoint-type", "hostname"),
        ] {
            assert_eq!(admin.cmd(&["CONFIG", "SET", k, v]).await, Reply::ok());
        }
    }
    // Hostnames travel by gossip: wait until node 0 knows every node's.
    let mut admin0 = cluster.admin(p0).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let nodes = admin0
            .cmd(&["CLUSTER", "NODES"])
            .await
            .text()
            .unwrap_or_default();
        if nodes.lines().filter(|l| l.contains(",localhost ")).count() == cluster.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node 0 did not learn every node's hostname in 20 s: {nodes}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = hello2;
    let slots_h = capture(&mut conn, "RESP2 hostname", &["CLUSTER", "SLOTS"]).await;
    assert!(slots_h.contains("$9\r\nlocalhost\r\n"), "{slots_h}");
    let shards_h = capture(&mut conn, "RESP2 hostname", &["CLUSTER", "SHARDS"]).await;
    assert!(
        shards_h.contains("$8\r\nhostname\r\n$9\r\nlocalhost\r\n"),
        "{shards_h}"
    );
    let nodes_h = capture(&mut conn, "RESP2 hostname", &["CLUSTER", "NODES"]).await;
    assert!(nodes_h.contains(",localhost "), "{nodes_h}");
    let moved_h = capture(&mut conn, "RESP2 hostname", &["GET", key1.as_str()]).await;
    assert_eq!(
        moved_h,
        format!("-MOVED {slot1} localhost:{}\r\n", cluster.port(p1))
    );
    let _ = capture(&mut conn, "RESP3 hostname", &["HELLO", "3"]).await;
    let slots_h3 = capture(&mut conn, "RESP3 hostname", &["CLUSTER", "SLOTS"]).await;
    assert!(
        slots_h3.contains("%1\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n"),
        "{slots_h3}"
    );

    println!(
        "node ports: {:?}\nnode ids: {:?}\n{out}",
        cluster.addrs(),
        (0..cluster.len())
            .map(|i| cluster.node_id(i))
            .collect::<Vec<_>>()
    );
}

/// Runs tests/cluster_client.py with `args` and the token in `CLUSTER_CLIENT_PASSWORD`;
/// returns its exit status and its JSON summary.
async fn run_cluster_client(args: &[String], token: &Token) -> (bool, serde_json::Value) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cluster_client.py");
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("python3")
            .arg(script)
            .args(args)
            .env("CLUSTER_CLIENT_PASSWORD", &token.jwt)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("cluster_client.py finished within 120 s")
    .expect("run python3 (scripts/test.sh installs redis-py)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "cluster_client.py printed no JSON summary ({e}; {}):\n{}\n{}",
            output.status,
            support::redact(&stdout),
            support::redact(&stderr)
        )
    });
    (output.status.success(), summary)
}

#[tokio::test]
async fn python_cluster_client_hits_every_slot_and_learns_every_node() {
    let cluster = TlsCluster::start(3, 1).await;
    let token = Token::mint(Duration::from_secs(3600));
    cluster.create_token_user_all(&token).await;
    let args: Vec<String> = [
        "--host",
        "127.0.0.1",
        "--port",
        &cluster.port(1).to_string(),
        "--keys",
        &SLOTS.to_string(),
        // Pipelined (by node): every slot in seconds rather than a minute on a loaded machine.
        "--pipeline",
        "64",
        "--tls",
        "--ca-file",
        &cluster.tls.ca_file.display().to_string(),
        "--user",
        &token.oid,
        "--password-env",
        "CLUSTER_CLIENT_PASSWORD",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let started = std::time::Instant::now();
    let (success, summary) = run_cluster_client(&args, &token).await;
    println!("cluster_client.py in {:?}: {summary}", started.elapsed());
    assert!(success, "{summary}");
    assert_eq!(
        summary["ok"],
        2 * SLOTS,
        "one SET and one GET per key: {summary}"
    );
    assert_eq!(summary["failed"], 0, "{summary}");
    let nodes: BTreeSet<String> = summary["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n.as_str().expect("a node address").to_owned())
        .collect();
    let all: BTreeSet<String> = cluster.addrs().into_iter().collect();
    assert_eq!(nodes, all, "redis-py learned every node, replicas included");

    // Every slot got exactly one key, on its owner.
    for primary in cluster.primaries().await {
        let owned: Vec<u16> = owners(&cluster, primary)
            .await
            .iter()
            .enumerate()
            .filter(|(_, &o)| o == primary)
            .map(|(s, _)| s as u16)
            .collect();
        let mut pipeline = Vec::new();
        for slot in &owned {
            pipeline.extend(support::encode_command(&[
                "CLUSTER",
                "COUNTKEYSINSLOT",
                &slot.to_string(),
            ]));
        }
        let mut admin = cluster.admin(primary).await;
        let replies = admin.conn.pipeline(&pipeline, owned.len()).await;
        for (slot, reply) in owned.iter().zip(&replies) {
            assert_eq!(reply, &Reply::Int(1), "slot {slot} on node {primary}");
        }
    }

    // RESP3 works the same.
    let mut resp3 = args.clone();
    resp3.extend(["--protocol", "3", "--keys", "500", "--prefix", "resp3"].map(String::from));
    let (success, summary) = run_cluster_client(&resp3, &token).await;
    assert!(success, "{summary}");
    assert_eq!(summary["ok"], 1000, "{summary}");

    // A timed run: commands that fail after redis-py's own retries are counted and make the
    // script exit non-zero. The token's user is deleted (emulated expiry) mid-run.
    for primary in cluster.primaries().await {
        assert_eq!(
            cluster.admin(primary).await.cmd(&["FLUSHALL"]).await,
            Reply::ok()
        );
    }
    let mut timed = args.clone();
    timed.extend(["--duration".to_string(), "4".to_string()]);
    let token2 = token.clone();
    let run = tokio::spawn(async move { run_cluster_client(&timed, &token2).await });
    let mut admins = Vec::new();
    for primary in cluster.primaries().await {
        admins.push(cluster.admin(primary).await);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut keys = 0;
        for admin in admins.iter_mut() {
            if let Reply::Int(n) = admin.cmd(&["DBSIZE"]).await {
                keys += n;
            }
        }
        if keys >= 100 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the timed run wrote {keys} keys in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.delete_user_all(&token.oid).await;
    let (success, summary) = run.await.expect("the timed run");
    println!("cluster_client.py, user deleted mid-run: {summary}");
    assert!(!success, "{summary}");
    assert!(summary["ok"].as_u64() >= Some(100), "{summary}");
    assert!(summary["failed"].as_u64() > Some(0), "{summary}");
    assert!(!summary["errors"].as_array().expect("errors").is_empty());
    assert!(
        !summary.to_string().contains(&token.jwt),
        "the password is never printed"
    );

    // No reachable node at all: a failure too, with a summary.
    let (success, summary) = run_cluster_client(&args, &token).await;
    println!("cluster_client.py without its user: {summary}");
    assert!(!success, "{summary}");
    assert_eq!(summary["ok"], 0, "{summary}");
    assert!(summary["failed"].as_u64() > Some(0), "{summary}");
}

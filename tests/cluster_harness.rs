//! Tests of the Redis Cluster harness itself (tests/support/cluster.rs), talking directly to a
//! real TLS cluster, no proxy: creation, token users on every node, resharding, failover,
//! adding a node, the Python cluster client, and the exact bytes of the cluster topology
//! replies (what a cluster-aware proxy has to parse and rewrite).

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::cluster::{key_for_slot, key_slot, ClusterRotator, Expect, TlsCluster, SLOTS};
use support::{wait_until, Reply, Token};

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

//! A real Redis Cluster for the end-to-end tests (issue #8): N TLS-only redis-server processes
//! with ACL users and `default` disabled, joined with `redis-cli --cluster create`, plus the
//! emulation of Azure's token expiry on every node, resharding, manual failover and adding a
//! node.
//!
//! ACL users are per node in Redis Cluster (nothing replicates them), so every token user is
//! created and deleted on each node. The harness admin password is only ever in the nodes'
//! config files and in `REDISCLI_AUTH` for `redis-cli`, never on a command line or in output.
//!
//! Nodes are numbered in start order (`0..len()`); that index never changes, while roles do
//! (failover), so roles are always re-read from the cluster. Everything is killed on drop,
//! panics included. Waits poll the cluster until a deadline and panic with the nodes' logs
//! (secrets redacted).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{
    decode_buffered, encode_command, random_id, redact, remember_secret, spawn_redis_server, Admin,
    ClientInfo, Reply, RespClient, TlsMaterial, Token, TokenFile, ADMIN_USER, IO_TIMEOUT,
};

/// `cluster-node-timeout` of every node, small so that failure detection is quick.
pub const NODE_TIMEOUT_MS: u64 = 2000;

/// Number of hash slots in Redis Cluster.
pub const SLOTS: usize = 16384;

/// Longest wait for the cluster to agree on a change (creation, reshard, failover, new node).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(40);

/// Pause between two polls of the whole cluster (each poll runs several commands per node).
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A TLS connection to one node (authenticated or not, depending on how it was made).
pub type NodeConn = RespClient<TlsStream<TcpStream>>;

/// One redis-server of the cluster.
struct Node {
    /// The process.
    child: Child,
    /// The TLS (client) port; the cluster bus is on `port + 10000`.
    port: u16,
    /// Config, log, `nodes.conf` and data.
    dir: tempfile::TempDir,
    /// The node's cluster id (`CLUSTER MYID`).
    id: String,
}

impl Node {
    fn log(&self) -> String {
        redact(&std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node as one node sees it (one line of `CLUSTER NODES`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeInfo {
    /// The node id.
    pub id: String,
    /// `ip:port` as announced (the TLS port, as `tls-cluster yes`).
    pub addr: String,
    /// The flags, `myself` left out (so that views from different nodes compare equal).
    pub flags: Vec<String>,
    /// The primary's id, for a replica.
    pub primary: Option<String>,
    /// Slot ranges served (primaries), inclusive.
    pub slots: Vec<(u16, u16)>,
    /// True if a slot of this node is marked migrating or importing.
    pub migrating: bool,
}

impl NodeInfo {
    /// True for a primary.
    pub fn is_primary(&self) -> bool {
        self.flags.iter().any(|f| f == "master")
    }

    /// Number of slots served.
    pub fn slot_count(&self) -> usize {
        self.slots
            .iter()
            .map(|(a, b)| usize::from(*b) - usize::from(*a) + 1)
            .sum()
    }

    /// Parses one line of `CLUSTER NODES`.
    fn parse(line: &str) -> Option<NodeInfo> {
        let mut parts = line.split(' ');
        let id = parts.next()?.to_owned();
        let addr_field = parts.next()?;
        let addr = addr_field.split(['@', ',']).next()?.to_owned();
        let mut flags: Vec<String> = parts
            .next()?
            .split(',')
            .filter(|f| *f != "myself")
            .map(str::to_owned)
            .collect();
        flags.sort();
        let primary = match parts.next()? {
            "-" => None,
            id => Some(id.to_owned()),
        };
        let _ping_sent = parts.next()?;
        let _pong_recv = parts.next()?;
        let _config_epoch = parts.next()?;
        let _link_state = parts.next()?;
        let mut slots = Vec::new();
        let mut migrating = false;
        for s in parts.filter(|s| !s.is_empty()) {
            if s.starts_with('[') {
                migrating = true;
                continue;
            }
            let (a, b) = match s.split_once('-') {
                Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
                None => {
                    let v = s.parse().ok()?;
                    (v, v)
                }
            };
            slots.push((a, b));
        }
        Some(NodeInfo {
            id,
            addr,
            flags,
            primary,
            slots,
            migrating,
        })
    }
}

/// One range of `CLUSTER SLOTS`, normalised so that views from different nodes compare equal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SlotRange {
    /// First slot.
    pub start: u16,
    /// Last slot (inclusive).
    pub end: u16,
    /// The primary's `ip:port`.
    pub primary_addr: String,
    /// The primary's id.
    pub primary_id: String,
    /// The replicas' ids, sorted (nodes may list them in different orders).
    pub replica_ids: Vec<String>,
}

impl SlotRange {
    /// Number of slots in the range.
    pub fn len(&self) -> usize {
        usize::from(self.end) - usize::from(self.start) + 1
    }

    /// Never true (a range holds at least one slot); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Parses a `CLUSTER SLOTS` reply (RESP2 or RESP3), sorted by first slot.
pub fn parse_cluster_slots(reply: &Reply) -> Result<Vec<SlotRange>, String> {
    let Reply::Array(ranges) = reply else {
        return Err(format!("CLUSTER SLOTS: {reply:?}"));
    };
    let int = |r: &Reply| match r {
        Reply::Int(i) => u16::try_from(*i).map_err(|e| e.to_string()),
        other => Err(format!("expected an integer, got {other:?}")),
    };
    let node = |r: &Reply| -> Result<(String, String), String> {
        let Reply::Array(fields) = r else {
            return Err(format!("expected a node array, got {r:?}"));
        };
        let ip = fields.first().and_then(Reply::text).unwrap_or_default();
        let port = fields.get(1).map(int).transpose()?.unwrap_or(0);
        let id = fields.get(2).and_then(Reply::text).unwrap_or_default();
        Ok((format!("{ip}:{port}"), id))
    };
    let mut out = Vec::new();
    for range in ranges {
        let Reply::Array(items) = range else {
            return Err(format!("CLUSTER SLOTS range: {range:?}"));
        };
        if items.len() < 3 {
            return Err(format!("CLUSTER SLOTS range too short: {range:?}"));
        }
        let (primary_addr, primary_id) = node(&items[2])?;
        let mut replica_ids = items[3..]
            .iter()
            .map(|r| node(r).map(|(_, id)| id))
            .collect::<Result<Vec<_>, _>>()?;
        replica_ids.sort();
        out.push(SlotRange {
            start: int(&items[0])?,
            end: int(&items[1])?,
            primary_addr,
            primary_id,
            replica_ids,
        });
    }
    out.sort();
    Ok(out)
}

/// The value of `field` in an `INFO`-style `field:value` text.
pub fn info_field(text: &str, field: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.trim_end().strip_prefix(field)?.strip_prefix(':'))
        .map(str::to_owned)
}

/// The hash slot of `key` (CRC16/XMODEM mod 16384, with `{hashtag}` rules).
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    let mut crc: u16 = 0;
    for &b in hashed {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % SLOTS as u16
}

/// A key (with a hash tag) that hashes to `slot`.
pub fn key_for_slot(slot: u16, prefix: &str) -> String {
    format!("{{t{}}}:{prefix}", slot_tags()[usize::from(slot)])
}

/// For each slot, the smallest `i` such that the hash tag `t<i>` falls in that slot; computed
/// once (one pass over the candidates, not one search per slot).
fn slot_tags() -> &'static [u64] {
    static TAGS: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
    TAGS.get_or_init(|| {
        let mut tags = vec![u64::MAX; SLOTS];
        let mut missing = SLOTS;
        for i in 0u64.. {
            let slot = usize::from(key_slot(format!("t{i}").as_bytes()));
            if tags[slot] == u64::MAX {
                tags[slot] = i;
                missing -= 1;
                if missing == 0 {
                    break;
                }
            }
        }
        tags
    })
}

/// How many connections a [`ClusterRotator`] waits for on the new token's user before it
/// deletes the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// At least this many over all nodes together.
    Total(usize),
    /// At least this many on every node that is a primary at the time of the check.
    EachPrimary(usize),
    /// At least this many on every node, replicas included.
    EachNode(usize),
}

/// How settled [`TlsCluster::wait_settled_with`] wants the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strictness {
    /// Every replica's link to its primary is up.
    LinksUp,
    /// Also, every replica is listed in `CLUSTER SLOTS` (its replication offset is not 0).
    ReplicasListed,
}

/// A real Redis Cluster, TLS only (`tls-cluster yes`, `tls-replication yes`), ACL users with
/// `default` off; every process killed on drop.
pub struct TlsCluster {
    /// One CA and one server certificate (`localhost`, 127.0.0.1) shared by all nodes; the
    /// proxy's `--ca-file` is `tls.ca_file`.
    pub tls: Arc<TlsMaterial>,
    /// The nodes, in start order.
    nodes: Vec<Node>,
    /// The harness admin user's password (also the replicas' `masterauth`; never printed).
    admin_password: String,
    /// Token users created with [`TlsCluster::create_token_user_all`] and not deleted since;
    /// [`TlsCluster::add_node`] creates them on the new node too.
    token_users: Mutex<Vec<Token>>,
}

impl TlsCluster {
    /// Starts `primaries` primaries (at least 3, as `redis-cli --cluster create` demands), each
    /// with `replicas_per_primary` replicas, and waits until every node reports
    /// `cluster_state:ok` with all 16384 slots assigned, every node has the same view of the
    /// topology and of `CLUSTER SLOTS`, and every replica has finished its initial sync.
    /// Nodes `0..primaries` are the primaries at first.
    pub async fn start(primaries: usize, replicas_per_primary: usize) -> TlsCluster {
        Self::start_with_cert(primaries, replicas_per_primary, TlsMaterial::generate()).await
    }

    /// [`TlsCluster::start`] with the given certificate (it must be valid for `localhost`,
    /// the name the harness verifies). A certificate without an IP address proves that a
    /// client verifies the nodes by name even though the cluster names them by IP.
    pub async fn start_with_cert(
        primaries: usize,
        replicas_per_primary: usize,
        tls: Arc<TlsMaterial>,
    ) -> TlsCluster {
        assert!(
            primaries >= 3,
            "redis-cli --cluster create needs at least 3 primaries"
        );
        let admin_password = random_id();
        remember_secret(&admin_password);
        let total = primaries * (1 + replicas_per_primary);
        let mut nodes = Vec::with_capacity(total);
        for _ in 0..total {
            nodes.push(start_node(&tls, &admin_password).await);
        }
        let cluster = TlsCluster {
            tls,
            nodes,
            admin_password,
            token_users: Mutex::new(Vec::new()),
        };
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(
            cluster
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port)),
        );
        args.extend([
            "--cluster-replicas".into(),
            replicas_per_primary.to_string(),
            "--cluster-yes".into(),
        ]);
        cluster.redis_cli(&args).await;
        cluster
            .wait_settled_with("cluster creation", Strictness::LinksUp)
            .await;
        // Redis lists a replica in CLUSTER SLOTS (and calls it `online` in CLUSTER SHARDS) only
        // once its replication offset, learned by gossip, is not 0, and the offset moves only
        // when the primary replicates something. A FLUSHALL of the (still empty) data set is
        // always replicated, so that cluster clients see the replicas from the start.
        for node in 0..cluster.len() {
            let mut admin = cluster.admin(node).await;
            let role = admin.cmd(&["ROLE"]).await;
            if matches!(&role, Reply::Array(a)
                if a.first().and_then(Reply::text).as_deref() == Some("master"))
            {
                assert_eq!(admin.cmd(&["FLUSHALL"]).await, Reply::ok(), "node {node}");
            }
        }
        cluster.wait_settled("cluster creation").await;
        cluster
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true (a cluster has nodes); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The TLS port of node `node`.
    pub fn port(&self, node: usize) -> u16 {
        self.nodes[node].port
    }

    /// `127.0.0.1:PORT` of node `node`.
    pub fn addr(&self, node: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[node].port)
    }

    /// Every node's address, in node order.
    pub fn addrs(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.addr(i)).collect()
    }

    /// The cluster id of node `node`.
    pub fn node_id(&self, node: usize) -> &str {
        &self.nodes[node].id
    }

    /// The index of the node with cluster id `id`.
    pub fn index_of(&self, id: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node with id {id}"))
    }

    /// The index of the node listening on `addr` (`ip:port`).
    pub fn index_of_addr(&self, addr: &str) -> Option<usize> {
        let port: u16 = addr.rsplit_once(':')?.1.parse().ok()?;
        self.nodes.iter().position(|n| n.port == port)
    }

    /// The address of the first node (lowest index) that is a primary now: a seed for the
    /// proxy or a cluster client.
    pub async fn seed_addr(&self) -> String {
        self.addr(self.primaries().await[0])
    }

    /// The topology as node `node` sees it (`CLUSTER NODES`), sorted by id.
    pub async fn topology(&self, node: usize) -> Vec<NodeInfo> {
        let reply = self.admin(node).await.cmd(&["CLUSTER", "NODES"]).await;
        parse_cluster_nodes(&reply).unwrap_or_else(|e| panic!("node {node}: {e}"))
    }

    /// The nodes that are primaries now (read from node 0's settled view), in node order.
    pub async fn primaries(&self) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .topology(0)
            .await
            .iter()
            .filter(|n| n.is_primary())
            .map(|n| self.index_of(&n.id))
            .collect();
        out.sort();
        out
    }

    /// The nodes that are replicas now, in node order.
    pub async fn replicas(&self) -> Vec<usize> {
        let primaries = self.primaries().await;
        (0..self.len()).filter(|i| !primaries.contains(i)).collect()
    }

    /// The replicas of primary `primary` now, in node order.
    pub async fn replicas_of(&self, primary: usize) -> Vec<usize> {
        let id = self.node_id(primary).to_owned();
        let mut out: Vec<usize> = self
            .topology(0)
            .await
            .iter()
            .filter(|n| n.primary.as_deref() == Some(id.as_str()))
            .map(|n| self.index_of(&n.id))
            .collect();
        out.sort();
        out
    }

    /// The primary of replica `replica` now.
    pub async fn primary_of(&self, replica: usize) -> usize {
        let id = self.node_id(replica).to_owned();
        let topology = self.topology(0).await;
        let me = topology
            .iter()
            .find(|n| n.id == id)
            .expect("the node knows itself");
        self.index_of(
            me.primary
                .as_deref()
                .unwrap_or_else(|| panic!("node {replica} is not a replica")),
        )
    }

    /// `CLUSTER SLOTS` as node `node` sees it, normalised.
    pub async fn slots(&self, node: usize) -> Vec<SlotRange> {
        let reply = self.admin(node).await.cmd(&["CLUSTER", "SLOTS"]).await;
        parse_cluster_slots(&reply).unwrap_or_else(|e| panic!("node {node}: {e}"))
    }

    /// Number of slots node `node` serves, according to node `observer`'s `CLUSTER SLOTS`.
    pub async fn slot_count(&self, observer: usize, node: usize) -> usize {
        let id = self.node_id(node).to_owned();
        self.slots(observer)
            .await
            .iter()
            .filter(|r| r.primary_id == id)
            .map(SlotRange::len)
            .sum()
    }

    /// A TLS connection to node `node`, not authenticated (the `default` user is off, so it
    /// can only `AUTH`/`HELLO`).
    pub async fn connect(&self, node: usize) -> NodeConn {
        self.try_connect(node)
            .await
            .unwrap_or_else(|e| panic!("connect to node {node}: {e}"))
    }

    async fn try_connect(&self, node: usize) -> Result<NodeConn, String> {
        connect_tls(&self.tls, self.nodes[node].port).await
    }

    /// A new TLS connection to node `node` authenticated as the harness admin user.
    pub async fn admin(&self, node: usize) -> Admin {
        self.try_admin(node)
            .await
            .unwrap_or_else(|e| panic!("admin connection to node {node}: {e}"))
    }

    async fn try_admin(&self, node: usize) -> Result<Admin, String> {
        admin_connect(&self.tls, self.nodes[node].port, &self.admin_password).await
    }

    /// A connection to node `node` authenticated with `token` (user = its oid).
    pub async fn connect_as(&self, node: usize, token: &Token) -> NodeConn {
        let mut conn = self.connect(node).await;
        let reply = conn
            .cmd(&["AUTH", token.oid.as_str(), token.jwt.as_str()])
            .await;
        assert_eq!(reply, Reply::ok(), "AUTH as {} on node {node}", token.oid);
        conn
    }

    /// Creates the ACL user of `token` on every node (ACLs are per node in Redis Cluster).
    pub async fn create_token_user_all(&self, token: &Token) {
        for node in 0..self.len() {
            self.admin(node).await.create_token_user(token).await;
        }
        self.token_users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(token.clone());
    }

    /// Deletes ACL user `user` on every node, which disconnects its connections there; returns
    /// on how many nodes it existed.
    pub async fn delete_user_all(&self, user: &str) -> i64 {
        let mut deleted = 0;
        for node in 0..self.len() {
            deleted += self.admin(node).await.delete_user(user).await;
        }
        self.token_users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|t| t.oid != user);
        deleted
    }

    /// `CLIENT LIST` of every node (harness admin connections and replication links left
    /// out), in node order.
    pub async fn client_lists(&self) -> Vec<Vec<ClientInfo>> {
        let mut out = Vec::with_capacity(self.len());
        for node in 0..self.len() {
            out.push(self.admin(node).await.client_list().await);
        }
        out
    }

    /// Moves `slots` slots from primary `from_id` to primary `to_id` with
    /// `redis-cli --cluster reshard` (keys included, via MIGRATE), then waits until every node
    /// has the same, settled view of the slots.
    pub async fn reshard(&self, from_id: &str, to_id: &str, slots: usize) {
        let seed = self.addr(self.index_of(from_id));
        self.redis_cli(&[
            "--cluster".into(),
            "reshard".into(),
            seed,
            "--cluster-from".into(),
            from_id.into(),
            "--cluster-to".into(),
            to_id.into(),
            "--cluster-slots".into(),
            slots.to_string(),
            "--cluster-yes".into(),
        ])
        .await;
        self.wait_settled("reshard").await;
    }

    /// `CLUSTER FAILOVER` on replica `replica`; waits until it is a primary, its former
    /// primary (now its replica) has synced from it, and every node agrees. A manual failover
    /// that Redis aborted (its own 5 s limit, e.g. on a loaded machine) is asked for again.
    pub async fn failover(&self, replica: usize) {
        let mut admin = self.admin(replica).await;
        let id = self.node_id(replica).to_owned();
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut asked: Option<Instant> = None;
        loop {
            if asked.is_none_or(|t| t.elapsed() > Duration::from_secs(8)) {
                let reply = admin.cmd(&["CLUSTER", "FAILOVER"]).await;
                // Asked again, it may have become a primary just now (ROLE says so next).
                assert!(
                    reply == Reply::ok() || asked.is_some(),
                    "CLUSTER FAILOVER on node {replica}: {reply:?}"
                );
                asked = Some(Instant::now());
            }
            let role = admin.cmd(&["ROLE"]).await;
            let is_master = matches!(&role, Reply::Array(a)
                if a.first().and_then(Reply::text).as_deref() == Some("master"));
            if is_master {
                break;
            }
            if Instant::now() >= deadline {
                panic!(
                    "node {replica} ({id}) did not become a primary within {SETTLE_TIMEOUT:?} \
                     after CLUSTER FAILOVER (ROLE: {role:?})\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        self.wait_settled("failover").await;
        let views = self.topology(0).await;
        assert!(
            views.iter().any(|n| n.id == id && n.is_primary()),
            "after the failover, node 0 does not see node {replica} as a primary: {views:?}"
        );
    }

    /// Starts a new empty primary, joins it with `redis-cli --cluster add-node`, creates on it
    /// the token users that exist on the other nodes, and waits until every node knows it and
    /// the cluster is settled. Returns its index.
    pub async fn add_node(&mut self) -> usize {
        let node = start_node(&self.tls, &self.admin_password).await;
        let new_addr = format!("127.0.0.1:{}", node.port);
        self.nodes.push(node);
        let index = self.nodes.len() - 1;
        let tokens = self
            .token_users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut admin = self.admin(index).await;
        for token in &tokens {
            admin.create_token_user(token).await;
        }
        let seed = self.seed_addr().await;
        self.redis_cli(&["--cluster".into(), "add-node".into(), new_addr, seed])
            .await;
        self.wait_settled("add-node").await;
        index
    }

    /// Waits until the cluster is settled (see [`TlsCluster::settled`]); panics with the
    /// last reason and the nodes' logs after a deadline.
    pub async fn wait_settled(&self, what: &str) {
        self.wait_settled_with(what, Strictness::ReplicasListed)
            .await
    }

    async fn wait_settled_with(&self, what: &str, strictness: Strictness) {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut conns: Vec<Option<Admin>> = (0..self.len()).map(|_| None).collect();
        loop {
            let reason = match self.settled(&mut conns, strictness).await {
                Ok(()) => return,
                Err(reason) => reason,
            };
            if Instant::now() >= deadline {
                panic!(
                    "{what}: the cluster did not settle within {SETTLE_TIMEOUT:?}: {}\n{}",
                    redact(&reason),
                    self.logs()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Checks, on every node: `cluster_state:ok`, all slots assigned, every node known, no
    /// node flagged failing or in handshake, no slot migrating; the same topology and
    /// `CLUSTER SLOTS` everywhere; on each replica, `master_link_status:up`; and (unless
    /// `strictness` is `LinksUp`) every replica listed under its primary in `CLUSTER SLOTS`.
    async fn settled(
        &self,
        conns: &mut [Option<Admin>],
        strictness: Strictness,
    ) -> Result<(), String> {
        let mut first_view: Option<(Vec<NodeInfo>, Vec<SlotRange>)> = None;
        for (node, conn) in conns.iter_mut().enumerate() {
            let result = self.check_node(node, conn, strictness).await;
            let (topology, slots) = match result {
                Ok(v) => v,
                Err(e) => {
                    *conn = None;
                    return Err(format!("node {node}: {e}"));
                }
            };
            match &first_view {
                None => first_view = Some((topology, slots)),
                Some((t0, s0)) => {
                    if &topology != t0 {
                        return Err(format!(
                            "node {node} sees the topology {topology:?}, node 0 sees {t0:?}"
                        ));
                    }
                    if &slots != s0 {
                        return Err(format!(
                            "node {node} has CLUSTER SLOTS {slots:?}, node 0 has {s0:?}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    async fn check_node(
        &self,
        node: usize,
        conn: &mut Option<Admin>,
        strictness: Strictness,
    ) -> Result<(Vec<NodeInfo>, Vec<SlotRange>), String> {
        if conn.is_none() {
            *conn = Some(self.try_admin(node).await?);
        }
        let admin = conn.as_mut().expect("just connected");
        let info = run(admin, &["CLUSTER", "INFO"])
            .await?
            .text()
            .unwrap_or_default();
        let state = info_field(&info, "cluster_state");
        let assigned = info_field(&info, "cluster_slots_assigned");
        let known = info_field(&info, "cluster_known_nodes");
        if state.as_deref() != Some("ok")
            || assigned != Some(SLOTS.to_string())
            || known != Some(self.len().to_string())
        {
            return Err(format!(
                "cluster_state {state:?}, slots assigned {assigned:?}, known nodes {known:?} \
                 (want ok, {SLOTS}, {})",
                self.len()
            ));
        }
        let topology = parse_cluster_nodes(&run(admin, &["CLUSTER", "NODES"]).await?)?;
        if let Some(n) = topology.iter().find(|n| {
            n.migrating
                || n.flags
                    .iter()
                    .any(|f| matches!(f.as_str(), "fail" | "fail?" | "handshake" | "noaddr"))
        }) {
            return Err(format!("not settled: {n:?}"));
        }
        let slots = parse_cluster_slots(&run(admin, &["CLUSTER", "SLOTS"]).await?)?;
        let me = topology
            .iter()
            .find(|n| n.id == self.nodes[node].id)
            .ok_or("the node does not list itself")?;
        if !me.is_primary() {
            let info = run(admin, &["INFO", "replication"])
                .await?
                .text()
                .unwrap_or_default();
            let link = info_field(&info, "master_link_status");
            if link.as_deref() != Some("up") {
                return Err(format!("replica, master_link_status {link:?}"));
            }
        }
        if strictness == Strictness::ReplicasListed {
            for range in &slots {
                let mut replicas: Vec<&str> = topology
                    .iter()
                    .filter(|n| n.primary.as_deref() == Some(range.primary_id.as_str()))
                    .map(|n| n.id.as_str())
                    .collect();
                replicas.sort();
                if range.replica_ids != replicas {
                    return Err(format!(
                        "CLUSTER SLOTS lists replicas {:?} for slots {}-{}, want {replicas:?}",
                        range.replica_ids, range.start, range.end
                    ));
                }
            }
        }
        Ok((topology, slots))
    }

    /// Runs `redis-cli` with `args` plus the TLS and admin-user flags; the password goes in
    /// `REDISCLI_AUTH`. Panics with its (redacted) output and the nodes' logs if it fails.
    async fn redis_cli(&self, args: &[String]) {
        let mut cmd = tokio::process::Command::new("redis-cli");
        cmd.args(args)
            .args(["--tls", "--cacert"])
            .arg(&self.tls.ca_file)
            .args(["--user", ADMIN_USER])
            .env("REDISCLI_AUTH", &self.admin_password)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let what = args[..2.min(args.len())].join(" ");
        let output = tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("redis-cli {what} did not finish within 120 s"))
            .unwrap_or_else(|e| panic!("cannot run redis-cli (is it installed?): {e}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        // redis-cli --cluster exits 0 on some failures; its `[ERR]` lines say so.
        if !output.status.success() || stdout.contains("[ERR]") {
            panic!(
                "redis-cli {what} failed ({}):\n{}\n{}\n{}",
                output.status,
                redact(&stdout),
                redact(&stderr),
                self.logs()
            );
        }
    }

    /// Every node's log (secrets redacted), the last lines of each, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let log = node.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            out.push_str(&format!(
                "---- node {i} (127.0.0.1:{}, id {}) log, last {} of {} lines ----\n{}\n",
                node.port,
                node.id,
                tail.len(),
                lines.len(),
                tail.join("\n")
            ));
        }
        out
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
        }
        for node in &mut self.nodes {
            let _ = node.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// Runs one admin command; an I/O error or an error reply is an `Err`.
async fn run(admin: &mut Admin, args: &[&str]) -> Result<Reply, String> {
    let reply = admin
        .conn
        .try_cmd(args)
        .await
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if reply.is_error() {
        return Err(format!("{}: {reply:?}", args.join(" ")));
    }
    Ok(reply)
}

/// Parses a `CLUSTER NODES` reply, sorted by id.
pub fn parse_cluster_nodes(reply: &Reply) -> Result<Vec<NodeInfo>, String> {
    let text = reply
        .text()
        .filter(|_| !reply.is_error())
        .ok_or_else(|| format!("CLUSTER NODES: {reply:?}"))?;
    let mut nodes = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| NodeInfo::parse(l).ok_or_else(|| format!("CLUSTER NODES line {l:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    nodes.sort();
    Ok(nodes)
}

/// A TLS connection to 127.0.0.1:`port` trusting the test CA, SNI `localhost`.
async fn connect_tls(tls: &TlsMaterial, port: u16) -> Result<NodeConn, String> {
    let tcp = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(tls.client_config());
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("server name");
    let stream = tokio::time::timeout(IO_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(RespClient::new(stream))
}

/// An admin connection to 127.0.0.1:`port`.
async fn admin_connect(tls: &TlsMaterial, port: u16, password: &str) -> Result<Admin, String> {
    let mut conn = connect_tls(tls, port).await?;
    let reply = conn
        .try_cmd(&[
            "AUTH".as_bytes(),
            ADMIN_USER.as_bytes(),
            password.as_bytes(),
        ])
        .await
        .map_err(|e| e.to_string())?;
    if reply != Reply::ok() {
        return Err(format!("admin AUTH failed: {reply:?}"));
    }
    Ok(Admin { conn })
}

/// True if 127.0.0.1:`port` can be bound now.
fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A port P with P and P + 10000 (the cluster bus) free a moment ago, both below the
/// ephemeral range so that outgoing connections do not take them meanwhile.
fn free_port_pair() -> u16 {
    for _ in 0..1000 {
        let port = rand::random_range(10000..=22767u16);
        if port_is_free(port) && port_is_free(port + 10000) {
            return port;
        }
    }
    panic!("no free port pair (P, P + 10000) found in 1000 tries");
}

/// Starts one cluster-enabled node and waits until the admin user can PING it; retries on
/// another port if the port was taken meanwhile.
async fn start_node(tls: &TlsMaterial, admin_password: &str) -> Node {
    let mut last_error = String::new();
    for _attempt in 0..10 {
        match try_start_node(tls, admin_password).await {
            Ok(node) => return node,
            Err(e) => last_error = e,
        }
    }
    panic!("a cluster node did not start: {last_error}");
}

async fn try_start_node(tls: &TlsMaterial, admin_password: &str) -> Result<Node, String> {
    let port = free_port_pair();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let log: PathBuf = dir.path().join("redis.log");
    // A config file, so that the password is not in the process arguments. The replicas
    // authenticate to their primary as the admin user (`default` is off); the cluster bus
    // needs no password. No disk persistence, and diskless sync without delay so that a
    // replica is in sync as soon as possible.
    let config = format!(
        "port 0\n\
         tls-port {port}\n\
         bind 127.0.0.1\n\
         tls-cert-file {cert}\n\
         tls-key-file {key}\n\
         tls-ca-cert-file {ca}\n\
         tls-auth-clients no\n\
         tls-cluster yes\n\
         tls-replication yes\n\
         cluster-enabled yes\n\
         cluster-config-file {dir}/nodes.conf\n\
         cluster-node-timeout {NODE_TIMEOUT_MS}\n\
         save \"\"\n\
         appendonly no\n\
         repl-diskless-sync yes\n\
         repl-diskless-sync-delay 0\n\
         daemonize no\n\
         dir {dir}\n\
         logfile {log}\n\
         user default off\n\
         user {ADMIN_USER} on >{admin_password} ~* &* +@all\n\
         masteruser {ADMIN_USER}\n\
         masterauth {admin_password}\n",
        cert = tls.cert_file.display(),
        key = tls.key_file.display(),
        ca = tls.ca_file.display(),
        dir = dir.path().display(),
        log = log.display(),
    );
    let conf_path = dir.path().join("redis.conf");
    std::fs::write(&conf_path, config).map_err(|e| e.to_string())?;
    let child = spawn_redis_server(&conf_path)?;
    let mut node = Node {
        child,
        port,
        dir,
        id: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = node.child.try_wait() {
            return Err(format!("redis-server exited ({status}): {}", node.log()));
        }
        if let Ok(mut admin) = admin_connect(tls, port, admin_password).await {
            if let Ok(Reply::Bulk(id)) = admin.conn.try_cmd(&["CLUSTER", "MYID"]).await {
                node.id = String::from_utf8_lossy(&id).into_owned();
                return Ok(node);
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "redis-server did not answer within 15 s: {}",
                node.log()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Token rotation across the cluster
// ---------------------------------------------------------------------------------------------

/// [`super::Rotator`] for a cluster: a new token's user is created on every node, the token file
/// rewritten, and once no connection on any node is on the old user (and enough are on the new
/// one, see [`Expect`]) the old user is deleted on every node (emulated expiry).
///
/// It takes the cluster at each rotation rather than holding connections, so that nodes added
/// meanwhile are covered.
pub struct ClusterRotator {
    /// The token file the proxy watches.
    pub file: TokenFile,
    /// The token in force.
    pub current: Token,
    /// Every token issued, oldest first (for secret checks).
    pub issued: Vec<Token>,
    /// Lifetime of minted tokens (their `exp` claim).
    pub ttl: Duration,
    /// How long the proxy has to re-authenticate all connections.
    pub reauth_timeout: Duration,
}

impl ClusterRotator {
    /// Issues the first token, creates its user on every node and writes the token file.
    pub async fn new(cluster: &TlsCluster) -> ClusterRotator {
        let ttl = Duration::from_secs(3600);
        let current = Token::mint(ttl);
        cluster.create_token_user_all(&current).await;
        let file = TokenFile::new(&current);
        ClusterRotator {
            file,
            issued: vec![current.clone()],
            current,
            ttl,
            reauth_timeout: Duration::from_secs(20),
        }
    }

    /// One rotation; returns the new token. On timeout the old user is kept (nothing is
    /// disconnected) and the error says, per node, who is still on which user.
    pub async fn rotate(&mut self, cluster: &TlsCluster, expect: Expect) -> Result<Token, String> {
        self.rotate_with(cluster, expect, |_| {}).await
    }

    /// [`ClusterRotator::rotate`], calling `on_mint` with the new token before anything else.
    pub async fn rotate_with(
        &mut self,
        cluster: &TlsCluster,
        expect: Expect,
        on_mint: impl FnOnce(&Token),
    ) -> Result<Token, String> {
        let old = self.current.clone();
        let new = Token::mint(self.ttl);
        on_mint(&new);
        cluster.create_token_user_all(&new).await;
        self.file.write(&new);
        self.issued.push(new.clone());
        self.current = new.clone();
        let mut admins = Vec::with_capacity(cluster.len());
        for node in 0..cluster.len() {
            admins.push(cluster.admin(node).await);
        }
        let deadline = Instant::now() + self.reauth_timeout;
        loop {
            let primaries = match expect {
                Expect::EachPrimary(_) => cluster.primaries().await,
                _ => Vec::new(),
            };
            let mut per_node = Vec::with_capacity(admins.len());
            for admin in &mut admins {
                let clients = admin.client_list().await;
                let on_old = clients.iter().filter(|c| c.user == old.oid).count();
                let on_new = clients.iter().filter(|c| c.user == new.oid).count();
                per_node.push((on_old, on_new, clients));
            }
            let no_old = per_node.iter().all(|(on_old, _, _)| *on_old == 0);
            let enough_new = match expect {
                Expect::Total(n) => {
                    per_node.iter().map(|(_, on_new, _)| on_new).sum::<usize>() >= n
                }
                Expect::EachNode(n) => per_node.iter().all(|(_, on_new, _)| *on_new >= n),
                Expect::EachPrimary(n) => primaries.iter().all(|&p| per_node[p].1 >= n),
            };
            if no_old && enough_new {
                break;
            }
            if Instant::now() >= deadline {
                let summary: Vec<String> = per_node
                    .iter()
                    .enumerate()
                    .map(|(i, (on_old, on_new, clients))| {
                        let users: Vec<String> = clients
                            .iter()
                            .map(|c| format!("id={} user={} cmd={}", c.id, c.user, c.cmd))
                            .collect();
                        format!("node {i}: {on_old} on old, {on_new} on new {users:?}")
                    })
                    .collect();
                return Err(format!(
                    "after {:?}, not every connection moved from the old user {} to the new \
                     user {} (want {expect:?} on the new one): {}",
                    self.reauth_timeout,
                    old.oid,
                    new.oid,
                    summary.join("; ")
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        cluster.delete_user_all(&old.oid).await;
        Ok(new)
    }
}

// ---------------------------------------------------------------------------------------------
// Raw replies (to document what the cluster sends, byte for byte)
// ---------------------------------------------------------------------------------------------

/// Sends `args` and returns the exact bytes of the next reply frame (decoded with the
/// client's current protocol, which follows HELLO).
pub async fn raw_cmd<S, A>(client: &mut RespClient<S>, args: &[A]) -> Vec<u8>
where
    S: AsyncRead + AsyncWrite + Unpin,
    A: AsRef<[u8]>,
{
    client.note_protocol_switch(args);
    client
        .send_raw(&encode_command(args))
        .await
        .expect("send a command");
    let deadline = tokio::time::Instant::now() + client.timeout;
    loop {
        if !client.buf.is_empty() {
            let mut probe = client.buf.clone();
            let decoded = decode_buffered(&mut probe, client.protocol).expect("a valid frame");
            if decoded.is_some() {
                let n = client.buf.len() - probe.len();
                return client.buf.split_to(n).to_vec();
            }
        }
        client.buf.reserve(64 * 1024);
        let n = tokio::time::timeout_at(deadline, client.stream.read_buf(&mut client.buf))
            .await
            .expect("a reply in time")
            .expect("read a reply");
        assert!(n > 0, "connection closed before a complete reply");
    }
}

/// Raw RESP bytes shown readably: printable ASCII as is, `\r\n` as `\r\n` + a line break,
/// anything else escaped.
pub fn show_raw(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"\r\n") {
            out.push_str("\\r\\n\n");
            i += 2;
            continue;
        }
        let b = bytes[i];
        if (0x20..0x7f).contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
        i += 1;
    }
    out
}

//! Cluster mode: one local listener per cluster node, and node addresses in replies
//! rewritten to those listeners.
//!
//! A cluster-aware client is pointed at the upstream's first listener (the *seed*, which
//! forwards to the configured cache address). Whatever node address the cluster then tells
//! it (CLUSTER SLOTS / SHARDS / NODES / REPLICAS, MOVED and ASK) is replaced, by
//! [`rewrite`], with the address of a local listener that forwards to that node. Listeners
//! are made on first sight of a node: when the background discovery reads the topology
//! ([`discover`]), or when a reply names a node nobody has seen yet (a MOVED to a node added
//! a moment ago). Every node connection is verified against the cache's certificate name and
//! re-authenticated on each token refresh like any other upstream connection.
//!
//! Listeners are never closed while the proxy runs: a client may hold an old topology for a
//! while, and a node that left answers nothing anyway. See `docs/cluster.md`.

pub mod rewrite;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::addr::HostPort;
use crate::listener::{accept_loop, Listener};
use crate::resp::{self, ReplyScanner};
use crate::session::{ReplyRewriter, SessionContext};
use rewrite::{NodeMap, RewriteError, Topology};

/// Most node listeners per clustered upstream (Redis Cluster's own practical limit), so that a
/// reply naming endless nodes cannot exhaust the host's ports.
const MAX_NODES: usize = 1000;

/// The local listeners of one clustered upstream, made on demand.
pub struct ClusterMap {
    /// Itself, to hand to the sessions of the listeners it makes.
    me: Weak<ClusterMap>,
    /// What node sessions share, but for the connector (made per node).
    base: SessionContext,
    /// The IP address node listeners bind (that of the seed listener).
    local_ip: IpAddr,
    /// Ports for node listeners; `None`: ephemeral ports.
    ports: Option<RangeInclusive<u16>>,
    /// The process-wide connection limit.
    permits: Arc<Semaphore>,
    /// Shutdown, for the accept loops.
    shutdown: watch::Receiver<bool>,
    /// Nodes and their listeners.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// `(endpoint as reported, port)` to the local listener's address.
    nodes: HashMap<(String, u16), SocketAddr>,
    /// Next port of the range to try.
    cursor: Option<u16>,
    /// The accept loops of node listeners.
    tasks: Vec<JoinHandle<()>>,
    /// Set by [`ClusterMap::stop`]: no more listeners.
    stopped: bool,
}

impl ClusterMap {
    /// A map whose node listeners bind `local_ip`, on ports from `ports` (`None`:
    /// ephemeral). `base` is the seed listener's session context.
    pub fn new(
        base: SessionContext,
        local_ip: IpAddr,
        ports: Option<RangeInclusive<u16>>,
        permits: Arc<Semaphore>,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<ClusterMap> {
        Arc::new_cyclic(|me| ClusterMap {
            me: me.clone(),
            base,
            local_ip,
            ports,
            permits,
            shutdown,
            state: Mutex::new(State::default()),
        })
    }

    /// Stops every node listener (the proxy is being dropped).
    pub fn stop(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.stopped = true;
        for t in st.tasks.drain(..) {
            t.abort();
        }
    }

    /// Local addresses of the node listeners, by node address (`endpoint:port`).
    pub fn nodes(&self) -> Vec<(String, SocketAddr)> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = st
            .nodes
            .iter()
            .map(|((e, p), l)| (HostPort::display(e, *p).to_string(), *l))
            .collect();
        v.sort();
        v
    }

    /// Binds a listener for the node `endpoint:port` and starts its accept loop.
    fn open_listener(&self, st: &mut State, endpoint: &str, port: u16) -> Option<SocketAddr> {
        let me = self.me.upgrade()?;
        let std_listener = match &self.ports {
            None => std::net::TcpListener::bind((self.local_ip, 0)).ok(),
            Some(range) => {
                let (start, end) = (*range.start(), *range.end());
                let span = u32::from(end - start) + 1;
                let first = st.cursor.unwrap_or(start);
                let mut found = None;
                for i in 0..span {
                    let p = start + ((u32::from(first - start) + i) % span) as u16;
                    if let Ok(l) = std::net::TcpListener::bind((self.local_ip, p)) {
                        st.cursor = Some(if p == end { start } else { p + 1 });
                        found = Some(l);
                        break;
                    }
                }
                found
            }
        };
        let Some(std_listener) = std_listener else {
            tracing::error!(
                upstream = %self.base.upstream,
                node = %HostPort::display(endpoint, port),
                ports = ?self.ports,
                "no free local port for a cluster node: widen cluster_ports; clients cannot reach this node"
            );
            return None;
        };
        let local = std_listener.local_addr().ok()?;
        std_listener.set_nonblocking(true).ok()?;
        let listener = tokio::net::TcpListener::from_std(std_listener).ok()?;
        let mut ctx = self.base.clone();
        ctx.connector = Arc::new(self.base.connector.for_node(endpoint, port));
        // CLIENT UNBLOCK must reach the node the blocked connection is on.
        ctx.unblocker = Arc::new(crate::session::Unblocker::new(ctx.connector.clone()));
        ctx.cluster = Some(me as Arc<dyn ReplyRewriter>);
        // Warm connections must be to this node: a pool of its own.
        ctx.warm = self.base.warm.as_ref().map(|seed| {
            let pool = Arc::new(seed.for_connector(ctx.connector.clone()));
            st.tasks.push(tokio::spawn(
                pool.clone()
                    .run(self.base.tokens.clone(), self.shutdown.clone()),
            ));
            pool
        });
        let task = tokio::spawn(accept_loop(
            Listener::Tcp(listener),
            Arc::new(ctx),
            self.permits.clone(),
            self.shutdown.clone(),
        ));
        st.tasks.push(task);
        tracing::info!(
            upstream = %self.base.upstream,
            node = %HostPort::display(endpoint, port),
            address = %local,
            "cluster node listening"
        );
        Some(local)
    }
}

impl ClusterMap {
    /// The local listener for a node named in a reply. An empty endpoint (the cluster's
    /// `unknown-endpoint` form) means the host of the connection the reply came on.
    fn node_for(&self, upstream_host: &str, endpoint: &str, port: u16) -> Option<SocketAddr> {
        if endpoint.is_empty() {
            self.local_for(upstream_host, port)
        } else {
            self.local_for(endpoint, port)
        }
    }

    /// The error a client gets instead of a reply whose node addresses could not be made
    /// local (it never sees a cache-side address).
    fn rewrite_failed(&self, e: &RewriteError) -> Vec<u8> {
        tracing::warn!(upstream = %self.base.upstream, error = %e, "cannot rewrite the node addresses of a cluster reply");
        match e {
            RewriteError::NoLocalPort { .. } => b"-CLUSTERDOWN entra-redis-proxy has no free local port for a cluster node (widen cluster_ports)\r\n".to_vec(),
            _ => b"-ERR entra-redis-proxy could not rewrite the node addresses of this cluster reply (see the proxy's log)\r\n".to_vec(),
        }
    }
}

impl ReplyRewriter for ClusterMap {
    fn may_redirect(&self, frame: &[u8]) -> bool {
        rewrite::may_redirect(frame)
    }

    fn rewrite_redirects(&self, frame: &[u8], upstream_host: &str) -> Option<Vec<u8>> {
        let map = |endpoint: &str, port: u16| self.node_for(upstream_host, endpoint, port);
        match rewrite::rewrite_redirects(frame, &map) {
            Ok(out) => out,
            Err(e) => Some(self.rewrite_failed(&e)),
        }
    }

    fn rewrite_topology(&self, which: Topology, frame: &[u8], upstream_host: &str) -> Vec<u8> {
        let map = |endpoint: &str, port: u16| self.node_for(upstream_host, endpoint, port);
        rewrite::rewrite_topology(which, frame, &map).unwrap_or_else(|e| self.rewrite_failed(&e))
    }
}

impl NodeMap for ClusterMap {
    fn local_for(&self, endpoint: &str, port: u16) -> Option<SocketAddr> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let key = (endpoint.to_owned(), port);
        if let Some(local) = st.nodes.get(&key) {
            return Some(*local);
        }
        if st.stopped {
            return None;
        }
        if st.nodes.len() >= MAX_NODES {
            tracing::error!(
                upstream = %self.base.upstream,
                node = %HostPort::display(endpoint, port),
                "the cluster names more than {MAX_NODES} nodes; no listener for this one"
            );
            return None;
        }
        let local = self.open_listener(&mut st, endpoint, port)?;
        st.nodes.insert(key, local);
        self.base.metrics.cluster_nodes.set(st.nodes.len() as i64);
        Some(local)
    }
}

/// Reads the topology from the seed address now and every `every`, opening listeners for
/// nodes not seen before. Runs until aborted.
pub async fn discover(map: Arc<ClusterMap>, every: Duration) {
    let mut tokens = map.base.tokens.subscribe();
    loop {
        let token = tokens.borrow_and_update().clone();
        match token {
            None => {
                // No token yet: wait for the first one.
                if tokens.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Some(token) => match read_topology(&map, &token).await {
                Ok(n) => {
                    map.base.metrics.cluster_topology_read(true);
                    tracing::debug!(upstream = %map.base.upstream, nodes = n, "cluster topology read");
                }
                Err(e) => {
                    map.base.metrics.cluster_topology_read(false);
                    tracing::warn!(upstream = %map.base.upstream, error = %e, "cannot read the cluster topology; retrying");
                }
            },
        }
        tokio::time::sleep(every).await;
    }
}

/// One topology read: CLUSTER NODES on the seed address (every node, with or without slots,
/// replicas still syncing included; also on Redis 6, which has no CLUSTER SHARDS), its
/// addresses given listeners. Returns the node count.
/// Why a topology read failed; discovery logs it and tries again at the next interval.
#[derive(Debug, thiserror::Error)]
enum TopologyError {
    /// No authenticated connection to the seed address.
    #[error(transparent)]
    Connect(#[from] crate::upstream::UpstreamError),
    /// Writing the command or reading its reply failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The reply is not a well-formed RESP frame.
    #[error(transparent)]
    Protocol(#[from] resp::ProtocolError),
    /// The cache closed the connection before the whole reply arrived.
    #[error("the cache closed the connection")]
    Closed,
    /// The cache answered CLUSTER NODES with an error.
    #[error(
        "CLUSTER NODES was refused: {0} (is the cache clustered with the OSS cluster policy?)"
    )]
    Refused(String),
    /// The node addresses could not be read from the reply.
    #[error(transparent)]
    Rewrite(#[from] RewriteError),
}

async fn read_topology(
    map: &ClusterMap,
    token: &crate::token::AccessToken,
) -> Result<usize, TopologyError> {
    let mut stream = map.base.connector.connect(token).await?;
    let reply = command(&mut stream, &["CLUSTER", "NODES"]).await?;
    let _ = stream.shutdown().await;
    if resp::is_error_reply(&reply) {
        return Err(TopologyError::Refused(
            resp::error_text(&reply).unwrap_or("?").to_owned(),
        ));
    }
    struct Counting<'a>(&'a ClusterMap, Mutex<usize>);
    impl NodeMap for Counting<'_> {
        fn local_for(&self, endpoint: &str, port: u16) -> Option<SocketAddr> {
            *self.1.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            self.0.local_for(endpoint, port)
        }
    }
    let counting = Counting(map, Mutex::new(0));
    rewrite::rewrite_topology(Topology::Nodes, &reply, &counting)?;
    let n = *counting.1.lock().unwrap_or_else(|e| e.into_inner());
    Ok(n)
}

/// Sends one command and reads its one reply.
async fn command(
    stream: &mut crate::upstream::UpstreamStream,
    args: &[&str],
) -> Result<Vec<u8>, TopologyError> {
    stream.write_all(&resp::encode_command(args)).await?;
    stream.flush().await?;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut scanner = ReplyScanner::default();
    loop {
        if let Some(len) = scanner.scan(&buf, 64 * 1024 * 1024)? {
            return Ok(buf[..len].to_vec());
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(TopologyError::Closed);
        }
    }
}

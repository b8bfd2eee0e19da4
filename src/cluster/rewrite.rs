//! Placeholder interface of the cluster reply rewriting (the full module replaces it).

use std::net::SocketAddr;

/// The local listener that stands for a cluster node.
pub trait NodeMap {
    /// The local address for the node `endpoint:port` as the cluster reported it, or `None`.
    fn local_for(&self, endpoint: &str, port: u16) -> Option<SocketAddr>;
}

/// A topology command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// CLUSTER SLOTS.
    Slots,
    /// CLUSTER SHARDS.
    Shards,
    /// CLUSTER NODES.
    Nodes,
    /// CLUSTER REPLICAS / SLAVES.
    Replicas,
}

/// Why a reply could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    /// No local port for a node.
    #[error("no local port for a cluster node")]
    NoLocalPort,
    /// Not the expected shape.
    #[error("malformed reply: {0}")]
    Malformed(String),
}

/// The topology command `args` is, if any.
pub fn topology_command(args: &[&[u8]]) -> Option<Topology> {
    if args.len() < 2 || !args[0].eq_ignore_ascii_case(b"CLUSTER") {
        return None;
    }
    let sub = args[1];
    if sub.eq_ignore_ascii_case(b"SLOTS") {
        Some(Topology::Slots)
    } else if sub.eq_ignore_ascii_case(b"SHARDS") {
        Some(Topology::Shards)
    } else if sub.eq_ignore_ascii_case(b"NODES") {
        Some(Topology::Nodes)
    } else if sub.eq_ignore_ascii_case(b"REPLICAS") || sub.eq_ignore_ascii_case(b"SLAVES") {
        Some(Topology::Replicas)
    } else {
        None
    }
}

/// False when `frame` certainly holds no redirect.
pub fn may_redirect(frame: &[u8]) -> bool {
    frame.starts_with(b"-MOVED ") || frame.starts_with(b"-ASK ")
}

/// Rewrites a simple-error redirect.
pub fn rewrite_redirects(frame: &[u8], map: &dyn NodeMap) -> Result<Option<Vec<u8>>, RewriteError> {
    let text = std::str::from_utf8(frame)
        .map_err(|_| RewriteError::Malformed("not UTF-8".into()))?
        .trim_end();
    let mut parts = text[1..].split(' ');
    let (Some(kind), Some(slot), Some(addr)) = (parts.next(), parts.next(), parts.next()) else {
        return Ok(None);
    };
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Ok(None);
    };
    let port: u16 = port
        .parse()
        .map_err(|_| RewriteError::Malformed("port".into()))?;
    let local = map.local_for(host, port).ok_or(RewriteError::NoLocalPort)?;
    Ok(Some(format!("-{kind} {slot} {local}\r\n").into_bytes()))
}

/// Rewrites a topology reply.
pub fn rewrite_topology(
    _which: Topology,
    _frame: &[u8],
    _map: &dyn NodeMap,
) -> Result<Vec<u8>, RewriteError> {
    Err(RewriteError::Malformed("not implemented yet".into()))
}

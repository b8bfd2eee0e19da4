//! The cluster topology commands: the replies that name nodes, which cluster mode rewrites.
//! Pure and free of imports, so that the fuzz targets can include it with the rewrite.

/// A command whose reply describes the cluster's topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// `CLUSTER SLOTS`.
    Slots,
    /// `CLUSTER SHARDS`.
    Shards,
    /// `CLUSTER NODES`.
    Nodes,
    /// `CLUSTER REPLICAS <id>` and its old name `CLUSTER SLAVES <id>`.
    Replicas,
}

/// Recognises a topology command from its arguments (command name first), case-insensitively.
/// A wrong number of arguments is not a topology command: redis-server answers it with an error.
pub fn topology_command(args: &[&[u8]]) -> Option<Topology> {
    let [cmd, sub, rest @ ..] = args else {
        return None;
    };
    if !cmd.eq_ignore_ascii_case(b"CLUSTER") {
        return None;
    }
    let (which, extra) = if sub.eq_ignore_ascii_case(b"SLOTS") {
        (Topology::Slots, 0)
    } else if sub.eq_ignore_ascii_case(b"SHARDS") {
        (Topology::Shards, 0)
    } else if sub.eq_ignore_ascii_case(b"NODES") {
        (Topology::Nodes, 0)
    } else if sub.eq_ignore_ascii_case(b"REPLICAS") || sub.eq_ignore_ascii_case(b"SLAVES") {
        (Topology::Replicas, 1)
    } else {
        return None;
    };
    (rest.len() == extra).then_some(which)
}

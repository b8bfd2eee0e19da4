//! The pure parts of entra-redis-proxy the fuzz targets exercise, compiled from the daemon's
//! own source files: the RESP scanners and decoder, the address parser, and the cluster
//! reply rewrite. Including the files (rather than depending on the daemon crate) keeps
//! tokio, rustls and the rest of the daemon out of the fuzz build, which then takes seconds.
//! The module paths are the daemon's, so the targets read `entra_redis_proxy::resp::...`.

#[path = "../src/resp/mod.rs"]
pub mod resp;

#[path = "../src/addr.rs"]
pub mod addr;

#[path = "../src/session/topology.rs"]
mod topology;

#[doc(hidden)]
#[path = "../src/cluster/rewrite.rs"]
pub mod rewrite;

/// What `cluster/rewrite.rs` takes from the session: the topology commands.
pub mod session {
    pub use super::topology::{topology_command, Topology};
}

/// The cluster reply rewrite.
pub mod cluster {
    pub use super::rewrite;
}

//! The hook through which cluster mode rewrites replies that name cluster nodes. The session
//! only knows this trait; `crate::cluster` implements it.

use super::command::Topology;
use super::replies::Route;
use super::{ClientStream, Session};
use crate::resp;

/// Rewrites node addresses in replies to the addresses of local listeners (cluster mode).
pub trait ReplyRewriter: Send + Sync {
    /// Cheap pre-check run on every reply frame: `false` means the frame certainly holds no
    /// MOVED/ASK redirect.
    fn may_redirect(&self, frame: &[u8]) -> bool;

    /// The frame with its MOVED/ASK addresses made local; `None` when nothing changed. A frame
    /// that cannot be rewritten becomes an error reply, so no cache address reaches a client.
    fn rewrite_redirects(&self, frame: &[u8], upstream_host: &str) -> Option<Vec<u8>>;

    /// The reply to a topology command with every node address made local (or an error reply
    /// in its place).
    fn rewrite_topology(&self, which: Topology, frame: &[u8], upstream_host: &str) -> Vec<u8>;
}

impl<C: ClientStream> Session<C> {
    /// Cluster mode: a frame for the client with its MOVED/ASK addresses made local.
    pub(super) fn rewrite_redirect(&self, frame: std::ops::Range<usize>) -> Route {
        let bytes = &self.ubuf[frame];
        let Some(rewriter) = self.ctx.cluster.as_deref() else {
            return Route::Client;
        };
        if !rewriter.may_redirect(bytes) {
            return Route::Client;
        }
        match rewriter.rewrite_redirects(bytes, self.ctx.connector.host()) {
            None => Route::Client,
            Some(out) => Route::Replace(out),
        }
    }

    /// Cluster mode: the reply to CLUSTER SLOTS/SHARDS/NODES/REPLICAS with every node
    /// address made local. Errors from the cache pass unchanged.
    pub(super) fn rewrite_topology(
        &self,
        which: Topology,
        frame: std::ops::Range<usize>,
    ) -> Vec<u8> {
        let bytes = &self.ubuf[frame];
        match self.ctx.cluster.as_deref() {
            Some(rewriter) if !resp::is_error_reply(bytes) => {
                rewriter.rewrite_topology(which, bytes, self.ctx.connector.host())
            }
            _ => bytes.to_vec(),
        }
    }
}

//! Large frames pass through in pieces: which frames stream, and when streaming starts.
//!
//! A frame (a reply from the cache, or a client command) that is still incomplete after
//! [`STREAM_THRESHOLD`] bytes is routed from its first bytes, and from then on every byte of
//! it the scanner has passed goes on as it arrives, so the read buffer holds only what is
//! still unscanned (a header or a short line), whatever the value's size. The scanners keep
//! counting, so the session still knows where the frame ends.
//!
//! Only frames whose routing needs nothing beyond their first bytes stream:
//! - replies: to an ordinary client command (`Kind::Plain`) at the head of the queue, a bulk
//!   string, a verbatim string, an array, a set or a map (in cluster mode only bulk and
//!   verbatim strings: an aggregate may hold a MOVED/ASK error to rewrite), and not on a
//!   MONITOR or RESP2 subscribed connection;
//! - commands: multibulk, whose name (read whole) makes them ordinary (`quick_kind`), from an
//!   authenticated client that is not a RESP2 subscriber served through RESP3.
//!
//! Everything else (push frames, the proxy's own replies, EXEC arrays it splices, topology
//! replies, blocking replies, the commands it classifies) is small in practice and is still
//! buffered whole, within the protocol limits.
//!
//! While a frame streams, nothing else may enter its stream: no local reply goes to the
//! client in the middle of a streaming reply, and no AUTH (or any command of the proxy's)
//! goes to the cache in the middle of a streaming command (`at_safe_point`). A connection
//! lost mid-frame cannot be replaced (`on_upstream_loss`).

use std::ops::Range;

use super::command::{quick_kind, Kind};
use super::queue::Pending;
use super::{ClientStream, Session};

/// An incomplete frame holding this many bytes in a read buffer starts streaming.
pub(super) const STREAM_THRESHOLD: usize = 64 * 1024;

/// Most bytes read from the cache before they are routed (the reading goes on at once after:
/// the TLS stream must be read until it has nothing left).
pub(super) const UPSTREAM_READ_BUDGET: usize = 64 * 1024;

impl<C: ClientStream> Session<C> {
    /// The incomplete reply frame at `start` of the upstream buffer holds at least
    /// [`STREAM_THRESHOLD`] bytes: if it can stream, routes it now (to the client) and returns
    /// true; the caller then forwards what the scanner has passed.
    pub(super) fn start_reply_stream(&mut self, start: usize) -> bool {
        let first = self.ubuf[start];
        let shape = match first {
            b'$' | b'=' => true,
            b'*' | b'%' | b'~' => self.ctx.cluster.is_none(),
            _ => false,
        };
        let ordinary = matches!(
            self.queue.head(),
            Some(Pending::Command {
                kind: Kind::Plain,
                remaining: Some(r),
                ..
            }) if *r > 0
        );
        if !shape
            || !ordinary
            || self.conn.monitor
            || (self.conn.proto == 2 && self.conn.subscribed())
        {
            return false;
        }
        // The decision `route` takes for such a frame reads only its type byte.
        let to_client = self.route_to_client(start..self.ubuf.len());
        debug_assert!(to_client, "a streaming reply goes to the client");
        self.ustreaming = true;
        true
    }

    /// The incomplete multibulk command at `frame.start` of the client buffer holds at least
    /// [`STREAM_THRESHOLD`] bytes: if its name (at `name`, relative to the frame) makes it an
    /// ordinary command, queues it now and returns true; the caller then forwards what the
    /// scanner has passed.
    pub(super) fn start_command_stream(
        &mut self,
        frame_start: usize,
        nargs: usize,
        name: Range<usize>,
    ) -> bool {
        let name = &self.cbuf[frame_start + name.start..frame_start + name.end];
        if quick_kind(name) != Some(Kind::Plain) || self.sent.emulating() || !self.client_authed {
            return false;
        }
        self.enqueue_command(Kind::Plain, nargs);
        self.cstreaming = true;
        true
    }
}

//! Buffered I/O for a session: the output plans that send frames straight from the read
//! buffers (reading without holding a buffer while idle is in [`crate::sockio`]).

pub use crate::sockio::ClientStream;
pub(super) use crate::sockio::{read_available, ReadOutcome, READ_CHUNK};

/// Client bytes read ahead while a blocking command holds the session.
pub(super) const HELD_MAX: usize = 1024 * 1024;

/// Polls the drain timer a session builds only while draining (`None`: never ready).
pub(super) fn poll_timer(
    timer: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<()> {
    match timer.as_mut() {
        Some(sleep) => std::future::Future::poll(sleep.as_mut(), cx),
        None => std::task::Poll::Pending,
    }
}

/// Most bytes read from a client in one turn of a session's loop.
pub(super) const CLIENT_READ_BUDGET: usize = 256 * 1024;

/// A piece of output, in order. Ranges point into the session's read buffers.
pub(super) enum Segment {
    Buffer(std::ops::Range<usize>),
    Static(&'static [u8]),
    Owned(Vec<u8>),
}

pub(super) fn push_range(plan: &mut Vec<Segment>, start: usize, end: usize) {
    if end > start {
        if let Some(Segment::Buffer(r)) = plan.last_mut() {
            if r.end == start {
                r.end = end;
                return;
            }
        }
        plan.push(Segment::Buffer(start..end));
    }
}

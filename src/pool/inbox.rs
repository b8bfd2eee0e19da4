//! [`Inbox`]: where a shared connection leaves the reply bytes of one session.
//!
//! The connection's task pushes the bytes of each run of frames that answer the session (zero
//! copy: slices of its read buffer), in order; the session takes them and writes them to its
//! client. The inbox also counts the session's commands that are still unanswered, so the
//! session knows when everything it sent has come back (before a local reply, a pin, QUIT).
//!
//! It is a mutex and two wakers, not a channel: an idle session's inbox holds no buffer.
//! While more than [`INBOX_MAX`] bytes wait unread (the client does not read), the
//! connection's task waits too ([`Inbox::poll_room`]): one slow reader stalls the shared
//! connection it reads from, never the proxy's memory.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

/// Reply bytes a session may have waiting before the connection that fills it waits.
pub const INBOX_MAX: usize = 256 * 1024;

/// What a session takes from its inbox.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    /// Reply bytes, in order.
    Bytes(Bytes),
    /// The shared connection was lost with commands of this session in flight: they may have
    /// run, so the client must see its connection close.
    Lost,
}

#[derive(Default)]
struct State {
    /// Reply bytes not yet taken, in order.
    chunks: VecDeque<Bytes>,
    /// Their total length.
    queued: usize,
    /// Commands sent and not yet fully answered.
    outstanding: u32,
    /// The connection carrying commands of this session was lost.
    lost: bool,
    /// The session is gone: what arrives for it is dropped.
    closed: bool,
    /// The session, waiting for bytes.
    reader: Option<Waker>,
    /// The connection's task, waiting for room.
    writer: Option<Waker>,
}

/// One session's reply inbox (see the module documentation).
#[derive(Default)]
pub struct Inbox {
    state: Mutex<State>,
}

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session is about to send `n` more commands whose replies come here.
    pub fn expect(&self, n: u32) {
        let mut s = self.lock();
        s.outstanding = s.outstanding.saturating_add(n);
    }

    /// Takes back an [`Inbox::expect`] whose commands were not sent after all.
    pub fn forget(&self, n: u32) {
        let mut s = self.lock();
        s.outstanding = s.outstanding.saturating_sub(n);
    }

    /// The session's commands not yet fully answered, and whether reply bytes wait untaken.
    pub fn in_flight(&self) -> (u32, bool) {
        let s = self.lock();
        (s.outstanding, !s.chunks.is_empty())
    }

    /// True when every command sent has been answered (the bytes may still wait untaken), and
    /// no loss was reported.
    pub fn answered_all(&self) -> bool {
        let s = self.lock();
        s.outstanding == 0 && !s.lost
    }

    /// True when every command sent has been answered and every byte taken (never after a
    /// loss, which [`Inbox::poll_take`] reports).
    pub fn is_settled(&self) -> bool {
        let s = self.lock();
        s.chunks.is_empty() && s.outstanding == 0 && !s.lost
    }

    /// From the connection: reply bytes that answer `completed` of the session's commands
    /// (0 for the first part of a frame that is still arriving). Returns true if the inbox
    /// is now over [`INBOX_MAX`] (the caller should wait for room).
    pub fn push(&self, bytes: Bytes, completed: u32) -> bool {
        let mut s = self.lock();
        s.outstanding = s.outstanding.saturating_sub(completed);
        if s.closed {
            return false;
        }
        if !bytes.is_empty() {
            s.queued += bytes.len();
            s.chunks.push_back(bytes);
        }
        if let Some(w) = s.reader.take() {
            w.wake();
        }
        s.queued > INBOX_MAX
    }

    /// From the connection: it was lost with commands of this session in flight.
    pub fn lose(&self) {
        let mut s = self.lock();
        s.lost = true;
        if let Some(w) = s.reader.take() {
            w.wake();
        }
    }

    /// From the session: it ends; later bytes are dropped and a waiting connection goes on.
    pub fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.chunks = VecDeque::new();
        s.queued = 0;
        if let Some(w) = s.writer.take() {
            w.wake();
        }
    }

    /// From the session: the next bytes (all that wait, up to [`INBOX_MAX`] at once), or
    /// [`Taken::Lost`] once the bytes that came before the loss have been taken.
    pub fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Taken> {
        let mut s = self.lock();
        if let Some(first) = s.chunks.pop_front() {
            s.queued -= first.len();
            if s.chunks.is_empty() && s.chunks.capacity() > 4 {
                s.chunks = VecDeque::new();
            }
            if s.queued <= INBOX_MAX {
                if let Some(w) = s.writer.take() {
                    w.wake();
                }
            }
            return Poll::Ready(Taken::Bytes(first));
        }
        if s.lost {
            return Poll::Ready(Taken::Lost);
        }
        if !s.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.reader = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// From the connection: ready once the bytes waiting are at most [`INBOX_MAX`] (or the
    /// session is gone).
    pub fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.lock();
        if s.closed || s.queued <= INBOX_MAX {
            return Poll::Ready(());
        }
        s.writer = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take_now(inbox: &Inbox) -> Poll<Taken> {
        inbox.poll_take(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn bytes_come_out_in_order_and_count_down_what_is_owed() {
        let inbox = Inbox::default();
        inbox.expect(3);
        assert_eq!(inbox.in_flight(), (3, false));
        assert!(!inbox.push(Bytes::from_static(b"+OK\r\n"), 1));
        // The first part of a large frame answers nothing yet.
        assert!(!inbox.push(Bytes::from_static(b"$5\r\nhe"), 0));
        assert!(!inbox.push(Bytes::from_static(b"llo\r\n:1\r\n"), 2));
        assert_eq!(inbox.in_flight(), (0, true));
        assert!(inbox.answered_all());
        assert!(!inbox.is_settled());
        let mut all = Vec::new();
        while let Poll::Ready(Taken::Bytes(b)) = take_now(&inbox) {
            all.extend_from_slice(&b);
        }
        assert_eq!(all, b"+OK\r\n$5\r\nhello\r\n:1\r\n");
        assert!(inbox.is_settled());
        assert!(take_now(&inbox).is_pending());
    }

    #[test]
    fn a_loss_is_reported_after_the_bytes_that_came_before_it() {
        let inbox = Inbox::default();
        inbox.expect(2);
        inbox.push(Bytes::from_static(b"+OK\r\n"), 1);
        inbox.lose();
        assert_eq!(
            take_now(&inbox),
            Poll::Ready(Taken::Bytes(Bytes::from_static(b"+OK\r\n")))
        );
        assert_eq!(take_now(&inbox), Poll::Ready(Taken::Lost));
        assert!(!inbox.is_settled());
        assert!(!inbox.answered_all());
    }

    #[test]
    fn a_full_inbox_holds_the_writer_until_the_reader_takes() {
        let inbox = Inbox::default();
        inbox.expect(1);
        let big = Bytes::from(vec![b'x'; INBOX_MAX + 1]);
        assert!(inbox.push(big, 0));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(inbox.poll_room(&mut cx).is_pending());
        assert!(matches!(take_now(&inbox), Poll::Ready(Taken::Bytes(_))));
        assert!(inbox.poll_room(&mut cx).is_ready());
        // A closed inbox never holds the writer, and drops what comes.
        assert!(inbox.push(Bytes::from(vec![b'x'; INBOX_MAX + 1]), 0));
        inbox.close();
        assert!(inbox.poll_room(&mut cx).is_ready());
        assert!(!inbox.push(Bytes::from_static(b"+OK\r\n"), 1));
        assert!(take_now(&inbox).is_pending());
    }
}

//! The reply queue: what each frame from the cache is the answer to.
//!
//! Every command sent upstream (the client's, or one the proxy injects) and every reply the
//! proxy gives itself takes an entry, in order. A frame from the cache belongs to the entry at
//! the head. The queue also counts what the safe-point rule needs (entries that change
//! connection state, injected AUTHs), so those counts cannot drift from its contents.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::blocking::Blocking;
use super::command::Kind;
use super::txn::LocalReplies;
use crate::token::AccessToken;

/// An entry of the reply queue.
#[derive(Debug)]
pub(super) enum Pending {
    /// Commands forwarded for the client.
    Command {
        /// What the command is.
        kind: Kind,
        /// Ordinary commands coalesce: how many are in this entry.
        count: usize,
        /// Argument count (name included), for (UN)SUBSCRIBE.
        nargs: usize,
        /// Changes connection state: no re-AUTH while it is in flight.
        state_change: bool,
        /// For a MULTI that opened a transaction: the transaction's number, so that a refused
        /// MULTI closes only the transaction it opened.
        opened_multi: Option<u64>,
        /// Frames still expected, once resolved at the head of the queue.
        remaining: Option<usize>,
    },
    /// A reply the proxy gives itself (the client's AUTH, a refused command).
    Local(Cow<'static, [u8]>),
    /// The client's EXEC (or the DISCARD sent for it) closing a transaction in which the
    /// proxy answered commands itself: its reply gets their results (see `txn.rs`).
    Exec(Box<LocalReplies>),
    /// A HELLO the proxy injected to switch the upstream protocol (RESP2 subscribers); its
    /// reply is swallowed.
    Hello {
        /// The protocol it asks for.
        version: u8,
    },
    /// A blocking command whose wait is cut into slices that end before the token expires.
    Blocking(Box<Blocking>),
    /// A command restoring state on a replacement connection; its reply is swallowed.
    Restore,
    /// A RESP2 subscriber's command that redis-server would refuse: the `COMMAND INFO` reply
    /// is replaced by the error redis-server would give.
    Refusal(Vec<Vec<u8>>),
    /// `XREVRANGE key + - COUNT 1`, injected before `XREAD ... $` so that a re-issued XREAD
    /// waits for entries after the same ID; reply swallowed.
    StreamProbe {
        /// The argument of the blocking XREAD whose `$` the probed ID replaces.
        arg: usize,
    },
    /// `CLIENT ID`, injected before the first blocking command of a connection so that the
    /// wait can be interrupted (`unblock.rs`); reply swallowed.
    ClientId,
    /// An AUTH the proxy injected; its reply (the last of `frames`) is swallowed and checked.
    Reauth {
        /// The token sent.
        token: Arc<AccessToken>,
        /// Frames still expected (2 when wrapped in `CLIENT REPLY ON` ... `OFF`).
        frames: usize,
        /// Since when the new token waited for this connection (for the metric).
        started: Instant,
    },
}

impl Pending {
    /// A short description for trace logs (never a token).
    pub(super) fn label(&self) -> String {
        match self {
            Pending::Command {
                kind,
                count,
                remaining,
                ..
            } => format!("{kind:?} x{count} remaining={remaining:?}"),
            Pending::Local(_) => "local reply".into(),
            Pending::Exec(l) => format!("EXEC with {} local replies", l.replies.len()),
            Pending::Hello { version } => format!("injected HELLO {version}"),
            Pending::Reauth { frames, .. } => format!("injected AUTH ({frames} frames)"),
            Pending::Blocking(_) => "blocking command slice".into(),
            Pending::Restore => "restore".into(),
            Pending::Refusal(_) => "refusal".into(),
            Pending::StreamProbe { .. } => "stream probe".into(),
            Pending::ClientId => "injected CLIENT ID".into(),
        }
    }

    /// Counts toward the state changes in flight.
    fn changes_state(&self) -> bool {
        matches!(
            self,
            Pending::Command {
                state_change: true,
                ..
            } | Pending::Hello { .. }
                | Pending::Exec(_)
        )
    }

    /// The client is owed a reply for this entry.
    fn owes_client(&self) -> bool {
        matches!(
            self,
            Pending::Command { .. }
                | Pending::Local(_)
                | Pending::Exec(_)
                | Pending::Blocking(_)
                | Pending::Refusal(_)
        )
    }
}

/// The queue of [`Pending`] entries, with the counts the safe-point rule reads.
#[derive(Debug, Default)]
pub(super) struct ReplyQueue {
    /// The entries, oldest first.
    entries: VecDeque<Pending>,
    /// Entries that change connection state (see [`Pending::changes_state`]).
    state_changes: usize,
    /// Injected AUTHs.
    reauths: usize,
}

impl ReplyQueue {
    /// Adds an entry at the end.
    pub(super) fn push(&mut self, p: Pending) {
        self.count(&p, true);
        self.entries.push_back(p);
    }

    /// Adds a client command; a run of ordinary commands shares one entry.
    pub(super) fn push_command(
        &mut self,
        kind: Kind,
        nargs: usize,
        state_change: bool,
        opened_multi: Option<u64>,
    ) {
        if !state_change && kind == Kind::Plain && self.join_plain_run() {
            return;
        }
        self.push(Pending::Command {
            kind,
            count: 1,
            nargs,
            state_change,
            opened_multi,
            remaining: None,
        });
    }

    /// Takes back the last client command pushed, which will get no reply: a streaming
    /// command cut short by the client's protocol error never reached the cache whole.
    pub(super) fn withdraw_last_command(&mut self) {
        match self.entries.back_mut() {
            Some(Pending::Command {
                count, remaining, ..
            }) if *count > 1 => {
                *count -= 1;
                if let Some(r) = remaining {
                    *r = r.saturating_sub(1);
                }
                if *remaining == Some(0) {
                    if let Some(p) = self.entries.pop_back() {
                        self.count(&p, false);
                    }
                }
            }
            Some(Pending::Command { .. }) => {
                if let Some(p) = self.entries.pop_back() {
                    self.count(&p, false);
                }
            }
            _ => {}
        }
    }

    /// The entry the next frame belongs to.
    pub(super) fn head(&self) -> Option<&Pending> {
        self.entries.front()
    }

    /// Removes the head and returns it: the caller now owns what it was owed.
    pub(super) fn pop(&mut self) -> Option<Pending> {
        let p = self.entries.pop_front()?;
        self.count(&p, false);
        Some(p)
    }

    /// Removes the head if it is a local reply, and returns the reply.
    pub(super) fn pop_local(&mut self) -> Option<Cow<'static, [u8]>> {
        match self.entries.front() {
            Some(Pending::Local(_)) => match self.pop() {
                Some(Pending::Local(reply)) => Some(reply),
                _ => None,
            },
            _ => None,
        }
    }

    /// Fixes how many frames the command at the head will produce.
    pub(super) fn resolve_head(&mut self, n: usize) {
        if let Some(Pending::Command { remaining, .. }) = self.entries.front_mut() {
            *remaining = Some(n);
        }
    }

    /// Counts one frame against the command at the head (resolved), and pops it once it has
    /// all its frames.
    pub(super) fn command_frame(&mut self) {
        if let Some(Pending::Command {
            remaining: Some(r), ..
        }) = self.entries.front_mut()
        {
            *r = r.saturating_sub(1);
            if *r == 0 {
                self.pop();
            }
        }
    }

    /// Counts one more plain command in the run of plain commands at the back, if the back is
    /// one whose count is still open (not yet resolved at the head); true if it did.
    #[inline]
    fn join_plain_run(&mut self) -> bool {
        if let Some(Pending::Command {
            kind: Kind::Plain,
            count,
            state_change: false,
            remaining: None,
            ..
        }) = self.entries.back_mut()
        {
            *count += 1;
            return true;
        }
        false
    }

    /// `push_command(Kind::Plain, nargs, false, None)`, inlined where every plain command
    /// passes: nearly always it only joins the run at the back.
    #[inline]
    pub(super) fn push_plain(&mut self, nargs: usize) {
        if !self.join_plain_run() {
            self.push_command(Kind::Plain, nargs, false, None);
        }
    }

    /// `command_frame` for a plain command at the head (resolved); false, and nothing
    /// counted, if the head is anything else.
    #[inline]
    pub(super) fn plain_frame(&mut self) -> bool {
        let Some(Pending::Command {
            kind: Kind::Plain,
            remaining: Some(r),
            ..
        }) = self.entries.front_mut()
        else {
            return false;
        };
        if *r == 0 {
            return false;
        }
        *r -= 1;
        if *r == 0 {
            self.pop();
        }
        true
    }

    /// Pops the command at the head if it expects no more frames; true if it did.
    pub(super) fn pop_finished_command(&mut self) -> bool {
        if matches!(
            self.entries.front(),
            Some(Pending::Command {
                remaining: Some(0),
                ..
            })
        ) {
            self.pop();
            return true;
        }
        false
    }

    /// Counts one frame against the injected AUTH at the head; once its last frame (the AUTH
    /// reply) arrives, pops it and returns the token and when the wait for it started.
    pub(super) fn reauth_frame(&mut self) -> Option<(Arc<AccessToken>, Instant)> {
        let Some(Pending::Reauth { frames, .. }) = self.entries.front_mut() else {
            return None;
        };
        *frames = frames.saturating_sub(1);
        if *frames > 0 {
            return None;
        }
        match self.pop() {
            Some(Pending::Reauth { token, started, .. }) => Some((token, started)),
            _ => None,
        }
    }

    /// Takes the one blocking command in flight, if nothing else but injected AUTHs is (the
    /// connection is being replaced: the entries are dropped).
    pub(super) fn take_lone_blocking(&mut self) -> Option<Box<Blocking>> {
        let blocking = self
            .entries
            .iter()
            .filter(|p| matches!(p, Pending::Blocking(_)))
            .count();
        if blocking != 1 || self.entries.len() != self.reauths + 1 {
            return None;
        }
        let i = self
            .entries
            .iter()
            .position(|p| matches!(p, Pending::Blocking(_)))?;
        match self.entries.remove(i) {
            Some(Pending::Blocking(b)) => Some(b),
            _ => None,
        }
    }

    /// The blocking command waiting behind the head (for a stream probe's result).
    pub(super) fn blocking_mut(&mut self) -> Option<&mut Blocking> {
        self.entries.iter_mut().find_map(|p| match p {
            Pending::Blocking(b) => Some(&mut **b),
            _ => None,
        })
    }

    /// Entries in flight that change connection state.
    pub(super) fn state_changes_in_flight(&self) -> usize {
        self.state_changes
    }

    /// Injected AUTHs in flight.
    pub(super) fn reauths_in_flight(&self) -> usize {
        self.reauths
    }

    /// True while some command forwarded for the client still waits for its reply.
    pub(super) fn owes_client(&self) -> bool {
        self.entries.iter().any(Pending::owes_client)
    }

    /// True when nothing but injected AUTHs is in flight.
    pub(super) fn only_reauths(&self) -> bool {
        self.entries.len() == self.reauths
    }

    /// Number of entries.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Forgets every entry (the connection they were sent on is gone).
    pub(super) fn clear(&mut self) {
        *self = ReplyQueue::default();
    }

    /// Releases the memory of an empty queue (an idle session keeps none).
    pub(super) fn release_if_idle(&mut self) -> bool {
        if self.entries.is_empty() && self.entries.capacity() > 0 {
            self.entries = VecDeque::new();
            return true;
        }
        false
    }

    fn count(&mut self, p: &Pending, add: bool) {
        let delta = |n: &mut usize| {
            if add {
                *n += 1
            } else {
                *n = n.saturating_sub(1)
            }
        };
        if p.changes_state() {
            delta(&mut self.state_changes);
        }
        if matches!(p, Pending::Reauth { .. }) {
            delta(&mut self.reauths);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_commands_share_an_entry_and_state_changes_are_counted() {
        let mut q = ReplyQueue::default();
        q.push_command(Kind::Plain, 2, false, None);
        q.push_command(Kind::Plain, 3, false, None);
        assert_eq!(q.len(), 1);
        q.push_command(Kind::Multi, 1, true, Some(1));
        q.push_command(Kind::Plain, 2, false, None);
        assert_eq!(q.len(), 3);
        assert_eq!(q.state_changes_in_flight(), 1);
        q.push(Pending::Hello { version: 3 });
        assert_eq!(q.state_changes_in_flight(), 2);
        assert!(matches!(q.pop(), Some(Pending::Command { count: 2, .. })));
        assert!(matches!(
            q.pop(),
            Some(Pending::Command {
                kind: Kind::Multi,
                ..
            })
        ));
        assert_eq!(q.state_changes_in_flight(), 1);
        assert!(q.owes_client());
        q.pop();
        q.pop();
        assert_eq!(q.state_changes_in_flight(), 0);
        assert!(!q.owes_client());
    }

    #[test]
    fn a_withdrawn_command_is_owed_nothing() {
        let mut q = ReplyQueue::default();
        q.push_command(Kind::Plain, 2, false, None);
        q.push_command(Kind::Plain, 3, false, None);
        q.withdraw_last_command();
        assert!(matches!(q.head(), Some(Pending::Command { count: 1, .. })));
        // Resolved at the head: the frames still expected shrink with it.
        q.push_command(Kind::Plain, 3, false, None);
        q.resolve_head(2);
        q.withdraw_last_command();
        assert!(matches!(
            q.head(),
            Some(Pending::Command {
                count: 1,
                remaining: Some(1),
                ..
            })
        ));
        q.withdraw_last_command();
        assert!(q.head().is_none());
        assert!(!q.owes_client());
        // Only a client command is withdrawn.
        q.push(Pending::Local(Cow::Borrowed(b"+OK\r\n")));
        q.withdraw_last_command();
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn plain_frame_counts_only_a_resolved_plain_command() {
        let mut q = ReplyQueue::default();
        assert!(!q.plain_frame(), "an empty queue owes nothing");
        q.push_plain(2);
        q.push_plain(2);
        assert_eq!(q.len(), 1, "one run");
        assert!(
            !q.plain_frame(),
            "not resolved yet: settle_head fixes the count first"
        );
        q.resolve_head(2);
        assert!(q.plain_frame());
        assert_eq!(q.len(), 1);
        assert!(q.plain_frame());
        assert!(q.head().is_none(), "popped with its last frame");
        q.push_command(Kind::Multi, 1, true, Some(1));
        q.resolve_head(1);
        assert!(!q.plain_frame(), "MULTI's reply is routed the general way");
        assert_eq!(q.len(), 1);
        q.push_plain(2);
        assert_eq!(
            q.len(),
            2,
            "a plain command after MULTI starts a run of its own"
        );
        q.push_command(Kind::Plain, 2, true, None);
        q.push_plain(2);
        assert_eq!(q.len(), 4, "nor does it join a state-changing one");
    }

    #[test]
    fn a_local_reply_is_popped_only_from_the_head() {
        let mut q = ReplyQueue::default();
        q.push_command(Kind::Plain, 1, false, None);
        q.push(Pending::Local(Cow::Borrowed(b"+OK\r\n")));
        assert!(q.pop_local().is_none(), "the command's reply comes first");
        q.pop();
        assert_eq!(q.pop_local().as_deref(), Some(&b"+OK\r\n"[..]));
        assert!(q.pop().is_none());
        assert!(q.only_reauths());
    }
}

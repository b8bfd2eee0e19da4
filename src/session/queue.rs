//! The reply queue: what each frame from the cache is the answer to.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use super::blocking::Blocking;
use super::command::Kind;
use crate::token::AccessToken;

/// An entry of the reply queue.
#[derive(Debug)]
pub(super) enum Pending {
    /// Commands forwarded for the client.
    Command {
        kind: Kind,
        /// Ordinary commands coalesce: how many are in this entry.
        count: usize,
        /// Argument count (name included), for (UN)SUBSCRIBE.
        nargs: usize,
        /// Counts toward `state_changes_in_flight`.
        state_change: bool,
        /// For MULTI: the send-side multi epoch it opened, and whether MULTI was already on.
        multi_epoch: u64,
        /// Frames still expected, once resolved at the head of the queue.
        remaining: Option<usize>,
    },
    /// A reply the proxy gives itself (the client's AUTH, a refused command).
    Local(Cow<'static, [u8]>),
    /// A HELLO the proxy injected to switch the upstream protocol (RESP2 subscribers); its
    /// reply is swallowed.
    Hello { version: u8 },
    /// A blocking command whose wait is cut into slices that end before the token expires.
    Blocking(Box<Blocking>),
    /// A command restoring state on a replacement connection; its reply is swallowed.
    Restore,
    /// A RESP2 subscriber's command that redis-server would refuse: the `COMMAND INFO` reply
    /// is replaced by the error redis-server would give.
    Refusal(Vec<Vec<u8>>),
    /// `XREVRANGE key + - COUNT 1`, injected before `XREAD ... $` so that a re-issued XREAD
    /// waits for entries after the same ID; reply swallowed. `arg` is the `$` to replace.
    StreamProbe { arg: usize },
    /// An AUTH the proxy injected; its reply (the last of `frames`) is swallowed and checked.
    Reauth {
        token: Arc<AccessToken>,
        frames: usize,
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
            Pending::Hello { version } => format!("injected HELLO {version}"),
            Pending::Reauth { frames, .. } => format!("injected AUTH ({frames} frames)"),
            Pending::Blocking(_) => "blocking command slice".into(),
            Pending::Restore => "restore".into(),
            Pending::Refusal(_) => "refusal".into(),
            Pending::StreamProbe { .. } => "stream probe".into(),
        }
    }
}

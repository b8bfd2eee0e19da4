//! Connection state, seen from both ends of the session.
//!
//! [`ConnState`] is the server's state as the *reply stream* shows it: it changes when the
//! reply to a command arrives, so when a command reaches the head of the reply queue it is
//! exactly the state the server ran that command in. [`SentState`] is the state the server
//! will be in once everything *sent* so far has run; it decides what the next command needs
//! (a HELLO first, a local refusal, a safe point). The two agree whenever no state-changing
//! command is in flight.

use super::command::{ClientFlag, Kind, ReplyMode};
use super::subscriptions::Subscriptions;
use crate::resp::value::{self, Value};

/// The server's connection state, as the replies received so far show it.
#[derive(Debug)]
pub(super) struct ConnState {
    /// The upstream connection's protocol.
    pub(super) proto: u8,
    /// The protocol the client negotiated (2 while a RESP2 subscriber is served through a
    /// RESP3 upstream).
    pub(super) client_proto: u8,
    /// The selected database.
    pub(super) db: u32,
    /// `CLIENT REPLY` mode.
    pub(super) reply_mode: ReplyMode,
    /// Inside MULTI: commands are queued until EXEC/DISCARD.
    pub(super) in_multi: bool,
    /// The connection is in MONITOR mode.
    pub(super) monitor: bool,
    /// Channel, pattern and shard subscriptions.
    pub(super) subscriptions: Subscriptions,
    /// Inside MULTI: commands answered `+QUEUED` so far.
    queued: u32,
    /// Inside MULTI: the last `SELECT` queued, as (its place among the queued commands, its
    /// database); it takes effect if its element of the EXEC reply is `+OK`.
    queued_select: Option<(u32, u32)>,
}

impl Default for ConnState {
    fn default() -> Self {
        ConnState {
            proto: 2,
            client_proto: 2,
            db: 0,
            reply_mode: ReplyMode::On,
            in_multi: false,
            monitor: false,
            subscriptions: Subscriptions::default(),
            queued: 0,
            queued_select: None,
        }
    }
}

impl ConnState {
    /// True while subscribed to anything.
    pub(super) fn subscribed(&self) -> bool {
        !self.subscriptions.is_empty()
    }

    /// A RESP2 subscriber served through a RESP3 upstream (reply side).
    pub(super) fn emulating(&self) -> bool {
        self.client_proto == 2 && self.proto == 3
    }

    /// The state changes a command causes when it has run. `reply` is its reply frame, or
    /// `None` when CLIENT REPLY suppressed it (the command is then taken to have succeeded).
    /// Returns true if it was a refused MULTI, which the send side must know.
    pub(super) fn apply(&mut self, kind: Kind, reply: Option<&[u8]>) -> bool {
        let ok = reply.is_none_or(|r| !crate::resp::is_error_reply(r));
        if self.in_multi && !matches!(kind, Kind::Exec | Kind::Discard | Kind::Multi | Kind::Reset)
        {
            // Queued, not run: a SELECT takes effect at EXEC, if it succeeds there.
            if reply == Some(b"+QUEUED\r\n") {
                if let Kind::Select(Some(db)) = kind {
                    self.queued_select = Some((self.queued, db));
                }
                self.queued = self.queued.saturating_add(1);
            }
            return false;
        }
        match kind {
            Kind::Multi if ok => {
                self.in_multi = true;
                self.queued = 0;
                self.queued_select = None;
            }
            Kind::Multi => return true,
            Kind::Exec => {
                self.in_multi = false;
                if let (Some((at, db)), Some(reply)) = (self.queued_select.take(), reply) {
                    if exec_element_ok(reply, at as usize) {
                        self.db = db;
                    }
                }
            }
            Kind::Discard => self.in_multi = false,
            Kind::Hello(Some(v)) if ok => {
                self.proto = v;
                self.client_proto = v;
            }
            // RESET: back to a new connection's state (database 0, RESP2, replies on, no
            // transaction, no MONITOR, no subscriptions).
            Kind::Reset => *self = ConnState::default(),
            Kind::Monitor if ok => self.monitor = true,
            Kind::Select(Some(db)) if ok => self.db = db,
            _ => {}
        }
        false
    }
}

/// True if element `at` of an EXEC reply (an array of the queued commands' replies) is
/// `+OK`. A nil or error EXEC reply (WATCH failed, EXECABORT) ran nothing.
fn exec_element_ok(reply: &[u8], at: usize) -> bool {
    match value::decode(reply) {
        Ok(v) => match value::peel(&v) {
            Value::List(b'*', items) => matches!(
                items.get(at).map(value::peel),
                Some(Value::Line(b'+', t)) if t.as_ref() == b"OK"
            ),
            _ => false,
        },
        Err(_) => false,
    }
}

/// MULTI and WATCH on the send side: what the server's transaction state will be once
/// everything sent so far has run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Txn {
    /// No transaction, nothing watched.
    #[default]
    None,
    /// WATCH sent, no MULTI yet: keys are watched on this connection.
    Watching,
    /// MULTI sent and no EXEC/DISCARD/RESET since.
    Multi {
        /// Which MULTI opened it (the count of MULTIs sent), so that a refused MULTI closes
        /// only the transaction it opened.
        number: u64,
        /// Keys were watched before it opened.
        watched: bool,
    },
}

impl Txn {
    /// Inside MULTI (send side).
    pub(super) fn in_multi(self) -> bool {
        matches!(self, Txn::Multi { .. })
    }

    /// Keys are watched, or a transaction is open: the connection cannot be replaced.
    pub(super) fn is_open(self) -> bool {
        self != Txn::None
    }
}

/// The server's connection state once everything sent so far has run.
#[derive(Debug)]
pub(super) struct SentState {
    /// MULTI/WATCH.
    pub(super) txn: Txn,
    /// MULTIs sent so far (numbers transactions).
    pub(super) multis: u64,
    /// The next command is affected by CLIENT REPLY SKIP: treat it as state-changing.
    pub(super) skip_next: bool,
    /// The client's protocol.
    pub(super) client_proto: u8,
    /// The upstream connection's protocol.
    pub(super) upstream_proto: u8,
    /// Subscriptions (tracked while a RESP2 client is subscribed through a RESP3 upstream, to
    /// know when to switch back).
    pub(super) subs: Subscriptions,
    /// QUIT sent: the cache's close is expected and ends the session.
    pub(super) quit: bool,
    /// The client's name, its library and why the connection cannot be replaced: rarely set,
    /// so boxed (`None` until one of them is), keeping every idle session smaller.
    names: Option<Box<Names>>,
    /// `CLIENT NO-EVICT ON`, restored on a new connection.
    pub(super) no_evict: bool,
    /// `CLIENT NO-TOUCH ON`, restored on a new connection.
    pub(super) no_touch: bool,
    /// READONLY (cluster replicas), restored on a new connection.
    pub(super) readonly: bool,
    /// A `CLIENT KILL` was the last command sent: if the connection closes now, it may have
    /// killed itself, and the client must see it closed.
    pub(super) kill_sent: bool,
}

/// The rarely set part of [`SentState`].
#[derive(Debug, Default)]
struct Names {
    /// The client's name (CLIENT SETNAME, HELLO SETNAME), restored on a new connection.
    client_name: Option<Vec<u8>>,
    /// `CLIENT SETINFO` LIB-NAME and LIB-VER values, restored on a new connection.
    lib_info: [Option<Vec<u8>>; 2],
    /// Why the connection holds state the proxy cannot restore (CLIENT TRACKING, a command
    /// outside the allow-list, a state change queued in MULTI); `None` while it can be
    /// replaced. Never cleared: an unknown state is not known to be reset.
    unrestorable: Option<&'static str>,
}

impl Default for SentState {
    fn default() -> Self {
        SentState {
            txn: Txn::None,
            multis: 0,
            skip_next: false,
            client_proto: 2,
            upstream_proto: 2,
            subs: Subscriptions::default(),
            quit: false,
            names: None,
            no_evict: false,
            no_touch: false,
            readonly: false,
            kill_sent: false,
        }
    }
}

impl SentState {
    /// A RESP2 subscriber served through a RESP3 upstream (send side).
    pub(super) fn emulating(&self) -> bool {
        self.client_proto == 2 && self.upstream_proto == 3
    }

    /// `command_sent(Kind::Plain)` when it would change nothing but `kill_sent` (outside MULTI,
    /// no CLIENT REPLY SKIP to use up): records it and returns true; false leaves the command
    /// to `command_sent`. The hot path: one check instead of the general bookkeeping.
    #[inline]
    pub(super) fn plain_sent(&mut self) -> bool {
        if self.skip_next || self.txn.in_multi() {
            return false;
        }
        self.kill_sent = false;
        true
    }

    /// Records a client command being sent. Returns whether the command must be treated as
    /// state-changing, and, for a MULTI that opens a transaction, the transaction's number.
    pub(super) fn command_sent(&mut self, kind: Kind) -> (bool, Option<u64>) {
        let state_change = kind.changes_state() || std::mem::take(&mut self.skip_next);
        if kind == Kind::ClientReply(ReplyMode::Skip) {
            self.skip_next = true;
        }
        let mut opened = None;
        self.kill_sent = kind == Kind::ClientKill;
        // (A command outside the allow-list is judged by its reply instead: an unknown
        // command is refused at once, and one answered +QUEUED counts.)
        if self.txn.in_multi()
            && !matches!(kind, Kind::Select(_) | Kind::Unrestorable)
            && kind.changes_connection()
        {
            // Queued: it takes effect at EXEC, if it succeeds there, which only SELECT's
            // tracking follows.
            self.set_unrestorable("a connection-state change inside MULTI");
        }
        match kind {
            Kind::Multi => {
                self.multis += 1;
                match self.txn {
                    // A nested MULTI is refused by the server and changes nothing.
                    Txn::Multi { .. } => {}
                    Txn::None | Txn::Watching => {
                        self.txn = Txn::Multi {
                            number: self.multis,
                            watched: self.txn == Txn::Watching,
                        };
                        opened = Some(self.multis);
                    }
                }
            }
            // EXEC and DISCARD end the transaction and unwatch every key; so does UNWATCH.
            Kind::Exec | Kind::Discard => self.txn = Txn::None,
            Kind::Unwatch if self.txn == Txn::Watching => self.txn = Txn::None,
            // WATCH inside MULTI is refused by the server.
            Kind::Watch if self.txn == Txn::None => self.txn = Txn::Watching,
            Kind::Quit => self.quit = true,
            Kind::Reset => self.reset(),
            Kind::ClientFlag(ClientFlag::NoEvict, on) => self.no_evict = on,
            Kind::ClientFlag(ClientFlag::NoTouch, on) => self.no_touch = on,
            Kind::ReadOnly(on) => self.readonly = on,
            _ => {}
        }
        (state_change, opened)
    }

    /// A command that creates state the proxy does not model succeeded (one that failed
    /// created none).
    pub(super) fn unmodelled_state(&mut self) {
        self.set_unrestorable("CLIENT TRACKING or a command the proxy does not model");
    }

    /// Records `CLIENT SETINFO <attr> <value>` (LIB-NAME or LIB-VER).
    pub(super) fn set_info(&mut self, attr: &[u8], value: &[u8]) {
        let slot = if attr.eq_ignore_ascii_case(b"LIB-NAME") {
            0
        } else if attr.eq_ignore_ascii_case(b"LIB-VER") {
            1
        } else {
            self.set_unrestorable("an unknown CLIENT SETINFO attribute");
            return;
        };
        self.names.get_or_insert_with(Default::default).lib_info[slot] = Some(value.to_vec());
    }

    /// The MULTI that opened transaction `number` was refused: that transaction never opened.
    pub(super) fn multi_refused(&mut self, number: u64) {
        if let Txn::Multi { number: n, watched } = self.txn {
            if n == number && n == self.multis {
                self.txn = if watched { Txn::Watching } else { Txn::None };
            }
        }
    }

    /// RESET sent: back to a new connection's state (what the proxy cannot restore stays
    /// so).
    pub(super) fn reset(&mut self) {
        *self = SentState {
            multis: self.multis,
            names: self.names.take().map(|mut n| {
                n.client_name = None;
                n
            }),
            ..SentState::default()
        };
    }

    /// Why the connection holds state the proxy cannot restore; `None` while it can be
    /// replaced.
    pub(super) fn unrestorable(&self) -> Option<&'static str> {
        self.names.as_ref().and_then(|n| n.unrestorable)
    }

    /// The connection holds state the proxy cannot restore (the first reason is kept).
    fn set_unrestorable(&mut self, why: &'static str) {
        self.names
            .get_or_insert_with(Default::default)
            .unrestorable
            .get_or_insert(why);
    }

    /// The client's name (CLIENT SETNAME, HELLO SETNAME), restored on a new connection.
    pub(super) fn client_name(&self) -> Option<&[u8]> {
        self.names.as_ref()?.client_name.as_deref()
    }

    /// Records the client's name (`None`: cleared).
    pub(super) fn set_client_name(&mut self, name: Option<Vec<u8>>) {
        match (&mut self.names, name) {
            (Some(n), name) => n.client_name = name,
            (None, None) => {}
            (None, Some(name)) => {
                self.names = Some(Box::new(Names {
                    client_name: Some(name),
                    ..Names::default()
                }))
            }
        }
    }

    /// `CLIENT SETINFO` LIB-NAME and LIB-VER values, restored on a new connection.
    pub(super) fn lib_info(&self) -> [Option<&[u8]>; 2] {
        match &self.names {
            Some(n) => [n.lib_info[0].as_deref(), n.lib_info[1].as_deref()],
            None => [None, None],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_sent_takes_only_what_command_sent_would_leave_alone() {
        for (skip_next, txn) in [
            (false, Txn::None),
            (false, Txn::Watching),
            (true, Txn::None),
            (
                false,
                Txn::Multi {
                    number: 1,
                    watched: false,
                },
            ),
        ] {
            let state = || SentState {
                skip_next,
                txn,
                kill_sent: true,
                ..SentState::default()
            };
            let (mut fast, mut general) = (state(), state());
            if fast.plain_sent() {
                assert_eq!(general.command_sent(Kind::Plain), (false, None));
                assert_eq!(
                    format!("{fast:?}"),
                    format!("{general:?}"),
                    "{skip_next} {txn:?}"
                );
            } else {
                assert_eq!(
                    format!("{fast:?}"),
                    format!("{:?}", state()),
                    "left untouched"
                );
                assert!(skip_next || txn.in_multi(), "{txn:?} is the common case");
            }
        }
    }

    #[test]
    fn multi_and_watch_are_one_state() {
        let mut s = SentState::default();
        s.command_sent(Kind::Watch);
        assert_eq!(s.txn, Txn::Watching);
        assert!(s.txn.is_open() && !s.txn.in_multi());
        let (change, opened) = s.command_sent(Kind::Multi);
        assert!(change);
        assert_eq!(opened, Some(1));
        assert_eq!(
            s.txn,
            Txn::Multi {
                number: 1,
                watched: true
            }
        );
        // A nested MULTI opens nothing.
        assert_eq!(s.command_sent(Kind::Multi).1, None);
        s.command_sent(Kind::Exec);
        assert_eq!(s.txn, Txn::None);
    }

    #[test]
    fn a_refused_multi_closes_only_its_own_transaction() {
        let mut s = SentState::default();
        s.command_sent(Kind::Watch);
        let (_, opened) = s.command_sent(Kind::Multi);
        s.multi_refused(opened.unwrap());
        assert_eq!(s.txn, Txn::Watching, "the WATCH still holds");
        let (_, first) = s.command_sent(Kind::Multi);
        s.command_sent(Kind::Multi);
        // A later MULTI was sent since: the refusal of the first is not the last word.
        s.multi_refused(first.unwrap());
        assert!(s.txn.in_multi());
    }

    #[test]
    fn reset_returns_both_sides_to_a_new_connection() {
        let mut s = SentState {
            client_proto: 3,
            upstream_proto: 3,
            ..SentState::default()
        };
        s.set_client_name(Some(b"n".to_vec()));
        s.command_sent(Kind::Multi);
        s.command_sent(Kind::Reset);
        assert_eq!(s.txn, Txn::None);
        assert_eq!((s.client_proto, s.upstream_proto), (2, 2));
        assert!(s.client_name().is_none());

        let mut c = ConnState {
            db: 7,
            proto: 3,
            monitor: true,
            ..ConnState::default()
        };
        c.apply(Kind::Reset, Some(b"+RESET\r\n"));
        assert_eq!((c.db, c.proto, c.monitor), (0, 2, false));
    }

    #[test]
    fn commands_queued_in_multi_change_nothing_until_exec() {
        let mut c = ConnState::default();
        c.apply(Kind::Multi, Some(b"+OK\r\n"));
        c.apply(Kind::Plain, Some(b"+QUEUED\r\n"));
        c.apply(Kind::Select(Some(3)), Some(b"+QUEUED\r\n"));
        assert_eq!(c.db, 0, "queued, not run");
        c.apply(Kind::Exec, Some(b"*2\r\n$1\r\nv\r\n+OK\r\n"));
        assert_eq!(c.db, 3, "SELECT ran at EXEC");
        c.apply(Kind::Multi, Some(b"+OK\r\n"));
        c.apply(Kind::Select(Some(99)), Some(b"+QUEUED\r\n"));
        c.apply(Kind::Exec, Some(b"*1\r\n-ERR DB index is out of range\r\n"));
        assert_eq!(c.db, 3, "a SELECT that failed at EXEC changes nothing");
        c.apply(Kind::Multi, Some(b"+OK\r\n"));
        c.apply(Kind::Select(Some(5)), Some(b"+QUEUED\r\n"));
        c.apply(Kind::Exec, Some(b"*-1\r\n"));
        assert_eq!(c.db, 3, "an aborted EXEC ran nothing");
        assert!(
            c.apply(Kind::Multi, Some(b"-NOPERM no\r\n")),
            "a refused MULTI is reported"
        );
    }
}

//! Connection state, seen from both ends of the session.
//!
//! [`ConnState`] is the server's state as the *reply stream* shows it: it changes when the
//! reply to a command arrives, so when a command reaches the head of the reply queue it is
//! exactly the state the server ran that command in. [`SentState`] is the state the server
//! will be in once everything *sent* so far has run; it decides what the next command needs
//! (a HELLO first, a local refusal, a safe point). The two agree whenever no state-changing
//! command is in flight.

use super::command::{Kind, ReplyMode};
use super::subscriptions::Subscriptions;

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

    /// The state changes a command causes when it has run (`ok`: it succeeded; a command
    /// whose reply is suppressed by CLIENT REPLY is taken to have succeeded). Returns true if
    /// it was a refused MULTI, which the send side must know.
    pub(super) fn apply(&mut self, kind: Kind, ok: bool) -> bool {
        if self.in_multi && !matches!(kind, Kind::Exec | Kind::Discard | Kind::Multi | Kind::Reset)
        {
            // Queued, not run.
            return false;
        }
        match kind {
            Kind::Multi if ok => self.in_multi = true,
            Kind::Multi => return true,
            Kind::Exec | Kind::Discard => self.in_multi = false,
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
    /// The client's name (CLIENT SETNAME, HELLO SETNAME), restored on a new connection.
    pub(super) client_name: Option<Vec<u8>>,
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
            client_name: None,
        }
    }
}

impl SentState {
    /// A RESP2 subscriber served through a RESP3 upstream (send side).
    pub(super) fn emulating(&self) -> bool {
        self.client_proto == 2 && self.upstream_proto == 3
    }

    /// Records a client command being sent. Returns whether the command must be treated as
    /// state-changing, and, for a MULTI that opens a transaction, the transaction's number.
    pub(super) fn command_sent(&mut self, kind: Kind) -> (bool, Option<u64>) {
        let state_change = kind.changes_state() || std::mem::take(&mut self.skip_next);
        if kind == Kind::ClientReply(ReplyMode::Skip) {
            self.skip_next = true;
        }
        let mut opened = None;
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
            _ => {}
        }
        (state_change, opened)
    }

    /// The MULTI that opened transaction `number` was refused: that transaction never opened.
    pub(super) fn multi_refused(&mut self, number: u64) {
        if let Txn::Multi { number: n, watched } = self.txn {
            if n == number && n == self.multis {
                self.txn = if watched { Txn::Watching } else { Txn::None };
            }
        }
    }

    /// RESET sent: back to a new connection's state.
    pub(super) fn reset(&mut self) {
        *self = SentState {
            multis: self.multis,
            ..SentState::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            client_name: Some(b"n".to_vec()),
            ..SentState::default()
        };
        s.command_sent(Kind::Multi);
        s.command_sent(Kind::Reset);
        assert_eq!(s.txn, Txn::None);
        assert_eq!((s.client_proto, s.upstream_proto), (2, 2));
        assert!(s.client_name.is_none());

        let mut c = ConnState {
            db: 7,
            proto: 3,
            monitor: true,
            ..ConnState::default()
        };
        c.apply(Kind::Reset, true);
        assert_eq!((c.db, c.proto, c.monitor), (0, 2, false));
    }

    #[test]
    fn commands_queued_in_multi_change_nothing_until_exec() {
        let mut c = ConnState::default();
        c.apply(Kind::Multi, true);
        c.apply(Kind::Select(Some(3)), true);
        assert_eq!(c.db, 0, "queued, not run");
        assert!(c.apply(Kind::Multi, false), "a refused MULTI is reported");
    }
}

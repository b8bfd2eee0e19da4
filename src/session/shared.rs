//! The shared mode (`pool_size` > 0): a client session without an upstream connection of
//! its own, whose commands go over the upstream's shared connections ([`crate::pool`]) until
//! one of them needs a connection of its own; then the session is *pinned*: it moves to a
//! dedicated connection (a warm one when there is one) for the rest of its life, as a
//! session of the one-to-one mode.
//!
//! What may share is an allow-list: the commands `stateless.rs` lists (they leave no state on
//! the connection and are answered by one frame each), plus a few this file handles itself:
//! - the client's `AUTH` (answered locally, as in every mode),
//! - `HELLO 2` / `HELLO 3` without options (the session moves to the shared connections of
//!   that protocol: RESP2 and RESP3 clients never share a connection),
//! - `CLIENT SETINFO` (sent on the shared connection for its reply, and remembered: a pin
//!   restores it on the dedicated connection),
//! - `QUIT` and the empty command.
//!
//! Anything else pins: MULTI, WATCH, SELECT, (P/S)SUBSCRIBE, blocking commands, MONITOR,
//! SYNC, every other CLIENT subcommand, HELLO with options, RESET, inline commands, a command
//! large enough to stream, invalid RESP, and any command the tables do not know.
//!
//! The move is invisible: the session stops reading at the pinning command, waits until
//! every reply it is owed from the shared connections has reached the client, and only then
//! opens (or takes) the dedicated connection and gives the rest of its input to the
//! one-to-one session, which starts with the state the client built (its protocol, its
//! library name and version). No reply is lost, reordered or duplicated.
//!
//! Order: a session sends each run of commands to one shared connection and stays on it
//! while any reply is due there; local replies (AUTH, QUIT) wait until everything before
//! them has been answered.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::client::matches_password;
use super::command::{auth_arity_error, frame_args, quick_kind, Kind};
use super::io::{poll_timer, read_available, ReadOutcome, CLIENT_READ_BUDGET, HELD_MAX};
use super::stream::STREAM_THRESHOLD;
use super::{write_error, ClientStream, SessionContext};
use crate::metrics::GaugeGuard;
use crate::pool::{ConnHandle, Inbox, Pool, Request, Taken};
use crate::resp::CommandScanner;

/// Replies a shared session may be owed before it stops reading its client.
const MAX_OWED: u32 = 1024;

/// What the session does at the command where it stopped forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stop {
    /// Answer locally (`len` bytes of input are the command), once the replies before it are
    /// out.
    Local(Cow<'static, [u8]>, usize),
    /// Move to the shared connections of this protocol, then go on.
    Protocol(u8),
    /// QUIT: `+OK`, then close.
    Quit,
    /// Move to a dedicated connection, for this reason (a fixed word, the metric label).
    Pin(&'static str),
}

/// What the client built while shared, for its dedicated connection if it is pinned.
pub(super) struct Handoff {
    /// Client bytes not yet forwarded: the pinning command first.
    pub(super) cbuf: BytesMut,
    /// The protocol the client negotiated.
    pub(super) proto: u8,
    /// The client has authenticated locally.
    pub(super) client_authed: bool,
    /// `CLIENT SETINFO LIB-NAME` and `LIB-VER` values, as sent.
    pub(super) lib_info: [Option<Vec<u8>>; 2],
}

/// A session on the shared connections.
struct Shared<C> {
    id: u64,
    client: C,
    ctx: Arc<SessionContext>,
    pool: Arc<Pool>,
    /// Client bytes not yet forwarded.
    cbuf: BytesMut,
    cscan: CommandScanner,
    /// Where this session's replies arrive.
    inbox: Arc<Inbox>,
    /// The connection its replies are due from (kept while any is due).
    conn: Option<Arc<ConnHandle>>,
    /// The protocol the client negotiated (which connections it uses).
    proto: u8,
    client_authed: bool,
    /// Remembered `CLIENT SETINFO` values (rare: boxed).
    lib_info: Option<Box<[Option<Vec<u8>>; 2]>>,
    /// Forwarding stopped at the command at the start of `cbuf`, until the replies before
    /// it are out.
    stop: Option<Stop>,
}

/// How the shared part of a session ended.
enum Ended {
    /// The session is over (client gone, QUIT, shutdown, a lost connection, an error).
    Closed,
    /// The session must continue on a dedicated connection.
    Pinned(&'static str),
}

/// Runs a client session in the shared mode; pins it when a command needs it.
pub(super) async fn run<C: ClientStream>(
    client: C,
    ctx: Arc<SessionContext>,
    pool: Arc<Pool>,
    shutdown: watch::Receiver<bool>,
    id: u64,
) {
    let metrics = ctx.metrics.clone();
    let _client_gauge = GaugeGuard::new(&metrics.client_connections);
    metrics.client_connections_total.inc();
    let mut s = Shared {
        id,
        client,
        client_authed: ctx.client_password.is_none(),
        ctx,
        pool,
        cbuf: BytesMut::new(),
        cscan: CommandScanner::default(),
        inbox: Arc::new(Inbox::default()),
        conn: None,
        proto: 2,
        lib_info: None,
        stop: None,
    };
    let ended = {
        let _shared = GaugeGuard::new(&metrics.shared_sessions);
        s.serve(shutdown.clone()).await
    };
    s.inbox.close();
    match ended {
        Ended::Closed => {
            let _ = s.client.shutdown().await;
            tracing::debug!(session = id, "session closed (shared)");
        }
        Ended::Pinned(reason) => {
            metrics.pinned(reason);
            tracing::debug!(
                session = id,
                reason,
                "session pinned to a dedicated connection"
            );
            let handoff = Handoff {
                cbuf: std::mem::take(&mut s.cbuf),
                proto: s.proto,
                client_authed: s.client_authed,
                lib_info: s.lib_info.map(|b| *b).unwrap_or_default(),
            };
            // Boxed: the one-to-one session is large, and shared sessions are many.
            Box::pin(super::run_pinned(s.client, s.ctx, handoff, shutdown, id)).await;
        }
    }
}

impl<C: ClientStream> Shared<C> {
    async fn serve(&mut self, mut shutdown: watch::Receiver<bool>) -> Ended {
        let mut draining_since: Option<Instant> = None;
        loop {
            if self.cbuf.is_empty() && self.cbuf.capacity() > 0 {
                self.cbuf = BytesMut::new();
            }
            if self.stop.is_some() && self.inbox.is_settled() {
                match self.resume().await {
                    Ok(None) => {}
                    Ok(Some(ended)) => return ended,
                    Err(()) => return Ended::Closed,
                }
                continue;
            }
            if let Some(since) = draining_since {
                if self.inbox.is_settled() || since.elapsed() >= self.ctx.drain_timeout {
                    return Ended::Closed;
                }
            }
            // A client that sends without reading waits once MAX_OWED replies are due.
            let (owed, _) = self.inbox.in_flight();
            let read_more = draining_since.is_none()
                && self.stop.is_none()
                && owed < MAX_OWED
                && self.cbuf.len() < HELD_MAX;
            let mut drain_sleep = draining_since.map(|s| {
                Box::pin(tokio::time::sleep(
                    self.ctx.drain_timeout.saturating_sub(s.elapsed()),
                ))
            });
            tokio::select! {
                taken = std::future::poll_fn(|cx| self.inbox.poll_take(cx)) => match taken {
                    Taken::Bytes(b) => {
                        if self.client.write_all(&b).await.is_err() {
                            return Ended::Closed;
                        }
                    }
                    Taken::Lost => {
                        self.ctx.metrics.upstream_lost(crate::metrics::UpstreamLoss::Closed);
                        tracing::info!(session = self.id, "a shared connection was lost with commands of this client in flight; closing the client");
                        return Ended::Closed;
                    }
                },
                r = std::future::poll_fn(|cx| self.client.poll_readable(cx)), if read_more => {
                    match r.and_then(|()| read_available(&mut self.client, &mut self.cbuf, CLIENT_READ_BUDGET)) {
                        Ok(ReadOutcome::Eof) => draining_since = Some(Instant::now()),
                        Ok(ReadOutcome::Data(0)) => {}
                        Ok(ReadOutcome::Data(n)) => {
                            self.ctx.metrics.bytes_client_to_upstream.inc_by(n as u64);
                            if self.forward().await.is_err() {
                                return Ended::Closed;
                            }
                        }
                        Err(_) => return Ended::Closed,
                    }
                }
                r = shutdown.changed(), if draining_since.is_none() => {
                    if r.is_err() || *shutdown.borrow() {
                        draining_since = Some(Instant::now());
                    }
                }
                _ = std::future::poll_fn(|cx| poll_timer(&mut drain_sleep, cx)), if draining_since.is_some() => {}
            }
        }
    }

    /// Scans the client's input and sends the run of shareable commands at its start; stops
    /// at the first command that must wait for the replies before it. `Err`: the client is
    /// to be closed (an error reply was written).
    async fn forward(&mut self) -> Result<(), ()> {
        let limits = self.ctx.limits;
        let mut pos = 0;
        let mut commands = 0u32;
        while self.stop.is_none() {
            let scanned = match self.cscan.scan(&self.cbuf[pos..], &limits) {
                Ok(Some(c)) => c,
                Ok(None) => {
                    if self.cbuf.len() - pos >= STREAM_THRESHOLD {
                        // A large command streams on a connection of its own.
                        self.stop = Some(Stop::Pin("large_command"));
                    }
                    break;
                }
                Err(_) => {
                    // The one-to-one session answers it as redis-server would.
                    self.stop = Some(Stop::Pin("protocol_error"));
                    break;
                }
            };
            if scanned.nargs == 0 {
                // No reply; redis-server ignores it (it matters only after CLIENT REPLY SKIP,
                // which pins). Forwarded with the run.
                pos += scanned.len;
                continue;
            }
            if scanned.inline {
                self.stop = Some(Stop::Pin("inline"));
                break;
            }
            let frame = &self.cbuf[pos..pos + scanned.len];
            let name = &frame[scanned.name.clone()];
            if self.client_authed && quick_kind(name) == Some(Kind::Plain) {
                commands += 1;
                pos += scanned.len;
                continue;
            }
            // Rare: looked at whole, with owned arguments.
            let args = frame_args(frame, false);
            match self.special(&args, scanned.len) {
                None => {
                    commands += 1;
                    pos += scanned.len;
                }
                Some(stop) => self.stop = Some(stop),
            }
        }
        self.send(pos, commands).await?;
        self.ctx.metrics.commands_total.inc_by(u64::from(commands));
        Ok(())
    }

    /// A command that is not plainly shareable: `None` if it is forwarded after all (and
    /// counted), else where forwarding stops.
    fn special(&mut self, args: &[Vec<u8>], len: usize) -> Option<Stop> {
        let name = &args[0][..];
        let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        if is("AUTH") {
            return Some(self.local_auth(args, len));
        }
        if is("QUIT") {
            return Some(Stop::Quit);
        }
        if !self.client_authed {
            // As the one-to-one session answers it, without taking a connection for a client
            // that has not authenticated; a HELLO (its AUTH option) or RESET is the
            // one-to-one session's to handle.
            if is("HELLO") || is("RESET") {
                return Some(Stop::Pin("noauth"));
            }
            return Some(Stop::Local(
                Cow::Borrowed(b"-NOAUTH Authentication required.\r\n"),
                len,
            ));
        }
        if is("CLUSTER") {
            // Not a cluster (the shared mode is off in cluster mode): an ordinary command.
            return None;
        }
        if is("HELLO") && args.len() == 2 {
            match &args[1][..] {
                b"2" | b"3" => {
                    let v = args[1][0] - b'0';
                    return if v == self.proto {
                        None
                    } else {
                        Some(Stop::Protocol(v))
                    };
                }
                _ => return Some(Stop::Pin("hello")),
            }
        }
        if is("CLIENT")
            && args.len() == 4
            && args[1].eq_ignore_ascii_case(b"SETINFO")
            && (args[2].eq_ignore_ascii_case(b"LIB-NAME")
                || args[2].eq_ignore_ascii_case(b"LIB-VER"))
        {
            let slot = usize::from(args[2].eq_ignore_ascii_case(b"LIB-VER"));
            self.lib_info.get_or_insert_with(Default::default)[slot] = Some(args[3].to_vec());
            return None;
        }
        Some(Stop::Pin(pin_reason(name)))
    }

    /// The client's AUTH, answered here as in the one-to-one mode.
    fn local_auth(&mut self, args: &[Vec<u8>], len: usize) -> Stop {
        if let Some((reply, _)) = auth_arity_error(args.len()) {
            return Stop::Local(Cow::Borrowed(reply), len);
        }
        match &self.ctx.client_password {
            Some(password) if !matches_password(&args[args.len() - 1], password) => {
                tracing::info!(session = self.id, "a local client sent a wrong password");
                Stop::Local(
                    Cow::Borrowed(
                        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
                    ),
                    len,
                )
            }
            _ => {
                self.client_authed = true;
                Stop::Local(Cow::Borrowed(b"+OK\r\n"), len)
            }
        }
    }

    /// Sends the first `len` bytes of the input (`commands` commands) to a shared connection
    /// of the session's protocol.
    async fn send(&mut self, len: usize, commands: u32) -> Result<(), ()> {
        if len == 0 {
            return Ok(());
        }
        let bytes = self.cbuf.split_to(len).freeze();
        if commands == 0 {
            return Ok(());
        }
        let (owed, _) = self.inbox.in_flight();
        let mut req = Request {
            bytes,
            commands,
            inbox: self.inbox.clone(),
        };
        if owed > 0 {
            // Replies are due from `conn`: stay on it, so they come back in order.
            if let Some(conn) = &self.conn {
                self.inbox.expect(commands);
                match conn.send(req) {
                    Ok(()) => return Ok(()),
                    Err(back) => {
                        // It has ended. If commands of this session were still in flight on
                        // it, it reports their loss and the client is closed: these must
                        // not run elsewhere after them. If it answered them all just before
                        // it ended, nothing is owed and another connection may take these.
                        self.inbox.forget(commands);
                        if !self.inbox.answered_all() {
                            return Ok(());
                        }
                        req = back;
                    }
                }
            }
        }
        loop {
            let conn = match self.pool.pick(self.proto) {
                Some(c) => c,
                // Rare (start-up, a cache that cannot be reached): boxed, so that its state
                // does not sit in every shared session's task.
                None => match Box::pin(self.wait_for_connection()).await {
                    Some(c) => c,
                    None => return Err(()),
                },
            };
            self.inbox.expect(commands);
            match conn.send(req) {
                Ok(()) => {
                    self.conn = Some(conn);
                    return Ok(());
                }
                Err(back) => {
                    // It ended before taking them: nothing ran; try another.
                    self.inbox.forget(commands);
                    req = back;
                }
            }
        }
    }

    /// Waits up to `startup_wait` for a shared connection; without one, answers the client
    /// with the reason (no token, the cache unreachable) and returns `None`.
    async fn wait_for_connection(&mut self) -> Option<Arc<ConnHandle>> {
        let wait = self.ctx.startup_wait;
        if let Some(c) = self.pool.pick_or_wait(self.proto, wait).await {
            return Some(c);
        }
        let why = self.pool.why_unavailable();
        tracing::warn!(
            session = self.id,
            "no shared connection for a client: {why}"
        );
        let _ = write_error(&mut self.client, &format!("ERR {why}")).await;
        None
    }

    /// Everything before the stop has been answered: act on it. `Ok(Some)`: the shared part
    /// of the session ends.
    async fn resume(&mut self) -> Result<Option<Ended>, ()> {
        let Some(stop) = self.stop.take() else {
            return Ok(None);
        };
        self.conn = None;
        match stop {
            Stop::Local(reply, len) => {
                self.cbuf.advance(len);
                self.client.write_all(&reply).await.map_err(|_| ())?;
            }
            Stop::Quit => {
                let _ = self.client.write_all(b"+OK\r\n").await;
                return Ok(Some(Ended::Closed));
            }
            Stop::Protocol(v) => {
                self.proto = v;
                // The HELLO itself goes first, on a connection of the new protocol.
                let len = first_command_len(&self.cbuf, &self.ctx.limits);
                self.ctx.metrics.commands_total.inc();
                self.send(len, 1).await?;
            }
            Stop::Pin(reason) => return Ok(Some(Ended::Pinned(reason))),
        }
        // What followed the stop.
        if !self.cbuf.is_empty() {
            self.forward().await?;
        }
        Ok(None)
    }
}

/// The length of the complete command at the start of `buf` (it was scanned before).
fn first_command_len(buf: &[u8], limits: &crate::resp::Limits) -> usize {
    match CommandScanner::default().scan(buf, limits) {
        Ok(Some(c)) => c.len,
        _ => 0,
    }
}

/// The metric label for a pin by the command `name`: the kind of state it needs.
fn pin_reason(name: &[u8]) -> &'static str {
    const REASONS: &[(&str, &str)] = &[
        ("MULTI", "transaction"),
        ("EXEC", "transaction"),
        ("DISCARD", "transaction"),
        ("WATCH", "watch"),
        ("UNWATCH", "watch"),
        ("SELECT", "select"),
        ("SUBSCRIBE", "subscribe"),
        ("PSUBSCRIBE", "subscribe"),
        ("SSUBSCRIBE", "subscribe"),
        ("UNSUBSCRIBE", "subscribe"),
        ("PUNSUBSCRIBE", "subscribe"),
        ("SUNSUBSCRIBE", "subscribe"),
        ("BLPOP", "blocking"),
        ("BRPOP", "blocking"),
        ("BLMOVE", "blocking"),
        ("BRPOPLPUSH", "blocking"),
        ("BLMPOP", "blocking"),
        ("BZPOPMIN", "blocking"),
        ("BZPOPMAX", "blocking"),
        ("BZMPOP", "blocking"),
        ("XREAD", "blocking"),
        ("XREADGROUP", "blocking"),
        ("WAIT", "blocking"),
        ("WAITAOF", "blocking"),
        ("MONITOR", "monitor"),
        ("SYNC", "replication"),
        ("PSYNC", "replication"),
        ("CLIENT", "client"),
        ("HELLO", "hello"),
        ("RESET", "reset"),
        ("READONLY", "readonly"),
        ("READWRITE", "readonly"),
    ];
    REASONS
        .iter()
        .find(|(n, _)| name.eq_ignore_ascii_case(n.as_bytes()))
        .map_or("unclassified", |(_, r)| r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_labelled_by_the_state_they_need() {
        assert_eq!(pin_reason(b"multi"), "transaction");
        assert_eq!(pin_reason(b"BLPOP"), "blocking");
        assert_eq!(pin_reason(b"Subscribe"), "subscribe");
        assert_eq!(pin_reason(b"CLIENT"), "client");
        assert_eq!(pin_reason(b"FOO.BAR"), "unclassified");
    }

    #[test]
    fn the_first_command_is_measured_whole() {
        let limits = crate::resp::Limits::default();
        assert_eq!(
            first_command_len(
                b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n*1\r\n$4\r\nPING\r\n",
                &limits
            ),
            22
        );
    }
}

//! Replacing a lost upstream connection: pacing and backoff across sessions, and restoring the
//! connection's state on the new one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::blocking::Blocking;
use super::command::{ReplyMode, SubKind};
use super::io::Segment;
use super::queue::Pending;
use super::replication::Replication;
use super::{ClientStream, Session, SessionEnd};
use crate::resp::{self, ReplyScanner};

/// First delay between reconnection attempts (doubled up to 5 s, with jitter).
pub(super) const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// A session gives up reopening its upstream connection after this long.
pub(super) const RECONNECT_GIVE_UP: Duration = Duration::from_secs(30);

/// Spaces out reconnections across sessions, so a cache failover does not become a
/// reconnect storm: at most `per_second` connection attempts start each second.
pub struct ReconnectPacer {
    /// When the next attempt may start.
    pub(super) next: Mutex<Instant>,
    /// Time between two attempts.
    pub(super) interval: Duration,
}

impl ReconnectPacer {
    /// A pacer allowing `per_second` attempts a second.
    pub fn new(per_second: u32) -> Self {
        ReconnectPacer {
            next: Mutex::new(Instant::now()),
            interval: Duration::from_secs(1) / per_second.max(1),
        }
    }

    /// Waits for this caller's turn.
    pub async fn wait_turn(&self) {
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let at = (*next).max(now);
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at.into()).await;
    }
}

/// What a session does when its upstream connection is lost (see the table in
/// `docs/session.md`).
pub(super) enum OnLoss {
    /// Nothing is in flight and the proxy knows the whole connection state: open a new
    /// connection and restore it.
    Replace,
    /// A blocking command waits and no byte of its reply has come: restore the state on a
    /// new connection and send it again for the time left.
    Reissue(Box<Blocking>),
    /// The client must see the connection close (and its own logic run): the state cannot
    /// be restored exactly, or a command that may have run is in flight.
    Close(&'static str),
}

impl<C: ClientStream> Session<C> {
    /// Decides what the loss of the upstream connection means for this session.
    pub(super) fn on_upstream_loss(&mut self) -> OnLoss {
        if self.ustreaming || self.cstreaming {
            return OnLoss::Close("a large frame was cut in the middle");
        }
        if self.replication != Replication::None {
            return OnLoss::Close("a replication stream cannot be resumed on a new connection");
        }
        if let Some(why) = self.sent.unrestorable() {
            return OnLoss::Close(why);
        }
        if self.sent.kill_sent {
            return OnLoss::Close("its CLIENT KILL may have closed its own connection");
        }
        if self.sent.txn.is_open() || self.conn.in_multi {
            return OnLoss::Close("a transaction or WATCH is open");
        }
        if (self.conn.subscribed() || self.conn.monitor || self.sent.emulating())
            && !self.ctx.reconnect_subscribers
        {
            return OnLoss::Close("a subscriber or MONITOR would miss what came during the gap");
        }
        if self.queue.state_changes_in_flight() > 0 {
            return OnLoss::Close("a state change is in flight");
        }
        if self.unconfirmed {
            return OnLoss::Close(
                "commands sent under CLIENT REPLY OFF/SKIP may not have run on the lost connection",
            );
        }
        if !self.blocked && self.reissue.is_none() && self.queue.only_reauths() {
            return OnLoss::Replace;
        }
        if self.blocked && self.ubuf.is_empty() && self.held_reply.is_none() {
            let block = self
                .reissue
                .take()
                .or_else(|| self.queue.take_lone_blocking());
            if let Some(block) = block {
                if block.reissuable {
                    return OnLoss::Reissue(block);
                }
            }
        }
        OnLoss::Close("a command that may have run is in flight")
    }

    /// Opens a new upstream connection (backing off, paced across sessions) and restores the
    /// connection state: protocol, database, name, subscriptions, MONITOR, reply mode.
    pub(super) async fn reconnect(&mut self) -> Result<(), SessionEnd> {
        // Boxed: a rare path whose state (a new TLS stream) would otherwise enlarge every
        // session's task.
        Box::pin(self.reconnect_inner()).await
    }

    pub(super) async fn reconnect_inner(&mut self) -> Result<(), SessionEnd> {
        let started = Instant::now();
        let mut failures: u32 = 0;
        let (upstream, token) = loop {
            self.ctx.reconnect_pacer.wait_turn().await;
            let Some(token) = self.token_rx.borrow_and_update().clone() else {
                return Err(SessionEnd::UpstreamClosed);
            };
            match self.ctx.connector.connect(&token).await {
                Ok(u) => break (u, token),
                Err(e) => {
                    if e.is_auth_rejected() {
                        self.ctx.tokens.request_refresh();
                    }
                    failures += 1;
                    if started.elapsed() >= RECONNECT_GIVE_UP {
                        tracing::warn!(session = self.id, error = %e, "cannot reopen the upstream connection; closing the client");
                        return Err(SessionEnd::Reconnect(e.to_string()));
                    }
                    let base = RECONNECT_BACKOFF
                        .saturating_mul(1 << failures.min(6))
                        .min(Duration::from_secs(5));
                    let delay = base.mul_f64(0.5 + rand::random::<f64>() / 2.0);
                    tracing::debug!(session = self.id, error = %e, retry_in = ?delay, "reconnect failed");
                    tokio::time::sleep(delay).await;
                }
            }
        };
        self.upstream = upstream;
        self.upstream_lost = false;
        self.upstream_id = None;
        self.interrupt = None;
        self.unconfirmed = false;
        self.queue.clear();
        self.reauth_permit = None;
        self.ubuf.clear();
        self.uscan = ReplyScanner::default();
        self.auth_generation = token.generation();
        self.reauth_wanted = None;
        self.pending_flag(false);
        self.conn.proto = 2;
        self.sent.upstream_proto = 2;
        self.restore_state().await?;
        self.ctx.metrics.upstream_reconnects_total.inc();
        tracing::info!(
            session = self.id,
            db = self.conn.db,
            subscribed = self.conn.subscribed(),
            "upstream connection replaced"
        );
        self.note_token_change();
        Ok(())
    }

    /// Restores the state the client built (protocol, database, name, library info, flags,
    /// subscriptions, MONITOR, reply mode) on a new upstream connection that has nothing in
    /// flight: after a loss, or when a shared session is pinned.
    pub(super) async fn restore_state(&mut self) -> Result<(), SessionEnd> {
        let reply_mode = self.conn.reply_mode;
        self.conn.reply_mode = ReplyMode::On;
        self.to_upstream.clear();
        if self.conn.client_proto == 3 || self.conn.subscribed() {
            self.inject_hello(3);
        }
        if self.conn.db != 0 {
            let db = self.conn.db.to_string();
            self.inject_restore(&[b"SELECT", db.as_bytes()]);
        }
        if let Some(name) = self.sent.client_name().map(<[u8]>::to_vec) {
            self.inject_restore(&[&b"CLIENT"[..], b"SETNAME", &name]);
        }
        let info = self.sent.lib_info().map(|v| v.map(<[u8]>::to_vec));
        for (attr, value) in [&b"LIB-NAME"[..], b"LIB-VER"].into_iter().zip(info.iter()) {
            if let Some(value) = value {
                self.inject_restore(&[&b"CLIENT"[..], b"SETINFO", attr, value]);
            }
        }
        if self.sent.no_evict {
            self.inject_restore(&[&b"CLIENT"[..], b"NO-EVICT", b"ON"]);
        }
        if self.sent.no_touch {
            self.inject_restore(&[&b"CLIENT"[..], b"NO-TOUCH", b"ON"]);
        }
        if self.sent.readonly {
            self.inject_restore(&[b"READONLY"]);
        }
        for (cmd, kind) in [
            (&b"SUBSCRIBE"[..], SubKind::Channel),
            (b"PSUBSCRIBE", SubKind::Pattern),
            (b"SSUBSCRIBE", SubKind::Shard),
        ] {
            let set = self.subs(kind);
            if set.is_empty() {
                continue;
            }
            let mut args: Vec<&[u8]> = vec![cmd];
            args.extend(set.iter().map(Vec::as_slice));
            let bytes = resp::encode_command(&args);
            self.restore_confirmations += set.len();
            self.to_upstream.push(Segment::Owned(bytes));
        }
        if self.conn.monitor {
            self.inject_restore(&[b"MONITOR"]);
        }
        // Last: CLIENT REPLY OFF (or a SKIP waiting for the client's next command) silences
        // its own reply, and applies from here on as it did on the lost connection.
        let mode: Option<&[u8]> = match reply_mode {
            ReplyMode::On => None,
            ReplyMode::Off => Some(b"OFF"),
            ReplyMode::Skip => Some(b"SKIP"),
        };
        if let Some(mode) = mode {
            self.to_upstream.push(Segment::Owned(resp::encode_command(&[
                &b"CLIENT"[..],
                b"REPLY",
                mode,
            ])));
            self.conn.reply_mode = reply_mode;
        }
        self.write_upstream_plan().await
    }

    /// Opens a new upstream connection, restores the state, and sends the blocking command
    /// that was waiting on the lost one for the time it has left.
    pub(super) async fn reconnect_and_reissue(
        &mut self,
        block: Box<Blocking>,
    ) -> Result<(), SessionEnd> {
        Box::pin(async move {
            self.reconnect_inner().await?;
            self.send_blocking(block, false);
            self.write_upstream_plan().await
        })
        .await
    }

    /// Sends a command that restores state on a new connection; its reply is swallowed.
    pub(super) fn inject_restore(&mut self, args: &[&[u8]]) {
        self.to_upstream
            .push(Segment::Owned(resp::encode_command(args)));
        self.queue.push(Pending::Restore);
    }
}

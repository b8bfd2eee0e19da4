//! Cache → client: routing each frame from the cache to the client or to the proxy, and the
//! connection state the reply stream shows.

use std::collections::HashSet;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;

use std::borrow::Cow;

use super::blocking::{last_stream_id, Interrupt};
use super::command::{Kind, ReplyMode, SubKind};
use super::io::{push_range, Segment, READ_CHUNK};
use super::queue::Pending;
use super::replication::Replication;
use super::resp2_subscriber::{pong_to_resp2, push_for_resp2, subscribed_refusal_from_info};
use super::stream::STREAM_THRESHOLD;
use super::subscriptions::{is_monitor_line, is_resp2_message, pubsub_confirmation, Confirmation};
use super::txn::EXECABORT;
use super::{ClientStream, Session, SessionEnd};
use crate::resp;

/// What a frame from the cache is.
pub(super) enum Route {
    /// Forward to the client.
    Client,
    /// Send these bytes to the client instead (protocol translation).
    Replace(Vec<u8>),
    /// Swallow: the reply to something the proxy sent.
    Proxy,
}

impl<C: ClientStream> Session<C> {
    pub(super) async fn on_upstream_data(&mut self) -> Result<(), SessionEnd> {
        self.route_replies().await?;
        if let Some(block) = self.reissue.take_if(|_| self.interrupt.is_none()) {
            // A slice ended: re-authenticate first if a token is waiting, then wait again.
            self.try_reauth().await?;
            self.to_upstream.clear();
            self.send_blocking(block, false);
            self.write_upstream_plan().await?;
        }
        self.try_reauth().await?;
        if !self.blocked && !self.cbuf.is_empty() {
            // Commands held behind a blocking command (rare: boxed, or this future would
            // contain a second `on_client_data` and enlarge every session).
            Box::pin(self.on_client_data()).await?;
        }
        Ok(())
    }

    /// Routes every complete frame in the upstream buffer, emits local replies that reached
    /// the head of the queue, and writes the client's share in order.
    pub(super) async fn route_replies(&mut self) -> Result<(), SessionEnd> {
        let max_bulk = self.ctx.limits.max_bulk;
        let mut pos = 0;
        let mut run_start = 0;
        // Where the scanned part of a streaming frame ends (past `pos`).
        let mut streamed = 0;
        self.to_client.clear();
        loop {
            if !self.ustreaming {
                // Local replies that reach the head go out after what was routed before them.
                push_range(&mut self.to_client, run_start, pos);
                run_start = pos;
                self.settle_head();
                if self.replication_starts_at(pos) {
                    // The rest is the replication stream, piped raw from now on.
                    break;
                }
            }
            let len = match self.uscan.scan(&self.ubuf[pos..], max_bulk) {
                Ok(Some(len)) => len,
                Ok(None) => {
                    // A large frame passes through in pieces (`stream.rs`).
                    if self.ustreaming
                        || (self.ubuf.len() - pos >= STREAM_THRESHOLD
                            && self.start_reply_stream(pos))
                    {
                        streamed = self.uscan.scanned();
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(session = self.id, error = %e, "the cache sent invalid RESP; closing");
                    return Err(SessionEnd::UpstreamProtocol(e));
                }
            };
            if self.ustreaming {
                // The end of a streaming frame, routed when it started.
                self.ustreaming = false;
                pos += len;
                continue;
            }
            let frame = pos..pos + len;
            pos += len;
            let mut routed = self.route(frame.clone());
            if matches!(routed, Route::Client) && self.ctx.cluster.is_some() {
                routed = self.rewrite_redirect(frame.clone());
            }
            match routed {
                Route::Client => {}
                Route::Replace(bytes) => {
                    push_range(&mut self.to_client, run_start, frame.start);
                    run_start = pos;
                    self.to_client.push(Segment::Owned(bytes));
                }
                Route::Proxy => {
                    push_range(&mut self.to_client, run_start, frame.start);
                    run_start = pos;
                }
            }
        }
        push_range(&mut self.to_client, run_start, pos + streamed);
        if !self.ustreaming {
            self.settle_head();
        }
        if !self.to_client.is_empty() {
            for seg in self.to_client.drain(..) {
                let bytes: &[u8] = match &seg {
                    Segment::Buffer(r) => &self.ubuf[r.clone()],
                    Segment::Static(s) => s,
                    Segment::Owned(v) => v,
                };
                self.client
                    .write_all(bytes)
                    .await
                    .map_err(SessionEnd::ClientIo)?;
            }
            self.client.flush().await.map_err(SessionEnd::ClientIo)?;
        }
        self.ubuf.advance(pos + streamed);
        self.uscan.rebase(streamed);
        if self.ubuf.is_empty() && self.ubuf.capacity() > 4 * READ_CHUNK {
            self.ubuf = BytesMut::new();
        }
        Ok(())
    }

    /// Resolves the head of the queue: pops entries that expect no frame (emitting local
    /// replies into the client plan) and fixes how many frames the head expects.
    pub(super) fn settle_head(&mut self) {
        loop {
            if let Some(reply) = self.queue.pop_local() {
                match self.conn.reply_mode {
                    ReplyMode::On => {
                        // Keep order: what was routed so far precedes the local reply.
                        self.to_client.push(match reply {
                            Cow::Borrowed(b) => Segment::Static(b),
                            Cow::Owned(v) => Segment::Owned(v),
                        });
                    }
                    ReplyMode::Off => {}
                    ReplyMode::Skip => self.conn.reply_mode = ReplyMode::On,
                }
                continue;
            }
            if matches!(self.queue.head(), Some(Pending::Exec(_))) {
                // EXEC under CLIENT REPLY OFF: no reply to complete, but the transaction ends.
                if self.apply_reply_mode(1) == 1 {
                    return;
                }
                self.queue.pop();
                self.apply_effects_unanswered(Kind::Exec);
                continue;
            }
            // Injected and blocking commands always expect a frame; a command's count is fixed
            // once, when it reaches the head.
            let Some(&Pending::Command {
                kind,
                count,
                nargs,
                remaining: None,
                ..
            }) = self.queue.head()
            else {
                if self.queue.pop_finished_command() {
                    continue;
                }
                return;
            };
            let n = self.expected_frames(kind, count, nargs);
            if n < count && !matches!(kind, Kind::Empty | Kind::ClientReply(_)) {
                // Run without a reply (CLIENT REPLY OFF/SKIP): nothing will confirm it ran
                // until a later reply arrives.
                self.unconfirmed = true;
            }
            self.queue.resolve_head(n);
            if !self.queue.pop_finished_command() {
                return;
            }
        }
    }

    /// How many frames a command at the head of the queue will produce, and the state changes
    /// that happen when it runs without a reply.
    pub(super) fn expected_frames(&mut self, kind: Kind, count: usize, nargs: usize) -> usize {
        if self.conn.in_multi
            && kind != Kind::Empty
            && !matches!(kind, Kind::Exec | Kind::Discard | Kind::Multi | Kind::Reset)
        {
            // Queued: +QUEUED or an error, whatever the command (reply mode aside).
            return self.apply_reply_mode(count);
        }
        match kind {
            // SUBSCRIBE without a channel: one error (silenced as any reply).
            Kind::Subscribe(_) if nargs <= 1 => self.apply_reply_mode(1),
            // Confirmations are sent whatever the reply mode (checked on redis-server 7.0),
            // and the command uses up a CLIENT REPLY SKIP all the same.
            Kind::Subscribe(_) => {
                self.apply_reply_mode(1);
                nargs - 1
            }
            Kind::Unsubscribe(k) => {
                self.apply_reply_mode(1);
                if nargs > 1 {
                    nargs - 1
                } else {
                    self.subs(k).len().max(1)
                }
            }
            Kind::ClientReply(ReplyMode::On) => {
                self.conn.reply_mode = ReplyMode::On;
                1
            }
            Kind::ClientReply(mode) => {
                if self.conn.reply_mode == ReplyMode::Off && mode == ReplyMode::Skip {
                    return 0;
                }
                self.conn.reply_mode = mode;
                0
            }
            // The payload of SYNC/PSYNC comes whatever the reply mode (the session becomes a
            // pipe when it starts; see `replication.rs`).
            Kind::Sync => {
                self.apply_reply_mode(1);
                1
            }
            // An empty command has no reply, but redis-server's resetClient consumes a SKIP.
            Kind::Empty => {
                if self.conn.reply_mode == ReplyMode::Skip {
                    self.conn.reply_mode = ReplyMode::On;
                }
                0
            }
            _ => {
                let n = self.apply_reply_mode(count);
                if n == 0 && kind.changes_state() {
                    // HELLO, SELECT, MULTI... under CLIENT REPLY OFF/SKIP still take effect.
                    self.apply_effects_unanswered(kind);
                }
                n
            }
        }
    }

    pub(super) fn apply_reply_mode(&mut self, count: usize) -> usize {
        match self.conn.reply_mode {
            ReplyMode::On => count,
            ReplyMode::Off => 0,
            ReplyMode::Skip => {
                self.conn.reply_mode = ReplyMode::On;
                count - 1
            }
        }
    }

    pub(super) fn subs(&self, k: SubKind) -> &HashSet<Vec<u8>> {
        match k {
            SubKind::Channel => &self.conn.subscriptions.sets().channels,
            SubKind::Pattern => &self.conn.subscriptions.sets().patterns,
            SubKind::Shard => &self.conn.subscriptions.sets().shards,
        }
    }

    /// Routes a frame known from its first bytes (a streaming reply, `stream.rs`); true if
    /// it goes to the client, as such a frame always does.
    pub(super) fn route_to_client(&mut self, frame: std::ops::Range<usize>) -> bool {
        matches!(self.route(frame), Route::Client)
    }

    /// Decides where a complete frame goes, and updates state.
    pub(super) fn route(&mut self, frame: std::ops::Range<usize>) -> Route {
        let bytes = &self.ubuf[frame.clone()];
        let first = bytes[0];
        tracing::trace!(
            session = self.id,
            frame_type = %(first as char),
            frame_len = bytes.len(),
            head = ?self.queue.head().map(Pending::label),
            queued = self.queue.len(),
            "frame from the cache"
        );
        // The common case first: the reply to a plain command on a connection with nothing
        // to watch for (no MONITOR, subscription or MULTI), which `route_command_reply` would
        // only count.
        if first != b'>'
            && !self.conn.monitor
            && !self.conn.in_multi
            && !self.conn.subscribed()
            && self.queue.plain_frame()
        {
            self.unconfirmed = false;
            return Route::Client;
        }
        if first == b'>' {
            // RESP3 push: never a reply. Pub/Sub confirmations update the subscription sets and
            // count toward a (UN)SUBSCRIBE at the head.
            if let Some(conf) = pubsub_confirmation(bytes, true) {
                if self.restore_confirmations > 0 && matches!(conf.kind, Kind::Subscribe(_)) {
                    // Re-subscribing on a replacement connection: the client subscribed once.
                    self.restore_confirmations -= 1;
                    return Route::Proxy;
                }
                self.apply_confirmation(&conf);
                self.count_confirmation(&conf);
            }
            if self.conn.client_proto == 2 {
                // A RESP2 subscriber served through RESP3: pushes become what redis-server
                // sends a RESP2 connection (or nothing).
                let invalidations = self.conn.subscribed() && !self.tracking_unredirected;
                return push_for_resp2(&self.ubuf[frame], invalidations)
                    .map_or(Route::Proxy, Route::Replace);
            }
            return Route::Client;
        }
        if self.conn.monitor && is_monitor_line(bytes) {
            return Route::Client;
        }
        if self.conn.proto == 2 && self.conn.subscribed() && is_resp2_message(bytes) {
            return Route::Client;
        }
        let conf = if self.conn.proto == 2 && (first == b'*') {
            match self.queue.head() {
                Some(Pending::Command {
                    kind: Kind::Subscribe(_) | Kind::Unsubscribe(_),
                    ..
                }) if !self.conn.in_multi => pubsub_confirmation(bytes, false),
                _ => None,
            }
        } else {
            None
        };
        let is_error = resp::is_error_reply(bytes);
        // A reply: everything sent before the command it answers has run.
        self.unconfirmed = false;
        let Some(head) = self.queue.head() else {
            tracing::debug!(
                session = self.id,
                "a frame the client did not ask for; forwarding it"
            );
            return Route::Client;
        };
        match head {
            Pending::Reauth { .. } => {
                if let Some((token, started)) = self.queue.reauth_frame() {
                    let ok = bytes == b"+OK\r\n";
                    let reason = if ok {
                        String::new()
                    } else {
                        resp::error_text(bytes)
                            .map(str::to_owned)
                            .unwrap_or_else(|| String::from_utf8_lossy(bytes).trim().to_owned())
                    };
                    self.finish_reauth(token, started, ok, &reason);
                }
                Route::Proxy
            }
            Pending::Command { .. } => self.route_command_reply(frame, conf.as_ref(), is_error),
            // Settled before every frame: a local reply is never the head here. Should it be,
            // the frame belongs to what follows it.
            Pending::Local(_) => {
                self.settle_head();
                self.route(frame)
            }
            // Entries that expect exactly one frame: the head is popped and owns the frame.
            _ => match self.queue.pop() {
                Some(Pending::Refusal(args)) => {
                    Route::Replace(subscribed_refusal_from_info(bytes)(&args))
                }
                Some(Pending::StreamProbe { arg }) => {
                    let id = last_stream_id(bytes);
                    if let Some(b) = self.queue.blocking_mut() {
                        b.args[arg] = id;
                    }
                    Route::Proxy
                }
                Some(Pending::Blocking(b)) => {
                    let empty = b.slice_ended_empty(bytes);
                    match b.interrupt {
                        // The proxy's CLIENT UNBLOCK ended it: wait again for the time left.
                        Interrupt::Confirmed if empty => {
                            self.reissue = Some(b);
                            Route::Proxy
                        }
                        // Whose empty reply this is, the CLIENT UNBLOCK result will say.
                        Interrupt::Requested if empty => {
                            self.held_reply = Some(Box::new((b, bytes.to_vec())));
                            Route::Proxy
                        }
                        _ if b.slice_ended(bytes, Instant::now()) => {
                            self.reissue = Some(b);
                            Route::Proxy
                        }
                        _ => {
                            self.blocked = false;
                            Route::Client
                        }
                    }
                }
                Some(Pending::ClientId) => {
                    self.upstream_id = std::str::from_utf8(bytes)
                        .ok()
                        .and_then(|t| t.strip_prefix(':'))
                        .and_then(|t| t.trim_end().parse().ok());
                    Route::Proxy
                }
                Some(Pending::Hello { version }) => {
                    if is_error {
                        tracing::warn!(
                            session = self.id,
                            reply = %String::from_utf8_lossy(bytes).trim(),
                            "the cache refused HELLO {version}; this RESP2 subscriber cannot be re-authenticated"
                        );
                    } else {
                        self.conn.proto = version;
                    }
                    Route::Proxy
                }
                Some(Pending::Exec(locals)) => {
                    let reply = if locals.aborted {
                        // The DISCARD sent for the client's EXEC.
                        (bytes == b"+OK\r\n").then(|| EXECABORT.to_vec())
                    } else {
                        locals.exec_reply(bytes)
                    };
                    let refused_multi = self.conn.apply(Kind::Exec, Some(bytes));
                    self.after_effects(refused_multi);
                    reply.map_or(Route::Client, Route::Replace)
                }
                Some(Pending::Restore) => {
                    if is_error {
                        tracing::warn!(session = self.id, reply = %String::from_utf8_lossy(bytes).trim(), "restoring connection state failed");
                    }
                    Route::Proxy
                }
                // Commands, AUTHs and local replies are handled above.
                _ => Route::Proxy,
            },
        }
    }

    /// A reply (one of its frames) to a client command at the head of the queue.
    fn route_command_reply(
        &mut self,
        frame: std::ops::Range<usize>,
        conf: Option<&Confirmation>,
        is_error: bool,
    ) -> Route {
        let Some(&Pending::Command { kind, .. }) = self.queue.head() else {
            return Route::Client;
        };
        if let Some(c) = conf {
            self.apply_confirmation(c);
        }
        match kind {
            Kind::Subscribe(_) | Kind::Unsubscribe(_) if is_error => {
                self.queue.pop();
            }
            Kind::Topology(t) if self.ctx.cluster.is_some() => {
                let out = self.rewrite_topology(t, frame.clone());
                self.after_reply(kind, frame);
                self.queue.command_frame();
                return Route::Replace(out);
            }
            Kind::Sync => {
                // Refused: the connection stays a RESP connection; held commands go on.
                self.replication = Replication::None;
                self.after_reply(kind, frame);
                self.queue.command_frame();
            }
            Kind::PingSubscribed if self.conn.emulating() => {
                let out = pong_to_resp2(&self.ubuf[frame.clone()]);
                self.after_reply(kind, frame);
                self.queue.command_frame();
                return out.map_or(Route::Client, Route::Replace);
            }
            _ => {
                self.after_reply(kind, frame);
                self.queue.command_frame();
            }
        }
        Route::Client
    }

    /// State changes caused by a command's reply.
    pub(super) fn after_reply(&mut self, kind: Kind, frame: std::ops::Range<usize>) {
        if matches!(kind, Kind::Unrestorable | Kind::Tracking(_))
            && !resp::is_error_reply(&self.ubuf[frame.clone()])
        {
            self.sent.unmodelled_state();
        }
        let refused_multi = self.conn.apply(kind, Some(&self.ubuf[frame]));
        self.after_effects(refused_multi);
    }

    /// State changes caused by a command that ran with its reply suppressed by CLIENT REPLY
    /// (taken to have succeeded).
    pub(super) fn apply_effects_unanswered(&mut self, kind: Kind) {
        if matches!(kind, Kind::Unrestorable | Kind::Tracking(_)) {
            self.sent.unmodelled_state();
        }
        let refused_multi = self.conn.apply(kind, None);
        self.after_effects(refused_multi);
    }

    fn after_effects(&mut self, refused_multi: bool) {
        if refused_multi {
            // A refused MULTI (NOPERM, say) opened nothing.
            if let Some(&Pending::Command {
                opened_multi: Some(number),
                ..
            }) = self.queue.head()
            {
                self.sent.multi_refused(number);
            }
        }
    }

    pub(super) fn count_confirmation(&mut self, conf: &Confirmation) {
        if self.conn.in_multi {
            return;
        }
        if let Some(&Pending::Command {
            kind: kind @ (Kind::Subscribe(_) | Kind::Unsubscribe(_)),
            remaining: Some(r),
            ..
        }) = self.queue.head()
        {
            if kind == conf.kind && r > 0 {
                self.queue.command_frame();
            }
        }
    }

    pub(super) fn apply_confirmation(&mut self, conf: &Confirmation) {
        let (set, add) = match conf.kind {
            Kind::Subscribe(k) => (k, true),
            Kind::Unsubscribe(k) => (k, false),
            _ => return,
        };
        if !add && self.conn.subscriptions.is_empty() {
            return;
        }
        let sets = self.conn.subscriptions.sets_mut();
        let set = match set {
            SubKind::Channel => &mut sets.channels,
            SubKind::Pattern => &mut sets.patterns,
            SubKind::Shard => &mut sets.shards,
        };
        match (&conf.channel, add) {
            (Some(c), true) => {
                set.insert(c.clone());
            }
            (Some(c), false) => {
                set.remove(c);
            }
            (None, _) => {}
        }
        if self.conn.subscriptions.is_empty() {
            // The last one ended: release the sets.
            self.conn.subscriptions.clear();
        }
    }
}

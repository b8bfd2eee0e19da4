//! Client → cache: scanning the client's commands, deciding what each one is, and forwarding
//! runs of them straight from the read buffer.

use std::borrow::Cow;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::blocking::{slice_length, Blocking};
use super::command::{
    auth_arity_error, frame_args, full_kind, hello_syntax_error, in_multi_unsupported, owned_args,
    parse_hello, quick_kind, Classified, Kind, ReplyMode, Tracking,
};
use super::io::{Segment, READ_CHUNK};
use super::queue::Pending;
use super::replication::Replication;
use super::stream::STREAM_THRESHOLD;
use super::{write_error, ClientStream, Session, SessionEnd};
use crate::resp::{self, ProtocolError};
use crate::token::Secret;

/// What to do with a client command.
pub(super) enum Action {
    Forward(Kind, usize),
    /// The client's AUTH (or a HELLO's AUTH option), answered locally.
    LocalAuth(LocalAuth),
    Local(Cow<'static, [u8]>),
    /// Refuse as redis-server refuses a RESP2 subscriber's command; the exact error depends
    /// on the command table, so `COMMAND INFO` is asked first.
    Refuse(Vec<Vec<u8>>),
    Rewrite(Kind, usize, Vec<u8>),
}

/// The result of a client's AUTH, which never reaches the cache.
pub(super) enum LocalAuth {
    /// Accepted (the password matched, or there is no `client_password_file`).
    Ok,
    /// The password did not match `client_password_file`.
    WrongPass,
    /// A wrong number of arguments: redis-server's error, given when the command is queued
    /// (`at_queue`) or when it runs.
    Error {
        reply: &'static [u8],
        at_queue: bool,
    },
}

/// Compares a client's password with the configured one in time independent of where they
/// differ.
pub(super) fn matches_password(given: &[u8], password: &Secret) -> bool {
    let want = password.expose().as_bytes();
    let mut diff = (given.len() != want.len()) as u8;
    for (i, w) in want.iter().enumerate() {
        diff |= w ^ given.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

impl<C: ClientStream> Session<C> {
    pub(super) async fn on_client_data(&mut self) -> Result<(), SessionEnd> {
        if self.blocked || self.interrupt.is_some() || self.replication != Replication::None {
            // Held until the blocking command's real reply (and until the proxy's own
            // CLIENT UNBLOCK has run, so that it cannot reach a later command), or until the
            // reply to SYNC shows whether the connection became a replication stream.
            return Ok(());
        }
        if self.upstream_lost && !self.cbuf.is_empty() {
            self.reconnect().await?;
        }
        let limits = self.ctx.limits;
        let mut pos = 0;
        let mut run_start = 0;
        let mut commands = 0u64;
        // Where the scanned part of a streaming command ends (past `pos`).
        let mut streamed = 0;
        self.to_upstream.clear();
        loop {
            let scanned = match self.cscan.scan(&self.cbuf[pos..], &limits) {
                Ok(Some(c)) => c,
                Ok(None) => {
                    // A large command passes through in pieces (`stream.rs`).
                    if self.cstreaming {
                        streamed = self.cscan.scanned();
                    } else if self.cbuf.len() - pos >= STREAM_THRESHOLD {
                        if let Some((nargs, name)) = self.cscan.head() {
                            if self.start_command_stream(pos, nargs, name) {
                                commands += 1;
                                streamed = self.cscan.scanned();
                            }
                        }
                    }
                    break;
                }
                Err(e) => {
                    if self.cstreaming {
                        // The bad bytes are inside a command already streaming: the cache
                        // has only part of it and will not answer it.
                        self.cstreaming = false;
                        self.queue.withdraw_last_command();
                    }
                    // Forward what came before the bad bytes, then answer and close.
                    self.flush_run(run_start, pos);
                    self.write_upstream_plan().await?;
                    // Boxed, as every rare path: its state would enlarge every session.
                    return Err(Box::pin(self.client_protocol_error(e)).await);
                }
            };
            if self.cstreaming {
                // The end of a streaming command, queued when it started: part of the run.
                self.cstreaming = false;
                pos += scanned.len;
                continue;
            }
            let frame = pos..pos + scanned.len;
            pos += scanned.len;
            commands += 1;
            if scanned.nargs == 0 {
                // redis-server answers nothing, but the empty command still counts as "the
                // next command" after CLIENT REPLY SKIP: forward it and model it.
                self.enqueue_command(Kind::Empty, 0);
                continue;
            }
            let action = if scanned.inline {
                let args = resp::inline_args(&self.cbuf[frame.clone()]).unwrap_or_default();
                let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                self.classify(&refs, true)
            } else {
                let name =
                    &self.cbuf[frame.start + scanned.name.start..frame.start + scanned.name.end];
                match quick_kind(name) {
                    // A RESP2 subscriber served through RESP3 has every command looked at.
                    Some(Kind::Plain) if !self.sent.emulating() && self.client_authed => {
                        if self.sent.plain_sent() {
                            // Nothing to model (the common case: most commands): it joins
                            // the run of plain commands at the back of the queue.
                            self.queue.push_plain(scanned.nargs);
                            continue;
                        }
                        Action::Forward(Kind::Plain, scanned.nargs)
                    }
                    _ => {
                        let f = &self.cbuf[frame.clone()];
                        let args = resp::multibulk_args(f);
                        self.classify(&args, false)
                    }
                }
            };
            let kind = match &action {
                Action::Forward(k, _) | Action::Rewrite(k, ..) => *k,
                Action::Local(_) | Action::Refuse(_) | Action::LocalAuth(_) => Kind::Plain,
            };
            if kind == Kind::MaybeBlocking {
                let args = frame_args(&self.cbuf[frame.clone()], scanned.inline);
                if let Some(block) = self.plan_blocking(args) {
                    // The wait is cut into slices, re-issued invisibly: hold the client's
                    // later commands until the real reply (redis-server would not run them
                    // before either).
                    self.flush_run(run_start, frame.start);
                    run_start = pos;
                    self.send_blocking(block, true);
                    break;
                }
            }
            // (A SUBSCRIBE without a channel fails on its arity and subscribes nothing.)
            if matches!(kind, Kind::Subscribe(_))
                && matches!(action, Action::Forward(_, n) | Action::Rewrite(_, n, _) if n > 1)
                && self.sent.client_proto == 2
                && self.sent.upstream_proto == 2
            {
                // A RESP2 client subscribes: switch the upstream to RESP3 first, so that the
                // connection can still be re-authenticated (RESP2 subscribers cannot AUTH).
                self.flush_run(run_start, frame.start);
                run_start = frame.start;
                self.inject_hello(3);
            }
            match action {
                Action::Forward(kind, nargs) => {
                    self.enqueue_command(kind, nargs);
                }
                Action::Local(reply) => {
                    self.flush_run(run_start, frame.start);
                    run_start = pos;
                    self.local_reply(reply, false);
                    continue;
                }
                Action::LocalAuth(auth) => {
                    self.flush_run(run_start, frame.start);
                    run_start = pos;
                    let (reply, at_exec): (&'static [u8], bool) = match auth {
                        LocalAuth::Ok => {
                            // Inside MULTI the client is authenticated already.
                            self.client_authed = true;
                            (b"+OK\r\n", true)
                        }
                        LocalAuth::WrongPass => {
                            tracing::info!(
                                session = self.id,
                                "a local client sent a wrong password"
                            );
                            (
                                b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
                                true,
                            )
                        }
                        LocalAuth::Error { reply, at_queue } => (reply, !at_queue),
                    };
                    self.local_reply(Cow::Borrowed(reply), at_exec);
                    continue;
                }
                Action::Refuse(args) => {
                    self.flush_run(run_start, frame.start);
                    run_start = pos;
                    self.to_upstream.push(Segment::Owned(resp::encode_command(&[
                        &b"COMMAND"[..],
                        b"INFO",
                        &args[0],
                    ])));
                    self.queue.push(Pending::Refusal(args));
                    continue;
                }
                Action::Rewrite(kind, nargs, bytes) => {
                    self.flush_run(run_start, frame.start);
                    run_start = pos;
                    self.to_upstream.push(Segment::Owned(bytes));
                    self.enqueue_command(kind, nargs);
                }
            }
            match kind {
                Kind::Tracking(t) => self.tracking_unredirected = t == Tracking::On,
                Kind::Sync => {
                    // The client's later bytes wait for its reply (see `replication.rs`).
                    self.replication = Replication::Requested;
                    break;
                }
                Kind::Reset => {
                    // RESET logs the client out too.
                    // (The send-side state was reset when it was enqueued.)
                    self.client_authed = self.ctx.client_password.is_none();
                    self.tracking_unredirected = false;
                    // After RESET the connection is logged out: AUTH again right behind it.
                    self.flush_run(run_start, pos);
                    run_start = pos;
                    self.inject_auth_after_reset();
                }
                Kind::Hello(v) => {
                    // Forwarded: any password it carried matched (checked in classify).
                    self.client_authed = true;
                    if let Some(v) = v {
                        self.sent.client_proto = v;
                        self.sent.upstream_proto = v;
                    }
                    let args = frame_args(&self.cbuf[frame.clone()], scanned.inline);
                    if let Some(i) = args.iter().position(|a| a.eq_ignore_ascii_case(b"SETNAME")) {
                        self.sent.set_client_name(args.get(i + 1).cloned());
                    }
                }
                Kind::SetName => {
                    let args = frame_args(&self.cbuf[frame.clone()], scanned.inline);
                    self.sent
                        .set_client_name(args.get(2).cloned().filter(|n| !n.is_empty()));
                }
                Kind::SetInfo => {
                    let args = frame_args(&self.cbuf[frame.clone()], scanned.inline);
                    // Wrong arity is refused by the server and changes nothing.
                    if let [_, _, attr, value] = args.as_slice() {
                        self.sent.set_info(attr, value);
                    }
                }
                Kind::Subscribe(k) | Kind::Unsubscribe(k) if self.sent.emulating() => {
                    let args = frame_args(&self.cbuf[frame.clone()], scanned.inline);
                    let subscribe = matches!(kind, Kind::Subscribe(_));
                    self.sent.subs.apply(k, subscribe, &args[1..]);
                    if self.sent.subs.is_empty() {
                        // The last subscription ends: back to RESP2 before the next command.
                        self.flush_run(run_start, pos);
                        run_start = pos;
                        self.inject_hello(2);
                    }
                }
                _ => {}
            }
        }
        self.flush_run(run_start, pos + streamed);
        self.ctx.metrics.commands_total.inc_by(commands);
        self.write_upstream_plan().await?;
        self.cbuf.advance(pos + streamed);
        self.cscan.rebase(streamed);
        if self.cbuf.is_empty() && self.cbuf.capacity() > 4 * READ_CHUNK {
            self.cbuf = BytesMut::new();
        }
        // Local replies at the head of the queue can go out now.
        self.route_replies().await?;
        self.try_reauth().await
    }

    pub(super) fn flush_run(&mut self, start: usize, end: usize) {
        if end > start {
            if let Some(Segment::Buffer(r)) = self.to_upstream.last_mut() {
                if r.end == start {
                    r.end = end;
                    return;
                }
            }
            self.to_upstream.push(Segment::Buffer(start..end));
        }
    }

    pub(super) async fn write_upstream_plan(&mut self) -> Result<(), SessionEnd> {
        if self.to_upstream.is_empty() {
            return Ok(());
        }
        for seg in self.to_upstream.drain(..) {
            let bytes: &[u8] = match &seg {
                Segment::Buffer(r) => &self.cbuf[r.clone()],
                Segment::Static(s) => s,
                Segment::Owned(v) => v,
            };
            self.upstream
                .write_all(bytes)
                .await
                .map_err(SessionEnd::UpstreamIo)?;
            if let Segment::Owned(mut v) = seg {
                // Owned pieces may be an AUTH with the token in it.
                zeroize::Zeroize::zeroize(&mut v);
            }
        }
        self.upstream.flush().await.map_err(SessionEnd::UpstreamIo)
    }

    pub(super) async fn client_protocol_error(&mut self, e: ProtocolError) -> SessionEnd {
        self.ctx.metrics.client_protocol_errors_total.inc();
        tracing::info!(session = self.id, error = %e, "closing a client that sent invalid RESP");
        // Replies to commands already forwarded go out first, then the error.
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.client_replies_outstanding() && Instant::now() < deadline {
            let budget = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(budget, self.upstream.read_buf(&mut self.ubuf)).await {
                Ok(Ok(n)) if n > 0 => {
                    if self.route_replies().await.is_err() {
                        break;
                    }
                }
                _ => break,
            }
        }
        let _ = write_error(&mut self.client, &format!("ERR {e}")).await;
        SessionEnd::ClientProtocol(e)
    }

    /// Decides what to do with a command the session must look into.
    pub(super) fn classify(&self, args: &[&[u8]], inline: bool) -> Action {
        let Some(name) = args.first() else {
            return Action::Forward(Kind::Plain, 0);
        };
        let nargs = args.len();
        let k = match full_kind(name, args) {
            // A RESP2 subscriber's AUTH: redis-server's refusal (arity first, then context).
            Classified::Auth if self.sent.emulating() => return Action::Refuse(owned_args(args)),
            // Never forwarded: it would replace the Entra identity.
            Classified::Auth => return Action::LocalAuth(self.local_auth(args)),
            Classified::Kind(k) => k,
        };
        if matches!(k, Kind::Hello(_)) && !self.sent.emulating() && !self.sent.txn.in_multi() {
            return self.classify_hello(args, inline);
        }
        if !self.client_authed && !matches!(k, Kind::Quit | Kind::Reset) {
            // Local client authentication: nothing is forwarded before the client's AUTH.
            return Action::Local(Cow::Borrowed(b"-NOAUTH Authentication required.\r\n"));
        }
        if self.sent.txn.in_multi() {
            if self.ctx.cluster.is_some() && matches!(k, Kind::Topology(_)) {
                // Its reply would come inside EXEC's, where it is not rewritten.
                return Action::Local(Cow::Borrowed(
                    b"-ERR entra-redis-proxy does not support CLUSTER SLOTS, SHARDS, NODES or REPLICAS inside MULTI in cluster mode\r\n",
                ));
            }
            if in_multi_unsupported(k) {
                return Action::Local(Cow::Borrowed(
                    b"-ERR entra-redis-proxy does not support HELLO, SUBSCRIBE, CLIENT REPLY or MONITOR inside MULTI\r\n",
                ));
            }
            if k == Kind::Exec && nargs == 1 && self.txn_locals.as_ref().is_some_and(|l| l.aborted)
            {
                // An error the proxy gave while queueing: redis-server would refuse to run the
                // transaction, so the cache discards it and the client gets EXECABORT.
                return Action::Rewrite(k, 1, resp::encode_command(&[&b"DISCARD"[..]]));
            }
            if k == Kind::Sync {
                // Refused by the server inside MULTI (no-multi): an ordinary reply.
                return Action::Forward(Kind::Plain, nargs);
            }
        }
        if self.sent.emulating() {
            // A RESP2 subscriber whose upstream speaks RESP3: keep RESP2's rules.
            let allowed = match k {
                Kind::Subscribe(_) | Kind::Unsubscribe(_) | Kind::Reset | Kind::Quit => true,
                Kind::Plain if name.eq_ignore_ascii_case(b"PING") => {
                    return Action::Forward(Kind::PingSubscribed, nargs)
                }
                _ => false,
            };
            if !allowed {
                return Action::Refuse(owned_args(args));
            }
        }
        if inline && k != Kind::Plain {
            // Re-encode so the server sees exactly the arguments the session saw.
            return Action::Rewrite(k, nargs, resp::encode_command(args));
        }
        Action::Forward(k, nargs)
    }

    /// The result of a client's AUTH, as redis-server would give it: arity errors, then the
    /// password (any password without `client_password_file`).
    fn local_auth(&self, args: &[&[u8]]) -> LocalAuth {
        if let Some((reply, at_queue)) = auth_arity_error(args.len()) {
            return LocalAuth::Error { reply, at_queue };
        }
        match &self.ctx.client_password {
            Some(password) if !matches_password(args[args.len() - 1], password) => {
                LocalAuth::WrongPass
            }
            _ => LocalAuth::Ok,
        }
    }

    /// A HELLO outside MULTI: its version and options checked as redis-server checks them,
    /// its AUTH options answered locally and stripped.
    fn classify_hello(&self, args: &[&[u8]], inline: bool) -> Action {
        let hello = match parse_hello(args) {
            Ok(h) => h,
            Err(reply) => return Action::Local(Cow::Borrowed(reply)),
        };
        let mut authed = self.client_authed;
        if let Some(password) = &self.ctx.client_password {
            for given in &hello.passwords {
                if !matches_password(given, password) {
                    return Action::LocalAuth(LocalAuth::WrongPass);
                }
                authed = true;
            }
        }
        // A HELLO that fails on an option switches nothing (but authenticates, if an AUTH
        // option came before the bad one).
        let kind = match (hello.bad_option, args.get(1)) {
            (Some(bad), _) if !authed => {
                return Action::Local(Cow::Owned(hello_syntax_error(args[bad])))
            }
            (Some(_), _) => Kind::Hello(None),
            (None, _) if !authed => {
                return Action::Local(Cow::Borrowed(
                    b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n",
                ))
            }
            (None, Some(v)) => Kind::Hello(Some(if v == b"3" { 3 } else { 2 })),
            (None, None) => Kind::Hello(None),
        };
        match hello.forward {
            Some((nargs, bytes)) => Action::Rewrite(kind, nargs, bytes),
            None if inline => Action::Rewrite(kind, args.len(), resp::encode_command(args)),
            None => Action::Forward(kind, args.len()),
        }
    }

    /// Answers a command locally, inside MULTI as redis-server would: a result that redis-server
    /// gives when EXEC runs (`at_exec`) is answered `+QUEUED` and goes into EXEC's reply; an
    /// error given while queueing makes EXEC fail.
    pub(super) fn local_reply(&mut self, reply: Cow<'static, [u8]>, at_exec: bool) {
        if !self.sent.txn.in_multi() {
            self.queue.push(Pending::Local(reply));
            // The command never reaches the server, so a CLIENT REPLY SKIP sent before it
            // would silence the next forwarded command instead: an empty command consumes it
            // there, as this one did here.
            self.consume_server_skip();
            return;
        }
        let locals = self.txn_locals.get_or_insert_with(Default::default);
        if at_exec {
            locals.replies.push((self.txn_queued as usize, reply));
            self.queue
                .push(Pending::Local(Cow::Borrowed(b"+QUEUED\r\n")));
        } else {
            locals.aborted |= resp::is_error_reply(&reply);
            self.queue.push(Pending::Local(reply));
        }
    }

    pub(super) fn enqueue_command(&mut self, kind: Kind, nargs: usize) {
        let kind = if kind == Kind::MaybeBlocking {
            Kind::Plain
        } else {
            kind
        };
        let in_multi = self.sent.txn.in_multi();
        let (state_change, opened_multi) = self.sent.command_sent(kind);
        if in_multi {
            // Where the proxy's own replies go in EXEC's array.
            match kind {
                Kind::Exec if nargs == 1 => {
                    if let Some(locals) = self.txn_locals.take() {
                        self.queue.push(Pending::Exec(locals));
                        return;
                    }
                }
                Kind::Discard | Kind::Reset => self.txn_locals = None,
                // Run at once, not queued (or no command at all).
                Kind::Multi | Kind::Watch | Kind::Empty | Kind::Quit | Kind::Exec => {}
                _ => self.txn_queued += 1,
            }
        } else if opened_multi.is_some() {
            self.txn_queued = 0;
            self.txn_locals = None;
        }
        self.queue
            .push_command(kind, nargs, state_change, opened_multi);
    }

    /// Sends an empty command (`*0`: no reply, but redis-server's resetClient runs) when the
    /// last command forwarded was `CLIENT REPLY SKIP`, so that the skip is used up before a
    /// frame the proxy itself sends or answers.
    pub(super) fn consume_server_skip(&mut self) {
        if self.sent.skip_next {
            self.to_upstream.push(Segment::Static(b"*0\r\n"));
            self.enqueue_command(Kind::Empty, 0);
        }
    }

    pub(super) fn inject_hello(&mut self, version: u8) {
        // The injected HELLO's reply must come: a pending SKIP is used up first (the command
        // behind, a SUBSCRIBE, is confirmed whatever the reply mode).
        self.consume_server_skip();
        let v = [b'0' + version];
        self.to_upstream
            .push(Segment::Owned(resp::encode_command(&[&b"HELLO"[..], &v])));
        self.sent.upstream_proto = version;
        self.queue.push(Pending::Hello { version });
    }

    /// Decides whether a blocking command must be cut into slices: only where its wait could
    /// outlast the token, and where its reply can be recognised (no MULTI, replies on).
    pub(super) fn plan_blocking(&self, args: Vec<Vec<u8>>) -> Option<Box<Blocking>> {
        if self.queue.state_changes_in_flight() > 0
            || self.sent.txn.in_multi()
            || self.conn.in_multi
            || self.sent.skip_next
            || self.conn.reply_mode != ReplyMode::On
            || self.sent.emulating()
        {
            return None;
        }
        let slicing = !self.ctx.unblocker.available();
        Blocking::plan(args, self.block_slice(), Instant::now(), slicing)
    }

    /// How long one slice of a blocking wait may last with the current token.
    pub(super) fn block_slice(&self) -> Duration {
        match self.token_rx.borrow().as_deref() {
            Some(token) => slice_length(token, &self.ctx.refresh, SystemTime::now()),
            None => Duration::from_secs(1),
        }
    }

    /// Queues a slice of a blocking command (and, the first time, the stream probes).
    pub(super) fn send_blocking(&mut self, mut block: Box<Blocking>, first: bool) {
        if first {
            for (probe, arg) in block.take_probes() {
                self.to_upstream.push(Segment::Owned(probe));
                self.queue.push(Pending::StreamProbe { arg });
            }
        }
        if !block.sliced && self.upstream_id.is_none() {
            // To interrupt the wait for a re-AUTH, CLIENT UNBLOCK needs this connection's id.
            self.to_upstream
                .push(Segment::Static(b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n"));
            self.queue.push(Pending::ClientId);
        }
        let now = Instant::now();
        let cmd = if first {
            block.first_command(self.block_slice(), now)
        } else {
            block.again_command(self.block_slice(), now)
        };
        self.to_upstream.push(Segment::Owned(cmd));
        self.blocked = true;
        self.queue.push(Pending::Blocking(block));
    }
}

//! One client connection and its upstream connection: the heart of the proxy.
//!
//! The session forwards client commands and cache replies unchanged, scanning frame
//! boundaries only. It keeps a queue of `Pending` entries, one per forwarded command (runs of
//! ordinary commands share one), a locally answered command, or an `AUTH` the proxy injected,
//! so that it knows at every moment whether a reply from the cache belongs to the client or to
//! the proxy.
//!
//! How many reply frames an entry expects is decided when it reaches the head of the queue,
//! from the connection state as the *reply stream* shows it (protocol, `CLIENT REPLY` mode,
//! subscriptions, MULTI): at that moment every earlier command has been answered, so that
//! state is exactly the server's state when it ran the command.
//!
//! Re-`AUTH` on a token change happens at a *safe point*: no command that changes connection
//! state is in flight (so the reply-side state is also the send-side state), not inside
//! MULTI, and not on a RESP2 subscriber (the server refuses AUTH there; such clients are
//! served through RESP3, see `Session::inject_hello`). Under `CLIENT REPLY OFF` or with a
//! `SKIP` pending, the AUTH is wrapped in `CLIENT REPLY ON` ... `OFF`/`SKIP`. Ordinary
//! commands in flight do not prevent it: the AUTH is queued behind them and its reply is
//! recognised by position. After a client's `RESET`, which de-authenticates, an AUTH is
//! injected at once. See `docs/session.md`.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::cluster::rewrite::{self, topology_command, RewriteError, Topology};
use crate::metrics::{GaugeGuard, Metrics};
use crate::resp::{self, CommandScanner, Limits, ProtocolError, ReplyScanner};
use crate::token::{AccessToken, CurrentToken, Secret, TokenManagerHandle};
use crate::upstream::{UpstreamConnector, UpstreamStream};

/// What every session of one listener shares.
#[derive(Clone)]
pub struct SessionContext {
    /// The upstream's name (logs).
    pub upstream: String,
    /// Opens authenticated upstream connections.
    pub connector: Arc<UpstreamConnector>,
    /// The current token and the way to ask for a new one.
    pub tokens: TokenManagerHandle,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Bounds on client commands and cache replies.
    pub limits: Limits,
    /// How long a new client waits for the first token before an error reply.
    pub startup_wait: Duration,
    /// How long a closing session waits for replies to commands already forwarded.
    pub drain_timeout: Duration,
    /// The token refresh margin: blocking waits end this much (at most half of it) before
    /// the token expires, so the connection can re-AUTH in time.
    pub refresh_margin: Duration,
    /// Bounds the re-AUTHs in flight at once, across sessions.
    pub reauth_limiter: Arc<tokio::sync::Semaphore>,
    /// Paces reconnections after upstream loss, across sessions.
    pub reconnect_pacer: Arc<ReconnectPacer>,
    /// The password local clients must AUTH with (`client_password_file`); `None`: no
    /// local authentication, and a client's AUTH is answered +OK.
    pub client_password: Option<Secret>,
    /// Cluster mode: the node listeners, for rewriting node addresses in replies.
    pub cluster: Option<Arc<crate::cluster::ClusterMap>>,
}

/// First delay between reconnection attempts (doubled up to 5 s, with jitter).
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// A session gives up reopening its upstream connection after this long.
const RECONNECT_GIVE_UP: Duration = Duration::from_secs(30);

/// Spaces out reconnections across sessions, so a cache failover does not become a
/// reconnect storm: at most `per_second` connection attempts start each second.
pub struct ReconnectPacer {
    /// When the next attempt may start.
    next: std::sync::Mutex<Instant>,
    /// Time between two attempts.
    interval: Duration,
}

impl ReconnectPacer {
    /// A pacer allowing `per_second` attempts a second.
    pub fn new(per_second: u32) -> Self {
        ReconnectPacer {
            next: std::sync::Mutex::new(Instant::now()),
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

/// Client bytes read ahead while a blocking command holds the session.
const HELD_MAX: usize = 1024 * 1024;

/// Size reserved in a read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;

/// A client connection: a stream that can also say when it is readable, so that an idle
/// session holds no read buffer (buffers are taken only when bytes are waiting).
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin {
    /// Polls for read readiness (as `TcpStream::poll_read_ready`).
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;
}

impl ClientStream for tokio::net::TcpStream {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_read_ready(cx)
    }
}

impl ClientStream for tokio::net::UnixStream {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_read_ready(cx)
    }
}

/// What a non-blocking read found.
enum ReadOutcome {
    /// This many bytes were appended (possibly 0: the readiness was spurious).
    Data(usize),
    /// The peer closed its side.
    Eof,
}

/// Reads what `io` can give without waiting into `buf`, reserving room only as bytes arrive,
/// up to `budget` bytes so one busy connection cannot starve the others on its thread.
///
/// A read that returns less than the room offered has emptied the source for now (for the
/// TLS stream: rustls handed over all it had decrypted), so the loop stops there without a
/// probing read; a full read means there may be more. The TLS stream must never be left
/// holding decrypted bytes (they would not make the socket readable again): it gets no
/// budget (`usize::MAX`).
fn read_available<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    budget: usize,
) -> std::io::Result<ReadOutcome> {
    // The readiness future of the select loop holds the real waker; a poll here that finds
    // nothing just ends this round.
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut total = 0;
    while total < budget {
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let room = buf.capacity() - buf.len();
        match tokio_util::io::poll_read_buf(Pin::new(&mut *io), &mut cx, buf) {
            Poll::Ready(Ok(0)) => {
                return Ok(if total == 0 {
                    ReadOutcome::Eof
                } else {
                    ReadOutcome::Data(total)
                })
            }
            Poll::Ready(Ok(n)) => {
                total += n;
                if n < room {
                    break;
                }
            }
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => break,
        }
    }
    Ok(ReadOutcome::Data(total))
}

/// Most bytes read from a client in one turn of a session's loop.
const CLIENT_READ_BUDGET: usize = 256 * 1024;

/// Runs one client session until either side closes or `shutdown` turns true (then the
/// session finishes the commands in flight and closes).
pub async fn run<C>(client: C, ctx: Arc<SessionContext>, shutdown: watch::Receiver<bool>, id: u64)
where
    C: ClientStream,
{
    let metrics = ctx.metrics.clone();
    let _client_gauge = GaugeGuard::new(&metrics.client_connections);
    metrics.client_connections_total.inc();
    // Opening (token wait, TLS handshake, error replies) runs boxed: its state lives on the
    // heap only while connecting. Inline, it would add about 1.5 kB to every session's task
    // for the session's whole life (the compiler does not overlap it with `session`).
    let Some(mut session) = Box::pin(open(client, ctx, id)).await else {
        return;
    };
    let _upstream_gauge = GaugeGuard::new(&metrics.upstream_connections);
    let result = session.run(shutdown).await;
    session.pending_flag(false);
    match result {
        Ok(()) => tracing::debug!(session = id, "session closed"),
        Err(e) => tracing::debug!(session = id, reason = %e, "session ended"),
    }
}

/// Waits for a token and opens the upstream connection; on failure, answers the client with
/// an error and returns `None`.
async fn open<C>(client: C, ctx: Arc<SessionContext>, id: u64) -> Option<Session<C>>
where
    C: ClientStream,
{
    let mut client = client;
    let token = match ctx.tokens.wait_for_token(ctx.startup_wait).await {
        Some(t) => t,
        None => {
            let status = ctx.tokens.status();
            let msg =
                format!(
                "ERR entra-redis-proxy has no access token yet (credential: {}; last error: {})",
                ctx.tokens.source(),
                status.last_error.as_deref().unwrap_or("none yet, still trying"),
            );
            tracing::warn!(session = id, "no token for a new client: {msg}");
            let _ = write_error(&mut client, &msg).await;
            return None;
        }
    };
    let upstream = match ctx.connector.connect(&token).await {
        Ok(u) => u,
        Err(err) => {
            if err.is_auth_rejected() {
                ctx.tokens.request_refresh();
            }
            tracing::warn!(session = id, error = %err, "cannot open the upstream connection");
            let _ = write_error(
                &mut client,
                &format!("ERR entra-redis-proxy cannot open the upstream connection: {err}"),
            )
            .await;
            return None;
        }
    };
    tracing::debug!(session = id, user = %token.username(), "session started");
    Some(Session::new(client, upstream, ctx, token, id))
}

async fn write_error<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut C,
    msg: &str,
) -> std::io::Result<()> {
    let line: String = msg
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    client.write_all(format!("-{line}\r\n").as_bytes()).await?;
    client.flush().await?;
    client.shutdown().await?;
    // Closing a socket with unread input makes the kernel send a reset, which can destroy the
    // error before the client reads it: read what the client sent (briefly) first.
    // On the heap: an array here would sit in every session's task, idle or not.
    let mut sink = vec![0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Ok(n) = client.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    Ok(())
}

/// Why a session ended (for the debug log; clients see errors as RESP replies).
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("client I/O: {0}")]
    ClientIo(std::io::Error),
    #[error("upstream I/O: {0}")]
    UpstreamIo(std::io::Error),
    #[error("upstream closed the connection")]
    UpstreamClosed,
    #[error("client protocol error: {0}")]
    ClientProtocol(ProtocolError),
    #[error("upstream protocol error: {0}")]
    UpstreamProtocol(ProtocolError),
    #[error("could not reopen the upstream connection: {0}")]
    Reconnect(String),
}

/// The commands the session must understand; everything else is [`Kind::Plain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Multi,
    Exec,
    Discard,
    Subscribe(SubKind),
    Unsubscribe(SubKind),
    /// HELLO with the protocol version it asks for, if any.
    Hello(Option<u8>),
    Reset,
    ClientReply(ReplyMode),
    Monitor,
    /// PING from a RESP2 subscriber served through RESP3: its reply is translated.
    PingSubscribed,
    /// A command that may block (BLPOP, XREAD BLOCK, WAIT...): forwarded as an ordinary
    /// command unless its wait must be cut into slices (see [`Blocking`]).
    MaybeBlocking,
    /// SELECT with its database, remembered to restore it on a new connection.
    Select(Option<u32>),
    /// WATCH: the session cannot move to a new connection until EXEC/DISCARD/UNWATCH.
    Watch,
    /// UNWATCH.
    Unwatch,
    /// CLIENT SETNAME, remembered to restore it on a new connection.
    SetName,
    /// QUIT: the cache closes the connection after its reply, and so does the session.
    Quit,
    /// An empty command (`*0`, an empty inline line): no reply.
    Empty,
    /// CLUSTER SLOTS / SHARDS / NODES / REPLICAS: in cluster mode, node addresses in the
    /// reply are rewritten to local listeners.
    Topology(Topology),
}

impl Kind {
    /// True if the command changes how later replies must be counted.
    fn changes_state(self) -> bool {
        !matches!(
            self,
            Kind::Plain
                | Kind::Empty
                | Kind::PingSubscribed
                | Kind::MaybeBlocking
                | Kind::Select(_)
                | Kind::Watch
                | Kind::Unwatch
                | Kind::SetName
                | Kind::Quit
                | Kind::Topology(_)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubKind {
    Channel,
    Pattern,
    Shard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyMode {
    On,
    Off,
    Skip,
}

/// An entry of the reply queue.
#[derive(Debug)]
enum Pending {
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
    fn label(&self) -> String {
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

/// What a frame from the cache is.
enum Route {
    /// Forward to the client.
    Client,
    /// Send these bytes to the client instead (protocol translation).
    Replace(Vec<u8>),
    /// Swallow: the reply to something the proxy sent.
    Proxy,
}

/// A piece of output, in order. Ranges point into the session's read buffers.
enum Segment {
    Buffer(std::ops::Range<usize>),
    Static(&'static [u8]),
    Owned(Vec<u8>),
}

struct Session<C> {
    id: u64,
    client: C,
    upstream: UpstreamStream,
    ctx: Arc<SessionContext>,
    /// Bytes read from the client, not yet forwarded (at most one partial command).
    cbuf: BytesMut,
    /// Bytes read from the cache, not yet routed (at most one partial frame).
    ubuf: BytesMut,
    cscan: CommandScanner,
    uscan: ReplyScanner,
    queue: VecDeque<Pending>,
    /// Output plans, reused to avoid allocations.
    to_upstream: Vec<Segment>,
    to_client: Vec<Segment>,

    // Reply-side state: the server's state as the reply stream shows it.
    /// The upstream connection's protocol.
    proto: u8,
    /// The protocol the client negotiated (differs from `proto` while a RESP2 subscriber is
    /// served through RESP3).
    client_proto: u8,
    /// The selected database.
    db: u32,
    reply_mode: ReplyMode,
    in_multi: bool,
    monitor: bool,
    /// Channel, pattern and shard subscriptions.
    subscriptions: Subscriptions,

    // Send-side state.
    /// MULTI sent and no EXEC/DISCARD/RESET sent since.
    multi_sent: bool,
    /// Increases with every MULTI sent.
    multi_epoch: u64,
    /// Entries in the queue that change connection state.
    state_changes_in_flight: usize,
    /// The next command is affected by CLIENT REPLY SKIP: treat it as state-changing.
    skip_next_sent: bool,
    /// The client's protocol once everything sent so far has run.
    client_proto_sent: u8,
    /// The upstream connection's protocol once everything sent so far has run.
    upstream_proto_sent: u8,
    /// Subscriptions once everything sent so far has run (tracked while a RESP2 client is
    /// subscribed through a RESP3 upstream, to know when to switch back).
    predicted_subs: Subscriptions,
    /// WATCH sent and not ended: a lost upstream connection cannot be replaced invisibly.
    watching: bool,
    /// QUIT sent: the cache's close is expected and ends the session.
    quit_sent: bool,
    /// The client has authenticated locally (always true without `client_password_file`).
    client_authed: bool,
    /// The client's name (CLIENT SETNAME, HELLO SETNAME), restored on a new connection.
    client_name: Option<Vec<u8>>,

    // Upstream loss.
    /// The upstream connection broke while nothing was in flight; a new one is opened
    /// before the next command (at once for subscribers).
    upstream_lost: bool,
    /// Subscription confirmations of a restore still to swallow.
    restore_confirmations: usize,

    // Authentication.
    token_rx: watch::Receiver<CurrentToken>,
    /// Generation of the token the connection is authenticated with (or being re-AUTHed to).
    auth_generation: u64,
    /// Injected AUTHs in the queue.
    reauths_in_flight: usize,
    /// A newer token than `auth_generation` waits for a safe point, since this instant.
    reauth_wanted: Option<Instant>,
    /// Whether this session counts in the `reauth_pending` gauge.
    pending_counted: bool,
    /// A place among the re-AUTHs allowed in flight at once; held until the AUTH reply.
    reauth_permit: Option<tokio::sync::OwnedSemaphorePermit>,

    // Blocking commands.
    /// A sliced blocking command is in flight: later client commands wait in `cbuf`.
    blocked: bool,
    /// A slice ended empty before the client's timeout: re-issue it.
    reissue: Option<Box<Blocking>>,
}

impl<C: ClientStream> Session<C> {
    fn new(
        client: C,
        upstream: UpstreamStream,
        ctx: Arc<SessionContext>,
        token: Arc<AccessToken>,
        id: u64,
    ) -> Self {
        let mut token_rx = ctx.tokens.subscribe();
        token_rx.mark_unchanged();
        Session {
            id,
            client,
            upstream,
            cbuf: BytesMut::new(),
            ubuf: BytesMut::new(),
            cscan: CommandScanner::default(),
            uscan: ReplyScanner::default(),
            queue: VecDeque::new(),
            to_upstream: Vec::new(),
            to_client: Vec::new(),
            proto: 2,
            client_proto: 2,
            reply_mode: ReplyMode::On,
            in_multi: false,
            monitor: false,
            subscriptions: Subscriptions::default(),
            multi_sent: false,
            multi_epoch: 0,
            state_changes_in_flight: 0,
            skip_next_sent: false,
            client_proto_sent: 2,
            upstream_proto_sent: 2,
            predicted_subs: Subscriptions::default(),
            watching: false,
            quit_sent: false,
            client_authed: ctx.client_password.is_none(),
            client_name: None,
            upstream_lost: false,
            restore_confirmations: 0,
            db: 0,
            token_rx,
            auth_generation: token.generation(),
            reauths_in_flight: 0,
            reauth_wanted: None,
            pending_counted: false,
            reauth_permit: None,
            blocked: false,
            reissue: None,
            ctx,
        }
    }

    async fn run(&mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), SessionEnd> {
        // A token may have changed between connect and now.
        self.note_token_change();
        self.try_reauth().await?;
        let mut client_open = true;
        let mut token_source_open = true;
        let mut draining_since: Option<Instant> = None;
        loop {
            if let Some(since) = draining_since {
                if !self.client_replies_outstanding() {
                    break;
                }
                if since.elapsed() >= self.ctx.drain_timeout {
                    tracing::debug!(session = self.id, "drain timeout; closing");
                    break;
                }
            }
            // Buffers that hold nothing are released: an idle session keeps no read buffer.
            if self.cbuf.is_empty() && self.cbuf.capacity() > 0 {
                self.cbuf = BytesMut::new();
            }
            if self.ubuf.is_empty() && self.ubuf.capacity() > 0 {
                self.ubuf = BytesMut::new();
            }
            // Likewise the reply queue and the output plans once nothing is in flight: about
            // 0.4 kB per idle session.
            if self.queue.is_empty() && self.queue.capacity() > 0 {
                self.queue = VecDeque::new();
                if self.to_upstream.is_empty() {
                    self.to_upstream = Vec::new();
                }
                if self.to_client.is_empty() {
                    self.to_client = Vec::new();
                }
            }
            // A timer only while draining (boxed): a `Sleep` built every turn would cost a
            // clock read each turn and 112 bytes in every idle session's task.
            let mut drain_sleep = draining_since.map(|s| {
                Box::pin(tokio::time::sleep(
                    self.ctx.drain_timeout.saturating_sub(s.elapsed()),
                ))
            });
            // Lazy and boxed: the permit is wanted only during a token change.
            let reauth_limiter = &self.ctx.reauth_limiter;
            tokio::select! {
                r = std::future::poll_fn(|cx| self.upstream.get_ref().0.poll_read_ready(cx)), if !self.upstream_lost => {
                    let read = r.and_then(|()| read_available(&mut self.upstream, &mut self.ubuf, usize::MAX));
                    match read {
                        Ok(ReadOutcome::Data(0)) => {}
                        Ok(ReadOutcome::Data(n)) => {
                            self.ctx.metrics.bytes_upstream_to_client.inc_by(n as u64);
                            self.on_upstream_data().await?;
                        }
                        other => {
                            let end = match other {
                                Err(e) => SessionEnd::UpstreamIo(e),
                                _ => SessionEnd::UpstreamClosed,
                            };
                            if !self.can_replace_upstream() || draining_since.is_some() || self.quit_sent {
                                // Commands in flight or a transaction: the client must see the
                                // loss and retry on its own.
                                return Err(end);
                            }
                            tracing::info!(session = self.id, reason = %end, "upstream connection lost while idle; a new one will be opened");
                            self.upstream_lost = true;
                            if self.subscribed() || self.monitor {
                                // Subscribers send nothing: reconnect now.
                                self.reconnect().await?;
                            }
                        }
                    }
                }
                r = std::future::poll_fn(|cx| self.client.poll_readable(cx)), if client_open && draining_since.is_none() && !(self.blocked && self.cbuf.len() > HELD_MAX) => {
                    let read = r.and_then(|()| read_available(&mut self.client, &mut self.cbuf, CLIENT_READ_BUDGET));
                    match read {
                        Ok(ReadOutcome::Eof) => {
                            client_open = false;
                            draining_since = Some(Instant::now());
                        }
                        Ok(ReadOutcome::Data(0)) => {}
                        Ok(ReadOutcome::Data(n)) => {
                            self.ctx.metrics.bytes_client_to_upstream.inc_by(n as u64);
                            self.on_client_data().await?;
                        }
                        Err(e) => return Err(SessionEnd::ClientIo(e)),
                    }
                }
                r = self.token_rx.changed(), if token_source_open => {
                    if r.is_ok() {
                        self.note_token_change();
                    } else {
                        // The manager stopped (shutdown): no more tokens, and a closed channel
                        // must not wake this loop again and again.
                        token_source_open = false;
                    }
                }
                // Re-AUTHs are spread: at most `reauth_limiter`'s permits are in flight at once
                // across all sessions, so a refresh with 10,000 sessions is no AUTH storm.
                p = async { Box::pin(reauth_limiter.clone().acquire_owned()).await },
                    if self.reauth_wanted.is_some() && self.reauth_permit.is_none() && self.at_safe_point() => {
                    if let Ok(p) = p {
                        self.reauth_permit = Some(p);
                        self.try_reauth().await?;
                    }
                }
                r = shutdown.changed(), if draining_since.is_none() => {
                    if r.is_err() || *shutdown.borrow() {
                        draining_since = Some(Instant::now());
                    }
                }
                _ = std::future::poll_fn(|cx| match drain_sleep.as_mut() {
                    Some(sleep) => std::future::Future::poll(sleep.as_mut(), cx),
                    None => Poll::Pending,
                }), if draining_since.is_some() => {}
            }
        }
        let _ = self.client.shutdown().await;
        let _ = self.upstream.shutdown().await;
        Ok(())
    }

    /// True while some command forwarded for the client still waits for its reply.
    fn client_replies_outstanding(&self) -> bool {
        self.queue.iter().any(|p| {
            matches!(
                p,
                Pending::Command { .. }
                    | Pending::Local(_)
                    | Pending::Blocking(_)
                    | Pending::Refusal(_)
            )
        })
    }

    // ---------------------------------------------------------------- client → cache

    async fn on_client_data(&mut self) -> Result<(), SessionEnd> {
        if self.blocked {
            // Held until the blocking command's real reply.
            return Ok(());
        }
        if self.upstream_lost && !self.cbuf.is_empty() {
            self.reconnect().await?;
        }
        let limits = self.ctx.limits;
        let mut pos = 0;
        let mut run_start = 0;
        let mut commands = 0u64;
        self.to_upstream.clear();
        loop {
            let scanned = match self.cscan.scan(&self.cbuf[pos..], &limits) {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    // Forward what came before the bad bytes, then answer and close.
                    self.flush_run(run_start, pos);
                    self.write_upstream_plan().await?;
                    // Boxed, as every rare path: its state would enlarge every session.
                    return Err(Box::pin(self.client_protocol_error(e)).await);
                }
            };
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
                    Some(Kind::Plain) if !self.emulating_sent() && self.client_authed => {
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
            if matches!(kind, Kind::Subscribe(_))
                && self.client_proto_sent == 2
                && self.upstream_proto_sent == 2
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
                    self.queue.push_back(Pending::Local(reply));
                    continue;
                }
                Action::LocalAuth(ok) => {
                    self.flush_run(run_start, frame.start);
                    run_start = pos;
                    let reply: &'static [u8] = if ok {
                        self.client_authed = true;
                        b"+OK\r\n"
                    } else {
                        tracing::info!(session = self.id, "a local client sent a wrong password");
                        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
                    };
                    self.queue.push_back(Pending::Local(Cow::Borrowed(reply)));
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
                    self.queue.push_back(Pending::Refusal(args));
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
                Kind::Reset => {
                    // RESET logs the client out too.
                    self.client_authed = self.ctx.client_password.is_none();
                    self.watching = false;
                    self.client_name = None;
                    self.client_proto_sent = 2;
                    self.upstream_proto_sent = 2;
                    self.predicted_subs.clear();
                    // After RESET the connection is logged out: AUTH again right behind it.
                    self.flush_run(run_start, pos);
                    run_start = pos;
                    self.inject_auth_after_reset();
                }
                Kind::Hello(v) => {
                    // Forwarded: any password it carried matched (checked in classify).
                    self.client_authed = true;
                    if let Some(v) = v {
                        self.client_proto_sent = v;
                        self.upstream_proto_sent = v;
                    }
                    let args = frame_args(&self.cbuf[frame.clone()], scanned.inline);
                    if let Some(i) = args.iter().position(|a| a.eq_ignore_ascii_case(b"SETNAME")) {
                        self.client_name = args.get(i + 1).cloned();
                    }
                }
                Kind::SetName => {
                    let args = frame_args(&self.cbuf[frame.clone()], scanned.inline);
                    self.client_name = args.get(2).cloned().filter(|n| !n.is_empty());
                }
                Kind::Watch => self.watching = true,
                Kind::Quit => self.quit_sent = true,
                Kind::Unwatch | Kind::Exec | Kind::Discard => self.watching = false,
                Kind::Subscribe(k) | Kind::Unsubscribe(k) if self.emulating_sent() => {
                    let args = frame_args(&self.cbuf[frame.clone()], scanned.inline);
                    let subscribe = matches!(kind, Kind::Subscribe(_));
                    self.predicted_subs.apply(k, subscribe, &args[1..]);
                    if self.predicted_subs.is_empty() {
                        // The last subscription ends: back to RESP2 before the next command.
                        self.flush_run(run_start, pos);
                        run_start = pos;
                        self.inject_hello(2);
                    }
                }
                _ => {}
            }
        }
        self.flush_run(run_start, pos);
        self.ctx.metrics.commands_total.inc_by(commands);
        self.write_upstream_plan().await?;
        self.cbuf.advance(pos);
        if self.cbuf.is_empty() && self.cbuf.capacity() > 4 * READ_CHUNK {
            self.cbuf = BytesMut::new();
        }
        // Local replies at the head of the queue can go out now.
        self.route_replies().await?;
        self.try_reauth().await
    }

    fn flush_run(&mut self, start: usize, end: usize) {
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

    async fn write_upstream_plan(&mut self) -> Result<(), SessionEnd> {
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

    async fn client_protocol_error(&mut self, e: ProtocolError) -> SessionEnd {
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
    fn classify(&self, args: &[&[u8]], inline: bool) -> Action {
        let Some(name) = args.first() else {
            return Action::Forward(Kind::Plain, 0);
        };
        let nargs = args.len();
        let kind = full_kind(name, args);
        if let Some(password) = &self.ctx.client_password {
            // Local client authentication: nothing is forwarded before the client's AUTH.
            match kind {
                Classified::Auth if !self.emulating_sent() => {
                    let given = args.get(1..).and_then(|a| a.last()).copied().unwrap_or(b"");
                    return Action::LocalAuth(matches_password(given, password) && nargs <= 3);
                }
                Classified::Kind(Kind::Hello(_)) => {
                    let auth = args.iter().position(|a| a.eq_ignore_ascii_case(b"AUTH"));
                    match auth.and_then(|i| args.get(i + 2)) {
                        Some(given) if matches_password(given, password) => {
                            // Authenticated by HELLO: forwarded below without its AUTH part.
                        }
                        Some(_) => return Action::LocalAuth(false),
                        None if !self.client_authed => {
                            return Action::Local(Cow::Borrowed(
                                b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n",
                            ))
                        }
                        None => {}
                    }
                }
                Classified::Kind(Kind::Quit | Kind::Reset) => {}
                _ if !self.client_authed => {
                    return Action::Local(Cow::Borrowed(b"-NOAUTH Authentication required.\r\n"))
                }
                _ => {}
            }
        }
        match kind {
            Classified::Auth if self.emulating_sent() => Action::Refuse(owned_args(args)),
            Classified::Auth => Action::Local(Cow::Borrowed(b"+OK\r\n")),
            Classified::Kind(k) => {
                if self.multi_sent && self.ctx.cluster.is_some() && matches!(k, Kind::Topology(_)) {
                    // Its reply would come inside EXEC's, where it is not rewritten.
                    return Action::Local(Cow::Borrowed(
                        b"-ERR entra-redis-proxy does not support CLUSTER SLOTS, SHARDS, NODES or REPLICAS inside MULTI in cluster mode\r\n",
                    ));
                }
                if self.multi_sent && in_multi_unsupported(k) {
                    return Action::Local(Cow::Borrowed(
                        b"-ERR entra-redis-proxy does not support HELLO, SUBSCRIBE, CLIENT REPLY or MONITOR inside MULTI\r\n",
                    ));
                }
                if self.emulating_sent() {
                    // A RESP2 subscriber whose upstream speaks RESP3: keep RESP2's rules.
                    let allowed = match k {
                        Kind::Subscribe(_) | Kind::Unsubscribe(_) | Kind::Reset | Kind::Quit => {
                            true
                        }
                        Kind::Plain if name.eq_ignore_ascii_case(b"PING") => {
                            return Action::Forward(Kind::PingSubscribed, nargs)
                        }
                        _ => false,
                    };
                    if !allowed {
                        return Action::Refuse(owned_args(args));
                    }
                }
                if let Kind::Hello(_) = k {
                    if let Some(stripped) = strip_hello_auth(args) {
                        return Action::Rewrite(k, stripped.0, stripped.1);
                    }
                }
                if inline && k != Kind::Plain {
                    // Re-encode so the server sees exactly the arguments the session saw.
                    return Action::Rewrite(k, nargs, resp::encode_command(args));
                }
                Action::Forward(k, nargs)
            }
        }
    }

    fn enqueue_command(&mut self, kind: Kind, nargs: usize) {
        let kind = if kind == Kind::MaybeBlocking {
            Kind::Plain
        } else {
            kind
        };
        let state_change = kind.changes_state() || std::mem::take(&mut self.skip_next_sent);
        if kind == Kind::ClientReply(ReplyMode::Skip) {
            self.skip_next_sent = true;
        }
        match kind {
            Kind::Multi => {
                self.multi_epoch += 1;
            }
            Kind::Exec | Kind::Discard | Kind::Reset => self.multi_sent = false,
            _ => {}
        }
        let was_multi = self.multi_sent;
        if kind == Kind::Multi {
            self.multi_sent = true;
        }
        // Only ordinary commands share an entry: the others keep their kind.
        if !state_change && kind == Kind::Plain {
            if let Some(Pending::Command {
                kind: Kind::Plain,
                count,
                state_change: false,
                remaining: None,
                ..
            }) = self.queue.back_mut()
            {
                *count += 1;
                return;
            }
        }
        if state_change {
            self.state_changes_in_flight += 1;
        }
        self.queue.push_back(Pending::Command {
            kind,
            count: 1,
            nargs,
            state_change,
            multi_epoch: if kind == Kind::Multi && !was_multi {
                self.multi_epoch
            } else {
                0
            },
            remaining: None,
        });
    }

    fn inject_auth_after_reset(&mut self) {
        let Some(token) = self.token_rx.borrow().clone() else {
            return;
        };
        self.to_upstream
            .push(Segment::Owned(token.auth_command().to_vec()));
        self.auth_generation = token.generation();
        self.reauths_in_flight += 1;
        self.queue.push_back(Pending::Reauth {
            token,
            frames: 1,
            started: self.reauth_wanted.unwrap_or_else(Instant::now),
        });
        self.reauth_wanted = None;
    }

    fn inject_hello(&mut self, version: u8) {
        let v = [b'0' + version];
        self.to_upstream
            .push(Segment::Owned(resp::encode_command(&[&b"HELLO"[..], &v])));
        self.upstream_proto_sent = version;
        self.state_changes_in_flight += 1;
        self.queue.push_back(Pending::Hello { version });
    }

    /// A RESP2 client subscribed through an upstream switched to RESP3 (send side).
    fn emulating_sent(&self) -> bool {
        self.client_proto_sent == 2 && self.upstream_proto_sent == 3
    }

    // ---------------------------------------------------------------- upstream loss

    /// True if nothing the client sent is in flight and no transaction or WATCH is open:
    /// the connection can be replaced without the client noticing.
    fn can_replace_upstream(&self) -> bool {
        self.state_changes_in_flight == 0
            && !self.multi_sent
            && !self.in_multi
            && !self.watching
            && !self.blocked
            && self.reissue.is_none()
            && self
                .queue
                .iter()
                .all(|p| matches!(p, Pending::Reauth { .. }))
    }

    /// Opens a new upstream connection (backing off, paced across sessions) and restores the
    /// connection state: protocol, database, name, subscriptions, MONITOR, reply mode.
    async fn reconnect(&mut self) -> Result<(), SessionEnd> {
        // Boxed: a rare path whose state (a new TLS stream) would otherwise enlarge every
        // session's task.
        Box::pin(self.reconnect_inner()).await
    }

    async fn reconnect_inner(&mut self) -> Result<(), SessionEnd> {
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
        self.queue.clear();
        self.reauths_in_flight = 0;
        self.state_changes_in_flight = 0;
        self.reauth_permit = None;
        self.ubuf.clear();
        self.uscan = ReplyScanner::default();
        self.auth_generation = token.generation();
        self.reauth_wanted = None;
        self.pending_flag(false);
        self.proto = 2;
        self.upstream_proto_sent = 2;
        let reply_off = self.reply_mode == ReplyMode::Off;
        self.reply_mode = ReplyMode::On;

        self.to_upstream.clear();
        if self.client_proto == 3 || self.subscribed() {
            self.inject_hello(3);
        }
        if self.db != 0 {
            let db = self.db.to_string();
            self.inject_restore(&[b"SELECT", db.as_bytes()]);
        }
        if let Some(name) = self.client_name.clone() {
            self.inject_restore(&[&b"CLIENT"[..], b"SETNAME", &name]);
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
        if self.monitor {
            self.inject_restore(&[b"MONITOR"]);
        }
        if reply_off {
            self.to_upstream.push(Segment::Owned(resp::encode_command(&[
                &b"CLIENT"[..],
                b"REPLY",
                b"OFF",
            ])));
            self.reply_mode = ReplyMode::Off;
        }
        self.write_upstream_plan().await?;
        self.ctx.metrics.upstream_reconnects_total.inc();
        tracing::info!(
            session = self.id,
            db = self.db,
            subscribed = self.subscribed(),
            "upstream connection replaced"
        );
        self.note_token_change();
        Ok(())
    }

    /// Sends a command that restores state on a new connection; its reply is swallowed.
    fn inject_restore(&mut self, args: &[&[u8]]) {
        self.to_upstream
            .push(Segment::Owned(resp::encode_command(args)));
        self.queue.push_back(Pending::Restore);
    }

    // ---------------------------------------------------------------- re-authentication

    fn note_token_change(&mut self) {
        let newer = self
            .token_rx
            .borrow_and_update()
            .as_ref()
            .is_some_and(|t| t.generation() > self.auth_generation);
        if newer && self.reauth_wanted.is_none() {
            self.reauth_wanted = Some(Instant::now());
            self.pending_flag(true);
        }
    }

    fn pending_flag(&mut self, on: bool) {
        if on != self.pending_counted {
            self.pending_counted = on;
            if on {
                self.ctx.metrics.reauth_pending.inc();
            } else {
                self.ctx.metrics.reauth_pending.dec();
            }
        }
    }

    /// True where an injected AUTH cannot disturb the client's stream.
    fn at_safe_point(&self) -> bool {
        // A RESP2 subscriber cannot AUTH (RESP2 subscribers are served through RESP3).
        let resp2_subscriber = self.proto == 2 && self.subscribed();
        !self.upstream_lost
            && self.reauths_in_flight == 0
            && self.state_changes_in_flight == 0
            && !self.multi_sent
            && !self.in_multi
            && !resp2_subscriber
    }

    async fn try_reauth(&mut self) -> Result<(), SessionEnd> {
        let Some(wanted_since) = self.reauth_wanted else {
            return Ok(());
        };
        if !self.at_safe_point() || self.reauth_permit.is_none() {
            return Ok(());
        }
        let Some(token) = self.token_rx.borrow().clone() else {
            return Ok(());
        };
        if token.generation() <= self.auth_generation {
            self.reauth_wanted = None;
            self.reauth_permit = None;
            return Ok(());
        }
        let frames = if self.reply_mode != ReplyMode::On {
            // Under CLIENT REPLY OFF (or with a SKIP waiting for the client's next command)
            // the AUTH reply would be suppressed: turn replies on around it so its result can
            // be checked, then restore the mode (SKIP again applies to the client's next).
            let restore: &[u8] = if self.reply_mode == ReplyMode::Off {
                b"OFF"
            } else {
                b"SKIP"
            };
            let mut cmd = resp::encode_command(&[&b"CLIENT"[..], b"REPLY", b"ON"]);
            cmd.extend_from_slice(token.auth_command());
            cmd.extend_from_slice(&resp::encode_command(&[&b"CLIENT"[..], b"REPLY", restore]));
            self.upstream
                .write_all(&cmd)
                .await
                .map_err(SessionEnd::UpstreamIo)?;
            zeroize::Zeroize::zeroize(&mut cmd);
            2
        } else {
            self.upstream
                .write_all(token.auth_command())
                .await
                .map_err(SessionEnd::UpstreamIo)?;
            1
        };
        self.upstream
            .flush()
            .await
            .map_err(SessionEnd::UpstreamIo)?;
        tracing::trace!(
            session = self.id,
            generation = token.generation(),
            "re-AUTH sent"
        );
        self.auth_generation = token.generation();
        self.reauths_in_flight += 1;
        self.reauth_wanted = None;
        self.queue.push_back(Pending::Reauth {
            token,
            frames,
            started: wanted_since,
        });
        Ok(())
    }

    // ---------------------------------------------------------------- cache → client

    async fn on_upstream_data(&mut self) -> Result<(), SessionEnd> {
        self.route_replies().await?;
        if let Some(block) = self.reissue.take() {
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

    /// Decides whether a blocking command must be cut into slices: only where its wait could
    /// outlast the token, and where its reply can be recognised (no MULTI, replies on).
    fn plan_blocking(&self, args: Vec<Vec<u8>>) -> Option<Box<Blocking>> {
        if self.state_changes_in_flight > 0
            || self.multi_sent
            || self.in_multi
            || self.skip_next_sent
            || self.reply_mode != ReplyMode::On
            || self.emulating_sent()
        {
            return None;
        }
        let name = args.first()?.to_ascii_uppercase();
        let last = args.len().checked_sub(1)?;
        let (timeout_arg, millis) = match name.as_slice() {
            b"BLPOP" | b"BRPOP" | b"BZPOPMIN" | b"BZPOPMAX" | b"BRPOPLPUSH" | b"BLMOVE" => {
                (last, false)
            }
            b"BLMPOP" | b"BZMPOP" => (1, false),
            b"WAIT" => (2, true),
            b"XREAD" | b"XREADGROUP" => {
                let streams = args
                    .iter()
                    .position(|a| a.eq_ignore_ascii_case(b"STREAMS"))?;
                let block = args[..streams]
                    .iter()
                    .position(|a| a.eq_ignore_ascii_case(b"BLOCK"))?;
                (block + 1, true)
            }
            _ => return None,
        };
        let raw = std::str::from_utf8(args.get(timeout_arg)?).ok()?;
        let secs: f64 = if millis {
            raw.parse::<u64>().ok()? as f64 / 1000.0
        } else {
            raw.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)?
        };
        let slice = self.block_slice();
        if secs > 0.0 && secs <= slice.as_secs_f64() {
            return None;
        }
        let deadline = (secs > 0.0).then(|| Instant::now() + Duration::from_secs_f64(secs));
        let wait_replicas = if name == b"WAIT" {
            std::str::from_utf8(args.get(1)?).ok()?.parse::<i64>().ok()
        } else {
            None
        };
        let mut probes = Vec::new();
        if name == b"XREAD" {
            let streams = args
                .iter()
                .position(|a| a.eq_ignore_ascii_case(b"STREAMS"))?;
            let n = (args.len() - streams - 1) / 2;
            for k in 0..n {
                let id_arg = streams + 1 + n + k;
                if args.get(id_arg).map(Vec::as_slice) == Some(b"$") {
                    probes.push((streams + 1 + k, id_arg));
                }
            }
        }
        Some(Box::new(Blocking {
            args,
            timeout_arg,
            millis,
            deadline,
            wait_replicas,
            probes,
        }))
    }

    /// How long one slice of a blocking wait may last: until shortly before the current
    /// token expires, so that a re-AUTH fits between two slices.
    fn block_slice(&self) -> Duration {
        let Some(token) = self.token_rx.borrow().clone() else {
            return Duration::from_secs(1);
        };
        let now = std::time::SystemTime::now();
        let life = token
            .expires_at()
            .duration_since(token.obtained_at())
            .unwrap_or_default();
        let guard = (self.ctx.refresh_margin / 2).min(life / 4);
        let end = token.expires_at().checked_sub(guard).unwrap_or(now);
        end.duration_since(now)
            .unwrap_or_default()
            .max(Duration::from_secs(1))
    }

    /// Queues a slice of a blocking command (and, the first time, the stream probes).
    fn send_blocking(&mut self, mut block: Box<Blocking>, first: bool) {
        if first {
            for (key_arg, id_arg) in std::mem::take(&mut block.probes) {
                let probe = resp::encode_command(&[
                    &b"XREVRANGE"[..],
                    &block.args[key_arg],
                    b"+",
                    b"-",
                    b"COUNT",
                    b"1",
                ]);
                self.to_upstream.push(Segment::Owned(probe));
                self.queue.push_back(Pending::StreamProbe { arg: id_arg });
            }
        }
        let mut slice = self.block_slice();
        if let Some(d) = block.deadline {
            slice = slice.min(d.saturating_duration_since(Instant::now()));
        }
        let timeout = if block.millis {
            slice.as_millis().max(1).to_string()
        } else {
            format!("{:.3}", slice.as_secs_f64().max(0.001))
        };
        let mut args: Vec<&[u8]> = block.args.iter().map(Vec::as_slice).collect();
        args[block.timeout_arg] = timeout.as_bytes();
        self.to_upstream
            .push(Segment::Owned(resp::encode_command(&args)));
        self.blocked = true;
        self.queue.push_back(Pending::Blocking(block));
    }

    /// Routes every complete frame in the upstream buffer, emits local replies that reached
    /// the head of the queue, and writes the client's share in order.
    async fn route_replies(&mut self) -> Result<(), SessionEnd> {
        let max_bulk = self.ctx.limits.max_bulk;
        let mut pos = 0;
        let mut run_start = 0;
        self.to_client.clear();
        loop {
            // Local replies that reach the head go out after what was routed before them.
            push_range(&mut self.to_client, run_start, pos);
            run_start = pos;
            self.settle_head();
            let len = match self.uscan.scan(&self.ubuf[pos..], max_bulk) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(session = self.id, error = %e, "the cache sent invalid RESP; closing");
                    return Err(SessionEnd::UpstreamProtocol(e));
                }
            };
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
        push_range(&mut self.to_client, run_start, pos);
        self.settle_head();
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
        self.ubuf.advance(pos);
        if self.ubuf.is_empty() && self.ubuf.capacity() > 4 * READ_CHUNK {
            self.ubuf = BytesMut::new();
        }
        Ok(())
    }

    /// Resolves the head of the queue: pops entries that expect no frame (emitting local
    /// replies into the client plan) and fixes how many frames the head expects.
    fn settle_head(&mut self) {
        loop {
            let Some(head) = self.queue.front_mut() else {
                return;
            };
            match head {
                Pending::Local(_) => {
                    let Some(Pending::Local(reply)) = self.queue.pop_front() else {
                        unreachable!()
                    };
                    match self.reply_mode {
                        ReplyMode::On => {
                            // Keep order: what was routed so far precedes the local reply.
                            self.to_client.push(match reply {
                                Cow::Borrowed(b) => Segment::Static(b),
                                Cow::Owned(v) => Segment::Owned(v),
                            });
                        }
                        ReplyMode::Off => {}
                        ReplyMode::Skip => self.reply_mode = ReplyMode::On,
                    }
                }
                // Injected and blocking commands always expect a frame.
                Pending::Reauth { .. }
                | Pending::Restore
                | Pending::Refusal(_)
                | Pending::Hello { .. }
                | Pending::Blocking(_)
                | Pending::StreamProbe { .. } => return,
                Pending::Command {
                    kind,
                    count,
                    nargs,
                    remaining,
                    ..
                } => {
                    if remaining.is_none() {
                        let (kind, count, nargs) = (*kind, *count, *nargs);
                        let n = self.expected_frames(kind, count, nargs);
                        if let Some(Pending::Command { remaining, .. }) = self.queue.front_mut() {
                            *remaining = Some(n);
                        }
                    }
                    if let Some(Pending::Command {
                        remaining: Some(0), ..
                    }) = self.queue.front()
                    {
                        self.complete_head();
                        continue;
                    }
                    return;
                }
            }
        }
    }

    /// How many frames a command at the head of the queue will produce, and the state changes
    /// that happen when it runs without a reply.
    fn expected_frames(&mut self, kind: Kind, count: usize, nargs: usize) -> usize {
        if self.in_multi
            && kind != Kind::Empty
            && !matches!(kind, Kind::Exec | Kind::Discard | Kind::Multi | Kind::Reset)
        {
            // Queued: +QUEUED or an error, whatever the command (reply mode aside).
            return self.apply_reply_mode(count);
        }
        match kind {
            // SUBSCRIBE without a channel: one error.
            Kind::Subscribe(_) if nargs <= 1 => 1,
            // Confirmations are sent whatever the reply mode (checked on redis-server 7.0).
            Kind::Subscribe(_) => nargs - 1,
            Kind::Unsubscribe(k) => {
                if nargs > 1 {
                    nargs - 1
                } else {
                    self.subs(k).len().max(1)
                }
            }
            Kind::ClientReply(ReplyMode::On) => {
                self.reply_mode = ReplyMode::On;
                1
            }
            Kind::ClientReply(mode) => {
                if self.reply_mode == ReplyMode::Off && mode == ReplyMode::Skip {
                    return 0;
                }
                self.reply_mode = mode;
                0
            }
            // An empty command has no reply, but redis-server's resetClient consumes a SKIP.
            Kind::Empty => {
                if self.reply_mode == ReplyMode::Skip {
                    self.reply_mode = ReplyMode::On;
                }
                0
            }
            _ => {
                let n = self.apply_reply_mode(count);
                if n == 0 && kind.changes_state() {
                    // HELLO, SELECT, MULTI... under CLIENT REPLY OFF/SKIP still take effect.
                    self.apply_effects(kind, true);
                }
                n
            }
        }
    }

    fn apply_reply_mode(&mut self, count: usize) -> usize {
        match self.reply_mode {
            ReplyMode::On => count,
            ReplyMode::Off => 0,
            ReplyMode::Skip => {
                self.reply_mode = ReplyMode::On;
                count - 1
            }
        }
    }

    fn subs(&self, k: SubKind) -> &HashSet<Vec<u8>> {
        match k {
            SubKind::Channel => &self.subscriptions.sets().channels,
            SubKind::Pattern => &self.subscriptions.sets().patterns,
            SubKind::Shard => &self.subscriptions.sets().shards,
        }
    }

    fn subscribed(&self) -> bool {
        !self.subscriptions.is_empty()
    }

    /// Decides where a complete frame goes, and updates state.
    fn route(&mut self, frame: std::ops::Range<usize>) -> Route {
        let bytes = &self.ubuf[frame.clone()];
        let first = bytes[0];
        tracing::trace!(
            session = self.id,
            frame_type = %(first as char),
            frame_len = bytes.len(),
            head = ?self.queue.front().map(Pending::label),
            queued = self.queue.len(),
            "frame from the cache"
        );
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
            if self.client_proto == 2 {
                // A RESP2 subscriber served through RESP3: pushes become RESP2 arrays.
                return Route::Replace(push_to_resp2(&self.ubuf[frame]));
            }
            return Route::Client;
        }
        if self.monitor && is_monitor_line(bytes) {
            return Route::Client;
        }
        if self.proto == 2 && self.subscribed() && is_resp2_message(bytes) {
            return Route::Client;
        }
        let conf = if self.proto == 2 && (first == b'*') {
            match self.queue.front() {
                Some(Pending::Command {
                    kind: Kind::Subscribe(_) | Kind::Unsubscribe(_),
                    ..
                }) if !self.in_multi => pubsub_confirmation(bytes, false),
                _ => None,
            }
        } else {
            None
        };
        let is_error = resp::is_error_reply(bytes);
        let Some(head) = self.queue.front_mut() else {
            tracing::debug!(
                session = self.id,
                "a frame the client did not ask for; forwarding it"
            );
            return Route::Client;
        };
        match head {
            Pending::Reauth { frames, .. } => {
                *frames -= 1;
                if *frames == 0 {
                    let ok = bytes == b"+OK\r\n";
                    let reason = if ok {
                        String::new()
                    } else {
                        resp::error_text(bytes)
                            .map(str::to_owned)
                            .unwrap_or_else(|| String::from_utf8_lossy(bytes).trim().to_owned())
                    };
                    self.finish_reauth(ok, &reason);
                }
                Route::Proxy
            }
            Pending::Local(_) => unreachable!("settled before routing"),
            Pending::Refusal(_) => {
                let reply = subscribed_refusal_from_info(bytes);
                let Some(Pending::Refusal(args)) = self.queue.pop_front() else {
                    unreachable!()
                };
                Route::Replace(reply(&args))
            }
            Pending::Restore => {
                if is_error {
                    tracing::warn!(session = self.id, reply = %String::from_utf8_lossy(bytes).trim(), "restoring connection state failed");
                }
                self.queue.pop_front();
                Route::Proxy
            }
            Pending::StreamProbe { arg } => {
                let arg = *arg;
                let id = last_stream_id(bytes);
                self.queue.pop_front();
                if let Some(Pending::Blocking(b)) = self
                    .queue
                    .iter_mut()
                    .find(|p| matches!(p, Pending::Blocking(_)))
                {
                    b.args[arg] = id;
                }
                Route::Proxy
            }
            Pending::Blocking(b) => {
                let timed_out = b.slice_ended_empty(bytes);
                let client_time_left = b
                    .deadline
                    .is_none_or(|d| d > Instant::now() + Duration::from_millis(1));
                let Some(Pending::Blocking(b)) = self.queue.pop_front() else {
                    unreachable!()
                };
                if timed_out && client_time_left {
                    self.reissue = Some(b);
                    Route::Proxy
                } else {
                    self.blocked = false;
                    Route::Client
                }
            }
            Pending::Hello { version } => {
                let version = *version;
                let ok = !is_error;
                self.queue.pop_front();
                self.state_changes_in_flight = self.state_changes_in_flight.saturating_sub(1);
                if ok {
                    self.proto = version;
                } else {
                    tracing::warn!(
                        session = self.id,
                        reply = %String::from_utf8_lossy(bytes).trim(),
                        "the cache refused HELLO {version}; this RESP2 subscriber cannot be re-authenticated"
                    );
                }
                Route::Proxy
            }
            Pending::Command { kind, .. } => {
                let kind = *kind;
                if let Some(c) = &conf {
                    self.apply_confirmation(c);
                }
                match kind {
                    Kind::Subscribe(_) | Kind::Unsubscribe(_) if is_error => {
                        self.complete_head();
                    }
                    Kind::Topology(t) if self.ctx.cluster.is_some() => {
                        let out = self.rewrite_topology(t, frame.clone());
                        self.after_reply(kind, frame);
                        self.decrement_head();
                        return Route::Replace(out);
                    }
                    Kind::PingSubscribed if self.client_proto == 2 && self.proto == 3 => {
                        let out = pong_to_resp2(&self.ubuf[frame.clone()]);
                        self.after_reply(kind, frame);
                        self.decrement_head();
                        return out.map_or(Route::Client, Route::Replace);
                    }
                    _ => {
                        self.after_reply(kind, frame);
                        self.decrement_head();
                    }
                }
                Route::Client
            }
        }
    }

    /// Cluster mode: a frame for the client with its MOVED/ASK addresses made local.
    fn rewrite_redirect(&self, frame: std::ops::Range<usize>) -> Route {
        let bytes = &self.ubuf[frame];
        let Some(map) = self.ctx.cluster.as_deref() else {
            return Route::Client;
        };
        if !rewrite::may_redirect(bytes) {
            return Route::Client;
        }
        let map = |endpoint: &str, port: u16| self.node_for(map, endpoint, port);
        match rewrite::rewrite_redirects(bytes, &map) {
            Ok(None) => Route::Client,
            Ok(Some(out)) => Route::Replace(out),
            Err(e) => Route::Replace(self.rewrite_failed(&e)),
        }
    }

    /// Cluster mode: the reply to CLUSTER SLOTS/SHARDS/NODES/REPLICAS with every node
    /// address made local. Errors from the cache pass unchanged.
    fn rewrite_topology(&self, which: Topology, frame: std::ops::Range<usize>) -> Vec<u8> {
        let bytes = &self.ubuf[frame];
        let Some(map) = self.ctx.cluster.as_deref() else {
            return bytes.to_vec();
        };
        if resp::is_error_reply(bytes) {
            return bytes.to_vec();
        }
        let map = |endpoint: &str, port: u16| self.node_for(map, endpoint, port);
        match rewrite::rewrite_topology(which, bytes, &map) {
            Ok(out) => out,
            Err(e) => self.rewrite_failed(&e),
        }
    }

    /// The local listener for a node named in a reply. An empty endpoint (the cluster's
    /// `unknown-endpoint` form) means the host of this connection.
    fn node_for(
        &self,
        map: &crate::cluster::ClusterMap,
        endpoint: &str,
        port: u16,
    ) -> Option<std::net::SocketAddr> {
        use crate::cluster::rewrite::NodeMap;
        if endpoint.is_empty() {
            map.local_for(self.ctx.connector.host(), port)
        } else {
            map.local_for(endpoint, port)
        }
    }

    /// The error a client gets instead of a reply whose node addresses could not be made
    /// local (it never sees a cache-side address).
    fn rewrite_failed(&self, e: &RewriteError) -> Vec<u8> {
        tracing::warn!(session = self.id, upstream = %self.ctx.upstream, error = %e, "cannot rewrite the node addresses of a cluster reply");
        match e {
            RewriteError::NoLocalPort { .. } => b"-CLUSTERDOWN entra-redis-proxy has no free local port for a cluster node (widen cluster_ports)\r\n".to_vec(),
            _ => b"-ERR entra-redis-proxy could not rewrite the node addresses of this cluster reply (see the proxy's log)\r\n".to_vec(),
        }
    }

    /// State changes caused by a command's reply.
    fn after_reply(&mut self, kind: Kind, frame: std::ops::Range<usize>) {
        let ok = !resp::is_error_reply(&self.ubuf[frame]);
        self.apply_effects(kind, ok);
    }

    /// State changes caused by a command that ran (`ok`: it succeeded; a command whose reply
    /// is suppressed by CLIENT REPLY is taken to have succeeded).
    fn apply_effects(&mut self, kind: Kind, ok: bool) {
        if self.in_multi && !matches!(kind, Kind::Exec | Kind::Discard | Kind::Multi | Kind::Reset)
        {
            return;
        }
        match kind {
            Kind::Multi => {
                if ok {
                    self.in_multi = true;
                } else if let Some(Pending::Command { multi_epoch, .. }) = self.queue.front() {
                    // A refused MULTI (e.g. on a RESP2 subscriber) opened nothing.
                    if *multi_epoch != 0 && *multi_epoch == self.multi_epoch {
                        self.multi_sent = false;
                    }
                }
            }
            Kind::Exec | Kind::Discard => self.in_multi = false,
            Kind::Hello(Some(v)) if ok => {
                self.proto = v;
                self.client_proto = v;
            }
            Kind::Reset => {
                self.db = 0;
                self.proto = 2;
                self.client_proto = 2;
                self.reply_mode = ReplyMode::On;
                self.in_multi = false;
                self.monitor = false;
                self.subscriptions.clear();
            }
            Kind::Monitor if ok => self.monitor = true,
            Kind::Select(Some(db)) if ok => self.db = db,
            _ => {}
        }
    }

    /// One frame of the head command arrived.
    fn decrement_head(&mut self) {
        if let Some(Pending::Command {
            remaining: Some(r), ..
        }) = self.queue.front_mut()
        {
            *r = r.saturating_sub(1);
            if *r == 0 {
                self.complete_head();
            }
        }
    }

    fn complete_head(&mut self) {
        if let Some(Pending::Command { state_change, .. }) = self.queue.pop_front() {
            if state_change {
                self.state_changes_in_flight = self.state_changes_in_flight.saturating_sub(1);
            }
        }
    }

    fn count_confirmation(&mut self, conf: &Confirmation) {
        if self.in_multi {
            return;
        }
        if let Some(Pending::Command {
            kind: kind @ (Kind::Subscribe(_) | Kind::Unsubscribe(_)),
            remaining: Some(r),
            ..
        }) = self.queue.front_mut()
        {
            if *kind == conf.kind && *r > 0 {
                *r -= 1;
                if *r == 0 {
                    self.complete_head();
                }
            }
        }
    }

    fn apply_confirmation(&mut self, conf: &Confirmation) {
        let (set, add) = match conf.kind {
            Kind::Subscribe(k) => (k, true),
            Kind::Unsubscribe(k) => (k, false),
            _ => return,
        };
        if !add && self.subscriptions.is_empty() {
            return;
        }
        let sets = self.subscriptions.sets_mut();
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
        if self.subscriptions.is_empty() {
            // The last one ended: release the sets.
            self.subscriptions.clear();
        }
    }

    fn finish_reauth(&mut self, ok: bool, reason: &str) {
        let Some(Pending::Reauth { token, started, .. }) = self.queue.pop_front() else {
            return;
        };
        self.reauths_in_flight = self.reauths_in_flight.saturating_sub(1);
        self.reauth_permit = None;
        self.ctx.metrics.reauth(ok, started.elapsed());
        if ok {
            tracing::debug!(
                session = self.id,
                generation = token.generation(),
                user = %token.username(),
                took_ms = started.elapsed().as_millis() as u64,
                "re-authenticated"
            );
            let newest = self
                .token_rx
                .borrow()
                .as_ref()
                .map(|t| t.generation())
                .unwrap_or(0);
            if newest <= token.generation() && self.reauth_wanted.is_none() {
                self.pending_flag(false);
            }
        } else {
            // The connection stays logged in as before; ask for a new token and try again
            // when it arrives.
            tracing::warn!(
                session = self.id,
                user = %token.username(),
                reply = %reason,
                "the cache refused the re-AUTH; requesting a new token"
            );
            // The next token (generation above this one) triggers another attempt.
            self.ctx.tokens.request_refresh();
        }
    }
}

fn push_range(plan: &mut Vec<Segment>, start: usize, end: usize) {
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

/// What to do with a client command.
enum Action {
    Forward(Kind, usize),
    /// The client's AUTH against `client_password_file`: true if the password matched.
    LocalAuth(bool),
    Local(Cow<'static, [u8]>),
    /// Refuse as redis-server refuses a RESP2 subscriber's command; the exact error depends
    /// on the command table, so `COMMAND INFO` is asked first.
    Refuse(Vec<Vec<u8>>),
    Rewrite(Kind, usize, Vec<u8>),
}

enum Classified {
    Auth,
    Kind(Kind),
}

/// Fast path: `Some(Kind::Plain)` for any command name that needs no further look.
#[inline]
fn quick_kind(name: &[u8]) -> Option<Kind> {
    let special: &[&[u8]] = match name.len() {
        4 => &[b"AUTH", b"EXEC", b"WAIT", b"QUIT"],
        5 => &[
            b"MULTI", b"HELLO", b"RESET", b"BLPOP", b"BRPOP", b"XREAD", b"WATCH",
        ],
        6 => &[b"CLIENT", b"BLMOVE", b"BLMPOP", b"BZMPOP", b"SELECT"],
        7 => &[b"DISCARD", b"MONITOR", b"UNWATCH", b"CLUSTER"],
        8 => &[b"BZPOPMIN", b"BZPOPMAX"],
        9 => &[b"SUBSCRIBE"],
        10 => &[b"PSUBSCRIBE", b"SSUBSCRIBE", b"BRPOPLPUSH", b"XREADGROUP"],
        11 => &[b"UNSUBSCRIBE"],
        12 => &[b"PUNSUBSCRIBE", b"SUNSUBSCRIBE"],
        _ => return Some(Kind::Plain),
    };
    if special.iter().any(|s| s.eq_ignore_ascii_case(name)) {
        None
    } else {
        Some(Kind::Plain)
    }
}

fn full_kind(name: &[u8], args: &[&[u8]]) -> Classified {
    let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    let k = if is("AUTH") {
        return Classified::Auth;
    } else if is("MULTI") {
        Kind::Multi
    } else if is("EXEC") {
        Kind::Exec
    } else if is("DISCARD") {
        Kind::Discard
    } else if is("RESET") {
        Kind::Reset
    } else if is("MONITOR") {
        Kind::Monitor
    } else if is("HELLO") {
        let v = args
            .get(1)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<u8>().ok())
            .filter(|v| *v == 2 || *v == 3);
        Kind::Hello(v)
    } else if is("SUBSCRIBE") {
        Kind::Subscribe(SubKind::Channel)
    } else if is("PSUBSCRIBE") {
        Kind::Subscribe(SubKind::Pattern)
    } else if is("SSUBSCRIBE") {
        Kind::Subscribe(SubKind::Shard)
    } else if is("UNSUBSCRIBE") {
        Kind::Unsubscribe(SubKind::Channel)
    } else if is("PUNSUBSCRIBE") {
        Kind::Unsubscribe(SubKind::Pattern)
    } else if is("SUNSUBSCRIBE") {
        Kind::Unsubscribe(SubKind::Shard)
    } else if BLOCKING.iter().any(|b| is(b)) {
        Kind::MaybeBlocking
    } else if is("SELECT") {
        Kind::Select(
            args.get(1)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse().ok()),
        )
    } else if is("QUIT") {
        Kind::Quit
    } else if is("WATCH") {
        Kind::Watch
    } else if is("UNWATCH") {
        Kind::Unwatch
    } else if is("CLIENT") && args.len() == 3 && args[1].eq_ignore_ascii_case(b"SETNAME") {
        Kind::SetName
    } else if is("CLIENT") && args.len() == 3 && args[1].eq_ignore_ascii_case(b"REPLY") {
        if args[2].eq_ignore_ascii_case(b"ON") {
            Kind::ClientReply(ReplyMode::On)
        } else if args[2].eq_ignore_ascii_case(b"OFF") {
            Kind::ClientReply(ReplyMode::Off)
        } else if args[2].eq_ignore_ascii_case(b"SKIP") {
            Kind::ClientReply(ReplyMode::Skip)
        } else {
            Kind::Plain
        }
    } else if is("CLUSTER") {
        topology_command(args).map_or(Kind::Plain, Kind::Topology)
    } else {
        Kind::Plain
    };
    Classified::Kind(k)
}

/// Commands that can block the connection.
const BLOCKING: &[&str] = &[
    "BLPOP",
    "BRPOP",
    "BLMOVE",
    "BLMPOP",
    "BZMPOP",
    "BZPOPMIN",
    "BZPOPMAX",
    "BRPOPLPUSH",
    "XREAD",
    "XREADGROUP",
    "WAIT",
];

fn in_multi_unsupported(k: Kind) -> bool {
    matches!(
        k,
        Kind::Hello(_)
            | Kind::Subscribe(_)
            | Kind::Unsubscribe(_)
            | Kind::ClientReply(_)
            | Kind::Monitor
    )
}

/// `HELLO protover AUTH user pass [SETNAME name]` without its AUTH part, re-encoded; `None`
/// when there is no AUTH.
fn strip_hello_auth(args: &[&[u8]]) -> Option<(usize, Vec<u8>)> {
    let mut out: Vec<&[u8]> = Vec::with_capacity(args.len());
    let mut i = 0;
    let mut stripped = false;
    while i < args.len() {
        if i >= 2 && args[i].eq_ignore_ascii_case(b"AUTH") && i + 2 < args.len() {
            i += 3;
            stripped = true;
            continue;
        }
        out.push(args[i]);
        i += 1;
    }
    stripped.then(|| (out.len(), resp::encode_command(&out)))
}

/// A blocking command cut into slices that each end before the token expires; an empty slice
/// before the client's own timeout is re-issued for the time left, invisibly.
#[derive(Debug)]
struct Blocking {
    /// The client's command; `$` IDs of XREAD are replaced by the probed last IDs.
    args: Vec<Vec<u8>>,
    /// Which argument is the timeout.
    timeout_arg: usize,
    /// The timeout is in milliseconds (XREAD BLOCK, WAIT), else seconds.
    millis: bool,
    /// The client's deadline; `None` waits forever.
    deadline: Option<Instant>,
    /// WAIT's replica count: a reply below it is an empty slice.
    wait_replicas: Option<i64>,
    /// XREAD `$` arguments to resolve first: (key argument, id argument).
    probes: Vec<(usize, usize)>,
}

impl Blocking {
    /// True if a slice's reply says the wait ended without a result.
    fn slice_ended_empty(&self, reply: &[u8]) -> bool {
        if let Some(want) = self.wait_replicas {
            let got = reply
                .strip_prefix(b":")
                .and_then(|r| std::str::from_utf8(r).ok())
                .and_then(|r| r.trim().parse::<i64>().ok());
            return got.is_some_and(|g| g < want);
        }
        matches!(reply, b"*-1\r\n" | b"$-1\r\n" | b"_\r\n")
    }
}

/// The ID in an `XREVRANGE key + - COUNT 1` reply, or `0-0` for an empty stream.
fn last_stream_id(reply: &[u8]) -> Vec<u8> {
    if let Some(rest) = reply.strip_prefix(b"*1\r\n*2\r\n$") {
        if let Some(nl) = memchr::memchr(b'\n', rest) {
            let id = &rest[nl + 1..];
            if let Some(end) = memchr::memchr(b'\r', id) {
                return id[..end].to_vec();
            }
        }
    }
    b"0-0".to_vec()
}

/// Compares a client's password with the configured one in time independent of where they
/// differ.
fn matches_password(given: &[u8], password: &Secret) -> bool {
    let want = password.expose().as_bytes();
    let mut diff = (given.len() != want.len()) as u8;
    for (i, w) in want.iter().enumerate() {
        diff |= w ^ given.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// Channel, pattern and shard-channel subscriptions. Boxed and absent until the first
/// SUBSCRIBE: most sessions never subscribe, and every idle session carries this.
#[derive(Debug, Default)]
struct Subscriptions(Option<Box<SubscriptionSets>>);

#[derive(Debug, Default)]
struct SubscriptionSets {
    channels: HashSet<Vec<u8>>,
    patterns: HashSet<Vec<u8>>,
    shards: HashSet<Vec<u8>>,
}

impl Subscriptions {
    /// Applies (UN)SUBSCRIBE with these channel arguments (none: unsubscribe from all).
    fn apply(&mut self, k: SubKind, subscribe: bool, names: &[Vec<u8>]) {
        if !subscribe && self.0.is_none() {
            // Unsubscribing from nothing changes nothing.
            return;
        }
        let sets = self.sets_mut();
        let set = match k {
            SubKind::Channel => &mut sets.channels,
            SubKind::Pattern => &mut sets.patterns,
            SubKind::Shard => &mut sets.shards,
        };
        match (subscribe, names.is_empty()) {
            (true, _) => set.extend(names.iter().cloned()),
            (false, true) => set.clear(),
            (false, false) => {
                for n in names {
                    set.remove(n);
                }
            }
        }
        if self.is_empty() {
            self.0 = None;
        }
    }

    fn is_empty(&self) -> bool {
        self.0
            .as_ref()
            .is_none_or(|s| s.channels.is_empty() && s.patterns.is_empty() && s.shards.is_empty())
    }

    fn clear(&mut self) {
        self.0 = None;
    }

    /// The sets (empty ones when there are none).
    fn sets(&self) -> &SubscriptionSets {
        static NONE: std::sync::LazyLock<SubscriptionSets> =
            std::sync::LazyLock::new(SubscriptionSets::default);
        self.0.as_deref().unwrap_or(&NONE)
    }

    /// The sets, created at the first use.
    fn sets_mut(&mut self) -> &mut SubscriptionSets {
        self.0.get_or_insert_with(Box::default)
    }
}

/// The arguments of a complete command frame, owned (rare paths only).
fn frame_args(frame: &[u8], inline: bool) -> Vec<Vec<u8>> {
    if inline {
        resp::inline_args(frame).unwrap_or_default()
    } else {
        resp::multibulk_args(frame)
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect()
    }
}

fn owned_args(args: &[&[u8]]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.to_vec()).collect()
}

/// What `COMMAND INFO <name>` says about a command: its full name and arity, and its
/// subcommands (name `container|sub`, arity).
struct CommandInfo {
    name: String,
    arity: i64,
    subcommands: Vec<(String, i64)>,
}

fn parse_command_info(reply: &[u8]) -> Option<CommandInfo> {
    /// A cursor over RESP bytes that reads the few shapes COMMAND INFO uses and skips the
    /// rest whole (key specs hold maps and sets that do not matter here).
    struct Cur<'a>(&'a [u8]);
    impl<'a> Cur<'a> {
        fn line(&mut self) -> Option<&'a [u8]> {
            let nl = memchr::memchr(b'\n', self.0)?;
            let line = self.0.get(..nl.checked_sub(1)?)?;
            self.0 = &self.0[nl + 1..];
            Some(line)
        }
        fn count(&mut self, kind: u8) -> Option<i64> {
            let line = self.line()?;
            if line.first() != Some(&kind) {
                return None;
            }
            std::str::from_utf8(&line[1..]).ok()?.parse().ok()
        }
        fn bulk(&mut self) -> Option<String> {
            let len = self.count(b'$')? as usize;
            let data = self.0.get(..len)?;
            self.0 = self.0.get(len + 2..)?;
            Some(String::from_utf8_lossy(data).into_owned())
        }
        fn skip(&mut self) -> Option<()> {
            let len = ReplyScanner::default().scan(self.0, usize::MAX).ok()??;
            self.0 = &self.0[len..];
            Some(())
        }
        /// `[name, arity, ...]` as an array of `n` elements; the cursor stops after arity.
        fn name_arity(&mut self) -> Option<(String, i64, i64)> {
            let n = self.count(b'*')?;
            Some((self.bulk()?, self.count(b':')?, n))
        }
    }
    let mut c = Cur(reply);
    if c.count(b'*')? != 1 || c.0.starts_with(b"_") || c.0.starts_with(b"*-1") {
        return None;
    }
    let (name, arity, n) = c.name_arity()?;
    let mut subcommands = Vec::new();
    if n >= 10 {
        for _ in 2..9 {
            c.skip()?;
        }
        // An array, or (RESP3) a set when empty.
        let subs = if c.0.starts_with(b"~") {
            c.count(b'~')?
        } else {
            c.count(b'*')?
        };
        for _ in 0..subs {
            let (sub, sub_arity, sub_n) = c.name_arity()?;
            for _ in 2..sub_n {
                c.skip()?;
            }
            subcommands.push((sub, sub_arity));
        }
    }
    Some(CommandInfo {
        name,
        arity,
        subcommands,
    })
}

/// Builds, from a `COMMAND INFO` reply, the error redis-server 7 gives a RESP2 subscriber
/// for `args`: unknown command, unknown subcommand, wrong arity, or not allowed here — in
/// the order redis-server checks them.
fn subscribed_refusal_from_info(info_reply: &[u8]) -> impl Fn(&[Vec<u8>]) -> Vec<u8> {
    let info = parse_command_info(info_reply);
    move |args: &[Vec<u8>]| {
        // redis-server formats arguments with printf's `%.Ns`: at most N bytes, and a C string
        // ends at its first NUL.
        let c_str = |b: &[u8], max: usize| -> Vec<u8> {
            let end = memchr::memchr(0, b).unwrap_or(b.len()).min(max);
            b[..end].to_vec()
        };
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut msg: Vec<u8> = Vec::new();
        match &info {
            None => {
                let mut given: Vec<u8> = Vec::new();
                for a in args.iter().skip(1) {
                    if given.len() >= 128 {
                        break;
                    }
                    given.push(b'\'');
                    given.extend(c_str(a, 128 - given.len() + 1));
                    given.extend_from_slice(b"' ");
                }
                msg.extend_from_slice(b"unknown command '");
                msg.extend(c_str(&args[0], 128));
                msg.extend_from_slice(b"', with args beginning with: ");
                msg.extend(given);
            }
            Some(cmd) => {
                let mut full = cmd.name.clone();
                let mut arity = cmd.arity;
                let mut unknown_sub = None;
                if !cmd.subcommands.is_empty() && args.len() >= 2 {
                    let want = format!("{}|{}", cmd.name, text(&args[1]).to_ascii_lowercase());
                    match cmd.subcommands.iter().find(|(n, _)| *n == want) {
                        Some((n, a)) => {
                            full = n.clone();
                            arity = *a;
                        }
                        None => unknown_sub = Some(&args[1]),
                    }
                }
                let argc = args.len() as i64;
                if let Some(sub) = unknown_sub {
                    msg.extend_from_slice(b"unknown subcommand '");
                    msg.extend(c_str(sub, 128));
                    msg.extend_from_slice(
                        format!("'. Try {} HELP.", text(&args[0]).to_ascii_uppercase()).as_bytes(),
                    );
                } else if (arity > 0 && argc != arity) || argc < -arity {
                    msg.extend_from_slice(
                        format!("wrong number of arguments for '{full}' command").as_bytes(),
                    );
                } else {
                    msg.extend_from_slice(format!(
                        "Can't execute '{full}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
                    ).as_bytes());
                }
            }
        }
        for b in msg.iter_mut() {
            if *b == b'\r' || *b == b'\n' {
                *b = b' ';
            }
        }
        let mut out = b"-ERR ".to_vec();
        out.extend(msg);
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// A RESP3 push frame as the RESP2 array a subscriber expects: `>` becomes `*`, and the
/// RESP3 null (an UNSUBSCRIBE with no channel) becomes `$-1`.
fn push_to_resp2(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len() + 4);
    out.push(b'*');
    // The header line (`>N\r\n`), then each element: RESP3 nulls become RESP2 null bulks;
    // everything else (blob strings, numbers) is the same in RESP2 and is copied as it is.
    let Some(header_end) = memchr::memchr(b'\n', frame) else {
        return frame.to_vec();
    };
    out.extend_from_slice(&frame[1..=header_end]);
    let mut rest = &frame[header_end + 1..];
    while !rest.is_empty() {
        let len = match ReplyScanner::default().scan(rest, usize::MAX) {
            Ok(Some(len)) => len,
            _ => {
                out.extend_from_slice(rest);
                break;
            }
        };
        if &rest[..len] == b"_\r\n" {
            out.extend_from_slice(b"$-1\r\n");
        } else {
            out.extend_from_slice(&rest[..len]);
        }
        rest = &rest[len..];
    }
    out
}

/// A RESP3 reply to PING as a RESP2 subscriber gets it: `["pong", message]`.
fn pong_to_resp2(reply: &[u8]) -> Option<Vec<u8>> {
    let mut out = b"*2\r\n$4\r\npong\r\n".to_vec();
    if reply == b"+PONG\r\n" {
        out.extend_from_slice(b"$0\r\n\r\n");
    } else if reply.first() == Some(&b'$') {
        out.extend_from_slice(reply);
    } else {
        return None;
    }
    Some(out)
}

/// A Pub/Sub (un)subscribe confirmation.
struct Confirmation {
    kind: Kind,
    channel: Option<Vec<u8>>,
}

/// Parses `[kind, channel, count]` confirmations, as a RESP2 array or a RESP3 push.
fn pubsub_confirmation(frame: &[u8], push: bool) -> Option<Confirmation> {
    // Cheap filter before decoding: confirmations are 3-element aggregates.
    if frame.len() < 4 || &frame[1..4] != b"3\r\n" {
        return None;
    }
    let (name, channel) = if push {
        use redis_protocol::resp3::types::OwnedFrame as F;
        let (f, _) = redis_protocol::resp3::decode::complete::decode(frame).ok()??;
        let F::Push { data, .. } = f else { return None };
        let name = match data.first()? {
            F::BlobString { data, .. } | F::SimpleString { data, .. } => data.clone(),
            _ => return None,
        };
        let channel = match data.get(1)? {
            F::BlobString { data, .. } | F::SimpleString { data, .. } => Some(data.clone()),
            _ => None,
        };
        (name, channel)
    } else {
        use redis_protocol::resp2::types::OwnedFrame as F;
        let (f, _) = redis_protocol::resp2::decode::decode(frame).ok()??;
        let F::Array(data) = f else { return None };
        let name = match data.first()? {
            F::BulkString(b) | F::SimpleString(b) => b.clone(),
            _ => return None,
        };
        let channel = match data.get(1)? {
            F::BulkString(b) | F::SimpleString(b) => Some(b.clone()),
            _ => None,
        };
        (name, channel)
    };
    let kind = match name.to_ascii_lowercase().as_slice() {
        b"subscribe" => Kind::Subscribe(SubKind::Channel),
        b"psubscribe" => Kind::Subscribe(SubKind::Pattern),
        b"ssubscribe" => Kind::Subscribe(SubKind::Shard),
        b"unsubscribe" => Kind::Unsubscribe(SubKind::Channel),
        b"punsubscribe" => Kind::Unsubscribe(SubKind::Pattern),
        b"sunsubscribe" => Kind::Unsubscribe(SubKind::Shard),
        _ => return None,
    };
    Some(Confirmation { kind, channel })
}

/// A RESP2 Pub/Sub message (`message`, `pmessage`, `smessage`), which is not a reply.
fn is_resp2_message(frame: &[u8]) -> bool {
    frame.starts_with(b"*3\r\n$7\r\nmessage\r\n")
        || frame.starts_with(b"*4\r\n$8\r\npmessage\r\n")
        || frame.starts_with(b"*3\r\n$8\r\nsmessage\r\n")
}

/// A MONITOR line: `+<seconds>.<micros> [<db> <addr>] ...`. Replies to commands are simple
/// strings too, but none starts with a timestamp.
fn is_monitor_line(frame: &[u8]) -> bool {
    let Some(rest) = frame.strip_prefix(b"+") else {
        return false;
    };
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || rest.get(digits) != Some(&b'.') {
        return false;
    }
    let rest = &rest[digits + 1..];
    let frac = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    frac > 0 && rest[frac..].starts_with(b" [")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_kind_lets_ordinary_commands_through() {
        for c in ["GET", "SET", "LPUSH", "LPOP", "PING", "CLIENTS", "HSET"] {
            assert_eq!(quick_kind(c.as_bytes()), Some(Kind::Plain), "{c}");
        }
        for c in [
            "auth",
            "Multi",
            "EXEC",
            "hello",
            "client",
            "subscribe",
            "SUNSUBSCRIBE",
        ] {
            assert_eq!(quick_kind(c.as_bytes()), None, "{c}");
        }
    }

    #[test]
    fn hello_auth_is_stripped() {
        let args: Vec<&[u8]> = vec![b"HELLO", b"3", b"auth", b"u", b"p", b"SETNAME", b"x"];
        let (n, bytes) = strip_hello_auth(&args).unwrap();
        assert_eq!(n, 4);
        assert_eq!(
            bytes,
            resp::encode_command(&[&b"HELLO"[..], b"3", b"SETNAME", b"x"])
        );
        let args: Vec<&[u8]> = vec![b"HELLO", b"3"];
        assert!(strip_hello_auth(&args).is_none());
    }

    #[test]
    fn pushes_become_resp2_arrays_without_touching_payloads() {
        assert_eq!(
            push_to_resp2(b">3\r\n$12\r\npunsubscribe\r\n_\r\n:1\r\n"),
            b"*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:1\r\n"
        );
        // A payload that looks like a RESP3 null stays as it is.
        let msg = b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$7\r\nx\r\n_\r\ny\r\n";
        let mut want = msg.to_vec();
        want[0] = b'*';
        assert_eq!(push_to_resp2(msg), want);
    }

    #[test]
    fn monitor_lines_are_told_from_replies() {
        assert!(is_monitor_line(
            b"+1795615083.338690 [0 127.0.0.1:41328] \"PING\"\r\n"
        ));
        assert!(!is_monitor_line(b"+OK\r\n"));
        assert!(!is_monitor_line(b"+PONG\r\n"));
        assert!(!is_monitor_line(b"+123\r\n"));
    }

    #[test]
    fn confirmations_parse_in_both_protocols() {
        let c = pubsub_confirmation(b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n", false).unwrap();
        assert_eq!(c.kind, Kind::Subscribe(SubKind::Channel));
        assert_eq!(c.channel.as_deref(), Some(&b"a"[..]));
        let c = pubsub_confirmation(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n", false).unwrap();
        assert_eq!(c.kind, Kind::Unsubscribe(SubKind::Channel));
        assert!(c.channel.is_none());
        let c =
            pubsub_confirmation(b">3\r\n$10\r\npsubscribe\r\n$2\r\nh*\r\n:1\r\n", true).unwrap();
        assert_eq!(c.kind, Kind::Subscribe(SubKind::Pattern));
        assert!(
            pubsub_confirmation(b">3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nb\r\n", true).is_none()
        );
    }
}

/// Every open connection holds one session task for its whole life, so the size of that task
/// is memory per idle connection (docs/benchmarks.md, idle memory).
#[cfg(test)]
mod task_size {
    use super::*;

    /// `size_of` of what `f` returns: for an async fn, its future.
    fn future_size<A, B, C, D, R>(_: impl FnOnce(A, B, C, D) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn the_session_future_is_not_much_more_than_the_session() {
        let session = std::mem::size_of::<Session<tokio::net::TcpStream>>();
        let task = future_size(run::<tokio::net::TcpStream>);
        // Rare paths (connecting, reconnecting, error replies) are boxed so that their state
        // does not sit in every idle session's task; 1 kB covers the select loop.
        assert!(
            task <= session + 1024,
            "the session task is {task} bytes for a {session}-byte session: box the new rare \
             path (see `open`, `reconnect`)"
        );
    }
}

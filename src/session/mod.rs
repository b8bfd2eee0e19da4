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
//! served through RESP3, see `resp2_subscriber`). Under `CLIENT REPLY OFF` or with a
//! `SKIP` pending, the AUTH is wrapped in `CLIENT REPLY ON` ... `OFF`/`SKIP`. Ordinary
//! commands in flight do not prevent it: the AUTH is queued behind them and its reply is
//! recognised by position. A blocked command is interrupted for it (`unblock`). After a
//! client's `RESET`, which de-authenticates, an AUTH is injected at once.
//!
//! When the upstream connection is lost, the session moves to a new one only if it knows the
//! whole connection state (`reconnect`); otherwise the client sees its connection close.
//! Each part lives in its own file; `docs/session.md` lists them and explains the choices.

mod blocking;
mod client;
mod cluster_hook;
mod command;
mod io;
mod queue;
mod reauth;
mod reconnect;
mod replication;
mod replies;
mod resp2_subscriber;
mod shared;
mod state;
mod stateless;
mod stream;
mod subscriptions;
mod topology;
mod txn;
mod unblock;

use std::future::Future;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::metrics::{GaugeGuard, Metrics, UpstreamLoss};
use crate::resp::{CommandScanner, Limits, ProtocolError, ReplyScanner};
use crate::token::{AccessToken, CurrentToken, Secret, TokenManagerHandle};
use crate::upstream::{UpstreamConnector, UpstreamStream};
use blocking::Blocking;
use io::{poll_timer, read_available, ReadOutcome, Segment, CLIENT_READ_BUDGET, HELD_MAX};
use queue::ReplyQueue;
use replication::Replication;
use state::{ConnState, SentState};

pub use cluster_hook::ReplyRewriter;
pub use command::{topology_command, Topology};
pub use io::ClientStream;
use reconnect::OnLoss;
pub use reconnect::ReconnectPacer;
use unblock::Unblocked;
pub use unblock::Unblocker;

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
    /// The token refresh schedule: bounded blocking waits (when `CLIENT UNBLOCK` is refused)
    /// end just after the planned refresh, so the connection re-AUTHs in time.
    pub refresh: crate::config::RefreshPolicy,
    /// Bounds the re-AUTHs in flight at once, across sessions.
    pub reauth_limiter: Arc<tokio::sync::Semaphore>,
    /// Interrupts blocked commands with `CLIENT UNBLOCK` so they can re-authenticate.
    pub unblocker: Arc<Unblocker>,
    /// Paces reconnections after upstream loss, across sessions.
    pub reconnect_pacer: Arc<ReconnectPacer>,
    /// The password local clients must AUTH with (`client_password_file`); `None`: no
    /// local authentication, and a client's AUTH is answered +OK.
    pub client_password: Option<Secret>,
    /// Cluster mode: the node listeners, for rewriting node addresses in replies.
    pub cluster: Option<Arc<dyn ReplyRewriter>>,
    /// After an upstream loss, resubscribe subscribers and MONITOR silently instead of
    /// closing their clients (`reconnect_subscribers`).
    pub reconnect_subscribers: bool,
    /// Connections kept ready for new sessions (`warm_connections`); `None`: connect each time.
    pub warm: Option<Arc<crate::warm::WarmPool>>,
    /// Shared upstream connections (`pool_size`); `None`: one connection per client.
    pub pool: Option<Arc<crate::pool::Pool>>,
}

/// Runs one client session in the shared mode (`ctx.pool` is set): over the shared
/// connections until a command pins it to a dedicated one (`shared.rs`). Spawned as a task of
/// its own type, so that an idle shared session's task holds no one-to-one session.
pub async fn run_shared<C>(
    client: C,
    ctx: Arc<SessionContext>,
    shutdown: watch::Receiver<bool>,
    id: u64,
) where
    C: ClientStream + Send + Sync + 'static,
{
    let Some(pool) = ctx.pool.clone() else {
        // Not expected (the listener checks): boxed, so the shared task stays small.
        return Box::pin(run(client, ctx, shutdown, id, ())).await;
    };
    shared::run(client, ctx, pool, shutdown, id).await;
}

/// The rest of a shared session's life on a dedicated connection: opened (or taken warm),
/// the client's state restored on it, then served as a one-to-one session.
async fn run_pinned<C>(
    client: C,
    ctx: Arc<SessionContext>,
    handoff: shared::Handoff,
    mut shutdown: watch::Receiver<bool>,
    id: u64,
) where
    C: ClientStream,
{
    let metrics = ctx.metrics.clone();
    let Some(mut session) = Box::pin(open(client, ctx, id)).await else {
        return;
    };
    let _upstream_gauge = GaugeGuard::new(&metrics.upstream_connections);
    session.cbuf = handoff.cbuf;
    session.client_authed = handoff.client_authed;
    session.conn.client_proto = handoff.proto;
    session.sent.client_proto = handoff.proto;
    for (attr, value) in [&b"LIB-NAME"[..], b"LIB-VER"]
        .into_iter()
        .zip(&handoff.lib_info)
    {
        if let Some(value) = value {
            session.sent.set_info(attr, value);
        }
    }
    let result = match session.restore_state().await {
        Ok(()) => session.run(&mut shutdown).await,
        Err(e) => Err(e),
    };
    session.pending_flag(false);
    match result {
        Ok(()) => tracing::debug!(session = id, "session closed"),
        Err(e) => tracing::debug!(session = id, reason = %e, "session ended"),
    }
}

/// Runs one client session until either side closes or `shutdown` turns true (then the
/// session finishes the commands in flight and closes). `guard` (the listener's connection
/// permit) is held until the session ends.
///
/// Two tasks: this one opens the session (the token wait, the TLS handshake) and ends; the
/// session then runs as a task of its own (`serve`), which holds the session and nothing else.
/// As one future, the opening's arguments and locals (and the listener's task around it)
/// would stay in every session's task for its whole life, since the compiler keeps an async
/// function's arguments for as long as its future lives: about 170 bytes by the type sizes,
/// 0.2-0.5 kB per idle connection as measured (docs/benchmarks.md).
pub async fn run<C, G>(
    client: C,
    ctx: Arc<SessionContext>,
    shutdown: watch::Receiver<bool>,
    id: u64,
    guard: G,
) where
    C: ClientStream + Send + Sync + 'static,
    G: Send + 'static,
{
    let client_gauge = GaugeGuard::new(&ctx.metrics.client_connections);
    ctx.metrics.client_connections_total.inc();
    // Opening (token wait, TLS handshake, error replies) runs boxed: its state lives on the
    // heap only while connecting.
    let Some(session) = Box::pin(open(client, ctx, id)).await else {
        return;
    };
    tokio::spawn(serve(session, shutdown, (client_gauge, guard)));
}

/// The opened session's task: runs it, then logs how it ended. A block, not an `async fn`:
/// an async function moves each argument into a local of its own, and the session would be
/// stored twice in the task where the compiler does not merge them (a debug build).
#[allow(clippy::manual_async_fn)]
fn serve<C: ClientStream, G>(
    mut session: Session<C>,
    mut shutdown: watch::Receiver<bool>,
    guards: G,
) -> impl Future<Output = ()> {
    async move {
        let _guards = guards;
        let _upstream_gauge = GaugeGuard::new(&session.ctx.metrics.upstream_connections);
        let result = session.run(&mut shutdown).await;
        session.pending_flag(false);
        match result {
            Ok(()) => tracing::debug!(session = session.id, "session closed"),
            Err(e) => tracing::debug!(session = session.id, reason = %e, "session ended"),
        }
    }
}

/// Waits for a token and opens the upstream connection; on failure, answers the client with
/// an error and returns `None`.
async fn open<C>(client: C, ctx: Arc<SessionContext>, id: u64) -> Option<Session<C>>
where
    C: ClientStream,
{
    let mut client = client;
    if let Some((upstream, token)) = ctx.warm.as_ref().and_then(|w| w.take()) {
        tracing::debug!(session = id, user = %token.username(), "session started (warm connection)");
        return Some(Session::new(client, upstream, ctx, token, id));
    }
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
    #[error("replication stream: {0}")]
    Replication(std::io::Error),
}

/// One client connection and its upstream connection, with what the proxy knows of both.
struct Session<C> {
    /// The session's number (logs only).
    id: u64,
    /// The local client's connection.
    client: C,
    /// The TLS connection to the cache (replaced after a loss when the state allows it).
    upstream: UpstreamStream,
    /// What every session of this listener shares.
    ctx: Arc<SessionContext>,
    /// Bytes read from the client, not yet forwarded (at most one partial command).
    cbuf: BytesMut,
    /// Bytes read from the cache, not yet routed (at most one partial frame).
    ubuf: BytesMut,
    /// Where the client's next command ends (resumable across reads).
    cscan: CommandScanner,
    /// Where the cache's next frame ends (resumable across reads).
    uscan: ReplyScanner,
    /// The reply frame at the start of `ubuf` is streaming to the client: it was routed from
    /// its first bytes and part of it has gone out (see `stream.rs`).
    ustreaming: bool,
    /// The command at the start of `cbuf` is streaming to the cache: it was queued from its
    /// head and part of it has gone out; nothing else may be sent upstream until it ends.
    cstreaming: bool,
    /// What each frame from the cache answers.
    queue: ReplyQueue,
    /// What to send to the cache next, in order (reused to avoid allocations).
    to_upstream: Vec<Segment>,
    /// What to send to the client next, in order (reused to avoid allocations).
    to_client: Vec<Segment>,

    /// The server's state as the replies so far show it.
    conn: ConnState,
    /// The server's state once everything sent so far has run.
    sent: SentState,
    /// The client has authenticated locally (always true without `client_password_file`).
    client_authed: bool,
    /// Commands the cache has queued in the open transaction (send side): where a reply the
    /// proxy gives itself inside MULTI goes in EXEC's array.
    txn_queued: u32,
    /// Replies the proxy gave itself inside the open transaction (rare: boxed).
    txn_locals: Option<Box<txn::LocalReplies>>,
    /// The client turned tracking on without REDIRECT (send side): while it is a RESP2
    /// subscriber served through RESP3, the invalidation pushes for its own keys are dropped,
    /// as redis-server sends a RESP2 client none.
    tracking_unredirected: bool,
    /// SYNC or PSYNC: requested (later client bytes wait until its reply shows whether the
    /// connection became a replication stream), or streaming (a raw pipe from then on).
    replication: Replication,

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
    /// A newer token than `auth_generation` waits for a safe point, since this instant.
    reauth_wanted: Option<Instant>,
    /// Whether this session counts in the `reauth_pending` gauge.
    pending_counted: bool,
    /// A place among the re-AUTHs allowed in flight at once; held until the AUTH reply.
    reauth_permit: Option<tokio::sync::OwnedSemaphorePermit>,

    // Blocking commands.
    /// A sliced blocking command is in flight: later client commands wait in `cbuf`.
    blocked: bool,
    /// A slice ended empty before the client's timeout, or the proxy interrupted the wait:
    /// re-issue it.
    reissue: Option<Box<Blocking>>,
    /// Commands ran with their replies suppressed (CLIENT REPLY OFF/SKIP) and no reply has
    /// come since: if the connection is lost now, they may not have run.
    unconfirmed: bool,
    /// The upstream connection's `CLIENT ID`, learnt before its first blocking command.
    upstream_id: Option<NonZeroU64>,
    /// The proxy's `CLIENT UNBLOCK` of this connection, in flight (see `unblock.rs`).
    interrupt: Option<Pin<Box<dyn Future<Output = Unblocked> + Send>>>,
    /// The empty reply of a wait the proxy was interrupting, before the `CLIENT UNBLOCK`
    /// result said whose it was: the proxy's (re-issue) or the client's (forward it).
    held_reply: Option<Box<(Box<Blocking>, Vec<u8>)>>,
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
            ustreaming: false,
            cstreaming: false,
            queue: ReplyQueue::default(),
            to_upstream: Vec::new(),
            to_client: Vec::new(),
            conn: ConnState::default(),
            sent: SentState::default(),
            client_authed: ctx.client_password.is_none(),
            txn_queued: 0,
            txn_locals: None,
            tracking_unredirected: false,
            replication: Replication::None,
            upstream_lost: false,
            restore_confirmations: 0,
            token_rx,
            auth_generation: token.generation(),
            reauth_wanted: None,
            pending_counted: false,
            reauth_permit: None,
            blocked: false,
            reissue: None,
            unconfirmed: false,
            upstream_id: None,
            interrupt: None,
            held_reply: None,
            ctx,
        }
    }

    async fn run(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), SessionEnd> {
        // A token may have changed between connect and now.
        self.note_token_change();
        self.try_reauth().await?;
        if !self.cbuf.is_empty() {
            // Input a shared session had read (its pinning command first).
            self.on_client_data().await?;
        }
        let mut client_open = true;
        let mut token_source_open = true;
        let mut draining_since: Option<Instant> = None;
        loop {
            if self.replication == Replication::Streaming {
                // Boxed: a rare path.
                return Box::pin(self.pipe(shutdown)).await;
            }
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
            if self.queue.release_if_idle() {
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
                    let read = match r {
                        Ok(()) => self.drain_upstream().await?,
                        Err(e) => Err(e),
                    };
                    match read {
                        Ok(ReadOutcome::Data(_)) => {}
                        other => {
                            let end = match other {
                                Err(e) => SessionEnd::UpstreamIo(e),
                                _ => SessionEnd::UpstreamClosed,
                            };
                            if draining_since.is_some() || self.sent.quit {
                                return Err(end);
                            }
                            match self.on_upstream_loss() {
                                OnLoss::Close(why) => {
                                    self.ctx.metrics.upstream_lost(UpstreamLoss::Closed);
                                    // The client must see the loss and run its own logic.
                                    tracing::info!(session = self.id, reason = %end, "upstream connection lost; closing the client: {why}");
                                    return Err(end);
                                }
                                OnLoss::Replace => {
                                    self.ctx.metrics.upstream_lost(UpstreamLoss::Replaced);
                                    tracing::info!(session = self.id, reason = %end, "upstream connection lost while idle; a new one will be opened");
                                    self.upstream_lost = true;
                                    if self.conn.subscribed() || self.conn.monitor {
                                        // Subscribers send nothing: reconnect now.
                                        self.reconnect().await?;
                                    }
                                }
                                OnLoss::Reissue(block) => {
                                    self.ctx.metrics.upstream_lost(UpstreamLoss::Reissued);
                                    tracing::info!(session = self.id, reason = %end, "upstream connection lost under a blocking command; re-issuing it on a new one");
                                    self.reconnect_and_reissue(block).await?;
                                }
                            }
                        }
                    }
                }
                r = std::future::poll_fn(|cx| self.client.poll_readable(cx)), if client_open && draining_since.is_none() && !((self.blocked || self.replication != Replication::None) && self.cbuf.len() > HELD_MAX) => {
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
                // The proxy's CLIENT UNBLOCK of this connection has run (or failed).
                r = std::future::poll_fn(|cx| match self.interrupt.as_mut() {
                    Some(request) => request.as_mut().poll(cx),
                    None => Poll::Pending,
                }), if self.interrupt.is_some() => {
                    self.interrupt = None;
                    self.on_unblocked(r).await?;
                }
                r = shutdown.changed(), if draining_since.is_none() => {
                    if r.is_err() || *shutdown.borrow() {
                        draining_since = Some(Instant::now());
                    }
                }
                _ = std::future::poll_fn(|cx| poll_timer(&mut drain_sleep, cx)), if draining_since.is_some() => {}
            }
        }
        let _ = self.client.shutdown().await;
        let _ = self.upstream.shutdown().await;
        Ok(())
    }

    /// True while some command forwarded for the client still waits for its reply (or a
    /// reply is streaming to it).
    fn client_replies_outstanding(&self) -> bool {
        self.queue.owes_client() || self.ustreaming
    }

    /// Reads and routes what the cache sent, at most [`stream::UPSTREAM_READ_BUDGET`] bytes
    /// at a time so that a large reply streams through a small buffer, until the TLS stream
    /// has nothing left (bytes it decrypted would not wake the loop again). `Ok(Data(_))`:
    /// all read; `Ok(Eof)` or `Err`: the connection is lost.
    async fn drain_upstream(&mut self) -> Result<std::io::Result<ReadOutcome>, SessionEnd> {
        loop {
            let budget = stream::UPSTREAM_READ_BUDGET;
            match read_available(&mut self.upstream, &mut self.ubuf, budget) {
                Ok(ReadOutcome::Data(n)) if n > 0 => {
                    self.ctx.metrics.bytes_upstream_to_client.inc_by(n as u64);
                    self.on_upstream_data().await?;
                    if n < budget
                        || self.upstream_lost
                        || self.replication == Replication::Streaming
                    {
                        return Ok(Ok(ReadOutcome::Data(n)));
                    }
                }
                other => return Ok(other),
            }
        }
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

    fn future_size3<A, B, C, R>(_: impl FnOnce(A, B, C) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// The long-lived task of a one-to-one session (the listener's permit as its guard).
    fn serve_task() -> usize {
        type Guards = (GaugeGuard, tokio::sync::OwnedSemaphorePermit);
        future_size3(serve::<tokio::net::TcpStream, Guards>)
    }

    /// `cargo test --lib session_sizes -- --nocapture` prints what each idle session holds.
    #[test]
    fn session_sizes() {
        use std::mem::size_of;
        let session = size_of::<Session<tokio::net::TcpStream>>();
        let task = serve_task();
        eprintln!(
            "Session<TcpStream> {session} B (upstream {} B, queue {} B, conn {} B, sent {} B, \
             cscan {} B, uscan {} B); session future {task} B",
            size_of::<UpstreamStream>(),
            size_of::<ReplyQueue>(),
            size_of::<ConnState>(),
            size_of::<SentState>(),
            size_of::<CommandScanner>(),
            size_of::<ReplyScanner>(),
        );
    }

    /// A shared session (`pool_size`) holds no one-to-one session while it is shared: its
    /// task is what an idle shared client costs, besides its socket and its inbox.
    #[test]
    fn an_idle_shared_session_task_is_small() {
        let task = future_size(run_shared::<tokio::net::TcpStream>);
        eprintln!("shared session future {task} B");
        assert!(
            task <= 1024,
            "the shared session task is {task} bytes: box what the new state needs only \
             rarely (the pin is boxed already)"
        );
    }

    #[test]
    fn the_session_future_is_not_much_more_than_the_session() {
        let session = std::mem::size_of::<Session<tokio::net::TcpStream>>();
        let task = serve_task();
        // Rare paths (connecting, reconnecting, error replies) are boxed so that their state
        // does not sit in every idle session's task; 1 kB covers the select loop.
        assert!(
            task <= session + 1024,
            "the session task is {task} bytes for a {session}-byte session: box the new rare \
             path (see `open`, `reconnect`)"
        );
    }
}

//! One shared upstream connection's task: it writes what many sessions send, in the order
//! it arrives, and routes each reply frame back to the session that sent its command.
//!
//! Only commands that leave no connection state come here (the allow-list in
//! `session/stateless.rs`), each answered by exactly one frame: no subscription, MONITOR,
//! `CLIENT REPLY` or transaction ever runs on a shared connection, so the reply stream is
//! one frame per command, in order, and "whose is this frame" is the head of one queue. The
//! one frame that answers no command, a RESP3 push (an invalidation some client redirected to
//! this connection's id, which HELLO's reply shows), is dropped.
//!
//! Batching is the point: the requests of every session that sent since the last write go
//! out in one write (one TLS record run, one syscall), and one read of the cache's replies
//! is cut into per-session runs without copying (`Bytes` slices of the read buffer).
//!
//! Between any two requests the connection is at a safe point, so a new token's `AUTH` is
//! written as soon as the token arrives; its reply is swallowed and checked here, and a
//! refusal is logged and counted, never seen by a client.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

use super::inbox::Inbox;
use crate::metrics::Metrics;
use crate::resp::{self, ReplyScanner};
use crate::sockio::{read_available, ReadOutcome};
use crate::token::{CurrentToken, TokenManagerHandle};
use crate::upstream::UpstreamStream;
use crate::warm::KEEPALIVE;

/// Most bytes read from the cache before they are routed (reading goes on at once after).
const READ_BUDGET: usize = 64 * 1024;

/// An incomplete reply frame holding this many bytes goes to its session in pieces.
const STREAM_THRESHOLD: usize = 64 * 1024;

/// Most request bytes gathered into one write.
const WRITE_BATCH: usize = 256 * 1024;

/// Commands of one session, whole, and where their replies go.
pub struct Request {
    /// The commands' bytes as the client sent them.
    pub bytes: Bytes,
    /// How many commands (each answered by one frame).
    pub commands: u32,
    /// The session's inbox.
    pub inbox: Arc<Inbox>,
}

/// What sessions hold of a shared connection: the way to send to it, and its load.
pub struct ConnHandle {
    tx: mpsc::UnboundedSender<Request>,
    /// Commands sent to it and not yet answered (how [`super::Pool::pick`] spreads load).
    load: AtomicUsize,
    /// The metric label of this connection (`resp2-0`, `resp3-1`, ...).
    pub label: String,
}

impl ConnHandle {
    /// A handle and the receiving end its task reads.
    pub fn new(label: String) -> (Arc<Self>, mpsc::UnboundedReceiver<Request>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = ConnHandle {
            tx,
            load: AtomicUsize::new(0),
            label,
        };
        (Arc::new(handle), rx)
    }

    /// Queues `req` for writing; gives it back if the connection has ended (its commands
    /// were not sent: the caller may send them elsewhere).
    pub fn send(&self, req: Request) -> Result<(), Request> {
        let n = req.commands as usize;
        self.load.fetch_add(n, Ordering::Relaxed);
        self.tx.send(req).map_err(|e| {
            self.load.fetch_sub(n, Ordering::Relaxed);
            e.0
        })
    }

    /// Commands in flight on it.
    pub fn load(&self) -> usize {
        self.load.load(Ordering::Relaxed)
    }

    /// False once its task has ended.
    pub fn is_open(&self) -> bool {
        !self.tx.is_closed()
    }
}

/// Whose command a frame in the reply stream answers.
#[derive(Clone)]
enum Owner {
    /// A session's, by its inbox.
    Session(Arc<Inbox>),
    /// The proxy's re-AUTH.
    Auth,
    /// The proxy's keep-alive PING.
    Ping,
}

/// What a frame in the reply stream answers.
struct Entry {
    owner: Owner,
    /// Frames still to come for this entry.
    remaining: u32,
}

/// Why a shared connection's task ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnEnd {
    /// Reading or writing failed.
    #[error("upstream I/O: {0}")]
    Io(std::io::Error),
    /// The cache closed the connection.
    #[error("the cache closed the connection")]
    Closed,
    /// The cache sent something that is not RESP, or a frame nobody asked for.
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    /// The pool dropped the connection (shutdown).
    #[error("the pool closed")]
    PoolClosed,
}

/// The running connection.
pub struct SharedConn {
    stream: UpstreamStream,
    rx: mpsc::UnboundedReceiver<Request>,
    handle: Arc<ConnHandle>,
    /// What each frame still to come answers, in order.
    entries: VecDeque<Entry>,
    ubuf: BytesMut,
    uscan: ReplyScanner,
    /// Frames complete at the start of `ubuf` that belong to the head entry, not yet pushed.
    done: u32,
    /// The frame at the start of `ubuf` is a RESP3 push being read (to be dropped).
    in_push: bool,
    /// The connection's protocol (2 or 3).
    proto: u8,
    /// Bytes at the start of `ubuf` scanned so far (complete frames, then the scanned part
    /// of an incomplete one).
    pos: usize,
    wbuf: BytesMut,
    token_rx: watch::Receiver<CurrentToken>,
    /// Generation of the token this connection is authenticated with (or being re-AUTHed to).
    generation: u64,
    /// When the last request, AUTH or PING was written (keep-alive).
    last_write: Instant,
    /// When the token it is re-AUTHing to was seen (for `reauth_duration_seconds`).
    reauth_since: Option<Instant>,
    tokens: TokenManagerHandle,
    metrics: Arc<Metrics>,
    commands: prometheus::IntCounter,
    max_bulk: usize,
}

impl SharedConn {
    /// A connection of protocol `proto`, authenticated with the token of `generation`, ready
    /// to serve `rx`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        stream: UpstreamStream,
        rx: mpsc::UnboundedReceiver<Request>,
        handle: Arc<ConnHandle>,
        proto: u8,
        generation: u64,
        tokens: TokenManagerHandle,
        metrics: Arc<Metrics>,
        max_bulk: usize,
    ) -> Self {
        let mut token_rx = tokens.subscribe();
        token_rx.mark_unchanged();
        let commands = metrics.shared_commands(&handle.label);
        SharedConn {
            stream,
            rx,
            handle,
            entries: VecDeque::new(),
            ubuf: BytesMut::new(),
            uscan: ReplyScanner::default(),
            done: 0,
            in_push: false,
            proto,
            pos: 0,
            wbuf: BytesMut::new(),
            token_rx,
            generation,
            last_write: Instant::now(),
            reauth_since: None,
            tokens,
            metrics,
            commands,
            max_bulk,
        }
    }

    /// Serves until the connection fails; then every session with a command in flight on it
    /// (or queued for it) is told, and the reason is returned.
    pub async fn run(mut self) -> ConnEnd {
        // A token may have arrived while the pool was connecting.
        self.token_rx.mark_changed();
        let end = self.serve().await;
        self.rx.close();
        for entry in self.entries.drain(..) {
            if let Owner::Session(inbox) = entry.owner {
                inbox.lose();
            }
        }
        while let Ok(req) = self.rx.try_recv() {
            req.inbox.lose();
        }
        end
    }

    async fn serve(&mut self) -> ConnEnd {
        let mut token_open = true;
        // An idle connection is PINGed, as the warm ones are: Azure closes connections idle
        // for about ten minutes, and a session could send to one just as it closes.
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        keepalive.reset();
        // The read buffer is kept while idle: shared connections are few and busy, and
        // freeing it after every batch costs an allocation per batch.
        loop {
            tokio::select! {
                req = self.rx.recv() => {
                    let Some(req) = req else { return ConnEnd::PoolClosed };
                    // Let the other sessions that have bytes to send run first, so that their
                    // requests go out in this write: the runtime would otherwise run this task
                    // right after the first sender (tokio's LIFO slot), one request a write.
                    tokio::task::yield_now().await;
                    if let Err(e) = self.write_requests(req).await {
                        return ConnEnd::Io(e);
                    }
                }
                r = std::future::poll_fn(|cx| self.stream.get_ref().0.poll_read_ready(cx)) => {
                    if let Err(e) = r {
                        return ConnEnd::Io(e);
                    }
                    if let Err(end) = self.drain_upstream().await {
                        return end;
                    }
                }
                _ = keepalive.tick() => {
                    if self.entries.is_empty() && self.last_write.elapsed() >= KEEPALIVE {
                        if let Err(e) = self.ping().await {
                            return ConnEnd::Io(e);
                        }
                    }
                }
                changed = self.token_rx.changed(), if token_open => {
                    if changed.is_err() {
                        token_open = false;
                        continue;
                    }
                    if let Err(e) = self.reauth().await {
                        return ConnEnd::Io(e);
                    }
                }
            }
        }
    }

    /// Writes `first` and every request that queued behind it, in one write.
    async fn write_requests(&mut self, first: Request) -> std::io::Result<()> {
        let mut next = Some(first);
        let mut single: Option<Bytes> = None;
        let mut commands = 0u64;
        while let Some(req) = next.take() {
            commands += u64::from(req.commands);
            self.entries.push_back(Entry {
                owner: Owner::Session(req.inbox),
                remaining: req.commands,
            });
            if single.is_none() && self.wbuf.is_empty() {
                single = Some(req.bytes);
            } else {
                if let Some(b) = single.take() {
                    self.wbuf.extend_from_slice(&b);
                }
                self.wbuf.extend_from_slice(&req.bytes);
            }
            let gathered = single.as_ref().map_or(self.wbuf.len(), Bytes::len);
            if gathered < WRITE_BATCH {
                next = self.rx.try_recv().ok();
            }
        }
        self.commands.inc_by(commands);
        self.last_write = Instant::now();
        match single {
            Some(b) => self.stream.write_all(&b).await?,
            None => {
                self.stream.write_all(&self.wbuf).await?;
                self.wbuf.clear();
                if self.wbuf.capacity() > WRITE_BATCH {
                    self.wbuf = BytesMut::new();
                }
            }
        }
        self.stream.flush().await
    }

    /// Sends the current token's AUTH if it is newer than the connection's.
    async fn reauth(&mut self) -> std::io::Result<()> {
        let Some(token) = self.token_rx.borrow_and_update().clone() else {
            return Ok(());
        };
        if token.generation() <= self.generation {
            return Ok(());
        }
        self.generation = token.generation();
        self.reauth_since = Some(Instant::now());
        self.entries.push_back(Entry {
            owner: Owner::Auth,
            remaining: 1,
        });
        self.last_write = Instant::now();
        self.stream.write_all(token.auth_command()).await?;
        self.stream.flush().await
    }

    /// Sends a keep-alive PING (its reply is checked and dropped).
    async fn ping(&mut self) -> std::io::Result<()> {
        self.entries.push_back(Entry {
            owner: Owner::Ping,
            remaining: 1,
        });
        self.last_write = Instant::now();
        self.stream.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
        self.stream.flush().await
    }

    /// Reads and routes until the TLS stream has nothing left (what it decrypted would not
    /// wake the loop again).
    async fn drain_upstream(&mut self) -> Result<(), ConnEnd> {
        loop {
            match read_available(&mut self.stream, &mut self.ubuf, READ_BUDGET) {
                Ok(ReadOutcome::Data(n)) => {
                    self.metrics.bytes_upstream_to_client.inc_by(n as u64);
                    self.route().await?;
                    if n < READ_BUDGET {
                        return Ok(());
                    }
                }
                Ok(ReadOutcome::Eof) => return Err(ConnEnd::Closed),
                Err(e) => return Err(ConnEnd::Io(e)),
            }
        }
    }

    /// Cuts what `ubuf` holds into runs of frames, each pushed to the session it answers.
    async fn route(&mut self) -> Result<(), ConnEnd> {
        loop {
            // A RESP3 push answers no command: on a shared connection only an invalidation
            // some client's `CLIENT TRACKING ... REDIRECT <this connection's id>` sent here
            // (HELLO's reply shows that id). It is dropped, whole, and never routed.
            let push_starts =
                self.proto == 3 && !self.uscan.in_frame() && self.ubuf.get(self.pos) == Some(&b'>');
            if self.in_push || push_starts {
                if !self.in_push && self.done > 0 {
                    // The replies before it go first.
                    let owner = self.entries.front().map(|e| e.owner.clone());
                    let upto = self.pos;
                    if let Some(owner) = owner {
                        self.deliver(owner, upto).await?;
                    }
                }
                self.in_push = true;
                let scanned = self
                    .uscan
                    .scan(&self.ubuf[self.pos..], self.max_bulk)
                    .map_err(|e| ConnEnd::Protocol(e.to_string()))?;
                let Some(len) = scanned else {
                    return Ok(());
                };
                debug_assert_eq!(self.pos, 0, "a push starts at the front once replies went");
                self.ubuf.advance(len);
                self.in_push = false;
                tracing::debug!(
                    upstream = self.metrics.upstream_name(),
                    connection = %self.handle.label,
                    "dropped a push frame on a shared connection"
                );
                continue;
            }
            let Some(head) = self.entries.front_mut() else {
                if self.ubuf.is_empty() {
                    return Ok(());
                }
                return Err(ConnEnd::Protocol(
                    "the cache sent a reply to no command".into(),
                ));
            };
            let scanned = self
                .uscan
                .scan(&self.ubuf[self.pos..], self.max_bulk)
                .map_err(|e| ConnEnd::Protocol(e.to_string()))?;
            match scanned {
                Some(len) => {
                    self.pos += len;
                    self.done += 1;
                    head.remaining -= 1;
                    if head.remaining == 0 {
                        let entry = self.entries.pop_front().expect("the head entry");
                        self.deliver(entry.owner, self.pos).await?;
                    }
                }
                None => {
                    // Complete frames of the head entry go now; so does the scanned part of a
                    // large frame (its session gets it in pieces, the buffer stays small).
                    let partial = self.uscan.scanned();
                    let owner = head.owner.clone();
                    if matches!(owner, Owner::Session(_)) && partial >= STREAM_THRESHOLD {
                        let upto = self.pos + partial;
                        self.deliver(owner, upto).await?;
                        self.uscan.rebase(partial);
                    } else if self.done > 0 {
                        let upto = self.pos;
                        self.deliver(owner, upto).await?;
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Hands the first `upto` bytes of `ubuf` (answering `self.done` commands) to their
    /// session's inbox, or checks them as the reply to the proxy's own AUTH or PING.
    async fn deliver(&mut self, owner: Owner, upto: usize) -> Result<(), ConnEnd> {
        let bytes = self.ubuf.split_to(upto).freeze();
        let completed = std::mem::take(&mut self.done);
        self.pos -= upto.min(self.pos);
        let inbox = match owner {
            Owner::Session(inbox) => inbox,
            Owner::Auth => {
                self.on_auth_reply(&bytes);
                return Ok(());
            }
            Owner::Ping => {
                if &bytes[..] != b"+PONG\r\n" {
                    tracing::warn!(
                        upstream = self.metrics.upstream_name(),
                        connection = %self.handle.label,
                        reply = %String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).trim(),
                        "unexpected reply to a shared connection's keep-alive PING"
                    );
                }
                return Ok(());
            }
        };
        self.handle
            .load
            .fetch_sub(completed as usize, Ordering::Relaxed);
        if inbox.push(bytes, completed) {
            // The session's client reads slowly: wait for it (this connection's other
            // sessions wait too; docs/operations.md, shared connections).
            std::future::poll_fn(|cx| inbox.poll_room(cx)).await;
        }
        Ok(())
    }

    fn on_auth_reply(&mut self, reply: &[u8]) {
        let took = self
            .reauth_since
            .take()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        if reply == b"+OK\r\n" {
            self.metrics.reauth(true, took);
            tracing::debug!(
                upstream = self.metrics.upstream_name(),
                connection = %self.handle.label,
                generation = self.generation,
                "shared connection re-authenticated"
            );
        } else {
            self.metrics.reauth(false, took);
            let text = resp::error_text(reply).unwrap_or("an unexpected reply");
            tracing::warn!(
                upstream = self.metrics.upstream_name(),
                connection = %self.handle.label,
                reply = text,
                "the cache refused the re-AUTH of a shared connection; asking for a new token"
            );
            // Still logged in as before: the next token is tried when it arrives.
            self.tokens.request_refresh();
        }
    }
}

//! Shared upstream connections (`pool_size`): a few pipelined TLS connections that carry the
//! stateless commands of many client sessions.
//!
//! A [`Pool`] per upstream keeps `size` connections per protocol in use: RESP2 ones from the
//! start, RESP3 ones (a `HELLO 3` sent after AUTH) once a RESP3 client appears, so that RESP2
//! and RESP3 clients never share a connection. One task per slot ([`Pool::keep`]) opens the
//! slot's connection, serves it ([`conn::SharedConn`]) until it fails, and opens it again with
//! backoff. A session sends each run of its commands to one connection ([`Pool::pick`]: the
//! least loaded) and stays on it while any of its replies are due, so its replies come back
//! in order; between runs it may move to another. Which commands may share, and when a
//! session leaves for a dedicated connection (a pin), is the session's side
//! (`session/shared.rs`).

pub mod conn;
pub mod inbox;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, Notify};

use crate::metrics::{GaugeGuard, Metrics};
use crate::resp::ReplyScanner;
use crate::token::TokenManagerHandle;
use crate::upstream::{UpstreamConnector, UpstreamStream};
pub use conn::{ConnHandle, Request};
pub use inbox::{Inbox, Taken};

/// The longest wait between attempts to open a slot's connection.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A connection that lived this long before it failed is reopened without backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// One connection's place in the pool: its handle while it is open.
type Slot = Mutex<Option<Arc<ConnHandle>>>;

/// One upstream's shared connections.
pub struct Pool {
    /// Connections per protocol.
    size: usize,
    /// `slots[0]`: RESP2, `slots[1]`: RESP3; `None` while a slot's connection is (re)opening.
    slots: [Box<[Slot]>; 2],
    /// Whether the slots of each protocol have their tasks.
    started: [AtomicBool; 2],
    /// Rotates where [`Pool::pick`] starts, so equal loads are spread.
    next: AtomicUsize,
    /// Woken when a connection becomes usable.
    live: Notify,
    connector: Arc<UpstreamConnector>,
    tokens: TokenManagerHandle,
    metrics: Arc<Metrics>,
    max_bulk: usize,
    shutdown: watch::Receiver<bool>,
}

fn index(proto: u8) -> usize {
    usize::from(proto == 3)
}

impl Pool {
    /// A pool of `size` connections per protocol; none is opened before [`Pool::start`].
    pub fn new(
        size: usize,
        connector: Arc<UpstreamConnector>,
        tokens: TokenManagerHandle,
        metrics: Arc<Metrics>,
        max_bulk: usize,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let slots = || (0..size).map(|_| Mutex::new(None)).collect::<Box<[_]>>();
        Arc::new(Pool {
            size,
            slots: [slots(), slots()],
            started: [AtomicBool::new(false), AtomicBool::new(false)],
            next: AtomicUsize::new(0),
            live: Notify::new(),
            connector,
            tokens,
            metrics,
            max_bulk,
            shutdown,
        })
    }

    /// Connections per protocol.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Starts the slot tasks of `proto` (2 or 3) if they are not running yet.
    pub fn start(self: &Arc<Self>, proto: u8) {
        if self.started[index(proto)].swap(true, Ordering::AcqRel) {
            return;
        }
        for slot in 0..self.size {
            tokio::spawn(self.clone().keep(proto, slot));
        }
    }

    /// The least loaded open connection of `proto`, if any.
    pub fn pick(&self, proto: u8) -> Option<Arc<ConnHandle>> {
        let slots = &self.slots[index(proto)];
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<Arc<ConnHandle>> = None;
        for i in 0..slots.len() {
            let slot = slots[(start + i) % slots.len()]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(c) = slot.as_ref().filter(|c| c.is_open()) {
                if best.as_ref().is_none_or(|b| c.load() < b.load()) {
                    best = Some(c.clone());
                }
            }
        }
        best
    }

    /// As [`Pool::pick`], waiting up to `wait` for a connection to open (the slots of
    /// `proto` are started first).
    pub async fn pick_or_wait(
        self: &Arc<Self>,
        proto: u8,
        wait: Duration,
    ) -> Option<Arc<ConnHandle>> {
        self.start(proto);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.live.notified();
            if let Some(c) = self.pick(proto) {
                return Some(c);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.pick(proto);
            }
        }
    }

    /// Why no connection is open: the last connection attempt's error or the token status.
    pub fn why_unavailable(&self) -> String {
        if self.tokens.current().is_none() {
            let status = self.tokens.status();
            return format!(
                "entra-redis-proxy has no access token yet (credential: {}; last error: {})",
                self.tokens.source(),
                status
                    .last_error
                    .as_deref()
                    .unwrap_or("none yet, still trying"),
            );
        }
        match self.connector.last_attempt().and_then(|a| a.error) {
            Some(e) => format!("entra-redis-proxy cannot open the upstream connection: {e}"),
            None => "entra-redis-proxy has no shared upstream connection open yet".to_owned(),
        }
    }

    fn set_slot(&self, proto: u8, slot: usize, handle: Option<Arc<ConnHandle>>) {
        *self.slots[index(proto)][slot]
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = handle;
    }

    /// Keeps slot `slot` of `proto` connected until shutdown.
    async fn keep(self: Arc<Self>, proto: u8, slot: usize) {
        let mut shutdown = self.shutdown.clone();
        let mut token_rx = self.tokens.subscribe();
        let mut failures: u32 = 0;
        let label = format!("resp{proto}-{slot}");
        while !*shutdown.borrow() {
            let Some(token) = token_rx.borrow_and_update().clone() else {
                tokio::select! {
                    _ = token_rx.changed() => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            };
            let opened = match self.connector.connect(&token).await {
                Ok(mut stream) => match prepare(&mut stream, proto, &label, self.max_bulk).await {
                    Ok(()) => Ok(stream),
                    Err(e) => Err(e),
                },
                Err(e) => {
                    if e.is_auth_rejected() {
                        self.tokens.request_refresh();
                    }
                    Err(e.to_string())
                }
            };
            let stream = match opened {
                Ok(s) => s,
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let wait = backoff(failures);
                    // Every slot retries every few seconds while the cache is down: a warning
                    // on the first failure and about once a minute after, the rest at debug.
                    if failures % 12 == 1 {
                        tracing::warn!(
                            upstream = self.metrics.upstream_name(),
                            connection = %label,
                            error = %error,
                            failures,
                            retry_in_ms = wait.as_millis() as u64,
                            "cannot open a shared connection"
                        );
                    } else {
                        tracing::debug!(
                            upstream = self.metrics.upstream_name(),
                            connection = %label,
                            error = %error,
                            failures,
                            retry_in_ms = wait.as_millis() as u64,
                            "cannot open a shared connection"
                        );
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
            };
            let (handle, rx) = ConnHandle::new(label.clone());
            let conn = conn::SharedConn::new(
                stream,
                rx,
                handle.clone(),
                proto,
                token.generation(),
                self.tokens.clone(),
                self.metrics.clone(),
                self.max_bulk,
            );
            let opened_at = Instant::now();
            let end = {
                let _gauge = GaugeGuard::new(&self.metrics.shared_connections);
                let _upstream = GaugeGuard::new(&self.metrics.upstream_connections);
                self.set_slot(proto, slot, Some(handle));
                self.live.notify_waiters();
                tracing::debug!(upstream = self.metrics.upstream_name(), connection = %label, "shared connection open");
                let end = conn.run().await;
                self.set_slot(proto, slot, None);
                end
            };
            if *shutdown.borrow() {
                break;
            }
            tracing::warn!(
                upstream = self.metrics.upstream_name(),
                connection = %label,
                reason = %end,
                "shared connection lost; sessions with commands in flight on it are closed, the others move to the remaining connections"
            );
            failures = if opened_at.elapsed() >= HEALTHY_AFTER {
                0
            } else {
                failures.saturating_add(1)
            };
            if failures > 0 {
                tokio::select! {
                    _ = tokio::time::sleep(backoff(failures)) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}

/// The name shared connections carry on the cache (`CLIENT LIST` shows which are shared).
pub const NAME_PREFIX: &str = "entra-redis-proxy-shared-";

/// Names a new connection (`CLIENT SETNAME entra-redis-proxy-shared-resp2-0`) and, for
/// `proto` 3, switches it to RESP3 in the same command (`HELLO 3 SETNAME ...`).
async fn prepare(
    stream: &mut UpstreamStream,
    proto: u8,
    label: &str,
    max_bulk: usize,
) -> Result<(), String> {
    let name = format!("{NAME_PREFIX}{label}");
    let command = if proto == 3 {
        crate::resp::encode_command(&[&b"HELLO"[..], b"3", b"SETNAME", name.as_bytes()])
    } else {
        crate::resp::encode_command(&[&b"CLIENT"[..], b"SETNAME", name.as_bytes()])
    };
    let exchange = async {
        stream
            .write_all(&command)
            .await
            .map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        let mut buf = BytesMut::with_capacity(1024);
        let mut scanner = ReplyScanner::default();
        loop {
            if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("the cache closed the connection after CLIENT SETNAME".to_owned());
            }
            if let Some(len) = scanner.scan(&buf, max_bulk).map_err(|e| e.to_string())? {
                if crate::resp::is_error_reply(&buf[..len]) || len != buf.len() {
                    return Err(format!(
                        "unexpected reply when preparing a shared connection: {}",
                        String::from_utf8_lossy(&buf[..len.min(200)]).trim()
                    ));
                }
                return Ok(());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no reply to CLIENT SETNAME / HELLO 3 within 10 s".to_owned())?
}

/// 100 ms doubling per failure, at most [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    let ms = 100u64.saturating_mul(1u64 << failures.saturating_sub(1).min(16));
    Duration::from_millis(ms).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(400));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}

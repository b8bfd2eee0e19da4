//! Warm upstream connections: connected, authenticated and kept authenticated before any
//! client asks, so that a new client's first command never waits for TCP, TLS and AUTH.
//!
//! One [`WarmPool`] per upstream (per node listener in cluster mode) holds up to `target`
//! idle connections. Its task ([`WarmPool::run`]) refills the pool after each take (with
//! backoff while the cache cannot be reached), re-AUTHs every idle connection when a new
//! token is published (so an idle warm connection never outlives its token), and PINGs them
//! every [`KEEPALIVE`] so that the cache's idle timeout does not close them. A session takes
//! one in [`WarmPool::take`], which first drops any that the cache has closed meanwhile; with
//! none left it connects as before (a miss).
//!
//! Warm connections count against the cache's connection limit like any other: `target` of
//! them are open whenever the cache is reachable (see docs/operations.md, sizing).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{watch, Notify};

use crate::metrics::Metrics;
use crate::token::{AccessToken, TokenManagerHandle};
use crate::upstream::{UpstreamConnector, UpstreamStream};

/// How often idle warm connections are checked with PING.
pub const KEEPALIVE: Duration = Duration::from_secs(60);

/// The longest wait between attempts while the cache cannot be reached.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A connection ready for a session, and the token it is authenticated with.
struct Warm {
    stream: UpstreamStream,
    token: Arc<AccessToken>,
}

/// Idle, authenticated upstream connections kept ready for new sessions.
pub struct WarmPool {
    /// How many to keep ready.
    target: usize,
    /// The ready ones, oldest first.
    idle: Mutex<VecDeque<Warm>>,
    /// Wakes the refill task after a take.
    taken: Notify,
    /// Opens and re-authenticates connections.
    connector: Arc<UpstreamConnector>,
    /// `warm_connections`, hits and misses, discards.
    metrics: Arc<Metrics>,
}

impl WarmPool {
    /// A pool like this one (same size and metrics) for another connector: a cluster node's.
    pub fn for_connector(&self, connector: Arc<UpstreamConnector>) -> Self {
        WarmPool::new(self.target, connector, self.metrics.clone())
    }

    /// A pool that keeps `target` connections ready (none until [`WarmPool::run`] runs).
    pub fn new(target: usize, connector: Arc<UpstreamConnector>, metrics: Arc<Metrics>) -> Self {
        WarmPool {
            target,
            idle: Mutex::new(VecDeque::with_capacity(target)),
            taken: Notify::new(),
            connector,
            metrics,
        }
    }

    /// How many connections the pool keeps ready.
    pub fn target(&self) -> usize {
        self.target
    }

    /// How many are ready now.
    pub fn ready(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Warm>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows the idle count in `warm_connections` by differences: in cluster mode the pools
    /// of every node of an upstream add up in the one gauge.
    fn count(&self, delta: i64) {
        self.metrics.warm_connections.add(delta);
    }

    /// Takes a ready connection, with the token it is authenticated with; `None` (a miss) if
    /// there is none that is still open. Never waits.
    pub fn take(&self) -> Option<(UpstreamStream, Arc<AccessToken>)> {
        let mut idle = self.lock();
        let mut found = None;
        // The newest first: it was checked (connected, re-AUTHed or PINGed) most recently.
        while let Some(mut warm) = idle.pop_back() {
            self.count(-1);
            if still_open(&mut warm.stream) {
                found = Some((warm.stream, warm.token));
                break;
            }
            self.metrics.warm_connections_discarded_total.inc();
        }
        drop(idle);
        self.metrics.warm_use(found.is_some());
        self.taken.notify_one();
        found
    }

    fn put(&self, warm: Warm) {
        let mut idle = self.lock();
        idle.push_back(warm);
        self.count(1);
    }

    fn take_all(&self) -> Vec<Warm> {
        let mut idle = self.lock();
        let all: Vec<Warm> = idle.drain(..).collect();
        self.count(-(all.len() as i64));
        all
    }

    /// Keeps the pool full until `shutdown` turns true: refills after takes, re-AUTHs idle
    /// connections on every new token, PINGs them every [`KEEPALIVE`].
    pub async fn run(
        self: Arc<Self>,
        tokens: TokenManagerHandle,
        mut shutdown: watch::Receiver<bool>,
    ) {
        if self.target == 0 {
            return;
        }
        let mut token_rx = tokens.subscribe();
        let mut failures: u32 = 0;
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        keepalive.reset();
        loop {
            // Fill up, one connection at a time, with the current token.
            while self.ready() < self.target && !*shutdown.borrow() {
                let Some(token) = token_rx.borrow_and_update().clone() else {
                    break;
                };
                match self.connector.connect(&token).await {
                    Ok(stream) => {
                        failures = 0;
                        if token_rx.has_changed().unwrap_or(false) {
                            // A newer token arrived while connecting: this one is re-AUTHed
                            // with the rest below.
                            token_rx.mark_changed();
                        }
                        self.put(Warm { stream, token });
                    }
                    Err(err) => {
                        if err.is_auth_rejected() {
                            tokens.request_refresh();
                        }
                        failures = failures.saturating_add(1);
                        let wait = backoff(failures);
                        tracing::debug!(
                            upstream = self.metrics.upstream_name(),
                            error = %err,
                            retry_in_ms = wait.as_millis() as u64,
                            "cannot open a warm connection"
                        );
                        // A new token may be what the cache was waiting for (a refused AUTH):
                        // it ends the wait early.
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = async {
                                if token_rx.changed().await.is_err() {
                                    std::future::pending::<()>().await;
                                }
                            } => {}
                            _ = shutdown.changed() => {}
                        }
                    }
                }
            }
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                _ = self.taken.notified() => {}
                changed = token_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let token = token_rx.borrow_and_update().clone();
                    if let Some(token) = token {
                        self.reauthenticate_all(&token).await;
                    }
                }
                _ = keepalive.tick() => self.ping_all().await,
                _ = shutdown.changed() => {}
            }
        }
        // Shutting down: close the idle ones now.
        drop(self.take_all());
    }

    /// Re-AUTHs every idle connection with `token`; those that fail are dropped (and refilled).
    async fn reauthenticate_all(&self, token: &Arc<AccessToken>) {
        for mut warm in self.take_all() {
            if warm.token.generation() >= token.generation() {
                self.put(warm);
                continue;
            }
            match self.connector.reauthenticate(&mut warm.stream, token).await {
                Ok(()) => {
                    warm.token = token.clone();
                    self.put(warm);
                }
                Err(err) => {
                    self.metrics.warm_connections_discarded_total.inc();
                    tracing::debug!(
                        upstream = self.metrics.upstream_name(),
                        error = %err,
                        "a warm connection failed its re-AUTH; replacing it"
                    );
                }
            }
        }
    }

    /// PINGs every idle connection; those that fail are dropped (and refilled).
    async fn ping_all(&self) {
        for mut warm in self.take_all() {
            match self.connector.ping(&mut warm.stream).await {
                Ok(()) => self.put(warm),
                Err(err) => {
                    self.metrics.warm_connections_discarded_total.inc();
                    tracing::debug!(
                        upstream = self.metrics.upstream_name(),
                        error = %err,
                        "a warm connection failed its PING; replacing it"
                    );
                }
            }
        }
    }
}

/// 100 ms doubling per failure, at most [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    let ms = 100u64.saturating_mul(1u64 << failures.saturating_sub(1).min(16));
    Duration::from_millis(ms).min(MAX_BACKOFF)
}

/// Whether an idle connection is still open: a read that would block means nothing arrived,
/// as it should be for an idle, authenticated connection; end of stream, an error or
/// unexpected bytes (the cache closing it, with or without an error first) mean it is not.
fn still_open(stream: &mut UpstreamStream) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    matches!(Pin::new(stream).poll_read(&mut cx, &mut buf), Poll::Pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(20), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}

//! The token manager: a background task that keeps a fresh token published on a `watch`
//! channel.
//!
//! Policy (the same one the in-process Entra libraries offer):
//! - refresh at `ratio × lifetime`, never later than `expiry − margin`; a token whose lifetime
//!   is shorter than the margin is refreshed at half its life; random jitter moves the refresh
//!   *earlier* by up to `jitter × remaining lifetime`, so a fleet does not refresh in step;
//! - a failed fetch keeps the current token and retries with exponential backoff, forever;
//! - a fetched token identical to the current one is a cache hit, not a new token;
//! - a session that sees WRONGPASS/NOAUTH asks for an immediate refresh (rate-limited).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{watch, Notify};

use super::{jwt, AccessToken, CurrentToken, FetchedToken, TokenError, TokenSource};
use crate::config::RefreshPolicy;
use crate::metrics::Metrics;

/// The schedule a [`RefreshPolicy`] implies. The policy is a configuration value (defined in
/// `config`, built by `Settings::plan`); its arithmetic lives here, with the manager.
impl RefreshPolicy {
    /// When to refresh a token obtained at `obtained` that expires at `expires`, seen at
    /// `now`. `random` is uniform in [0, 1) and scales the jitter. Pure, for testing.
    pub fn refresh_at(
        &self,
        obtained: SystemTime,
        expires: SystemTime,
        now: SystemTime,
        random: f64,
    ) -> SystemTime {
        let lifetime = expires.duration_since(obtained).unwrap_or_default();
        let planned = if lifetime <= self.margin {
            obtained + lifetime / 2
        } else {
            let by_ratio = obtained + lifetime.mul_f64(self.ratio.clamp(0.0, 1.0));
            by_ratio.min(expires - self.margin)
        };
        let remaining = expires.duration_since(now).unwrap_or_default();
        let jitter = remaining.mul_f64((self.jitter * random).clamp(0.0, 1.0));
        let at = planned.checked_sub(jitter).unwrap_or(planned);
        at.max(now.min(planned))
    }

    /// The retry delay after `failures` consecutive failures (1 → initial).
    pub fn retry_delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        self.retry_initial
            .saturating_mul(1u32 << exp)
            .min(self.retry_max)
    }
}

/// What the manager last did, for readiness and error replies.
#[derive(Debug, Clone, Default)]
pub struct ManagerStatus {
    /// The last acquisition error (no secret), cleared by a success.
    pub last_error: Option<String>,
    /// Consecutive failed acquisitions.
    pub consecutive_failures: u32,
}

/// The side of the manager that sessions, the admin endpoint and tests hold.
#[derive(Clone)]
pub struct TokenManagerHandle {
    /// The current token.
    token: watch::Receiver<CurrentToken>,
    /// Wakes the manager for an immediate refresh.
    force: Arc<Notify>,
    /// Last error, for readiness and for the reply to a client waiting for the first token.
    status: Arc<Mutex<ManagerStatus>>,
    /// Describes the source (no secrets), for messages.
    source: Arc<str>,
    /// Number of refreshes requested by sessions (before rate limiting).
    forced_requests: Arc<AtomicU64>,
}

impl TokenManagerHandle {
    /// A receiver of the current token.
    pub fn subscribe(&self) -> watch::Receiver<CurrentToken> {
        self.token.clone()
    }

    /// The current token, if any.
    pub fn current(&self) -> CurrentToken {
        self.token.borrow().clone()
    }

    /// Asks for a new token now (the cache answered WRONGPASS/NOAUTH). Rate-limited by the
    /// manager.
    pub fn request_refresh(&self) {
        self.forced_requests.fetch_add(1, Ordering::Relaxed);
        self.force.notify_one();
    }

    /// The manager's last status.
    pub fn status(&self) -> ManagerStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The source's description, e.g. `token-file /run/token`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Waits up to `wait` for a token; `None` if none arrived in time.
    pub async fn wait_for_token(&self, wait: Duration) -> CurrentToken {
        let mut rx = self.token.clone();
        let got = tokio::time::timeout(wait, rx.wait_for(|t| t.is_some())).await;
        match got {
            Ok(Ok(t)) => t.clone(),
            _ => None,
        }
    }

    /// A handle fed by hand, with no manager behind it (for tests and tools).
    pub fn fixed(token: watch::Receiver<CurrentToken>, source: &str) -> Self {
        TokenManagerHandle {
            token,
            force: Arc::new(Notify::new()),
            status: Arc::default(),
            source: source.into(),
            forced_requests: Arc::default(),
        }
    }
}

/// The background task that owns a [`TokenSource`] and publishes its tokens.
pub struct TokenManager {
    source: Arc<dyn TokenSource>,
    policy: RefreshPolicy,
    tx: watch::Sender<CurrentToken>,
    force: Arc<Notify>,
    status: Arc<Mutex<ManagerStatus>>,
    /// The metrics of every upstream using this manager's tokens.
    metrics: Vec<Arc<Metrics>>,
}

impl TokenManager {
    /// Creates the manager and the handle its users hold. Nothing runs until [`Self::run`].
    pub fn new(
        source: Arc<dyn TokenSource>,
        policy: RefreshPolicy,
        metrics: Vec<Arc<Metrics>>,
    ) -> (TokenManager, TokenManagerHandle) {
        let (tx, rx) = watch::channel(None);
        let force = Arc::new(Notify::new());
        let status = Arc::new(Mutex::new(ManagerStatus::default()));
        let handle = TokenManagerHandle {
            token: rx,
            force: force.clone(),
            status: status.clone(),
            source: source.describe().into(),
            forced_requests: Arc::default(),
        };
        (
            TokenManager {
                source,
                policy,
                tx,
                force,
                status,
                metrics,
            },
            handle,
        )
    }

    /// Runs until `shutdown` turns true (or its sender is dropped).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let describe = self.source.describe();
        let mut next = Instant::now();
        let mut failures: u32 = 0;
        let mut generation: u64 = 0;
        let mut last_forced: Option<Instant> = None;
        let mut expiry_logged = false;
        loop {
            let current = self.tx.borrow().clone();
            let expiry_wait = current.as_ref().filter(|_| !expiry_logged).map(|t| {
                t.expires_at()
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
            });
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {}
                _ = self.source.changed() => {
                    tracing::info!(source = %describe, "token source changed; reading it now");
                }
                _ = self.force.notified() => {
                    let now = Instant::now();
                    if let Some(last) = last_forced {
                        if now.duration_since(last) < self.policy.min_forced_interval {
                            next = next.min(last + self.policy.min_forced_interval);
                            continue;
                        }
                    }
                    last_forced = Some(now);
                    tracing::warn!(source = %describe, "the cache rejected the token; fetching a new one now");
                }
                _ = async { tokio::time::sleep(expiry_wait.unwrap_or_default()).await }, if expiry_wait.is_some() => {
                    expiry_logged = true;
                    tracing::error!(
                        source = %describe,
                        last_error = self.status().last_error.as_deref().unwrap_or("none"),
                        "THE TOKEN HAS EXPIRED and no replacement could be obtained: the cache will refuse new connections until a token is fetched"
                    );
                    continue;
                }
                res = shutdown.changed() => {
                    if res.is_err() || *shutdown.borrow() {
                        return;
                    }
                    continue;
                }
            }

            let started = Instant::now();
            let result = match tokio::time::timeout(self.policy.timeout, self.source.fetch()).await
            {
                Ok(r) => r,
                Err(_) => Err(TokenError::Timeout(self.policy.timeout)),
            };
            let elapsed = started.elapsed();
            match result.and_then(|f| self.accept(f, current.as_deref())) {
                Ok(Accepted::Same) => {
                    // The source handed back the token we hold (a cache, or a file not yet
                    // rotated). Not a failure; look again soon, with backoff.
                    failures = failures.saturating_add(1);
                    let delay = self.policy.retry_delay(failures);
                    tracing::debug!(source = %describe, retry_in = ?delay, "token unchanged (cache hit)");
                    next = Instant::now() + delay;
                }
                Ok(Accepted::New(fetched, username)) => {
                    failures = 0;
                    expiry_logged = false;
                    generation += 1;
                    let now = SystemTime::now();
                    let token = AccessToken::new(
                        fetched.secret,
                        username,
                        fetched.expires_at,
                        now,
                        generation,
                    );
                    let at =
                        self.policy
                            .refresh_at(now, token.expires_at(), now, rand::random::<f64>());
                    let delay = at.duration_since(now).unwrap_or_default();
                    next = Instant::now() + delay;
                    tracing::info!(
                        source = %describe,
                        generation,
                        username = %token.username(),
                        expires_in_s = token.expires_at().duration_since(now).unwrap_or_default().as_secs(),
                        refresh_in_s = delay.as_secs(),
                        "obtained a new token"
                    );
                    for m in &self.metrics {
                        m.token_refreshed(true, elapsed, Some(token.expires_at()));
                    }
                    *self.status.lock().unwrap_or_else(|e| e.into_inner()) =
                        ManagerStatus::default();
                    self.tx.send_replace(Some(Arc::new(token)));
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    let delay = self.policy.retry_delay(failures);
                    next = Instant::now() + delay;
                    tracing::warn!(
                        source = %describe,
                        error = %err,
                        failures,
                        retry_in = ?delay,
                        keeping_current = current.is_some(),
                        "could not obtain a token"
                    );
                    for m in &self.metrics {
                        m.token_refreshed(false, elapsed, None);
                    }
                    let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
                    st.last_error = Some(err.to_string());
                    st.consecutive_failures = failures;
                }
            }
        }
    }

    fn status(&self) -> ManagerStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Checks a fetched token: not expired, a username, and whether it is new.
    fn accept(
        &self,
        fetched: FetchedToken,
        current: Option<&AccessToken>,
    ) -> Result<Accepted, TokenError> {
        if let Some(cur) = current {
            if cur.expires_at() == fetched.expires_at && cur.secret() == &fetched.secret {
                return Ok(Accepted::Same);
            }
        }
        let now = SystemTime::now();
        if fetched.expires_at <= now {
            return Err(TokenError::Malformed(format!(
                "the token expired {}s ago (check the token's source and this machine's clock)",
                now.duration_since(fetched.expires_at)
                    .unwrap_or_default()
                    .as_secs()
            )));
        }
        let username = match &self.policy.username {
            Some(u) => u.clone(),
            None => jwt::claims(fetched.secret.expose())?
                .oid
                .ok_or(TokenError::NoUsername)?,
        };
        Ok(Accepted::New(fetched, username))
    }
}

enum Accepted {
    Same,
    New(FetchedToken, String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{BoxFuture, Secret};
    use std::sync::atomic::AtomicUsize;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn refresh_at_ratio_without_jitter() {
        let p = RefreshPolicy::default();
        // 60-minute token: 0.7 × 3600 = 2520 s, before expiry − 180 s.
        assert_eq!(p.refresh_at(t(0), t(3600), t(0), 0.0), t(2520));
    }

    #[test]
    fn refresh_never_later_than_margin() {
        let p = RefreshPolicy {
            ratio: 0.99,
            ..Default::default()
        };
        assert_eq!(p.refresh_at(t(0), t(3600), t(0), 0.0), t(3420));
    }

    #[test]
    fn short_token_refreshes_at_half_life() {
        let p = RefreshPolicy::default();
        assert_eq!(p.refresh_at(t(0), t(100), t(0), 0.0), t(50));
    }

    #[test]
    fn jitter_only_moves_earlier_and_is_bounded() {
        let p = RefreshPolicy::default();
        let at = p.refresh_at(t(0), t(3600), t(0), 0.999);
        assert!(at < t(2520) && at >= t(2520 - 360), "{at:?}");
    }

    #[test]
    fn backoff_doubles_up_to_max() {
        let p = RefreshPolicy::default();
        let d: Vec<u64> = (1..=8).map(|f| p.retry_delay(f).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 16, 32, 60, 60]);
    }

    /// A source that fails `fail_first` times, then returns tokens with a short life.
    struct Flaky {
        calls: AtomicUsize,
        fail_first: usize,
        life: Duration,
    }

    impl TokenSource for Flaky {
        fn describe(&self) -> String {
            "flaky".into()
        }
        fn fetch(&self) -> BoxFuture<'_, Result<FetchedToken, TokenError>> {
            Box::pin(async move {
                let n = self.calls.fetch_add(1, Ordering::SeqCst);
                if n < self.fail_first {
                    return Err(TokenError::Provider("endpoint down".into()));
                }
                let exp = SystemTime::now() + self.life;
                let secret = jwt::unsigned_jwt(&serde_json::json!({
                    "oid": "u", "exp": jwt::unix_seconds(exp), "n": n
                }));
                Ok(FetchedToken {
                    secret: Secret::new(secret),
                    expires_at: exp,
                })
            })
        }
    }

    #[tokio::test]
    async fn retries_until_success_then_refreshes() {
        let src = Arc::new(Flaky {
            calls: AtomicUsize::new(0),
            fail_first: 3,
            life: Duration::from_millis(600),
        });
        let policy = RefreshPolicy {
            retry_initial: Duration::from_millis(10),
            retry_max: Duration::from_millis(40),
            margin: Duration::from_millis(100),
            ..Default::default()
        };
        let (mgr, handle) = TokenManager::new(src.clone(), policy, Vec::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(mgr.run(stop_rx));
        let first = handle.wait_for_token(Duration::from_secs(5)).await.unwrap();
        assert_eq!(first.generation(), 1);
        assert_eq!(first.username(), "u");
        assert!(src.calls.load(Ordering::SeqCst) >= 4);
        // The next token arrives before the first expires.
        let mut rx = handle.subscribe();
        tokio::time::timeout(
            Duration::from_secs(5),
            rx.wait_for(|t| t.as_ref().is_some_and(|t| t.generation() == 2)),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(SystemTime::now() < first.expires_at());
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn token_without_oid_needs_username() {
        struct NoOid;
        impl TokenSource for NoOid {
            fn describe(&self) -> String {
                "no-oid".into()
            }
            fn fetch(&self) -> BoxFuture<'_, Result<FetchedToken, TokenError>> {
                Box::pin(async {
                    let exp = SystemTime::now() + Duration::from_secs(3600);
                    Ok(FetchedToken {
                        secret: Secret::new(jwt::unsigned_jwt(
                            &serde_json::json!({"exp": jwt::unix_seconds(exp)}),
                        )),
                        expires_at: exp,
                    })
                })
            }
        }
        let policy = RefreshPolicy {
            retry_initial: Duration::from_millis(10),
            ..Default::default()
        };
        let (mgr, handle) = TokenManager::new(Arc::new(NoOid), policy, Vec::new());
        let (_stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(mgr.run(stop_rx));
        assert!(handle
            .wait_for_token(Duration::from_millis(200))
            .await
            .is_none());
        let err = handle.status().last_error.unwrap();
        assert!(err.contains("oid") && err.contains("--username"), "{err}");
    }
}

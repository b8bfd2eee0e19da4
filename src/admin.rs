//! The admin HTTP endpoint: `GET /metrics` (Prometheus text), `GET /healthz` (liveness) and
//! `GET /readyz` (readiness).
//!
//! HTTP/1.1 is served by hyper (keep-alive for scrapers, HEAD, status and header handling),
//! with the request head bounded in size ([`MAX_REQUEST_HEAD`]) and in time
//! ([`REQUEST_TIMEOUT`]), each connection in lifetime ([`CONNECTION_LIFETIME`]), and few
//! connections at once ([`MAX_CONNECTIONS`]). Whatever a client sends here, the proxy's
//! sessions are not affected.
//!
//! Readiness is computed at each request from the live state (see [`readiness`]):
//! ready while the proxy holds a token that has not expired and the last upstream connection
//! attempt succeeded (before the first attempt, the upstream counts as fine). When the upstream
//! is the only thing failing, a request for `/readyz` also starts a background probe
//! connection (at most one every [`PROBE_INTERVAL`]), so that readiness recovers even when no
//! client connects while the pod is out of its Service.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::metrics::Metrics;
use crate::token::manager::ManagerStatus;
use crate::token::{AccessToken, TokenManagerHandle};
use crate::upstream::{ConnectAttempt, UpstreamConnector};

/// Path of the Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";
/// Path of the liveness check: 200 while the process serves.
pub const HEALTH_PATH: &str = "/healthz";
/// Path of the readiness check: 200 with a valid token and a working upstream, else 503.
pub const READY_PATH: &str = "/readyz";

/// Largest request head (request line and headers) accepted; larger gets 431. (hyper's
/// smallest read buffer, too.)
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Time allowed to send a request head (hyper's header read timeout).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Admin connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Shortest interval between two readiness probe connections to the cache.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Why the admin endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address could not be bound.
    #[error("cannot listen on admin address {addr}: {source}")]
    Bind {
        /// The `admin_listen` value.
        addr: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// What the admin endpoint reads to answer.
pub struct AdminState {
    /// Every upstream the proxy serves.
    pub upstreams: Vec<Arc<UpstreamHealth>>,
    /// Turns true when the proxy shuts down; readiness then fails.
    pub shutdown: watch::Receiver<bool>,
    /// Turns true when shutdown begins (SIGTERM) while sessions are still served; readiness
    /// fails at once so that the pod leaves its Service before the proxy stops.
    pub draining: watch::Receiver<bool>,
}

/// What readiness and `/metrics` read of one upstream.
pub struct UpstreamHealth {
    /// Its name (the metrics label).
    pub name: String,
    /// Its metrics; encoding them encodes the whole registry.
    pub metrics: Arc<Metrics>,
    /// The current token and the manager's last error.
    pub tokens: TokenManagerHandle,
    /// The last upstream connection attempt, and probe connections.
    pub connector: Arc<UpstreamConnector>,
    /// When the last readiness probe connection started.
    last_probe: Mutex<Option<Instant>>,
}

impl UpstreamHealth {
    /// One upstream's health sources.
    pub fn new(
        name: &str,
        metrics: Arc<Metrics>,
        tokens: TokenManagerHandle,
        connector: Arc<UpstreamConnector>,
    ) -> Arc<Self> {
        Arc::new(UpstreamHealth {
            name: name.to_owned(),
            metrics,
            tokens,
            connector,
            last_probe: Mutex::new(None),
        })
    }

    /// This upstream's readiness now, apart from shutdown.
    fn readiness(&self) -> Result<(), String> {
        let token = self.tokens.current();
        readiness(
            SystemTime::now(),
            false,
            token.as_deref(),
            &self.tokens.status(),
            self.connector.last_attempt().as_ref(),
        )
    }

    /// Starts a probe connection to the cache if the upstream is what keeps the proxy
    /// unready, a token is at hand, and no probe started in the last [`PROBE_INTERVAL`].
    fn maybe_probe(&self, shutting_down: bool) {
        let failed = self
            .connector
            .last_attempt()
            .is_some_and(|a| a.error.is_some());
        let Some(token) = self.tokens.current() else {
            return;
        };
        if !failed || token.is_expired(SystemTime::now()) || shutting_down {
            return;
        }
        {
            let mut last = self.last_probe.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < PROBE_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let connector = self.connector.clone();
        let name = self.name.clone();
        tokio::spawn(async move {
            match connector.connect(&token).await {
                Ok(mut stream) => {
                    tracing::info!(upstream = %name, "readiness probe: the cache accepts connections again");
                    let _ = stream.shutdown().await;
                }
                Err(e) => tracing::debug!(upstream = %name, error = %e, "readiness probe failed"),
            }
        });
    }
}

impl AdminState {
    /// The state the admin endpoint answers from.
    pub fn new(
        upstreams: Vec<Arc<UpstreamHealth>>,
        shutdown: watch::Receiver<bool>,
        draining: watch::Receiver<bool>,
    ) -> Self {
        AdminState {
            upstreams,
            shutdown,
            draining,
        }
    }

    /// True once shutdown has begun, whichever phase it is in.
    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow() || *self.draining.borrow()
    }

    /// Readiness now: `Ok` when every upstream is ready, or a one-line reason (naming the
    /// upstreams when there are several).
    pub fn readiness(&self) -> Result<(), String> {
        if self.shutting_down() {
            return Err("shutting down".into());
        }
        let mut reasons = Vec::new();
        for u in &self.upstreams {
            if let Err(why) = u.readiness() {
                if self.upstreams.len() == 1 {
                    return Err(why);
                }
                reasons.push(format!("upstream {}: {why}", u.name));
            }
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons.join("; "))
        }
    }

    /// Probes the upstreams that keep the proxy unready (see [`UpstreamHealth::maybe_probe`]).
    fn maybe_probe(&self) {
        let shutting_down = self.shutting_down();
        for u in &self.upstreams {
            u.maybe_probe(shutting_down);
        }
    }

    /// The `/metrics` body, with the seconds-until-expiry gauges set for now.
    fn encode_metrics(&self) -> String {
        let now = SystemTime::now();
        let shutting_down = self.shutting_down();
        for u in &self.upstreams {
            let token = u.tokens.current();
            u.metrics
                .set_token_seconds_until_expiry(token.map(|t| t.expires_at()), now);
            let ready = !shutting_down && u.readiness().is_ok();
            u.metrics.ready.set(i64::from(ready));
        }
        self.upstreams
            .first()
            .map(|u| u.metrics.encode())
            .unwrap_or_default()
    }
}

/// Decides readiness from a snapshot of the proxy's state. Pure, for testing.
///
/// Not ready while shutting down, without a token, with an expired token, or when the last
/// upstream connection attempt failed. The reason is one line and never holds a secret.
pub fn readiness(
    now: SystemTime,
    shutting_down: bool,
    token: Option<&AccessToken>,
    status: &ManagerStatus,
    last_attempt: Option<&ConnectAttempt>,
) -> Result<(), String> {
    if shutting_down {
        return Err("shutting down".into());
    }
    let last_error = || {
        status
            .last_error
            .as_deref()
            .unwrap_or("none yet, still trying")
            .to_owned()
    };
    let mut reasons = Vec::new();
    match token {
        None => reasons.push(format!("no token yet; last error: {}", last_error())),
        Some(t) => {
            if let Err(past) = t.expires_at().duration_since(now) {
                reasons.push(format!(
                    "token expired {}s ago; last error: {}",
                    past.duration().as_secs(),
                    last_error()
                ));
            } else if t.expires_at() == now {
                reasons.push(format!(
                    "token expired 0s ago; last error: {}",
                    last_error()
                ));
            }
        }
    }
    if let Some(ConnectAttempt {
        at,
        error: Some(err),
    }) = last_attempt
    {
        let ago = now.duration_since(*at).unwrap_or_default().as_secs();
        reasons.push(format!("last upstream connection failed {ago}s ago: {err}"));
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(one_line(&reasons.join("; ")))
    }
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Binds the admin listener on `addr` (`admin_listen`, resolved when the configuration was
/// checked); port 0 picks a free port.
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, AdminError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// Serves admin requests on `listener` until the task is dropped or aborted. The endpoint
/// stays up while the proxy drains, so that `/healthz` keeps answering.
///
/// HTTP/1.1 through hyper, with keep-alive (Prometheus reuses its scrape connection). Bounds:
/// at most [`MAX_CONNECTIONS`] connections (more are closed at once), a request head of at
/// most [`MAX_REQUEST_HEAD`] bytes (hyper answers 431 past it), [`REQUEST_TIMEOUT`] to send a
/// request head, and [`CONNECTION_LIFETIME`] for a whole connection, after which it is closed
/// gracefully (between requests).
pub async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the limit: close at once rather than queue (a scraper retries).
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            serve_connection(stream, state).await;
            drop(permit);
        });
    }
}

/// How long one admin connection may stay open, however busy; then it is closed between two
/// requests (a keep-alive scraper simply opens a new one).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Serves one connection: keep-alive, bounded head, head read timeout, bounded lifetime.
async fn serve_connection(stream: TcpStream, state: Arc<AdminState>) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(respond(&req, &state)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(REQUEST_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = tokio::time::sleep(CONNECTION_LIFETIME) => {}
    }
    // Finish the request in flight (bounded), then close.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, conn).await;
}

/// An HTTP response, before encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        let mut body = body.into();
        body.push('\n');
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
        }
    }

    /// The hyper response. For HEAD, hyper leaves the body out and keeps `Content-Length`.
    fn into_http(self) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
        use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
        let len = self.body.len();
        let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(self.body)));
        *r.status_mut() = hyper::StatusCode::from_u16(self.status)
            .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        h.insert(CONTENT_LENGTH, HeaderValue::from(len));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

/// Answers one request: GET and HEAD only; the path without its query string picks the page.
fn respond<B>(
    req: &hyper::Request<B>,
    state: &Arc<AdminState>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let method = req.method();
    let response = if method != hyper::Method::GET && method != hyper::Method::HEAD {
        let mut r = Response::text(405, "only GET and HEAD").into_http();
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return r;
    } else {
        route(req.uri().path(), state)
    };
    response.into_http()
}

fn route(path: &str, state: &Arc<AdminState>) -> Response {
    match path {
        METRICS_PATH => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: state.encode_metrics(),
        },
        HEALTH_PATH => Response::text(200, "ok"),
        READY_PATH => match state.readiness() {
            Ok(()) => Response::text(200, "ready"),
            Err(reason) => {
                state.maybe_probe();
                Response::text(503, format!("not ready: {reason}"))
            }
        },
        _ => Response::text(404, "not found; try /metrics, /healthz or /readyz"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Secret;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn token(expires: u64) -> AccessToken {
        AccessToken::new(
            Secret::new("secret-token-value".into()),
            "oid-1".into(),
            at(expires),
            at(0),
            1,
        )
    }

    #[test]
    fn ready_with_a_valid_token_and_no_attempt_yet() {
        let t = token(1_000);
        assert_eq!(
            readiness(at(100), false, Some(&t), &ManagerStatus::default(), None),
            Ok(())
        );
        let ok = ConnectAttempt {
            at: at(90),
            error: None,
        };
        assert_eq!(
            readiness(
                at(100),
                false,
                Some(&t),
                &ManagerStatus::default(),
                Some(&ok)
            ),
            Ok(())
        );
    }

    #[test]
    fn not_ready_without_token_says_the_last_error() {
        let status = ManagerStatus {
            last_error: Some("endpoint\nunreachable".into()),
            consecutive_failures: 3,
        };
        let why = readiness(at(100), false, None, &status, None).unwrap_err();
        assert_eq!(why, "no token yet; last error: endpoint unreachable");
    }

    #[test]
    fn not_ready_after_expiry_and_after_a_failed_connection() {
        let t = token(88);
        let failed = ConnectAttempt {
            at: at(97),
            error: Some("cannot connect to cache:6380: refused".into()),
        };
        let why = readiness(
            at(100),
            false,
            Some(&t),
            &ManagerStatus::default(),
            Some(&failed),
        )
        .unwrap_err();
        assert_eq!(
            why,
            "token expired 12s ago; last error: none yet, still trying; \
             last upstream connection failed 3s ago: cannot connect to cache:6380: refused"
        );
        assert!(!why.contains("secret-token-value"));
    }

    #[test]
    fn not_ready_while_shutting_down() {
        let t = token(1_000);
        let why = readiness(at(1), true, Some(&t), &ManagerStatus::default(), None);
        assert_eq!(why.unwrap_err(), "shutting down");
    }
}

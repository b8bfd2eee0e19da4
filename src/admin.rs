//! The admin HTTP endpoint: `GET /metrics` (Prometheus text), `GET /healthz` (liveness) and
//! `GET /readyz` (readiness).
//!
//! A deliberately tiny HTTP/1.1 responder: one request per connection, `Connection: close`,
//! the request head bounded in size ([`MAX_REQUEST_HEAD`]) and the whole exchange in time
//! ([`REQUEST_TIMEOUT`]), few connections at once ([`MAX_CONNECTIONS`]). Whatever a client
//! sends here, the proxy's sessions are not affected.
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

use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// Largest request head (request line and headers) accepted; larger gets 431.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Time allowed to read a request and write the response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Admin connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 16;
/// After answering, unread request bytes discarded at most (see [`LINGER_TIME`]).
const LINGER_BYTES: usize = 256 * 1024;
/// After answering, how long the peer has to close before the connection is dropped.
const LINGER_TIME: Duration = Duration::from_millis(500);
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
    pub fn new(upstreams: Vec<Arc<UpstreamHealth>>, shutdown: watch::Receiver<bool>) -> Self {
        AdminState {
            upstreams,
            shutdown,
        }
    }

    /// Readiness now: `Ok` when every upstream is ready, or a one-line reason (naming the
    /// upstreams when there are several).
    pub fn readiness(&self) -> Result<(), String> {
        if *self.shutdown.borrow() {
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
        let shutting_down = *self.shutdown.borrow();
        for u in &self.upstreams {
            u.maybe_probe(shutting_down);
        }
    }

    /// The `/metrics` body, with the seconds-until-expiry gauges set for now.
    fn encode_metrics(&self) -> String {
        let now = SystemTime::now();
        for u in &self.upstreams {
            let token = u.tokens.current();
            u.metrics
                .set_token_seconds_until_expiry(token.map(|t| t.expires_at()), now);
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

/// Binds the admin listener. `addr` is `HOST:PORT`; port 0 picks a free port.
pub async fn bind(addr: &str) -> Result<TcpListener, AdminError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind {
            addr: addr.to_owned(),
            source,
        })
}

/// Serves admin requests on `listener` until the task is dropped or aborted. The endpoint
/// stays up while the proxy drains, so that `/healthz` keeps answering.
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
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, handle(stream, &state)).await;
            drop(permit);
        });
    }
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

    /// The encoded response; `head_only` leaves the body out (HEAD).
    fn encode(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// A parsed request line.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// `GET` or `HEAD`; other methods are refused before routing.
    pub head_only: bool,
    /// The path without the query string.
    pub path: &'a str,
}

/// Parses the request line of a complete request head. Pure, for testing.
pub fn parse_request(head: &[u8]) -> Result<Request<'_>, Response> {
    let bad = || Response::text(400, "bad request");
    let line_end = head.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| bad())?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Err(bad());
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Err(Response::text(405, "only GET and HEAD")),
    };
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Ok(Request { head_only, path })
}

/// Reads one request head, bounded by [`MAX_REQUEST_HEAD`]; an oversized head is answered 431.
async fn read_head(stream: &mut TcpStream) -> io::Result<Result<Vec<u8>, Response>> {
    let mut buf = vec![0u8; MAX_REQUEST_HEAD];
    let mut len = 0;
    loop {
        if let Some(end) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end + 4);
            return Ok(Ok(buf));
        }
        if len == buf.len() {
            return Ok(Err(Response::text(431, "request head too large")));
        }
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        len += n;
    }
}

async fn handle(mut stream: TcpStream, state: &Arc<AdminState>) -> io::Result<()> {
    let head = read_head(&mut stream).await?;
    let (response, head_only) = match &head {
        Err(r) => (r.clone(), false),
        Ok(bytes) => match parse_request(bytes) {
            Err(r) => (r, false),
            Ok(req) => (route(req.path, state), req.head_only),
        },
    };
    stream.write_all(&response.encode(head_only)).await?;
    stream.flush().await?;
    stream.shutdown().await?;
    // Lingering close: closing with unread request bytes would send a TCP reset, which can
    // destroy the response before the client reads it. Read (bounded) what is left first.
    let mut sink = [0u8; 4096];
    let mut left = LINGER_BYTES;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
    Ok(())
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

    #[test]
    fn request_line_parsing() {
        let r = parse_request(b"GET /readyz?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(
            r,
            Request {
                head_only: false,
                path: "/readyz"
            }
        );
        assert!(
            parse_request(b"HEAD /healthz HTTP/1.0\r\n\r\n")
                .unwrap()
                .head_only
        );
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.1\r\n\r\n")
                .unwrap_err()
                .status,
            405
        );
        for bad in [
            &b"GET /metrics\r\n\r\n"[..],
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics SPDY/3\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"\xff\xfe /x HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse_request(bad).unwrap_err().status, 400, "{bad:?}");
        }
    }

    #[test]
    fn head_responses_keep_the_length_but_drop_the_body() {
        let r = Response::text(200, "ok");
        let full = String::from_utf8(r.encode(false)).unwrap();
        let head = String::from_utf8(r.encode(true)).unwrap();
        assert!(full.starts_with("HTTP/1.1 200 OK\r\n") && full.ends_with("\r\n\r\nok\n"));
        assert!(head.contains("Content-Length: 3\r\n") && head.ends_with("\r\n\r\n"));
    }
}

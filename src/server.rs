//! Listeners, the accept loop, connection limits and shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::resp::Limits;
use crate::session::{self, SessionContext};
use crate::token::{self, RefreshPolicy, TokenManager};
use crate::upstream::UpstreamConnector;

/// A start-up problem caused by the configuration (the process exits with code 64).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigProblem(pub String);

/// Upstream reconnections started per second at most, across sessions.
const RECONNECTS_PER_SECOND: u32 = 200;

/// How long a session waits for replies to commands in flight when it closes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the proxy until SIGTERM or SIGINT.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let proxy = Proxy::start(settings, shutdown_rx).await?;
    wait_for_signal().await;
    tracing::info!("shutting down: no new connections; finishing commands in flight");
    let _ = shutdown_tx.send(true);
    proxy.wait_drained(DRAIN_TIMEOUT * 2).await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// A running proxy: token manager, listeners and their sessions.
pub struct Proxy {
    /// Local addresses the listeners are bound to.
    pub addrs: Vec<SocketAddr>,
    /// Metrics of this proxy.
    pub metrics: Arc<Metrics>,
    /// One permit per connection; all returned means every session ended.
    permits: Arc<Semaphore>,
    /// The connection limit.
    max_connections: usize,
}

impl Proxy {
    /// Starts the token manager and the listeners; sessions run until `shutdown` turns true.
    pub async fn start(
        settings: Settings,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Proxy> {
        let metrics = Arc::new(Metrics::new());
        let source = token::build_source(&settings).map_err(|e| ConfigProblem(e.to_string()))?;
        let policy = RefreshPolicy {
            ratio: settings.refresh_ratio,
            margin: settings.refresh_margin,
            jitter: settings.refresh_jitter,
            retry_initial: settings.retry_initial,
            retry_max: settings.retry_max,
            timeout: settings.token_timeout,
            username: settings.username.clone(),
            ..RefreshPolicy::default()
        };
        let (manager, tokens) = TokenManager::new(source, policy, Some(metrics.clone()));
        tracing::info!(source = %tokens.source(), "token manager started");
        tokio::spawn(manager.run(shutdown.clone()));

        let (host, port) = split_host_port(&settings.upstream, 6380)?;
        let server_name = settings.tls_server_name.clone().unwrap_or(host.clone());
        let connector = UpstreamConnector::new(
            &host,
            port,
            &server_name,
            settings.ca_file.as_deref(),
            (
                settings.connect_timeout,
                settings.tls_timeout,
                settings.auth_timeout,
            ),
            metrics.clone(),
        )
        .map_err(|e| ConfigProblem(e.to_string()))?;
        tracing::info!(upstream = %connector.addr(), tls_server_name = %server_name, "upstream");

        let ctx = Arc::new(SessionContext {
            connector: Arc::new(connector),
            tokens,
            metrics: metrics.clone(),
            limits: Limits {
                max_bulk: settings.max_bulk_len,
                max_args: settings.max_command_args,
                max_inline: settings.max_inline_len,
            },
            startup_wait: settings.startup_wait,
            drain_timeout: DRAIN_TIMEOUT,
            refresh_margin: settings.refresh_margin,
            reauth_limiter: Arc::new(Semaphore::new(settings.reauth_concurrency)),
            reconnect_pacer: Arc::new(session::ReconnectPacer::new(RECONNECTS_PER_SECOND)),
        });

        let permits = Arc::new(Semaphore::new(settings.max_connections));
        let mut addrs = Vec::new();
        for spec in &settings.listen {
            let listener = TcpListener::bind(spec.as_str())
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {spec}: {e}"))?;
            let addr = listener.local_addr()?;
            tracing::info!(address = %addr, "listening");
            addrs.push(addr);
            tokio::spawn(accept_loop(
                listener,
                ctx.clone(),
                permits.clone(),
                shutdown.clone(),
            ));
        }
        Ok(Proxy {
            addrs,
            metrics,
            permits,
            max_connections: settings.max_connections,
        })
    }

    /// Waits until every session has ended, at most `grace`. True if all ended.
    pub async fn wait_drained(&self, grace: Duration) -> bool {
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        match tokio::time::timeout(grace, self.permits.acquire_many(all)).await {
            Ok(Ok(p)) => {
                drop(p);
                true
            }
            _ => {
                tracing::warn!("shutdown grace period over; closing the remaining sessions");
                false
            }
        }
    }
}

static SESSION_IDS: AtomicU64 = AtomicU64::new(1);

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<SessionContext>,
    permits: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        // The permit is taken before accept: at the limit, clients wait in the backlog.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                let id = SESSION_IDS.fetch_add(1, Ordering::Relaxed);
                let ctx = ctx.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    session::run(stream, ctx, shutdown, id).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Never fatal. Out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Splits `host[:port]` (IPv6 in brackets) with a default port.
fn split_host_port(s: &str, default_port: u16) -> anyhow::Result<(String, u16)> {
    let bad = || ConfigProblem(format!("`upstream` = `{s}` is not HOST[:PORT]"));
    if s.is_empty() {
        return Err(ConfigProblem(
            "`upstream` is required: the cache's host name (--upstream HOST[:PORT])".into(),
        )
        .into());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => default_port,
            None => return Err(bad().into()),
        };
        return Ok((host.to_owned(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Ok((h.to_owned(), p.parse().map_err(|_| bad())?)),
        Some(_) => Ok((s.to_owned(), default_port)),
        None => Ok((s.to_owned(), default_port)),
    }
}

//! The running proxy: the listeners of every upstream (bound and served by
//! [`crate::listener`]), token managers, the connection limit, the admin endpoint and
//! shutdown.
//!
//! Shutdown has two modes, because the two signals mean different things:
//!
//! - **SIGTERM** (Kubernetes, systemd, `docker stop`): the application next to the proxy is
//!   usually told to stop at the same moment and still needs Redis while it drains its own
//!   requests. Readiness fails at once, but listeners keep accepting and every session is
//!   served normally. The proxy exits as soon as no client connection has been open for
//!   [`SHUTDOWN_QUIET`], or when `shutdown_grace` ends; only then do sessions close, each at a
//!   reply boundary (the commands it already forwarded are answered first).
//! - **SIGINT** (an operator's Ctrl-C): the fast drain. Listeners stop at once; each session
//!   finishes the commands in flight and closes; the wait is a fifth of `shutdown_grace`.
//!
//! A second signal ends the wait at once.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::admin::{self, AdminState, UpstreamHealth};
use crate::cluster::ClusterMap;
use crate::config::{ConfigError, ListenAddr, Plan, Settings, UpstreamPlan};
use crate::listener::{accept_loop, bind_tcp, bind_unix, Listener, SocketFile};
use crate::metrics::{Metrics, MetricsRegistry};
use crate::resp::Limits;
use crate::session::{self, SessionContext};
use crate::token::{self, TokenManager, TokenManagerHandle};
use crate::upstream::UpstreamConnector;
use crate::warm::WarmPool;

pub use crate::startup::StartupError;

/// Upstream reconnections started per second at most, across sessions.
const RECONNECTS_PER_SECOND: u32 = 200;

/// The longest a session waits for replies to commands in flight when it closes; shorter if
/// `shutdown_grace` is.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// SIGINT (an operator's Ctrl-C) waits this fraction of `shutdown_grace`.
const SIGINT_GRACE_DIVISOR: u32 = 5;

/// After SIGTERM, the proxy exits once no client connection has been open for this long: the
/// application has stopped using it (a client that reconnects at once is still served).
pub const SHUTDOWN_QUIET: Duration = Duration::from_secs(1);

/// How often the SIGTERM wait looks at the number of open client connections.
const QUIET_POLL: Duration = Duration::from_millis(50);

/// Runs the proxy until SIGTERM or SIGINT, then stops it as the module documentation says.
/// `Ok` after a clean stop and also when the grace period ran out (the remaining sessions are
/// then cut, and logged).
pub async fn run(plan: Plan) -> Result<(), StartupError> {
    // Handlers first: a signal during start-up must not kill the process half-way.
    let mut signals = Signals::new().map_err(|source| StartupError::Process {
        what: "cannot install the SIGTERM/SIGINT handlers",
        source,
    })?;
    let max_connections = plan.settings.max_connections;
    raise_open_files_limit(
        max_connections,
        max_connections != Settings::default().max_connections,
    );
    let grace = plan.settings.shutdown_grace;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let proxy = Proxy::start(plan, shutdown_rx).await?;

    let signal = signals.recv().await;
    let deadline = Instant::now()
        + match signal {
            StopSignal::Term => grace,
            StopSignal::Int => grace / SIGINT_GRACE_DIVISOR,
        };
    proxy.stop_being_ready();
    if let StopSignal::Term = signal {
        // Keep serving: the application may still be draining its own requests.
        let session_drain = DRAIN_TIMEOUT.min(grace / SIGINT_GRACE_DIVISOR);
        tracing::info!(
            client_connections = proxy.client_connections(),
            grace = ?grace,
            "shutting down: not ready; still serving every client until none is connected or the grace period ends"
        );
        let ended = tokio::select! {
            idle = proxy.wait_idle(SHUTDOWN_QUIET, deadline - session_drain) => Some(idle),
            s = signals.recv() => {
                tracing::warn!(signal = ?s, "second signal: exiting without waiting for sessions");
                None
            }
        };
        match ended {
            None => {
                drop(proxy);
                return Ok(());
            }
            Some(true) => tracing::info!(quiet = ?SHUTDOWN_QUIET, "no client connection left"),
            Some(false) => tracing::info!(
                client_connections = proxy.client_connections(),
                "shutdown grace period ending; closing sessions at their next reply boundary"
            ),
        }
    } else {
        tracing::info!(
            client_connections = proxy.client_connections(),
            grace = ?(deadline - Instant::now()),
            "shutting down: no new connections; sessions finish the commands in flight"
        );
    }
    let _ = shutdown_tx.send(true);
    let drained = tokio::select! {
        d = proxy.wait_drained(deadline.saturating_duration_since(Instant::now())) => d,
        s = signals.recv() => {
            tracing::warn!(signal = ?s, "second signal: exiting without waiting for sessions");
            false
        }
    };
    if drained {
        tracing::info!("all sessions closed; exiting");
    } else {
        tracing::warn!(
            cut_sessions = proxy.open_sessions(),
            "exiting with sessions still open"
        );
    }
    drop(proxy);
    Ok(())
}

/// Which signal asked for shutdown.
#[derive(Debug, Clone, Copy)]
enum StopSignal {
    Term,
    Int,
}

/// SIGTERM and SIGINT streams, installed once.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn new() -> io::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.term.recv() => {
                tracing::info!("SIGTERM received");
                StopSignal::Term
            }
            _ = self.int.recv() => {
                tracing::info!("SIGINT received");
                StopSignal::Int
            }
        }
    }
}

/// Raises the open-files soft limit to the hard limit (each session holds two descriptors)
/// and logs the result. When the limit is below what `max_connections` needs, that is a
/// warning if the operator chose `max_connections` (`explicit`), and an info line naming the
/// connections that fit if it is the default (a stock machine's hard limit is often below what
/// the default of 10,000 would need, and a warning at every start teaches people to ignore
/// warnings).
pub fn raise_open_files_limit(max_connections: usize, explicit: bool) {
    use rlimit::Resource;
    let needed = open_files_needed(max_connections);
    let (soft, hard) = match Resource::NOFILE.get() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-files limit");
            return;
        }
    };
    let mut now = soft;
    if soft < hard {
        // An unlimited hard limit cannot be the soft limit on Linux (fs.nr_open caps it).
        for target in [hard, hard.min(1 << 20)] {
            if Resource::NOFILE.set(target, hard).is_ok() {
                now = target;
                break;
            }
        }
    }
    let show = |v: u64| {
        if v == rlimit::INFINITY {
            "unlimited".to_owned()
        } else {
            v.to_string()
        }
    };
    tracing::info!(
        before = %show(soft),
        soft = %show(now),
        hard = %show(hard),
        "open files limit"
    );
    if now < needed {
        let fit = now.saturating_sub(OPEN_FILES_RESERVE) / 2;
        if explicit {
            tracing::warn!(
                soft = %show(now),
                needed,
                max_connections,
                "the open-files limit is below 2 per connection: raise it (LimitNOFILE=, ulimit -n) or lower max_connections"
            );
        } else {
            tracing::info!(
                soft = %show(now),
                connections_that_fit = fit,
                "the open-files limit allows fewer client connections than the default max_connections; set max_connections to what the cache allows"
            );
        }
    }
}

/// Descriptors kept for everything but sessions (listeners, admin, token sources, logs).
const OPEN_FILES_RESERVE: u64 = 64;

/// Descriptors `max_connections` sessions need: two each, plus the reserve.
fn open_files_needed(max_connections: usize) -> u64 {
    (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(OPEN_FILES_RESERVE)
}

/// Reads the local client password (one line; a trailing newline is not part of it). Warns
/// when the file is readable by others.
fn read_client_password(path: &Path) -> Result<crate::token::Secret, StartupError> {
    let problem = |why: String| {
        StartupError::Input(format!(
            "`client_password_file` {}: {why} (set client_password_file / --client-password-file to a readable file holding the password)",
            path.display()
        ))
    };
    let text =
        zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| problem(e.to_string()))?);
    let password = text.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err(problem("the file is empty".into()));
    }
    crate::token::warn_if_readable_by_others(path, "client password file");
    Ok(crate::token::Secret::new(password))
}

/// A running proxy: token manager, listeners, the admin endpoint and sessions.
///
/// Dropping it stops the listeners and the admin endpoint and removes its socket files;
/// sessions already running go on until the shutdown watch turns true.
pub struct Proxy {
    /// Local addresses of the TCP listeners.
    pub addrs: Vec<SocketAddr>,
    /// Paths of the Unix socket listeners.
    pub unix_paths: Vec<PathBuf>,
    /// Local address of the admin endpoint, if enabled.
    pub admin_addr: Option<SocketAddr>,
    /// Metrics of the first upstream (encoding them encodes every upstream's).
    pub metrics: Arc<Metrics>,
    /// The first upstream's token manager handle (current token, status).
    pub tokens: TokenManagerHandle,
    /// One permit per connection; all returned means every session ended.
    permits: Arc<Semaphore>,
    /// The connection limit.
    max_connections: usize,
    /// Accept loops and the admin endpoint, stopped on drop.
    tasks: Vec<JoinHandle<()>>,
    /// Cluster node listeners, stopped on drop.
    clusters: Vec<Arc<ClusterMap>>,
    /// Turns true when shutdown begins: readiness fails while sessions are still served.
    draining: watch::Sender<bool>,
    /// Every upstream's metrics: their `client_connections` gauges count the open client
    /// connections (the permits cannot: each accept loop holds one while it waits).
    all_metrics: Vec<Arc<Metrics>>,
    /// Socket files, held only to be removed on drop.
    _socket_files: Vec<SocketFile>,
}

/// One upstream, bound but not yet started.
struct Planned {
    name: String,
    plan: UpstreamPlan,
    metrics: Arc<Metrics>,
    connector: Arc<UpstreamConnector>,
    client_password: Option<crate::token::Secret>,
    listeners: Vec<Listener>,
}

impl Proxy {
    /// Starts the token managers, the listeners of every upstream and the admin endpoint;
    /// sessions run until `shutdown` turns true.
    pub async fn start(plan: Plan, shutdown: watch::Receiver<bool>) -> Result<Proxy, StartupError> {
        let Plan {
            admin_listen,
            socket_mode,
            settings,
            upstreams,
        } = plan;
        let registry = MetricsRegistry::new();
        // aws-lc seeds its entropy pool on first use (a large one-time cost): pay it now, not
        // in the first client's TLS handshake.
        let _ = rustls::crypto::aws_lc_rs::default_provider()
            .secure_random
            .fill(&mut [0u8; 1]);

        // Bind everything before starting anything, so a taken port fails start-up cleanly.
        let mut planned = Vec::with_capacity(upstreams.len());
        let mut addrs = Vec::new();
        let mut unix_paths = Vec::new();
        let mut socket_files = Vec::new();
        for up in upstreams {
            let name = up.name.clone();
            let s = &up.settings;
            let metrics = Arc::new(registry.upstream(&name));
            let client_password = match &s.client_password_file {
                Some(path) => Some(read_client_password(path)?),
                None => None,
            };
            let server_name = up.tls_server_name.clone();
            let connector = Arc::new(
                UpstreamConnector::new(
                    &up.cache,
                    &server_name,
                    s.ca_file.as_deref(),
                    (s.connect_timeout, s.tls_timeout, s.auth_timeout),
                    metrics.clone(),
                )
                .map_err(|source| StartupError::Tls {
                    upstream: name.clone(),
                    source,
                })?,
            );
            let mut listeners = Vec::new();
            for listen in &up.listen {
                match listen.clone() {
                    ListenAddr::Unix(path) => {
                        let (listener, file) = bind_unix(&path, socket_mode)?;
                        tracing::info!(upstream = %name, address = %format!("unix:{}", path.display()), mode = %format!("{socket_mode:04o}"), "listening");
                        unix_paths.push(file.path().to_owned());
                        socket_files.push(file);
                        listeners.push(Listener::Unix(listener));
                    }
                    ListenAddr::Tcp(addr) => {
                        let listener = bind_tcp(addr).await?;
                        let addr = local_addr(&listener)?;
                        tracing::info!(upstream = %name, address = %addr, "listening");
                        addrs.push(addr);
                        listeners.push(Listener::Tcp(listener));
                    }
                }
            }
            tracing::info!(upstream = %name, cache = %connector.addr(), tls_server_name = %server_name, cluster = s.cluster, "upstream");
            planned.push(Planned {
                name,
                plan: up,
                metrics,
                connector,
                client_password,
                listeners,
            });
        }
        let admin_listener = match admin_listen {
            None => None,
            Some(addr) => {
                let l = admin::bind(addr).await?;
                tracing::info!(address = %local_addr(&l)?, "admin listening");
                Some(l)
            }
        };
        let admin_addr = admin_listener.as_ref().map(local_addr).transpose()?;

        // One token manager per identity and scope, shared by the upstreams that use it.
        let mut managers: Vec<(String, TokenManagerHandle)> = Vec::new();
        let mut token_handles = Vec::with_capacity(planned.len());
        for p in &planned {
            let key = &p.plan.identity;
            if let Some((_, handle)) = managers.iter().find(|(k, _)| k == key) {
                token_handles.push(handle.clone());
                continue;
            }
            let source = token::build_source(&p.plan.settings).map_err(|source| {
                StartupError::TokenSource {
                    upstream: p.name.clone(),
                    source,
                }
            })?;
            let users: Vec<Arc<Metrics>> = planned
                .iter()
                .filter(|q| q.plan.identity == *key)
                .map(|q| q.metrics.clone())
                .collect();
            let (manager, handle) = TokenManager::new(source, p.plan.refresh.clone(), users);
            tracing::info!(upstream = %p.name, source = %handle.source(), "token manager started");
            tokio::spawn(manager.run(shutdown.clone()));
            managers.push((key.clone(), handle.clone()));
            token_handles.push(handle);
        }

        let permits = Arc::new(Semaphore::new(settings.max_connections));
        let reauth_limiter = Arc::new(Semaphore::new(settings.reauth_concurrency));
        let reconnect_pacer = Arc::new(session::ReconnectPacer::new(RECONNECTS_PER_SECOND));
        let mut tasks = Vec::new();
        let mut health = Vec::new();
        let mut clusters = Vec::new();
        let mut first_upstream = None;
        let all_metrics: Vec<Arc<Metrics>> = planned.iter().map(|p| p.metrics.clone()).collect();
        for (p, tokens) in planned.into_iter().zip(token_handles) {
            health.push(UpstreamHealth::new(
                &p.name,
                p.metrics.clone(),
                tokens.clone(),
                p.connector.clone(),
            ));
            first_upstream.get_or_insert_with(|| (p.metrics.clone(), tokens.clone()));
            let mut ctx = SessionContext {
                upstream: p.name.clone(),
                connector: p.connector.clone(),
                tokens,
                metrics: p.metrics.clone(),
                limits: Limits {
                    max_bulk: p.plan.settings.max_bulk_len,
                    max_args: p.plan.settings.max_command_args,
                    max_inline: p.plan.settings.max_inline_len,
                },
                startup_wait: p.plan.settings.startup_wait,
                drain_timeout: DRAIN_TIMEOUT.min(p.plan.settings.shutdown_grace),
                refresh: p.plan.refresh.clone(),
                reauth_limiter: reauth_limiter.clone(),
                reconnect_pacer: reconnect_pacer.clone(),
                unblocker: Arc::new(session::Unblocker::new(p.connector.clone())),
                client_password: p.client_password,
                cluster: None,
                reconnect_subscribers: p.plan.settings.reconnect_subscribers,
                warm: None,
                pool: None,
            };
            if p.plan.settings.pool_size > 0 {
                let pool = crate::pool::Pool::new(
                    p.plan.settings.pool_size,
                    p.connector.clone(),
                    ctx.tokens.clone(),
                    p.metrics.clone(),
                    p.plan.settings.max_bulk_len,
                    shutdown.clone(),
                );
                // RESP2 connections open now; RESP3 ones with the first RESP3 client.
                pool.start(2);
                ctx.pool = Some(pool);
            }
            if p.plan.settings.warm_connections > 0 {
                let pool = Arc::new(WarmPool::new(
                    p.plan.settings.warm_connections,
                    p.connector.clone(),
                    p.metrics.clone(),
                ));
                tasks.push(tokio::spawn(
                    pool.clone().run(ctx.tokens.clone(), shutdown.clone()),
                ));
                ctx.warm = Some(pool);
            }
            if let Some(cluster) = &p.plan.cluster {
                let local_ip = p
                    .listeners
                    .iter()
                    .find_map(|l| match l {
                        Listener::Tcp(t) => t.local_addr().ok().map(|a| a.ip()),
                        Listener::Unix(_) => None,
                    })
                    .ok_or_else(|| {
                        ConfigError::Other(format!(
                            "upstream {}: cluster = true needs a TCP listener",
                            p.name
                        ))
                    })?;
                let ports = cluster.ports.clone();
                let map = ClusterMap::new(
                    ctx.clone(),
                    local_ip,
                    ports,
                    permits.clone(),
                    shutdown.clone(),
                );
                ctx.cluster = Some(map.clone() as Arc<dyn session::ReplyRewriter>);
                tasks.push(tokio::spawn(crate::cluster::discover(
                    map.clone(),
                    p.plan.settings.cluster_refresh,
                )));
                clusters.push(map);
            }
            let ctx = Arc::new(ctx);
            for listener in p.listeners {
                tasks.push(tokio::spawn(accept_loop(
                    listener,
                    ctx.clone(),
                    permits.clone(),
                    shutdown.clone(),
                )));
            }
        }
        let (draining, draining_rx) = watch::channel(false);
        if let Some(l) = admin_listener {
            let state = Arc::new(AdminState::new(health, shutdown.clone(), draining_rx));
            tasks.push(tokio::spawn(admin::serve(l, state)));
        }
        let (metrics, tokens) = first_upstream.expect("at least one upstream");
        Ok(Proxy {
            addrs,
            unix_paths,
            admin_addr,
            metrics,
            tokens,
            permits,
            max_connections: settings.max_connections,
            tasks,
            clusters,
            draining,
            all_metrics,
            _socket_files: socket_files,
        })
    }

    /// Client connections open now, across upstreams.
    pub fn open_sessions(&self) -> usize {
        self.max_connections - self.permits.available_permits()
    }

    /// Makes `/readyz` fail from now on ("shutting down"); sessions and listeners go on.
    pub fn stop_being_ready(&self) {
        let _ = self.draining.send(true);
    }

    /// Client connections open now, across upstreams and cluster node listeners, as the
    /// sessions' own gauges count them.
    pub fn client_connections(&self) -> i64 {
        self.all_metrics
            .iter()
            .map(|m| m.client_connections.get())
            .sum()
    }

    /// Waits until no client connection has been open for `quiet` (true), or until
    /// `deadline` (false). New connections are accepted meanwhile and reset the quiet period.
    pub async fn wait_idle(&self, quiet: Duration, deadline: Instant) -> bool {
        let mut idle_since: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if self.client_connections() <= 0 {
                if now.duration_since(*idle_since.get_or_insert(now)) >= quiet {
                    return true;
                }
            } else {
                idle_since = None;
            }
            if now >= deadline {
                return false;
            }
            tokio::time::sleep(QUIET_POLL.min(deadline - now)).await;
        }
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

/// The address a listener is bound to (the port the system chose for port 0).
fn local_addr(listener: &TcpListener) -> Result<SocketAddr, StartupError> {
    listener
        .local_addr()
        .map_err(|source| StartupError::Process {
            what: "cannot read a listener's local address",
            source,
        })
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for c in &self.clusters {
            c.stop();
        }
    }
}

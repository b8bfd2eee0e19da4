//! Prometheus metrics.
//!
//! Names carry the prefix `entra_redis_proxy_`; counters end in `_total`, times in
//! `_seconds`. Every metric but `build_info` has an `upstream` label, the name of the
//! upstream (`default` for a single cache configured by the top-level keys). No label ever
//! carries a secret, a key or a client address. Connection gauges are held by RAII guards
//! ([`GaugeGuard`]) so they cannot drift.
//!
//! [`MetricsRegistry`] owns the metric families and the registry `/metrics` encodes;
//! [`Metrics`] is one upstream's view of them (label values looked up once).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

const PREFIX: &str = "entra_redis_proxy";

/// The label every per-upstream metric carries.
const UPSTREAM: &str = "upstream";

/// Every metric family the proxy exports, registered once per process.
pub struct MetricsRegistry {
    registry: Registry,
    token_expiration_timestamp_seconds: GaugeVec,
    token_last_refresh_timestamp_seconds: GaugeVec,
    token_seconds_until_expiry: GaugeVec,
    token_refreshes_total: IntCounterVec,
    token_refresh_duration_seconds: HistogramVec,
    reauth_total: IntCounterVec,
    reauth_duration_seconds: HistogramVec,
    reauth_pending: IntGaugeVec,
    client_connections: IntGaugeVec,
    client_connections_total: IntCounterVec,
    client_protocol_errors_total: IntCounterVec,
    upstream_connections: IntGaugeVec,
    upstream_connect_duration_seconds: HistogramVec,
    upstream_connect_errors_total: IntCounterVec,
    upstream_reconnects_total: IntCounterVec,
    upstream_losses_total: IntCounterVec,
    warm_connections: IntGaugeVec,
    warm_connection_uses_total: IntCounterVec,
    warm_connections_discarded_total: IntCounterVec,
    shared_connections: IntGaugeVec,
    shared_sessions: IntGaugeVec,
    shared_commands_total: IntCounterVec,
    pins_total: IntCounterVec,
    commands_total: IntCounterVec,
    bytes_total: IntCounterVec,
    cluster_nodes: IntGaugeVec,
    cluster_topology_refreshes_total: IntCounterVec,
    ready: IntGaugeVec,
    build_info: IntGaugeVec,
}

/// One upstream's metrics.
pub struct Metrics {
    /// The families, for encoding.
    families: Arc<MetricsRegistry>,
    /// Expiry of the current token (Unix seconds).
    pub token_expiration_timestamp_seconds: Gauge,
    /// When the last token was obtained (Unix seconds).
    pub token_last_refresh_timestamp_seconds: Gauge,
    /// Seconds until the current token expires: negative once expired, 0 with no token.
    /// Set at scrape time by [`Metrics::set_token_seconds_until_expiry`].
    pub token_seconds_until_expiry: Gauge,
    /// Token acquisitions that succeeded / failed.
    token_refreshes: [IntCounter; 2],
    /// Time taken by token acquisitions.
    pub token_refresh_duration_seconds: Histogram,
    /// Re-AUTHs of live upstream connections that succeeded / failed.
    reauths: [IntCounter; 2],
    /// Time from a token change to a session's re-AUTH reply.
    pub reauth_duration_seconds: Histogram,
    /// Sessions still authenticated with an older token than the current one.
    pub reauth_pending: IntGauge,
    /// Open client connections.
    pub client_connections: IntGauge,
    /// Client connections accepted since start.
    pub client_connections_total: IntCounter,
    /// Client connections closed for a protocol error.
    pub client_protocol_errors_total: IntCounter,
    /// Open upstream connections.
    pub upstream_connections: IntGauge,
    /// Time to open an upstream connection: TCP + TLS + AUTH.
    pub upstream_connect_duration_seconds: Histogram,
    /// Failed upstream connection attempts by reason (label values made on first use).
    upstream_connect_errors_total: IntCounterVec,
    /// Upstream connections replaced after a loss, invisibly to their clients.
    pub upstream_reconnects_total: IntCounter,
    /// Upstream connections lost under a session, by what the session did: replaced (state
    /// restored), reissued (a blocked command sent again), closed (the client closed).
    upstream_losses: [IntCounter; 3],
    /// Warm connections ready for the next client (`warm_connections`).
    pub warm_connections: IntGauge,
    /// New sessions that took a warm connection (`[0]`, hit) or had to connect (`[1]`, miss).
    warm_uses: [IntCounter; 2],
    /// Warm connections found closed, or that failed a re-AUTH or a PING, and were dropped.
    pub warm_connections_discarded_total: IntCounter,
    /// Shared upstream connections open now (`pool_size`).
    pub shared_connections: IntGauge,
    /// Client sessions served over shared connections now (not pinned).
    pub shared_sessions: IntGauge,
    /// Commands sent over each shared connection (label values made on first use).
    shared_commands_total: IntCounterVec,
    /// Sessions moved to a dedicated connection, by reason (label values made on first use).
    pins_total: IntCounterVec,
    /// Commands forwarded to the cache.
    pub commands_total: IntCounter,
    /// `bytes_total{direction="client_to_upstream"}` (hot path).
    pub bytes_client_to_upstream: IntCounter,
    /// `bytes_total{direction="upstream_to_client"}` (hot path).
    pub bytes_upstream_to_client: IntCounter,
    /// Cluster nodes with a local listener (cluster mode).
    pub cluster_nodes: IntGauge,
    /// Cluster topology reads by result (cluster mode).
    cluster_topology_refreshes: [IntCounter; 2],
    /// 1 while this upstream is ready (what `/readyz` says), set at scrape time.
    pub ready: IntGauge,
    /// This upstream's name.
    upstream: String,
}

/// What a session did when its upstream connection was lost (`upstream_losses_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamLoss {
    /// The connection state was restored on a new connection.
    Replaced = 0,
    /// A blocked command was sent again on a new connection.
    Reissued = 1,
    /// The client's connection was closed so that it sees the loss.
    Closed = 2,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(format!("{PREFIX}_{name}"), help)
}

fn hist(name: &str, help: &str, buckets: Vec<f64>) -> HistogramOpts {
    HistogramOpts::new(format!("{PREFIX}_{name}"), help).buckets(buckets)
}

/// Seconds since the Unix epoch, as Prometheus timestamps are (0 before it).
fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn result(ok: bool) -> usize {
    usize::from(!ok)
}

impl MetricsRegistry {
    /// Creates and registers every metric family.
    pub fn new() -> Arc<Self> {
        let latency = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0,
        ];
        let gauge =
            |name: &str, help: &str| GaugeVec::new(opts(name, help), &[UPSTREAM]).expect("metric");
        let int_gauge = |name: &str, help: &str| {
            IntGaugeVec::new(opts(name, help), &[UPSTREAM]).expect("metric")
        };
        let counter = |name: &str, help: &str, extra: &[&str]| {
            let mut labels = vec![UPSTREAM];
            labels.extend_from_slice(extra);
            IntCounterVec::new(opts(name, help), &labels).expect("metric")
        };
        let histogram = |name: &str, help: &str| {
            HistogramVec::new(hist(name, help, latency.clone()), &[UPSTREAM]).expect("metric")
        };
        let r = MetricsRegistry {
            registry: Registry::new(),
            token_expiration_timestamp_seconds: gauge(
                "token_expiration_timestamp_seconds",
                "Expiry of the current access token, in Unix seconds.",
            ),
            token_last_refresh_timestamp_seconds: gauge(
                "token_last_refresh_timestamp_seconds",
                "When the current access token was obtained, in Unix seconds.",
            ),
            token_seconds_until_expiry: gauge(
                "token_seconds_until_expiry",
                "Seconds until the current access token expires; negative once expired, 0 when \
                 no token was ever obtained.",
            ),
            token_refreshes_total: counter(
                "token_refreshes_total",
                "Token acquisitions, by result.",
                &["result"],
            ),
            token_refresh_duration_seconds: histogram(
                "token_refresh_duration_seconds",
                "Time taken by token acquisitions.",
            ),
            reauth_total: counter(
                "reauth_total",
                "Re-authentications of live upstream connections, by result.",
                &["result"],
            ),
            reauth_duration_seconds: histogram(
                "reauth_duration_seconds",
                "Time from a token change to the re-AUTH reply on a connection.",
            ),
            reauth_pending: int_gauge(
                "reauth_pending",
                "Sessions still authenticated with an older token than the current one.",
            ),
            client_connections: int_gauge("client_connections", "Open client connections."),
            client_connections_total: counter(
                "client_connections_total",
                "Client connections accepted.",
                &[],
            ),
            client_protocol_errors_total: counter(
                "client_protocol_errors_total",
                "Client connections closed for a protocol error.",
                &[],
            ),
            upstream_connections: int_gauge(
                "upstream_connections",
                "Open upstream (TLS) connections to the cache.",
            ),
            upstream_connect_duration_seconds: histogram(
                "upstream_connect_duration_seconds",
                "Time to open an upstream connection: TCP, TLS and AUTH.",
            ),
            upstream_connect_errors_total: counter(
                "upstream_connect_errors_total",
                "Failed upstream connection attempts, by reason.",
                &["reason"],
            ),
            upstream_reconnects_total: counter(
                "upstream_reconnects_total",
                "Upstream connections replaced after a loss while idle, invisibly to the client.",
                &[],
            ),
            upstream_losses_total: counter(
                "upstream_losses_total",
                "Upstream connections lost under a session, by outcome: replaced (state restored), reissued (a blocked command sent again on a new connection), closed (the client's connection closed so that it sees the loss).",
                &["outcome"],
            ),
            warm_connections: int_gauge(
                "warm_connections",
                "Warm upstream connections (connected, authenticated) ready for new clients.",
            ),
            warm_connection_uses_total: counter(
                "warm_connection_uses_total",
                "New client sessions by result: hit (took a warm connection) or miss (connected then).",
                &["result"],
            ),
            warm_connections_discarded_total: counter(
                "warm_connections_discarded_total",
                "Warm connections dropped because the cache had closed them, or a re-AUTH or PING failed.",
                &[],
            ),
            shared_connections: int_gauge(
                "shared_connections",
                "Shared upstream connections open now (pool_size), both protocols.",
            ),
            shared_sessions: int_gauge(
                "shared_sessions",
                "Client sessions served over shared upstream connections now (not pinned).",
            ),
            shared_commands_total: counter(
                "shared_commands_total",
                "Commands sent over each shared upstream connection (connection: protocol and slot, as resp2-0).",
                &["connection"],
            ),
            pins_total: counter(
                "pins_total",
                "Client sessions moved from the shared connections to a dedicated one, by reason (the kind of command that needed it).",
                &["reason"],
            ),
            commands_total: counter("commands_total", "Commands forwarded to the cache.", &[]),
            bytes_total: counter(
                "bytes_total",
                "Bytes relayed, by direction.",
                &["direction"],
            ),
            cluster_nodes: int_gauge(
                "cluster_nodes",
                "Cluster nodes with a local listener (cluster mode).",
            ),
            cluster_topology_refreshes_total: counter(
                "cluster_topology_refreshes_total",
                "Reads of the cluster topology, by result (cluster mode).",
                &["result"],
            ),
            ready: int_gauge(
                "ready",
                "1 while the upstream is ready (a valid token, the last connection attempt \
                 succeeded, not shutting down), else 0; computed at scrape time.",
            ),
            build_info: IntGaugeVec::new(
                opts("build_info", "Always 1; the label says the version."),
                &["version"],
            )
            .expect("metric"),
        };
        let all: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(r.token_expiration_timestamp_seconds.clone()),
            Box::new(r.token_last_refresh_timestamp_seconds.clone()),
            Box::new(r.token_seconds_until_expiry.clone()),
            Box::new(r.token_refreshes_total.clone()),
            Box::new(r.token_refresh_duration_seconds.clone()),
            Box::new(r.reauth_total.clone()),
            Box::new(r.reauth_duration_seconds.clone()),
            Box::new(r.reauth_pending.clone()),
            Box::new(r.client_connections.clone()),
            Box::new(r.client_connections_total.clone()),
            Box::new(r.client_protocol_errors_total.clone()),
            Box::new(r.upstream_connections.clone()),
            Box::new(r.upstream_connect_duration_seconds.clone()),
            Box::new(r.upstream_connect_errors_total.clone()),
            Box::new(r.upstream_reconnects_total.clone()),
            Box::new(r.upstream_losses_total.clone()),
            Box::new(r.warm_connections.clone()),
            Box::new(r.warm_connection_uses_total.clone()),
            Box::new(r.warm_connections_discarded_total.clone()),
            Box::new(r.shared_connections.clone()),
            Box::new(r.shared_sessions.clone()),
            Box::new(r.shared_commands_total.clone()),
            Box::new(r.pins_total.clone()),
            Box::new(r.commands_total.clone()),
            Box::new(r.bytes_total.clone()),
            Box::new(r.cluster_nodes.clone()),
            Box::new(r.cluster_topology_refreshes_total.clone()),
            Box::new(r.ready.clone()),
            Box::new(r.build_info.clone()),
        ];
        for c in all {
            r.registry.register(c).expect("metric names are unique");
        }
        r.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Arc::new(r)
    }

    /// The metrics of upstream `name` (label values created now, so every series shows
    /// from the start).
    pub fn upstream(self: &Arc<Self>, name: &str) -> Metrics {
        let n = name;
        let results = |v: &IntCounterVec| {
            [
                v.with_label_values(&[n, "success"]),
                v.with_label_values(&[n, "failure"]),
            ]
        };
        Metrics {
            families: self.clone(),
            token_expiration_timestamp_seconds: self
                .token_expiration_timestamp_seconds
                .with_label_values(&[n]),
            token_last_refresh_timestamp_seconds: self
                .token_last_refresh_timestamp_seconds
                .with_label_values(&[n]),
            token_seconds_until_expiry: self.token_seconds_until_expiry.with_label_values(&[n]),
            token_refreshes: results(&self.token_refreshes_total),
            token_refresh_duration_seconds: self
                .token_refresh_duration_seconds
                .with_label_values(&[n]),
            reauths: results(&self.reauth_total),
            reauth_duration_seconds: self.reauth_duration_seconds.with_label_values(&[n]),
            reauth_pending: self.reauth_pending.with_label_values(&[n]),
            client_connections: self.client_connections.with_label_values(&[n]),
            client_connections_total: self.client_connections_total.with_label_values(&[n]),
            client_protocol_errors_total: self.client_protocol_errors_total.with_label_values(&[n]),
            upstream_connections: self.upstream_connections.with_label_values(&[n]),
            upstream_connect_duration_seconds: self
                .upstream_connect_duration_seconds
                .with_label_values(&[n]),
            upstream_connect_errors_total: self.upstream_connect_errors_total.clone(),
            upstream_reconnects_total: self.upstream_reconnects_total.with_label_values(&[n]),
            upstream_losses: ["replaced", "reissued", "closed"]
                .map(|o| self.upstream_losses_total.with_label_values(&[n, o])),
            warm_connections: self.warm_connections.with_label_values(&[n]),
            warm_uses: ["hit", "miss"]
                .map(|r| self.warm_connection_uses_total.with_label_values(&[n, r])),
            warm_connections_discarded_total: self
                .warm_connections_discarded_total
                .with_label_values(&[n]),
            shared_connections: self.shared_connections.with_label_values(&[n]),
            shared_sessions: self.shared_sessions.with_label_values(&[n]),
            shared_commands_total: self.shared_commands_total.clone(),
            pins_total: self.pins_total.clone(),
            commands_total: self.commands_total.with_label_values(&[n]),
            bytes_client_to_upstream: self
                .bytes_total
                .with_label_values(&[n, "client_to_upstream"]),
            bytes_upstream_to_client: self
                .bytes_total
                .with_label_values(&[n, "upstream_to_client"]),
            cluster_nodes: self.cluster_nodes.with_label_values(&[n]),
            cluster_topology_refreshes: results(&self.cluster_topology_refreshes_total),
            ready: self.ready.with_label_values(&[n]),
            upstream: name.to_owned(),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Metrics {
    /// A registry of its own with one upstream named `default` (tests, tools).
    pub fn new() -> Self {
        MetricsRegistry::new().upstream(crate::config::DEFAULT_UPSTREAM_NAME)
    }

    /// The upstream these metrics are labelled with.
    pub fn upstream_name(&self) -> &str {
        &self.upstream
    }

    /// Records the loss of an upstream connection and what the session did about it.
    pub fn upstream_lost(&self, outcome: UpstreamLoss) {
        self.upstream_losses[outcome as usize].inc();
    }

    /// Records whether a new session found a warm connection.
    pub fn warm_use(&self, hit: bool) {
        self.warm_uses[usize::from(!hit)].inc();
    }

    /// Records a token acquisition.
    pub fn token_refreshed(&self, ok: bool, took: Duration, expires_at: Option<SystemTime>) {
        self.token_refreshes[result(ok)].inc();
        self.token_refresh_duration_seconds
            .observe(took.as_secs_f64());
        if let Some(exp) = expires_at {
            self.token_expiration_timestamp_seconds
                .set(unix_seconds(exp));
            self.token_last_refresh_timestamp_seconds
                .set(unix_seconds(SystemTime::now()));
        }
    }

    /// Sets `token_seconds_until_expiry` from the current token's expiry (`None`: no token),
    /// as seen at `now`.
    pub fn set_token_seconds_until_expiry(&self, expires_at: Option<SystemTime>, now: SystemTime) {
        let secs = match expires_at {
            None => 0.0,
            Some(exp) => match exp.duration_since(now) {
                Ok(left) => left.as_secs_f64(),
                Err(past) => -past.duration().as_secs_f64(),
            },
        };
        self.token_seconds_until_expiry.set(secs);
    }

    /// Records a re-AUTH result.
    pub fn reauth(&self, ok: bool, took: Duration) {
        self.reauths[result(ok)].inc();
        self.reauth_duration_seconds.observe(took.as_secs_f64());
    }

    /// Re-AUTHs recorded so far: (succeeded, failed).
    pub fn reauth_counts(&self) -> (u64, u64) {
        (self.reauths[0].get(), self.reauths[1].get())
    }

    /// Records a failed upstream connection attempt. `reason` is a fixed word (`connect`,
    /// `tls`, `auth`, `timeout`, `no_token`), never an error message.
    pub fn upstream_connect_error(&self, reason: &'static str) {
        self.upstream_connect_errors_total
            .with_label_values(&[&self.upstream, reason])
            .inc();
    }

    /// The counter of commands sent over one shared connection (`connection` is a fixed
    /// name such as `resp2-0`).
    pub fn shared_commands(&self, connection: &str) -> IntCounter {
        self.shared_commands_total
            .with_label_values(&[&self.upstream, connection])
    }

    /// Records a session's move to a dedicated connection. `reason` is a fixed word.
    pub fn pinned(&self, reason: &'static str) {
        self.pins_total
            .with_label_values(&[&self.upstream, reason])
            .inc();
    }

    /// Records a read of the cluster topology.
    pub fn cluster_topology_read(&self, ok: bool) {
        self.cluster_topology_refreshes[result(ok)].inc();
    }

    /// The Prometheus text exposition of every metric of the registry (all upstreams).
    pub fn encode(&self) -> String {
        self.families.encode()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Increments a gauge on creation and decrements it on drop, so it cannot drift.
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    /// Increments `gauge` until the guard is dropped.
    pub fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_and_guards_balance() {
        let m = Metrics::new();
        {
            let _g = GaugeGuard::new(&m.client_connections);
            assert_eq!(m.client_connections.get(), 1);
        }
        assert_eq!(m.client_connections.get(), 0);
        let text = m.encode();
        assert!(text.contains("entra_redis_proxy_build_info{version=\""));
        assert!(text.contains(
            "entra_redis_proxy_token_refreshes_total{result=\"failure\",upstream=\"default\"} 0"
        ));
    }

    #[test]
    fn seconds_until_expiry_goes_negative_after_expiry() {
        let m = Metrics::new();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        m.set_token_seconds_until_expiry(Some(now + Duration::from_secs(90)), now);
        assert_eq!(m.token_seconds_until_expiry.get(), 90.0);
        m.set_token_seconds_until_expiry(Some(now - Duration::from_secs(12)), now);
        assert_eq!(m.token_seconds_until_expiry.get(), -12.0);
        m.set_token_seconds_until_expiry(None, now);
        assert_eq!(m.token_seconds_until_expiry.get(), 0.0);
        assert!(m
            .encode()
            .contains("entra_redis_proxy_token_seconds_until_expiry{upstream=\"default\"} 0"));
    }

    #[test]
    fn upstreams_are_labelled_apart() {
        let registry = MetricsRegistry::new();
        let a = registry.upstream("sessions");
        let b = registry.upstream("orders");
        let _g = GaugeGuard::new(&a.client_connections);
        b.reauth(true, Duration::from_millis(3));
        b.upstream_connect_error("tls");
        let text = registry.encode();
        assert!(text.contains("entra_redis_proxy_client_connections{upstream=\"sessions\"} 1"));
        assert!(text.contains("entra_redis_proxy_client_connections{upstream=\"orders\"} 0"));
        assert!(text
            .contains("entra_redis_proxy_reauth_total{result=\"success\",upstream=\"orders\"} 1"));
        assert!(text.contains(
            "entra_redis_proxy_reauth_total{result=\"success\",upstream=\"sessions\"} 0"
        ));
        assert!(text.contains(
            "entra_redis_proxy_upstream_connect_errors_total{reason=\"tls\",upstream=\"orders\"} 1"
        ));
        assert_eq!(b.reauth_counts(), (1, 0));
    }
}

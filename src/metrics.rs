//! Prometheus metrics, registered once in one struct.
//!
//! Names carry the prefix `entra_redis_proxy_`; counters end in `_total`, times in
//! `_seconds`. No label ever carries a secret, a key or a client address. Connection gauges
//! are held by RAII guards ([`GaugeGuard`]) so they cannot drift.

use std::time::{Duration, SystemTime};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

const PREFIX: &str = "entra_redis_proxy";

/// Every metric the proxy exports.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    registry: Registry,
    /// Expiry of the current token (Unix seconds).
    pub token_expiration_timestamp_seconds: Gauge,
    /// When the last token was obtained (Unix seconds).
    pub token_last_refresh_timestamp_seconds: Gauge,
    /// Seconds until the current token expires: negative once expired, 0 with no token.
    /// Set at scrape time by [`Metrics::set_token_seconds_until_expiry`].
    pub token_seconds_until_expiry: Gauge,
    /// Token acquisitions by result (`success`, `failure`).
    pub token_refreshes_total: IntCounterVec,
    /// Time taken by token acquisitions.
    pub token_refresh_duration_seconds: Histogram,
    /// Re-AUTHs of live upstream connections by result.
    pub reauth_total: IntCounterVec,
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
    /// Failed upstream connection attempts by reason.
    pub upstream_connect_errors_total: IntCounterVec,
    /// Upstream connections replaced after a loss, invisibly to their clients.
    pub upstream_reconnects_total: IntCounter,
    /// Commands forwarded to the cache.
    pub commands_total: IntCounter,
    /// Bytes relayed, by direction.
    pub bytes_total: IntCounterVec,
    /// Always 1, labelled with the version.
    pub build_info: IntGaugeVec,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(format!("{PREFIX}_{name}"), help)
}

fn hist(name: &str, help: &str, buckets: Vec<f64>) -> HistogramOpts {
    HistogramOpts::new(format!("{PREFIX}_{name}"), help).buckets(buckets)
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let latency = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0,
        ];
        let m = Metrics {
            token_expiration_timestamp_seconds: Gauge::with_opts(opts(
                "token_expiration_timestamp_seconds",
                "Expiry of the current access token, in Unix seconds.",
            ))
            .expect("metric"),
            token_last_refresh_timestamp_seconds: Gauge::with_opts(opts(
                "token_last_refresh_timestamp_seconds",
                "When the current access token was obtained, in Unix seconds.",
            ))
            .expect("metric"),
            token_seconds_until_expiry: Gauge::with_opts(opts(
                "token_seconds_until_expiry",
                "Seconds until the current access token expires; negative once expired, 0 when \
                 no token was ever obtained.",
            ))
            .expect("metric"),
            token_refreshes_total: IntCounterVec::new(
                opts("token_refreshes_total", "Token acquisitions, by result."),
                &["result"],
            )
            .expect("metric"),
            token_refresh_duration_seconds: Histogram::with_opts(hist(
                "token_refresh_duration_seconds",
                "Time taken by token acquisitions.",
                latency.clone(),
            ))
            .expect("metric"),
            reauth_total: IntCounterVec::new(
                opts(
                    "reauth_total",
                    "Re-authentications of live upstream connections, by result.",
                ),
                &["result"],
            )
            .expect("metric"),
            reauth_duration_seconds: Histogram::with_opts(hist(
                "reauth_duration_seconds",
                "Time from a token change to the re-AUTH reply on a connection.",
                latency.clone(),
            ))
            .expect("metric"),
            reauth_pending: IntGauge::with_opts(opts(
                "reauth_pending",
                "Sessions still authenticated with an older token than the current one.",
            ))
            .expect("metric"),
            client_connections: IntGauge::with_opts(opts(
                "client_connections",
                "Open client connections.",
            ))
            .expect("metric"),
            client_connections_total: IntCounter::with_opts(opts(
                "client_connections_total",
                "Client connections accepted.",
            ))
            .expect("metric"),
            client_protocol_errors_total: IntCounter::with_opts(opts(
                "client_protocol_errors_total",
                "Client connections closed for a protocol error.",
            ))
            .expect("metric"),
            upstream_connections: IntGauge::with_opts(opts(
                "upstream_connections",
                "Open upstream (TLS) connections to the cache.",
            ))
            .expect("metric"),
            upstream_connect_duration_seconds: Histogram::with_opts(hist(
                "upstream_connect_duration_seconds",
                "Time to open an upstream connection: TCP, TLS and AUTH.",
                latency,
            ))
            .expect("metric"),
            upstream_connect_errors_total: IntCounterVec::new(
                opts(
                    "upstream_connect_errors_total",
                    "Failed upstream connection attempts, by reason.",
                ),
                &["reason"],
            )
            .expect("metric"),
            upstream_reconnects_total: IntCounter::with_opts(opts(
                "upstream_reconnects_total",
                "Upstream connections replaced after a loss while idle, invisibly to the client.",
            ))
            .expect("metric"),
            commands_total: IntCounter::with_opts(opts(
                "commands_total",
                "Commands forwarded to the cache.",
            ))
            .expect("metric"),
            bytes_total: IntCounterVec::new(
                opts("bytes_total", "Bytes relayed, by direction."),
                &["direction"],
            )
            .expect("metric"),
            build_info: IntGaugeVec::new(
                opts("build_info", "Always 1; the label says the version."),
                &["version"],
            )
            .expect("metric"),
            registry,
        };
        m.register_all();
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for r in ["success", "failure"] {
            m.token_refreshes_total.with_label_values(&[r]);
            m.reauth_total.with_label_values(&[r]);
        }
        for d in ["client_to_upstream", "upstream_to_client"] {
            m.bytes_total.with_label_values(&[d]);
        }
        m
    }

    fn register_all(&self) {
        let r = &self.registry;
        let all: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.token_expiration_timestamp_seconds.clone()),
            Box::new(self.token_last_refresh_timestamp_seconds.clone()),
            Box::new(self.token_seconds_until_expiry.clone()),
            Box::new(self.token_refreshes_total.clone()),
            Box::new(self.token_refresh_duration_seconds.clone()),
            Box::new(self.reauth_total.clone()),
            Box::new(self.reauth_duration_seconds.clone()),
            Box::new(self.reauth_pending.clone()),
            Box::new(self.client_connections.clone()),
            Box::new(self.client_connections_total.clone()),
            Box::new(self.client_protocol_errors_total.clone()),
            Box::new(self.upstream_connections.clone()),
            Box::new(self.upstream_connect_duration_seconds.clone()),
            Box::new(self.upstream_connect_errors_total.clone()),
            Box::new(self.upstream_reconnects_total.clone()),
            Box::new(self.commands_total.clone()),
            Box::new(self.bytes_total.clone()),
            Box::new(self.build_info.clone()),
        ];
        for c in all {
            r.register(c).expect("metric names are unique");
        }
    }

    /// Records a token acquisition.
    pub fn token_refreshed(&self, ok: bool, took: Duration, expires_at: Option<SystemTime>) {
        let result = if ok { "success" } else { "failure" };
        self.token_refreshes_total
            .with_label_values(&[result])
            .inc();
        self.token_refresh_duration_seconds
            .observe(took.as_secs_f64());
        if let Some(exp) = expires_at {
            self.token_expiration_timestamp_seconds
                .set(crate::token::jwt::unix_seconds(exp));
            self.token_last_refresh_timestamp_seconds
                .set(crate::token::jwt::unix_seconds(SystemTime::now()));
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
        let result = if ok { "success" } else { "failure" };
        self.reauth_total.with_label_values(&[result]).inc();
        self.reauth_duration_seconds.observe(took.as_secs_f64());
    }

    /// Records a failed upstream connection attempt. `reason` is a fixed word (`connect`,
    /// `tls`, `auth`, `timeout`, `no_token`), never an error message.
    pub fn upstream_connect_error(&self, reason: &'static str) {
        self.upstream_connect_errors_total
            .with_label_values(&[reason])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
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
        assert!(text.contains("entra_redis_proxy_token_refreshes_total{result=\"failure\"} 0"));
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
            .contains("entra_redis_proxy_token_seconds_until_expiry 0"));
    }
}

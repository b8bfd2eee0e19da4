//! `entra-redis-proxy doctor`: checks the whole path once, with exactly the daemon's
//! configuration, and says for each failure what causes it and what fixes it.
//!
//! Steps, per upstream: the token (which credential answered), its claims (never the token
//! itself), DNS, TCP connect, the TLS handshake (version, certificate, verification), AUTH,
//! PING, a read-only permission probe (`GET` of a key that does not exist) and, in cluster
//! mode, every node the topology names. A step that fails skips the steps that need it.
//!
//! Exit codes: 0 when every check passes (warnings allowed), 1 when one fails, 64 for a
//! configuration error, as at start-up. [`Report::json`] is the same as one JSON object.
//!
//! Layout: this file runs the steps in order; `report` is the [`Report`] and how it is shown;
//! `context` what each step reads and records into; the steps by group: `identity` (token,
//! claims), `network` (DNS, TCP, TLS), `probe` (AUTH, PING, read), `cluster` (nodes).

mod cluster;
mod context;
mod identity;
mod network;
mod probe;
mod report;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use serde_json::Map;
use tokio::io::AsyncWriteExt;

use crate::config::Plan;
use crate::metrics::MetricsRegistry;
use crate::token;
use crate::upstream::UpstreamConnector;
use cluster::check_cluster;
use context::{Planned, Run};
use identity::check_token;
use network::{check_dns, check_tcp, check_tls};
use probe::{check_auth, check_ping, check_read};

pub use identity::REDIS_AUDIENCE;
pub use report::{Check, Report, Verdict};

/// Runs every check of the validated configuration `plan`; `offset` is the local time zone
/// for showing times (read before any thread starts).
pub async fn run(plan: &Plan, offset: time::UtcOffset) -> Report {
    let started = Instant::now();
    let registry = MetricsRegistry::new();
    let mut planned = Vec::new();
    for up in &plan.upstreams {
        let name = up.name.clone();
        let s = &up.settings;
        let prefix = |e: String| format!("upstream {name}: {e}");
        let connector = match UpstreamConnector::new(
            &up.cache,
            &up.tls_server_name,
            s.ca_file.as_deref(),
            (s.connect_timeout, s.tls_timeout, s.auth_timeout),
            Arc::new(registry.upstream(&name)),
        ) {
            Ok(c) => Arc::new(c),
            Err(e) => return Report::config_failure(prefix(e.to_string())),
        };
        let source = match token::build_source(s) {
            Ok(src) => src,
            Err(e) => return Report::config_failure(prefix(e.to_string())),
        };
        planned.push(Planned {
            name,
            plan: up.clone(),
            connector,
            source,
        });
    }
    let mut run = Run {
        report: Report::default(),
        upstream: None,
    };
    let names: Vec<&str> = planned.iter().map(|p| p.name.as_str()).collect();
    run.push(
        "config",
        Verdict::Ok,
        started,
        format!("valid; upstreams: {}", names.join(", ")),
        None,
        Map::new(),
    );
    for p in &planned {
        run.upstream = Some(p.name.clone());
        check_upstream(&mut run, p, offset).await;
    }
    run.report
}

/// The steps of one upstream.
async fn check_upstream(run: &mut Run, p: &Planned, offset: time::UtcOffset) {
    const AFTER_TOKEN: &[&str] = &["claims", "dns", "tcp", "tls", "auth", "ping", "read"];
    let s = &p.plan.settings;
    let Some(token) = check_token(run, p, offset).await else {
        run.skip(AFTER_TOKEN, "no usable token");
        return;
    };
    let Some(addrs) = check_dns(run, p).await else {
        run.skip(&["tcp", "tls", "auth", "ping", "read"], "DNS failed");
        return;
    };
    let Some(tcp) = check_tcp(run, p, &addrs).await else {
        run.skip(&["tls", "auth", "ping", "read"], "TCP connect failed");
        return;
    };
    let Some(mut tls) = check_tls(run, p, tcp, addrs[0], offset).await else {
        run.skip(&["auth", "ping", "read"], "TLS failed");
        return;
    };
    let auth_timeout = s.auth_timeout;
    if !check_auth(run, &mut tls, &token, auth_timeout).await {
        run.skip(&["ping", "read"], "AUTH failed");
        return;
    }
    check_ping(run, &mut tls, auth_timeout).await;
    check_read(run, &mut tls, &token, auth_timeout).await;
    if s.cluster {
        check_cluster(run, p, &mut tls, &token).await;
    }
    let _ = tls.shutdown().await;
}

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

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::BytesMut;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{CredentialKind, Settings, EXIT_USAGE};
use crate::metrics::MetricsRegistry;
use crate::resp::{self, ReplyScanner};
use crate::token::{self, AccessToken, TokenSource};
use crate::upstream::UpstreamConnector;

/// The audience Azure Cache for Redis accepts tokens for.
pub const REDIS_AUDIENCE: &str = "https://redis.azure.com";

/// A token issued more than this far in the future (`iat`, `nbf`) means the clocks disagree.
const CLOCK_SKEW_TOLERANCE: Duration = Duration::from_secs(60);

/// The key the permission probe reads; it need not exist.
const PROBE_KEY: &str = "entra-redis-proxy:doctor:probe";

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Passed.
    Ok,
    /// Passed, with something the operator should look at.
    Warn,
    /// Failed: the path does not work.
    Fail,
    /// Not run, because a step it needs failed.
    Skip,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "skip",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// The step: `config`, `token`, `claims`, `dns`, `tcp`, `tls`, `auth`, `ping`, `read`,
    /// `cluster`, `node`.
    pub step: String,
    /// The upstream it belongs to (`None` for the configuration).
    pub upstream: Option<String>,
    /// Its verdict.
    pub verdict: Verdict,
    /// How long it took, in milliseconds.
    pub ms: u64,
    /// What was found (never a secret).
    pub detail: String,
    /// For a failure or a warning: the cause and what to do.
    pub remedy: Option<String>,
    /// Structured facts (claims, certificate fields, addresses) for `--json`.
    pub facts: Map<String, Value>,
}

/// Everything doctor found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The checks, in order.
    pub checks: Vec<Check>,
    /// The configuration itself is wrong (exit 64).
    pub config_error: bool,
}

impl Report {
    /// A report of a configuration error alone (exit 64).
    pub fn config_failure(error: String) -> Report {
        let remedy = config_remedy(&error);
        Report {
            checks: vec![Check {
                step: "config".into(),
                upstream: None,
                verdict: Verdict::Fail,
                ms: 0,
                detail: error,
                remedy,
                facts: Map::new(),
            }],
            config_error: true,
        }
    }

    /// 0 all passed, 1 a check failed, 64 a configuration error.
    pub fn exit_code(&self) -> u8 {
        if self.config_error {
            EXIT_USAGE
        } else if self.checks.iter().any(|c| c.verdict == Verdict::Fail) {
            1
        } else {
            0
        }
    }

    /// The one-line summary.
    pub fn summary(&self) -> String {
        let count = |v| self.checks.iter().filter(|c| c.verdict == v).count();
        let (ok, warn, fail) = (
            count(Verdict::Ok),
            count(Verdict::Warn),
            count(Verdict::Fail),
        );
        match self.checks.iter().find(|c| c.verdict == Verdict::Fail) {
            None => format!(
                "doctor: all {} checks passed ({warn} with warnings)",
                ok + warn
            ),
            Some(first) => format!(
                "doctor: {fail} check(s) failed, first `{}`{}: {}",
                first.step,
                first
                    .upstream
                    .as_deref()
                    .map(|u| format!(" (upstream {u})"))
                    .unwrap_or_default(),
                first.detail
            ),
        }
    }

    /// The report as text: one line per check, remedies indented under it, then the summary.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let upstream = c
                .upstream
                .as_deref()
                .map(|u| format!("[{u}] "))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<4} {upstream}{:<7} {:>6}  {}",
                c.verdict.word(),
                c.step,
                format!("{}ms", c.ms),
                c.detail
            );
            if let Some(r) = &c.remedy {
                let _ = writeln!(out, "       -> {r}");
            }
        }
        let _ = writeln!(out, "{}", self.summary());
        out
    }

    /// The report as one JSON object.
    pub fn json(&self) -> Value {
        json!({
            "ok": self.exit_code() == 0,
            "exit_code": self.exit_code(),
            "summary": self.summary(),
            "checks": self.checks,
        })
    }
}

/// A remedy for a configuration error, where one is known.
fn config_remedy(error: &str) -> Option<String> {
    if error.contains(token::azure::env::FEDERATED_TOKEN_FILE)
        || error.to_ascii_lowercase().contains("federated token")
    {
        return Some(workload_identity_remedy());
    }
    None
}

fn workload_identity_remedy() -> String {
    format!(
        "workload identity needs its projected service-account token: the pod's service account \
         must carry the annotation azure.workload.identity/client-id, and the pod the label \
         azure.workload.identity/use: \"true\"; the webhook then sets {} and mounts the token",
        token::azure::env::FEDERATED_TOKEN_FILE
    )
}

/// Collects the checks of one run.
struct Run {
    report: Report,
    upstream: Option<String>,
}

impl Run {
    fn push(
        &mut self,
        step: &str,
        verdict: Verdict,
        started: Instant,
        detail: impl Into<String>,
        remedy: Option<String>,
        facts: Map<String, Value>,
    ) {
        self.report.checks.push(Check {
            step: step.into(),
            upstream: self.upstream.clone(),
            verdict,
            ms: started.elapsed().as_millis() as u64,
            detail: one_line(&detail.into()),
            remedy,
            facts,
        });
    }

    /// Records `steps` as skipped, except those this upstream already has a verdict for.
    fn skip(&mut self, steps: &[&str], why: &str) {
        for s in steps {
            let done = self
                .report
                .checks
                .iter()
                .any(|c| c.step == *s && c.upstream == self.upstream);
            if done {
                continue;
            }
            self.push(
                s,
                Verdict::Skip,
                Instant::now(),
                format!("not run: {why}"),
                None,
                Map::new(),
            );
        }
    }
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// What one upstream needs, built from its settings (configuration errors found here exit 64).
struct Planned {
    name: String,
    settings: Settings,
    connector: Arc<UpstreamConnector>,
    source: Arc<dyn TokenSource>,
}

/// Runs every check. `settings` must have passed [`Settings::validate`]; `offset` is the
/// local time zone for showing times (read before any thread starts).
pub async fn run(settings: &Settings, offset: time::UtcOffset) -> Report {
    let started = Instant::now();
    let upstreams = match settings.resolved_upstreams() {
        Ok(u) => u,
        Err(e) => return Report::config_failure(e.to_string()),
    };
    let registry = MetricsRegistry::new();
    let mut planned = Vec::new();
    for (name, s) in upstreams {
        let prefix = |e: String| format!("upstream {name}: {e}");
        let (host, port) = match s.upstream_host_port() {
            Ok(hp) => hp,
            Err(e) => return Report::config_failure(prefix(e.to_string())),
        };
        let connector = match UpstreamConnector::new(
            &host,
            port,
            &s.tls_name(),
            s.ca_file.as_deref(),
            (s.connect_timeout, s.tls_timeout, s.auth_timeout),
            Arc::new(registry.upstream(&name)),
        ) {
            Ok(c) => Arc::new(c),
            Err(e) => return Report::config_failure(prefix(e.to_string())),
        };
        let source = match token::build_source(&s) {
            Ok(src) => src,
            Err(e) => return Report::config_failure(prefix(e.to_string())),
        };
        planned.push(Planned {
            name,
            settings: s,
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
    let s = &p.settings;
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
    let started = Instant::now();
    match command(&mut tls, &["PING"], auth_timeout).await {
        Ok(r) if r == b"+PONG\r\n" => {
            run.push("ping", Verdict::Ok, started, "PONG", None, Map::new())
        }
        Ok(r) => run.push(
            "ping",
            Verdict::Fail,
            started,
            format!("unexpected reply {}", reply_text(&r)),
            None,
            Map::new(),
        ),
        Err(e) => run.push("ping", Verdict::Fail, started, e, None, Map::new()),
    }
    let started = Instant::now();
    match command(&mut tls, &["GET", PROBE_KEY], auth_timeout).await {
        // In a cluster the key may live on another node: Redis checks the ACL before it
        // redirects, so MOVED / ASK means the read is permitted.
        Ok(r) if r.starts_with(b"-MOVED ") || r.starts_with(b"-ASK ") => run.push(
            "read",
            Verdict::Ok,
            started,
            format!(
                "GET {PROBE_KEY} allowed (answered {}: the key lives on another node)",
                reply_text(&r)
            ),
            None,
            Map::new(),
        ),
        Ok(r) if resp::is_error_reply(&r) => {
            let text = reply_text(&r);
            let remedy = text.starts_with("NOPERM").then(|| {
                format!(
                    "authenticated as {user}, but its access policy does not permit GET (a read): \
                     assign the identity a policy that has the commands the application uses \
                     (Data Access Configuration, e.g. Data Reader / Data Contributor, or a custom \
                     policy with +get)",
                    user = token.username()
                )
            });
            run.push(
                "read",
                Verdict::Fail,
                started,
                format!("GET refused: {text}"),
                remedy,
                Map::new(),
            );
        }
        Ok(_) => run.push(
            "read",
            Verdict::Ok,
            started,
            format!("GET {PROBE_KEY} (a key that need not exist) allowed"),
            None,
            Map::new(),
        ),
        Err(e) => run.push("read", Verdict::Fail, started, e, None, Map::new()),
    }
    if s.cluster {
        check_cluster(run, p, &mut tls, &token).await;
    }
    let _ = tls.shutdown().await;
}

/// Obtains a token and decodes its claims. `None` when no usable token.
async fn check_token(run: &mut Run, p: &Planned, offset: time::UtcOffset) -> Option<AccessToken> {
    let s = &p.settings;
    let started = Instant::now();
    let fetched = match tokio::time::timeout(s.token_timeout, p.source.fetch()).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            let (describe, e) = (p.source.describe(), e.to_string());
            let detail = if e.starts_with(&describe) {
                e
            } else {
                format!("{describe}: {e}")
            };
            let remedy = token_remedy(s, &detail);
            run.push("token", Verdict::Fail, started, detail, remedy, Map::new());
            return None;
        }
        Err(_) => {
            run.push(
                "token",
                Verdict::Fail,
                started,
                format!("{}: no answer within {:?} (token_timeout)", p.source.describe(), s.token_timeout),
                Some("the identity endpoint does not answer: check network access to it (IMDS 169.254.169.254 on a VM, the authority host otherwise)".into()),
                Map::new(),
            );
            return None;
        }
    };
    run.push(
        "token",
        Verdict::Ok,
        started,
        format!("obtained from {}", p.source.describe()),
        None,
        Map::from_iter([("credential".to_owned(), json!(p.source.describe()))]),
    );

    let started = Instant::now();
    let secret = fetched.secret.expose();
    let claims = payload(secret).unwrap_or_default();
    let now = SystemTime::now();
    let num = |k: &str| claims.get(k).and_then(Value::as_f64);
    let text = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_owned);
    let username = s.username.clone().or_else(|| text("oid"));
    let mut facts = Map::new();
    for k in [
        "oid", "tid", "aud", "appid", "azp", "idtyp", "iat", "nbf", "exp",
    ] {
        if let Some(v) = claims.get(k) {
            facts.insert(k.into(), v.clone());
        }
    }
    let exp = fetched.expires_at;
    let expires_in = exp
        .duration_since(now)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_else(|e| -(e.duration().as_secs() as i64));
    facts.insert("exp_local".into(), json!(local_time(exp, offset)));
    facts.insert("expires_in_seconds".into(), json!(expires_in));
    facts.insert("auth_username".into(), json!(username));
    let mut detail = String::new();
    for k in ["oid", "tid", "aud", "appid", "azp", "idtyp"] {
        if let Some(v) = text(k) {
            let _ = write!(detail, "{k}={v} ");
        }
    }
    if let Some(iat) = num("iat") {
        let _ = write!(detail, "iat={} ", local_time(unix(iat), offset));
    }
    let _ = write!(
        detail,
        "exp={} (expires in {}); AUTH username {}",
        local_time(exp, offset),
        human(expires_in),
        username.as_deref().unwrap_or("(none)")
    );
    let Some(username) = username else {
        run.push(
            "claims",
            Verdict::Fail,
            started,
            detail,
            Some("the token has no `oid` claim: set `username` (--username) to the identity's object id".into()),
            facts,
        );
        return None;
    };
    if expires_in <= 0 {
        let remedy = if s.credential == CredentialKind::TokenFile {
            format!(
                "the token in {} has expired: the agent that writes this file stopped; check it (and its logs)",
                s.token_file.as_deref().map(|p| p.display().to_string()).unwrap_or_default()
            )
        } else {
            "the identity endpoint returned an expired token: check this machine's clock (NTP)"
                .into()
        };
        run.push(
            "claims",
            Verdict::Fail,
            started,
            format!("expired: {detail}"),
            Some(remedy),
            facts,
        );
        return None;
    }
    let mut warnings = Vec::new();
    match text("aud") {
        Some(aud) if aud.trim_end_matches('/') == REDIS_AUDIENCE => {}
        Some(aud) => warnings.push(format!(
            "audience `{aud}` is not {REDIS_AUDIENCE}: the cache refuses such a token; set scope to {REDIS_AUDIENCE}/.default"
        )),
        None => warnings.push(format!("the token has no `aud` claim; the cache expects {REDIS_AUDIENCE}")),
    }
    let future = ["nbf", "iat"].iter().find_map(|k| {
        let t = unix(num(k)?);
        let ahead = t.duration_since(now).ok()?;
        (ahead > CLOCK_SKEW_TOLERANCE).then_some((*k, ahead))
    });
    if let Some((k, ahead)) = future {
        warnings.push(format!(
            "the token's `{k}` is {}s in the future: this machine's clock is behind the issuer's; sync it (NTP){}",
            ahead.as_secs(),
            if k == "nbf" { " — the cache refuses the token until then" } else { "" }
        ));
    }
    let (verdict, remedy) = if warnings.is_empty() {
        (Verdict::Ok, None)
    } else {
        (Verdict::Warn, Some(warnings.join("; ")))
    };
    run.push("claims", verdict, started, detail, remedy, facts);
    Some(AccessToken::new(
        fetched.secret.clone(),
        username,
        exp,
        now,
        1,
    ))
}

/// The remedy for a failed token acquisition, from what the error says.
fn token_remedy(s: &Settings, error: &str) -> Option<String> {
    let lower = error.to_ascii_lowercase();
    if lower.contains("identity not found") || lower.contains("has not been assigned") {
        let which = s
            .client_id
            .as_deref()
            .or(s.object_id.as_deref())
            .or(s.resource_id.as_deref())
            .unwrap_or("(system-assigned)");
        return Some(format!(
            "the managed identity {which} is not assigned to this VM / pod: assign it (VM or scale set: Identity > User assigned; AKS: the node pool's or the pod's identity), or fix client_id / object_id / resource_id"
        ));
    }
    if error.contains(token::azure::env::FEDERATED_TOKEN_FILE) || lower.contains("federated token")
    {
        return Some(workload_identity_remedy());
    }
    if s.credential == CredentialKind::WorkloadIdentity && lower.contains("cannot read") {
        return Some(workload_identity_remedy());
    }
    if lower.contains("cannot read token file") {
        return Some("the token file is missing or unreadable: the agent that writes it has not run, or writes elsewhere; check token_file and the agent".into());
    }
    if lower.contains("aadsts7000215") {
        return Some(
            "the client secret is wrong or expired: put the current secret in client_secret_file"
                .into(),
        );
    }
    None
}

async fn check_dns(run: &mut Run, p: &Planned) -> Option<Vec<SocketAddr>> {
    let started = Instant::now();
    let addr = p.connector.addr().to_owned();
    let host = p.connector.host().to_owned();
    let timeout = p.settings.connect_timeout;
    let result = tokio::time::timeout(timeout, tokio::net::lookup_host(addr.clone())).await;
    let remedy = || {
        Some(format!(
            "the name {host} does not resolve here: check the spelling of upstream, and with a private endpoint the private DNS zone (privatelink.redis.cache.windows.net) and its link to this network"
        ))
    };
    match result {
        Ok(Ok(found)) => {
            let found: Vec<SocketAddr> = found.collect();
            if found.is_empty() {
                run.push(
                    "dns",
                    Verdict::Fail,
                    started,
                    format!("{host}: no address"),
                    remedy(),
                    Map::new(),
                );
                return None;
            }
            let list: Vec<String> = found.iter().map(|a| a.ip().to_string()).collect();
            run.push(
                "dns",
                Verdict::Ok,
                started,
                format!("{host} -> {}", list.join(", ")),
                None,
                Map::from_iter([("addresses".to_owned(), json!(list))]),
            );
            Some(found)
        }
        Ok(Err(e)) => {
            run.push(
                "dns",
                Verdict::Fail,
                started,
                format!("{host}: {e}"),
                remedy(),
                Map::new(),
            );
            None
        }
        Err(_) => {
            run.push(
                "dns",
                Verdict::Fail,
                started,
                format!("{host}: no answer within {timeout:?}"),
                remedy(),
                Map::new(),
            );
            None
        }
    }
}

async fn check_tcp(run: &mut Run, p: &Planned, addrs: &[SocketAddr]) -> Option<TcpStream> {
    let started = Instant::now();
    let target = addrs[0];
    let timeout = p.settings.connect_timeout;
    let shown = p.connector.addr();
    match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            run.push(
                "tcp",
                Verdict::Ok,
                started,
                format!("connected to {target}"),
                None,
                Map::new(),
            );
            Some(s)
        }
        Ok(Err(e)) => {
            let remedy = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                format!("connection refused: nothing listens on {shown}; check the port (6380 is Azure Cache for Redis's TLS port, 10000 Azure Managed Redis's) and that the cache runs")
            } else {
                format!("cannot reach {shown}: check routing, the cache's firewall rules and private endpoint")
            };
            run.push(
                "tcp",
                Verdict::Fail,
                started,
                format!("{target}: {e}"),
                Some(remedy),
                Map::new(),
            );
            None
        }
        Err(_) => {
            run.push(
                "tcp",
                Verdict::Fail,
                started,
                format!("{target}: connect timed out after {timeout:?}"),
                Some(format!("no answer from {shown}: a firewall, network security group or the cache's public network access setting drops the traffic")),
                Map::new(),
            );
            None
        }
    }
}

/// What the certificate says, for display.
fn describe_certificate(der: &[u8], offset: time::UtcOffset) -> (String, Map<String, Value>) {
    use x509_parser::prelude::*;
    let mut facts = Map::new();
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return ("certificate does not parse".into(), facts);
    };
    let subject = cert.subject().to_string();
    let issuer = cert.issuer().to_string();
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => sans.push(d.to_string()),
                GeneralName::IPAddress(ip) => sans.push(match ip.len() {
                    4 => std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string(),
                    16 => {
                        let mut b = [0u8; 16];
                        b.copy_from_slice(ip);
                        std::net::Ipv6Addr::from(b).to_string()
                    }
                    _ => format!("{ip:?}"),
                }),
                _ => {}
            }
        }
    }
    let not_after = cert.validity().not_after.timestamp();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = (not_after - now).div_euclid(86_400);
    facts.insert("subject".into(), json!(subject));
    facts.insert("issuer".into(), json!(issuer));
    facts.insert("sans".into(), json!(sans));
    facts.insert(
        "not_after".into(),
        json!(local_time(unix(not_after as f64), offset)),
    );
    facts.insert("days_to_expiry".into(), json!(days));
    (
        format!(
            "subject `{subject}`, SANs [{}], issuer `{issuer}`, expires in {days} days",
            sans.join(", ")
        ),
        facts,
    )
}

async fn check_tls(
    run: &mut Run,
    p: &Planned,
    tcp: TcpStream,
    target: SocketAddr,
    offset: time::UtcOffset,
) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
    let started = Instant::now();
    let (connector, name) = p.connector.tls();
    let timeout = p.settings.tls_timeout;
    let shown_name = name.to_str().into_owned();
    match tokio::time::timeout(timeout, connector.connect(name.clone(), tcp)).await {
        Ok(Ok(tls)) => {
            let (_, conn) = tls.get_ref();
            let version = conn
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default();
            let (cert_text, mut facts) = conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| describe_certificate(c, offset))
                .unwrap_or_default();
            facts.insert("version".into(), json!(version));
            facts.insert("verified".into(), json!(true));
            let days = facts
                .get("days_to_expiry")
                .and_then(Value::as_i64)
                .unwrap_or(i64::MAX);
            let (verdict, remedy) = if days < 14 {
                (
                    Verdict::Warn,
                    Some(format!("the cache's certificate expires in {days} days")),
                )
            } else {
                (Verdict::Ok, None)
            };
            run.push(
                "tls",
                verdict,
                started,
                format!("{version}, verified for {shown_name}; {cert_text}"),
                remedy,
                facts,
            );
            Some(tls)
        }
        Ok(Err(e)) => {
            // Look at the certificate anyway (a second handshake that verifies nothing and
            // sends nothing), to say what it names and who issued it.
            let (cert_text, facts) = match inspect_certificate(p, target, timeout).await {
                Some(der) => describe_certificate(&der, offset),
                None => (String::new(), Map::new()),
            };
            let rustls_error = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .cloned();
            let remedy = match &rustls_error {
                Some(rustls::Error::InvalidCertificate(ce)) => {
                    use rustls::CertificateError as C;
                    match ce {
                        C::NotValidForName | C::NotValidForNameContext { .. } => Some(format!(
                            "TLS name mismatch: the certificate does not name `{shown_name}` (it names {}); connect by the cache's host name, or set tls_server_name to a name the certificate carries",
                            facts.get("sans").map(|v| v.to_string()).unwrap_or_default()
                        )),
                        C::UnknownIssuer => Some(format!(
                            "untrusted CA: the certificate's issuer {} is not in the system trust store nor ca_file; install the CA (the ca-certificates package) or set ca_file to it",
                            facts.get("issuer").map(|v| v.to_string()).unwrap_or_default()
                        )),
                        C::Expired | C::ExpiredContext { .. } => Some("the cache's certificate has expired (or this machine's clock is far ahead): check the clock".into()),
                        _ => None,
                    }
                }
                _ => None,
            };
            let mut detail = format!("handshake with {} failed: {e}", p.connector.addr());
            if !cert_text.is_empty() {
                let _ = write!(detail, "; the certificate: {cert_text}");
            }
            run.push("tls", Verdict::Fail, started, detail, remedy, facts);
            None
        }
        Err(_) => {
            run.push(
                "tls",
                Verdict::Fail,
                started,
                format!("no TLS handshake within {timeout:?}"),
                Some("the port answers TCP but not TLS: is it the cache's TLS port (6380 / 10000), not the non-TLS 6379?".into()),
                Map::new(),
            );
            None
        }
    }
}

/// A certificate verifier that accepts anything and keeps the leaf certificate; used only to
/// show an operator the certificate a failed handshake refused. Nothing is sent over it.
#[derive(Debug)]
struct Recorder {
    leaf: Mutex<Option<Vec<u8>>>,
    schemes: Vec<rustls::SignatureScheme>,
}

impl rustls::client::danger::ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.leaf.lock().unwrap_or_else(|e| e.into_inner()) = Some(end_entity.to_vec());
        // Refuse after recording: the handshake stops here, nothing is ever sent.
        Err(rustls::Error::General("recorded".into()))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("recorded".into()))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("recorded".into()))
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.schemes.clone()
    }
}

/// The leaf certificate the cache presents, without verifying it (for display only).
async fn inspect_certificate(
    p: &Planned,
    target: SocketAddr,
    timeout: Duration,
) -> Option<Vec<u8>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let recorder = Arc::new(Recorder {
        leaf: Mutex::new(None),
        schemes: provider
            .signature_verification_algorithms
            .supported_schemes(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let (_, name) = p.connector.tls();
    let _ = tokio::time::timeout(timeout, async {
        let tcp = TcpStream::connect(target).await.ok()?;
        connector.connect(name.clone(), tcp).await.ok()
    })
    .await;
    let leaf = recorder
        .leaf
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    leaf
}

/// AUTH with the token; true on `+OK`.
async fn check_auth<S: AsyncRead + AsyncWrite + Unpin>(
    run: &mut Run,
    stream: &mut S,
    token: &AccessToken,
    timeout: Duration,
) -> bool {
    let started = Instant::now();
    let user = token.username().to_owned();
    let reply = match tokio::time::timeout(timeout, async {
        stream
            .write_all(token.auth_command())
            .await
            .map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        read_reply(stream).await
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(format!("no AUTH reply within {timeout:?}")),
    };
    match reply {
        Ok(r) if r == b"+OK\r\n" => {
            run.push(
                "auth",
                Verdict::Ok,
                started,
                format!("AUTH as {user} accepted"),
                None,
                Map::new(),
            );
            true
        }
        Ok(r) => {
            let text = reply_text(&r);
            let remedy = if text.starts_with("WRONGPASS") {
                Some(format!(
                    "the cache does not know this identity: assign an access policy (e.g. Data Owner or Data Contributor) to the identity with object id {user} under the cache's Data Access Configuration, and check that Microsoft Entra Authentication is enabled on the cache"
                ))
            } else {
                None
            };
            run.push(
                "auth",
                Verdict::Fail,
                started,
                format!("AUTH as {user} refused: {text}"),
                remedy,
                Map::new(),
            );
            false
        }
        Err(e) => {
            run.push("auth", Verdict::Fail, started, e, None, Map::new());
            false
        }
    }
}

/// In cluster mode: CLUSTER NODES, then AUTH and PING on every node the topology names, with
/// the local port the proxy would give it.
async fn check_cluster<S: AsyncRead + AsyncWrite + Unpin>(
    run: &mut Run,
    p: &Planned,
    stream: &mut S,
    token: &AccessToken,
) {
    use crate::cluster::rewrite::{self, NodeMap, Topology};
    let started = Instant::now();
    let reply = match command(stream, &["CLUSTER", "NODES"], p.settings.auth_timeout).await {
        Ok(r) if !resp::is_error_reply(&r) => r,
        Ok(r) => {
            run.push(
                "cluster",
                Verdict::Fail,
                started,
                format!("CLUSTER NODES refused: {}", reply_text(&r)),
                Some("cluster = true needs a cache with the OSS cluster policy (Cluster API); for Enterprise or non-clustered caches set cluster = false".into()),
                Map::new(),
            );
            return;
        }
        Err(e) => {
            run.push("cluster", Verdict::Fail, started, e, None, Map::new());
            return;
        }
    };
    /// Records the nodes in order; gives each the local port the proxy would (the range in
    /// order of first sight).
    struct Recording {
        ip: std::net::IpAddr,
        ports: Option<std::ops::RangeInclusive<u16>>,
        nodes: Mutex<Vec<(String, u16, Option<u16>)>>,
    }
    impl NodeMap for Recording {
        fn local_for(&self, endpoint: &str, port: u16) -> Option<SocketAddr> {
            let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, _, l)) = nodes.iter().find(|(e, p, _)| e == endpoint && *p == port) {
                return Some(SocketAddr::new(self.ip, l.unwrap_or(0)));
            }
            let local = self.ports.clone().and_then(|mut r| r.nth(nodes.len()));
            nodes.push((endpoint.to_owned(), port, local));
            Some(SocketAddr::new(self.ip, local.unwrap_or(0)))
        }
    }
    let ip = p
        .settings
        .listen_addrs()
        .ok()
        .and_then(|l| {
            l.iter().find_map(|a| match a {
                crate::config::ListenAddr::Tcp(a) => Some(a.ip()),
                _ => None,
            })
        })
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    let recording = Recording {
        ip,
        ports: p.settings.cluster_port_range().ok().flatten(),
        nodes: Mutex::new(Vec::new()),
    };
    if let Err(e) = rewrite::rewrite_topology(Topology::Nodes, &reply, &recording) {
        run.push(
            "cluster",
            Verdict::Fail,
            started,
            format!("CLUSTER NODES did not parse: {e}"),
            None,
            Map::new(),
        );
        return;
    }
    let nodes = recording
        .nodes
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    run.push(
        "cluster",
        Verdict::Ok,
        started,
        format!("the topology names {} node(s)", nodes.len()),
        None,
        Map::new(),
    );
    for (endpoint, port, local) in nodes {
        let started = Instant::now();
        let node = p.connector.for_node(&endpoint, port);
        let local = local
            .map(|l| SocketAddr::new(ip, l).to_string())
            .unwrap_or_else(|| "an ephemeral local port".into());
        let facts = Map::from_iter([
            ("node".to_owned(), json!(node.addr())),
            ("local".to_owned(), json!(local)),
        ]);
        match node.connect(token).await {
            Ok(mut s) => {
                let pong = command(&mut s, &["PING"], p.settings.auth_timeout).await;
                let _ = s.shutdown().await;
                match pong {
                    Ok(r) if r == b"+PONG\r\n" => run.push(
                        "node",
                        Verdict::Ok,
                        started,
                        format!("{} (local {local}): TLS, AUTH and PING ok", node.addr()),
                        None,
                        facts,
                    ),
                    Ok(r) => run.push("node", Verdict::Fail, started, format!("{}: PING answered {}", node.addr(), reply_text(&r)), None, facts),
                    Err(e) => run.push("node", Verdict::Fail, started, format!("{}: {e}", node.addr()), None, facts),
                }
            }
            Err(e) => run.push(
                "node",
                Verdict::Fail,
                started,
                format!("{} (local {local}): {e}", node.addr()),
                Some("every node must be reachable from here on the port the topology names (check firewall rules for the shard ports)".into()),
                facts,
            ),
        }
    }
}

/// Sends one command and reads its reply, bounded by `timeout`.
async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    args: &[&str],
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    tokio::time::timeout(timeout, async {
        stream
            .write_all(&resp::encode_command(args))
            .await
            .map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        read_reply(stream).await
    })
    .await
    .map_err(|_| format!("no reply to {} within {timeout:?}", args[0]))?
}

async fn read_reply<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, String> {
    let mut buf = BytesMut::with_capacity(1024);
    let mut scanner = ReplyScanner::default();
    loop {
        if let Some(len) = scanner
            .scan(&buf, 64 * 1024 * 1024)
            .map_err(|e| e.to_string())?
        {
            return Ok(buf[..len].to_vec());
        }
        if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("the cache closed the connection".into());
        }
    }
}

fn reply_text(reply: &[u8]) -> String {
    resp::error_text(reply)
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(reply).trim().to_owned())
}

/// The JWT payload as a JSON object (claims only; the token is never kept or shown).
fn payload(token: &str) -> Option<Map<String, Value>> {
    let part = token.trim().split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn unix(secs: f64) -> SystemTime {
    if secs.is_finite() && secs >= 0.0 {
        UNIX_EPOCH + Duration::from_secs_f64(secs)
    } else {
        UNIX_EPOCH
    }
}

/// `t` in the local time zone, RFC 3339.
fn local_time(t: SystemTime, offset: time::UtcOffset) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .map(|d| d.to_offset(offset))
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

/// `3599` -> `59m59s`; negative for the past (`-12s`).
fn human(secs: i64) -> String {
    let sign = if secs < 0 { "-" } else { "" };
    let s = secs.unsigned_abs();
    match s {
        0..=59 => format!("{sign}{s}s"),
        60..=3599 => format!("{sign}{}m{:02}s", s / 60, s % 60),
        _ => format!("{sign}{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human(5), "5s");
        assert_eq!(human(3599), "59m59s");
        assert_eq!(human(7260), "2h01m");
        assert_eq!(human(-12), "-12s");
    }

    #[test]
    fn exit_codes_follow_the_worst_verdict() {
        let mut r = Report::default();
        assert_eq!(r.exit_code(), 0);
        r.checks.push(Check {
            step: "tls".into(),
            upstream: Some("default".into()),
            verdict: Verdict::Warn,
            ms: 1,
            detail: "x".into(),
            remedy: None,
            facts: Map::new(),
        });
        assert_eq!(r.exit_code(), 0);
        r.checks[0].verdict = Verdict::Fail;
        assert_eq!(r.exit_code(), 1);
        assert_eq!(Report::config_failure("bad".into()).exit_code(), 64);
        assert!(r.summary().contains("first `tls` (upstream default)"));
    }

    #[test]
    fn payload_reads_claims_and_rejects_garbage() {
        let t = token::jwt::unsigned_jwt(&json!({"oid": "o", "aud": REDIS_AUDIENCE}));
        assert_eq!(payload(&t).unwrap()["oid"], "o");
        assert!(payload("not-a-jwt").is_none());
    }
}

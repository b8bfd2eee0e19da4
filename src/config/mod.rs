//! The typed configuration: defaults < file (`--config`, TOML) < environment
//! (`ENTRA_REDIS_PROXY_*`) < flags, validated at start-up.
//!
//! [`load_from`] parses the command line, layers the sources with the `config` crate and
//! returns the merged [`Settings`]; [`Settings::validate`] then refuses anything unusable with
//! a [`ConfigError`] that names the key and says how to set it.
//!
//! Layout:
//! - this file: the [`Settings`] and [`UpstreamSettings`] types, their defaults, and the
//!   values derived from them ([`ListenAddr`], [`RefreshPolicy`]);
//! - `cli`: the command line ([`Cli`]); `load`: layering file, environment and flags;
//! - `validate`: the rules of [`Settings::validate`] and the per-upstream derivations;
//! - `print`: `--print-config` ([`Settings::redacted_toml`]);
//! - `error`: [`ConfigError`]; `parse`: [`count`] and [`duration`]
//!   values (`HOST:PORT` is [`crate::addr::HostPort`]).

mod cli;
mod error;
mod load;
mod parse;
mod print;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

pub use cli::Cli;
pub use error::ConfigError;
pub use load::{load_from, load_from_env, Loaded};
pub use parse::{count, duration};

/// Prefix of the environment variables that configure the proxy (`ENTRA_REDIS_PROXY_UPSTREAM`).
pub const ENV_PREFIX: &str = "ENTRA_REDIS_PROXY";

pub use crate::addr::DEFAULT_UPSTREAM_PORT;

/// Exit code for a configuration or usage error (`EX_USAGE` from sysexits.h).
pub const EXIT_USAGE: u8 = 64;

/// Which identity provides tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialKind {
    /// Chain: environment service principal, workload identity, managed identity, Azure CLI.
    #[default]
    Default,
    /// Azure managed identity (system- or user-assigned).
    ManagedIdentity,
    /// AKS workload identity (federated token file).
    WorkloadIdentity,
    /// Service principal with a client secret.
    ClientSecret,
    /// Service principal with a certificate.
    ClientCertificate,
    /// The logged-in Azure CLI.
    AzureCli,
    /// A file holding a raw access token, written by another agent.
    TokenFile,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The whole configuration. Every field has a default; see `config/entra-redis-proxy.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Local listeners: `HOST:PORT` (TCP) or `unix:/path`. Default `127.0.0.1:6379`.
    pub listen: Vec<String>,
    /// Allow binding a non-loopback address (anyone who reaches it acts as the Entra identity).
    pub allow_non_loopback: bool,
    /// Most client connections at once; further clients wait in the accept queue.
    #[serde(deserialize_with = "count::deserialize")]
    pub max_connections: usize,
    /// Re-AUTHs in flight at once across all sessions when a token is refreshed.
    #[serde(deserialize_with = "count::deserialize")]
    pub reauth_concurrency: usize,
    /// Upstream connections kept connected and authenticated, ready for new clients (per
    /// upstream, per node in cluster mode); 0 = none.
    #[serde(deserialize_with = "count::deserialize")]
    pub warm_connections: usize,
    /// Runtime threads: 0 = one per CPU, 1 = everything on one thread.
    #[serde(deserialize_with = "count::deserialize")]
    pub threads: usize,
    /// The cache: `HOST[:PORT]`, port 6380 by default.
    pub upstream: String,
    /// Name to verify the cache's certificate against (SNI too); default the upstream host.
    pub tls_server_name: Option<String>,
    /// Extra trusted CA certificates (PEM) for the cache, beside the system roots.
    pub ca_file: Option<PathBuf>,
    /// TCP connect timeout to the cache.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// TLS handshake timeout.
    #[serde(with = "duration")]
    pub tls_timeout: Duration,
    /// Time allowed for the cache to answer AUTH.
    #[serde(with = "duration")]
    pub auth_timeout: Duration,
    /// Where tokens come from.
    pub credential: CredentialKind,
    /// The token file (`credential = "token-file"`).
    pub token_file: Option<PathBuf>,
    /// How often the token file is checked for a new token.
    #[serde(with = "duration")]
    pub token_file_poll: Duration,
    /// AUTH username; default the token's `oid` claim.
    pub username: Option<String>,
    /// Token scope.
    pub scope: String,
    /// Entra tenant (client-secret, client-certificate, workload-identity).
    pub tenant_id: Option<String>,
    /// Application (client) id; for managed identity, a user-assigned identity's client id.
    pub client_id: Option<String>,
    /// User-assigned managed identity by object id.
    pub object_id: Option<String>,
    /// User-assigned managed identity by resource id.
    pub resource_id: Option<String>,
    /// File holding the client secret (never the secret itself on a command line).
    pub client_secret_file: Option<PathBuf>,
    /// Certificate for client-certificate: PEM with key, or PFX.
    pub certificate_file: Option<PathBuf>,
    /// File holding the PFX password.
    pub certificate_password_file: Option<PathBuf>,
    /// Entra authority host (sovereign clouds).
    pub authority_host: Option<String>,
    /// Extra trusted CA (PEM) for the identity endpoints.
    pub identity_ca_file: Option<PathBuf>,
    /// Refresh at this fraction of the token's lifetime.
    pub refresh_ratio: f64,
    /// Refresh at least this long before expiry.
    #[serde(with = "duration")]
    pub refresh_margin: Duration,
    /// Jitter as a fraction of the remaining lifetime.
    pub refresh_jitter: f64,
    /// First retry delay after a failed acquisition.
    #[serde(with = "duration")]
    pub retry_initial: Duration,
    /// Longest retry delay.
    #[serde(with = "duration")]
    pub retry_max: Duration,
    /// Time allowed for one token acquisition.
    #[serde(with = "duration")]
    pub token_timeout: Duration,
    /// How long a client command waits for the first token before an error reply.
    #[serde(with = "duration")]
    pub startup_wait: Duration,
    /// Admin HTTP listener (metrics, health); empty string disables it.
    pub admin_listen: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Largest bulk string a client or the cache may send.
    #[serde(deserialize_with = "count::deserialize")]
    pub max_bulk_len: usize,
    /// Most arguments in one client command.
    #[serde(deserialize_with = "count::deserialize")]
    pub max_command_args: usize,
    /// Longest inline command line.
    #[serde(deserialize_with = "count::deserialize")]
    pub max_inline_len: usize,
    /// On SIGTERM, how long the proxy goes on serving its clients (readiness already failing)
    /// before it closes their sessions at a reply boundary and exits; it exits sooner once no
    /// client is connected. SIGINT closes sessions at once and waits a fifth of it.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// File mode of `unix:` listener sockets, as an octal string (`"0660"`).
    pub socket_mode: String,
    /// File holding the password local clients must send with `AUTH`; none means local
    /// clients are not asked for one.
    pub client_password_file: Option<PathBuf>,
    /// When a subscriber's or MONITOR's upstream connection is lost, resubscribe silently on
    /// a new one instead of closing the client (what was published in between is lost).
    pub reconnect_subscribers: bool,
    /// The cache is a Redis Cluster (OSS cluster policy): discover its nodes, give each a
    /// local listener and rewrite the addresses the cluster tells clients.
    pub cluster: bool,
    /// Local ports for cluster nodes, `START-END`; default the 100 ports after the first
    /// `listen` port (ephemeral ports when that port is 0).
    pub cluster_ports: Option<String>,
    /// How often the cluster topology is re-read to follow resharding and failover.
    #[serde(with = "duration")]
    pub cluster_refresh: Duration,
    /// Several caches from one proxy: each entry has its own listener, cache and identity;
    /// keys it leaves out take the top-level value. Empty: one cache, from the top-level keys.
    pub upstreams: Vec<UpstreamSettings>,
}

/// One entry of `[[upstreams]]`. Every key but `name` is optional and defaults to the
/// top-level key of the same name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamSettings {
    /// Label of this upstream in logs and metrics: letters, digits, `-` and `_`.
    pub name: String,
    /// Local listeners of this upstream (required).
    pub listen: Option<Vec<String>>,
    /// The cache, `HOST[:PORT]` (required).
    pub upstream: Option<String>,
    /// See [`Settings::tls_server_name`].
    pub tls_server_name: Option<String>,
    /// See [`Settings::ca_file`].
    pub ca_file: Option<PathBuf>,
    /// See [`Settings::credential`].
    pub credential: Option<CredentialKind>,
    /// See [`Settings::token_file`].
    pub token_file: Option<PathBuf>,
    /// See [`Settings::username`].
    pub username: Option<String>,
    /// See [`Settings::scope`].
    pub scope: Option<String>,
    /// See [`Settings::tenant_id`].
    pub tenant_id: Option<String>,
    /// See [`Settings::client_id`].
    pub client_id: Option<String>,
    /// See [`Settings::object_id`].
    pub object_id: Option<String>,
    /// See [`Settings::resource_id`].
    pub resource_id: Option<String>,
    /// See [`Settings::client_secret_file`].
    pub client_secret_file: Option<PathBuf>,
    /// See [`Settings::certificate_file`].
    pub certificate_file: Option<PathBuf>,
    /// See [`Settings::certificate_password_file`].
    pub certificate_password_file: Option<PathBuf>,
    /// See [`Settings::authority_host`].
    pub authority_host: Option<String>,
    /// See [`Settings::identity_ca_file`].
    pub identity_ca_file: Option<PathBuf>,
    /// See [`Settings::client_password_file`].
    pub client_password_file: Option<PathBuf>,
    /// See [`Settings::cluster`].
    pub cluster: Option<bool>,
    /// See [`Settings::cluster_ports`].
    pub cluster_ports: Option<String>,
}

/// Keys an `[[upstreams]]` entry can set (errors about them name the entry).
const UPSTREAM_KEYS: &[&str] = &[
    "name",
    "listen",
    "upstream",
    "tls_server_name",
    "ca_file",
    "credential",
    "token_file",
    "username",
    "scope",
    "tenant_id",
    "client_id",
    "object_id",
    "resource_id",
    "client_secret_file",
    "certificate_file",
    "certificate_password_file",
    "authority_host",
    "identity_ca_file",
    "client_password_file",
    "cluster",
    "cluster_ports",
];

/// The name of the upstream configured by the top-level keys alone.
pub const DEFAULT_UPSTREAM_NAME: &str = "default";

/// Warm connections kept ready by default: enough for a burst of a few new clients without a
/// handshake, few enough not to matter against the cache's connection limit.
pub const DEFAULT_WARM_CONNECTIONS: usize = 2;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: vec!["127.0.0.1:6379".into()],
            allow_non_loopback: false,
            max_connections: 10_000,
            reauth_concurrency: 64,
            warm_connections: DEFAULT_WARM_CONNECTIONS,
            threads: 0,
            upstream: String::new(),
            tls_server_name: None,
            ca_file: None,
            connect_timeout: Duration::from_secs(5),
            tls_timeout: Duration::from_secs(5),
            auth_timeout: Duration::from_secs(5),
            credential: CredentialKind::Default,
            token_file: None,
            token_file_poll: Duration::from_secs(1),
            username: None,
            scope: "https://redis.azure.com/.default".into(),
            tenant_id: None,
            client_id: None,
            object_id: None,
            resource_id: None,
            client_secret_file: None,
            certificate_file: None,
            certificate_password_file: None,
            authority_host: None,
            identity_ca_file: None,
            refresh_ratio: 0.7,
            refresh_margin: Duration::from_secs(180),
            refresh_jitter: 0.1,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            token_timeout: Duration::from_secs(30),
            startup_wait: Duration::from_secs(10),
            admin_listen: "127.0.0.1:9464".into(),
            log_format: LogFormat::Text,
            max_bulk_len: 512 * 1024 * 1024,
            max_command_args: 1024 * 1024,
            max_inline_len: 64 * 1024,
            shutdown_grace: Duration::from_secs(25),
            socket_mode: "0660".into(),
            client_password_file: None,
            reconnect_subscribers: false,
            cluster: false,
            cluster_ports: None,
            cluster_refresh: Duration::from_secs(10),
            upstreams: Vec::new(),
        }
    }
}

/// A local listener, parsed from one `listen` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address (`HOST:PORT`; a host name is resolved once, at start-up).
    Tcp(SocketAddr),
    /// A Unix domain socket (`unix:/path`).
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The token manager's refresh and retry policy: when a token is refreshed and how a failed
/// acquisition is retried. Built by [`Settings::refresh_policy`]; the schedule it implies
/// (`refresh_at`, `retry_delay`) is computed in `token::manager`.
#[derive(Debug, Clone)]
pub struct RefreshPolicy {
    /// Fraction of the lifetime after which a token is refreshed (0.7).
    pub ratio: f64,
    /// A token is refreshed at least this long before it expires (3 minutes).
    pub margin: Duration,
    /// Random jitter, as a fraction of the remaining lifetime (0.1).
    pub jitter: f64,
    /// First retry delay after a failure (1 s); doubled after each failure.
    pub retry_initial: Duration,
    /// Upper bound of the retry delay (60 s).
    pub retry_max: Duration,
    /// Time allowed for one acquisition (30 s).
    pub timeout: Duration,
    /// Shortest interval between two refreshes requested by sessions (WRONGPASS/NOAUTH).
    pub min_forced_interval: Duration,
    /// The AUTH username; `None` means the token's `oid` claim.
    pub username: Option<String>,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            ratio: 0.7,
            margin: Duration::from_secs(180),
            jitter: 0.1,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
            min_forced_interval: Duration::from_secs(5),
            username: None,
        }
    }
}

/// The environment variable for a top-level key.
fn env_var_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}_{}",
        key.to_ascii_uppercase().replace('.', "__")
    )
}

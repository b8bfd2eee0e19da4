//! The typed configuration: defaults < file (`--config`, TOML) < environment
//! (`ENTRA_REDIS_PROXY_*`) < flags, validated at start-up.
//!
//! [`load_from`] parses the command line, layers the sources with the `config` crate and
//! returns the merged [`Settings`]; [`Settings::validate`] then refuses anything unusable with
//! a [`ConfigError`] that names the key and says how to set it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that configure the proxy (`ENTRA_REDIS_PROXY_UPSTREAM`).
pub const ENV_PREFIX: &str = "ENTRA_REDIS_PROXY";

/// Port of the cache when `upstream` names none (Azure's TLS port).
pub const DEFAULT_UPSTREAM_PORT: u16 = 6380;

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

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: vec!["127.0.0.1:6379".into()],
            allow_non_loopback: false,
            max_connections: 10_000,
            reauth_concurrency: 64,
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

/// A configuration or command-line error. Its `Display` is the whole message for the user.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The command line could not be parsed, or asked for `--help` / `--version`.
    #[error("{}", .0.render())]
    Cli(#[from] clap::Error),
    /// The file given with `--config` could not be read.
    #[error("cannot read config file {}: {reason}", path.display())]
    ReadFile {
        /// The path given with `--config`.
        path: PathBuf,
        /// Why reading failed.
        reason: String,
    },
    /// The file given with `--config` is not valid TOML.
    #[error("config file {} is not valid TOML: {reason}", path.display())]
    ParseFile {
        /// The path given with `--config`.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// A key that the proxy does not know, in the file or the environment.
    #[error("unknown key `{key}` {origin}: check its spelling; the keys are listed in docs/configuration.md and by --help")]
    UnknownKey {
        /// The key as written, in config-file spelling.
        key: String,
        /// Where it came from ("in config file x" or "from environment variable Y").
        origin: String,
    },
    /// An environment variable with our prefix holds bytes that are not UTF-8.
    #[error("environment variable {name} is not valid UTF-8")]
    NonUnicodeEnv {
        /// The variable's name.
        name: String,
    },
    /// A value of the wrong type or shape (`refresh_ratio = "abc"`, a bad duration).
    #[error("`{key}` has a bad value {origin}: {reason}: set {}", how_to_set(key))]
    BadValue {
        /// The key, in config-file spelling.
        key: String,
        /// Where the value came from.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value that parsed but is not allowed (out of range, missing, inconsistent).
    #[error("`{key}` {problem}: set {}", how_to_set(key))]
    Invalid {
        /// The key, in config-file spelling.
        key: String,
        /// What is wrong, starting with the value when there is one (`= 1.5 is out of range`).
        problem: String,
    },
    /// A problem the `config` crate reports without naming a key (rare).
    #[error("{0}")]
    Other(String),
    /// A TCP listener that is not on loopback, without `allow_non_loopback`.
    #[error(
        "`listen` entry `{entry}` is not a loopback address ({addr}): anyone who can reach this \
         port acts with the proxy's Entra identity on the cache. Keep listen on 127.0.0.1, [::1] \
         or a unix: socket; or, if the port is protected by other means, set allow_non_loopback \
         (allow_non_loopback = true in the config file, ENTRA_REDIS_PROXY_ALLOW_NON_LOOPBACK=true, \
         or --allow-non-loopback) and client_password_file (--client-password-file)"
    )]
    NonLoopback {
        /// The `listen` entry as written.
        entry: String,
        /// The address it resolved to.
        addr: SocketAddr,
    },
}

/// "refresh_ratio in the config file, ENTRA_REDIS_PROXY_REFRESH_RATIO, or --refresh-ratio".
fn how_to_set(key: &str) -> String {
    if key == "upstreams" || key.starts_with("upstreams[") {
        return "it in that [[upstreams]] entry of the config file".to_owned();
    }
    format!(
        "{key} in the config file, {}, or --{}",
        env_var_name(key),
        key.replace('_', "-")
    )
}

/// The environment variable for a top-level key.
fn env_var_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}_{}",
        key.to_ascii_uppercase().replace('.', "__")
    )
}

/// The command line. Every flag is optional and overrides the file and the environment only
/// when given; defaults live in [`Settings::default`].
#[derive(Debug, Default, Parser)]
#[command(
    name = "entra-redis-proxy",
    version,
    about = "Lets any Redis client use Azure Cache for Redis with Microsoft Entra ID tokens",
    long_about = "Lets any Redis client use Azure Cache for Redis / Azure Managed Redis with \
                  Microsoft Entra ID: point the client at the local listener; the proxy opens a \
                  TLS connection per client, AUTHs with an Entra token and re-AUTHs before it \
                  expires.\n\nSettings come from defaults < the --config file (TOML) < \
                  ENTRA_REDIS_PROXY_<KEY> environment variables < these flags. Durations are \
                  written 250ms, 5s, 3m or 1h.",
    after_help = "Every flag has a config-file key (the flag name with _ for -) and an environment \
                  variable ENTRA_REDIS_PROXY_<KEY>, e.g. --refresh-margin, refresh_margin, \
                  ENTRA_REDIS_PROXY_REFRESH_MARGIN.\n\n`entra-redis-proxy doctor [--json] [FLAGS]` checks the \
                  whole path once with the same configuration (token, claims, DNS, TCP, TLS, AUTH, \
                  PING, a read, every cluster node) and exits 0, 1 or 64."
)]
pub struct Cli {
    /// TOML config file; its keys are the flag names with `_` for `-`.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML (secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,

    /// Local listener, HOST:PORT or unix:/path; repeat for several [default: 127.0.0.1:6379].
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<String>,
    /// Allow a non-loopback listener: anyone who reaches it acts as the proxy's Entra identity.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub allow_non_loopback: Option<bool>,
    /// Most client connections at once; more wait in the accept queue [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Re-AUTHs in flight at once across all sessions after a token refresh [default: 64].
    #[arg(long, value_name = "N")]
    pub reauth_concurrency: Option<usize>,
    /// Runtime threads: 0 = one per CPU, 1 = a single-threaded runtime [default: 0].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// The cache, `HOST[:PORT]` (port 6380 by default); required.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub upstream: Option<String>,
    /// Name to verify the cache's certificate against, and SNI [default: the upstream host].
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// Extra CA certificates (PEM) trusted for the cache, besides the system roots.
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// TCP connect timeout to the cache [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub connect_timeout: Option<Duration>,
    /// TLS handshake timeout with the cache [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub tls_timeout: Option<Duration>,
    /// Time allowed for the cache to answer AUTH [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub auth_timeout: Option<Duration>,
    /// Where tokens come from [default: default].
    #[arg(long, value_name = "KIND")]
    pub credential: Option<CredentialKind>,
    /// File holding a raw access token (credential token-file); re-read when it changes.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// How often the token file is checked for a new token [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub token_file_poll: Option<Duration>,
    /// AUTH username [default: the token's oid claim].
    #[arg(long, value_name = "NAME")]
    pub username: Option<String>,
    /// Token scope [default: `https://redis.azure.com/.default`].
    #[arg(long, value_name = "SCOPE")]
    pub scope: Option<String>,
    /// Entra tenant id (client-secret, client-certificate, workload-identity).
    #[arg(long, value_name = "ID")]
    pub tenant_id: Option<String>,
    /// Application (client) id; for managed identity, a user-assigned identity's client id.
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// User-assigned managed identity, by object id.
    #[arg(long, value_name = "ID")]
    pub object_id: Option<String>,
    /// User-assigned managed identity, by Azure resource id.
    #[arg(long, value_name = "ID")]
    pub resource_id: Option<String>,
    /// File holding the client secret (the secret itself never goes on a command line).
    #[arg(long, value_name = "PATH")]
    pub client_secret_file: Option<PathBuf>,
    /// Client certificate: PEM with its key, or PFX.
    #[arg(long, value_name = "PATH")]
    pub certificate_file: Option<PathBuf>,
    /// File holding the PFX password.
    #[arg(long, value_name = "PATH")]
    pub certificate_password_file: Option<PathBuf>,
    /// Entra authority host, https:// (sovereign clouds) [default: Azure public cloud].
    #[arg(long, value_name = "URL")]
    pub authority_host: Option<String>,
    /// Extra CA certificates (PEM) trusted for the identity endpoints.
    #[arg(long, value_name = "PATH")]
    pub identity_ca_file: Option<PathBuf>,
    /// Refresh at this fraction of the token's lifetime, in (0, 1] [default: 0.7].
    #[arg(long, value_name = "FRACTION")]
    pub refresh_ratio: Option<f64>,
    /// Refresh at least this long before expiry [default: 3m].
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub refresh_margin: Option<Duration>,
    /// Random jitter, as a fraction of the remaining lifetime, in [0, 1) [default: 0.1].
    #[arg(long, value_name = "FRACTION")]
    pub refresh_jitter: Option<f64>,
    /// First retry delay after a failed token acquisition [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub retry_initial: Option<Duration>,
    /// Longest retry delay; retries never stop [default: 1m].
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub retry_max: Option<Duration>,
    /// Time allowed for one token acquisition [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub token_timeout: Option<Duration>,
    /// How long a client command waits for the first token before an error reply; 0 answers
    /// at once [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub startup_wait: Option<Duration>,
    /// Admin HTTP listener (/metrics, /healthz, /readyz), HOST:PORT; "" disables it
    /// [default: 127.0.0.1:9464].
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// Log format; the level comes from RUST_LOG [default: text].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Largest bulk string a client or the cache may send, in bytes [default: 536870912].
    #[arg(long, value_name = "BYTES")]
    pub max_bulk_len: Option<usize>,
    /// Most arguments in one client command [default: 1048576].
    #[arg(long, value_name = "N")]
    pub max_command_args: Option<usize>,
    /// Longest inline command line, in bytes [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub max_inline_len: Option<usize>,
    /// On SIGTERM, how long clients are still served (not ready) before sessions close and the
    /// proxy exits; sooner once no client is connected. SIGINT waits a fifth [default: 25s].
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub shutdown_grace: Option<Duration>,
    /// File mode of unix: listener sockets, octal [default: 0660].
    #[arg(long, value_name = "OCTAL")]
    pub socket_mode: Option<String>,
    /// File holding the password local clients must AUTH with (any username); required for a
    /// non-loopback listener.
    #[arg(long, value_name = "PATH")]
    pub client_password_file: Option<PathBuf>,
    /// The cache is a Redis Cluster (OSS cluster policy): one local listener per node, and
    /// node addresses in replies rewritten to them.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub cluster: Option<bool>,
    /// Local ports for cluster nodes, START-END [default: the 100 ports after the first
    /// listen port].
    #[arg(long, value_name = "START-END")]
    pub cluster_ports: Option<String>,
    /// How often the cluster topology is re-read [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub cluster_refresh: Option<Duration>,
}

impl Cli {
    /// Writes every flag that was given over `s`.
    fn apply(self, s: &mut Settings) {
        fn set<T>(dst: &mut T, v: Option<T>) {
            if let Some(v) = v {
                *dst = v;
            }
        }
        fn set_opt<T>(dst: &mut Option<T>, v: Option<T>) {
            if v.is_some() {
                *dst = v;
            }
        }
        if !self.listen.is_empty() {
            s.listen = self.listen;
        }
        set(&mut s.allow_non_loopback, self.allow_non_loopback);
        set(&mut s.max_connections, self.max_connections);
        set(&mut s.reauth_concurrency, self.reauth_concurrency);
        set(&mut s.threads, self.threads);
        set(&mut s.upstream, self.upstream);
        set_opt(&mut s.tls_server_name, self.tls_server_name);
        set_opt(&mut s.ca_file, self.ca_file);
        set(&mut s.connect_timeout, self.connect_timeout);
        set(&mut s.tls_timeout, self.tls_timeout);
        set(&mut s.auth_timeout, self.auth_timeout);
        set(&mut s.credential, self.credential);
        set_opt(&mut s.token_file, self.token_file);
        set(&mut s.token_file_poll, self.token_file_poll);
        set_opt(&mut s.username, self.username);
        set(&mut s.scope, self.scope);
        set_opt(&mut s.tenant_id, self.tenant_id);
        set_opt(&mut s.client_id, self.client_id);
        set_opt(&mut s.object_id, self.object_id);
        set_opt(&mut s.resource_id, self.resource_id);
        set_opt(&mut s.client_secret_file, self.client_secret_file);
        set_opt(&mut s.certificate_file, self.certificate_file);
        set_opt(
            &mut s.certificate_password_file,
            self.certificate_password_file,
        );
        set_opt(&mut s.authority_host, self.authority_host);
        set_opt(&mut s.identity_ca_file, self.identity_ca_file);
        set(&mut s.refresh_ratio, self.refresh_ratio);
        set(&mut s.refresh_margin, self.refresh_margin);
        set(&mut s.refresh_jitter, self.refresh_jitter);
        set(&mut s.retry_initial, self.retry_initial);
        set(&mut s.retry_max, self.retry_max);
        set(&mut s.token_timeout, self.token_timeout);
        set(&mut s.startup_wait, self.startup_wait);
        set(&mut s.admin_listen, self.admin_listen);
        set(&mut s.log_format, self.log_format);
        set(&mut s.max_bulk_len, self.max_bulk_len);
        set(&mut s.max_command_args, self.max_command_args);
        set(&mut s.max_inline_len, self.max_inline_len);
        set(&mut s.shutdown_grace, self.shutdown_grace);
        set(&mut s.socket_mode, self.socket_mode);
        set_opt(&mut s.client_password_file, self.client_password_file);
        set(&mut s.cluster, self.cluster);
        set_opt(&mut s.cluster_ports, self.cluster_ports);
        set(&mut s.cluster_refresh, self.cluster_refresh);
    }
}

/// What [`load_from`] returns: the merged settings and what the command line asked for.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Defaults < file < environment < flags. Not yet validated: call [`Settings::validate`].
    pub settings: Settings,
    /// `--print-config` was given: print [`Settings::redacted_toml`] and exit.
    pub print_config: bool,
}

/// Parses `args` (the program name first, as for clap) and layers defaults < `--config` file <
/// `ENTRA_REDIS_PROXY_*` variables of this process < flags.
pub fn load_from<I, T>(args: I) -> Result<Loaded, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut env = HashMap::new();
    let prefix = format!("{ENV_PREFIX}_");
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if !name.to_ascii_uppercase().starts_with(&prefix) {
            continue;
        }
        let value = value
            .into_string()
            .map_err(|_| ConfigError::NonUnicodeEnv {
                name: name.to_owned(),
            })?;
        env.insert(name.to_owned(), value);
    }
    load_from_env(args, &env)
}

/// As [`load_from`], with the environment given as a map (variables without our prefix are
/// ignored), so that tests do not depend on or change the process environment.
pub fn load_from_env<I, T>(args: I, env: &HashMap<String, String>) -> Result<Loaded, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)?;
    let prefix = format!("{ENV_PREFIX}_");
    // Only our variables, keyed by their upper-case name so origins can be reported.
    let ours: HashMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.to_ascii_uppercase().starts_with(&prefix))
        .map(|(k, v)| (k.to_ascii_uppercase(), v.clone()))
        .collect();

    let mut builder = config::Config::builder();
    if let Some(path) = &cli.config {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::ReadFile {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
    }

    // `listen` is a list: the variable holds comma-separated entries. Everything else goes
    // through the config crate as strings, converted to the field's type on deserialization
    // (no guessing, so `ENTRA_REDIS_PROXY_USERNAME=0123` stays the string "0123").
    let listen_var = env_var_name("listen");
    let mut scalars = ours.clone();
    if let Some(list) = scalars.remove(&listen_var) {
        let entries: Vec<String> = list.split(',').map(|e| e.trim().to_owned()).collect();
        builder = builder
            .set_override("listen", entries)
            .map_err(|e| ConfigError::BadValue {
                key: "listen".into(),
                origin: format!("from {listen_var}"),
                reason: e.to_string(),
            })?;
    }
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .source(Some(scalars)),
    );

    let origin_of = |key: &str| -> String {
        let var = env_var_name(key);
        if ours.contains_key(&var) {
            format!("from environment variable {var}")
        } else if let Some(path) = &cli.config {
            format!("in config file {}", path.display())
        } else {
            "from the environment".into()
        }
    };
    let settings: Settings =
        builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| match e {
                config::ConfigError::FileParse { cause, .. } => ConfigError::ParseFile {
                    path: cli.config.clone().unwrap_or_default(),
                    reason: cause.to_string(),
                },
                e => translate_config_error(e, &origin_of),
            })?;

    let print_config = cli.print_config;
    let mut settings = settings;
    cli.apply(&mut settings); // flags last: they override everything
    Ok(Loaded {
        settings,
        print_config,
    })
}

/// Turns the `config` crate's error into ours, naming the key and where its value came from.
fn translate_config_error(
    e: config::ConfigError,
    origin_of: &dyn Fn(&str) -> String,
) -> ConfigError {
    use config::ConfigError as C;
    match e {
        C::Type { ref key, .. } | C::At { ref key, .. } => {
            let key = key.clone().unwrap_or_default();
            let reason = match &e {
                C::Type {
                    unexpected,
                    expected,
                    ..
                } => format!("found {unexpected}, expected {expected}"),
                C::At { error, .. } => error.to_string(),
                _ => unreachable!(),
            };
            // A nested key (`a.b`) is reported by its top-level name, which is what exists.
            let top = key.split(['.', '[']).next().unwrap_or_default().to_owned();
            if let Some(unknown) = unknown_field(&reason) {
                let key = if top.is_empty() {
                    unknown
                } else {
                    format!("{top}.{unknown}")
                };
                return ConfigError::UnknownKey {
                    origin: origin_of(&key),
                    key,
                };
            }
            let reason = match allowed_values(&top) {
                Some(allowed) => format!("{reason} (expected one of: {allowed})"),
                None => reason,
            };
            ConfigError::BadValue {
                origin: origin_of(&top),
                key: top,
                reason,
            }
        }
        C::Message(ref m) => match unknown_field(m) {
            Some(key) => ConfigError::UnknownKey {
                origin: origin_of(&key),
                key,
            },
            None => ConfigError::Other(m.clone()),
        },
        other => ConfigError::Other(other.to_string()),
    }
}

/// The accepted spellings of an enum-valued key, for error messages.
fn allowed_values(key: &str) -> Option<String> {
    fn names<T: ValueEnum>() -> String {
        T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|v| v.get_name().to_owned())
            .collect::<Vec<_>>()
            .join(", ")
    }
    match key {
        "credential" => Some(names::<CredentialKind>()),
        "log_format" => Some(names::<LogFormat>()),
        _ => None,
    }
}

/// The field name in serde's "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_owned())
}

impl Settings {
    /// Checks every rule; the first broken one is returned, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (index, (_, settings)) in self.resolved_upstreams()?.iter().enumerate() {
            settings.validate_one().map_err(|e| match e {
                // A value the entry set itself is reported as the entry's; one it inherited,
                // as the top-level key it came from.
                ConfigError::Invalid { key, problem } if self.entry_sets(index, &key) => {
                    ConfigError::Invalid {
                        key: format!("upstreams[{index}].{key}"),
                        problem,
                    }
                }
                e => e,
            })?;
        }
        Ok(())
    }

    /// True if `[[upstreams]]` entry `index` sets `key` itself (rather than inheriting it).
    fn entry_sets(&self, index: usize, key: &str) -> bool {
        let Some(entry) = self.upstreams.get(index) else {
            return false;
        };
        if !UPSTREAM_KEYS.contains(&key) {
            return false;
        }
        serde_json::to_value(entry)
            .ok()
            .and_then(|v| v.get(key).map(|x| !x.is_null()))
            .unwrap_or(false)
    }

    /// One settings object per upstream, with its name: the top-level settings alone when
    /// `upstreams` is empty, else each entry over the top-level keys. Checks what is
    /// specific to `[[upstreams]]` (names, required keys); the rest is left to `validate`.
    pub fn resolved_upstreams(&self) -> Result<Vec<(String, Settings)>, ConfigError> {
        if self.upstreams.is_empty() {
            let mut one = self.clone();
            one.upstreams.clear();
            return Ok(vec![(DEFAULT_UPSTREAM_NAME.to_owned(), one)]);
        }
        if !self.upstream.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "upstream".into(),
                problem: "is set at the top level and [[upstreams]] entries exist too; move it \
                          into an [[upstreams]] entry (or remove the entries)"
                    .into(),
            });
        }
        let mut out: Vec<(String, Settings)> = Vec::with_capacity(self.upstreams.len());
        for (i, u) in self.upstreams.iter().enumerate() {
            let invalid = |key: &str, problem: String| ConfigError::Invalid {
                key: format!("upstreams[{i}].{key}"),
                problem,
            };
            let name = u.name.trim();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(
                    "name",
                    format!(
                        "= {:?} must be a non-empty label of letters, digits, - and _ (it \
                         names the upstream in logs and metrics)",
                        u.name
                    ),
                ));
            }
            if out.iter().any(|(n, _)| n == name) {
                return Err(invalid(
                    "name",
                    format!("= {name:?} is used by two entries; names must be unique"),
                ));
            }
            let mut s = self.clone();
            s.upstreams.clear();
            match &u.listen {
                Some(l) if !l.is_empty() => s.listen = l.clone(),
                _ => {
                    return Err(invalid(
                        "listen",
                        format!("is required for upstream {name:?} (its own local listener)"),
                    ))
                }
            }
            match &u.upstream {
                Some(up) => s.upstream = up.clone(),
                None => {
                    return Err(invalid(
                        "upstream",
                        format!("is required for upstream {name:?} (the cache, HOST[:PORT])"),
                    ))
                }
            }
            fn over<T: Clone>(dst: &mut T, v: &Option<T>) {
                if let Some(v) = v {
                    *dst = v.clone();
                }
            }
            fn over_opt<T: Clone>(dst: &mut Option<T>, v: &Option<T>) {
                if v.is_some() {
                    *dst = v.clone();
                }
            }
            over_opt(&mut s.tls_server_name, &u.tls_server_name);
            over_opt(&mut s.ca_file, &u.ca_file);
            over(&mut s.credential, &u.credential);
            over_opt(&mut s.token_file, &u.token_file);
            over_opt(&mut s.username, &u.username);
            over(&mut s.scope, &u.scope);
            over_opt(&mut s.tenant_id, &u.tenant_id);
            over_opt(&mut s.client_id, &u.client_id);
            over_opt(&mut s.object_id, &u.object_id);
            over_opt(&mut s.resource_id, &u.resource_id);
            over_opt(&mut s.client_secret_file, &u.client_secret_file);
            over_opt(&mut s.certificate_file, &u.certificate_file);
            over_opt(
                &mut s.certificate_password_file,
                &u.certificate_password_file,
            );
            over_opt(&mut s.authority_host, &u.authority_host);
            over_opt(&mut s.identity_ca_file, &u.identity_ca_file);
            over_opt(&mut s.client_password_file, &u.client_password_file);
            over(&mut s.cluster, &u.cluster);
            over_opt(&mut s.cluster_ports, &u.cluster_ports);
            out.push((name.to_owned(), s));
        }
        Ok(out)
    }

    /// What identifies a token: the credential, everything that selects the identity, the
    /// scope and the username. Upstreams with the same key share one token manager.
    pub fn identity_key(&self) -> String {
        serde_json::json!([
            self.credential,
            self.token_file,
            self.scope,
            self.username,
            self.tenant_id,
            self.client_id,
            self.object_id,
            self.resource_id,
            self.client_secret_file,
            self.certificate_file,
            self.certificate_password_file,
            self.authority_host,
            self.identity_ca_file,
        ])
        .to_string()
    }

    /// The local port range for cluster nodes: `Some(start..=end)`, or `None` for ephemeral
    /// ports (no `cluster_ports` and a first listener on port 0).
    pub fn cluster_port_range(&self) -> Result<Option<std::ops::RangeInclusive<u16>>, ConfigError> {
        let invalid = |problem: String| ConfigError::Invalid {
            key: "cluster_ports".into(),
            problem,
        };
        if let Some(spec) = &self.cluster_ports {
            let parsed = spec.split_once('-').and_then(|(a, b)| {
                Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
            });
            return match parsed {
                Some((a, b)) if a > 0 && a <= b => Ok(Some(a..=b)),
                _ => Err(invalid(format!(
                    "= {spec:?} is not a port range START-END with 0 < START <= END (e.g. \"7001-7100\")"
                ))),
            };
        }
        let first = self.listen_addrs()?.into_iter().next();
        match first {
            Some(ListenAddr::Tcp(addr)) if addr.port() == 0 => Ok(None),
            Some(ListenAddr::Tcp(addr)) => {
                let start = addr.port().checked_add(1).ok_or_else(|| {
                    invalid(
                        "is needed: the first listen port is 65535, so no default range follows it"
                            .into(),
                    )
                })?;
                Ok(Some(start..=start.saturating_add(99)))
            }
            _ => Err(ConfigError::Invalid {
                key: "listen".into(),
                problem: "must start with a TCP address (HOST:PORT) when cluster = true: cluster \
                          clients are told local node addresses, which are TCP ports"
                    .into(),
            }),
        }
    }

    /// The checks of one upstream's settings.
    fn validate_one(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: String| ConfigError::Invalid {
            key: key.into(),
            problem,
        };
        self.upstream_host_port()?;
        self.listen_addrs()?;

        for (key, value) in [
            ("tls_server_name", self.tls_server_name.as_deref()),
            ("username", self.username.as_deref()),
            ("tenant_id", self.tenant_id.as_deref()),
            ("client_id", self.client_id.as_deref()),
            ("object_id", self.object_id.as_deref()),
            ("resource_id", self.resource_id.as_deref()),
            ("authority_host", self.authority_host.as_deref()),
        ] {
            if value.is_some_and(|v| v.trim().is_empty()) {
                return Err(invalid(
                    key,
                    "is empty (remove it to use the default)".into(),
                ));
            }
        }
        for (key, value) in [
            ("ca_file", &self.ca_file),
            ("token_file", &self.token_file),
            ("client_secret_file", &self.client_secret_file),
            ("certificate_file", &self.certificate_file),
            ("certificate_password_file", &self.certificate_password_file),
            ("identity_ca_file", &self.identity_ca_file),
            ("client_password_file", &self.client_password_file),
        ] {
            if value.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(invalid(
                    key,
                    "is an empty path (remove it, or give a path)".into(),
                ));
            }
        }
        if let Some(host) = &self.authority_host {
            if !host.starts_with("https://") {
                return Err(invalid(
                    "authority_host",
                    format!("= {host:?} must be an https:// URL"),
                ));
            }
        }
        if self.scope.trim().is_empty() {
            return Err(invalid(
                "scope",
                "is empty (it must be the token scope, e.g. https://redis.azure.com/.default)"
                    .into(),
            ));
        }
        if self.credential == CredentialKind::TokenFile && self.token_file.is_none() {
            return Err(invalid(
                "token_file",
                "is required when credential = \"token-file\"".into(),
            ));
        }
        if !(self.refresh_ratio > 0.0 && self.refresh_ratio <= 1.0) {
            return Err(invalid(
                "refresh_ratio",
                format!("= {} is out of range (0, 1]", self.refresh_ratio),
            ));
        }
        if !(self.refresh_jitter >= 0.0 && self.refresh_jitter < 1.0) {
            return Err(invalid(
                "refresh_jitter",
                format!("= {} is out of range [0, 1)", self.refresh_jitter),
            ));
        }
        for (key, value) in [
            ("connect_timeout", self.connect_timeout),
            ("tls_timeout", self.tls_timeout),
            ("auth_timeout", self.auth_timeout),
            ("token_file_poll", self.token_file_poll),
            ("retry_initial", self.retry_initial),
            ("retry_max", self.retry_max),
            ("token_timeout", self.token_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "= 0s must be greater than zero".into()));
            }
        }
        if self.retry_initial > self.retry_max {
            return Err(invalid(
                "retry_initial",
                format!(
                    "= {} is greater than retry_max = {}; lower it or raise retry_max",
                    duration::format(self.retry_initial),
                    duration::format(self.retry_max)
                ),
            ));
        }
        for (key, value) in [
            ("max_connections", self.max_connections),
            ("reauth_concurrency", self.reauth_concurrency),
            ("max_bulk_len", self.max_bulk_len),
            ("max_command_args", self.max_command_args),
            ("max_inline_len", self.max_inline_len),
        ] {
            if value == 0 {
                return Err(invalid(key, "= 0 must be greater than zero".into()));
            }
        }
        if self.cluster {
            self.cluster_port_range()?;
        }
        if self.cluster_refresh.is_zero() {
            return Err(invalid(
                "cluster_refresh",
                "= 0s must be greater than zero".into(),
            ));
        }
        if !self.admin_listen.is_empty() {
            resolve_host_port(&self.admin_listen).map_err(|why| {
                invalid(
                    "admin_listen",
                    format!(
                        "= {:?} is not HOST:PORT ({why}); use \"\" to disable the admin listener",
                        self.admin_listen
                    ),
                )
            })?;
        }
        Ok(())
    }

    /// The parsed `listen` entries, refusing a non-loopback TCP address unless
    /// `allow_non_loopback`. A host name is resolved and its first address used.
    pub fn listen_addrs(&self) -> Result<Vec<ListenAddr>, ConfigError> {
        if self.listen.is_empty() {
            return Err(ConfigError::Invalid {
                key: "listen".into(),
                problem: "is empty (the proxy needs at least one listener)".into(),
            });
        }
        let mut out = Vec::with_capacity(self.listen.len());
        for entry in &self.listen {
            if let Some(path) = entry.strip_prefix("unix:") {
                if path.is_empty() {
                    return Err(ConfigError::Invalid {
                        key: "listen".into(),
                        problem: format!("entry {entry:?} has no path (write unix:/path/to.sock)"),
                    });
                }
                out.push(ListenAddr::Unix(PathBuf::from(path)));
                continue;
            }
            let addrs = resolve_host_port(entry).map_err(|why| ConfigError::Invalid {
                key: "listen".into(),
                problem: format!("entry {entry:?} is not HOST:PORT or unix:/path ({why})"),
            })?;
            if !self.allow_non_loopback || self.client_password_file.is_none() {
                if let Some(addr) = addrs.iter().find(|a| !a.ip().is_loopback()) {
                    return Err(ConfigError::NonLoopback {
                        entry: entry.clone(),
                        addr: *addr,
                    });
                }
            }
            out.push(ListenAddr::Tcp(addrs[0]));
        }
        Ok(out)
    }

    /// The cache's host (without IPv6 brackets) and port (6380 when not given).
    pub fn upstream_host_port(&self) -> Result<(String, u16), ConfigError> {
        let invalid = |problem: String| ConfigError::Invalid {
            key: "upstream".into(),
            problem,
        };
        let up = self.upstream.trim();
        if up.is_empty() {
            return Err(invalid(
                "is required (the cache, HOST[:PORT] such as mycache.redis.cache.windows.net)"
                    .into(),
            ));
        }
        if up.contains("://") || up.contains('/') {
            return Err(invalid(format!(
                "= {up:?} must be HOST[:PORT] without a scheme or path"
            )));
        }
        split_host_port(up, Some(DEFAULT_UPSTREAM_PORT))
            .map_err(|why| invalid(format!("= {up:?} is not HOST[:PORT] ({why})")))
    }

    /// The name the cache's certificate is checked against: `tls_server_name`, else the
    /// upstream host.
    pub fn tls_name(&self) -> String {
        if let Some(name) = &self.tls_server_name {
            return name.clone();
        }
        match self.upstream_host_port() {
            Ok((host, _)) => host,
            Err(_) => self.upstream.trim().to_owned(),
        }
    }

    /// The token manager's refresh and retry policy, from the `refresh_*`, `retry_*`,
    /// `token_timeout` and `username` keys.
    pub fn refresh_policy(&self) -> crate::token::RefreshPolicy {
        crate::token::RefreshPolicy {
            ratio: self.refresh_ratio,
            margin: self.refresh_margin,
            jitter: self.refresh_jitter,
            retry_initial: self.retry_initial,
            retry_max: self.retry_max,
            timeout: self.token_timeout,
            username: self.username.clone(),
            ..crate::token::RefreshPolicy::default()
        }
    }

    /// The settings as TOML, every key present (unset ones commented out), with any value
    /// that could be a secret replaced by `"<redacted>"`. File paths are shown, not contents.
    pub fn redacted_toml(&self) -> String {
        let json = serde_json::to_string(self).expect("Settings serializes to JSON");
        let fields = ordered_fields(&json);
        let mut out = String::new();
        for (key, value) in fields {
            if key == "upstreams" {
                continue; // arrays of tables come after every top-level key in TOML
            }
            let value = redact(&key, value);
            match value {
                serde_json::Value::Null => out.push_str(&format!("# {key} = (not set)\n")),
                v => out.push_str(&format!("{key} = {}\n", toml_value(&v))),
            }
        }
        for entry in &self.upstreams {
            out.push_str("\n[[upstreams]]\n");
            let entry = serde_json::to_string(entry).expect("upstream entries serialize");
            for (key, value) in ordered_fields(&entry) {
                match redact(&key, value) {
                    serde_json::Value::Null => {}
                    v => out.push_str(&format!("{key} = {}\n", toml_value(&v))),
                }
            }
        }
        out
    }
}

/// Replaces a value that may hold a secret. A key whose name mentions a secret, password or
/// token is redacted unless it is a file path (`*_file`) or a known non-secret tuning value.
fn redact(key: &str, value: serde_json::Value) -> serde_json::Value {
    const NOT_SECRET: &[&str] = &["token_file_poll", "token_timeout"];
    let sensitive = ["secret", "password", "token"]
        .iter()
        .any(|w| key.contains(w));
    if !sensitive || key.ends_with("_file") || NOT_SECRET.contains(&key) || value.is_null() {
        value
    } else {
        serde_json::Value::String("<redacted>".into())
    }
}

/// The top-level fields of a JSON object, in the order written (serde writes struct order).
fn ordered_fields(json: &str) -> Vec<(String, serde_json::Value)> {
    struct Fields;
    impl<'de> serde::de::Visitor<'de> for Fields {
        type Value = Vec<(String, serde_json::Value)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = map.next_entry()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(json);
    serde::Deserializer::deserialize_map(&mut de, Fields).expect("JSON of a struct is an object")
}

/// A JSON scalar or array as a TOML value (JSON string escapes are valid in TOML basic strings).
fn toml_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_value).collect();
            format!("[{}]", items.join(", "))
        }
        serde_json::Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            if f.fract() == 0.0 {
                format!("{f:.1}")
            } else {
                n.to_string()
            }
        }
        other => other.to_string(),
    }
}

/// Splits `HOST[:PORT]` (IPv6 in brackets); without a port, `default_port` or an error.
fn split_host_port(s: &str, default_port: Option<u16>) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let close = rest.find(']').ok_or("missing `]` after an IPv6 address")?;
        let host = &rest[..close];
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("`{host}` is not an IPv6 address"))?;
        let after = &rest[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("unexpected `{after}` after `]`")),
        };
        (host, port)
    } else {
        match s.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err("an IPv6 address must be written in brackets, e.g. [::1]:6380".into())
            }
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if host.chars().any(|c| c.is_whitespace()) {
        return Err("the host contains whitespace".into());
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("`{p}` is not a port number"))?,
        None => default_port.ok_or("the port is missing")?,
    };
    Ok((host.to_owned(), port))
}

/// Resolves `HOST:PORT` (port required; 0 means any free port) to its addresses.
fn resolve_host_port(s: &str) -> Result<Vec<SocketAddr>, String> {
    let (host, port) = split_host_port(s, None)?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("`{host}` resolves to no address"));
    }
    Ok(addrs)
}

/// Whole, non-negative counts. The `config` crate would round `1.5` to `2`; a count written
/// as a fraction is refused instead.
pub mod count {
    use std::fmt;

    use serde::de::{self, Deserializer, Visitor};

    /// serde: accept a non-negative integer, or a string of one (from the environment).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        struct Count;
        impl Visitor<'_> for Count {
            type Value = usize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<usize, E> {
                usize::try_from(v).map_err(|_| E::custom(format!("{v} is too large")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<usize, E> {
                usize::try_from(v).map_err(|_| E::custom(format!("{v} is not a whole number >= 0")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<usize, E> {
                Err(E::custom(format!("{v} is not a whole number")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
                v.trim()
                    .parse()
                    .map_err(|_| E::custom(format!("{v:?} is not a whole number >= 0")))
            }
        }
        d.deserialize_any(Count)
    }
}

/// Durations as human strings: `250ms`, `5s`, `3m`, `1h` (a bare number is seconds).
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Parses `250ms`, `5s`, `1.5s`, `3m`, `1h`, or a bare number of seconds.
    pub fn parse(s: &str) -> Result<Duration, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a duration (examples: 250ms, 5s, 3m, 1h)"))?;
        let secs = match unit.trim() {
            "ms" => value / 1000.0,
            "" | "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            other => {
                return Err(format!(
                    "unknown unit `{other}` in `{s}` (use ms, s, m or h)"
                ))
            }
        };
        if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
            return Err(format!("`{s}` is out of range"));
        }
        Ok(Duration::from_secs_f64(secs))
    }

    /// Formats a duration the way [`parse`] reads it.
    pub fn format(d: Duration) -> String {
        let ms = d.as_millis();
        if ms % 1000 != 0 {
            format!("{ms}ms")
        } else {
            let s = d.as_secs();
            if s != 0 && s % 3600 == 0 {
                format!("{}h", s / 3600)
            } else if s != 0 && s % 60 == 0 {
                format!("{}m", s / 60)
            } else {
                format!("{s}s")
            }
        }
    }

    /// serde: serialize as a string.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    /// serde: accept a string or a number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            N(f64),
        }
        match Raw::deserialize(d)? {
            Raw::S(s) => parse(&s).map_err(serde::de::Error::custom),
            Raw::N(n) => parse(&n.to_string()).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads with the given flags, a config file holding `toml` (if any) and env variables.
    fn load(
        toml: Option<&str>,
        env: &[(&str, &str)],
        flags: &[&str],
    ) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = vec!["entra-redis-proxy".into()];
        if let Some(text) = toml {
            let path = dir.path().join("proxy.toml");
            std::fs::write(&path, text).unwrap();
            args.push("--config".into());
            args.push(path.to_str().unwrap().into());
        }
        args.extend(flags.iter().map(|f| f.to_string()));
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load_from_env(args, &env).map(|l| l.settings)
    }

    fn valid() -> Settings {
        Settings {
            upstream: "cache.example:6380".into(),
            ..Settings::default()
        }
    }

    fn err_text(r: Result<impl fmt::Debug, ConfigError>) -> String {
        r.expect_err("expected a configuration error").to_string()
    }

    const TWO_UPSTREAMS: &str = r#"
        credential = "managed-identity"
        scope = "https://redis.azure.com/.default"

        [[upstreams]]
        name = "sessions"
        listen = ["127.0.0.1:7379"]
        upstream = "a.example:6380"

        [[upstreams]]
        name = "orders"
        listen = ["127.0.0.1:7380"]
        upstream = "b.example:10000"
        cluster = true
        client_id = "11111111-1111-1111-1111-111111111111"
    "#;

    #[test]
    fn upstream_entries_take_top_level_defaults() {
        let s = load(Some(TWO_UPSTREAMS), &[], &[]).unwrap();
        s.validate().unwrap();
        let ups = s.resolved_upstreams().unwrap();
        assert_eq!(ups.len(), 2);
        let (a, b) = (&ups[0].1, &ups[1].1);
        assert_eq!(ups[0].0, "sessions");
        assert_eq!(a.listen, ["127.0.0.1:7379"]);
        assert_eq!(a.upstream, "a.example:6380");
        assert_eq!(a.credential, CredentialKind::ManagedIdentity);
        assert!(!a.cluster);
        assert_eq!(
            b.client_id.as_deref(),
            Some("11111111-1111-1111-1111-111111111111")
        );
        assert!(b.cluster);
        assert_eq!(b.cluster_port_range().unwrap(), Some(7381..=7480));
        // Different identities: two token managers.
        assert_ne!(a.identity_key(), b.identity_key());
        // Without entries: one upstream named "default".
        let one = load(None, &[], &["--upstream", "c.example"]).unwrap();
        let ups = one.resolved_upstreams().unwrap();
        assert_eq!(ups.len(), 1);
        assert_eq!(ups[0].0, DEFAULT_UPSTREAM_NAME);
        assert_eq!(ups[0].1.identity_key(), one.identity_key());
    }

    #[test]
    fn upstream_entries_are_checked_and_named_in_errors() {
        let cases = [
            (
                "[[upstreams]]\nname = \"a\"\nupstream = \"x.example\"\n",
                "`upstreams[0].listen` is required for upstream \"a\"",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nlisten = [\"127.0.0.1:1\"]\n",
                "`upstreams[0].upstream` is required",
            ),
            (
                "[[upstreams]]\nname = \"a b\"\nlisten = [\"127.0.0.1:1\"]\nupstream = \"x\"\n",
                "`upstreams[0].name`",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nlisten = [\"127.0.0.1:1\"]\nupstream = \"x\"\n\
                 [[upstreams]]\nname = \"a\"\nlisten = [\"127.0.0.1:2\"]\nupstream = \"y\"\n",
                "used by two entries",
            ),
            (
                "upstream = \"top.example\"\n[[upstreams]]\nname = \"a\"\nlisten = [\"127.0.0.1:1\"]\nupstream = \"x\"\n",
                "move it into an [[upstreams]] entry",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nlisten = [\"127.0.0.1:1\"]\nupstream = \"https://x\"\n",
                "`upstreams[0].upstream` = \"https://x\" must be HOST[:PORT]",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nlisten = [\"127.0.0.1:1\"]\nupstream = \"x\"\ncluster = true\ncluster_ports = \"9-1\"\n",
                "`upstreams[0].cluster_ports`",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nlisten = [\"unix:/tmp/x.sock\"]\nupstream = \"x\"\ncluster = true\n",
                "must start with a TCP address",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nlisten = [\"127.0.0.1:1\"]\nupstream = \"x\"\nport = 3\n",
                "unknown key `upstreams.port`",
            ),
            (
                // Inherited from the top level: reported as the top-level key.
                "cluster_ports = \"9-1\"\n[[upstreams]]\nname = \"a\"\nlisten = [\"127.0.0.1:1\"]\nupstream = \"x\"\ncluster = true\n",
                "`cluster_ports` = \"9-1\" is not a port range",
            ),
        ];
        for (file, want) in cases {
            let text = match load(Some(file), &[], &[]) {
                Ok(s) => err_text(s.validate()),
                Err(e) => e.to_string(),
            };
            assert!(text.contains(want), "{file}\n=> {text}\nwanted {want}");
        }
    }

    #[test]
    fn cluster_port_ranges() {
        let s = |listen: &str, ports: Option<&str>| Settings {
            listen: vec![listen.into()],
            upstream: "x.example".into(),
            cluster: true,
            cluster_ports: ports.map(str::to_owned),
            ..Settings::default()
        };
        assert_eq!(
            s("127.0.0.1:6379", None).cluster_port_range().unwrap(),
            Some(6380..=6479)
        );
        assert_eq!(s("127.0.0.1:0", None).cluster_port_range().unwrap(), None);
        assert_eq!(
            s("127.0.0.1:0", Some("7001-7003"))
                .cluster_port_range()
                .unwrap(),
            Some(7001..=7003)
        );
        for bad in ["7001", "0-5", "9-8", "a-b", "1-70000"] {
            let e = s("127.0.0.1:0", Some(bad))
                .validate()
                .unwrap_err()
                .to_string();
            assert!(e.contains("cluster_ports"), "{bad}: {e}");
        }
        let e = s("127.0.0.1:65535", None)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("cluster_ports"), "{e}");
    }

    #[test]
    fn printed_config_with_upstreams_loads_back() {
        let s = load(Some(TWO_UPSTREAMS), &[], &[]).unwrap();
        let printed = s.redacted_toml();
        assert!(
            printed.contains("[[upstreams]]\nname = \"orders\""),
            "{printed}"
        );
        let back = load(Some(&printed), &[], &[]).unwrap();
        assert_eq!(back.redacted_toml(), printed);
        assert_eq!(back.upstreams.len(), 2);
    }

    #[test]
    fn nothing_given_is_the_defaults() {
        let s = load(None, &[], &[]).unwrap();
        assert_eq!(s.redacted_toml(), Settings::default().redacted_toml());
    }

    #[test]
    fn precedence_is_file_then_env_then_flag() {
        let file = r#"
            upstream = "file.example"
            refresh_margin = "1m"
            scope = "file-scope"
            max_connections = 7
            listen = ["127.0.0.1:1000"]
        "#;
        let env = [
            ("ENTRA_REDIS_PROXY_UPSTREAM", "env.example"),
            ("ENTRA_REDIS_PROXY_REFRESH_MARGIN", "2m"),
            (
                "ENTRA_REDIS_PROXY_LISTEN",
                "127.0.0.1:2000, unix:/run/p.sock",
            ),
            ("UNRELATED_VARIABLE", "ignored"),
        ];
        // File only.
        let s = load(Some(file), &[], &[]).unwrap();
        assert_eq!(s.upstream, "file.example");
        assert_eq!(s.refresh_margin, Duration::from_secs(60));
        assert_eq!(s.listen, vec!["127.0.0.1:1000"]);
        // Env over file; keys absent from env keep the file's value.
        let s = load(Some(file), &env, &[]).unwrap();
        assert_eq!(s.upstream, "env.example");
        assert_eq!(s.refresh_margin, Duration::from_secs(120));
        assert_eq!(s.listen, vec!["127.0.0.1:2000", "unix:/run/p.sock"]);
        assert_eq!(s.scope, "file-scope");
        assert_eq!(s.max_connections, 7);
        // Flags over env; flags not given change nothing.
        let s = load(
            Some(file),
            &env,
            &[
                "--upstream",
                "flag.example",
                "--listen",
                "127.0.0.1:3000",
                "--listen",
                "[::1]:3001",
            ],
        )
        .unwrap();
        assert_eq!(s.upstream, "flag.example");
        assert_eq!(s.listen, vec!["127.0.0.1:3000", "[::1]:3001"]);
        assert_eq!(s.refresh_margin, Duration::from_secs(120));
        assert_eq!(s.scope, "file-scope");
    }

    #[test]
    fn env_values_are_typed_by_the_field_not_guessed() {
        let s = load(
            None,
            &[
                ("ENTRA_REDIS_PROXY_USERNAME", "0123"),
                ("ENTRA_REDIS_PROXY_MAX_CONNECTIONS", "42"),
                ("ENTRA_REDIS_PROXY_ALLOW_NON_LOOPBACK", "true"),
                ("ENTRA_REDIS_PROXY_REFRESH_RATIO", "0.5"),
                ("ENTRA_REDIS_PROXY_CREDENTIAL", "token-file"),
                ("ENTRA_REDIS_PROXY_TOKEN_FILE", "/run/token"),
                ("ENTRA_REDIS_PROXY_LOG_FORMAT", "json"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(s.username.as_deref(), Some("0123"));
        assert_eq!(s.max_connections, 42);
        assert!(s.allow_non_loopback);
        assert_eq!(s.refresh_ratio, 0.5);
        assert_eq!(s.credential, CredentialKind::TokenFile);
        assert_eq!(s.token_file, Some(PathBuf::from("/run/token")));
        assert_eq!(s.log_format, LogFormat::Json);
    }

    #[test]
    fn every_flag_sets_its_field() {
        let s = load(
            None,
            &[],
            &[
                "--allow-non-loopback",
                "--max-connections=3",
                "--upstream=u.example",
                "--tls-server-name=n.example",
                "--ca-file=/ca.pem",
                "--connect-timeout=1s",
                "--tls-timeout=2s",
                "--auth-timeout=3s",
                "--credential=client-secret",
                "--token-file=/t",
                "--token-file-poll=250ms",
                "--username=u",
                "--scope=s",
                "--tenant-id=t",
                "--client-id=c",
                "--object-id=o",
                "--resource-id=r",
                "--client-secret-file=/cs",
                "--certificate-file=/cf",
                "--certificate-password-file=/cp",
                "--authority-host=https://login.example",
                "--identity-ca-file=/ica",
                "--refresh-ratio=0.5",
                "--refresh-margin=4m",
                "--refresh-jitter=0.2",
                "--retry-initial=2s",
                "--retry-max=1h",
                "--token-timeout=9s",
                "--startup-wait=0s",
                "--admin-listen=",
                "--log-format=json",
                "--max-bulk-len=10",
                "--max-command-args=11",
                "--max-inline-len=12",
            ],
        )
        .unwrap();
        assert!(s.allow_non_loopback);
        assert_eq!(s.max_connections, 3);
        assert_eq!(s.upstream, "u.example");
        assert_eq!(s.tls_server_name.as_deref(), Some("n.example"));
        assert_eq!(s.ca_file, Some("/ca.pem".into()));
        assert_eq!(s.connect_timeout, Duration::from_secs(1));
        assert_eq!(s.tls_timeout, Duration::from_secs(2));
        assert_eq!(s.auth_timeout, Duration::from_secs(3));
        assert_eq!(s.credential, CredentialKind::ClientSecret);
        assert_eq!(s.token_file, Some("/t".into()));
        assert_eq!(s.token_file_poll, Duration::from_millis(250));
        assert_eq!(s.username.as_deref(), Some("u"));
        assert_eq!(s.scope, "s");
        assert_eq!(s.tenant_id.as_deref(), Some("t"));
        assert_eq!(s.client_id.as_deref(), Some("c"));
        assert_eq!(s.object_id.as_deref(), Some("o"));
        assert_eq!(s.resource_id.as_deref(), Some("r"));
        assert_eq!(s.client_secret_file, Some("/cs".into()));
        assert_eq!(s.certificate_file, Some("/cf".into()));
        assert_eq!(s.certificate_password_file, Some("/cp".into()));
        assert_eq!(s.authority_host.as_deref(), Some("https://login.example"));
        assert_eq!(s.identity_ca_file, Some("/ica".into()));
        assert_eq!(s.refresh_ratio, 0.5);
        assert_eq!(s.refresh_margin, Duration::from_secs(240));
        assert_eq!(s.refresh_jitter, 0.2);
        assert_eq!(s.retry_initial, Duration::from_secs(2));
        assert_eq!(s.retry_max, Duration::from_secs(3600));
        assert_eq!(s.token_timeout, Duration::from_secs(9));
        assert_eq!(s.startup_wait, Duration::ZERO);
        assert_eq!(s.admin_listen, "");
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.max_bulk_len, 10);
        assert_eq!(s.max_command_args, 11);
        assert_eq!(s.max_inline_len, 12);
        s.validate().unwrap();
    }

    #[test]
    fn allow_non_loopback_flag_can_also_say_false() {
        let env = [("ENTRA_REDIS_PROXY_ALLOW_NON_LOOPBACK", "true")];
        let s = load(None, &env, &["--allow-non-loopback=false"]).unwrap();
        assert!(!s.allow_non_loopback);
    }

    #[test]
    fn bad_flag_value_is_a_cli_error() {
        let e = load(None, &[], &["--refresh-margin", "soon"]).unwrap_err();
        let ConfigError::Cli(e) = e else {
            panic!("not a CLI error: {e}")
        };
        assert!(e.use_stderr());
        assert!(e.to_string().contains("--refresh-margin"), "{e}");
    }

    #[test]
    fn help_and_version_are_not_failures() {
        for flag in ["--help", "--version"] {
            let ConfigError::Cli(e) = load(None, &[], &[flag]).unwrap_err() else {
                panic!("{flag} should be a clap outcome")
            };
            assert!(!e.use_stderr(), "{flag}");
        }
    }

    #[test]
    fn unknown_key_in_file_is_named() {
        let text = err_text(load(
            Some("upstream = \"x\"\nrefresh_ration = 0.5\n"),
            &[],
            &[],
        ));
        assert!(text.contains("unknown key `refresh_ration`"), "{text}");
        assert!(text.contains("proxy.toml"), "{text}");
    }

    #[test]
    fn unknown_key_in_env_names_the_variable() {
        let text = err_text(load(None, &[("ENTRA_REDIS_PROXY_UPSTREAM_HOST", "x")], &[]));
        assert!(text.contains("unknown key `upstream_host`"), "{text}");
        assert!(text.contains("ENTRA_REDIS_PROXY_UPSTREAM_HOST"), "{text}");
    }

    #[test]
    fn bad_type_in_file_names_the_key_and_how_to_set_it() {
        let text = err_text(load(Some("refresh_ratio = \"abc\"\n"), &[], &[]));
        assert!(text.contains("`refresh_ratio`"), "{text}");
        assert!(text.contains("ENTRA_REDIS_PROXY_REFRESH_RATIO"), "{text}");
        assert!(text.contains("--refresh-ratio"), "{text}");
        for bad in ["-1", "1.5", "\"many\"", "true"] {
            let text = err_text(load(Some(&format!("max_connections = {bad}\n")), &[], &[]));
            assert!(text.contains("`max_connections`"), "{bad}: {text}");
        }
        let env = [("ENTRA_REDIS_PROXY_MAX_BULK_LEN", "1.5")];
        let text = err_text(load(None, &env, &[]));
        assert!(text.contains("`max_bulk_len`"), "{text}");
        let text = err_text(load(Some("credential = \"magic\"\n"), &[], &[]));
        assert!(text.contains("`credential`"), "{text}");
        assert!(
            text.contains("managed-identity"),
            "lists the choices: {text}"
        );
    }

    #[test]
    fn bad_duration_names_the_key_and_its_origin() {
        let text = err_text(load(Some("connect_timeout = \"5 parsecs\"\n"), &[], &[]));
        assert!(text.contains("`connect_timeout`"), "{text}");
        assert!(text.contains("in config file"), "{text}");
        let env = [("ENTRA_REDIS_PROXY_REFRESH_MARGIN", "3 minutes")];
        let text = err_text(load(Some("refresh_margin = \"1m\"\n"), &env, &[]));
        assert!(text.contains("`refresh_margin`"), "{text}");
        assert!(
            text.contains("from environment variable ENTRA_REDIS_PROXY_REFRESH_MARGIN"),
            "{text}"
        );
    }

    #[test]
    fn bad_type_in_env_names_the_variable() {
        let env = [("ENTRA_REDIS_PROXY_MAX_CONNECTIONS", "lots")];
        let text = err_text(load(None, &env, &[]));
        assert!(text.contains("`max_connections`"), "{text}");
        assert!(text.contains("ENTRA_REDIS_PROXY_MAX_CONNECTIONS"), "{text}");
    }

    #[test]
    fn unreadable_or_malformed_file_is_reported() {
        let text = err_text(load_from_env(
            ["p", "--config", "/nonexistent/entra-redis-proxy.toml"],
            &HashMap::new(),
        ));
        assert!(text.contains("cannot read config file"), "{text}");
        let text = err_text(load(Some("upstream = \"unterminated\n"), &[], &[]));
        assert!(text.contains("not valid TOML"), "{text}");
    }

    #[test]
    fn defaults_with_upstream_are_valid() {
        valid().validate().unwrap();
    }

    #[test]
    fn upstream_is_required_and_parsed() {
        let text = err_text(Settings::default().validate());
        assert!(text.starts_with("`upstream` is required"), "{text}");
        assert!(text.contains("ENTRA_REDIS_PROXY_UPSTREAM") && text.contains("--upstream"));

        let up = |u: &str| Settings {
            upstream: u.into(),
            ..Settings::default()
        };
        assert_eq!(
            up("c.example").upstream_host_port().unwrap(),
            ("c.example".into(), 6380)
        );
        assert_eq!(
            up("c.example:10000").upstream_host_port().unwrap(),
            ("c.example".into(), 10000)
        );
        assert_eq!(
            up("[::1]").upstream_host_port().unwrap(),
            ("::1".into(), 6380)
        );
        assert_eq!(
            up("[::1]:7000").upstream_host_port().unwrap(),
            ("::1".into(), 7000)
        );
        for bad in [
            "::1",
            "c.example:port",
            "c.example:70000",
            "rediss://c.example",
            "[::1",
            ":6380",
            "[x]:1",
        ] {
            let text = err_text(up(bad).validate());
            assert!(text.starts_with("`upstream`"), "{bad}: {text}");
        }
    }

    #[test]
    fn tls_name_defaults_to_the_upstream_host() {
        let mut s = valid();
        assert_eq!(s.tls_name(), "cache.example");
        s.upstream = "[::1]:6380".into();
        assert_eq!(s.tls_name(), "::1");
        s.tls_server_name = Some("other.example".into());
        assert_eq!(s.tls_name(), "other.example");
    }

    #[test]
    fn listen_entries_are_parsed() {
        let mut s = valid();
        s.listen = vec![
            "127.0.0.1:0".into(),
            "[::1]:6379".into(),
            "unix:/run/proxy.sock".into(),
            "localhost:7000".into(),
        ];
        let addrs = s.listen_addrs().unwrap();
        assert_eq!(addrs[0], ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()));
        assert_eq!(addrs[1], ListenAddr::Tcp("[::1]:6379".parse().unwrap()));
        assert_eq!(addrs[2], ListenAddr::Unix("/run/proxy.sock".into()));
        match &addrs[3] {
            ListenAddr::Tcp(a) => assert!(a.ip().is_loopback() && a.port() == 7000, "{a}"),
            other => panic!("{other:?}"),
        }
        for bad in ["127.0.0.1", "unix:", "", "127.0.0.1:x", "::1:6379"] {
            s.listen = vec![bad.into()];
            let text = err_text(s.validate());
            assert!(text.starts_with("`listen`"), "{bad:?}: {text}");
        }
        s.listen = vec![];
        assert!(err_text(s.validate()).starts_with("`listen` is empty"));
    }

    #[test]
    fn non_loopback_listen_needs_allow_non_loopback_and_a_client_password() {
        let mut s = valid();
        s.listen = vec!["127.0.0.1:6379".into(), "0.0.0.0:6379".into()];
        let text = err_text(s.validate());
        assert!(text.contains("0.0.0.0:6379"), "{text}");
        assert!(text.contains("Entra identity"), "explains why: {text}");
        assert!(text.contains("allow_non_loopback"), "{text}");
        assert!(text.contains("--allow-non-loopback"), "{text}");
        s.allow_non_loopback = true;
        // Still refused: anyone on the network would act as the identity without a password.
        let text = err_text(s.validate());
        assert!(text.contains("client_password_file"), "{text}");
        s.client_password_file = Some("/run/secrets/pw".into());
        s.validate().unwrap();
        assert_eq!(
            s.listen_addrs().unwrap()[1],
            ListenAddr::Tcp("0.0.0.0:6379".parse().unwrap())
        );
    }

    #[test]
    fn token_file_credential_requires_token_file() {
        let mut s = valid();
        s.credential = CredentialKind::TokenFile;
        let text = err_text(s.validate());
        assert!(text.starts_with("`token_file` is required"), "{text}");
        assert!(text.contains("--token-file"), "{text}");
        s.token_file = Some("/run/token".into());
        s.validate().unwrap();
    }

    #[test]
    fn refresh_ratio_and_jitter_ranges() {
        let mut s = valid();
        for (ratio, ok) in [
            (0.0, false),
            (-0.1, false),
            (1.5, false),
            (f64::NAN, false),
            (1.0, true),
            (0.01, true),
        ] {
            s.refresh_ratio = ratio;
            assert_eq!(s.validate().is_ok(), ok, "refresh_ratio {ratio}");
        }
        s.refresh_ratio = 1.5;
        assert_eq!(
            err_text(s.validate()),
            "`refresh_ratio` = 1.5 is out of range (0, 1]: set refresh_ratio in the config file, \
             ENTRA_REDIS_PROXY_REFRESH_RATIO, or --refresh-ratio"
        );
        s.refresh_ratio = 0.7;
        for (jitter, ok) in [(0.0, true), (0.99, true), (1.0, false), (-0.1, false)] {
            s.refresh_jitter = jitter;
            assert_eq!(s.validate().is_ok(), ok, "refresh_jitter {jitter}");
        }
        s.refresh_jitter = 1.0;
        assert!(err_text(s.validate()).starts_with("`refresh_jitter` = 1 is out of range [0, 1)"));
    }

    #[test]
    fn retry_initial_must_not_exceed_retry_max() {
        let mut s = valid();
        s.retry_initial = Duration::from_secs(120);
        s.retry_max = Duration::from_secs(60);
        let text = err_text(s.validate());
        assert!(
            text.starts_with("`retry_initial` = 2m is greater than retry_max = 1m"),
            "{text}"
        );
        s.retry_initial = Duration::from_secs(60);
        s.validate().unwrap();
    }

    #[test]
    fn timeouts_and_limits_must_be_positive() {
        type Poke = fn(&mut Settings);
        let cases: [(&str, Poke); 11] = [
            ("connect_timeout", |s| s.connect_timeout = Duration::ZERO),
            ("tls_timeout", |s| s.tls_timeout = Duration::ZERO),
            ("auth_timeout", |s| s.auth_timeout = Duration::ZERO),
            ("token_file_poll", |s| s.token_file_poll = Duration::ZERO),
            ("retry_initial", |s| s.retry_initial = Duration::ZERO),
            ("token_timeout", |s| s.token_timeout = Duration::ZERO),
            ("max_connections", |s| s.max_connections = 0),
            ("max_bulk_len", |s| s.max_bulk_len = 0),
            ("max_command_args", |s| s.max_command_args = 0),
            ("max_inline_len", |s| s.max_inline_len = 0),
            ("retry_max", |s| {
                s.retry_initial = Duration::from_millis(1);
                s.retry_max = Duration::ZERO;
            }),
        ];
        for (key, poke) in cases {
            let mut s = valid();
            poke(&mut s);
            let text = err_text(s.validate());
            assert!(text.starts_with(&format!("`{key}` =")), "{key}: {text}");
            assert!(
                text.contains(&format!("--{}", key.replace('_', "-"))),
                "{text}"
            );
        }
    }

    #[test]
    fn empty_optional_values_and_other_fields_are_refused() {
        let mut s = valid();
        s.username = Some(String::new());
        assert!(err_text(s.validate()).starts_with("`username` is empty"));
        let mut s = valid();
        s.client_secret_file = Some(PathBuf::new());
        assert!(err_text(s.validate()).starts_with("`client_secret_file` is an empty path"));
        let mut s = valid();
        s.authority_host = Some("http://login.example".into());
        assert!(err_text(s.validate()).starts_with("`authority_host`"));
        let mut s = valid();
        s.scope = " ".into();
        assert!(err_text(s.validate()).starts_with("`scope` is empty"));
        let mut s = valid();
        s.admin_listen = "9464".into();
        assert!(err_text(s.validate()).starts_with("`admin_listen`"));
        s.admin_listen = String::new();
        s.validate().unwrap();
    }

    #[test]
    fn durations_parse_and_format() {
        let ok = [
            ("250ms", Duration::from_millis(250)),
            ("5s", Duration::from_secs(5)),
            ("1.5s", Duration::from_millis(1500)),
            ("3m", Duration::from_secs(180)),
            ("1h", Duration::from_secs(3600)),
            ("7", Duration::from_secs(7)),
            (" 2m ", Duration::from_secs(120)),
        ];
        for (text, want) in ok {
            assert_eq!(duration::parse(text), Ok(want), "{text}");
            assert_eq!(
                duration::parse(&duration::format(want)),
                Ok(want),
                "{text} round trip"
            );
        }
        for bad in ["", "s", "5x", "-1s", "1e3", "five"] {
            assert!(duration::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(duration::format(Duration::from_secs(180)), "3m");
        assert_eq!(duration::format(Duration::from_millis(1500)), "1500ms");
        // A bare number in the file is seconds.
        let s = load(Some("refresh_margin = 90\nretry_initial = 0.5\n"), &[], &[]).unwrap();
        assert_eq!(s.refresh_margin, Duration::from_secs(90));
        assert_eq!(s.retry_initial, Duration::from_millis(500));
    }

    #[test]
    fn printed_config_loads_back_to_the_same_settings() {
        let mut s = valid();
        s.listen = vec!["127.0.0.1:1".into(), "unix:/run/a \"b\".sock".into()];
        s.username = Some("app".into());
        s.client_secret_file = Some("/run/secret".into());
        s.refresh_ratio = 1.0;
        s.refresh_margin = Duration::from_millis(1500);
        let printed = s.redacted_toml();
        assert!(
            printed.contains("client_secret_file = \"/run/secret\""),
            "{printed}"
        );
        assert!(printed.contains("# tenant_id = (not set)"), "{printed}");
        let back = load(Some(&printed), &[], &[]).unwrap();
        assert_eq!(back.redacted_toml(), printed);
        assert_eq!(back.listen, s.listen);
        assert_eq!(back.refresh_margin, s.refresh_margin);
        assert_eq!(back.refresh_ratio, 1.0);
    }

    #[test]
    fn refresh_policy_carries_the_settings() {
        let mut s = valid();
        s.refresh_ratio = 0.5;
        s.refresh_margin = Duration::from_secs(240);
        s.refresh_jitter = 0.2;
        s.retry_initial = Duration::from_secs(2);
        s.retry_max = Duration::from_secs(30);
        s.token_timeout = Duration::from_secs(9);
        s.username = Some("app".into());
        let p = s.refresh_policy();
        assert_eq!(p.ratio, 0.5);
        assert_eq!(p.margin, Duration::from_secs(240));
        assert_eq!(p.jitter, 0.2);
        assert_eq!(p.retry_initial, Duration::from_secs(2));
        assert_eq!(p.retry_max, Duration::from_secs(30));
        assert_eq!(p.timeout, Duration::from_secs(9));
        assert_eq!(p.username.as_deref(), Some("app"));
    }

    /// Every key, in struct order.
    fn all_keys() -> Vec<String> {
        ordered_fields(&serde_json::to_string(&Settings::default()).unwrap())
            .into_iter()
            .map(|(k, _)| k)
            // `[[upstreams]]` tables exist only in the file (tested on their own).
            .filter(|k| k != "upstreams")
            .collect()
    }

    #[test]
    fn example_file_documents_every_key_with_its_true_default() {
        let example = include_str!("../config/entra-redis-proxy.toml");
        // Uncomment every `# key = value` line: the result must load, and every key that has
        // a default must come out equal to it.
        let uncommented: String = example
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.split_once(" = ")
                    .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let loaded = load(Some(&uncommented), &[], &[]).unwrap();
        let defaults = ordered_fields(&serde_json::to_string(&Settings::default()).unwrap());
        let example_values = ordered_fields(&serde_json::to_string(&loaded).unwrap());
        for key in all_keys() {
            assert!(
                uncommented
                    .lines()
                    .any(|l| l.starts_with(&format!("{key} = "))),
                "config/entra-redis-proxy.toml lacks `{key}`"
            );
        }
        for ((key, default), (_, shown)) in defaults.into_iter().zip(example_values) {
            if key != "upstream" && !default.is_null() {
                assert_eq!(shown, default, "example default of `{key}`");
            }
        }
    }

    #[test]
    fn docs_list_every_key_flag_and_variable() {
        let docs = include_str!("../docs/configuration.md");
        for key in all_keys() {
            let row = format!("| `{key}` | `--{}", key.replace('_', "-"));
            assert!(
                docs.contains(&row),
                "docs/configuration.md lacks a row for `{key}`"
            );
            assert!(docs.contains(&format!("`{}`", env_var_name(&key))), "{key}");
        }
    }

    #[test]
    fn every_key_has_a_flag() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        for key in all_keys() {
            let flag = key.replace('_', "-");
            assert!(
                cmd.get_arguments()
                    .any(|a| a.get_long() == Some(flag.as_str())),
                "no --{flag}"
            );
        }
    }

    #[test]
    fn secret_looking_values_are_redacted() {
        use serde_json::json;
        assert_eq!(
            redact("client_secret", json!("hunter2")),
            json!("<redacted>")
        );
        assert_eq!(redact("password", json!("hunter2")), json!("<redacted>"));
        assert_eq!(redact("access_token", json!("eyJ")), json!("<redacted>"));
        assert_eq!(redact("client_secret", json!(null)), json!(null));
        assert_eq!(
            redact("client_secret_file", json!("/run/s")),
            json!("/run/s")
        );
        assert_eq!(redact("token_timeout", json!("30s")), json!("30s"));
        assert_eq!(redact("username", json!("app")), json!("app"));
    }
}

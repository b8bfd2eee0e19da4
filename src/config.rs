//! The typed configuration: defaults < file (`--config`, TOML) < environment
//! (`ENTRA_REDIS_PROXY_*`) < flags, validated at start-up.
//!
//! (Loading, validation and `--print-config` are being written; the struct is the contract.)

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which identity provides tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
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
    pub max_connections: usize,
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
    pub max_bulk_len: usize,
    /// Most arguments in one client command.
    pub max_command_args: usize,
    /// Longest inline command line.
    pub max_inline_len: usize,
    /// On SIGTERM, how long sessions may take to finish the commands in flight before the
    /// process exits anyway (SIGINT allows a fifth of it).
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// File mode of `unix:` listener sockets, as an octal string (`"0660"`).
    pub socket_mode: String,
    /// File holding the password local clients must send with `AUTH`; none means local
    /// clients are not asked for one.
    pub client_password_file: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: vec!["127.0.0.1:6379".into()],
            allow_non_loopback: false,
            max_connections: 10_000,
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
        }
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
        if !secs.is_finite() || secs < 0.0 || secs > 1e9 {
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

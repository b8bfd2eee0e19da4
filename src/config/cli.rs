//! The command line: one optional flag per configuration key.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::{duration, CredentialKind, LogFormat, Settings};

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
    /// Upstream connections kept connected and authenticated for new clients, per upstream
    /// (per node in cluster mode); 0 = none [default: 2].
    #[arg(long, value_name = "N")]
    pub warm_connections: Option<usize>,
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
    /// When a subscriber's or MONITOR's upstream connection is lost, resubscribe silently
    /// instead of closing the client [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub reconnect_subscribers: Option<bool>,
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
    pub(super) fn apply(self, s: &mut Settings) {
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
        set(&mut s.warm_connections, self.warm_connections);
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
        set(&mut s.reconnect_subscribers, self.reconnect_subscribers);
        set(&mut s.cluster, self.cluster);
        set_opt(&mut s.cluster_ports, self.cluster_ports);
        set(&mut s.cluster_refresh, self.cluster_refresh);
    }
}

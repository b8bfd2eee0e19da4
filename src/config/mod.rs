//! The typed configuration: defaults < file (`--config`, TOML) < environment
//! (`ENTRA_REDIS_PROXY_*`) < flags, validated at start-up.
//!
//! [`load_from`] parses the command line, layers the sources with the `config` crate and
//! returns the merged [`Settings`]; [`Settings::plan`] then refuses anything unusable with
//! a [`ConfigError`] that names the key and says how to set it, and converts the rest, once,
//! into the typed [`Plan`] the server and `doctor` run (no text is parsed after it).
//!
//! Layout:
//! - `keys`: the table declaring every key once (flag help, type, default, whether an
//!   `[[upstreams]]` entry may set it); `layer` generates from it [`Settings`], the
//!   all-optional [`Layer`] each source fills, [`UpstreamSettings`] and the merge;
//! - this file: the value types ([`CredentialKind`], [`LogFormat`]) and the values derived
//!   from settings ([`ListenAddr`], [`RefreshPolicy`]);
//! - `cli`: the command line ([`Cli`]); `load`: layering file, environment and flags;
//! - `validate`: the rules of [`Settings::validate`] and the per-upstream conversions;
//! - `plan`: [`Plan`], the validated and converted configuration ([`Settings::plan`]);
//! - `print`: `--print-config` ([`Settings::redacted_toml`]);
//! - `error`: [`ConfigError`]; `parse`: [`count`] and [`duration`]
//!   values (`HOST:PORT` is [`crate::addr::HostPort`]).

#[macro_use]
mod layer;
mod cli;
mod error;
mod keys;
mod load;
mod parse;
mod plan;
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
use keys::UPSTREAM_KEYS;
pub use keys::{Layer, Settings, UpstreamSettings};
pub use load::{load_from, load_from_env, Loaded};
pub use parse::{count, duration};
pub use plan::{ClusterPlan, Plan, UpstreamPlan};

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

/// The name of the upstream configured by the top-level keys alone.
pub const DEFAULT_UPSTREAM_NAME: &str = "default";

/// Warm connections kept ready by default: enough for a burst of a few new clients without a
/// handshake, few enough not to matter against the cache's connection limit.
pub const DEFAULT_WARM_CONNECTIONS: usize = 2;

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
/// acquisition is retried. Built by [`Settings::plan`] ([`UpstreamPlan::refresh`]); the schedule it implies
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

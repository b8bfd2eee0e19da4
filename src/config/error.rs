//! [`ConfigError`]: what is wrong with the configuration, worded for the user.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::env_var_name;

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

//! Access tokens and where they come from.
//!
//! - [`AccessToken`]: a token as the proxy uses it (secret, AUTH username, expiry). Its secret
//!   is zeroized on drop and never printed by `Debug`.
//! - [`TokenSource`]: anything that can produce a token (a token file, an Entra credential).
//! - [`TokenManager`]: the background task that keeps a fresh token published on a `watch`
//!   channel, refreshing before expiry and retrying forever on failure.
//!
//! The Entra ID credentials ([`azure`]) need the `azure` cargo feature (on by default);
//! without it only the token file is available, and [`build_source`] refuses every other
//! credential with an error naming the feature.

#[cfg(feature = "azure")]
pub mod azure;
pub mod env;
pub mod file;
pub mod jwt;
pub mod manager;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use zeroize::Zeroizing;

pub use crate::config::RefreshPolicy;
pub use manager::{TokenManager, TokenManagerHandle};

/// A secret string: zeroized when dropped, redacted in `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Secret(Zeroizing::new(value))
    }

    /// The secret itself. Call only where the value must leave the process (the AUTH command).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(\"...\")")
    }
}

/// What a [`TokenSource`] returns: the raw token and its expiry as the source reports it.
#[derive(Debug, Clone)]
pub struct FetchedToken {
    /// The access token (a JWT for Entra).
    pub secret: Secret,
    /// When the token expires, as reported by the source (or read from the JWT `exp` claim).
    pub expires_at: SystemTime,
}

/// A token ready for use: secret, AUTH username, expiry, and the AUTH command built once.
pub struct AccessToken {
    secret: Secret,
    /// The AUTH username: the token's `oid` claim, or the configured username.
    username: String,
    /// Expiry of the token.
    expires_at: SystemTime,
    /// When the proxy obtained it; the start of its lifetime for the refresh schedule.
    obtained_at: SystemTime,
    /// Increases by one with every new token the manager publishes.
    generation: u64,
    /// `AUTH <username> <token>` encoded as a RESP array, built once and shared by every
    /// session (10,000 sessions re-authenticating must not encode it 10,000 times).
    auth_command: Zeroizing<Vec<u8>>,
}

impl AccessToken {
    /// Builds a token. `username` is the AUTH username (already resolved from `oid` or config).
    pub fn new(
        secret: Secret,
        username: String,
        expires_at: SystemTime,
        obtained_at: SystemTime,
        generation: u64,
    ) -> Self {
        let auth_command = Zeroizing::new(crate::resp::encode_command(&[
            b"AUTH",
            username.as_bytes(),
            secret.expose().as_bytes(),
        ]));
        AccessToken {
            secret,
            username,
            expires_at,
            obtained_at,
            generation,
            auth_command,
        }
    }

    /// The raw token.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// The AUTH username.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Expiry time.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// When the proxy obtained this token.
    pub fn obtained_at(&self) -> SystemTime {
        self.obtained_at
    }

    /// Sequence number of this token (1 for the first).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// `AUTH <username> <token>` as RESP bytes, ready to write to the upstream connection.
    pub fn auth_command(&self) -> &[u8] {
        &self.auth_command
    }

    /// True once the expiry has passed.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.expires_at
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &self.secret)
            .field("username", &self.username)
            .field(
                "expires_at",
                &crate::token::jwt::unix_seconds(self.expires_at),
            )
            .field("generation", &self.generation)
            .finish()
    }
}

/// The current token as every session sees it: `None` until the first token arrives.
pub type CurrentToken = Option<Arc<AccessToken>>;

/// Why one acquisition failed. The token manager keeps the current token and retries with
/// backoff, forever; a misconfiguration found before the first acquisition is a
/// [`CredentialError`] instead. Messages name the source and the cause, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The source's input (file, secret, certificate) could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// What was being read ("token file", "client secret file").
        what: &'static str,
        /// The path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The token is not a usable JWT (not three parts, bad base64, bad JSON, missing claim).
    #[error("the token is not a valid JWT: {0}")]
    Malformed(String),
    /// The token has no `oid` claim and no username is configured.
    #[error("the token has no `oid` claim; set `username` (--username) to the AUTH user name")]
    NoUsername,
    /// The identity provider failed (an HTTP error, a refused request, an unusable answer):
    /// retried with backoff, forever.
    #[error("{0}")]
    Provider(String),
    /// The acquisition took longer than the configured timeout.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
}

/// Why a token source cannot be built from the configuration (a missing tenant id, an
/// unreadable client secret file, an unusable certificate): found at start-up, before any
/// acquisition, and fatal (the process exits 64). Messages name the input and where it can be
/// set, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// A required input is missing, or a value is not allowed.
    #[error("{0}")]
    Misconfigured(String),
    /// An input file (a CA, a secret) could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// What was being read ("identity CA file").
        what: &'static str,
        /// The path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The credential could not be built from its inputs when checked once at start-up (the
    /// same step runs again at each acquisition, where its failure is a [`TokenError`]).
    #[error(transparent)]
    Unusable(TokenError),
}

/// A boxed future, so that [`TokenSource`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something that can produce access tokens: a token file, or an Entra ID credential.
///
/// The [`TokenManager`] owns scheduling, timeouts and retries; a source only fetches.
pub trait TokenSource: Send + Sync + 'static {
    /// A short description for logs and errors, e.g. `token-file /var/run/token`. No secrets.
    fn describe(&self) -> String;

    /// Obtains a token. Each call must return the freshest token the source can give (a
    /// credential that caches must be bypassed, or a scheduled refresh returns the old token).
    fn fetch(&self) -> BoxFuture<'_, Result<FetchedToken, TokenError>>;

    /// Resolves when the source knows its token has changed (e.g. the token file was
    /// rewritten); the manager then fetches at once. Sources that cannot tell never resolve.
    fn changed(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::pending())
    }
}

/// Builds the token source the configuration names: the token file, or an Entra ID
/// credential (`azure`, when built with the `azure` feature). Misconfiguration (a missing
/// tenant, an unreadable secret file, an unusable certificate) is a [`CredentialError`] that
/// names the input and where it can come from; the server exits 64 on it.
pub fn build_source(
    settings: &crate::config::Settings,
) -> Result<Arc<dyn TokenSource>, CredentialError> {
    use crate::config::CredentialKind;
    match settings.credential {
        CredentialKind::TokenFile => {
            let path = settings.token_file.clone().ok_or_else(|| {
                CredentialError::Misconfigured(
                    "credential `token-file` needs `token_file` (--token-file PATH)".into(),
                )
            })?;
            Ok(Arc::new(file::TokenFileSource::new(
                path,
                settings.token_file_poll,
            )))
        }
        #[cfg(feature = "azure")]
        _ => azure::build(settings),
        #[cfg(not(feature = "azure"))]
        other => {
            use clap::ValueEnum;
            let name = other
                .to_possible_value()
                .map(|v| v.get_name().to_owned())
                .unwrap_or_default();
            Err(CredentialError::Misconfigured(format!(
                "credential `{name}` needs the `azure` cargo feature, and this build of \
                 entra-redis-proxy was made without it (build with default features, or use \
                 `credential = \"token-file\"`)"
            )))
        }
    }
}

/// Logs a warning, once per path, when a file holding a secret or a token can be read by every
/// user on the machine. Real deployments mount such files 0600 or 0640.
pub fn warn_if_readable_by_others(path: &std::path::Path, what: &str) {
    use std::collections::HashSet;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::{Mutex, OnceLock};
    static WARNED: OnceLock<Mutex<HashSet<std::path::PathBuf>>> = OnceLock::new();
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.permissions().mode() & 0o004 == 0 {
        return;
    }
    let mut warned = WARNED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if warned.insert(path.to_path_buf()) {
        tracing::warn!(
            path = %path.display(),
            "the {what} is readable by every user on this machine; restrict it (chmod 600)"
        );
    }
}

/// A build without the `azure` feature: every Entra credential is refused at start-up with the
/// feature named, and the token file still works. (`scripts/test.sh` runs these with
/// `--no-default-features`.)
#[cfg(all(test, not(feature = "azure")))]
mod without_azure {
    use crate::config::{CredentialKind, Settings};

    #[test]
    fn entra_credentials_name_the_missing_feature() {
        for kind in [
            CredentialKind::Default,
            CredentialKind::ManagedIdentity,
            CredentialKind::WorkloadIdentity,
            CredentialKind::ClientSecret,
            CredentialKind::ClientCertificate,
            CredentialKind::AzureCli,
        ] {
            let settings = Settings {
                credential: kind,
                ..Settings::default()
            };
            let err = super::build_source(&settings).err().expect("refused");
            let text = err.to_string();
            assert!(text.contains("`azure` cargo feature"), "{kind:?}: {text}");
        }
    }

    #[test]
    fn the_token_file_still_works() {
        let settings = Settings {
            credential: CredentialKind::TokenFile,
            token_file: Some("/nonexistent/token".into()),
            ..Settings::default()
        };
        let source = super::build_source(&settings).expect("a token-file source");
        assert!(source.describe().contains("/nonexistent/token"));
    }
}

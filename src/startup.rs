//! [`StartupError`]: why the proxy could not start, grouped by origin, each with the exit
//! code the process ends with. `main` maps it to an exit code without inspecting messages.
//!
//! Exit codes: 64 (`EX_USAGE`, [`EXIT_USAGE`]) when the operator must change the
//! configuration or a file it names (a bad value, a CA file that does not parse, a token
//! source that cannot be built, a listen path that is not a socket); 1 for everything else (a
//! port already taken, a signal handler that cannot be installed).

use crate::admin::AdminError;
use crate::config::{ConfigError, EXIT_USAGE};
use crate::listener::ListenError;
use crate::token::CredentialError;
use crate::upstream::TlsConfigError;

/// Exit code for a start-up failure that is not the configuration's fault.
pub const EXIT_FAILURE: u8 = 1;

/// Why the proxy could not start. The `Display` text is the whole message for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The configuration is invalid (bad value, missing key, inconsistent keys).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The cache's TLS material (`ca_file`, `tls_server_name`) is unusable.
    #[error("upstream {upstream}: {source}")]
    Tls {
        /// The upstream whose settings name it.
        upstream: String,
        /// What is wrong with it.
        #[source]
        source: TlsConfigError,
    },
    /// The token source cannot be built (credential misconfiguration).
    #[error("{source}")]
    TokenSource {
        /// The upstream whose settings name it.
        upstream: String,
        /// What is missing or unusable.
        #[source]
        source: CredentialError,
    },
    /// A file the configuration names (the client password file) cannot be used.
    #[error("{0}")]
    Input(String),
    /// A client listener could not be bound.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// The admin listener could not be bound.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The process could not set itself up (signal handlers, the runtime).
    #[error("{what}: {source}")]
    Process {
        /// What was being set up.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl StartupError {
    /// The process exit code for this error: 64 for what the configuration must fix, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartupError::Config(_)
            | StartupError::Tls { .. }
            | StartupError::TokenSource { .. }
            | StartupError::Input(_) => EXIT_USAGE,
            StartupError::Listen(e) if e.is_configuration() => EXIT_USAGE,
            StartupError::Listen(_) | StartupError::Admin(_) | StartupError::Process { .. } => {
                EXIT_FAILURE
            }
        }
    }

    /// True when [`exit_code`](Self::exit_code) is 64: the message is reported as a
    /// configuration error.
    pub fn is_configuration(&self) -> bool {
        self.exit_code() == EXIT_USAGE
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::PathBuf;

    use super::*;

    fn io_error() -> io::Error {
        io::Error::new(io::ErrorKind::AddrInUse, "address in use")
    }

    #[test]
    fn configuration_errors_exit_64_and_the_rest_1() {
        let cases: Vec<(StartupError, u8)> = vec![
            (
                ConfigError::Invalid {
                    key: "listen".into(),
                    problem: "is empty".into(),
                }
                .into(),
                64,
            ),
            (
                StartupError::Tls {
                    upstream: "default".into(),
                    source: TlsConfigError::NoRoots,
                },
                64,
            ),
            (
                StartupError::TokenSource {
                    upstream: "default".into(),
                    source: CredentialError::Misconfigured("needs a tenant id".into()),
                },
                64,
            ),
            (StartupError::Input("client password file".into()), 64),
            (
                ListenError::NotASocket {
                    path: PathBuf::from("/run/x"),
                }
                .into(),
                64,
            ),
            (
                ListenError::Tcp {
                    addr: "127.0.0.1:6379".into(),
                    source: io_error(),
                }
                .into(),
                1,
            ),
            (
                AdminError::Bind {
                    addr: "127.0.0.1:9464".into(),
                    source: io_error(),
                }
                .into(),
                1,
            ),
            (
                StartupError::Process {
                    what: "cannot install signal handlers",
                    source: io_error(),
                },
                1,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.exit_code(), code, "{error}");
            assert_eq!(error.is_configuration(), code == 64, "{error}");
        }
    }

    #[test]
    fn messages_stay_those_of_the_cause() {
        let e = StartupError::Tls {
            upstream: "orders".into(),
            source: TlsConfigError::NoRoots,
        };
        assert!(e.to_string().starts_with("upstream orders: "), "{e}");
        let e: StartupError = ListenError::NotASocket {
            path: PathBuf::from("/run/x"),
        }
        .into();
        assert_eq!(
            e.to_string(),
            "cannot listen on unix:/run/x: the path exists and is not a socket"
        );
    }
}

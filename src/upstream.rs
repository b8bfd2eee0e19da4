//! TLS connections to the cache, authenticated with the current token before any client byte
//! is forwarded.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::addr::HostPort;
use crate::metrics::Metrics;
use crate::resp::{self, ReplyScanner};
use crate::token::AccessToken;

/// An authenticated TLS connection to the cache.
pub type UpstreamStream = TlsStream<TcpStream>;

/// Why an upstream connection could not be opened. No message carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed (untrusted certificate, wrong name, ...).
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        /// `host:port`.
        addr: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The cache refused the token.
    #[error("the cache refused AUTH as user `{user}`: {reply}")]
    AuthRejected {
        /// The AUTH username (an object id, not a secret).
        user: String,
        /// The cache's error reply, e.g. `WRONGPASS invalid username-password pair ...`.
        reply: String,
    },
    /// A step took longer than its timeout.
    #[error("{step} with {addr} timed out after {after:?}")]
    Timeout {
        /// `connect`, `TLS handshake` or `AUTH`.
        step: &'static str,
        /// `host:port`.
        addr: String,
        /// The timeout.
        after: Duration,
    },
    /// The connection broke during AUTH, or the reply was not RESP.
    #[error("connection to {addr} failed during AUTH: {detail}")]
    Protocol {
        /// `host:port`.
        addr: String,
        /// What happened.
        detail: String,
    },
}

impl UpstreamError {
    /// A fixed word for the `reason` label of `upstream_connect_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            UpstreamError::Connect { .. } => "connect",
            UpstreamError::Tls { .. } => "tls",
            UpstreamError::AuthRejected { .. } => "auth",
            UpstreamError::Timeout { .. } => "timeout",
            UpstreamError::Protocol { .. } => "protocol",
        }
    }

    /// True when the cache refused the token (WRONGPASS, NOAUTH...): a new token may help.
    pub fn is_auth_rejected(&self) -> bool {
        matches!(self, UpstreamError::AuthRejected { .. })
    }
}

/// Errors building the TLS configuration (bad CA file).
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// The CA file could not be read or holds no certificate.
    #[error("cannot use CA file {path}: {detail}")]
    CaFile {
        /// The path.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The server name is not a valid DNS name or IP address.
    #[error("`{0}` is not a valid TLS server name (set tls_server_name / --tls-server-name)")]
    ServerName(String),
    /// No trusted root at all.
    #[error("no trusted CA certificates: the system store is empty and no ca_file is set")]
    NoRoots,
}

/// The outcome of the most recent upstream connection attempt (for readiness).
#[derive(Debug, Clone)]
pub struct ConnectAttempt {
    /// When the attempt ended.
    pub at: SystemTime,
    /// `None` if it succeeded, else the error's message (which never carries a secret).
    pub error: Option<String>,
}

/// Opens authenticated upstream connections.
pub struct UpstreamConnector {
    /// `host:port` to connect to.
    addr: String,
    /// The host part of `addr` (without IPv6 brackets).
    host: String,
    /// The name the certificate must carry (and SNI).
    server_name: ServerName<'static>,
    /// The TLS client (roots, resumption cache shared by every connection).
    tls: TlsConnector,
    /// TCP connect timeout.
    connect_timeout: Duration,
    /// TLS handshake timeout.
    tls_timeout: Duration,
    /// Time allowed for the AUTH reply.
    auth_timeout: Duration,
    /// Where connect times and errors are recorded.
    metrics: Arc<Metrics>,
    /// The last attempt's outcome; `None` before the first.
    last_attempt: Mutex<Option<ConnectAttempt>>,
}

impl UpstreamConnector {
    /// Builds a connector: system roots plus `ca_file`, certificate verified against
    /// `server_name`.
    pub fn new(
        upstream: &HostPort,
        server_name: &str,
        ca_file: Option<&Path>,
        timeouts: (Duration, Duration, Duration),
        metrics: Arc<Metrics>,
    ) -> Result<Self, TlsConfigError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = ca_file {
            let certs = read_pem_certs(path)?;
            for cert in certs {
                roots.add(cert).map_err(|e| TlsConfigError::CaFile {
                    path: path.display().to_string(),
                    detail: e.to_string(),
                })?;
            }
        }
        if roots.is_empty() {
            return Err(TlsConfigError::NoRoots);
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("default protocol versions are valid")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| TlsConfigError::ServerName(server_name.to_owned()))?;
        Ok(UpstreamConnector {
            addr: upstream.to_string(),
            host: upstream.host().to_owned(),
            server_name,
            tls: TlsConnector::from(Arc::new(config)),
            connect_timeout: timeouts.0,
            tls_timeout: timeouts.1,
            auth_timeout: timeouts.2,
            metrics,
            last_attempt: Mutex::new(None),
        })
    }

    /// A connector to another node of the same cache (cluster mode): same TLS client, same
    /// certificate name to verify (the cache's, even when the node is given by IP address),
    /// same timeouts and metrics.
    pub fn for_node(&self, host: &str, port: u16) -> UpstreamConnector {
        UpstreamConnector {
            addr: HostPort::display(host, port).to_string(),
            host: host.to_owned(),
            server_name: self.server_name.clone(),
            tls: self.tls.clone(),
            connect_timeout: self.connect_timeout,
            tls_timeout: self.tls_timeout,
            auth_timeout: self.auth_timeout,
            metrics: self.metrics.clone(),
            last_attempt: Mutex::new(None),
        }
    }

    /// The host this connector connects to, as configured or reported by the cluster.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `host:port` of the cache.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The TLS client and the name the certificate must carry, for a handshake made step by
    /// step (`doctor`).
    pub fn tls(&self) -> (&TlsConnector, &ServerName<'static>) {
        (&self.tls, &self.server_name)
    }

    /// The connect, TLS handshake and AUTH timeouts.
    pub fn timeouts(&self) -> (Duration, Duration, Duration) {
        (self.connect_timeout, self.tls_timeout, self.auth_timeout)
    }

    /// Opens a TLS connection and authenticates it with `token`.
    pub async fn connect(&self, token: &AccessToken) -> Result<UpstreamStream, UpstreamError> {
        let started = Instant::now();
        let result = self.connect_inner(token).await;
        match &result {
            Ok(_) => self
                .metrics
                .upstream_connect_duration_seconds
                .observe(started.elapsed().as_secs_f64()),
            Err(e) => self.metrics.upstream_connect_error(e.reason()),
        }
        let attempt = ConnectAttempt {
            at: SystemTime::now(),
            error: result.as_ref().err().map(|e| e.to_string()),
        };
        *self.last_attempt.lock().unwrap_or_else(|e| e.into_inner()) = Some(attempt);
        result
    }

    /// Authenticates an open, idle connection again with `token` (a warm connection when a
    /// new token arrives). The connection must have nothing else in flight.
    pub async fn reauthenticate(
        &self,
        stream: &mut UpstreamStream,
        token: &AccessToken,
    ) -> Result<(), UpstreamError> {
        tokio::time::timeout(self.auth_timeout, authenticate(stream, token, &self.addr))
            .await
            .map_err(|_| UpstreamError::Timeout {
                step: "AUTH",
                addr: self.addr.clone(),
                after: self.auth_timeout,
            })?
    }

    /// Checks an open, idle connection with `PING` (a warm connection kept alive).
    pub async fn ping(&self, stream: &mut UpstreamStream) -> Result<(), UpstreamError> {
        let addr = &self.addr;
        let proto = |detail: String| UpstreamError::Protocol {
            addr: addr.clone(),
            detail,
        };
        let exchange = async {
            stream
                .write_all(b"*1\r\n$4\r\nPING\r\n")
                .await
                .map_err(|e| proto(e.to_string()))?;
            stream.flush().await.map_err(|e| proto(e.to_string()))?;
            let mut buf = [0u8; 7];
            stream
                .read_exact(&mut buf)
                .await
                .map_err(|e| proto(e.to_string()))?;
            if &buf != b"+PONG\r\n" {
                return Err(proto(format!(
                    "unexpected reply to PING: {}",
                    String::from_utf8_lossy(&buf).trim()
                )));
            }
            Ok(())
        };
        tokio::time::timeout(self.auth_timeout, exchange)
            .await
            .map_err(|_| UpstreamError::Timeout {
                step: "PING",
                addr: addr.clone(),
                after: self.auth_timeout,
            })?
    }

    /// The outcome of the most recent connection attempt; `None` before the first.
    pub fn last_attempt(&self) -> Option<ConnectAttempt> {
        self.last_attempt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn connect_inner(&self, token: &AccessToken) -> Result<UpstreamStream, UpstreamError> {
        let addr = &self.addr;
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr.as_str()))
            .await
            .map_err(|_| UpstreamError::Timeout {
                step: "connect",
                addr: addr.clone(),
                after: self.connect_timeout,
            })?
            .map_err(|source| UpstreamError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let mut tls = tokio::time::timeout(
            self.tls_timeout,
            self.tls.connect(self.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| UpstreamError::Timeout {
            step: "TLS handshake",
            addr: addr.clone(),
            after: self.tls_timeout,
        })?
        .map_err(|source| UpstreamError::Tls {
            addr: addr.clone(),
            source,
        })?;
        tokio::time::timeout(self.auth_timeout, authenticate(&mut tls, token, addr))
            .await
            .map_err(|_| UpstreamError::Timeout {
                step: "AUTH",
                addr: addr.clone(),
                after: self.auth_timeout,
            })??;
        Ok(tls)
    }
}

/// Sends AUTH on a fresh connection and reads exactly its reply.
async fn authenticate(
    stream: &mut UpstreamStream,
    token: &AccessToken,
    addr: &str,
) -> Result<(), UpstreamError> {
    let proto = |detail: String| UpstreamError::Protocol {
        addr: addr.to_owned(),
        detail,
    };
    stream
        .write_all(token.auth_command())
        .await
        .map_err(|e| proto(e.to_string()))?;
    stream.flush().await.map_err(|e| proto(e.to_string()))?;
    let mut buf = BytesMut::with_capacity(256);
    let mut scanner = ReplyScanner::default();
    loop {
        if let Some(len) = scanner
            .scan(&buf, 64 * 1024)
            .map_err(|e| proto(e.to_string()))?
        {
            let reply = &buf[..len];
            if reply == b"+OK\r\n" {
                if len != buf.len() {
                    return Err(proto("unexpected bytes after the AUTH reply".into()));
                }
                return Ok(());
            }
            let text = resp::error_text(reply)
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(reply).trim().to_owned());
            return Err(UpstreamError::AuthRejected {
                user: token.username().to_owned(),
                reply: text,
            });
        }
        let n = stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| proto(e.to_string()))?;
        if n == 0 {
            return Err(proto("the cache closed the connection".into()));
        }
    }
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    use rustls::pki_types::pem::PemObject;
    let err = |detail: String| TlsConfigError::CaFile {
        path: path.display().to_string(),
        detail,
    };
    let data = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

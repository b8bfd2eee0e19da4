//! The network steps: DNS, the TCP connect and the TLS handshake (version, certificate,
//! verification; on failure, the certificate the cache presented).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use tokio::net::TcpStream;

use super::context::{Planned, Run};
use super::report::{local_time, unix, Verdict};

/// Resolves the cache's host name; the addresses found, or `None`.
pub(super) async fn check_dns(run: &mut Run, p: &Planned) -> Option<Vec<SocketAddr>> {
    let started = Instant::now();
    let addr = p.connector.addr().to_owned();
    let host = p.connector.host().to_owned();
    let timeout = p.plan.settings.connect_timeout;
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

/// Connects to the first address; the connection, or `None`.
pub(super) async fn check_tcp(
    run: &mut Run,
    p: &Planned,
    addrs: &[SocketAddr],
) -> Option<TcpStream> {
    let started = Instant::now();
    let target = addrs[0];
    let timeout = p.plan.settings.connect_timeout;
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

/// The TLS handshake over `tcp`, verified as the daemon verifies it; the stream, or `None`.
pub(super) async fn check_tls(
    run: &mut Run,
    p: &Planned,
    tcp: TcpStream,
    target: SocketAddr,
    offset: time::UtcOffset,
) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
    let started = Instant::now();
    let (connector, name) = p.connector.tls();
    let timeout = p.plan.settings.tls_timeout;
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
    /// The leaf certificate, once the handshake has shown it.
    leaf: Mutex<Option<Vec<u8>>>,
    /// The signature schemes to offer (those of the crypto provider).
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

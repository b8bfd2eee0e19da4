//! A mock Microsoft Entra ID for tests and the demo: it speaks the real wire protocols so the
//! proxy's real `azure_identity` code runs against it.
//!
//! - `POST /{tenant}/oauth2/v2.0/token`: OAuth2 v2.0 client credentials, with `client_secret`
//!   or `client_assertion` (workload identity's federated token, or a certificate assertion).
//! - `GET /msi/token`: the App Service managed-identity endpoint (`IDENTITY_ENDPOINT` +
//!   `IDENTITY_HEADER`), answering with `expires_on` as a string like the real one.
//! - `GET /cli/token`: what the stand-in `az` (see [`az_main`]) turns into `az account
//!   get-access-token -o json` output.
//! - `/control/*`: failure injection, token lifetime, and the lists of issued tokens and
//!   requests (see [`USAGE`]).
//!
//! One port serves HTTPS and plain HTTP (the first byte tells a TLS handshake apart), because
//! azure_identity demands `https://` for the authority host but App Service endpoints are
//! plain HTTP. Every token is an unsigned JWT with a unique `oid`; with `--redis-cli-args` the
//! mock makes it valid in Redis (`ACL SETUSER <oid> on >TOKEN ~* &* +@all`) before answering
//! and deletes the user when the token expires, which disconnects every connection still
//! authenticated with it: that is how the tests emulate Azure's expiry.
//!
//! Layout: this file binds, accepts and serves HTTP (TLS or plain on one port) and routes each
//! request; `options` is the command line ([`MockConfig`], [`USAGE`]); `state` what the
//! connections share; `endpoints` the token endpoints (OAuth2, managed identity, CLI) and
//! their injected failures; `issue` makes tokens (and their Redis users); `control` the
//! `/control/*` endpoint; `http` requests, responses and form encoding; `certs` the generated
//! test CA and certificate; `az` the `az` stand-in.

mod az;
mod certs;
mod control;
mod endpoints;
mod http;
mod issue;
mod options;
mod state;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use az::write_az_script;
use certs::tls_material;
use http::{to_http, HttpRequest, HttpResponse};
use state::{Mock, State};

pub use az::az_main;
pub use http::{parse_form, percent_encode};
pub use options::{parse_args, MockConfig, USAGE};
pub use state::FailMode;

/// Runs the mock until the process is killed. Prints `KEY=VALUE` lines (address, authority
/// host, managed-identity endpoint and header) and then `READY` on stdout.
pub async fn run(config: MockConfig) -> std::io::Result<()> {
    let (cert_chain, key, ca_pem) = tls_material(&config)?;
    if let (Some(path), Some(pem)) = (&config.ca_out, &ca_pem) {
        std::fs::write(path, pem)?;
    }
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_no_client_auth()
    .with_single_cert(cert_chain, key)
    .map_err(std::io::Error::other)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;

    if let Some(dir) = &config.az_dir {
        write_az_script(dir, addr)?;
    }
    let mut out = String::new();
    out.push_str(&format!("MOCK_IDENTITY_ADDR={addr}\n"));
    out.push_str(&format!("AZURE_AUTHORITY_HOST=https://{addr}\n"));
    out.push_str(&format!("IDENTITY_ENDPOINT=http://{addr}/msi/token\n"));
    out.push_str(&format!("IDENTITY_HEADER={}\n", config.identity_header));
    if let Some(p) = &config.ca_out {
        out.push_str(&format!("MOCK_IDENTITY_CA={}\n", p.display()));
    }
    if let Some(d) = &config.az_dir {
        out.push_str(&format!("AZ_DIR={}\n", d.display()));
    }
    out.push_str("READY\n");
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out.as_bytes())?;
        stdout.flush()?;
    }
    eprintln!("mock-identity: listening on {addr}");

    let mock = Arc::new(Mock {
        config,
        state: Mutex::new(State::default()),
    });
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("mock-identity: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let mock = mock.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(mock, acceptor, stream).await {
                eprintln!("mock-identity: connection: {e}");
            }
        });
    }
}

/// TLS or plain HTTP, told apart by the first byte (0x16 starts a TLS handshake).
async fn serve_connection(
    mock: Arc<Mock>,
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
) -> std::io::Result<()> {
    let mut first = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.peek(&mut first))
        .await
        .map_err(|_| std::io::Error::other("no request"))??;
    if n == 0 {
        return Ok(());
    }
    if first[0] == 0x16 {
        let tls = acceptor.accept(stream).await?;
        serve_http(mock, tls).await
    } else {
        serve_http(mock, stream).await
    }
}

/// Largest request body the mock reads (form posts and control JSON are small).
const MAX_BODY: usize = 1024 * 1024;

/// Serves requests on one connection (keep-alive) through hyper until the client closes it.
async fn serve_http<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    mock: Arc<Mock>,
    stream: S,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mock = mock.clone();
        async move { Ok::<_, std::convert::Infallible>(mock.respond(req).await) }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), service)
        .await
        .map_err(std::io::Error::other)
}

impl Mock {
    /// Reads the request (body bounded by [`MAX_BODY`]) and answers it; a "hang" failure
    /// answers nothing for ten minutes (the client gives up long before).
    async fn respond(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
        use http_body_util::BodyExt;
        let (parts, body) = req.into_parts();
        let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes().to_vec(),
            Err(_) => {
                return to_http(HttpResponse::json(
                    413,
                    &json!({"error": "body unreadable or over 1 MiB"}),
                ))
            }
        };
        let headers = parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let request = HttpRequest {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(parse_form).unwrap_or_default(),
            headers,
            body,
        };
        match self.handle(&request).await {
            Some(r) => to_http(r),
            None => {
                tokio::time::sleep(Duration::from_secs(600)).await;
                to_http(HttpResponse::json(504, &json!({"error": "hung"})))
            }
        }
    }

    /// Answers a request; `None` means "hang".
    async fn handle(&self, req: &HttpRequest) -> Option<HttpResponse> {
        let path = req.path.as_str();
        if path == "/healthz" {
            return Some(HttpResponse {
                status: 200,
                body: "ok".into(),
            });
        }
        if let Some(control) = path.strip_prefix("/control/") {
            return Some(self.control(&req.method, control, &req.body));
        }
        if req.method == "POST" && path.ends_with("/oauth2/v2.0/token") {
            let tenant = path
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            return self.oauth_token(&tenant, req).await;
        }
        if req.method == "GET" && path == "/msi/token" {
            return self.msi_token(req).await;
        }
        if req.method == "GET" && path == "/cli/token" {
            return self.cli_token(req).await;
        }
        Some(HttpResponse::json(
            404,
            &json!({"error": "not_found", "path": path}),
        ))
    }
}

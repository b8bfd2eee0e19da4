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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::token::jwt::unsigned_jwt;

/// The `--help` text of the `mock-identity` binary.
pub const USAGE: &str = "\
mock-identity: a local stand-in for Microsoft Entra ID (tests and demo only; no security)

USAGE:
  mock-identity [OPTIONS]
  mock-identity az --endpoint http://HOST:PORT account get-access-token -o json --scope S [--tenant T]

OPTIONS:
  --listen ADDR            listen address (default 127.0.0.1:0); HTTPS and plain HTTP on one port
  --lifetime DURATION      token lifetime, e.g. 60s, 5m (default 1h)
  --identity-header VALUE  the X-IDENTITY-HEADER the managed-identity endpoint expects
                           (default: random, printed at start)
  --client-secret-file F   accept only the client secret held in F (default: any non-empty one)
  --tls-cert F --tls-key F serve this certificate (PEM); default: generate a CA and a certificate
                           for 127.0.0.1/localhost
  --ca-out F               write the CA certificate (PEM) to F (use as identity_ca_file)
  --az-dir DIR             write an executable `az` stand-in into DIR (put DIR first on PATH)
  --redis-cli PATH         redis-cli to run (default: redis-cli)
  --redis-cli-args ARGS    make tokens valid in Redis: before answering, run
                             redis-cli ARGS -x ACL SETUSER <oid> on ~* &* +@all   (stdin: >TOKEN)
                           and at the token's expiry
                             redis-cli ARGS ACL DELUSER <oid>
                           ARGS is split on whitespace (no quoting), e.g.
                           \"-p 6380 --tls --cacert ca.pem --user admin --no-auth-warning\"
                           with the admin password in REDISCLI_AUTH (not in ARGS)
  -h, --help               this text

OUTPUT: on start, lines KEY=VALUE on stdout, then READY:
  MOCK_IDENTITY_ADDR, AZURE_AUTHORITY_HOST (https://ADDR), IDENTITY_ENDPOINT
  (http://ADDR/msi/token), IDENTITY_HEADER, and MOCK_IDENTITY_CA / AZ_DIR when written.

CONTROL (plain HTTP or HTTPS, JSON):
  POST /control/fail      {\"mode\":\"500\"|\"400\"|\"malformed\"|\"hang\"|\"none\",\"count\":N}
                          fail the next N token requests (all if count is absent); 400 is an
                          Entra error body (AADSTS7000215); hang never answers
  POST /control/lifetime  {\"seconds\":N}
  POST /control/identities {\"client_ids\":[...]}  managed identity: only these user-assigned
                          client ids exist here; others get 400 \"Identity not found\" (as IMDS)
  POST /control/reset     forget failures, issued tokens and requests
  GET  /control/issued    [{oid, token, exp, via, tenant, client_id}]
  GET  /control/requests  [{via, tenant, client_id, credential, assertion?}]
  GET  /healthz           ok

Tokens are unsigned JWTs (alg none) with a unique oid, aud, tid, iat, nbf and exp.
Client assertions are checked for shape (and a certificate assertion for aud/iss/sub),
not for their signature.
";

/// The mock's configuration (from the command line). `Debug` leaves the client secret out.
#[derive(Clone)]
pub struct MockConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Lifetime of issued tokens (whole seconds).
    pub lifetime: Duration,
    /// The managed-identity header value expected.
    pub identity_header: String,
    /// The only client secret accepted, if set (read from a file, never a flag value).
    pub client_secret: Option<String>,
    /// Certificate and key to serve; generated when absent.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Where to write the CA certificate.
    pub ca_out: Option<PathBuf>,
    /// Where to write the `az` stand-in.
    pub az_dir: Option<PathBuf>,
    /// The redis-cli program.
    pub redis_cli: String,
    /// Arguments that reach the test Redis as an admin; `None` disables ACL management.
    pub redis_cli_args: Option<Vec<String>>,
}

impl std::fmt::Debug for MockConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockConfig")
            .field("listen", &self.listen)
            .field("lifetime", &self.lifetime)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "..."))
            .field("tls", &self.tls)
            .field("ca_out", &self.ca_out)
            .finish_non_exhaustive()
    }
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            lifetime: Duration::from_secs(3600),
            identity_header: format!("{:032x}", rand::random::<u128>()),
            client_secret: None,
            tls: None,
            ca_out: None,
            az_dir: None,
            redis_cli: "redis-cli".into(),
            redis_cli_args: None,
        }
    }
}

/// How the next token requests fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// HTTP 500 with a short body.
    ServerError,
    /// HTTP 400 with an Entra error body (AADSTS7000215, invalid client secret).
    AadError,
    /// HTTP 200 with a body that is not valid JSON.
    Malformed,
    /// No answer at all, until the client gives up.
    Hang,
}

/// Mutable state shared by connections.
#[derive(Default)]
struct State {
    /// Active failure and how many more requests it applies to (`None`: all).
    failure: Option<(FailMode, Option<u64>)>,
    /// Lifetime override set through the control endpoint.
    lifetime: Option<Duration>,
    /// Every token issued.
    issued: Vec<Value>,
    /// Every token request seen.
    requests: Vec<Value>,
    /// Client ids of the user-assigned managed identities "assigned" to this machine; when
    /// set, a managed-identity request for another client id gets IMDS's "Identity not found".
    assigned_identities: Option<Vec<String>>,
}

/// The running mock's shared parts.
struct Mock {
    config: MockConfig,
    state: Mutex<State>,
}

/// A request as the handlers see it (read by hyper).
struct HttpRequest {
    method: String,
    path: String,
    query: HashMap<String, String>,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// A response to write.
struct HttpResponse {
    status: u16,
    body: String,
}

impl HttpResponse {
    fn json(status: u16, value: &Value) -> Self {
        HttpResponse {
            status,
            body: value.to_string(),
        }
    }
}

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
}

/// The hyper response for `r` (always JSON, like the real endpoints).
fn to_http(r: HttpResponse) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let mut out = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(r.body)));
    *out.status_mut() =
        hyper::StatusCode::from_u16(r.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    out.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    out
}

/// Decodes `application/x-www-form-urlencoded` (also used for query strings).
pub fn parse_form(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn random_guid() -> String {
    let b: [u8; 16] = rand::random();
    let h = |r: &[u8]| r.iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "{}-{}-{}-{}-{}",
        h(&b[0..4]),
        h(&b[4..6]),
        h(&b[6..8]),
        h(&b[8..10]),
        h(&b[10..16])
    )
}

/// Entra's error body for a bad client secret.
fn aad_error() -> Value {
    json!({
        "error": "invalid_client",
        "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID (mock-identity).",
        "error_codes": [7000215],
        "timestamp": "2026-01-01 00:00:00Z",
        "trace_id": random_guid(),
        "correlation_id": random_guid(),
    })
}

fn oauth_error(status: u16, error: &str, code: u32, description: &str) -> HttpResponse {
    HttpResponse::json(
        status,
        &json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description} (mock-identity)"),
            "error_codes": [code],
            "trace_id": random_guid(),
            "correlation_id": random_guid(),
        }),
    )
}

impl Mock {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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

    fn control(&self, method: &str, what: &str, body: &[u8]) -> HttpResponse {
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let mut st = self.lock();
        match (method, what) {
            ("POST", "fail") => {
                let mode = match &body["mode"] {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => String::new(),
                };
                let mode = match mode.as_str() {
                    "500" => Some(FailMode::ServerError),
                    "400" | "aad" => Some(FailMode::AadError),
                    "malformed" => Some(FailMode::Malformed),
                    "hang" => Some(FailMode::Hang),
                    "none" | "" => None,
                    other => {
                        return HttpResponse::json(
                            400,
                            &json!({"error": format!("unknown mode {other}")}),
                        )
                    }
                };
                st.failure = mode.map(|m| (m, body["count"].as_u64()));
                HttpResponse::json(200, &json!({"ok": true}))
            }
            ("POST", "lifetime") => match body["seconds"].as_u64() {
                Some(s) if s > 0 => {
                    st.lifetime = Some(Duration::from_secs(s));
                    HttpResponse::json(200, &json!({"ok": true}))
                }
                _ => HttpResponse::json(400, &json!({"error": "seconds must be > 0"})),
            },
            ("POST", "identities") => match body["client_ids"].as_array() {
                Some(ids) => {
                    st.assigned_identities = Some(
                        ids.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect(),
                    );
                    HttpResponse::json(200, &json!({"ok": true}))
                }
                None => HttpResponse::json(400, &json!({"error": "client_ids must be a list"})),
            },
            ("POST", "reset") => {
                *st = State::default();
                HttpResponse::json(200, &json!({"ok": true}))
            }
            ("GET", "issued") => HttpResponse::json(200, &Value::Array(st.issued.clone())),
            ("GET", "requests") => HttpResponse::json(200, &Value::Array(st.requests.clone())),
            _ => HttpResponse::json(404, &json!({"error": "unknown control"})),
        }
    }

    /// Consumes one unit of the active failure, if any.
    fn take_failure(&self) -> Option<FailMode> {
        let mut st = self.lock();
        let (mode, count) = st.failure?;
        match count {
            None => Some(mode),
            Some(0) => {
                st.failure = None;
                None
            }
            Some(n) => {
                st.failure = if n > 1 {
                    Some((mode, Some(n - 1)))
                } else {
                    None
                };
                Some(mode)
            }
        }
    }

    /// The failure response for `mode`, in the shape of the endpoint (`None` = hang).
    fn failure_response(mode: FailMode) -> Option<HttpResponse> {
        match mode {
            FailMode::ServerError => Some(HttpResponse {
                status: 500,
                body: "mock-identity: injected internal server error".into(),
            }),
            FailMode::AadError => Some(HttpResponse::json(400, &aad_error())),
            FailMode::Malformed => Some(HttpResponse {
                status: 200,
                body: "{\"token_type\":\"Bearer\",\"access_tok".into(),
            }),
            FailMode::Hang => None,
        }
    }

    async fn oauth_token(&self, tenant: &str, req: &HttpRequest) -> Option<HttpResponse> {
        let form = parse_form(&String::from_utf8_lossy(&req.body));
        let client_id = form.get("client_id").cloned().unwrap_or_default();
        let mut record = json!({
            "via": "oauth2",
            "tenant": tenant,
            "client_id": client_id,
            "scope": form.get("scope"),
        });
        let credential = if let Some(secret) = form.get("client_secret") {
            record["credential"] = json!("client_secret");
            let ok = !secret.is_empty()
                && self
                    .config
                    .client_secret
                    .as_ref()
                    .is_none_or(|expected| expected == secret);
            record["secret_accepted"] = json!(ok);
            Err(ok)
        } else if let Some(assertion) = form.get("client_assertion") {
            record["credential"] = json!("client_assertion");
            record["assertion"] = json!(assertion);
            Ok(assertion.clone())
        } else {
            record["credential"] = json!("none");
            Err(false)
        };
        self.lock().requests.push(record);
        if let Some(mode) = self.take_failure() {
            return Self::failure_response(mode);
        }
        if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
            return Some(oauth_error(
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type",
            ));
        }
        if client_id.is_empty() {
            return Some(oauth_error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'",
            ));
        }
        let scope = form.get("scope").cloned().unwrap_or_default();
        let Some(resource) = scope.strip_suffix("/.default") else {
            return Some(oauth_error(
                400,
                "invalid_scope",
                1002012,
                "The provided value for scope is not valid; client credential flows must use a scope ending in /.default",
            ));
        };
        match credential {
            Err(true) => {}
            Err(false) => return Some(HttpResponse::json(401, &aad_error())),
            Ok(assertion) => {
                if let Err(why) = check_assertion(&assertion, tenant, &client_id, &form) {
                    return Some(oauth_error(
                        400,
                        "invalid_client",
                        700021,
                        &format!("Client assertion is not valid: {why}"),
                    ));
                }
            }
        }
        let issued = match self.issue(tenant, &client_id, resource, "oauth2").await {
            Ok(i) => i,
            Err(e) => return Some(HttpResponse::json(500, &json!({"error": e}))),
        };
        let lifetime = issued.exp.saturating_sub(now_secs());
        Some(HttpResponse::json(
            200,
            &json!({
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": issued.token,
            }),
        ))
    }

    async fn msi_token(&self, req: &HttpRequest) -> Option<HttpResponse> {
        let resource = req.query.get("resource").cloned().unwrap_or_default();
        let user_assigned = ["client_id", "object_id", "msi_res_id", "mi_res_id"]
            .iter()
            .find_map(|k| req.query.get(*k).map(|v| json!({*k: v})));
        self.lock().requests.push(json!({
            "via": "msi",
            "resource": resource,
            "user_assigned": user_assigned,
            "api_version": req.query.get("api-version"),
            "credential": "identity_header",
        }));
        if req.headers.get("x-identity-header") != Some(&self.config.identity_header) {
            return Some(HttpResponse::json(
                401,
                &json!({"error": "missing or wrong X-IDENTITY-HEADER"}),
            ));
        }
        if let Some(mode) = self.take_failure() {
            return Self::failure_response(mode);
        }
        if resource.is_empty() {
            return Some(HttpResponse::json(
                400,
                &json!({"error": "resource is required"}),
            ));
        }
        if let (Some(id), Some(assigned)) = (
            req.query.get("client_id"),
            self.lock().assigned_identities.clone(),
        ) {
            if !assigned.contains(id) {
                // What IMDS answers for a user-assigned identity this VM does not have.
                return Some(HttpResponse::json(
                    400,
                    &json!({"error": "invalid_request", "error_description": "Identity not found"}),
                ));
            }
        }
        let client = req
            .query
            .get("client_id")
            .cloned()
            .unwrap_or_else(|| "system-assigned".into());
        let issued = match self.issue("mock-tenant", &client, &resource, "msi").await {
            Ok(i) => i,
            Err(e) => return Some(HttpResponse::json(500, &json!({"error": e}))),
        };
        Some(HttpResponse::json(
            200,
            &json!({
                "access_token": issued.token,
                "expires_on": issued.exp.to_string(),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": client,
            }),
        ))
    }

    async fn cli_token(&self, req: &HttpRequest) -> Option<HttpResponse> {
        let scope = req.query.get("scope").cloned().unwrap_or_default();
        let tenant = req
            .query
            .get("tenant")
            .cloned()
            .unwrap_or_else(|| "mock-tenant".into());
        self.lock().requests.push(json!({
            "via": "cli",
            "tenant": tenant,
            "scope": scope,
            "credential": "az",
        }));
        if let Some(mode) = self.take_failure() {
            return Self::failure_response(mode);
        }
        let resource = scope.strip_suffix("/.default").unwrap_or(&scope).to_owned();
        let issued = match self.issue(&tenant, "azure-cli", &resource, "cli").await {
            Ok(i) => i,
            Err(e) => return Some(HttpResponse::json(500, &json!({"error": e}))),
        };
        Some(HttpResponse::json(
            200,
            &json!({
                "accessToken": issued.token,
                "expiresOn": "2099-01-01 00:00:00.000000",
                "expires_on": issued.exp,
                "subscription": "00000000-0000-0000-0000-000000000000",
                "tenant": tenant,
                "tokenType": "Bearer",
            }),
        ))
    }

    /// Issues a token, makes it valid in Redis (if configured) and schedules its deletion.
    async fn issue(
        &self,
        tenant: &str,
        client_id: &str,
        resource: &str,
        via: &str,
    ) -> Result<Issued, String> {
        let lifetime = self.lock().lifetime.unwrap_or(self.config.lifetime);
        let now = now_secs();
        let exp = now + lifetime.as_secs().max(1);
        let oid = random_guid();
        let token = unsigned_jwt(&json!({
            "aud": resource,
            "iss": format!("https://sts.windows.net/{tenant}/"),
            "tid": tenant,
            "oid": oid,
            "sub": oid,
            "appid": client_id,
            "iat": now,
            "nbf": now,
            "exp": exp,
            "ver": "1.0",
            "jti": random_guid(),
        }));
        if let Some(args) = &self.config.redis_cli_args {
            redis_cli(
                &self.config.redis_cli,
                args,
                &["-x", "ACL", "SETUSER", &oid, "on", "~*", "&*", "+@all"],
                Some(format!(">{token}")),
            )
            .await
            .map_err(|e| format!("ACL SETUSER failed: {e}"))?;
            let program = self.config.redis_cli.clone();
            let args = args.clone();
            let oid = oid.clone();
            tokio::spawn(async move {
                let at = UNIX_EPOCH + Duration::from_secs(exp);
                let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
                tokio::time::sleep(wait).await;
                if let Err(e) = redis_cli(&program, &args, &["ACL", "DELUSER", &oid], None).await {
                    eprintln!("mock-identity: ACL DELUSER {oid}: {e}");
                }
            });
        }
        self.lock().issued.push(json!({
            "oid": oid,
            "token": token,
            "exp": exp,
            "via": via,
            "tenant": tenant,
            "client_id": client_id,
        }));
        Ok(Issued { token, exp })
    }
}

/// A token just issued.
struct Issued {
    token: String,
    exp: u64,
}

/// Checks a client assertion's shape; a certificate assertion (`alg` RS256 with a thumbprint)
/// must also name the client (`iss` = `sub`) and the token endpoint (`aud`), and not be
/// expired. The signature is not verified.
fn check_assertion(
    assertion: &str,
    tenant: &str,
    client_id: &str,
    form: &HashMap<String, String>,
) -> Result<(), String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    if form.get("client_assertion_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        return Err("client_assertion_type must be jwt-bearer".into());
    }
    let parts: Vec<&str> = assertion.trim().split('.').collect();
    if parts.len() != 3 {
        return Err("not a JWT".into());
    }
    let decode = |p: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(p.trim_end_matches('='))
            .map_err(|_| "not base64url".to_string())?;
        serde_json::from_slice(&bytes).map_err(|_| "not JSON".to_string())
    };
    let header = decode(parts[0])?;
    let claims = decode(parts[1])?;
    if let Some(exp) = claims["exp"].as_u64() {
        if exp < now_secs() {
            return Err("the assertion has expired".into());
        }
    }
    let is_cert = header["alg"] == "RS256"
        && (header.get("x5t").is_some() || header.get("x5t#S256").is_some());
    if is_cert {
        if claims["iss"] != client_id || claims["sub"] != client_id {
            return Err("iss and sub must be the client id".into());
        }
        let aud = claims["aud"].as_str().unwrap_or_default();
        if !aud.ends_with(&format!("/{tenant}/oauth2/v2.0/token")) {
            return Err(format!("aud {aud} is not this tenant's token endpoint"));
        }
        if parts[2].is_empty() {
            return Err("unsigned".into());
        }
    }
    Ok(())
}

/// Runs redis-cli with `args` then `command`; `stdin` feeds `-x`. Fails unless it says OK or
/// a number (DELUSER).
async fn redis_cli(
    program: &str,
    args: &[String],
    command: &[&str],
    stdin: Option<String>,
) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .args(command)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let Some(input) = stdin {
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(input.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .map_err(|_| "redis-cli timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let answer = stdout.trim();
    if out.status.success() && (answer == "OK" || answer.parse::<i64>().is_ok()) {
        Ok(())
    } else {
        Err(format!(
            "{} {}",
            answer,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The served certificate chain and key, and the CA PEM when generated.
type TlsMaterial = (
    Vec<rustls_pki_types::CertificateDer<'static>>,
    rustls_pki_types::PrivateKeyDer<'static>,
    Option<String>,
);

fn tls_material(config: &MockConfig) -> std::io::Result<TlsMaterial> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    if let Some((cert, key)) = &config.tls {
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(std::io::Error::other)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(std::io::Error::other)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(std::io::Error::other)?;
        return Ok((chain, key, None));
    }
    let err = std::io::Error::other;
    let ca_key = rcgen::KeyPair::generate().map_err(err)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mock-identity test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().map_err(err)?;
    let mut leaf_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .map_err(err)?;
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mock-identity");
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).map_err(err)?;
    let key = PrivateKeyDer::try_from(leaf_key.serialize_der()).map_err(std::io::Error::other)?;
    Ok((
        vec![leaf.der().clone(), ca_cert.der().clone()],
        key,
        Some(ca_cert.pem()),
    ))
}

/// Writes `DIR/az`, a shell script that runs this binary's `az` mode against `addr`.
fn write_az_script(dir: &std::path::Path, addr: SocketAddr) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let exe = std::env::current_exe()?;
    let exe = exe.display().to_string().replace('\'', "'\\''");
    std::fs::create_dir_all(dir)?;
    let path = dir.join("az");
    std::fs::write(
        &path,
        format!("#!/bin/sh\nexec '{exe}' az --endpoint http://{addr} \"$@\"\n"),
    )?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
}

/// The `az` stand-in: `az account get-access-token -o json --scope S [--tenant T]` asks the
/// mock's `/cli/token` and prints what the real CLI prints. Returns the exit code.
pub fn az_main(args: &[String]) -> i32 {
    use std::io::{Read, Write};
    let mut endpoint = None;
    let mut scope = None;
    let mut tenant = None;
    let mut words = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--endpoint" => endpoint = it.next().cloned(),
            "--scope" | "--resource" => scope = it.next().cloned(),
            "--tenant" | "-t" => tenant = it.next().cloned(),
            "-o" | "--output" | "--subscription" => {
                it.next();
            }
            w => words.push(w.to_owned()),
        }
    }
    if words != ["account", "get-access-token"] {
        eprintln!("ERROR: mock az supports only `account get-access-token`");
        return 2;
    }
    let (Some(endpoint), Some(scope)) = (endpoint, scope) else {
        eprintln!("ERROR: mock az needs --endpoint and --scope");
        return 2;
    };
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut query = format!("scope={}", percent_encode(&scope));
    if let Some(t) = tenant {
        query.push_str(&format!("&tenant={}", percent_encode(&t)));
    }
    let result = (|| -> std::io::Result<(u16, String)> {
        let mut s = std::net::TcpStream::connect(host)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        write!(
            s,
            "GET /cli/token?{query} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
        )?;
        let mut head_and_body = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            head_and_body.extend_from_slice(&chunk[..n]);
            if let Some(i) = head_and_body.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&head_and_body[..i]).to_string();
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if head_and_body.len() >= i + 4 + len {
                    let status = head
                        .split(' ')
                        .nth(1)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0);
                    let body = String::from_utf8_lossy(&head_and_body[i + 4..i + 4 + len]);
                    return Ok((status, body.into_owned()));
                }
            }
        }
        Err(std::io::Error::other("the mock closed the connection"))
    })();
    match result {
        Ok((200, body)) => {
            println!("{body}");
            0
        }
        Ok((status, body)) => {
            eprintln!("ERROR: the mock identity endpoint answered {status}: {body}");
            1
        }
        Err(e) => {
            eprintln!("ERROR: cannot reach the mock identity endpoint: {e}");
            1
        }
    }
}

/// Parses the command line of `mock-identity` (after the program name).
pub fn parse_args(args: &[String]) -> Result<MockConfig, String> {
    let mut c = MockConfig::default();
    let mut it = args.iter();
    let mut cert = None;
    let mut key = None;
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--listen" => c.listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--lifetime" => {
                let d = crate::config::duration::parse(&value()?)?;
                c.lifetime = Duration::from_secs(d.as_secs_f64().ceil().max(1.0) as u64);
            }
            "--identity-header" => c.identity_header = value()?,
            "--client-secret-file" => {
                let path = value()?;
                let s = std::fs::read_to_string(&path)
                    .map_err(|e| format!("--client-secret-file {path}: {e}"))?;
                c.client_secret = Some(s.trim().to_owned());
            }
            "--tls-cert" => cert = Some(PathBuf::from(value()?)),
            "--tls-key" => key = Some(PathBuf::from(value()?)),
            "--ca-out" => c.ca_out = Some(PathBuf::from(value()?)),
            "--az-dir" => c.az_dir = Some(PathBuf::from(value()?)),
            "--redis-cli" => c.redis_cli = value()?,
            "--redis-cli-args" => {
                c.redis_cli_args = Some(value()?.split_whitespace().map(str::to_owned).collect())
            }
            other => return Err(format!("unknown argument {other} (see --help)")),
        }
    }
    match (cert, key) {
        (Some(c1), Some(k)) => c.tls = Some((c1, k)),
        (None, None) => {}
        _ => return Err("--tls-cert and --tls-key go together".into()),
    }
    if c.tls.is_some() && c.ca_out.is_some() {
        return Err("--ca-out only applies to the generated certificate".into());
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_round_trip() {
        let scope = "https://redis.azure.com/.default";
        let f = parse_form(&format!("scope={}&a=b+c&e=", percent_encode(scope)));
        assert_eq!(f["scope"], scope);
        assert_eq!(f["a"], "b c");
        assert_eq!(f["e"], "");
    }

    #[test]
    fn bad_percent_escape_is_kept() {
        assert_eq!(percent_decode("a%zz"), "a%zz");
        assert_eq!(percent_decode("a%4"), "a%4");
        assert_eq!(percent_decode("%41"), "A");
    }

    #[test]
    fn parse_args_reads_flags() {
        let args: Vec<String> = ["--lifetime", "90s", "--redis-cli-args", "-p 1 --tls"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let c = parse_args(&args).unwrap();
        assert_eq!(c.lifetime, Duration::from_secs(90));
        assert_eq!(
            c.redis_cli_args.unwrap(),
            vec!["-p".to_string(), "1".into(), "--tls".into()]
        );
        assert!(parse_args(&["--bogus".to_string()]).is_err());
    }
}

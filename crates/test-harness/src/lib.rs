//! Test harness shared by the end-to-end tests: a real TLS-only `redis-server` with ACL users,
//! test tokens and the emulation of Azure's token expiry, the proxy binary as a child process,
//! and a small RESP client with timeouts.
//!
//! Everything a test starts is killed when its handle is dropped, panics included. Waiting is
//! always "poll a condition until a deadline", never a fixed sleep.
//!
//! A crate of its own (a dev-dependency of the proxy's tests), so that none of it ships in the
//! daemon. It starts the binaries the workspace builds (`entra-redis-proxy`, `mock-identity`),
//! found next to the running test executable.
#![warn(missing_docs)]

pub mod cluster;
pub mod connect_proxy;
pub mod raw_conn;
mod restart;

use std::fmt;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// How long a single read or write may take before the test fails instead of hanging.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Secrets the harness knows, so that nothing it prints can leak them.
// ---------------------------------------------------------------------------------------------

/// Every token and password the harness has created in this process; used to redact output.
static KNOWN_SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn remember_secret(secret: &str) {
    KNOWN_SECRETS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(secret.to_owned());
}

/// `text` with every secret the harness created replaced by `<redacted>`.
pub fn redact(text: &str) -> String {
    let secrets = KNOWN_SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_owned();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s.as_str(), "<redacted>");
    }
    out
}

/// A unique, URL-safe random string.
pub fn random_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{:x}{:04x}{:016x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u64>()
    )
}

/// The directory cargo puts the workspace's binaries in: the running test executable is in
/// its `deps/` subdirectory.
fn binaries_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe.parent().expect("the test executable's directory");
    if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir).to_owned()
    } else {
        dir.to_owned()
    }
}

/// The path of the workspace binary `name`, which must have been built (cargo builds a
/// package's binaries for its integration tests; `cargo test --workspace`, as scripts/test.sh
/// runs it, builds every package's).
pub fn binary(name: &str) -> PathBuf {
    let path = binaries_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (scripts/test.sh does), \
         or `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// The proxy's binary, `entra-redis-proxy`.
pub fn proxy_bin() -> PathBuf {
    binary("entra-redis-proxy")
}

/// The `mock-identity` binary (the workspace crate `crates/mock-identity`).
pub fn mock_identity_bin() -> PathBuf {
    binary("mock-identity")
}

/// Polls `cond` until it returns true or `timeout` passes; returns whether it became true.
pub async fn wait_until<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// TLS material
// ---------------------------------------------------------------------------------------------

/// A test CA and a server certificate for `localhost` and 127.0.0.1, written to a temp dir.
pub struct TlsMaterial {
    /// Holds the files below; removed on drop.
    _dir: tempfile::TempDir,
    /// The CA certificate (PEM), given to redis-server and to the proxy (`--ca-file`).
    pub ca_file: PathBuf,
    /// The server certificate (PEM).
    pub cert_file: PathBuf,
    /// The server's private key (PEM).
    pub key_file: PathBuf,
    /// The CA certificate (DER), trusted by the harness's own TLS client.
    pub ca_der: rustls_pki_types::CertificateDer<'static>,
}

impl TlsMaterial {
    /// Generates a fresh CA and a server certificate for `localhost` and 127.0.0.1.
    pub fn generate() -> Arc<TlsMaterial> {
        Self::generate_for(&["localhost", "127.0.0.1"])
    }

    /// Generates a fresh CA and a server certificate whose subject alternative names are
    /// exactly `names` (host names or IP addresses).
    pub fn generate_for(names: &[&str]) -> Arc<TlsMaterial> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "entra-redis-proxy test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA cert");

        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("server params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let key = rcgen::KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &ca).expect("server cert");

        let ca_file = dir.path().join("ca.pem");
        let cert_file = dir.path().join("server.pem");
        let key_file = dir.path().join("server.key");
        std::fs::write(&ca_file, ca.pem()).expect("write CA");
        std::fs::write(&cert_file, cert.pem()).expect("write cert");
        std::fs::write(&key_file, key.serialize_pem()).expect("write key");
        Arc::new(TlsMaterial {
            ca_der: ca.der().clone(),
            _dir: dir,
            ca_file,
            cert_file,
            key_file,
        })
    }

    /// A rustls client configuration trusting only the test CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("add CA");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

// ---------------------------------------------------------------------------------------------
// redis-server
// ---------------------------------------------------------------------------------------------

/// The harness's own ACL user on the test server (the `default` user is disabled).
pub const ADMIN_USER: &str = "harness-admin";

/// A real redis-server, TLS only, ACL users, `default` disabled; killed on drop.
pub struct RedisServer {
    /// The server process.
    child: Child,
    /// The TLS port on 127.0.0.1.
    pub port: u16,
    /// Config file, log file and working directory.
    dir: tempfile::TempDir,
    /// Certificates the server uses and the clients trust.
    pub tls: Arc<TlsMaterial>,
    /// The admin user's password (random, never printed).
    admin_password: String,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until the admin user can run PING.
    pub async fn start() -> RedisServer {
        let tls = TlsMaterial::generate();
        let mut last_error = String::new();
        for _attempt in 0..10 {
            match Self::try_start(tls.clone()).await {
                Ok(server) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    async fn try_start(tls: Arc<TlsMaterial>) -> Result<RedisServer, String> {
        let port = free_port();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let admin_password = random_id();
        remember_secret(&admin_password);
        let log = dir.path().join("redis.log");
        // A config file, so that the admin password is not in the process arguments.
        let config = format!(
            "port 0\n\
             tls-port {port}\n\
             bind 127.0.0.1\n\
             tls-cert-file {cert}\n\
             tls-key-file {key}\n\
             tls-ca-cert-file {ca}\n\
             tls-auth-clients no\n\
             save \"\"\n\
             appendonly no\n\
             daemonize no\n\
             dir {dir}\n\
             logfile {log}\n\
             user default off\n\
             user {ADMIN_USER} on >{admin_password} ~* &* +@all\n",
            cert = tls.cert_file.display(),
            key = tls.key_file.display(),
            ca = tls.ca_file.display(),
            dir = dir.path().display(),
            log = log.display(),
        );
        let conf_path = dir.path().join("redis.conf");
        std::fs::write(&conf_path, config).map_err(|e| e.to_string())?;
        let child = spawn_redis_server(&conf_path)?;
        let mut server = RedisServer {
            child,
            port,
            dir,
            tls,
            admin_password,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("redis-server exited ({status}): {}", redact(&log)));
            }
            if let Ok(mut admin) = server.try_admin().await {
                if admin.cmd(&["PING"]).await == Reply::status("PONG") {
                    return Ok(server);
                }
            }
            if Instant::now() >= deadline {
                return Err("redis-server did not answer within 15 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A new TLS connection authenticated as the admin user.
    pub async fn admin(&self) -> Admin {
        self.try_admin().await.expect("admin connection")
    }

    async fn try_admin(&self) -> Result<Admin, String> {
        let tcp = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(self.addr()))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(self.tls.client_config());
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("server name");
        let tls = tokio::time::timeout(IO_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let mut conn = RespClient::new(tls);
        let reply = conn
            .try_cmd(&[
                "AUTH".as_bytes(),
                ADMIN_USER.as_bytes(),
                self.admin_password.as_bytes(),
            ])
            .await
            .map_err(|e| e.to_string())?;
        if reply != Reply::ok() {
            return Err(format!("admin AUTH failed: {reply:?}"));
        }
        Ok(Admin { conn })
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        redact(&std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `redis-server` with the config file `conf_path` (secrets stay in the file, off the
/// command line), its output discarded (it logs to the file the config names).
pub fn spawn_redis_server(conf_path: &Path) -> Result<Child, String> {
    Command::new("redis-server")
        .arg(conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run redis-server (is it installed?): {e}"))
}

/// A port that was free a moment ago (the caller retries if someone else takes it).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// An admin connection to the test server (TLS, authenticated as [`ADMIN_USER`]).
pub struct Admin {
    /// The connection.
    pub conn: RespClient<TlsStream<TcpStream>>,
}

/// One line of `CLIENT LIST`, the fields the tests need.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// Redis's client id.
    pub id: u64,
    /// The ACL user the connection is authenticated as.
    pub user: String,
    /// The peer address.
    pub addr: String,
    /// The last command the connection ran.
    pub cmd: String,
    /// The connection's name (`CLIENT SETNAME`), empty if none.
    pub name: String,
}

impl Admin {
    /// Runs a command and returns its reply.
    pub async fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        self.conn.cmd(args).await
    }

    /// Creates the ACL user for `token`: username = its oid, password = the token.
    pub async fn create_token_user(&mut self, token: &Token) {
        self.create_token_user_with(token, &[]).await;
    }

    /// [`Admin::create_token_user`] with extra ACL rules after `+@all` (e.g. a command the
    /// identity's access policy does not allow).
    pub async fn create_token_user_with(&mut self, token: &Token, rules: &[&str]) {
        let password = format!(">{}", token.jwt);
        let mut args = vec![
            "ACL",
            "SETUSER",
            token.oid.as_str(),
            "on",
            password.as_str(),
            "~*",
            "&*",
            "+@all",
        ];
        args.extend_from_slice(rules);
        let reply = self.cmd(&args).await;
        assert_eq!(reply, Reply::ok(), "ACL SETUSER {}", token.oid);
    }

    /// Deletes an ACL user; Redis disconnects every connection authenticated as it.
    pub async fn delete_user(&mut self, user: &str) -> i64 {
        match self.cmd(&["ACL", "DELUSER", user]).await {
            Reply::Int(n) => n,
            other => panic!("ACL DELUSER {user}: {other:?}"),
        }
    }

    /// The connections `CLIENT LIST` shows authenticated as `user`.
    pub async fn clients_as(&mut self, user: &str) -> Vec<ClientInfo> {
        self.client_list()
            .await
            .into_iter()
            .filter(|c| c.user == user)
            .collect()
    }

    /// `CLIENT LIST`, parsed; the harness's own admin connections are left out.
    pub async fn client_list(&mut self) -> Vec<ClientInfo> {
        let text = match self.cmd(&["CLIENT", "LIST"]).await {
            Reply::Bulk(b) | Reply::Verbatim(b) => String::from_utf8_lossy(&b).into_owned(),
            other => panic!("CLIENT LIST: {other:?}"),
        };
        text.lines()
            .filter_map(|line| {
                let field = |name: &str| {
                    line.split(' ')
                        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                        .unwrap_or("")
                        .to_owned()
                };
                let info = ClientInfo {
                    id: field("id").parse().ok()?,
                    user: field("user"),
                    addr: field("addr"),
                    cmd: field("cmd"),
                    name: field("name"),
                };
                (info.user != ADMIN_USER).then_some(info)
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens and the emulation of Azure's expiry
// ---------------------------------------------------------------------------------------------

/// A test access token: an unsigned-style JWT with `oid` and `exp`, and a random signature part
/// so that tests can check that neither the payload nor the signature leaks.
#[derive(Clone)]
pub struct Token {
    /// The `oid` claim, also the ACL username the token is valid for.
    pub oid: String,
    /// The whole JWT (`header.payload.signature`).
    pub jwt: String,
    /// The `exp` claim, seconds since the epoch.
    pub exp: u64,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("oid", &self.oid)
            .field("exp", &self.exp)
            .field("jwt", &"...")
            .finish()
    }
}

impl Token {
    /// A new token for a fresh oid, valid for `ttl`.
    pub fn mint(ttl: Duration) -> Token {
        let oid = format!("oid-{}", random_id());
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
            + ttl.as_secs();
        let unsigned = unsigned_jwt(&serde_json::json!({
            "oid": oid,
            "exp": exp,
            "aud": "https://redis.azure.com",
        }));
        // A fake signature: redis-server does not check it, and it gives the test a third
        // secret-looking part to search the logs for.
        let signature: String = (0..43)
            .map(|_| {
                let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                alphabet[rand::random_range(0..alphabet.len())] as char
            })
            .collect();
        let jwt = format!("{unsigned}{signature}");
        remember_secret(&jwt);
        Token { oid, jwt, exp }
    }

    /// The payload part (between the dots).
    pub fn payload(&self) -> &str {
        self.jwt.split('.').nth(1).expect("payload part")
    }

    /// The signature part (after the second dot).
    pub fn signature(&self) -> &str {
        self.jwt.split('.').nth(2).expect("signature part")
    }
}

/// The file the proxy reads its token from; rewritten atomically (temp file + rename).
pub struct TokenFile {
    /// The directory holding the file and its temp siblings.
    dir: tempfile::TempDir,
    /// The token file.
    pub path: PathBuf,
}

impl TokenFile {
    /// A token file holding `token`.
    pub fn new(token: &Token) -> TokenFile {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("token");
        let file = TokenFile { dir, path };
        file.write(token);
        file
    }

    /// Replaces the file's content atomically.
    pub fn write(&self, token: &Token) {
        let tmp = self.dir.path().join(format!(".token.{}", random_id()));
        std::fs::write(&tmp, &token.jwt).expect("write temp token file");
        std::fs::rename(&tmp, &self.path).expect("rename token file");
    }
}

/// Rotates tokens the way Azure does it, with the expiry emulated: a new token with its own ACL
/// user, written to the token file; once the proxy has re-authenticated every connection, the
/// old user is deleted, which disconnects any connection still using the old token. The old
/// user is kept while the server shows a connection still being opened (it may have started
/// with the old token).
pub struct Rotator {
    /// Admin connection used to manage users and watch `CLIENT LIST`.
    pub admin: Admin,
    /// The token file the proxy watches.
    pub file: TokenFile,
    /// The token in force.
    pub current: Token,
    /// Every token issued, oldest first (for secret checks).
    pub issued: Vec<Token>,
    /// Lifetime of minted tokens (their `exp` claim).
    pub ttl: Duration,
    /// How long the proxy has to re-authenticate all connections.
    pub reauth_timeout: Duration,
}

impl Rotator {
    /// Issues the first token, creates its user and writes the token file.
    pub async fn new(server: &RedisServer) -> Rotator {
        let ttl = Duration::from_secs(3600);
        let mut admin = server.admin().await;
        let current = Token::mint(ttl);
        admin.create_token_user(&current).await;
        let file = TokenFile::new(&current);
        Rotator {
            admin,
            file,
            issued: vec![current.clone()],
            current,
            ttl,
            reauth_timeout: Duration::from_secs(20),
        }
    }

    /// One rotation. Waits until no connection is authenticated as the old token's user and at
    /// least `expect_connections` are authenticated as the new one, then deletes the old user
    /// (emulated expiry). Returns the new token.
    pub async fn rotate(&mut self, expect_connections: usize) -> Result<Token, String> {
        self.rotate_with(expect_connections, |_| {}).await
    }

    /// [`Rotator::rotate`], calling `on_mint` with the new token before anything else happens.
    pub async fn rotate_with(
        &mut self,
        expect_connections: usize,
        on_mint: impl FnOnce(&Token),
    ) -> Result<Token, String> {
        let old = self.current.clone();
        let new = Token::mint(self.ttl);
        on_mint(&new);
        self.admin.create_token_user(&new).await;
        self.file.write(&new);
        self.issued.push(new.clone());
        self.current = new.clone();
        let deadline = Instant::now() + self.reauth_timeout;
        loop {
            let clients = self.admin.client_list().await;
            let on_old = clients.iter().filter(|c| c.user == old.oid).count();
            let on_new = clients.iter().filter(|c| c.user == new.oid).count();
            // A connection the proxy is still opening (TLS or AUTH not done: `default` user,
            // no command yet) may have started with the old token and authenticate with it
            // after this look; deleting the old user then would end it. Azure never does
            // that: a token stays valid until it expires, long after the refresh.
            let opening = clients
                .iter()
                .filter(|c| c.user == "default" && c.cmd == "NULL")
                .count();
            if on_old == 0 && on_new >= expect_connections && opening == 0 {
                break;
            }
            if Instant::now() >= deadline {
                let summary: Vec<String> = clients
                    .iter()
                    .map(|c| format!("id={} user={} cmd={}", c.id, c.user, c.cmd))
                    .collect();
                return Err(format!(
                    "after {:?}, {on_old} connection(s) still on the old user {}, {opening} \
                     still opening, and {on_new} (want >= {expect_connections}) on the new \
                     user {}: {summary:?}",
                    self.reauth_timeout, old.oid, new.oid
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.admin.delete_user(&old.oid).await;
        Ok(new)
    }
}

// ---------------------------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------------------------

/// The proxy binary running as a child process; killed on drop. Its stderr (the logs) goes to a
/// file, kept for secret checks and printed (redacted) when a test fails.
pub struct Proxy {
    /// The proxy process.
    child: Child,
    /// The client listener's address.
    pub addr: SocketAddr,
    /// The admin (metrics/health) listener's address, when enabled.
    pub admin_addr: Option<SocketAddr>,
    /// Holds the log file.
    _dir: tempfile::TempDir,
    /// The captured stderr.
    pub log_path: PathBuf,
}

/// Sets the value of `flag` in `args` (which must hold it), e.g. `--admin-listen`.
pub fn set_flag(args: &mut [String], flag: &str, value: &str) {
    let at = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag} is not among the arguments"));
    args[at + 1] = value.to_owned();
}

/// A sample of the proxy's metrics by its name without the `entra_redis_proxy_` prefix,
/// labels included (`warm_connections{upstream="default"}`).
pub fn proxy_metric(metrics: &str, name: &str) -> f64 {
    metric_value(metrics, &format!("entra_redis_proxy_{name}"))
}

/// Arguments for a proxy in front of `server` reading its token from `token_file`.
pub fn proxy_args(server: &RedisServer, token_file: &Path) -> Vec<String> {
    proxy_args_to(&server.addr(), &server.tls.ca_file, token_file)
}

/// Arguments for a proxy in front of the TLS cache at `upstream` (certificate for
/// `localhost`, issued by the CA in `ca_file`), reading its token from `token_file`, with no
/// admin listener and no warm connections (tests find a session's upstream connection on the
/// server by its user; tests/it/warm.rs covers warm connections).
pub fn proxy_args_to(upstream: &str, ca_file: &Path, token_file: &Path) -> Vec<String> {
    [
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        upstream,
        "--tls-server-name",
        "localhost",
        "--ca-file",
        &ca_file.display().to_string(),
        "--credential",
        "token-file",
        "--token-file",
        &token_file.display().to_string(),
        "--token-file-poll",
        "50ms",
        "--admin-listen",
        "",
        "--warm-connections",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Proxy {
    /// Starts the proxy with `args` (plus `--log-format json`) at log level `rust_log`, and
    /// waits for its `listening` log line.
    pub async fn start(args: &[String], rust_log: &str) -> Proxy {
        Proxy::start_with_env(args, rust_log, &[]).await
    }

    /// [`Proxy::start`] with `envs` set on the proxy process (after removing the outbound
    /// proxy variables it would otherwise inherit from the test process).
    pub async fn start_with_env(args: &[String], rust_log: &str, envs: &[(&str, &str)]) -> Proxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let log_path = dir.path().join("proxy.log");
        let log = std::fs::File::create(&log_path).expect("create log file");
        let mut cmd = Command::new(proxy_bin());
        for var in connect_proxy::PROXY_VARIABLES {
            cmd.env_remove(var);
        }
        let child = cmd
            .args(args)
            .args(["--log-format", "json"])
            .env("RUST_LOG", rust_log)
            .env_remove("RUST_LOG_STYLE")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the proxy");
        let mut proxy = Proxy {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: None,
            _dir: dir,
            log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (client, admin) = proxy.listening_addresses();
            if let Some(addr) = client {
                proxy.addr = addr;
                proxy.admin_addr = admin;
                return proxy;
            }
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!(
                    "the proxy exited ({status}) before listening; its log:\n{}",
                    proxy.logs()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "the proxy logged no `listening` line within 30 s; its log:\n{}",
                    proxy.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Reads the `listening` lines: (client listener, admin listener).
    fn listening_addresses(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        let Ok(file) = std::fs::File::open(&self.log_path) else {
            return (None, None);
        };
        let (mut client, mut admin) = (None, None);
        for line in BufReader::new(file).lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let fields = v.get("fields").unwrap_or(&v);
            let message = fields
                .get("message")
                .or_else(|| v.get("message"))
                .and_then(|m| m.as_str());
            if message != Some("listening") {
                continue;
            }
            let Some(addr) = fields
                .get("address")
                .or_else(|| v.get("address"))
                .and_then(|a| a.as_str())
                .and_then(|a| a.parse::<SocketAddr>().ok())
            else {
                continue;
            };
            // The admin listener says so in one of its fields or its target.
            let is_admin = v
                .get("target")
                .and_then(|t| t.as_str())
                .unwrap_or("")
                .contains("admin")
                || fields.as_object().into_iter().flatten().any(|(k, val)| {
                    k != "address"
                        && k != "message"
                        && val.as_str().is_some_and(|s| {
                            let s = s.to_ascii_lowercase();
                            s.contains("admin") || s.contains("http") || s.contains("metrics")
                        })
                });
            if is_admin {
                admin.get_or_insert(addr);
            } else {
                client.get_or_insert(addr);
            }
        }
        (client, admin)
    }

    /// The captured log, with every secret the harness knows redacted (for printing).
    pub fn logs(&self) -> String {
        redact(&self.raw_logs())
    }

    /// The captured log exactly as the proxy wrote it (for secret checks; never print it).
    pub fn raw_logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A new client connection to the proxy.
    pub async fn client(&self) -> ProxyClient {
        let tcp = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(self.addr))
            .await
            .expect("connect to the proxy timed out")
            .expect("connect to the proxy");
        tcp.set_nodelay(true).expect("nodelay");
        RespClient::new(tcp)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let logs = self.logs();
            let lines: Vec<&str> = logs.lines().collect();
            let tail = &lines[lines.len().saturating_sub(300)..];
            eprintln!(
                "---- proxy log (last {} of {} lines, secrets redacted) ----\n{}\n---- end of proxy log ----",
                tail.len(),
                lines.len(),
                tail.join("\n")
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RESP client
// ---------------------------------------------------------------------------------------------

/// A decoded reply, in a shape convenient for assertions.
#[derive(Clone, PartialEq)]
pub enum Reply {
    /// `+...`
    Status(String),
    /// `-...` or `!...`
    Error(String),
    /// `:...`
    Int(i64),
    /// `$...`
    Bulk(Vec<u8>),
    /// `*...`
    Array(Vec<Reply>),
    /// `$-1`, `*-1`, `_`
    Null,
    /// `%...` (order as received)
    Map(Vec<(Reply, Reply)>),
    /// `~...`
    Set(Vec<Reply>),
    /// `>...`: out-of-band (Pub/Sub) data in RESP3
    Push(Vec<Reply>),
    /// `,...`
    Double(f64),
    /// `#t` / `#f`
    Bool(bool),
    /// `=...`
    Verbatim(Vec<u8>),
    /// `(...`
    BigNumber(Vec<u8>),
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn bytes(f: &mut fmt::Formatter<'_>, tag: &str, b: &[u8]) -> fmt::Result {
            if b.len() > 200 {
                write!(
                    f,
                    "{tag}({:?}... {} bytes)",
                    String::from_utf8_lossy(&b[..64]),
                    b.len()
                )
            } else {
                write!(f, "{tag}({:?})", String::from_utf8_lossy(b))
            }
        }
        match self {
            Reply::Status(s) => write!(f, "Status({s:?})"),
            Reply::Error(s) => write!(f, "Error({s:?})"),
            Reply::Int(i) => write!(f, "Int({i})"),
            Reply::Bulk(b) => bytes(f, "Bulk", b),
            Reply::Verbatim(b) => bytes(f, "Verbatim", b),
            Reply::BigNumber(b) => bytes(f, "BigNumber", b),
            Reply::Array(a) => f.debug_tuple("Array").field(a).finish(),
            Reply::Set(a) => f.debug_tuple("Set").field(a).finish(),
            Reply::Push(a) => f.debug_tuple("Push").field(a).finish(),
            Reply::Map(m) => f.debug_tuple("Map").field(m).finish(),
            Reply::Null => write!(f, "Null"),
            Reply::Double(d) => write!(f, "Double({d})"),
            Reply::Bool(b) => write!(f, "Bool({b})"),
        }
    }
}

impl Reply {
    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::Status("OK".into())
    }

    /// A status reply.
    pub fn status(s: &str) -> Reply {
        Reply::Status(s.into())
    }

    /// A bulk string reply.
    pub fn bulk(b: impl AsRef<[u8]>) -> Reply {
        Reply::Bulk(b.as_ref().to_vec())
    }

    /// An array of bulk strings.
    pub fn bulks(items: &[&str]) -> Reply {
        Reply::Array(items.iter().map(Reply::bulk).collect())
    }

    /// The text of a status, bulk or verbatim string, or an error.
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Status(s) | Reply::Error(s) => Some(s.clone()),
            Reply::Bulk(b) | Reply::Verbatim(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// True for an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// The value for `key` in a map reply (RESP3) or a flat key/value array (RESP2).
    pub fn field(&self, key: &str) -> Option<&Reply> {
        match self {
            Reply::Map(m) => m
                .iter()
                .find(|(k, _)| k.text().as_deref() == Some(key))
                .map(|(_, v)| v),
            Reply::Array(a) => a
                .chunks(2)
                .find(|kv| kv[0].text().as_deref() == Some(key))
                .and_then(|kv| kv.get(1)),
            _ => None,
        }
    }

    fn from_resp2(frame: redis_protocol::resp2::types::OwnedFrame) -> Reply {
        use redis_protocol::resp2::types::OwnedFrame as F;
        match frame {
            F::SimpleString(s) => Reply::Status(String::from_utf8_lossy(&s).into_owned()),
            F::Error(e) => Reply::Error(e),
            F::Integer(i) => Reply::Int(i),
            F::BulkString(b) => Reply::Bulk(b),
            F::Array(a) => Reply::Array(a.into_iter().map(Reply::from_resp2).collect()),
            F::Null => Reply::Null,
        }
    }

    fn from_resp3(frame: redis_protocol::resp3::types::OwnedFrame) -> Reply {
        use redis_protocol::resp3::types::OwnedFrame as F;
        let list = |v: Vec<F>| v.into_iter().map(Reply::from_resp3).collect::<Vec<_>>();
        match frame {
            F::BlobString { data, .. } => Reply::Bulk(data),
            F::BlobError { data, .. } => Reply::Error(String::from_utf8_lossy(&data).into_owned()),
            F::SimpleString { data, .. } => {
                Reply::Status(String::from_utf8_lossy(&data).into_owned())
            }
            F::SimpleError { data, .. } => Reply::Error(data),
            F::Boolean { data, .. } => Reply::Bool(data),
            F::Null => Reply::Null,
            F::Number { data, .. } => Reply::Int(data),
            F::Double { data, .. } => Reply::Double(data),
            F::BigNumber { data, .. } => Reply::BigNumber(data),
            F::VerbatimString { data, .. } => Reply::Verbatim(data),
            F::Array { data, .. } => Reply::Array(list(data)),
            F::Map { data, .. } => Reply::Map(
                data.into_iter()
                    .map(|(k, v)| (Reply::from_resp3(k), Reply::from_resp3(v)))
                    .collect(),
            ),
            F::Set { data, .. } => Reply::Set(list(data.into_iter().collect())),
            F::Push { data, .. } => Reply::Push(list(data)),
            F::Hello { .. } => Reply::Error("unexpected HELLO frame from the server".into()),
            F::ChunkedString(data) => Reply::Bulk(data),
        }
    }
}

/// Which RESP version the client decodes (it follows `HELLO` and `RESET`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2 (the default).
    Resp2,
    /// RESP3 (after `HELLO 3`).
    Resp3,
}

/// A RESP client over any stream, with a timeout on every read and write.
pub struct RespClient<S> {
    /// The connection.
    stream: S,
    /// Bytes read but not yet decoded.
    buf: BytesMut,
    /// The decoder in use.
    pub protocol: Protocol,
    /// Longest wait for one read or write.
    pub timeout: Duration,
}

/// A plain-TCP client of the proxy.
pub type ProxyClient = RespClient<TcpStream>;

/// Encodes a command as a RESP array of bulk strings.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

impl<S: AsyncRead + AsyncWrite + Unpin> RespClient<S> {
    /// Wraps a connected stream (RESP2 until told otherwise).
    pub fn new(stream: S) -> Self {
        RespClient {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            protocol: Protocol::Resp2,
            timeout: IO_TIMEOUT,
        }
    }

    /// Writes raw bytes and flushes them. The flush is not a formality: over TLS, a write
    /// can leave the bytes in tokio-rustls' buffer (when the socket write returns `Pending`,
    /// as it does once the task's cooperative budget is spent), and only a flush sends them.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "write timed out",
            )),
        }
    }

    /// Sends one command without reading its reply; follows HELLO/RESET protocol switches
    /// (the caller reads the reply next).
    pub async fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        self.note_protocol_switch(args);
        self.send_raw(&encode_command(args))
            .await
            .expect("send a command");
    }

    fn note_protocol_switch<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        let Some(name) = args.first() else { return };
        let name = name.as_ref();
        if name.eq_ignore_ascii_case(b"HELLO") {
            match args.get(1).map(|a| a.as_ref()) {
                Some(b"3") => self.protocol = Protocol::Resp3,
                Some(b"2") => self.protocol = Protocol::Resp2,
                _ => {}
            }
        } else if name.eq_ignore_ascii_case(b"RESET") {
            self.protocol = Protocol::Resp2;
        }
    }

    /// Sends a command and reads the next frame (panics on I/O errors and timeouts).
    pub async fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        let name =
            String::from_utf8_lossy(args.first().map(|a| a.as_ref()).unwrap_or(b"")).into_owned();
        self.try_cmd(args)
            .await
            .unwrap_or_else(|e| panic!("command {name}: {e}"))
    }

    /// Sends a command and reads the next frame.
    pub async fn try_cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> std::io::Result<Reply> {
        let before = self.protocol;
        self.note_protocol_switch(args);
        self.send_raw(&encode_command(args)).await?;
        let reply = self.try_read_frame().await?;
        if reply.is_error()
            && args
                .first()
                .is_some_and(|a| a.as_ref().eq_ignore_ascii_case(b"HELLO"))
        {
            self.protocol = before;
        }
        Ok(reply)
    }

    /// Reads the next frame, push frames included (panics on I/O errors and timeouts).
    pub async fn read_frame(&mut self) -> Reply {
        self.try_read_frame().await.expect("read a frame")
    }

    /// Reads the next frame that is not a push frame, returning the push frames seen first.
    pub async fn read_reply_collecting_pushes(&mut self) -> (Reply, Vec<Reply>) {
        let mut pushes = Vec::new();
        loop {
            match self.read_frame().await {
                Reply::Push(p) => pushes.push(Reply::Push(p)),
                other => return (other, pushes),
            }
        }
    }

    /// Reads the next frame, push frames included.
    pub async fn try_read_frame(&mut self) -> std::io::Result<Reply> {
        read_frame_from(&mut self.stream, &mut self.buf, self.protocol, self.timeout).await
    }

    /// Reads frames until the peer closes the connection; returns them. Panics if the
    /// connection stays open longer than the timeout.
    pub async fn read_until_closed(&mut self) -> Vec<Reply> {
        let mut frames = Vec::new();
        loop {
            match self.try_read_frame().await {
                Ok(reply) => frames.push(reply),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::UnexpectedEof
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::BrokenPipe
                    ) =>
                {
                    return frames
                }
                Err(e) => panic!("expected the connection to close, got {e} after {frames:?}"),
            }
        }
    }

    /// Writes `bytes` (a pipeline) while reading `count` frames, so that neither side's buffers
    /// can deadlock the exchange.
    pub async fn pipeline(&mut self, bytes: &[u8], count: usize) -> Vec<Reply> {
        let timeout = self.timeout;
        let RespClient {
            stream,
            buf,
            protocol,
            ..
        } = self;
        let (mut reader, mut writer) = tokio::io::split(stream);
        let write = async {
            let write = async {
                writer.write_all(bytes).await?;
                writer.flush().await
            };
            tokio::time::timeout(timeout * 10, write)
                .await
                .expect("pipeline write timed out")
                .expect("pipeline write");
        };
        let read = async {
            let mut replies = Vec::with_capacity(count);
            while replies.len() < count {
                let reply = read_frame_from(&mut reader, buf, *protocol, timeout)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("pipeline: reading reply {} of {count}: {e}", replies.len())
                    });
                replies.push(reply);
            }
            replies
        };
        let ((), replies) = tokio::join!(write, read);
        replies
    }

    /// Bytes buffered but not yet decoded (a test can assert none are left over).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// Decodes one frame from `buf` if it holds a complete one, consuming it.
fn decode_buffered(buf: &mut BytesMut, protocol: Protocol) -> std::io::Result<Option<Reply>> {
    let invalid = |e: redis_protocol::error::RedisProtocolError| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
    };
    let decoded = match protocol {
        Protocol::Resp2 => redis_protocol::resp2::decode::decode(buf)
            .map_err(invalid)?
            .map(|(f, n)| (Reply::from_resp2(f), n)),
        Protocol::Resp3 => redis_protocol::resp3::decode::complete::decode(buf)
            .map_err(invalid)?
            .map(|(f, n)| (Reply::from_resp3(f), n)),
    };
    Ok(decoded.map(|(reply, n)| {
        buf.advance(n);
        reply
    }))
}

/// Reads from `reader` into `buf` until one frame is complete, within `timeout`.
async fn read_frame_from<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    protocol: Protocol,
    timeout: Duration,
) -> std::io::Result<Reply> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if !buf.is_empty() {
            if let Some(reply) = decode_buffered(buf, protocol)? {
                return Ok(reply);
            }
        }
        buf.reserve(64 * 1024);
        let n = tokio::time::timeout_at(deadline, reader.read_buf(buf))
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no complete reply within {timeout:?}"),
                )
            })??;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("connection closed ({} undecoded bytes buffered)", buf.len()),
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The admin endpoint
// ---------------------------------------------------------------------------------------------

/// The admin listener's address, from the proxy's `admin listening` log line. The proxy
/// binds it after its client listeners, so on a loaded machine the line can come a little
/// after the proxy answers: it is waited for (the log is a file the proxy writes, so the
/// short blocking sleeps here hold up no task).
pub fn admin_address(proxy: &Proxy) -> SocketAddr {
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    loop {
        let found = proxy
            .raw_logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["fields"]["message"] == "admin listening")
            .and_then(|v| v["fields"]["address"].as_str()?.parse().ok());
        if let Some(addr) = found {
            return addr;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no `admin listening` line within {IO_TIMEOUT:?}: {}",
            proxy.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET /metrics` from the admin endpoint at `addr`: the whole HTTP response.
pub async fn scrape_metrics(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect to the admin endpoint");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("send the request");
    let mut out = String::new();
    tokio::time::timeout(IO_TIMEOUT, s.read_to_string(&mut out))
        .await
        .expect("metrics in time")
        .expect("read the metrics");
    out
}

/// The value of one sample (`name{labels}` exactly as exposed) in a metrics text.
pub fn metric_value(metrics: &str, sample: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(sample) && l[sample.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {sample} in:\n{metrics}"))
}

/// An unsigned JWT (`alg: none`) carrying `claims`, as the proxy reads tokens (it does not
/// check signatures; the cache does).
pub fn unsigned_jwt(claims: &serde_json::Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string().as_bytes());
    format!("{header}.{payload}.")
}

/// The pid of the process listening on 127.0.0.1:`port` (found through /proc/net/tcp and the
/// socket inodes in /proc/*/fd).
pub fn pid_listening_on(port: u16) -> u32 {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    let inode = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 9 && f[1] == local && f[3] == "0A")
        .map(|f| f[9].to_owned())
        .expect("a listening socket on the proxy's port");
    let target = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == target) {
                return pid;
            }
        }
    }
    panic!("no process holds {target}");
}

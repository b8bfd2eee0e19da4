//! Entra credentials through the real azure_identity code, against the `mock-identity`
//! binary: every kind gets a token with the right `oid`/`exp`, consecutive fetches get
//! different tokens, failures give clear errors, misconfiguration names the missing input,
//! and no secret reaches the logs.
//!
//! Credentials read process-wide environment variables (AZURE_*, IDENTITY_*, PATH), so every
//! test holds [`ENV_LOCK`] while it sets them and uses a credential.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use entra_redis_proxy::config::{CredentialKind, Settings};
use entra_redis_proxy::token::{
    build_source, jwt, FetchedToken, RefreshPolicy, TokenManager, TokenSource,
};
use serde_json::{json, Value};

use test_harness as support;

/// Serializes tests that touch the process environment.
static ENV_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every variable a credential may read; cleared before each test.
const AZURE_VARS: &[&str] = &[
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IDENTITY_SERVER_THUMBPRINT",
];

/// Everything logged by any test, at trace level (see [`init_logs`]).
static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct BufWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs, once, a global trace-level subscriber (and the `log` bridge, so reqwest's and
/// hyper's records are captured too) writing into [`LOGS`].
fn init_logs() -> Arc<Mutex<Vec<u8>>> {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = BufWriter(buf.clone());
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init()
            .expect("install the test subscriber");
        buf
    })
    .clone()
}

/// Takes the environment lock and clears every Azure variable.
async fn env_guard() -> tokio::sync::MutexGuard<'static, ()> {
    init_logs();
    let guard = ENV_LOCK.lock().await;
    for v in AZURE_VARS {
        std::env::remove_var(v);
    }
    guard
}

/// A running `mock-identity` process, killed on drop.
struct Mock {
    child: Child,
    addr: String,
    identity_header: String,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Mock {
    /// Starts the mock; `secret` is the only client secret it accepts.
    fn start(secret: &str, extra: &[&str]) -> Mock {
        Mock::start_with_env(secret, extra, &[])
    }

    /// [`Mock::start`] with extra environment variables for the mock process.
    fn start_with_env(secret: &str, extra: &[&str], envs: &[(&str, &str)]) -> Mock {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("mock-secret");
        std::fs::write(&secret_file, secret).unwrap();
        let mut child = Command::new(support::mock_identity_bin())
            .arg("--ca-out")
            .arg(dir.path().join("ca.pem"))
            .arg("--az-dir")
            .arg(dir.path().join("bin"))
            .arg("--client-secret-file")
            .arg(&secret_file)
            .args(extra)
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mock-identity");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut addr, mut header) = (None, None);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).expect("mock-identity printed READY");
            if line == "READY" {
                break;
            }
            if let Some(v) = line.strip_prefix("MOCK_IDENTITY_ADDR=") {
                addr = Some(v.to_owned());
            }
            if let Some(v) = line.strip_prefix("IDENTITY_HEADER=") {
                header = Some(v.to_owned());
            }
        }
        Mock {
            child,
            addr: addr.expect("address printed"),
            identity_header: header.expect("identity header printed"),
            dir,
            http: reqwest::Client::new(),
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn authority(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Settings for `kind` against this mock.
    fn settings(&self, kind: CredentialKind) -> Settings {
        Settings {
            credential: kind,
            authority_host: Some(self.authority()),
            identity_ca_file: Some(self.ca()),
            ..Default::default()
        }
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let url = format!("http://{}/control/{path}", self.addr);
        let rsp = if body.is_null() {
            self.http.get(url).send().await
        } else {
            self.http.post(url).body(body.to_string()).send().await
        }
        .expect("control request");
        assert!(
            rsp.status().is_success(),
            "control {path}: {}",
            rsp.status()
        );
        serde_json::from_slice(&rsp.bytes().await.unwrap()).unwrap()
    }

    async fn fail(&self, mode: &str, count: Option<u64>) {
        self.control("fail", json!({"mode": mode, "count": count}))
            .await;
    }

    async fn issued(&self) -> Vec<Value> {
        self.control("issued", Value::Null)
            .await
            .as_array()
            .unwrap()
            .clone()
    }

    async fn requests(&self) -> Vec<Value> {
        self.control("requests", Value::Null)
            .await
            .as_array()
            .unwrap()
            .clone()
    }

    /// Sets the managed-identity environment (App Service style) to this mock.
    fn set_identity_env(&self) {
        std::env::set_var(
            "IDENTITY_ENDPOINT",
            format!("http://{}/msi/token", self.addr),
        );
        std::env::set_var("IDENTITY_HEADER", &self.identity_header);
    }

    /// Puts the `az` stand-in first on PATH; returns the old PATH.
    fn put_az_on_path(&self) -> String {
        let old = std::env::var("PATH").unwrap_or_default();
        std::env::set_var(
            "PATH",
            format!("{}:{old}", self.dir.path().join("bin").display()),
        );
        old
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fetches and checks the token against what the mock says it issued: same token, the
/// `oid` claim, and `expires_at` equal to the `exp` claim.
async fn fetch_checked(source: &dyn TokenSource, mock: &Mock) -> (FetchedToken, String) {
    let token = tokio::time::timeout(Duration::from_secs(30), source.fetch())
        .await
        .expect("fetch finished")
        .unwrap_or_else(|e| panic!("fetch failed: {e}"));
    let claims = jwt::claims(token.secret.expose()).unwrap();
    let oid = claims.oid.clone().expect("oid claim");
    let issued = mock.issued().await;
    let entry = issued
        .iter()
        .find(|i| i["oid"] == oid.as_str())
        .expect("the mock issued this token");
    assert_eq!(entry["token"], token.secret.expose());
    let exp = UNIX_EPOCH + Duration::from_secs(entry["exp"].as_u64().unwrap());
    assert_eq!(token.expires_at, exp);
    assert_eq!(claims.expires_at, Some(exp));
    assert!(token.expires_at > SystemTime::now() + Duration::from_secs(3000));
    (token, oid)
}

/// Two fetches in a row must give two different tokens (no cache in the way).
async fn two_fresh_tokens(source: &dyn TokenSource, mock: &Mock) -> (String, String) {
    let (a, oid_a) = fetch_checked(source, mock).await;
    let (b, oid_b) = fetch_checked(source, mock).await;
    assert_ne!(oid_a, oid_b, "second fetch returned a cached token");
    assert_ne!(a.secret.expose(), b.secret.expose());
    (oid_a, oid_b)
}

fn write_secret(dir: &Path, secret: &str) -> PathBuf {
    let p = dir.join("client-secret");
    std::fs::write(&p, format!("{secret}\n")).unwrap();
    p
}

#[tokio::test]
async fn client_secret_from_file_gets_fresh_tokens() {
    let _env = env_guard().await;
    let mock = Mock::start("s3cret-value-1", &[]);
    let mut settings = mock.settings(CredentialKind::ClientSecret);
    settings.tenant_id = Some("tenant-a".into());
    settings.client_id = Some("app-1".into());
    settings.client_secret_file = Some(write_secret(mock.dir.path(), "s3cret-value-1"));
    let source = build_source(&settings).expect("build");
    assert!(source.describe().contains("client-secret"));
    assert!(!source.describe().contains("s3cret"));
    two_fresh_tokens(source.as_ref(), &mock).await;
    let reqs = mock.requests().await;
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert_eq!(r["via"], "oauth2");
        assert_eq!(r["tenant"], "tenant-a");
        assert_eq!(r["client_id"], "app-1");
        assert_eq!(r["credential"], "client_secret");
        assert_eq!(r["secret_accepted"], true);
        assert_eq!(r["scope"], "https://redis.azure.com/.default");
    }
}

#[tokio::test]
async fn client_secret_from_env_and_wrong_secret_is_a_clear_error() {
    let _env = env_guard().await;
    let mock = Mock::start("right-secret", &[]);
    std::env::set_var("AZURE_TENANT_ID", "tenant-b");
    std::env::set_var("AZURE_CLIENT_ID", "app-2");
    std::env::set_var("AZURE_CLIENT_SECRET", "right-secret");
    let source = build_source(&mock.settings(CredentialKind::ClientSecret)).unwrap();
    fetch_checked(source.as_ref(), &mock).await;

    std::env::set_var("AZURE_CLIENT_SECRET", "wrong-secret");
    let source = build_source(&mock.settings(CredentialKind::ClientSecret)).unwrap();
    let err = source.fetch().await.unwrap_err().to_string();
    assert!(err.contains("AADSTS7000215"), "{err}");
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains("wrong-secret"), "{err}");
}

/// An RSA certificate and key in one PEM file; returns (path, certificate DER).
fn rsa_certificate(dir: &Path) -> (PathBuf, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "entra-redis-proxy test");
    let cert = params.self_signed(&key).unwrap();
    let path = dir.join("client.pem");
    std::fs::write(&path, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
    (path, cert.der().to_vec())
}

fn decode_part(part: &str) -> Value {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn client_certificate_pem_signs_a_proper_assertion() {
    use base64::Engine;
    let _env = env_guard().await;
    let mock = Mock::start("unused", &[]);
    let (pem, der) = rsa_certificate(mock.dir.path());
    let mut settings = mock.settings(CredentialKind::ClientCertificate);
    settings.tenant_id = Some("tenant-c".into());
    settings.client_id = Some("app-3".into());
    settings.certificate_file = Some(pem);
    let source = build_source(&settings).unwrap();
    two_fresh_tokens(source.as_ref(), &mock).await;
    let reqs = mock.requests().await;
    assert_eq!(reqs[0]["credential"], "client_assertion");
    let assertion = reqs[0]["assertion"].as_str().unwrap();
    let parts: Vec<&str> = assertion.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header = decode_part(parts[0]);
    let claims = decode_part(parts[1]);
    assert_eq!(header["alg"], "RS256");
    let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
    assert_eq!(
        header["x5t#S256"],
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha256.as_ref())
    );
    assert_eq!(claims["iss"], "app-3");
    assert_eq!(claims["sub"], "app-3");
    assert_eq!(
        claims["aud"],
        format!("{}/tenant-c/oauth2/v2.0/token", mock.authority())
    );
    // RSA-2048 signature: 256 bytes.
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[2])
        .unwrap();
    assert_eq!(sig.len(), 256);
    // Each acquisition signs a new assertion (new jti).
    assert_ne!(reqs[0]["assertion"], reqs[1]["assertion"]);
}

#[tokio::test]
async fn workload_identity_rereads_the_rotating_federated_token() {
    let _env = env_guard().await;
    let mock = Mock::start("unused", &[]);
    let file = mock.dir.path().join("federated-token");
    let sa_token = |n: u32| {
        jwt::unsigned_jwt(
            &json!({"sub": "system:serviceaccount:app:redis", "n": n, "aud": "api://AzureADTokenExchange"}),
        )
    };
    std::fs::write(&file, sa_token(1)).unwrap();
    std::env::set_var("AZURE_TENANT_ID", "tenant-d");
    std::env::set_var("AZURE_CLIENT_ID", "app-4");
    std::env::set_var("AZURE_FEDERATED_TOKEN_FILE", &file);
    let source = build_source(&mock.settings(CredentialKind::WorkloadIdentity)).unwrap();
    fetch_checked(source.as_ref(), &mock).await;
    // Kubernetes rotates the projected token by swapping a symlink; a rename is the same
    // thing for a reader of the path.
    let tmp = mock.dir.path().join("federated-token.new");
    std::fs::write(&tmp, sa_token(2)).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    fetch_checked(source.as_ref(), &mock).await;
    let reqs = mock.requests().await;
    let seen: Vec<&str> = reqs
        .iter()
        .map(|r| r["assertion"].as_str().unwrap())
        .collect();
    assert_eq!(seen, vec![sa_token(1), sa_token(2)]);
    assert!(reqs
        .iter()
        .all(|r| r["tenant"] == "tenant-d" && r["client_id"] == "app-4"));
}

#[tokio::test]
async fn managed_identity_system_and_user_assigned() {
    let _env = env_guard().await;
    let mock = Mock::start("unused", &[]);
    mock.set_identity_env();
    let source = build_source(&mock.settings(CredentialKind::ManagedIdentity)).unwrap();
    assert!(
        source.describe().contains("system-assigned"),
        "{}",
        source.describe()
    );
    two_fresh_tokens(source.as_ref(), &mock).await;

    let mut settings = mock.settings(CredentialKind::ManagedIdentity);
    settings.object_id = Some("obj-5".into());
    let source = build_source(&settings).unwrap();
    fetch_checked(source.as_ref(), &mock).await;

    let reqs = mock.requests().await;
    assert_eq!(reqs.len(), 3);
    assert!(reqs
        .iter()
        .all(|r| r["via"] == "msi" && r["resource"] == "https://redis.azure.com"));
    assert_eq!(reqs[0]["user_assigned"], Value::Null);
    assert_eq!(reqs[2]["user_assigned"], json!({"object_id": "obj-5"}));
}

#[tokio::test]
async fn azure_cli_runs_az_every_time() {
    let _env = env_guard().await;
    let mock = Mock::start("unused", &[]);
    let old_path = mock.put_az_on_path();
    let source = build_source(&mock.settings(CredentialKind::AzureCli)).unwrap();
    let result = async {
        two_fresh_tokens(source.as_ref(), &mock).await;
        let reqs = mock.requests().await;
        assert_eq!(reqs.len(), 2);
        assert!(reqs
            .iter()
            .all(|r| r["via"] == "cli" && r["scope"] == "https://redis.azure.com/.default"));
    };
    result.await;
    std::env::set_var("PATH", old_path);
}

#[tokio::test]
async fn default_chain_prefers_the_environment_service_principal() {
    let _env = env_guard().await;
    let mock = Mock::start("chain-secret", &[]);
    mock.set_identity_env();
    std::env::set_var("AZURE_TENANT_ID", "tenant-e");
    std::env::set_var("AZURE_CLIENT_ID", "app-6");
    std::env::set_var("AZURE_CLIENT_SECRET", "chain-secret");
    let source = build_source(&mock.settings(CredentialKind::Default)).unwrap();
    assert!(
        source.describe().starts_with("default chain ["),
        "{}",
        source.describe()
    );
    two_fresh_tokens(source.as_ref(), &mock).await;
    assert!(
        source.describe().contains("client-secret"),
        "{}",
        source.describe()
    );
    let reqs = mock.requests().await;
    assert!(reqs.iter().all(|r| r["via"] == "oauth2"), "{reqs:?}");
    // The log says which member answered.
    let logs = String::from_utf8_lossy(&init_logs().lock().unwrap()).into_owned();
    assert!(
        logs.lines().any(|l| l.contains("this credential answered")
            && l.contains("client-secret (tenant tenant-e, client app-6")),
        "no log line names the member that answered"
    );
}

#[tokio::test]
async fn default_chain_uses_workload_identity_when_its_environment_is_present() {
    let _env = env_guard().await;
    let mock = Mock::start("unused", &[]);
    mock.set_identity_env();
    let file = mock.dir.path().join("federated-token");
    std::fs::write(&file, jwt::unsigned_jwt(&json!({"sub": "sa"}))).unwrap();
    std::env::set_var("AZURE_TENANT_ID", "tenant-f");
    std::env::set_var("AZURE_CLIENT_ID", "app-7");
    std::env::set_var("AZURE_FEDERATED_TOKEN_FILE", &file);
    let source = build_source(&mock.settings(CredentialKind::Default)).unwrap();
    fetch_checked(source.as_ref(), &mock).await;
    assert!(
        source.describe().contains("workload-identity"),
        "{}",
        source.describe()
    );
    let reqs = mock.requests().await;
    assert_eq!(reqs[0]["credential"], "client_assertion");
}

#[tokio::test]
async fn default_chain_falls_through_managed_identity_to_the_cli_and_sticks() {
    let _env = env_guard().await;
    let mock = Mock::start("unused", &[]);
    mock.set_identity_env();
    let old_path = mock.put_az_on_path();
    let source = build_source(&mock.settings(CredentialKind::Default)).unwrap();
    // Managed identity fails once (and only once); the CLI answers.
    mock.fail("500", Some(1)).await;
    fetch_checked(source.as_ref(), &mock).await;
    assert!(
        source.describe().contains("azure-cli"),
        "{}",
        source.describe()
    );
    // The chain sticks to the CLI: managed identity is not asked again.
    fetch_checked(source.as_ref(), &mock).await;
    let via: Vec<String> = mock
        .requests()
        .await
        .iter()
        .map(|r| r["via"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(via, vec!["msi", "cli", "cli"]);
    std::env::set_var("PATH", old_path);
}

/// A client-secret source against `mock` (secret "s").
fn secret_source(mock: &Mock) -> Arc<dyn TokenSource> {
    let mut settings = mock.settings(CredentialKind::ClientSecret);
    settings.tenant_id = Some("tenant-x".into());
    settings.client_id = Some("app-x".into());
    settings.client_secret_file = Some(write_secret(mock.dir.path(), "s"));
    build_source(&settings).unwrap()
}

#[tokio::test]
async fn identity_endpoint_failures_are_clear_errors() {
    let _env = env_guard().await;
    let mock = Mock::start("s", &[]);
    let source = secret_source(&mock);

    mock.fail("500", Some(1)).await;
    let err = source.fetch().await.unwrap_err().to_string();
    assert!(err.contains("HTTP 500"), "{err}");
    assert!(err.contains("/tenant-x/oauth2/v2.0/token"), "{err}");
    assert!(err.contains("client-secret"), "{err}");

    mock.fail("400", Some(1)).await;
    let err = source.fetch().await.unwrap_err().to_string();
    assert!(err.contains("AADSTS7000215"), "{err}");
    assert!(err.contains("HTTP 400"), "{err}");

    mock.fail("malformed", Some(1)).await;
    let err = source.fetch().await.unwrap_err().to_string();
    assert!(err.contains("HTTP 200"), "{err}");
    assert!(err.contains("EOF"), "{err}");

    // Recovered: the next fetch works.
    fetch_checked(source.as_ref(), &mock).await;
}

#[tokio::test]
async fn managed_identity_failure_is_a_clear_error() {
    let _env = env_guard().await;
    let mock = Mock::start("unused", &[]);
    mock.set_identity_env();
    let source = build_source(&mock.settings(CredentialKind::ManagedIdentity)).unwrap();
    mock.fail("500", Some(1)).await;
    let err = source.fetch().await.unwrap_err().to_string();
    assert!(err.contains("ManagedIdentityCredential"), "{err}");
    assert!(err.contains("HTTP 500"), "{err}");
}

fn fast_policy(timeout: Duration) -> RefreshPolicy {
    RefreshPolicy {
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        timeout,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_hanging_endpoint_is_bounded_by_the_manager_timeout() {
    let _env = env_guard().await;
    let mock = Mock::start("s", &[]);
    let source = secret_source(&mock);
    mock.fail("hang", None).await;
    let (manager, handle) =
        TokenManager::new(source, fast_policy(Duration::from_millis(500)), Vec::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(manager.run(stop_rx));
    let deadline = Instant::now() + Duration::from_secs(20);
    let err = loop {
        if let Some(e) = handle.status().last_error {
            break e;
        }
        assert!(Instant::now() < deadline, "no error reported");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(err.contains("timed out"), "{err}");
    assert!(handle.current().is_none());
    // The endpoint comes back: the manager's retries recover.
    mock.fail("none", None).await;
    let token = handle
        .wait_for_token(Duration::from_secs(20))
        .await
        .expect("recovered");
    assert_eq!(token.generation(), 1);
    stop_tx.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn the_manager_keeps_retrying_a_failing_endpoint_and_recovers() {
    let _env = env_guard().await;
    let mock = Mock::start("s", &[]);
    let source = secret_source(&mock);
    mock.fail("500", Some(4)).await;
    let (manager, handle) =
        TokenManager::new(source, fast_policy(Duration::from_secs(10)), Vec::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(manager.run(stop_rx));
    let token = handle
        .wait_for_token(Duration::from_secs(30))
        .await
        .expect("a token after the failures");
    let issued = mock.issued().await;
    assert_eq!(issued.len(), 1);
    assert_eq!(token.username(), issued[0]["oid"].as_str().unwrap());
    assert_eq!(mock.requests().await.len(), 5, "4 failures, then success");
    assert_eq!(handle.status().consecutive_failures, 0);
    stop_tx.send(true).unwrap();
    task.await.unwrap();
}

/// The start-up error of `settings`, as the user sees it.
fn startup_error(settings: &Settings) -> String {
    match build_source(settings) {
        Ok(s) => panic!("expected a start-up error, got {}", s.describe()),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn misconfiguration_names_the_missing_input() {
    let _env = env_guard().await;
    let dir = tempfile::tempdir().unwrap();

    let mut s = Settings {
        credential: CredentialKind::ClientSecret,
        client_id: Some("app".into()),
        client_secret_file: Some(write_secret(dir.path(), "x")),
        ..Default::default()
    };
    let err = startup_error(&s);
    for needle in ["tenant id", "--tenant-id", "`tenant_id`", "AZURE_TENANT_ID"] {
        assert!(err.contains(needle), "{needle}: {err}");
    }

    s.tenant_id = Some("t".into());
    s.client_id = None;
    let err = startup_error(&s);
    assert!(
        err.contains("--client-id") && err.contains("AZURE_CLIENT_ID"),
        "{err}"
    );

    s.client_id = Some("app".into());
    s.client_secret_file = None;
    let err = startup_error(&s);
    assert!(
        err.contains("--client-secret-file") && err.contains("AZURE_CLIENT_SECRET"),
        "{err}"
    );

    s.client_secret_file = Some(dir.path().join("no-such-secret"));
    let err = startup_error(&s);
    assert!(
        err.contains("no-such-secret") && err.contains("client secret file"),
        "{err}"
    );

    let w = Settings {
        credential: CredentialKind::WorkloadIdentity,
        tenant_id: Some("t".into()),
        client_id: Some("c".into()),
        ..Default::default()
    };
    let err = startup_error(&w);
    assert!(err.contains("AZURE_FEDERATED_TOKEN_FILE"), "{err}");

    let pfx = dir.path().join("cert.pfx");
    std::fs::write(&pfx, [0x30u8, 0x82, 0x01, 0x02, 0x03]).unwrap();
    let c = Settings {
        credential: CredentialKind::ClientCertificate,
        tenant_id: Some("t".into()),
        client_id: Some("c".into()),
        certificate_file: Some(pfx),
        ..Default::default()
    };
    let err = startup_error(&c);
    assert!(
        err.contains("PFX") && err.contains("openssl pkcs12"),
        "{err}"
    );

    let c = Settings {
        certificate_file: None,
        ..c
    };
    let err = startup_error(&c);
    assert!(err.contains("--certificate-file"), "{err}");

    let a = Settings {
        credential: CredentialKind::ClientSecret,
        tenant_id: Some("t".into()),
        client_id: Some("c".into()),
        client_secret_file: Some(write_secret(dir.path(), "x")),
        authority_host: Some("http://login.example".into()),
        ..Default::default()
    };
    let err = startup_error(&a);
    assert!(
        err.contains("https://") && err.contains("--authority-host"),
        "{err}"
    );

    let m = Settings {
        credential: CredentialKind::ManagedIdentity,
        identity_ca_file: Some(dir.path().join("no-ca.pem")),
        ..Default::default()
    };
    let err = startup_error(&m);
    assert!(
        err.contains("no-ca.pem") && err.contains("identity_ca_file"),
        "{err}"
    );

    // An unknown kind is refused when the configuration is read, naming the valid kinds.
    let err = serde_json::from_value::<Settings>(json!({"credential": "magic"}))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("magic") && err.contains("managed-identity"),
        "{err}"
    );
}

#[tokio::test]
async fn secrets_never_reach_logs_debug_or_errors() {
    let _env = env_guard().await;
    let logs = init_logs();
    let client_secret = "Zq8~very-secret-client-secret-value";
    let mock = Mock::start(client_secret, &[]);
    let mut secrets: Vec<String> = vec![client_secret.to_owned()];

    // Client secret: success, then a wrong secret (AAD 400/401 path).
    let mut settings = mock.settings(CredentialKind::ClientSecret);
    settings.tenant_id = Some("tenant-s".into());
    settings.client_id = Some("app-s".into());
    settings.client_secret_file = Some(write_secret(mock.dir.path(), client_secret));
    let source = build_source(&settings).unwrap();
    let (token, _) = fetch_checked(source.as_ref(), &mock).await;
    assert!(!format!("{token:?}").contains(token.secret.expose()));
    assert!(!format!("{:?}", token.secret).contains(token.secret.expose()));
    let wrong = "Zq8~wrong-secret-never-to-be-logged";
    std::env::set_var("AZURE_CLIENT_SECRET", wrong);
    secrets.push(wrong.to_owned());
    let mut wrong_settings = settings.clone();
    wrong_settings.client_secret_file = None;
    let err = build_source(&wrong_settings)
        .unwrap()
        .fetch()
        .await
        .unwrap_err();
    let err_text = format!("{err} {err:?}");

    // Certificate: the key and the signed assertion.
    let (pem, _) = rsa_certificate(mock.dir.path());
    let key_pem = std::fs::read_to_string(&pem).unwrap();
    let key_body: String = key_pem
        .split("-----BEGIN PRIVATE KEY-----")
        .nth(1)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    secrets.push(key_body);
    let mut cert_settings = mock.settings(CredentialKind::ClientCertificate);
    cert_settings.tenant_id = Some("tenant-s".into());
    cert_settings.client_id = Some("app-s".into());
    cert_settings.certificate_file = Some(pem);
    let cert_source = build_source(&cert_settings).unwrap();
    fetch_checked(cert_source.as_ref(), &mock).await;

    // Workload identity: the federated assertion.
    let federated = jwt::unsigned_jwt(&json!({"sub": "sa", "secret": "federated-assertion-xyz"}));
    secrets.push(federated.clone());
    let file = mock.dir.path().join("federated");
    std::fs::write(&file, &federated).unwrap();
    std::env::set_var("AZURE_FEDERATED_TOKEN_FILE", &file);
    let mut wl = mock.settings(CredentialKind::WorkloadIdentity);
    wl.tenant_id = Some("tenant-s".into());
    wl.client_id = Some("app-s".into());
    let wl_source = build_source(&wl).unwrap();
    fetch_checked(wl_source.as_ref(), &mock).await;

    // Managed identity: the identity header is a secret too; and the Azure CLI.
    mock.set_identity_env();
    secrets.push(mock.identity_header.clone());
    let mi_source = build_source(&mock.settings(CredentialKind::ManagedIdentity)).unwrap();
    fetch_checked(mi_source.as_ref(), &mock).await;
    let old_path = mock.put_az_on_path();
    let cli_source = build_source(&mock.settings(CredentialKind::AzureCli)).unwrap();
    fetch_checked(cli_source.as_ref(), &mock).await;
    std::env::set_var("PATH", old_path);

    // Through the manager too (it logs every new token).
    let (manager, handle) = TokenManager::new(
        source.clone(),
        fast_policy(Duration::from_secs(10)),
        Vec::new(),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(manager.run(stop_rx));
    let current = handle
        .wait_for_token(Duration::from_secs(20))
        .await
        .unwrap();
    assert!(!format!("{current:?}").contains(current.secret().expose()));
    stop_tx.send(true).unwrap();
    task.await.unwrap();

    for r in mock.requests().await {
        if let Some(a) = r["assertion"].as_str() {
            secrets.push(a.to_owned());
        }
    }
    for i in mock.issued().await {
        secrets.push(i["token"].as_str().unwrap().to_owned());
    }
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        logged.contains("TRACE") || logged.contains("DEBUG"),
        "the subscriber captured low-level records"
    );
    // The capture works: this test's non-secret inputs and the HTTP stack's records are there.
    assert!(logged.contains("tenant-s"), "our own records were captured");
    assert!(
        logged.contains("hyper_util"),
        "records of the `log` bridge were captured"
    );
    for s in &secrets {
        assert!(!logged.contains(s.as_str()), "a secret reached the logs");
        assert!(!err_text.contains(s.as_str()), "a secret reached an error");
        for src in [&source, &cert_source, &wl_source, &mi_source, &cli_source] {
            assert!(!src.describe().contains(s.as_str()));
        }
    }
    std::env::remove_var("AZURE_CLIENT_SECRET");
}

/// End to end: the proxy with `--credential client-secret` against the mock and a real TLS
/// redis-server. The mock makes each token's oid an ACL user (through redis-cli) and deletes
/// it at expiry; the client sees the token's oid as its identity, and survives the deletion
/// of the first user because the proxy re-authenticated with the next token in time.
/// A TLS redis-server, the mock identity endpoint issuing tokens of `lifetime` (each token's
/// ACL user is created before the mock answers and deleted when the token expires: Azure's
/// expiry, emulated), and the proxy with `--credential client-secret` against the mock.
struct EndToEnd {
    server: support::RedisServer,
    mock: Mock,
    proxy: support::Proxy,
    client_secret: &'static str,
}

async fn end_to_end(lifetime: &str, extra_proxy_args: &[&str]) -> EndToEnd {
    end_to_end_with_env(lifetime, extra_proxy_args, &[]).await
}

/// [`end_to_end`] with `envs` set on the proxy process.
async fn end_to_end_with_env(
    lifetime: &str,
    extra_proxy_args: &[&str],
    envs: &[(&str, &str)],
) -> EndToEnd {
    let server = support::RedisServer::start().await;
    let mut admin = server.admin().await;
    let mock_admin_password = support::random_id();
    let reply = admin
        .cmd(&[
            "ACL",
            "SETUSER",
            "mock-identity-admin",
            "on",
            &format!(">{mock_admin_password}"),
            "~*",
            "&*",
            "+@all",
        ])
        .await;
    assert_eq!(reply, support::Reply::ok());
    let port = server.port.to_string();
    let ca = server.tls.ca_file.display().to_string();
    let cli_args = format!(
        "-h 127.0.0.1 -p {port} --tls --cacert {ca} --sni localhost --user mock-identity-admin --no-auth-warning"
    );
    let client_secret = "e2e-client-secret-value";
    // The admin password reaches redis-cli through its environment, not its arguments.
    let mock = Mock::start_with_env(
        client_secret,
        &["--lifetime", lifetime, "--redis-cli-args", &cli_args],
        &[("REDISCLI_AUTH", &mock_admin_password)],
    );
    let secret_file = write_secret(mock.dir.path(), client_secret);
    let mut args = support::proxy_args(&server, Path::new("/unused"));
    let at = args.iter().position(|a| a == "--credential").unwrap();
    args.drain(at..at + 4); // --credential token-file --token-file PATH
    let ca_file = mock.ca().display().to_string();
    let secret_path = secret_file.display().to_string();
    let authority = mock.authority();
    for (flag, value) in [
        ("--credential", "client-secret"),
        ("--tenant-id", "tenant-e2e"),
        ("--client-id", "app-e2e"),
        ("--client-secret-file", secret_path.as_str()),
        ("--authority-host", authority.as_str()),
        ("--identity-ca-file", ca_file.as_str()),
    ] {
        args.push(flag.into());
        args.push(value.into());
    }
    args.extend(extra_proxy_args.iter().map(|a| a.to_string()));
    let proxy = support::Proxy::start_with_env(&args, "info,entra_redis_proxy=debug", envs).await;
    EndToEnd {
        server,
        mock,
        proxy,
        client_secret,
    }
}

#[tokio::test]
async fn proxy_with_client_secret_authenticates_as_the_token_oid_and_survives_expiry() {
    let _env = env_guard().await;
    let EndToEnd {
        server,
        mock,
        proxy,
        client_secret,
    } = end_to_end("8s", &[]).await;
    let mut client = proxy.client().await;
    let whoami = |r: support::Reply| {
        assert!(matches!(r, support::Reply::Bulk(_)), "WHOAMI: {r:?}");
        r.text().unwrap()
    };
    let first = whoami(client.cmd(&["ACL", "WHOAMI"]).await);
    let issued = mock.issued().await;
    assert!(
        issued.iter().any(|i| i["oid"] == first.as_str()),
        "the session is authenticated as a token's oid: {first} not in {issued:?}"
    );
    let first_exp = issued.iter().find(|i| i["oid"] == first.as_str()).unwrap()["exp"]
        .as_u64()
        .unwrap();
    // After the first token expires (and its ACL user is deleted, which disconnects every
    // connection still using it), the same client connection works as a newer oid.
    let expired = support::wait_until(Duration::from_secs(30), || async {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        now > first_exp + 1
    })
    .await;
    assert!(expired);
    let gone = support::wait_until(Duration::from_secs(10), || {
        let server = &server;
        let first = first.clone();
        async move {
            let mut admin = server.admin().await;
            let users = admin.cmd(&["ACL", "USERS"]).await;
            !format!("{users:?}").contains(&first)
        }
    })
    .await;
    assert!(gone, "the mock deleted the expired token's ACL user");
    let now_user = whoami(client.cmd(&["ACL", "WHOAMI"]).await);
    assert_ne!(now_user, first);
    assert!(
        mock.issued()
            .await
            .iter()
            .any(|i| i["oid"] == now_user.as_str()),
        "{now_user} is a token's oid"
    );
    assert_eq!(client.cmd(&["PING"]).await, support::Reply::status("PONG"));

    let logs = proxy.raw_logs();
    assert!(
        !logs.contains(client_secret),
        "the client secret reached the proxy log"
    );
    for i in mock.issued().await {
        assert!(
            !logs.contains(i["token"].as_str().unwrap()),
            "a token reached the proxy log"
        );
    }
}

/// Runs SET/GET pipelines with per-client values until `until`, checking every reply.
async fn checked_traffic(mut c: support::ProxyClient, id: usize, until: Instant) -> usize {
    let mut rounds = 0;
    while Instant::now() < until {
        let key = format!("client-{id}");
        let value = format!("v-{id}-{rounds}");
        let mut bytes = support::encode_command(&["SET", key.as_str(), value.as_str()]);
        bytes.extend(support::encode_command(&["GET", key.as_str()]));
        bytes.extend(support::encode_command(&["INCR", &format!("n-{id}")]));
        let replies = c.pipeline(&bytes, 3).await;
        assert_eq!(
            replies[0],
            support::Reply::ok(),
            "client {id} round {rounds}"
        );
        assert_eq!(
            replies[1],
            support::Reply::bulk(&value),
            "client {id} round {rounds}"
        );
        assert_eq!(
            replies[2],
            support::Reply::Int(rounds as i64 + 1),
            "client {id} round {rounds}"
        );
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rounds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clients_for_a_minute_with_ten_second_tokens() {
    let _env = env_guard().await;
    let e = end_to_end("10s", &[]).await;
    let until = Instant::now() + Duration::from_secs(60);
    let mut tasks = Vec::new();
    for id in 0..20 {
        let c = e.proxy.client().await;
        tasks.push(tokio::spawn(checked_traffic(c, id, until)));
    }
    for t in tasks {
        assert!(t.await.expect("client task") > 100);
    }
    // Tokens really expired under the clients (their users were deleted by the mock).
    let issued = e.mock.issued().await;
    assert!(
        issued.len() >= 6,
        "only {} tokens issued in 60 s",
        issued.len()
    );
    let mut admin = e.server.admin().await;
    let users = format!("{:?}", admin.cmd(&["ACL", "USERS"]).await);
    let expired = issued
        .iter()
        .filter(|i| !users.contains(i["oid"].as_str().unwrap()))
        .count();
    assert!(expired >= 4, "only {expired} tokens expired during the run");
    assert!(!e.proxy.raw_logs().contains(e.client_secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_outage_longer_than_the_refresh_window_is_ridden_out() {
    let _env = env_guard().await;
    // 20 s tokens, refreshed from 14 s (0.7) and at the latest 15 s (margin 5 s).
    let e = end_to_end(
        "20s",
        &[
            "--refresh-margin",
            "5s",
            "--refresh-jitter",
            "0",
            "--retry-initial",
            "500ms",
            "--retry-max",
            "2s",
        ],
    )
    .await;
    let mut client = e.proxy.client().await;
    let first = client.cmd(&["ACL", "WHOAMI"]).await.text().unwrap();
    let first_exp = e
        .mock
        .issued()
        .await
        .iter()
        .find(|i| i["oid"] == first.as_str())
        .unwrap()["exp"]
        .as_u64()
        .unwrap();
    // The identity endpoint fails from now until 17 s into the token's life: past the refresh
    // point and the margin, but before expiry.
    e.mock.fail("500", None).await;
    let outage_end = UNIX_EPOCH + Duration::from_secs(first_exp - 3);
    let until = Instant::now()
        + outage_end
            .duration_since(SystemTime::now())
            .unwrap_or_default();
    let traffic = checked_traffic(e.proxy.client().await, 1, until).await;
    assert!(traffic > 10);
    // The proxy kept serving on the old token and kept retrying, with backoff.
    assert_eq!(client.cmd(&["ACL", "WHOAMI"]).await.text().unwrap(), first);
    let failures = e
        .proxy
        .raw_logs()
        .lines()
        .filter(|l| l.contains("could not obtain a token"))
        .count();
    assert!(failures >= 2, "{failures} failed attempts logged");
    e.mock.fail("none", None).await;
    // It recovers on its own before the old token expires; the same connection moves on.
    let moved = support::wait_until(Duration::from_secs(10), || {
        let first = first.clone();
        let proxy = &e.proxy;
        async move {
            let mut c = proxy.client().await;
            c.cmd(&["ACL", "WHOAMI"]).await.text().unwrap() != first
        }
    })
    .await;
    assert!(moved, "a new token was obtained after the outage");
    let until = Instant::now() + Duration::from_secs(8);
    // Past the first token's expiry (its user is deleted): the old connection still works.
    assert!(checked_traffic(client, 2, until).await > 10);
}

/// An RSA-2048 certificate and its key in one PEM file, with the certificate's DER and the
/// public key (PKCS#1) that verifies the assertion's signature.
fn rsa_certificate_with_public_key(dir: &Path) -> (PathBuf, Vec<u8>, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "entra-redis-proxy pfx test");
    let cert = params.self_signed(&key).unwrap();
    let path = dir.join("pfx-source.pem");
    std::fs::write(&path, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
    (path, cert.der().to_vec(), key.public_key_raw().to_vec())
}

/// Exports `pem` (certificate and key) to a PFX with the `openssl` CLI, the way people make
/// them; `password` None means no password. None when openssl refuses (e.g. `-legacy`
/// without the legacy provider).
fn export_pfx(pem: &Path, out: &Path, password: Option<&str>, extra: &[&str]) -> Option<PathBuf> {
    let mut cmd = Command::new("openssl");
    cmd.args(["pkcs12", "-export", "-inkey"])
        .arg(pem)
        .arg("-in")
        .arg(pem)
        .arg("-out")
        .arg(out)
        .args(extra);
    match password {
        Some(pw) => {
            let pw_file = out.with_extension("openssl-pw");
            std::fs::write(&pw_file, pw).unwrap();
            cmd.arg("-passout")
                .arg(format!("file:{}", pw_file.display()));
        }
        None => {
            cmd.args(["-passout", "pass:"]);
        }
    }
    let done = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl (the tests need the openssl CLI to make PFX files)");
    done.success().then(|| out.to_path_buf())
}

/// Checks an assertion the mock received: RS256 signed by `public_key`, thumbprints of `der`.
fn assert_assertion_signed_by(assertion: &str, der: &[u8], public_key: &[u8], client_id: &str) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (signed, sig) = assertion.rsplit_once('.').unwrap();
    let parts: Vec<&str> = signed.split('.').collect();
    assert_eq!(parts.len(), 2);
    let header = decode_part(parts[0]);
    let claims = decode_part(parts[1]);
    assert_eq!(header["alg"], "RS256");
    let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
    let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    assert_eq!(header["x5t"], b64.encode(sha1.as_ref()));
    assert_eq!(header["x5t#S256"], b64.encode(sha256.as_ref()));
    assert_eq!(claims["iss"], client_id);
    assert_eq!(claims["sub"], client_id);
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        public_key,
    )
    .verify(signed.as_bytes(), &b64.decode(sig).unwrap())
    .expect("the assertion's signature verifies with the certificate's key");
}

#[tokio::test]
async fn client_certificate_pfx_with_password_file_signs_a_proper_assertion() {
    let _env = env_guard().await;
    let mock = Mock::start("unused", &[]);
    let dir = mock.dir.path();
    let (pem, der, public_key) = rsa_certificate_with_public_key(dir);
    // A space inside the password is kept; only the trailing newline of the file goes.
    let password = "pfx pass 7";
    let pfx = export_pfx(&pem, &dir.join("client.pfx"), Some(password), &[])
        .expect("openssl pkcs12 -export");
    let pw_file = dir.join("client.pfx.password");
    std::fs::write(&pw_file, format!("{password}\n")).unwrap();
    std::fs::set_permissions(
        &pw_file,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .unwrap();

    let mut settings = mock.settings(CredentialKind::ClientCertificate);
    settings.tenant_id = Some("tenant-p".into());
    settings.client_id = Some("app-pfx".into());
    settings.certificate_file = Some(pfx.clone());
    settings.certificate_password_file = Some(pw_file.clone());
    let source = build_source(&settings).unwrap();
    let describe = source.describe();
    assert!(
        describe.contains("client.pfx") && !describe.contains(password),
        "{describe}"
    );
    two_fresh_tokens(source.as_ref(), &mock).await;
    let reqs = mock.requests().await;
    assert_eq!(reqs[0]["credential"], "client_assertion");
    for r in &reqs {
        assert_assertion_signed_by(
            r["assertion"].as_str().unwrap(),
            &der,
            &public_key,
            "app-pfx",
        );
    }
    assert_ne!(reqs[0]["assertion"], reqs[1]["assertion"]);
    let claims = decode_part(
        reqs[0]["assertion"]
            .as_str()
            .unwrap()
            .split('.')
            .nth(1)
            .unwrap(),
    );
    assert_eq!(
        claims["aud"],
        format!("{}/tenant-p/oauth2/v2.0/token", mock.authority())
    );

    // The same file under a name that says nothing: recognised by its content.
    let renamed = dir.join("client-credential.bin");
    std::fs::copy(&pfx, &renamed).unwrap();
    settings.certificate_file = Some(renamed);
    let source = build_source(&settings).unwrap();
    fetch_checked(source.as_ref(), &mock).await;
}

#[tokio::test]
async fn client_certificate_pfx_wrong_password_names_the_password_file() {
    let _env = env_guard().await;
    let dir = tempfile::tempdir().unwrap();
    let (pem, _, _) = rsa_certificate_with_public_key(dir.path());
    let pfx = export_pfx(&pem, &dir.path().join("sp.pfx"), Some("right-one"), &[])
        .expect("openssl pkcs12 -export");
    let wrong = "wrong-password-91";
    let pw_file = dir.path().join("sp.pfx.password");
    std::fs::write(&pw_file, wrong).unwrap();
    let mut settings = Settings {
        credential: CredentialKind::ClientCertificate,
        tenant_id: Some("t".into()),
        client_id: Some("c".into()),
        certificate_file: Some(pfx.clone()),
        certificate_password_file: Some(pw_file.clone()),
        ..Default::default()
    };
    let err = startup_error(&settings);
    for needle in [
        "cannot open the PFX",
        "certificate_password_file",
        "--certificate-password-file",
        "sp.pfx.password",
        pfx.to_str().unwrap(),
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert!(!err.contains(wrong) && !err.contains("right-one"), "{err}");

    // No password file: the empty password is tried, and the error says so.
    settings.certificate_password_file = None;
    let err = startup_error(&settings);
    assert!(
        err.contains("empty password") && err.contains("certificate_password_file"),
        "{err}"
    );

    // A password file that is not there is named as such.
    settings.certificate_password_file = Some(dir.path().join("no-such-password"));
    let err = startup_error(&settings);
    assert!(
        err.contains("no-such-password") && err.contains("certificate password file"),
        "{err}"
    );

    let logs = String::from_utf8_lossy(&init_logs().lock().unwrap()).into_owned();
    assert!(!logs.contains(wrong) && !logs.contains("right-one"));
}

#[tokio::test]
async fn client_certificate_pfx_without_password_and_legacy_pfx() {
    let _env = env_guard().await;
    let mock = Mock::start("unused", &[]);
    let dir = mock.dir.path();
    let (pem, der, public_key) = rsa_certificate_with_public_key(dir);
    let mut settings = mock.settings(CredentialKind::ClientCertificate);
    settings.tenant_id = Some("tenant-q".into());
    settings.client_id = Some("app-q".into());

    // An unprotected PFX: no password file, or an empty one.
    let open = export_pfx(&pem, &dir.join("open.p12"), None, &[]).expect("openssl export");
    settings.certificate_file = Some(open);
    fetch_checked(build_source(&settings).unwrap().as_ref(), &mock).await;
    let empty = dir.join("empty-password");
    std::fs::write(&empty, "\n").unwrap();
    settings.certificate_password_file = Some(empty);
    fetch_checked(build_source(&settings).unwrap().as_ref(), &mock).await;

    // Older tools (and Windows exports) use 3DES/RC2 and a SHA-1 MAC.
    let pw_file = dir.join("legacy-password");
    std::fs::write(&pw_file, "legacy\n").unwrap();
    settings.certificate_password_file = Some(pw_file);
    match export_pfx(&pem, &dir.join("legacy.pfx"), Some("legacy"), &["-legacy"]) {
        Some(legacy) => {
            settings.certificate_file = Some(legacy);
            fetch_checked(build_source(&settings).unwrap().as_ref(), &mock).await;
        }
        None => eprintln!("openssl cannot write a -legacy PFX here; legacy case skipped"),
    }
    for r in mock.requests().await {
        assert_assertion_signed_by(r["assertion"].as_str().unwrap(), &der, &public_key, "app-q");
    }
}

/// Every form `openssl pkcs12 -export` writes is read: the OpenSSL 3 default (PBES2,
/// AES-256, SHA-256 MAC) is covered above; here legacy RC2-40/3DES with a SHA-1 MAC, 3DES
/// alone, unencrypted bags, no MAC, AES-128 with a SHA-512 MAC, and a file that also holds
/// an unrelated CA certificate (the key's own certificate is the one used).
#[tokio::test]
async fn client_certificate_pfx_every_encryption_openssl_writes() {
    let _env = env_guard().await;
    let mock = Mock::start("unused", &[]);
    let dir = mock.dir.path();
    let (pem, der, public_key) = rsa_certificate_with_public_key(dir);
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let ca_file = dir.join("extra-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let ca_arg = ca_file.display().to_string();

    let password = "v4riant pass";
    let pw_file = dir.join("variants-password");
    std::fs::write(&pw_file, format!("{password}\n")).unwrap();
    let mut settings = mock.settings(CredentialKind::ClientCertificate);
    settings.tenant_id = Some("tenant-v".into());
    settings.client_id = Some("app-v".into());
    settings.certificate_password_file = Some(pw_file.clone());
    let variants: Vec<(&str, Vec<&str>)> = vec![
        ("legacy", vec!["-legacy"]),
        (
            "3des",
            vec![
                "-keypbe",
                "PBE-SHA1-3DES",
                "-certpbe",
                "PBE-SHA1-3DES",
                "-macalg",
                "sha1",
            ],
        ),
        ("plain-bags", vec!["-keypbe", "NONE", "-certpbe", "NONE"]),
        ("no-mac", vec!["-nomac"]),
        (
            "aes128-sha512",
            vec![
                "-keypbe",
                "AES-128-CBC",
                "-certpbe",
                "AES-128-CBC",
                "-macalg",
                "sha512",
            ],
        ),
        ("with-ca", vec!["-certfile", ca_arg.as_str()]),
    ];
    for (name, extra) in &variants {
        let pfx = export_pfx(
            &pem,
            &dir.join(format!("{name}.pfx")),
            Some(password),
            extra,
        )
        .unwrap_or_else(|| panic!("openssl pkcs12 -export {extra:?}"));
        settings.certificate_file = Some(pfx);
        let source = build_source(&settings).unwrap_or_else(|e| panic!("{name}: {e}"));
        fetch_checked(source.as_ref(), &mock).await;
    }
    let reqs = mock.requests().await;
    assert_eq!(reqs.len(), variants.len());
    for r in &reqs {
        assert_assertion_signed_by(r["assertion"].as_str().unwrap(), &der, &public_key, "app-v");
    }

    // A wrong password on a legacy file (its SHA-1 MAC fails): said so, the password nowhere.
    std::fs::write(&pw_file, "not-the-password\n").unwrap();
    settings.certificate_file = Some(dir.join("legacy.pfx"));
    let err = startup_error(&settings);
    assert!(
        err.contains("does not open it") && err.contains("variants-password"),
        "{err}"
    );
    assert!(
        !err.contains("not-the-password") && !err.contains(password),
        "{err}"
    );
}

#[tokio::test]
async fn client_certificate_pfx_without_a_usable_key_says_why() {
    let _env = env_guard().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings {
        credential: CredentialKind::ClientCertificate,
        tenant_id: Some("t".into()),
        client_id: Some("c".into()),
        ..Default::default()
    };

    // Only the certificate, no key.
    let (pem, _, _) = rsa_certificate_with_public_key(dir.path());
    let nokey = export_pfx(&pem, &dir.path().join("nokey.pfx"), None, &["-nokeys"])
        .expect("openssl export -nokeys");
    settings.certificate_file = Some(nokey);
    let err = startup_error(&settings);
    assert!(
        err.contains("nokey.pfx") && err.contains("no private key"),
        "{err}"
    );

    // An EC key: Entra assertions are RS256 here.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let ec_pem = dir.path().join("ec.pem");
    std::fs::write(&ec_pem, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
    let ec = export_pfx(&ec_pem, &dir.path().join("ec.pfx"), None, &[]).expect("openssl export");
    settings.certificate_file = Some(ec);
    let err = startup_error(&settings);
    assert!(
        err.contains("ec.pfx") && err.contains("not RSA") && err.contains("only RSA"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// The outbound HTTPS proxy. Its variables are process-wide, so they are set on the spawned
// binary (the daemon, or `doctor`), never in this process.

/// Runs `entra-redis-proxy doctor` with `credential_args` against a closed upstream port (only
/// the token step matters) and `envs` on top of this process's environment, from which the
/// identity and proxy variables are removed. Returns the `token` step's line and the line
/// after it (its remedy, if any).
fn doctor_token(mock: &Mock, credential_args: &[&str], envs: &[(&str, String)]) -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = closed.local_addr().unwrap().to_string();
    drop(closed);
    let mut args = support::proxy_args_to(&upstream, &mock.ca(), Path::new("/unused"));
    let at = args.iter().position(|a| a == "--credential").unwrap();
    args.drain(at..at + 4); // --credential token-file --token-file PATH
    let authority = mock.authority();
    let ca = mock.ca().display().to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_entra-redis-proxy"));
    cmd.arg("doctor")
        .args(&args)
        .args(["--authority-host", &authority, "--identity-ca-file", &ca])
        .args(credential_args);
    for v in AZURE_VARS
        .iter()
        .chain(support::connect_proxy::PROXY_VARIABLES.iter())
        .chain(["RUST_LOG"].iter())
    {
        cmd.env_remove(v);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.stdin(Stdio::null()).output().expect("run doctor");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut lines = stdout.lines();
    let is_token_step = |l: &&str| {
        let mut words = l.split_whitespace().skip(1);
        match words.next() {
            Some(w) if w.starts_with('[') => words.next() == Some("token"),
            w => w == Some("token"),
        }
    };
    let Some(token) = lines.find(is_token_step) else {
        panic!("no token step in doctor's output:\n{stdout}\n{stderr}");
    };
    format!("{token}\n{}", lines.next().unwrap_or_default())
}

/// The `Proxy-Authorization` value for `user:password`.
fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn the_daemon_reaches_the_token_endpoint_through_the_https_proxy() {
    let _env = env_guard().await;
    let connect = support::connect_proxy::ConnectProxy::start(support::connect_proxy::Mode::Tunnel);
    let proxy_password = "proxy-pass-4417";
    let proxy_url = format!("http://proxyuser:{proxy_password}@{}", connect.addr);
    // The server must outlive the test: `..` would drop it at once.
    let EndToEnd {
        server: _server,
        mock,
        proxy,
        ..
    } = end_to_end_with_env("60s", &[], &[("HTTPS_PROXY", proxy_url.as_str())]).await;
    let mut client = proxy.client().await;
    let reply = client.cmd(&["ACL", "WHOAMI"]).await;
    let oid = reply.text().unwrap_or_else(|| panic!("WHOAMI: {reply:?}"));
    assert!(
        mock.issued().await.iter().any(|i| i["oid"] == oid.as_str()),
        "authenticated as a token's oid"
    );
    // The token request went through the proxy (loopback is not exempt by default), with the
    // proxy's credentials; the mock's control requests from this test did not.
    assert!(
        connect.connects_to(&mock.addr) >= 1,
        "the proxy saw no CONNECT to the mock: {:?}",
        connect.seen()
    );
    for seen in connect.seen() {
        assert_eq!(seen.method, "CONNECT");
        assert_eq!(seen.target, mock.addr);
        assert_eq!(
            seen.authorization.as_deref(),
            Some(basic("proxyuser", proxy_password).as_str())
        );
    }
    let logs = proxy.raw_logs();
    let line = logs
        .lines()
        .find(|l| l.contains("outbound HTTPS proxy"))
        .unwrap_or_else(|| panic!("no proxy line in the log:\n{}", proxy.logs()));
    assert!(line.contains(&connect.addr.to_string()), "{line}");
    assert!(line.contains("HTTPS_PROXY"), "{line}");
    assert!(
        !logs.contains(proxy_password),
        "the proxy's password reached the log"
    );
}

#[tokio::test]
async fn workload_identity_goes_through_the_proxy_unless_no_proxy_exempts_the_host() {
    let _env = env_guard().await;
    let mock = Mock::start("unused", &[]);
    let connect = support::connect_proxy::ConnectProxy::start(support::connect_proxy::Mode::Tunnel);
    let file = mock.dir.path().join("federated-token");
    std::fs::write(
        &file,
        jwt::unsigned_jwt(&json!({"sub": "system:serviceaccount:app:redis"})),
    )
    .unwrap();
    let proxy_url = format!("http://{}", connect.addr);
    let mut envs = vec![
        ("AZURE_TENANT_ID", "tenant-w".to_owned()),
        ("AZURE_CLIENT_ID", "app-w".to_owned()),
        ("AZURE_FEDERATED_TOKEN_FILE", file.display().to_string()),
        ("https_proxy", proxy_url.clone()),
    ];
    let line = doctor_token(&mock, &["--credential", "workload-identity"], &envs);
    assert!(line.starts_with("ok"), "{line}");
    assert!(
        line.contains(&format!("through the proxy {proxy_url} (https_proxy)")),
        "doctor names the proxy in use: {line}"
    );
    assert_eq!(connect.connects_to(&mock.addr), 1, "{:?}", connect.seen());
    assert_eq!(mock.requests().await.len(), 1);

    // NO_PROXY naming the mock's host: the proxy sees nothing, the token still comes.
    envs.push(("NO_PROXY", "example.invalid, 127.0.0.1".to_owned()));
    let line = doctor_token(&mock, &["--credential", "workload-identity"], &envs);
    assert!(line.starts_with("ok"), "{line}");
    assert!(!line.contains("through the proxy"), "{line}");
    assert_eq!(connect.seen().len(), 1, "{:?}", connect.seen());
    assert_eq!(mock.requests().await.len(), 2);
}

#[tokio::test]
async fn managed_identity_is_never_proxied() {
    let _env = env_guard().await;
    let mock = Mock::start("unused", &[]);
    let connect = support::connect_proxy::ConnectProxy::start(support::connect_proxy::Mode::Tunnel);
    let proxy_url = format!("http://{}", connect.addr);
    // Every variable a client library might read points at the proxy (which answers plain
    // HTTP proxy requests 502): the managed identity endpoint must still be reached directly.
    let mut envs = vec![
        (
            "IDENTITY_ENDPOINT",
            format!("http://{}/msi/token", mock.addr),
        ),
        ("IDENTITY_HEADER", mock.identity_header.clone()),
    ];
    for var in ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "http_proxy"] {
        envs.push((var, proxy_url.clone()));
    }
    let line = doctor_token(&mock, &["--credential", "managed-identity"], &envs);
    assert!(line.starts_with("ok"), "{line}");
    assert!(!line.contains("through the proxy"), "{line}");
    assert!(connect.seen().is_empty(), "{:?}", connect.seen());
    let reqs = mock.requests().await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0]["via"], "msi");
}

#[tokio::test]
async fn a_refusing_proxy_is_a_clear_error_that_names_it_without_its_credentials() {
    let _env = env_guard().await;
    let mock = Mock::start("refused-secret", &[]);
    let connect = support::connect_proxy::ConnectProxy::start(support::connect_proxy::Mode::Refuse);
    let secret_file = write_secret(mock.dir.path(), "refused-secret");
    let proxy_password = "hidden-proxy-pass-99";
    let envs = [(
        "HTTPS_PROXY",
        format!("http://ops:{proxy_password}@{}", connect.addr),
    )];
    let line = doctor_token(
        &mock,
        &[
            "--credential",
            "client-secret",
            "--tenant-id",
            "tenant-r",
            "--client-id",
            "app-r",
            "--client-secret-file",
            secret_file.to_str().unwrap(),
        ],
        &envs,
    );
    assert!(line.starts_with("FAIL"), "{line}");
    for needle in [
        format!("http://{} (HTTPS_PROXY)", connect.addr),
        "outbound proxy".to_owned(),
        "NO_PROXY".to_owned(),
    ] {
        assert!(line.contains(&needle), "{needle}: {line}");
    }
    assert!(
        !line.contains(proxy_password) && !line.contains("ops:"),
        "{line}"
    );
    assert!(connect.connects_to(&mock.addr) >= 1, "{:?}", connect.seen());
    assert!(mock.requests().await.is_empty());
}

//! Microsoft Entra ID credentials, built on the `azure_identity` crate.
//!
//! Every kind is an [`AzureSource`]: a *recipe* for an `azure_identity` credential plus the
//! options every credential shares (our HTTP transport, no library retries, the authority
//! host). `azure_identity` credentials cache their token until 5 minutes before expiry and
//! cannot be told to refresh, so [`AzureSource::fetch`] builds a fresh credential for every
//! acquisition: a refresh at 70% of the lifetime really gets a new token, and inputs that
//! rotate (the federated token file, a secret file, a certificate) are read again each time.
//!
//! The `default` kind is a [`ChainSource`]: environment service principal, workload identity
//! (when its environment is present), managed identity, Azure CLI. The first member that
//! answers is kept for the life of the process, so the identity (and the AUTH user name)
//! does not change under the sessions' feet.
//!
//! Start-up ([`build`]) resolves every input (setting first, then the standard Azure
//! environment variable), reads the secret and certificate files once and constructs one
//! credential, so that misconfiguration stops the proxy at once with the missing input named.
//! No secret (client secret, certificate key, federated assertion, token) is ever logged,
//! printed by `Debug`, or put in an error.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::TokenCredential;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{
    ClientMethodOptions, ClientOptions, Context, Request, RetryOptions, Transport,
};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientAssertion, ClientAssertionCredential,
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::{jwt, BoxFuture, FetchedToken, Secret, TokenError, TokenSource};
use crate::config::{CredentialKind, Settings};

/// The public cloud's authority host, used when neither `authority_host` nor
/// `AZURE_AUTHORITY_HOST` is set.
pub const PUBLIC_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";

/// Environment variables of the Azure SDK conventions that this module reads.
pub mod env {
    /// Entra tenant id.
    pub const TENANT_ID: &str = "AZURE_TENANT_ID";
    /// Application (client) id.
    pub const CLIENT_ID: &str = "AZURE_CLIENT_ID";
    /// Client secret of a service principal.
    pub const CLIENT_SECRET: &str = "AZURE_CLIENT_SECRET";
    /// PEM certificate (with key) of a service principal.
    pub const CLIENT_CERTIFICATE_PATH: &str = "AZURE_CLIENT_CERTIFICATE_PATH";
    /// Kubernetes service-account token for workload identity (it rotates).
    pub const FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";
    /// Authority host for sovereign clouds.
    pub const AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";
    /// App Service / Container Apps managed identity endpoint.
    pub const IDENTITY_ENDPOINT: &str = "IDENTITY_ENDPOINT";
}

/// How long the `default` chain waits for the Azure Instance Metadata Service before moving
/// on: off Azure the address usually just drops packets.
const IMDS_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Connection timeout of the HTTP client used for identity endpoints. The manager's
/// `token_timeout` bounds the whole acquisition; this only makes an unreachable host fail
/// with a clear "connect" error rather than a bare timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Lifetime of the client assertion signed for `client-certificate`.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(600);

/// The value of an environment variable; empty counts as unset.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A setting's value, else the environment variable's.
fn setting_or_env(setting: &Option<String>, var: &str) -> Option<String> {
    setting
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .or_else(|| env_var(var))
}

/// "set --tenant-id, config key `tenant_id` (ENTRA_REDIS_PROXY_TENANT_ID)[, or AZURE_TENANT_ID]".
fn where_from(key: &str, azure_env: Option<&str>) -> String {
    let flag = key.replace('_', "-");
    let mut s = format!(
        "--{flag}, config key `{key}` (or ENTRA_REDIS_PROXY_{})",
        key.to_ascii_uppercase()
    );
    if let Some(var) = azure_env {
        s.push_str(&format!(", or the environment variable {var}"));
    }
    s
}

/// The start-up error for an input that is missing.
fn missing(kind: &str, what: &str, key: &str, azure_env: Option<&str>) -> TokenError {
    TokenError::Credential(format!(
        "credential `{kind}` needs {what}: set {}",
        where_from(key, azure_env)
    ))
}

/// Where a service principal's secret comes from.
enum SecretInput {
    /// A file, re-read at every acquisition (secrets rotate).
    File(PathBuf),
    /// `AZURE_CLIENT_SECRET`, read once at start-up.
    Env(Secret),
}

/// What to build for each acquisition. Holds no secret in clear except [`SecretInput::Env`],
/// which is a zeroizing [`Secret`].
enum Recipe {
    /// `client-secret`: a service principal and its secret.
    ClientSecret {
        /// Entra tenant id.
        tenant: String,
        /// Application (client) id.
        client_id: String,
        /// Where the secret comes from.
        secret: SecretInput,
    },
    /// `client-certificate`: a service principal and an assertion signed with its key.
    ClientCertificate {
        /// Entra tenant id.
        tenant: String,
        /// Application (client) id.
        client_id: String,
        /// PEM file with the certificate and its RSA key, or a PFX/PKCS#12 file; re-read at
        /// every acquisition.
        certificate: PathBuf,
        /// File holding the PFX password (none: the empty password); re-read with the PFX.
        password_file: Option<PathBuf>,
        /// The token endpoint: the `aud` claim of the signed assertion.
        audience: String,
    },
    /// `workload-identity`: a federated Kubernetes service-account token.
    WorkloadIdentity {
        /// Entra tenant id.
        tenant: String,
        /// Client id of the identity the federated credential belongs to.
        client_id: String,
        /// The projected service-account token; it rotates, so it is read at every acquisition.
        token_file: PathBuf,
    },
    /// `managed-identity`: the platform's identity endpoint.
    ManagedIdentity {
        /// A user-assigned identity; `None` for the system-assigned one.
        id: Option<UserAssignedId>,
    },
    /// `azure-cli`: `az account get-access-token`.
    AzureCli {
        /// A tenant other than the CLI's default.
        tenant: Option<String>,
    },
}

/// One Entra credential as a [`TokenSource`]: a fresh `azure_identity` credential per fetch.
pub struct AzureSource {
    /// What to build.
    recipe: Recipe,
    /// The scope asked for (`https://redis.azure.com/.default`).
    scope: String,
    /// Options shared by every credential built: transport, retries, cloud.
    client_options: ClientOptions,
    /// For logs and errors; no secrets.
    description: String,
}

impl fmt::Debug for AzureSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureSource")
            .field("credential", &self.description)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl AzureSource {
    /// Builds the `azure_identity` credential for one acquisition.
    async fn credential(
        &self,
        observer: Option<Arc<LastResponse>>,
    ) -> Result<Arc<dyn TokenCredential>, TokenError> {
        let mut opts = self.client_options.clone();
        if let Some(observer) = observer {
            opts.per_try_policies.push(observer);
        }
        let fail = |e: azure_core::Error| {
            // One line: azure_identity appends its troubleshooting link on a new line.
            let e = e.to_string().replace('\n', " ");
            TokenError::Credential(format!("{}: {e}", self.description))
        };
        Ok(match &self.recipe {
            Recipe::ClientSecret {
                tenant,
                client_id,
                secret,
            } => {
                let secret = match secret {
                    SecretInput::File(path) => read_secret_file(path).await?,
                    SecretInput::Env(s) => s.clone(),
                };
                ClientSecretCredential::new(
                    tenant,
                    client_id.clone(),
                    azure_core::credentials::Secret::new(secret.expose().to_owned()),
                    Some(ClientSecretCredentialOptions {
                        client_options: opts,
                    }),
                )
                .map_err(fail)?
            }
            Recipe::ClientCertificate {
                tenant,
                client_id,
                certificate,
                password_file,
                audience,
            } => {
                let signer = CertificateAssertion::load(
                    certificate,
                    password_file.as_deref(),
                    client_id,
                    audience,
                )
                .await?;
                ClientAssertionCredential::new(
                    tenant.clone(),
                    client_id.clone(),
                    signer,
                    Some(ClientAssertionCredentialOptions {
                        client_options: opts,
                    }),
                )
                .map_err(fail)?
            }
            Recipe::WorkloadIdentity {
                tenant,
                client_id,
                token_file,
            } => WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions {
                    client_options: opts,
                },
                client_id: Some(client_id.clone()),
                tenant_id: Some(tenant.clone()),
                token_file_path: Some(token_file.clone()),
            }))
            .map_err(fail)?,
            Recipe::ManagedIdentity { id } => {
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id: id.clone(),
                    client_options: opts,
                }))
                .map_err(fail)?
            }
            Recipe::AzureCli { tenant } => {
                AzureCliCredential::new(Some(AzureCliCredentialOptions {
                    tenant_id: tenant.clone(),
                    ..Default::default()
                }))
                .map_err(fail)?
            }
        })
    }

    async fn acquire(&self) -> Result<FetchedToken, TokenError> {
        let observer = Arc::new(LastResponse::default());
        let credential = self.credential(Some(observer.clone())).await?;
        let token = credential
            .get_token(&[self.scope.as_str()], None)
            .await
            .map_err(|e| {
                // azure_identity's message can lack the HTTP status (a 500 with a body that
                // is not JSON reads as a JSON error): say what the endpoint answered.
                let seen = match observer.get() {
                    Some((status, url)) => {
                        format!(" (the identity endpoint {url} answered HTTP {status})")
                    }
                    None => String::new(),
                };
                // One line: azure_identity appends its troubleshooting link on a new line.
                let e = e.to_string().replace('\n', " ");
                TokenError::Credential(format!("{}: {e}{seen}", self.description))
            })?;
        let secret = Secret::new(token.token.secret().to_owned());
        let reported = UNIX_EPOCH
            + Duration::from_secs(u64::try_from(token.expires_on.unix_timestamp()).unwrap_or(0));
        // The JWT's own `exp` is what the cache enforces; the library's figure is computed
        // from `expires_in` on receipt. Trust the earlier of the two.
        let expires_at = match jwt::claims(secret.expose()).ok().and_then(|c| c.expires_at) {
            Some(exp) => exp.min(reported),
            None => reported,
        };
        Ok(FetchedToken { secret, expires_at })
    }
}

impl TokenSource for AzureSource {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn fetch(&self) -> BoxFuture<'_, Result<FetchedToken, TokenError>> {
        Box::pin(self.acquire())
    }
}

/// A pipeline policy that remembers the status and URL (without query) of the last response,
/// for error messages.
#[derive(Debug, Default)]
struct LastResponse(Mutex<Option<(u16, String)>>);

impl LastResponse {
    fn get(&self) -> Option<(u16, String)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait::async_trait]
impl Policy for LastResponse {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let mut url = request.url().clone();
        url.set_query(None);
        let response = next[0].send(ctx, request, &next[1..]).await;
        if let Ok(r) = &response {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((u16::from(r.status()), url.to_string()));
        }
        response
    }
}

/// The `default` credential: tries its members in order; the first that answers is kept.
pub struct ChainSource {
    /// Members in order, each with an optional time limit (the IMDS probe).
    members: Vec<(AzureSource, Option<Duration>)>,
    /// Index of the member that answered first; used alone from then on.
    chosen: Mutex<Option<usize>>,
}

impl ChainSource {
    /// Descriptions of the members, in order (for logs and tests).
    pub fn members(&self) -> Vec<String> {
        self.members.iter().map(|(m, _)| m.describe()).collect()
    }

    async fn acquire(&self) -> Result<FetchedToken, TokenError> {
        let chosen = *self.chosen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = chosen {
            return self.members[i].0.acquire().await;
        }
        let mut errors = Vec::new();
        for (i, (member, limit)) in self.members.iter().enumerate() {
            let result = match limit {
                Some(limit) => tokio::time::timeout(*limit, member.acquire())
                    .await
                    .unwrap_or(Err(TokenError::Timeout(*limit))),
                None => member.acquire().await,
            };
            match result {
                Ok(token) => {
                    tracing::info!(
                        credential = %member.describe(),
                        "default credential chain: this credential answered and will be used from now on"
                    );
                    *self.chosen.lock().unwrap_or_else(|e| e.into_inner()) = Some(i);
                    return Ok(token);
                }
                Err(err) => {
                    tracing::debug!(credential = %member.describe(), error = %err, "default credential chain: no token");
                    errors.push(format!("[{}] {err}", member.describe()));
                }
            }
        }
        Err(TokenError::Credential(format!(
            "no credential of the default chain obtained a token: {}",
            errors.join("; ")
        )))
    }
}

impl TokenSource for ChainSource {
    fn describe(&self) -> String {
        let chosen = *self.chosen.lock().unwrap_or_else(|e| e.into_inner());
        match chosen {
            Some(i) => format!("default ({})", self.members[i].0.describe()),
            None => format!("default chain [{}]", self.members().join(", ")),
        }
    }

    fn fetch(&self) -> BoxFuture<'_, Result<FetchedToken, TokenError>> {
        Box::pin(self.acquire())
    }
}

/// Builds the token source for an Entra credential kind (everything but `token-file`).
pub fn build(settings: &Settings) -> Result<Arc<dyn TokenSource>, TokenError> {
    let shared = Shared::new(settings)?;
    let source: Arc<dyn TokenSource> = match settings.credential {
        CredentialKind::ClientSecret => Arc::new(client_secret(settings, &shared)?),
        CredentialKind::ClientCertificate => Arc::new(client_certificate(settings, &shared)?),
        CredentialKind::WorkloadIdentity => Arc::new(workload_identity(settings, &shared)?),
        CredentialKind::ManagedIdentity => Arc::new(managed_identity(settings, &shared)?),
        CredentialKind::AzureCli => Arc::new(azure_cli(settings, &shared)?),
        CredentialKind::Default => Arc::new(default_chain(settings, &shared)?),
        CredentialKind::TokenFile => {
            return Err(TokenError::Credential(
                "token-file is not an Entra credential".into(),
            ))
        }
    };
    tracing::info!(credential = %source.describe(), scope = %settings.scope, "token source ready");
    Ok(source)
}

/// What every credential shares.
struct Shared {
    /// The token scope.
    scope: String,
    /// Transport with `identity_ca_file`, no library retries, the authority host.
    client_options: ClientOptions,
    /// The authority host actually used (for the client assertion's audience).
    authority: String,
}

impl Shared {
    fn new(settings: &Settings) -> Result<Self, TokenError> {
        let scope = settings.scope.trim().to_owned();
        if scope.is_empty() {
            return Err(TokenError::Credential(format!(
                "the token scope is empty: set {}",
                where_from("scope", None)
            )));
        }
        let authority = setting_or_env(&settings.authority_host, env::AUTHORITY_HOST);
        let cloud = match &authority {
            Some(host) => {
                if !host.starts_with("https://") {
                    return Err(TokenError::Credential(format!(
                        "the authority host `{host}` must start with https:// (from {})",
                        where_from("authority_host", Some(env::AUTHORITY_HOST))
                    )));
                }
                let mut custom = CustomConfiguration::default();
                custom.authority_host = host.trim_end_matches('/').to_owned();
                Some(Arc::new(CloudConfiguration::Custom(custom)))
            }
            None => None,
        };
        let client_options = ClientOptions {
            // Our manager owns retries and timeouts; the library's would hide failures for
            // more than a minute.
            retry: RetryOptions::none(),
            transport: Some(transport(settings.identity_ca_file.as_deref())?),
            cloud,
            ..Default::default()
        };
        Ok(Shared {
            scope,
            client_options,
            authority: authority
                .unwrap_or_else(|| PUBLIC_AUTHORITY_HOST.to_owned())
                .trim_end_matches('/')
                .to_owned(),
        })
    }

    fn source(&self, recipe: Recipe, description: String) -> AzureSource {
        AzureSource {
            recipe,
            scope: self.scope.clone(),
            client_options: self.client_options.clone(),
            description,
        }
    }
}

/// The HTTP client for identity endpoints: system roots plus `identity_ca_file`, no redirects.
fn transport(ca_file: Option<&Path>) -> Result<Transport, TokenError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|source| TokenError::Read {
            what: "identity CA file (identity_ca_file, --identity-ca-file)",
            path: path.display().to_string(),
            source,
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            TokenError::Credential(format!(
                "identity CA file {} is not PEM: {e}",
                path.display()
            ))
        })?;
        if certs.is_empty() {
            return Err(TokenError::Credential(format!(
                "identity CA file {} holds no certificate",
                path.display()
            )));
        }
        builder = builder.tls_certs_merge(certs);
    }
    let client = builder.build().map_err(|e| {
        TokenError::Credential(format!("cannot build the HTTP client for Entra ID: {e}"))
    })?;
    Ok(Transport::new(Arc::new(client)))
}

/// Reads a secret file; surrounding whitespace (a trailing newline) is not part of it.
async fn read_secret_file(path: &Path) -> Result<Secret, TokenError> {
    let raw = zeroize::Zeroizing::new(tokio::fs::read_to_string(path).await.map_err(|source| {
        TokenError::Read {
            what: "client secret file (client_secret_file, --client-secret-file)",
            path: path.display().to_string(),
            source,
        }
    })?);
    super::warn_if_readable_by_others(path, "client secret file");
    let secret = raw.trim();
    if secret.is_empty() {
        return Err(TokenError::Credential(format!(
            "the client secret file {} is empty",
            path.display()
        )));
    }
    Ok(Secret::new(secret.to_owned()))
}

/// Checks a recipe at start-up by constructing its credential once (no network).
fn check(source: AzureSource) -> Result<AzureSource, TokenError> {
    // A thread with its own small runtime: build_source may run inside the server's
    // runtime, where blocking on (or dropping) another runtime is forbidden.
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .map_err(|e| TokenError::Credential(format!("cannot check the credential: {e}")))?;
            rt.block_on(source.credential(None)).map(drop)
        })
        .join()
        .unwrap_or_else(|_| {
            Err(TokenError::Credential(
                "checking the credential panicked".into(),
            ))
        })
    })?;
    Ok(source)
}

/// Tenant and client id for a service principal kind, from settings or environment.
fn tenant_and_client(settings: &Settings, kind: &str) -> Result<(String, String), TokenError> {
    let tenant = setting_or_env(&settings.tenant_id, env::TENANT_ID)
        .ok_or_else(|| missing(kind, "a tenant id", "tenant_id", Some(env::TENANT_ID)))?;
    let client = setting_or_env(&settings.client_id, env::CLIENT_ID).ok_or_else(|| {
        missing(
            kind,
            "an application (client) id",
            "client_id",
            Some(env::CLIENT_ID),
        )
    })?;
    Ok((tenant, client))
}

fn client_secret(settings: &Settings, shared: &Shared) -> Result<AzureSource, TokenError> {
    let kind = "client-secret";
    let (tenant, client_id) = tenant_and_client(settings, kind)?;
    let secret = match (&settings.client_secret_file, env_var(env::CLIENT_SECRET)) {
        (Some(path), _) => SecretInput::File(path.clone()),
        (None, Some(value)) => SecretInput::Env(Secret::new(value)),
        (None, None) => {
            return Err(TokenError::Credential(format!(
                "credential `{kind}` needs a client secret: set {} (a file holding the secret; never the secret itself on a command line), or the environment variable {}",
                where_from("client_secret_file", None),
                env::CLIENT_SECRET
            )))
        }
    };
    let origin = match &secret {
        SecretInput::File(p) => format!("secret file {}", p.display()),
        SecretInput::Env(_) => format!("secret from {}", env::CLIENT_SECRET),
    };
    let description = format!("client-secret (tenant {tenant}, client {client_id}, {origin})");
    check(shared.source(
        Recipe::ClientSecret {
            tenant,
            client_id,
            secret,
        },
        description,
    ))
}

fn client_certificate(settings: &Settings, shared: &Shared) -> Result<AzureSource, TokenError> {
    let kind = "client-certificate";
    let (tenant, client_id) = tenant_and_client(settings, kind)?;
    let certificate = settings
        .certificate_file
        .clone()
        .or_else(|| env_var(env::CLIENT_CERTIFICATE_PATH).map(PathBuf::from))
        .ok_or_else(|| {
            missing(
                kind,
                "a certificate (PEM holding the certificate and its private key, or a PFX/PKCS#12 file)",
                "certificate_file",
                Some(env::CLIENT_CERTIFICATE_PATH),
            )
        })?;
    let password_file = settings.certificate_password_file.clone();
    let audience = format!("{}/{tenant}/oauth2/v2.0/token", shared.authority);
    let description = format!(
        "client-certificate (tenant {tenant}, client {client_id}, certificate {}{})",
        certificate.display(),
        password_file
            .as_ref()
            .map(|p| format!(", password file {}", p.display()))
            .unwrap_or_default()
    );
    check(shared.source(
        Recipe::ClientCertificate {
            tenant,
            client_id,
            certificate,
            password_file,
            audience,
        },
        description,
    ))
}

fn workload_identity(settings: &Settings, shared: &Shared) -> Result<AzureSource, TokenError> {
    let kind = "workload-identity";
    let (tenant, client_id) = tenant_and_client(settings, kind)?;
    let token_file = env_var(env::FEDERATED_TOKEN_FILE)
        .map(PathBuf::from)
        .ok_or_else(|| {
            TokenError::Credential(format!(
                "credential `{kind}` needs the environment variable {} (the projected service-account token; AKS sets it when the pod uses workload identity)",
                env::FEDERATED_TOKEN_FILE
            ))
        })?;
    let description = format!(
        "workload-identity (tenant {tenant}, client {client_id}, federated token file {})",
        token_file.display()
    );
    check(shared.source(
        Recipe::WorkloadIdentity {
            tenant,
            client_id,
            token_file,
        },
        description,
    ))
}

/// The user-assigned identity the settings name, if any (at most one of the three).
fn user_assigned_id(settings: &Settings) -> Result<Option<UserAssignedId>, TokenError> {
    let given: Vec<UserAssignedId> = [
        settings.client_id.clone().map(UserAssignedId::ClientId),
        settings.object_id.clone().map(UserAssignedId::ObjectId),
        settings.resource_id.clone().map(UserAssignedId::ResourceId),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() > 1 {
        return Err(TokenError::Credential(
            "credential `managed-identity`: set only one of client_id (--client-id), object_id (--object-id), resource_id (--resource-id) to choose a user-assigned identity".into(),
        ));
    }
    Ok(given.into_iter().next())
}

fn describe_managed(id: &Option<UserAssignedId>) -> String {
    let endpoint = if env_var(env::IDENTITY_ENDPOINT).is_some() {
        "App Service endpoint"
    } else {
        "IMDS"
    };
    match id {
        None => format!("managed-identity (system-assigned, {endpoint})"),
        Some(UserAssignedId::ClientId(c)) => {
            format!("managed-identity (client id {c}, {endpoint})")
        }
        Some(UserAssignedId::ObjectId(o)) => {
            format!("managed-identity (object id {o}, {endpoint})")
        }
        Some(UserAssignedId::ResourceId(r)) => {
            format!("managed-identity (resource id {r}, {endpoint})")
        }
        Some(_) => format!("managed-identity (user-assigned, {endpoint})"),
    }
}

fn managed_identity(settings: &Settings, shared: &Shared) -> Result<AzureSource, TokenError> {
    let id = user_assigned_id(settings)?;
    let description = describe_managed(&id);
    check(shared.source(Recipe::ManagedIdentity { id }, description))
}

fn azure_cli(settings: &Settings, shared: &Shared) -> Result<AzureSource, TokenError> {
    let tenant = settings.tenant_id.clone();
    let description = match &tenant {
        Some(t) => format!("azure-cli (tenant {t})"),
        None => "azure-cli".to_owned(),
    };
    check(shared.source(Recipe::AzureCli { tenant }, description))
}

fn default_chain(settings: &Settings, shared: &Shared) -> Result<ChainSource, TokenError> {
    let mut members = Vec::new();
    let tenant = setting_or_env(&settings.tenant_id, env::TENANT_ID);
    let client = setting_or_env(&settings.client_id, env::CLIENT_ID);
    // 1. Environment service principal: tenant + client + (secret or certificate).
    let has_secret = settings.client_secret_file.is_some() || env_var(env::CLIENT_SECRET).is_some();
    let has_cert =
        settings.certificate_file.is_some() || env_var(env::CLIENT_CERTIFICATE_PATH).is_some();
    if tenant.is_some() && client.is_some() && (has_secret || has_cert) {
        let member = if has_secret {
            client_secret(settings, shared)?
        } else {
            client_certificate(settings, shared)?
        };
        members.push((member, None));
    }
    // 2. Workload identity, when its environment is present.
    if env_var(env::FEDERATED_TOKEN_FILE).is_some() {
        if tenant.is_some() && client.is_some() {
            members.push((workload_identity(settings, shared)?, None));
        } else {
            tracing::warn!(
                "default credential chain: {} is set but {} or {} is not; skipping workload identity",
                env::FEDERATED_TOKEN_FILE,
                env::TENANT_ID,
                env::CLIENT_ID
            );
        }
    }
    // 3. Managed identity: a user-assigned one by the settings, else AZURE_CLIENT_ID (the
    //    Azure SDK convention), else system-assigned.
    let mut id = user_assigned_id(settings)?;
    if id.is_none() {
        id = env_var(env::CLIENT_ID).map(UserAssignedId::ClientId);
    }
    let probe = if env_var(env::IDENTITY_ENDPOINT).is_some() {
        None
    } else {
        Some(IMDS_PROBE_TIMEOUT)
    };
    let description = describe_managed(&id);
    members.push((
        check(shared.source(Recipe::ManagedIdentity { id }, description))?,
        probe,
    ));
    // 4. Azure CLI.
    members.push((azure_cli(settings, shared)?, None));
    Ok(ChainSource {
        members,
        chosen: Mutex::new(None),
    })
}

/// Signs the client assertion for `client-certificate` (RS256 with the certificate's RSA
/// key), the way Entra expects: `x5t`/`x5t#S256` thumbprints in the header, `aud` the token
/// endpoint, `iss` = `sub` = the client id.
struct CertificateAssertion {
    /// The RSA key; never printed.
    key: aws_lc_rs::signature::RsaKeyPair,
    /// The JWT header, already base64url-encoded.
    header: String,
    /// The client id (`iss` and `sub`).
    client_id: String,
    /// The token endpoint (`aud`).
    audience: String,
}

impl fmt::Debug for CertificateAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAssertion")
            .field("client_id", &self.client_id)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// The DER object identifier of an RSA public key (`rsaEncryption`).
const RSA_ENCRYPTION_OID: &str = "1.2.840.113549.1.1.1";

/// The fix named in every error about the PFX password.
const PASSWORD_FIX: &str = "check certificate_password_file (--certificate-password-file, ENTRA_REDIS_PROXY_CERTIFICATE_PASSWORD_FILE)";

/// Whether the certificate file is PEM (text with `-----BEGIN ` armour).
fn is_pem(data: &[u8]) -> bool {
    data.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Whether a non-PEM certificate file should be read as PFX/PKCS#12: its content is a DER
/// SEQUENCE, or its name ends in `.pfx`/`.p12`.
fn is_pfx(path: &Path, data: &[u8]) -> bool {
    let by_name = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("pfx") || e.eq_ignore_ascii_case("p12"));
    by_name || data.first() == Some(&0x30)
}

/// Reads the PFX password: the password file without its trailing newline; no file set means
/// the empty password (an unprotected PFX).
async fn read_pfx_password(
    password_file: Option<&Path>,
) -> Result<zeroize::Zeroizing<String>, TokenError> {
    let Some(path) = password_file else {
        return Ok(zeroize::Zeroizing::new(String::new()));
    };
    let mut raw = zeroize::Zeroizing::new(tokio::fs::read_to_string(path).await.map_err(
        |source| TokenError::Read {
            what: "certificate password file (certificate_password_file, --certificate-password-file)",
            path: path.display().to_string(),
            source,
        },
    )?);
    super::warn_if_readable_by_others(path, "certificate password file");
    // Only the line ending goes: spaces may be part of a password. Truncating in place keeps
    // the password in the one zeroized buffer.
    let len = raw.trim_end_matches(['\r', '\n']).len();
    raw.truncate(len);
    Ok(raw)
}

/// The RSA key and the leaf certificate (DER) of a PEM certificate file.
fn key_and_certificate_from_pem(
    pem: &[u8],
    bad: &dyn Fn(&str) -> TokenError,
) -> Result<(aws_lc_rs::signature::RsaKeyPair, Vec<u8>), TokenError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    if pem.windows(19).any(|w| w == b"ENCRYPTED PRIVATE K") {
        return Err(bad(
            "the private key is encrypted; store it unencrypted in a file only the proxy can read, or use a PFX file with certificate_password_file",
        ));
    }
    let cert = CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or_else(|| bad("no CERTIFICATE block"))?
        .map_err(|_| bad("the CERTIFICATE block is not valid PEM"))?;
    let key = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|_| bad("no private key block (PEM must hold the certificate and its key)"))?;
    let key = match &key {
        PrivateKeyDer::Pkcs8(k) => {
            aws_lc_rs::signature::RsaKeyPair::from_pkcs8(k.secret_pkcs8_der())
        }
        PrivateKeyDer::Pkcs1(k) => aws_lc_rs::signature::RsaKeyPair::from_der(k.secret_pkcs1_der()),
        _ => {
            return Err(bad(
                "the private key must be RSA (Entra signs assertions with RS256)",
            ))
        }
    }
    .map_err(|_| bad("the private key is not a usable RSA key"))?;
    Ok((key, cert.to_vec()))
}

/// The RSA key and the leaf certificate (DER) of a PFX/PKCS#12 file opened with `password`.
/// Errors never carry the password or key material.
fn key_and_certificate_from_pfx(
    data: &[u8],
    password: &str,
    password_file: Option<&Path>,
    bad: &dyn Fn(&str) -> TokenError,
) -> Result<(aws_lc_rs::signature::RsaKeyPair, Vec<u8>), TokenError> {
    use p12_keystore::{error::Error as P12Error, KeyStore, Pkcs12ImportPolicy};
    let tried = match password_file {
        Some(p) => format!("the password in {}", p.display()),
        None => "the empty password (no certificate_password_file is set)".to_owned(),
    };
    let store = KeyStore::from_pkcs12(data, password, Pkcs12ImportPolicy::Strict).map_err(
        |e| match e {
            P12Error::MacError(_) | P12Error::UnpadError | P12Error::Pkcs5Error(_) => bad(&format!(
                "cannot open the PFX: {tried} does not open it; {PASSWORD_FIX}"
            )),
            P12Error::UnsupportedEncryptionScheme | P12Error::UnsupportedMacAlgorithm => {
                bad(&format!(
                    "cannot open the PFX: it is protected with an unsupported algorithm ({e}); re-export it with `openssl pkcs12 -export` (AES-256, SHA-256)"
                ))
            }
            e => bad(&format!(
                "cannot open the PFX ({e}): not a valid PFX/PKCS#12 file, or {tried} does not open it; {PASSWORD_FIX}; `openssl pkcs12 -info -noout -in FILE` shows whether the file and password are right"
            )),
        },
    )?;
    let (_, chain) = store.private_key_chain().ok_or_else(|| {
        bad("the PFX holds no private key with its certificate; export it with the key (`openssl pkcs12 -export -inkey KEY -in CERT`)")
    })?;
    let cert = chain
        .certs()
        .first()
        .ok_or_else(|| bad("the PFX holds no certificate for its private key"))?;
    let key = chain.key();
    let key = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(key.as_der()).map_err(|_| {
        if key.oid().to_string() == RSA_ENCRYPTION_OID {
            bad("the private key in the PFX is not a usable RSA key")
        } else {
            bad(&format!(
                "the private key in the PFX is not RSA (algorithm {}); only RSA keys are supported (Entra signs assertions with RS256)",
                key.oid()
            ))
        }
    })?;
    Ok((key, cert.as_der().to_vec()))
}

impl CertificateAssertion {
    /// Reads the certificate file: PEM holding the certificate (first) and its RSA private key,
    /// or a PFX/PKCS#12 file opened with the password in `password_file`.
    async fn load(
        path: &Path,
        password_file: Option<&Path>,
        client_id: &str,
        audience: &str,
    ) -> Result<Self, TokenError> {
        let data = zeroize::Zeroizing::new(tokio::fs::read(path).await.map_err(|source| {
            TokenError::Read {
                what: "certificate file (certificate_file, --certificate-file)",
                path: path.display().to_string(),
                source,
            }
        })?);
        let bad = |why: &str| {
            TokenError::Credential(format!("certificate file {}: {why}", path.display()))
        };
        let (key, cert) = if is_pem(&data) {
            key_and_certificate_from_pem(&data, &bad)?
        } else if is_pfx(path, &data) {
            let password = read_pfx_password(password_file).await?;
            key_and_certificate_from_pfx(&data, &password, password_file, &bad)?
        } else {
            return Err(bad(
                "neither PEM (certificate and private key) nor PFX/PKCS#12",
            ));
        };
        let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert);
        let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &cert);
        let header = serde_json::json!({
            "alg": "RS256",
            "typ": "JWT",
            "x5t": URL_SAFE_NO_PAD.encode(sha1.as_ref()),
            "x5t#S256": URL_SAFE_NO_PAD.encode(sha256.as_ref()),
        });
        Ok(CertificateAssertion {
            key,
            header: URL_SAFE_NO_PAD.encode(header.to_string()),
            client_id: client_id.to_owned(),
            audience: audience.to_owned(),
        })
    }

    /// A newly signed assertion.
    fn sign(&self) -> Result<String, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = serde_json::json!({
            "aud": self.audience,
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": random_id(),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME.as_secs(),
        });
        let signing_input = format!(
            "{}.{}",
            self.header,
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| TokenError::Credential("signing the client assertion failed".into()))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(&signature)
        ))
    }
}

#[async_trait::async_trait]
impl ClientAssertion for CertificateAssertion {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        self.sign().map_err(|e| {
            azure_core::Error::with_message(azure_core::error::ErrorKind::Credential, e.to_string())
        })
    }
}

/// A random GUID-shaped identifier (for `jti`).
fn random_id() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff | 0x4000,
        u16::from_be_bytes([b[8], b[9]]) & 0x3fff | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_from_names_flag_key_and_env() {
        let s = where_from("tenant_id", Some("AZURE_TENANT_ID"));
        assert!(s.contains("--tenant-id"), "{s}");
        assert!(s.contains("`tenant_id`"), "{s}");
        assert!(s.contains("ENTRA_REDIS_PROXY_TENANT_ID"), "{s}");
        assert!(s.contains("AZURE_TENANT_ID"), "{s}");
    }

    #[test]
    fn random_ids_differ_and_look_like_guids() {
        let (a, b) = (random_id(), random_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }

    #[tokio::test]
    async fn certificate_assertion_is_a_valid_rs256_jwt() {
        use aws_lc_rs::signature::{KeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sp.pem");
        std::fs::write(&path, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
        let aud = "https://login.example/t/oauth2/v2.0/token";
        let signer = CertificateAssertion::load(&path, None, "app", aud)
            .await
            .unwrap();
        let jwt = signer.sign().unwrap();
        let (signed, sig) = jwt.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        UnparsedPublicKey::new(
            &RSA_PKCS1_2048_8192_SHA256,
            signer.key.public_key().as_ref(),
        )
        .verify(signed.as_bytes(), &sig)
        .expect("the signature verifies with the certificate's key");
        let claims: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(signed.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["aud"], aud);
        assert_eq!(claims["iss"], "app");
        assert_eq!(claims["sub"], "app");
        assert!(claims["exp"].as_u64().unwrap() > claims["nbf"].as_u64().unwrap());
        // Debug shows no key material.
        let debug = format!("{signer:?}");
        assert!(debug.contains("app") && !debug.contains("key"), "{debug}");
        // Each assertion is new (jti).
        assert_ne!(signer.sign().unwrap(), jwt);
    }

    #[test]
    fn managed_identity_accepts_one_user_assigned_id_only() {
        let s = Settings {
            client_id: Some("c".into()),
            object_id: Some("o".into()),
            ..Default::default()
        };
        let err = user_assigned_id(&s).unwrap_err().to_string();
        assert!(err.contains("only one"), "{err}");
    }
}

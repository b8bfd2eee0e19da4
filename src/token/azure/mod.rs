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
//!
//! Layout: this file holds the token sources ([`AzureSource`], [`ChainSource`]) and what one
//! acquisition does; `builders` turns the settings into them at start-up ([`build`]);
//! `certificate` signs the client assertion of `client-certificate`, reading PFX files with
//! `pfx`; `proxy` is the outbound HTTPS proxy of the token endpoint.

mod builders;
mod certificate;
mod pfx;
mod proxy;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use azure_core::credentials::TokenCredential;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{ClientOptions, Context, Request};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientAssertionCredential,
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};

use super::{jwt, BoxFuture, FetchedToken, Secret, TokenError, TokenSource};
use certificate::CertificateAssertion;

pub use builders::build;

/// The public cloud's authority host, used when neither `authority_host` nor
/// `AZURE_AUTHORITY_HOST` is set.
pub const PUBLIC_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";

/// Environment variables of the Azure SDK conventions that this module reads.
pub use super::env;

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
    /// `scheme://host:port (VARIABLE)` of the outbound proxy the token endpoint is reached
    /// through, for errors; no credentials.
    proxied_by: Option<String>,
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
            TokenError::Provider(format!("{}: {e}", self.description))
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
                let seen = match (observer.get(), &self.proxied_by) {
                    (Some((status, url)), _) => {
                        format!(" (the identity endpoint {url} answered HTTP {status})")
                    }
                    // No HTTP answer: the proxy may have refused the tunnel or be down.
                    (None, Some(proxy)) => format!(
                        " (no answer through the outbound proxy {proxy}: check that the proxy is up and allows CONNECT to the authority host, or exempt the host with NO_PROXY)"
                    ),
                    (None, None) => String::new(),
                };
                // One line: azure_identity appends its troubleshooting link on a new line.
                let e = e.to_string().replace('\n', " ");
                TokenError::Provider(format!("{}: {e}{seen}", self.description))
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
        Err(TokenError::Provider(format!(
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
        return Err(TokenError::Provider(format!(
            "the client secret file {} is empty",
            path.display()
        )));
    }
    Ok(Secret::new(secret.to_owned()))
}

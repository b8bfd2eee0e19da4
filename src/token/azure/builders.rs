//! Start-up: the settings (and the standard Azure environment variables) turned into a token
//! source, every input resolved and checked once so that misconfiguration names what is
//! missing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_identity::UserAssignedId;

use super::proxy::OutboundProxy;
use super::{env, AzureSource, ChainSource, Recipe, SecretInput, PUBLIC_AUTHORITY_HOST};
use crate::config::{CredentialKind, Settings};
use crate::token::{CredentialError, Secret, TokenSource};

/// How long the `default` chain waits for the Azure Instance Metadata Service before moving
/// on: off Azure the address usually just drops packets.
const IMDS_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Connection timeout of the HTTP client used for identity endpoints. The manager's
/// `token_timeout` bounds the whole acquisition; this only makes an unreachable host fail
/// with a clear "connect" error rather than a bare timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
fn missing(kind: &str, what: &str, key: &str, azure_env: Option<&str>) -> CredentialError {
    CredentialError::Misconfigured(format!(
        "credential `{kind}` needs {what}: set {}",
        where_from(key, azure_env)
    ))
}

/// Builds the token source for an Entra credential kind (everything but `token-file`).
pub fn build(settings: &Settings) -> Result<Arc<dyn TokenSource>, CredentialError> {
    let shared = Shared::new(settings)?;
    let source: Arc<dyn TokenSource> = match settings.credential {
        CredentialKind::ClientSecret => Arc::new(client_secret(settings, &shared)?),
        CredentialKind::ClientCertificate => Arc::new(client_certificate(settings, &shared)?),
        CredentialKind::WorkloadIdentity => Arc::new(workload_identity(settings, &shared)?),
        CredentialKind::ManagedIdentity => Arc::new(managed_identity(settings, &shared)?),
        CredentialKind::AzureCli => Arc::new(azure_cli(settings, &shared)?),
        CredentialKind::Default => Arc::new(default_chain(settings, &shared)?),
        CredentialKind::TokenFile => {
            return Err(CredentialError::Misconfigured(
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
    /// Transport with `identity_ca_file` (through the outbound proxy, if any), no library
    /// retries, the authority host.
    client_options: ClientOptions,
    /// The same without any proxy: for the managed identity endpoint, never proxied.
    direct_options: ClientOptions,
    /// `scheme://host:port (VARIABLE)` of the outbound proxy when the authority host goes
    /// through it; no credentials.
    proxied_by: Option<String>,
    /// The authority host actually used (for the client assertion's audience).
    authority: String,
}

impl Shared {
    fn new(settings: &Settings) -> Result<Self, CredentialError> {
        let scope = settings.scope.trim().to_owned();
        if scope.is_empty() {
            return Err(CredentialError::Misconfigured(format!(
                "the token scope is empty: set {}",
                where_from("scope", None)
            )));
        }
        let authority = setting_or_env(&settings.authority_host, env::AUTHORITY_HOST);
        let cloud = match &authority {
            Some(host) => {
                if !host.starts_with("https://") {
                    return Err(CredentialError::Misconfigured(format!(
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
        let authority = authority
            .unwrap_or_else(|| PUBLIC_AUTHORITY_HOST.to_owned())
            .trim_end_matches('/')
            .to_owned();
        let proxy = OutboundProxy::from_env()?;
        let proxied_by = proxy
            .as_ref()
            .filter(|p| p.applies_to(&authority))
            .map(|p| format!("{} ({})", p.shown(), p.from()));
        log_proxy_once(proxy.as_ref(), &authority);
        let options = |proxy: Option<&OutboundProxy>| -> Result<ClientOptions, CredentialError> {
            Ok(ClientOptions {
                // Our manager owns retries and timeouts; the library's would hide failures
                // for more than a minute.
                retry: RetryOptions::none(),
                transport: Some(transport(settings.identity_ca_file.as_deref(), proxy)?),
                cloud: cloud.clone(),
                ..Default::default()
            })
        };
        Ok(Shared {
            scope,
            client_options: options(proxy.as_ref())?,
            direct_options: options(None)?,
            proxied_by,
            authority,
        })
    }

    fn source(&self, recipe: Recipe, description: String) -> AzureSource {
        // The managed identity endpoint is on the host or link-local: never proxied. The
        // Azure CLI is a process of its own that reads the proxy variables itself.
        let (client_options, proxied_by) = match recipe {
            Recipe::ManagedIdentity { .. } => (self.direct_options.clone(), None),
            Recipe::AzureCli { .. } => (self.direct_options.clone(), None),
            _ => (self.client_options.clone(), self.proxied_by.clone()),
        };
        let description = match &proxied_by {
            Some(p) => match description.strip_suffix(')') {
                Some(open) => format!("{open}, through the proxy {p})"),
                None => format!("{description} (through the proxy {p})"),
            },
            None => description,
        };
        AzureSource {
            recipe,
            scope: self.scope.clone(),
            client_options,
            proxied_by,
            description,
        }
    }
}

/// Logs, once per process, which outbound proxy identity endpoints use (host and port only:
/// the URL's credentials are a secret).
fn log_proxy_once(proxy: Option<&OutboundProxy>, authority: &str) {
    static LOGGED: std::sync::Once = std::sync::Once::new();
    let Some(proxy) = proxy else { return };
    LOGGED.call_once(|| {
        tracing::info!(
            proxy = %proxy.host_port(),
            from = proxy.from(),
            no_proxy = proxy.no_proxy(),
            authority_proxied = proxy.applies_to(authority),
            "identity endpoints are reached through an outbound HTTPS proxy (never the managed identity endpoint)"
        );
    });
}

/// The HTTP client for identity endpoints: system roots plus `identity_ca_file`, no
/// redirects, and `proxy` for HTTPS targets or no proxy at all (the environment is read once,
/// by [`OutboundProxy`], not by the client).
fn transport(
    ca_file: Option<&Path>,
    proxy: Option<&OutboundProxy>,
) -> Result<Transport, CredentialError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    builder = match proxy {
        Some(p) => builder.proxy(p.reqwest_proxy()?),
        None => builder.no_proxy(),
    };
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|source| CredentialError::Read {
            what: "identity CA file (identity_ca_file, --identity-ca-file)",
            path: path.display().to_string(),
            source,
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            CredentialError::Misconfigured(format!(
                "identity CA file {} is not PEM: {e}",
                path.display()
            ))
        })?;
        if certs.is_empty() {
            return Err(CredentialError::Misconfigured(format!(
                "identity CA file {} holds no certificate",
                path.display()
            )));
        }
        builder = builder.tls_certs_merge(certs);
    }
    let client = builder.build().map_err(|e| {
        CredentialError::Misconfigured(format!("cannot build the HTTP client for Entra ID: {e}"))
    })?;
    Ok(Transport::new(Arc::new(client)))
}

/// Checks a recipe at start-up by constructing its credential once (no network).
fn check(source: AzureSource) -> Result<AzureSource, CredentialError> {
    // A thread with its own small runtime: build_source may run inside the server's
    // runtime, where blocking on (or dropping) another runtime is forbidden.
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .map_err(|e| {
                    CredentialError::Misconfigured(format!("cannot check the credential: {e}"))
                })?;
            rt.block_on(source.credential(None))
                .map(drop)
                .map_err(CredentialError::Unusable)
        })
        .join()
        .unwrap_or_else(|_| {
            Err(CredentialError::Misconfigured(
                "checking the credential panicked".into(),
            ))
        })
    })?;
    Ok(source)
}

/// Tenant and client id for a service principal kind, from settings or environment.
fn tenant_and_client(settings: &Settings, kind: &str) -> Result<(String, String), CredentialError> {
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

fn client_secret(settings: &Settings, shared: &Shared) -> Result<AzureSource, CredentialError> {
    let kind = "client-secret";
    let (tenant, client_id) = tenant_and_client(settings, kind)?;
    let secret = match (&settings.client_secret_file, env_var(env::CLIENT_SECRET)) {
        (Some(path), _) => SecretInput::File(path.clone()),
        (None, Some(value)) => SecretInput::Env(Secret::new(value)),
        (None, None) => {
            return Err(CredentialError::Misconfigured(format!(
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

fn client_certificate(
    settings: &Settings,
    shared: &Shared,
) -> Result<AzureSource, CredentialError> {
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

fn workload_identity(settings: &Settings, shared: &Shared) -> Result<AzureSource, CredentialError> {
    let kind = "workload-identity";
    let (tenant, client_id) = tenant_and_client(settings, kind)?;
    let token_file = env_var(env::FEDERATED_TOKEN_FILE)
        .map(PathBuf::from)
        .ok_or_else(|| {
            CredentialError::Misconfigured(format!(
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
fn user_assigned_id(settings: &Settings) -> Result<Option<UserAssignedId>, CredentialError> {
    let given: Vec<UserAssignedId> = [
        settings.client_id.clone().map(UserAssignedId::ClientId),
        settings.object_id.clone().map(UserAssignedId::ObjectId),
        settings.resource_id.clone().map(UserAssignedId::ResourceId),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() > 1 {
        return Err(CredentialError::Misconfigured(
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

fn managed_identity(settings: &Settings, shared: &Shared) -> Result<AzureSource, CredentialError> {
    let id = user_assigned_id(settings)?;
    let description = describe_managed(&id);
    check(shared.source(Recipe::ManagedIdentity { id }, description))
}

fn azure_cli(settings: &Settings, shared: &Shared) -> Result<AzureSource, CredentialError> {
    let tenant = settings.tenant_id.clone();
    let description = match &tenant {
        Some(t) => format!("azure-cli (tenant {t})"),
        None => "azure-cli".to_owned(),
    };
    check(shared.source(Recipe::AzureCli { tenant }, description))
}

fn default_chain(settings: &Settings, shared: &Shared) -> Result<ChainSource, CredentialError> {
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

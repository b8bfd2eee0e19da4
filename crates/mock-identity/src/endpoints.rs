//! The token endpoints, in the real services' wire formats: OAuth2 v2.0 client credentials
//! (`POST /{tenant}/oauth2/v2.0/token`), the App Service managed identity (`GET /msi/token`)
//! and the Azure CLI stand-in (`GET /cli/token`); and the failures injected into them.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::http::{parse_form, HttpRequest, HttpResponse};
use super::issue::{now_secs, random_guid};
use super::state::{FailMode, Mock};

impl Mock {
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

    /// OAuth2 v2.0 client credentials, with a client secret or a client assertion.
    pub(super) async fn oauth_token(
        &self,
        tenant: &str,
        req: &HttpRequest,
    ) -> Option<HttpResponse> {
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

    /// The App Service managed-identity endpoint (`IDENTITY_ENDPOINT`, `X-IDENTITY-HEADER`).
    pub(super) async fn msi_token(&self, req: &HttpRequest) -> Option<HttpResponse> {
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

    /// What the `az` stand-in asks for `az account get-access-token`.
    pub(super) async fn cli_token(&self, req: &HttpRequest) -> Option<HttpResponse> {
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

/// An Entra error body: `error`, `AADSTS{code}: description`, and fresh ids.
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

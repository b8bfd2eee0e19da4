//! The identity steps: a token from the configured credential (`token`) and what its claims
//! say (`claims`): audience, object id, expiry, clock skew.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Map, Value};

use super::context::{Planned, Run};
use super::report::{human, local_time, unix, workload_identity_remedy, Verdict};
use crate::config::{CredentialKind, Settings};
use crate::token::{self, AccessToken};

/// The audience Azure Cache for Redis accepts tokens for.
pub const REDIS_AUDIENCE: &str = "https://redis.azure.com";

/// A token issued more than this far in the future (`iat`, `nbf`) means the clocks disagree.
const CLOCK_SKEW_TOLERANCE: Duration = Duration::from_secs(60);

/// Obtains a token and decodes its claims. `None` when no usable token.
pub(super) async fn check_token(
    run: &mut Run,
    p: &Planned,
    offset: time::UtcOffset,
) -> Option<AccessToken> {
    let s = &p.plan.settings;
    let started = Instant::now();
    let fetched = match tokio::time::timeout(s.token_timeout, p.source.fetch()).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            let (describe, e) = (p.source.describe(), e.to_string());
            let detail = if e.starts_with(&describe) {
                e
            } else {
                format!("{describe}: {e}")
            };
            let remedy = token_remedy(s, &detail);
            run.push("token", Verdict::Fail, started, detail, remedy, Map::new());
            return None;
        }
        Err(_) => {
            run.push(
                "token",
                Verdict::Fail,
                started,
                format!("{}: no answer within {:?} (token_timeout)", p.source.describe(), s.token_timeout),
                Some("the identity endpoint does not answer: check network access to it (IMDS 169.254.169.254 on a VM, the authority host otherwise)".into()),
                Map::new(),
            );
            return None;
        }
    };
    run.push(
        "token",
        Verdict::Ok,
        started,
        format!("obtained from {}", p.source.describe()),
        None,
        Map::from_iter([("credential".to_owned(), json!(p.source.describe()))]),
    );

    let started = Instant::now();
    let secret = fetched.secret.expose();
    let claims = payload(secret).unwrap_or_default();
    let now = SystemTime::now();
    let num = |k: &str| claims.get(k).and_then(Value::as_f64);
    let text = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_owned);
    let username = s.username.clone().or_else(|| text("oid"));
    let mut facts = Map::new();
    for k in [
        "oid", "tid", "aud", "appid", "azp", "idtyp", "iat", "nbf", "exp",
    ] {
        if let Some(v) = claims.get(k) {
            facts.insert(k.into(), v.clone());
        }
    }
    let exp = fetched.expires_at;
    let expires_in = exp
        .duration_since(now)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_else(|e| -(e.duration().as_secs() as i64));
    facts.insert("exp_local".into(), json!(local_time(exp, offset)));
    facts.insert("expires_in_seconds".into(), json!(expires_in));
    facts.insert("auth_username".into(), json!(username));
    let mut detail = String::new();
    for k in ["oid", "tid", "aud", "appid", "azp", "idtyp"] {
        if let Some(v) = text(k) {
            let _ = write!(detail, "{k}={v} ");
        }
    }
    if let Some(iat) = num("iat") {
        let _ = write!(detail, "iat={} ", local_time(unix(iat), offset));
    }
    let _ = write!(
        detail,
        "exp={} (expires in {}); AUTH username {}",
        local_time(exp, offset),
        human(expires_in),
        username.as_deref().unwrap_or("(none)")
    );
    let Some(username) = username else {
        run.push(
            "claims",
            Verdict::Fail,
            started,
            detail,
            Some("the token has no `oid` claim: set `username` (--username) to the identity's object id".into()),
            facts,
        );
        return None;
    };
    if expires_in <= 0 {
        let remedy = if s.credential == CredentialKind::TokenFile {
            format!(
                "the token in {} has expired: the agent that writes this file stopped; check it (and its logs)",
                s.token_file.as_deref().map(|p| p.display().to_string()).unwrap_or_default()
            )
        } else {
            "the identity endpoint returned an expired token: check this machine's clock (NTP)"
                .into()
        };
        run.push(
            "claims",
            Verdict::Fail,
            started,
            format!("expired: {detail}"),
            Some(remedy),
            facts,
        );
        return None;
    }
    let mut warnings = Vec::new();
    match text("aud") {
        Some(aud) if aud.trim_end_matches('/') == REDIS_AUDIENCE => {}
        Some(aud) => warnings.push(format!(
            "audience `{aud}` is not {REDIS_AUDIENCE}: the cache refuses such a token; set scope to {REDIS_AUDIENCE}/.default"
        )),
        None => warnings.push(format!("the token has no `aud` claim; the cache expects {REDIS_AUDIENCE}")),
    }
    let future = ["nbf", "iat"].iter().find_map(|k| {
        let t = unix(num(k)?);
        let ahead = t.duration_since(now).ok()?;
        (ahead > CLOCK_SKEW_TOLERANCE).then_some((*k, ahead))
    });
    if let Some((k, ahead)) = future {
        warnings.push(format!(
            "the token's `{k}` is {}s in the future: this machine's clock is behind the issuer's; sync it (NTP){}",
            ahead.as_secs(),
            if k == "nbf" { " — the cache refuses the token until then" } else { "" }
        ));
    }
    let (verdict, remedy) = if warnings.is_empty() {
        (Verdict::Ok, None)
    } else {
        (Verdict::Warn, Some(warnings.join("; ")))
    };
    run.push("claims", verdict, started, detail, remedy, facts);
    Some(AccessToken::new(
        fetched.secret.clone(),
        username,
        exp,
        now,
        1,
    ))
}

/// The remedy for a failed token acquisition, from what the error says.
fn token_remedy(s: &Settings, error: &str) -> Option<String> {
    let lower = error.to_ascii_lowercase();
    if lower.contains("identity not found") || lower.contains("has not been assigned") {
        let which = s
            .client_id
            .as_deref()
            .or(s.object_id.as_deref())
            .or(s.resource_id.as_deref())
            .unwrap_or("(system-assigned)");
        return Some(format!(
            "the managed identity {which} is not assigned to this VM / pod: assign it (VM or scale set: Identity > User assigned; AKS: the node pool's or the pod's identity), or fix client_id / object_id / resource_id"
        ));
    }
    if error.contains(token::env::FEDERATED_TOKEN_FILE) || lower.contains("federated token") {
        return Some(workload_identity_remedy());
    }
    if s.credential == CredentialKind::WorkloadIdentity && lower.contains("cannot read") {
        return Some(workload_identity_remedy());
    }
    if lower.contains("cannot read token file") {
        return Some("the token file is missing or unreadable: the agent that writes it has not run, or writes elsewhere; check token_file and the agent".into());
    }
    if lower.contains("through the outbound proxy") {
        return Some("the outbound proxy (HTTPS_PROXY / ALL_PROXY) refused the tunnel or does not answer: check that it is up and allows CONNECT to the authority host on port 443, or list the host in NO_PROXY if it is reachable directly".into());
    }
    if lower.contains("aadsts7000215") {
        return Some(
            "the client secret is wrong or expired: put the current secret in client_secret_file"
                .into(),
        );
    }
    None
}

/// The JWT payload as a JSON object (claims only; the token is never kept or shown).
pub(super) fn payload(token: &str) -> Option<Map<String, Value>> {
    let part = token.trim().split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

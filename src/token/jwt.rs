//! Reading the claims the proxy needs (`oid`, `exp`) from a JWT, without verifying it.
//!
//! The proxy never needs to trust a token's signature: the cache verifies it. It reads `exp`
//! to schedule refreshes and `oid` to know the AUTH username.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::TokenError;

/// The claims the proxy reads from an access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The object id of the identity: the AUTH username Azure expects.
    pub oid: Option<String>,
    /// Expiry, from `exp`.
    pub expires_at: Option<SystemTime>,
}

/// Decodes the payload of a JWT (`header.payload.signature`) and reads `oid` and `exp`.
/// Errors say what is wrong with the token's shape, never the token itself.
pub fn claims(token: &str) -> Result<Claims, TokenError> {
    let mut parts = token.trim().split('.');
    let (Some(_header), Some(payload), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "expected three dot-separated parts (header.payload.signature)".into(),
        ));
    };
    // Some issuers pad; the URL-safe alphabet without padding is the JWT standard.
    let payload = payload.trim_end_matches('=');
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed("the payload is not base64url".into()))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| TokenError::Malformed("the payload is not a JSON object".into()))?;
    let obj = value
        .as_object()
        .ok_or_else(|| TokenError::Malformed("the payload is not a JSON object".into()))?;
    let oid = obj.get("oid").and_then(|v| v.as_str()).map(str::to_owned);
    let expires_at = match obj.get("exp") {
        None => None,
        Some(v) => {
            let secs = v
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| {
                    TokenError::Malformed("the `exp` claim is not a number of seconds".into())
                })?;
            Some(UNIX_EPOCH + Duration::from_secs_f64(secs))
        }
    };
    Ok(Claims { oid, expires_at })
}

/// Seconds since the Unix epoch (0 for times before it), for logs and metrics.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Builds an unsigned JWT (`alg: none`) with the given claims. Used by the mock identity
/// endpoint, the demo and tests; Azure would never accept it, a test redis-server does.
pub fn unsigned_jwt(claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string().as_bytes());
    format!("{header}.{payload}.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_oid_and_exp() {
        let t = unsigned_jwt(&serde_json::json!({"oid": "abc", "exp": 1_700_000_000}));
        let c = claims(&t).unwrap();
        assert_eq!(c.oid.as_deref(), Some("abc"));
        assert_eq!(
            c.expires_at,
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
    }

    #[test]
    fn missing_claims_are_none() {
        let t = unsigned_jwt(&serde_json::json!({"sub": "x"}));
        assert_eq!(
            claims(&t).unwrap(),
            Claims {
                oid: None,
                expires_at: None
            }
        );
    }

    #[test]
    fn rejects_garbage_without_echoing_it() {
        for bad in ["", "abc", "a.b", "a.!!!.c", "a.b.c.d"] {
            let err = claims(bad).unwrap_err().to_string();
            assert!(err.contains("not a valid JWT"), "{err}");
        }
        let secretish = format!("x.{}.y", URL_SAFE_NO_PAD.encode(b"[1,2]"));
        let err = claims(&secretish).unwrap_err().to_string();
        assert!(!err.contains(&secretish));
    }

    #[test]
    fn rejects_non_numeric_exp() {
        let t = unsigned_jwt(&serde_json::json!({"oid": "a", "exp": "soon"}));
        assert!(claims(&t).is_err());
    }
}

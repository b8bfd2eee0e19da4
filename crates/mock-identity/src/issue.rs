//! Issuing tokens: an unsigned JWT with a fresh `oid`, made valid in Redis (`ACL SETUSER`)
//! when the mock manages a test Redis, and deleted there at its expiry.

use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::state::Mock;

impl Mock {
    /// Issues a token, makes it valid in Redis (if configured) and schedules its deletion.
    pub(super) async fn issue(
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
pub(super) struct Issued {
    /// The JWT.
    pub(super) token: String,
    /// Its expiry, in seconds since the Unix epoch.
    pub(super) exp: u64,
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

/// Seconds since the Unix epoch.
pub(super) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// A random GUID (`oid`, `jti`, trace and correlation ids).
pub(super) fn random_guid() -> String {
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

/// An unsigned JWT (`alg: none`) carrying `claims`: what the proxy reads (`oid`, `exp`) without
/// checking a signature, as it does with Entra's tokens (the cache checks them).
pub(super) fn unsigned_jwt(claims: &serde_json::Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string().as_bytes());
    format!("{header}.{payload}.")
}

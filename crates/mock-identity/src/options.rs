//! The command line: [`USAGE`], [`MockConfig`] and [`parse_args`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
                let d = parse_duration(&value()?)?;
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

/// Parses `250ms`, `5s`, `1.5s`, `3m`, `1h`, or a bare number of seconds (the proxy's
/// duration syntax; the mock keeps its own copy so that it depends on nothing of the proxy).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (examples: 250ms, 5s, 3m, 1h)"))?;
    let secs = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{s}` (use ms, s, m or h)"
            ))
        }
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

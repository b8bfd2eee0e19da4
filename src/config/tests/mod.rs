//! Unit tests of the configuration, by concern; the helpers here load from text.

mod docs;
mod load;
mod print;
mod validate;

use std::collections::HashMap;
use std::fmt;

use super::*;

/// Loads with the given flags, a config file holding `toml` (if any) and env variables.
fn load(toml: Option<&str>, env: &[(&str, &str)], flags: &[&str]) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = vec!["entra-redis-proxy".into()];
    if let Some(text) = toml {
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, text).unwrap();
        args.push("--config".into());
        args.push(path.to_str().unwrap().into());
    }
    args.extend(flags.iter().map(|f| f.to_string()));
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    load_from_env(args, &env).map(|l| l.settings)
}

fn valid() -> Settings {
    Settings {
        upstream: "cache.example:6380".into(),
        ..Settings::default()
    }
}

fn err_text(r: Result<impl fmt::Debug, ConfigError>) -> String {
    r.expect_err("expected a configuration error").to_string()
}

const TWO_UPSTREAMS: &str = r#"
    credential = "managed-identity"
    scope = "https://redis.azure.com/.default"

    [[upstreams]]
    name = "sessions"
    listen = ["127.0.0.1:7379"]
    upstream = "a.example:6380"

    [[upstreams]]
    name = "orders"
    listen = ["127.0.0.1:7380"]
    upstream = "b.example:10000"
    cluster = true
    client_id = "11111111-1111-1111-1111-111111111111"
"#;

//! `--print-config`: what it prints loads back, and secrets are redacted.

use std::time::Duration;

use super::super::print::redact;
use super::*;

#[test]
fn printed_config_with_upstreams_loads_back() {
    let s = load(Some(TWO_UPSTREAMS), &[], &[]).unwrap();
    let printed = s.redacted_toml();
    assert!(
        printed.contains("[[upstreams]]\nname = \"orders\""),
        "{printed}"
    );
    let back = load(Some(&printed), &[], &[]).unwrap();
    assert_eq!(back.redacted_toml(), printed);
    assert_eq!(back.upstreams.len(), 2);
}

#[test]
fn printed_config_loads_back_to_the_same_settings() {
    let mut s = valid();
    s.listen = vec!["127.0.0.1:1".into(), "unix:/run/a \"b\".sock".into()];
    s.username = Some("app".into());
    s.client_secret_file = Some("/run/secret".into());
    s.refresh_ratio = 1.0;
    s.refresh_margin = Duration::from_millis(1500);
    let printed = s.redacted_toml();
    assert!(
        printed.contains("client_secret_file = \"/run/secret\""),
        "{printed}"
    );
    assert!(printed.contains("# tenant_id = (not set)"), "{printed}");
    let back = load(Some(&printed), &[], &[]).unwrap();
    assert_eq!(back.redacted_toml(), printed);
    assert_eq!(back.listen, s.listen);
    assert_eq!(back.refresh_margin, s.refresh_margin);
    assert_eq!(back.refresh_ratio, 1.0);
}

#[test]
fn secret_looking_values_are_redacted() {
    use serde_json::json;
    assert_eq!(
        redact("client_secret", json!("hunter2")),
        json!("<redacted>")
    );
    assert_eq!(redact("password", json!("hunter2")), json!("<redacted>"));
    assert_eq!(redact("access_token", json!("eyJ")), json!("<redacted>"));
    assert_eq!(redact("client_secret", json!(null)), json!(null));
    assert_eq!(
        redact("client_secret_file", json!("/run/s")),
        json!("/run/s")
    );
    assert_eq!(redact("token_timeout", json!("30s")), json!("30s"));
    assert_eq!(redact("username", json!("app")), json!("app"));
}

//! Layering file, environment and flags, and the errors that name the key and its origin.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

#[test]
fn nothing_given_is_the_defaults() {
    let s = load(None, &[], &[]).unwrap();
    assert_eq!(s.redacted_toml(), Settings::default().redacted_toml());
}

#[test]
fn precedence_is_file_then_env_then_flag() {
    let file = r#"
        upstream = "file.example"
        refresh_margin = "1m"
        scope = "file-scope"
        max_connections = 7
        listen = ["127.0.0.1:1000"]
    "#;
    let env = [
        ("ENTRA_REDIS_PROXY_UPSTREAM", "env.example"),
        ("ENTRA_REDIS_PROXY_REFRESH_MARGIN", "2m"),
        (
            "ENTRA_REDIS_PROXY_LISTEN",
            "127.0.0.1:2000, unix:/run/p.sock",
        ),
        ("UNRELATED_VARIABLE", "ignored"),
    ];
    // File only.
    let s = load(Some(file), &[], &[]).unwrap();
    assert_eq!(s.upstream, "file.example");
    assert_eq!(s.refresh_margin, Duration::from_secs(60));
    assert_eq!(s.listen, vec!["127.0.0.1:1000"]);
    // Env over file; keys absent from env keep the file's value.
    let s = load(Some(file), &env, &[]).unwrap();
    assert_eq!(s.upstream, "env.example");
    assert_eq!(s.refresh_margin, Duration::from_secs(120));
    assert_eq!(s.listen, vec!["127.0.0.1:2000", "unix:/run/p.sock"]);
    assert_eq!(s.scope, "file-scope");
    assert_eq!(s.max_connections, 7);
    // Flags over env; flags not given change nothing.
    let s = load(
        Some(file),
        &env,
        &[
            "--upstream",
            "flag.example",
            "--listen",
            "127.0.0.1:3000",
            "--listen",
            "[::1]:3001",
        ],
    )
    .unwrap();
    assert_eq!(s.upstream, "flag.example");
    assert_eq!(s.listen, vec!["127.0.0.1:3000", "[::1]:3001"]);
    assert_eq!(s.refresh_margin, Duration::from_secs(120));
    assert_eq!(s.scope, "file-scope");
}

#[test]
fn env_values_are_typed_by_the_field_not_guessed() {
    let s = load(
        None,
        &[
            ("ENTRA_REDIS_PROXY_USERNAME", "0123"),
            ("ENTRA_REDIS_PROXY_MAX_CONNECTIONS", "42"),
            ("ENTRA_REDIS_PROXY_ALLOW_NON_LOOPBACK", "true"),
            ("ENTRA_REDIS_PROXY_REFRESH_RATIO", "0.5"),
            ("ENTRA_REDIS_PROXY_CREDENTIAL", "token-file"),
            ("ENTRA_REDIS_PROXY_TOKEN_FILE", "/run/token"),
            ("ENTRA_REDIS_PROXY_LOG_FORMAT", "json"),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(s.username.as_deref(), Some("0123"));
    assert_eq!(s.max_connections, 42);
    assert!(s.allow_non_loopback);
    assert_eq!(s.refresh_ratio, 0.5);
    assert_eq!(s.credential, CredentialKind::TokenFile);
    assert_eq!(s.token_file, Some(PathBuf::from("/run/token")));
    assert_eq!(s.log_format, LogFormat::Json);
}

#[test]
fn every_flag_sets_its_field() {
    let s = load(
        None,
        &[],
        &[
            "--allow-non-loopback",
            "--max-connections=3",
            "--upstream=u.example",
            "--tls-server-name=n.example",
            "--ca-file=/ca.pem",
            "--connect-timeout=1s",
            "--tls-timeout=2s",
            "--auth-timeout=3s",
            "--credential=client-secret",
            "--token-file=/t",
            "--token-file-poll=250ms",
            "--username=u",
            "--scope=s",
            "--tenant-id=t",
            "--client-id=c",
            "--object-id=o",
            "--resource-id=r",
            "--client-secret-file=/cs",
            "--certificate-file=/cf",
            "--certificate-password-file=/cp",
            "--authority-host=https://login.example",
            "--identity-ca-file=/ica",
            "--refresh-ratio=0.5",
            "--refresh-margin=4m",
            "--refresh-jitter=0.2",
            "--retry-initial=2s",
            "--retry-max=1h",
            "--token-timeout=9s",
            "--startup-wait=0s",
            "--admin-listen=",
            "--log-format=json",
            "--max-bulk-len=10",
            "--max-command-args=11",
            "--max-inline-len=12",
        ],
    )
    .unwrap();
    assert!(s.allow_non_loopback);
    assert_eq!(s.max_connections, 3);
    assert_eq!(s.upstream, "u.example");
    assert_eq!(s.tls_server_name.as_deref(), Some("n.example"));
    assert_eq!(s.ca_file, Some("/ca.pem".into()));
    assert_eq!(s.connect_timeout, Duration::from_secs(1));
    assert_eq!(s.tls_timeout, Duration::from_secs(2));
    assert_eq!(s.auth_timeout, Duration::from_secs(3));
    assert_eq!(s.credential, CredentialKind::ClientSecret);
    assert_eq!(s.token_file, Some("/t".into()));
    assert_eq!(s.token_file_poll, Duration::from_millis(250));
    assert_eq!(s.username.as_deref(), Some("u"));
    assert_eq!(s.scope, "s");
    assert_eq!(s.tenant_id.as_deref(), Some("t"));
    assert_eq!(s.client_id.as_deref(), Some("c"));
    assert_eq!(s.object_id.as_deref(), Some("o"));
    assert_eq!(s.resource_id.as_deref(), Some("r"));
    assert_eq!(s.client_secret_file, Some("/cs".into()));
    assert_eq!(s.certificate_file, Some("/cf".into()));
    assert_eq!(s.certificate_password_file, Some("/cp".into()));
    assert_eq!(s.authority_host.as_deref(), Some("https://login.example"));
    assert_eq!(s.identity_ca_file, Some("/ica".into()));
    assert_eq!(s.refresh_ratio, 0.5);
    assert_eq!(s.refresh_margin, Duration::from_secs(240));
    assert_eq!(s.refresh_jitter, 0.2);
    assert_eq!(s.retry_initial, Duration::from_secs(2));
    assert_eq!(s.retry_max, Duration::from_secs(3600));
    assert_eq!(s.token_timeout, Duration::from_secs(9));
    assert_eq!(s.startup_wait, Duration::ZERO);
    assert_eq!(s.admin_listen, "");
    assert_eq!(s.log_format, LogFormat::Json);
    assert_eq!(s.max_bulk_len, 10);
    assert_eq!(s.max_command_args, 11);
    assert_eq!(s.max_inline_len, 12);
    s.validate().unwrap();
}

#[test]
fn allow_non_loopback_flag_can_also_say_false() {
    let env = [("ENTRA_REDIS_PROXY_ALLOW_NON_LOOPBACK", "true")];
    let s = load(None, &env, &["--allow-non-loopback=false"]).unwrap();
    assert!(!s.allow_non_loopback);
}

#[test]
fn bad_flag_value_is_a_cli_error() {
    let e = load(None, &[], &["--refresh-margin", "soon"]).unwrap_err();
    let ConfigError::Cli(e) = e else {
        panic!("not a CLI error: {e}")
    };
    assert!(e.use_stderr());
    assert!(e.to_string().contains("--refresh-margin"), "{e}");
}

#[test]
fn help_and_version_are_not_failures() {
    for flag in ["--help", "--version"] {
        let ConfigError::Cli(e) = load(None, &[], &[flag]).unwrap_err() else {
            panic!("{flag} should be a clap outcome")
        };
        assert!(!e.use_stderr(), "{flag}");
    }
}

#[test]
fn unknown_key_in_file_is_named() {
    let text = err_text(load(
        Some("upstream = \"x\"\nrefresh_ration = 0.5\n"),
        &[],
        &[],
    ));
    assert!(text.contains("unknown key `refresh_ration`"), "{text}");
    assert!(text.contains("proxy.toml"), "{text}");
}

#[test]
fn unknown_key_in_env_names_the_variable() {
    let text = err_text(load(None, &[("ENTRA_REDIS_PROXY_UPSTREAM_HOST", "x")], &[]));
    assert!(text.contains("unknown key `upstream_host`"), "{text}");
    assert!(text.contains("ENTRA_REDIS_PROXY_UPSTREAM_HOST"), "{text}");
}

#[test]
fn bad_type_in_file_names_the_key_and_how_to_set_it() {
    let text = err_text(load(Some("refresh_ratio = \"abc\"\n"), &[], &[]));
    assert!(text.contains("`refresh_ratio`"), "{text}");
    assert!(text.contains("ENTRA_REDIS_PROXY_REFRESH_RATIO"), "{text}");
    assert!(text.contains("--refresh-ratio"), "{text}");
    for bad in ["-1", "1.5", "\"many\"", "true"] {
        let text = err_text(load(Some(&format!("max_connections = {bad}\n")), &[], &[]));
        assert!(text.contains("`max_connections`"), "{bad}: {text}");
    }
    let env = [("ENTRA_REDIS_PROXY_MAX_BULK_LEN", "1.5")];
    let text = err_text(load(None, &env, &[]));
    assert!(text.contains("`max_bulk_len`"), "{text}");
    let text = err_text(load(Some("credential = \"magic\"\n"), &[], &[]));
    assert!(text.contains("`credential`"), "{text}");
    assert!(
        text.contains("managed-identity"),
        "lists the choices: {text}"
    );
}

#[test]
fn bad_duration_names_the_key_and_its_origin() {
    let text = err_text(load(Some("connect_timeout = \"5 parsecs\"\n"), &[], &[]));
    assert!(text.contains("`connect_timeout`"), "{text}");
    assert!(text.contains("in config file"), "{text}");
    let env = [("ENTRA_REDIS_PROXY_REFRESH_MARGIN", "3 minutes")];
    let text = err_text(load(Some("refresh_margin = \"1m\"\n"), &env, &[]));
    assert!(text.contains("`refresh_margin`"), "{text}");
    assert!(
        text.contains("from environment variable ENTRA_REDIS_PROXY_REFRESH_MARGIN"),
        "{text}"
    );
}

#[test]
fn bad_type_in_env_names_the_variable() {
    let env = [("ENTRA_REDIS_PROXY_MAX_CONNECTIONS", "lots")];
    let text = err_text(load(None, &env, &[]));
    assert!(text.contains("`max_connections`"), "{text}");
    assert!(text.contains("ENTRA_REDIS_PROXY_MAX_CONNECTIONS"), "{text}");
}

#[test]
fn unreadable_or_malformed_file_is_reported() {
    let text = err_text(load_from_env(
        ["p", "--config", "/nonexistent/entra-redis-proxy.toml"],
        &HashMap::new(),
    ));
    assert!(text.contains("cannot read config file"), "{text}");
    let text = err_text(load(Some("upstream = \"unterminated\n"), &[], &[]));
    assert!(text.contains("not valid TOML"), "{text}");
}

#[test]
fn durations_parse_and_format() {
    let ok = [
        ("250ms", Duration::from_millis(250)),
        ("5s", Duration::from_secs(5)),
        ("1.5s", Duration::from_millis(1500)),
        ("3m", Duration::from_secs(180)),
        ("1h", Duration::from_secs(3600)),
        ("7", Duration::from_secs(7)),
        (" 2m ", Duration::from_secs(120)),
    ];
    for (text, want) in ok {
        assert_eq!(duration::parse(text), Ok(want), "{text}");
        assert_eq!(
            duration::parse(&duration::format(want)),
            Ok(want),
            "{text} round trip"
        );
    }
    for bad in ["", "s", "5x", "-1s", "1e3", "five"] {
        assert!(duration::parse(bad).is_err(), "{bad:?} should be refused");
    }
    assert_eq!(duration::format(Duration::from_secs(180)), "3m");
    assert_eq!(duration::format(Duration::from_millis(1500)), "1500ms");
    // A bare number in the file is seconds.
    let s = load(Some("refresh_margin = 90\nretry_initial = 0.5\n"), &[], &[]).unwrap();
    assert_eq!(s.refresh_margin, Duration::from_secs(90));
    assert_eq!(s.retry_initial, Duration::from_millis(500));
}

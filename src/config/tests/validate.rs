//! The rules of `validate`, and the settings derived per upstream.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::addr::HostPort;

#[test]
fn upstream_entries_take_top_level_defaults() {
    let s = load(Some(TWO_UPSTREAMS), &[], &[]).unwrap();
    s.validate().unwrap();
    let ups = s.resolved_upstreams().unwrap();
    assert_eq!(ups.len(), 2);
    let (a, b) = (&ups[0].1, &ups[1].1);
    assert_eq!(ups[0].0, "sessions");
    assert_eq!(a.listen, ["127.0.0.1:7379"]);
    assert_eq!(a.upstream, "a.example:6380");
    assert_eq!(a.credential, CredentialKind::ManagedIdentity);
    assert!(!a.cluster);
    assert_eq!(
        b.client_id.as_deref(),
        Some("11111111-1111-1111-1111-111111111111")
    );
    assert!(b.cluster);
    assert_eq!(ports(b).unwrap(), Some(7381..=7480));
    // Different identities: two token managers.
    assert_ne!(a.identity_key(), b.identity_key());
    // Without entries: one upstream named "default".
    let one = load(None, &[], &["--upstream", "c.example"]).unwrap();
    let ups = one.resolved_upstreams().unwrap();
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].0, DEFAULT_UPSTREAM_NAME);
    assert_eq!(ups[0].1.identity_key(), one.identity_key());
}

#[test]
fn upstream_entries_are_checked_and_named_in_errors() {
    let cases = [
        (
            "[[upstreams]]\nname = \"a\"\nupstream = \"x.example\"\n",
            "`upstreams[0].listen` is required for upstream \"a\"",
        ),
        (
            "[[upstreams]]\nname = \"a\"\nlisten = [\"127.0.0.1:1\"]\n",
            "`upstreams[0].upstream` is required",
        ),
        (
            "[[upstreams]]\nname = \"a b\"\nlisten = [\"127.0.0.1:1\"]\nupstream = \"x\"\n",
            "`upstreams[0].name`",
        ),
        (
            "[[upstreams]]\nname = \"a\"\nlisten = [\"127.0.0.1:1\"]\nupstream = \"x\"\n\
             [[upstreams]]\nname = \"a\"\nlisten = [\"127.0.0.1:2\"]\nupstream = \"y\"\n",
            "used by two entries",
        ),
        (
            "upstream = \"top.example\"\n[[upstreams]]\nname = \"a\"\nlisten = [\"127.0.0.1:1\"]\nupstream = \"x\"\n",
            "move it into an [[upstreams]] entry",
        ),
        (
            "[[upstreams]]\nname = \"a\"\nlisten = [\"127.0.0.1:1\"]\nupstream = \"https://x\"\n",
            "`upstreams[0].upstream` = \"https://x\" must be HOST[:PORT]",
        ),
        (
            "[[upstreams]]\nname = \"a\"\nlisten = [\"127.0.0.1:1\"]\nupstream = \"x\"\ncluster = true\ncluster_ports = \"9-1\"\n",
            "`upstreams[0].cluster_ports`",
        ),
        (
            "[[upstreams]]\nname = \"a\"\nlisten = [\"unix:/tmp/x.sock\"]\nupstream = \"x\"\ncluster = true\n",
            "must start with a TCP address",
        ),
        (
            "[[upstreams]]\nname = \"a\"\nlisten = [\"127.0.0.1:1\"]\nupstream = \"x\"\nport = 3\n",
            "unknown key `upstreams.port`",
        ),
        (
            // Inherited from the top level: reported as the top-level key.
            "cluster_ports = \"9-1\"\n[[upstreams]]\nname = \"a\"\nlisten = [\"127.0.0.1:1\"]\nupstream = \"x\"\ncluster = true\n",
            "`cluster_ports` = \"9-1\" is not a port range",
        ),
    ];
    for (file, want) in cases {
        let text = match load(Some(file), &[], &[]) {
            Ok(s) => err_text(s.validate()),
            Err(e) => e.to_string(),
        };
        assert!(text.contains(want), "{file}\n=> {text}\nwanted {want}");
    }
}

#[test]
fn cluster_port_ranges() {
    let s = |listen: &str, ports: Option<&str>| Settings {
        listen: vec![listen.into()],
        upstream: "x.example".into(),
        cluster: true,
        cluster_ports: ports.map(str::to_owned),
        ..Settings::default()
    };
    assert_eq!(
        ports(&s("127.0.0.1:6379", None)).unwrap(),
        Some(6380..=6479)
    );
    assert_eq!(ports(&s("127.0.0.1:0", None)).unwrap(), None);
    assert_eq!(
        ports(&s("127.0.0.1:0", Some("7001-7003"))).unwrap(),
        Some(7001..=7003)
    );
    for bad in ["7001", "0-5", "9-8", "a-b", "1-70000"] {
        let e = s("127.0.0.1:0", Some(bad))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("cluster_ports"), "{bad}: {e}");
    }
    let e = s("127.0.0.1:65535", None)
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("cluster_ports"), "{e}");
}

#[test]
fn defaults_with_upstream_are_valid() {
    valid().validate().unwrap();
}

#[test]
fn upstream_is_required_and_parsed() {
    let text = err_text(Settings::default().validate());
    assert!(text.starts_with("`upstream` is required"), "{text}");
    assert!(text.contains("ENTRA_REDIS_PROXY_UPSTREAM") && text.contains("--upstream"));

    let up = |u: &str| Settings {
        upstream: u.into(),
        ..Settings::default()
    };
    assert_eq!(
        up("c.example").upstream_host_port().unwrap(),
        HostPort::new("c.example", 6380)
    );
    assert_eq!(
        up("c.example:10000").upstream_host_port().unwrap(),
        HostPort::new("c.example", 10000)
    );
    assert_eq!(
        up("[::1]").upstream_host_port().unwrap(),
        HostPort::new("::1", 6380)
    );
    assert_eq!(
        up("[::1]:7000").upstream_host_port().unwrap(),
        HostPort::new("::1", 7000)
    );
    for bad in [
        "::1",
        "c.example:port",
        "c.example:70000",
        "rediss://c.example",
        "[::1",
        ":6380",
        "[x]:1",
    ] {
        let text = err_text(up(bad).validate());
        assert!(text.starts_with("`upstream`"), "{bad}: {text}");
    }
}

#[test]
fn tls_name_defaults_to_the_upstream_host() {
    let mut s = valid();
    let name = |s: &Settings| s.plan().unwrap().upstreams[0].tls_server_name.clone();
    assert_eq!(name(&s), "cache.example");
    s.upstream = "[::1]:6380".into();
    assert_eq!(name(&s), "::1");
    s.tls_server_name = Some("other.example".into());
    assert_eq!(name(&s), "other.example");
}

#[test]
fn listen_entries_are_parsed() {
    let mut s = valid();
    s.listen = vec![
        "127.0.0.1:0".into(),
        "[::1]:6379".into(),
        "unix:/run/proxy.sock".into(),
        "localhost:7000".into(),
    ];
    let addrs = s.listen_addrs().unwrap();
    assert_eq!(addrs[0], ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()));
    assert_eq!(addrs[1], ListenAddr::Tcp("[::1]:6379".parse().unwrap()));
    assert_eq!(addrs[2], ListenAddr::Unix("/run/proxy.sock".into()));
    match &addrs[3] {
        ListenAddr::Tcp(a) => assert!(a.ip().is_loopback() && a.port() == 7000, "{a}"),
        other => panic!("{other:?}"),
    }
    for bad in ["127.0.0.1", "unix:", "", "127.0.0.1:x", "::1:6379"] {
        s.listen = vec![bad.into()];
        let text = err_text(s.validate());
        assert!(text.starts_with("`listen`"), "{bad:?}: {text}");
    }
    s.listen = vec![];
    assert!(err_text(s.validate()).starts_with("`listen` is empty"));
}

#[test]
fn non_loopback_listen_needs_allow_non_loopback_and_a_client_password() {
    let mut s = valid();
    s.listen = vec!["127.0.0.1:6379".into(), "0.0.0.0:6379".into()];
    let text = err_text(s.validate());
    assert!(text.contains("0.0.0.0:6379"), "{text}");
    assert!(text.contains("Entra identity"), "explains why: {text}");
    assert!(text.contains("allow_non_loopback"), "{text}");
    assert!(text.contains("--allow-non-loopback"), "{text}");
    s.allow_non_loopback = true;
    // Still refused: anyone on the network would act as the identity without a password.
    let text = err_text(s.validate());
    assert!(text.contains("client_password_file"), "{text}");
    s.client_password_file = Some("/run/secrets/pw".into());
    s.validate().unwrap();
    assert_eq!(
        s.listen_addrs().unwrap()[1],
        ListenAddr::Tcp("0.0.0.0:6379".parse().unwrap())
    );
}

#[test]
fn token_file_credential_requires_token_file() {
    let mut s = valid();
    s.credential = CredentialKind::TokenFile;
    let text = err_text(s.validate());
    assert!(text.starts_with("`token_file` is required"), "{text}");
    assert!(text.contains("--token-file"), "{text}");
    s.token_file = Some("/run/token".into());
    s.validate().unwrap();
}

#[test]
fn refresh_ratio_and_jitter_ranges() {
    let mut s = valid();
    for (ratio, ok) in [
        (0.0, false),
        (-0.1, false),
        (1.5, false),
        (f64::NAN, false),
        (1.0, true),
        (0.01, true),
    ] {
        s.refresh_ratio = ratio;
        assert_eq!(s.validate().is_ok(), ok, "refresh_ratio {ratio}");
    }
    s.refresh_ratio = 1.5;
    assert_eq!(
        err_text(s.validate()),
        "`refresh_ratio` = 1.5 is out of range (0, 1]: set refresh_ratio in the config file, \
         ENTRA_REDIS_PROXY_REFRESH_RATIO, or --refresh-ratio"
    );
    s.refresh_ratio = 0.7;
    for (jitter, ok) in [(0.0, true), (0.99, true), (1.0, false), (-0.1, false)] {
        s.refresh_jitter = jitter;
        assert_eq!(s.validate().is_ok(), ok, "refresh_jitter {jitter}");
    }
    s.refresh_jitter = 1.0;
    assert!(err_text(s.validate()).starts_with("`refresh_jitter` = 1 is out of range [0, 1)"));
}

#[test]
fn retry_initial_must_not_exceed_retry_max() {
    let mut s = valid();
    s.retry_initial = Duration::from_secs(120);
    s.retry_max = Duration::from_secs(60);
    let text = err_text(s.validate());
    assert!(
        text.starts_with("`retry_initial` = 2m is greater than retry_max = 1m"),
        "{text}"
    );
    s.retry_initial = Duration::from_secs(60);
    s.validate().unwrap();
}

#[test]
fn timeouts_and_limits_must_be_positive() {
    type Poke = fn(&mut Settings);
    let cases: [(&str, Poke); 11] = [
        ("connect_timeout", |s| s.connect_timeout = Duration::ZERO),
        ("tls_timeout", |s| s.tls_timeout = Duration::ZERO),
        ("auth_timeout", |s| s.auth_timeout = Duration::ZERO),
        ("token_file_poll", |s| s.token_file_poll = Duration::ZERO),
        ("retry_initial", |s| s.retry_initial = Duration::ZERO),
        ("token_timeout", |s| s.token_timeout = Duration::ZERO),
        ("max_connections", |s| s.max_connections = 0),
        ("max_bulk_len", |s| s.max_bulk_len = 0),
        ("max_command_args", |s| s.max_command_args = 0),
        ("max_inline_len", |s| s.max_inline_len = 0),
        ("retry_max", |s| {
            s.retry_initial = Duration::from_millis(1);
            s.retry_max = Duration::ZERO;
        }),
    ];
    for (key, poke) in cases {
        let mut s = valid();
        poke(&mut s);
        let text = err_text(s.validate());
        assert!(text.starts_with(&format!("`{key}` =")), "{key}: {text}");
        assert!(
            text.contains(&format!("--{}", key.replace('_', "-"))),
            "{text}"
        );
    }
}

#[test]
fn empty_optional_values_and_other_fields_are_refused() {
    let mut s = valid();
    s.username = Some(String::new());
    assert!(err_text(s.validate()).starts_with("`username` is empty"));
    let mut s = valid();
    s.client_secret_file = Some(PathBuf::new());
    assert!(err_text(s.validate()).starts_with("`client_secret_file` is an empty path"));
    let mut s = valid();
    s.authority_host = Some("http://login.example".into());
    assert!(err_text(s.validate()).starts_with("`authority_host`"));
    let mut s = valid();
    s.scope = " ".into();
    assert!(err_text(s.validate()).starts_with("`scope` is empty"));
    let mut s = valid();
    s.admin_listen = "9464".into();
    assert!(err_text(s.validate()).starts_with("`admin_listen`"));
    s.admin_listen = String::new();
    s.validate().unwrap();
    assert_eq!(
        s.admin_addr().unwrap(),
        None,
        "\"\" turns the admin endpoint off"
    );
    s.admin_listen = "[::1]:0".into();
    assert_eq!(s.admin_addr().unwrap(), Some("[::1]:0".parse().unwrap()));
}

#[test]
fn listen_entries_are_typed_once() {
    let s = Settings {
        listen: vec!["127.0.0.1:0".into(), "unix:/run/p.sock".into()],
        ..valid()
    };
    assert_eq!(
        s.listen_addrs().unwrap(),
        vec![
            ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()),
            ListenAddr::Unix("/run/p.sock".into())
        ]
    );
}

#[test]
fn refresh_policy_carries_the_settings() {
    let mut s = valid();
    s.refresh_ratio = 0.5;
    s.refresh_margin = Duration::from_secs(240);
    s.refresh_jitter = 0.2;
    s.retry_initial = Duration::from_secs(2);
    s.retry_max = Duration::from_secs(30);
    s.token_timeout = Duration::from_secs(9);
    s.username = Some("app".into());
    let p = s.refresh_policy();
    assert_eq!(p.ratio, 0.5);
    assert_eq!(p.margin, Duration::from_secs(240));
    assert_eq!(p.jitter, 0.2);
    assert_eq!(p.retry_initial, Duration::from_secs(2));
    assert_eq!(p.retry_max, Duration::from_secs(30));
    assert_eq!(p.timeout, Duration::from_secs(9));
    assert_eq!(p.username.as_deref(), Some("app"));
}

#[test]
fn socket_modes() {
    let mode = |m: &str| {
        Settings {
            socket_mode: m.into(),
            ..valid()
        }
        .socket_mode()
    };
    assert_eq!(mode("0660").unwrap(), 0o660);
    assert_eq!(mode("600").unwrap(), 0o600);
    assert_eq!(mode("0o777").unwrap(), 0o777);
    for bad in ["", "0888", "rw-rw----", "01777", "-1"] {
        let e = mode(bad).unwrap_err().to_string();
        assert!(e.starts_with("`socket_mode` = "), "{bad}: {e}");
        assert!(e.contains("--socket-mode"), "{bad}: {e}");
        let e = err_text(
            Settings {
                socket_mode: bad.into(),
                ..valid()
            }
            .validate(),
        );
        assert!(e.contains("socket_mode"), "{bad}: {e}");
    }
}

/// `cluster_ports` as the plan converts it, from the parsed `listen` entries.
fn ports(s: &Settings) -> Result<Option<std::ops::RangeInclusive<u16>>, ConfigError> {
    s.cluster_port_range(&s.listen_addrs()?)
}

//! The operator kit's alert rules and dashboard: `promtool check rules` and `promtool test
//! rules` (synthetic series for every alert) pass, the PrometheusRule manifest holds the same
//! rules as the rule file, and every metric name the rules and the dashboard use is one a
//! running proxy exports (scraped here, not read from the source).
//!
//! promtool comes from Debian's `prometheus` package; scripts/test.sh installs it.

use test_harness as support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool is installed (Debian package `prometheus`; scripts/test.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    let dir = root().join("deploy/prometheus");
    let out = promtool(&["check", "rules", "rules.yaml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = promtool(&["test", "rules", "rules.test.yaml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
}

fn yaml(path: &str) -> Yaml {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

/// The alert names of a list of rule groups.
fn alerts(groups: &Yaml) -> Vec<String> {
    groups
        .as_vec()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_vec().unwrap().iter())
        .map(|r| r["alert"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_alert_has_a_test_a_summary_and_a_runbook_and_the_manifest_matches() {
    let rules = yaml("deploy/prometheus/rules.yaml");
    let manifest = yaml("deploy/prometheus/prometheusrule.yaml");
    assert_eq!(manifest["kind"].as_str(), Some("PrometheusRule"));
    assert_eq!(
        rules["groups"], manifest["spec"]["groups"],
        "prometheusrule.yaml holds the same rules as rules.yaml"
    );
    let names = alerts(&rules["groups"]);
    assert_eq!(names.len(), 6, "{names:?}");
    for r in rules["groups"][0]["rules"].as_vec().unwrap() {
        let a = &r["annotations"];
        assert!(a["summary"].as_str().is_some(), "{r:?}");
        let runbook = a["runbook"].as_str().unwrap();
        assert!(
            runbook.contains("docs/operations.md#") && runbook.contains("doctor"),
            "{runbook}"
        );
        // The anchor exists in docs/operations.md.
        let anchor = runbook
            .split("docs/operations.md#")
            .nth(1)
            .unwrap()
            .split(';')
            .next()
            .unwrap();
        let ops = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
        let heading = ops
            .lines()
            .filter(|l| l.starts_with('#'))
            .map(|l| {
                l.trim_start_matches('#')
                    .trim()
                    .to_ascii_lowercase()
                    .replace(' ', "-")
                    .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "")
            })
            .any(|h| h == anchor);
        assert!(heading, "docs/operations.md has no heading for #{anchor}");
    }
    let tests = yaml("deploy/prometheus/rules.test.yaml");
    let tested: BTreeSet<String> = tests["tests"]
        .as_vec()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_vec().unwrap().iter())
        .filter(|a| !a["exp_alerts"].as_vec().unwrap().is_empty())
        .map(|a| a["alertname"].as_str().unwrap().to_owned())
        .collect();
    for n in &names {
        assert!(
            tested.contains(n),
            "{n} has no firing test in rules.test.yaml"
        );
    }
}

/// Every `entra_redis_proxy_*` metric name in `text`, histogram suffixes removed.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("entra_redis_proxy_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(base.to_owned());
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn every_metric_in_the_rules_and_the_dashboard_is_exported() {
    let mut used = BTreeSet::new();
    for f in [
        "deploy/prometheus/rules.yaml",
        "deploy/prometheus/prometheusrule.yaml",
        "deploy/grafana/entra-redis-proxy.json",
    ] {
        let text = std::fs::read_to_string(root().join(f)).unwrap();
        let names = metric_names(&text);
        assert!(!names.is_empty(), "{f}");
        used.extend(names);
    }
    // The dashboard is valid JSON with panels.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/entra-redis-proxy.json")).unwrap(),
    )
    .unwrap();
    assert!(dash["panels"].as_array().unwrap().len() >= 8);

    // A real proxy: a valid token, an unreachable cache, and one client, so that the
    // connect error counter (made on first use) is exported too.
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    let exp =
        entra_redis_proxy::token::jwt::unix_seconds(SystemTime::now() + Duration::from_secs(3600));
    std::fs::write(
        &token,
        entra_redis_proxy::token::jwt::unsigned_jwt(
            &serde_json::json!({"oid": "o", "exp": exp as u64}),
        ),
    )
    .unwrap();
    let ca = dir.path().join("ca.pem");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut args = support::proxy_args_to(&closed.to_string(), &ca, &token);
    let i = args.iter().position(|a| a == "--admin-listen").unwrap();
    args[i + 1] = "127.0.0.1:0".into();
    let proxy = support::Proxy::start(&args, "info").await;
    let admin = support::admin_address(&proxy);
    let mut client = proxy.client().await;
    let _ = client.try_read_frame().await; // the proxy's error reply, then close
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let exported: BTreeSet<String> = loop {
        let text = support::scrape_metrics(admin).await;
        let names: BTreeSet<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        if names.contains("entra_redis_proxy_upstream_connect_errors_total") {
            break names;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no connect error counter: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let missing: Vec<&String> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "used but not exported: {missing:?}; exported: {exported:?}"
    );
}

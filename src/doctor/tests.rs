//! Unit tests of the report and the claims decoding.

use serde_json::{json, Map};

use super::identity::payload;
use super::report::human;
use super::{Check, Report, Verdict, REDIS_AUDIENCE};
use crate::token;

#[test]
fn human_durations() {
    assert_eq!(human(5), "5s");
    assert_eq!(human(3599), "59m59s");
    assert_eq!(human(7260), "2h01m");
    assert_eq!(human(-12), "-12s");
}

#[test]
fn exit_codes_follow_the_worst_verdict() {
    let mut r = Report::default();
    assert_eq!(r.exit_code(), 0);
    r.checks.push(Check {
        step: "tls".into(),
        upstream: Some("default".into()),
        verdict: Verdict::Warn,
        ms: 1,
        detail: "x".into(),
        remedy: None,
        facts: Map::new(),
    });
    assert_eq!(r.exit_code(), 0);
    r.checks[0].verdict = Verdict::Fail;
    assert_eq!(r.exit_code(), 1);
    assert_eq!(Report::config_failure("bad".into()).exit_code(), 64);
    assert!(r.summary().contains("first `tls` (upstream default)"));
}

#[test]
fn payload_reads_claims_and_rejects_garbage() {
    let t = token::jwt::unsigned_jwt(&json!({"oid": "o", "aud": REDIS_AUDIENCE}));
    assert_eq!(payload(&t).unwrap()["oid"], "o");
    assert!(payload("not-a-jwt").is_none());
}

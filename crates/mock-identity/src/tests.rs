//! Unit tests of form coding and the command line.

use std::time::Duration;

use super::http::{parse_form, percent_decode, percent_encode};
use super::options::parse_args;

#[test]
fn form_round_trip() {
    let scope = "https://redis.azure.com/.default";
    let f = parse_form(&format!("scope={}&a=b+c&e=", percent_encode(scope)));
    assert_eq!(f["scope"], scope);
    assert_eq!(f["a"], "b c");
    assert_eq!(f["e"], "");
}

#[test]
fn bad_percent_escape_is_kept() {
    assert_eq!(percent_decode("a%zz"), "a%zz");
    assert_eq!(percent_decode("a%4"), "a%4");
    assert_eq!(percent_decode("%41"), "A");
}

#[test]
fn parse_args_reads_flags() {
    let args: Vec<String> = ["--lifetime", "90s", "--redis-cli-args", "-p 1 --tls"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let c = parse_args(&args).unwrap();
    assert_eq!(c.lifetime, Duration::from_secs(90));
    assert_eq!(
        c.redis_cli_args.unwrap(),
        vec!["-p".to_string(), "1".into(), "--tls".into()]
    );
    assert!(parse_args(&["--bogus".to_string()]).is_err());
}

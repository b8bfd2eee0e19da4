//! The report: one [`Check`] per step with its [`Verdict`], the remedies of configuration
//! errors, and how times and durations are shown in it.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::config::EXIT_USAGE;
use crate::token;

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Passed.
    Ok,
    /// Passed, with something the operator should look at.
    Warn,
    /// Failed: the path does not work.
    Fail,
    /// Not run, because a step it needs failed.
    Skip,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "skip",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// The step: `config`, `token`, `claims`, `dns`, `tcp`, `tls`, `auth`, `ping`, `read`,
    /// `cluster`, `node`.
    pub step: String,
    /// The upstream it belongs to (`None` for the configuration).
    pub upstream: Option<String>,
    /// Its verdict.
    pub verdict: Verdict,
    /// How long it took, in milliseconds.
    pub ms: u64,
    /// What was found (never a secret).
    pub detail: String,
    /// For a failure or a warning: the cause and what to do.
    pub remedy: Option<String>,
    /// Structured facts (claims, certificate fields, addresses) for `--json`.
    pub facts: Map<String, Value>,
}

/// Everything doctor found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The checks, in order.
    pub checks: Vec<Check>,
    /// The configuration itself is wrong (exit 64).
    pub config_error: bool,
}

impl Report {
    /// A report of a configuration error alone (exit 64).
    pub fn config_failure(error: String) -> Report {
        let remedy = config_remedy(&error);
        Report {
            checks: vec![Check {
                step: "config".into(),
                upstream: None,
                verdict: Verdict::Fail,
                ms: 0,
                detail: error,
                remedy,
                facts: Map::new(),
            }],
            config_error: true,
        }
    }

    /// 0 all passed, 1 a check failed, 64 a configuration error.
    pub fn exit_code(&self) -> u8 {
        if self.config_error {
            EXIT_USAGE
        } else if self.checks.iter().any(|c| c.verdict == Verdict::Fail) {
            1
        } else {
            0
        }
    }

    /// The one-line summary.
    pub fn summary(&self) -> String {
        let count = |v| self.checks.iter().filter(|c| c.verdict == v).count();
        let (ok, warn, fail) = (
            count(Verdict::Ok),
            count(Verdict::Warn),
            count(Verdict::Fail),
        );
        match self.checks.iter().find(|c| c.verdict == Verdict::Fail) {
            None => format!(
                "doctor: all {} checks passed ({warn} with warnings)",
                ok + warn
            ),
            Some(first) => format!(
                "doctor: {fail} check(s) failed, first `{}`{}: {}",
                first.step,
                first
                    .upstream
                    .as_deref()
                    .map(|u| format!(" (upstream {u})"))
                    .unwrap_or_default(),
                first.detail
            ),
        }
    }

    /// The report as text: one line per check, remedies indented under it, then the summary.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let upstream = c
                .upstream
                .as_deref()
                .map(|u| format!("[{u}] "))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<4} {upstream}{:<7} {:>6}  {}",
                c.verdict.word(),
                c.step,
                format!("{}ms", c.ms),
                c.detail
            );
            if let Some(r) = &c.remedy {
                let _ = writeln!(out, "       -> {r}");
            }
        }
        let _ = writeln!(out, "{}", self.summary());
        out
    }

    /// The report as one JSON object.
    pub fn json(&self) -> Value {
        json!({
            "ok": self.exit_code() == 0,
            "exit_code": self.exit_code(),
            "summary": self.summary(),
            "checks": self.checks,
        })
    }
}

/// A remedy for a configuration error, where one is known.
fn config_remedy(error: &str) -> Option<String> {
    if error.contains(token::env::FEDERATED_TOKEN_FILE)
        || error.to_ascii_lowercase().contains("federated token")
    {
        return Some(workload_identity_remedy());
    }
    None
}

/// What workload identity needs from the pod; the remedy when its token file is missing.
pub(super) fn workload_identity_remedy() -> String {
    format!(
        "workload identity needs its projected service-account token: the pod's service account \
         must carry the annotation azure.workload.identity/client-id, and the pod the label \
         azure.workload.identity/use: \"true\"; the webhook then sets {} and mounts the token",
        token::env::FEDERATED_TOKEN_FILE
    )
}

/// Seconds since the Unix epoch (a JWT time claim) as a time; 0 for nonsense.
pub(super) fn unix(secs: f64) -> SystemTime {
    if secs.is_finite() && secs >= 0.0 {
        UNIX_EPOCH + Duration::from_secs_f64(secs)
    } else {
        UNIX_EPOCH
    }
}

/// `t` in the local time zone, RFC 3339.
pub(super) fn local_time(t: SystemTime, offset: time::UtcOffset) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .map(|d| d.to_offset(offset))
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

/// `3599` -> `59m59s`; negative for the past (`-12s`).
pub(super) fn human(secs: i64) -> String {
    let sign = if secs < 0 { "-" } else { "" };
    let s = secs.unsigned_abs();
    match s {
        0..=59 => format!("{sign}{s}s"),
        60..=3599 => format!("{sign}{}m{:02}s", s / 60, s % 60),
        _ => format!("{sign}{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

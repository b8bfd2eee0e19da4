//! What every check works with: the upstream it checks ([`Planned`]) and the run it records
//! its verdict into ([`Run`]).

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value};

use super::report::{Check, Report, Verdict};
use crate::config::UpstreamPlan;
use crate::token::TokenSource;
use crate::upstream::UpstreamConnector;

/// Collects the checks of one run.
pub(super) struct Run {
    /// The checks so far.
    pub(super) report: Report,
    /// The upstream the checks now recorded belong to (`None`: the configuration).
    pub(super) upstream: Option<String>,
}

impl Run {
    /// Records one check, timed from `started`.
    pub(super) fn push(
        &mut self,
        step: &str,
        verdict: Verdict,
        started: Instant,
        detail: impl Into<String>,
        remedy: Option<String>,
        facts: Map<String, Value>,
    ) {
        self.report.checks.push(Check {
            step: step.into(),
            upstream: self.upstream.clone(),
            verdict,
            ms: started.elapsed().as_millis() as u64,
            detail: one_line(&detail.into()),
            remedy,
            facts,
        });
    }

    /// Records `steps` as skipped, except those this upstream already has a verdict for.
    pub(super) fn skip(&mut self, steps: &[&str], why: &str) {
        for s in steps {
            let done = self
                .report
                .checks
                .iter()
                .any(|c| c.step == *s && c.upstream == self.upstream);
            if done {
                continue;
            }
            self.push(
                s,
                Verdict::Skip,
                Instant::now(),
                format!("not run: {why}"),
                None,
                Map::new(),
            );
        }
    }
}

/// `s` with control characters (newlines in an error) made spaces: one report line per check.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// What one upstream needs, built from its settings (configuration errors found here exit 64).
pub(super) struct Planned {
    /// The upstream's name (`default` for a single upstream).
    pub(super) name: String,
    /// Its part of the validated configuration.
    pub(super) plan: UpstreamPlan,
    /// Its connector: address, TLS name and trust, timeouts.
    pub(super) connector: Arc<UpstreamConnector>,
    /// Its token source, as the daemon would build it.
    pub(super) source: Arc<dyn TokenSource>,
}

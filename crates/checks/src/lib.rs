//! The extra checks of a canary judgement, beside the router's counts (`judgement.checks`):
//! each gives pass, fail, inconclusive or could-not-judge with its evidence, and
//! [`combine`] folds them with the router's verdict into the one verdict `cohort analyze`,
//! `promote`'s gates and the autopilot act on. Data that could not be fetched is never a pass.
//!
//! The judging ([`prometheus`], [`web`], [`job`]) is pure; [`fetch`] asks the servers and
//! [`run`] puts the two together for one track and its baseline.

#![forbid(unsafe_code)]

pub mod fetch;
pub mod job;
pub mod prometheus;
pub mod run;
pub mod web;

use cohort_judge::Verdict;
use serde::Serialize;

/// What one check says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The track is not worse by this check.
    Pass,
    /// The track is worse by this check.
    Fail,
    /// The data is there, but not enough of it to say (too few events, no series yet, a
    /// Job still running).
    Inconclusive,
    /// The data could not be had: a server down or refusing, a bad query, a wrong answer.
    CouldNotJudge,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Inconclusive => "inconclusive",
            Outcome::CouldNotJudge => "could not judge",
        })
    }
}

/// One check's result for a track.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckResult {
    /// The check's name.
    pub name: String,
    /// `prometheus`, `web` or `job`.
    pub kind: &'static str,
    /// What it says.
    pub outcome: Outcome,
    /// Why, in one line.
    pub summary: String,
    /// The track's value (a query's value, a ratio's rate, a web check's JSON value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_value: Option<f64>,
    /// The baseline's, where compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_value: Option<f64>,
    /// More evidence: the queries as sent, a Job's log tail, the start of an answer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
    /// Prometheus queries this check made.
    pub queries: u32,
}

impl CheckResult {
    /// A result with no values.
    pub fn new(name: &str, kind: &'static str, outcome: Outcome, summary: impl Into<String>) -> CheckResult {
        CheckResult {
            name: name.to_string(),
            kind,
            outcome,
            summary: summary.into(),
            track_value: None,
            baseline_value: None,
            evidence: vec![],
            queries: 0,
        }
    }

    /// `name: outcome: summary`.
    pub fn one_line(&self) -> String {
        format!("{}: {}: {}", self.name, self.outcome, self.summary)
    }
}

/// The router's verdict and the checks' outcomes, as one: any failure fails it; otherwise
/// anything not passing (too little data, data that could not be had) keeps it
/// inconclusive; it passes only when the router and every check pass.
pub fn combine(router: Verdict, checks: &[CheckResult]) -> Verdict {
    if router == Verdict::Fail || checks.iter().any(|c| c.outcome == Outcome::Fail) {
        Verdict::Fail
    } else if router == Verdict::Inconclusive || checks.iter().any(|c| c.outcome != Outcome::Pass) {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    }
}

/// The checks' part of a verdict's one-line evidence: the failing ones first, then those
/// that kept it from passing; nothing when every check passed or there are none.
pub fn evidence_line(checks: &[CheckResult]) -> Option<String> {
    let of = |o: Outcome| {
        checks
            .iter()
            .filter(move |c| c.outcome == o)
            .map(CheckResult::one_line)
    };
    let worst: Vec<String> = of(Outcome::Fail)
        .chain(of(Outcome::CouldNotJudge))
        .chain(of(Outcome::Inconclusive))
        .collect();
    match (worst.is_empty(), checks.is_empty()) {
        (_, true) => None,
        (true, false) => Some(format!("checks passed: {}", names(checks))),
        (false, false) => Some(format!("checks: {}", worst.join("; "))),
    }
}

fn names(checks: &[CheckResult]) -> String {
    checks
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, outcome: Outcome) -> CheckResult {
        CheckResult::new(name, "web", outcome, "why")
    }

    #[test]
    fn a_failing_check_fails_the_verdict_and_anything_short_of_a_pass_keeps_it_inconclusive() {
        use Outcome::*;
        assert_eq!(combine(Verdict::Pass, &[]), Verdict::Pass);
        assert_eq!(
            combine(Verdict::Pass, &[r("a", Pass), r("b", Pass)]),
            Verdict::Pass
        );
        assert_eq!(
            combine(Verdict::Pass, &[r("a", Pass), r("b", Fail)]),
            Verdict::Fail
        );
        assert_eq!(combine(Verdict::Inconclusive, &[r("a", Fail)]), Verdict::Fail);
        assert_eq!(combine(Verdict::Fail, &[r("a", Pass)]), Verdict::Fail);
        assert_eq!(
            combine(Verdict::Pass, &[r("a", Inconclusive)]),
            Verdict::Inconclusive
        );
        // Data that could not be had is never a pass.
        assert_eq!(
            combine(Verdict::Pass, &[r("a", CouldNotJudge)]),
            Verdict::Inconclusive
        );
        assert_eq!(
            combine(Verdict::Inconclusive, &[r("a", Pass)]),
            Verdict::Inconclusive
        );
    }

    #[test]
    fn the_evidence_line_names_the_checks_that_decided() {
        use Outcome::*;
        assert_eq!(evidence_line(&[]), None);
        assert_eq!(
            evidence_line(&[r("a", Pass), r("b", Pass)]).as_deref(),
            Some("checks passed: a, b")
        );
        assert_eq!(
            evidence_line(&[
                r("a", Inconclusive),
                r("b", Pass),
                r("c", Fail),
                r("d", CouldNotJudge)
            ])
            .as_deref(),
            Some("checks: c: fail: why; d: could not judge: why; a: inconclusive: why")
        );
    }
}

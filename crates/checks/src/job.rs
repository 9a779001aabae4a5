//! Job checks, judged: a Kubernetes Job run against the track passes when it succeeds and
//! fails when it fails, with the tail of its logs as evidence; one still running keeps the
//! verdict inconclusive.

use crate::{CheckResult, Outcome};

/// Where a check's Job is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Running (or waiting for its pod) for this long.
    Running {
        /// Seconds since it started, if known.
        seconds: Option<u64>,
    },
    /// Done: it succeeded.
    Succeeded,
    /// Done: it failed.
    Failed {
        /// The Job's reason (`BackoffLimitExceeded`, `DeadlineExceeded`).
        reason: String,
        /// Its message.
        message: String,
    },
}

/// Lines of a Job's logs kept in the evidence.
pub const LOG_LINES: usize = 20;

/// Judges the Job `job` of check `name`.
pub fn judge(name: &str, job: &str, state: &JobState, log_tail: &str) -> CheckResult {
    let (outcome, summary) = match state {
        JobState::Succeeded => (Outcome::Pass, format!("Job {job} succeeded")),
        JobState::Failed { reason, message } => {
            let why = match (reason.is_empty(), message.is_empty()) {
                (true, true) => String::new(),
                (false, true) => format!(" ({reason})"),
                (true, false) => format!(": {message}"),
                (false, false) => format!(" ({reason}: {message})"),
            };
            (Outcome::Fail, format!("Job {job} failed{why}"))
        }
        JobState::Running { seconds } => (
            Outcome::Inconclusive,
            match seconds {
                Some(s) => format!(
                    "Job {job} still running after {}",
                    cohort_judge::human_seconds(*s)
                ),
                None => format!("Job {job} has not started yet"),
            },
        ),
    };
    let mut result = CheckResult::new(name, "job", outcome, summary);
    let lines: Vec<&str> = log_tail.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_LINES)..];
    if outcome != Outcome::Pass && !tail.is_empty() {
        result
            .evidence
            .push(format!("last {} lines of its logs:", tail.len()));
        result.evidence.extend(tail.iter().map(|l| format!("  {l}")));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_job_fails_with_its_reason_and_log_tail_and_a_running_one_is_inconclusive() {
        let logs: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let failed = JobState::Failed {
            reason: "BackoffLimitExceeded".into(),
            message: "Job has reached the specified backoff limit".into(),
        };
        let r = judge("it", "web-canary-it-1", &failed, &logs);
        assert_eq!(r.outcome, Outcome::Fail);
        assert_eq!(
            r.summary,
            "Job web-canary-it-1 failed (BackoffLimitExceeded: Job has reached the specified backoff limit)"
        );
        assert_eq!(r.evidence.len(), LOG_LINES + 1);
        assert_eq!(r.evidence[0], "last 20 lines of its logs:");
        assert_eq!(r.evidence[LOG_LINES], "  line 30");
        let ok = judge("it", "j", &JobState::Succeeded, &logs);
        assert_eq!((ok.outcome, ok.evidence.len()), (Outcome::Pass, 0));
        let running = judge("it", "j", &JobState::Running { seconds: Some(150) }, "");
        assert_eq!(running.outcome, Outcome::Inconclusive);
        assert_eq!(running.summary, "Job j still running after 3m");
    }
}

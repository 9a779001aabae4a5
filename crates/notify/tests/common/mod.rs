//! What the Slack and email tests share: fast retries and a problem opened, then resolved.

use std::num::NonZeroU32;
use std::time::Duration;

use cohort_notify::send::RetryPolicy;
use cohort_notify::{Event, Problem};

/// `attempts` tries, milliseconds apart, so the retry tests run fast.
pub fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts: NonZeroU32::new(attempts).expect("non-zero"),
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(40),
    }
}

/// The canary of account-service short of endpoints, with `summary`.
pub fn opened(summary: &str) -> Event {
    Event::Opened {
        problem: Problem::new("account-service", "canary:too-few-endpoints", summary),
        since: "2026-11-22T09:12:00Z".parse().expect("timestamp"),
    }
}

/// The same problem, resolved 28 minutes later.
pub fn resolved(summary: &str) -> Event {
    let Event::Opened { problem, since } = opened(summary) else {
        unreachable!("opened() is Opened")
    };
    Event::Resolved {
        problem,
        since,
        resolved_at: "2026-11-22T09:40:00Z".parse().expect("timestamp"),
    }
}

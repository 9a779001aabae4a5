//! The agent's Prometheus metrics (served on its admin port at `/metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of a poll.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PollLabels {
    /// `changed`, `unchanged` or `error`.
    pub result: &'static str,
}

/// Labels of an apply.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApplyLabels {
    /// The service.
    pub service: String,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Everything the agent counts.
#[derive(Default)]
pub struct Metrics {
    /// Polls of the source, by result.
    pub polls: Family<PollLabels, Counter>,
    /// Applies of a service, by result.
    pub applies: Family<ApplyLabels, Counter>,
    /// Revisions refused as invalid.
    pub invalid_revisions: Counter,
    /// Reports the source did not take.
    pub report_errors: Counter,
    /// When a poll last reached the source (seconds since the Unix epoch).
    pub last_poll_success: Gauge,
    /// Services whose seen revision is not applied (pending or failed).
    pub services_behind: Gauge,
}

impl Metrics {
    /// A registry holding these metrics, prefixed `cohort_agent_`.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("cohort_agent");
        r.register(
            "polls",
            "Polls of the desired-state source, by result",
            self.polls.clone(),
        );
        r.register("applies", "Applies of a service, by result", self.applies.clone());
        r.register(
            "invalid_revisions",
            "Revisions refused because they do not validate",
            self.invalid_revisions.clone(),
        );
        r.register(
            "report_errors",
            "Reports the control API did not take",
            self.report_errors.clone(),
        );
        r.register(
            "last_poll_success_timestamp_seconds",
            "When a poll last reached the source",
            self.last_poll_success.clone(),
        );
        r.register(
            "services_behind",
            "Services whose newest revision is not applied yet",
            self.services_behind.clone(),
        );
        r
    }
}

//! The agent's loop: poll the source, check what arrived, apply the services whose objects
//! changed (one at a time, recording each success at once), report, wait with jitter (and
//! backoff while the source is unreachable). A revision that does not check out is skipped
//! and the cluster keeps the last good one; an outage only delays work.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cohort_control::{DesiredState, Report, ServiceHealth, ServiceReport, ServiceState};
use cohort_render::Rendered;
use futures::StreamExt as _;

use crate::metrics::{ApplyLabels, Metrics, PollLabels};
use crate::source::{Polled, Source};
use crate::state::{Applied, AppliedState};
use crate::target::{Target, TargetError};

/// How the agent paces itself.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The cluster's name (reports carry it).
    pub cluster: String,
    /// Time between polls while all is well (±20% jitter, so a fleet does not poll in step).
    pub interval: Duration,
    /// The longest wait between polls while the source is unreachable.
    pub max_backoff: Duration,
    /// On shutdown, how long an apply in progress may still take before it is abandoned.
    pub shutdown_grace: Duration,
    /// How many services are applied at once (at least 1).
    pub parallel: usize,
    /// Where the routers' counts for the reports come from.
    pub router_counts: crate::counts::RouterCounts,
}

/// Applies one service, saying so in the log; the service comes back with the result.
async fn apply_one<'a, T: Target>(
    target: &T,
    svc: &'a CheckedService,
    revision: &str,
) -> (&'a CheckedService, Result<(), TargetError>) {
    tracing::info!(service = %svc.name, revision = %revision, "applying");
    (svc, target.apply(&svc.name, &svc.objects).await)
}

/// The time until the next poll: the interval after a success, doubling with each failure
/// in a row up to `max_backoff`; `r` in [0, 1) spreads it by ±20%.
pub fn next_delay(interval: Duration, max_backoff: Duration, failures: u32, r: f64) -> Duration {
    let base = match failures {
        0 => interval,
        n => interval
            .saturating_mul(1u32 << n.min(16))
            .min(max_backoff.max(interval)),
    };
    base.mul_f64(0.8 + 0.4 * r.clamp(0.0, 1.0))
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pass {
    /// Whether the source answered.
    pub reached_source: bool,
    /// Whether it had a revision the agent had not seen.
    pub new_revision: bool,
    /// Services applied in this pass.
    pub applied: Vec<String>,
    /// Services whose apply failed.
    pub failed: Vec<String>,
    /// Why the newest revision was refused, if it was.
    pub invalid: Option<String>,
    /// Whether a report was sent (when something changed, and every [`HEARTBEAT_PASSES`]).
    pub reported: bool,
}

/// An unchanged report is sent again after this many passes (5 minutes at the default
/// interval), so the fleet view sees the agent alive; changes are sent at once.
pub const HEARTBEAT_PASSES: u32 = 10;

/// What `/ready` answers from.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    /// The last poll reached the source.
    pub source_reachable: bool,
    /// Why not, if not.
    pub problem: Option<String>,
    /// The revision applied in full (every service), if any.
    pub applied_revision: Option<String>,
}

struct Checked {
    revision: String,
    services: Vec<CheckedService>,
    /// What `cohort status` expects of the namespace at this revision.
    expectations: cohort_health::Expectations,
}

struct CheckedService {
    name: String,
    objects: Vec<Rendered>,
    digest: String,
}

/// The agent.
pub struct Agent<S, T> {
    source: S,
    target: T,
    settings: Settings,
    state: AppliedState,
    desired: Option<Checked>,
    seen: Option<String>,
    invalid: Option<String>,
    source_problem: Option<String>,
    failures: BTreeMap<String, String>,
    health: Vec<ServiceHealth>,
    source_failures: u32,
    /// The last report sent (its time left out), and passes since.
    last_report: Option<Report>,
    passes_since_report: u32,
    metrics: Arc<Metrics>,
    readiness: Arc<Mutex<Readiness>>,
    counter: crate::counts::Counter,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// An error with its causes, on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.ends_with(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

impl<S: Source, T: Target> Agent<S, T> {
    /// An agent that picks up where the last one left off (its state is read from the target).
    pub async fn start(
        source: S,
        target: T,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, TargetError> {
        let state = target.load().await?;
        Ok(Agent {
            source,
            target,
            settings,
            state,
            desired: None,
            seen: None,
            invalid: None,
            source_problem: None,
            failures: BTreeMap::new(),
            health: vec![],
            source_failures: 0,
            last_report: None,
            passes_since_report: 0,
            metrics,
            readiness: Arc::new(Mutex::new(Readiness::default())),
            counter: crate::counts::Counter::default(),
        })
    }

    /// What `/ready` answers from.
    pub fn readiness(&self) -> Arc<Mutex<Readiness>> {
        self.readiness.clone()
    }

    /// The services as applied.
    pub fn applied(&self) -> &AppliedState {
        &self.state
    }

    /// Checks a desired state: for this cluster and namespace, every object one cohort
    /// renders. Nothing of a state that fails is applied.
    fn check(&self, state: &DesiredState) -> Result<Checked, String> {
        if !state.problems.is_empty() {
            return Err(format!(
                "revision {} is not valid: {}",
                state.revision,
                state.problems.join("; ")
            ));
        }
        if state.cluster != self.settings.cluster {
            return Err(format!(
                "revision {} is for cluster {}, not {}",
                state.revision, state.cluster, self.settings.cluster
            ));
        }
        if state.namespace != self.target.namespace() {
            return Err(format!(
                "revision {} is for namespace {}, but the agent applies in {}; run the agent in the pipeline's namespace",
                state.revision,
                state.namespace,
                self.target.namespace()
            ));
        }
        let mut services = vec![];
        let mut expectations = cohort_health::Expectations {
            stages: state.stages.clone(),
            ..Default::default()
        };
        for svc in &state.services {
            expectations.services.insert(
                svc.name.clone(),
                cohort_health::ExpectedService::from_objects(&svc.objects, &state.stages),
            );
            let objects = cohort_control::checked_objects(state, svc).map_err(|e| e.to_string())?;
            services.push(CheckedService {
                name: svc.name.clone(),
                digest: cohort_control::digest(&svc.objects),
                objects,
            });
        }
        Ok(Checked {
            revision: state.revision.clone(),
            services,
            expectations,
        })
    }

    /// One poll, apply and report.
    pub async fn pass(&mut self) -> Pass {
        let mut pass = Pass::default();
        match self.source.poll().await {
            Ok(polled) => {
                pass.reached_source = true;
                self.source_failures = 0;
                self.source_problem = None;
                self.metrics.last_poll_success.set(now());
                if let Polled::Changed(state) = polled {
                    pass.new_revision = self.seen.as_deref() != Some(state.revision.as_str());
                    self.metrics
                        .polls
                        .get_or_create(&PollLabels { result: "changed" })
                        .inc();
                    self.seen = Some(state.revision.clone());
                    match self.check(&state) {
                        Ok(checked) => {
                            tracing::info!(revision = %checked.revision, services = checked.services.len(), "new revision");
                            self.invalid = None;
                            self.desired = Some(checked);
                        }
                        Err(why) => {
                            tracing::error!(revision = %state.revision, problem = %why, "revision skipped; the cluster keeps the last good one");
                            self.metrics.invalid_revisions.inc();
                            self.invalid = Some(why);
                        }
                    }
                } else {
                    self.metrics
                        .polls
                        .get_or_create(&PollLabels { result: "unchanged" })
                        .inc();
                }
            }
            Err(e) => {
                self.source_failures = self.source_failures.saturating_add(1);
                self.metrics
                    .polls
                    .get_or_create(&PollLabels { result: "error" })
                    .inc();
                let why = chain(&e);
                tracing::warn!(source = %self.source.describe(), error = %why, auth = e.is_auth(), "poll failed; the cluster is left as it is");
                self.source_problem = Some(why);
            }
        }
        pass.invalid = self.invalid.clone();
        // /ready follows the poll at once, not after the applies that may follow it.
        if let Ok(mut r) = self.readiness.lock() {
            r.source_reachable = pass.reached_source;
            r.problem = self.source_problem.clone();
        }
        self.reconcile(&mut pass).await;
        let expected = self.desired.as_ref().map(|d| &d.expectations);
        match self.target.health(expected).await {
            Ok(health) => self.health = health,
            Err(e) => tracing::warn!(error = %chain(&e), "cannot evaluate the namespace"),
        }
        if let Some(desired) = &self.desired {
            let services: Vec<(String, u16)> = desired
                .services
                .iter()
                .filter_map(|s| Some((s.name.clone(), crate::counts::router_admin_port(&s.objects)?)))
                .collect();
            self.counter
                .read(
                    &self.settings.router_counts,
                    &self.target,
                    &services,
                    self.settings.interval,
                )
                .await;
        }
        let report = self.report();
        self.metrics.services_behind.set(
            report
                .services
                .iter()
                .filter(|s| s.state != ServiceState::Applied)
                .count() as i64,
        );
        let unchanged = Report {
            at: 0,
            ..report.clone()
        };
        let due = self.last_report.as_ref() != Some(&unchanged)
            || self.passes_since_report + 1 >= HEARTBEAT_PASSES
            || self.source.report_wanted();
        self.passes_since_report += 1;
        if pass.reached_source && due {
            match self.source.report(&report).await {
                Ok(()) => {
                    pass.reported = true;
                    self.counter.taken();
                    self.last_report = Some(unchanged);
                    self.passes_since_report = 0;
                }
                Err(e) => {
                    self.metrics.report_errors.inc();
                    tracing::warn!(error = %chain(&e), "the report was not taken");
                }
            }
        }
        if let Ok(mut r) = self.readiness.lock() {
            r.applied_revision = report
                .services
                .iter()
                .all(|s| s.state == ServiceState::Applied)
                .then(|| self.desired.as_ref().map(|d| d.revision.clone()))
                .flatten();
        }
        pass
    }

    async fn reconcile(&mut self, pass: &mut Pass) {
        let Some(desired) = &self.desired else { return };
        let mut moved = false;
        let mut changed = vec![];
        for svc in &desired.services {
            if let Some(applied) = self.state.get_mut(&svc.name)
                && applied.digest == svc.digest
            {
                // Already in the cluster: the revision moves on without an apply.
                if applied.revision != desired.revision {
                    applied.revision = desired.revision.clone();
                    moved = true;
                }
                self.failures.remove(&svc.name);
                continue;
            }
            changed.push(svc);
        }
        // Services are independent: up to `parallel` are applied at once, each in its own
        // order under its own lease, and each recorded as soon as it is done.
        let target = &self.target;
        let revision = &desired.revision;
        let parallel = self.settings.parallel.max(1);
        let mut waiting = changed.into_iter();
        let mut applies = futures::stream::FuturesUnordered::new();
        loop {
            while applies.len() < parallel
                && let Some(svc) = waiting.next()
            {
                applies.push(apply_one(target, svc, revision));
            }
            let Some((svc, result)) = applies.next().await else {
                break;
            };
            match result {
                Ok(()) => {
                    tracing::info!(service = %svc.name, revision = %revision, "applied");
                    self.metrics
                        .applies
                        .get_or_create(&ApplyLabels {
                            service: svc.name.clone(),
                            result: "ok",
                        })
                        .inc();
                    self.failures.remove(&svc.name);
                    self.state.insert(
                        svc.name.clone(),
                        Applied {
                            revision: revision.clone(),
                            digest: svc.digest.clone(),
                            at: now(),
                        },
                    );
                    pass.applied.push(svc.name.clone());
                    // Recorded at once: a restart after this point does not apply it again.
                    if let Err(e) = target.save(&self.state).await {
                        tracing::error!(error = %chain(&e), "cannot save the agent's state; a restart applies this service again");
                    }
                }
                Err(e) => {
                    let why = chain(&e);
                    tracing::error!(service = %svc.name, revision = %revision, error = %why, "apply failed; retried on the next pass");
                    self.metrics
                        .applies
                        .get_or_create(&ApplyLabels {
                            service: svc.name.clone(),
                            result: "error",
                        })
                        .inc();
                    self.failures.insert(svc.name.clone(), why);
                    pass.failed.push(svc.name.clone());
                }
            }
        }
        drop(applies);
        let before = self.state.len();
        self.state
            .retain(|name, _| desired.services.iter().any(|s| &s.name == name));
        if (moved || self.state.len() != before)
            && let Err(e) = self.target.save(&self.state).await
        {
            tracing::error!(error = %chain(&e), "cannot save the agent's state");
        }
    }

    /// The report of where things stand.
    pub fn report(&self) -> Report {
        let services = self
            .desired
            .iter()
            .flat_map(|d| d.services.iter().map(move |s| (d, s)))
            .map(|(d, s)| {
                let applied = self.state.get(&s.name);
                let state = match (self.failures.get(&s.name), applied) {
                    (Some(_), _) => ServiceState::Failed,
                    (None, Some(a)) if a.revision == d.revision && a.digest == s.digest => {
                        ServiceState::Applied
                    }
                    _ => ServiceState::Pending,
                };
                ServiceReport {
                    name: s.name.clone(),
                    applied_revision: applied.map(|a| a.revision.clone()),
                    state,
                    error: self.failures.get(&s.name).cloned(),
                }
            })
            .collect();
        Report {
            cluster: self.settings.cluster.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            at: now(),
            seen_revision: self.seen.clone(),
            services,
            problems: self.invalid.iter().chain(&self.source_problem).cloned().collect(),
            health: self.health.clone(),
            counts: self.counter.pending(),
            counts_missing: self.counter.missing(),
        }
    }

    /// Runs passes until `shutdown` completes. A pass under way when it does may finish
    /// within the shutdown grace; past it, it is abandoned, and since only finished applies
    /// are recorded, the next start applies that service again.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let grace = self.settings.shutdown_grace;
        tracing::info!(source = %self.source.describe(), namespace = %self.target.namespace(), "agent started");
        loop {
            {
                let mut pass = std::pin::pin!(self.pass());
                tokio::select! {
                    _ = &mut pass => {}
                    () = &mut shutdown => {
                        tracing::info!(grace_seconds = grace.as_secs(), "shutting down; letting the pass under way finish");
                        if tokio::time::timeout(grace, &mut pass).await.is_err() {
                            tracing::warn!("the pass did not finish in time and was abandoned; the next start applies it again");
                        }
                        return;
                    }
                }
            }
            let delay = next_delay(
                self.settings.interval,
                self.settings.max_backoff,
                self.source_failures,
                fastrand::f64(),
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = &mut shutdown => {
                    tracing::info!("shut down between passes");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::next_delay;

    #[test]
    fn polls_spread_by_a_fifth_and_back_off_doubling_to_the_cap() {
        let s = Duration::from_secs;
        assert_eq!(next_delay(s(30), s(300), 0, 0.5), s(30));
        assert_eq!(next_delay(s(30), s(300), 0, 0.0), s(24));
        assert_eq!(next_delay(s(30), s(300), 0, 1.0), s(36));
        assert_eq!(next_delay(s(30), s(300), 1, 0.5), s(60));
        assert_eq!(next_delay(s(30), s(300), 2, 0.5), s(120));
        assert_eq!(next_delay(s(30), s(300), 4, 0.5), s(300));
        assert_eq!(next_delay(s(30), s(300), 60, 0.5), s(300));
        assert_eq!(
            next_delay(s(30), s(10), 3, 0.5),
            s(30),
            "the cap never shortens the interval"
        );
    }
}

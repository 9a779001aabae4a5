//! The judgement's extra checks (`judgement.checks`) for one track of a service: Prometheus
//! and web checks through `cohort-checks`, Job checks through the cluster.

use std::time::{Duration, Instant};

use cohort_checks::job::JobState;
use cohort_checks::run::{Judging, Subject};
use cohort_checks::{CheckResult, Outcome};
use cohort_core::checks::{Check, CheckKind, Checks};
use cohort_spec::Repo;
use cohort_spec::Service;

/// How Job checks are run.
pub enum Jobs<'a> {
    /// Start the Job if needed and wait for it to finish, saying so on stderr (analyze, promote).
    Wait(&'a cohort_kube::Target),
    /// Start the Job if needed and read where it is, without waiting (each autopilot pass).
    Look(&'a cohort_kube::Target),
    /// Read where the Job is, starting none (a dry run).
    Read(&'a cohort_kube::Target),
}

/// A service's checks: the pipeline's with its own over them.
pub fn checks_of(repo: &Repo, svc: &Service) -> Checks {
    Checks::merged(&repo.pipeline.checks, &svc.spec.checks)
}

/// The version the release repo gives `track`, if any.
pub fn version(svc: &Service, track: &str) -> Option<String> {
    cohort_core::TrackName::new(track)
        .ok()
        .and_then(|t| svc.state.version(&t).map(ToString::to_string))
}

/// The track's address inside the cluster, as Job checks and templates get it.
pub fn address(repo: &Repo, svc: &Service, track: &str) -> String {
    format!(
        "http://{}-{track}.{}.svc:{}",
        svc.spec.name, repo.pipeline.namespace, svc.spec.port
    )
}

/// Runs `svc`'s checks for `track` against `baseline`.
pub async fn run(
    repo: &Repo,
    svc: &Service,
    (track, baseline): (&str, &str),
    window_seconds: u64,
    settings: &cohort_judge::Settings,
    jobs: &Jobs<'_>,
) -> Vec<CheckResult> {
    let checks = checks_of(repo, svc);
    if checks.checks.is_empty() {
        return vec![];
    }
    let subject = |t: &str| Subject {
        track: t.to_string(),
        version: version(svc, t).unwrap_or_default(),
        address: address(repo, svc, t),
    };
    let judging = Judging {
        service: svc.spec.name.as_str(),
        namespace: &repo.pipeline.namespace,
        window_seconds,
        settings,
        track: subject(track),
        baseline: subject(baseline),
        at: jiff::Timestamp::now().as_millisecond() as f64 / 1000.0,
    };
    // One connection for every Job check of this judgement, made when the first needs it.
    let cluster = tokio::sync::OnceCell::new();
    let judging_ref = &judging;
    let cluster_ref = &cluster;
    cohort_checks::run::run(&checks, judging_ref, |c: Check| async move {
        job(&c, repo, svc, judging_ref, cluster_ref, jobs).await
    })
    .await
}

type Connected = Result<cohort_kube::Cluster, String>;

async fn job(
    c: &Check,
    repo: &Repo,
    svc: &Service,
    judging: &Judging<'_>,
    cluster: &tokio::sync::OnceCell<Connected>,
    jobs: &Jobs<'_>,
) -> CheckResult {
    let could_not = |why: String| CheckResult::new(&c.name, "job", Outcome::CouldNotJudge, why);
    let CheckKind::Job { spec } = &c.kind else {
        return could_not("not a Job check".into());
    };
    let (wait, start, target) = match jobs {
        Jobs::Wait(t) => (true, true, *t),
        Jobs::Look(t) => (false, true, *t),
        Jobs::Read(t) => (false, false, *t),
    };
    let timeout = Duration::from_millis(c.timeout.as_millis());
    let run = cohort_kube::CheckJobFor {
        namespace: &repo.pipeline.namespace,
        service: svc.spec.name.as_str(),
        track: &judging.track.track,
        version: &judging.track.version,
        check: &c.name,
        address: &judging.track.address,
        timeout_seconds: timeout.as_secs(),
    };
    let spec = judging.fill_job(spec);
    let object = match cohort_kube::check_job_object(&spec, &run) {
        Ok(o) => o,
        Err(e) => return could_not(format!("its Job cannot be made: {e}")),
    };
    let connected = cluster
        .get_or_init(|| async {
            cohort_kube::Cluster::connect(target)
                .await
                .map_err(|e| format!("cannot reach the cluster to run its Job: {e}"))
        })
        .await;
    let cluster = match connected {
        Ok(c) => c,
        Err(e) => return could_not(e.clone()),
    };
    let name = match start {
        true => match cluster.start_check_job(&object).await {
            Ok(n) => n,
            Err(e) => return could_not(format!("cannot start its Job: {e}")),
        },
        false => object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    };
    let started = Instant::now();
    let mut said = Instant::now();
    loop {
        let state = match cluster.check_job_state(&name).await {
            Ok(Some(s)) => s,
            Ok(None) if !start => {
                return CheckResult::new(
                    &c.name,
                    "job",
                    Outcome::Inconclusive,
                    format!("its Job {name} has not been started (a dry run starts none)"),
                );
            }
            Ok(None) => return could_not(format!("its Job {name} is gone (deleted while it ran?)")),
            Err(e) => return could_not(format!("cannot read its Job {name}: {e}")),
        };
        if !state.ours {
            return could_not(format!(
                "a Job named {name} exists that cohort did not make for this run; delete it (kubectl delete job {name}) to run the check"
            ));
        }
        let seconds = state
            .started
            .map(|s| (jiff::Timestamp::now().as_second() - s).max(0) as u64);
        let job_state = match state.outcome {
            cohort_kube::JobOutcome::Succeeded => JobState::Succeeded,
            cohort_kube::JobOutcome::Failed { reason, message } => JobState::Failed { reason, message },
            cohort_kube::JobOutcome::Running => JobState::Running { seconds },
        };
        let running = matches!(job_state, JobState::Running { .. });
        // The Job's own deadline ends it; a little more lets its status arrive.
        if !running || !wait || started.elapsed() > timeout + Duration::from_secs(30) {
            let mut result = cohort_checks::job::judge(&c.name, &name, &job_state, &state.log_tail);
            // Its outcome is this version's record: a failure that was not the build's (an
            // image not pulled, a node lost) is run again only by deleting it.
            if result.outcome == Outcome::Fail {
                result.evidence.push(format!(
                    "to run it again: kubectl -n {} delete job {name}",
                    judging.namespace
                ));
            }
            return result;
        }
        if said.elapsed() >= Duration::from_secs(10) {
            eout!(
                "cohort: waiting for the Job {name} of the check `{}` ({} s so far, at most {})",
                c.name,
                started.elapsed().as_secs(),
                cohort_judge::human_seconds(timeout.as_secs())
            );
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

//! `cohort autopilot`: on every pass, reads the release repo, judges every track that runs a
//! newer version than the last stage against it from the routers' own counts, asks
//! `cohort_autopilot::decide` what to do for each service, and records each action as the
//! commit `rollback`, `promote` or a ramp step would make, authored by `cohort autopilot`
//! with the judgement's evidence.

use std::collections::BTreeMap;
use std::path::PathBuf;

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use cohort_autopilot::{Decision, Inputs, TrackFacts, decide, describe};
use cohort_core::{Printable, TrackName};
use cohort_judge::{Verdict, WindowStats};
use cohort_release::git::ReleaseRepo;
use cohort_release::history::{Entry, arrived_at, entries, versions_seen};
use cohort_release::plan::{self, Planned, PromoteRequest};
use cohort_release::record::{Action, commit_message};
use cohort_release::snapshot::head_files;
use cohort_spec::{Repo, Service, state_path, write_state};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use crate::analyze_cmd::{admin_base, effective, fetch, settings};
use crate::cli::{AutopilotArgs, Cli, TextOrJson};
use crate::repo_cmds::{prefix_in, repo_dir, repo_root, valid_or_report};
use crate::{CouldNotApply, CouldNotCheck, InvalidRepo, Reported};

/// Who the autopilot's commits are by.
const AUTHOR: (&str, &str) = ("cohort autopilot", "autopilot@cohort.invalid");

/// A judgement made on a pass: the track, its verdict, the evidence in one line, and the
/// extra checks' results behind it.
type Judged = (String, Verdict, String, Vec<cohort_checks::CheckResult>);

/// What one pass did for one service.
struct Outcome {
    service: String,
    decision: Decision,
    /// The commit made, if any (none in a dry run or when waiting).
    commit: Option<String>,
    /// The judgements made, per track.
    judged: Vec<Judged>,
    /// The tracks whose version has rolled out.
    rolled_out: Vec<String>,
    /// Why the action due could not be taken, if it could not.
    error: Option<String>,
}

impl Outcome {
    fn json(&self) -> Value {
        json!({
            "service": self.service,
            "decision": self.decision,
            "commit": self.commit,
            "judgements": self.judged.iter().map(|(t, v, e, c)| json!({"track": t, "verdict": v, "evidence": e, "checks": c})).collect::<Vec<_>>(),
            "rolled_out": self.rolled_out,
            "error": self.error,
        })
    }

    fn lines(&self, dry_run: bool) -> Vec<String> {
        let s = &self.service;
        if let Some(e) = &self.error {
            return vec![
                format!("{s}: could not {}", describe(&self.decision)),
                format!("  {}", Printable(e)),
            ];
        }
        match &self.decision {
            Decision::Wait { reasons, .. } if reasons.is_empty() => vec![format!("{s}: nothing under way")],
            Decision::Wait { reasons, .. } => {
                let mut out = vec![format!("{s}: waiting")];
                out.extend(reasons.iter().map(|r| format!("  {}", Printable(r))));
                out
            }
            action => {
                let done = match (&self.commit, dry_run) {
                    (Some(c), _) => format!(" ({})", &c[..c.len().min(9)]),
                    (None, true) => " (dry run: nothing committed)".to_string(),
                    (None, false) => String::new(),
                };
                vec![
                    format!("{s}: {}{done}", describe(action)),
                    format!("  {}", Printable(action.evidence().unwrap_or_default())),
                ]
            }
        }
    }
}

/// The routers' counts added up pass after pass by a long-running autopilot. The sequential
/// judgement keeps its confidence for a sample that grows, look after look; a sliding window
/// read again and again would not be one.
///
/// A track and its baseline are summed as a pair from the same pass on, so both sides of a
/// judgement cover the same span; a pair ends when either side's version changes.
#[derive(Default)]
struct Accumulated {
    /// Per source (a URL or a pod): the router's last second read.
    until: BTreeMap<String, u64>,
    /// Pull mode: where the control API's counts were last read up to.
    control_mark: Option<String>,
    /// Per (service, track, version, baseline version): the pair's sum so far.
    pairs: BTreeMap<(String, String, String, String), Pair>,
}

/// A track's and its baseline's counts summed since the pair began.
struct Pair {
    stats: WindowStats,
    /// Seconds the sum spans: the first read's, plus the time since.
    first_seconds: u64,
    began: std::time::Instant,
}

/// What a running autopilot counts (its admin port's `/metrics`, prefixed `cohort_autopilot_`).
#[derive(Default)]
struct Metrics {
    leader: Gauge,
    passes: Family<PassLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    verdicts: Family<VerdictLabels, Gauge>,
    last_pass_success: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PassLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    service: String,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    service: String,
    track: String,
    verdict: &'static str,
}

impl Metrics {
    fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("cohort_autopilot");
        r.register(
            "passes",
            "Passes over the release repo, by result",
            self.passes.clone(),
        );
        r.register(
            "leader",
            "1 while this autopilot holds the lease and acts, 0 while another does",
            self.leader.clone(),
        );
        r.register(
            "decisions",
            "Decisions per service: rollback, ramp, promote, held (by a freeze or window) or wait",
            self.decisions.clone(),
        );
        r.register(
            "verdict",
            "1 for each track's verdict on the last pass (pass, fail, inconclusive)",
            self.verdicts.clone(),
        );
        r.register(
            "last_pass_success",
            "When a pass last ran to the end (seconds since the Unix epoch)",
            self.last_pass_success.clone(),
        );
        r
    }

    fn observe(&self, outcomes: &[Outcome]) {
        self.verdicts.clear();
        for o in outcomes {
            self.decisions
                .get_or_create(&DecisionLabels {
                    service: o.service.clone(),
                    action: o.decision.kind(),
                })
                .inc();
            for (track, verdict, ..) in &o.judged {
                let verdict = match verdict {
                    Verdict::Pass => "pass",
                    Verdict::Fail => "fail",
                    Verdict::Inconclusive => "inconclusive",
                };
                self.verdicts
                    .get_or_create(&VerdictLabels {
                        service: o.service.clone(),
                        track: track.clone(),
                        verdict,
                    })
                    .set(1);
            }
        }
    }
}

/// Runs `cohort autopilot`.
pub fn run(cli: &Cli, args: &AutopilotArgs) -> Result<()> {
    if args.interval < std::time::Duration::from_secs(1) {
        return Err(crate::UsageError(format!(
            "--interval {}ms: a pass reads every router and the release repo; give at least 1s",
            args.interval.as_millis()
        ))
        .into());
    }
    let runtime = crate::runtime()?;
    if args.once {
        let (outcomes, notifier) = match runtime.block_on(pass(cli, args, None, None)) {
            Ok(done) => done,
            Err(e) => {
                // A script reading the JSON learns why too (the exit status says how bad).
                if args.output == TextOrJson::Json {
                    let why = match e.is::<InvalidRepo>() || e.is::<Reported>() {
                        true => "the release repo is invalid; its errors are on stderr".to_string(),
                        false => format!("{e:#}"),
                    };
                    out_exact!(
                        "{}",
                        serde_json::to_string_pretty(
                            &json!({"dry_run": args.dry_run, "services": [], "error": why})
                        )?
                    );
                }
                return Err(e);
            }
        };
        runtime.block_on(tell(notifier, &events(&outcomes, None)));
        say(args, &outcomes, None)?;
        return match outcomes.iter().any(|o| o.error.is_some()) {
            true => Err(Reported.into()),
            false => Ok(()),
        };
    }
    runtime.block_on(keep_at_it(cli, args))
}

/// A running autopilot: a pass every `--interval` until SIGTERM or Ctrl-C; a pass that fails
/// is said and tried again at the next, and `/ready` says why until one succeeds.
async fn keep_at_it(cli: &Cli, args: &AutopilotArgs) -> Result<()> {
    let metrics = Arc::new(Metrics::default());
    let problem: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(Some("no pass has run yet".to_string())));
    if let Some(addr) = args.admin {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for the admin port"))?;
        eout!(
            "cohort autopilot: admin port on {} (/live /ready /metrics)",
            listener.local_addr()?
        );
        let problem = Arc::clone(&problem);
        let ready: cohort_agent::admin::Ready = Arc::new(move || match problem.lock() {
            Ok(p) => p.clone().map_or(Ok(()), Err),
            Err(_) => Err("the autopilot's state is unreadable".into()),
        });
        tokio::spawn(cohort_agent::admin::serve(
            listener,
            metrics.registry(),
            ready,
            std::future::pending(),
        ));
    }
    let mut last_said: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // Passes add up what the routers counted since the last one.
    let mut accumulated = Accumulated::default();
    // What each service was last told to be held back by: said once, not every pass.
    let mut held: BTreeMap<String, String> = BTreeMap::new();
    let mut stop = std::pin::pin!(crate::serve_cmd::stop_signal());
    let lease = match &args.lease {
        Some(name) => Some(Leader::new(args, name).await?),
        None => None,
    };
    // Without a lease this one is the only one, and acts.
    if lease.is_none() {
        metrics.leader.set(1);
    }
    let mut standby_said: Option<String> = None;
    // The failure last said (its gist): a pass failing the same way is not said every time.
    let mut failure_said: Option<Vec<String>> = None;
    loop {
        // Only the holder of the lease acts; the others wait to take over.
        if let Some(lease) = &lease {
            let standing_by = match lease.hold().await {
                Ok(Ok(())) => {
                    if standby_said.take().is_some() || metrics.leader.get() == 0 {
                        eout!(
                            "cohort autopilot: holding lease {} in namespace {}: acting",
                            lease.name,
                            lease.cluster.namespace
                        );
                    }
                    metrics.leader.set(1);
                    None
                }
                Ok(Err(held)) => {
                    if standby_said.as_deref() != Some(held.holder.as_str()) {
                        eout!(
                            "cohort autopilot: standing by: {} holds lease {} (until {})",
                            held.holder,
                            lease.name,
                            held.until
                        );
                        standby_said = Some(held.holder.clone());
                    }
                    Some(None)
                }
                Err(e) => {
                    eout!(
                        "cohort autopilot: cannot take lease {}, not acting: {e}",
                        lease.name
                    );
                    Some(Some(format!("cannot take lease {}: {e}", lease.name)))
                }
            };
            if let Some(why) = standing_by {
                metrics.leader.set(0);
                if let Ok(mut p) = problem.lock() {
                    *p = why;
                }
                // A standby forgets what it counted: the one acting judges.
                accumulated = Accumulated::default();
                tokio::select! {
                    () = tokio::time::sleep(args.interval) => continue,
                    () = &mut stop => break,
                }
            }
        }
        match pass(cli, args, Some(&mut accumulated), lease.as_ref()).await {
            Ok((outcomes, notifier)) => {
                metrics.passes.get_or_create(&PassLabels { result: "ok" }).inc();
                metrics.last_pass_success.set(jiff::Timestamp::now().as_second());
                metrics.observe(&outcomes);
                if let Ok(mut p) = problem.lock() {
                    *p = None;
                }
                if failure_said.take().is_some() {
                    eout!("cohort autopilot: passes run again");
                }
                tell(notifier, &events(&outcomes, Some(&mut held))).await;
                say(args, &outcomes, Some(&mut last_said))?;
            }
            Err(e) => {
                metrics
                    .passes
                    .get_or_create(&PassLabels { result: "error" })
                    .inc();
                let why = format!("{e:#}");
                let gist = gist(std::slice::from_ref(&why));
                if failure_said.as_ref() != Some(&gist) {
                    failure_said = Some(gist);
                    eout!(
                        "cohort autopilot: this pass failed, trying again every {}s (said again when it fails \
                         otherwise): {why}",
                        args.interval.as_secs()
                    );
                }
                if let Ok(mut p) = problem.lock() {
                    *p = Some(why);
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(args.interval) => {}
            () = &mut stop => break,
        }
    }
    // Handing the lease back lets a standby take over at once, not when it runs out.
    if let Some(lease) = &lease
        && metrics.leader.get() == 1
        && let Err(e) = lease.cluster.release_lease(&lease.name, &lease.me).await
    {
        eout!("cohort autopilot: could not hand lease {} back: {e}", lease.name);
    }
    Ok(())
}

/// Leader election among autopilot replicas: a Lease, renewed every pass.
struct Leader {
    cluster: cohort_kube::Cluster,
    name: String,
    me: String,
    /// Three intervals: a holder that stopped is taken over within three passes.
    duration: std::time::Duration,
}

impl Leader {
    async fn new(args: &AutopilotArgs, name: &str) -> Result<Leader> {
        let cluster = cohort_kube::Cluster::connect(&args.judge.cluster.target(None))
            .await
            .map_err(CouldNotCheck)?;
        Ok(Leader {
            cluster,
            name: name.to_string(),
            me: cohort_kube::lease::identity("cohort autopilot"),
            duration: (args.interval * 3).max(std::time::Duration::from_secs(3)),
        })
    }

    async fn hold(&self) -> Result<Result<(), cohort_kube::lease::Held>, cohort_kube::KubeError> {
        self.cluster
            .take_lease(&self.name, &self.me, self.duration, "autopilot")
            .await
    }
}

/// Delivers `events` to the channels, saying what could not be delivered.
async fn tell(notifier: Option<cohort_notify::send::Notifier>, events: &[cohort_notify::Event]) {
    let Some(notifier) = notifier else { return };
    if events.is_empty() {
        return;
    }
    let report = notifier.notify(events).await;
    for failed in report.failures() {
        if let Err(e) = &failed.result {
            eout!("cohort autopilot: could not tell {}: {e}", failed.channel);
        }
    }
}

/// Prints a pass: each decision (for a running autopilot, which remembers in `last_said`, a
/// wait again only when it waits for something else), or one JSON document.
fn say(
    args: &AutopilotArgs,
    outcomes: &[Outcome],
    mut last_said: Option<&mut BTreeMap<String, Vec<String>>>,
) -> Result<()> {
    match args.output {
        TextOrJson::Json => {
            out_exact!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "dry_run": args.dry_run,
                    "services": outcomes.iter().map(Outcome::json).collect::<Vec<_>>(),
                }))?
            );
        }
        TextOrJson::Text => {
            for o in outcomes {
                let lines = o.lines(args.dry_run);
                let gist = gist(&lines);
                if let Some(said) = last_said.as_deref_mut() {
                    if said.get(&o.service) == Some(&gist) {
                        continue;
                    }
                    said.insert(o.service.clone(), gist);
                }
                for l in &lines {
                    out!("{l}");
                }
            }
        }
    }
    Ok(())
}

/// Lines with their numbers blanked: what they say, whatever the counts.
fn gist(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            // A number and its unit (`7m`, `3s`, `0.00%`) become one `#`.
            let mut out = String::with_capacity(l.len());
            for c in l.chars() {
                let in_number = out.ends_with('#');
                match c {
                    '0'..='9' if in_number => {}
                    '0'..='9' => out.push('#'),
                    '.' | '%' if in_number => {}
                    c if in_number && c.is_ascii_alphabetic() => {}
                    c => out.push(c),
                }
            }
            out
        })
        .collect()
}

/// Where the release repo is read and each decision recorded.
enum Store {
    /// A local clone: committed to under the repo's lock.
    Local { git: ReleaseRepo, prefix: PathBuf },
    /// A git remote (`--git`): fetched into a mirror, each decision a commit made there and
    /// pushed. In an `Option` so that it can be lent to a blocking task and come back.
    Remote {
        mirror: Option<cohort_release::mirror::Mirror>,
        prefix: PathBuf,
    },
}

/// What came of recording a decision.
enum Recorded {
    /// The commit that records it.
    Commit(String),
    /// The remote's branch moved since it was fetched (why, in words): decide again.
    Moved(String),
}

impl Store {
    fn open(cli: &Cli, args: &AutopilotArgs) -> Result<Store> {
        match &args.remote.git {
            Some(url) => {
                // It pushes each decision: refuse what cannot be pushed to before fetching.
                if !cohort_release::mirror::can_push_to(url) {
                    return Err(crate::UsageError(format!(
                        "--git {url}: the autopilot pushes its decisions, and pushing over ssh or git:// is not \
                         supported; give the repository's https URL (with --git-credentials-file) or a path"
                    ))
                    .into());
                }
                if cli.repo.is_some() {
                    return Err(crate::UsageError(
                        "-C/--repo (or COHORT_REPO) and --git both name the release repo; give one (--git to push \
                         decisions to a remote)"
                            .to_string(),
                    )
                    .into());
                }
                Ok(Store::Remote {
                    mirror: Some(crate::agent_cmd::open_mirror_for("autopilot", url, &args.remote)?),
                    prefix: args.remote.path.clone().unwrap_or_default(),
                })
            }
            None => {
                let dir = repo_dir(cli);
                let git = ReleaseRepo::open(&dir)?.with_identity(AUTHOR.0, AUTHOR.1)?;
                let prefix = prefix_in(&git, &repo_root(&dir));
                Ok(Store::Local { git, prefix })
            }
        }
    }

    /// Runs `f` on the mirror on a blocking thread (git's network transports block).
    async fn with_mirror<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut cohort_release::mirror::Mirror) -> T + Send + 'static,
    ) -> Result<T> {
        let Store::Remote { mirror, .. } = self else {
            anyhow::bail!("the release repo is not a remote");
        };
        let mut lent = mirror.take().context("the mirror is in use")?;
        let (lent, out) = tokio::task::spawn_blocking(move || {
            let out = f(&mut lent);
            (lent, out)
        })
        .await
        .context("the git task stopped")?;
        *mirror = Some(lent);
        Ok(out)
    }

    /// The commit to read: HEAD of the clone, or the remote's branch fetched now.
    async fn head(&mut self) -> Result<Option<String>> {
        match self {
            Store::Local { git, .. } => Ok(git.head_commit()?),
            Store::Remote { .. } => {
                let stop = std::sync::atomic::AtomicBool::new(false);
                let fetched = self.with_mirror(move |m| m.fetch(&stop)).await?;
                Ok(Some(fetched.map_err(|e| {
                    CouldNotApply(format!("{:#}", anyhow::Error::from(e)))
                })?))
            }
        }
    }

    fn mirror(&self) -> Result<&cohort_release::mirror::Mirror> {
        match self {
            Store::Remote { mirror: Some(m), .. } => Ok(m),
            _ => anyhow::bail!("the mirror is in use"),
        }
    }

    fn files(&self, at: Option<&str>) -> Result<cohort_spec::repo::RepoFiles> {
        Ok(match (self, at) {
            (Store::Local { git, prefix }, _) => head_files(git, prefix)?,
            (Store::Remote { prefix, .. }, Some(at)) => self.mirror()?.files_at(at, prefix)?,
            (Store::Remote { .. }, None) => Default::default(),
        })
    }

    /// The revision at `at`, validated: never acted on when invalid (its errors said).
    fn revision(&self, at: Option<&str>) -> Result<Repo> {
        let (repo, diags) = cohort_spec::repo::validate(&self.files(at)?);
        valid_revision(repo, diags)
    }

    fn history(&self, at: Option<&str>) -> Result<Vec<Entry>> {
        Ok(match (self, at) {
            (Store::Local { git, .. }, _) => entries(&git.log()?),
            (Store::Remote { .. }, Some(at)) => entries(&self.mirror()?.log_at(at)?),
            (Store::Remote { .. }, None) => vec![],
        })
    }

    /// Held from reading the state to committing, for a clone: no other cohort process on
    /// this machine changes it in between. A remote's guard is the push's compare-and-swap.
    fn lock(&self) -> Result<Option<cohort_release::git::RepoLock>> {
        match self {
            Store::Local { git, .. } => Ok(Some(git.lock()?)),
            Store::Remote { .. } => Ok(None),
        }
    }

    /// Records `text` as the state of `service` with `message`, on top of `at` (the commit
    /// the decision was made on).
    async fn record(
        &mut self,
        lock: Option<&cohort_release::git::RepoLock>,
        at: Option<&str>,
        service: &cohort_core::ServiceName,
        text: String,
        message: String,
    ) -> Result<Recorded> {
        match self {
            Store::Local { git, prefix } => {
                let path = prefix.join(state_path(service));
                git.check_clean(&[path.as_path()])?;
                let lock = lock.context("the release repo is not locked")?;
                Ok(Recorded::Commit(git.commit_files(
                    lock,
                    &[(path, text.into_bytes())],
                    &message,
                )?))
            }
            Store::Remote { prefix, .. } => {
                let at = at.context("the remote has no commit to build on")?.to_string();
                let path = prefix.join(state_path(service));
                self.with_mirror(move |m| {
                    let commit = m.commit_on(&at, &[(path, text.into_bytes())], &message, AUTHOR)?;
                    match m.push(&at, &commit) {
                        Ok(()) => Ok(Recorded::Commit(commit)),
                        Err(e @ cohort_release::mirror::PushError::Moved { .. }) => {
                            Ok(Recorded::Moved(e.to_string()))
                        }
                        Err(e) => Err(anyhow::Error::from(e)),
                    }
                })
                .await?
            }
        }
    }
}

/// How often one service's decision is made again in a pass after its push lost a race.
const RACES_PER_PASS: usize = 3;

/// One pass over every service of the repo.
async fn pass(
    cli: &Cli,
    args: &AutopilotArgs,
    mut accumulated: Option<&mut Accumulated>,
    lease: Option<&Leader>,
) -> Result<(Vec<Outcome>, Option<cohort_notify::send::Notifier>)> {
    let mut store = Store::open(cli, args)?;
    // What the routers counted is read before the repo is locked: a person's `cohort rollback`
    // must not find it busy while the autopilot waits on the network.
    // Never act on an invalid revision: its errors are said and the pass stops.
    let read_at = store.head().await?;
    let mut repo = store.revision(read_at.as_deref())?;
    let read = match &args.control {
        Some(url) => {
            from_control(
                &repo,
                args,
                url,
                accumulated.as_deref_mut().map(|a| &mut a.control_mark),
            )
            .await?
        }
        None => gather(&repo, args, accumulated.as_deref_mut().map(|a| &mut a.until)).await?,
    };
    for (source, why) in &read.unread {
        eout!("cohort autopilot: {source} not read this pass: {why}");
    }
    // The extra checks too, before the lock: a slow server must not keep people waiting.
    let checks = {
        let judgement = effective(&args.judge, Some(&repo));
        let target = args.judge.cluster.target(Some(&repo.pipeline.namespace));
        let jobs = match args.dry_run {
            true => crate::checks_run::Jobs::Read(&target),
            false => crate::checks_run::Jobs::Look(&target),
        };
        all_checks(
            &repo,
            &read,
            judgement.window.as_secs_ceil(),
            &settings(&judgement)?,
            &jobs,
        )
        .await
    };
    // A commit made while the routers were read is read and validated again.
    let lock = store.lock()?;
    // A remote is fetched once more: its push would find out anyway, but later, at more cost.
    let mut at = store.head().await?;
    if at != read_at {
        repo = store.revision(at.as_deref())?;
    }
    let mut history = store.history(at.as_deref())?;
    let judgement = effective(&args.judge, Some(&repo));
    let judge_settings = settings(&judgement)?;
    let now = jiff::Timestamp::now();
    // cohort.yaml's channels, read with the revision: a dry run tells nobody.
    let notifier = match args.dry_run {
        true => None,
        false => crate::status_cmd::channels(&repo.pipeline.notifications)?,
    };
    let pairs = pairs(&repo, &read.stats, accumulated);

    let names: Vec<String> = repo.services.iter().map(|s| s.spec.name.to_string()).collect();
    let mut outcomes = vec![];
    let no_checks = BTreeMap::new();
    for name in names {
        let mut races = 0;
        let checks = checks.get(&name).unwrap_or(&no_checks);
        let outcome = loop {
            // Gone from a revision fetched after a lost race: a person removed it.
            let Some(svc) = repo.services.iter().find(|s| s.spec.name.as_str() == name) else {
                break None;
            };
            let (tracks, judged) = facts(&repo, svc, &history, &read, &pairs, &judge_settings, checks);
            let decision = decide(&Inputs {
                pipeline: &repo.pipeline,
                state: &svc.state,
                tracks: &tracks,
                now,
            });
            // One service's trouble (a rollback with nowhere to go, a hand edit in its state
            // file) is said with it; the others are still decided and acted on.
            let acted = match (&decision, args.dry_run) {
                (Decision::Wait { .. }, _) => Ok(None),
                // A dry run plans the change too, so it says what the real pass would refuse.
                (action, true) => plan_action(&repo, svc, &history, action, now.as_second()).map(|_| None),
                (action, false) => act(
                    &repo,
                    svc,
                    &history,
                    action,
                    now,
                    &mut store,
                    at.as_deref(),
                    lock.as_ref(),
                    lease,
                )
                .await
                .map(Some),
            };
            let rolled_out = tracks
                .iter()
                .filter(|(_, f)| f.rolled_out)
                .map(|(t, _)| t.to_string())
                .collect();
            let mut outcome = Outcome {
                service: name.clone(),
                decision,
                commit: None,
                judged,
                rolled_out,
                error: None,
            };
            match acted {
                Ok(None) => {}
                Ok(Some(Recorded::Commit(id))) => {
                    // The next service's commit goes on top of this one.
                    if matches!(store, Store::Remote { .. }) {
                        at = Some(id.clone());
                        history = store.history(at.as_deref())?;
                    }
                    outcome.commit = Some(id);
                }
                Ok(Some(Recorded::Moved(why))) if races < RACES_PER_PASS => {
                    races += 1;
                    eout!("cohort autopilot: {name}: {why}; deciding again on what is there now");
                    // What this pass already pushed stays said and told, whatever happens here.
                    match reread(&mut store).await {
                        Ok((now_at, now_repo, now_history)) => {
                            (at, repo, history) = (now_at, now_repo, now_history);
                            continue;
                        }
                        Err(e) => {
                            outcome.error =
                                Some(format!("{why}, and the remote could not be read again: {e:#}"));
                        }
                    }
                }
                Ok(Some(Recorded::Moved(why))) => {
                    outcome.error = Some(format!(
                        "{why}; it moved {races} times while this pass decided, so it is decided again next pass"
                    ));
                }
                Err(e) => outcome.error = Some(format!("{e:#}")),
            }
            break Some(outcome);
        };
        outcomes.extend(outcome);
    }
    Ok((outcomes, notifier))
}

/// The revision's repo, or (its errors said) that the release repo could not be read: the
/// autopilot never acts on an invalid revision, and `--once` exits 2 for it.
fn valid_revision(repo: Option<Repo>, diags: Vec<cohort_spec::diag::Diagnostic>) -> Result<Repo> {
    valid_or_report(repo, diags).map_err(|e| match e.is::<Reported>() {
        true => InvalidRepo.into(),
        false => e,
    })
}

/// The release repo as it is now: its commit, the revision validated, and its history.
async fn reread(store: &mut Store) -> Result<(Option<String>, Repo, Vec<Entry>)> {
    let at = store.head().await?;
    let repo = store.revision(at.as_deref())?;
    let history = store.history(at.as_deref())?;
    Ok((at, repo, history))
}

/// Records `action` for `svc` as its commit, unless another replica holds the lease now.
#[allow(clippy::too_many_arguments)]
async fn act(
    repo: &Repo,
    svc: &Service,
    history: &[Entry],
    action: &Decision,
    now: jiff::Timestamp,
    store: &mut Store,
    at: Option<&str>,
    lock: Option<&cohort_release::git::RepoLock>,
    lease: Option<&Leader>,
) -> Result<Recorded> {
    let planned = plan_action(repo, svc, history, action, now.as_second())?;
    // The lease is checked again right before writing: a pass may have outlasted it.
    if let Some(lease) = lease
        && let Err(held) = lease.hold().await?
    {
        anyhow::bail!(
            "{} holds lease {} now; it decides instead",
            held.holder,
            lease.name
        );
    }
    let text = write_state(&svc.spec.name, &planned.state);
    store
        .record(lock, at, &svc.spec.name, text, commit_message(&planned.change))
        .await
        .with_context(|| format!("could not record `{}`", planned.change.subject()))
}

/// Per service and judged track, the counts of the track's version and its baseline's over
/// the same span: this read's, or (a running autopilot) the pair's sum since it began.
/// Each entry also names the track's and the baseline's versions it counted: a revision
/// read later in the pass (after a lost push race) may run others, and counts of one build are
/// never a judgement of another.
type Pairs = BTreeMap<(String, String), PairCounts>;

/// One judged pair's counts: of `version` on the track and `base_version` on the baseline.
struct PairCounts {
    stats: WindowStats,
    seconds: u64,
    version: String,
    base_version: String,
}

fn pairs(
    repo: &Repo,
    read: &BTreeMap<String, WindowStats>,
    mut accumulated: Option<&mut Accumulated>,
) -> Pairs {
    let mut out = Pairs::new();
    let mut live = std::collections::BTreeSet::new();
    for svc in &repo.services {
        let name = svc.spec.name.to_string();
        let Some(w) = read.get(&name) else { continue };
        let Some((base, base_version)) = repo
            .pipeline
            .stages
            .last()
            .and_then(|b| Some((b, svc.state.version(b)?)))
        else {
            continue;
        };
        for track in &repo.pipeline.stages {
            let Some(version) = svc.state.version(track) else {
                continue;
            };
            if track == base || version == base_version {
                continue;
            }
            let mut current = w.clone();
            current.series.retain(|s| {
                (s.track == track.as_str() && s.version == version.as_str())
                    || (s.track == base.as_str() && s.version == base_version.as_str())
            });
            let seen = served_seconds(&current, track.as_str());
            let active = seen
                .unwrap_or(current.window_seconds)
                .clamp(1, current.window_seconds.max(1));
            let summed = match accumulated.as_deref_mut() {
                None => (current, active),
                Some(a) => {
                    let key = (
                        name.clone(),
                        track.to_string(),
                        version.to_string(),
                        base_version.to_string(),
                    );
                    live.insert(key.clone());
                    let pair = a.pairs.entry(key).or_insert_with(|| Pair {
                        stats: WindowStats {
                            series: vec![],
                            ..current.clone()
                        },
                        // A track not served yet in the first read has counted for no time
                        // at all: taking the whole window would make its rate look far lower.
                        first_seconds: seen.unwrap_or(0),
                        began: std::time::Instant::now(),
                    });
                    // Same service and buckets: a merge cannot fail here.
                    let _ = pair.stats.merge(current);
                    let span = (pair.first_seconds + pair.began.elapsed().as_secs()).max(1);
                    (pair.stats.clone(), span)
                }
            };
            out.insert(
                (name.clone(), track.to_string()),
                PairCounts {
                    stats: summed.0,
                    seconds: summed.1,
                    version: version.to_string(),
                    base_version: base_version.to_string(),
                },
            );
        }
    }
    if let Some(a) = accumulated {
        a.pairs.retain(|k, _| live.contains(k));
    }
    out
}

/// The seconds a track's counts took in a window, if it has any.
fn served_seconds(w: &WindowStats, track: &str) -> Option<u64> {
    w.series
        .iter()
        .filter(|s| s.track == track)
        .map(|s| s.seconds)
        .max()
}

/// What to tell people of a pass: each action taken, and (for a running autopilot, which
/// remembers in `held`) each action newly held back by a freeze or window. Never a wait.
fn events(
    outcomes: &[Outcome],
    mut held: Option<&mut BTreeMap<String, String>>,
) -> Vec<cohort_notify::Event> {
    let now = jiff::Timestamp::now();
    let mut out = vec![];
    for o in outcomes {
        let (kind, summary, detail) = match (&o.decision, &o.commit) {
            (
                Decision::Wait {
                    held: Some(h),
                    reasons,
                },
                _,
            ) => {
                let what = reasons.last().cloned().unwrap_or_else(|| describe(&h.action));
                let Some(held) = held.as_deref_mut() else { continue };
                if held.get(&o.service) == Some(&what) {
                    continue;
                }
                held.insert(o.service.clone(), what.clone());
                ("held", what, vec![])
            }
            (Decision::Wait { .. }, _) => {
                if let Some(held) = held.as_deref_mut() {
                    held.remove(&o.service);
                }
                continue;
            }
            (action, Some(commit)) => (
                action.kind(),
                describe(action),
                vec![
                    action.evidence().unwrap_or_default().to_string(),
                    format!("commit {commit}"),
                ],
            ),
            (_, None) => continue,
        };
        out.push(cohort_notify::Event::Decided {
            problem: cohort_notify::Problem::new(&o.service, kind, summary),
            detail,
            at: now,
        });
    }
    out
}

/// The change an action makes, as `rollback`, `promote` and a ramp step make it, checked to
/// leave a valid state (a dry run and a real pass refuse the same).
fn plan_action(
    repo: &Repo,
    svc: &Service,
    history: &[Entry],
    action: &Decision,
    now: i64,
) -> Result<Planned> {
    let p = &repo.pipeline;
    let planned = match action {
        Decision::Rollback { track, evidence, .. } => {
            let mut planned = plan::rollback(
                p,
                svc,
                history,
                track.as_str(),
                None,
                Some("automatic rollback: its canary judgement failed"),
            )?;
            planned.change.judgement = Some(evidence.clone());
            planned
        }
        Decision::Ramp { track, evidence, .. } => plan::ramp(p, svc, track, Some(evidence.clone()))?,
        Decision::Promote { to, evidence, .. } => plan::promote(
            p,
            svc,
            history,
            &PromoteRequest {
                to: Some(to.as_str()),
                force: false,
                reason: None,
                now,
                judgement: Some(evidence.clone()),
            },
        )?,
        Decision::Wait { .. } => anyhow::bail!("waiting is not a change"),
    };
    crate::change::still_valid(repo, svc, &planned)?;
    Ok(planned)
}

/// What the history, the routers and the cluster say of each track of `svc`, and the
/// judgements made: every track whose version differs from the last stage's is judged
/// against it.
fn facts(
    repo: &Repo,
    svc: &Service,
    history: &[Entry],
    read: &Read,
    pairs: &Pairs,
    settings: &cohort_judge::Settings,
    checks: &ServiceChecks,
) -> (BTreeMap<TrackName, TrackFacts>, Vec<Judged>) {
    let name = svc.spec.name.as_str();
    let window = read.stats.get(name);
    let rolled_out = read.rolled_out.as_ref();
    // Pull mode: a cluster that stopped reporting holds counts nobody has seen.
    let silent = read.silent.get(name);
    let p = &repo.pipeline;
    let baseline = p.stages.last().and_then(|b| Some((b, svc.state.version(b)?)));
    let mut tracks = BTreeMap::new();
    let mut judged = vec![];
    for track in &p.stages {
        let Some(version) = svc.state.version(track) else {
            continue;
        };
        let changed = history
            .iter()
            .find(|e| {
                e.change.service == name
                    && e.change.track.as_deref() == Some(track.as_str())
                    && matches!(
                        e.change.action,
                        Action::Init | Action::Deploy | Action::Promote | Action::Rollback | Action::Ramp
                    )
            })
            .map(|e| e.time);
        // Rolled out: the routers serve it (apply switches a router to a version only once its
        // pods are ready) and, when the cluster is read, its Deployment has finished rolling out.
        let deployed = rolled_out
            .is_none_or(|done| done.contains(&cohort_render::deployment_name(name, track, version)));
        let pair = pairs
            .get(&(name.to_string(), track.to_string()))
            .filter(|p| {
                p.version == version.as_str() && baseline.is_some_and(|(_, bv)| p.base_version == bv.as_str())
            })
            .map(|p| (&p.stats, p.seconds));
        let serving = |t: &str, v: &str| {
            window.into_iter().chain(pair.map(|(w, _)| w)).any(|w| {
                w.series
                    .iter()
                    .any(|s| s.track == t && s.version == v && s.counts.requests > 0)
            })
        };
        let mut f = TrackFacts {
            arrived: arrived_at(history, name, track.as_str(), version.as_str()),
            changed,
            rolled_out: deployed && serving(track.as_str(), version.as_str()),
            verdict: None,
            evidence: String::new(),
            ran_before: versions_seen(history, name, track.as_str())
                .into_iter()
                .filter(|v| v != version.as_str())
                .filter_map(|v| cohort_core::Version::new(&v).ok())
                .collect(),
        };
        if let (Some((base, base_version)), Some((current, active))) = (baseline, pair) {
            let (t, b, cohorts) = cohort_judge::select(current, track.as_str(), base.as_str());
            let j = cohort_judge::judge(&t, &b, cohorts, active, &current.latency_bounds_ms, settings);
            let over = match j.cohorts.is_empty() {
                true => "all traffic".to_string(),
                false => format!("cohorts {}", j.cohorts.join(", ")),
            };
            let (verdict, unheard) = match (j.verdict, silent) {
                (Verdict::Pass, Some(clusters)) => (
                    Verdict::Inconclusive,
                    format!(" (would pass, but not on part of the fleet's counts: {clusters})"),
                ),
                (v, _) => (v, String::new()),
            };
            let has_checks = !crate::checks_run::checks_of(repo, svc).checks.is_empty();
            let results = checks_of_version(checks, track.as_str(), version.as_str(), has_checks);
            let verdict = cohort_checks::combine(verdict, &results);
            let from_checks = cohort_checks::evidence_line(&results)
                .map(|c| format!("; {c}"))
                .unwrap_or_default();
            let evidence = format!(
                "{verdict}: {track} {version} against {base} {base_version}, {over}: {}{unheard}{from_checks}",
                j.summary
            );
            f.verdict = Some(verdict);
            f.evidence = evidence.clone();
            judged.push((track.to_string(), verdict, evidence, results));
        }
        tracks.insert(track.clone(), f);
    }
    (tracks, judged)
}

/// Per judged track of a service: the version its checks ran for, and their results.
type ServiceChecks = BTreeMap<String, (String, Vec<cohort_checks::CheckResult>)>;

/// The checks' results for `version` on `track`. They are run before the repo is read again
/// under the lock: results for another version (a commit in between) are not this one's, and
/// a service that has checks is never judged without them.
fn checks_of_version(
    checks: &ServiceChecks,
    track: &str,
    version: &str,
    has_checks: bool,
) -> Vec<cohort_checks::CheckResult> {
    match checks.get(track) {
        Some((v, results)) if v == version => results.clone(),
        _ if !has_checks => vec![],
        _ => vec![cohort_checks::CheckResult::new(
            "checks",
            "all",
            cohort_checks::Outcome::Inconclusive,
            format!("they ran for another version of {track}; judged again next pass"),
        )],
    }
}

/// Services whose checks run at once: a server that does not answer holds a pass for its
/// timeout once per this many services, not once per service.
const SERVICES_CHECKED_AT_ONCE: usize = 16;

/// Every service's extra checks, keyed by service.
async fn all_checks(
    repo: &Repo,
    read: &Read,
    window_seconds: u64,
    settings: &cohort_judge::Settings,
    jobs: &crate::checks_run::Jobs<'_>,
) -> BTreeMap<String, ServiceChecks> {
    use futures::StreamExt;
    futures::stream::iter(&repo.services)
        .map(|svc| async move {
            let checks = pass_checks(repo, svc, read, window_seconds, settings, jobs).await;
            (svc.spec.name.to_string(), checks)
        })
        .buffer_unordered(SERVICES_CHECKED_AT_ONCE)
        .collect()
        .await
}

/// The extra checks of every track of `svc` that is judged (its version is not the last
/// stage's), keyed by track. A version not yet rolled out is not checked: a web check or a Job
/// would reach the version it replaces, and a Job's outcome is kept as the new one's.
async fn pass_checks(
    repo: &Repo,
    svc: &Service,
    read: &Read,
    window_seconds: u64,
    settings: &cohort_judge::Settings,
    jobs: &crate::checks_run::Jobs<'_>,
) -> ServiceChecks {
    let p = &repo.pipeline;
    let Some((base, base_version)) = p.stages.last().and_then(|b| Some((b, svc.state.version(b)?))) else {
        return BTreeMap::new();
    };
    if crate::checks_run::checks_of(repo, svc).checks.is_empty() {
        return BTreeMap::new();
    }
    let judged = p
        .stages
        .iter()
        .filter(|t| *t != base)
        .filter_map(|t| Some((t, svc.state.version(t).filter(|v| *v != base_version)?)));
    let name = svc.spec.name.as_str();
    let rolled_out = |t: &TrackName, v: &cohort_core::Version| match &read.rolled_out {
        Some(done) => done.contains(&cohort_render::deployment_name(name, t, v)),
        // Without the cluster, the routers say: apply switches one to a version only once
        // its pods are ready.
        None => read.stats.get(name).is_some_and(|w| {
            w.series
                .iter()
                .any(|s| s.track == t.as_str() && s.version == v.as_str() && s.counts.requests > 0)
        }),
    };
    let runs = judged.map(|(t, version)| async move {
        if !rolled_out(t, version) {
            let wait = cohort_checks::CheckResult::new(
                "checks",
                "all",
                cohort_checks::Outcome::Inconclusive,
                format!("not run yet: {version} has not rolled out on {t}"),
            );
            return (t.to_string(), (version.to_string(), vec![wait]));
        }
        let results = crate::checks_run::run(
            repo,
            svc,
            (t.as_str(), base.as_str()),
            window_seconds,
            settings,
            jobs,
        )
        .await;
        (t.to_string(), (version.to_string(), results))
    });
    futures::future::join_all(runs).await.into_iter().collect()
}

/// What one pass read of the routers and the cluster.
struct Read {
    /// Per service, every router's counts summed: their windows, or (a running autopilot)
    /// what each counted since it was last read.
    stats: BTreeMap<String, WindowStats>,
    /// When the cluster is read: which of cohort's Deployments have finished rolling out.
    rolled_out: Option<std::collections::BTreeSet<String>>,
    /// Routers that could not be read this pass, and why (their services are judged on the
    /// others; a service none of whose routers answered is not judged).
    unread: Vec<(String, String)>,
    /// Pull mode: per service, the clusters running it whose agents have gone silent.
    silent: BTreeMap<String, String>,
}

/// Reads every router: the admin URLs given (each says which service it routes), else each
/// service's ready router pods through the cluster. With `until` (a running autopilot) each
/// router is asked for what it counted after the second it was last read up to.
async fn gather(
    repo: &Repo,
    args: &AutopilotArgs,
    until: Option<&mut BTreeMap<String, u64>>,
) -> Result<Read> {
    let window = effective(&args.judge, Some(repo))
        .window
        .as_secs_ceil()
        .clamp(1, 600);
    let seen = until.as_deref().cloned().unwrap_or_default();
    let query = |source: &str| cohort_judge::gather::query(source, &seen, window);
    // (source, the service it should route if known, its answer)
    let mut answers: Vec<(String, Option<String>, Result<String>)> = vec![];
    let mut rolled_out = None;
    if args.judge.metrics_urls.is_empty() {
        let target = args.judge.cluster.target(Some(&repo.pipeline.namespace));
        let cluster = cohort_kube::Cluster::connect(&target)
            .await
            .map_err(CouldNotCheck)?;
        rolled_out = Some(cluster.rolled_out_deployments().await.map_err(CouldNotCheck)?);
        for svc in &repo.services {
            for pod in cluster
                .router_pods(svc.spec.name.as_str())
                .await
                .map_err(CouldNotCheck)?
            {
                let source = format!("pod {pod}");
                let path = query(&source);
                let get = cluster.pod_get(&pod, repo.pipeline.router.admin_port, &path);
                let answer = match tokio::time::timeout(std::time::Duration::from_secs(10), get).await {
                    Ok(a) => a.map_err(anyhow::Error::from),
                    Err(_) => Err(anyhow::anyhow!("no answer in 10 s")),
                };
                answers.push((source, Some(svc.spec.name.to_string()), answer));
            }
        }
    } else {
        for url in &args.judge.metrics_urls {
            let full = format!("{}/{}", admin_base(url), query(url));
            answers.push((url.clone(), None, fetch(&full).await));
        }
    }
    let answers = answers
        .into_iter()
        .map(|(source, expected, body)| cohort_judge::gather::Answer {
            source,
            expected,
            body: body.map_err(|e| format!("{e:#}")),
        })
        .collect();
    let gathered = cohort_judge::gather::gather(answers, until);
    if gathered.all_unread() {
        let (from, why) = &gathered.unread[0];
        return Err(CouldNotApply(format!("no router could be read: {from}: {why}")).into());
    }
    let cohort_judge::gather::Gathered { stats, unread } = gathered;
    Ok(Read {
        stats,
        rolled_out,
        unread,
        silent: BTreeMap::new(),
    })
}

/// Pull mode: every cluster's counts as their agents reported them to the control API
/// (since the last read, for a running autopilot), and which clusters have gone silent.
async fn from_control(
    repo: &Repo,
    args: &AutopilotArgs,
    url: &str,
    mark: Option<&mut Option<String>>,
) -> Result<Read> {
    // Read each pass: a rotated token is picked up.
    let client = crate::status_cmd::fleet_client(url, args.token_file.as_deref(), args.ca_file.as_deref())?;
    let after = mark.as_deref().and_then(Option::as_deref);
    let counts = client
        .counts(after)
        .await
        .map_err(|e| CouldNotApply(format!("{:#}", anyhow::Error::new(e))))?;
    if let Some(mark) = mark {
        *mark = Some(counts.until.clone());
    }
    let silent = repo
        .services
        .iter()
        .filter_map(|s| {
            let name = s.spec.name.to_string();
            let why = match (counts.silent_for(&name), counts.complete) {
                (Some(clusters), _) => format!("silent: {clusters}"),
                // Counts that arrived were dropped before this read: some requests went unseen.
                (None, false) => {
                    "some counts were dropped by the control API before they were read".to_string()
                }
                (None, true) => return None,
            };
            Some((name, why))
        })
        .collect();
    Ok(Read {
        stats: counts
            .services
            .into_iter()
            .map(|s| (s.service.clone(), s))
            .collect(),
        // What runs is what the routers count: a router serves a version only once its
        // pods are ready.
        rolled_out: None,
        unread: vec![],
        silent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_run_for_another_version_never_let_this_one_pass_without_them() {
        use cohort_checks::{CheckResult, Outcome};
        let pass = CheckResult::new("rate", "prometheus", Outcome::Pass, "fine");
        let checks: ServiceChecks =
            [("canary".to_string(), ("1.17.0".to_string(), vec![pass.clone()]))].into();
        assert_eq!(checks_of_version(&checks, "canary", "1.17.0", true), vec![pass]);
        let other = checks_of_version(&checks, "canary", "1.18.0", true);
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].outcome, Outcome::Inconclusive);
        assert_eq!(
            cohort_checks::combine(Verdict::Pass, &other),
            Verdict::Inconclusive
        );
        // A track the pass ran no checks for, of a service with checks: not a pass either.
        assert_eq!(
            checks_of_version(&checks, "paid", "1.17.0", true)[0].outcome,
            Outcome::Inconclusive
        );
        // A service without checks is judged on the counts.
        assert!(checks_of_version(&BTreeMap::new(), "canary", "1.17.0", false).is_empty());
    }
}

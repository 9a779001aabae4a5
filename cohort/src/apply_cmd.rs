//! `cohort apply` and `cohort diff`: the release repo's rendered objects against the cluster,
//! through the kube adapter's apply (the same code path the in-cluster agent runs).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use cohort_core::Printable;
use cohort_core::printable::{escape, escape_lines};
use cohort_kube::apply::{ApplyError, ApplyOptions, NotReady, Progress};
use cohort_kube::compare::{self, Change};
use cohort_kube::{Cluster, KubeError, Target};
use cohort_release::git::ReleaseRepo;
use cohort_release::snapshot::head_files;
use cohort_render::Rendered;
use cohort_spec::Repo;
use cohort_spec::repo::RepoFiles;
use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::cli::{ApplyArgs, Cli, ClusterArgs, DiffArgs, TextOrJson};
use crate::repo_cmds::{prefix_in, repo_dir, repo_root, valid_or_report};
use crate::{CouldNotApply, CouldNotCheck, InvalidRepo, Reported, UsageError};

/// The release repo as last committed, valid (its problems are printed otherwise, and the
/// exit status is 2). What reaches the cluster is what the history records: edits not yet
/// committed are left out, and said to be.
fn valid_repo(cli: &Cli) -> Result<Repo> {
    let dir = repo_dir(cli);
    let unreadable = |e: cohort_release::git::GitError| CouldNotApply(format!("{:#}", anyhow::Error::new(e)));
    let git = ReleaseRepo::open(&dir).map_err(unreadable)?;
    let root = repo_root(&dir);
    let committed = head_files(&git, &prefix_in(&git, &root)).map_err(unreadable)?;
    if let Ok(worktree) = cohort_spec::repo::read_files(&root) {
        let uncommitted = uncommitted(&committed, &worktree);
        if !uncommitted.is_empty() {
            eout!(
                "note: not committed, so not used: {} (cohort applies the last commit)",
                uncommitted.join(", ")
            );
        }
    }
    let (repo, diags) = cohort_spec::repo::validate(&committed);
    valid_or_report(repo, diags).map_err(|e| match e.is::<Reported>() {
        true => InvalidRepo.into(),
        false => e,
    })
}

/// The files whose worktree text differs from the commit's (or that only one side has).
fn uncommitted(committed: &RepoFiles, worktree: &RepoFiles) -> Vec<String> {
    let all = |f: &RepoFiles| -> BTreeMap<PathBuf, String> {
        f.pipeline
            .iter()
            .map(|t| (PathBuf::from("cohort.yaml"), t.clone()))
            .chain(f.services.iter().cloned())
            .chain(f.releases.iter().cloned())
            .collect()
    };
    let (a, b) = (all(committed), all(worktree));
    let mut paths: Vec<&PathBuf> = a.keys().chain(b.keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter(|p| a.get(*p) != b.get(*p))
        .map(|p| p.display().to_string())
        .collect()
}

/// The services asked for (all when none), each with its rendered objects.
fn rendered(repo: &Repo, wanted: &[String]) -> Result<Vec<(String, Vec<Rendered>)>> {
    for w in wanted {
        if !repo.services.iter().any(|s| s.spec.name.as_str() == w) {
            let known: Vec<&str> = repo.services.iter().map(|s| s.spec.name.as_str()).collect();
            return Err(UsageError(format!(
                "no service {w} in the release repo (services: {})",
                known.join(", ")
            ))
            .into());
        }
    }
    repo.services
        .iter()
        .filter(|s| wanted.is_empty() || wanted.iter().any(|w| w == s.spec.name.as_str()))
        .map(|s| {
            let name = s.spec.name.to_string();
            let objects = cohort_render::render_service(&repo.pipeline, s)
                .map_err(|e| CouldNotApply(format!("rendering {name}: {e}")))?;
            Ok((name, objects))
        })
        .collect()
}

/// The cluster to apply to: the objects name the repo's namespace, so another one is an error.
fn target(repo: &Repo, cluster: &ClusterArgs) -> Result<Target> {
    let namespace = &repo.pipeline.namespace;
    if let Some(n) = &cluster.namespace
        && n != namespace
    {
        return Err(UsageError(format!(
            "-n {n}: the release repo puts its services in namespace {namespace} (cohort.yaml \
             `namespace`); change it there to apply elsewhere"
        ))
        .into());
    }
    Ok(Target {
        kubeconfig: cluster.kubeconfig.clone(),
        context: cluster.context.clone(),
        namespace: Some(namespace.clone()),
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Connects and checks that the server knows everything the objects use.
async fn connect(target: &Target, services: &[(String, Vec<Rendered>)]) -> Result<Cluster> {
    let cluster = Cluster::connect(target).await.map_err(CouldNotCheck)?;
    // A server whose version does not read as numbers is not second-guessed.
    if let Some((major, minor)) = cluster.server_version().await.map_err(CouldNotCheck)? {
        for (_, objects) in services {
            cohort_kube::apply::check_server_supports(objects, major, minor)
                .map_err(|e| UsageError(e.to_string()))?;
        }
    }
    Ok(cluster)
}

fn color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn paint(on: bool, code: &str, text: &str) -> String {
    match on {
        true => format!("\x1b[{code}m{text}\x1b[0m"),
        false => text.to_string(),
    }
}

fn kind_lower(kind: &str) -> String {
    kind.to_ascii_lowercase()
}

/// Runs `cohort apply`: services at once up to `--parallel`, each service's objects in order.
pub fn apply(cli: &Cli, args: &ApplyArgs) -> Result<()> {
    let repo = valid_repo(cli)?;
    let services = rendered(&repo, &args.services)?;
    let target = target(&repo, &args.cluster)?;
    let options = ApplyOptions {
        dry_run: args.dry_run,
        force_conflicts: args.force_conflicts,
        timeout: args.timeout,
        holder: cohort_kube::lease::identity("cohort apply"),
        ..ApplyOptions::default()
    };
    let parallel = usize::from(args.parallel).clamp(1, services.len().max(1));
    // Lines of services applied at once interleave, so each says whose it is.
    let lines = Lines {
        text: args.output == TextOrJson::Text,
        width: (parallel > 1).then(|| services.iter().map(|(s, _)| s.len()).max().unwrap_or(0)),
    };
    let runtime = runtime()?;
    let outcome = runtime.block_on(async {
        let cluster = connect(&target, &services).await?;
        let mut done: Vec<(usize, Value, Option<anyhow::Error>)> =
            futures::stream::iter(services.iter().enumerate())
                .map(|(i, (service, objects))| {
                    let (cluster, options, lines) = (&cluster, &options, &lines);
                    async move {
                        let (entry, failure) = apply_one(cluster, service, objects, options, lines).await;
                        (i, entry, failure)
                    }
                })
                .buffer_unordered(parallel)
                .collect()
                .await;
        done.sort_by_key(|(i, _, _)| *i);
        let mut results = vec![];
        let mut failures = vec![];
        for (i, entry, failure) in done {
            results.push(entry);
            if let Some(e) = failure {
                failures.push((services[i].0.as_str(), e));
            }
        }
        anyhow::Ok((results, failures))
    });
    let (results, failures) = match outcome {
        Ok(done) => done,
        // Scripts reading -o json get a document however it ended: here, nothing was applied.
        Err(e) => {
            if !lines.text {
                out_exact!("{}", serde_json::to_string_pretty(&json!({ "services": [] }))?);
            }
            return Err(e);
        }
    };
    if !lines.text {
        out_exact!(
            "{}",
            serde_json::to_string_pretty(&json!({ "services": results }))?
        );
    }
    failed_services(failures, services.len())
}

/// How `apply`'s lines are printed.
struct Lines {
    text: bool,
    /// When services are applied at once: the width of the longest name, each line's prefix.
    width: Option<usize>,
}

impl Lines {
    /// Prints one line of `service`'s progress, if progress is shown: at depth 0 a line about
    /// the whole service (after its name), deeper ones indented under it. A closed stdout must
    /// not change what is applied or hide how it ended, so writing fails quietly.
    fn say(&self, service: &str, depth: usize, text: &str) {
        if !self.text {
            return;
        }
        let line = match (self.width, depth) {
            (None, 0) => format!("{service} {text}"),
            (None, d) => format!("{}{text}", "  ".repeat(d)),
            // The prefix stands for the first level of indentation.
            (Some(width), d) => format!("{service:<width$}  {}{text}", "  ".repeat(d.saturating_sub(1))),
        };
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), "{}", escape_lines(&line));
    }
}

/// Applies one service, saying how it goes; its entry in the JSON document, and the error the
/// command exits with if it failed.
async fn apply_one(
    cluster: &Cluster,
    service: &str,
    objects: &[Rendered],
    options: &ApplyOptions,
    lines: &Lines,
) -> (Value, Option<anyhow::Error>) {
    let started = Instant::now();
    let suffix = if options.dry_run { " (server dry run)" } else { "" };
    lines.say(service, 0, &format!("(namespace {}){suffix}", cluster.namespace));
    let mut applied: Vec<Value> = vec![];
    let mut pruned: Vec<String> = vec![];
    let mut reload = Value::Null;
    let mut on_progress = |p: Progress| match &p {
        Progress::Step { what } => lines.say(service, 1, what),
        Progress::Applied { kind, name, change } => {
            applied.push(json!({"kind": kind, "name": name, "change": change.verb()}));
            lines.say(
                service,
                2,
                &format!("{}/{name} {}{suffix}", kind_lower(kind), change.verb()),
            );
        }
        Progress::Waiting { deployment, progress } => lines.say(
            service,
            2,
            &format!(
                "waiting for {deployment}: {progress} ({}s)",
                started.elapsed().as_secs()
            ),
        ),
        Progress::Ready { deployment, .. } => lines.say(
            service,
            2,
            &format!("{deployment} rolled out ({}s)", started.elapsed().as_secs()),
        ),
        Progress::Reloaded { routers, after } => {
            reload["routers"] = json!(routers);
            reload["seconds"] = json!(after.as_secs_f64());
            lines.say(
                service,
                2,
                &format!(
                    "{} the new config ({}s)",
                    match routers {
                        1 => "the router runs".to_string(),
                        n => format!("all {n} routers run"),
                    },
                    started.elapsed().as_secs()
                ),
            )
        }
        Progress::NotNudged { why } => {
            reload["not_nudged"] = json!(why);
            lines.say(
                service,
                2,
                &format!("warning: {why}; the kubelet brings the config within its sync period"),
            );
        }
        Progress::ReloadUnconfirmed { pods } => {
            reload["unconfirmed"] = json!(
                pods.iter()
                    .map(|(pod, why)| json!({"pod": pod, "why": why}))
                    .collect::<Vec<_>>()
            );
            for (pod, why) in pods {
                lines.say(
                    service,
                    2,
                    &format!(
                        "warning: cannot ask pod {pod} which config it runs ({why}); the kubelet brings \
                         it the new one within a minute or so"
                    ),
                );
            }
        }
        Progress::Pruned { deployment } => {
            pruned.push(deployment.clone());
            lines.say(service, 2, &format!("deployment/{deployment} deleted{suffix}"));
        }
    };
    let result = cluster
        .apply_service(service, objects, options, &mut on_progress)
        .await;
    let mut entry = json!({
        "service": service,
        "dry_run": options.dry_run,
        "applied": applied,
        "pruned": pruned,
        "ok": result.is_ok(),
    });
    if !reload.is_null() {
        entry["routers_reload"] = reload;
    }
    match result {
        Ok(()) => {
            let verb = if options.dry_run {
                "checked by the server"
            } else {
                "applied"
            };
            lines.say(service, 0, &format!("{verb} in {}s", started.elapsed().as_secs()));
            (entry, None)
        }
        Err(e) => {
            entry["error"] = json!(e.to_string());
            if let ApplyError::NotReady { not_ready, .. } = &e {
                entry["not_ready"] = json!(not_ready);
            }
            if let ApplyError::NotReloaded { stale, digest, .. } = &e {
                entry["routers_reload"]["wanted"] = json!(digest);
                entry["routers_reload"]["stale"] = json!(
                    stale
                        .iter()
                        .map(|(pod, runs)| json!({"pod": pod, "runs": runs}))
                        .collect::<Vec<_>>()
                );
            }
            lines.say(
                service,
                0,
                &format!("failed after {}s", started.elapsed().as_secs()),
            );
            (entry, Some(apply_failed(service, e)))
        }
    }
}

/// What `apply` exits with once every service has had its turn: the error of the one that
/// failed, or, when several did, each said and the gravest returned (one the cluster or repo
/// caused, exit status 2, over a rollout that did not finish, 1).
fn failed_services(failures: Vec<(&str, anyhow::Error)>, of: usize) -> Result<()> {
    let count = failures.len();
    let names: Vec<&str> = failures.iter().map(|(s, _)| *s).collect();
    let names = names.join(", ");
    let gravest = failures
        .iter()
        .position(|(_, e)| !e.is::<Reported>())
        .unwrap_or(0);
    let mut returned = None;
    for (i, (_, e)) in failures.into_iter().enumerate() {
        if i == gravest {
            returned = Some(e);
        } else if !e.is::<Reported>() {
            // A rollout that did not finish was told in full already.
            eout!("error: {e:#}");
        }
    }
    if count > 1 {
        eout!("{count} of {of} services failed: {names}; the others were applied");
    }
    match returned {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The error `cohort apply` exits with; a rollout that did not become ready is told here in
/// full (what each Deployment waits for, why its pods are not ready) and exits 1.
fn apply_failed(service: &str, e: ApplyError) -> anyhow::Error {
    match e {
        ApplyError::Kube(k @ KubeError::Api { code: 409, .. }) => CouldNotApply(format!(
            "applying {service}: {k}\nhint: another field manager set a field the release repo \
             sets: `cohort diff` shows it; `cohort apply --force-conflicts` makes the repo's value win"
        ))
        .into(),
        ApplyError::Kube(k) => anyhow::Error::new(CouldNotCheck(k)).context(format!("applying {service}")),
        ApplyError::NotReady {
            not_ready,
            timeout,
            failed,
        } => {
            let mut msg = format!(
                "error: {service}: {}",
                ApplyError::NotReady {
                    not_ready: not_ready.clone(),
                    timeout,
                    failed
                }
            );
            for NotReady {
                deployment,
                progress,
                state,
                reasons,
            } in &not_ready
            {
                msg.push_str(&format!("\n  {deployment}: {progress} ({state})"));
                for r in reasons {
                    msg.push_str(&format!("\n    {r}"));
                }
            }
            msg.push_str(
                "\nnothing was pruned and nothing after this step was changed: the versions \
                 already running keep serving",
            );
            eout!("{msg}");
            Reported.into()
        }
        e @ ApplyError::Unsupported { .. } => UsageError(e.to_string()).into(),
        e @ ApplyError::NotReloaded { .. } => {
            eout!(
                "error: {service}: {e}\nnothing after this step was changed and nothing was pruned: \
                 the versions already running keep serving"
            );
            Reported.into()
        }
        e @ (ApplyError::UnknownKind { .. } | ApplyError::Busy { .. }) => CouldNotApply(e.to_string()).into(),
    }
}

/// One difference between the release repo and the cluster.
struct Difference {
    kind: &'static str,
    name: String,
    service: String,
    what: &'static str,
    note: String,
    diff: Option<String>,
}

/// Runs `cohort diff`.
pub fn diff(cli: &Cli, args: &DiffArgs) -> Result<()> {
    let repo = valid_repo(cli)?;
    let services = rendered(&repo, &args.services)?;
    let target = target(&repo, &args.cluster)?;
    let runtime = runtime()?;
    let differences = runtime.block_on(async {
        let cluster = connect(&target, &services).await?;
        let mut out: Vec<Difference> = vec![];
        for (service, objects) in &services {
            for o in objects {
                let live = cluster.live(o).await.map_err(apply_error)?;
                // A conflict with another field manager is drift too: show it as the forced
                // apply would leave it, and say that apply needs --force-conflicts.
                let (desired, conflict) = match cluster.server_side_apply(o, true, false).await {
                    Ok(v) => (v, false),
                    Err(ApplyError::Kube(KubeError::Api { code: 409, .. })) => (
                        cluster
                            .server_side_apply(o, true, true)
                            .await
                            .map_err(apply_error)?,
                        true,
                    ),
                    Err(e) => return Err(apply_error(e)),
                };
                let conflict_note = match conflict {
                    true => "; another field manager set it: apply needs --force-conflicts",
                    false => "",
                };
                match compare::change(live.as_ref(), &desired) {
                    Change::Unchanged => {}
                    Change::Create => out.push(Difference {
                        kind: o.kind,
                        name: o.name.clone(),
                        service: service.clone(),
                        what: "create",
                        note: "not in the cluster; apply creates it".into(),
                        diff: None,
                    }),
                    Change::Update(d) => out.push(Difference {
                        kind: o.kind,
                        name: o.name.clone(),
                        service: service.clone(),
                        what: "update",
                        note: format!("differs from the release repo{conflict_note}"),
                        diff: Some(d),
                    }),
                }
            }
        }
        // What cohort manages that the repo no longer renders: for the services compared,
        // versions apply would prune and objects it leaves (a track that is no longer a stage);
        // when all are compared, also objects of services the repo no longer has.
        let known: Vec<&str> = services.iter().map(|(s, _)| s.as_str()).collect();
        let managed = cluster.managed_objects().await.map_err(CouldNotCheck)?;
        for m in managed {
            let rendered = services
                .iter()
                .flat_map(|(_, objects)| objects)
                .any(|o| o.kind == m.kind && o.name == m.name);
            if rendered {
                continue;
            }
            let ours = known.contains(&m.service.as_str());
            let (what, note) = match (ours, m.is_prunable()) {
                (true, true) => (
                    "prune",
                    "managed by cohort, a version the release repo no longer names; apply deletes it"
                        .to_string(),
                ),
                (true, false) => (
                    "orphan",
                    format!(
                        "managed by cohort for {}, which no longer renders it (a track that is no \
                         longer a stage?); apply leaves it: delete it with kubectl",
                        m.service
                    ),
                ),
                (false, _) if !args.services.is_empty() => continue,
                // The Role `cohort render --rbac` makes for whoever applies is cohort's, for no
                // service, and no drift.
                (false, _)
                    if m.service.is_empty()
                        && matches!(m.kind, "ServiceAccount" | "Role" | "RoleBinding") =>
                {
                    continue;
                }
                (false, _) if m.service.is_empty() => ("orphan", "managed by cohort, for no service".into()),
                (false, _) => (
                    "orphan",
                    format!(
                        "managed by cohort for service {}, which the release repo no longer has \
                         (apply leaves it; delete it with kubectl)",
                        m.service
                    ),
                ),
            };
            out.push(Difference {
                kind: m.kind,
                name: m.name,
                service: m.service,
                what,
                note,
                diff: None,
            });
        }
        Ok::<_, anyhow::Error>(out)
    })?;
    match args.output {
        TextOrJson::Json => {
            let list: Vec<Value> = differences
                .iter()
                .map(|d| {
                    json!({
                        "kind": d.kind, "name": d.name, "service": d.service,
                        "change": d.what, "note": d.note, "diff": d.diff,
                    })
                })
                .collect();
            out_exact!(
                "{}",
                serde_json::to_string_pretty(&json!({ "differences": list }))?
            );
        }
        TextOrJson::Text => {
            let c = color();
            if differences.is_empty() {
                out!(
                    "no differences in what cohort manages: every field the release repo sets is as it says"
                );
            }
            for d in &differences {
                let (mark, code) = match d.what {
                    "create" => ("+", "32"),
                    "update" => ("~", "33"),
                    _ => ("-", "31"),
                };
                out_exact!(
                    "{} {}/{} ({})",
                    paint(c, code, mark),
                    kind_lower(d.kind),
                    Printable(&d.name),
                    Printable(&d.note)
                );
                for line in d.diff.iter().flat_map(|t| t.lines()) {
                    let code = match line.chars().next() {
                        Some('+') => "32",
                        Some('-') => "31",
                        Some('@') => "36",
                        _ => "0",
                    };
                    // Live objects are the cluster's, and anyone who can edit them writes here.
                    out_exact!("    {}", paint(c && code != "0", code, &escape(line)));
                }
            }
        }
    }
    match differences.is_empty() {
        true => Ok(()),
        false => Err(Reported.into()),
    }
}

fn apply_error(e: ApplyError) -> anyhow::Error {
    match e {
        ApplyError::Kube(k) => CouldNotCheck(k).into(),
        e @ ApplyError::Unsupported { .. } => UsageError(e.to_string()).into(),
        e => CouldNotApply(e.to_string()).into(),
    }
}

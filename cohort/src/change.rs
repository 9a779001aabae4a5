//! Commands that change the release repo: deploy, promote, rollback, approve. Each one
//! validates, writes the state file atomically and makes exactly one commit.

use anyhow::{Context, Result};
use cohort_core::{GateBlock, Printable, ServiceName, Version};
use cohort_release::git::ReleaseRepo;
use cohort_release::history::entries;
use cohort_release::plan::{self, PlanError, Planned, PromoteRequest};
use cohort_release::record::commit_message;
use cohort_release::snapshot::head_files;
use cohort_spec::{Service, Severity, state_path, write_state};

use crate::cli::{Cli, TextOrJson};
use crate::repo_cmds::{prefix_in, print_diagnostics, repo_dir, repo_root, service, valid_or_report};
use crate::{Reported, UsageError};

fn version(v: &str) -> Result<Version> {
    Version::new(v)
        .map_err(|e| UsageError(format!("{e}; versions look like `1.18.0` or `1.19.0-rc.1`")).into())
}

/// Plan errors that name something that does not exist are usage errors; the rest are refusals.
fn refused(e: PlanError) -> anyhow::Error {
    match e {
        PlanError::NotAStage { .. } | PlanError::UnknownCheck { .. } => UsageError(e.to_string()).into(),
        other => anyhow::Error::new(other).context("refused"),
    }
}

/// One change, as asked for on the command line.
pub enum Request<'a> {
    /// `cohort deploy SERVICE VERSION`.
    Deploy { build: &'a str },
    /// `cohort promote SERVICE [--to TRACK] [--force --reason R]`.
    Promote {
        to: Option<&'a str>,
        force: bool,
        reason: Option<&'a str>,
        judge: &'a crate::cli::JudgeArgs,
    },
    /// `cohort rollback SERVICE TRACK [--to VERSION] [--reason R]`.
    Rollback {
        track: &'a str,
        to: Option<&'a str>,
        reason: Option<&'a str>,
    },
    /// `cohort approve SERVICE VERSION --check NAME [--note N]`.
    Approve {
        build: &'a str,
        check: &'a str,
        note: Option<&'a str>,
    },
}

pub fn run(cli: &Cli, name: &str, request: Request<'_>, output: TextOrJson) -> Result<()> {
    let dir = repo_dir(cli);
    let git = ReleaseRepo::open(&dir)?;
    let root = repo_root(&dir);
    let prefix = prefix_in(&git, &root);
    // Hold the lock from reading to committing so that no other cohort process changes the
    // state in between.
    let lock = git.lock()?;
    // Hand edits to the state file are refused before anything else, so they are never lost
    // and the message says what to do about them.
    if let Ok(name) = ServiceName::new(name) {
        git.check_clean(&[prefix.join(state_path(&name)).as_path()])?;
    }
    // Validate and plan against what is committed: the commit is built on HEAD's tree.
    let (repo, diags) = cohort_spec::repo::validate(&head_files(&git, &prefix)?);
    let repo = valid_or_report(repo, diags)?;
    let svc = service(&repo, name).map_err(|e| {
        let spec = root.join("services").join(format!("{name}.yaml"));
        if spec.is_file() {
            UsageError(format!("services/{name}.yaml is not committed yet; changes are checked against the last commit, so commit it first")).into()
        } else {
            e
        }
    })?;
    let path = prefix.join(state_path(&svc.spec.name));
    let p = &repo.pipeline;
    let planned: Planned = match request {
        Request::Deploy { build } => plan::deploy(p, svc, &version(build)?),
        Request::Promote {
            to,
            force,
            reason,
            judge,
        } => {
            let mut req = PromoteRequest {
                to,
                force,
                reason,
                now: jiff::Timestamp::now().as_second(),
                judgement: None,
            };
            let history = entries(&git.log()?);
            match plan::promote(p, svc, &history, &req) {
                // The gate wants a judgement: judge the version where it runs now, and try
                // again with the evidence if it passed.
                Err(PlanError::GateClosed { track, blocks, .. })
                    if blocks.contains(&GateBlock::JudgementRequired) =>
                {
                    let source = p
                        .stages
                        .iter()
                        .position(|s| s.as_str() == track)
                        .and_then(|i| i.checked_sub(1))
                        .map(|i| p.stages[i].to_string())
                        .unwrap_or_default();
                    req.judgement = crate::analyze_cmd::judgement_for_promotion(
                        &repo,
                        svc.spec.name.as_str(),
                        &source,
                        judge,
                    )?;
                    plan::promote(p, svc, &history, &req)
                }
                other => other,
            }
        }
        Request::Rollback { track, to, reason } => {
            let to = to.map(version).transpose()?;
            plan::rollback(p, svc, &entries(&git.log()?), track, to.as_ref(), reason)
        }
        Request::Approve { build, check, note } => plan::approve(p, svc, &version(build)?, check, note),
    }
    .map_err(refused)?;

    let problems = still_valid(&repo, svc, &planned)?;
    let text = write_state(&svc.spec.name, &planned.state);
    let id = git
        .commit_files(
            &lock,
            &[(path.clone(), text.into_bytes())],
            &commit_message(&planned.change),
        )
        .with_context(|| format!("could not record `{}`", planned.change.subject()))?;
    match output {
        TextOrJson::Json => {
            out_exact!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({"commit": id, "change": planned.change}))?
            );
        }
        TextOrJson::Text => {
            out!("{} ({})", planned.change.subject(), &id[..id.len().min(9)]);
            if planned.change.forced {
                out!(
                    "  gate overridden: {}",
                    Printable(planned.change.reason.as_deref().unwrap_or_default())
                );
            }
            print_diagnostics(&problems);
        }
    }
    Ok(())
}

/// The new state must be as valid as the old (names fit, every route keeps a track): its
/// warnings, or the refusal with its errors said.
pub fn still_valid(
    repo: &cohort_spec::Repo,
    svc: &Service,
    planned: &Planned,
) -> Result<Vec<cohort_spec::Diagnostic>> {
    let next = Service {
        spec: svc.spec.clone(),
        state: planned.state.clone(),
    };
    let problems = cohort_spec::repo::check_service(&repo.pipeline, &next);
    if problems.iter().any(|d| d.severity == Severity::Error) {
        print_diagnostics(&problems);
        eout!(
            "{}: refused: `{}` would leave the release repo invalid",
            svc.spec.name,
            planned.change.subject()
        );
        return Err(Reported.into());
    }
    Ok(problems)
}

/// `pause`, `resume`, `freeze` and `unfreeze`: one commit for the service named, or, for
/// `freeze`/`unfreeze` without one, a commit for each service not already so.
pub fn hold(
    cli: &Cli,
    name: Option<&str>,
    action: cohort_release::record::Action,
    reason: Option<&str>,
    output: TextOrJson,
) -> Result<()> {
    if reason.is_some_and(|r| r.trim().is_empty()) {
        return Err(UsageError("--reason is empty; say why, it is recorded in the commit".into()).into());
    }
    let dir = repo_dir(cli);
    let git = ReleaseRepo::open(&dir)?;
    let root = repo_root(&dir);
    let prefix = prefix_in(&git, &root);
    let lock = git.lock()?;
    let (repo, diags) = cohort_spec::repo::validate(&head_files(&git, &prefix)?);
    let repo = valid_or_report(repo, diags)?;
    let targets: Vec<&Service> = match name {
        Some(n) => vec![service(&repo, n)?],
        None => repo.services.iter().collect(),
    };
    let mut planned = vec![];
    for svc in targets {
        let path = prefix.join(state_path(&svc.spec.name));
        git.check_clean(&[path.as_path()])?;
        match plan::hold(svc, action, reason) {
            Ok(p) => planned.push((svc, path, p)),
            // Every service: the ones already so are left as they are.
            Err(PlanError::AlreadyHeld { .. }) if name.is_none() => {}
            Err(e) => return Err(refused(e)),
        }
    }
    if planned.is_empty() {
        return Err(anyhow::anyhow!("nothing to change: every service is already so").context("refused"));
    }
    let mut done = vec![];
    for (svc, path, p) in planned {
        let text = write_state(&svc.spec.name, &p.state);
        let id = git
            .commit_files(&lock, &[(path, text.into_bytes())], &commit_message(&p.change))
            .with_context(|| format!("could not record `{}`", p.change.subject()))?;
        if output == TextOrJson::Text {
            out!("{} ({})", p.change.subject(), &id[..id.len().min(9)]);
        }
        done.push(serde_json::json!({"commit": id, "change": p.change}));
    }
    if output == TextOrJson::Json {
        out_exact!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"changes": done}))?
        );
    }
    Ok(())
}

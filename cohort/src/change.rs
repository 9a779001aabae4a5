//! Commands that change the release repo: deploy, promote, rollback, approve. Each one
//! validates, writes the state file atomically and makes exactly one commit.

use anyhow::{Context, Result};
use cohort_core::{ServiceName, Version};
use cohort_release::git::ReleaseRepo;
use cohort_release::history::entries;
use cohort_release::plan::{self, PlanError, Planned, PromoteRequest};
use cohort_release::record::commit_message;
use cohort_spec::{Service, Severity, state_path, write_state};

use crate::cli::{Cli, Command, TextOrJson};
use crate::repo_cmds::{load_valid, prefix_in, print_diagnostics, repo_dir, repo_root, service};
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

pub fn run(cli: &Cli) -> Result<()> {
    let dir = repo_dir(cli);
    let git = ReleaseRepo::open(&dir)?;
    let root = repo_root(&dir);
    let prefix = prefix_in(&git, &root);
    // Hold the lock from reading to committing so that no other cohort process changes the
    // state in between.
    let lock = git.lock()?;
    let (name, output) = match &cli.command {
        Command::Deploy { service, out, .. }
        | Command::Promote { service, out, .. }
        | Command::Rollback { service, out, .. }
        | Command::Approve { service, out, .. } => (service.as_str(), out.output),
        _ => unreachable!("only changes are dispatched here"),
    };
    // Hand edits to the state file are refused before anything else, so they are never lost
    // and the message says what to do about them.
    if let Ok(name) = ServiceName::new(name) {
        git.check_clean(&[prefix.join(state_path(&name)).as_path()])?;
    }
    let repo = load_valid(&root)?;
    let svc = service(&repo, name)?;
    let path = prefix.join(state_path(&svc.spec.name));
    let planned: Planned = match &cli.command {
        Command::Deploy { build, .. } => {
            plan::deploy(&repo.pipeline, svc, &version(build)?).map_err(refused)?
        }
        Command::Promote {
            to, force, reason, ..
        } => {
            let history = entries(&git.log()?);
            let req = PromoteRequest {
                to: to.as_deref(),
                force: *force,
                reason: reason.as_deref(),
                now: jiff::Timestamp::now().as_second(),
                judgement_passed: false,
            };
            plan::promote(&repo.pipeline, svc, &history, &req).map_err(refused)?
        }
        Command::Rollback {
            track, to, reason, ..
        } => {
            let history = entries(&git.log()?);
            let to = to.as_deref().map(version).transpose()?;
            plan::rollback(
                &repo.pipeline,
                svc,
                &history,
                track,
                to.as_ref(),
                reason.as_deref(),
            )
            .map_err(refused)?
        }
        Command::Approve {
            build, check, note, ..
        } => plan::approve(&repo.pipeline, svc, &version(build)?, check, note.as_deref()).map_err(refused)?,
        _ => unreachable!("only changes are dispatched here"),
    };

    // The new state must be as valid as the old: names fit, every route keeps a track.
    let next = Service {
        spec: svc.spec.clone(),
        state: planned.state.clone(),
    };
    let problems = cohort_spec::repo::check_service(&repo.pipeline, &next);
    if problems.iter().any(|d| d.severity == Severity::Error) {
        print_diagnostics(&problems);
        eprintln!(
            "refused: `{}` would leave the release repo invalid",
            planned.change.subject()
        );
        return Err(Reported.into());
    }
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
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({"commit": id, "change": planned.change}))?
            );
        }
        TextOrJson::Text => {
            println!("{} ({})", planned.change.subject(), &id[..id.len().min(9)]);
            if planned.change.forced {
                println!(
                    "  gate overridden: {}",
                    planned.change.reason.as_deref().unwrap_or_default()
                );
            }
            print_diagnostics(&problems);
        }
    }
    Ok(())
}

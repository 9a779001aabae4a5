//! Deciding a change: from the validated repo, its history and the request, the new release
//! state and the record of what changed, or every reason it cannot be done. Pure.

use cohort_core::{GateBlock, GateInput, Pipeline, ReleaseState, TrackName, Version, check_gate};
use cohort_spec::Service;

use crate::history::{Entry, arrived_at, previous_version, versions_seen};
use crate::record::{Action, Change};

/// A change ready to be written and committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    /// The service's new release state.
    pub state: ReleaseState,
    /// What changed, for the commit.
    pub change: Change,
}

/// Why a change cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The track is not one of the stages.
    #[error("`{track}` is not a stage of this repo; the stages are {stages}")]
    NotAStage {
        /// The track asked for.
        track: String,
        /// The stages, comma-separated.
        stages: String,
    },
    /// The track already runs that version.
    #[error("{service} {track} already runs {version}; nothing to change")]
    Unchanged {
        /// Service.
        service: String,
        /// Track.
        track: String,
        /// Version.
        version: String,
    },
    /// The track is not part-way through a ramp.
    #[error("{service} {track} is not ramping: its share is already the configured one")]
    NotRamping {
        /// Service.
        service: String,
        /// Track.
        track: String,
    },
    /// The service is already paused, frozen, running or unfrozen.
    #[error("{service} is already {what}")]
    AlreadyHeld {
        /// Service.
        service: String,
        /// `paused`, `frozen`, `running` or `not frozen`.
        what: &'static str,
    },
    /// Every stage already runs the version of the stage before it.
    #[error("nothing to promote: every stage of {service} runs the version of the stage before it")]
    NothingToPromote {
        /// Service.
        service: String,
    },
    /// Promotion into the first stage.
    #[error("`{track}` is the first stage; builds enter it with `cohort deploy`")]
    FirstStage {
        /// The first stage.
        track: String,
    },
    /// The stage a version would come from has nothing deployed.
    #[error("{service} has no version on `{track}` to promote")]
    EmptySource {
        /// Service.
        service: String,
        /// The empty stage.
        track: String,
    },
    /// The gate of the target stage is closed.
    #[error("the gate into `{track}` is closed for {service} {version}:\n{}", list(.blocks))]
    GateClosed {
        /// Service.
        service: String,
        /// Version.
        version: String,
        /// Target stage.
        track: String,
        /// Every reason.
        blocks: Vec<GateBlock>,
    },
    /// `--force` without `--reason`.
    #[error("--force overrides a gate and must say why: add --reason \"...\"")]
    ForceNeedsReason,
    /// Nothing earlier to go back to.
    #[error("the history shows no version of {service} {track} before {version}; name one with --to VERSION")]
    NoEarlierVersion {
        /// Service.
        service: String,
        /// Track.
        track: String,
        /// Current version.
        version: String,
    },
    /// The track has nothing deployed.
    #[error("{service} has nothing deployed on `{track}`")]
    NothingDeployed {
        /// Service.
        service: String,
        /// Track.
        track: String,
    },
    /// `--to` names a version the track never ran.
    #[error("{service} {track} never ran {version}; versions it ran: {seen}")]
    NotInHistory {
        /// Service.
        service: String,
        /// Track.
        track: String,
        /// Version asked for.
        version: String,
        /// Versions seen, newest first.
        seen: String,
    },
    /// Approving a version that no track runs.
    #[error("no track of {service} runs {version}; deploy it before recording checks")]
    NotRunning {
        /// Service.
        service: String,
        /// Version.
        version: String,
    },
    /// The check is already recorded.
    #[error("check `{check}` is already recorded for {service} {version}")]
    AlreadyApproved {
        /// Service.
        service: String,
        /// Version.
        version: String,
        /// Check.
        check: String,
    },
    /// A check that no gate asks for.
    #[error("no gate asks for a check named `{check}`; the gates ask for: {known}")]
    UnknownCheck {
        /// Check.
        check: String,
        /// Checks the gates ask for.
        known: String,
    },
}

fn list(blocks: &[GateBlock]) -> String {
    blocks
        .iter()
        .map(|b| format!("  - {b}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn stage(pipeline: &Pipeline, track: &str) -> Result<TrackName, PlanError> {
    TrackName::new(track)
        .ok()
        .filter(|t| pipeline.has_stage(t))
        .ok_or_else(|| PlanError::NotAStage {
            track: track.to_string(),
            stages: pipeline
                .stages
                .iter()
                .map(TrackName::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn set(
    pipeline: &Pipeline,
    svc: &Service,
    track: &TrackName,
    version: &Version,
    mut change: Change,
) -> Result<Planned, PlanError> {
    let from = svc.state.version(track);
    if from == Some(version) {
        return Err(PlanError::Unchanged {
            service: svc.spec.name.to_string(),
            track: track.to_string(),
            version: version.to_string(),
        });
    }
    let mut state = svc.state.clone();
    change.track = Some(track.to_string());
    change.from = from.map(ToString::to_string);
    change.to = Some(version.to_string());
    state.tracks.insert(track.clone(), version.clone());
    state.forget_unused_approvals();
    // A new version on a ramped stage starts at the ramp's first step; one rolled back to
    // has served there before and gets the configured weights.
    let steps = pipeline.autopilot.stage(track).ramp.len();
    match change.action {
        Action::Deploy | Action::Promote if steps > 1 => {
            state.ramp.insert(track.clone(), 0);
        }
        _ => {
            state.ramp.remove(track);
        }
    }
    Ok(Planned { state, change })
}

/// `cohort deploy SERVICE VERSION`: the first stage runs VERSION.
pub fn deploy(pipeline: &Pipeline, svc: &Service, version: &Version) -> Result<Planned, PlanError> {
    let first = pipeline.stages.first().ok_or_else(|| PlanError::NotAStage {
        track: String::new(),
        stages: String::new(),
    })?;
    set(
        pipeline,
        svc,
        first,
        version,
        Change::new(Action::Deploy, svc.spec.name.as_str()),
    )
}

/// How a promotion was asked for.
#[derive(Clone, Debug, Default)]
pub struct PromoteRequest<'a> {
    /// The stage to promote into; by default the first stage whose version differs from the
    /// stage before it, so repeated promotes walk the newest build through the pipeline.
    pub to: Option<&'a str>,
    /// Override closed gates.
    pub force: bool,
    /// Why (required with `force`).
    pub reason: Option<&'a str>,
    /// Now, unix seconds.
    pub now: i64,
    /// A passing canary judgement of the version on the stage it leaves: its evidence, one
    /// line (recorded in the commit).
    pub judgement: Option<String>,
}

/// `cohort promote SERVICE [--to TRACK]`.
pub fn promote(
    pipeline: &Pipeline,
    svc: &Service,
    history: &[Entry],
    req: &PromoteRequest<'_>,
) -> Result<Planned, PlanError> {
    let name = svc.spec.name.to_string();
    let target = match req.to {
        Some(t) => stage(pipeline, t)?,
        None => pipeline
            .stages
            .windows(2)
            .find(|w| {
                svc.state.version(&w[0]).is_some() && svc.state.version(&w[0]) != svc.state.version(&w[1])
            })
            .map(|w| w[1].clone())
            .ok_or(PlanError::NothingToPromote {
                service: name.clone(),
            })?,
    };
    let source = pipeline
        .previous_stage(&target)
        .ok_or_else(|| PlanError::FirstStage {
            track: target.to_string(),
        })?;
    let version = svc.state.version(source).ok_or_else(|| PlanError::EmptySource {
        service: name.clone(),
        track: source.to_string(),
    })?;
    if req.force && req.reason.is_none_or(|r| r.trim().is_empty()) {
        return Err(PlanError::ForceNeedsReason);
    }
    let gate = pipeline.gates.get(&target).cloned().unwrap_or_default();
    let recorded = svc.state.recorded_checks(version);
    let blocks = check_gate(&GateInput {
        gate: &gate,
        entered_previous_at: arrived_at(history, &name, source.as_str(), version.as_str()),
        now: req.now,
        recorded_checks: recorded,
        judgement_passed: req.judgement.is_some(),
    });
    if !blocks.is_empty() && !req.force {
        return Err(PlanError::GateClosed {
            service: name,
            version: version.to_string(),
            track: target.to_string(),
            blocks,
        });
    }
    let mut change = Change::new(Action::Promote, &name);
    change.from_track = Some(source.to_string());
    change.forced = !blocks.is_empty();
    change.reason = req.reason.map(str::to_string);
    change.judgement = req.judgement.clone();
    set(pipeline, svc, &target, version, change)
}

/// `cohort rollback SERVICE TRACK [--to VERSION]`.
pub fn rollback(
    pipeline: &Pipeline,
    svc: &Service,
    history: &[Entry],
    track: &str,
    to: Option<&Version>,
    reason: Option<&str>,
) -> Result<Planned, PlanError> {
    let name = svc.spec.name.to_string();
    let track = stage(pipeline, track)?;
    let current = svc
        .state
        .version(&track)
        .ok_or_else(|| PlanError::NothingDeployed {
            service: name.clone(),
            track: track.to_string(),
        })?;
    let target = match to {
        Some(v) => {
            let seen = versions_seen(history, &name, track.as_str());
            if !seen.iter().any(|s| s == v.as_str()) {
                return Err(PlanError::NotInHistory {
                    service: name,
                    track: track.to_string(),
                    version: v.to_string(),
                    seen: if seen.is_empty() {
                        "none recorded".into()
                    } else {
                        seen.join(", ")
                    },
                });
            }
            v.clone()
        }
        None => previous_version(history, &name, track.as_str(), current.as_str())
            .and_then(|v| Version::new(&v).ok())
            .ok_or_else(|| PlanError::NoEarlierVersion {
                service: name.clone(),
                track: track.to_string(),
                version: current.to_string(),
            })?,
    };
    let mut change = Change::new(Action::Rollback, &name);
    change.reason = reason.map(str::to_string);
    set(pipeline, svc, &track, &target, change)
}

/// `cohort approve SERVICE VERSION --check NAME [--note ...]`.
pub fn approve(
    pipeline: &Pipeline,
    svc: &Service,
    version: &Version,
    check: &str,
    note: Option<&str>,
) -> Result<Planned, PlanError> {
    let name = svc.spec.name.to_string();
    let known: Vec<&str> = pipeline
        .gates
        .values()
        .flat_map(|g| g.checks.iter().map(String::as_str))
        .collect();
    if !known.contains(&check) {
        return Err(PlanError::UnknownCheck {
            check: check.to_string(),
            known: if known.is_empty() {
                "nothing".into()
            } else {
                known.join(", ")
            },
        });
    }
    if !svc.state.tracks.values().any(|v| v == version) {
        return Err(PlanError::NotRunning {
            service: name,
            version: version.to_string(),
        });
    }
    let mut state = svc.state.clone();
    let checks = state.approvals.entry(version.clone()).or_default();
    if checks.contains_key(check) {
        return Err(PlanError::AlreadyApproved {
            service: name,
            version: version.to_string(),
            check: check.to_string(),
        });
    }
    checks.insert(check.to_string(), note.unwrap_or_default().to_string());
    let mut change = Change::new(Action::Approve, &name);
    change.to = Some(version.to_string());
    change.check = Some(check.to_string());
    change.reason = note.map(str::to_string);
    Ok(Planned { state, change })
}

/// The autopilot's `ramp`: `track` of `svc` gets the next step of its ramp; past the
/// second-to-last step the ramp is done and the configured weights hold.
pub fn ramp(
    pipeline: &Pipeline,
    svc: &Service,
    track: &TrackName,
    judgement: Option<String>,
) -> Result<Planned, PlanError> {
    let name = svc.spec.name.to_string();
    let steps = pipeline.autopilot.stage(track).ramp;
    let not_ramping = || PlanError::NotRamping {
        service: name.clone(),
        track: track.to_string(),
    };
    let step = *svc.state.ramp.get(track).ok_or_else(not_ramping)?;
    let (from, to) = match (steps.get(step), steps.get(step + 1)) {
        (Some(from), Some(to)) => (*from, *to),
        _ => return Err(not_ramping()),
    };
    let mut state = svc.state.clone();
    if step + 2 >= steps.len() {
        state.ramp.remove(track);
    } else {
        state.ramp.insert(track.clone(), step + 1);
    }
    let mut change = Change::new(Action::Ramp, &name);
    change.track = Some(track.to_string());
    change.from = Some(from.to_string());
    change.to = Some(to.to_string());
    change.judgement = judgement;
    Ok(Planned { state, change })
}

/// `cohort pause`, `resume`, `freeze` and `unfreeze`: `reason` holds the service (pause,
/// freeze) or `None` releases it (resume, unfreeze).
pub fn hold(svc: &Service, action: Action, reason: Option<&str>) -> Result<Planned, PlanError> {
    let name = svc.spec.name.to_string();
    let mut state = svc.state.clone();
    let (slot, what) = match action {
        Action::Pause => (&mut state.paused, "paused"),
        Action::Resume => (&mut state.paused, "running"),
        Action::Freeze => (&mut state.frozen, "frozen"),
        _ => (&mut state.frozen, "not frozen"),
    };
    let holding = matches!(action, Action::Pause | Action::Freeze);
    if holding == slot.is_some() {
        return Err(PlanError::AlreadyHeld { service: name, what });
    }
    *slot = if holding {
        Some(reason.unwrap_or_default().trim().to_string())
    } else {
        None
    };
    let mut change = Change::new(action, &name);
    change.reason = reason.map(str::to_string);
    Ok(Planned { state, change })
}

#[cfg(test)]
mod tests;

//! The autopilot's decision for one service on one pass, as a pure function of the pipeline
//! (its `autopilot:` policy and gates), the service's release state, what the history and the
//! cluster say of each track, each track's judgement, and the clock.
//!
//! At most one action per service and pass, in this order:
//! 1. **Roll back** the most exposed track whose version fails its judgement, where the
//!    stage's policy says `rollback: auto`. Nothing holds a rollback back: no window, freeze
//!    or pause.
//! 2. Nothing more while the service is **paused**.
//! 3. **Ramp** a track one step, once its version has run the step for the step time, rolled
//!    out, with a passing judgement.
//! 4. **Promote** the version of a stage into the next where that stage says `promote: auto`:
//!    the gate open, the ramp (if any) done and its last step held for the step time, rolled
//!    out, a passing judgement, the stage's own version already moved on (a build on trial is
//!    not pushed out by the next), and never a version the stage has run before (so a
//!    rolled-back build is not promoted again by itself).
//!
//! Ramps and promotions wait for a change window and stop while the service is frozen; the
//! decision then says what was held back and why, so it can be told once.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use cohort_core::{GateInput, Pipeline, ReleaseState, TrackName, Version, Weight, check_gate};
use cohort_judge::Verdict;
use serde::Serialize;

/// What is known of one track beyond the release state.
#[derive(Clone, Debug, Default)]
pub struct TrackFacts {
    /// When its version arrived on it (unix seconds), from the history.
    pub arrived: Option<i64>,
    /// When it last changed: its version's arrival or its last ramp step (unix seconds).
    pub changed: Option<i64>,
    /// Whether the cluster has finished rolling its version out.
    pub rolled_out: bool,
    /// Its version's judgement against its baseline (none for the baseline itself).
    pub verdict: Option<Verdict>,
    /// The judgement's one-line evidence.
    pub evidence: String,
    /// Versions the track ran before its current one (from the history).
    pub ran_before: Vec<Version>,
}

/// Everything a decision needs.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    /// The pipeline: stages, gates, the autopilot policy.
    pub pipeline: &'a Pipeline,
    /// The service's release state.
    pub state: &'a ReleaseState,
    /// Per track.
    pub tracks: &'a BTreeMap<TrackName, TrackFacts>,
    /// Now.
    pub now: jiff::Timestamp,
}

/// What held a ramp or promotion back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Hold {
    /// `cohort freeze`, with its reason.
    Frozen {
        /// Why.
        reason: String,
    },
    /// Outside every change window.
    OutsideWindows {
        /// The windows, as written.
        windows: Vec<String>,
    },
}

/// The decision for one service.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Decision {
    /// Roll `track` back: its version fails its judgement.
    Rollback {
        /// The track.
        track: TrackName,
        /// The version failing.
        version: Version,
        /// The judgement's evidence.
        evidence: String,
    },
    /// Give `track` the next step of its ramp.
    Ramp {
        /// The track.
        track: TrackName,
        /// Its version.
        version: Version,
        /// The step's index.
        step: usize,
        /// The step's weight.
        weight: Weight,
        /// The judgement's evidence.
        evidence: String,
    },
    /// Promote `version` from `from` into `to`.
    Promote {
        /// The version.
        version: Version,
        /// The stage it leaves.
        from: TrackName,
        /// The stage it enters.
        to: TrackName,
        /// The judgement's evidence.
        evidence: String,
    },
    /// Nothing now.
    Wait {
        /// Why, one line each (empty: nothing is under way).
        reasons: Vec<String>,
        /// An action that was due but held back, and by what.
        held: Option<Held>,
    },
}

/// An action that was due but held back.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Held {
    /// What was held.
    pub action: Box<Decision>,
    /// By what.
    pub by: Hold,
}

/// Decides what to do for one service now.
pub fn decide(input: &Inputs<'_>) -> Decision {
    let p = input.pipeline;
    let facts = |t: &TrackName| input.tracks.get(t).cloned().unwrap_or_default();

    // 1. Rollbacks, most exposed stage first; never held back.
    for track in p.stages.iter().rev() {
        let Some(version) = input.state.version(track) else {
            continue;
        };
        let f = facts(track);
        if f.verdict == Some(Verdict::Fail) && p.autopilot.stage(track).rollback {
            return Decision::Rollback {
                track: track.clone(),
                version: version.clone(),
                evidence: f.evidence,
            };
        }
    }
    if let Some(reason) = &input.state.paused {
        return Decision::Wait {
            reasons: vec![format!("paused: {reason}")],
            held: None,
        };
    }

    let mut reasons = vec![];
    let now = input.now.as_second();
    let due = ramp(input, now, &mut reasons).or_else(|| promotion(input, now, &mut reasons));
    let Some(action) = due else {
        return Decision::Wait { reasons, held: None };
    };
    let hold = match (&input.state.frozen, open(&p.autopilot.windows, input.now)) {
        (Some(reason), _) => Some(Hold::Frozen {
            reason: reason.clone(),
        }),
        (None, false) => Some(Hold::OutsideWindows {
            windows: p.autopilot.windows.iter().map(|w| w.text.clone()).collect(),
        }),
        (None, true) => None,
    };
    match hold {
        None => action,
        Some(by) => {
            reasons.push(match &by {
                Hold::Frozen { reason } => format!("{} held back: frozen ({reason})", describe(&action)),
                Hold::OutsideWindows { windows } => {
                    format!(
                        "{} held back: outside the change windows ({})",
                        describe(&action),
                        windows.join(", ")
                    )
                }
            });
            Decision::Wait {
                reasons,
                held: Some(Held {
                    action: Box::new(action),
                    by,
                }),
            }
        }
    }
}

impl Decision {
    /// What kind of decision: `rollback`, `ramp`, `promote`, `held` (a due action held back)
    /// or `wait` (the label of metrics and notifications).
    pub fn kind(&self) -> &'static str {
        match self {
            Decision::Rollback { .. } => "rollback",
            Decision::Ramp { .. } => "ramp",
            Decision::Promote { .. } => "promote",
            Decision::Wait { held: Some(_), .. } => "held",
            Decision::Wait { .. } => "wait",
        }
    }

    /// The judgement an action rests on (none for a wait).
    pub fn evidence(&self) -> Option<&str> {
        match self {
            Decision::Rollback { evidence, .. }
            | Decision::Ramp { evidence, .. }
            | Decision::Promote { evidence, .. } => Some(evidence),
            Decision::Wait { .. } => None,
        }
    }
}

/// One line for an action.
pub fn describe(d: &Decision) -> String {
    match d {
        Decision::Rollback { track, version, .. } => format!("roll {track} back from {version}"),
        Decision::Ramp {
            track,
            version,
            weight,
            ..
        } => format!("ramp {track} ({version}) to {weight}"),
        Decision::Promote {
            version, from, to, ..
        } => format!("promote {version} from {from} to {to}"),
        Decision::Wait { .. } => "wait".to_string(),
    }
}

fn seconds(s: i64) -> String {
    cohort_judge::human_seconds(u64::try_from(s.max(0)).unwrap_or(0))
}

/// Whether the judgement lets `track` move on; if not, why.
fn judged_pass(track: &TrackName, f: &TrackFacts, reasons: &mut Vec<String>) -> bool {
    match f.verdict {
        Some(Verdict::Pass) => true,
        // The evidence starts with the verdict.
        Some(Verdict::Inconclusive) => {
            reasons.push(format!("{track}: {}", f.evidence));
            false
        }
        Some(Verdict::Fail) => {
            reasons.push(format!("{track} (rolled back by hand only): {}", f.evidence));
            false
        }
        None => {
            reasons.push(format!("{track}: not judged yet"));
            false
        }
    }
}

/// Whether `track` has held its current step (or version) for `min` seconds; if not, why.
fn held_for(
    track: &TrackName,
    f: &TrackFacts,
    min: i64,
    now: i64,
    what: &str,
    reasons: &mut Vec<String>,
) -> bool {
    match f.changed {
        Some(at) if now - at >= min => true,
        Some(at) => {
            reasons.push(format!(
                "{track}: {what} for {} of {}",
                seconds(now - at),
                seconds(min)
            ));
            false
        }
        None => {
            reasons.push(format!(
                "{track}: the history does not say since when it runs its {what}"
            ));
            false
        }
    }
}

fn ramp(input: &Inputs<'_>, now: i64, reasons: &mut Vec<String>) -> Option<Decision> {
    for (track, step) in &input.state.ramp {
        let Some(version) = input.state.version(track) else {
            continue;
        };
        let policy = input.pipeline.autopilot.stage(track);
        let Some(next) = policy.ramp.get(step + 1).copied() else {
            continue;
        };
        let f = input.tracks.get(track).cloned().unwrap_or_default();
        let current = policy.ramp.get(*step).map(|w| w.to_string()).unwrap_or_default();
        let min = i64::try_from(policy.step_time.as_millis() / 1000).unwrap_or(i64::MAX);
        let ready = f.rolled_out || {
            reasons.push(format!("{track}: {version} is still rolling out"));
            false
        };
        if ready
            && held_for(track, &f, min, now, &format!("step {current}"), reasons)
            && judged_pass(track, &f, reasons)
        {
            return Some(Decision::Ramp {
                track: track.clone(),
                version: version.clone(),
                step: step + 1,
                weight: next,
                evidence: f.evidence,
            });
        }
    }
    None
}

fn promotion(input: &Inputs<'_>, now: i64, reasons: &mut Vec<String>) -> Option<Decision> {
    let p = input.pipeline;
    // The most advanced first: a version leaving paid makes room before canary's moves up.
    for pair in p.stages.windows(2).rev() {
        let (from, to) = (&pair[0], &pair[1]);
        if !p.autopilot.stage(to).promote {
            continue;
        }
        let Some(version) = input.state.version(from) else {
            continue;
        };
        if input.state.version(to) == Some(version) {
            continue;
        }
        let target = input.tracks.get(to).cloned().unwrap_or_default();
        if target.ran_before.contains(version) {
            reasons.push(format!(
                "{to} ran {version} before and moved away from it: promote it by hand if it should go again"
            ));
            continue;
        }
        if input.state.ramp.contains_key(from) {
            // Its ramp says why it waits.
            continue;
        }
        // A stage's version is replaced only once it has moved on: a build still on trial
        // there is not pushed out by the next one.
        if let (Some(current), Some(next)) = (input.state.version(to), p.next_stage(to))
            && input.state.version(next) != Some(current)
        {
            reasons.push(format!(
                "{from}: {version} waits for {to}'s {current} to move on to {next}"
            ));
            continue;
        }
        let f = input.tracks.get(from).cloned().unwrap_or_default();
        if !f.rolled_out {
            reasons.push(format!("{from}: {version} is still rolling out"));
            continue;
        }
        let from_policy = p.autopilot.stage(from);
        if from_policy.ramp.len() > 1 {
            let min = i64::try_from(from_policy.step_time.as_millis() / 1000).unwrap_or(i64::MAX);
            let last = from_policy.ramp.last().map(|w| w.to_string()).unwrap_or_default();
            if !held_for(from, &f, min, now, &format!("last step {last}"), reasons) {
                continue;
            }
        }
        if !judged_pass(from, &f, reasons) {
            continue;
        }
        let gate = p.gates.get(to).cloned().unwrap_or_default();
        let blocks = check_gate(&GateInput {
            gate: &gate,
            entered_previous_at: f.arrived,
            now,
            recorded_checks: input.state.recorded_checks(version),
            judgement_passed: true,
        });
        if !blocks.is_empty() {
            for b in blocks {
                reasons.push(format!("the gate into {to} is closed for {version}: {b}"));
            }
            continue;
        }
        return Some(Decision::Promote {
            version: version.clone(),
            from: from.clone(),
            to: to.clone(),
            evidence: f.evidence,
        });
    }
    None
}

/// Whether `now` is inside one of `windows` (no windows: always).
pub fn open(windows: &[cohort_core::ChangeWindow], now: jiff::Timestamp) -> bool {
    windows.is_empty()
        || windows.iter().any(|w| {
            let Ok(zone) = jiff::tz::TimeZone::get(&w.zone) else {
                return false;
            };
            let local = now.to_zoned(zone);
            let day = usize::from(local.weekday().to_monday_zero_offset().unsigned_abs());
            let minute = u16::try_from(i32::from(local.hour()) * 60 + i32::from(local.minute())).unwrap_or(0);
            w.open_at(day, minute)
        })
}

#[cfg(test)]
mod tests;

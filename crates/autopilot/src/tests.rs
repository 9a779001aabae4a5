//! Decisions on the seed's pipeline with an `autopilot:` section, at chosen times.

use std::collections::BTreeMap;

use cohort_core::{Pipeline, ReleaseState, TrackName, Version};
use cohort_judge::Verdict;

use super::*;

const POLICY: &str = "autopilot:
  stages:
    canary:
      promote: auto
      ramp: [1%, 2%, 5%]
      step_time: 10m
    paid:
      promote: auto
  windows: [Mon-Fri 09:00-17:00 Europe/Berlin]
";

/// The seed with `section` in cohort.yaml, and its release state (internal 1.18.0, canary
/// 1.17.0, paid and production 1.15.0).
fn seed(section: &str) -> (Pipeline, ReleaseState) {
    let mut files = cohort_spec::scaffold::repo_files();
    files.pipeline = files.pipeline.map(|t| format!("{section}{t}"));
    let (repo, diags) = cohort_spec::repo::validate(&files);
    assert!(diags.is_empty(), "{diags:?}");
    let repo = repo.expect("valid");
    (repo.pipeline, repo.services[0].state.clone())
}

fn t(name: &str) -> TrackName {
    TrackName::new(name).expect("track")
}

fn v(s: &str) -> Version {
    Version::new(s).expect("version")
}

/// Monday 2 November 2026, 10:00 in Berlin (09:00 UTC), plus `minutes`.
fn monday_morning(minutes: i64) -> jiff::Timestamp {
    let at: jiff::Timestamp = "2026-11-02T09:00:00Z".parse().expect("time");
    at.checked_add(jiff::SignedDuration::from_mins(minutes))
        .expect("time")
}

fn facts(verdict: Verdict, changed_minutes_ago: i64, now: jiff::Timestamp) -> TrackFacts {
    let changed = now.as_second() - changed_minutes_ago * 60;
    TrackFacts {
        arrived: Some(changed),
        changed: Some(changed),
        rolled_out: true,
        verdict: Some(verdict),
        evidence: format!("{verdict} evidence"),
        ran_before: vec![],
    }
}

fn decide_with(
    pipeline: &Pipeline,
    state: &ReleaseState,
    tracks: &BTreeMap<TrackName, TrackFacts>,
    now: jiff::Timestamp,
) -> Decision {
    decide(&Inputs {
        pipeline,
        state,
        tracks,
        now,
    })
}

#[test]
fn without_a_policy_a_failing_canary_is_left_to_people() {
    let (p, state) = seed("");
    let now = monday_morning(0);
    let tracks = BTreeMap::from([(t("canary"), facts(Verdict::Fail, 30, now))]);
    assert_eq!(
        decide_with(&p, &state, &tracks, now),
        Decision::Wait {
            reasons: vec![],
            held: None
        }
    );
}

#[test]
fn a_failing_canary_is_rolled_back_even_when_paused_frozen_and_outside_the_windows() {
    let (p, mut state) = seed(POLICY);
    state.paused = Some("incident".into());
    state.frozen = Some("release freeze".into());
    // Saturday.
    let now = monday_morning(5 * 24 * 60);
    let tracks = BTreeMap::from([(t("canary"), facts(Verdict::Fail, 3, now))]);
    assert_eq!(
        decide_with(&p, &state, &tracks, now),
        Decision::Rollback {
            track: t("canary"),
            version: v("1.17.0"),
            evidence: "fail evidence".into()
        }
    );
}

#[test]
fn a_pause_stops_everything_but_rollbacks() {
    let (p, mut state) = seed(POLICY);
    state.paused = Some("db migration".into());
    state.ramp.insert(t("canary"), 0);
    let now = monday_morning(0);
    let tracks = BTreeMap::from([(t("canary"), facts(Verdict::Pass, 60, now))]);
    assert_eq!(
        decide_with(&p, &state, &tracks, now),
        Decision::Wait {
            reasons: vec!["paused: db migration".into()],
            held: None
        }
    );
}

#[test]
fn a_ramp_steps_up_after_its_step_time_with_a_pass_and_says_why_it_waits_otherwise() {
    let (p, mut state) = seed(POLICY);
    state.ramp.insert(t("canary"), 0);
    let now = monday_morning(0);
    let step = |f: TrackFacts| decide_with(&p, &state, &BTreeMap::from([(t("canary"), f)]), now);
    assert_eq!(
        step(facts(Verdict::Pass, 11, now)),
        Decision::Ramp {
            track: t("canary"),
            version: v("1.17.0"),
            step: 1,
            weight: cohort_core::Weight::parse_percent("2%").expect("weight"),
            evidence: "pass evidence".into()
        }
    );
    let Decision::Wait { reasons, held: None } = step(facts(Verdict::Pass, 4, now)) else {
        panic!("waits")
    };
    assert_eq!(
        reasons,
        [
            "canary: step 1% for 4m of 10m",
            "internal: 1.18.0 waits for canary's 1.17.0 to move on to paid"
        ]
    );
    let Decision::Wait { reasons, .. } = step(facts(Verdict::Inconclusive, 30, now)) else {
        panic!("waits")
    };
    assert_eq!(reasons[0], "canary: inconclusive evidence");
    let mut rolling = facts(Verdict::Pass, 30, now);
    rolling.rolled_out = false;
    let Decision::Wait { reasons, .. } = step(rolling) else {
        panic!("waits")
    };
    assert_eq!(reasons[0], "canary: 1.17.0 is still rolling out");
}

#[test]
fn ramps_and_promotions_keep_to_the_windows_and_stop_when_frozen() {
    let (p, mut state) = seed(POLICY);
    state.ramp.insert(t("canary"), 1);
    let saturday = monday_morning(5 * 24 * 60);
    let tracks = BTreeMap::from([(t("canary"), facts(Verdict::Pass, 30, saturday))]);
    let Decision::Wait {
        reasons,
        held: Some(held),
    } = decide_with(&p, &state, &tracks, saturday)
    else {
        panic!("held back")
    };
    assert!(matches!(held.by, Hold::OutsideWindows { .. }), "{held:?}");
    assert!(matches!(*held.action, Decision::Ramp { step: 2, .. }), "{held:?}");
    assert_eq!(
        reasons,
        [
            "ramp canary (1.17.0) to 5% held back: outside the change windows (Mon-Fri 09:00-17:00 Europe/Berlin)"
        ]
    );
    // Monday 16:59 in Berlin is inside; 17:00 is not.
    let tracks_at = |now| BTreeMap::from([(t("canary"), facts(Verdict::Pass, 30, now))]);
    let late = monday_morning(7 * 60 - 1);
    assert!(matches!(
        decide_with(&p, &state, &tracks_at(late), late),
        Decision::Ramp { .. }
    ));
    let closed = monday_morning(7 * 60);
    assert!(matches!(
        decide_with(&p, &state, &tracks_at(closed), closed),
        Decision::Wait { held: Some(_), .. }
    ));
    state.frozen = Some("black friday".into());
    let now = monday_morning(0);
    let Decision::Wait { held: Some(held), .. } = decide_with(&p, &state, &tracks_at(now), now) else {
        panic!("held back")
    };
    assert_eq!(
        held.by,
        Hold::Frozen {
            reason: "black friday".into()
        }
    );
}

#[test]
fn a_version_is_promoted_once_its_ramp_is_done_held_judged_and_the_gate_is_open() {
    let (p, state) = seed(POLICY);
    let now = monday_morning(0);
    // paid's gate asks for an hour on canary; the last step for its step time.
    let promoted = decide_with(
        &p,
        &state,
        &BTreeMap::from([(t("canary"), facts(Verdict::Pass, 61, now))]),
        now,
    );
    assert_eq!(
        promoted,
        Decision::Promote {
            version: v("1.17.0"),
            from: t("canary"),
            to: t("paid"),
            evidence: "pass evidence".into()
        }
    );
    let Decision::Wait { reasons, .. } = decide_with(
        &p,
        &state,
        &BTreeMap::from([(t("canary"), facts(Verdict::Pass, 20, now))]),
        now,
    ) else {
        panic!("waits")
    };
    assert!(
        reasons.iter().any(|r| r.starts_with(
            "the gate into paid is closed for 1.17.0: it has been in the previous stage for 20m"
        )),
        "{reasons:?}"
    );
    // Production is promoted into by hand only: paid's version stays.
    assert!(!reasons.iter().any(|r| r.contains("production")), "{reasons:?}");
}

#[test]
fn a_version_the_stage_moved_away_from_is_not_promoted_into_it_again() {
    let (p, state) = seed(POLICY);
    let now = monday_morning(0);
    let mut paid = TrackFacts::default();
    paid.ran_before.push(v("1.17.0"));
    let tracks = BTreeMap::from([(t("canary"), facts(Verdict::Pass, 120, now)), (t("paid"), paid)]);
    let Decision::Wait { reasons, held: None } = decide_with(&p, &state, &tracks, now) else {
        panic!("waits")
    };
    assert!(
        reasons.iter().any(|r| r.starts_with("paid ran 1.17.0 before")),
        "{reasons:?}"
    );
}

#[test]
fn internal_is_promoted_into_canary_only_with_the_gate_checks_recorded() {
    let (p, mut state) = seed(POLICY);
    let now = monday_morning(0);
    // canary's 1.17.0 has moved on to paid; internal's 1.18.0 passes, but integration-tests
    // is due.
    state.tracks.insert(t("paid"), v("1.17.0"));
    let tracks = BTreeMap::from([
        (t("internal"), facts(Verdict::Pass, 30, now)),
        (t("canary"), facts(Verdict::Inconclusive, 5, now)),
    ]);
    let Decision::Wait { reasons, .. } = decide_with(&p, &state, &tracks, now) else {
        panic!("waits")
    };
    assert!(
        reasons.iter().any(|r| r
            == "the gate into canary is closed for 1.18.0: check `integration-tests` has not been recorded"),
        "{reasons:?}"
    );
    state
        .approvals
        .entry(v("1.18.0"))
        .or_default()
        .insert("integration-tests".into(), String::new());
    assert!(matches!(
        decide_with(&p, &state, &tracks, now),
        Decision::Promote { ref to, .. } if *to == t("canary")
    ));
}

#[test]
fn a_build_on_trial_is_not_pushed_out_by_the_next() {
    let (p, mut state) = seed(POLICY);
    let now = monday_morning(0);
    state
        .approvals
        .entry(v("1.18.0"))
        .or_default()
        .insert("integration-tests".into(), String::new());
    // canary's 1.17.0 is still being judged (inconclusive); internal's 1.18.0 passes.
    let tracks = BTreeMap::from([
        (t("internal"), facts(Verdict::Pass, 30, now)),
        (t("canary"), facts(Verdict::Inconclusive, 5, now)),
    ]);
    let Decision::Wait { reasons, .. } = decide_with(&p, &state, &tracks, now) else {
        panic!("waits")
    };
    assert!(
        reasons.contains(&"internal: 1.18.0 waits for canary's 1.17.0 to move on to paid".to_string()),
        "{reasons:?}"
    );
}

use super::*;
use cohort_spec::repo::validate;

fn seed() -> cohort_spec::Repo {
    let files = cohort_spec::scaffold::repo_files();
    validate(&files).0.expect("the scaffold is valid")
}

fn v(s: &str) -> Version {
    Version::new(s).expect("version")
}

fn arrival(time: i64, track: &str, from: Option<&str>, to: &str) -> Entry {
    let mut change = Change::new(Action::Deploy, "account-service");
    change.track = Some(track.into());
    change.from = from.map(str::to_string);
    change.to = Some(to.into());
    Entry {
        commit: "c".into(),
        time,
        offset_secs: 0,
        author: "a <a@x>".into(),
        change,
    }
}

const DAY: i64 = 86_400;

#[test]
fn promote_without_to_walks_the_newest_build_through_the_pipeline() {
    let mut repo = seed();
    let p = repo.pipeline.clone();
    let svc = &mut repo.services[0];
    let history = vec![
        arrival(0, "internal", None, "1.18.0"),
        arrival(0, "canary", None, "1.17.0"),
    ];
    let req = PromoteRequest {
        force: true,
        reason: Some("test"),
        now: 10 * DAY,
        ..PromoteRequest::default()
    };
    let planned = promote(&p, svc, &history, &req).expect("promotes");
    assert_eq!(
        planned.change.subject(),
        "promote account-service 1.18.0: internal → canary"
    );
    assert!(planned.change.forced, "integration-tests was not recorded");
    svc.state = planned.state;
    let planned = promote(&p, svc, &history, &req).expect("promotes");
    assert_eq!(
        planned.change.subject(),
        "promote account-service 1.18.0: canary → paid"
    );
    svc.state = planned.state;
    let planned = promote(&p, svc, &history, &req).expect("promotes");
    assert_eq!(
        planned.change.subject(),
        "promote account-service 1.18.0: paid → production"
    );
    svc.state = planned.state;
    assert_eq!(
        promote(&p, svc, &history, &req),
        Err(PlanError::NothingToPromote {
            service: "account-service".into()
        })
    );
}

#[test]
fn gates_list_every_reason_and_force_needs_a_reason() {
    let repo = seed();
    let svc = &repo.services[0];
    // 1.17.0 arrived on canary an hour ago... no: 10 minutes ago; the gate into paid wants 1h.
    let history = vec![arrival(1000, "canary", Some("1.16.0"), "1.17.0")];
    let req = PromoteRequest {
        to: Some("paid"),
        now: 1000 + 600,
        ..PromoteRequest::default()
    };
    let Err(PlanError::GateClosed { blocks, .. }) = promote(&repo.pipeline, svc, &history, &req) else {
        panic!("gate should be closed")
    };
    assert!(matches!(blocks.as_slice(), [GateBlock::TooSoon { .. }]));
    let forced = PromoteRequest {
        force: true,
        ..req.clone()
    };
    assert_eq!(
        promote(&repo.pipeline, svc, &history, &forced),
        Err(PlanError::ForceNeedsReason)
    );
    let later = PromoteRequest {
        now: 1000 + 3600,
        ..req
    };
    let planned = promote(&repo.pipeline, svc, &history, &later).expect("gate open after an hour");
    assert!(!planned.change.forced);
    assert_eq!(
        planned.state.version(&TrackName::new("paid").expect("t")),
        Some(&v("1.17.0"))
    );
}

#[test]
fn recorded_checks_open_the_gate() {
    let repo = seed();
    let p = &repo.pipeline;
    let svc = &repo.services[0];
    let req = PromoteRequest {
        to: Some("canary"),
        now: 0,
        ..PromoteRequest::default()
    };
    let Err(PlanError::GateClosed { blocks, .. }) = promote(p, svc, &[], &req) else {
        panic!("closed")
    };
    assert_eq!(
        blocks,
        vec![GateBlock::MissingCheck {
            check: "integration-tests".into()
        }]
    );
    let approved = approve(p, svc, &v("1.18.0"), "integration-tests", Some("green")).expect("approves");
    assert_eq!(
        approved.change.subject(),
        "approve account-service 1.18.0: integration-tests"
    );
    let svc = Service {
        spec: svc.spec.clone(),
        state: approved.state,
    };
    assert!(promote(p, &svc, &[], &req).is_ok());
    assert!(matches!(
        approve(p, &svc, &v("1.18.0"), "integration-tests", None),
        Err(PlanError::AlreadyApproved { .. })
    ));
    assert!(matches!(
        approve(p, &svc, &v("1.18.0"), "smoke", None),
        Err(PlanError::UnknownCheck { .. })
    ));
    assert!(matches!(
        approve(p, &svc, &v("9.9.9"), "qa", None),
        Err(PlanError::NotRunning { .. })
    ));
}

#[test]
fn rollback_returns_to_the_previous_version_or_a_named_one() {
    let repo = seed();
    let p = &repo.pipeline;
    let svc = &repo.services[0];
    let history = vec![
        arrival(30, "paid", Some("1.14.0"), "1.15.0"),
        arrival(20, "paid", Some("1.13.0"), "1.14.0"),
    ];
    let planned = rollback(p, svc, &history, "paid", None, Some("errors up")).expect("rolls back");
    assert_eq!(
        planned.change.subject(),
        "rollback account-service paid: 1.15.0 → 1.14.0"
    );
    let planned = rollback(p, svc, &history, "paid", Some(&v("1.13.0")), None).expect("rolls back");
    assert_eq!(planned.change.to.as_deref(), Some("1.13.0"));
    assert!(matches!(
        rollback(p, svc, &history, "paid", Some(&v("1.0.0")), None),
        Err(PlanError::NotInHistory { .. })
    ));
    assert!(matches!(
        rollback(p, svc, &[], "paid", None, None),
        Err(PlanError::NoEarlierVersion { .. })
    ));
    assert!(matches!(
        rollback(p, svc, &history, "qa", None, None),
        Err(PlanError::NotAStage { .. })
    ));
}

#[test]
fn deploy_sets_the_first_stage_and_refuses_the_same_version() {
    let repo = seed();
    let svc = &repo.services[0];
    let planned = deploy(&repo.pipeline, svc, &v("1.19.0")).expect("deploys");
    assert_eq!(
        planned.change.subject(),
        "deploy account-service 1.19.0 to internal (was 1.18.0)"
    );
    assert!(matches!(
        deploy(&repo.pipeline, svc, &v("1.18.0")),
        Err(PlanError::Unchanged { .. })
    ));
}

#[test]
fn a_version_promoted_into_a_ramped_stage_starts_at_the_first_step_and_a_rollback_ends_the_ramp() {
    let mut files = cohort_spec::scaffold::repo_files();
    files.pipeline = files
        .pipeline
        .map(|t| format!("autopilot:\n  stages:\n    canary:\n      ramp: [1%, 5%]\n{t}"));
    let mut repo = validate(&files).0.expect("valid");
    let p = repo.pipeline.clone();
    let svc = &mut repo.services[0];
    let canary = TrackName::new("canary").expect("track");
    let history = vec![
        arrival(0, "internal", None, "1.18.0"),
        arrival(0, "canary", None, "1.17.0"),
    ];
    let req = PromoteRequest {
        to: Some("canary"),
        force: true,
        reason: Some("test"),
        now: DAY,
        ..PromoteRequest::default()
    };
    let planned = promote(&p, svc, &history, &req).expect("promotes");
    assert_eq!(planned.state.ramp.get(&canary), Some(&0));
    svc.state = planned.state;
    // Newest first, as git log gives it.
    let mut history = history;
    history.insert(0, arrival(DAY, "canary", Some("1.17.0"), "1.18.0"));
    let back = rollback(&p, svc, &history, "canary", None, Some("bad")).expect("rolls back");
    assert_eq!(back.state.version(&canary), Some(&v("1.17.0")));
    assert!(back.state.ramp.is_empty(), "{:?}", back.state.ramp);
}

#[test]
fn a_ramp_steps_up_one_step_at_a_time_and_ends_at_the_configured_weight() {
    let mut files = cohort_spec::scaffold::repo_files();
    files.pipeline = files
        .pipeline
        .map(|t| format!("autopilot:\n  stages:\n    canary:\n      ramp: [1%, 2%, 5%]\n{t}"));
    let mut repo = validate(&files).0.expect("valid");
    let p = repo.pipeline.clone();
    let svc = &mut repo.services[0];
    let canary = TrackName::new("canary").expect("track");
    assert!(matches!(
        ramp(&p, svc, &canary, None),
        Err(PlanError::NotRamping { .. })
    ));
    svc.state.ramp.insert(canary.clone(), 0);
    let first = ramp(&p, svc, &canary, Some("pass: 0.1% against 0.1%".into())).expect("ramps");
    assert_eq!(first.change.subject(), "ramp account-service canary: 1% → 2%");
    assert_eq!(first.state.ramp.get(&canary), Some(&1));
    assert!(
        crate::record::commit_message(&first.change).contains("Cohort-Judgement: pass: 0.1% against 0.1%")
    );
    svc.state = first.state;
    let last = ramp(&p, svc, &canary, None).expect("ramps");
    assert_eq!(last.change.subject(), "ramp account-service canary: 2% → 5%");
    assert!(last.state.ramp.is_empty(), "done: the configured weights hold");
    let parsed = crate::record::parse_message(&crate::record::commit_message(&last.change));
    assert_eq!(parsed, std::slice::from_ref(&last.change));
}

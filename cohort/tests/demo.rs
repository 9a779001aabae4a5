//! `cohort demo --fast`, run as a user would, non-interactively: the story must end as told,
//! every promotion, ramp step and the rollback decided by the autopilot.

use std::process::Command;

#[test]
fn the_demo_s_autopilot_ships_the_good_build_and_rolls_the_bad_one_back_on_canary() {
    let out = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["demo", "--fast", "--keep"])
        .env_remove("COHORT_REPO")
        .output()
        .expect("cohort demo runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{said}");
    // What the traffic saw.
    assert!(
        said.contains("ENTERPRISE requests answered by a track other than production: 0\n"),
        "{said}"
    );
    assert!(
        said.contains("requests the bad build 1.20.0 answered on paid or production: 0\n"),
        "{said}"
    );
    // The autopilot decided, and said so as it happened.
    for line in [
        "autopilot | account-service: promote 1.19.0 from internal to canary (",
        "autopilot | account-service: ramp canary (1.19.0) to 10% (",
        "autopilot | account-service: ramp canary (1.19.0) to 20% (",
        "autopilot | account-service: promote 1.19.0 from canary to paid (",
        "autopilot | account-service: promote 1.19.0 from paid to production (",
        "autopilot | account-service: promote 1.20.0 from internal to canary (",
        "autopilot | account-service: roll canary back from 1.20.0 (",
        "autopilot |   fail: canary 1.20.0 against production 1.19.0, cohorts FREE: ",
    ] {
        assert!(said.contains(line), "{line} in {said}");
    }
    // What the release repo records.
    let kept = said
        .lines()
        .find_map(|l| l.strip_prefix("the release repo is kept at "))
        .expect("the kept repo's path");
    let repo = std::path::Path::new(kept);
    let state = std::fs::read_to_string(repo.join("releases/account-service.yaml")).expect("state file");
    for (track, version) in [
        ("canary", "1.19.0"),
        ("paid", "1.19.0"),
        ("production", "1.19.0"),
        ("internal", "1.20.0"),
    ] {
        assert!(
            state
                .lines()
                .any(|l| l.trim() == format!("{track}: \"{version}\"")),
            "{track} should run {version}:\n{state}"
        );
    }
    let log = Command::new("git")
        .args(["log", "--format=%B"])
        .current_dir(repo)
        .output()
        .expect("git log");
    let log = String::from_utf8_lossy(&log.stdout);
    // Six passing judgements (into canary, two ramp steps, into paid and production, the bad
    // build into canary) and one failing, each in its commit.
    assert_eq!(log.matches("Cohort-Judgement: pass:").count(), 6, "{log}");
    assert_eq!(log.matches("Cohort-Judgement: fail:").count(), 1, "{log}");
    assert!(
        !log.contains("promote account-service 1.20.0: canary → paid"),
        "{log}"
    );
    assert!(
        log.contains("rollback account-service canary: 1.20.0 → 1.19.0"),
        "{log}"
    );
    if let Some(tmp) = repo.parent() {
        let _ = std::fs::remove_dir_all(tmp);
    }
}

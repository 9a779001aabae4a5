//! The evaluator on the seed's namespace exactly as a real API server (v1.28.7) returned it:
//! healthy, and degraded in each of the ways the fixtures' README lists.

use std::collections::BTreeMap;

use cohort_health::{Expectations, ExpectedService, ExpectedTrack, Finding, Inventory, Settings, evaluate};

fn fixture(state: &str) -> Inventory {
    let read = |kind: &str| {
        let path = format!(
            "{}/tests/fixtures/seed-{state}.{kind}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    Inventory::from_lists(
        &read("services"),
        &read("deployments"),
        &read("endpointslices"),
        &read("pods"),
    )
    .expect("fixtures parse")
}

/// An hour after the fixtures were captured.
fn settings() -> Settings {
    Settings::defaults("2026-11-22T04:06:01Z".parse().expect("time"))
}

/// What the seed's release repo says once internal has been given 1.19.0.
fn repo() -> Expectations {
    let track = |v: &str, replicas| ExpectedTrack {
        version: Some(v.to_string()),
        replicas,
    };
    Expectations {
        services: BTreeMap::from([(
            "account-service".to_string(),
            ExpectedService {
                router_replicas: 4,
                tracks: BTreeMap::from([
                    ("internal".to_string(), track("1.19.0", 2)),
                    ("canary".to_string(), track("1.17.0", 4)),
                    ("paid".to_string(), track("1.15.0", 4)),
                    ("production".to_string(), track("1.15.0", 10)),
                ]),
            },
        )]),
        stages: ["internal", "canary", "paid", "production"]
            .map(String::from)
            .to_vec(),
    }
}

fn summary(report: &cohort_health::Report) -> Vec<String> {
    report.services[0]
        .findings
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn the_seeds_typical_deployment_is_healthy() {
    let report = evaluate(&fixture("healthy"), None, &settings());
    assert_eq!(report.services.len(), 1);
    let svc = &report.services[0];
    assert_eq!(svc.service, "account-service");
    assert!(svc.findings.is_empty(), "{:?}", summary(&report));
    assert!(report.healthy());
    assert_eq!((svc.router.available, svc.router.expected), (4, 4));
    let tracks: Vec<(&str, &str, u32, u32, Option<u32>)> = svc
        .tracks
        .iter()
        .map(|t| {
            let r = &t.running[0];
            (
                t.track.as_str(),
                r.version.as_str(),
                r.ready,
                r.desired,
                t.ready_endpoints,
            )
        })
        .collect();
    assert_eq!(
        tracks,
        [
            ("internal", "1.18.0", 2, 2, Some(2)),
            ("canary", "1.17.0", 4, 4, Some(4)),
            ("paid", "1.15.0", 4, 4, Some(4)),
            ("production", "1.15.0", 10, 10, Some(10)),
        ]
    );
}

#[test]
fn the_healthy_seed_matches_its_release_repo() {
    let mut expected = repo();
    let svc = expected.services.get_mut("account-service").expect("service");
    svc.tracks.insert(
        "internal".into(),
        ExpectedTrack {
            version: Some("1.18.0".into()),
            replicas: 2,
        },
    );
    let report = evaluate(&fixture("healthy"), Some(&expected), &settings());
    assert!(report.services[0].findings.is_empty(), "{:?}", summary(&report));
}

#[test]
fn every_degradation_of_the_seed_is_found_without_a_release_repo() {
    let report = evaluate(&fixture("degraded"), None, &settings());
    assert!(!report.healthy());
    let findings = &report.services[0].findings;
    assert!(findings.contains(&Finding::RouterUnavailable {
        available: 3,
        expected: 4
    }));
    assert!(findings.contains(&Finding::TooFewEndpoints {
        track: "canary".into(),
        ready: 1,
        minimum: 2
    }));
    assert!(findings.contains(&Finding::UnderReplicated {
        deployment: "account-service-canary-v1.17.0".into(),
        available: 1,
        desired: 4
    }));
    assert!(findings.contains(&Finding::StuckRollout {
        deployment: "account-service-internal-v1.19.0".into(),
        reason: "ProgressDeadlineExceeded".into(),
        pods: vec!["2 pods Pending: not scheduled to a node".into()],
    }));
    // The older production version beside an available newer one was left behind.
    assert!(
        findings.iter().any(
            |f| matches!(f, Finding::Forgotten { deployment, track, version, age_seconds }
            if deployment == "account-service-production-v1.14.0" && track == "production"
                && version == "1.14.0" && *age_seconds == 3600)
        ),
        "{:?}",
        summary(&report)
    );
    // internal 1.18.0 still serves while 1.19.0 is stuck: a rollout, not a leftover.
    assert!(
        !findings
            .iter()
            .any(|f| matches!(f, Finding::Forgotten { track, .. } if track == "internal"))
    );
    // Without the repo nobody can say paid should have 4 replicas.
    assert!(
        !findings
            .iter()
            .any(|f| matches!(f, Finding::OverReplicated { .. }))
    );
    assert_eq!(findings.len(), 5, "{:?}", summary(&report));
}

#[test]
fn the_release_repo_adds_over_replication_and_drift() {
    let report = evaluate(&fixture("degraded"), Some(&repo()), &settings());
    let findings = &report.services[0].findings;
    assert!(findings.contains(&Finding::OverReplicated {
        deployment: "account-service-paid-v1.15.0".into(),
        replicas: 6,
        expected: 4
    }));
    assert!(
        findings
            .iter()
            .any(|f| matches!(f, Finding::Forgotten { deployment, .. }
        if deployment == "account-service-production-v1.14.0"))
    );
    // internal should run 1.19.0; it is deployed but stuck, which is what is reported.
    assert!(
        findings
            .iter()
            .any(|f| matches!(f, Finding::StuckRollout { deployment, .. }
        if deployment == "account-service-internal-v1.19.0"))
    );

    let mut moved = repo();
    let svc = moved.services.get_mut("account-service").expect("service");
    svc.tracks.insert(
        "production".into(),
        ExpectedTrack {
            version: Some("1.16.0".into()),
            replicas: 10,
        },
    );
    let report = evaluate(&fixture("degraded"), Some(&moved), &settings());
    let findings = &report.services[0].findings;
    assert!(
        findings.contains(&Finding::Drift {
            track: "production".into(),
            running: Some("1.15.0".into()),
            expected: "1.16.0".into()
        }),
        "{:?}",
        summary(&report)
    );
    // And production (1.16.0) is now ahead of paid (1.15.0): a warning.
    assert!(findings.contains(&Finding::VersionOrder {
        earlier: "paid".into(),
        earlier_version: "1.15.0".into(),
        later: "production".into(),
        later_version: "1.16.0".into()
    }));
}

#[test]
fn a_service_the_release_repo_no_longer_names_is_all_forgotten() {
    let expected = Expectations {
        services: BTreeMap::new(),
        stages: vec![],
    };
    let report = evaluate(&fixture("healthy"), Some(&expected), &settings());
    let forgotten = report.services[0]
        .findings
        .iter()
        .filter(|f| matches!(f, Finding::Forgotten { .. }))
        .count();
    assert_eq!(forgotten, 4, "{:?}", summary(&report));
}

#[test]
fn findings_read_at_a_glance() {
    let report = evaluate(&fixture("degraded"), None, &settings());
    let text = summary(&report);
    assert!(
        text.contains(&"router has 3 of 4 replicas available".to_string()),
        "{text:?}"
    );
    assert!(
        text.contains(&"canary has 1 ready endpoint (minimum 2)".to_string()),
        "{text:?}"
    );
    assert!(
        text.contains(
            &"account-service-production-v1.14.0: 1.14.0 still running on production, 1h old; nothing routes to it"
                .to_string()
        ),
        "{text:?}"
    );
    assert!(
        text.contains(
            &"account-service-internal-v1.19.0: rollout stuck (ProgressDeadlineExceeded): 2 pods Pending: not scheduled to a node"
                .to_string()
        ),
        "{text:?}"
    );
}

#[test]
fn the_table_reads_at_a_glance() {
    let healthy = cohort_health::table::render(
        &evaluate(&fixture("healthy"), None, &settings()),
        cohort_health::table::Color::Plain,
    );
    assert_eq!(
        healthy,
        "SERVICE          ROUTER  INTERNAL    CANARY      PAID        PRODUCTION    STATE\n\
         account-service  4/4     1.18.0 2/2  1.17.0 4/4  1.15.0 4/4  1.15.0 10/10  ok\n"
    );
    let degraded = cohort_health::table::render(
        &evaluate(&fixture("degraded"), Some(&repo()), &settings()),
        cohort_health::table::Color::Plain,
    );
    let lines: Vec<&str> = degraded.lines().collect();
    assert_eq!(
        lines[1],
        "account-service  3/4     1.18.0 2/2 +1  1.17.0 1/4  1.15.0 6/6  1.15.0 10/10 +1  6 problems"
    );
    assert!(lines[2..].iter().all(|l| l.starts_with("  ✗ ")), "{degraded}");
    let colored = cohort_health::table::render(
        &evaluate(&fixture("degraded"), None, &settings()),
        cohort_health::table::Color::Ansi,
    );
    assert!(colored.contains("\x1b[31m5 problems\x1b[0m"), "{colored}");
}

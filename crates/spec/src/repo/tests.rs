use super::*;
use crate::diag::Severity;

const PIPELINE: &str = include_str!("../../scaffold/cohort.yaml");
const SERVICE: &str = include_str!("../../scaffold/services/account-service.yaml");
const STATE: &str = include_str!("../../scaffold/releases/account-service.yaml");

fn files(pipeline: &str, service: &str, state: &str) -> RepoFiles {
    RepoFiles {
        pipeline: Some(pipeline.to_string()),
        services: vec![(
            PathBuf::from("services/account-service.yaml"),
            service.to_string(),
        )],
        releases: vec![(PathBuf::from("releases/account-service.yaml"), state.to_string())],
        refused: vec![],
    }
}

fn errors(f: &RepoFiles) -> Vec<(String, Pos, Kind)> {
    let (repo, diags) = validate(f);
    assert!(repo.is_none() || !has_errors(&diags));
    diags
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| (d.file.display().to_string(), d.pos, d.kind))
        .collect()
}

fn at(line: usize, col: usize) -> Pos {
    Pos { line, col }
}

/// Finds the line and column of the first `needle` in `text`.
fn find(text: &str, needle: &str) -> Pos {
    let idx = text.find(needle).expect("needle present");
    let line = text[..idx].matches('\n').count() + 1;
    let col = idx - text[..idx].rfind('\n').map_or(0, |i| i + 1) + 1;
    at(line, col)
}

#[test]
fn unknown_keys_are_reported_with_a_suggestion() {
    let p = PIPELINE.replace("namespace: shop", "namespace: shop\nnamespce: typo");
    let (_, diags) = validate(&files(&p, SERVICE, STATE));
    let d = diags
        .iter()
        .find(|d| d.kind == Kind::UnknownKey)
        .expect("unknown key reported");
    assert_eq!(d.pos, find(&p, "namespce"));
    assert!(
        d.help
            .as_deref()
            .unwrap_or_default()
            .contains("did you mean `namespace`"),
        "{d}"
    );
}

#[test]
fn a_route_naming_a_track_that_does_not_exist() {
    let p = PIPELINE.replace(
        "    canary: 5%\n    production: 95%",
        "    canery: 5%\n    production: 95%",
    );
    assert_eq!(
        errors(&files(&p, SERVICE, STATE)),
        vec![("cohort.yaml".into(), find(&p, "canery"), Kind::UnknownTrack)]
    );
}

#[test]
fn weights_not_summing_to_100() {
    let p = PIPELINE.replace("  paid: 5%\n  production: 95%", "  paid: 5%\n  production: 90%");
    assert_eq!(
        errors(&files(&p, SERVICE, STATE)),
        vec![("cohort.yaml".into(), find(&p, "paid: 5%"), Kind::BadRoute)]
    );
    let p = PIPELINE.replace("canary: 5%", "canary: 0.125%");
    assert_eq!(
        errors(&files(&p, SERVICE, STATE)),
        vec![("cohort.yaml".into(), find(&p, "0.125%"), Kind::BadWeight)]
    );
}

#[test]
fn a_bad_version_string() {
    let s = STATE.replace("\"1.18.0\"", "1.18.0+build.7");
    assert_eq!(
        errors(&files(PIPELINE, SERVICE, &s)),
        vec![(
            "releases/account-service.yaml".into(),
            find(&s, "1.18.0+build"),
            Kind::BadVersion
        )]
    );
}

#[test]
fn duplicate_names() {
    let p = PIPELINE.replace(
        "[internal, canary, paid, production]",
        "[internal, canary, paid, canary, production]",
    );
    assert_eq!(
        errors(&files(&p, SERVICE, STATE)),
        vec![("cohort.yaml".into(), at(12, 34), Kind::Duplicate)]
    );
    let p = PIPELINE.replace(
        "  ENTERPRISE:\n",
        "  free:\n    production: 100%\n  ENTERPRISE:\n",
    );
    assert_eq!(
        errors(&files(&p, SERVICE, STATE)),
        vec![("cohort.yaml".into(), find(&p, "free:"), Kind::Duplicate)]
    );
    let mut f = files(PIPELINE, SERVICE, STATE);
    f.services
        .push((PathBuf::from("services/account-service.yml"), SERVICE.to_string()));
    assert_eq!(
        errors(&f),
        vec![("services/account-service.yml".into(), at(1, 1), Kind::Duplicate)]
    );
    let p = PIPELINE.replace("namespace: shop", "namespace: shop\nnamespace: again");
    assert_eq!(
        errors(&files(&p, SERVICE, STATE)),
        vec![("cohort.yaml".into(), find(&p, "namespace: again"), Kind::Syntax)]
    );
}

#[test]
fn a_cidr_that_does_not_parse() {
    let p = PIPELINE.replace("172.16.0.0/12", "172.16.0.0/33");
    assert_eq!(
        errors(&files(&p, SERVICE, STATE)),
        vec![("cohort.yaml".into(), find(&p, "172.16.0.0/33"), Kind::BadCidr)]
    );
}

#[test]
fn names_too_long_for_kubernetes() {
    let long = "a".repeat(60);
    let s = SERVICE.replace("name: account-service", &format!("name: {long}"));
    let f = RepoFiles {
        pipeline: Some(PIPELINE.into()),
        services: vec![(PathBuf::from(format!("services/{long}.yaml")), s)],
        releases: vec![],
        refused: vec![],
    };
    let errs = errors(&f);
    assert!(
        !errs.is_empty() && errs.iter().all(|(_, _, k)| *k == Kind::BadName),
        "{errs:?}"
    );
    let s = STATE.replace("\"1.18.0\"", &format!("1.18.0-{}", "x".repeat(35)));
    let errs = errors(&files(PIPELINE, SERVICE, &s));
    assert_eq!(
        errs,
        vec![("releases/account-service.yaml".into(), at(1, 1), Kind::BadName)]
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let p = PIPELINE
        .replace("namespace: shop", "namespace: Shop_1")
        .replace("canary: 5%", "canary: 6%")
        .replace("10.0.0.0/8", "ten")
        .replace("min_time_in_previous: 1h", "min_time_in_previous: soon");
    let kinds: Vec<Kind> = errors(&files(&p, SERVICE, STATE))
        .into_iter()
        .map(|(_, _, k)| k)
        .collect();
    assert_eq!(
        kinds,
        vec![Kind::BadName, Kind::BadRoute, Kind::BadCidr, Kind::BadDuration]
    );
}

#[test]
fn a_route_left_with_no_track_is_an_error_once_launched() {
    // Production runs a version but FREE only routes to canary, which has none.
    let p = PIPELINE.replace("    canary: 5%\n    production: 95%", "    canary: 100%");
    let s = STATE.replace("  canary: \"1.17.0\"\n", "");
    assert_eq!(
        errors(&files(&p, SERVICE, &s)),
        vec![(
            "releases/account-service.yaml".into(),
            at(1, 1),
            Kind::RouteLeftEmpty
        )]
    );
    // Before launch (nothing on production yet) it is a warning: those cohorts get 503.
    let s = "service: account-service\ntracks:\n  internal: 1.0.0\n";
    let (repo, diags) = validate(&files(PIPELINE, SERVICE, s));
    assert!(repo.is_some());
    assert_eq!(diags.len(), 1, "one warning for the service: {diags:?}");
    assert!(
        diags[0]
            .message
            .contains("cohorts `FREE`, `ENTERPRISE` and everyone else get 503"),
        "{}",
        diags[0]
    );
    assert!(
        diags
            .iter()
            .all(|d| d.severity == Severity::Warning && d.kind == Kind::RouteLeftEmpty)
    );
}

#[test]
fn state_for_a_service_that_does_not_exist() {
    let mut f = files(PIPELINE, SERVICE, STATE);
    f.releases
        .push((PathBuf::from("releases/ghost.yaml"), "service: ghost\n".into()));
    assert_eq!(
        errors(&f),
        vec![("releases/ghost.yaml".into(), at(1, 1), Kind::Mismatch)]
    );
}

#[test]
fn wrong_types_and_missing_keys() {
    let s = SERVICE
        .replace("port: 8080", "port: [8080]")
        .replace("image: registry.example.com/shop/account-service", "");
    let kinds: Vec<Kind> = errors(&files(PIPELINE, &s, STATE))
        .into_iter()
        .map(|(_, _, k)| k)
        .collect();
    assert_eq!(kinds, vec![Kind::MissingKey, Kind::WrongType]);
    assert_eq!(
        errors(&RepoFiles::default()),
        vec![("cohort.yaml".into(), at(1, 1), Kind::MissingFile)]
    );
}

#[test]
fn sticky_keys_are_http_tokens_and_one_error_is_enough() {
    let p = PIPELINE.replace("# sticky:\n#   header: X-User-Id", "sticky:\n  header: X User Id");
    assert_eq!(
        errors(&files(&p, SERVICE, STATE)),
        vec![("cohort.yaml".into(), find(&p, "X User Id"), Kind::BadName)]
    );
    let p = PIPELINE.replace("# sticky:\n#   header: X-User-Id", "sticky:\n  cookie: uid");
    let (repo, _) = validate(&files(&p, SERVICE, STATE));
    assert_eq!(
        repo.expect("valid").pipeline.sticky,
        Some(cohort_core::Sticky::Cookie("uid".into()))
    );
}

/// Regression: `account-service` and `account-service-internal` both made
/// `Service/account-service-internal`, and one overwrote the other when applied.
#[test]
fn object_names_may_not_collide_across_services() {
    let mut f = files(PIPELINE, SERVICE, STATE);
    let other = SERVICE.replace("name: account-service", "name: account-service-internal");
    f.services.push((
        PathBuf::from("services/account-service-internal.yaml"),
        other.clone(),
    ));
    assert_eq!(
        errors(&f),
        vec![(
            "services/account-service-internal.yaml".into(),
            find(&other, "account-service-internal"),
            Kind::Duplicate
        )]
    );
}

#[test]
fn router_is_not_a_track_name() {
    let p = PIPELINE.replace(
        "[internal, canary, paid, production]",
        "[internal, canary, paid, router]",
    );
    let errs = errors(&files(&p, SERVICE, STATE));
    assert_eq!(
        errs[0],
        ("cohort.yaml".into(), find(&p, "router]"), Kind::BadName)
    );
}

/// Regression: a duplicate cohort was not reported when the first entry had an error.
#[test]
fn a_duplicate_cohort_is_reported_even_when_the_first_has_an_error() {
    let p = PIPELINE.replace(
        "    canary: 5%\n    production: 95%\n",
        "    canary: 5%\n    production: 90%\n  free:\n    production: 100%\n",
    );
    let kinds: Vec<Kind> = errors(&files(&p, SERVICE, STATE))
        .into_iter()
        .map(|(_, _, k)| k)
        .collect();
    assert_eq!(kinds, vec![Kind::BadRoute, Kind::Duplicate]);
}

#[test]
fn cohort_names_are_plain_header_values() {
    let p = PIPELINE.replace("  ENTERPRISE:", "  \"A#B\":");
    assert_eq!(
        errors(&files(&p, SERVICE, STATE)),
        vec![("cohort.yaml".into(), find(&p, "\"A#B\""), Kind::BadName)]
    );
}

#[test]
fn the_router_ports_clash_where_admin_port_is_written() {
    let p = PIPELINE.replace(
        "router:\n  replicas: 4",
        "router:\n  replicas: 4\n  admin_port: 8080",
    );
    assert_eq!(
        errors(&files(&p, SERVICE, STATE)),
        vec![("cohort.yaml".into(), find(&p, "8080\n\n"), Kind::Duplicate)]
    );
}

#[test]
fn a_service_says_how_the_router_speaks_to_it() {
    let grpc = SERVICE.replace("port: 8080\n", "port: 8080\nprotocol: grpc\n");
    let (repo, diags) = validate(&files(PIPELINE, &grpc, STATE));
    assert!(!has_errors(&diags), "{diags:?}");
    assert_eq!(
        repo.expect("valid").services[0].spec.protocol,
        cohort_core::model::Protocol::Grpc
    );
    let (repo, _) = validate(&files(PIPELINE, SERVICE, STATE));
    assert_eq!(
        repo.expect("valid").services[0].spec.protocol,
        cohort_core::model::Protocol::Http1,
        "HTTP/1.1 unless it says otherwise"
    );
    let bad = SERVICE.replace("port: 8080\n", "port: 8080\nprotocol: http2\n");
    assert_eq!(
        errors(&files(PIPELINE, &bad, STATE)),
        vec![(
            "services/account-service.yaml".to_string(),
            find(&bad, "http2"),
            Kind::WrongType
        )]
    );
}

#[test]
fn a_mirror_names_a_cohort_two_different_tracks_and_a_share() {
    let with = |m: &str| SERVICE.replace("port: 8080\n", &format!("port: 8080\nmirror:\n{m}"));
    let good = with(
        "  - {cohort: free, from: production, to: internal, share: 5%}\n  - {cohort: default, from: production, to: canary, share: 1%, max_body: 1MiB}\n",
    );
    let (repo, diags) = validate(&files(PIPELINE, &good, STATE));
    assert!(!has_errors(&diags), "{diags:?}");
    let mirrors = repo.expect("valid").services[0].spec.mirrors.clone();
    assert_eq!(mirrors.len(), 2);
    assert_eq!(
        mirrors[0].cohort.as_deref(),
        Some("FREE"),
        "the cohort as the pipeline spells it"
    );
    assert_eq!(mirrors[0].share.basis_points(), 500);
    assert_eq!(mirrors[0].max_body, 64 * 1024);
    assert_eq!(mirrors[1].cohort, None);
    assert_eq!(mirrors[1].max_body, 1 << 20);
    for (bad, at, kind) in [
        (
            "  - {cohort: GOLD, from: production, to: internal, share: 5%}\n",
            "GOLD",
            Kind::UnknownTrack,
        ),
        (
            "  - {cohort: FREE, from: production, to: staging, share: 5%}\n",
            "staging",
            Kind::UnknownTrack,
        ),
        (
            "  - {cohort: FREE, from: production, to: production, share: 5%}\n",
            "production, share",
            Kind::BadRoute,
        ),
        (
            "  - {cohort: FREE, from: production, to: internal, share: 0%}\n",
            "0%",
            Kind::OutOfRange,
        ),
        (
            "  - {cohort: FREE, from: production, to: internal, share: 5%, max_body: 2MiB}\n",
            "2MiB",
            Kind::OutOfRange,
        ),
        (
            "  - {cohort: FREE, from: production, to: internal, share: 5%, body: 1}\n",
            "body",
            Kind::UnknownKey,
        ),
    ] {
        let text = with(bad);
        assert_eq!(
            errors(&files(PIPELINE, &text, STATE)),
            vec![("services/account-service.yaml".to_string(), find(&text, at), kind)],
            "{bad}"
        );
    }
    let twice = with(
        "  - {cohort: FREE, from: production, to: internal, share: 5%}\n  - {cohort: FREE, from: production, to: canary, share: 5%}\n",
    );
    let found = errors(&files(PIPELINE, &twice, STATE));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].2, Kind::Duplicate);
}

//! Release repos of any size, generated in memory from the scaffold, for benchmarks.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use cohort_spec::repo::RepoFiles;

/// The scaffold's example service, whose files every generated service is copied from.
const TEMPLATE: &str = "account-service";

/// A release repo of `n` services built from the scaffold (`cohort init`'s files): the
/// scaffold's `cohort.yaml`, and for each service `svc-0001`, `svc-0002`, ... a
/// `services/<name>.yaml` and a `releases/<name>.yaml` copied from the scaffold's
/// `account-service` with the name replaced. Each service gets its own versions on the four
/// seed tracks (production and paid sometimes equal, canary and internal ahead), so no two
/// services render identically. Every track has a version, so the repo validates with no
/// error and no warning. Services come in name order, as `read_files` returns them.
pub fn seed_times(n: usize) -> RepoFiles {
    let mut out = RepoFiles::default();
    for (path, text) in cohort_spec::scaffold::files() {
        match path.components().next().and_then(|c| c.as_os_str().to_str()) {
            Some("services") => {
                for i in 1..=n {
                    let name = service_name(i);
                    out.services
                        .push((renamed(&path, &name), text.replace(TEMPLATE, &name)));
                }
            }
            Some("releases") => {
                for i in 1..=n {
                    let name = service_name(i);
                    let text = with_versions(&text.replace(TEMPLATE, &name), i);
                    out.releases.push((renamed(&path, &name), text));
                }
            }
            _ => out.pipeline = Some(text.into()),
        }
    }
    out
}

/// `svc-0001` for `i == 1`.
fn service_name(i: usize) -> String {
    format!("svc-{i:04}")
}

/// `dir/account-service.yaml` -> `dir/<name>.yaml`.
fn renamed(path: &Path, name: &str) -> PathBuf {
    path.with_file_name(format!("{name}.yaml"))
}

/// The state file with the version on each track replaced by one derived from `i`.
fn with_versions(state: &str, i: usize) -> String {
    let minor = 10 + (i * 7) % 30;
    let production = format!("1.{minor}.{}", i % 4);
    let paid = if i.is_multiple_of(3) {
        production.clone()
    } else {
        format!("1.{}.0", minor + 1)
    };
    let canary = format!("1.{}.{}", minor + 1, i % 5);
    let internal = format!("1.{}.0-rc.{}", minor + 2, i % 3 + 1);
    let versions = [
        ("canary", canary),
        ("internal", internal),
        ("paid", paid),
        ("production", production),
    ];
    let mut out = String::with_capacity(state.len() + 32);
    for line in state.lines() {
        let track = versions.iter().find(|(t, _)| {
            line.strip_prefix("  ")
                .and_then(|l| l.strip_prefix(t))
                .is_some_and(|l| l.starts_with(": "))
        });
        match track {
            Some((t, v)) => out.push_str(&format!("  {t}: \"{v}\"")),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_generated_repo_is_valid_with_no_warning() {
        for n in [1, 30, 300] {
            let files = super::seed_times(n);
            assert_eq!(files.services.len(), n);
            assert_eq!(files.releases.len(), n);
            let (repo, diags) = cohort_spec::repo::validate(&files);
            assert!(diags.is_empty(), "{diags:?}");
            let repo = repo.expect("a repo with no diagnostics is valid");
            assert_eq!(repo.services.len(), n);
        }
    }

    #[test]
    fn every_service_has_its_own_name_and_versions() {
        let files = super::seed_times(30);
        let (path, text) = &files.releases[6];
        assert_eq!(path, std::path::Path::new("releases/svc-0007.yaml"));
        assert!(text.contains("service: svc-0007\n"), "{text}");
        assert!(!text.contains("account-service"), "{text}");
        assert!(text.contains("  production: \"1.29.3\"\n"), "{text}");
        assert!(text.contains("  internal: \"1.31.0-rc.2\"\n"), "{text}");
        let (path, text) = &files.services[29];
        assert_eq!(path, std::path::Path::new("services/svc-0030.yaml"));
        assert!(text.contains("name: svc-0030\n"), "{text}");
        assert!(
            text.contains("image: registry.example.com/shop/svc-0030\n"),
            "{text}"
        );
        let distinct: std::collections::BTreeSet<&str> =
            files.releases.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(distinct.len(), 30);
    }
}

/// Namespaces of any size for `cohort status`, generated from the seed's namespace as a real
/// API server returned it (crates/health/tests/fixtures).
pub mod namespace {
    use cohort_health::Inventory;

    const SERVICES: &str = include_str!("../../crates/health/tests/fixtures/seed-healthy.services.json");
    const DEPLOYMENTS: &str =
        include_str!("../../crates/health/tests/fixtures/seed-healthy.deployments.json");
    const SLICES: &str = include_str!("../../crates/health/tests/fixtures/seed-healthy.endpointslices.json");

    /// `n` copies of the healthy seed service (`svc-0001`, ...): each with its front Service,
    /// four track Services, router and track Deployments, and EndpointSlices trimmed to one
    /// endpoint each, and none on every third service's internal track: 1,500 services then
    /// have 7,000 endpoints. The evaluator reports the trimmed tracks (too few endpoints), so
    /// the benchmark runs the path that finds problems, not only the happy one.
    pub fn seed_times(n: usize) -> Inventory {
        let mut inv = Inventory::default();
        for i in 1..=n {
            let name = format!("svc-{i:04}");
            let copy = |text: &str| text.replace("account-service", &name);
            let mut one = Inventory::from_lists(
                copy(SERVICES).as_bytes(),
                copy(DEPLOYMENTS).as_bytes(),
                copy(SLICES).as_bytes(),
                br#"{"items":[]}"#,
            )
            .expect("the fixtures are valid lists");
            for slice in &mut one.endpoint_slices {
                let is_internal = slice
                    .metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.contains("-internal-"));
                let keep = if is_internal && i % 3 == 0 { 0 } else { 1 };
                slice.endpoints.truncate(keep);
            }
            inv.services.append(&mut one.services);
            inv.deployments.append(&mut one.deployments);
            inv.endpoint_slices.append(&mut one.endpoint_slices);
        }
        inv
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn ten_times_the_seed_has_1500_services_and_7000_endpoints() {
            let inv = super::seed_times(1_500);
            assert_eq!(inv.services.len(), 1_500 * 5);
            let endpoints: usize = inv.endpoint_slices.iter().map(|s| s.endpoints.len()).sum();
            assert_eq!(endpoints, 7_000);
            let now = "2026-11-22T04:06:01Z".parse().expect("time");
            let report = cohort_health::evaluate(&inv, None, &cohort_health::Settings::defaults(now));
            assert_eq!(report.services.len(), 1_500);
            // One ready endpoint per track is under the minimum of 2 everywhere: every service
            // reports its tracks, and nothing else.
            for svc in &report.services {
                assert!(
                    svc.findings
                        .iter()
                        .all(|f| matches!(f, cohort_health::Finding::TooFewEndpoints { .. }))
                );
                assert_eq!(svc.tracks.len(), 4);
            }
        }
    }
}

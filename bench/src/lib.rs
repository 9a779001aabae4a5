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

//! What `cohort init` writes: the seed's pipeline and an example service.

use std::path::PathBuf;

use crate::repo::RepoFiles;

/// The scaffold's files, relative to the repo root.
pub fn files() -> Vec<(PathBuf, &'static str)> {
    vec![
        (
            PathBuf::from("cohort.yaml"),
            include_str!("../scaffold/cohort.yaml"),
        ),
        (
            PathBuf::from("services/account-service.yaml"),
            include_str!("../scaffold/services/account-service.yaml"),
        ),
        (
            PathBuf::from("releases/account-service.yaml"),
            include_str!("../scaffold/releases/account-service.yaml"),
        ),
    ]
}

/// The scaffold as repo files, to validate without touching a disk.
pub fn repo_files() -> RepoFiles {
    let mut out = RepoFiles::default();
    for (path, text) in files() {
        match path.components().next().and_then(|c| c.as_os_str().to_str()) {
            Some("services") => out.services.push((path, text.into())),
            Some("releases") => out.releases.push((path, text.into())),
            _ => out.pipeline = Some(text.into()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::repo::validate;

    #[test]
    fn the_scaffold_is_valid_and_is_the_seed() {
        let (repo, diags) = validate(&super::repo_files());
        assert!(diags.is_empty(), "{diags:?}");
        let repo = repo.expect("valid");
        assert_eq!(repo.pipeline.cohorts, crate::seed_cohorts());
        assert_eq!(repo.pipeline.default_route, crate::seed_default_route());
        let state = &repo.services[0].state;
        let versions: Vec<(&str, &str)> = state
            .tracks
            .iter()
            .map(|(t, v)| (t.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            versions,
            [
                ("canary", "1.17.0"),
                ("internal", "1.18.0"),
                ("paid", "1.15.0"),
                ("production", "1.15.0")
            ]
        );
        let written = crate::write_state(&repo.services[0].spec.name, state);
        assert_eq!(
            written,
            super::files()[2].1,
            "the scaffold's state file is what cohort writes"
        );
    }
}

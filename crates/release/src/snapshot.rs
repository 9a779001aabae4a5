//! The release repo's files as last committed: what a change is validated against, so that
//! uncommitted edits to specs can neither open a gate nor slip an invalid state into history.

use std::path::{Path, PathBuf};

use cohort_spec::repo::RepoFiles;

use crate::git::{GitError, ReleaseRepo};

/// The files of the release repo at `prefix` (its place in the worktree) as HEAD has them,
/// with paths relative to the release repo's root.
pub fn head_files(git: &ReleaseRepo, prefix: &Path) -> Result<RepoFiles, GitError> {
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    let yaml_files = |dir: &str| -> Result<Vec<(PathBuf, String)>, GitError> {
        Ok(git
            .read_head_dir(&prefix.join(dir))?
            .into_iter()
            .filter(|(p, _)| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .map(|(p, bytes)| {
                (
                    Path::new(dir).join(p.file_name().unwrap_or_default()),
                    text(bytes),
                )
            })
            .collect())
    };
    Ok(RepoFiles {
        pipeline: git.read_head(&prefix.join("cohort.yaml"))?.map(text),
        services: yaml_files("services")?,
        releases: yaml_files("releases")?,
    })
}

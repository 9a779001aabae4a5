//! The release repo's files as last committed: what a change is validated against, so that
//! uncommitted edits to specs can neither open a gate nor slip an invalid state into history.

use std::path::Path;

use cohort_spec::repo::RepoFiles;

use crate::git::{GitError, ReleaseRepo};

/// The files of the release repo at `prefix` (its place in the worktree) as HEAD has them,
/// with paths relative to the release repo's root; none before the first commit. Read by the
/// same reader as any other commit's ([`ReleaseRepo::files_at`]), so a change command sees
/// exactly what `cohort serve` and the agent will see once it is committed.
pub fn head_files(git: &ReleaseRepo, prefix: &Path) -> Result<RepoFiles, GitError> {
    match git.head_commit()? {
        Some(head) => git.files_at(&head, prefix),
        None => Ok(RepoFiles::default()),
    }
}

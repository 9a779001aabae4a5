//! The release repo's files as a git tree holds them, read under the same rule as the
//! worktree ([`cohort_spec::entry::check`]): a symbolic link, a submodule, a directory where
//! a file belongs or a blob over the size limit is refused with the same error the worktree
//! reader gives, never skipped, so that no reader sees fewer files than another.

use std::path::Path;

use cohort_spec::entry::{self, EntryKind, Expect, Refusal};
use cohort_spec::repo::RepoFiles;
use gix::ObjectId;
use gix::objs::tree::EntryKind as GitKind;

use crate::git::GitError;

/// What a tree entry of `mode` is, in the readers' shared terms.
fn kind_of(mode: gix::objs::tree::EntryMode) -> EntryKind {
    match mode.kind() {
        GitKind::Blob | GitKind::BlobExecutable => EntryKind::File,
        GitKind::Tree => EntryKind::Directory,
        GitKind::Link => EntryKind::Symlink,
        GitKind::Commit => EntryKind::Submodule,
    }
}

/// Reads the blob of a tree entry (`rel` names it in errors) if [`entry::check`] accepts it.
/// The size comes from the object's header, so an oversized blob is refused unread.
pub(crate) fn read_entry(
    repo: &gix::Repository,
    rel: &Path,
    mode: gix::objs::tree::EntryMode,
    id: ObjectId,
) -> Result<Result<Vec<u8>, Refusal>, GitError> {
    let git = |source| GitError::Git {
        what: format!("read {}", rel.display()),
        source,
    };
    let kind = kind_of(mode);
    let size = match kind {
        EntryKind::File => repo.find_header(id).map_err(git)?.size(),
        _ => 0,
    };
    if let Err(refusal) = entry::check(rel, Expect::File, kind, size) {
        return Ok(Err(refusal));
    }
    Ok(Ok(repo.find_object(id).map_err(git)?.detach().data))
}

/// The release repo's files (cohort.yaml, services/, releases/) in `commit`'s tree under
/// `prefix`, paths relative to the release repo's root; what may not be read is listed in
/// [`RepoFiles::refused`].
pub(crate) fn tree_files(
    repo: &gix::Repository,
    commit: ObjectId,
    prefix: &Path,
) -> Result<RepoFiles, GitError> {
    let git = |what: String| move |source: gix::Error| GitError::Git { what, source };
    let what = || format!("read the tree of commit {commit}");
    let top = repo
        .find_commit(commit)
        .map_err(|e| git(what())(e))?
        .tree()
        .map_err(|e| git(what())(e))?;
    let mut files = RepoFiles::default();

    let rel = Path::new("cohort.yaml");
    let found = top
        .lookup_entry_by_path(prefix.join(rel))
        .map_err(|e| git(format!("read {} at {commit}", rel.display()))(e))?;
    if let Some(found) = found {
        match read_entry(repo, rel, found.mode(), found.object_id())?.and_then(|b| entry::decode(rel, b)) {
            Ok(text) => files.pipeline = Some(text),
            Err(refusal) => files.refused.push(refusal),
        }
    }

    let RepoFiles {
        services,
        releases,
        refused,
        ..
    } = &mut files;
    for (dir, listed) in [("services", services), ("releases", releases)] {
        let what = || format!("list {} at {commit}", prefix.join(dir).display());
        let Some(found) = top
            .lookup_entry_by_path(prefix.join(dir))
            .map_err(|e| git(what())(e))?
        else {
            continue;
        };
        if let Err(refusal) = entry::check(Path::new(dir), Expect::Directory, kind_of(found.mode()), 0) {
            refused.push(refusal);
            continue;
        }
        let tree = found.object().map_err(|e| git(what())(e))?.into_tree();
        for item in tree.iter() {
            let item = item.map_err(|e| git(what())(e))?;
            let name = item.inner.filename.to_string();
            if !entry::is_spec_file_name(&name) {
                continue;
            }
            let rel = Path::new(dir).join(&name);
            match read_entry(repo, &rel, item.inner.mode, item.inner.oid.to_owned())?
                .and_then(|b| entry::decode(&rel, b))
            {
                Ok(text) => listed.push((rel, text)),
                Err(refusal) => refused.push(refusal),
            }
        }
        // Git orders a tree's entries by bytes with directories as if followed by `/`; the
        // worktree reader sorts by name, and so must this one for the two to agree.
        listed.sort();
    }
    Ok(files)
}

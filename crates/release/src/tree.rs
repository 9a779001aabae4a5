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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use cohort_spec::entry::MAX_FILE_BYTES;
    use cohort_spec::repo::{RepoFiles, read_files};

    use crate::git::ReleaseRepo;

    fn git(dir: &Path, args: &[&str]) {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("git");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    }

    /// Refusals come in each reader's listing order; what matters is the set.
    fn sorted(mut files: RepoFiles) -> RepoFiles {
        files.refused.sort_by(|a, b| a.path().cmp(b.path()));
        files
    }

    #[test]
    fn the_worktree_and_git_readers_agree_on_every_kind_of_entry() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let top = tmp.path();
        git(top, &["init", "-q", "-b", "main"]);
        let write = |path: &str, bytes: &[u8]| {
            let path = top.join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, bytes).expect("write");
        };
        let link = |target: &str, path: &str| {
            let path = top.join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::os::unix::fs::symlink(target, path).expect("symlink");
        };
        // Release repo `a`: one of each entry a careless or hostile commit could hold.
        write("a/cohort.yaml", b"namespace: shop\n");
        write("a/services/account-service.yaml", b"name: account-service\n");
        write("a/services/exec.yml", b"name: exec\n");
        std::fs::set_permissions(
            top.join("a/services/exec.yml"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        link("account-service.yaml", "a/services/link.yaml");
        link("/dev/zero", "a/services/zero.yaml");
        link("account-service.yaml", "a/services/README.md");
        write("a/services/dir.yaml/inside", b"x\n");
        write(
            "a/services/big.yaml",
            &vec![b'#'; usize::try_from(MAX_FILE_BYTES + 1).expect("fits")],
        );
        write("a/services/latin1.yaml", b"name: caf\xe9\n");
        write("a/releases/account-service.yaml", b"tracks: {}\n");
        {
            use std::os::unix::ffi::OsStrExt;
            let name = std::ffi::OsStr::from_bytes(b"a/services/caf\xe9.yaml");
            std::fs::write(top.join(name), b"name: cafe\n").expect("write");
        }
        // Release repo `b`: its cohort.yaml and a whole directory are links into `a`.
        link("../a/cohort.yaml", "b/cohort.yaml");
        link("../a/releases", "b/releases");
        write("b/services/account-service.yaml", b"name: account-service\n");
        git(top, &["add", "-A"]);
        git(top, &["commit", "-qm", "every kind of entry"]);

        let repo = ReleaseRepo::open(top).expect("open");
        let head = repo.head_commit().expect("head").expect("a commit");
        for prefix in ["a", "b"] {
            let from_disk = read_files(&top.join(prefix)).expect("listed");
            let from_git = repo.files_at(&head, Path::new(prefix)).expect("read");
            assert_eq!(sorted(from_disk.clone()), sorted(from_git), "{prefix}");
            let read: Vec<String> = from_disk
                .services
                .iter()
                .map(|(p, _)| p.display().to_string())
                .collect();
            let expected: &[&str] = match prefix {
                "a" => &[
                    "services/account-service.yaml",
                    "services/caf\u{fffd}.yaml",
                    "services/exec.yml",
                ],
                _ => &["services/account-service.yaml"],
            };
            assert_eq!(read, expected, "{prefix}");
            let refused: Vec<String> = sorted(from_disk)
                .refused
                .iter()
                .map(|r| r.path().display().to_string())
                .collect();
            let expected: &[&str] = match prefix {
                "a" => &[
                    "services/big.yaml",
                    "services/dir.yaml",
                    "services/latin1.yaml",
                    "services/link.yaml",
                    "services/zero.yaml",
                ],
                _ => &["cohort.yaml", "releases"],
            };
            assert_eq!(refused, expected, "{prefix}");
        }
    }
}

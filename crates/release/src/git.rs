//! The release repo as a git repository, through gix: open or create it, lock it
//! against other cohort processes, refuse to touch files with uncommitted edits, and
//! record each change as exactly one commit whose worktree and index match HEAD.

use std::fs;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use gix::ObjectId;
use gix::bstr::{BStr, BString, ByteSlice};
use gix::index::entry::{Flags, Mode, Stage, Stat};
use gix::refs::Target;
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
use gix::revision::walk::Sorting;
use gix::traverse::commit::simple::CommitTimeOrder;

#[cfg(test)]
mod tests;

/// How long [`ReleaseRepo::lock`] waits for another cohort process to finish its change.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Whether the process `pid` (as a lock file records it) has ended, where the system can say
/// (Linux's /proc); elsewhere, or for what is not a pid, it is taken to be running.
fn process_is_gone(pid: &str) -> bool {
    let proc = Path::new("/proc");
    pid.parse::<u32>().is_ok() && proc.join("self").exists() && !proc.join(pid).exists()
}

/// A git repository with a worktree, holding the release repo's files.
#[derive(Debug)]
pub struct ReleaseRepo {
    repo: gix::Repository,
    root: PathBuf,
}

/// Proof that this process holds the release repo's lock; dropping it releases the lock.
#[derive(Debug)]
#[must_use = "the lock is released as soon as this value is dropped"]
pub struct RepoLock {
    path: PathBuf,
}

/// One commit of the release repo's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    /// Full commit id, in hex.
    pub id: String,
    /// Committer time, in seconds since the Unix epoch.
    pub time: i64,
    /// Committer's offset from UTC, in seconds (east is positive).
    pub offset_secs: i32,
    /// Author name as recorded in the commit.
    pub author_name: String,
    /// Author email as recorded in the commit.
    pub author_email: String,
    /// The full commit message without its trailing newlines.
    pub message: String,
}

/// Why a release-repo git operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// No git repository contains the directory.
    #[error("{} is not inside a git repository; run `cohort init` there to create a release repo", dir.display())]
    NotARepo {
        /// The directory that was searched from.
        dir: PathBuf,
    },
    /// The repository has no worktree, so there are no files to deploy from.
    #[error("the git repository at {} is bare; clone it with a worktree (`git clone <url>`) and run cohort inside the clone", git_dir.display())]
    Bare {
        /// The repository's git directory.
        git_dir: PathBuf,
    },
    /// The repository exists but could not be opened.
    #[error("could not open the git repository containing {}", dir.display())]
    Open {
        /// The directory that was searched from.
        dir: PathBuf,
        /// What gix reported.
        #[source]
        source: gix::Error,
    },
    /// `git init` failed.
    #[error("could not create a git repository in {}", dir.display())]
    Init {
        /// The directory to initialise.
        dir: PathBuf,
        /// What gix reported.
        #[source]
        source: gix::Error,
    },
    /// Another cohort process holds the lock.
    #[error(
        "another cohort process{} is changing the release repo (lock file {path}); wait for it to finish. \
         If no cohort process is running, the lock is stale: remove {path} and retry",
        holder.as_deref().map(|pid| format!(" (pid {pid})")).unwrap_or_default(),
        path = path.display()
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The process id recorded in the lock file, if it could be read.
        holder: Option<String>,
    },
    /// Some of the files to change differ from HEAD in the worktree or the index.
    #[error(
        "uncommitted changes to {}; commit or discard them first (`git status` shows them)",
        paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    UncommittedEdits {
        /// The repo-relative paths with edits, in the order they were asked about.
        paths: Vec<PathBuf>,
    },
    /// A path given to cohort cannot name a file in the worktree.
    #[error("cannot use path {}: it {reason}", path.display())]
    BadPath {
        /// The offending path, as given.
        path: PathBuf,
        /// Why it was refused.
        reason: &'static str,
    },
    /// HEAD points at a commit rather than a branch, so a new commit would belong to no branch.
    #[error("HEAD is detached; check out the release branch (e.g. `git switch main`) and retry")]
    DetachedHead,
    /// Neither the environment nor git config name the author or committer.
    #[error(
        "git does not know who you are, and every cohort change is a commit; run \
         `git config --global user.name \"Your Name\"` and `git config --global user.email you@example.com`"
    )]
    NoIdentity,
    /// `GIT_AUTHOR_DATE` or `GIT_COMMITTER_DATE` holds something that is not a date.
    #[error(
        "{var}={value:?} is not a date git understands; use e.g. 2026-01-01T00:00:00Z or \"@1700000000 +0000\", or unset it"
    )]
    BadDate {
        /// The environment variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What the date parser reported.
        #[source]
        source: gix::Error,
    },
    /// The branch moved between building the commit and recording it, e.g. by a `git commit` running alongside.
    #[error(
        "branch {branch} changed while cohort was committing (expected {expected}, found {found}); \
         nothing was committed and the files were put back, so run the command again"
    )]
    BranchMoved {
        /// The branch HEAD points to.
        branch: String,
        /// The commit the branch was expected to point to.
        expected: String,
        /// The commit it points to now.
        found: String,
    },
    /// The commit was made, but git's index still lists the old content of its files.
    #[error(
        "committed {commit}, but could not update git's index, so `git status` shows {} as changed; \
         run `git reset --quiet -- {}` to fix that",
        paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" ")
    )]
    IndexNotUpdated {
        /// The commit that was made, in hex.
        commit: String,
        /// The committed paths.
        paths: Vec<PathBuf>,
        /// Why the index could not be written.
        #[source]
        source: Box<GitError>,
    },
    /// A file or directory could not be read or written.
    #[error("could not {what} {}", path.display())]
    Io {
        /// What was being done, e.g. "write".
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the operating system reported.
        #[source]
        source: io::Error,
    },
    /// A file cohort reads is one it must not read (a symbolic link, a submodule, too large...).
    #[error("{}: {}", .0, .0.help())]
    Refused(cohort_spec::entry::Refusal),
    /// Any other failure inside git's data structures.
    #[error("git: could not {what}")]
    Git {
        /// What was being done, e.g. "write the tree".
        what: String,
        /// What gix reported.
        #[source]
        source: gix::Error,
    },
}

impl ReleaseRepo {
    /// Opens the repository whose worktree contains `dir`, searching upwards like git does.
    pub fn open(dir: &Path) -> Result<Self, GitError> {
        let repo = gix::discover(dir).map_err(|source| {
            use gix::discover::upwards::Error as Upwards;
            match source.downcast_any_ref::<Upwards>() {
                Some(
                    Upwards::NoGitRepository { .. }
                    | Upwards::NoGitRepositoryWithinCeiling { .. }
                    | Upwards::NoGitRepositoryWithinFs { .. },
                ) => GitError::NotARepo { dir: dir.to_owned() },
                _ => GitError::Open {
                    dir: dir.to_owned(),
                    source,
                },
            }
        })?;
        let root = match repo.workdir() {
            Some(root) => std::path::absolute(root).map_err(io_err("resolve", root))?,
            None => {
                return Err(GitError::Bare {
                    git_dir: repo.git_dir().to_owned(),
                });
            }
        };
        Ok(Self { repo, root })
    }

    /// Runs `git init` in `dir` (branch `main`) unless `dir` is already inside a repository, then opens it.
    pub fn init(dir: &Path) -> Result<Self, GitError> {
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        match Self::open(dir) {
            Err(GitError::NotARepo { .. }) => {}
            opened => return opened,
        }
        use gix::sec::trust::DefaultForLevel;
        // cohort documents `main` as the release branch, so a user's `init.defaultBranch` must not rename it.
        let options = gix::open::Options::default_for_level(gix::sec::Trust::Full)
            .config_overrides(["init.defaultBranch=main"]);
        gix::ThreadSafeRepository::init_opts(
            dir,
            gix::create::Kind::WithWorktree,
            gix::create::Options::default(),
            options,
        )
        .map_err(|source| GitError::Init {
            dir: dir.to_owned(),
            source,
        })?;
        // Reopen so the in-memory override above does not linger in the returned repository.
        Self::open(dir)
    }

    /// Commits as `name <email>` when neither git config nor the environment names anyone,
    /// instead of failing with [`GitError::NoIdentity`]. Meant for `cohort init` on a fresh
    /// machine; changes to releases keep requiring a real identity, since history is the audit trail.
    pub fn with_fallback_identity(mut self, name: &str, email: &str) -> Result<Self, GitError> {
        if self.has_identity() {
            return Ok(self);
        }
        // In memory only: nothing is written to the user's git config.
        let mut config = self.repo.config_snapshot_mut();
        config
            .set_value(&gix::config::tree::User::NAME, name)
            .map_err(git("set a fallback user.name"))?;
        config
            .set_value(&gix::config::tree::User::EMAIL, email)
            .map_err(git("set a fallback user.email"))?;
        config.commit().map_err(git("set a fallback identity"))?;
        Ok(self)
    }

    /// Commits as `name <email>` (author and committer), whatever git config says; the
    /// environment's `GIT_AUTHOR_*`/`GIT_COMMITTER_*` still win. For the autopilot, whose
    /// commits must say they are its own.
    pub fn with_identity(mut self, name: &str, email: &str) -> Result<Self, GitError> {
        let mut config = self.repo.config_snapshot_mut();
        for (key, value) in [
            (&gix::config::tree::Author::NAME, name),
            (&gix::config::tree::Author::EMAIL, email),
            (&gix::config::tree::Committer::NAME, name),
            (&gix::config::tree::Committer::EMAIL, email),
        ] {
            config
                .set_value(key, value)
                .map_err(git("set the autopilot's identity"))?;
        }
        config.commit().map_err(git("set the autopilot's identity"))?;
        Ok(self)
    }

    /// Whether git config or the environment name an author and a committer.
    pub fn has_identity(&self) -> bool {
        self.repo.author().is_some() && self.repo.committer().is_some()
    }

    /// The worktree's root directory (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the lock that keeps two cohort processes from changing the repo at once, waiting
    /// up to [`LOCK_WAIT`] for another process to finish: a running autopilot takes it for a
    /// moment every pass, and a person's command must not fail for that.
    pub fn lock(&self) -> Result<RepoLock, GitError> {
        self.lock_within(LOCK_WAIT)
    }

    /// [`Self::lock`], waiting at most `wait` (zero: not at all). A lock whose process is gone
    /// is not waited for: it is stale, and the error says so.
    pub fn lock_within(&self, wait: Duration) -> Result<RepoLock, GitError> {
        let path = self.lock_path();
        let deadline = std::time::Instant::now() + wait;
        let mut pause = Duration::from_millis(10);
        loop {
            match fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    // From here on `lock` removes the file again if recording the pid fails.
                    let lock = RepoLock { path };
                    writeln!(file, "{}", std::process::id())
                        .and_then(|()| file.sync_all())
                        .map_err(io_err("write", &lock.path))?;
                    return Ok(lock);
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                    let holder = fs::read_to_string(&path)
                        .ok()
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty());
                    let gone = holder.as_deref().is_some_and(process_is_gone);
                    if gone || std::time::Instant::now() + pause > deadline {
                        return Err(GitError::Locked { path, holder });
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                Err(err) => return Err(io_err("create", &path)(err)),
            }
        }
    }

    /// Fails with [`GitError::UncommittedEdits`] if any of the repo-relative `paths` has a worktree
    /// file or index entry that differs from HEAD (a path absent from all three is clean).
    ///
    /// Contents are compared byte for byte as blob ids, without git's clean filters or
    /// end-of-line conversion, and ignoring the executable bit.
    pub fn check_clean(&self, paths: &[&Path]) -> Result<(), GitError> {
        let head_tree = match self.head_id()? {
            Some(id) => Some(self.commit_tree(id)?),
            None => None,
        };
        let index = self.read_index()?;
        let mut dirty = Vec::new();
        for &path in paths {
            let rela = rela_path(path)?;
            let in_head = match &head_tree {
                Some(tree) => tree
                    .lookup_entry_by_path(path)
                    .map_err(git(format!("look up {} in HEAD", path.display())))?
                    .map(|entry| entry.object_id()),
                None => None,
            };
            let in_index = match index.entry_range(rela.as_ref()) {
                None => None,
                Some(range) => match &index.entries()[range] {
                    [entry] if entry.stage() == Stage::Unconflicted => Some(entry.id),
                    _ => {
                        // Stages 1-3: an unresolved merge conflict is an edit in progress.
                        dirty.push(path.to_owned());
                        continue;
                    }
                },
            };
            let in_worktree = self.worktree_blob_id(path)?;
            if in_head != in_index || in_index != in_worktree {
                dirty.push(path.to_owned());
            }
        }
        if dirty.is_empty() {
            Ok(())
        } else {
            Err(GitError::UncommittedEdits { paths: dirty })
        }
    }

    /// Writes `files` (repo-relative path, new content) into the worktree and records them as one
    /// commit with `message` on the current branch; returns the new commit's id in hex.
    ///
    /// All other files stay as committed in HEAD. Afterwards the index matches the new HEAD for
    /// these paths, so `git status` shows nothing for them. Author and committer come from
    /// `GIT_{AUTHOR,COMMITTER}_{NAME,EMAIL,DATE}`, else `author.*`/`committer.*`/`user.*` config.
    pub fn commit_files(
        &self,
        lock: &RepoLock,
        files: &[(PathBuf, Vec<u8>)],
        message: &str,
    ) -> Result<String, GitError> {
        self.commit_files_with(lock, files, message, || {})
    }

    /// The commit HEAD points at, in hex; `None` before the first commit.
    pub fn head_commit(&self) -> Result<Option<String>, GitError> {
        Ok(self.head_id()?.map(|id| id.to_string()))
    }

    /// The release repo's files under `prefix` as `commit` (a full hex id) has them.
    pub fn files_at(&self, commit: &str, prefix: &Path) -> Result<cohort_spec::repo::RepoFiles, GitError> {
        crate::tree::tree_files(&self.repo, parse_commit_id(commit)?, prefix)
    }

    /// Reads the content of the repo-relative `path` at HEAD; `None` if HEAD has no file there
    /// or no commit yet. What the worktree reader would refuse there (a symbolic link, a
    /// submodule, a directory, a blob over the size limit) is [`GitError::Refused`].
    pub fn read_head(&self, path: &Path) -> Result<Option<Vec<u8>>, GitError> {
        rela_path(path)?;
        let Some(id) = self.head_id()? else {
            return Ok(None);
        };
        let what = || format!("read {} at HEAD", path.display());
        let Some(entry) = self
            .commit_tree(id)?
            .lookup_entry_by_path(path)
            .map_err(git(what()))?
        else {
            return Ok(None);
        };
        match crate::tree::read_entry(&self.repo, path, entry.mode(), entry.object_id())? {
            Ok(data) => Ok(Some(data)),
            Err(refusal) => Err(GitError::Refused(refusal)),
        }
    }

    /// All commits reachable from HEAD, in plain `git log` order: always the newest (by committer
    /// time) of the commits whose children were already listed, so a backdated commit still comes
    /// before its parent. Empty before the first commit.
    pub fn log(&self) -> Result<Vec<CommitInfo>, GitError> {
        let Some(head) = self.head_id()? else {
            return Ok(Vec::new());
        };
        log_from(&self.repo, head)
    }

    /// [`Self::commit_files`], with `before_ref_update` run just before the branch moves, so that
    /// tests can change the branch in the one window where only the ref check protects it.
    fn commit_files_with(
        &self,
        // Only demanded, so that no caller can commit without having taken the lock.
        _lock: &RepoLock,
        files: &[(PathBuf, Vec<u8>)],
        message: &str,
        before_ref_update: impl FnOnce(),
    ) -> Result<String, GitError> {
        let rela = files
            .iter()
            .map(|(path, _)| rela_path(path))
            .collect::<Result<Vec<_>, _>>()?;
        // Held from the start, as `git commit` does, so that a busy index fails us before
        // anything changed rather than after the commit exists.
        let index_lock = self.lock_index()?;

        let head = self.repo.head().map_err(git("read HEAD"))?;
        if head.is_detached() {
            return Err(GitError::DetachedHead);
        }
        let branch = head
            .referent_name()
            .map(|name| name.shorten().to_string())
            .unwrap_or_default();
        let parent = head.id().map(|id| id.detach());

        // Objects first: until the branch moves they are unreferenced and harmless.
        let (author, committer) = self.signatures()?;
        let (commit, blobs, message) =
            write_commit(&self.repo, parent, files, &rela, message, author, committer)?;

        // Then the worktree, so that a crash before the branch moves leaves visible, uncommitted
        // edits rather than a HEAD whose files the worktree silently reverts.
        let previous = files
            .iter()
            .map(|(path, _)| read_if_present(&self.root.join(path)))
            .collect::<Result<Vec<_>, _>>()?;
        for (path, content) in files {
            write_atomically(&self.root.join(path), content)?;
        }

        before_ref_update();
        let summary = message.lines().next().unwrap_or_default();
        let reflog = match parent {
            Some(_) => format!("commit: {summary}"),
            None => format!("commit (initial): {summary}"),
        };
        let edit = RefEdit {
            change: Change::Update {
                log: LogChange {
                    mode: RefLog::AndReference,
                    force_create_reflog: false,
                    message: reflog.into(),
                },
                // The check that makes a concurrent `git commit` fail us instead of being overwritten.
                expected: match parent {
                    Some(id) => PreviousValue::MustExistAndMatch(Target::Object(id)),
                    None => PreviousValue::MustNotExist,
                },
                new: Target::Object(commit),
            },
            name: "HEAD"
                .try_into()
                .map_err(|err| git("name HEAD")(gix::Error::from_error(err)))?,
            // Through HEAD, so that HEAD's reflog records the commit as `git commit` does.
            deref: true,
        };
        if let Err(source) = self.repo.edit_reference(edit) {
            // Nothing was committed, so the worktree must not claim otherwise. Failing to restore
            // would only hide the cause, which matters more; the files are in `git status` then.
            for ((path, _), old) in files.iter().zip(previous).rev() {
                let path = self.root.join(path);
                let _ = match old {
                    Some(old) => write_atomically(&path, &old),
                    None => fs::remove_file(&path).map_err(io_err("remove", &path)),
                };
            }
            let found = self.branch_tip(&branch);
            return Err(if found != parent {
                let show =
                    |id: Option<ObjectId>| id.map_or_else(|| "no commit".to_owned(), |id| id.to_string());
                GitError::BranchMoved {
                    branch,
                    expected: show(parent),
                    found: show(found),
                }
            } else {
                GitError::Git {
                    what: format!("move branch {branch} to the new commit"),
                    source,
                }
            });
        }

        self.stage(index_lock, files, &rela, &blobs)
            .map_err(|source| GitError::IndexNotUpdated {
                commit: commit.to_string(),
                paths: files.iter().map(|(path, _)| path.clone()).collect(),
                source: Box::new(source),
            })?;
        Ok(commit.to_string())
    }

    /// Points the index entries of the just-committed files at their new blobs, with the stat
    /// data of the files just written so that git does not even re-hash them.
    fn stage(
        &self,
        mut lock: gix::lock::File,
        files: &[(PathBuf, Vec<u8>)],
        rela: &[BString],
        blobs: &[ObjectId],
    ) -> Result<(), GitError> {
        let index_path = self.repo.index_path();
        let mut index = self.read_index()?;
        for (((path, _), rela), &id) in files.iter().zip(rela).zip(blobs) {
            let path = self.root.join(path);
            let stat = gix::index::fs::Metadata::from_path_no_follow(&path)
                .map_err(io_err("stat", &path))
                .and_then(|meta| {
                    Stat::from_fs(&meta).map_err(|err| io_err("stat", &path)(io::Error::other(err)))
                })?;
            let rela: &BStr = rela.as_ref();
            index.remove_entries(|_, entry_path, entry| {
                entry_path == rela && entry.stage() != Stage::Unconflicted
            });
            match index.entry_mut_by_path_and_stage(rela, Stage::Unconflicted) {
                Some(entry) => {
                    entry.id = id;
                    entry.stat = stat;
                    entry.mode = Mode::FILE;
                }
                None => {
                    index.dangerously_push_entry(stat, id, Flags::empty(), Mode::FILE, rela);
                    index.sort_entries();
                }
            }
        }
        // gix writes the tree cache back unchanged; stale, it would let the next `git commit`
        // record the old content of these directories.
        index.remove_tree();
        index
            .write_to(&mut lock, gix::index::write::Options::default())
            .map_err(git(format!("write {}", index_path.display())))?;
        lock.commit().map_err(|err| {
            git(format!("write {}", index_path.display()))(gix::Error::from_error(err.error))
        })?;
        Ok(())
    }

    /// Takes `.git/index.lock`, waiting a little for a git command that holds it.
    fn lock_index(&self) -> Result<gix::lock::File, GitError> {
        let path = self.repo.index_path();
        gix::lock::File::acquire_to_update_resource(
            &path,
            gix::lock::acquire::Fail::AfterDurationWithBackoff(Duration::from_secs(5)),
            None,
            0,
        )
        .map_err(git(format!("lock {}", path.display())))
    }

    /// Author and committer as git would pick them, failing where git would fail.
    fn signatures(&self) -> Result<(gix::actor::Signature, gix::actor::Signature), GitError> {
        // gix silently falls back to "now" for an unparsable date; git refuses, and so do we,
        // because a backdated history that is not backdated is worse than an error.
        let config = self.repo.config_snapshot();
        for (key, var) in [
            ("gitoxide.commit.authorDate", "GIT_AUTHOR_DATE"),
            ("gitoxide.commit.committerDate", "GIT_COMMITTER_DATE"),
        ] {
            if let Some(value) = config.string(key) {
                let value = value.to_str_lossy().into_owned();
                if let Err(source) = gix::date::parse(&value, Some(gix::date::Zoned::now())) {
                    return Err(GitError::BadDate { var, value, source });
                }
            }
        }
        let owned = |sig: gix::Result<gix::actor::SignatureRef<'_>>, who: &str| {
            sig.and_then(|sig| sig.to_owned())
                .map_err(git(format!("read the {who} identity")))
        };
        let author = self.repo.author().ok_or(GitError::NoIdentity)?;
        let committer = self.repo.committer().ok_or(GitError::NoIdentity)?;
        Ok((owned(author, "author")?, owned(committer, "committer")?))
    }

    /// HEAD's commit, or `None` before the first commit.
    fn head_id(&self) -> Result<Option<ObjectId>, GitError> {
        let head = self.repo.head().map_err(git("read HEAD"))?;
        Ok(head.id().map(|id| id.detach()))
    }

    fn commit_tree(&self, commit: ObjectId) -> Result<gix::Tree<'_>, GitError> {
        commit_tree(&self.repo, commit)
    }

    /// Where `branch` points now; `None` if it does not exist or cannot be read.
    fn branch_tip(&self, branch: &str) -> Option<ObjectId> {
        let reference = self.repo.try_find_reference(branch).ok()??;
        reference.target().try_id().map(ToOwned::to_owned)
    }

    /// The index as on disk now. Read afresh each time because gix's shared snapshot is keyed
    /// by mtime and could miss a rewrite within the same timestamp tick.
    fn read_index(&self) -> Result<gix::index::File, GitError> {
        let path = self.repo.index_path();
        if path.exists() {
            self.repo
                .open_index()
                .map_err(git(format!("read {}", path.display())))
        } else {
            let state = gix::index::State::new(self.repo.object_hash());
            Ok(gix::index::File::from_state(state, path))
        }
    }

    /// The blob id git would store for the worktree file at `path`; `None` if there is nothing.
    ///
    /// Only what git can store is read: a pipe or device there (which git cannot commit, so
    /// it differs from HEAD) counts as an edit without being opened, as a pipe would block the
    /// read and a device never end it.
    fn worktree_blob_id(&self, path: &Path) -> Result<Option<ObjectId>, GitError> {
        use cohort_spec::entry::EntryKind;
        let full = self.root.join(path);
        let meta = match fs::symlink_metadata(&full) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(io_err("stat", &full)(err)),
        };
        // The null id matches no blob, so what git cannot hold where a file belongs is an edit.
        let edited = Ok(Some(ObjectId::null(self.repo.object_hash())));
        let content: Vec<u8> = match EntryKind::of(meta.file_type()) {
            EntryKind::Symlink => {
                let target = fs::read_link(&full).map_err(io_err("read", &full))?;
                gix::path::into_bstr(target)
                    .map_err(git(format!("read {}", full.display())))?
                    .into_owned()
                    .into()
            }
            EntryKind::File => {
                let mut file = cohort_spec::entry::open_no_follow(&full).map_err(io_err("read", &full))?;
                let opened = file.metadata().map_err(io_err("stat", &full))?;
                if EntryKind::of(opened.file_type()) != EntryKind::File {
                    // Swapped for something else since it was looked at.
                    return edited;
                }
                let mut content = Vec::new();
                io::Read::read_to_end(&mut file, &mut content).map_err(io_err("read", &full))?;
                content
            }
            _ => return edited,
        };
        gix::objs::compute_hash(self.repo.object_hash(), gix::objs::Kind::Blob, &content)
            .map(Some)
            .map_err(git(format!("hash {}", full.display())))
    }

    /// In the common git dir, so that all worktrees of one repository share the lock.
    fn lock_path(&self) -> PathBuf {
        self.repo.common_dir().join("cohort.lock")
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        // A lock file left behind only blocks later runs, and its error says how to remove it.
        let _ = fs::remove_file(&self.path);
    }
}

/// `path` in git's slash-separated form, refusing anything that would leave the worktree or enter `.git`.
pub(crate) fn rela_path(path: &Path) -> Result<BString, GitError> {
    let bad = |reason| GitError::BadPath {
        path: path.to_owned(),
        reason,
    };
    let mut out = BString::default();
    for component in path.components() {
        let name = match component {
            Component::CurDir => continue,
            Component::Normal(name) => name,
            Component::ParentDir => return Err(bad("leads out of the repository with `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(bad("is absolute; give it relative to the repository root"));
            }
        };
        let name = gix::path::os_str_into_bstr(name).map_err(|_| bad("is not valid UTF-8"))?;
        if name.eq_ignore_ascii_case(b".git") {
            return Err(bad("points into git's own `.git` directory"));
        }
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(name);
    }
    if out.is_empty() {
        return Err(bad("names no file"));
    }
    Ok(out)
}

fn read_if_present(path: &Path) -> Result<Option<Vec<u8>>, GitError> {
    match fs::read(path) {
        Ok(content) => Ok(Some(content)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io_err("read", path)(err)),
    }
}

/// Replaces `path` so that readers and crashes see either the old or the new content, never a mix.
fn write_atomically(path: &Path, content: &[u8]) -> Result<(), GitError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".cohort-").suffix(".tmp");
    // Like files git checks out: 0666 minus the umask, not tempfile's private 0600.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder
        .tempfile_in(dir)
        .map_err(io_err("create a temporary file in", dir))?;
    tmp.write_all(content)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io_err("write", tmp.path()))?;
    tmp.persist(path)
        .map_err(|err| io_err("replace", path)(err.error))?;
    // The rename is only durable once the directory entry is on disk.
    #[cfg(unix)]
    fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_err("sync directory", dir))?;
    Ok(())
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> GitError + use<> {
    let path = path.to_owned();
    move |source| GitError::Io { what, path, source }
}

pub(crate) fn git(what: impl Into<String>) -> impl FnOnce(gix::Error) -> GitError {
    let what = what.into();
    move |source| GitError::Git { what, source }
}

/// The commits reachable from `head`, in plain `git log` order (see [`ReleaseRepo::log`]).
pub(crate) fn log_from(repo: &gix::Repository, head: ObjectId) -> Result<Vec<CommitInfo>, GitError> {
    let walk = repo
        .rev_walk([head])
        .sorting(Sorting::ByCommitTime(CommitTimeOrder::NewestFirst))
        .all()
        .map_err(git("walk the history"))?;
    let mut out = Vec::new();
    for info in walk {
        let info = info.map_err(git("walk the history"))?;
        let what = || format!("read commit {}", info.id);
        let commit = info.object().map_err(git(what()))?;
        let commit = commit.decode().map_err(git(what()))?;
        let author = commit.author().map_err(git(what()))?;
        let time = commit.committer().and_then(|c| c.time()).map_err(git(what()))?;
        out.push(CommitInfo {
            id: info.id.to_string(),
            time: time.seconds,
            offset_secs: time.offset,
            author_name: author.name.to_str_lossy().into_owned(),
            author_email: author.email.to_str_lossy().into_owned(),
            message: commit
                .message
                .trim_end_with(|c| c == '\n')
                .to_str_lossy()
                .into_owned(),
        });
    }
    Ok(out)
}

/// Writes `files` (at their repo-relative paths `rela`) on top of `parent`'s tree and a commit
/// of that tree with `message` (ended with a newline, as `git commit` does); returns the
/// commit, the files' blobs and the message as written. Nothing refers to them yet.
pub(crate) fn write_commit(
    repo: &gix::Repository,
    parent: Option<ObjectId>,
    files: &[(PathBuf, Vec<u8>)],
    rela: &[BString],
    message: &str,
    author: gix::actor::Signature,
    committer: gix::actor::Signature,
) -> Result<(ObjectId, Vec<ObjectId>, String), GitError> {
    let base_tree = match parent {
        Some(id) => commit_tree(repo, id)?.id,
        None => ObjectId::empty_tree(repo.object_hash()),
    };
    let mut editor = repo.edit_tree(base_tree).map_err(git("read HEAD's tree"))?;
    let mut blobs = Vec::with_capacity(files.len());
    for ((path, content), rela) in files.iter().zip(rela) {
        let what = || format!("store {} in git", path.display());
        let blob = repo.write_blob(content).map_err(git(what()))?.detach();
        editor
            .upsert(rela, gix::objs::tree::EntryKind::Blob, blob)
            .map_err(git(what()))?;
        blobs.push(blob);
    }
    let tree = editor.write().map_err(git("write the tree"))?;
    // `git commit` always ends the message with a newline; other tools expect it.
    let message = if message.ends_with('\n') {
        message.to_owned()
    } else {
        format!("{message}\n")
    };
    let commit = gix::objs::Commit {
        tree: tree.detach(),
        parents: parent.into_iter().collect(),
        author,
        committer,
        encoding: None,
        message: message.as_str().into(),
        extra_headers: Vec::new(),
    };
    let commit = repo
        .write_object(&commit)
        .map_err(git("write the commit"))?
        .detach();

    Ok((commit, blobs, message))
}

pub(crate) fn commit_tree(repo: &gix::Repository, commit: ObjectId) -> Result<gix::Tree<'_>, GitError> {
    let what = || format!("read the tree of commit {commit}");
    repo.find_commit(commit)
        .map_err(git(what()))?
        .tree()
        .map_err(git(what()))
}

/// A commit's full hex id as gix takes it.
pub(crate) fn parse_commit_id(commit: &str) -> Result<ObjectId, GitError> {
    ObjectId::from_hex(commit.as_bytes()).map_err(|e| GitError::Git {
        what: format!("read commit {commit}"),
        source: gix::Error::from_error(e),
    })
}

use std::process::Command;

use super::*;

/// Lets the parent test hand a repository and an expected outcome to [`child_commit_from_env`].
const CHILD_REPO: &str = "COHORT_TEST_CHILD_REPO";
const CHILD_EXPECT: &str = "COHORT_TEST_CHILD_EXPECT";

/// Runs the git CLI in `dir`, isolated from the machine's git config, and returns its stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    git_with_env(dir, args, &[])
}

fn git_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Cli Author")
        .env("GIT_AUTHOR_EMAIL", "cli@example.com")
        .env("GIT_COMMITTER_NAME", "Cli Committer")
        .env("GIT_COMMITTER_EMAIL", "cli@example.com")
        .envs(env.iter().copied())
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A fresh repository with an identity in `.git/config`, so that tests do not depend on the
/// machine's global config.
fn new_repo() -> (tempfile::TempDir, ReleaseRepo) {
    let dir = tempfile::tempdir().expect("temp dir");
    ReleaseRepo::init(dir.path()).expect("init");
    git(dir.path(), &["config", "user.name", "Test User"]);
    git(dir.path(), &["config", "user.email", "test@example.com"]);
    // gix reads config once per open.
    let repo = ReleaseRepo::open(dir.path()).expect("open");
    (dir, repo)
}

fn commit(repo: &ReleaseRepo, files: &[(&str, &str)], message: &str) -> String {
    let lock = repo.lock().expect("lock");
    let files: Vec<_> = files
        .iter()
        .map(|(path, content)| (PathBuf::from(path), content.as_bytes().to_vec()))
        .collect();
    repo.commit_files(&lock, &files, message).expect("commit")
}

/// Clean, and with index stat data matching the files, so git need not even re-read them.
fn assert_pristine(dir: &Path) {
    // Before `git status`, which would refresh stale stat data and hide it.
    assert_eq!(git(dir, &["diff-files", "--name-only"]), "");
    assert_clean(dir);
}

fn assert_clean(dir: &Path) {
    assert_eq!(git(dir, &["status", "--porcelain", "--untracked-files=all"]), "");
    assert_eq!(git(dir, &["diff", "--cached", "--name-only"]), "");
    git(dir, &["fsck", "--strict", "--no-dangling"]);
}

fn dirty_paths(repo: &ReleaseRepo, paths: &[&str]) -> Vec<PathBuf> {
    let paths: Vec<&Path> = paths.iter().map(Path::new).collect();
    match repo.check_clean(&paths) {
        Ok(()) => Vec::new(),
        Err(GitError::UncommittedEdits { paths }) => paths,
        Err(err) => panic!("unexpected error: {err}"),
    }
}

#[test]
fn first_commit_on_unborn_branch() {
    let (dir, repo) = new_repo();
    assert!(repo.log().expect("log").is_empty());
    assert_eq!(repo.read_head(Path::new("cohort.yaml")).expect("read"), None);

    let id = commit(&repo, &[("cohort.yaml", "version: 1\n")], "init release repo");

    assert_eq!(git(dir.path(), &["rev-parse", "HEAD"]).trim(), id);
    assert_eq!(
        git(dir.path(), &["symbolic-ref", "--short", "HEAD"]).trim(),
        "main"
    );
    assert_eq!(git(dir.path(), &["log", "--format=%s"]), "init release repo\n");
    assert_eq!(git(dir.path(), &["rev-list", "--count", "HEAD"]).trim(), "1");
    assert_eq!(
        fs::read(dir.path().join("cohort.yaml")).expect("file"),
        b"version: 1\n"
    );
    assert_eq!(
        repo.read_head(Path::new("cohort.yaml")).expect("read"),
        Some(b"version: 1\n".to_vec())
    );
    assert_pristine(dir.path());

    let log = repo.log().expect("log");
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].id, id);
    assert_eq!(log[0].message, "init release repo");
    assert_eq!(log[0].author_name, "Test User");
    assert_eq!(log[0].author_email, "test@example.com");
    // Both HEAD and the branch record the commit, as after `git commit`.
    assert!(git(dir.path(), &["reflog", "HEAD"]).contains("commit (initial): init release repo"));
    assert!(git(dir.path(), &["reflog", "main"]).contains("commit (initial): init release repo"));
}

#[test]
fn second_commit_changes_one_file_and_keeps_the_others() {
    let (dir, repo) = new_repo();
    let first = commit(
        &repo,
        &[
            ("cohort.yaml", "a\n"),
            ("services/web.yaml", "web\n"),
            ("services/api.yaml", "api\n"),
        ],
        "first",
    );
    let second = commit(
        &repo,
        &[("services/web.yaml", "web v2\n")],
        "deploy web v2\n\nbody line\n",
    );

    assert_eq!(git(dir.path(), &["rev-parse", "HEAD~1"]).trim(), first);
    assert_eq!(
        git(dir.path(), &["show", "--format=", "--name-only", "HEAD"]),
        "services/web.yaml\n"
    );
    assert_eq!(git(dir.path(), &["show", "HEAD:services/api.yaml"]), "api\n");
    assert_eq!(git(dir.path(), &["show", "HEAD:cohort.yaml"]), "a\n");
    assert_eq!(git(dir.path(), &["show", "HEAD:services/web.yaml"]), "web v2\n");
    assert_pristine(dir.path());

    let log = repo.log().expect("log");
    let ids: Vec<_> = log.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [second.as_str(), first.as_str()]);
    assert_eq!(log[0].message, "deploy web v2\n\nbody line");
}

#[test]
fn log_lists_a_backdated_commit_before_its_parent() {
    let (dir, repo) = new_repo();
    for (message, date) in [
        ("a", "@1700000200 +0000"),
        ("b", "@1700000100 +0000"),
        ("c", "@1700000300 +0100"),
    ] {
        let date = [("GIT_COMMITTER_DATE", date)];
        git_with_env(
            dir.path(),
            &["commit", "-q", "--allow-empty", "-m", message],
            &date,
        );
    }

    let log = repo.log().expect("log");

    let got: Vec<_> = log
        .iter()
        .map(|c| (c.message.as_str(), c.time, c.offset_secs))
        .collect();
    assert_eq!(
        got,
        [
            ("c", 1_700_000_300, 3600),
            ("b", 1_700_000_100, 0),
            ("a", 1_700_000_200, 0)
        ]
    );
    assert_eq!(log[0].author_name, "Cli Author");
    let ids: Vec<_> = log.iter().map(|c| c.id.clone()).collect();
    assert_eq!(git(dir.path(), &["log", "--format=%H"]), ids.join("\n") + "\n");
}

#[test]
fn commit_leaves_unrelated_edits_uncommitted() {
    let (dir, repo) = new_repo();
    commit(&repo, &[("a.yaml", "a\n"), ("b.yaml", "b\n")], "first");
    fs::write(dir.path().join("b.yaml"), "b edited\n").expect("edit");

    commit(&repo, &[("a.yaml", "a2\n")], "second");

    assert_eq!(git(dir.path(), &["show", "HEAD:b.yaml"]), "b\n");
    assert_eq!(git(dir.path(), &["status", "--porcelain"]), " M b.yaml\n");
}

#[test]
fn index_entries_of_committed_files_replace_staged_ones() {
    let (dir, repo) = new_repo();
    commit(&repo, &[("a.yaml", "a\n")], "first");
    fs::write(dir.path().join("a.yaml"), "staged\n").expect("edit");
    git(dir.path(), &["add", "a.yaml"]);

    commit(&repo, &[("a.yaml", "a2\n")], "second");

    assert_eq!(git(dir.path(), &["show", "HEAD:a.yaml"]), "a2\n");
    assert_pristine(dir.path());
}

#[test]
fn a_later_git_commit_keeps_what_cohort_committed() {
    let (dir, repo) = new_repo();
    fs::create_dir(dir.path().join("services")).expect("mkdir");
    fs::write(dir.path().join("services/web.yaml"), "web\n").expect("write");
    git(dir.path(), &["add", "."]);
    // `git commit` leaves a valid tree cache in the index, which our commit must not leave stale.
    git(dir.path(), &["commit", "-q", "-m", "cli"]);

    commit(&repo, &[("services/web.yaml", "web v2\n")], "cohort");
    fs::write(dir.path().join("notes.txt"), "n\n").expect("write");
    git(dir.path(), &["add", "notes.txt"]);
    git(dir.path(), &["commit", "-q", "-m", "cli again"]);

    assert_eq!(git(dir.path(), &["show", "HEAD:services/web.yaml"]), "web v2\n");
    assert_pristine(dir.path());
}

#[test]
fn check_clean_detects_worktree_staged_and_untracked_edits() {
    let (dir, repo) = new_repo();
    commit(
        &repo,
        &[
            ("a.yaml", "a\n"),
            ("b.yaml", "b\n"),
            ("c.yaml", "c\n"),
            ("d.yaml", "d\n"),
        ],
        "first",
    );
    let all = ["a.yaml", "b.yaml", "c.yaml", "d.yaml", "new.yaml", "absent.yaml"];
    assert_eq!(dirty_paths(&repo, &all), Vec::<PathBuf>::new());

    fs::write(dir.path().join("a.yaml"), "a edited\n").expect("edit");
    fs::write(dir.path().join("b.yaml"), "b staged\n").expect("edit");
    git(dir.path(), &["add", "b.yaml"]);
    fs::write(dir.path().join("b.yaml"), "b\n").expect("revert worktree only");
    fs::remove_file(dir.path().join("c.yaml")).expect("delete");
    fs::write(dir.path().join("new.yaml"), "untracked\n").expect("write");

    let expected: Vec<PathBuf> = ["a.yaml", "b.yaml", "c.yaml", "new.yaml"]
        .map(PathBuf::from)
        .into();
    assert_eq!(dirty_paths(&repo, &all), expected);
    assert_eq!(
        dirty_paths(&repo, &["d.yaml", "absent.yaml"]),
        Vec::<PathBuf>::new()
    );

    let err = repo.check_clean(&[Path::new("a.yaml")]).expect_err("dirty");
    assert!(err.to_string().contains("a.yaml"), "{err}");
    assert!(err.to_string().contains("git status"), "{err}");
}

#[test]
fn check_clean_on_unborn_branch() {
    let (dir, repo) = new_repo();
    assert_eq!(dirty_paths(&repo, &["a.yaml"]), Vec::<PathBuf>::new());
    fs::write(dir.path().join("a.yaml"), "a\n").expect("write");
    assert_eq!(dirty_paths(&repo, &["a.yaml"]), [PathBuf::from("a.yaml")]);
}

#[test]
fn lock_is_exclusive_and_released_on_drop() {
    let (_dir, repo) = new_repo();
    let lock = repo.lock().expect("first lock");
    match repo.lock_within(std::time::Duration::from_millis(50)) {
        Err(err @ GitError::Locked { .. }) => {
            let GitError::Locked { path, holder } = &err else {
                unreachable!()
            };
            assert_eq!(holder.as_deref(), Some(std::process::id().to_string().as_str()));
            assert!(err.to_string().contains(&path.display().to_string()), "{err}");
            assert!(err.to_string().contains("stale"), "{err}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(lock);
    drop(repo.lock().expect("lock again after release"));
}

/// A person's `cohort promote` while the autopilot commits: it waits its turn, not fails.
#[test]
fn a_busy_lock_is_waited_for_and_a_stale_one_is_not() {
    let (_dir, repo) = new_repo();
    let held = repo.lock().expect("first lock");
    let root = repo.root().to_path_buf();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(held);
    });
    let again = ReleaseRepo::open(&root).expect("open");
    let started = std::time::Instant::now();
    let lock = again.lock().expect("taken once the holder lets go");
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
    releaser.join().expect("join");
    drop(lock);

    // A lock left by a process that is gone fails at once, saying it is stale.
    let path = root.join(".git/cohort.lock");
    std::fs::write(&path, "4294967\n").expect("write");
    let started = std::time::Instant::now();
    let err = repo.lock().expect_err("stale");
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    assert!(err.to_string().contains("stale"), "{err}");
}

#[test]
fn concurrent_branch_move_is_detected_and_nothing_is_overwritten() {
    let (dir, repo) = new_repo();
    commit(&repo, &[("a.yaml", "a\n")], "first");
    let lock = repo.lock().expect("lock");
    let files = [
        (PathBuf::from("a.yaml"), b"a2\n".to_vec()),
        (PathBuf::from("new.yaml"), b"n\n".to_vec()),
    ];

    // Not `git commit`: it would wait for the index lock we hold, as it should.
    let result = repo.commit_files_with(&lock, &files, "loses the race", || {
        let id = git(
            dir.path(),
            &["commit-tree", "HEAD^{tree}", "-p", "HEAD", "-m", "concurrent"],
        );
        git(dir.path(), &["update-ref", "refs/heads/main", id.trim()]);
    });

    match result {
        Err(err @ GitError::BranchMoved { .. }) => assert!(err.to_string().contains("main"), "{err}"),
        other => panic!("expected BranchMoved, got {other:?}"),
    }
    assert_eq!(git(dir.path(), &["log", "--format=%s"]), "concurrent\nfirst\n");
    assert_eq!(fs::read(dir.path().join("a.yaml")).expect("file"), b"a\n");
    assert!(!dir.path().join("new.yaml").exists());
    // Restored files are new inodes, so only their content matches the index.
    assert_clean(dir.path());
}

#[test]
fn failed_branch_update_puts_the_files_back() {
    let (dir, repo) = new_repo();
    commit(&repo, &[("a.yaml", "a\n")], "first");
    // A `git` process in the middle of updating the branch holds this lock.
    fs::write(dir.path().join(".git/refs/heads/main.lock"), "").expect("ref lock");
    let lock = repo.lock().expect("lock");

    let result = repo.commit_files(&lock, &[(PathBuf::from("a.yaml"), b"a2\n".to_vec())], "blocked");

    let err = result.expect_err("ref is locked");
    assert!(matches!(err, GitError::Git { .. }), "{err:?}");
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        chain.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    assert!(chain.contains("main.lock"), "{chain}");
    fs::remove_file(dir.path().join(".git/refs/heads/main.lock")).expect("unlock");
    assert_eq!(git(dir.path(), &["log", "--format=%s"]), "first\n");
    assert_clean(dir.path());
}

#[test]
fn init_creates_a_missing_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = ReleaseRepo::init(&dir.path().join("new/release")).expect("init");
    assert!(repo.root().ends_with("new/release"));
    assert_eq!(
        git(repo.root(), &["symbolic-ref", "HEAD"]).trim(),
        "refs/heads/main"
    );
}

#[test]
fn detached_head_is_refused() {
    let (dir, repo) = new_repo();
    commit(&repo, &[("a.yaml", "a\n")], "first");
    git(dir.path(), &["checkout", "-q", "--detach"]);
    let lock = repo.lock().expect("lock");
    let result = repo.commit_files(&lock, &[(PathBuf::from("a.yaml"), b"b\n".to_vec())], "x");
    assert!(matches!(result, Err(GitError::DetachedHead)), "{result:?}");
}

#[test]
fn paths_outside_the_worktree_are_refused() {
    let (_dir, repo) = new_repo();
    let lock = repo.lock().expect("lock");
    for bad in ["../escape.yaml", "/etc/passwd", ".git/config", "a/.GIT/x", ""] {
        let result = repo.commit_files(&lock, &[(PathBuf::from(bad), b"x".to_vec())], "x");
        assert!(
            matches!(result, Err(GitError::BadPath { .. })),
            "{bad}: {result:?}"
        );
        let result = repo.check_clean(&[Path::new(bad)]);
        assert!(
            matches!(result, Err(GitError::BadPath { .. })),
            "{bad}: {result:?}"
        );
    }
    assert!(repo.log().expect("log").is_empty());
}

#[test]
fn open_discovers_the_root_from_a_subdirectory() {
    let (dir, _repo) = new_repo();
    let sub = dir.path().join("services/web");
    fs::create_dir_all(&sub).expect("mkdir");
    let repo = ReleaseRepo::open(&sub).expect("open");
    assert_eq!(
        repo.root().canonicalize().expect("root"),
        dir.path().canonicalize().expect("dir")
    );
}

#[test]
fn open_outside_a_repository_suggests_cohort_init() {
    let dir = tempfile::tempdir().expect("temp dir");
    match ReleaseRepo::open(dir.path()) {
        Err(err @ GitError::NotARepo { .. }) => assert!(err.to_string().contains("cohort init"), "{err}"),
        Err(err) => panic!("expected NotARepo, got {err:?}"),
        Ok(repo) => panic!("found a repository at {}", repo.root().display()),
    }
}

#[test]
fn init_keeps_an_existing_repository() {
    let (dir, repo) = new_repo();
    let id = commit(&repo, &[("a.yaml", "a\n")], "first");
    let again = ReleaseRepo::init(dir.path()).expect("init again");
    assert_eq!(again.log().expect("log")[0].id, id);
}

#[test]
fn errors_can_cross_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<GitError>();
}

/// Runs [`child_commit_from_env`] in a child process, because the environment cannot be
/// changed safely in a multi-threaded test process.
fn run_child(dir: &Path, expect: &str, configure: impl FnOnce(&mut Command)) {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args([
        "--exact",
        "git::tests::child_commit_from_env",
        "--ignored",
        "--test-threads=1",
    ])
    .env(CHILD_REPO, dir)
    .env(CHILD_EXPECT, expect);
    for var in [
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_AUTHOR_DATE",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "GIT_COMMITTER_DATE",
        "EMAIL",
    ] {
        cmd.env_remove(var);
    }
    configure(&mut cmd);
    let out = cmd.output().expect("child runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "run by other tests in a child process with a prepared environment"]
fn child_commit_from_env() {
    let Some(dir) = std::env::var_os(CHILD_REPO) else {
        return;
    };
    let expect = std::env::var(CHILD_EXPECT).expect("expectation");
    let repo = ReleaseRepo::open(Path::new(&dir)).expect("open");
    let lock = repo.lock().expect("lock");
    let result = repo.commit_files(
        &lock,
        &[(PathBuf::from("env.yaml"), b"env\n".to_vec())],
        "from env",
    );
    match expect.as_str() {
        "ok" => drop(result.expect("commit")),
        "no-identity" => assert!(matches!(result, Err(GitError::NoIdentity)), "{result:?}"),
        "bad-date" => assert!(
            matches!(
                result,
                Err(GitError::BadDate {
                    var: "GIT_COMMITTER_DATE",
                    ..
                })
            ),
            "{result:?}"
        ),
        other => panic!("unknown expectation {other}"),
    }
}

#[test]
fn identity_and_backdated_times_come_from_the_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    ReleaseRepo::init(dir.path()).expect("init");
    run_child(dir.path(), "ok", |cmd| {
        cmd.env("GIT_AUTHOR_NAME", "Ann Author")
            .env("GIT_AUTHOR_EMAIL", "ann@example.com")
            .env("GIT_AUTHOR_DATE", "@1700000000 +0200")
            .env("GIT_COMMITTER_NAME", "Carl Committer")
            .env("GIT_COMMITTER_EMAIL", "carl@example.com")
            .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z");
    });

    let repo = ReleaseRepo::open(dir.path()).expect("open");
    let log = repo.log().expect("log");
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].time, 1_767_225_600);
    assert_eq!(log[0].offset_secs, 0);
    assert_eq!(log[0].author_name, "Ann Author");
    assert_eq!(log[0].author_email, "ann@example.com");
    assert_eq!(
        git(dir.path(), &["log", "-1", "--format=%at %ai|%ct|%cn <%ce>"]),
        "1700000000 2023-11-15 00:13:20 +0200|1767225600|Carl Committer <carl@example.com>\n"
    );
    assert_pristine(dir.path());
}

#[test]
fn unparsable_date_is_an_error_not_now() {
    let (dir, _repo) = new_repo();
    run_child(dir.path(), "bad-date", |cmd| {
        cmd.env("GIT_COMMITTER_DATE", "last tuesday-ish");
    });
    assert_eq!(git(dir.path(), &["rev-list", "--all"]), "");
}

#[test]
fn missing_identity_says_how_to_configure_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = tempfile::tempdir().expect("home");
    ReleaseRepo::init(dir.path()).expect("init");
    run_child(dir.path(), "no-identity", |cmd| {
        cmd.env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1");
    });
    assert!(
        GitError::NoIdentity
            .to_string()
            .contains("git config --global user.name")
    );
}

/// Regression: on a fresh machine without any git identity, `cohort init` still made no commit
/// because gix needs a committer for the reflog too.
#[test]
fn fallback_identity_commits_when_nobody_is_configured() {
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "git::tests::child_fallback_identity",
            "--include-ignored",
            "--nocapture",
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("COHORT_CHILD_FALLBACK", "1")
        .output()
        .expect("child runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "the child test ran: {stdout}");
}

#[test]
#[ignore = "run as a child process by fallback_identity_commits_when_nobody_is_configured"]
fn child_fallback_identity() {
    if std::env::var_os("COHORT_CHILD_FALLBACK").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = ReleaseRepo::init(tmp.path()).expect("init");
    assert!(!repo.has_identity(), "no identity in this environment");
    assert!(matches!(
        repo.commit_files(
            &repo.lock().expect("lock"),
            &[(PathBuf::from("a"), b"a".to_vec())],
            "m"
        ),
        Err(GitError::NoIdentity)
    ));
    let repo = repo
        .with_fallback_identity("cohort init", "cohort@localhost")
        .expect("fallback");
    let lock = repo.lock().expect("lock");
    repo.commit_files(&lock, &[(PathBuf::from("a"), b"a".to_vec())], "m")
        .expect("commits");
    let log = repo.log().expect("log");
    assert_eq!(log[0].author_name, "cohort init");
}

#[test]
fn head_files_are_the_committed_files_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = ReleaseRepo::init(tmp.path()).expect("init");
    std::fs::write(
        tmp.path().join(".git/config"),
        "[user]\n\tname = T\n\temail = t@x\n",
    )
    .ok();
    let repo = ReleaseRepo::open(repo.root()).expect("reopen with identity");
    let lock = repo.lock().expect("lock");
    let files = [
        (PathBuf::from("services/b.yaml"), b"b".to_vec()),
        (PathBuf::from("services/a.yaml"), b"a".to_vec()),
        (PathBuf::from("cohort.yaml"), b"c".to_vec()),
    ];
    repo.commit_files(&lock, &files, "m").expect("commit");
    std::fs::write(tmp.path().join("services/untracked.yaml"), "u").expect("write");
    let files = crate::snapshot::head_files(&repo, Path::new("")).expect("read");
    assert_eq!(
        files.services,
        vec![
            (PathBuf::from("services/a.yaml"), "a".to_string()),
            (PathBuf::from("services/b.yaml"), "b".to_string())
        ]
    );
    assert_eq!(files.pipeline.as_deref(), Some("c"));
    assert!(files.releases.is_empty() && files.refused.is_empty());
}

//! What cohort reads from a release repo: only regular files of at most MAX_FILE_BYTES, by
//! every reader (the worktree's and git's), with the same located error when a file is
//! something else. The real binary in real git repositories; every run has a deadline, since
//! a reader that follows a pipe or a device never returns.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const EU: &str = "eu-west-token-0123456789abcdef";
const FLEET: &str = "fleet-token-0123456789abcdef";

/// A release repo made by `cohort init` in a temporary directory.
struct Repo {
    _tmp: tempfile::TempDir,
    top: PathBuf,
    dir: PathBuf,
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `program` in `dir`, failing the test if it has not finished within `limit`.
fn run_within(dir: &Path, program: &str, args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Release Bot")
        .env("GIT_AUTHOR_EMAIL", "bot@example.com")
        .env("GIT_COMMITTER_NAME", "Release Bot")
        .env("GIT_COMMITTER_EMAIL", "bot@example.com")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("COHORT_REPO")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    // Read both pipes off this thread, so a talkative child cannot block on a full pipe.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut out = vec![];
            let _ = pipe.read_to_end(&mut out);
            out
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout"),
        stderr: stderr.join().expect("stderr"),
    }
}

impl Repo {
    fn init() -> Repo {
        let tmp = tempfile::tempdir().expect("tempdir");
        let top = tmp.path().to_path_buf();
        let o = run_within(
            &top,
            env!("CARGO_BIN_EXE_cohort"),
            &["init", "repo"],
            Duration::from_secs(30),
        );
        assert!(o.status.success(), "{}", text(&o));
        Repo {
            dir: top.join("repo"),
            top,
            _tmp: tmp,
        }
    }

    /// `cohort <args>` in the repo; 30 s is far more than any of these takes.
    fn cohort(&self, args: &[&str]) -> Output {
        run_within(
            &self.dir,
            env!("CARGO_BIN_EXE_cohort"),
            args,
            Duration::from_secs(30),
        )
    }

    /// `cohort <args>` must fail with exit status `code`; its stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let o = self.cohort(args);
        assert_eq!(o.status.code(), Some(code), "cohort {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    fn git(&self, args: &[&str]) -> String {
        let o = run_within(&self.dir, "git", args, Duration::from_secs(30));
        assert!(o.status.success(), "git {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Replaces `releases/account-service.yaml` with a symbolic link to the same text moved
    /// elsewhere in the repo, and commits that.
    fn commit_symlinked_state(&self) {
        std::fs::create_dir_all(self.dir.join("elsewhere")).expect("mkdir");
        self.git(&["mv", "releases/account-service.yaml", "elsewhere/state.yaml"]);
        std::os::unix::fs::symlink(
            "../elsewhere/state.yaml",
            self.dir.join("releases/account-service.yaml"),
        )
        .expect("symlink");
        self.git(&["add", "-A"]);
        self.git(&["commit", "-qm", "state file moved behind a link"]);
        assert_eq!(
            self.git(&["ls-files", "-s", "releases/account-service.yaml"])
                .split_whitespace()
                .next(),
            Some("120000"),
            "committed as a symbolic link"
        );
    }
}

const SYMLINK_ERROR: &str = "releases/account-service.yaml:1:1: error: releases/account-service.yaml is a \
    symbolic link; cohort reads only regular files\n  help: replace it with the file itself";

#[test]
fn a_symlinked_state_file_is_refused_by_every_reader_and_deploy_commits_nothing() {
    let r = Repo::init();
    r.commit_symlinked_state();
    let before = r.git(&["log", "--format=%H %s"]);

    // The git reader (what a change is validated against) refuses it: no commit that would
    // hold `internal` alone and drop canary, paid and production.
    let err = r.fails(&["deploy", "account-service", "1.19.0"], 1);
    assert!(err.contains(SYMLINK_ERROR), "{err}");
    assert_eq!(r.git(&["log", "--format=%H %s"]), before, "nothing was committed");
    assert_eq!(r.git(&["status", "--porcelain"]), "", "nothing was written");
    let err = r.fails(&["rollback", "account-service", "production"], 1);
    assert!(err.contains(SYMLINK_ERROR), "{err}");
    assert_eq!(r.git(&["log", "--format=%H %s"]), before, "nothing was committed");

    // The worktree reader says the same, where it used to read through the link.
    for args in [&["validate"][..], &["tracks"], &["render"]] {
        let err = r.fails(args, 1);
        assert!(err.contains(SYMLINK_ERROR), "cohort {args:?}: {err}");
    }
}

#[test]
fn a_fifo_in_services_fails_validate_at_once_instead_of_hanging() {
    let r = Repo::init();
    let fifo = r.dir.join("services/pipe.yaml");
    let made = run_within(
        &r.dir,
        "mkfifo",
        &[fifo.to_str().expect("utf-8")],
        Duration::from_secs(10),
    );
    assert!(made.status.success(), "{}", text(&made));
    let started = Instant::now();
    let err = r.fails(&["validate"], 1);
    assert!(
        err.contains(
            "services/pipe.yaml:1:1: error: services/pipe.yaml is a named pipe (FIFO); cohort reads only regular files"
        ),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_fifo_in_place_of_the_state_file_makes_deploy_fail_at_once_instead_of_hanging() {
    let r = Repo::init();
    let before = r.head();
    let state = r.dir.join("releases/account-service.yaml");
    std::fs::remove_file(&state).expect("rm");
    let made = run_within(
        &r.dir,
        "mkfifo",
        &[state.to_str().expect("utf-8")],
        Duration::from_secs(10),
    );
    assert!(made.status.success(), "{}", text(&made));
    // Git cannot hold a pipe, so it is an uncommitted edit of the state file: refused as
    // one, without opening it.
    let err = r.fails(&["deploy", "account-service", "1.19.0"], 1);
    assert!(
        err.contains("uncommitted changes to releases/account-service.yaml"),
        "{err}"
    );
    assert_eq!(r.head(), before);
}

#[test]
fn a_symlink_to_dev_zero_is_refused_without_reading_it() {
    let r = Repo::init();
    std::os::unix::fs::symlink("/dev/zero", r.dir.join("services/zero.yaml")).expect("symlink");
    let err = r.fails(&["validate"], 1);
    assert!(
        err.contains("services/zero.yaml is a symbolic link; cohort reads only regular files"),
        "{err}"
    );
    // Committed, the git reader refuses it as well (it is a link there too, not a device).
    r.git(&["add", "services/zero.yaml"]);
    r.git(&["commit", "-qm", "zero"]);
    let before = r.head();
    let err = r.fails(&["deploy", "account-service", "1.19.0"], 1);
    assert!(
        err.contains("services/zero.yaml is a symbolic link; cohort reads only regular files"),
        "{err}"
    );
    assert_eq!(r.head(), before);
}

#[test]
fn an_oversize_file_is_refused_by_both_readers_naming_the_limit() {
    let r = Repo::init();
    let path = r.dir.join("services/account-service.yaml");
    let mut spec = std::fs::read_to_string(&path).expect("read");
    // Still a valid spec: the padding is a YAML comment.
    spec.push('#');
    let limit = 1 << 20;
    spec.push_str(&"x".repeat(limit + 1 - spec.len()));
    spec.push('\n');
    std::fs::write(&path, &spec).expect("write");
    let size = spec.len();
    let expected = format!(
        "services/account-service.yaml is {size} bytes; cohort reads files of at most 1048576 bytes (1 MiB, MAX_FILE_BYTES)"
    );
    let err = r.fails(&["validate"], 1);
    assert!(err.contains(&expected), "{err}");
    r.git(&["commit", "-qam", "a large spec"]);
    let before = r.head();
    let err = r.fails(&["deploy", "account-service", "1.19.0"], 1);
    assert!(err.contains(&expected), "{err}");
    assert_eq!(r.head(), before);
}

#[test]
fn a_submodule_in_services_is_reported_by_the_git_reader_not_skipped() {
    let r = Repo::init();
    let head = r.head();
    // A gitlink as `git submodule add` leaves one, without fetching anything.
    r.git(&[
        "update-index",
        "--add",
        "--cacheinfo",
        &format!("160000,{head},services/vendored.yaml"),
    ]);
    r.git(&["commit", "-qm", "a submodule among the specs"]);
    let before = r.head();
    let err = r.fails(&["deploy", "account-service", "1.19.0"], 1);
    assert!(
        err.contains("services/vendored.yaml is a git submodule (gitlink); cohort reads only regular files"),
        "{err}"
    );
    assert_eq!(r.head(), before);
}

#[test]
fn render_out_replaces_a_symlink_in_the_directory_instead_of_writing_through_it() {
    let r = Repo::init();
    let out = r.top.join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let victim = r.top.join("victim.txt");
    std::fs::write(&victim, "not cohort's\n").expect("write");
    std::os::unix::fs::symlink(&victim, out.join("account-service.yaml")).expect("symlink");

    let o = r.cohort(&["render", "--out", out.to_str().expect("utf-8")]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        std::fs::read_to_string(&victim).expect("read") == "not cohort's\n",
        "render wrote through the link into the file it points to"
    );
    let written = out.join("account-service.yaml");
    assert!(
        std::fs::symlink_metadata(&written)
            .expect("stat")
            .file_type()
            .is_file(),
        "the link itself was replaced by the rendered file"
    );
    let rendered = r.cohort(&["render"]);
    assert_eq!(
        std::fs::read(&written).expect("read"),
        rendered.stdout,
        "{}",
        text(&rendered)
    );
    // Nothing but the rendered file is left behind in the directory.
    let names: Vec<String> = std::fs::read_dir(&out)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["account-service.yaml"]);
}

#[test]
fn serve_serves_a_head_with_a_symlinked_state_file_as_invalid_with_the_problem() {
    use cohort_agent::Source;
    use cohort_agent::source::{ControlSource, Polled};
    let r = Repo::init();
    r.commit_symlinked_state();
    std::fs::write(
        r.top.join("tokens.yaml"),
        format!("fleet_token: {FLEET}\nclusters:\n  eu-west:\n    token: {EU}\n"),
    )
    .expect("tokens");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tokens", "tokens.yaml"])
        .args(["--git", "repo", "--mirror-dir", "mirror"])
        .current_dir(&r.top)
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let stderr = serve.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut said = vec![];
    let url = loop {
        let line = match lines_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = serve.kill();
                let _ = serve.wait();
                panic!("serve did not start; it said {said:?}");
            }
        };
        if let Some(rest) = line.split("control API on ").nth(1) {
            break rest.split_whitespace().next().unwrap_or_default().to_string();
        }
        said.push(line);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut agent = ControlSource::new(&url, "eu-west", EU, None).expect("client");
    let polled = runtime.block_on(agent.poll());
    let _ = serve.kill();
    let _ = serve.wait();
    let state = match polled.expect("poll") {
        Polled::Changed(state) => state,
        Polled::Unchanged => panic!("the first poll brings the state"),
    };
    assert_eq!(state.revision, r.head());
    assert!(
        state.services.is_empty(),
        "an invalid revision carries no objects, never fewer of them: {:?}",
        state.services.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    assert_eq!(state.problems, [SYMLINK_ERROR], "{state:?}");
    assert!(
        said.iter()
            .any(|l| l.starts_with("warning: ") && l.contains("is a symbolic link")),
        "serve warns at start: {said:?}"
    );
}

//! End-to-end tests: the real `cohort` binary in temporary git repositories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Repo {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

fn cohort_in(dir: &Path, args: &[&str], date: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cohort"));
    cmd.args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Release Bot")
        .env("GIT_AUTHOR_EMAIL", "bot@example.com")
        .env("GIT_COMMITTER_NAME", "Release Bot")
        .env("GIT_COMMITTER_EMAIL", "bot@example.com")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("COHORT_REPO");
    if let Some(d) = date {
        cmd.env("GIT_COMMITTER_DATE", d).env("GIT_AUTHOR_DATE", d);
    }
    cmd.output().expect("cohort runs")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs");
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `git commit` by a test identity: of what is staged, or with `-a` of every tracked file's edits.
fn commit(dir: &Path, all: bool, message: &str) {
    let flags = if all { "-qam" } else { "-qm" };
    git(
        dir,
        &[
            "-c",
            "user.name=Ops",
            "-c",
            "user.email=ops@example.com",
            "commit",
            flags,
            message,
        ],
    );
}

impl Repo {
    fn init() -> Repo {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("releases");
        let o = cohort_in(tmp.path(), &["init", "releases"], None);
        assert!(o.status.success(), "{}", text(&o));
        Repo { _tmp: tmp, dir }
    }

    fn run(&self, args: &[&str]) -> Output {
        cohort_in(&self.dir, args, None)
    }

    fn run_at(&self, date: &str, args: &[&str]) -> Output {
        cohort_in(&self.dir, args, Some(date))
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "cohort {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn fails(&self, args: &[&str], code: i32) -> String {
        let o = self.run(args);
        assert_eq!(o.status.code(), Some(code), "cohort {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    fn tracks(&self) -> serde_json::Value {
        let out = self.ok(&["tracks", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        v[0]["tracks"].clone()
    }

    fn edit(&self, file: &str, from: &str, to: &str) {
        let path = self.dir.join(file);
        let before = std::fs::read_to_string(&path).expect("read");
        assert!(before.contains(from), "{file} has no `{from}`");
        std::fs::write(&path, before.replacen(from, to, 1)).expect("write");
    }

    fn clean(&self) {
        assert_eq!(
            git(&self.dir, &["status", "--porcelain"]),
            "",
            "the worktree is clean after every change"
        );
    }
}

fn days_ago(days: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    format!("@{} +0000", now - days * 86_400)
}

#[test]
fn init_deploy_promote_three_times_rollback_history() {
    let r = Repo::init();
    r.clean();
    assert_eq!(git(&r.dir, &["rev-list", "--count", "HEAD"]).trim(), "1");
    r.ok(&["validate"]);

    // CI deploys a build three days ago and records its integration tests.
    let out = String::from_utf8_lossy(
        &r.run_at(&days_ago(3), &["deploy", "account-service", "1.19.0"])
            .stdout,
    )
    .into_owned();
    assert!(
        out.starts_with("deploy account-service 1.19.0 to internal (was 1.18.0)"),
        "{out}"
    );
    let o = r.run_at(
        &days_ago(3),
        &[
            "approve",
            "account-service",
            "1.19.0",
            "--check",
            "integration-tests",
            "--note",
            "ci #42",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    r.clean();

    // internal → canary (the gate wants integration-tests: recorded).
    let o = r.run_at(&days_ago(2), &["promote", "account-service"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("promote account-service 1.19.0: internal → canary")
    );
    // canary → paid (the gate wants 1h on canary: it has been two days).
    let o = r.run_at(&days_ago(1), &["promote", "account-service"]);
    assert!(o.status.success(), "{}", text(&o));
    // paid → production wants 24h on paid and `qa`: refused with both reasons, nothing written.
    let head = git(&r.dir, &["rev-parse", "HEAD"]);
    let err = r.fails(&["promote", "account-service"], 1);
    assert!(err.contains("check `qa` has not been recorded"), "{err}");
    assert_eq!(
        git(&r.dir, &["rev-parse", "HEAD"]),
        head,
        "a refused promote commits nothing"
    );
    r.ok(&["approve", "account-service", "1.19.0", "--check", "qa"]);
    let out = r.ok(&["promote", "account-service"]);
    assert!(
        out.starts_with("promote account-service 1.19.0: paid → production"),
        "{out}"
    );
    assert_eq!(
        r.tracks(),
        serde_json::json!({"internal": "1.19.0", "canary": "1.19.0", "paid": "1.19.0", "production": "1.19.0"})
    );
    r.fails(&["promote", "account-service"], 1);

    // Production misbehaves: back to what it ran before.
    let out = r.ok(&[
        "rollback",
        "account-service",
        "production",
        "--reason",
        "error rate up",
    ]);
    assert!(
        out.starts_with("rollback account-service production: 1.19.0 → 1.15.0"),
        "{out}"
    );
    assert_eq!(r.tracks()["production"], "1.15.0");
    r.clean();

    // One commit per change, each with a readable subject and machine-readable trailers.
    assert_eq!(git(&r.dir, &["rev-list", "--count", "HEAD"]).trim(), "8");
    let last = git(&r.dir, &["log", "-1", "--format=%B"]);
    for trailer in [
        "Cohort-Action: rollback",
        "Cohort-Service: account-service",
        "Cohort-Track: production",
        "Cohort-From: 1.19.0",
        "Cohort-To: 1.15.0",
        "Cohort-Reason: error rate up",
    ] {
        assert!(last.contains(trailer), "{trailer} in\n{last}");
    }
    let trailers = git(
        &r.dir,
        &["log", "-1", "--format=%(trailers:key=Cohort-Action,valueonly)"],
    );
    assert_eq!(trailers.trim(), "rollback", "git itself reads the trailers");

    let history: serde_json::Value =
        serde_json::from_str(&r.ok(&["history", "account-service", "-o", "json"])).expect("json");
    let actions: Vec<&str> = history
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "rollback", "promote", "approve", "promote", "promote", "approve", "deploy", "init", "init",
            "init", "init"
        ]
    );
    assert_eq!(history[0]["author"], "Release Bot <bot@example.com>");
    assert_eq!(history[0]["from"], "1.19.0");
    assert_eq!(history[0]["to"], "1.15.0");
    let table = r.ok(&["history", "--track", "production"]);
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|h| h.starts_with("TIME") && h.contains("ACTION")),
        "{table}"
    );
    assert_eq!(
        table.lines().count(),
        4,
        "header, rollback, promote, init:\n{table}"
    );

    // Rolling back to a version the track never ran is refused; one it ran is fine.
    let err = r.fails(&["rollback", "account-service", "production", "--to", "1.0.0"], 1);
    assert!(err.contains("never ran 1.0.0"), "{err}");
    r.ok(&["rollback", "account-service", "production", "--to", "1.19.0"]);
}

#[test]
fn a_forced_promotion_records_why() {
    let r = Repo::init();
    r.fails(&["promote", "account-service", "--force"], 2);
    let out = r.ok(&[
        "promote",
        "account-service",
        "--to",
        "canary",
        "--force",
        "--reason",
        "hotfix for INC-7",
    ]);
    assert!(out.contains("gate overridden: hotfix for INC-7"), "{out}");
    let msg = git(&r.dir, &["log", "-1", "--format=%B"]);
    assert!(
        msg.contains("Cohort-Forced: true") && msg.contains("Cohort-Reason: hotfix for INC-7"),
        "{msg}"
    );
}

#[test]
fn changes_are_refused_with_a_clear_message() {
    let r = Repo::init();
    // The same version again.
    let err = r.fails(&["deploy", "account-service", "1.18.0"], 1);
    assert!(err.contains("already runs 1.18.0"), "{err}");
    // A bad version string is a usage error.
    let err = r.fails(&["deploy", "account-service", "1.19.0+build"], 2);
    assert!(err.contains("version `1.19.0+build`"), "{err}");
    // Unknown service and track.
    let err = r.fails(&["deploy", "ghost", "1.0.0"], 2);
    assert!(err.contains("no service `ghost`"), "{err}");
    let err = r.fails(&["rollback", "account-service", "staging"], 2);
    assert!(err.contains("`staging` is not a stage"), "{err}");
    // Hand edits to the state file are never overwritten.
    r.edit("releases/account-service.yaml", "1.18.0", "1.18.1");
    let err = r.fails(&["deploy", "account-service", "1.19.0"], 1);
    assert!(
        err.contains("uncommitted changes to releases/account-service.yaml"),
        "{err}"
    );
    assert!(
        std::fs::read_to_string(r.dir.join("releases/account-service.yaml"))
            .expect("read")
            .contains("1.18.1")
    );
    git(&r.dir, &["checkout", "--", "releases"]);
    // Staged edits count too.
    r.edit("releases/account-service.yaml", "1.18.0", "1.18.1");
    git(&r.dir, &["add", "releases"]);
    r.fails(&["deploy", "account-service", "1.19.0"], 1);
    git(&r.dir, &["reset", "-q", "--hard"]);
    // Another cohort process holds the lock.
    let lock = PathBuf::from(git(&r.dir, &["rev-parse", "--git-common-dir"]).trim()).join("cohort.lock");
    let lock = if lock.is_absolute() {
        lock
    } else {
        r.dir.join(lock)
    };
    std::fs::write(&lock, "12345\n").expect("lock");
    let err = r.fails(&["deploy", "account-service", "1.19.0"], 1);
    assert!(err.contains("another cohort process (pid 12345)"), "{err}");
    std::fs::remove_file(&lock).expect("unlock");
    r.ok(&["deploy", "account-service", "1.19.0"]);
    r.clean();
}

#[test]
fn validate_reports_each_error_with_file_line_col() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "cohort.yaml",
            "namespace: shop",
            "namespace: shop\nnamespce: typo",
            "cohort.yaml:6:1: error: unknown key `namespce`",
        ),
        (
            "cohort.yaml",
            "    canary: 5%\n    production: 95%",
            "    canery: 5%\n    production: 95%",
            "cohort.yaml:20:5: error: the route of cohort `FREE` sends traffic to `canery`, which is not a track",
        ),
        (
            "cohort.yaml",
            "  production: 95%\n\n",
            "  production: 90%\n\n",
            "cohort.yaml:27:3: error: `default_route`: the weights add up to 95%, not 100%",
        ),
        (
            "releases/account-service.yaml",
            "\"1.18.0\"",
            "1.18.0+b1",
            "releases/account-service.yaml:6:13: error: the version `1.18.0+b1` may only contain",
        ),
        (
            "cohort.yaml",
            "[internal, canary, paid, production]",
            "[internal, canary, canary, paid, production]",
            "cohort.yaml:12:28: error: stage `canary` is listed twice",
        ),
        (
            "cohort.yaml",
            "172.16.0.0/12",
            "172.16.0.0/40",
            "cohort.yaml:38:5: error: trusted peer `172.16.0.0/40` is not a CIDR",
        ),
        (
            "services/account-service.yaml",
            "name: account-service",
            "name: account-service-with-a-very-long-name-that-kubernetes-refuses",
            "services/account-service.yaml:2:7: error: the service is named",
        ),
    ];
    for (file, from, to, expected) in cases {
        let r = Repo::init();
        r.edit(file, from, to);
        let err = r.fails(&["validate"], 1);
        assert!(err.contains(expected), "expected `{expected}` in:\n{err}");
        assert!(err.contains("help: "), "every error says how to fix it:\n{err}");
        let json: serde_json::Value = serde_json::from_str(&String::from_utf8_lossy(
            &r.run(&["validate", "-o", "json"]).stdout,
        ))
        .expect("json");
        assert_eq!(json["valid"], false);
        assert!(
            json["diagnostics"][0]["pos"]["line"]
                .as_u64()
                .is_some_and(|l| l > 0)
        );
    }
}

#[test]
fn validate_reports_every_problem_at_once() {
    let r = Repo::init();
    r.edit("cohort.yaml", "namespace: shop", "namespace: Shop");
    r.edit("cohort.yaml", "canary: 5%", "canary: 6%");
    r.edit("cohort.yaml", "10.0.0.0/8", "ten/8");
    r.edit("services/account-service.yaml", "port: 8080", "port: eighty");
    let err = r.fails(&["validate"], 1);
    for expected in [
        "cohort.yaml:5:12",
        "cohort.yaml:20:5",
        "cohort.yaml:37:5",
        "services/account-service.yaml:7:7",
        "4 errors found",
    ] {
        assert!(err.contains(expected), "expected `{expected}` in:\n{err}");
    }
    // Commands that need a valid repo refuse with the same list.
    let err = r.fails(&["render"], 1);
    assert!(err.contains("4 errors in the release repo"), "{err}");
}

#[test]
fn render_is_deterministic_and_writes_files() {
    let r = Repo::init();
    let a = r.ok(&["render"]);
    let b = r.ok(&["render", "account-service", "-o", "yaml"]);
    assert_eq!(a, b);
    assert!(a.contains("name: account-service-internal-v1-18-0"));
    let json: serde_json::Value = serde_json::from_str(&r.ok(&["render", "-o", "json"])).expect("json");
    assert_eq!(json["kind"], "List");
    assert_eq!(json["items"].as_array().map(Vec::len), Some(16));
    let out = r.dir.join("out");
    r.ok(&["render", "--out", out.to_str().expect("utf-8")]);
    assert_eq!(
        std::fs::read_to_string(out.join("account-service.yaml")).expect("written"),
        a
    );
    let cfg = r.ok(&["render", "--format", "haproxy", "account-service"]);
    assert!(
        cfg.contains("acl is_internal hdr(X-Traffic-Group) -m str -i INTERNAL"),
        "{cfg}"
    );
    r.fails(&["render", "--format", "haproxy"], 2);
    r.fails(&["render", "ghost"], 2);
}

#[test]
fn outside_a_release_repo_the_error_says_what_to_do() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = cohort_in(tmp.path(), &["deploy", "account-service", "1.0.0"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cohort init"),
        "{}",
        text(&o)
    );
    let o = cohort_in(tmp.path(), &["validate"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("there is no cohort.yaml here"),
        "{}",
        text(&o)
    );
    let o = cohort_in(tmp.path(), &["init"], None);
    assert!(o.status.success(), "{}", text(&o));
    let o = cohort_in(tmp.path(), &["init"], None);
    assert_eq!(o.status.code(), Some(2), "init refuses an existing repo");
}

#[test]
fn completions_and_version() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for shell in ["bash", "zsh", "fish"] {
        let o = cohort_in(tmp.path(), &["completions", shell], None);
        assert!(
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("promote"),
            "{}",
            text(&o)
        );
    }
    let o = cohort_in(tmp.path(), &["--version"], None);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        concat!("cohort ", env!("CARGO_PKG_VERSION"))
    );
    let o = cohort_in(tmp.path(), &["frobnicate"], None);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_release_repo_inside_a_larger_repository_works_from_any_subdirectory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mono = tmp.path().join("mono");
    std::fs::create_dir_all(mono.join("app")).expect("mkdir");
    git(&mono, &["init", "-q", "-b", "main"]);
    std::fs::write(mono.join("app/main.rs"), "fn main() {}\n").expect("write");
    git(&mono, &["add", "."]);
    commit(&mono, false, "app");
    let o = cohort_in(&mono, &["init", "deploy"], None);
    assert!(o.status.success(), "{}", text(&o));
    let o = cohort_in(
        &mono.join("deploy/services"),
        &["deploy", "account-service", "1.19.0"],
        None,
    );
    assert!(o.status.success(), "{}", text(&o));
    let changed = git(&mono, &["show", "--name-only", "--format=", "HEAD"]);
    assert_eq!(changed.trim(), "deploy/releases/account-service.yaml");
    assert_eq!(git(&mono, &["status", "--porcelain"]), "");
    let o = cohort_in(&mono.join("deploy"), &["tracks", "-o", "json"], None);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("\"internal\": \"1.19.0\""),
        "{}",
        text(&o)
    );
}

#[test]
fn rendering_several_services_is_one_stream_of_each_service_in_name_order() {
    let r = Repo::init();
    let spec = std::fs::read_to_string(r.dir.join("services/account-service.yaml")).expect("read");
    std::fs::write(
        r.dir.join("services/billing.yaml"),
        spec.replace("account-service", "billing"),
    )
    .expect("write");
    std::fs::write(
        r.dir.join("releases/billing.yaml"),
        "service: billing\ntracks:\n  internal: 2.0.0\n  canary: 2.0.0\n  paid: 2.0.0\n  production: 2.0.0\n",
    )
    .expect("write");
    let all = r.ok(&["render"]);
    let account = r.ok(&["render", "account-service"]);
    let billing = r.ok(&["render", "billing"]);
    assert_eq!(all, format!("{account}---\n{billing}"));
    let json: serde_json::Value = serde_json::from_str(&r.ok(&["render", "-o", "json"])).expect("json");
    assert_eq!(json["items"].as_array().map(Vec::len), Some(32));
    let out = r.dir.join("out");
    r.ok(&["render", "-o", "json", "--out", out.to_str().expect("utf-8")]);
    assert!(out.join("account-service.json").is_file() && out.join("billing.json").is_file());
}

/// Regression: uncommitted edits to cohort.yaml opened a gate, and a committed state was
/// checked against specs that were never committed.
#[test]
fn changes_are_checked_against_the_committed_specs_not_the_worktree() {
    let r = Repo::init();
    r.ok(&["deploy", "account-service", "1.19.0"]);
    r.edit("cohort.yaml", "checks: [integration-tests]", "checks: []");
    let err = r.fails(&["promote", "account-service"], 1);
    assert!(
        err.contains("check `integration-tests` has not been recorded"),
        "{err}"
    );
    git(&r.dir, &["checkout", "--", "cohort.yaml"]);

    r.edit("cohort.yaml", "stages: [internal,", "stages: [dev, internal,");
    r.edit(
        "cohort.yaml",
        "  INTERNAL:\n    internal: 100%",
        "  INTERNAL:\n    dev: 100%",
    );
    let err = r.fails(&["rollback", "account-service", "dev"], 2);
    assert!(err.contains("`dev` is not a stage"), "{err}");
    git(&r.dir, &["checkout", "--", "cohort.yaml"]);

    let spec = std::fs::read_to_string(r.dir.join("services/account-service.yaml")).expect("read");
    std::fs::write(
        r.dir.join("services/billing.yaml"),
        spec.replace("account-service", "billing"),
    )
    .expect("write");
    let err = r.fails(&["deploy", "billing", "1.0.0"], 2);
    assert!(
        err.contains("services/billing.yaml is not committed yet"),
        "{err}"
    );
    git(&r.dir, &["add", "services/billing.yaml"]);
    commit(&r.dir, false, "add billing");
    r.ok(&["deploy", "billing", "1.0.0"]);
    r.clean();
}

/// Regression: a second rollback went forward again to the build the first one rolled back from.
#[test]
fn a_second_rollback_goes_further_back() {
    let r = Repo::init();
    r.ok(&["deploy", "account-service", "1.19.0"]);
    r.ok(&["deploy", "account-service", "1.20.0"]);
    let out = r.ok(&["rollback", "account-service", "internal"]);
    assert!(
        out.starts_with("rollback account-service internal: 1.20.0 → 1.19.0"),
        "{out}"
    );
    let out = r.ok(&["rollback", "account-service", "internal"]);
    assert!(
        out.starts_with("rollback account-service internal: 1.19.0 → 1.18.0"),
        "{out}"
    );
    let err = r.fails(&["rollback", "account-service", "internal"], 1);
    assert!(
        err.contains("no version of account-service internal before 1.18.0"),
        "{err}"
    );
}

#[test]
fn status_watch_takes_its_channels_from_cohort_yaml_and_checks_their_secrets_first() {
    let repo = Repo::init();
    let path = repo.dir.join("cohort.yaml");
    let mut config = std::fs::read_to_string(&path).expect("read");
    config.push_str("\nnotifications:\n  slack:\n    webhook_env: COHORT_TEST_UNSET_WEBHOOK\n");
    std::fs::write(&path, config).expect("write");
    commit(&repo.dir, true, "notify");
    repo.ok(&["validate"]);

    // The channel cohort.yaml names is checked before anything else: its secret is missing.
    let missing = repo.dir.join("no-such-kubeconfig");
    let args = [
        "status",
        "--watch",
        "--kubeconfig",
        missing.to_str().expect("utf-8"),
    ];
    let err = repo.fails(&args, 2);
    assert!(err.contains("COHORT_TEST_UNSET_WEBHOOK"), "{err}");

    // A flag replaces that channel: its secret is there, so cohort goes on to the cluster
    // (whose kubeconfig is missing).
    let mut with_flag = args.to_vec();
    with_flag.extend(["--slack-webhook-env", "COHORT_TEST_WEBHOOK"]);
    let o = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(&with_flag)
        .current_dir(&repo.dir)
        .env("COHORT_TEST_WEBHOOK", "http://127.0.0.1:9/hook")
        .env_remove("COHORT_TEST_UNSET_WEBHOOK")
        .output()
        .expect("cohort");
    let err = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.contains("COHORT_TEST_UNSET_WEBHOOK"), "{err}");
    assert!(err.contains("no-such-kubeconfig"), "{err}");
}

#[test]
fn apply_and_diff_refuse_an_invalid_repo_or_another_namespace_before_any_cluster_call() {
    let repo = Repo::init();
    // Exit 1 means "not ready" or "differences" for these commands: their refusals are 2.
    let missing = repo.dir.join("no-such-kubeconfig");
    let kubeconfig = missing.to_str().expect("utf-8");
    let err = repo.fails(&["apply", "-n", "elsewhere", "--kubeconfig", kubeconfig], 2);
    assert!(
        err.contains("-n elsewhere: the release repo puts its services in namespace shop"),
        "{err}"
    );
    // What is applied is what is committed: an edit not yet committed is left out, and said so.
    repo.edit("cohort.yaml", "namespace: shop", "namespace: elsewhere");
    let err = repo.fails(&["diff", "--kubeconfig", kubeconfig], 2);
    assert!(
        err.contains("note: not committed, so not used: cohort.yaml"),
        "{err}"
    );
    assert!(err.contains("no-such-kubeconfig"), "{err}");
    repo.edit(
        "cohort.yaml",
        "namespace: elsewhere",
        "namespace: shop\nnamespce: typo",
    );
    commit(&repo.dir, true, "typo");
    for command in ["apply", "diff"] {
        let err = repo.fails(&[command, "--kubeconfig", kubeconfig], 2);
        assert!(err.contains("unknown key `namespce`"), "{command}: {err}");
        assert!(!err.contains("no-such-kubeconfig"), "{command}: {err}");
    }
}

/// A --reason reached `cohort history` as it was typed: ESC sequences could recolour the
/// terminal or erase the line, a bidi override reverse what follows. Now every cell is shown
/// escaped, as is the change a command prints; `-o json` keeps the recorded text.
#[test]
fn a_reason_with_terminal_escapes_is_shown_escaped_by_history_and_exact_in_json() {
    let r = Repo::init();
    r.ok(&["deploy", "account-service", "1.19.0"]);
    let reason = "\x1b[2K\x1b[1Abad build\x1b[31m \u{202e}dlrow";
    let done = r.ok(&["rollback", "account-service", "internal", "--reason", reason]);
    let controls = |t: &str| {
        t.chars()
            .any(|c| c != '\n' && (c.is_control() || matches!(c, '\u{202a}'..='\u{202e}')))
    };
    assert!(!controls(&done), "{done:?}");
    let shown = r.ok(&["history"]);
    assert!(!controls(&shown), "{shown:?}");
    assert!(
        shown.contains(r"\x1b[2K\x1b[1Abad build\x1b[31m \u{202e}dlrow"),
        "{shown}"
    );
    let json: serde_json::Value = serde_json::from_str(&r.ok(&["history", "-o", "json"])).expect("json");
    assert_eq!(json[0]["action"], "rollback", "{json}");
    assert_eq!(json[0]["reason"], reason, "{json}");
}

#[test]
fn pause_and_freeze_are_commits_with_their_reasons_and_refuse_what_is_already_so() {
    let r = Repo::init();
    let said = r.ok(&["pause", "account-service", "--reason", "db migration"]);
    assert!(said.starts_with("pause account-service ("), "{said}");
    let state = std::fs::read_to_string(r.dir.join("releases/account-service.yaml")).expect("state");
    assert!(state.contains("paused: db migration"), "{state}");
    let refused = r.fails(&["pause", "account-service", "--reason", "again"], 1);
    assert!(refused.contains("account-service is already paused"), "{refused}");
    // A reason is required, and must say something.
    r.fails(&["pause", "account-service"], 2);
    r.fails(&["freeze", "--reason", "  "], 2);

    // Without a service: every service.
    r.ok(&["freeze", "--reason", "black friday"]);
    let state = std::fs::read_to_string(r.dir.join("releases/account-service.yaml")).expect("state");
    assert!(state.contains("frozen: black friday"), "{state}");
    r.ok(&["unfreeze"]);
    let refused = r.fails(&["unfreeze"], 1);
    assert!(refused.contains("nothing to change"), "{refused}");
    r.ok(&["resume", "account-service"]);
    r.clean();
    let history = r.ok(&["history", "-o", "json"]);
    let entries: serde_json::Value = serde_json::from_str(&history).expect("json");
    let actions: Vec<&str> = entries
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions[..4], ["resume", "unfreeze", "freeze", "pause"]);
    let text = r.ok(&["history", "-n", "4"]);
    assert!(
        text.contains("promotions and ramps frozen — black friday"),
        "{text}"
    );
}

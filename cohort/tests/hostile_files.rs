//! Hostile files wherever cohort reads one, driving the real binary.
//!
//! YAML nested thousands of levels deep: a located error from `validate` and the change
//! commands, an invalid revision served by `serve` (which stays up), a reload the router
//! refuses while it keeps serving, a tokens file refused with its place. Each of these aborted
//! the process with a stack overflow (exit 134) before.
//!
//! Files named in flags (the router's config, serve's tokens file): links are followed, as
//! Kubernetes mounts ConfigMaps and Secrets through them, but a named pipe or a device is
//! refused at once and nothing larger than 1 MiB is read. Before, a FIFO hung the router's
//! start (and its reload loop) and serve's start; a link to /dev/zero read until memory ran out.

mod router_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use router_common::{backend, start_router};

/// `cohort serve` of the release repo in `repo/`, with the tokens in `tokens.yaml`, on any port.
const SERVE_REPO: &[&str] = &[
    "-C",
    "repo",
    "serve",
    "--listen",
    "127.0.0.1:0",
    "--tokens",
    "tokens.yaml",
];

const TOKEN: &str = "eu-west-token-0123456789abcdef";

/// A list nested `levels` deep in block style, as `- - - x` on one line.
fn nested_lists(levels: usize) -> String {
    format!("{}x\n", "- ".repeat(levels))
}

/// Mappings nested `levels` deep, each indented one more space (a thousand levels stay under
/// the 1 MiB that cohort reads of a file).
fn nested_mappings(levels: usize) -> String {
    (0..levels)
        .map(|i| format!("{}k{i}:\n", " ".repeat(i + 2)))
        .collect()
}

/// Runs cohort with `args`, killed after 30 s: a hang is a failure, not a stuck test run.
fn cohort(dir: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cohort runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("cohort {args:?} still running after 30 s: {}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
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
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `cohort init repo` in a temp dir.
fn release_repo() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    let init = cohort(tmp.path(), &["init", "repo"]);
    assert!(init.status.success(), "{}", text(&init));
    tmp
}

/// Puts `nested` under the service's `env:` key.
fn nest_env(repo: &Path, nested: &str) {
    let path = repo.join("services/account-service.yaml");
    let spec = std::fs::read_to_string(&path).expect("read");
    assert!(spec.contains("env:\n  LOG_LEVEL: info\n"), "{spec}");
    std::fs::write(
        &path,
        spec.replace("env:\n  LOG_LEVEL: info\n", &format!("env:\n{nested}")),
    )
    .expect("write");
}

fn env_line(repo: &Path) -> usize {
    let spec = std::fs::read_to_string(repo.join("services/account-service.yaml")).expect("read");
    spec.lines().position(|l| l == "env:").expect("env:") + 1
}

#[test]
fn deeply_nested_yaml_in_a_service_file_is_a_located_error_not_a_stack_overflow() {
    for nested in [nested_lists(5_000), nested_mappings(1_000)] {
        let tmp = release_repo();
        let repo = tmp.path().join("repo");
        nest_env(&repo, &nested);
        let out = cohort(&repo, &["validate"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Where the 65th level starts: on the line after `env:` for `- - -`, 64 lines further
        // for mappings.
        let line: usize = stderr
            .strip_prefix("services/account-service.yaml:")
            .and_then(|rest| rest.split(':').next())
            .and_then(|l| l.parse().ok())
            .unwrap_or_else(|| panic!("no located error: {}", text(&out)));
        assert!(line > env_line(&repo), "{}", text(&out));
        assert!(stderr.contains("nest deeper than 64 levels"), "{}", text(&out));

        // A change command refuses the repo the same way and commits nothing.
        git(&repo, &["commit", "-qam", "nested env"]);
        let before = git(&repo, &["rev-parse", "HEAD"]);
        let out = cohort(&repo, &["deploy", "account-service", "1.19.0"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("nest deeper than 64 levels"),
            "{}",
            text(&out)
        );
        assert_eq!(git(&repo, &["rev-parse", "HEAD"]), before, "nothing committed");
    }
}

/// GET `path` from a plain-HTTP server with a bearer token; the status and body.
fn get(addr: &str, path: &str, token: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (
        status,
        out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string(),
    )
}

#[test]
fn serve_serves_a_deeply_nested_commit_as_invalid_and_stays_up() {
    let tmp = release_repo();
    let dir = tmp.path();
    let repo = dir.join("repo");
    std::fs::write(
        dir.join("tokens.yaml"),
        format!("clusters:\n  eu-west:\n    token: {TOKEN}\n"),
    )
    .expect("tokens");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(SERVE_REPO)
        .current_dir(dir)
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let mut lines = BufReader::new(serve.stderr.take().expect("stderr")).lines();
    let first = lines.next().expect("a line").expect("utf-8");
    let addr = first
        .split("control API on http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_string();
    std::thread::spawn(move || for _ in lines {});
    let desired = "/v1/clusters/eu-west/desired-state";
    let (status, body) = get(&addr, desired, TOKEN);
    assert_eq!(status, 200, "{body}");
    let good: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(
        !good["services"].as_array().expect("services").is_empty(),
        "{body}"
    );

    nest_env(&repo, &nested_lists(5_000));
    git(&repo, &["commit", "-qam", "nested env"]);
    let (status, body) = get(&addr, desired, TOKEN);
    assert_eq!(status, 200, "{body}");
    let bad: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(bad["services"], serde_json::json!([]), "{body}");
    let problems = bad["problems"].to_string();
    assert!(
        problems.contains("services/account-service.yaml:")
            && problems.contains("nest deeper than 64 levels"),
        "{body}"
    );
    assert!(
        serve.try_wait().expect("wait").is_none(),
        "serve is still running"
    );
    let _ = serve.kill();
    let _ = serve.wait();

    // Started again on that commit: refused with the place, not killed by the file.
    let again = cohort(dir, SERVE_REPO);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("nest deeper than 64 levels"),
        "{}",
        text(&again)
    );
}

fn http(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (
        status,
        out.rsplit("\r\n\r\n").next().unwrap_or_default().to_string(),
    )
}

/// Waits until the router has refused one more reload than `refused` (which it updates).
fn wait_for_a_refused_reload(admin: SocketAddr, refused: &mut u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = http(admin, "/metrics");
        let now = metrics
            .lines()
            .find(|l| l.starts_with("cohort_router_reloads_total{result=\"rejected\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if now > *refused {
            *refused = now;
            return;
        }
        assert!(Instant::now() < deadline, "no reload refused:\n{metrics}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_deeply_nested_router_config_is_refused_on_reload_and_the_router_keeps_serving() {
    let production = backend("production", 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("router.yaml");
    let good = format!(
        "service: account-service\ntracks:\n  - name: production\n    version: 1.15.0\n    backends: [\"{production}\"]\ndefault_route:\n  weights:\n    - track: production\n      weight: 100%\n"
    );
    std::fs::write(&path, &good).expect("write");
    let mut router = start_router(&["--config".as_ref(), path.as_os_str()]);
    assert_eq!(http(router.traffic, "/"), (200, "production".into()));

    let mut refused = 0;
    for nested in [nested_lists(50_000), nested_mappings(1_000)] {
        std::fs::write(&path, format!("{good}extra:\n{nested}")).expect("write");
        wait_for_a_refused_reload(router.admin, &mut refused);
        assert!(
            router.child.try_wait().expect("wait").is_none(),
            "the router is still running"
        );
        assert_eq!(http(router.traffic, "/"), (200, "production".into()));
        std::fs::write(&path, &good).expect("write");
    }

    // At start, the same file is a located error, not an abort.
    std::fs::write(&path, format!("{good}extra:\n{}", nested_lists(50_000))).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["router", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("router.yaml:11:"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_deeply_nested_tokens_file_is_refused_with_its_place() {
    let tmp = release_repo();
    let dir = tmp.path();
    std::fs::write(
        dir.join("tokens.yaml"),
        format!(
            "clusters:\n  eu-west:\n    token: {TOKEN}\n    labels:\n{}",
            nested_mappings(1_000)
        ),
    )
    .expect("tokens");
    let out = cohort(dir, SERVE_REPO);
    assert_eq!(out.status.code(), Some(2), "a usage error: {}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tokens.yaml") && stderr.contains("nest deeper than 64 levels"),
        "{}",
        text(&out)
    );
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo")
        .success();
    assert!(ok, "mkfifo {}", path.display());
}

#[test]
fn a_fifo_or_dev_zero_as_the_router_config_is_refused_at_once_instead_of_hanging() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("router.yaml");
    mkfifo(&fifo);
    let out = cohort(dir.path(), &["router", "--config", "router.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("cannot use the router config: router.yaml is a named pipe"),
        "{}",
        text(&out)
    );

    let zero = dir.path().join("zero.yaml");
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
    let out = cohort(dir.path(), &["router", "--config", "zero.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("zero.yaml is a character device"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_router_config_swapped_for_a_fifo_is_refused_on_reload_and_the_router_keeps_serving() {
    let production = backend("production", 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let real = dir.path().join("router.real.yaml");
    std::fs::write(
        &real,
        format!(
            "service: account-service\ntracks:\n  - name: production\n    version: 1.15.0\n    backends: [\"{production}\"]\ndefault_route:\n  weights:\n    - track: production\n      weight: 100%\n"
        ),
    )
    .expect("write");
    // As a ConfigMap volume does it: the path is a link, swapped to point elsewhere.
    let path = dir.path().join("router.yaml");
    std::os::unix::fs::symlink(&real, &path).expect("symlink");
    let mut router = start_router(&["--config".as_ref(), path.as_os_str()]);
    assert_eq!(http(router.traffic, "/"), (200, "production".into()));

    let fifo = dir.path().join("pipe");
    mkfifo(&fifo);
    let next = dir.path().join("router.next");
    std::os::unix::fs::symlink(&fifo, &next).expect("symlink");
    std::fs::rename(&next, &path).expect("swap");
    wait_for_a_refused_reload(router.admin, &mut 0);
    assert!(
        router.child.try_wait().expect("wait").is_none(),
        "the router is still running"
    );
    assert_eq!(http(router.traffic, "/"), (200, "production".into()));
    assert_eq!(http(router.admin, "/ready").0, 200);
}

#[test]
fn a_fifo_as_the_tokens_file_is_a_usage_error_at_once_instead_of_a_hang() {
    let dir = tempfile::tempdir().expect("tempdir");
    let init = cohort(dir.path(), &["init", "repo"]);
    assert!(init.status.success(), "{}", text(&init));
    mkfifo(&dir.path().join("tokens.yaml"));
    let out = cohort(dir.path(), SERVE_REPO);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("cannot use the tokens file: tokens.yaml is a named pipe"),
        "{}",
        text(&out)
    );
}

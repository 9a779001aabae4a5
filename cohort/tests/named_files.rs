//! Files named in flags (the router's config, serve's tokens file) are read as hostile input:
//! links are followed, as Kubernetes mounts ConfigMaps and Secrets through them, but a named
//! pipe or a device is refused at once and nothing larger than 1 MiB is read. Before, a FIFO
//! hung the router's start (and its reload loop) and serve's start; a link to /dev/zero read
//! until memory ran out.

mod router_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use router_common::{backend, start_router};

/// Runs cohort with `args`, killed after 20 s: a hang is a failure, not a stuck test run.
fn cohort_within(dir: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cohort runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "cohort {args:?} still running after 20 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo")
        .success();
    assert!(ok, "mkfifo {}", path.display());
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_fifo_or_dev_zero_as_the_router_config_is_refused_at_once_instead_of_hanging() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("router.yaml");
    mkfifo(&fifo);
    let out = cohort_within(dir.path(), &["router", "--config", "router.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot use the router config: router.yaml is a named pipe"),
        "{}",
        stderr(&out)
    );

    let zero = dir.path().join("zero.yaml");
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
    let out = cohort_within(dir.path(), &["router", "--config", "zero.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("zero.yaml is a character device"),
        "{}",
        stderr(&out)
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
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = http(router.admin, "/metrics");
        if metrics
            .lines()
            .any(|l| l.starts_with("cohort_router_reloads_total{result=\"rejected\"}") && !l.ends_with(" 0"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no reload refused:\n{metrics}");
        std::thread::sleep(Duration::from_millis(100));
    }
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
    let init = cohort_within(dir.path(), &["init", "repo"]);
    assert!(init.status.success(), "{}", stderr(&init));
    mkfifo(&dir.path().join("tokens.yaml"));
    let out = cohort_within(
        dir.path(),
        &[
            "-C",
            "repo",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tokens",
            "tokens.yaml",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot use the tokens file: tokens.yaml is a named pipe"),
        "{}",
        stderr(&out)
    );
}

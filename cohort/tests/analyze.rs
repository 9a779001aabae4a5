//! `cohort analyze` and the judgement gate of `cohort promote`, on a real `cohort router`
//! process in front of real loopback backends, read through its admin `/stats`.

mod router_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use router_common::{RouterProcess, backend, start_router};

/// A router config for account-service: FREE goes 20% to canary, 80% to production.
fn config(canary: SocketAddr, production: SocketAddr) -> String {
    format!(
        "service: account-service\ntrusted_peers: [127.0.0.0/8]\ntracks:\n  - name: canary\n    version: 1.17.0\n    backends: [\"{canary}\"]\n  - name: production\n    version: 1.15.0\n    backends: [\"{production}\"]\ncohorts:\n  - cohort: FREE\n    weights:\n      - track: canary\n        weight: 20%\n      - track: production\n        weight: 80%\ndefault_route:\n  weights:\n    - track: production\n      weight: 100%\n"
    )
}

struct Router {
    _process: RouterProcess,
    traffic: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

fn router(canary_fails_every: usize) -> Router {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("router.yaml");
    std::fs::write(
        &path,
        config(backend("canary", canary_fails_every), backend("production", 0)),
    )
    .expect("write");
    let process = start_router(&["--config".as_ref(), path.as_os_str()]);
    Router {
        traffic: process.traffic,
        admin: process.admin,
        _process: process,
        _dir: dir,
    }
}

/// Sends `n` requests of cohort FREE.
fn traffic(addr: SocketAddr, n: usize) {
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        write!(
            s,
            "GET / HTTP/1.1\r\nHost: x\r\nX-Traffic-Group: FREE\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
    }
}

fn cohort(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(args)
        .current_dir(dir)
        .env_remove("COHORT_REPO")
        .env("GIT_AUTHOR_NAME", "Release Bot")
        .env("GIT_AUTHOR_EMAIL", "bot@example.com")
        .env("GIT_COMMITTER_NAME", "Release Bot")
        .env("GIT_COMMITTER_EMAIL", "bot@example.com")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("cohort runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_failing_canary_is_caught_and_low_traffic_is_inconclusive() {
    let outside = tempfile::tempdir().expect("tempdir");
    let bad = router(3);
    traffic(bad.traffic, 1_000);
    let url = format!("http://{}/metrics", bad.admin);
    let args = [
        "analyze",
        "account-service",
        "--track",
        "canary",
        "--metrics-url",
        &url,
        "--window",
        "1m",
    ];
    let failed = cohort(outside.path(), &[&args[..], &["-o", "json"]].concat());
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
    let report: serde_json::Value = serde_json::from_slice(&failed.stdout).expect("json");
    let j = &report["judgement"];
    assert_eq!(j["verdict"], "fail");
    assert_eq!(j["errors"]["worse"], true);
    assert_eq!(j["cohorts"][0], "FREE");
    assert_eq!(report["track"]["version"], "1.17.0");
    assert_eq!(report["baseline"]["version"], "1.15.0");
    let canary = j["track"]["requests"].as_u64().expect("requests");
    assert_eq!(canary, 200, "20% of 1,000, spread evenly");
    // A third fail; the router's health checks also reach the backend and shift the count.
    let errors = j["track"]["errors"].as_u64().expect("errors");
    assert!((canary / 3 - 3..=canary / 3 + 3).contains(&errors), "{errors}");

    let good = router(0);
    traffic(good.traffic, 300);
    let url = format!("http://{}", good.admin);
    // A healthy track fails by chance at most 1 − confidence of the time: rare, here.
    let args = [
        "analyze",
        "account-service",
        "--track",
        "canary",
        "--metrics-url",
        &url,
        "--window",
        "1m",
        "--confidence",
        "0.999",
    ];
    let unsure = cohort(outside.path(), &args);
    let said = text(&unsure);
    assert_eq!(unsure.status.code(), Some(3), "{said}");
    assert!(said.contains("verdict: INCONCLUSIVE — need ~"), "{said}");
    assert!(said.contains("more requests (about "), "{said}");
}

#[test]
fn promote_through_a_judgement_gate_records_the_evidence_or_stays_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let init = cohort(dir.path(), &["init", "releases"]);
    assert!(init.status.success(), "{}", text(&init));
    let repo = dir.path().join("releases");
    let path = repo.join("cohort.yaml");
    let yaml = std::fs::read_to_string(&path).expect("read");
    let yaml = yaml.replace(
        "  paid:\n    min_time_in_previous: 1h\n",
        "  paid:\n    require_judgement: true\n",
    ) + "\njudgement:\n  window: 2m\n  min_error_increase: 5%\n  confidence: 0.999\n";
    assert!(yaml.contains("require_judgement: true"));
    std::fs::write(&path, yaml).expect("write");
    let commit = Command::new("git")
        .args([
            "-c",
            "user.name=Ops",
            "-c",
            "user.email=ops@example.com",
            "commit",
            "-qam",
            "judge paid",
        ])
        .current_dir(&repo)
        .output()
        .expect("git");
    assert!(commit.status.success());

    // A canary that fails a third of its requests does not get in.
    let bad = router(3);
    traffic(bad.traffic, 1_000);
    let url = format!("http://{}", bad.admin);
    let promote = ["promote", "account-service", "--to", "paid"];
    let refused = cohort(&repo, &[&promote[..], &["--metrics-url", &url]].concat());
    let said = text(&refused);
    assert_ne!(refused.status.code(), Some(0), "{said}");
    assert!(said.contains("verdict: FAIL"), "{said}");
    assert!(said.contains("a passing canary judgement is required"), "{said}");

    // A healthy one does (with the settings of cohort.yaml's `judgement:`; the built-in
    // 0.5% would need more traffic), and the commit carries the evidence.
    let good = router(0);
    traffic(good.traffic, 2_000);
    let url = format!("http://{}", good.admin);
    let analyze = [
        "analyze",
        "account-service",
        "--track",
        "canary",
        "--metrics-url",
        &url,
        "-o",
        "json",
    ];
    let window = |extra: &[&str]| {
        let out = cohort(&repo, &[&analyze[..], extra].concat());
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        report["window_seconds"].as_u64()
    };
    assert_eq!(window(&[]), Some(120), "cohort.yaml's judgement.window");
    assert_eq!(
        window(&["--window", "1m"]),
        Some(60),
        "a flag overrides cohort.yaml"
    );
    let promoted = cohort(&repo, &[&promote[..], &["--metrics-url", &url]].concat());
    assert_eq!(promoted.status.code(), Some(0), "{}", text(&promoted));
    let log = Command::new("git")
        .args(["log", "-1", "--format=%B"])
        .current_dir(&repo)
        .output()
        .expect("git log");
    let message = String::from_utf8_lossy(&log.stdout);
    assert!(
        message.starts_with("promote account-service 1.17.0: canary → paid"),
        "{message}"
    );
    assert!(
        message.contains("Canary judgement: pass: canary 1.17.0 against production 1.15.0"),
        "{message}"
    );
    assert!(message.contains("Cohort-Judgement: pass: "), "{message}");
}

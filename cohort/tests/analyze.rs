//! `cohort analyze` and the judgement gate of `cohort promote`, on a real `cohort router`
//! process in front of real loopback backends, read through its admin `/stats`.

mod router_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use router_common::{RouterProcess, backend, canary_config, free_requests, start_router};

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
        canary_config(
            "1.17.0",
            backend("canary", canary_fails_every),
            backend("production", 0),
        ),
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
    free_requests(bad.traffic, 1_000);
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
    free_requests(good.traffic, 300);
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
    free_requests(bad.traffic, 1_000);
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
    free_requests(good.traffic, 3_000);
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

/// A backend that reads a request's whole body (as an application does) before answering
/// with its name.
fn body_reading_backend(name: &'static str) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let head_end = loop {
                    if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at + 4;
                    }
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                    name.len()
                );
            });
        }
    });
    addr
}

/// An untrusted client picks a user id that lands on `paid` and aborts 60 uploads: its
/// failures are its own, and the paid build is judged on what it answered.
#[test]
fn aborted_uploads_by_one_client_do_not_fail_the_paid_track() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("router.yaml");
    let (paid, production) = (body_reading_backend("paid"), body_reading_backend("production"));
    std::fs::write(
        &path,
        format!(
            "service: account-service\ntrusted_peers: [\"10.0.0.0/8\"]\nsticky:\n  header: X-User-Id\ntracks:\n  - name: paid\n    version: 1.16.0\n    backends: [\"{paid}\"]\n  - name: production\n    version: 1.15.0\n    backends: [\"{production}\"]\ndefault_route:\n  weights:\n    - track: paid\n      weight: 20%\n    - track: production\n      weight: 80%\n"
        ),
    )
    .expect("write");
    let r = start_router(&["--config".as_ref(), path.as_os_str()]);
    // Without a user id, requests are spread: a fifth of them to paid.
    for _ in 0..1_000 {
        let mut s = TcpStream::connect(r.traffic).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        write!(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }
    // Paid owns the first 20% of the sticky buckets.
    let user = (0..)
        .map(|i| format!("user-{i}"))
        .find(|u| cohort_router::decide::bucket(u.as_bytes()) < 2_000)
        .expect("a user on paid");
    let uploads: Vec<TcpStream> = (0..60)
        .map(|_| {
            let mut s = TcpStream::connect(r.traffic).expect("connect");
            write!(
                s,
                "POST /upload HTTP/1.1\r\nHost: x\r\nX-User-Id: {user}\r\nContent-Length: 100000\r\n\r\n{}",
                "a".repeat(1_000)
            )
            .expect("write");
            s
        })
        .collect();
    // The router has the uploads on their way to paid; then the client goes away.
    std::thread::sleep(Duration::from_millis(300));
    drop(uploads);
    let counted = "cohort_router_client_errors_total{track=\"paid\",kind=\"aborted\"} 60";
    let mut metrics = String::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(r.admin).expect("connect");
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("write");
        metrics.clear();
        let _ = s.read_to_string(&mut metrics);
        if metrics.contains(counted) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!("http://{}", r.admin);
    let args = [
        "analyze",
        "account-service",
        "--track",
        "paid",
        "--metrics-url",
        &url,
        "--window",
        "1m",
        "-o",
        "json",
    ];
    let judged = cohort(dir.path(), &args);
    let report: serde_json::Value = serde_json::from_slice(&judged.stdout).expect("json");
    let j = &report["judgement"];
    assert_ne!(j["verdict"], "fail", "{}", text(&judged));
    assert_ne!(judged.status.code(), Some(1), "{}", text(&judged));
    assert_eq!(j["track"]["errors"], 0, "{}", text(&judged));
    assert_eq!(j["track"]["requests"], 200, "{}", text(&judged));
    assert!(metrics.contains(counted), "{metrics}");
}

/// A router sending FREE and everybody else to production (`production_fails_every`), with
/// half of FREE's requests copied to internal (`internal_fails_every`).
fn mirroring_router(internal_fails_every: usize) -> Router {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("router.yaml");
    std::fs::write(
        &path,
        format!(
            "service: account-service\ntrusted_peers: [127.0.0.0/8]\ntracks:\n  - name: internal\n    version: 1.20.0\n    backends: [\"{}\"]\n  - name: production\n    version: 1.19.0\n    backends: [\"{}\"]\ncohorts:\n  - cohort: FREE\n    weights:\n      - track: production\n        weight: 100%\ndefault_route:\n  weights:\n    - track: production\n      weight: 100%\nmirrors:\n  - cohort: FREE\n    from: production\n    to: internal\n    share: 50%\n    max_body: 65536\n",
            backend("internal", internal_fails_every),
            backend("production", 0)
        ),
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

#[test]
fn a_build_is_judged_on_mirrored_copies_of_real_requests_before_any_client_sees_its_answers() {
    let outside = tempfile::tempdir().expect("tempdir");
    let bad = mirroring_router(4);
    free_requests(bad.traffic, 1_200);
    // The copies are sent after the answers: let the last ones land.
    std::thread::sleep(Duration::from_millis(500));
    let url = format!("http://{}", bad.admin);
    let args = [
        "analyze",
        "account-service",
        "--track",
        "internal",
        "--mirror",
        "--metrics-url",
        &url,
        "--window",
        "1m",
    ];
    let failed = cohort(outside.path(), &[&args[..], &["-o", "json"]].concat());
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
    let report: serde_json::Value = serde_json::from_slice(&failed.stdout).expect("json");
    assert_eq!(report["track"]["name"], "internal (mirror of production)");
    assert_eq!(report["track"]["version"], "1.20.0");
    assert_eq!(report["baseline"]["name"], "production (mirrored to internal)");
    let j = &report["judgement"];
    assert_eq!(j["verdict"], "fail");
    assert_eq!(j["errors"]["worse"], true);
    // The same 600 requests on both sides.
    assert_eq!(j["track"]["requests"], 600);
    assert_eq!(j["baseline"]["requests"], 600);
    let said = text(&cohort(outside.path(), &args));
    assert!(
        said.contains(
            "internal (mirror of production) (1.20.0) against production (mirrored to internal) (1.19.0)"
        ),
        "{said}"
    );

    let good = mirroring_router(0);
    free_requests(good.traffic, 400);
    std::thread::sleep(Duration::from_millis(500));
    let url = format!("http://{}", good.admin);
    let args = [
        "analyze",
        "account-service",
        "--track",
        "internal",
        "--mirror",
        "--metrics-url",
        &url,
    ];
    let fine = cohort(outside.path(), &args);
    assert_ne!(fine.status.code(), Some(1), "{}", text(&fine));
}

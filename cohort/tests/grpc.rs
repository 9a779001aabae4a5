//! gRPC through the real `cohort router`: real gRPC servers (grpcio) as tracks and a real
//! gRPC client, in every shape a call takes (unary, server and client streaming, both ways,
//! messages far beyond HTTP/2's flow-control window), routed by the cohort in the call's
//! metadata, with the split counted at the servers, and each call's status counted as the
//! track's error only when it says the server failed. Skipped, saying so, without python3 and
//! grpcio (`python3 -m pip install grpcio`).
#![allow(clippy::disallowed_macros)]

mod router_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use router_common::start_router;
use serde_json::Value;

const TRACK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc/track.py");
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc/client.py");

fn have_grpcio() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import grpc"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        println!("SKIPPED: python3 with grpcio is needed (python3 -m pip install grpcio)");
    }
    found
}

/// A gRPC server answering as track `name`, stopped when dropped.
struct Track {
    child: Child,
    addr: SocketAddr,
}

impl Track {
    fn start(name: &str, health: bool) -> Track {
        let mut cmd = Command::new("python3");
        cmd.arg(TRACK).arg(name);
        if health {
            cmd.arg("--health");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the port");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("a port, not {line:?}"));
        Track {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Drop for Track {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the client's `scenario` against `addr` and returns what it printed.
fn client(addr: SocketAddr, scenario: &str, arg: &str) -> Value {
    let out = Command::new("python3")
        .arg(CLIENT)
        .arg(addr.to_string())
        .arg(scenario)
        .arg(arg)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "client {scenario} {arg}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("client {scenario}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn admin(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// The value of the metric line starting with `prefix` (0 when absent).
fn metric(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// (requests, errors) of `track` for `cohort` in the router's window.
fn window(admin_addr: SocketAddr, track: &str, cohort: &str) -> (u64, u64) {
    let stats: Value = serde_json::from_str(&admin(admin_addr, "/stats")).expect("stats json");
    stats["series"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["track"] == track && s["cohort"] == cohort)
        .fold((0, 0), |(r, e), s| {
            (
                r + s["requests"].as_u64().unwrap_or(0),
                e + s["errors"].as_u64().unwrap_or(0),
            )
        })
}

#[test]
fn grpc_calls_of_every_shape_are_routed_by_cohort_and_their_statuses_judged() {
    if !have_grpcio() {
        return;
    }
    let internal = Track::start("internal", false);
    let canary = Track::start("canary", false);
    let production = Track::start("production", true);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("router.yaml");
    std::fs::write(
        &config,
        format!(
            "service: greeter\nprotocol: grpc\ntrusted_peers: [127.0.0.0/8]\nhealth_check: {{interval: 500ms}}\ntracks:\n  - name: internal\n    version: 2.1.0\n    backends: [\"{}\"]\n  - name: canary\n    version: 2.0.0\n    backends: [\"{}\"]\n  - name: production\n    version: 1.9.0\n    backends: [\"{}\"]\ncohorts:\n  - cohort: INTERNAL\n    weights:\n      - track: internal\n        weight: 100%\n  - cohort: FREE\n    weights:\n      - track: canary\n        weight: 20%\n      - track: production\n        weight: 80%\ndefault_route:\n  weights:\n    - track: production\n      weight: 100%\n",
            internal.addr, canary.addr, production.addr
        ),
    )
    .expect("write");
    let router = start_router(&["--config".as_ref(), config.as_os_str()]);

    // Unary, routed by the cohort in the call's metadata; the servers see it too.
    let staff = client(router.traffic, "unary", "INTERNAL:20");
    assert_eq!(staff["answers"], serde_json::json!({"internal INTERNAL": 20}));
    let free = client(router.traffic, "unary", "FREE:1000");
    let on = |track: &str| free["answers"][format!("{track} FREE")].as_u64().unwrap_or(0);
    println!("FREE split through the router: {}", free["answers"]);
    assert_eq!(on("canary") + on("production"), 1000);
    // Measured at the servers themselves.
    let at = |t: &Track| {
        client(t.addr, "stats", "")["calls"]["Unary FREE"]
            .as_u64()
            .unwrap_or(0)
    };
    let (at_canary, at_production) = (at(&canary), at(&production));
    println!("FREE at the servers: canary {at_canary}, production {at_production}");
    assert_eq!((at_canary, at_production), (on("canary"), on("production")));
    assert!(
        (195..=205).contains(&at_canary),
        "canary got {at_canary} of 1000, not 20%"
    );

    // Streams both ways, and 3 MiB each way (HTTP/2's window is 64 KiB).
    let streams = client(router.traffic, "streams", "");
    let server_stream = streams["server_stream"].as_array().expect("messages");
    assert_eq!(server_stream.len(), 50);
    assert_eq!(server_stream[49], "production 49");
    assert_eq!(streams["client_stream"], "production 20 20000");
    assert_eq!(streams["bidi"].as_array().map(Vec::len), Some(10));
    assert_eq!(streams["bidi"][9], "production ping 9");
    assert_eq!(streams["big"]["intact"], true, "{}", streams["big"]);

    // Statuses: only the server's failures are the track's errors.
    let before = window(router.admin, "production", "default");
    let asked = "UNAVAILABLE,INTERNAL,UNKNOWN,DEADLINE_EXCEEDED,DATA_LOSS,NOT_FOUND,INVALID_ARGUMENT,PERMISSION_DENIED";
    let statuses = client(router.traffic, "statuses", asked);
    assert_eq!(
        statuses["statuses"],
        serde_json::json!(asked.split(',').collect::<Vec<_>>()),
        "each status reaches the client as the server sent it"
    );
    let after = window(router.admin, "production", "default");
    assert_eq!(after.0 - before.0, 8, "every call counted");
    assert_eq!(after.1 - before.1, 5, "five of them the track's errors");
    let metrics = admin(router.admin, "/metrics");
    for kind in [
        "unavailable",
        "internal",
        "unknown",
        "deadline_exceeded",
        "data_loss",
    ] {
        assert_eq!(
            metric(
                &metrics,
                &format!("cohort_router_upstream_errors_total{{track=\"production\",kind=\"grpc_{kind}\"}}")
            ),
            1.0,
            "grpc_{kind} in:\n{metrics}"
        );
    }

    // A cancelled stream: the server hears of it, and nobody's error is counted.
    let errors_before = window(router.admin, "production", "default").1;
    let cancelled = client(router.traffic, "cancel", "");
    assert_eq!(cancelled["received"], 3);
    assert_eq!(cancelled["status"], "CANCELLED");
    // A deadline that passes: the client gives up, and the server hears of that too.
    let deadline = client(router.traffic, "deadline", "");
    assert_eq!(deadline["status"], "DEADLINE_EXCEEDED");
    let mut heard = 0;
    for _ in 0..50 {
        heard = client(production.addr, "stats", "")["cancelled"]
            .as_u64()
            .unwrap_or(0);
        if heard >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(heard, 2, "the server saw both calls end early");
    let metrics = admin(router.admin, "/metrics");
    assert!(
        metric(
            &metrics,
            "cohort_router_client_errors_total{track=\"production\",kind=\"cancelled\"}"
        ) >= 1.0,
        "{metrics}"
    );
    let errors_after = window(router.admin, "production", "default").1;
    assert!(
        errors_after - errors_before <= 1,
        "a client's cancellation is not the track's error ({} counted)",
        errors_after - errors_before
    );
    // Health checks over HTTP/2: the server with a health service and those without are up.
    for track in ["internal", "canary", "production"] {
        assert!(
            metrics.lines().any(
                |l| l.starts_with(&format!("cohort_router_backend_up{{track=\"{track}\""))
                    && l.ends_with(" 1")
            ),
            "{track} up:\n{metrics}"
        );
    }
}

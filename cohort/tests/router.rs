//! `cohort router` as a process: serves, reloads on SIGHUP (refusing a bad config), drains on SIGTERM.

mod router_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use router_common::{RouterProcess, backend, start_router};

fn config(internal: SocketAddr, production: SocketAddr, production_weight: &str) -> String {
    format!(
        "service: account-service\ntrusted_peers: [127.0.0.0/8]\ntracks:\n  - name: internal\n    version: 1.18.0\n    backends: [\"{internal}\"]\n  - name: production\n    version: 1.15.0\n    backends: [\"{production}\"]\ncohorts:\n  - cohort: INTERNAL\n    weights:\n      - track: internal\n        weight: 100%\ndefault_route:\n  weights:\n    - track: production\n      weight: {production_weight}\n"
    )
}

fn http(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (
        status,
        out.rsplit("\r\n\r\n").next().unwrap_or_default().to_string(),
    )
}

fn start(config_path: &std::path::Path) -> RouterProcess {
    start_with("--config", config_path)
}

fn start_with(flag: &str, config_path: &std::path::Path) -> RouterProcess {
    start_router(&[
        flag.as_ref(),
        config_path.as_os_str(),
        "--drain-delay".as_ref(),
        "300ms".as_ref(),
    ])
}

/// Starts the router with a config it must refuse; returns what it printed.
fn refused_at_start(flag: &str, path: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["router", flag])
        .arg(path)
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(1),
        "an invalid config stops the start with status 1"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok);
}

#[test]
fn serves_reloads_refuses_a_bad_config_and_drains() {
    let (internal, production) = (backend("internal", 0), backend("production", 0));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("router.yaml");
    std::fs::write(&path, config(internal, production, "100%")).expect("write");
    let mut r = start(&path);
    assert_eq!(http(r.admin, "/ready", ""), (200, "ready\n".into()));
    assert_eq!(
        http(r.traffic, "/", "X-Traffic-Group: internal\r\n"),
        (200, "internal".into())
    );
    assert_eq!(http(r.traffic, "/", ""), (200, "production".into()));
    // What `cohort apply` waits for: the digest of the text in force.
    let first = cohort_spec::router_config::digest(config(internal, production, "100%").as_bytes());
    assert_eq!(http(r.admin, "/config-digest", ""), (200, format!("{first}\n")));

    // A bad config is refused and the old one keeps serving, and is still the one reported.
    std::fs::write(&path, config(internal, production, "90%")).expect("write");
    signal(r.child.id(), "-HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(http(r.traffic, "/", ""), (200, "production".into()));
    assert_eq!(http(r.admin, "/config-digest", ""), (200, format!("{first}\n")));

    // A good one takes over: everybody else now goes to the internal build's backend.
    std::fs::write(&path, config(internal, internal, "100%")).expect("write");
    signal(r.child.id(), "-HUP");
    let mut switched = false;
    for _ in 0..50 {
        if http(r.traffic, "/", "").1 == "internal" {
            switched = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(switched, "the reloaded config is in force");
    let second = cohort_spec::router_config::digest(config(internal, internal, "100%").as_bytes());
    assert_ne!(first, second);
    assert_eq!(http(r.admin, "/config-digest", ""), (200, format!("{second}\n")));
    let (status, metrics) = http(r.admin, "/metrics", "");
    assert_eq!(status, 200);
    for family in [
        "cohort_router_requests_total{cohort=\"INTERNAL\",track=\"internal\",class=\"2xx\"} 1",
        "cohort_router_reloads_total{result=\"rejected\"}",
        "cohort_router_reloads_total{result=\"ok\"}",
        "cohort_router_response_seconds_bucket{le=",
        "cohort_router_backend_up{track=\"internal\",backend=",
    ] {
        assert!(metrics.contains(family), "{family} in\n{metrics}");
    }
    let (_, config_json) = http(r.admin, "/config", "");
    assert!(
        config_json.contains("\"service\": \"account-service\""),
        "{config_json}"
    );

    // SIGTERM: not ready at once, still serving during the drain delay, requests in flight
    // finish, then exit 0.
    let traffic = r.traffic;
    let slow = std::thread::spawn(move || http(traffic, "/slow", ""));
    std::thread::sleep(Duration::from_millis(100));
    signal(r.child.id(), "-TERM");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(http(r.admin, "/ready", "").0, 503);
    assert_eq!(http(r.traffic, "/", "").0, 200);
    let status = r.child.wait().expect("exits");
    assert!(status.success(), "{status:?}");
    assert_eq!(
        slow.join().expect("slow request"),
        (200, "internal".into()),
        "the request in flight finished"
    );
    assert!(TcpStream::connect(r.traffic).is_err(), "no longer accepting");
}

/// A router config without `trusted_peers` used to believe the cohort header from everybody:
/// any caller could pick the internal build. Now nobody is trusted unless the config says so.
#[test]
fn a_router_without_trusted_peers_lets_nobody_choose_a_cohort() {
    let (internal, production) = (backend("internal", 0), backend("production", 0));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("router.yaml");
    let trusting = config(internal, production, "100%");
    std::fs::write(&path, trusting.replace("trusted_peers: [127.0.0.0/8]\n", "")).expect("write");
    let r = start(&path);
    assert_eq!(
        http(r.traffic, "/", "X-Traffic-Group: INTERNAL\r\n"),
        (200, "production".into())
    );
    let (_, metrics) = http(r.admin, "/metrics", "");
    assert!(
        metrics.contains("cohort_router_spoofed_cohort_headers_total 1"),
        "{metrics}"
    );
    drop(r);

    // Everybody, written out, is believed as before.
    std::fs::write(&path, trusting.replace("[127.0.0.0/8]", "any")).expect("write");
    let r = start(&path);
    assert_eq!(
        http(r.traffic, "/", "X-Traffic-Group: INTERNAL\r\n"),
        (200, "internal".into())
    );
}

#[test]
fn an_invalid_config_stops_the_start_with_file_line_col() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("router.yaml");
    std::fs::write(
        &path,
        "service: s\ntracks: []\ndefault_route:\n  weights:\n    - track: nowhere\n      weight: 100%\n",
    )
    .expect("write");
    let err = refused_at_start("--config", &path);
    assert!(
        err.contains("router.yaml:5:14: error: `nowhere` is not one of the config's tracks"),
        "{err}"
    );
}

/// Kubernetes updates a ConfigMap volume by pointing the `..data` symlink at a new directory.
#[test]
fn a_configmap_style_symlink_swap_is_picked_up_without_a_signal() {
    let (internal, production) = (backend("internal", 0), backend("production", 0));
    let dir = tempfile::tempdir().expect("tempdir");
    let version = |n: u32, text: String| {
        let v = dir.path().join(format!("..2026_{n}"));
        std::fs::create_dir(&v).expect("mkdir");
        std::fs::write(v.join("router.yaml"), text).expect("write");
        let tmp = dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(format!("..2026_{n}"), &tmp).expect("symlink");
        std::fs::rename(&tmp, dir.path().join("..data")).expect("swap");
    };
    version(1, config(internal, production, "100%"));
    std::os::unix::fs::symlink("..data/router.yaml", dir.path().join("router.yaml")).expect("symlink");
    let r = start(&dir.path().join("router.yaml"));
    assert_eq!(http(r.traffic, "/", "").1, "production");
    version(2, config(internal, internal, "100%"));
    let mut switched = false;
    for _ in 0..60 {
        if http(r.traffic, "/", "").1 == "internal" {
            switched = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(switched, "the swapped config is in force within a few seconds");
}

/// Teams migrate by pointing the router at the haproxy.cfg they run: same routing.
#[test]
fn an_existing_haproxy_cfg_routes_the_same() {
    let (internal, production) = (backend("internal", 0), backend("production", 0));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("haproxy.cfg");
    let cfg = format!(
        "global\n    log stdout format raw local0\n\ndefaults\n    mode http\n    timeout connect 5s\n\nfrontend account-service\n    bind *:8080\n    acl trusted_peer src 127.0.0.0/8\n    http-request del-header X-Traffic-Group if !trusted_peer\n    acl is_internal hdr(X-Traffic-Group) -m str -i INTERNAL\n    use_backend internal if is_internal\n    default_backend everyone\n\nbackend internal\n    balance roundrobin\n    server internal {internal} check inter 2000\n\nbackend everyone\n    balance roundrobin\n    server production {production} resolvers dns check inter 2000 weight 100\n"
    );
    std::fs::write(&path, &cfg).expect("write");
    let r = start_with("--haproxy-config", &path);
    assert_eq!(
        http(r.traffic, "/", "X-Traffic-Group: INTERNAL\r\n"),
        (200, "internal".into())
    );
    assert_eq!(http(r.traffic, "/", ""), (200, "production".into()));

    let bad = cfg.replace(
        "    default_backend everyone",
        "    http-request set-path /other\n    default_backend everyone",
    );
    std::fs::write(&path, bad).expect("write");
    let err = refused_at_start("--haproxy-config", &path);
    assert!(
        err.contains("haproxy.cfg:14:5: error: `http-request` may change routing"),
        "{err}"
    );
}

/// Draining as Kubernetes does it: SIGTERM arrives while traffic flows; traffic keeps coming
/// for a while (endpoints take time to update), then stops before the drain delay is over.
/// No request fails, and the router exits 0.
#[test]
fn sigterm_under_load_loses_no_accepted_request() {
    let (internal, production) = (backend("internal", 0), backend("production", 0));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("router.yaml");
    std::fs::write(&path, config(internal, production, "100%")).expect("write");
    let mut r = start(&path);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = vec![];
    for _ in 0..4 {
        let (addr, stop) = (r.traffic, std::sync::Arc::clone(&stop));
        load.push(std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(mut s) = TcpStream::connect(addr) else {
                    break;
                };
                s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
                let _ = write!(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut out = String::new();
                match s.read_to_string(&mut out) {
                    Ok(_) if out.starts_with("HTTP/1.1 200") => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    signal(r.child.id(), "-TERM");
    // The drain delay is 300 ms: traffic goes on for 200 ms of it, while /ready says 503.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(http(r.admin, "/ready", "").0, 503);
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let status = r.child.wait().expect("exits");
    let (mut ok, mut failed) = (0, 0);
    for l in load {
        let (o, f) = l.join().expect("load thread");
        ok += o;
        failed += f;
    }
    assert!(status.success(), "{status:?}");
    assert!(ok > 100, "the load ran: {ok} requests");
    assert_eq!(
        failed,
        0,
        "{failed} of {} accepted requests failed during the drain",
        ok + failed
    );
}

/// A client that stops sending its upload is cut off with 408 after --client-body-timeout, and
/// it is counted as the client's error, not the track's (which would otherwise have waited for
/// --response-timeout and answered 504 in the track's name).
#[test]
fn a_stalled_upload_is_the_clients_408_not_the_tracks_504() {
    // A track that takes what it is sent and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let production = silent.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut held = vec![];
        for s in silent.incoming() {
            held.push(s);
        }
    });
    let internal = backend("internal", 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("router.yaml");
    std::fs::write(&path, config(internal, production, "100%")).expect("write");
    let r = start_router(&[
        "--config".as_ref(),
        path.as_os_str(),
        "--client-body-timeout".as_ref(),
        "300ms".as_ref(),
        "--response-timeout".as_ref(),
        "200ms".as_ref(),
    ]);
    let mut s = TcpStream::connect(r.traffic).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let started = std::time::Instant::now();
    write!(
        s,
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nhalf"
    )
    .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        out.ends_with("account-service: the request body stopped arriving (nothing for 0.3s)\n"),
        "{out}"
    );
    let (_, metrics) = http(r.admin, "/metrics", "");
    assert!(
        metrics.contains("cohort_router_client_errors_total{track=\"production\",kind=\"body_timeout\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("cohort_router_upstream_errors_total{"),
        "{metrics}"
    );
}

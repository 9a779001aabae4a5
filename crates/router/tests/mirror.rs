//! Traffic mirroring against real loopback backends: copies arrive marked and whole, the client
//! only ever gets the first track's answer, bodies above the limit are not copied, and a
//! mirror that never answers costs the client nothing (its copies are dropped and counted).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cohort_core::router_config::{
    RouterConfig, RouterHealthCheck, RouterMirror, RouterRoute, RouterTrack, TrackWeight,
};
use cohort_core::{TrackName, TrustedPeers, Version, Weight};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

mod common;

/// What a backend saw: the `x-cohort-mirror` header (if any) and the body of each request.
type Seen = Arc<Mutex<Vec<(Option<String>, Bytes)>>>;
/// And the head of each: method, target and `x-forwarded-for`.
type Heads = Arc<Mutex<Vec<String>>>;

/// A backend answering with its name after `delay`, recording what it was sent.
async fn recording(name: &'static str, delay: Duration) -> (SocketAddr, Seen) {
    let (addr, seen, _) = recording_heads(name, delay).await;
    (addr, seen)
}

async fn recording_heads(name: &'static str, delay: Duration) -> (SocketAddr, Seen, Heads) {
    let seen: Seen = Arc::default();
    let heads: Heads = Arc::default();
    let heads_into = Arc::clone(&heads);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let into = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let into = Arc::clone(&into);
            let heads_into = Arc::clone(&heads_into);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let into = Arc::clone(&into);
                    let heads_into = Arc::clone(&heads_into);
                    async move {
                        let forwarded = req
                            .headers()
                            .get("x-forwarded-for")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        let line = format!("{} {} {forwarded}", req.method(), req.uri());
                        heads_into.lock().expect("lock").push(line);
                        let mark = req
                            .headers()
                            .get("x-cohort-mirror")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        into.lock().expect("lock").push((mark, body));
                        tokio::time::sleep(delay).await;
                        let mut resp = Response::new(Full::new(Bytes::from_static(name.as_bytes())));
                        resp.headers_mut()
                            .insert("x-track", name.parse().expect("header"));
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen, heads)
}

fn track(name: &str, addr: SocketAddr) -> RouterTrack {
    RouterTrack {
        name: TrackName::new(name).expect("track"),
        version: Version::new(if name == "internal" { "2.0.0" } else { "1.0.0" }).expect("version"),
        backends: vec![addr.to_string()],
        endpoints: None,
    }
}

fn all_to_production() -> Vec<TrackWeight> {
    vec![TrackWeight {
        track: TrackName::new("production").expect("track"),
        weight: Weight::from_basis_points(10_000).expect("weight"),
    }]
}

/// FREE and everybody else go to production; `share` of FREE's requests are copied to internal.
fn config(internal: SocketAddr, production: SocketAddr, share: u32, max_body: u64) -> RouterConfig {
    RouterConfig {
        service: "account-service".into(),
        cohort_header: "X-Traffic-Group".into(),
        protocol: Default::default(),
        trusted_peers: TrustedPeers::Any,
        sticky: None,
        health_check: RouterHealthCheck {
            path: "/healthz".into(),
            interval: cohort_core::Duration::from_secs(60),
            rise: 2,
            fall: 3,
        },
        tracks: vec![track("internal", internal), track("production", production)],
        cohorts: vec![RouterRoute {
            cohort: Some("FREE".into()),
            weights: all_to_production(),
            redistributed: vec![],
        }],
        default_route: RouterRoute {
            cohort: None,
            weights: all_to_production(),
            redistributed: vec![],
        },
        mirrors: vec![RouterMirror {
            cohort: Some("FREE".into()),
            from: TrackName::new("production").expect("track"),
            to: TrackName::new("internal").expect("track"),
            share: Weight::from_basis_points(share).expect("share"),
            max_body,
        }],
    }
}

async fn start(config: RouterConfig) -> (SocketAddr, Arc<cohort_router::proxy::Router>) {
    common::start_router(config, cohort_router::proxy::Limits::default()).await
}

type TestClient = Client<HttpConnector, Full<Bytes>>;

async fn post(c: &TestClient, addr: SocketAddr, cohort: &str, body: Bytes) -> (String, Duration) {
    let started = Instant::now();
    let req = Request::post(format!("http://{addr}/orders"))
        .header("x-traffic-group", cohort)
        .body(Full::new(body))
        .expect("request");
    let resp = c.request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let track = resp.headers()["x-track"].to_str().expect("track").to_string();
    resp.into_body().collect().await.expect("body");
    (track, started.elapsed())
}

fn metric(router: &cohort_router::proxy::Router, prefix: &str) -> f64 {
    router
        .metrics
        .render(&router.table())
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn series(router: &cohort_router::proxy::Router, track: &str) -> u64 {
    let stats = router
        .metrics
        .windows
        .stats("account-service", cohort_router::window::now(), 600);
    stats
        .series
        .iter()
        .filter(|s| s.track == track)
        .map(|s| s.counts.requests)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_arrive_marked_and_whole_and_the_client_gets_only_the_first_tracks_answer() {
    let (internal, copies) = recording("internal", Duration::ZERO).await;
    let (production, originals) = recording("production", Duration::ZERO).await;
    let (addr, router) = start(config(internal, production, 5_000, 1024)).await;
    let c: TestClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    for i in 0..40 {
        let (track, _) = post(&c, addr, "FREE", Bytes::from(format!("order {i}"))).await;
        assert_eq!(track, "production");
    }
    // Others' requests are not mirrored, nor is a body above max_body.
    for _ in 0..10 {
        post(&c, addr, "ENTERPRISE", Bytes::from_static(b"x")).await;
    }
    post(&c, addr, "FREE", Bytes::from(vec![b'y'; 2000])).await;
    post(&c, addr, "FREE", Bytes::from(vec![b'y'; 2000])).await;
    // (The health check's GET, unmarked, is not a copy.)
    let marked = |seen: &Seen| -> Vec<(Option<String>, Bytes)> {
        seen.lock()
            .expect("lock")
            .iter()
            .filter(|(mark, _)| mark.is_some())
            .cloned()
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while marked(&copies).len() < 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let copies = marked(&copies);
    assert_eq!(copies.len(), 20, "half of FREE's 40 small requests: {copies:?}");
    let sent: Vec<Bytes> = (0..40).map(|i| Bytes::from(format!("order {i}"))).collect();
    for (mark, body) in &copies {
        assert_eq!(
            mark.as_deref(),
            Some("production"),
            "marked with the track it copies"
        );
        assert!(sent.contains(body), "a whole body: {body:?}");
    }
    assert!(
        originals
            .lock()
            .expect("lock")
            .iter()
            .all(|(mark, _)| mark.is_none()),
        "the first track's requests are not marked"
    );
    assert_eq!(series(&router, "internal (mirror of production)"), 20);
    assert_eq!(series(&router, "production (mirrored to internal)"), 20);
    assert_eq!(
        series(&router, "internal"),
        0,
        "the copies are not internal's own traffic"
    );
    let counted = |outcome: &str| {
        metric(
            &router,
            &format!(
                "cohort_router_mirror_copies_total{{from=\"production\",to=\"internal\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    assert_eq!(counted("answered"), 20.0);
    assert_eq!(
        counted("dropped_body_too_large"),
        1.0,
        "one of the two large ones was picked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_that_never_answers_costs_the_client_nothing_and_its_copies_are_dropped() {
    // The mirror takes every copy and answers none within the test.
    let (internal, _) = recording("internal", Duration::from_secs(3600)).await;
    let (production, _) = recording("production", Duration::ZERO).await;
    let (addr, router) = start(config(internal, production, 10_000, 65_536)).await;
    let c: TestClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    // Alternating, in the same run: FREE (every request copied) and ENTERPRISE (none).
    let (mut mirrored, mut plain) = (vec![], vec![]);
    for _ in 0..500 {
        mirrored.push(post(&c, addr, "FREE", Bytes::from_static(b"order")).await.1);
        plain.push(post(&c, addr, "ENTERPRISE", Bytes::from_static(b"order")).await.1);
    }
    let p99 = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() * 99 / 100]
    };
    let (m, p) = (p99(&mut mirrored), p99(&mut plain));
    println!("p99 with every request copied to a stalled mirror: {m:?}; without: {p:?}");
    assert!(
        m < p * 3 + Duration::from_millis(5),
        "mirroring to a stalled track slowed the client: p99 {m:?} against {p:?}"
    );
    let dropped = metric(
        &router,
        "cohort_router_mirror_copies_total{from=\"production\",to=\"internal\",outcome=\"dropped_busy\"}",
    );
    // 16 in flight, 256 waiting: the rest of the 500 copies were dropped.
    assert_eq!(dropped, (500 - 16 - 256) as f64);
}

/// A GET (no body) is forwarded by the router's own HTTP/1.1 path, not hyper's: mirroring must
/// work there too, copying the request as the first track got it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_body_are_copied_as_their_track_got_them() {
    let (internal, copies, copy_heads) = recording_heads("internal", Duration::ZERO).await;
    let (production, _, first_heads) = recording_heads("production", Duration::ZERO).await;
    let (addr, router) = start(config(internal, production, 2_500, 1024)).await;
    let c: TestClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    for i in 0..40 {
        let req = Request::get(format!("http://{addr}/orders/{i}?full=1"))
            .header("x-traffic-group", "FREE")
            .header("x-forwarded-for", "203.0.113.9")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = c.request(req).await.expect("response");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-track"], "production");
        assert_eq!(
            resp.into_body().collect().await.expect("body").to_bytes(),
            "production"
        );
    }
    let marked = || {
        copies
            .lock()
            .expect("lock")
            .iter()
            .filter(|(m, _)| m.is_some())
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while marked() < 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(marked(), 10, "a quarter of FREE's 40 requests");
    let heads = |h: &Heads| -> Vec<String> {
        h.lock()
            .expect("lock")
            .iter()
            .filter(|l| l.contains("/orders/"))
            .cloned()
            .collect()
    };
    let (copied, first) = (heads(&copy_heads), heads(&first_heads));
    assert_eq!(copied.len(), 10);
    assert_eq!(first.len(), 40);
    for line in &copied {
        assert!(
            line.starts_with("GET /orders/") && line.ends_with("?full=1 203.0.113.9, 127.0.0.1"),
            "the copy is the request as production got it: {line}"
        );
        assert!(first.contains(line), "production got the same request: {line}");
    }
    assert_eq!(series(&router, "internal (mirror of production)"), 10);
    assert_eq!(series(&router, "production (mirrored to internal)"), 10);
    assert_eq!(series(&router, "production"), 40);
}

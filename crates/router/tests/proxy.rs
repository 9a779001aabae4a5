//! The router against real HTTP backends on ephemeral loopback ports.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use cohort_core::router_config::{RouterConfig, RouterHealthCheck, RouterRoute, RouterTrack, TrackWeight};
use cohort_core::{Duration, Sticky, TrackName, TrustedPeers, Version, Weight};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use common::echo_upgrade_backend;

/// A backend that says which track it is and which cohort header it saw.
async fn backend(track: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| async move {
                    let seen = req
                        .headers()
                        .get("x-traffic-group")
                        .map(|v| v.as_bytes().to_vec())
                        .unwrap_or_default();
                    let xff = req
                        .headers()
                        .get("x-forwarded-for")
                        .map(|v| v.as_bytes().to_vec())
                        .unwrap_or_default();
                    let mut names: Vec<&str> = req.headers().keys().map(|k| k.as_str()).collect();
                    names.sort_unstable();
                    let names = names.join(",");
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let mut resp = Response::new(Full::new(body));
                    resp.headers_mut()
                        .insert("x-track", track.parse().expect("header"));
                    resp.headers_mut().insert(
                        "x-seen-cohort",
                        http::HeaderValue::from_bytes(&seen).expect("header"),
                    );
                    resp.headers_mut()
                        .insert("x-seen-xff", http::HeaderValue::from_bytes(&xff).expect("header"));
                    resp.headers_mut().insert(
                        "x-seen-names",
                        http::HeaderValue::from_str(&names).expect("header"),
                    );
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn w(track: &str, bp: u32) -> TrackWeight {
    TrackWeight {
        track: TrackName::new(track).expect("track"),
        weight: Weight::from_basis_points(bp).expect("weight"),
    }
}

async fn seed_config(trusted: &[&str], sticky: Option<Sticky>) -> RouterConfig {
    let mut tracks = vec![];
    for name in ["internal", "canary", "paid", "production"] {
        let addr = backend(name).await;
        tracks.push(RouterTrack {
            name: TrackName::new(name).expect("track"),
            version: Version::new("1.0.0").expect("version"),
            backends: vec![addr.to_string()],
            endpoints: None,
        });
    }
    let route = |cohort: &str, weights: Vec<TrackWeight>| RouterRoute {
        cohort: Some(cohort.into()),
        weights,
        redistributed: vec![],
    };
    RouterConfig {
        service: "account-service".into(),
        cohort_header: "X-Traffic-Group".into(),
        protocol: Default::default(),
        // The tests' clients are all on loopback: no list trusts them all, a list only its ranges.
        trusted_peers: if trusted.is_empty() {
            TrustedPeers::Any
        } else {
            TrustedPeers::Only(trusted.iter().map(|n| n.parse().expect("cidr")).collect())
        },
        sticky,
        health_check: RouterHealthCheck {
            path: "/healthz".into(),
            interval: Duration::from_secs(2),
            rise: 2,
            fall: 3,
        },
        tracks,
        cohorts: vec![
            route("INTERNAL", vec![w("internal", 10_000)]),
            route("FREE", vec![w("canary", 500), w("production", 9500)]),
            route("ENTERPRISE", vec![w("production", 10_000)]),
        ],
        default_route: RouterRoute {
            cohort: None,
            weights: vec![w("paid", 500), w("production", 9500)],
            redistributed: vec![],
        },
        mirrors: vec![],
    }
}

async fn start(config: RouterConfig) -> SocketAddr {
    start_router(config).await.0
}

async fn start_router(config: RouterConfig) -> (SocketAddr, Arc<cohort_router::proxy::Router>) {
    common::start_router(config, cohort_router::proxy::Limits::default()).await
}

type TestClient = Client<HttpConnector, Empty<Bytes>>;

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

async fn get(client: &TestClient, addr: SocketAddr, headers: &[(&str, &str)]) -> Response<Bytes> {
    let mut req = Request::get(format!("http://{addr}/hello"))
        .body(Empty::new())
        .expect("request");
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes()).expect("name");
        req.headers_mut().insert(name, v.parse().expect("value"));
    }
    let resp = client.request(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, body.collect().await.expect("body").to_bytes())
}

fn track_of(resp: &Response<Bytes>) -> String {
    resp.headers()
        .get("x-track")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cohort_lands_where_the_seed_says() {
    let addr = start(seed_config(&[], None).await).await;
    let c = client();
    for _ in 0..50 {
        assert_eq!(
            track_of(&get(&c, addr, &[("x-traffic-group", "INTERNAL")]).await),
            "internal"
        );
        assert_eq!(
            track_of(&get(&c, addr, &[("x-traffic-group", "enterprise")]).await),
            "production"
        );
        let free = track_of(&get(&c, addr, &[("x-traffic-group", "FREE")]).await);
        assert!(free == "canary" || free == "production", "{free}");
        let paid = track_of(&get(&c, addr, &[]).await);
        assert!(paid == "paid" || paid == "production", "{paid}");
        let unknown = track_of(&get(&c, addr, &[("x-traffic-group", "GOLD")]).await);
        assert!(unknown == "paid" || unknown == "production", "{unknown}");
    }
    let seen = get(&c, addr, &[("x-traffic-group", "INTERNAL")]).await;
    assert_eq!(
        seen.headers()["x-seen-cohort"],
        "INTERNAL",
        "services see the cohort header"
    );
    assert_eq!(seen.headers()["x-seen-xff"], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_split_is_accurate_over_100k_requests() {
    let addr = start(seed_config(&[], None).await).await;
    let c = client();
    let canary = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut tasks = vec![];
    for _ in 0..16 {
        let (c, canary) = (c.clone(), Arc::clone(&canary));
        tasks.push(tokio::spawn(async move {
            for _ in 0..100_000 / 16 {
                if track_of(&get(&c, addr, &[("x-traffic-group", "FREE")]).await) == "canary" {
                    canary.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let share = f64::from(canary.load(std::sync::atomic::Ordering::Relaxed)) / f64::from(100_000 / 16 * 16);
    assert!((share - 0.05).abs() < 0.005, "canary share {share}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_cohort_header_from_an_untrusted_peer_is_dropped() {
    let (addr, router) = start_router(seed_config(&["10.0.0.0/8"], None).await).await;
    let c = client();
    for _ in 0..40 {
        let resp = get(&c, addr, &[("x-traffic-group", "INTERNAL")]).await;
        let track = track_of(&resp);
        assert!(
            track == "paid" || track == "production",
            "spoofed INTERNAL reached {track}"
        );
        assert_eq!(
            resp.headers()["x-seen-cohort"],
            "",
            "the spoofed header is removed"
        );
    }
    let metrics = router.metrics.render(&router.table());
    assert!(
        metrics.contains("cohort_router_spoofed_cohort_headers_total 40"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_users_stay_on_their_track() {
    let addr = start(seed_config(&[], Some(Sticky::Header("X-User-Id".into()))).await).await;
    let c = client();
    let mut on_canary = 0;
    for user in 0..400 {
        let id = format!("user-{user}");
        let first = track_of(&get(&c, addr, &[("x-traffic-group", "FREE"), ("x-user-id", &id)]).await);
        for _ in 0..3 {
            assert_eq!(
                track_of(&get(&c, addr, &[("x-traffic-group", "FREE"), ("x-user-id", &id)]).await),
                first
            );
        }
        on_canary += usize::from(first == "canary");
    }
    assert!(
        (5..=40).contains(&on_canary),
        "about 5% of 400 users on canary, got {on_canary}"
    );
}

/// A loopback address nothing listens on (its listener was bound, then dropped).
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried_on_another_backend() {
    let mut config = seed_config(&[], None).await;
    let closed = closed_port();
    let production = config
        .tracks
        .iter_mut()
        .find(|t| t.name.as_str() == "production")
        .expect("production");
    production.backends.insert(0, closed.to_string());
    let addr = start(config).await;
    let c = client();
    for _ in 0..20 {
        let resp = get(&c, addr, &[("x-traffic-group", "ENTERPRISE")]).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(track_of(&resp), "production");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_without_a_track_answers_503_naming_service_and_cohort() {
    let mut config = seed_config(&[], None).await;
    config.cohorts[1].weights.clear();
    let addr = start(config).await;
    let resp = get(&client(), addr, &[("x-traffic-group", "FREE")]).await;
    assert_eq!(resp.status(), 503);
    let body = String::from_utf8_lossy(resp.body()).into_owned();
    assert!(
        body.contains("account-service") && body.contains("FREE"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_track_answers_502_naming_the_track() {
    let mut config = seed_config(&[], None).await;
    let closed = closed_port();
    config.tracks[0].backends = vec![closed.to_string()];
    let addr = start(config).await;
    let c = client();
    let resp = get(&c, addr, &[("x-traffic-group", "INTERNAL")]).await;
    assert_eq!(resp.status(), 502);
    assert!(String::from_utf8_lossy(resp.body()).contains("track internal"));
    // Now known to be down: the route has no healthy track left.
    let resp = get(&c, addr, &[("x-traffic-group", "INTERNAL")]).await;
    assert_eq!(resp.status(), 503);
    let body = String::from_utf8_lossy(resp.body()).into_owned();
    assert!(
        body.contains("no healthy track for cohort INTERNAL (internal down)"),
        "{body}"
    );
}

/// A backend that can be killed (listener and every open connection) and started again on
/// the same address.
async fn killable_backend(
    track: &'static str,
    at: SocketAddr,
) -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
    let listener = TcpListener::bind(at).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        loop {
            let mut on_stop = stopped.clone();
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = on_stop.wait_for(|s| *s) => return,
            };
            let Ok((stream, _)) = accepted else { return };
            let mut on_stop = stopped.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| async move {
                        let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                        resp.headers_mut()
                            .insert("x-track", track.parse().expect("header"));
                        Ok::<_, Infallible>(resp)
                    });
                let conn =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    _ = conn => {}
                    _ = on_stop.wait_for(|s| *s) => {}
                }
            });
        }
    });
    (addr, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_track_fails_over_without_errors_and_comes_back() {
    let mut config = seed_config(&[], None).await;
    config.health_check.interval = Duration::from_millis(100);
    config.health_check.rise = 2;
    config.health_check.fall = 2;
    let (canary_addr, kill) = killable_backend("canary", "127.0.0.1:0".parse().expect("addr")).await;
    config.tracks[1].backends = vec![canary_addr.to_string()];
    config.cohorts[1].weights = vec![w("canary", 5000), w("production", 5000)];
    let addr = start(config).await;
    let c = client();
    let mut seen_canary = false;
    for _ in 0..20 {
        seen_canary |= track_of(&get(&c, addr, &[("x-traffic-group", "FREE")]).await) == "canary";
    }
    assert!(seen_canary);

    let _ = kill.send(true);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    for i in 0..200 {
        let resp = get(&c, addr, &[("x-traffic-group", "FREE")]).await;
        assert_eq!(
            resp.status(),
            200,
            "request {i} after the canary died: {:?}",
            resp.body()
        );
        assert_eq!(track_of(&resp), "production");
    }

    let (_again, _keep) = killable_backend("canary", canary_addr).await;
    let mut back = false;
    for _ in 0..100 {
        if track_of(&get(&c, addr, &[("x-traffic-group", "FREE")]).await) == "canary" {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(back, "the canary takes traffic again once its health checks pass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_reloads_under_load_fail_no_request() {
    let config = seed_config(&[], None).await;
    let (addr, router) = start_router(config.clone()).await;
    let c = client();
    let failures = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let answered = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = vec![];
    for i in 0..8 {
        let (c, failures, done) = (c.clone(), Arc::clone(&failures), Arc::clone(&done));
        let answered = Arc::clone(&answered);
        load.push(tokio::spawn(async move {
            let cohort = ["INTERNAL", "FREE", "ENTERPRISE", "GOLD"][i % 4];
            let mut sent = 0u32;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if get(&c, addr, &[("x-traffic-group", cohort)]).await.status() != 200 {
                    failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                sent += 1;
            }
            sent
        }));
    }
    // At least 50 reloads, and on until the load has really run between them (a busy machine
    // answers fewer requests in the same time).
    let mut round = 0;
    while round < 50 || answered.load(std::sync::atomic::Ordering::Relaxed) <= 500 {
        round += 1;
        let mut next = config.clone();
        // Alternate the FREE split so every reload really changes the table.
        next.cohorts[1].weights = if round % 2 == 0 {
            vec![w("canary", 1000), w("production", 9000)]
        } else {
            vec![w("canary", 500), w("production", 9500)]
        };
        router.swap(cohort_router::table::Table::build(next).await.expect("table"));
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut sent = 0;
    for l in load {
        sent += l.await.expect("load");
    }
    assert!(sent > 500, "the load really ran: {sent}");
    assert_eq!(
        failures.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "of {sent} requests across {round} reloads"
    );
}

async fn start_limited(config: RouterConfig, limits: cohort_router::proxy::Limits) -> SocketAddr {
    common::start_router(config, limits).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limits = cohort_router::proxy::Limits {
        header_read_timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    };
    let addr = start_limited(seed_config(&[], None).await, limits).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let mut buf = vec![0u8; 1024];
    let closed = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection was not closed");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "closed after {:?}",
        started.elapsed()
    );
}

/// After the preface, an HTTP/2 connection had no timeout at all: silent ones held every
/// connection slot and the router answered nobody else (found in review). Now one with no
/// request in flight that moves no bytes for the header timeout is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_http2_connections_are_closed_instead_of_holding_every_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limits = cohort_router::proxy::Limits {
        header_read_timeout: std::time::Duration::from_millis(300),
        max_connections: 2,
        ..Default::default()
    };
    let addr = start_limited(seed_config(&[], None).await, limits).await;
    let mut silent = vec![];
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        // The preface and an empty SETTINGS frame, then nothing.
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await
            .expect("write");
        silent.push(s);
    }
    // Both slots are taken; a request gets its turn only once a silent connection is closed.
    let answered = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        get(&client(), addr, &[]).await.status()
    })
    .await;
    assert_eq!(
        answered.ok().map(|s| s.as_u16()),
        Some(200),
        "nobody else was answered"
    );
    for mut s in silent {
        let mut buf = vec![0u8; 1024];
        let closed = tokio::time::timeout(std::time::Duration::from_secs(3), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a silent HTTP/2 connection was not closed");
    }
}

/// A request head read off a raw connection (and whatever came with it); `None` if the peer
/// went away first.
async fn read_head(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

/// A track that answers "slow" `delay_ms` after each request head (health checks at once), one
/// request per connection.
async fn slow_backend(delay_ms: u64) -> SocketAddr {
    use tokio::io::AsyncWriteExt;
    let slow = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = slow.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = slow.accept().await {
            tokio::spawn(async move {
                let Some(head) = read_head(&mut s).await else {
                    return;
                };
                if !head.starts_with(b"GET /healthz") {
                    tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nslow")
                    .await;
            });
        }
    });
    addr
}

/// A request that takes longer than the header timeout keeps its HTTP/2 connection open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_request_slower_than_the_header_timeout_is_answered() {
    // A track that takes 800 ms to answer, four times the header timeout.
    let slow_addr = slow_backend(800).await;
    let mut config = seed_config(&[], None).await;
    config.tracks[0].backends = vec![slow_addr.to_string()];
    let limits = cohort_router::proxy::Limits {
        header_read_timeout: std::time::Duration::from_millis(200),
        ..Default::default()
    };
    let addr = start_limited(config, limits).await;
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::get("http://x/")
        .header("x-traffic-group", "INTERNAL")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("answered");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"slow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_head_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limits = cohort_router::proxy::Limits {
        max_header_bytes: 16 * 1024,
        ..Default::default()
    };
    let addr = start_limited(seed_config(&[], None).await, limits).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let big = "a".repeat(64 * 1024);
    let _ = s
        .write_all(format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), s.read_to_end(&mut out)).await;
    let head = String::from_utf8_lossy(&out);
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_that_does_not_answer_in_time_gets_504_naming_it() {
    let mut config = seed_config(&[], None).await;
    // A backend that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    config.tracks[0].backends = vec![silent_addr.to_string()];
    let limits = cohort_router::proxy::Limits {
        response_timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    };
    let addr = start_limited(config, limits).await;
    let resp = get(&client(), addr, &[("x-traffic-group", "INTERNAL")]).await;
    assert_eq!(resp.status(), 504);
    let body = String::from_utf8_lossy(resp.body()).into_owned();
    assert!(
        body.contains("track internal") && body.contains("did not answer within 0.3s"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_passes_through_both_ways() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = seed_config(&[], None).await;
    config.tracks[0].backends = vec![echo_upgrade_backend().await.to_string()];
    let addr = start(config).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Traffic-Group: INTERNAL\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.expect("head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    s.write_all(b"hello through the router").await.expect("write");
    let mut echoed = vec![0u8; 24];
    tokio::time::timeout(std::time::Duration::from_secs(3), s.read_exact(&mut echoed))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(&echoed, b"hello through the router");
}

#[tokio::test]
async fn re_resolving_the_same_names_changes_nothing() {
    let mut config = seed_config(&[], None).await;
    let a = cohort_router::table::Table::build(config.clone())
        .await
        .expect("table");
    let b = cohort_router::table::Table::build(config.clone())
        .await
        .expect("table");
    assert!(a.same_backends(&b));
    config.tracks[0].backends.push("127.0.0.1:1".into());
    let c = cohort_router::table::Table::build(config).await.expect("table");
    assert!(!a.same_backends(&c));
}

/// The seed's config with every route sent to production, which has `backends`.
async fn production_on(backends: &[SocketAddr]) -> RouterConfig {
    let mut config = seed_config(&[], None).await;
    config.tracks.retain(|t| t.name.as_str() == "production");
    config.tracks[0].backends = backends.iter().map(SocketAddr::to_string).collect();
    for r in config
        .cohorts
        .iter_mut()
        .chain(std::iter::once(&mut config.default_route))
    {
        r.weights = vec![w("production", 10_000)];
    }
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_spread_evenly_over_a_tracks_backends_whatever_connections_are_pooled() {
    let pods = [
        backend("pod-a").await,
        backend("pod-b").await,
        backend("pod-c").await,
    ];
    let addr = start(production_on(&pods).await).await;
    // One client keep-alive connection, one request at a time: before, its requests all went
    // down the one pooled upstream connection, to one pod.
    let c = client();
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..300 {
        *seen.entry(track_of(&get(&c, addr, &[]).await)).or_default() += 1;
    }
    assert_eq!(
        seen,
        [
            ("pod-a".to_string(), 100),
            ("pod-b".into(), 100),
            ("pod-c".into(), 100)
        ]
        .into()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_table_keeps_the_backends_that_stay_and_a_dropped_one_gets_no_new_requests() {
    use cohort_router::table::Table;
    let (a, b) = (backend("pod-a").await, backend("pod-b").await);
    let config = production_on(&[a, b]).await;
    let (addr, router) = start_router(config.clone()).await;
    let c = client();
    for _ in 0..10 {
        assert_eq!(get(&c, addr, &[]).await.status(), 200);
    }
    let before = router.table();
    let kept = Arc::clone(&before.tracks[0].backends[0]);
    // Pod b is terminating: the next table lists only a.
    let next = Table::assemble(config, &[vec![a]], Some(&before)).expect("table");
    assert!(
        Arc::ptr_eq(&next.tracks[0].backends[0], &kept),
        "a backend that stays keeps its pooled connections and health"
    );
    router.swap(next);
    drop(before);
    for _ in 0..50 {
        assert_eq!(track_of(&get(&c, addr, &[]).await), "pod-a");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_stop_at_the_router_and_forwarding_headers_are_added() {
    let addr = start(seed_config(&[], None).await).await;
    let resp = get(
        &client(),
        addr,
        &[
            ("Connection", "keep-alive, X-Secret"),
            ("X-Secret", "for the router only"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("TE", "trailers"),
            ("X-End-To-End", "kept"),
        ],
    )
    .await;
    let names = resp.headers()["x-seen-names"].to_str().expect("names");
    let names: Vec<&str> = names.split(',').collect();
    for gone in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-authorization",
        "te",
    ] {
        assert!(!names.contains(&gone), "{gone} reached the backend: {names:?}");
    }
    for kept in ["x-end-to-end", "x-forwarded-for", "x-forwarded-proto", "host"] {
        assert!(
            names.contains(&kept),
            "{kept} did not reach the backend: {names:?}"
        );
    }
    assert_eq!(resp.headers()["x-seen-xff"], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_with_prior_knowledge_is_routed_like_any_other() {
    let addr = start(seed_config(&["127.0.0.1/32"], None).await).await;
    let h2: TestClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new());
    for (cohort, track) in [("INTERNAL", "internal"), ("ENTERPRISE", "production")] {
        let resp = get(&h2, addr, &[("X-Traffic-Group", cohort)]).await;
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        assert_eq!(track_of(&resp), track);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_preface_that_arrives_in_pieces_is_still_http2() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = start(seed_config(&[], None).await).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    s.write_all(&preface[..7]).await.expect("write");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    s.write_all(&preface[7..]).await.expect("write");
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.expect("write");
    let mut head = [0u8; 9];
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_exact(&mut head))
        .await
        .expect("an answer in time")
        .expect("read");
    // An HTTP/2 server opens with its own SETTINGS frame; HTTP/1.1 would have said "HTTP/1.1 400".
    assert_eq!(head[3], 4, "not a SETTINGS frame: {head:?}");
}

/// A backend that counts the connections open to it.
async fn counting_backend() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let counter = Arc::clone(&open);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let open = Arc::clone(&counter);
            open.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, open)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_to_a_track_are_closed_after_the_idle_timeout() {
    use std::sync::atomic::Ordering;
    let (production, open) = counting_backend().await;
    let mut config = seed_config(&[], None).await;
    for t in &mut config.tracks {
        t.backends = vec![production.to_string()];
    }
    let limits = cohort_router::proxy::Limits {
        upstream_idle_timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    };
    let addr = start_limited(config, limits).await;
    let c = client();
    for _ in 0..5 {
        assert_eq!(get(&c, addr, &[]).await.status(), 200);
    }
    assert!(
        open.load(Ordering::SeqCst) >= 1,
        "the router keeps its connection open for reuse"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while open.load(Ordering::SeqCst) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} connections still open 5 s after the last request",
            open.load(Ordering::SeqCst)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // And a closed pool does not cost a request: the next one opens a new connection.
    assert_eq!(get(&c, addr, &[]).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_each_track_version_per_cohort_for_the_judgement() {
    let mut config = seed_config(&["127.0.0.0/8"], None).await;
    // Internal is down: its requests are errors (502) without a latency.
    config.tracks[0].backends = vec![closed_port().to_string()];
    let (addr, router) = start_router(config).await;
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin_addr = admin.local_addr().expect("addr");
    tokio::spawn(cohort_router::admin::serve_admin(
        admin,
        Arc::clone(&router),
        std::future::pending(),
    ));
    let c = client();
    for _ in 0..200 {
        get(&c, addr, &[("x-traffic-group", "FREE")]).await;
    }
    get(&c, addr, &[("x-traffic-group", "INTERNAL")]).await;
    let resp = c
        .request(
            Request::get(format!("http://{admin_addr}/stats?window=1m"))
                .body(Empty::new())
                .expect("request"),
        )
        .await
        .expect("stats");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let stats: cohort_judge::WindowStats = serde_json::from_slice(&body).expect("json");
    assert_eq!(stats.service, "account-service");
    assert_eq!(stats.window_seconds, 60);
    let find = |track: &str, cohort: &str| {
        stats
            .series
            .iter()
            .find(|s| s.track == track && s.cohort == cohort)
            .map(|s| s.counts.clone())
            .unwrap_or_default()
    };
    let (canary, production) = (find("canary", "FREE"), find("production", "FREE"));
    assert_eq!(canary.requests + production.requests, 200);
    assert_eq!(canary.requests, 10, "5% of FREE, spread evenly");
    assert_eq!(canary.latency.iter().sum::<u64>(), 10);
    assert_eq!(production.errors, 0);
    let internal = find("internal", "INTERNAL");
    assert_eq!((internal.requests, internal.errors), (1, 1));
    assert_eq!(internal.latency.iter().sum::<u64>(), 0, "no answer, no latency");
    assert_eq!(stats.series[0].version, "1.0.0");
    // The counts took a few seconds of the minute asked for: the rate is read over those.
    assert!(
        stats.series.iter().all(|s| (1..=5).contains(&s.seconds)),
        "{stats:?}"
    );

    let bad = c
        .request(
            Request::get(format!("http://{admin_addr}/stats?window=2h"))
                .body(Empty::new())
                .expect("request"),
        )
        .await
        .expect("stats");
    assert_eq!(bad.status(), 400);
}

/// A router with `limits` whose stop the test decides: dropping or firing the sender stops it.
async fn start_stoppable(
    config: RouterConfig,
    limits: cohort_router::proxy::Limits,
) -> (
    SocketAddr,
    Arc<cohort_router::proxy::Router>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let table = cohort_router::table::Table::build(config).await.expect("table");
    let router = cohort_router::proxy::Router::with_limits(table, limits);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(cohort_router::proxy::serve(
        listener,
        Arc::clone(&router),
        async {
            let _ = stopped.await;
        },
    ));
    (addr, router, stop, served)
}

fn parking_after(ms: u64) -> cohort_router::proxy::Limits {
    cohort_router::proxy::Limits {
        park_after: std::time::Duration::from_millis(ms),
        ..Default::default()
    }
}

/// One HTTP/1.1 response read off a raw connection: its head (lower-cased) and body.
async fn read_response(s: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + length {
                    return (head, got[end + 4..end + 4 + length].to_vec());
                }
            }
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => panic!("the connection closed after {} bytes", got.len()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), read)
        .await
        .expect("a response within 5s")
}

const INTERNAL_GET: &[u8] = b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Traffic-Group: INTERNAL\r\n\r\n";

async fn parked(router: &cohort_router::proxy::Router, want: i64) -> bool {
    for _ in 0..100 {
        if router.metrics.parked.get() == want {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_parked_and_answers_its_next_request() {
    use tokio::io::AsyncWriteExt;
    let (addr, router, _stop, _served) =
        start_stoppable(seed_config(&[], None).await, parking_after(50)).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(INTERNAL_GET).await.expect("write");
    let (head, _) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(parked(&router, 1).await, "the quiet connection was not parked");
    // The same socket, a new hyper connection behind it.
    s.write_all(INTERNAL_GET).await.expect("write");
    let (head, _) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("x-track: internal"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    assert!(parked(&router, 1).await, "parked again once quiet again");
    assert_eq!(router.metrics.parks.get(), 2);
}

/// A request that waits on its track longer than the park interval is not the connection going
/// quiet: the client keeps its keep-alive connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_slower_than_the_park_interval_keeps_its_connection_alive() {
    use tokio::io::AsyncWriteExt;
    let slow_addr = slow_backend(400).await;
    let mut config = seed_config(&[], None).await;
    config.tracks[0].backends = vec![slow_addr.to_string()];
    let (addr, router, _stop, _served) = start_stoppable(config, parking_after(50)).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    for turn in 0..3 {
        s.write_all(INTERNAL_GET).await.expect("write");
        let (head, body) = read_response(&mut s).await;
        assert!(head.starts_with("http/1.1 200"), "turn {turn}: {head}");
        assert_eq!(body, b"slow");
        assert!(!head.contains("connection: close"), "turn {turn}: {head}");
    }
    assert_eq!(router.metrics.parked.get(), 0, "nothing was quiet long enough");
}

/// A pipelined request whose head had only begun when its connection went quiet is answered
/// once the rest of it comes: hyper's unread bytes go to the connection that takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_request_begun_before_the_connection_went_quiet_is_answered() {
    use tokio::io::AsyncWriteExt;
    let (addr, _router, _stop, _served) =
        start_stoppable(seed_config(&[], None).await, parking_after(50)).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut first = INTERNAL_GET.to_vec();
    first.extend_from_slice(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Traffic");
    s.write_all(&first).await.expect("write");
    let (head, _) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    s.write_all(b"-Group: INTERNAL\r\n\r\n").await.expect("write");
    let (head, _) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("x-track: internal"), "{head}");
}

/// Parked or not, an idle connection is closed once the header timeout has passed since its
/// last answer, as hyper closes one it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_is_closed_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limits = cohort_router::proxy::Limits {
        header_read_timeout: std::time::Duration::from_millis(500),
        ..parking_after(50)
    };
    let (addr, router, _stop, _served) = start_stoppable(seed_config(&[], None).await, limits).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(INTERNAL_GET).await.expect("write");
    let (head, _) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let answered = std::time::Instant::now();
    assert!(parked(&router, 1).await, "not parked");
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(std::time::Duration::from_secs(3), s.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
    let after = answered.elapsed();
    assert!(
        after >= std::time::Duration::from_millis(400) && after < std::time::Duration::from_millis(1500),
        "closed {after:?} after its answer"
    );
    assert!(parked(&router, 0).await);
}

/// Parked connections are idle: when the router stops they close at once, and it does not
/// wait out its grace period for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_connections_close_at_once_when_the_router_stops() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, router, stop, served) = start_stoppable(seed_config(&[], None).await, parking_after(50)).await;
    let mut conns = vec![];
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(INTERNAL_GET).await.expect("write");
        let (head, _) = read_response(&mut s).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        conns.push(s);
    }
    assert!(parked(&router, 3).await, "not all parked");
    let stopping = std::time::Instant::now();
    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(3), served)
        .await
        .expect("the router stopped within 3s, not after its 20s grace")
        .expect("serve");
    assert!(stopping.elapsed() < std::time::Duration::from_secs(3));
    for mut s in conns {
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(std::time::Duration::from_secs(1), s.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    }
}

/// A track that answers each request at once, before reading its body, with an 8-byte body
/// sent in two halves `pause_ms` apart, then reads whatever body comes until the router closes
/// the connection; one request per connection.
async fn pausing_backend(pause_ms: u64) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Some(head) = read_head(&mut s).await else {
                    return;
                };
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nslow")
                    .await;
                if !head.starts_with(b"GET /healthz") {
                    tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
                }
                let _ = s.write_all(b"down").await;
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Found in review: a request counted as answered once its response head was out, so a body
/// that paused longer than the park interval made the connection look quiet, and the attempt
/// to park it cost the client its keep-alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_that_pauses_longer_than_the_park_interval_keeps_its_connection_alive() {
    use tokio::io::AsyncWriteExt;
    let mut config = seed_config(&[], None).await;
    config.tracks[0].backends = vec![pausing_backend(400).await.to_string()];
    let (addr, _router, _stop, _served) = start_stoppable(config, parking_after(50)).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    for turn in 0..2 {
        s.write_all(INTERNAL_GET).await.expect("write");
        let (head, body) = read_response(&mut s).await;
        assert!(head.starts_with("http/1.1 200"), "turn {turn}: {head}");
        assert_eq!(body, b"slowdown", "turn {turn}");
    }
}

/// Found in review: when a track answered before the request body was all sent and the client
/// then paused, the connection could be parked while hyper was still reading the body, and the
/// rest of the body was then read as a request of its own (a request smuggled past whatever
/// checked the first one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_of_a_request_body_sent_after_an_early_answer_is_never_read_as_a_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = seed_config(&[], None).await;
    config.tracks[0].backends = vec![pausing_backend(0).await.to_string()];
    let (addr, router, _stop, _served) = start_stoppable(config, parking_after(50)).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\nX-Traffic-Group: INTERNAL\r\n\r\n";
    let length = 10 + smuggled.len();
    s.write_all(
        format!("POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Traffic-Group: INTERNAL\r\nContent-Length: {length}\r\n\r\n0123456789")
            .as_bytes(),
    )
    .await
    .expect("write");
    let (head, _) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(router.metrics.parked.get(), 0, "parked while hyper read the body");
    let _ = s.write_all(smuggled).await;
    let mut after = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), s.read_to_end(&mut after)).await;
    let after = String::from_utf8_lossy(&after);
    assert!(
        !after.contains("HTTP/1.1"),
        "the rest of the body was answered as a request: {after}"
    );
}

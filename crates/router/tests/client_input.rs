//! What clients send that a careful proxy does not pass on or blame on a track: failed and
//! slow uploads, and the HTTP leniencies (underscored names, Host games, `Connection` tricks,
//! duplicated headers, CONNECT, oversized heads, stream floods). Raw bytes on real loopback
//! sockets, against backends that record exactly what reached them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cohort_core::router_config::{RouterConfig, RouterHealthCheck, RouterRoute, RouterTrack, TrackWeight};
use cohort_core::{Sticky, TrackName, TrustedPeers, Version, Weight};
use cohort_router::proxy::{Limits, Router};
use http::{Request, Response};
use http_body_util::{Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod common;

/// A backend that records every request it gets (head and body, as received) and answers with
/// its name, reading the whole body first as an application does.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    /// What reached it, health checks left out.
    fn requests(&self) -> Vec<String> {
        self.seen.lock().expect("lock").clone()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn recorder(name: &'static str) -> Recorder {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(vec![]));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut buf = vec![];
                let mut chunk = [0u8; 16 * 1024];
                let head_end = loop {
                    if let Some(at) = find(&buf, b"\r\n\r\n") {
                        break at + 4;
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                let chunked = head.contains("\r\ntransfer-encoding: chunked\r\n");
                loop {
                    let body = &buf[head_end..];
                    let complete = match length {
                        Some(n) => body.len() >= n,
                        None => !chunked || body.ends_with(b"0\r\n\r\n"),
                    };
                    if complete {
                        break;
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&buf).into_owned();
                if !request.starts_with("GET /healthz ") {
                    log.lock().expect("lock").push(request);
                }
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\nX-Track: {name}\r\n\r\n{name}",
                            name.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    Recorder { addr, seen }
}

fn w(track: &str, bp: u32) -> TrackWeight {
    TrackWeight {
        track: TrackName::new(track).expect("track"),
        weight: Weight::from_basis_points(bp).expect("weight"),
    }
}

fn track(name: &str, version: &str, backend: SocketAddr) -> RouterTrack {
    RouterTrack {
        name: TrackName::new(name).expect("track"),
        version: Version::new(version).expect("version"),
        backends: vec![backend.to_string()],
        endpoints: None,
    }
}

/// INTERNAL goes to `internal`, everybody else to `production`; loopback is trusted; the
/// sticky key is `X-User-Id`.
fn config(internal: SocketAddr, production: SocketAddr) -> RouterConfig {
    RouterConfig {
        service: "account-service".into(),
        cohort_header: "X-Traffic-Group".into(),
        protocol: Default::default(),
        trusted_peers: TrustedPeers::Only(vec!["127.0.0.0/8".parse().expect("cidr")]),
        sticky: Some(Sticky::Header("X-User-Id".into())),
        health_check: RouterHealthCheck {
            path: "/healthz".into(),
            interval: cohort_core::Duration::from_secs(60),
            rise: 2,
            fall: 3,
        },
        tracks: vec![
            track("internal", "1.18.0", internal),
            track("production", "1.15.0", production),
        ],
        cohorts: vec![RouterRoute {
            cohort: Some("INTERNAL".into()),
            weights: vec![w("internal", 10_000)],
            redistributed: vec![],
        }],
        default_route: RouterRoute {
            cohort: None,
            weights: vec![w("production", 10_000)],
            redistributed: vec![],
        },
        mirrors: vec![],
    }
}

struct Setup {
    addr: SocketAddr,
    router: Arc<Router>,
    internal: Recorder,
    production: Recorder,
}

async fn setup(limits: Limits) -> Setup {
    let (internal, production) = (recorder("internal").await, recorder("production").await);
    let (addr, router) = start(config(internal.addr, production.addr), limits).await;
    Setup {
        addr,
        router,
        internal,
        production,
    }
}

async fn start(config: RouterConfig, limits: Limits) -> (SocketAddr, Arc<Router>) {
    common::start_router(config, limits).await
}

/// Writes `request` as it is and reads the answer until the router closes the connection.
async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    read_answer(&mut s).await
}

async fn read_answer(s: &mut TcpStream) -> (u16, String) {
    let mut out = vec![];
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

/// The router's Prometheus text.
fn metrics(router: &Router) -> String {
    router.metrics.render(&router.table())
}

/// Waits (up to 5 s) until the metrics hold `line`.
async fn metrics_say(router: &Router, line: &str) {
    for _ in 0..100 {
        if metrics(router).contains(line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no `{line}` in\n{}", metrics(router));
}

/// What `/stats` says of production serving everybody else: (requests, errors, latencies).
fn production_stats(router: &Router) -> (u64, u64, u64) {
    let stats = router
        .metrics
        .windows
        .stats("account-service", cohort_router::window::now(), 60);
    stats
        .series
        .iter()
        .find(|s| s.track == "production")
        .map_or((0, 0, 0), |s| {
            (s.counts.requests, s.counts.errors, s.counts.latency.iter().sum())
        })
}

/// Asserts that nothing was counted against production: no upstream error, no 5xx, nothing in
/// the judgement's window.
fn production_is_not_blamed(router: &Router) {
    let m = metrics(router);
    assert!(!m.contains("upstream_errors_total{"), "{m}");
    assert!(
        !m.contains("track=\"production\",class=\"5xx\"} 1"),
        "a 5xx was counted for production:\n{m}"
    );
    assert_eq!(production_stats(router), (0, 0, 0), "in /stats");
}

// ---- item 3: client failures are the client's ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_upload_is_a_client_error_not_a_track_error() {
    let s = setup(Limits::default()).await;
    for _ in 0..5 {
        let mut c = TcpStream::connect(s.addr).await.expect("connect");
        c.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
            .await
            .expect("write");
        c.write_all(&[b'a'; 1000]).await.expect("write");
        // Give the router time to start the upstream request, then go away mid-body.
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(c);
    }
    metrics_say(
        &s.router,
        "cohort_router_client_errors_total{track=\"production\",kind=\"aborted\"} 5",
    )
    .await;
    production_is_not_blamed(&s.router);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_body_gets_400_not_the_tracks_502() {
    let s = setup(Limits::default()).await;
    let (status, answer) = raw(
        s.addr,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\nworld\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.contains("the request body's framing is invalid"),
        "{answer}"
    );
    assert!(
        !answer.contains("1.15.0"),
        "the version is not the client's business: {answer}"
    );
    metrics_say(
        &s.router,
        "cohort_router_client_errors_total{track=\"production\",kind=\"malformed_body\"} 1",
    )
    .await;
    production_is_not_blamed(&s.router);
}

/// Sends `body` in `pieces` pieces, `gap` apart, after a head announcing its length.
async fn trickle(addr: SocketAddr, body: &[u8], pieces: usize, gap: Duration) -> (u16, String) {
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(
        format!(
            "POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    for piece in body.chunks(body.len().div_ceil(pieces)) {
        tokio::time::sleep(gap).await;
        c.write_all(piece).await.expect("write");
    }
    read_answer(&mut c).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_not_the_tracks_timeout() {
    let s = setup(Limits {
        response_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    // 1.2 s of upload against a 0.3 s response timeout: the track answers at once when it has
    // the body, so it is well within its time.
    let (status, answer) = trickle(s.addr, &[b'u'; 1200], 12, Duration::from_millis(100)).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.ends_with("production"), "{answer}");
    assert_eq!(s.production.requests().len(), 1);
    assert!(s.production.requests()[0].ends_with(&"u".repeat(1200)));
    let (requests, errors, latencies) = production_stats(&s.router);
    assert_eq!((requests, errors, latencies), (1, 0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_gets_408_and_is_the_clients_error() {
    let s = setup(Limits {
        client_body_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let mut c = TcpStream::connect(s.addr).await.expect("connect");
    c.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nhalf")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let (status, answer) = read_answer(&mut c).await;
    assert_eq!(status, 408, "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        answer.contains("the request body stopped arriving (nothing for 0.3s)"),
        "{answer}"
    );
    metrics_say(
        &s.router,
        "cohort_router_client_errors_total{track=\"production\",kind=\"body_timeout\"} 1",
    )
    .await;
    production_is_not_blamed(&s.router);
}

/// The clock that stops while the client is slow still runs while the track is: a backend
/// that takes the head, never reads the body and never answers is the track's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_that_stops_reading_the_body_still_times_out() {
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let internal = recorder("internal").await;
    let limits = Limits {
        response_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let (addr, router) = start(config(internal.addr, silent_addr), limits).await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    let size = 32 * 1024 * 1024;
    c.write_all(format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let (mut rd, mut wr) = c.into_split();
    // The body goes as fast as the router takes it, until the buffers on the way are full.
    let writer = tokio::spawn(async move {
        let block = vec![b'b'; 64 * 1024];
        for _ in 0..size / block.len() {
            if wr.write_all(&block).await.is_err() {
                return;
            }
        }
    });
    let mut out = vec![];
    let _ = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut out)).await;
    writer.abort();
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(
        answer.contains("track production did not answer within 0.3s"),
        "{answer}"
    );
    assert!(!answer.contains("1.15.0"), "{answer}");
    metrics_say(
        &router,
        "cohort_router_upstream_errors_total{track=\"production\",kind=\"timeout\"} 1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track_errors_do_not_tell_clients_the_version() {
    let internal = recorder("internal").await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let (addr, _router) = start(config(internal.addr, closed), Limits::default()).await;
    let (status, answer) = raw(addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 502, "{answer}");
    assert!(
        answer.ends_with("account-service: no backend of track production accepted a connection\n"),
        "{answer}"
    );
}

// ---- item 9: HTTP leniencies ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_headers_never_reach_a_track() {
    let s = setup(Limits::default()).await;
    let (status, answer) = raw(
        s.addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX_Traffic_Group: INTERNAL\r\nTransfer_Encoding: chunked\r\nX_Forwarded_For: 6.6.6.6\r\nX-User_Id: u1\r\nX-Kept: yes\r\nContent-Length: 4\r\n\r\nbody",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer.ends_with("production"),
        "an underscore cohort header is not honoured: {answer}"
    );
    let seen = s.production.requests();
    assert_eq!(seen.len(), 1);
    let head = seen[0].split("\r\n\r\n").next().expect("head").to_string();
    assert!(!head.contains('_'), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("\r\nx-kept: yes\r\n"),
        "{head}"
    );
    assert!(seen[0].ends_with("\r\n\r\nbody"), "{}", seen[0]);
    assert!(s.internal.requests().is_empty());
}

#[test]
fn a_cohort_header_with_an_underscore_is_refused() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut c = config(
        "127.0.0.1:1".parse().expect("addr"),
        "127.0.0.1:1".parse().expect("addr"),
    );
    c.cohort_header = "X_Traffic_Group".into();
    let err = rt
        .block_on(cohort_router::table::Table::build(c))
        .expect_err("refused");
    assert!(
        matches!(err, cohort_router::table::TableError::Underscore(ref h) if h == "X_Traffic_Group"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_host_or_with_two_hosts_gets_400() {
    let s = setup(Limits::default()).await;
    for (request, why) in [
        (
            &b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
            "needs a Host header",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
            "2 Host headers",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
            "not a valid host",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: u@a.example\r\nConnection: close\r\n\r\n",
            "not a valid host",
        ),
        (
            b"GET ftp://a.example/ HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
            "http or https URI",
        ),
    ] {
        let (status, answer) = raw(s.addr, request).await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer.contains(why), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("\r\nconnection: close\r\n"),
            "{answer}"
        );
    }
    // HTTP/1.0 has no Host requirement.
    let (status, answer) = raw(s.addr, b"GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        s.production.requests().len(),
        1,
        "only the HTTP/1.0 request got through"
    );
    metrics_say(
        &s.router,
        "cohort_router_client_errors_total{track=\"none\",kind=\"bad_host\"} 4",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_becomes_the_host() {
    let s = setup(Limits::default()).await;
    let (status, answer) = raw(
        s.addr,
        b"GET http://shop.example:8443/cart?x=1 HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let seen = s.production.requests();
    let head = seen[0].to_ascii_lowercase();
    assert!(head.starts_with("get /cart?x=1 http/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nhost: shop.example:8443\r\n"), "{head}");
    assert!(!head.contains("other.example"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_strip_host_or_the_headers_the_router_relies_on() {
    let s = setup(Limits::default()).await;
    let (status, answer) = raw(
        s.addr,
        b"GET / HTTP/1.1\r\nHost: shop.example\r\nConnection: close, Host, X-Traffic-Group, X-Forwarded-For, X-User-Id, X-Secret\r\nX-Traffic-Group: INTERNAL\r\nX-Forwarded-For: 10.1.2.3\r\nX-User-Id: u-7\r\nX-Secret: hop\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.ends_with("internal"), "{answer}");
    let seen = s.internal.requests();
    let head = seen[0].to_ascii_lowercase();
    for kept in [
        "\r\nhost: shop.example\r\n",
        "\r\nx-traffic-group: internal\r\n",
        "\r\nx-forwarded-for: 10.1.2.3, 127.0.0.1\r\n",
        "\r\nx-user-id: u-7\r\n",
    ] {
        assert!(head.contains(kept), "{kept:?} missing in {head}");
    }
    assert!(
        !head.contains("x-secret"),
        "other headers Connection names still go: {head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_x_forwarded_for_is_folded_in_order() {
    let s = setup(Limits::default()).await;
    let (status, answer) = raw(
        s.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2, 3.3.3.3\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let head = s.production.requests()[0].to_ascii_lowercase();
    assert_eq!(head.matches("x-forwarded-for:").count(), 1, "{head}");
    assert!(
        head.contains("\r\nx-forwarded-for: 1.1.1.1, 2.2.2.2, 3.3.3.3, 127.0.0.1\r\n"),
        "{head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_cohort_headers_reach_the_track_as_the_one_used() {
    let s = setup(Limits::default()).await;
    let (status, answer) = raw(
        s.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Traffic-Group: INTERNAL\r\nX-Traffic-Group: ENTERPRISE\r\nX-User-Id: u-1\r\nX-User-Id: u-2\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.ends_with("internal"), "{answer}");
    let head = s.internal.requests()[0].to_ascii_lowercase();
    assert_eq!(head.matches("x-traffic-group:").count(), 1, "{head}");
    assert!(head.contains("\r\nx-traffic-group: internal\r\n"), "{head}");
    assert_eq!(head.matches("x-user-id:").count(), 1, "{head}");
    assert!(head.contains("\r\nx-user-id: u-1\r\n"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused_with_405() {
    let s = setup(Limits::default()).await;
    let (status, answer) = raw(
        s.addr,
        b"CONNECT internal.example:443 HTTP/1.1\r\nHost: internal.example:443\r\n\r\n",
    )
    .await;
    assert_eq!(status, 405, "{answer}");
    assert!(answer.contains("CONNECT is not supported"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("\r\nallow: get, head, post"),
        "{answer}"
    );
    assert!(s.production.requests().is_empty() && s.internal.requests().is_empty());
    metrics_say(
        &s.router,
        "cohort_router_client_errors_total{track=\"none\",kind=\"connect\"} 1",
    )
    .await;
}

/// A request head of exactly `size` bytes.
fn head_of(size: usize) -> Vec<u8> {
    let start = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: ";
    let end = "\r\n\r\n";
    format!("{start}{}{end}", "p".repeat(size - start.len() - end.len())).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_header_bytes_is_exact() {
    for limit in [16 * 1024, 64 * 1024] {
        let s = setup(Limits {
            max_header_bytes: limit,
            ..Limits::default()
        })
        .await;
        let (status, answer) = raw(s.addr, &head_of(limit)).await;
        assert_eq!(
            status,
            200,
            "a head of exactly {limit} bytes: {}",
            &answer[..answer.len().min(200)]
        );
        for over in [limit + 1, limit + 2048, limit * 7 / 4] {
            let (status, answer) = raw(s.addr, &head_of(over)).await;
            assert_eq!(status, 431, "a head of {over} bytes, limit {limit}: {answer}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_100_header_fields_get_431() {
    let s = setup(Limits::default()).await;
    let with = |fields: usize| {
        let mut r = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_string();
        for i in 0..fields - 2 {
            r.push_str(&format!("X-H{i}: v\r\n"));
        }
        r + "\r\n"
    };
    assert_eq!(raw(s.addr, with(100).as_bytes()).await.0, 200);
    assert_eq!(raw(s.addr, with(101).as_bytes()).await.0, 431);
}

/// A backend that answers after `delay` and reports the most connections it had open at once
/// for traffic (the router's health checks left out).
async fn slow_counting_backend(delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (open, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let peak = Arc::clone(&most);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (open, peak) = (Arc::clone(&open), Arc::clone(&peak));
            let counted = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let this = Arc::clone(&counted);
            let opened = Arc::clone(&open);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    if req.uri().path() != "/healthz" && !this.swap(true, Ordering::SeqCst) {
                        let now = opened.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                    }
                    async move {
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
                if counted.load(Ordering::SeqCst) {
                    open.fetch_sub(1, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, most)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_http2_connection_opens_at_most_max_streams_upstream_connections() {
    let (backend, most) = slow_counting_backend(Duration::from_millis(200)).await;
    let internal = recorder("internal").await;
    let (addr, _router) = start(config(internal.addr, backend), Limits::default()).await;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let mut requests = vec![];
    for i in 0..300 {
        let mut sender = sender.clone();
        requests.push(tokio::spawn(async move {
            let req = Request::get(format!("http://x/{i}"))
                .body(Empty::<Bytes>::new())
                .expect("request");
            sender.send_request(req).await.map(|r| r.status().as_u16())
        }));
    }
    for r in requests {
        assert_eq!(
            r.await.expect("task").expect("answered"),
            200,
            "every request waits its turn"
        );
    }
    let most = most.load(Ordering::SeqCst);
    // A finished request's connection can still be on its way back to the pool when the next
    // request starts and opens another: a few over the cap, never unbounded (135 before).
    let cap = Limits::default().max_streams as usize;
    assert!(
        most <= cap + cap / 10,
        "one client connection had {most} connections open to the track at once"
    );
}

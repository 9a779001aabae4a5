//! The router's own HTTP/1.1 path (`cohort_router::express`), against tracks that answer in
//! every way HTTP/1.1 allows and in some ways it does not: chunked and until-close bodies,
//! answers without a body, interim answers, unasked upgrades, heads too large, garbage, bytes
//! after an answer, a pooled connection the track closed, a track that dies mid-body. Raw bytes
//! on real loopback sockets on both sides, so nothing is smoothed over by a client library.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cohort_core::router_config::{RouterConfig, RouterHealthCheck, RouterRoute, RouterTrack, TrackWeight};
use cohort_core::{TrackName, TrustedPeers, Version, Weight};
use cohort_router::proxy::{Limits, Router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod common;

/// What a scripted track does with one request.
enum Reply {
    /// Writes these bytes and reads the connection's next request.
    Send(Vec<u8>),
    /// Writes these bytes and closes the connection.
    SendAndClose(Vec<u8>),
    /// Closes the connection without a word.
    Close,
}

fn ok(body: &str) -> Reply {
    Reply::Send(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A track whose every answer `script` decides from the request's head, the number of the
/// connection it came on (from 0) and its number on that connection (from 0). Health checks
/// are answered 200 and not counted. Requests with a body have it read (Content-Length).
async fn track<F>(script: F) -> SocketAddr
where
    F: Fn(&str, usize, usize) -> Reply + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let script = Arc::new(script);
    let connections = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let script = Arc::clone(&script);
            let connections = Arc::clone(&connections);
            tokio::spawn(async move {
                let mut conn = None;
                let mut nth = 0;
                let mut got = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    let Some(end) = find(&got, b"\r\n\r\n") else {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&got[..end]).into_owned();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while got.len() < end + 4 + length {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    got.drain(..end + 4 + length);
                    let reply = if head.starts_with("GET /healthz ") {
                        ok("healthy")
                    } else {
                        let c = *conn.get_or_insert_with(|| connections.fetch_add(1, Ordering::SeqCst));
                        nth += 1;
                        script(&head, c, nth - 1)
                    };
                    match reply {
                        Reply::Send(bytes) => {
                            if s.write_all(&bytes).await.is_err() {
                                return;
                            }
                        }
                        Reply::SendAndClose(bytes) => {
                            let _ = s.write_all(&bytes).await;
                            return;
                        }
                        Reply::Close => return,
                    }
                }
            });
        }
    });
    addr
}

/// Every request goes to one track, `production`, at `backend`.
fn config(backend: SocketAddr) -> RouterConfig {
    let production = TrackName::new("production").expect("track");
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
        tracks: vec![RouterTrack {
            name: production.clone(),
            version: Version::new("1.15.0").expect("version"),
            backends: vec![backend.to_string()],
            endpoints: None,
        }],
        cohorts: vec![],
        default_route: RouterRoute {
            cohort: None,
            weights: vec![TrackWeight {
                track: production,
                weight: Weight::from_basis_points(10_000).expect("weight"),
            }],
            redistributed: vec![],
        },
        mirrors: vec![],
    }
}

async fn start(backend: SocketAddr) -> (SocketAddr, Arc<Router>) {
    start_with(backend, Limits::default()).await
}

async fn start_with(backend: SocketAddr, limits: Limits) -> (SocketAddr, Arc<Router>) {
    common::start_router(config(backend), limits).await
}

/// A client connection reading answers one by one, whatever their framing.
struct Client {
    s: TcpStream,
    got: Vec<u8>,
}

/// One answer as the client got it: status, head (lower-cased) and body (de-chunked), and
/// the trailers of a chunked body.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
    trailers: String,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        Client {
            s: TcpStream::connect(addr).await.expect("connect"),
            got: Vec::new(),
        }
    }

    async fn send(&mut self, request: &str) {
        self.s.write_all(request.as_bytes()).await.expect("write");
    }

    async fn more(&mut self) -> bool {
        let mut buf = [0u8; 8192];
        match self.s.read(&mut buf).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.got.extend_from_slice(&buf[..n]);
                true
            }
        }
    }

    /// Bytes up to and without `delimiter`, consumed with it.
    async fn until(&mut self, delimiter: &[u8]) -> Option<Vec<u8>> {
        loop {
            if let Some(at) = find(&self.got, delimiter) {
                let taken = self.got[..at].to_vec();
                self.got.drain(..at + delimiter.len());
                return Some(taken);
            }
            if !self.more().await {
                return None;
            }
        }
    }

    async fn exactly(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.got.len() < n {
            if !self.more().await {
                return None;
            }
        }
        Some(self.got.drain(..n).collect())
    }

    /// The next answer (to a HEAD request when `head_request`); `None` if the connection
    /// closed before it was whole. Fails the test after 5 s.
    async fn answer(&mut self, head_request: bool) -> Option<Answer> {
        let read = tokio::time::timeout(Duration::from_secs(5), self.read_answer(head_request)).await;
        match read {
            Ok(answer) => answer,
            Err(_) => panic!(
                "no answer (nor a close) within 5 s; got {:?}",
                String::from_utf8_lossy(&self.got)
            ),
        }
    }

    async fn read_answer(&mut self, head_request: bool) -> Option<Answer> {
        let head = String::from_utf8_lossy(&self.until(b"\r\n\r\n").await?).to_ascii_lowercase();
        let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
        let field = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        let mut trailers = String::new();
        let body = if head_request || status == 204 || status == 304 || status < 200 {
            Vec::new()
        } else if field("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
            let mut body = Vec::new();
            loop {
                let line = String::from_utf8_lossy(&self.until(b"\r\n").await?).into_owned();
                let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
                if size == 0 {
                    loop {
                        let line = self.until(b"\r\n").await?;
                        if line.is_empty() {
                            break;
                        }
                        trailers.push_str(&String::from_utf8_lossy(&line));
                        trailers.push('\n');
                    }
                    break;
                }
                body.extend(self.exactly(size).await?);
                self.exactly(2).await?;
            }
            body
        } else {
            let length: usize = field("content-length:")?.parse().ok()?;
            self.exactly(length).await?
        };
        Some(Answer {
            status,
            head,
            body,
            trailers,
        })
    }

    /// True when the router closed the connection (within 5 s).
    async fn closed(&mut self) -> bool {
        tokio::time::timeout(Duration::from_secs(5), self.more())
            .await
            .is_ok_and(|more| !more)
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: shop\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_and_until_close_answers_reach_the_client_whole_and_its_connection_stays_open() {
    let backend = track(|head, _, _| {
        if head.starts_with("GET /chunked ") {
            Reply::Send(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Checksum: 42\r\n\r\n"
                    .to_vec(),
            )
        } else if head.starts_with("GET /until-close ") {
            Reply::SendAndClose(b"HTTP/1.1 200 OK\r\nX-Kind: old\r\n\r\nuntil the end".to_vec())
        } else {
            ok("plain")
        }
    })
    .await;
    let (addr, _router) = start(backend).await;
    let mut c = Client::connect(addr).await;
    c.send(&get("/chunked")).await;
    let chunked = c.answer(false).await.expect("chunked answer");
    assert_eq!(
        (chunked.status, chunked.body.as_slice()),
        (200, &b"hello, world"[..])
    );
    assert!(
        chunked.trailers.contains("X-Checksum: 42"),
        "trailers pass: {chunked:?}"
    );
    c.send(&get("/until-close")).await;
    let until = c.answer(false).await.expect("until-close answer");
    assert_eq!(until.body, b"until the end");
    assert!(
        until.head.contains("transfer-encoding: chunked"),
        "delimited for the client, so its connection can go on: {}",
        until.head
    );
    c.send(&get("/plain")).await;
    assert_eq!(c.answer(false).await.expect("third answer").body, b"plain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_without_a_body_end_at_their_head_and_the_connection_goes_on() {
    let backend = track(|head, _, _| {
        let path = head.split(' ').nth(1).unwrap_or("");
        match path {
            // A HEAD's answer says how long the GET's body would be, and has none.
            "/sized" => Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec()),
            "/no-content" => Reply::Send(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()),
            "/not-modified" => Reply::Send(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n".to_vec()),
            _ => ok("after"),
        }
    })
    .await;
    let (addr, _router) = start(backend).await;
    let mut c = Client::connect(addr).await;
    c.send("HEAD /sized HTTP/1.1\r\nHost: shop\r\n\r\n").await;
    let head = c.answer(true).await.expect("HEAD answer");
    assert_eq!(head.status, 200);
    assert!(head.head.contains("content-length: 100"), "{}", head.head);
    for (path, status) in [("/no-content", 204), ("/not-modified", 304)] {
        c.send(&get(path)).await;
        assert_eq!(c.answer(false).await.expect("answer").status, status);
    }
    c.send(&get("/after")).await;
    let after = c.answer(false).await.expect("answer after");
    assert_eq!(
        after.body, b"after",
        "no byte was taken for a body that was not there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_answers_are_dropped_and_the_final_one_passes() {
    let backend = track(|_, _, _| {
        Reply::Send(
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"
                .to_vec(),
        )
    })
    .await;
    let (addr, _router) = start(backend).await;
    let mut c = Client::connect(addr).await;
    for _ in 0..2 {
        c.send(&get("/")).await;
        let a = c.answer(false).await.expect("answer");
        assert_eq!((a.status, a.body.as_slice()), (200, &b"final"[..]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_that_breaks_http_gets_502_at_once_naming_it() {
    let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..1000 {
        huge.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "f".repeat(60)).as_bytes());
    }
    huge.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let backend = track(move |head, _, _| {
        let path = head.split(' ').nth(1).unwrap_or("");
        match path {
            "/switch" => Reply::Send(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
                    .to_vec(),
            ),
            "/huge" => Reply::Send(huge.clone()),
            "/garbage" => Reply::Send(b"SSH-2.0-OpenSSH_9.2\r\n".to_vec()),
            "/two-lengths" => {
                Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc".to_vec())
            }
            _ => ok("fine"),
        }
    })
    .await;
    let (addr, router) = start(backend).await;
    for path in ["/switch", "/huge", "/garbage", "/two-lengths"] {
        let mut c = Client::connect(addr).await;
        let started = Instant::now();
        c.send(&get(path)).await;
        let a = c.answer(false).await.expect("the router's answer");
        assert_eq!(a.status, 502, "{path}: {a:?}");
        let body = String::from_utf8_lossy(&a.body);
        assert!(
            body.contains("track production"),
            "{path}: names the track: {body}"
        );
        assert!(!body.contains("1.15.0"), "{path}: not the version: {body}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{path}: at once, not after the response timeout"
        );
        // The client's connection goes on: nothing of the bad answer reached it.
        c.send(&get("/fine")).await;
        assert_eq!(
            c.answer(false).await.expect("next answer").body,
            b"fine",
            "{path}"
        );
    }
    let text = router.metrics.render(&router.table());
    let errors: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("cohort_router_upstream_errors_total{track=\"production\",kind=\"response\"}")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(errors, 4.0, "each counted as the track's error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_a_whole_answer_are_never_passed_on_as_the_next_answer() {
    let backend = track(|head, _, _| {
        if head.starts_with("GET /extra ") {
            // A body longer than its Content-Length, shaped like a second answer.
            Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!".to_vec())
        } else {
            ok("mine")
        }
    })
    .await;
    let (addr, _router) = start(backend).await;
    let mut c = Client::connect(addr).await;
    c.send(&get("/extra")).await;
    assert_eq!(c.answer(false).await.expect("answer").body, b"ok");
    for _ in 0..3 {
        c.send(&get("/mine")).await;
        assert_eq!(c.answer(false).await.expect("answer").body, b"mine");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_track_closed_is_retried_for_get_and_not_for_patch() {
    // Each connection answers its first request and drops the second unanswered, as a
    // track does when its keep-alive timeout ends just as a request arrives.
    let backend = track(|_, conn, nth| {
        if nth == 0 {
            ok(&format!("conn {conn}"))
        } else {
            Reply::Close
        }
    })
    .await;
    let (addr, _router) = start(backend).await;
    let mut c = Client::connect(addr).await;
    c.send(&get("/first")).await;
    assert_eq!(c.answer(false).await.expect("first").body, b"conn 0");
    c.send(&get("/second")).await;
    let second = c.answer(false).await.expect("second");
    assert_eq!(
        (second.status, second.body.as_slice()),
        (200, &b"conn 1"[..]),
        "a GET is sent again on a new connection"
    );
    c.send("PATCH /third HTTP/1.1\r\nHost: shop\r\n\r\n").await;
    let third = c.answer(false).await.expect("third");
    assert_eq!(
        third.status, 502,
        "a PATCH may have been acted on: not sent twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let backend = track(|head, _, _| ok(head.split(' ').nth(1).unwrap_or(""))).await;
    let (addr, _router) = start(backend).await;
    let mut c = Client::connect(addr).await;
    c.send(&format!("{}{}{}", get("/1"), get("/2"), get("/3"))).await;
    for want in ["/1", "/2", "/3"] {
        assert_eq!(c.answer(false).await.expect("answer").body, want.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_body_between_plain_ones_is_answered_on_the_same_connection() {
    let backend = track(|head, _, _| {
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_else(|| "none".into());
        ok(&format!("{} {length}", head.split(' ').next().unwrap_or("")))
    })
    .await;
    let (addr, _router) = start(backend).await;
    let mut c = Client::connect(addr).await;
    c.send(&get("/a")).await;
    assert_eq!(c.answer(false).await.expect("GET").body, b"GET none");
    c.send("POST /orders HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    assert_eq!(c.answer(false).await.expect("POST").body, b"POST 5");
    c.send(&get("/b")).await;
    assert_eq!(c.answer(false).await.expect("GET after").body, b"GET none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_that_dies_mid_body_closes_the_clients_connection_instead_of_hanging_it() {
    let backend = track(|_, _, _| {
        Reply::SendAndClose(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..".to_vec())
    })
    .await;
    let (addr, _router) = start(backend).await;
    let mut c = Client::connect(addr).await;
    c.send(&get("/")).await;
    assert!(c.answer(false).await.is_none(), "the answer cannot be whole");
    assert!(c.closed().await, "and the connection is closed, not left waiting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_body_passes_in_pieces_as_it_comes() {
    let body: String = (0..200_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let expected = body.clone();
    let backend = track(move |_, _, _| ok(&body)).await;
    let (addr, _router) = start(backend).await;
    let mut c = Client::connect(addr).await;
    for _ in 0..3 {
        c.send(&get("/big")).await;
        let a = c.answer(false).await.expect("answer");
        assert_eq!(a.body.len(), expected.len());
        assert!(a.body == expected.as_bytes(), "the body is intact");
    }
}

/// Found by review: after a read that filled the buffer exactly, the runtime still held the
/// socket as readable, and the read that followed waited with no header timeout, so a
/// client could hold a connection slot for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_connection_closes_at_the_header_timeout_even_after_a_read_that_filled_the_buffer() {
    let backend = track(|_, _, _| ok("x")).await;
    let limits = Limits {
        header_read_timeout: Duration::from_secs(1),
        park_after: Duration::ZERO,
        ..Limits::default()
    };
    let (addr, _router) = start_with(backend, limits).await;
    // Pipelined GETs of exactly the sizes a read buffer has here (8 KiB new, 16 KiB reused).
    for size in [8 * 1024, 16 * 1024] {
        let mut requests = String::new();
        let mut count = 0;
        while size - requests.len() > 2 * 1024 {
            requests.push_str(&get("/fill"));
            count += 1;
        }
        let base = "GET /last HTTP/1.1\r\nHost: shop\r\nX-Pad: \r\n\r\n".len();
        let pad = size - requests.len() - base;
        requests.push_str(&format!(
            "GET /last HTTP/1.1\r\nHost: shop\r\nX-Pad: {}\r\n\r\n",
            "p".repeat(pad)
        ));
        assert_eq!(requests.len(), size);
        let mut c = Client::connect(addr).await;
        c.send(&requests).await;
        for _ in 0..=count {
            assert_eq!(c.answer(false).await.expect("answer").status, 200);
        }
        let started = Instant::now();
        assert!(c.closed().await, "{size}: closed at the header timeout");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{size}: {:?}",
            started.elapsed()
        );
    }
}

/// Found by review: while a track's body stalled, the router waited for it even after the
/// client had gone, holding the client's slot and the track's connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_during_a_stalled_body_frees_its_slot_at_once() {
    let backend = track(|head, _, _| {
        if head.starts_with("GET /stall ") {
            // Seven bytes of a hundred, and the connection stays open.
            Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nseven..".to_vec())
        } else {
            ok("served")
        }
    })
    .await;
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let (addr, _router) = start_with(backend, limits).await;
    let mut first = Client::connect(addr).await;
    first.send(&get("/stall")).await;
    first
        .until(b"seven..")
        .await
        .expect("the first bytes of the body");
    drop(first);
    let started = Instant::now();
    let mut second = Client::connect(addr).await;
    second.send(&get("/next")).await;
    let next = second.answer(false).await.expect("the next client is served");
    assert_eq!(next.body, b"served");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_for_the_response_timeout_ends_the_clients_connection() {
    let backend =
        track(|_, _, _| Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nseven..".to_vec())).await;
    let limits = Limits {
        response_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let (addr, _router) = start_with(backend, limits).await;
    let mut c = Client::connect(addr).await;
    c.send(&get("/")).await;
    let started = Instant::now();
    assert!(c.answer(false).await.is_none(), "the answer cannot be whole");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// Found by review: a track's `Connection: Content-Length` made the router drop the length, so
/// the client read the next answer as this one's body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_whose_length_the_track_lists_in_connection_is_still_framed() {
    let backend = track(|head, _, _| {
        if head.starts_with("GET /listed ") {
            Reply::Send(
                b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
            )
        } else {
            ok("next")
        }
    })
    .await;
    let (addr, _router) = start(backend).await;
    let mut c = Client::connect(addr).await;
    c.send(&format!("{}{}", get("/listed"), get("/next"))).await;
    assert_eq!(c.answer(false).await.expect("first").body, b"hello");
    assert_eq!(c.answer(false).await.expect("second").body, b"next");
}

/// Found by review: a head larger than `--max-header-bytes` that arrived in one read was
/// forwarded by the router's own path instead of refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_header_bytes_holds_on_the_routers_own_path() {
    let backend = track(|_, _, _| ok("forwarded")).await;
    let limits = Limits {
        max_header_bytes: 2048,
        ..Limits::default()
    };
    let (addr, _router) = start_with(backend, limits).await;
    let mut c = Client::connect(addr).await;
    c.send(&format!(
        "GET / HTTP/1.1\r\nHost: shop\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(5000)
    ))
    .await;
    assert_eq!(c.answer(false).await.expect("answer").status, 431);
}

use super::*;
use http::HeaderName;

fn parse(head: &[u8]) -> Result<(String, usize, bool), General> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let h = parse_request(head, &mut storage)?;
    Ok((format!("{} {}", h.method, h.target), h.len, h.close))
}

fn rewritten(head: &[u8], spoofed: bool) -> String {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let h = parse_request(head, &mut storage).expect("plain");
    let cohort = HeaderName::from_static("x-traffic-group");
    let sticky = HeaderName::from_static("x-user-id");
    let mut out = Vec::new();
    write_request(
        &h,
        &Rewrite {
            cohort_header: &cohort,
            sticky_header: Some(&sticky),
            spoofed,
            forwarded_for: b"10.0.0.9",
        },
        &mut out,
    );
    String::from_utf8(out).expect("ascii")
}

#[test]
fn a_plain_get_is_forwarded_here_with_its_head_length() {
    let head = b"GET /a?b=1 HTTP/1.1\r\nHost: shop\r\n\r\nGET /next";
    assert_eq!(parse(head), Ok(("GET /a?b=1".into(), 35, false)));
    let close = b"GET / HTTP/1.1\r\nHost: shop\r\nConnection: keep-alive, Close\r\n\r\n";
    assert_eq!(parse(close).map(|p| p.2), Ok(true));
    let zero = b"DELETE /x HTTP/1.1\r\nHost: shop\r\nContent-Length: 0\r\n\r\n";
    for host in [
        "shop.example.com:8080",
        "10.0.0.7:80",
        "svc-1.ns.svc.cluster.local",
        "a_b~c",
    ] {
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        assert!(
            parse_request(req.as_bytes(), &mut storage).is_ok(),
            "{host} is plain"
        );
    }
    assert!(parse(zero).is_ok());
}

#[test]
fn what_is_not_plain_goes_to_the_general_path() {
    let cases: &[(&[u8], General)] = &[
        (b"GET / HTTP/1.1\r\nHost: shop\r\n", General::Partial),
        (b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n", General::Malformed),
        (b"GET / HTTP/1.0\r\nHost: shop\r\n\r\n", General::Version),
        (
            b"CONNECT shop:443 HTTP/1.1\r\nHost: shop:443\r\n\r\n",
            General::Connect,
        ),
        (
            b"GET http://shop/ HTTP/1.1\r\nHost: shop\r\n\r\n",
            General::Target,
        ),
        (b"GET /a#frag HTTP/1.1\r\nHost: shop\r\n\r\n", General::Target),
        (b"GET /{x} HTTP/1.1\r\nHost: shop\r\n\r\n", General::Target),
        (b"GET * HTTP/1.1\r\nHost: shop\r\n\r\n", General::Target),
        (b"GET / HTTP/1.1\r\n\r\n", General::Host),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", General::Host),
        (b"GET / HTTP/1.1\r\nHost: u@shop\r\n\r\n", General::Host),
        (b"GET / HTTP/1.1\r\nHost: \r\n\r\n", General::Host),
        (b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", General::Host),
        (b"GET / HTTP/1.1\r\nHost: shop:\r\n\r\n", General::Host),
        (b"GET / HTTP/1.1\r\nHost: shop:80a\r\n\r\n", General::Host),
        (b"GET / HTTP/1.1\r\nHost: shop:123456\r\n\r\n", General::Host),
        (b"GET / HTTP/1.1\r\nHost: :80\r\n\r\n", General::Host),
        (b"GET / HTTP/1.1\r\nHost: sh%6Fp\r\n\r\n", General::Host),
        (b"GET / HTTP/1.1\r\nHost: shop/x\r\n\r\n", General::Host),
        (
            b"POST / HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\n\r\nhello",
            General::Body,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: shop\r\nContent-Length: 00\r\n\r\n",
            General::Body,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n",
            General::Body,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: shop\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            General::Upgrade,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: shop\r\nExpect: 100-continue\r\n\r\n",
            General::Upgrade,
        ),
    ];
    for (head, why) in cases {
        assert_eq!(parse(head), Err(*why), "{}", String::from_utf8_lossy(head));
    }
    let mut many = b"GET / HTTP/1.1\r\nHost: shop\r\n".to_vec();
    for i in 0..MAX_HEADERS {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(
        parse(&many),
        Err(General::Malformed),
        "more header lines than allowed"
    );
}

#[test]
fn the_tracks_head_loses_hop_by_hop_headers_and_gains_the_forwarding_ones() {
    let head = b"GET /p HTTP/1.1\r\nHost: shop\r\nConnection: keep-alive, X-Secret, Host, X-Traffic-Group\r\n\
Keep-Alive: timeout=5\r\nProxy-Authorization: Basic x\r\nTE: gzip\r\nX-Secret: s\r\nX_Traffic_Group: PAID\r\n\
X-Traffic-Group: FREE\r\nX-Traffic-Group: PAID\r\nX-User-Id: u1\r\nX-User-Id: u2\r\n\
X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2, 3.3.3.3\r\nX-Forwarded-Proto: https\r\nAccept: */*\r\n\r\n";
    assert_eq!(
        rewritten(head, false),
        "GET /p HTTP/1.1\r\nHost: shop\r\nX-Traffic-Group: FREE\r\nX-User-Id: u1\r\nAccept: */*\r\n\
x-forwarded-for: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9\r\nx-forwarded-proto: http\r\n\r\n"
    );
}

#[test]
fn a_spoofed_cohort_header_does_not_reach_the_track() {
    let head = b"GET / HTTP/1.1\r\nhost: shop\r\nx-traffic-group: INTERNAL\r\n\r\n";
    assert_eq!(
        rewritten(head, true),
        "GET / HTTP/1.1\r\nhost: shop\r\nx-forwarded-for: 10.0.0.9\r\nx-forwarded-proto: http\r\n\r\n"
    );
}

fn response(bytes: &[u8], head_request: bool) -> (Result<Framing, BadResponse>, bool, String) {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let head = parse_response(bytes, &mut storage)
        .expect("parses")
        .expect("complete");
    let framing = head.framing(head_request);
    let mut out = Vec::new();
    let alive = framing.as_ref().map(|f| head.keeps_alive(*f)).unwrap_or(false);
    if let Ok(f) = &framing {
        let f = *f;
        write_response(&head, f, false, &mut out);
    }
    (framing, alive, String::from_utf8(out).expect("ascii"))
}

#[test]
fn a_responses_body_is_delimited_as_rfc_9112_says() {
    let ok = |b: &[u8], head| response(b, head).0;
    assert_eq!(
        ok(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", false),
        Ok(Framing::Length(12))
    );
    assert_eq!(
        ok(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", true),
        Ok(Framing::Empty)
    );
    assert_eq!(ok(b"HTTP/1.1 204 No Content\r\n\r\n", false), Ok(Framing::Empty));
    assert_eq!(
        ok(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", false),
        Ok(Framing::Empty)
    );
    assert_eq!(
        ok(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
            false
        ),
        Ok(Framing::Chunked)
    );
    assert_eq!(
        ok(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false),
        Ok(Framing::UntilClose)
    );
    assert_eq!(ok(b"HTTP/1.1 200 OK\r\n\r\n", false), Ok(Framing::UntilClose));
    assert_eq!(
        ok(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", false),
        Ok(Framing::Length(5))
    );
    for bad in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    ] {
        assert_eq!(
            ok(bad, false),
            Err(BadResponse::Length),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(
        ok(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", false),
        Err(BadResponse::Switched)
    );
}

#[test]
fn the_track_connection_is_kept_only_when_the_answer_allows() {
    assert!(response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false).1);
    assert!(
        !response(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false
        )
        .1
    );
    assert!(!response(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false).1);
    assert!(
        !response(b"HTTP/1.1 200 OK\r\n\r\n", false).1,
        "delimited by the close"
    );
}

#[test]
fn the_clients_head_loses_hop_by_hop_headers_and_states_its_framing() {
    let (_, _, out) = response(
        b"HTTP/1.0 200 Fine\r\nConnection: X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=1\r\nX-Track: canary\r\n\r\n",
        false,
    );
    assert_eq!(
        out,
        "HTTP/1.1 200 Fine\r\nX-Track: canary\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    let (_, _, out) = response(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        false,
    );
    assert_eq!(out, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
    let (_, _, out) = response(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\n", false);
    assert_eq!(out, "HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\n\r\n");
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let head = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", &mut storage)
        .expect("parses")
        .expect("complete");
    let mut out = Vec::new();
    write_response(&head, Framing::Length(0), true, &mut out);
    assert!(out.ends_with(b"connection: close\r\n\r\n"));
}

#[test]
fn a_response_head_is_told_partial_until_it_ends() {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    assert!(matches!(
        parse_response(b"HTTP/1.1 200 OK\r\nX: 1\r\n", &mut storage),
        Ok(None)
    ));
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    assert!(matches!(
        parse_response(b"SMTP ready\r\n\r\n", &mut storage),
        Err(BadResponse::Malformed(_))
    ));
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let interim = parse_response(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n",
        &mut storage,
    )
    .expect("parses")
    .expect("complete");
    assert!(interim.is_interim());
    assert_eq!(interim.len, 40);
}

/// Scans `body` split at every point into two reads: the end is found at the same byte.
fn scanned(body: &[u8]) -> Result<(usize, bool), BadResponse> {
    let mut whole = Chunks::default();
    let used = whole.scan(body)?;
    for split in 0..body.len() {
        let mut c = Chunks::default();
        let a = c.scan(&body[..split])?;
        assert_eq!(a, split.min(used), "the first read is body up to the end");
        let b = if c.is_done() { 0 } else { c.scan(&body[split..])? };
        assert_eq!(a + b, used, "split at {split}");
        assert_eq!(c.is_done(), whole.is_done());
    }
    Ok((used, whole.is_done()))
}

#[test]
fn a_chunked_body_ends_where_its_last_chunk_and_trailers_end() {
    let body =
        b"5\r\nhello\r\n1A;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: t\r\n\r\nHTTP/1.1 200";
    assert_eq!(scanned(body), Ok((body.len() - 12, true)));
    assert_eq!(scanned(b"0\r\n\r\n"), Ok((5, true)));
    assert_eq!(scanned(b"3\r\nabc\r\n"), Ok((8, false)));
    for bad in [
        &b"x\r\n"[..],
        b"3\r\nabcd\r\n",
        b"3\nabc\r\n",
        b"3\r\nabc\r\n0\r\nX: 1\n\r\n",
        b"10000000000000000\r\n",
    ] {
        assert_eq!(
            Chunks::default().scan(bad),
            Err(BadResponse::Chunked),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let mut long = b"1;".to_vec();
    long.extend(std::iter::repeat_n(b'e', MAX_CHUNK_OVERHEAD + 1));
    assert_eq!(
        Chunks::default().scan(&long),
        Err(BadResponse::Chunked),
        "extensions are bounded"
    );
    let mut trailers = b"0\r\n".to_vec();
    for _ in 0..(MAX_CHUNK_OVERHEAD / 6 + 1) {
        trailers.extend_from_slice(b"X: 123\r\n");
    }
    assert_eq!(
        Chunks::default().scan(&trailers),
        Err(BadResponse::Chunked),
        "trailers are bounded"
    );
}

#[test]
fn the_routers_own_answer_is_delimited() {
    let mut out = Vec::new();
    write_local(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "shop: down\n",
        &[("retry-after", "1")],
        true,
        &mut out,
    );
    assert_eq!(
        String::from_utf8(out).expect("ascii"),
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 11\r\n\
retry-after: 1\r\nconnection: close\r\n\r\nshop: down\n"
    );
}

#[test]
fn a_written_request_reads_back_as_the_same_parts_for_a_mirror() {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let input =
        b"GET /a?b=1 HTTP/1.1\r\nHost: shop\r\nX-Traffic-Group: FREE\r\nConnection: keep-alive\r\n\r\n";
    let head = parse_request(input, &mut storage).expect("plain");
    let mut out = Vec::new();
    let cohort = HeaderName::from_static("x-traffic-group");
    let rewrite = Rewrite {
        cohort_header: &cohort,
        sticky_header: None,
        spoofed: false,
        forwarded_for: b"10.0.0.7",
    };
    write_request(&head, &rewrite, &mut out);
    let parts = request_parts(&out).expect("parts");
    assert_eq!(parts.method, http::Method::GET);
    assert_eq!(parts.uri, "/a?b=1");
    assert_eq!(parts.headers["host"], "shop");
    assert_eq!(parts.headers["x-traffic-group"], "FREE");
    assert_eq!(parts.headers["x-forwarded-for"], "10.0.0.7");
    assert!(parts.headers.get("connection").is_none());
    assert!(
        request_parts(b"GET / HTTP/1.1\r\nHost: x\r\n").is_none(),
        "not whole"
    );
}

#[test]
fn a_response_head_is_ready_once_its_blank_line_is_in_or_it_cannot_be_one() {
    for (buf, ready) in [
        (&b""[..], false),
        (b"HTT", false),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", false),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r", false),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true),
        (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", true),
        (b"HTTP/1.1 200 OK\r\n\r\n", true),
        (b"SSH-2.0-OpenSSH", true),
        (b"<html>", true),
    ] {
        assert_eq!(
            response_head_ready(buf),
            ready,
            "{}",
            String::from_utf8_lossy(buf)
        );
        // Ready means a parse completes or fails; not ready means it is partial.
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let parsed = parse_response(buf, &mut storage);
        assert_eq!(
            !matches!(parsed, Ok(None)),
            ready,
            "{}",
            String::from_utf8_lossy(buf)
        );
    }
    assert!(maybe_interim(b"HTTP/1.1 100 Continue\r\n\r\n"));
    assert!(
        maybe_interim(b"HTTP/1.1  200 OK\r\n\r\n"),
        "unusual: parsed to be sure"
    );
    assert!(!maybe_interim(b"HTTP/1.1 200 OK\r\n\r\n"));
    assert!(!maybe_interim(b"HTTP/1.0 404 Not Found\r\n\r\n"));
}

/// xorshift64: the same "random" inputs on every run, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes and lines that make heads ambiguous when a parser is careless.
const NASTY: &[&[u8]] = &[
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n\r\n",
    b":",
    b" ",
    b"\t",
    b"\0",
    b"\x7f",
    b"\xff",
    b",",
    b"_",
    b"close",
    b"0",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: 0\r\n",
    b"Connection: x-forwarded-for, host, x-traffic-group\r\n",
    b"Host: other\r\n",
    b"X-Traffic-Group: ENTERPRISE\r\n",
    b"X_Traffic_Group: ENTERPRISE\r\n",
    b"Upgrade: h2c\r\n",
    b" folded\r\n",
    b"HTTP/1.1 200 OK\r\n",
    b"1\r\nx\r\n",
    b"ffffffffffffffff\r\n",
];

fn mutated(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut buf = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(buf.len() + 1);
        match rng.below(4) {
            0 if !buf.is_empty() => {
                let i = rng.below(buf.len());
                buf[i] = rng.next() as u8;
            }
            1 => {
                let nasty = NASTY[rng.below(NASTY.len())];
                buf.splice(at..at, nasty.iter().copied());
            }
            2 if at < buf.len() => {
                let end = (at + 1 + rng.below(8)).min(buf.len());
                buf.drain(at..end);
            }
            _ => {
                let end = (at + rng.below(16)).min(buf.len());
                let piece = buf[at..end].to_vec();
                buf.splice(at..at, piece);
            }
        }
    }
    buf
}

/// A head as httparse reads it back: (name, value) pairs, or why it is not one whole head of
/// exactly `len` bytes.
fn reread(out: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut storage = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut storage);
    let mut resp_storage = [httparse::EMPTY_HEADER; 256];
    let mut resp = httparse::Response::new(&mut resp_storage);
    let (len, headers) = if out.starts_with(b"HTTP/") {
        match resp.parse(out) {
            Ok(httparse::Status::Complete(len)) => (len, resp.headers.to_vec()),
            other => panic!(
                "not a whole response head ({other:?}): {}",
                String::from_utf8_lossy(out)
            ),
        }
    } else {
        match req.parse(out) {
            Ok(httparse::Status::Complete(len)) => (len, req.headers.to_vec()),
            other => panic!(
                "not a whole request head ({other:?}): {}",
                String::from_utf8_lossy(out)
            ),
        }
    };
    assert!(
        len == out.len() || out[len..].starts_with(b"0\r\n") || !out.starts_with(b"HTTP/"),
        "a second head hides in the first: {}",
        String::from_utf8_lossy(out)
    );
    for h in &headers {
        assert!(
            !h.value.iter().any(|b| *b == b'\r' || *b == b'\n'),
            "a line break inside a value: {}",
            String::from_utf8_lossy(out)
        );
    }
    headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect()
}

#[test]
fn mutated_heads_never_panic_and_what_goes_on_is_one_well_formed_head() {
    let requests: &[&[u8]] = &[
        b"GET /a?b=1 HTTP/1.1\r\nHost: shop\r\nX-Traffic-Group: FREE\r\nX-User-Id: u1\r\nConnection: keep-alive, x-extra\r\nX-Extra: 1\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nhost: shop:8080\r\nCookie: a=b\r\nTE: trailers\r\nKeep-Alive: 5\r\n\r\n",
        b"DELETE /x HTTP/1.1\r\nHost: shop\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ];
    let responses: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, x-secret\r\nX-Secret: s\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.0 404 Not Found\r\nServer: x\r\n\r\nbody until close",
        b"HTTP/1.1 304 Not Modified\r\nETag: \"v\"\r\nContent-Length: 10\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: Content-Length, Transfer-Encoding\r\nContent-Length: 5, 5\r\n\r\nhello",
    ];
    let cohort = HeaderName::from_static("x-traffic-group");
    let sticky = HeaderName::from_static("x-user-id");
    let mut rng = Rng(0x5eed_c0de_2026_1204);
    let (mut forwarded, mut passed) = (0, 0);
    for round in 0..30_000 {
        let input = mutated(&mut rng, requests[round % requests.len()]);
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        if let Ok(head) = parse_request(&input, &mut storage) {
            forwarded += 1;
            let mut out = Vec::new();
            let spoofed = round % 2 == 0;
            let rewrite = Rewrite {
                cohort_header: &cohort,
                sticky_header: Some(&sticky),
                spoofed,
                forwarded_for: b"10.0.0.9",
            };
            write_request(&head, &rewrite, &mut out);
            let headers = reread(&out);
            let count = |name: &str| headers.iter().filter(|(n, _)| n == name).count();
            assert_eq!(count("host"), 1, "{}", String::from_utf8_lossy(&out));
            for gone in ["connection", "keep-alive", "te", "transfer-encoding", "upgrade"] {
                assert_eq!(count(gone), 0, "{gone}: {}", String::from_utf8_lossy(&out));
            }
            let listed = head
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("connection"))
                .any(|h| tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"x-extra")));
            if listed {
                assert_eq!(count("x-extra"), 0, "{}", String::from_utf8_lossy(&out));
            }
            assert!(count("x-traffic-group") <= usize::from(!spoofed));
            assert!(count("x-user-id") <= 1);
            assert_eq!(count("x-forwarded-for"), 1);
            assert!(headers.iter().all(|(n, _)| !n.contains('_')));
            assert!(
                headers
                    .iter()
                    .all(|(n, v)| n != "content-length" || v.as_slice() == b"0")
            );
        }
        let input = mutated(&mut rng, responses[round % responses.len()]);
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        if let Ok(Some(head)) = parse_response(&input, &mut storage)
            && let Ok(framing) = head.framing(round % 3 == 0)
        {
            passed += 1;
            let _ = head.keeps_alive(framing);
            let mut out = Vec::new();
            write_response(&head, framing, round % 5 == 0, &mut out);
            let headers = reread(&out);
            let count = |name: &str| headers.iter().filter(|(n, _)| n == name).count();
            let (lengths, chunked) = (count("content-length"), count("transfer-encoding"));
            let framed = usize::from(!matches!(framing, Framing::Empty));
            assert!(
                lengths + chunked <= 1 && lengths + chunked >= framed,
                "one framing: {}",
                String::from_utf8_lossy(&out)
            );
            assert_eq!(
                chunked == 1,
                matches!(framing, Framing::Chunked | Framing::UntilClose)
            );
            if let Framing::Length(n) = framing {
                let said = headers
                    .iter()
                    .find(|(name, _)| name == "content-length")
                    .map(|(_, v)| v.clone());
                assert_eq!(said, Some(n.to_string().into_bytes()));
            }
            let listed = head
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("connection"))
                .any(|h| tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"x-secret")));
            if listed {
                assert_eq!(count("x-secret"), 0, "{}", String::from_utf8_lossy(&out));
            }
        }
        let body = mutated(
            &mut rng,
            b"5;e=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nT: 1\r\n\r\nNEXT",
        );
        let mut whole = Chunks::default();
        let at = rng.below(body.len() + 1);
        let mut split = Chunks::default();
        let in_one = whole.scan(&body);
        let in_two = split.scan(&body[..at]).and_then(|a| {
            if split.is_done() {
                Ok(a)
            } else {
                split.scan(&body[at..]).map(|b| a + b)
            }
        });
        assert_eq!(
            in_one.is_ok(),
            in_two.is_ok(),
            "{}",
            String::from_utf8_lossy(&body)
        );
        if let (Ok(one), Ok(two)) = (in_one, in_two) {
            assert_eq!(one, two, "split at {at}: {}", String::from_utf8_lossy(&body));
            assert_eq!(whole.is_done(), split.is_done());
        }
    }
    // The mutations must leave enough inputs valid for the checks to mean something.
    assert!(forwarded > 3_000, "{forwarded} requests forwarded");
    assert!(passed > 3_000, "{passed} responses passed on");
}

#[test]
fn an_invalid_length_is_refused_even_on_an_answer_without_a_body() {
    for (head_request, raw) in [
        (true, &b"HTTP/1.1 200 OK\r\nContent-Length: 2nd\r\n\r\n"[..]),
        (
            false,
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1, 2\r\n\r\n",
        ),
    ] {
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let head = parse_response(raw, &mut storage).expect("parsed").expect("whole");
        assert_eq!(head.framing(head_request), Err(BadResponse::Length));
    }
}

/// Found by review: a track's `Connection: Content-Length` made the router drop the length, so
/// the client read the next answer as part of this one's body.
#[test]
fn a_length_the_track_lists_in_connection_still_frames_the_answer() {
    let raw = b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5, 5\r\n\r\nhello";
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let head = parse_response(raw, &mut storage).expect("parsed").expect("whole");
    let framing = head.framing(false).expect("framed");
    assert_eq!(framing, Framing::Length(5));
    let mut out = Vec::new();
    write_response(&head, framing, false, &mut out);
    assert_eq!(out, b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n");
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let head = parse_response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n",
        &mut storage,
    )
    .expect("parsed")
    .expect("whole");
    let mut out = Vec::new();
    write_response(&head, Framing::Empty, false, &mut out);
    assert_eq!(
        out,
        b"HTTP/1.1 200 OK\r\ncontent-length: 18446744073709551615\r\n\r\n"
    );
}

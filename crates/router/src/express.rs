//! The router's own forwarding of plain HTTP/1.1 requests: a request with no body, no upgrade
//! and a plain head, to a track that speaks HTTP/1.1 (mirrored or not). Most
//! requests are such, and for them hyper's server and client connections (a header map per
//! message, a task and a channel per upstream connection, two buffers held per client
//! connection for as long as it is open) were two thirds of the router's work (decision 0030).
//!
//! Here the client connection's own task does everything: it reads the head, decides, writes
//! the rewritten head to a pooled bare connection to the track, reads the answer's head, and
//! passes it on with its body as the bytes come. Buffers are borrowed from a small per-thread
//! store for the length of one exchange, so an idle connection holds its socket and its task,
//! nothing more.
//!
//! Anything else goes to the general path (`crate::proxy`, hyper) with the bytes read so far:
//! the general path answers it exactly as it did before this path existed. Once hyper has let
//! go of the connection (it was quiet and parked), its next request comes back here.

use std::cell::RefCell;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::h1::{self, BadResponse, Chunks, Framing, General};
use crate::metrics::{Exhausted, Metrics};
use crate::proxy::{Ending, Outcome, Peer, Router, mirror_sink, record, stop_requested};
use crate::table::{Table, Track};
use crate::upstream::{self, Unreached};

/// How much is read from a client at once: a request head of up to this much arrives in one
/// read; a longer one goes to the general path.
const CLIENT_READ: usize = 8 * 1024;
/// How much of a track's answer is read at once.
const TRACK_READ: usize = 16 * 1024;
/// The largest response head passed on.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// A body no longer than this goes out in the same write as its head.
const SAME_WRITE: usize = 16 * 1024;
/// Buffers kept per thread between exchanges, and the largest one kept. An exchange holds two
/// while it waits for its track, so this is enough for 64 at once on a thread with no
/// allocation; their memory is touched anyway when that many are in flight.
const STORE_BUFFERS: usize = 128;
const STORE_LARGEST: usize = 64 * 1024;

thread_local! {
    /// Buffers between exchanges. An exchange borrows them only while it runs, so memory
    /// follows the requests in flight, not the connections open.
    static STORE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer from this thread's store (empty, with at least `capacity` room).
fn borrow(capacity: usize) -> Vec<u8> {
    let mut buf = STORE.with(|s| s.borrow_mut().pop()).unwrap_or_default();
    buf.reserve(capacity);
    buf
}

/// Gives a buffer back to the store of whichever thread the exchange ends on.
fn give_back(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > STORE_LARGEST {
        return;
    }
    buf.clear();
    STORE.with(|s| {
        let mut store = s.borrow_mut();
        if store.len() < STORE_BUFFERS {
            store.push(buf);
        }
    });
}

/// How this path's part of a connection ended.
pub(crate) enum Ended {
    /// Closed, failed, or the router stopped: nothing more to do.
    Done,
    /// A request this path does not forward: the socket and every byte read from it that is
    /// not answered yet, for the general path.
    General(TcpStream, Bytes),
}

/// Serves plain requests on a client connection until one is not plain, or the connection
/// closes, or the router stops.
pub(crate) async fn serve(
    mut client: TcpStream,
    peer: &Peer,
    router: &Arc<Router>,
    stopping: &mut watch::Receiver<bool>,
) -> Ended {
    let mut input: Vec<u8> = Vec::new();
    let mut quiet_from = Instant::now();
    let mut answered = false;
    // One timer and one wait for the stop, for the connection's life: made and dropped per
    // request they cost more than the rest of the wait (a reset to a later time is cheap).
    let mut stop_watch = stopping.clone();
    let mut stop = std::pin::pin!(stop_requested(&mut stop_watch));
    let mut wake = std::pin::pin!(tokio::time::sleep_until(
        quiet_from + router.limits.header_read_timeout
    ));
    loop {
        if input.is_empty() {
            give_back(std::mem::take(&mut input));
            let waits = Waits {
                stop: stop.as_mut(),
                wake: wake.as_mut(),
            };
            if !next_request(&client, router, waits, quiet_from, answered).await {
                return Ended::Done;
            }
            input = borrow(CLIENT_READ);
            // Readable may be a readiness the runtime still holds from a read that filled
            // the buffer exactly: then there is nothing, and the wait goes on to the same
            // deadline (a read that waited here would have none).
            match client.try_read_buf(&mut input) {
                Ok(0) => {
                    give_back(input);
                    return Ended::Done;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    give_back(std::mem::take(&mut input));
                    continue;
                }
                Err(_) => {
                    give_back(input);
                    return Ended::Done;
                }
            }
        }
        let table = router.table();
        let started = std::time::Instant::now();
        let mut exchange = Exchange::new(router, &table, peer, started);
        let plan = exchange.plan(&input);
        let (head_len, close) = match plan {
            Plan::General => return Ended::General(client, Bytes::from(input)),
            Plan::Forward { head_len, close } => (head_len, close),
        };
        let close = close || *stopping.borrow();
        // The head is in the exchange's own buffer now: what follows it (pipelined requests,
        // rarely any) is all the input still needed, and without it the buffer goes back
        // before the track is asked.
        if head_len == input.len() {
            give_back(std::mem::take(&mut input));
        } else {
            input.drain(..head_len);
        }
        let kept = exchange.run(&mut client, close).await;
        exchange.finish();
        answered = true;
        quiet_from = Instant::now();
        if !kept || close || *stopping.borrow() {
            let _ = client.shutdown().await;
            give_back(input);
            return Ended::Done;
        }
    }
}

/// Waits for the next request's first bytes: true when they are there. False when the
/// connection stays quiet for the header timeout, or the router stops. An answered connection
/// quiet for `park_after` counts as parked (it holds no buffers anyway).
async fn next_request(
    client: &TcpStream,
    router: &Router,
    mut waits: Waits<'_, '_>,
    quiet_from: Instant,
    answered: bool,
) -> bool {
    let limits = router.limits;
    let close_at = quiet_from + limits.header_read_timeout;
    let park_at = (answered && !limits.park_after.is_zero())
        .then(|| quiet_from + limits.park_after)
        .filter(|at| *at < close_at);
    waits.wake.as_mut().reset(park_at.unwrap_or(close_at));
    let mut parked: Option<ParkedCount<'_>> = None;
    loop {
        tokio::select! {
            biased;
            ready = client.readable() => return ready.is_ok(),
            () = waits.stop.as_mut() => return false,
            () = waits.wake.as_mut() => {
                if parked.is_some() || park_at.is_none() {
                    return false;
                }
                parked = Some(ParkedCount::new(&router.metrics));
                waits.wake.as_mut().reset(close_at);
            }
        }
    }
}

/// What a connection waiting for its next request also waits for: the router's stop, and its
/// timer (parking, then the header timeout).
struct Waits<'a, 's> {
    stop: std::pin::Pin<&'a mut (dyn std::future::Future<Output = ()> + Send + 's)>,
    wake: std::pin::Pin<&'a mut tokio::time::Sleep>,
}

/// A connection counted in `cohort_router_parked_connections` while this lives.
struct ParkedCount<'m>(&'m Metrics);

impl<'m> ParkedCount<'m> {
    fn new(metrics: &'m Metrics) -> ParkedCount<'m> {
        metrics.parked.inc();
        metrics.parks.inc();
        ParkedCount(metrics)
    }
}

impl Drop for ParkedCount<'_> {
    fn drop(&mut self) {
        self.0.parked.dec();
    }
}

/// What to do with the request at the start of the input.
enum Plan {
    /// Leave it (and the rest of the connection) to the general path.
    General,
    /// Forward it: its head is this long; the client asked to close after it.
    Forward { head_len: usize, close: bool },
}

/// Why a track did not answer.
enum Unanswered {
    /// A pooled connection was found closed before any byte of an answer: the request can be
    /// sent again on a new connection if it may be.
    Stale,
    /// It failed after the request was sent.
    Failed(String),
    /// No response head within the response timeout.
    TimedOut,
}

/// One request on this path, from its head to the end of its answer.
struct Exchange<'r> {
    router: &'r Router,
    table: &'r Table,
    peer: &'r Peer,
    started: std::time::Instant,
    /// The route, the track chosen and its index.
    route: usize,
    track: Option<Arc<Track>>,
    track_index: Option<usize>,
    /// The request as the track gets it; then the answer's head as the client gets it.
    output: Vec<u8>,
    /// What the track sent.
    answer: Vec<u8>,
    idempotent: bool,
    head: bool,
    /// Why the router answered itself, when it did.
    local: Option<(StatusCode, String, Option<&'static str>)>,
    overloaded: bool,
    /// The mirror rule that copied the request, if one did.
    mirrored: Option<usize>,
}

impl<'r> Exchange<'r> {
    fn new(
        router: &'r Router,
        table: &'r Table,
        peer: &'r Peer,
        started: std::time::Instant,
    ) -> Exchange<'r> {
        Exchange {
            router,
            table,
            peer,
            started,
            route: 0,
            track: None,
            track_index: None,
            output: Vec::new(),
            answer: Vec::new(),
            idempotent: false,
            head: false,
            local: None,
            overloaded: false,
            mirrored: None,
        }
    }

    /// Parses and checks the head at the start of `input`, decides where it goes and writes
    /// the track's request head; or says it is the general path's.
    fn plan(&mut self, input: &[u8]) -> Plan {
        let table = self.table;
        // HTTP/2 to tracks is the general path's; known before anything is decided, so no
        // route's counters move twice for one request.
        if table.config.protocol.is_http2() {
            return Plan::General;
        }
        let mut storage = [httparse::EMPTY_HEADER; h1::MAX_HEADERS];
        let head = match h1::parse_request(input, &mut storage) {
            // The general path refuses it with 431, counted exactly as received.
            Ok(head) if head.len > self.router.limits.max_header_bytes => return Plan::General,
            Ok(head) => head,
            Err(General::Partial | General::Malformed | General::Version | General::Connect)
            | Err(General::Target | General::Host | General::Body | General::Upgrade) => {
                return Plan::General;
            }
        };
        let decision = table.decide(self.peer.ip, head.headers);
        if decision.spoofed {
            self.router.metrics.spoofed.inc();
        }
        self.route = decision.route;
        self.track = decision.track.cloned();
        self.track_index = decision.track_index;
        self.idempotent = head.idempotent();
        self.head = head.is_head();
        if self.track.is_none() {
            let why = decision.why_no_track(&table.config.service);
            self.local = Some((StatusCode::SERVICE_UNAVAILABLE, why, None));
        } else {
            self.output = borrow(head.len + 256);
            let rewrite = h1::Rewrite {
                cohort_header: table.cohort_header(),
                sticky_header: table.sticky_header(),
                spoofed: decision.spoofed,
                forwarded_for: self.peer.forwarded_for.as_bytes(),
            };
            h1::write_request(&head, &rewrite, &mut self.output);
            if let Some(t) = self.track_index
                && let Some(rule) = table.mirror_for(self.route, t)
            {
                self.mirror(rule);
            }
        }
        Plan::Forward {
            head_len: head.len,
            close: head.close,
        }
    }

    /// Hands a copy of the request as its track gets it to the mirrors, for rule `i`. The
    /// request has no body, so the copy is whole at once.
    fn mirror(&mut self, (i, rule): (usize, &crate::table::MirrorRule)) {
        let Some(track) = &self.track else {
            return;
        };
        let Some(parts) = h1::request_parts(&self.output) else {
            return;
        };
        if let Some(submit) = mirror_sink(self.router, self.table, track, (i, rule), &parts) {
            submit(Ok(Bytes::new()));
            self.mirrored = Some(i);
        }
    }

    /// Sends the request to its track and passes the answer on to `client`; or answers itself
    /// when no track can. False when the client connection must close (its answer could not
    /// be delimited or delivered).
    async fn run(&mut self, client: &mut TcpStream, close: bool) -> bool {
        if self.local.is_none() {
            match self.ask().await {
                Ok((conn, backend)) => return self.pass_on(client, conn, backend, close).await,
                Err(local) => self.local = Some(local),
            }
        }
        let Some((status, body, _)) = &self.local else {
            return false;
        };
        let mut out = std::mem::take(&mut self.output);
        out.clear();
        let retry: &[(&str, &str)] = if self.overloaded {
            &[("retry-after", "1")]
        } else {
            &[]
        };
        h1::write_local(*status, body, retry, close, &mut out);
        let sent = client.write_all(&out).await.is_ok();
        self.output = out;
        self.record_local();
        sent
    }

    /// The router's own answer, counted as the general path counts it.
    fn record_local(&self) {
        let Some((status, _, error)) = &self.local else {
            return;
        };
        let track = if self.overloaded { None } else { self.track_index };
        let ending = error.map_or(Ending::Answered, Ending::Unanswered);
        record(
            &self.router.metrics,
            self.table,
            &Outcome {
                route: self.route,
                track,
                status: status.as_u16(),
                ending,
                elapsed: self.started.elapsed(),
                mirrored: self.mirrored,
            },
        );
    }

    /// Sends the request head to the chosen track (another of the route's when every backend
    /// of this one refuses) until the answer's head is in; the connection it came on.
    async fn ask(
        &mut self,
    ) -> Result<(TcpStream, Arc<crate::table::Backend>), (StatusCode, String, Option<&'static str>)> {
        let table = self.table;
        let service = &table.config.service;
        let mut track = self.track.clone().ok_or_else(|| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{service}: no track\n"),
                None,
            )
        })?;
        let mut resent = false;
        let mut redecided = false;
        loop {
            let (backend, mut conn, pooled) = match upstream::plain_connection(&track).await {
                Ok((backend, conn, pooled)) => (Arc::clone(backend), conn, pooled),
                Err(Unreached::Overloaded) => {
                    self.router.metrics.exhausted(Exhausted::Connect);
                    self.overloaded = true;
                    return Err((
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "{service}: the router is overloaded (out of file descriptors or memory) and \
                             could not open a connection to a track; no track failed. Retry shortly.\n"
                        ),
                        None,
                    ));
                }
                Err(Unreached::Refused) => {
                    // Every backend refused and is now marked down; the request was never
                    // sent: decide again, so the track's share goes to the route's healthy
                    // tracks.
                    if !redecided && let Some((other, index)) = self.decide_again(&track) {
                        redecided = true;
                        track = other;
                        self.track = Some(Arc::clone(&track));
                        self.track_index = Some(index);
                        continue;
                    }
                    self.failed(&track, &"refused every connection");
                    return Err((
                        StatusCode::BAD_GATEWAY,
                        format!(
                            "{service}: no backend of track {} accepted a connection\n",
                            track.name
                        ),
                        Some("connect"),
                    ));
                }
            };
            let timeout = self.router.limits.response_timeout;
            if self.answer.capacity() == 0 {
                self.answer = borrow(TRACK_READ);
            }
            self.answer.clear();
            let asked =
                tokio::time::timeout(timeout, exchange_head(&mut conn, &self.output, &mut self.answer)).await;
            let failure = match asked {
                Ok(Ok(())) => return Ok((conn, backend)),
                Ok(Err(Unanswered::Stale)) if pooled && self.idempotent && !resent => {
                    resent = true;
                    continue;
                }
                Ok(Err(other)) => other,
                Err(_) => Unanswered::TimedOut,
            };
            return Err(match failure {
                Unanswered::TimedOut => {
                    let within = timeout.as_secs_f64();
                    self.failed(&track, &format_args!("did not answer within {within}s"));
                    (
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "{service}: track {} did not answer within {within}s\n",
                            track.name
                        ),
                        Some("timeout"),
                    )
                }
                Unanswered::Failed(_) | Unanswered::Stale => {
                    let why = match failure {
                        Unanswered::Failed(why) => why,
                        _ => "closed the connection without an answer".into(),
                    };
                    self.failed(&track, &format_args!("failed to answer: {why}"));
                    (
                        StatusCode::BAD_GATEWAY,
                        format!("{service}: track {} failed to answer\n", track.name),
                        Some("response"),
                    )
                }
            });
        }
    }

    /// The track the route gives this request now that `tried` refused, if another. Decided on
    /// the head as the track gets it, which routes as the client's did: a cohort header the
    /// first decision ignored is not in it, and the sticky key is.
    fn decide_again(&self, tried: &Arc<Track>) -> Option<(Arc<Track>, usize)> {
        let mut storage = [httparse::EMPTY_HEADER; h1::MAX_HEADERS];
        let head = h1::parse_request(&self.output, &mut storage).ok()?;
        let again = self.table.decide(self.peer.ip, head.headers);
        let other = again.track.filter(|t| !Arc::ptr_eq(t, tried))?;
        Some((Arc::clone(other), again.track_index?))
    }

    /// The operator hears what a track did wrong; the version it runs is not for clients.
    fn failed(&self, track: &Track, what: &dyn std::fmt::Display) {
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "cohort router: {}: track {} ({}) {what}",
                self.table.config.service, track.name, track.version
            );
        }
    }

    /// Passes the answer whose head is in `self.answer` on to the client with its body, and
    /// pools the track's connection when it can take another request.
    async fn pass_on(
        &mut self,
        client: &mut TcpStream,
        mut conn: TcpStream,
        backend: Arc<crate::table::Backend>,
        close: bool,
    ) -> bool {
        let mut out = std::mem::take(&mut self.output);
        out.clear();
        let summary = {
            let mut storage = [httparse::EMPTY_HEADER; h1::MAX_HEADERS];
            let parsed = h1::parse_response(&self.answer, &mut storage);
            match parsed {
                Ok(Some(head)) => match head.framing(self.head) {
                    Ok(framing) => {
                        h1::write_response(&head, framing, close, &mut out);
                        Ok((head.code, head.len, framing, head.keeps_alive(framing)))
                    }
                    Err(e) => Err(e),
                },
                Ok(None) => Err(BadResponse::TooLarge(MAX_RESPONSE_HEAD)),
                Err(e) => Err(e),
            }
        };
        let (code, head_len, framing, keeps_alive) = match summary {
            Ok(s) => s,
            Err(e) => {
                self.output = out;
                if let Some(track) = self.track.clone() {
                    self.failed(&track, &format_args!("failed to answer: {e}"));
                    let service = &self.table.config.service;
                    let message = if e == BadResponse::Switched {
                        format!("{service}: track {} switched protocols unasked\n", track.name)
                    } else {
                        format!("{service}: track {} failed to answer\n", track.name)
                    };
                    self.local = Some((StatusCode::BAD_GATEWAY, message, Some("response")));
                }
                let Some((status, body, _)) = &self.local else {
                    return false;
                };
                let mut out = std::mem::take(&mut self.output);
                out.clear();
                h1::write_local(*status, body, &[], close, &mut out);
                let sent = client.write_all(&out).await.is_ok();
                self.output = out;
                self.record_local();
                return sent;
            }
        };
        record(
            &self.router.metrics,
            self.table,
            &Outcome {
                route: self.route,
                track: self.track_index,
                status: code,
                ending: Ending::Answered,
                elapsed: self.started.elapsed(),
                mirrored: self.mirrored,
            },
        );
        let outcome = self.body(client, &mut conn, &mut out, head_len, framing).await;
        self.output = out;
        match outcome {
            Body::Whole { clean } => {
                if clean && keeps_alive {
                    backend.pool.checkin_plain(conn);
                }
                true
            }
            Body::Broken => false,
        }
    }

    /// Passes the body on after the head in `out`; the body bytes already read follow the
    /// head in `self.answer`.
    async fn body(
        &mut self,
        client: &mut TcpStream,
        conn: &mut TcpStream,
        out: &mut Vec<u8>,
        head_len: usize,
        framing: Framing,
    ) -> Body {
        let read = self.answer.len() - head_len;
        // Whether the client is watched for leaving while the body comes (`body_read`).
        let mut watch = true;
        match framing {
            Framing::Empty => {
                if client.write_all(out).await.is_err() {
                    return Body::Broken;
                }
                Body::Whole { clean: read == 0 }
            }
            Framing::Length(length) => {
                let here = usize::try_from(length).unwrap_or(usize::MAX).min(read);
                let extra = read > here;
                let body = &self.answer[head_len..head_len + here];
                if !self.send(client, out, body).await {
                    return Body::Broken;
                }
                let mut left = length - here as u64;
                while left > 0 {
                    self.answer.clear();
                    match self.body_read(conn, client, &mut watch).await {
                        Ok(0) | Err(()) => return Body::Broken,
                        Ok(n) => {
                            let take = usize::try_from(left).unwrap_or(usize::MAX).min(n);
                            if client.write_all(&self.answer[..take]).await.is_err() {
                                return Body::Broken;
                            }
                            left -= take as u64;
                            if n > take {
                                return Body::Whole { clean: false };
                            }
                        }
                    }
                }
                Body::Whole { clean: !extra }
            }
            Framing::Chunked => {
                let mut chunks = Chunks::default();
                let Ok(used) = chunks.scan(&self.answer[head_len..]) else {
                    return Body::Broken;
                };
                let extra = used < read;
                let body = &self.answer[head_len..head_len + used];
                if !self.send(client, out, body).await {
                    return Body::Broken;
                }
                while !chunks.is_done() {
                    self.answer.clear();
                    match self.body_read(conn, client, &mut watch).await {
                        Ok(0) | Err(()) => return Body::Broken,
                        Ok(n) => {
                            let Ok(used) = chunks.scan(&self.answer[..n]) else {
                                return Body::Broken;
                            };
                            if client.write_all(&self.answer[..used]).await.is_err() {
                                return Body::Broken;
                            }
                            if used < n {
                                return Body::Whole { clean: false };
                            }
                        }
                    }
                }
                Body::Whole { clean: !extra }
            }
            Framing::UntilClose => {
                if read > 0 {
                    h1::chunk_size_line(read, out);
                    out.extend_from_slice(&self.answer[head_len..]);
                    out.extend_from_slice(b"\r\n");
                }
                if client.write_all(out).await.is_err() {
                    return Body::Broken;
                }
                loop {
                    self.answer.clear();
                    match self.body_read(conn, client, &mut watch).await {
                        Ok(0) => break,
                        Err(()) => return Body::Broken,
                        Ok(n) => {
                            out.clear();
                            h1::chunk_size_line(n, out);
                            out.extend_from_slice(&self.answer[..n]);
                            out.extend_from_slice(b"\r\n");
                            if client.write_all(out).await.is_err() {
                                return Body::Broken;
                            }
                        }
                    }
                }
                if client.write_all(b"0\r\n\r\n").await.is_err() {
                    return Body::Broken;
                }
                Body::Whole { clean: false }
            }
        }
    }

    /// The next bytes of the answer's body from the track, into `self.answer`: how many (0 when
    /// the track closed the connection). An error when the track sends nothing for the
    /// response timeout, or fails, or the client has gone: nobody is left to pass the body to,
    /// and its connection slot and the track's connection must not wait for the track.
    /// `watch_client` is cleared once the client has sent more (a pipelined request): its
    /// socket then stays readable, and it is not watched for the rest of this body.
    async fn body_read(
        &mut self,
        conn: &mut TcpStream,
        client: &TcpStream,
        watch_client: &mut bool,
    ) -> Result<usize, ()> {
        let idle = tokio::time::sleep(self.router.limits.response_timeout);
        let mut idle = std::pin::pin!(idle);
        loop {
            let mut probe = [0u8; 1];
            tokio::select! {
                biased;
                read = conn.read_buf(&mut self.answer) => return read.map_err(|_| ()),
                gone = client.peek(&mut probe), if *watch_client => match gone {
                    Ok(0) | Err(_) => return Err(()),
                    Ok(_) => *watch_client = false,
                },
                () = idle.as_mut() => {
                    if let Some(track) = &self.track {
                        let within = self.router.limits.response_timeout.as_secs_f64();
                        self.failed(track, &format_args!("sent nothing of its answer's body for {within}s"));
                    }
                    return Err(());
                }
            }
        }
    }

    /// Writes `head` and then `body`: in one write when the body is short.
    async fn send(&self, client: &mut TcpStream, head: &mut Vec<u8>, body: &[u8]) -> bool {
        if body.len() <= SAME_WRITE {
            head.extend_from_slice(body);
            return client.write_all(head).await.is_ok();
        }
        client.write_all(head).await.is_ok() && client.write_all(body).await.is_ok()
    }

    /// Gives the buffers back.
    fn finish(&mut self) {
        give_back(std::mem::take(&mut self.output));
        give_back(std::mem::take(&mut self.answer));
    }
}

/// How passing a body on ended.
enum Body {
    /// All of it went to the client; `clean` when nothing else came on the track's connection,
    /// so it can be pooled.
    Whole { clean: bool },
    /// The track or the client failed midway: the client connection must close, as its answer
    /// ended early.
    Broken,
}

/// Writes `request` to `conn` and reads until `answer` holds a final response head (interim
/// 1xx answers are dropped).
async fn exchange_head(conn: &mut TcpStream, request: &[u8], answer: &mut Vec<u8>) -> Result<(), Unanswered> {
    if let Err(e) = conn.write_all(request).await {
        return Err(stale_or(e));
    }
    let mut any = false;
    loop {
        match conn.read_buf(answer).await {
            Ok(0) if !any => return Err(Unanswered::Stale),
            Ok(0) => return Err(Unanswered::Failed("closed the connection mid-head".into())),
            Err(e) if !any => return Err(stale_or(e)),
            Err(e) => return Err(Unanswered::Failed(e.to_string())),
            Ok(_) => any = true,
        }
        // Parsed here only when it may be interim; the final head is parsed once, when it is
        // passed on (malformed ones are told then).
        while h1::response_head_ready(answer) {
            if !h1::maybe_interim(answer) {
                return Ok(());
            }
            let mut storage = [httparse::EMPTY_HEADER; h1::MAX_HEADERS];
            match h1::parse_response(answer, &mut storage) {
                Ok(Some(head)) if head.is_interim() => {
                    let len = head.len;
                    answer.drain(..len);
                }
                Ok(Some(_)) | Err(_) => return Ok(()),
                Ok(None) => break,
            }
        }
        if answer.len() >= MAX_RESPONSE_HEAD {
            return Ok(());
        }
        answer.reserve(TRACK_READ);
    }
}

/// A pooled connection the track had closed fails at once (reset or broken pipe) or reads
/// nothing: stale. Anything else is the track's failure.
fn stale_or(e: std::io::Error) -> Unanswered {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionReset | BrokenPipe | ConnectionAborted => Unanswered::Stale,
        _ => Unanswered::Failed(e.to_string()),
    }
}

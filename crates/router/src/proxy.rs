//! The proxy: accepts HTTP/1.1 and HTTP/2 (h2c) from clients, decides per request with the
//! table in force, and forwards over pooled HTTP/1.1 connections to the chosen track, with
//! bodies streamed both ways.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use crate::client_body::{ClientBody, ClientFault};
use crate::grpc::CallEnd;
use crate::idle::{Activity, Watched};
use crate::metrics::{ErrorLabels, Exhausted, Metrics};
use crate::park::{self, Parkable, Pulse};
use crate::resources::{AcceptPause, Slot};
use crate::table::Table;
use crate::upstream::{self, Sent};
use cohort_core::model::Protocol;

/// Response bodies: streamed from upstream, or our own short texts.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Limits that protect the router and its backends, each answered clearly when hit.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The whole request head must arrive within this (slowloris guard); the connection is
    /// closed otherwise.
    pub header_read_timeout: Duration,
    /// The largest request head accepted, exactly, as received (HTTP/1.1: request line and
    /// header lines; HTTP/2: as HPACK counts a header list); larger ones get 431.
    pub max_header_bytes: usize,
    /// How long a track may take to send its response head; then 504 naming the track.
    pub response_timeout: Duration,
    /// Client connections served at once, WebSocket tunnels included; more wait in the listen
    /// backlog. `cohort router` derives it from the file-descriptor limit
    /// (`resources::connections_within`).
    pub max_connections: usize,
    /// On shutdown, how long requests in flight may take to finish.
    pub grace: Duration,
    /// How long a connection to a track may sit unused in the pool before it is closed.
    pub upstream_idle_timeout: Duration,
    /// A client sending a request body must send more of it within this of asking; then 408
    /// (the client's error, not the track's).
    pub client_body_timeout: Duration,
    /// HTTP/2 requests in flight per client connection; more wait for one to finish. Each
    /// holds at most one connection to a track, so this caps what one client connection can
    /// open upstream (an HTTP/1.1 connection has one request in flight).
    pub max_streams: u32,
    /// How long an upgraded (WebSocket) tunnel may go with neither side sending before it is
    /// closed, as HAProxy's `timeout tunnel`.
    pub tunnel_idle_timeout: Duration,
    /// How long an HTTP/1.1 client connection that has been answered may stay quiet before it
    /// is parked: its buffers are let go until its next request (see `crate::park`). Between
    /// this and twice this, as connections are looked at once per interval. Zero: never.
    pub park_after: Duration,
    /// Plain HTTP/1.1 requests (no body, no upgrade, a plain head, a track speaking HTTP/1.1,
    /// mirrored or not) are forwarded by the router's own code (`crate::express`) rather than by
    /// hyper. Off only to measure the difference (`cohort router --hyper-only`).
    pub express: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            response_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            grace: Duration::from_secs(20),
            upstream_idle_timeout: Duration::from_secs(5),
            client_body_timeout: Duration::from_secs(60),
            max_streams: 100,
            tunnel_idle_timeout: Duration::from_secs(3600),
            park_after: Duration::from_secs(1),
            express: true,
        }
    }
}

/// The router: the table in force and the upstream connection pool.
pub struct Router {
    table: RwLock<Arc<Table>>,
    pub(crate) limits: Limits,
    /// What `/metrics` exports.
    pub metrics: Arc<Metrics>,
    ready: AtomicBool,
    /// The digest of the config text in force (`/config-digest`), empty when the table came
    /// from no file.
    config_digest: RwLock<String>,
    /// Copies for mirror tracks, in flight and waiting.
    mirrors: Arc<crate::mirror::Mirrors>,
}

impl Router {
    /// A router serving `table`.
    pub fn new(table: Table) -> Arc<Router> {
        Router::with_limits(table, Limits::default())
    }

    /// A router serving `table` within `limits`.
    pub fn with_limits(table: Table, limits: Limits) -> Arc<Router> {
        let table = Arc::new(table);
        let metrics = Metrics::new();
        let router = Arc::new(Router {
            table: RwLock::new(Arc::clone(&table)),
            limits,
            mirrors: crate::mirror::Mirrors::new(Arc::clone(&metrics)),
            metrics,
            ready: AtomicBool::new(true),
            config_digest: RwLock::new(String::new()),
        });
        router.adopt(&table);
        router
    }

    /// The table in force now.
    pub fn table(&self) -> Arc<Table> {
        match self.table.read() {
            Ok(t) => Arc::clone(&t),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Records the digest of the config text the table in force was read from
    /// (`cohort_spec::router_config::digest`).
    pub fn set_config_digest(&self, digest: String) {
        match self.config_digest.write() {
            Ok(mut d) => *d = digest,
            Err(poisoned) => *poisoned.into_inner() = digest,
        }
    }

    /// The digest of the config text in force; empty when the table came from no file.
    pub fn config_digest(&self) -> String {
        match self.config_digest.read() {
            Ok(d) => d.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts a new table in force; requests already routed finish with the old one.
    pub fn swap(&self, table: Table) {
        let table = Arc::new(table);
        self.adopt(&table);
        match self.table.write() {
            Ok(mut t) => *t = table,
            Err(poisoned) => *poisoned.into_inner() = table,
        }
    }

    /// Starts the health checks and the idle-connection purge of a table about to be put in
    /// force. (Its tracks hold their pooled connections, which go with the last table or
    /// request in flight using them.)
    fn adopt(&self, table: &Arc<Table>) {
        crate::health::spawn_checks(table, &self.metrics);
        upstream::spawn_purge(table, self.limits.upstream_idle_timeout);
    }

    /// Whether `/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Turns `/ready` to 503, the first step of draining.
    pub fn set_unready(&self) {
        self.ready.store(false, Ordering::Relaxed);
    }
}

/// Serves client connections from `listener` until `shutdown` completes; then stops
/// accepting, lets requests in flight finish for at most the grace period, and returns.
pub async fn serve(listener: TcpListener, router: Arc<Router>, shutdown: impl Future<Output = ()>) {
    let limits = router.limits;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    let mut pause = AcceptPause::default();
    loop {
        let accepted = tokio::select! {
            a = async {
                // At the limit, stop accepting: new connections wait in the kernel's backlog.
                let slot = Arc::clone(&slots).acquire_owned().await;
                (pause.accept(&listener, &router.metrics, Exhausted::Accept).await, slot)
            } => a,
            () = &mut shutdown => break,
        };
        let (Some((stream, peer)), Ok(slot)) = accepted else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = Arc::clone(&router);
        let stopping = stopping.clone();
        // The connection's requests hold the slot too: an upgrade outlives the connection.
        let peer = Peer::new(peer, Arc::new(slot));
        tokio::spawn(serve_connection(stream, peer, router, stopping));
    }
    drop(listener);
    // Idle keep-alive connections close now; busy ones after their current response. Every
    // connection holds a slot until it is done, so all slots back means all done.
    let _ = stop.send(true);
    let everyone = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(limits.grace, slots.acquire_many(everyone)).await;
}

/// The HTTP/2 connection preface a client with prior knowledge starts with (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a new connection opens with the HTTP/2 preface. It peeks, so the chosen protocol
/// reads the connection from its first byte: sniffing through a buffer instead (as hyper-util's
/// `auto` builder does) makes hyper grow its read buffer to 16 KiB on every HTTP/1.1 connection.
async fn opens_with_h2_preface(stream: &TcpStream) -> bool {
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        match stream.peek(&mut first).await {
            Ok(n) if n > 0 && first[..n] == H2_PREFACE[..n] => {
                if n == H2_PREFACE.len() {
                    return true;
                }
                // Part of the preface so far; the rest is on its way. (Peeking again at once
                // would spin: the bytes already there keep the socket readable.)
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Anything else (HTTP/1.1, an early close, an error) is HTTP/1.1's to answer.
            _ => return false,
        }
    }
}

/// Serves one client connection, HTTP/1.1 or HTTP/2, until it closes; when `stopping` turns
/// true, asks it to finish gracefully (idle: close now; busy: after the current response).
///
/// Its task lives as long as the connection, parked or not, so what it holds across awaits is
/// kept small: each phase with timers and hyper's state is boxed while it runs.
async fn serve_connection(
    stream: TcpStream,
    peer: Peer,
    router: Arc<Router>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let h2 = {
        let limits = &router.limits;
        // A client that connects and sends nothing is cut off like one that sends a head
        // slowly, and at once when the router is stopping.
        let sniffed = Box::pin(async {
            tokio::select! {
                sniffed = tokio::time::timeout(limits.header_read_timeout, opens_with_h2_preface(&stream)) => sniffed.ok(),
                () = stop_requested(&mut stopping) => None,
            }
        })
        .await;
        match sniffed {
            Some(h2) => h2,
            None => return,
        }
    };
    if h2 {
        // HTTP/2 connections are few.
        Box::pin(serve_http2(stream, peer, router, stopping)).await;
    } else {
        serve_http1(stream, peer, router, stopping).await;
    }
}

/// Completes when the router is stopping (or gone).
pub(crate) async fn stop_requested(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// Serves an HTTP/2 connection until it closes, or until it has been silent with no request in
/// flight for the header timeout, or the router stops.
async fn serve_http2(
    stream: TcpStream,
    peer: Peer,
    router: Arc<Router>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let limits = router.limits;
    // HTTP/2 has no head timeout of its own once the preface is in: a connection with no
    // request in flight that moves no bytes for the header timeout is closed, as an idle
    // HTTP/1.1 one is, or silent connections would hold every slot.
    let activity = Activity::new();
    let pulse = Pulse::new();
    let counted = Arc::clone(&pulse);
    let service = hyper::service::service_fn(move |req| {
        let request = park::Request::enter(&counted);
        let answer = handle(Arc::clone(&router), peer.clone(), req);
        async move {
            let Ok(resp) = answer.await;
            // In flight until its body has gone out (or the stream was reset).
            Ok::<_, Infallible>(resp.map(|body| park::Answering::new(body, request)))
        }
    });
    let io = TokioIo::new(Watched::new(stream, &activity));
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_streams)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let wait = tokio::select! {
        _ = conn.as_mut() => return,
        // A dropped sender means the server is gone: stop as well.
        () = stop_requested(&mut stopping) => limits.grace,
        // The closing handshake waits for the peer to answer a PING, which a silent one
        // never does: it gets as long as a head would.
        () = idle_without_requests(&activity, &pulse, limits.header_read_timeout) => {
            limits.header_read_timeout
        }
    };
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(wait, conn).await;
}

/// Serves an HTTP/1.1 connection until it closes or the router stops. Whenever it has been
/// quiet for `limits.park_after` after an answer, it is parked (`crate::park`): hyper lets go
/// of it and its buffers, and a new hyper connection takes it on when its next request comes.
/// A parked connection is closed when the header timeout has passed since it went quiet, as
/// an idle one in hyper's hands is.
async fn serve_http1(
    mut stream: TcpStream,
    peer: Peer,
    router: Arc<Router>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let mut unread = Bytes::new();
    // Cleared for good once a connection could not be parked cleanly (it had begun another
    // request): it stays with hyper, whose head timeout then bounds it.
    let mut parkable = !router.limits.park_after.is_zero();
    // Plain requests are the router's own to forward until one is not (`crate::express`).
    let mut express = router.limits.express;
    loop {
        if express {
            // Boxed, as hyper's stretches are: only one of them is held at a time.
            match Box::pin(crate::express::serve(stream, &peer, &router, &mut stopping)).await {
                crate::express::Ended::Done => return,
                crate::express::Ended::General(socket, read) => {
                    (stream, unread, express) = (socket, read, false);
                }
            }
        }
        // Boxed: while parked, the task holds the socket and the wait below, nothing more.
        let served = Box::pin(serve_http1_until_quiet(
            stream,
            unread,
            parkable,
            &peer,
            &router,
            &mut stopping,
        ))
        .await;
        let quiet_from = match served {
            Served::Done => return,
            Served::Begun(socket, begun) => {
                // A pipelined request had begun: it is served with what hyper had read of it,
                // and this connection is not parked again.
                (stream, unread, parkable) = (socket, begun, false);
                continue;
            }
            Served::Quiet(socket, since) => {
                (stream, unread) = (socket, Bytes::new());
                since
            }
        };
        router.metrics.parked.inc();
        router.metrics.parks.inc();
        let woke = tokio::select! {
            readable = stream.readable() => readable.is_ok(),
            () = tokio::time::sleep_until(quiet_from + router.limits.header_read_timeout) => false,
            () = stop_requested(&mut stopping) => false,
        };
        router.metrics.parked.dec();
        if !woke {
            return;
        }
        // Its next request starts afresh: plain ones are the router's own again.
        express = router.limits.express;
    }
}

/// How a stretch of an HTTP/1.1 connection in hyper's hands ended.
enum Served {
    /// Closed, failed, upgraded, or the router stopped: nothing more to do.
    Done,
    /// hyper let go of it while it had begun reading another request: the socket and those
    /// bytes.
    Begun(TcpStream, Bytes),
    /// Quiet since that instant, and hyper let go of it: the socket.
    Quiet(TcpStream, tokio::time::Instant),
}

/// Serves an HTTP/1.1 connection with hyper, starting with `unread` bytes already read from
/// it, until it closes or (when `parkable`) has been quiet for `park_after` after an answer.
async fn serve_http1_until_quiet(
    stream: TcpStream,
    unread: Bytes,
    mut parkable: bool,
    peer: &Peer,
    router: &Arc<Router>,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
) -> Served {
    let limits = router.limits;
    let pulse = Pulse::new();
    let service = {
        let (router, peer, pulse) = (Arc::clone(router), peer.clone(), Arc::clone(&pulse));
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let request = park::Request::enter(&pulse);
            if !hyper::body::Body::is_end_stream(req.body()) {
                // hyper may still be reading this body when the answer is done (a track that
                // answers early): parked then, the rest of the body would be read as a request.
                pulse.hold();
            }
            let answer = handle(Arc::clone(&router), peer.clone(), req);
            async move {
                let Ok(resp) = answer.await;
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    // hyper hands the socket to the tunnel once the 101 is out.
                    request.hold_connection();
                }
                Ok::<_, Infallible>(resp.map(|body| park::Answering::new(body, request)))
            }
        })
    };
    let io = TokioIo::new(Parkable::new(stream, &pulse, unread));
    let mut conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // The head's exact size in bytes, as received: the read buffer's size is only a memory
        // bound and let heads of nearly twice the limit through.
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .serve_connection(io, service)
        .with_upgrades();
    let mut seen = 0;
    let mut quiet_from = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = &mut conn => return Served::Done,
            () = stop_requested(stopping) => {
                std::pin::Pin::new(&mut conn).graceful_shutdown();
                let _ = conn.await;
                return Served::Done;
            }
            () = tokio::time::sleep(limits.park_after), if parkable => {
                if !pulse.quiet_since(&mut seen) {
                    quiet_from = tokio::time::Instant::now();
                    continue;
                }
                // An idle connection closes at once on a graceful shutdown, and then keeps its
                // socket open; a busy one would finish its exchange first.
                pulse.set_parking(true);
                std::pin::Pin::new(&mut conn).graceful_shutdown();
                match std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut conn).poll(cx))).await {
                    Poll::Ready(Ok(())) => break,
                    Poll::Ready(Err(_)) => return Served::Done,
                    Poll::Pending => {
                        // Not idle after all: it closes after this exchange (as it would when
                        // the router stops), with its socket shut down.
                        pulse.set_parking(false);
                        parkable = false;
                    }
                }
            }
        }
    }
    // `None`: upgraded, and the tunnel has the socket (and shuts it down when done).
    let Some(parts) = conn.into_parts() else {
        pulse.set_parking(false);
        return Served::Done;
    };
    let (socket, left) = parts.io.into_inner().into_parts();
    // Taken out at once: hyper's read buffer is 8 KiB however little of it is used.
    let begun = [parts.read_buf, left].concat();
    if begun.is_empty() {
        Served::Quiet(socket, quiet_from)
    } else {
        Served::Begun(socket, begun.into())
    }
}

/// Completes once the connection has had no request in flight and moved no bytes for `idle`.
async fn idle_without_requests(activity: &Activity, pulse: &Pulse, idle: Duration) {
    loop {
        activity.quiet_for(idle).await;
        if pulse.in_flight() == 0 {
            return;
        }
        // A request is waiting on its track: look again once it could have gone quiet.
        tokio::time::sleep(idle).await;
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The client at the other end of a connection.
#[derive(Clone)]
pub(crate) struct Peer {
    pub(crate) ip: IpAddr,
    /// Its address as an `X-Forwarded-For` value, written once per connection rather than
    /// per request.
    pub(crate) forwarded_for: HeaderValue,
    /// The connection's place within `--max-connections`, released when the connection and
    /// whatever it was upgraded to are done.
    slot: Slot,
}

impl Peer {
    fn new(addr: SocketAddr, slot: Slot) -> Peer {
        let ip = addr.ip();
        Peer {
            ip,
            forwarded_for: HeaderValue::from_maybe_shared(Bytes::from(ip.to_string()))
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            slot,
        }
    }
}

/// The options listed in `Connection` headers (`keep-alive`, `upgrade`, header names...).
fn connection_options(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    connection_options_of(headers.get_all(header::CONNECTION))
}

/// The comma-separated tokens of a header's lines.
fn connection_options_of(lines: http::header::GetAll<'_, HeaderValue>) -> impl Iterator<Item = &str> {
    lines
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

use crate::h1::{X_FORWARDED_FOR, X_FORWARDED_PROTO};

/// Whether `name` is hop-by-hop by itself (`crate::h1::HOP_BY_HOP`).
fn always_hop_by_hop(name: &HeaderName) -> bool {
    crate::h1::HOP_BY_HOP.contains(name)
}

/// Removes hop-by-hop headers: the fixed set and the ones `Connection` names, except the
/// end-to-end headers in `kept` (a client must not be able to take away what the router
/// routes by or adds). With `underscores`, also every header whose name has a `_`, as nginx
/// does by default: backends built on CGI's conventions (WSGI, Rack, PHP) read `-` and `_`
/// alike, so `X_Traffic_Group` would pass for the cohort header and `Transfer_Encoding` for
/// the body's framing there.
fn strip_hop_by_hop(headers: &mut HeaderMap, kept: &[&HeaderName], underscores: bool) {
    // One pass over the few headers a message has, rather than a hash lookup per name that
    // might be there, with what `Connection` names and what goes noted on the stack: this runs
    // twice per request, and most messages lose a `Connection` at most.
    let mut named: [&str; 8] = [""; 8];
    let mut named_more: Vec<&str> = Vec::new();
    let mut n_named = 0;
    if headers.contains_key(header::CONNECTION) {
        for option in connection_options(headers) {
            match named.get_mut(n_named) {
                Some(slot) => *slot = option,
                None => named_more.push(option),
            }
            n_named += 1;
        }
    }
    let named_here = &named[..n_named.min(named.len())];
    let mut doomed: [Option<HeaderName>; 8] = Default::default();
    let mut doomed_more: Vec<HeaderName> = Vec::new();
    let mut n_doomed = 0;
    for name in headers.keys() {
        let goes = always_hop_by_hop(name)
            || (underscores && name.as_str().contains('_'))
            || (n_named > 0
                && named_here
                    .iter()
                    .chain(&named_more)
                    .any(|o| o.eq_ignore_ascii_case(name.as_str()))
                && !kept.contains(&name));
        if !goes {
            continue;
        }
        match doomed.get_mut(n_doomed) {
            Some(slot) => *slot = Some(name.clone()),
            None => doomed_more.push(name.clone()),
        }
        n_doomed += 1;
    }
    if n_doomed == 0 {
        return;
    }
    for name in doomed.into_iter().flatten().chain(doomed_more) {
        headers.remove(name);
    }
}

/// Header fields a request may have: hyper's cap for HTTP/1.1 (more get 431 there), applied
/// to HTTP/2 as well.
pub const MAX_HEADERS: usize = 100;

/// Why a request is refused before it is routed; each is the client's error.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("CONNECT is not supported: this router forwards requests to tracks, it opens no tunnels")]
    Connect,
    #[error("an HTTP/1.1 request needs a Host header (HTTP/2: :authority)")]
    NoHost,
    #[error("the request has {0} Host headers; send exactly one")]
    Hosts(usize),
    #[error("the Host header is not a valid host[:port]")]
    BadHost,
    #[error("the request target must be an http or https URI without user info")]
    BadTarget,
    #[error("the request has more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::Connect => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::NoHost | Refusal::Hosts(_) | Refusal::BadHost | Refusal::BadTarget => {
                StatusCode::BAD_REQUEST
            }
        }
    }

    /// Its `kind` label in `cohort_router_client_errors_total`.
    fn kind(&self) -> &'static str {
        match self {
            Refusal::Connect => "connect",
            Refusal::NoHost | Refusal::Hosts(_) | Refusal::BadHost => "bad_host",
            Refusal::BadTarget => "bad_target",
            Refusal::TooManyHeaders => "too_many_headers",
        }
    }
}

/// Refuses what a careful proxy does not forward: CONNECT (no tunnels to arbitrary hosts), a
/// request without exactly one valid Host (RFC 9112 §3.2: 400), an absolute target that is not
/// a plain http(s) URI.
fn vet<B>(req: &Request<B>) -> Result<(), Refusal> {
    if req.method() == http::Method::CONNECT {
        return Err(Refusal::Connect);
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    let more = hosts.count();
    if more > 0 {
        return Err(Refusal::Hosts(more + 1));
    }
    let target = req.uri().authority();
    if let Some(authority) = target
        && (!matches!(req.uri().scheme_str(), Some("http" | "https")) || authority.as_str().contains('@'))
    {
        return Err(Refusal::BadTarget);
    }
    match (host, target) {
        // An absolute target's authority is the host; the Host header gives way to it.
        (_, Some(_)) => {}
        (Some(h), None) => {
            if h.is_empty()
                || h.as_bytes().contains(&b'@')
                || http::uri::Authority::try_from(h.as_bytes()).is_err()
            {
                return Err(Refusal::BadHost);
            }
        }
        (None, None) if req.version() == http::Version::HTTP_10 => {}
        (None, None) => return Err(Refusal::NoHost),
    }
    if req.version() == http::Version::HTTP_2 && req.headers().len() > MAX_HEADERS {
        return Err(Refusal::TooManyHeaders);
    }
    Ok(())
}

/// An answer the router gives a client for the client's own error: it closes an HTTP/1.x
/// connection, whose framing can no longer be trusted.
fn client_error(
    service: &str,
    version: http::Version,
    status: StatusCode,
    why: &dyn std::fmt::Display,
) -> Response<Body> {
    let mut resp = text(status, format!("{service}: {why}\n"));
    if version < http::Version::HTTP_2 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        resp.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE"),
        );
    }
    resp
}

async fn handle(
    router: Arc<Router>,
    peer: Peer,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = std::time::Instant::now();
    let table = router.table();
    if let Err(refusal) = vet(&req) {
        router.metrics.client_error("none", refusal.kind());
        return Ok(client_error(
            &table.config.service,
            req.version(),
            refusal.status(),
            &refusal,
        ));
    }
    // Boxed for the length of the request: hyper keeps room for this future for as long as
    // the client connection lives, and inline it would be kilobytes per idle connection.
    let done = Box::pin(forward(&router, &table, peer, req)).await;
    let status = done.response.status().as_u16();
    if let Some(fault) = done.client {
        // The client's failure: counted as such, and neither the track's error nor its latency.
        table.handles(&router.metrics).request(done.route, None, status);
        let track = done
            .track
            .and_then(|t| table.tracks.get(t))
            .map_or("none", |t| t.name.as_str());
        router.metrics.client_error(track, fault.label());
        return Ok(done.response);
    }
    let elapsed = started.elapsed();
    if table.config.protocol == Protocol::Grpc
        && done.error.is_none()
        && status == 200
        && let Some(track) = done.track
    {
        // A call's outcome is its grpc-status: in the head of a call that failed at once,
        // else in the trailers, counted when they pass.
        if let Some(failed) = crate::grpc::failure(done.response.headers()) {
            let ending = failed.map_or(Ending::Answered, Ending::GrpcFailed);
            let outcome = Outcome {
                route: done.route,
                track: Some(track),
                status,
                ending,
                elapsed,
                mirrored: done.mirrored,
            };
            record(&router.metrics, &table, &outcome);
            return Ok(done.response);
        }
        let (route, mirrored) = (done.route, done.mirrored);
        let (parts, body) = done.response.into_parts();
        let watched = crate::grpc::Watched::new(body, move |end| {
            let ending = match end {
                CallEnd::Status(None) => Ending::Answered,
                CallEnd::Status(Some(failed)) => Ending::GrpcFailed(failed),
                CallEnd::Broken => Ending::GrpcFailed("response"),
                CallEnd::Cancelled => {
                    table.handles(&router.metrics).request(route, None, status);
                    let name = table.tracks.get(track).map_or("none", |t| t.name.as_str());
                    router.metrics.client_error(name, "cancelled");
                    return;
                }
            };
            let outcome = Outcome {
                route,
                track: Some(track),
                status,
                ending,
                elapsed,
                mirrored,
            };
            record(&router.metrics, &table, &outcome);
        });
        return Ok(Response::from_parts(parts, watched.boxed()));
    }
    let ending = done.error.map_or(Ending::Answered, Ending::Unanswered);
    let outcome = Outcome {
        route: done.route,
        track: done.track,
        status,
        ending,
        elapsed,
        mirrored: done.mirrored,
    };
    record(&router.metrics, &table, &outcome);
    Ok(done.response)
}

/// How a request the router passed on ended, for the metrics.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Ending {
    /// The track answered (a 5xx is its error).
    Answered,
    /// The track gave no answer: `connect`, `response` or `timeout`.
    Unanswered(&'static str),
    /// A gRPC call the track answered with a failing status (its kind).
    GrpcFailed(&'static str),
}

/// What became of one request the router passed on.
pub(crate) struct Outcome {
    /// The route's index.
    pub(crate) route: usize,
    /// The track chosen, if one was.
    pub(crate) track: Option<usize>,
    /// The status the client got.
    pub(crate) status: u16,
    pub(crate) ending: Ending,
    /// From its arrival to the track's response head (or the router's own answer).
    pub(crate) elapsed: Duration,
    /// The mirror rule that copied it, if one did.
    pub(crate) mirrored: Option<usize>,
}

/// Counts one request in the requests by class, the judgement's window, the track's errors and
/// latency, and, when it was copied to a mirror, the series the copies are judged against.
pub(crate) fn record(metrics: &Metrics, table: &Table, outcome: &Outcome) {
    let &Outcome {
        route,
        track,
        status,
        ending,
        elapsed,
        mirrored,
    } = outcome;
    let handles = table.handles(metrics);
    handles.request(route, track, status);
    let (failed, answered, kind) = match ending {
        Ending::Answered => (status >= 500, true, None),
        Ending::Unanswered(kind) => (true, false, Some(kind)),
        Ending::GrpcFailed(kind) => (true, true, Some(kind)),
    };
    if let Some(t) = track {
        handles.window(route, t, failed, answered.then_some(elapsed));
        if answered {
            handles.latency(t, elapsed.as_secs_f64());
        }
    }
    // The first track's answers to the requests that were copied: what the copies are
    // judged against.
    if let Some(ring) = mirrored.and_then(|i| handles.mirror_rings.get(2 * i + 1)) {
        ring.record(
            crate::window::now(),
            failed,
            answered.then_some(elapsed.as_secs_f64() * 1000.0),
        );
    }
    if let Some(kind) = kind {
        let name = track
            .and_then(|t| table.tracks.get(t))
            .map_or("none", |t| t.name.as_str());
        metrics
            .upstream_errors
            .get_or_create(&ErrorLabels {
                track: name.into(),
                kind: kind.into(),
            })
            .inc();
    }
}

/// What became of one request, for the metrics.
struct Done {
    response: Response<Body>,
    /// The route's index in the table.
    route: usize,
    /// The index of the track that answered (or failed to).
    track: Option<usize>,
    /// `connect`, `response` or `timeout` when the upstream failed.
    error: Option<&'static str>,
    /// How the client failed to deliver the request, if it did (then nothing is the track's).
    client: Option<ClientFault>,
    /// The mirror rule that copied the request, if one did.
    mirrored: Option<usize>,
}

async fn forward(router: &Router, table: &Table, peer: Peer, mut req: Request<Incoming>) -> Done {
    let service = table.config.service.as_str();
    let decision = table.decide(peer.ip, req.headers());
    if decision.spoofed {
        req.headers_mut().remove(table.cohort_header());
        router.metrics.spoofed.inc();
    } else {
        // The track sees the cohort header and sticky key the decision used, and only those
        // (`decide` reads the first of each).
        keep_first(req.headers_mut(), table.cohort_header());
    }
    if let Some(sticky) = table.sticky_header() {
        keep_first(req.headers_mut(), sticky);
    }
    let route = decision.route;
    let local = |response, track: Option<usize>, error| Done {
        response,
        route,
        track,
        error,
        client: None,
        mirrored: None,
    };
    let Some(track) = decision.track.cloned() else {
        let why = decision.why_no_track(service);
        return local(text(StatusCode::SERVICE_UNAVAILABLE, why), None, None);
    };
    // `Upgrade` (WebSocket and the like) is hop-by-hop, but passes through: the router asks
    // the track for the same upgrade and then joins the two connections.
    let upgrade = wants_upgrade(req.headers())
        .then(|| req.headers().get(header::UPGRADE).cloned())
        .flatten();
    let http2 = table.config.protocol.is_http2();
    if upgrade.is_some() && http2 {
        return local(
            text(
                StatusCode::NOT_IMPLEMENTED,
                format!(
                    "{service}: the tracks speak HTTP/2 ({}), so protocol upgrades (WebSocket) cannot pass; \
                     a service that needs them uses protocol http1\n",
                    table.config.protocol.as_str()
                ),
            ),
            None,
            None,
        );
    }
    // gRPC needs `TE: trailers` end to end (its servers refuse calls without it); it is the
    // one TE value HTTP/2 allows, and hop-by-hop headers are stripped below.
    let te_trailers = http2
        && connection_options_of(req.headers().get_all(header::TE))
            .any(|o| o.eq_ignore_ascii_case("trailers"));
    let client_side = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let kept = [
        &header::HOST,
        &X_FORWARDED_FOR,
        table.cohort_header(),
        table.sticky_header().unwrap_or(&header::HOST),
    ];
    strip_hop_by_hop(req.headers_mut(), &kept, true);
    if let Some(protocol) = &upgrade {
        req.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        req.headers_mut().insert(header::UPGRADE, protocol.clone());
    }
    let forwarded_for = match req.headers().contains_key(&X_FORWARDED_FOR) {
        // Every earlier hop, in order (several header lines are one comma-separated list), then
        // this client.
        true => {
            let mut chain = Vec::new();
            for prior in req.headers().get_all(&X_FORWARDED_FOR) {
                chain.extend_from_slice(prior.as_bytes());
                chain.extend_from_slice(b", ");
            }
            chain.extend_from_slice(peer.forwarded_for.as_bytes());
            HeaderValue::from_maybe_shared(Bytes::from(chain)).ok()
        }
        false => Some(peer.forwarded_for),
    };
    if let Some(v) = forwarded_for {
        req.headers_mut().insert(X_FORWARDED_FOR, v);
    }
    req.headers_mut()
        .insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    if let Some(authority) = req.uri().authority().cloned()
        && let Ok(v) = HeaderValue::from_str(authority.as_str())
    {
        // An absolute target's authority is the host, whatever Host says (RFC 9112 §3.2.3), and
        // HTTP/2's :authority is its Host (RFC 9113 §8.3.1); the upstream is sent origin-form.
        req.headers_mut().insert(header::HOST, v);
    }
    if te_trailers {
        req.headers_mut()
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let client_version = req.version();
    let (mut parts, body) = req.into_parts();
    aim(&mut parts, http2);
    let mut body = ClientBody::new(body, router.limits.client_body_timeout);
    let watch = body.watch();
    let mirrored = decision
        .track_index
        .and_then(|t| table.mirror_for(route, t))
        .and_then(|(i, rule)| mirror(router, table, &track, (i, rule), &parts, &mut body).then_some(i));
    let timeout = router.limits.response_timeout;
    let mut used = decision.track_index;
    let mut attempt = upstream::send(&track, Request::from_parts(parts, body), timeout).await;
    if let Sent::Refused(unsent) = attempt {
        // Every backend of the track refused and is now marked down, and the request was never
        // sent: decide again, so the track's share goes to the healthy tracks of the route.
        let again = table.decide(peer.ip, unsent.headers());
        attempt = match again.track.filter(|t| !Arc::ptr_eq(t, &track)) {
            Some(other) => {
                used = again.track_index;
                upstream::send(other, unsent, timeout).await
            }
            None => Sent::Refused(unsent),
        };
    }
    // After a re-send, errors name the track that was tried last.
    let tried = used.and_then(|i| table.tracks.get(i)).unwrap_or(&track);
    let (name, version) = (&tried.name, &tried.version);
    if !matches!(attempt, Sent::Answer(_))
        && let Some(fault) = watch.fault()
    {
        // The upstream request failed because the client's body did: the client's error.
        let (status, why) = match fault {
            ClientFault::Stalled => (
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body stopped arriving (nothing for {}s)",
                    router.limits.client_body_timeout.as_secs_f64()
                ),
            ),
            ClientFault::Malformed => (
                StatusCode::BAD_REQUEST,
                "the request body's framing is invalid".into(),
            ),
            ClientFault::Aborted => (StatusCode::BAD_REQUEST, "the request body ended early".into()),
        };
        return Done {
            response: client_error(service, client_version, status, &why),
            route,
            track: used,
            error: None,
            client: Some(fault),
            mirrored: None,
        };
    }
    // The version a track runs is for the operator, not for clients: the details go to stderr.
    let failed =
        |what: &dyn std::fmt::Display| eprintln!("cohort router: {service}: track {name} ({version}) {what}");
    let mut done = match attempt {
        Sent::Answer(mut resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let Some(client_side) = client_side else {
                return local(
                    text(
                        StatusCode::BAD_GATEWAY,
                        format!("{service}: track {name} switched protocols unasked\n"),
                    ),
                    used,
                    Some("response"),
                );
            };
            let upstream_side = hyper::upgrade::on(&mut resp);
            let idle = router.limits.tunnel_idle_timeout;
            tokio::spawn(crate::idle::tunnel(client_side, upstream_side, peer.slot, idle));
            let (parts, _) = resp.into_parts();
            local(
                Response::from_parts(parts, Empty::new().map_err(|never| match never {}).boxed()),
                used,
                None,
            )
        }
        Sent::Answer(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers, &[], false);
            local(Response::from_parts(parts, body.boxed()), used, None)
        }
        Sent::Refused(_) => {
            failed(&"refused every connection");
            local(
                text(
                    StatusCode::BAD_GATEWAY,
                    format!("{service}: no backend of track {name} accepted a connection\n"),
                ),
                used,
                Some("connect"),
            )
        }
        Sent::Overloaded => {
            // The router's own shortage: counted apart, never in the track's errors or latency.
            router.metrics.exhausted(Exhausted::Connect);
            let mut resp = text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{service}: the router is overloaded (out of file descriptors or memory) and \
                     could not open a connection to a track; no track failed. Retry shortly.\n"
                ),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            local(resp, None, None)
        }
        Sent::Failed(e) => {
            let cause = std::error::Error::source(&e)
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            failed(&format_args!("failed to answer: {e}{cause}"));
            local(
                text(
                    StatusCode::BAD_GATEWAY,
                    format!("{service}: track {name} failed to answer\n"),
                ),
                used,
                Some("response"),
            )
        }
        Sent::TimedOut => {
            let within = router.limits.response_timeout.as_secs_f64();
            failed(&format_args!("did not answer within {within}s"));
            local(
                text(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("{service}: track {name} did not answer within {within}s\n"),
                ),
                used,
                Some("timeout"),
            )
        }
    };
    done.mirrored = mirrored;
    done
}

/// Sets up the copy of a mirrored request for rule `i`: its head now, its body as it passes
/// to the first track (or none, when there is no body); it is handed to the mirrors once whole.
/// False when the request is not copied after all (its body is declared too large).
fn mirror(
    router: &Router,
    table: &Table,
    track: &Arc<crate::table::Track>,
    (i, rule): (usize, &crate::table::MirrorRule),
    parts: &http::request::Parts,
    body: &mut ClientBody,
) -> bool {
    let Some(submit) = mirror_sink(router, table, track, (i, rule), parts) else {
        return false;
    };
    if body.watch().is_done() {
        submit(Ok(Bytes::new()));
    } else {
        body.tee(usize::try_from(rule.max_body).unwrap_or(usize::MAX), submit);
    }
    true
}

/// Where the body of a copy of the request with head `parts` goes once whole (or why it was
/// lost): to the mirrors for rule `i`. `None` when it is not copied after all (its body is
/// declared too large, counted).
pub(crate) fn mirror_sink(
    router: &Router,
    table: &Table,
    track: &Arc<crate::table::Track>,
    (i, rule): (usize, &crate::table::MirrorRule),
    parts: &http::request::Parts,
) -> Option<crate::client_body::TeeSink> {
    use crate::client_body::TeeLost;
    let to = Arc::clone(&table.tracks[rule.to]);
    let from = track.name.clone();
    let mirrors = Arc::clone(&router.mirrors);
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > rule.max_body) {
        mirrors.count(&from, &to.name, "dropped_body_too_large");
        return None;
    }
    let head = crate::mirror::copy_head(parts, &from);
    let ring = table.handles(&router.metrics).mirror_rings.get(2 * i).cloned()?;
    Some(Box::new(move |whole: Result<Bytes, TeeLost>| match whole {
        Ok(copy) => {
            let name = from.clone();
            mirrors.submit(crate::mirror::copy(head, copy, to, ring, name));
        }
        Err(TeeLost::TooLarge) => mirrors.count(&from, &to.name, "dropped_body_too_large"),
        Err(TeeLost::Unfinished) => mirrors.count(&from, &to.name, "dropped_unfinished"),
    }))
}

/// Leaves only the first of `name`'s header lines, if there are several.
fn keep_first(headers: &mut HeaderMap, name: &HeaderName) {
    let mut all = headers.get_all(name).iter();
    if let (Some(first), Some(_)) = (all.next(), all.next()) {
        let first = first.clone();
        headers.insert(name, first);
    }
}

/// Whether a request asks to switch protocols (`Connection: upgrade` and an `Upgrade` header).
fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && connection_options(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// Makes a request ready for the upstream connection. HTTP/1.1: origin-form target, the Host
/// header the client sent goes along unchanged. HTTP/2: the target in `:scheme`, `:authority`
/// (from Host) and `:path`.
fn aim(parts: &mut http::request::Parts, http2: bool) {
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    if http2 {
        let authority = parts
            .headers
            .remove(header::HOST)
            .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok());
        let mut uri = Uri::builder().scheme("http");
        if let Some(authority) = authority {
            uri = uri.authority(authority);
        }
        parts.uri = uri
            .path_and_query(path.clone())
            .build()
            .unwrap_or_else(|_| Uri::from(path));
        parts.version = http::Version::HTTP_2;
        return;
    }
    parts.uri = Uri::from(path);
    parts.version = http::Version::HTTP_11;
}

//! The control API's connections: how many at once, how long each may stay silent, idle or
//! stalled, and how much a client can make the server hold. Anyone who can reach the port can
//! open a connection, so none of this waits for a token: a connection that sends no complete
//! request head in time, sits idle past the keep-alive timeout, or stops moving mid-request is
//! closed, and past the connection limit new ones wait in the kernel's backlog.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, header};
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The largest request head taken, in bytes (an agent's is under 1 KiB). hyper answers a
/// larger one with 431; it also bounds what a connection can make the server buffer.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// How much of a request body HTTP/2 lets a client send before the server asks for it, per
/// stream and per connection. A report is read only after its token is checked; until then
/// this is what an unauthenticated upload can make the server hold.
const H2_STREAM_WINDOW: u32 = 64 * 1024;
const H2_CONNECTION_WINDOW: u32 = 256 * 1024;
/// Requests at once on one HTTP/2 connection (an agent makes one at a time).
const H2_MAX_STREAMS: u32 = 16;

/// How long requests in flight may take to finish once the server is asked to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What one client may take of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; more wait in the kernel's backlog to be accepted. Each
    /// costs a file descriptor.
    pub max_connections: usize,
    /// A new connection must finish its TLS handshake and send a whole request head within
    /// this; so must a kept-alive one once the first byte of its next request arrives.
    pub header_timeout: Duration,
    /// A kept-alive connection with no request is closed after this, as is one whose request
    /// moves no byte either way for as long.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) within `limits` until `shutdown`
/// completes; then idle connections close, and requests in flight have a few seconds to
/// finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let max = limits
        .max_connections
        .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
    let slots = Arc::new(tokio::sync::Semaphore::new(max));
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Backoff::default();
    loop {
        let (accepted, slot) = tokio::select! {
            a = async {
                // At the limit, stop accepting: new connections wait in the kernel's backlog.
                let slot = Arc::clone(&slots).acquire_owned().await;
                (listener.accept().await, slot)
            } => a,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff.reset();
                accepted
            }
            // The client gave up before it was accepted: nothing wrong here.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors (EMFILE, ENFILE) or memory: the connection stays in
                // the backlog and accept fails again at once, so accepting again straight
                // away would spin. Wait, longer each time, while connections close.
                drop(slot);
                let wait = backoff.next();
                if backoff.failures == 1 {
                    tracing::warn!(error = %e, "cannot accept connections; retrying with backoff");
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            app: app.clone(),
            acceptor: acceptor.clone(),
            limits,
            stopping: stopping.clone(),
        };
        tokio::spawn(async move {
            let _slot = slot;
            connection.serve(stream, peer).await;
        });
    }
    drop(listener);
    // Idle connections close now, busy ones after their response. Every connection holds a
    // slot until it is done, so all slots back means all done.
    let _ = stop.send(true);
    let everyone = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(everyone)).await;
    Ok(())
}

/// Errors of one connection that accept reports, after which accepting again is right.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    )
}

/// The wait after each failed accept: 10 ms, doubled up to a second.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        Duration::from_millis(10u64 << self.failures.min(8).saturating_sub(1)).min(Duration::from_secs(1))
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

struct Connection {
    app: axum::Router,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl Connection {
    /// Serves one connection until it closes, its deadline passes, or the server stops.
    async fn serve(self, stream: TcpStream, peer: std::net::SocketAddr) {
        let activity = Arc::new(Activity::new());
        let limits = self.limits;
        tokio::select! {
            () = self.run(stream, &activity) => {}
            () = watchdog(&activity, limits) => {
                tracing::debug!(%peer, "connection closed: it kept silent or stalled past its timeout");
            }
        }
    }

    async fn run(self, stream: TcpStream, activity: &Arc<Activity>) {
        let Connection {
            app,
            acceptor,
            stopping,
            ..
        } = self;
        match acceptor {
            Some(acceptor) => {
                let Ok(tls) = acceptor.accept(Watched::new(stream, activity)).await else {
                    return;
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                activity.h2.store(h2, Ordering::Relaxed);
                serve_http(tls, h2, app, activity, stopping).await;
            }
            None => {
                let h2 = opens_with_h2_preface(&stream).await;
                activity.h2.store(h2, Ordering::Relaxed);
                serve_http(Watched::new(stream, activity), h2, app, activity, stopping).await;
            }
        }
    }
}

/// The HTTP/2 connection preface a client with prior knowledge starts with (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a plain connection opens with the HTTP/2 preface. It peeks, so the protocol chosen
/// reads the connection from its first byte. (A client that stops halfway through the preface
/// is cut off by the watchdog like any silent one.)
async fn opens_with_h2_preface(stream: &TcpStream) -> bool {
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        match stream.peek(&mut first).await {
            Ok(n) if n > 0 && first[..n] == H2_PREFACE[..n] => {
                if n == H2_PREFACE.len() {
                    return true;
                }
                // Peeking again at once would spin: the bytes already there keep the socket
                // readable.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            _ => return false,
        }
    }
}

async fn serve_http<I>(
    io: I,
    h2: bool,
    app: axum::Router,
    activity: &Arc<Activity>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::clone(activity);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let app = app.clone();
        let in_flight = InFlight::start(&activity);
        async move { Ok::<_, std::convert::Infallible>(answer(app, request, in_flight, h2).await) }
    });
    let io = TokioIo::new(io);
    let stop_requested = async move {
        // A dropped sender means the server is gone: stop as well.
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    if h2 {
        let mut conn = std::pin::pin!(
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(H2_MAX_STREAMS)
                .initial_stream_window_size(H2_STREAM_WINDOW)
                .initial_connection_window_size(H2_CONNECTION_WINDOW)
                .max_header_list_size(MAX_HEAD_BYTES as u32)
                .serve_connection(io, service)
        );
        tokio::select! {
            _ = conn.as_mut() => return,
            () = stop_requested => conn.as_mut().graceful_shutdown(),
        }
        let _ = conn.await;
    } else {
        // No hyper header timeout: in hyper it also ends kept-alive connections, which wait
        // longer here (the watchdog keeps both).
        let mut conn = std::pin::pin!(
            hyper::server::conn::http1::Builder::new()
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(io, service)
        );
        tokio::select! {
            _ = conn.as_mut() => return,
            () = stop_requested => conn.as_mut().graceful_shutdown(),
        }
        let _ = conn.await;
    }
}

/// Calls the app. A request whose body is left unread and refused (no token, too large...)
/// is answered with `Connection: close` on HTTP/1.1: the server will not read that body to
/// find where the next request starts.
async fn answer(
    mut app: axum::Router,
    request: Request<Incoming>,
    in_flight: InFlight,
    h2: bool,
) -> Response<Counted> {
    use hyper::body::Body as _;
    let has_body = !request.body().is_end_stream();
    let response = match tower_service::Service::call(&mut app, request.map(Body::new)).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (mut parts, body) = response.into_parts();
    if has_body && !h2 && (parts.status.is_client_error() || parts.status.is_server_error()) {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Response::from_parts(
        parts,
        Counted {
            body,
            _in_flight: in_flight,
        },
    )
}

/// A response body that keeps its request counted as in flight until it is sent (or dropped
/// with its connection).
struct Counted {
    body: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What a connection has done, for its deadline (times in milliseconds since it was accepted,
/// `NEVER` for none).
struct Activity {
    start: Instant,
    h2: AtomicBool,
    in_flight: AtomicU32,
    served: AtomicU32,
    idle_since: AtomicU64,
    first_read_while_idle: AtomicU64,
    last_io: AtomicU64,
    /// Wakes the watchdog when its deadline may have come closer (a head begins, a request
    /// starts); otherwise it sleeps until the deadline it computed.
    earlier: tokio::sync::Notify,
}

const NEVER: u64 = u64::MAX;

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            h2: AtomicBool::new(false),
            in_flight: AtomicU32::new(0),
            served: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            first_read_while_idle: AtomicU64::new(NEVER),
            last_io: AtomicU64::new(0),
            earlier: tokio::sync::Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NEVER - 1)
    }

    fn read(&self) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self
                .first_read_while_idle
                .compare_exchange(NEVER, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.earlier.notify_one();
        }
    }

    fn moved(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    fn state(&self) -> State {
        let at = |t: u64| (t != NEVER).then(|| Duration::from_millis(t));
        State {
            h2: self.h2.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            served: self.served.load(Ordering::Relaxed),
            idle_since: Duration::from_millis(self.idle_since.load(Ordering::Relaxed)),
            first_read_while_idle: at(self.first_read_while_idle.load(Ordering::Relaxed)),
            last_io: Duration::from_millis(self.last_io.load(Ordering::Relaxed)),
        }
    }
}

/// A request counted from its head until its response is sent.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.moved();
        activity.earlier.notify_one();
        InFlight(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.served.fetch_add(1, Ordering::Relaxed);
        a.idle_since.store(a.now(), Ordering::Relaxed);
        a.first_read_while_idle.store(NEVER, Ordering::Relaxed);
        a.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's activity at one moment (times since it was accepted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct State {
    h2: bool,
    in_flight: u32,
    served: u32,
    idle_since: Duration,
    first_read_while_idle: Option<Duration>,
    last_io: Duration,
}

/// When a connection in `state` is to be closed (time since it was accepted).
fn deadline(state: State, limits: Limits) -> Duration {
    if state.in_flight > 0 {
        // Busy: while bytes move either way (a body arriving, a response leaving). A body's
        // own deadline is the handler's (`--body-timeout`).
        return state.last_io + limits.idle_timeout;
    }
    if state.served == 0 {
        // New: the TLS handshake and the first head, however slowly the bytes come.
        return limits.header_timeout;
    }
    match state.first_read_while_idle {
        // Kept alive and a head has begun: it must be whole in time. (Not on HTTP/2, where
        // bytes between requests are pings and window updates, not the start of a head.)
        Some(first) if !state.h2 => first + limits.header_timeout,
        _ => state.idle_since + limits.idle_timeout,
    }
}

/// Resolves when the connection's deadline has passed.
async fn watchdog(activity: &Activity, limits: Limits) {
    loop {
        let at = activity.start + deadline(activity.state(), limits);
        if Instant::now() >= at {
            return;
        }
        // Later deadlines are found on waking; earlier ones are announced.
        tokio::select! {
            () = tokio::time::sleep_until(at) => {}
            () = activity.earlier.notified() => {}
        }
    }
}

/// A socket that notes in its connection's [`Activity`] when bytes come and go.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl Watched {
    fn new(stream: TcpStream, activity: &Arc<Activity>) -> Watched {
        Watched {
            stream,
            activity: Arc::clone(activity),
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.moved();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.moved();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn limits() -> Limits {
        Limits {
            max_connections: 8,
            header_timeout: S(10),
            idle_timeout: S(60),
        }
    }

    #[test]
    fn a_new_connection_has_the_header_timeout_from_its_accept_whatever_it_sends() {
        let new = State::default();
        assert_eq!(deadline(new, limits()), S(10));
        let trickling = State {
            first_read_while_idle: Some(S(9)),
            last_io: S(9),
            ..new
        };
        assert_eq!(deadline(trickling, limits()), S(10));
        assert_eq!(deadline(State { h2: true, ..new }, limits()), S(10));
    }

    #[test]
    fn a_kept_alive_connection_waits_the_idle_timeout_then_the_header_timeout_once_a_head_begins() {
        let idle = State {
            served: 3,
            idle_since: S(100),
            last_io: S(100),
            ..State::default()
        };
        assert_eq!(deadline(idle, limits()), S(160));
        let head_begun = State {
            first_read_while_idle: Some(S(130)),
            last_io: S(135),
            ..idle
        };
        assert_eq!(deadline(head_begun, limits()), S(140));
        // HTTP/2 pings and window updates between requests are no head.
        assert_eq!(
            deadline(
                State {
                    h2: true,
                    ..head_begun
                },
                limits()
            ),
            S(160)
        );
    }

    #[test]
    fn a_busy_connection_lives_while_bytes_move() {
        let busy = State {
            in_flight: 1,
            served: 1,
            idle_since: S(5),
            first_read_while_idle: Some(S(6)),
            last_io: S(200),
            ..State::default()
        };
        assert_eq!(deadline(busy, limits()), S(260));
    }

    #[test]
    fn accept_backoff_doubles_to_a_second_and_starts_again_after_a_success() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..10).map(|_| b.next().as_millis() as u64).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(10));
    }
}

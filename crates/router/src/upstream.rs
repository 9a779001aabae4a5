//! Connections to tracks: each request goes to the next healthy backend of its track in turn,
//! over one of that backend's pooled HTTP/1.1 connections (one request each at a time) or its
//! shared HTTP/2 connection (`h2c` and `grpc`: many streams at once), or a new one. A
//! connection is made *before* the request is handed over, so when every backend of a track
//! refuses, the request comes back untouched and can go to another track: nothing is copied
//! per request.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::client_body::{ClientBody, Watch};
use crate::table::{Backend, Table, Track};

/// How long a backend may take to accept a connection before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a shared HTTP/2 connection to a backend is checked with a PING.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// What became of sending a request to a track.
pub enum Sent {
    /// The response head arrived.
    Answer(Response<Incoming>),
    /// No backend of the track accepted a connection; here is the request, unsent.
    Refused(Request<ClientBody>),
    /// It failed after it was sent: the track's failure, unless the body's watch holds a
    /// client fault.
    Failed(hyper::Error),
    /// The track took the response timeout without sending a response head.
    TimedOut,
    /// This router could not open a connection (out of descriptors, buffers, memory or local
    /// ports): no backend failed, and none was marked down.
    Overloaded,
}

/// Why no new connection to a track was made.
pub(crate) enum Unreached {
    /// Every healthy backend refused or did not answer in time (each is now marked down).
    Refused,
    /// The router itself ran out of something before a backend could answer.
    Overloaded,
}

/// Idle connections kept per backend: enough for bursts; beyond that they cost memory.
const MAX_IDLE: usize = 64;

/// A connection to a backend, ready to take a request.
pub(crate) enum Sender {
    /// HTTP/1.1: one request at a time; out of the pool while it is used.
    H1(http1::SendRequest<ClientBody>),
    /// HTTP/2: shared by every request to the backend; it stays in the pool.
    H2(http2::SendRequest<ClientBody>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    fn is_ready(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_ready(),
            Sender::H2(s) => s.is_ready(),
        }
    }
}

/// A pooled connection and since when it has been unused.
struct Idle {
    sender: Sender,
    since: Instant,
}

/// A backend's idle connections, oldest first. It lives in the backend, so the connections go
/// when the last table (or request in flight) using the backend lets go of it: a pod that
/// leaves its track gets no new requests, and its idle connections close.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    /// Connections of the router's own HTTP/1.1 path (`crate::express`): bare sockets
    /// between exchanges.
    plain: Mutex<Vec<PlainIdle>>,
}

/// A pooled connection of the router's own HTTP/1.1 path and since when it has been unused.
struct PlainIdle {
    stream: TcpStream,
    since: Instant,
}

/// Whether a pooled bare connection can no longer take a request: it is readable, so the
/// backend closed it (or sent bytes nobody asked for). Only the readiness the runtime already
/// holds is looked at: no system call.
fn plain_unusable(stream: &TcpStream) -> bool {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    stream.poll_read_ready(&mut cx).is_ready()
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("idle", &self.len()).finish()
    }
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_plain(&self) -> std::sync::MutexGuard<'_, Vec<PlainIdle>> {
        self.plain.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used bare connection that is still open.
    pub(crate) fn checkout_plain(&self) -> Option<TcpStream> {
        let mut idle = self.lock_plain();
        while let Some(c) = idle.pop() {
            if !plain_unusable(&c.stream) {
                return Some(c.stream);
            }
        }
        None
    }

    /// Puts a bare connection back once its exchange is done and nothing of it is left unread.
    pub(crate) fn checkin_plain(&self, stream: TcpStream) {
        let mut idle = self.lock_plain();
        if idle.len() < MAX_IDLE {
            idle.push(PlainIdle {
                stream,
                since: Instant::now(),
            });
        }
    }

    /// The most recently used connection that can take a request: reusing the newest lets
    /// the oldest age out when traffic drops. An HTTP/2 connection is shared, not taken out.
    fn checkout(&self) -> Option<Sender> {
        let mut idle = self.lock();
        idle.retain(|c| !c.sender.is_closed());
        let ready = idle.iter().rposition(|c| c.sender.is_ready())?;
        match &idle[ready].sender {
            Sender::H2(shared) => {
                let shared = shared.clone();
                idle[ready].since = Instant::now();
                Some(Sender::H2(shared))
            }
            Sender::H1(_) => Some(idle.remove(ready).sender),
        }
    }

    /// Puts a connection (back) in the pool: an HTTP/1.1 one once its request is answered, an
    /// HTTP/2 one as soon as it is made, so requests at the same time share it.
    fn checkin(&self, sender: Sender) {
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Closes the connections unused for `timeout` or longer. One still streaming a response
    /// body is not unused, however long ago it was handed out.
    pub fn purge(&self, timeout: Duration) {
        let now = Instant::now();
        self.lock().retain(|c| {
            !c.sender.is_closed() && (!c.sender.is_ready() || now.duration_since(c.since) < timeout)
        });
        self.lock_plain()
            .retain(|c| !plain_unusable(&c.stream) && now.duration_since(c.since) < timeout);
    }

    fn len(&self) -> usize {
        self.lock().len() + self.lock_plain().len()
    }
}

/// Closes, about once a second, the pooled connections of `table`'s backends that have been
/// unused for `timeout` (like HAProxy's `pool-purge-delay`): an idle connection costs memory
/// and a file descriptor at both ends. Stops once the table is dropped.
pub fn spawn_purge(table: &Arc<Table>, timeout: Duration) {
    let weak: Weak<Table> = Arc::downgrade(table);
    let every = timeout.clamp(Duration::from_millis(50), Duration::from_secs(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(table) = weak.upgrade() else { return };
            for backend in table.tracks.iter().flat_map(|t| &t.backends) {
                backend.pool.purge(timeout);
            }
        }
    });
}

/// Sends `req` to `track`'s next backend over a pooled or new connection; `timeout` is the time
/// the track may take to answer, not counting the time spent waiting for the client to send
/// its body.
pub async fn send(track: &Track, mut req: Request<ClientBody>, timeout: Duration) -> Sent {
    let watch = req.body().watch();
    // Two tries: a pooled connection can turn out closed just as it is used (the backend
    // timed it out); hyper then gives the request back and a fresh connection is made.
    let mut retried = false;
    loop {
        let (backend, mut sender) = match checkout(track) {
            Ok(pooled) => pooled,
            // Boxed: connecting is rare with pooled connections, and inline its state would
            // make every request's future (which lives as long as its client connection)
            // kilobytes bigger.
            Err(first) => match Box::pin(connect(track, first)).await {
                Ok(made) => made,
                Err(Unreached::Refused) => return Sent::Refused(req),
                Err(Unreached::Overloaded) => return Sent::Overloaded,
            },
        };
        let answered = match &mut sender {
            Sender::H1(s) => within_track_time(timeout, &watch, s.try_send_request(req)).await,
            Sender::H2(s) => within_track_time(timeout, &watch, s.try_send_request(req)).await,
        };
        match answered {
            None => return Sent::TimedOut,
            Some(Ok(resp)) => {
                // Busy until the body is read; `checkout` skips it until then. (A shared
                // HTTP/2 connection never left the pool.)
                if let Sender::H1(_) = sender {
                    backend.pool.checkin(sender);
                }
                return Sent::Answer(resp);
            }
            Some(Err(mut e)) => match e.take_message() {
                Some(back) if !retried => {
                    req = back;
                    retried = true;
                }
                _ => return Sent::Failed(e.into_error()),
            },
        }
    }
}

/// Awaits `exchange` for at most `timeout` of the track's time: while the upstream connection
/// waits for the client to send more of its body, the clock stops (a slow upload is the
/// client's time; the client body timeout bounds it).
async fn within_track_time<F: std::future::Future>(
    timeout: Duration,
    watch: &Watch,
    exchange: F,
) -> Option<F::Output> {
    if watch.is_done() {
        // No body, or all of it already read: the track's time is all the time from now.
        return tokio::time::timeout(timeout, exchange).await.ok();
    }
    let started = Instant::now();
    let mut exchange = std::pin::pin!(exchange);
    loop {
        if watch.is_waiting() {
            tokio::select! {
                out = &mut exchange => return Some(out),
                () = watch.changed() => continue,
            }
        }
        let deadline = started + timeout + watch.waited();
        tokio::select! {
            out = &mut exchange => return Some(out),
            () = watch.changed() => {}
            () = tokio::time::sleep_until(deadline.into()) => {
                if !watch.is_waiting() && Instant::now() >= started + timeout + watch.waited() {
                    return None;
                }
            }
        }
    }
}

/// A connection to a backend, ready to take a request.
type Connection<'t> = (&'t Arc<Backend>, Sender);

/// A new TCP connection to `backend`; `None` when it refused or did not answer in time (it is
/// marked down), an error when this router could not make one.
async fn dial(backend: &Backend) -> Result<Option<TcpStream>, Unreached> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend.addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(Some(stream))
        }
        Ok(Err(e)) if crate::resources::connect_failed_locally(&e) => Err(Unreached::Overloaded),
        Ok(Err(_)) | Err(_) => {
            backend.health.mark_down();
            Ok(None)
        }
    }
}

/// A bare connection for the router's own HTTP/1.1 path: a pooled one of the track's next
/// healthy backend (`true`: it was pooled, so it may turn out closed), or a new one to it or,
/// failing that, to each other healthy backend in turn, as [`connect`] does.
pub(crate) async fn plain_connection(track: &Track) -> Result<(&Arc<Backend>, TcpStream, bool), Unreached> {
    let first = track.request_order().next().ok_or(Unreached::Refused)?;
    if let Some(stream) = first.pool.checkout_plain() {
        return Ok((first, stream, true));
    }
    Box::pin(dial_plain(track, first)).await
}

/// A new bare connection to `first`, or to the other healthy backends of its track in turn.
pub(crate) async fn dial_plain<'t>(
    track: &'t Track,
    first: &'t Arc<Backend>,
) -> Result<(&'t Arc<Backend>, TcpStream, bool), Unreached> {
    let rest = track.backends.iter().filter(|b| !Arc::ptr_eq(b, first));
    for backend in std::iter::once(first).chain(rest) {
        if !backend.health.is_up() {
            continue;
        }
        if let Some(stream) = dial(backend).await? {
            return Ok((backend, stream, false));
        }
    }
    Err(Unreached::Refused)
}

/// The track's next healthy backend and one of its pooled connections; or, when it has none
/// idle, which backend is next (`None`: no backend is up).
fn checkout(track: &Track) -> Result<Connection<'_>, Option<&Arc<Backend>>> {
    let backend = track.request_order().next().ok_or(None)?;
    match backend.pool.checkout() {
        Some(sender) => Ok((backend, sender)),
        None => Err(Some(backend)),
    }
}

/// A new connection to `first`, or failing that to each other healthy backend of the track in
/// turn; a backend that refuses (or does not answer the handshake) is marked down at once. A
/// socket this router cannot create (out of descriptors...) is its own failure: no backend is
/// marked down, and the others are not tried, as they would fail the same way.
async fn connect<'t>(track: &'t Track, first: Option<&'t Arc<Backend>>) -> Result<Connection<'t>, Unreached> {
    let Some(first) = first else {
        return Err(Unreached::Refused);
    };
    let rest = track.backends.iter().filter(|b| !Arc::ptr_eq(b, first));
    for backend in std::iter::once(first).chain(rest) {
        if !backend.health.is_up() {
            continue;
        }
        let Some(stream) = dial(backend).await? else {
            continue;
        };
        if track.protocol.is_http2() {
            let handshake = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                // A connection that stops answering PINGs is closed instead of holding streams.
                .keep_alive_interval(H2_KEEP_ALIVE)
                .keep_alive_timeout(CONNECT_TIMEOUT)
                .handshake(TokioIo::new(stream));
            match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
                Ok(Ok((sender, conn))) => {
                    tokio::spawn(conn);
                    backend.pool.checkin(Sender::H2(sender.clone()));
                    return Ok((backend, Sender::H2(sender)));
                }
                Ok(Err(_)) | Err(_) => backend.health.mark_down(),
            }
            continue;
        }
        match http1::handshake(TokioIo::new(stream)).await {
            Ok((sender, conn)) => {
                tokio::spawn(conn.with_upgrades());
                return Ok((backend, Sender::H1(sender)));
            }
            Err(_) => backend.health.mark_down(),
        }
    }
    Err(Unreached::Refused)
}

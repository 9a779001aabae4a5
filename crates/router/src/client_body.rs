//! A client's request body on its way to a track, watched. Its errors are the client's and are
//! recorded by kind before the upstream connection sees them, so a failed upload is never
//! taken for the track's failure; a client that stops sending is cut off after the body
//! timeout; and the time spent waiting for the client is known, so the response timeout
//! counts only the track's own time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::Notify;

/// How a client failed to deliver its request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientFault {
    /// The client went away (or reset the stream) before the body was complete: what nginx
    /// logs as 499.
    Aborted,
    /// The body's framing was invalid (a bad chunk size line, say).
    Malformed,
    /// The client sent nothing for the body timeout while the body was being read.
    Stalled,
}

impl ClientFault {
    /// Its `kind` label in `cohort_router_client_errors_total`.
    pub fn label(self) -> &'static str {
        match self {
            ClientFault::Aborted => "aborted",
            ClientFault::Malformed => "malformed_body",
            ClientFault::Stalled => "body_timeout",
        }
    }

    fn code(self) -> u8 {
        match self {
            ClientFault::Aborted => 1,
            ClientFault::Malformed => 2,
            ClientFault::Stalled => 3,
        }
    }

    fn from_code(code: u8) -> Option<ClientFault> {
        match code {
            1 => Some(ClientFault::Aborted),
            2 => Some(ClientFault::Malformed),
            3 => Some(ClientFault::Stalled),
            _ => None,
        }
    }

    /// The fault a body error read from the client connection stands for, by its type: a
    /// framing error is malformed; a connection that ended or was reset, aborted.
    fn of(e: &hyper::Error) -> ClientFault {
        if e.is_parse() {
            return ClientFault::Malformed;
        }
        let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
        match io.map(std::io::Error::kind) {
            Some(std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput) => {
                ClientFault::Malformed
            }
            _ => ClientFault::Aborted,
        }
    }
}

/// Why a watched body stopped: what the upstream connection is given, so it abandons the request.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// Reading the body from the client failed.
    #[error("the client's request body failed ({})", fault.label())]
    Failed {
        /// Aborted or malformed.
        fault: ClientFault,
        /// What the client connection said.
        #[source]
        source: hyper::Error,
    },
    /// The client sent nothing for this long.
    #[error("the client sent no request body for {0:?}")]
    Stalled(Duration),
}

/// What the request path sees of a body the upstream connection reads.
#[derive(Debug)]
pub struct Watch {
    fault: AtomicU8,
    done: AtomicBool,
    /// Nanoseconds spent waiting for the client, in waits that have ended.
    waited: AtomicU64,
    /// When the wait under way began, in nanoseconds after `base`, plus one (0: no wait).
    waiting_since: AtomicU64,
    base: Instant,
    changed: Notify,
}

impl Watch {
    fn new(done: bool) -> Watch {
        Watch {
            fault: AtomicU8::new(0),
            done: AtomicBool::new(done),
            waited: AtomicU64::new(0),
            waiting_since: AtomicU64::new(0),
            base: Instant::now(),
            changed: Notify::new(),
        }
    }

    /// How the client failed to deliver the body, if it did.
    pub fn fault(&self) -> Option<ClientFault> {
        ClientFault::from_code(self.fault.load(Ordering::Acquire))
    }

    /// Whether the whole body has been read from the client.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Whether the body is being read and the client has not sent the next piece yet.
    pub fn is_waiting(&self) -> bool {
        self.waiting_since.load(Ordering::Acquire) != 0
    }

    /// The time spent waiting for the client so far, the wait under way included.
    pub fn waited(&self) -> Duration {
        let ended = self.waited.load(Ordering::Acquire);
        let current = match self.waiting_since.load(Ordering::Acquire) {
            0 => 0,
            since => self.nanos_now().saturating_sub(since - 1),
        };
        Duration::from_nanos(ended.saturating_add(current))
    }

    /// Completes when the body's state changes: a wait for the client ends, the body is done
    /// or fails. (A change before the call is not lost: it completes at once.)
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    fn nanos_now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Returns whether this began a wait.
    fn begin_wait(&self) -> bool {
        let now = self.nanos_now().saturating_add(1);
        self.waiting_since
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn end_wait(&self) {
        let since = self.waiting_since.swap(0, Ordering::AcqRel);
        if since != 0 {
            let spent = self.nanos_now().saturating_sub(since - 1);
            self.waited.fetch_add(spent, Ordering::AcqRel);
            self.changed.notify_one();
        }
    }

    fn finish(&self) {
        self.done.store(true, Ordering::Release);
        self.changed.notify_one();
    }

    fn fail(&self, fault: ClientFault) {
        self.fault.store(fault.code(), Ordering::Release);
        self.changed.notify_one();
    }
}

/// The client's request body, read by the upstream connection.
#[derive(Debug)]
pub struct ClientBody {
    inner: Source,
    watch: Arc<Watch>,
    timeout: Duration,
    /// Made on the first wait for the client (bodies that arrive with their head never need it).
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A copy being kept for a mirror, if the request is mirrored.
    tee: Option<Box<Tee>>,
}

/// Where a body comes from.
#[derive(Debug)]
enum Source {
    /// A client, as it sends it.
    Client(Incoming),
    /// A mirrored request's copy, whole (taken when sent).
    Copy(Option<Bytes>),
}

/// What a mirrored request's copy receives: the whole body once it has passed, or why there is
/// none.
pub type TeeSink = Box<dyn FnOnce(Result<Bytes, TeeLost>) + Send + Sync>;

/// Why a mirrored request's body was not copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TeeLost {
    /// It was larger than a copy may be.
    TooLarge,
    /// It did not arrive whole (the client failed, or the track answered before reading it).
    Unfinished,
}

/// A copy of a body as it passes, bounded.
struct Tee {
    copy: bytes::BytesMut,
    max: usize,
    sink: Option<TeeSink>,
}

impl std::fmt::Debug for Tee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tee").field("copied", &self.copy.len()).finish()
    }
}

impl Tee {
    fn finish(&mut self, end: Result<(), TeeLost>) {
        if let Some(sink) = self.sink.take() {
            sink(end.map(|()| std::mem::take(&mut self.copy).freeze()));
        }
        // Nothing more is kept once the copy is handed over or given up.
        self.copy = bytes::BytesMut::new();
        self.max = 0;
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        self.finish(Err(TeeLost::Unfinished));
    }
}

impl ClientBody {
    /// Watches `inner`; a client that makes the reader wait `timeout` for the next piece is cut off.
    pub fn new(inner: Incoming, timeout: Duration) -> ClientBody {
        let watch = Arc::new(Watch::new(inner.is_end_stream()));
        ClientBody {
            inner: Source::Client(inner),
            watch,
            timeout,
            stall: None,
            tee: None,
        }
    }

    /// A mirrored request's body: `copy`, whole, as the client sent it to the first track.
    pub fn copy(copy: Bytes) -> ClientBody {
        ClientBody {
            watch: Arc::new(Watch::new(true)),
            inner: Source::Copy((!copy.is_empty()).then_some(copy)),
            timeout: Duration::ZERO,
            stall: None,
            tee: None,
        }
    }

    /// What the request path sees of it.
    pub fn watch(&self) -> Arc<Watch> {
        Arc::clone(&self.watch)
    }

    /// Keeps a copy of the body as it passes on its way to the track, up to `max` bytes, for
    /// `sink` (a mirror): the whole body once it has all passed, or why not.
    pub fn tee(&mut self, max: usize, sink: TeeSink) {
        self.tee = Some(Box::new(Tee {
            copy: bytes::BytesMut::new(),
            max,
            sink: Some(sink),
        }));
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = self.get_mut();
        let inner = match &mut this.inner {
            Source::Client(inner) => inner,
            Source::Copy(copy) => return Poll::Ready(copy.take().map(|c| Ok(Frame::data(c)))),
        };
        match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Pending => {
                let began = this.watch.begin_wait();
                let deadline = tokio::time::Instant::now() + this.timeout;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if began {
                    stall.as_mut().reset(deadline);
                }
                if stall.as_mut().poll(cx).is_ready() {
                    this.watch.end_wait();
                    this.watch.fail(ClientFault::Stalled);
                    return Poll::Ready(Some(Err(ClientBodyError::Stalled(this.timeout))));
                }
                Poll::Pending
            }
            Poll::Ready(read) => {
                this.watch.end_wait();
                Poll::Ready(match read {
                    None => {
                        this.watch.finish();
                        if let Some(tee) = &mut this.tee {
                            tee.finish(Ok(()));
                        }
                        None
                    }
                    Some(Ok(frame)) => {
                        if let Some(tee) = &mut this.tee {
                            if let Some(data) = frame.data_ref() {
                                if tee.copy.len() + data.len() > tee.max {
                                    tee.finish(Err(TeeLost::TooLarge));
                                } else {
                                    tee.copy.extend_from_slice(data);
                                }
                            }
                            if inner.is_end_stream() {
                                tee.finish(Ok(()));
                            }
                        }
                        if inner.is_end_stream() {
                            this.watch.finish();
                        }
                        Some(Ok(frame))
                    }
                    Some(Err(source)) => {
                        let fault = ClientFault::of(&source);
                        this.watch.fail(fault);
                        Some(Err(ClientBodyError::Failed { fault, source }))
                    }
                })
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Source::Client(inner) => inner.is_end_stream(),
            Source::Copy(copy) => copy.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Source::Client(inner) => inner.size_hint(),
            Source::Copy(copy) => SizeHint::with_exact(copy.as_ref().map_or(0, |c| c.len() as u64)),
        }
    }
}

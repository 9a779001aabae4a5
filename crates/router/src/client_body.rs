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
    inner: Incoming,
    watch: Arc<Watch>,
    timeout: Duration,
    /// Made on the first wait for the client (bodies that arrive with their head never need it).
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl ClientBody {
    /// Watches `inner`; a client that makes the reader wait `timeout` for the next piece is cut off.
    pub fn new(inner: Incoming, timeout: Duration) -> ClientBody {
        let watch = Arc::new(Watch::new(inner.is_end_stream()));
        ClientBody {
            inner,
            watch,
            timeout,
            stall: None,
        }
    }

    /// What the request path sees of it.
    pub fn watch(&self) -> Arc<Watch> {
        Arc::clone(&self.watch)
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
        match Pin::new(&mut this.inner).poll_frame(cx) {
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
                        None
                    }
                    Some(Ok(frame)) => {
                        if this.inner.is_end_stream() {
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
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

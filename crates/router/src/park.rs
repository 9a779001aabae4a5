//! Parking idle HTTP/1.1 client connections. hyper keeps two 8 KiB buffers and its connection
//! state for as long as a keep-alive connection is open, so 1,000 idle clients held 13 MB. A
//! connection that has finished an exchange and then stays quiet for a while is handed back by
//! hyper and waits for its next request as a bare socket; when bytes arrive, a new hyper
//! connection takes it on. Memory then follows the connections in use, not those merely open
//! (as HAProxy, which releases a connection's buffers when it goes idle).
//!
//! Its requests in flight ([`Request`], [`Answering`]) also tell when an HTTP/2 connection is
//! idle.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What the router sees of one HTTP/1.1 connection while hyper serves it.
#[derive(Debug, Default)]
pub(crate) struct Pulse {
    /// Reads and writes that moved bytes: any change means the connection was not quiet.
    moves: AtomicU64,
    /// Requests handed to the router and not answered yet.
    in_flight: AtomicUsize,
    /// Requests answered since hyper took the connection on.
    answered: AtomicU64,
    /// Set while the connection is being parked: hyper's closing must leave the socket open.
    parking: AtomicBool,
    /// Set when hyper may still be busy with the connection after an answer in a way the
    /// router cannot see (reading the rest of a request body; a protocol switch): it is not
    /// parked while hyper holds it.
    held: AtomicBool,
}

impl Pulse {
    pub(crate) fn new() -> Arc<Pulse> {
        Arc::new(Pulse::default())
    }

    fn moved(&self) {
        self.moves.fetch_add(1, Ordering::Relaxed);
    }

    /// Looked at once per park interval with what the last look saw (`seen`): whether the
    /// connection may be parked now. It may when it has answered a request (before that, hyper
    /// could be in the middle of a first head that arrives slowly), has none in flight (a slow
    /// track must not cost the client its keep-alive) and moved no bytes since the last look.
    pub(crate) fn quiet_since(&self, seen: &mut u64) -> bool {
        let now = self.moves.load(Ordering::Relaxed);
        let quiet = now == *seen;
        *seen = now;
        quiet
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.answered.load(Ordering::Relaxed) > 0
            && !self.held.load(Ordering::Relaxed)
    }

    /// Requests in flight now: handed to the router, their response bodies not yet all gone.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// No parking for as long as hyper holds the connection.
    pub(crate) fn hold(&self) {
        self.held.store(true, Ordering::Relaxed);
    }

    pub(crate) fn set_parking(&self, parking: bool) {
        self.parking.store(parking, Ordering::Relaxed);
    }
}

/// A request in the router's hands: counted in [`Pulse`] until its response body has gone to
/// hyper whole (or was dropped): a response that streams with pauses is not a quiet connection.
pub(crate) struct Request(Arc<Pulse>);

impl Request {
    pub(crate) fn enter(pulse: &Arc<Pulse>) -> Request {
        pulse.in_flight.fetch_add(1, Ordering::Relaxed);
        Request(Arc::clone(pulse))
    }

    /// No parking for as long as hyper holds this request's connection ([`Pulse::hold`]).
    pub(crate) fn hold_connection(&self) {
        self.0.hold();
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.answered.fetch_add(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted in flight until hyper drops it.
pub(crate) struct Answering {
    body: crate::proxy::Body,
    _request: Request,
}

impl Answering {
    pub(crate) fn new(body: crate::proxy::Body, request: Request) -> Answering {
        Answering {
            body,
            _request: request,
        }
    }
}

impl hyper::body::Body for Answering {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The client socket as hyper sees it: counts what moves, serves first any bytes hyper had
/// read but not used when it let go (a pipelined request's beginning), and does not shut the
/// socket down when hyper closes it to park it.
#[derive(Debug)]
pub(crate) struct Parkable {
    stream: TcpStream,
    pulse: Arc<Pulse>,
    unread: Bytes,
}

impl Parkable {
    pub(crate) fn new(stream: TcpStream, pulse: &Arc<Pulse>, unread: Bytes) -> Parkable {
        Parkable {
            stream,
            pulse: Arc::clone(pulse),
            unread,
        }
    }

    /// The socket and the bytes read from it that nobody has used yet.
    pub(crate) fn into_parts(self) -> (TcpStream, Bytes) {
        (self.stream, self.unread)
    }
}

impl AsyncRead for Parkable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.unread.is_empty() {
            let n = self.unread.len().min(buf.remaining());
            buf.put_slice(&self.unread[..n]);
            self.unread.advance(n);
            self.pulse.moved();
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.pulse.moved();
        }
        polled
    }
}

impl AsyncWrite for Parkable {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.pulse.moved();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.pulse.moved();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pulse.parking.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::{Pulse, Request};

    #[test]
    fn a_connection_is_quiet_only_between_two_looks_without_bytes_or_requests() {
        let pulse = Pulse::new();
        let mut seen = 0;
        // Nothing answered yet: hyper may be waiting for the rest of a first head.
        assert!(!pulse.quiet_since(&mut seen));
        let request = Request::enter(&pulse);
        pulse.moved();
        assert!(!pulse.quiet_since(&mut seen), "bytes moved");
        // In flight and silent: a slow track.
        assert!(!pulse.quiet_since(&mut seen), "a request is in flight");
        drop(request);
        pulse.moved();
        assert!(!pulse.quiet_since(&mut seen), "the answer went out");
        assert!(pulse.quiet_since(&mut seen), "a whole interval without anything");
        pulse.hold();
        assert!(
            !pulse.quiet_since(&mut seen),
            "held: hyper may still be reading a body"
        );
    }
}

//! What became of a gRPC call. Its status is in `grpc-status`: in the response head when the
//! call failed at once (a trailers-only answer), else in the trailers after the last message;
//! the HTTP status (200) says nothing about it. A call whose status is one of the failures
//! that point at the server is the track's error; a call the client cancelled is nobody's.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http::header::HeaderName;
use hyper::body::{Body, Frame, SizeHint};

/// The header holding a call's status code.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The `kind` a failing status is counted under in `cohort_router_upstream_errors_total`:
/// UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE and DATA_LOSS, the codes that say the
/// server (or what it depends on) failed. The others (OK, NOT_FOUND, INVALID_ARGUMENT...) are
/// answers, not failures; an unreadable status is INTERNAL, as gRPC's clients take it.
pub fn failure(headers: &HeaderMap) -> Option<Option<&'static str>> {
    let code = headers.get(&GRPC_STATUS)?;
    Some(match code.as_bytes() {
        b"0" | b"1" | b"3" | b"5" | b"6" | b"7" | b"8" | b"9" | b"10" | b"11" | b"12" | b"16" => None,
        b"2" => Some("grpc_unknown"),
        b"4" => Some("grpc_deadline_exceeded"),
        b"13" => Some("grpc_internal"),
        b"14" => Some("grpc_unavailable"),
        b"15" => Some("grpc_data_loss"),
        _ => Some("grpc_internal"),
    })
}

/// How a call's response ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallEnd {
    /// Its status came: `None` a good one, else the failure's kind.
    Status(Option<&'static str>),
    /// The response stopped with an error from the track (a reset stream, a closed connection).
    Broken,
    /// The client went away (cancelled, or its deadline passed) before the status came.
    Cancelled,
}

/// A gRPC response body on its way to the client, watched for the call's status; `on_end` is
/// called once, when it is known.
pub struct Watched<B, F: FnOnce(CallEnd)> {
    inner: B,
    on_end: Option<F>,
}

impl<B, F: FnOnce(CallEnd)> Watched<B, F> {
    /// Watches `inner`.
    pub fn new(inner: B, on_end: F) -> Watched<B, F> {
        Watched {
            inner,
            on_end: Some(on_end),
        }
    }

    fn end(&mut self, how: CallEnd) {
        if let Some(f) = self.on_end.take() {
            f(how);
        }
    }
}

impl<B, F: FnOnce(CallEnd)> Drop for Watched<B, F> {
    fn drop(&mut self) {
        self.end(CallEnd::Cancelled);
    }
}

impl<B, F> Body for Watched<B, F>
where
    B: Body<Data = Bytes> + Unpin,
    F: FnOnce(CallEnd) + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.end(CallEnd::Status(
                        failure(trailers).unwrap_or(Some("grpc_internal")),
                    ));
                }
            }
            Poll::Ready(Some(Err(_))) => this.end(CallEnd::Broken),
            // Ended without trailers, so without a status: INTERNAL, as the client sees it.
            Poll::Ready(None) => this.end(CallEnd::Status(Some("grpc_internal"))),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue};
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;

    use super::{CallEnd, Watched, failure};

    fn status(code: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_str(code).expect("value"));
        h
    }

    #[test]
    fn only_the_servers_failures_count_against_the_track() {
        for ok in ["0", "1", "3", "5", "7", "12", "16"] {
            assert_eq!(failure(&status(ok)), Some(None), "{ok}");
        }
        assert_eq!(failure(&status("14")), Some(Some("grpc_unavailable")));
        assert_eq!(failure(&status("13")), Some(Some("grpc_internal")));
        assert_eq!(failure(&status("2")), Some(Some("grpc_unknown")));
        assert_eq!(failure(&status("4")), Some(Some("grpc_deadline_exceeded")));
        assert_eq!(failure(&status("15")), Some(Some("grpc_data_loss")));
        assert_eq!(failure(&status("ok")), Some(Some("grpc_internal")), "unreadable");
        assert_eq!(failure(&HeaderMap::new()), None, "not in the head");
    }

    type Frames = Vec<Result<Frame<Bytes>, std::convert::Infallible>>;

    fn watched(
        frames: Frames,
    ) -> (
        impl hyper::body::Body<Data = Bytes, Error = std::convert::Infallible>,
        Arc<Mutex<Vec<CallEnd>>>,
    ) {
        let seen = Arc::new(Mutex::new(vec![]));
        let into = Arc::clone(&seen);
        let body = StreamBody::new(futures::stream::iter(frames));
        let w = Watched::new(body, move |end| into.lock().expect("lock").push(end));
        (w, seen)
    }

    #[tokio::test]
    async fn the_status_in_the_trailers_ends_the_call_once() {
        let (body, seen) = watched(vec![
            Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x01x"))),
            Ok(Frame::trailers(status("14"))),
        ]);
        let collected = body.collect().await.expect("body");
        assert_eq!(
            collected.trailers().map(|t| t["grpc-status"].clone()),
            Some(HeaderValue::from_static("14"))
        );
        assert_eq!(
            *seen.lock().expect("lock"),
            [CallEnd::Status(Some("grpc_unavailable"))]
        );
    }

    #[tokio::test]
    async fn a_call_dropped_before_its_status_was_cancelled_and_one_without_status_is_internal() {
        let (mut body, seen) = watched(vec![
            Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x01x"))),
            Ok(Frame::trailers(status("0"))),
        ]);
        let first = body.frame().await;
        assert!(first.is_some());
        drop(body);
        assert_eq!(*seen.lock().expect("lock"), [CallEnd::Cancelled]);
        let (body, seen) = watched(vec![Ok(Frame::data(Bytes::from_static(b"x")))]);
        body.collect().await.expect("body");
        assert_eq!(
            *seen.lock().expect("lock"),
            [CallEnd::Status(Some("grpc_internal"))]
        );
    }
}

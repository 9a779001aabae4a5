//! Traffic mirroring, off the request path: a copy of a mirrored request goes to its mirror
//! track after the client's own request has been handed on, from a bounded set of copies in
//! flight and a bounded queue; when both are full the copy is dropped and counted, never
//! waited for. The mirror's answer is read, counted in its own series (what `cohort analyze
//! --mirror` judges) and dropped: the client only ever gets the first track's answer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::BodyExt;

use crate::client_body::ClientBody;
use crate::metrics::{Metrics, MirrorLabels};
use crate::table::Track;
use crate::upstream::{self, Sent};
use crate::window::Ring;

/// The header a copy carries, naming the track whose request it copies, so the receiving build
/// can tell a copy from a request of its own.
pub const MIRROR_HEADER: http::header::HeaderName = http::header::HeaderName::from_static("x-cohort-mirror");

/// Copies sent at once; more wait in the queue.
const IN_FLIGHT: usize = 16;
/// Copies waiting; more are dropped.
const QUEUED: usize = 256;
/// How long a mirror may take to answer a copy, and then to send its answer's body.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(10);

/// A copy ready to go.
pub struct Copy {
    /// The mirror track.
    pub track: Arc<Track>,
    /// The request as the first track got it, marked, with the whole body.
    pub request: Request<ClientBody>,
    /// Where its outcome is counted (the copies' series).
    pub ring: Arc<Ring>,
    /// The tracks' names, for the copies' counter.
    pub from: String,
}

#[derive(Default)]
struct State {
    in_flight: usize,
    queue: VecDeque<Copy>,
}

/// The router's copies in flight and waiting.
pub struct Mirrors {
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

impl Mirrors {
    /// No copies yet; outcomes are counted in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Arc<Mirrors> {
        Arc::new(Mirrors {
            state: Mutex::new(State::default()),
            metrics,
        })
    }

    /// Counts a copy's `outcome` (see `MirrorLabels`).
    pub fn count(&self, from: &str, to: &str, outcome: &str) {
        self.metrics
            .mirror_copies
            .get_or_create(&MirrorLabels {
                from: from.into(),
                to: to.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Sends `copy` now if fewer than the limit are in flight, queues it otherwise, and drops
    /// it (counted) when the queue is full too. Never waits.
    pub fn submit(self: &Arc<Self>, copy: Copy) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.in_flight < IN_FLIGHT {
            state.in_flight += 1;
            drop(state);
            tokio::spawn(Arc::clone(self).run(copy));
        } else if state.queue.len() < QUEUED {
            state.queue.push_back(copy);
        } else {
            drop(state);
            self.count(&copy.from, &copy.track.name, "dropped_busy");
        }
    }

    /// Sends copies until none is waiting.
    async fn run(self: Arc<Self>, mut copy: Copy) {
        loop {
            self.send(copy).await;
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            match state.queue.pop_front() {
                Some(next) => copy = next,
                None => {
                    state.in_flight -= 1;
                    return;
                }
            }
        }
    }

    async fn send(&self, copy: Copy) {
        let Copy {
            track,
            request,
            ring,
            from,
        } = copy;
        let started = Instant::now();
        let answer = upstream::send(&track, request, MIRROR_TIMEOUT).await;
        let (failed, latency) = match answer {
            Sent::Answer(resp) => {
                let latency = started.elapsed();
                let status = resp.status();
                let grpc_failed = crate::grpc::failure(resp.headers()).is_some_and(|f| f.is_some());
                // Read to the end (the connection is then reused) and drop.
                let body = tokio::time::timeout(MIRROR_TIMEOUT, resp.into_body().collect()).await;
                let trailers_failed = matches!(&body, Ok(Ok(c)) if c.trailers().and_then(crate::grpc::failure).is_some_and(|f| f.is_some()));
                let broken = !matches!(body, Ok(Ok(_)));
                (
                    status.is_server_error() || grpc_failed || trailers_failed || broken,
                    Some(latency),
                )
            }
            Sent::Refused(_) | Sent::Failed(_) | Sent::TimedOut => (true, None),
            // The router's own shortage: nothing is known of the mirror.
            Sent::Overloaded => {
                self.count(&from, &track.name, "dropped_busy");
                return;
            }
        };
        ring.record(
            crate::window::now(),
            failed,
            latency.map(|d| d.as_secs_f64() * 1000.0),
        );
        let outcome = if latency.is_some() { "answered" } else { "failed" };
        self.count(&from, &track.name, outcome);
    }
}

/// The copy of a request head for a mirror: the same method, target, version and headers as
/// the first track got, marked with the first track's name.
pub fn copy_head(parts: &http::request::Parts, from: &str) -> http::request::Parts {
    let mut head = Request::new(()).into_parts().0;
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    if let Ok(v) = HeaderValue::from_str(from) {
        head.headers.insert(MIRROR_HEADER, v);
    }
    head
}

/// A copy of `head` with `body`, for `track`.
pub fn copy(
    head: http::request::Parts,
    body: Bytes,
    track: Arc<Track>,
    ring: Arc<Ring>,
    from: String,
) -> Copy {
    Copy {
        track,
        request: Request::from_parts(head, ClientBody::copy(body)),
        ring,
        from,
    }
}

//! The router's Prometheus metrics: what `cohort status` and the canary judgement read, with
//! no Prometheus server needed.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::table::Table;

/// Labels of a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The cohort it was routed as (`default` for everybody else).
    pub cohort: String,
    /// The track that answered (`none` when none could).
    pub track: String,
    /// `2xx`, `3xx`, `4xx` or `5xx`.
    pub class: String,
}

/// Labels naming a track.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrackLabels {
    /// Track name.
    pub track: String,
}

/// Labels of a backend.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// Track name.
    pub track: String,
    /// `ip:port`.
    pub backend: String,
}

/// Labels of an upstream error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Track name.
    pub track: String,
    /// `connect` (no backend accepted), `response` (failed after sending), `timeout` (no
    /// response head within the track's time), or for gRPC a failing `grpc-status` in an
    /// answer: `grpc_unknown`, `grpc_deadline_exceeded`, `grpc_internal`, `grpc_unavailable`,
    /// `grpc_data_loss`.
    pub kind: String,
}

/// Labels of a request that failed or was refused because of the client.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientErrorLabels {
    /// The track it was on its way to (`none` when refused before routing).
    pub track: String,
    /// `aborted` (the client went away mid-body: nginx's 499), `malformed_body`,
    /// `body_timeout` (408), `cancelled` (a gRPC call the client cancelled before its status
    /// came), or why the request was refused: `bad_host`, `bad_target`, `connect`,
    /// `too_many_headers`.
    pub kind: String,
}

/// Labels of a mirrored copy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MirrorLabels {
    /// The track whose request was copied.
    pub from: String,
    /// The track the copy went to.
    pub to: String,
    /// `answered` (the mirror answered, whatever its status), `failed` (it did not answer in
    /// time), `dropped_busy` (copies in flight and queued at their limit: dropped rather than
    /// delay anyone), `dropped_body_too_large` (a body above `max_body`), `dropped_unfinished`
    /// (the client's body did not arrive whole).
    pub outcome: String,
}

/// Labels of a reload.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `ok` or `rejected`.
    pub result: String,
}

/// Where the router ran out of a local resource (file descriptors, kernel buffers, memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exhausted {
    /// Accepting a client connection on the traffic port (accepts pause).
    Accept,
    /// Accepting a connection on the admin port (accepts pause).
    AdminAccept,
    /// Opening a connection to a track: the client got 503 naming the router, and the track
    /// and its backends were not blamed.
    Connect,
    /// Opening a health-check probe: the check was skipped, not counted as failed.
    HealthCheck,
    /// Resolving backend names: the addresses in force were kept.
    Resolve,
}

impl Exhausted {
    /// The `during` label.
    pub fn label(self) -> &'static str {
        match self {
            Exhausted::Accept => "accept",
            Exhausted::AdminAccept => "admin_accept",
            Exhausted::Connect => "connect",
            Exhausted::HealthCheck => "health_check",
            Exhausted::Resolve => "resolve",
        }
    }

    /// The listener an accept error happened on.
    pub(crate) fn port_name(self) -> &'static str {
        match self {
            Exhausted::AdminAccept => "admin",
            _ => "traffic",
        }
    }
}

/// Labels of a local resource shortage.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExhaustedLabels {
    /// What the router was doing: see [`Exhausted`].
    pub during: &'static str,
}

/// Every metric the router exports.
pub struct Metrics {
    registry: Registry,
    /// Requests by cohort, track and status class.
    pub requests: Family<RequestLabels, Counter>,
    /// Time to the upstream's response head, per track.
    pub latency: Family<TrackLabels, Histogram>,
    /// 1 when a backend takes traffic.
    pub backend_up: Family<BackendLabels, Gauge>,
    /// Config reloads by result.
    pub reloads: Family<ReloadLabels, Counter>,
    /// Cohort headers dropped because the peer is not trusted.
    pub spoofed: Counter,
    /// Upstream errors by track and kind.
    pub upstream_errors: Family<ErrorLabels, Counter>,
    /// Requests that failed or were refused because of the client, by track and kind: never
    /// a track's error.
    pub client_errors: Family<ClientErrorLabels, Counter>,
    /// The last ten minutes per second, per track version and cohort (`/stats`).
    pub windows: crate::window::Windows,
    /// Times the router itself ran out of descriptors, buffers or memory, by what it was doing.
    pub resource_exhausted: Family<ExhaustedLabels, Counter>,
    /// Mirrored copies by tracks and outcome.
    pub mirror_copies: Family<MirrorLabels, Counter>,
    /// Idle HTTP/1.1 client connections parked: open, holding no buffers until their next
    /// request.
    pub parked: Gauge,
    /// Times a connection was parked.
    pub parks: Counter,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("cohort_router");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency =
            Family::<TrackLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let backend_up = Family::<BackendLabels, Gauge>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let spoofed = Counter::default();
        let upstream_errors = Family::<ErrorLabels, Counter>::default();
        let client_errors = Family::<ClientErrorLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by cohort, track and status class",
            requests.clone(),
        );
        registry.register(
            "response_seconds",
            "Time to the upstream's response head, per track",
            latency.clone(),
        );
        registry.register("backend_up", "1 when a backend takes traffic", backend_up.clone());
        registry.register("reloads", "Config reloads by result", reloads.clone());
        registry.register(
            "spoofed_cohort_headers",
            "Cohort headers dropped from untrusted peers",
            spoofed.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream errors by track and kind",
            upstream_errors.clone(),
        );
        registry.register(
            "client_errors",
            "Requests failed or refused because of the client (not the track's errors), by track and kind",
            client_errors.clone(),
        );
        let resource_exhausted = Family::<ExhaustedLabels, Counter>::default();
        registry.register(
            "resource_exhausted",
            "Times the router ran out of file descriptors, buffers or memory, by what it was doing (never counted against a track)",
            resource_exhausted.clone(),
        );
        let mirror_copies = Family::<MirrorLabels, Counter>::default();
        registry.register(
            "mirror_copies",
            "Copies of requests sent to a mirror track, by outcome (dropped copies never delay a client)",
            mirror_copies.clone(),
        );
        let parked = Gauge::default();
        registry.register(
            "parked_connections",
            "Idle HTTP/1.1 client connections parked: open, holding no buffers until their next request",
            parked.clone(),
        );
        let parks = Counter::default();
        registry.register(
            "connections_parked",
            "Times an idle HTTP/1.1 client connection was parked",
            parks.clone(),
        );
        Arc::new(Metrics {
            mirror_copies,
            parked,
            parks,
            registry,
            requests,
            latency,
            backend_up,
            reloads,
            spoofed,
            upstream_errors,
            client_errors,
            windows: crate::window::Windows::default(),
            resource_exhausted,
        })
    }

    /// Counts a request that failed or was refused because of the client.
    pub fn client_error(&self, track: &str, kind: &str) {
        self.client_errors
            .get_or_create(&ClientErrorLabels {
                track: track.into(),
                kind: kind.into(),
            })
            .inc();
    }

    /// Counts one local resource shortage.
    pub fn exhausted(&self, during: Exhausted) {
        self.resource_exhausted
            .get_or_create(&ExhaustedLabels {
                during: during.label(),
            })
            .inc();
    }

    /// Counts one reload.
    pub fn reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "rejected" };
        self.reloads
            .get_or_create(&ReloadLabels {
                result: result.into(),
            })
            .inc();
    }

    /// The Prometheus text exposition, with backend health taken from `table` now.
    pub fn render(&self, table: &Table) -> String {
        self.backend_up.clear();
        for track in &table.tracks {
            for backend in &track.backends {
                let labels = BackendLabels {
                    track: track.name.clone(),
                    backend: backend.addr.to_string(),
                };
                self.backend_up
                    .get_or_create(&labels)
                    .set(i64::from(backend.health.is_up()));
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Handles for one table: requests by route × track (the last slot: no track) × status class,
/// and latency by track.
#[derive(Debug)]
pub struct TableHandles {
    requests: Vec<Vec<[Counter; 5]>>,
    latency: Vec<Histogram>,
    /// Route × track.
    rings: Vec<Vec<Arc<crate::window::Ring>>>,
    /// The extra series asked for, in order.
    pub mirror_rings: Vec<Arc<crate::window::Ring>>,
}

impl TableHandles {
    /// Counts a request of route `route` answered by track `track` with `status`.
    pub fn request(&self, route: usize, track: Option<usize>, status: u16) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        if let Some(row) = self.requests.get(route) {
            let slot = track.unwrap_or(row.len() - 1).min(row.len() - 1);
            row[slot][class].inc();
        }
    }

    /// Counts a request of route `route` answered by track `track` in the judgement's window,
    /// failed or not (a 5xx, a failing `grpc-status`); `latency` is the time to the track's
    /// response head, if it answered.
    pub fn window(&self, route: usize, track: usize, failed: bool, latency: Option<std::time::Duration>) {
        if let Some(ring) = self.rings.get(route).and_then(|r| r.get(track)) {
            ring.record(
                crate::window::now(),
                failed,
                latency.map(|d| d.as_secs_f64() * 1000.0),
            );
        }
    }

    /// Records the time to a track's response head.
    pub fn latency(&self, track: usize, seconds: f64) {
        if let Some(h) = self.latency.get(track) {
            h.observe(seconds);
        }
    }
}

impl Metrics {
    /// Handles for routes named `cohorts` and tracks named `tracks`, running `versions`, and the
    /// rings of the extra series `mirrored` (traffic mirroring's, kept apart).
    pub fn handles(
        &self,
        cohorts: &[String],
        tracks: &[String],
        versions: &[String],
        mirrored: &[crate::window::Key],
    ) -> TableHandles {
        let classes = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        let slots: Vec<String> = tracks
            .iter()
            .cloned()
            .chain(std::iter::once("none".to_string()))
            .collect();
        let requests = cohorts
            .iter()
            .map(|cohort| {
                slots
                    .iter()
                    .map(|track| {
                        classes.map(|class| {
                            let labels = RequestLabels {
                                cohort: cohort.clone(),
                                track: track.clone(),
                                class: class.into(),
                            };
                            self.requests.get_or_create_owned(&labels)
                        })
                    })
                    .collect()
            })
            .collect();
        let latency = tracks
            .iter()
            .map(|t| {
                self.latency
                    .get_or_create_owned(&TrackLabels { track: t.clone() })
            })
            .collect();
        let keys: Vec<Vec<crate::window::Key>> = cohorts
            .iter()
            .map(|cohort| {
                tracks
                    .iter()
                    .zip(versions)
                    .map(|(t, v)| (t.clone(), v.clone(), cohort.clone()))
                    .collect()
            })
            .collect();
        let mut keep = keys.concat();
        keep.extend(mirrored.iter().cloned());
        self.windows.retain(&keep);
        let mirror_rings = mirrored.iter().map(|k| self.windows.ring(k.clone())).collect();
        let rings = keys
            .into_iter()
            .map(|row| row.into_iter().map(|k| self.windows.ring(k)).collect())
            .collect();
        TableHandles {
            requests,
            latency,
            rings,
            mirror_rings,
        }
    }
}

/// 0.5 ms to about 16 s, doubling: fine enough for p50/p99 of a canary against production.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

//! The router's configuration: what `cohort render` puts in the `<svc>-router` ConfigMap and
//! what `cohort router --config` reads. One format, one source of truth for both.

use crate::model::Protocol;
use crate::{Duration, Sticky, TrackName, TrustedPeers, Version, Weight};

/// Everything one service's router needs to route by cohort.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RouterConfig {
    /// The service routed.
    pub service: String,
    /// Header naming the caller's cohort.
    pub cohort_header: String,
    /// How the router speaks to the tracks (`http1` is left out).
    #[serde(skip_serializing_if = "Protocol::is_http1")]
    pub protocol: Protocol,
    /// Peers whose cohort header is believed (nobody unless the config says so).
    pub trusted_peers: TrustedPeers,
    /// What keeps a user on one track, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Sticky>,
    /// Active health checks of backends.
    pub health_check: RouterHealthCheck,
    /// Tracks with a version, and where to reach them.
    pub tracks: Vec<RouterTrack>,
    /// Named cohorts, matched case-insensitively, in the order written.
    pub cohorts: Vec<RouterRoute>,
    /// Everybody else.
    pub default_route: RouterRoute,
    /// Requests copied to other tracks (both tracks have a version).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<RouterMirror>,
}

/// A share of the requests a route sends to track `from`, copied to track `to`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RouterMirror {
    /// The route's cohort; absent for the default route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cohort: Option<String>,
    /// The track whose requests are copied.
    pub from: TrackName,
    /// The track the copies go to.
    pub to: TrackName,
    /// The share copied.
    pub share: Weight,
    /// Requests with a larger body (bytes) are not copied.
    pub max_body: u64,
}

/// Health checking of backends.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RouterHealthCheck {
    /// Path probed.
    pub path: String,
    /// Time between probes.
    pub interval: Duration,
    /// Consecutive successes before a backend is up again.
    pub rise: u32,
    /// Consecutive failures before a backend is down.
    pub fall: u32,
}

/// One track as the router sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RouterTrack {
    /// Track name.
    pub name: TrackName,
    /// The version it runs.
    pub version: Version,
    /// `host:port` of each backend; names are re-resolved periodically.
    pub backends: Vec<String>,
    /// In a cluster, where the track's pods are listed instead: the router then balances
    /// requests over the ready pods of this Service's EndpointSlices (`--discovery kubernetes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<EndpointsRef>,
}

/// A Service whose EndpointSlices list a track's pods, and the port to reach them on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct EndpointsRef {
    /// The Service's name, in the router's namespace.
    pub service: String,
    /// The Service port's name, as the EndpointSlices list it (their ports carry the pods'
    /// own port numbers).
    pub port: String,
}

/// One cohort's route, after tracks with nothing deployed were taken out.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RouterRoute {
    /// The cohort's header value; absent for the default route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cohort: Option<String>,
    /// The split in force; empty when no track of the route has a version (answered with 503).
    pub weights: Vec<TrackWeight>,
    /// Tracks of the configured route that have no version, and the share they gave to the others.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redistributed: Vec<TrackWeight>,
}

/// A track and its share.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TrackWeight {
    /// Track name.
    pub track: TrackName,
    /// Its share.
    pub weight: Weight,
}

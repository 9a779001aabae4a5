//! The validated release repo: the pipeline (`cohort.yaml`), each service's spec
//! (`services/<name>.yaml`) and each service's release state (`releases/<name>.yaml`).

use std::collections::BTreeMap;

use crate::{Duration, Route, ServiceName, TrackName, Version, Weight};

/// The repo-wide pipeline: where things run, how callers are sorted into cohorts and routed,
/// and what a version must pass to move on.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Pipeline {
    /// Kubernetes namespace every service is rendered into.
    pub namespace: String,
    /// The request header that names the caller's cohort, e.g. `X-Traffic-Group`.
    pub cohort_header: String,
    /// The order versions move through tracks; the first is where `deploy` puts a build.
    pub stages: Vec<TrackName>,
    /// Named cohorts (matched case-insensitively against the header) and their routes.
    pub cohorts: Vec<(String, Route)>,
    /// The route for everybody else: no header, or a value no cohort names.
    pub default_route: Route,
    /// Keeps each user on one track.
    pub sticky: Option<Sticky>,
    /// Peers whose cohort header is believed; from anyone else it is dropped.
    pub trusted_peers: crate::TrustedPeers,
    /// Settings each service inherits unless its spec overrides them.
    pub defaults: Defaults,
    /// The router fleet in front of each service.
    pub router: RouterSettings,
    /// Gates, keyed by the stage being entered.
    pub gates: BTreeMap<TrackName, Gate>,
    /// Where `cohort status --watch` sends problems opened and resolved.
    pub notifications: Notifications,
    /// How strict canary judgements are (`cohort analyze`, judgement gates of `promote`).
    pub judgement: JudgementSettings,
    /// Checks every service's judgement makes beside the routers' counts (`judgement.checks`).
    pub checks: crate::checks::Checks,
    /// What the autopilot may do by itself (nothing unless written).
    pub autopilot: crate::AutopilotPolicy,
}

/// How strict canary judgements are; flags of `analyze` and `promote` override each.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct JudgementSettings {
    /// The window judged: the routers keep ten minutes.
    pub window: Duration,
    /// Confidence a failing verdict needs, in [0.5, 1).
    pub confidence: f64,
    /// The smallest error-rate increase a pass must rule out, in percentage points.
    pub min_error_increase_percent: f64,
}

impl Default for JudgementSettings {
    fn default() -> Self {
        JudgementSettings {
            window: Duration::from_secs(600),
            confidence: 0.95,
            min_error_increase_percent: 0.5,
        }
    }
}

/// Notification channels. Secrets (a webhook URL, a password) are never written here, only
/// where to read them from.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Notifications {
    /// A Slack incoming webhook.
    pub slack: Option<SlackChannel>,
    /// Mail over SMTP.
    pub email: Option<EmailChannel>,
}

/// Where a secret is read from when it is needed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretRef {
    /// An environment variable of the process.
    Env(String),
    /// A file (e.g. a mounted Secret); surrounding whitespace is ignored.
    File(std::path::PathBuf),
}

/// A Slack incoming webhook.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SlackChannel {
    /// Where its URL is.
    pub webhook: SecretRef,
}

/// How an SMTP connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Upgrade with STARTTLS (port 587 by default), refusing a server that cannot.
    StartTls,
    /// TLS from the first byte (port 465 by default).
    Tls,
    /// No encryption (port 25 by default).
    Plain,
}

/// Mail over SMTP.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EmailChannel {
    /// The server's host name or address.
    pub host: String,
    /// Its port, if not the security's usual one.
    pub port: Option<u16>,
    /// How the connection is protected.
    pub security: SmtpSecurity,
    /// The user to log in as, and where the password is.
    pub login: Option<(String, SecretRef)>,
    /// The sender, e.g. `cohort <cohort@example.com>`.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
}

/// What keeps a user on one track: a request header or a cookie holding a user id.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sticky {
    /// A request header, e.g. `X-User-Id`.
    Header(String),
    /// A cookie, e.g. `uid`.
    Cookie(String),
}

/// How the router speaks to a service's tracks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTP/1.1, over pooled keep-alive connections.
    #[default]
    Http1,
    /// HTTP/2 without TLS (prior knowledge), many requests over one connection per pod.
    H2c,
    /// gRPC: HTTP/2 as `h2c`, and a `grpc-status` of UNKNOWN, DEADLINE_EXCEEDED, INTERNAL,
    /// UNAVAILABLE or DATA_LOSS counts as the track's error even in a 200 answer.
    Grpc,
}

impl Protocol {
    /// Its name in `cohort.yaml` and the router config.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2c => "h2c",
            Protocol::Grpc => "grpc",
        }
    }

    /// Whether the tracks are reached over HTTP/2.
    pub fn is_http2(self) -> bool {
        self != Protocol::Http1
    }

    /// Whether it is HTTP/1.1, the default (left out of the router config).
    pub fn is_http1(&self) -> bool {
        *self == Protocol::Http1
    }
}

/// Per-service settings inherited from `cohort.yaml`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Defaults {
    /// Replicas per track.
    pub replicas: BTreeMap<TrackName, u32>,
    /// The container port services listen on.
    pub port: u16,
    /// The readiness check the router and Kubernetes both use.
    pub health_check: HealthCheck,
    /// A track with fewer ready endpoints is unhealthy.
    pub min_ready_endpoints: u32,
    /// The pause before a pod is told to stop, so endpoints are removed first.
    pub pre_stop: PreStop,
}

/// An HTTP health check.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HealthCheck {
    /// Path probed, e.g. `/healthz`.
    pub path: String,
    /// Time between probes.
    pub interval: Duration,
}

/// How a pod waits for endpoint removal before it is sent SIGTERM.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PreStop {
    /// How long to pause.
    pub pause: Duration,
    /// `true`: run `sleep` in the container (for clusters older than 1.30 or images with a
    /// shell); `false`: the kubelet's built-in sleep action, which needs nothing in the image.
    pub exec: bool,
}

/// The router fleet of each service.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RouterSettings {
    /// The cohort image the router pods run.
    pub image: String,
    /// Router pods per service.
    pub replicas: u32,
    /// Port the router listens on for traffic (and the service port callers use).
    pub port: u16,
    /// Port of the router's admin endpoints (`/live`, `/ready`, `/metrics`).
    pub admin_port: u16,
}

/// What a version must pass to enter a stage.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize)]
pub struct Gate {
    /// Minimum time the version has spent in the previous stage.
    pub min_time_in_previous: Duration,
    /// Checks that must be recorded with `cohort approve` first.
    pub checks: Vec<String>,
    /// Whether a passing canary judgement is required.
    pub require_judgement: bool,
}

/// One service's hand-written spec.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ServiceSpec {
    /// The service's name.
    pub name: ServiceName,
    /// Image repository; the tag is the version.
    pub image: String,
    /// Container port (default from the pipeline).
    pub port: u16,
    /// How the router speaks to its tracks.
    pub protocol: Protocol,
    /// Environment variables, in the order written.
    pub env: Vec<(String, String)>,
    /// Resource requests (e.g. `cpu: 100m`).
    pub requests: BTreeMap<String, String>,
    /// Resource limits.
    pub limits: BTreeMap<String, String>,
    /// Readiness probe.
    pub readiness: HealthCheck,
    /// Liveness probe, if any.
    pub liveness: Option<HealthCheck>,
    /// Replicas per track, after defaults.
    pub replicas: BTreeMap<TrackName, u32>,
    /// Named cohorts' routes for this service (the pipeline's, with overrides applied).
    pub cohorts: Vec<(String, Route)>,
    /// The default route for this service.
    pub default_route: Route,
    /// Requests copied to another track, whose answers only count.
    pub mirrors: Vec<Mirror>,
    /// Its own judgement checks (`judgement.checks` in its spec), over the pipeline's.
    pub checks: crate::checks::Checks,
}

/// Traffic mirroring: a share of the requests a route sends to one track is copied to another
/// track, whose answers are counted (apart) and dropped; the client gets only the first
/// track's answer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Mirror {
    /// The route's cohort; `None`: the default route.
    pub cohort: Option<String>,
    /// The track whose requests are copied.
    pub from: TrackName,
    /// The track the copies go to.
    pub to: TrackName,
    /// The share of `from`'s requests of the route that are copied.
    pub share: Weight,
    /// Requests with a larger body are not copied.
    pub max_body: u64,
}

impl Mirror {
    /// The largest body copied unless the spec says otherwise: 64 KiB.
    pub const DEFAULT_MAX_BODY: u64 = 64 * 1024;
}

/// The tool-managed state of one service: which version each track runs, and recorded checks.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize)]
pub struct ReleaseState {
    /// Versions per track; a track that is absent has nothing deployed.
    pub tracks: BTreeMap<TrackName, Version>,
    /// Checks recorded with `cohort approve`, per version.
    pub approvals: BTreeMap<Version, BTreeMap<String, String>>,
    /// Tracks part-way through their ramp (`autopilot.stages.<track>.ramp`): the index of the
    /// step in force. A track that is absent gets its configured weights.
    pub ramp: BTreeMap<TrackName, usize>,
    /// Why the autopilot leaves this service alone (`cohort pause`), if it does.
    pub paused: Option<String>,
    /// Why promotions and ramps of this service are frozen (`cohort freeze`), if they are;
    /// rollbacks go on.
    pub frozen: Option<String>,
}

impl ReleaseState {
    /// The version a track runs, if any.
    pub fn version(&self, track: &TrackName) -> Option<&Version> {
        self.tracks.get(track)
    }

    /// The checks recorded for `version`.
    pub fn recorded_checks(&self, version: &Version) -> Vec<&str> {
        self.approvals
            .get(version)
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// Drops approvals of versions that no track runs any more, so the file does not grow forever.
    pub fn forget_unused_approvals(&mut self) {
        let live: Vec<Version> = self.tracks.values().cloned().collect();
        self.approvals.retain(|v, _| live.contains(v));
    }
}

impl Pipeline {
    /// The stage after `track`, if any.
    pub fn next_stage(&self, track: &TrackName) -> Option<&TrackName> {
        let i = self.stages.iter().position(|t| t == track)?;
        self.stages.get(i + 1)
    }

    /// The stage before `track`, if any.
    pub fn previous_stage(&self, track: &TrackName) -> Option<&TrackName> {
        let i = self.stages.iter().position(|t| t == track)?;
        i.checked_sub(1).and_then(|j| self.stages.get(j))
    }

    /// Whether `track` is one of the stages.
    pub fn has_stage(&self, track: &TrackName) -> bool {
        self.stages.contains(track)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(stages: &[&str]) -> Pipeline {
        let t = |n: &str| TrackName::new(n).expect("track");
        let whole = Route::new(vec![(t(stages[stages.len() - 1]), crate::Weight::WHOLE)]).expect("route");
        Pipeline {
            namespace: "shop".into(),
            cohort_header: "X-Traffic-Group".into(),
            stages: stages.iter().map(|s| t(s)).collect(),
            cohorts: vec![],
            default_route: whole,
            sticky: None,
            trusted_peers: crate::TrustedPeers::default(),
            defaults: Defaults {
                replicas: BTreeMap::new(),
                port: 8080,
                health_check: HealthCheck {
                    path: "/healthz".into(),
                    interval: Duration::from_secs(2),
                },
                min_ready_endpoints: 2,
                pre_stop: PreStop {
                    pause: Duration::from_secs(10),
                    exec: false,
                },
            },
            router: RouterSettings {
                image: "cohort".into(),
                replicas: 4,
                port: 8080,
                admin_port: 9901,
            },
            gates: BTreeMap::new(),
            notifications: Notifications::default(),
            judgement: JudgementSettings::default(),
            checks: Default::default(),
            autopilot: crate::AutopilotPolicy::default(),
        }
    }

    #[test]
    fn stage_order_walks_both_ways_and_stops_at_the_ends() {
        let p = pipeline(&["internal", "canary", "paid", "production"]);
        let t = |n: &str| TrackName::new(n).expect("track");
        assert_eq!(p.next_stage(&t("internal")), Some(&t("canary")));
        assert_eq!(p.next_stage(&t("paid")), Some(&t("production")));
        assert_eq!(p.next_stage(&t("production")), None);
        assert_eq!(p.previous_stage(&t("canary")), Some(&t("internal")));
        assert_eq!(p.previous_stage(&t("internal")), None);
        assert_eq!(p.next_stage(&t("staging")), None);
        assert!(!p.has_stage(&t("staging")));
        let two = pipeline(&["beta", "stable"]);
        assert_eq!(two.next_stage(&t("beta")), Some(&t("stable")));
    }

    #[test]
    fn unused_approvals_are_forgotten() {
        let v = |s: &str| Version::new(s).expect("version");
        let mut state = ReleaseState::default();
        state
            .tracks
            .insert(TrackName::new("internal").expect("track"), v("1.1.0"));
        state
            .approvals
            .insert(v("1.1.0"), BTreeMap::from([("qa".into(), String::new())]));
        state
            .approvals
            .insert(v("1.0.0"), BTreeMap::from([("qa".into(), String::new())]));
        state.forget_unused_approvals();
        assert_eq!(state.approvals.keys().collect::<Vec<_>>(), vec![&v("1.1.0")]);
    }
}

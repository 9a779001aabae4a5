//! The evaluation: per service (a Service labelled `tier: service` that selects router pods),
//! the router, each track's ready endpoints and the versions running on it, judged against
//! what the release repo says or, without one, against labels and defaults.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use serde::Serialize;

use crate::inventory::Inventory;

/// What the release repo says about one service.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExpectedService {
    /// Router replicas.
    pub router_replicas: u32,
    /// Per track: the version it should run (`None`: no version yet) and its replicas.
    pub tracks: BTreeMap<String, ExpectedTrack>,
}

/// What the release repo says about one track of a service.
#[derive(Clone, Debug, PartialEq)]
pub struct ExpectedTrack {
    /// The version the track runs, if any.
    pub version: Option<String>,
    /// Its replicas.
    pub replicas: u32,
}

/// The release repo's expectations: services by name, and the stage order of tracks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expectations {
    /// Services by name.
    pub services: BTreeMap<String, ExpectedService>,
    /// Tracks in stage order (e.g. internal, canary, paid, production).
    pub stages: Vec<String>,
}

impl ExpectedService {
    /// What one service should run, read off the objects `cohort render` makes for it (as
    /// the API server takes them): router replicas, and each track's version and replicas.
    /// Every stage is expected, without a version until one is rendered for it.
    pub fn from_objects(objects: &[serde_json::Value], stages: &[String]) -> ExpectedService {
        let mut expected = ExpectedService::default();
        for stage in stages {
            expected.tracks.insert(
                stage.clone(),
                ExpectedTrack {
                    version: None,
                    replicas: 0,
                },
            );
        }
        for o in objects.iter().filter(|o| o["kind"] == "Deployment") {
            let replicas = o["spec"]["replicas"]
                .as_u64()
                .and_then(|r| u32::try_from(r).ok())
                .unwrap_or(1);
            let labels = &o["metadata"]["labels"];
            match (labels["tier"].as_str(), labels["track"].as_str()) {
                (Some("router"), _) => expected.router_replicas = replicas,
                (Some("service"), Some(track)) => {
                    expected.tracks.insert(
                        track.to_string(),
                        ExpectedTrack {
                            version: labels["version"].as_str().map(String::from),
                            replicas,
                        },
                    );
                }
                _ => {}
            }
        }
        expected
    }
}

/// Thresholds used when the release repo does not say.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Router replicas expected without a release repo.
    pub router_replicas: u32,
    /// Fewest ready endpoints a track Service may have.
    pub min_ready_endpoints: u32,
    /// Stage order without a release repo.
    pub stages: Vec<String>,
    /// When the evaluation happens (ages are measured to it).
    pub now: Timestamp,
}

impl Settings {
    /// The seed's defaults: 4 router replicas, 2 ready endpoints per track, and the stage
    /// order internal → canary → paid → production.
    pub fn defaults(now: Timestamp) -> Settings {
        Settings {
            router_replicas: 4,
            min_ready_endpoints: 2,
            stages: ["internal", "canary", "paid", "production"]
                .map(String::from)
                .to_vec(),
            now,
        }
    }
}

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look; does not make the service unhealthy.
    Warning,
    /// The service is not as it should be.
    Problem,
}

/// What is wrong, in terms a notifier can key on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Finding {
    /// The router Deployment has fewer available replicas than expected (or is missing).
    RouterUnavailable {
        /// Available replicas.
        available: u32,
        /// Expected replicas.
        expected: u32,
    },
    /// A track Service has too few ready endpoints.
    TooFewEndpoints {
        /// The track.
        track: String,
        /// Ready endpoints.
        ready: u32,
        /// The minimum.
        minimum: u32,
    },
    /// A track the release repo names has no Service.
    MissingTrackService {
        /// The track.
        track: String,
    },
    /// A Deployment has fewer available replicas than it asks for.
    UnderReplicated {
        /// The Deployment.
        deployment: String,
        /// Available replicas.
        available: u32,
        /// Desired replicas.
        desired: u32,
    },
    /// A Deployment asks for more replicas than the release repo says.
    OverReplicated {
        /// The Deployment.
        deployment: String,
        /// Replicas it asks for.
        replicas: u32,
        /// Replicas the release repo says.
        expected: u32,
    },
    /// A rollout that stopped making progress.
    StuckRollout {
        /// The Deployment.
        deployment: String,
        /// The `Progressing` condition's reason, e.g. `ProgressDeadlineExceeded`.
        reason: String,
        /// Why its pods are not ready, e.g. `2 pods Pending: not scheduled to a node`,
        /// `1 pod ImagePullBackOff: ...`.
        pods: Vec<String>,
    },
    /// A version left running: an older version beside the current one on a track, or a
    /// Deployment the release repo no longer names.
    Forgotten {
        /// The Deployment.
        deployment: String,
        /// The track.
        track: String,
        /// The version it runs.
        version: String,
        /// How long it has existed, in seconds.
        age_seconds: i64,
    },
    /// The track does not run the version the release repo says.
    Drift {
        /// The track.
        track: String,
        /// What runs (available), if anything.
        running: Option<String>,
        /// What the release repo says.
        expected: String,
    },
    /// A later stage runs a newer version than an earlier one (e.g. production newer than paid).
    VersionOrder {
        /// The earlier stage.
        earlier: String,
        /// Its version.
        earlier_version: String,
        /// The later stage.
        later: String,
        /// Its (newer) version.
        later_version: String,
    },
}

impl Finding {
    /// Problem or warning.
    pub fn severity(&self) -> Severity {
        match self {
            Finding::VersionOrder { .. } => Severity::Warning,
            _ => Severity::Problem,
        }
    }

    /// A stable identity within its service: the same trouble keeps the same key from one
    /// evaluation to the next (so notifications are sent on change only), whatever its counts.
    pub fn key(&self) -> String {
        match self {
            Finding::RouterUnavailable { .. } => "router:unavailable".into(),
            Finding::TooFewEndpoints { track, .. } => format!("{track}:too-few-endpoints"),
            Finding::MissingTrackService { track } => format!("{track}:missing-service"),
            Finding::UnderReplicated { deployment, .. } => format!("{deployment}:under-replicated"),
            Finding::OverReplicated { deployment, .. } => format!("{deployment}:over-replicated"),
            Finding::StuckRollout { deployment, .. } => format!("{deployment}:stuck"),
            Finding::Forgotten { deployment, .. } => format!("{deployment}:forgotten"),
            Finding::Drift { track, .. } => format!("{track}:drift"),
            Finding::VersionOrder { earlier, later, .. } => format!("{earlier}<{later}:version-order"),
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::RouterUnavailable { available, expected } => {
                write!(f, "router has {available} of {expected} replicas available")
            }
            Finding::TooFewEndpoints {
                track,
                ready,
                minimum,
            } => {
                write!(
                    f,
                    "{track} has {ready} ready endpoint{} (minimum {minimum})",
                    plural(*ready)
                )
            }
            Finding::MissingTrackService { track } => write!(f, "{track} has no Service"),
            Finding::UnderReplicated {
                deployment,
                available,
                desired,
            } => write!(f, "{deployment}: {available} of {desired} replicas available"),
            Finding::OverReplicated {
                deployment,
                replicas,
                expected,
            } => write!(
                f,
                "{deployment}: {replicas} replicas, the release repo says {expected}"
            ),
            Finding::StuckRollout {
                deployment,
                reason,
                pods,
            } => {
                write!(f, "{deployment}: rollout stuck ({reason})")?;
                if !pods.is_empty() {
                    write!(f, ": {}", pods.join(", "))?;
                }
                Ok(())
            }
            Finding::Forgotten {
                deployment,
                track,
                version,
                age_seconds,
            } => write!(
                f,
                "{deployment}: {version} still running on {track}, {} old; nothing routes to it",
                age(*age_seconds)
            ),
            Finding::Drift {
                track,
                running,
                expected,
            } => match running {
                Some(v) => write!(f, "{track} runs {v}, the release repo says {expected}"),
                None => write!(
                    f,
                    "{track} runs nothing available, the release repo says {expected}"
                ),
            },
            Finding::VersionOrder {
                earlier,
                earlier_version,
                later,
                later_version,
            } => write!(
                f,
                "{later} runs {later_version}, newer than {earlier}'s {earlier_version}"
            ),
        }
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `3d`, `5h`, `12m`, `40s`: the largest unit, as kubectl prints ages.
pub fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3_600 => format!("{}h", s / 3_600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The router of one service.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouterHealth {
    /// The router Deployment, if found.
    pub deployment: Option<String>,
    /// Available replicas.
    pub available: u32,
    /// Expected replicas.
    pub expected: u32,
}

/// One version running on a track.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Running {
    /// The Deployment.
    pub deployment: String,
    /// Its version label.
    pub version: String,
    /// Ready replicas.
    pub ready: u32,
    /// Desired replicas.
    pub desired: u32,
    /// Seconds since it was created.
    pub age_seconds: i64,
}

/// One track of one service.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrackHealth {
    /// The track.
    pub track: String,
    /// Ready endpoints of its Service (`None`: no Service).
    pub ready_endpoints: Option<u32>,
    /// The versions running on it, newest first.
    pub running: Vec<Running>,
    /// The version the release repo says, when there is one.
    pub expected_version: Option<String>,
}

/// One service: its router, tracks and what is wrong.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceHealth {
    /// The service (its front Service's name).
    pub service: String,
    /// Its router.
    pub router: RouterHealth,
    /// Its tracks, in stage order, then any others by name.
    pub tracks: Vec<TrackHealth>,
    /// What is wrong, problems before warnings.
    pub findings: Vec<Finding>,
}

impl ServiceHealth {
    /// Whether nothing is wrong (warnings allowed).
    pub fn healthy(&self) -> bool {
        self.findings.iter().all(|f| f.severity() == Severity::Warning)
    }
}

/// The evaluation of a namespace.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Services by name.
    pub services: Vec<ServiceHealth>,
}

impl Report {
    /// Whether every service is healthy.
    pub fn healthy(&self) -> bool {
        self.services.iter().all(ServiceHealth::healthy)
    }
}

fn labels(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    meta.labels.as_ref().unwrap_or(&EMPTY)
}

fn label<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    labels(meta).get(key).map(String::as_str)
}

fn count(n: Option<i32>) -> u32 {
    n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
}

/// A track Deployment, read off its labels.
struct TrackDeployment<'a> {
    deployment: &'a Deployment,
    name: &'a str,
    version: &'a str,
}

impl TrackDeployment<'_> {
    fn desired(&self) -> u32 {
        self.deployment
            .spec
            .as_ref()
            .map_or(1, |s| count(s.replicas.or(Some(1))))
    }

    fn available(&self) -> u32 {
        count(self.deployment.status.as_ref().and_then(|s| s.available_replicas))
    }

    fn ready(&self) -> u32 {
        count(self.deployment.status.as_ref().and_then(|s| s.ready_replicas))
    }

    fn is_available(&self) -> bool {
        self.desired() > 0 && self.available() >= self.desired()
    }

    fn created(&self) -> Option<Timestamp> {
        self.deployment.metadata.creation_timestamp.as_ref().map(|t| t.0)
    }

    /// Seconds from its creation to `now` (0 when the server gave no creation time).
    fn age_seconds(&self, now: Timestamp) -> i64 {
        self.created().map_or(0, |c| now.as_second() - c.as_second())
    }

    /// The reason of a `Progressing=False` condition: the rollout gave up.
    fn stuck(&self) -> Option<String> {
        let status = self.deployment.status.as_ref()?;
        let c = status
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Progressing" && c.status == "False")?;
        Some(c.reason.clone().unwrap_or_else(|| "Progressing=False".into()))
    }
}

/// Why the pods selected by `selector` are not ready: `2 pods Pending: not scheduled to a
/// node`, `1 pod ImagePullBackOff: ...`.
fn pod_reasons(pods: &[Pod], selector: &BTreeMap<String, String>) -> Vec<String> {
    crate::rollout::pod_reasons(pods.iter().filter(|pod| {
        let l = labels(&pod.metadata);
        selector.iter().all(|(k, v)| l.get(k) == Some(v))
    }))
}

/// Newest version first; by creation time where versions do not compare, then by name.
fn later_first(a: &TrackDeployment<'_>, b: &TrackDeployment<'_>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (newer(a.version, b.version), newer(b.version, a.version)) {
        (Some(true), _) => Ordering::Less,
        (_, Some(true)) => Ordering::Greater,
        _ => b.created().cmp(&a.created()).then(a.name.cmp(b.name)),
    }
}

/// Dot-separated numeric comparison (`1.10.0` > `1.9.2`); text compared as text where a part
/// is not a number. `None` when either side has no digits at all.
fn newer(a: &str, b: &str) -> Option<bool> {
    let parts = |v: &str| -> Vec<Result<u64, String>> {
        v.trim_start_matches('v')
            .split(['.', '-'])
            .map(|p| p.parse::<u64>().map_err(|_| p.to_string()))
            .collect()
    };
    if !a.chars().any(|c| c.is_ascii_digit()) || !b.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let ord = match (x, y) {
            (Ok(x), Ok(y)) => x.cmp(y),
            (Err(x), Err(y)) => x.cmp(y),
            // A number sorts after text (1.0.0 > 1.0.0-rc).
            (Ok(_), Err(_)) => std::cmp::Ordering::Greater,
            (Err(_), Ok(_)) => std::cmp::Ordering::Less,
        };
        if ord != std::cmp::Ordering::Equal {
            return Some(ord == std::cmp::Ordering::Greater);
        }
    }
    Some(pa.len() < pb.len() && pb[pa.len()..].iter().all(|p| p.is_err()))
}

/// Evaluates a namespace. With `expected` (from the release repo) replicas, versions and the
/// stage order come from it; without, from the Deployments' labels and `settings`.
pub fn evaluate(inv: &Inventory, expected: Option<&Expectations>, settings: &Settings) -> Report {
    // Index once: everything below is lookups, so a namespace of thousands of services costs
    // one pass per kind.
    let mut ready_endpoints: BTreeMap<&str, u32> = BTreeMap::new();
    for slice in &inv.endpoint_slices {
        let Some(svc) = label(&slice.metadata, "kubernetes.io/service-name") else {
            continue;
        };
        let ready = slice
            .endpoints
            .iter()
            .filter(|e| {
                // Unknown readiness counts as ready, as kube-proxy reads it; terminating never.
                let c = e.conditions.as_ref();
                c.and_then(|c| c.ready).unwrap_or(true) && !c.and_then(|c| c.terminating).unwrap_or(false)
            })
            .count();
        *ready_endpoints.entry(svc).or_default() += u32::try_from(ready).unwrap_or(u32::MAX);
    }

    // Front Services (select router pods) name the services; track Services name tracks.
    let mut fronts: BTreeMap<&str, &str> = BTreeMap::new(); // app -> service name
    let mut track_services: BTreeMap<(&str, &str), &Service> = BTreeMap::new(); // (app, track)
    for svc in &inv.services {
        if label(&svc.metadata, "tier") != Some("service") {
            continue;
        }
        let Some(selector) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
            continue;
        };
        let Some(app) = selector.get("app") else { continue };
        let name = svc.metadata.name.as_deref().unwrap_or_default();
        match (selector.get("tier").map(String::as_str), selector.get("track")) {
            (Some("router"), _) => {
                fronts.insert(app, name);
            }
            (_, Some(track)) => {
                track_services.insert((app, track), svc);
            }
            _ => {}
        }
    }

    let mut routers: BTreeMap<&str, &Deployment> = BTreeMap::new();
    let mut by_track: BTreeMap<(&str, &str), Vec<TrackDeployment<'_>>> = BTreeMap::new();
    for d in &inv.deployments {
        let Some(app) = label(&d.metadata, "app") else {
            continue;
        };
        let name = d.metadata.name.as_deref().unwrap_or_default();
        match label(&d.metadata, "tier") {
            Some("router") => {
                routers.insert(app, d);
            }
            Some("service") => {
                let (Some(track), Some(version)) =
                    (label(&d.metadata, "track"), label(&d.metadata, "version"))
                else {
                    continue;
                };
                by_track.entry((app, track)).or_default().push(TrackDeployment {
                    deployment: d,
                    name,
                    version,
                });
            }
            _ => {}
        }
    }

    // The services: every front Service, plus what the release repo names.
    let mut apps: BTreeSet<&str> = fronts.keys().copied().collect();
    if let Some(e) = expected {
        apps.extend(e.services.keys().map(String::as_str));
    }
    let stages = expected
        .filter(|e| !e.stages.is_empty())
        .map_or(&settings.stages, |e| &e.stages);

    let services = apps
        .into_iter()
        .map(|app| {
            let expect = expected.and_then(|e| e.services.get(app));
            evaluate_service(
                app,
                fronts.get(app).copied().unwrap_or(app),
                expect,
                expected.is_some(),
                stages,
                settings,
                &Indexes {
                    ready_endpoints: &ready_endpoints,
                    track_services: &track_services,
                    routers: &routers,
                    by_track: &by_track,
                    pods: &inv.pods,
                },
            )
        })
        .collect();
    Report { services }
}

struct Indexes<'a, 'i> {
    ready_endpoints: &'a BTreeMap<&'i str, u32>,
    track_services: &'a BTreeMap<(&'i str, &'i str), &'i Service>,
    routers: &'a BTreeMap<&'i str, &'i Deployment>,
    by_track: &'a BTreeMap<(&'i str, &'i str), Vec<TrackDeployment<'i>>>,
    pods: &'i [Pod],
}

fn evaluate_service(
    app: &str,
    service: &str,
    expect: Option<&ExpectedService>,
    have_repo: bool,
    stages: &[String],
    settings: &Settings,
    ix: &Indexes<'_, '_>,
) -> ServiceHealth {
    let mut findings = vec![];

    let router_expected = expect.map_or(settings.router_replicas, |e| e.router_replicas);
    let router = ix.routers.get(app);
    let router_available = router.map_or(0, |d| count(d.status.as_ref().and_then(|s| s.available_replicas)));
    if router_available < router_expected {
        findings.push(Finding::RouterUnavailable {
            available: router_available,
            expected: router_expected,
        });
    }

    // Tracks: the stages first, then any other track seen in the cluster or the repo.
    let mut tracks: Vec<String> = vec![];
    let seen = |t: &str, tracks: &mut Vec<String>| {
        if !tracks.iter().any(|x| x == t) {
            tracks.push(t.to_string());
        }
    };
    let present: BTreeSet<&str> = ix
        .by_track
        .range((app, "")..)
        .take_while(|((a, _), _)| *a == app)
        .map(|((_, t), _)| *t)
        .chain(
            ix.track_services
                .range((app, "")..)
                .take_while(|((a, _), _)| *a == app)
                .map(|((_, t), _)| *t),
        )
        .chain(
            expect
                .into_iter()
                .flat_map(|e| e.tracks.keys().map(String::as_str)),
        )
        .collect();
    for s in stages {
        if present.contains(s.as_str()) {
            seen(s, &mut tracks);
        }
    }
    for t in &present {
        seen(t, &mut tracks);
    }

    let mut track_health = vec![];
    for track in &tracks {
        let expected_track = expect.and_then(|e| e.tracks.get(track));
        let expected_version = expected_track.and_then(|t| t.version.clone());
        let mut deployments: Vec<&TrackDeployment<'_>> = ix
            .by_track
            .get(&(app, track.as_str()))
            .into_iter()
            .flatten()
            .collect();
        deployments.sort_by(|a, b| later_first(a, b));

        let svc_name = ix
            .track_services
            .get(&(app, track.as_str()))
            .and_then(|s| s.metadata.name.as_deref());
        let ready_endpoints = svc_name.map(|n| ix.ready_endpoints.get(n).copied().unwrap_or(0));
        // A track is live when something should run on it: the repo gives it a version, or
        // (without a repo) a Deployment runs on it.
        let live = match expected_track {
            Some(t) => t.version.is_some(),
            None => !deployments.is_empty(),
        };
        match ready_endpoints {
            Some(ready) if live && ready < settings.min_ready_endpoints => {
                findings.push(Finding::TooFewEndpoints {
                    track: track.clone(),
                    ready,
                    minimum: settings.min_ready_endpoints,
                })
            }
            None if live => findings.push(Finding::MissingTrackService { track: track.clone() }),
            _ => {}
        }

        // Which Deployment is the track's current one: the repo's version; without a repo,
        // the newest version that is available (a newer one still rolling out is not current
        // yet, and an older one re-created later is still older).
        let current = match have_repo {
            true => expected_version
                .as_ref()
                .and_then(|v| deployments.iter().find(|d| d.version == v)),
            false => deployments
                .iter()
                .find(|d| d.is_available())
                .or(deployments.first()),
        };
        // With a repo that gives the track no version (or does not name it), whatever runs
        // there is left over.
        let unnamed = have_repo && expected_version.is_none();
        for d in &deployments {
            let is_current = current.is_some_and(|c| std::ptr::eq(*c, *d));
            let newer_than_current = current.is_some_and(|c| later_first(d, c) == std::cmp::Ordering::Less);
            if let Some(reason) = d.stuck() {
                let selector: BTreeMap<String, String> = labels(&d.deployment.metadata)
                    .iter()
                    .filter(|(k, _)| matches!(k.as_str(), "app" | "tier" | "track" | "version"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                findings.push(Finding::StuckRollout {
                    deployment: d.name.to_string(),
                    reason,
                    pods: pod_reasons(ix.pods, &selector),
                });
            } else if (is_current || !have_repo) && d.available() < d.desired() {
                findings.push(Finding::UnderReplicated {
                    deployment: d.name.to_string(),
                    available: d.available(),
                    desired: d.desired(),
                });
            }
            if let (true, Some(t)) = (is_current, expected_track)
                && d.desired() > t.replicas
            {
                findings.push(Finding::OverReplicated {
                    deployment: d.name.to_string(),
                    replicas: d.desired(),
                    expected: t.replicas,
                });
            }
            // Left behind: not the current version, and the current one serves (or the repo
            // no longer names the track or service at all). A newer one still rolling out is
            // a rollout, not a leftover.
            let current_serves = current.is_some_and(|c| c.is_available());
            if !is_current && !newer_than_current && (current_serves || unnamed) {
                findings.push(Finding::Forgotten {
                    deployment: d.name.to_string(),
                    track: track.clone(),
                    version: d.version.to_string(),
                    age_seconds: d.age_seconds(settings.now),
                });
            }
        }
        if let Some(v) = &expected_version
            && !deployments.iter().any(|d| d.version == v)
        {
            findings.push(Finding::Drift {
                track: track.clone(),
                running: deployments
                    .iter()
                    .find(|d| d.is_available())
                    .map(|d| d.version.to_string()),
                expected: v.clone(),
            });
        }

        track_health.push(TrackHealth {
            track: track.clone(),
            ready_endpoints,
            running: deployments
                .iter()
                .map(|d| Running {
                    deployment: d.name.to_string(),
                    version: d.version.to_string(),
                    ready: d.ready(),
                    desired: d.desired(),
                    age_seconds: d.age_seconds(settings.now),
                })
                .collect(),
            expected_version,
        });
    }

    // Version order along the stages: each later stage should not be ahead of an earlier one.
    let current_version = |t: &TrackHealth| -> Option<String> {
        t.expected_version.clone().or_else(|| {
            t.running
                .iter()
                .find(|r| r.ready >= r.desired)
                .map(|r| r.version.clone())
        })
    };
    let staged: Vec<(&String, String)> = stages
        .iter()
        .filter_map(|s| {
            let t = track_health.iter().find(|t| &t.track == s)?;
            Some((s, current_version(t)?))
        })
        .collect();
    for pair in staged.windows(2) {
        let ((earlier, ev), (later, lv)) = (&pair[0], &pair[1]);
        if newer(lv, ev) == Some(true) {
            findings.push(Finding::VersionOrder {
                earlier: (*earlier).clone(),
                earlier_version: ev.clone(),
                later: (*later).clone(),
                later_version: lv.clone(),
            });
        }
    }

    findings.sort_by_key(|f| std::cmp::Reverse(f.severity()));
    ServiceHealth {
        service: service.to_string(),
        router: RouterHealth {
            deployment: router.and_then(|d| d.metadata.name.clone()),
            available: router_available,
            expected: router_expected,
        },
        tracks: track_health,
        findings,
    }
}

#[cfg(test)]
mod tests {
    use super::{age, newer};

    #[test]
    fn versions_compare_by_number_not_text() {
        assert_eq!(newer("1.10.0", "1.9.2"), Some(true));
        assert_eq!(newer("1.9.2", "1.10.0"), Some(false));
        assert_eq!(newer("1.15.0", "1.15.0"), Some(false));
        assert_eq!(newer("1.0.0", "1.0.0-rc1"), Some(true));
        assert_eq!(newer("1.0.0-rc1", "1.0.0"), Some(false));
        assert_eq!(newer("main", "1.0.0"), None);
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(age(40), "40s");
        assert_eq!(age(125), "2m");
        assert_eq!(age(7_200), "2h");
        assert_eq!(age(3 * 86_400 + 5), "3d");
        assert_eq!(age(-5), "0s");
    }
}

//! `cohort.yaml`: the pipeline every service of the repo follows.

use std::collections::BTreeMap;

use cohort_core::{
    Defaults, Duration, Gate, HealthCheck, Pipeline, PreStop, Route, RouterSettings, Sticky, TrackName,
    TrustedPeers, Weight, names::check_dns_label,
};
use cohort_yaml::Node;

use crate::diag::{Kind, Sink};
use crate::read::{self, MapReader};

/// The image router pods run unless `router.image` says otherwise: this very release of cohort.
pub const DEFAULT_ROUTER_IMAGE: &str = concat!("ghcr.io/cohort-dev/cohort:", env!("CARGO_PKG_VERSION"));

/// The seed's stage order.
pub const DEFAULT_STAGES: [&str; 4] = ["internal", "canary", "paid", "production"];

fn track(name: &str) -> TrackName {
    TrackName::new(name).unwrap_or_else(|_| unreachable!("built-in track names are valid"))
}

fn seed_route(legs: &[(&str, u32)]) -> Route {
    let legs = legs
        .iter()
        .map(|(t, bp)| (track(t), Weight::from_basis_points(*bp).unwrap_or(Weight::WHOLE)))
        .collect();
    Route::new(legs).unwrap_or_else(|_| unreachable!("built-in routes sum to 100%"))
}

/// The seed's cohorts: INTERNAL → internal; FREE → canary 5% / production 95%; ENTERPRISE → production.
pub fn seed_cohorts() -> Vec<(String, Route)> {
    vec![
        ("INTERNAL".into(), seed_route(&[("internal", 10_000)])),
        (
            "FREE".into(),
            seed_route(&[("canary", 500), ("production", 9500)]),
        ),
        ("ENTERPRISE".into(), seed_route(&[("production", 10_000)])),
    ]
}

/// The seed's route for everybody else: paid 5% / production 95%.
pub fn seed_default_route() -> Route {
    seed_route(&[("paid", 500), ("production", 9500)])
}

/// Reads `cohort.yaml`; every problem goes to `sink`. The pipeline comes back even when some
/// parts have errors (built-in defaults stand in for them) so that the service files can be
/// checked in the same run; it is `None` only when there are no usable stages.
pub fn read_pipeline(root: &Node, sink: &mut Sink<'_>) -> Option<Pipeline> {
    let mut m = MapReader::new(root, "cohort.yaml", sink);

    let namespace = m
        .req(
            "namespace",
            "add `namespace: <name>`, the Kubernetes namespace services run in",
            sink,
        )
        .and_then(|n| {
            let t = read::text(n, "`namespace`", sink)?;
            name_ok(n, check_dns_label("namespace", t, false), sink).then(|| t.to_string())
        });

    let cohort_header = match m.opt("cohort_header") {
        Some(n) => {
            read::text(n, "`cohort_header`", sink).and_then(|t| header_name(n, t, "the cohort header", sink))
        }
        None => Some("X-Traffic-Group".to_string()),
    };

    let stages = match m.opt("stages") {
        Some(n) => read_stages(n, sink),
        None => Some(DEFAULT_STAGES.iter().map(|t| track(t)).collect()),
    };
    let Some(stages) = stages else {
        // Everything below is checked against the stages; without them it would only add noise.
        for key in [
            "cohorts",
            "default_route",
            "sticky",
            "trusted_peers",
            "defaults",
            "router",
            "gates",
            "notifications",
            "judgement",
            "autopilot",
        ] {
            m.opt(key);
        }
        m.finish(sink);
        return None;
    };

    let cohorts_node = m.opt("cohorts");
    let default_route_node = m.opt("default_route");
    let cohorts = match cohorts_node {
        Some(n) => read_cohorts(n, &stages, "cohort.yaml", sink),
        None => Some(seed_cohorts()),
    };
    let default_route = match default_route_node {
        Some(n) => read_route(n, "`default_route`", &stages, sink),
        None => Some(seed_default_route()),
    };
    if cohorts_node.is_none() || default_route_node.is_none() {
        // Built-in routes name the seed's tracks; with other stages they must be written out.
        for (name, route) in cohorts
            .iter()
            .flatten()
            .map(|(n, r)| (n.as_str(), r))
            .chain(default_route.iter().map(|r| ("everyone else", r)))
        {
            for (t, _) in route.legs() {
                if !stages.contains(t) {
                    sink.error(
                        m.pos(),
                        Kind::UnknownTrack,
                        format!("the built-in route for {name} sends traffic to `{t}`, which is not one of the stages"),
                        Some("write your own `cohorts:` and `default_route:` for these stages".into()),
                    );
                }
            }
        }
    }

    let sticky = m.opt("sticky").and_then(|n| read_sticky(n, sink));
    let trusted_peers = match m.opt("trusted_peers") {
        Some(n) => read_peers(n, sink),
        None => {
            sink.warning(
                m.pos(),
                Kind::OpenTrust,
                format!("no `trusted_peers`: `{}` is believed from nobody, so no request reaches a named cohort's route", cohort_header.as_deref().unwrap_or("X-Traffic-Group")),
                Some("list the addresses of the gateway that sets the header, e.g. `trusted_peers: [10.0.0.0/8]`".into()),
            );
            Some(TrustedPeers::default())
        }
    };
    let defaults = read_defaults(m.opt("defaults"), root, &stages, sink);
    let router = read_router(m.opt("router"), root, sink);
    let gates = read_gates(m.opt("gates"), &stages, sink);
    let notifications = crate::notifications::read_notifications(m.opt("notifications"), sink);
    let judgement = read_judgement(m.opt("judgement"), sink);
    let routes: Vec<&Route> = cohorts
        .iter()
        .flatten()
        .map(|(_, r)| r)
        .chain(default_route.iter())
        .collect();
    let autopilot = crate::autopilot::read_autopilot(m.opt("autopilot"), &stages, &routes, sink);
    m.finish(sink);

    // Parts with errors get the built-in defaults so that service files can still be checked
    // in the same run; the errors already in `sink` keep the repo from being used.
    let mut ignored = vec![];
    let mut quiet = Sink::new("cohort.yaml", &mut ignored);
    Some(Pipeline {
        namespace: namespace.unwrap_or_else(|| "default".into()),
        cohort_header: cohort_header.unwrap_or_else(|| "X-Traffic-Group".into()),
        cohorts: cohorts.unwrap_or_default(),
        default_route: default_route.unwrap_or_else(seed_default_route),
        sticky,
        trusted_peers: trusted_peers.unwrap_or_default(),
        defaults: defaults
            .or_else(|| read_defaults(None, root, &stages, &mut quiet))
            .unwrap_or_else(|| unreachable!("built-in defaults are valid")),
        router: router
            .or_else(|| read_router(None, root, &mut quiet))
            .unwrap_or_else(|| unreachable!("built-in router settings are valid")),
        gates: gates.unwrap_or_default(),
        notifications: notifications.unwrap_or_default(),
        judgement: judgement.as_ref().map(|j| j.0).unwrap_or_default(),
        checks: judgement.map(|j| j.1).unwrap_or_default(),
        autopilot: autopilot.unwrap_or_default(),
        stages,
    })
}

/// `judgement`: how strict canary judgements are (absent keys keep the built-in values).
fn read_judgement(
    n: Option<&Node>,
    sink: &mut Sink<'_>,
) -> Option<(cohort_core::JudgementSettings, cohort_core::checks::Checks)> {
    let mut settings = cohort_core::JudgementSettings::default();
    let Some(n) = n else {
        return Some((settings, Default::default()));
    };
    let mut m = MapReader::new(n, "`judgement`", sink);
    let (window, confidence, increase) = (m.opt("window"), m.opt("confidence"), m.opt("min_error_increase"));
    let checks = crate::checks::read_checks(&mut m, sink);
    m.finish(sink);
    let mut ok = checks.is_some();
    if let Some(c) = &checks {
        ok &= crate::checks::check_servers(c, &Default::default(), n, sink);
    }
    if let Some(w) = window {
        match read::duration(w, "`judgement.window`", sink) {
            Some(d) if (1_000..=600_000).contains(&d.as_millis()) => settings.window = d,
            Some(_) => {
                sink.error(
                    w.pos,
                    Kind::OutOfRange,
                    "`judgement.window` must be between 1s and 10m: the routers keep ten minutes".to_string(),
                    None,
                );
                ok = false;
            }
            None => ok = false,
        }
    }
    if let Some(c) = confidence {
        match read::text(c, "`judgement.confidence`", sink).map(|t| (t, t.parse::<f64>())) {
            Some((_, Ok(v))) if (0.5..1.0).contains(&v) => settings.confidence = v,
            Some((t, _)) => {
                sink.error(
                    c.pos,
                    Kind::OutOfRange,
                    format!("`judgement.confidence` is `{t}`; give a value from 0.5 to below 1"),
                    Some("e.g. `0.95`: a healthy canary then fails at most 1 time in 20".into()),
                );
                ok = false;
            }
            None => ok = false,
        }
    }
    if let Some(i) = increase {
        let parsed = read::text(i, "`judgement.min_error_increase`", sink)
            .map(|t| (t, t.strip_suffix('%').and_then(|p| p.trim().parse::<f64>().ok())));
        match parsed {
            Some((_, Some(p))) if p > 0.0 && p <= 100.0 => settings.min_error_increase_percent = p,
            Some((t, _)) => {
                sink.error(
                    i.pos,
                    Kind::OutOfRange,
                    format!(
                        "`judgement.min_error_increase` is `{t}`; give percentage points above 0, like `0.5%`"
                    ),
                    None,
                );
                ok = false;
            }
            None => ok = false,
        }
    }
    ok.then(|| (settings, checks.unwrap_or_default()))
}

pub(crate) fn name_ok<E: std::fmt::Display>(n: &Node, r: Result<(), E>, sink: &mut Sink<'_>) -> bool {
    match r {
        Ok(()) => true,
        Err(e) => {
            sink.error(
                n.pos,
                Kind::BadName,
                e.to_string(),
                Some("Kubernetes names use lowercase letters, digits and `-`, at most 63 characters".into()),
            );
            false
        }
    }
}

pub(crate) fn header_name(n: &Node, t: &str, what: &str, sink: &mut Sink<'_>) -> Option<String> {
    let t = token_name(n, t, what, "X-Traffic-Group", sink)?;
    request_header_ok(n, &t, what, &[HTTP_OWNED, ROUTER_OWNED], "X-Traffic-Group", sink).then_some(t)
}

/// Headers HTTP itself owns: hop-by-hop ones a proxy removes, and those that frame or address
/// the request. A cohort or sticky header by one of these names would never arrive intact.
const HTTP_OWNED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "expect",
];

/// Headers the router writes or reads for itself.
const ROUTER_OWNED: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "via",
    "cookie",
];

/// Whether `t` can name a request header that reaches the router as the client sent it: not one
/// of `owned`, and without `_` (the router drops such headers, as nginx does, because proxies
/// disagree on whether `X_Traffic_Group` is `X-Traffic-Group`).
fn request_header_ok(
    n: &Node,
    t: &str,
    what: &str,
    owned: &[&[&str]],
    example: &str,
    sink: &mut Sink<'_>,
) -> bool {
    let lower = t.to_ascii_lowercase();
    if owned.iter().any(|list| list.contains(&lower.as_str())) {
        sink.error(
            n.pos,
            Kind::BadName,
            format!("{what} cannot be `{t}`: HTTP or the router itself owns that header"),
            Some(format!("use a header of your own, e.g. `{example}`")),
        );
        return false;
    }
    if t.contains('_') {
        sink.error(
            n.pos,
            Kind::BadName,
            format!("{what} `{t}` has `_` in its name; the router drops such headers, as nginx does"),
            Some(format!("use `-` instead: `{}`", t.replace('_', "-"))),
        );
        return false;
    }
    true
}

/// An HTTP token (RFC 9110), as header and cookie names must be.
fn token_name(n: &Node, t: &str, what: &str, example: &str, sink: &mut Sink<'_>) -> Option<String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if t.is_empty() || !t.chars().all(token) {
        sink.error(
            n.pos,
            Kind::BadName,
            format!("{what} name `{t}` is not an HTTP token"),
            Some(format!("use letters, digits and `-`, e.g. `{example}`")),
        );
        return None;
    }
    Some(t.to_string())
}

fn read_stages(n: &Node, sink: &mut Sink<'_>) -> Option<Vec<TrackName>> {
    let items = read::list(n, "`stages`", sink);
    if items.is_empty() {
        sink.error(
            n.pos,
            Kind::MissingKey,
            "`stages` lists no stage",
            Some("list the tracks in promotion order, e.g. `[internal, canary, paid, production]`".into()),
        );
        return None;
    }
    let mut out: Vec<TrackName> = vec![];
    let mut ok = true;
    for item in items {
        let Some(t) = read::text(item, "a stage", sink) else {
            ok = false;
            continue;
        };
        match TrackName::new(t) {
            Ok(tn) if out.contains(&tn) => {
                sink.error(
                    item.pos,
                    Kind::Duplicate,
                    format!("stage `{t}` is listed twice"),
                    Some("list each track once".into()),
                );
                ok = false;
            }
            Ok(tn) if tn.as_str() == "router" => {
                sink.error(
                    item.pos,
                    Kind::BadName,
                    "`router` cannot be a stage: `<service>-router` names the router's own objects",
                    Some("call the track something else, e.g. `edge`".into()),
                );
                ok = false;
            }
            Ok(tn) => out.push(tn),
            Err(e) => ok &= name_ok(item, Err(e), sink),
        }
    }
    ok.then_some(out)
}

/// Reads a mapping of cohort name → route.
pub(crate) fn read_cohorts(
    n: &Node,
    stages: &[TrackName],
    file: &str,
    sink: &mut Sink<'_>,
) -> Option<Vec<(String, Route)>> {
    let mut m = MapReader::new(n, format!("`cohorts` in {file}"), sink);
    let mut out: Vec<(String, Route)> = vec![];
    let mut seen: Vec<&str> = vec![];
    let mut ok = true;
    for (k, v) in m.rest() {
        let Some(name) = read::text(k, "a cohort name", sink) else {
            ok = false;
            continue;
        };
        // Header values in practice, and safe as names in an haproxy.cfg and in metrics.
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            sink.error(
                k.pos,
                Kind::BadName,
                format!("cohort name `{name}` may only use letters, digits, `-`, `_` and `.`"),
                Some("cohort names are the values your gateway puts in the header, e.g. `FREE`".into()),
            );
            ok = false;
            continue;
        }
        if seen.iter().any(|o| o.eq_ignore_ascii_case(name)) {
            sink.error(
                k.pos,
                Kind::Duplicate,
                format!("cohort `{name}` is listed twice (header values match case-insensitively)"),
                Some("merge the two entries".into()),
            );
            ok = false;
            continue;
        }
        seen.push(name);
        match read_route(v, &format!("the route of cohort `{name}`"), stages, sink) {
            Some(r) => out.push((name.to_string(), r)),
            None => ok = false,
        }
    }
    m.finish(sink);
    ok.then_some(out)
}

/// Reads one route: a mapping of track → weight that must name stages and sum to 100%.
pub(crate) fn read_route(n: &Node, what: &str, stages: &[TrackName], sink: &mut Sink<'_>) -> Option<Route> {
    let mut m = MapReader::new(n, what.to_string(), sink);
    let mut legs = vec![];
    let mut ok = true;
    for (k, v) in m.rest() {
        let Some(t) = read::text(k, "a track name", sink) else {
            ok = false;
            continue;
        };
        let tn = TrackName::new(t).ok().filter(|tn| stages.contains(tn));
        let Some(tn) = tn else {
            let names: Vec<&str> = stages.iter().map(TrackName::as_str).collect();
            sink.error(
                k.pos,
                Kind::UnknownTrack,
                format!("{what} sends traffic to `{t}`, which is not a track"),
                Some(format!("the tracks are the stages: {}", names.join(", "))),
            );
            ok = false;
            continue;
        };
        match read::weight(v, &format!("the weight of `{t}`"), sink) {
            Some(w) => legs.push((tn, w)),
            None => ok = false,
        }
    }
    m.finish(sink);
    if !ok {
        return None;
    }
    match Route::new(legs) {
        Ok(r) => Some(r),
        Err(e) => {
            sink.error(
                n.pos,
                Kind::BadRoute,
                format!("{what}: {e}"),
                Some("weights are exact percentages and a route's weights must add up to 100%".into()),
            );
            None
        }
    }
}

pub(crate) fn read_sticky(n: &Node, sink: &mut Sink<'_>) -> Option<Sticky> {
    let mut m = MapReader::new(n, "`sticky`", sink);
    let (header, cookie) = (m.opt("header"), m.opt("cookie"));
    m.finish(sink);
    let token = |node: &Node, kind: &str, example: &str, sink: &mut Sink<'_>| {
        read::text(node, &format!("`sticky.{kind}`"), sink)
            .and_then(|t| token_name(node, t, kind, example, sink))
    };
    match (header, cookie) {
        (Some(h), None) => token(h, "header", "X-User-Id", sink)
            .filter(|t| request_header_ok(h, t, "the sticky header", &[HTTP_OWNED], "X-User-Id", sink))
            .map(Sticky::Header),
        (None, Some(c)) => token(c, "cookie", "uid", sink).map(Sticky::Cookie),
        (Some(_), Some(_)) => {
            sink.error(
                n.pos,
                Kind::Duplicate,
                "`sticky` names both a header and a cookie",
                Some("keep one of `header:` or `cookie:`".into()),
            );
            None
        }
        (None, None) => {
            sink.error(
                n.pos,
                Kind::MissingKey,
                "`sticky` names neither a header nor a cookie",
                Some("write `header: X-User-Id` or `cookie: uid`".into()),
            );
            None
        }
    }
}

/// `trusted_peers`: `any`, or a list of address ranges and single addresses. Trusting every
/// peer is allowed but warned about, whether written `any` or as a range of every address.
pub(crate) fn read_peers(n: &Node, sink: &mut Sink<'_>) -> Option<TrustedPeers> {
    if n.as_scalar() == Some(TrustedPeers::ANY) {
        sink.warning(
            n.pos,
            Kind::OpenTrust,
            "`trusted_peers: any` lets every caller that reaches the router choose its cohort, the internal build included",
            Some("list the addresses of the gateway that sets the header instead, e.g. `[10.0.0.0/8]`".into()),
        );
        return Some(TrustedPeers::Any);
    }
    if n.as_scalar().is_some() {
        sink.error(
            n.pos,
            Kind::WrongType,
            "`trusted_peers` should be `any` or a list of address ranges",
            Some("write e.g. `trusted_peers: [10.0.0.0/8]`".into()),
        );
        return None;
    }
    let mut out = vec![];
    let mut ok = true;
    for item in read::list(n, "`trusted_peers`", sink) {
        let Some(t) = read::text(item, "a trusted peer", sink) else {
            ok = false;
            continue;
        };
        let parsed = t
            .parse::<ipnet::IpNet>()
            .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(net) if net.prefix_len() == 0 => {
                sink.warning(
                    item.pos,
                    Kind::OpenTrust,
                    format!("trusted peer `{t}` is every address: any caller can choose its cohort, the internal build included"),
                    Some("list the addresses of the gateway that sets the header; write `trusted_peers: any` if you mean everybody".into()),
                );
                out.push(net);
            }
            Ok(net) => out.push(net),
            Err(_) => {
                sink.error(
                    item.pos,
                    Kind::BadCidr,
                    format!("trusted peer `{t}` is not a CIDR"),
                    Some("write an address range like `10.0.0.0/8`, `fd00::/8` or a single address like `10.1.2.3`".into()),
                );
                ok = false;
            }
        }
    }
    ok.then_some(TrustedPeers::Only(out))
}

/// Reads a track → replicas mapping against the stages.
pub(crate) fn read_replicas(
    n: &Node,
    what: &str,
    stages: &[TrackName],
    sink: &mut Sink<'_>,
) -> Option<BTreeMap<TrackName, u32>> {
    let mut m = MapReader::new(n, what.to_string(), sink);
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (k, v) in m.rest() {
        let t = read::text(k, "a track name", sink).unwrap_or_default();
        match TrackName::new(t).ok().filter(|tn| stages.contains(tn)) {
            Some(tn) => match read::number(v, &format!("replicas of `{t}`"), 0, 1000, sink) {
                Some(r) => {
                    out.insert(tn, r as u32);
                }
                None => ok = false,
            },
            None => {
                sink.error(
                    k.pos,
                    Kind::UnknownTrack,
                    format!("{what} names `{t}`, which is not a track"),
                    None,
                );
                ok = false;
            }
        }
    }
    m.finish(sink);
    ok.then_some(out)
}

pub(crate) fn read_health_check(
    n: &Node,
    what: &str,
    base: &HealthCheck,
    sink: &mut Sink<'_>,
) -> Option<HealthCheck> {
    let mut m = MapReader::new(n, what.to_string(), sink);
    let path = match m.opt("path") {
        Some(p) => read::http_path(p, "the health check path", sink),
        None => Some(base.path.clone()),
    };
    let interval = match m.opt("interval") {
        Some(i) => read::duration(i, "the health check `interval`", sink).filter(|d| {
            let ok = *d >= Duration::from_secs(1);
            if !ok {
                sink.error(
                    i.pos,
                    Kind::OutOfRange,
                    "the health check interval must be at least 1s (Kubernetes probes count whole seconds)",
                    None,
                );
            }
            ok
        }),
        None => Some(base.interval),
    };
    m.finish(sink);
    Some(HealthCheck {
        path: path?,
        interval: interval?,
    })
}

fn read_defaults(
    n: Option<&Node>,
    root: &Node,
    stages: &[TrackName],
    sink: &mut Sink<'_>,
) -> Option<Defaults> {
    let seed_replicas = [("internal", 2u32), ("canary", 4), ("paid", 4), ("production", 10)];
    let mut replicas: BTreeMap<TrackName, u32> = stages
        .iter()
        .map(|t| {
            (
                t.clone(),
                seed_replicas
                    .iter()
                    .find(|(n, _)| *n == t.as_str())
                    .map(|(_, r)| *r)
                    .unwrap_or(2),
            )
        })
        .collect();
    let base_check = HealthCheck {
        path: "/healthz".into(),
        interval: Duration::from_secs(2),
    };
    let mut m = MapReader::optional(n, root.pos, "`defaults`", sink);
    let mut ok = true;
    if let Some(r) = m.opt("replicas") {
        match read_replicas(r, "`defaults.replicas`", stages, sink) {
            Some(over) => replicas.extend(over),
            None => ok = false,
        }
    }
    let port = m.opt("port").map_or(Some(8080), |p| {
        read::number(p, "`defaults.port`", 1, 65535, sink).map(|p| p as u16)
    });
    let health_check = m.opt("health_check").map_or(Some(base_check.clone()), |h| {
        read_health_check(h, "`defaults.health_check`", &base_check, sink)
    });
    let min_ready_endpoints = m.opt("min_ready_endpoints").map_or(Some(2), |v| {
        read::number(v, "`defaults.min_ready_endpoints`", 0, 1000, sink).map(|v| v as u32)
    });
    let pre_stop = match m.opt("pre_stop") {
        Some(p) => {
            let mut pm = MapReader::new(p, "`defaults.pre_stop`", sink);
            let pause = pm.opt("pause").map_or(Some(Duration::from_secs(10)), |d| {
                read::duration(d, "`pre_stop.pause`", sink)
            });
            let exec = pm
                .opt("exec")
                .map_or(Some(false), |e| read::boolean(e, "`pre_stop.exec`", sink));
            pm.finish(sink);
            pause.zip(exec).map(|(pause, exec)| PreStop { pause, exec })
        }
        None => Some(PreStop {
            pause: Duration::from_secs(10),
            exec: false,
        }),
    };
    m.finish(sink);
    if !ok {
        return None;
    }
    Some(Defaults {
        replicas,
        port: port?,
        health_check: health_check?,
        min_ready_endpoints: min_ready_endpoints?,
        pre_stop: pre_stop?,
    })
}

fn read_router(n: Option<&Node>, root: &Node, sink: &mut Sink<'_>) -> Option<RouterSettings> {
    let mut m = MapReader::optional(n, root.pos, "`router`", sink);
    let image = m
        .opt("image")
        .map_or(Some(DEFAULT_ROUTER_IMAGE.to_string()), |i| {
            let t = read::text(i, "`router.image`", sink)?;
            match cohort_core::image::check_reference(t) {
                Ok(()) => Some(t.to_string()),
                Err(e) => {
                    sink.error(
                        i.pos,
                        Kind::BadName,
                        format!("`router.image` `{t}` {e}"),
                        Some(format!(
                            "write an image reference as the kubelet reads it, e.g. `{DEFAULT_ROUTER_IMAGE}`"
                        )),
                    );
                    None
                }
            }
        });
    let replicas = m.opt("replicas").map_or(Some(4), |r| {
        read::number(r, "`router.replicas`", 1, 1000, sink).map(|r| r as u32)
    });
    let port = m.opt("port").map_or(Some(8080), |p| {
        read::number(p, "`router.port`", 1, 65535, sink).map(|p| p as u16)
    });
    let admin_node = m.opt("admin_port");
    let admin_port = admin_node.map_or(Some(9901), |p| {
        read::number(p, "`router.admin_port`", 1, 65535, sink).map(|p| p as u16)
    });
    m.finish(sink);
    let (port, admin_port) = (port?, admin_port?);
    if port == admin_port {
        sink.error(
            admin_node.or(n).map_or(root.pos, |node| node.pos),
            Kind::Duplicate,
            format!("`router.port` and `router.admin_port` are both {port}"),
            Some("give the admin endpoints their own port".into()),
        );
        return None;
    }
    Some(RouterSettings {
        image: image?,
        replicas: replicas?,
        port,
        admin_port,
    })
}

fn read_gates(
    n: Option<&Node>,
    stages: &[TrackName],
    sink: &mut Sink<'_>,
) -> Option<BTreeMap<TrackName, Gate>> {
    let Some(n) = n else { return Some(BTreeMap::new()) };
    let mut m = MapReader::new(n, "`gates`", sink);
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (k, v) in m.rest() {
        let t = read::text(k, "a stage name", sink).unwrap_or_default();
        let Some(tn) = TrackName::new(t).ok().filter(|tn| stages.contains(tn)) else {
            sink.error(
                k.pos,
                Kind::UnknownTrack,
                format!("`gates` has a gate for `{t}`, which is not a stage"),
                None,
            );
            ok = false;
            continue;
        };
        if stages.first() == Some(&tn) {
            sink.error(
                k.pos,
                Kind::UnknownTrack,
                format!("`{t}` is the first stage: builds enter it with `cohort deploy`, which has no gate"),
                Some("gates belong to the stages a version is promoted into".into()),
            );
            ok = false;
            continue;
        }
        let mut g = MapReader::new(v, format!("the gate of `{t}`"), sink);
        let min = g.opt("min_time_in_previous").map_or(Some(Duration::ZERO), |d| {
            read::duration(d, "`min_time_in_previous`", sink)
        });
        let mut checks: Vec<String> = vec![];
        for c in g
            .opt("checks")
            .map(|c| read::list(c, "`checks`", sink))
            .unwrap_or_default()
        {
            match read::text(c, "a check name", sink) {
                Some(name) if checks.iter().any(|x| x == name) => {
                    sink.error(
                        c.pos,
                        Kind::Duplicate,
                        format!("check `{name}` is listed twice"),
                        None,
                    );
                    ok = false;
                }
                Some(name)
                    if !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
                {
                    checks.push(name.to_string());
                }
                Some(name) => {
                    sink.error(
                        c.pos,
                        Kind::BadName,
                        format!("check name `{name}` may only use letters, digits, `-`, `_` and `.`"),
                        None,
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
        let judgement = g
            .opt("require_judgement")
            .map_or(Some(false), |b| read::boolean(b, "`require_judgement`", sink));
        g.finish(sink);
        match (min, judgement) {
            (Some(min_time_in_previous), Some(require_judgement)) => {
                out.insert(
                    tn,
                    Gate {
                        min_time_in_previous,
                        checks,
                        require_judgement,
                    },
                );
            }
            _ => ok = false,
        }
    }
    m.finish(sink);
    ok.then_some(out)
}

#[cfg(test)]
mod judgement_tests {
    use cohort_core::{Duration, JudgementSettings};

    use crate::repo::seed_with as with;

    #[test]
    fn judgement_settings_come_from_cohort_yaml_and_default_to_the_built_in_ones() {
        let (repo, diags) = with("");
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(
            repo.expect("valid").pipeline.judgement,
            JudgementSettings::default()
        );
        let (repo, diags) = with("judgement:\n  window: 5m\n  confidence: 0.999\n  min_error_increase: 1%\n");
        assert!(diags.is_empty(), "{diags:?}");
        let j = repo.expect("valid").pipeline.judgement;
        assert_eq!(j.window, Duration::from_secs(300));
        assert_eq!(j.confidence, 0.999);
        assert_eq!(j.min_error_increase_percent, 1.0);
        let (repo, _) = with("judgement:\n  confidence: 0.99\n");
        let j = repo.expect("valid").pipeline.judgement;
        assert_eq!((j.window, j.confidence), (Duration::from_secs(600), 0.99));
    }

    #[test]
    fn every_mistake_in_the_judgement_section_is_reported_where_it_is() {
        let (repo, diags) =
            with("judgement:\n  window: 1h\n  confidence: 1.5\n  min_error_increase: 0.5\n  windw: 5m\n");
        assert!(repo.is_none());
        let messages: Vec<String> = diags
            .iter()
            .map(|d| format!("{}: {}", d.pos.col, d.message))
            .collect();
        assert_eq!(diags.len(), 4, "{messages:?}");
        assert!(
            messages.iter().any(|m| m.contains("between 1s and 10m")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("`judgement.confidence` is `1.5`")),
            "{messages:?}"
        );
        assert!(messages.iter().any(|m| m.contains("like `0.5%`")), "{messages:?}");
        assert!(messages.iter().any(|m| m.contains("windw")), "{messages:?}");
        assert!(diags.iter().all(|d| d.file.to_string_lossy() == "cohort.yaml"));
    }
}

#[cfg(test)]
mod trust_tests {
    use cohort_core::TrustedPeers;

    use crate::diag::{Diagnostic, Kind, Severity};
    use crate::repo::{Repo, validate};

    /// The seed repo with its `trusted_peers` replaced by `section` (nothing: removed).
    fn with_trust(section: &str) -> (Option<Repo>, Vec<Diagnostic>) {
        let mut files = crate::scaffold::repo_files();
        let seed = files.pipeline.take().expect("cohort.yaml");
        let seed_list = "trusted_peers:\n  - 10.0.0.0/8\n  - 172.16.0.0/12\n  - 192.168.0.0/16\n";
        assert!(seed.contains(seed_list), "{seed}");
        files.pipeline = Some(seed.replace(seed_list, section));
        validate(&files)
    }

    fn open_trust(diags: &[Diagnostic]) -> Vec<&Diagnostic> {
        diags.iter().filter(|d| d.kind == Kind::OpenTrust).collect()
    }

    #[test]
    fn no_trusted_peers_trusts_nobody_and_says_so() {
        let (repo, diags) = with_trust("");
        assert_eq!(
            repo.expect("valid").pipeline.trusted_peers,
            TrustedPeers::default()
        );
        let warned = open_trust(&diags);
        assert_eq!(warned.len(), 1, "{diags:?}");
        assert_eq!(warned[0].severity, Severity::Warning);
        assert!(warned[0].message.contains("believed from nobody"), "{diags:?}");
        let (repo, diags) = with_trust("trusted_peers: []\n");
        assert!(repo.expect("valid").pipeline.trusted_peers.is_nobody());
        assert!(
            open_trust(&diags).is_empty(),
            "an empty list is written on purpose: {diags:?}"
        );
    }

    #[test]
    fn trusting_everybody_must_be_written_out_and_is_warned_about() {
        let (repo, diags) = with_trust("trusted_peers: any\n");
        assert_eq!(repo.expect("valid").pipeline.trusted_peers, TrustedPeers::Any);
        let warned = open_trust(&diags);
        assert_eq!(warned.len(), 1, "{diags:?}");
        assert!(
            warned[0].message.contains("the internal build included"),
            "{diags:?}"
        );
        for every in ["0.0.0.0/0", "::/0"] {
            let (repo, diags) = with_trust(&format!("trusted_peers: [10.0.0.0/8, \"{every}\"]\n"));
            assert!(repo.is_some(), "{diags:?}");
            let warned = open_trust(&diags);
            assert_eq!(warned.len(), 1, "{diags:?}");
            assert_eq!(warned[0].severity, Severity::Warning);
            assert!(warned[0].message.contains(every), "{diags:?}");
        }
    }

    #[test]
    fn trusted_peers_that_are_neither_any_nor_a_list_are_errors() {
        for bad in [
            "trusted_peers: everybody\n",
            "trusted_peers: 10.0.0.0/8\n",
            "trusted_peers: [nowhere]\n",
        ] {
            let (repo, diags) = with_trust(bad);
            assert!(repo.is_none(), "{bad}: {diags:?}");
            assert!(diags.iter().any(|d| d.severity == Severity::Error), "{diags:?}");
        }
    }
}

#[cfg(test)]
mod header_and_image_tests {
    use crate::diag::{Diagnostic, Severity};
    use crate::repo::{Repo, validate};

    /// The seed repo with `from` replaced by `to` in cohort.yaml, or in the service file.
    fn seed_replacing(in_service: bool, from: &str, to: &str) -> (Option<Repo>, Vec<Diagnostic>) {
        let mut files = crate::scaffold::repo_files();
        let text = match in_service {
            true => &mut files.services[0].1,
            false => files.pipeline.as_mut().expect("cohort.yaml"),
        };
        assert!(text.contains(from), "{text}");
        *text = text.replace(from, to);
        validate(&files)
    }

    fn errors(diags: &[Diagnostic]) -> Vec<String> {
        diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| format!("{}:{}: {}", d.file.display(), d.pos, d.message))
            .collect()
    }

    /// `cohort_header: Host` (or a hop-by-hop name) passed `validate`; the header would be
    /// rewritten or removed on the way and never choose a cohort.
    #[test]
    fn a_cohort_header_that_http_or_the_router_owns_is_refused() {
        for name in [
            "Host",
            "x-forwarded-for",
            "Connection",
            "Transfer-Encoding",
            "Upgrade",
            "TE",
            "Cookie",
            "Forwarded",
        ] {
            let (repo, diags) = seed_replacing(
                false,
                "cohort_header: X-Traffic-Group",
                &format!("cohort_header: {name}"),
            );
            assert!(repo.is_none(), "{name}");
            let errors = errors(&diags);
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(
                errors[0].starts_with("cohort.yaml:8:16: the cohort header cannot be")
                    && errors[0].contains("owns that header"),
                "{errors:?}"
            );
        }
        let (repo, diags) = seed_replacing(
            false,
            "cohort_header: X-Traffic-Group",
            "cohort_header: X_Traffic_Group",
        );
        assert!(repo.is_none());
        assert!(errors(&diags)[0].contains("has `_` in its name"), "{diags:?}");
        assert_eq!(
            diags[0].help.as_deref(),
            Some("use `-` instead: `X-Traffic-Group`")
        );
    }

    #[test]
    fn a_sticky_header_that_http_owns_is_refused_and_an_ordinary_one_is_taken() {
        let (repo, diags) = seed_replacing(
            false,
            "# sticky:\n#   header: X-User-Id",
            "sticky:\n  header: Connection",
        );
        assert!(repo.is_none());
        assert!(
            errors(&diags)[0].contains("the sticky header cannot be `Connection`"),
            "{diags:?}"
        );
        let (repo, diags) = seed_replacing(
            false,
            "# sticky:\n#   header: X-User-Id",
            "sticky:\n  header: X-User-Id",
        );
        assert!(repo.is_some(), "{diags:?}");
    }

    /// Both passed `validate` and would have left every pod in `InvalidImageName`.
    #[test]
    fn image_references_are_checked_as_the_kubelet_reads_them() {
        for image in [
            "Registry.Example.com/SHOP/Account",
            "-registry/..//x__y",
            "registry.example.com/shop/account-service:1.0",
        ] {
            let (repo, diags) = seed_replacing(
                true,
                "image: registry.example.com/shop/account-service",
                &format!("image: {image}"),
            );
            assert!(repo.is_none(), "{image}");
            let errors = errors(&diags);
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(
                errors[0].starts_with("services/account-service.yaml:5:8: `image`"),
                "{errors:?}"
            );
        }
        let (repo, diags) = seed_replacing(
            true,
            "image: registry.example.com/shop/account-service",
            "image: localhost:5000/shop/account-service",
        );
        assert!(repo.is_some(), "{diags:?}");
    }

    #[test]
    fn the_router_image_is_a_whole_reference() {
        for (image, ok) in [
            ("ghcr.io/cohort-dev/cohort:0.1.0", true),
            ("registry:5000/cohort", true),
            ("ghcr.io/Cohort/cohort:1", false),
            ("ghcr.io/cohort:.x", false),
        ] {
            let (repo, diags) = seed_replacing(
                false,
                "router:\n  replicas: 4\n",
                &format!("router:\n  replicas: 4\n  image: \"{image}\"\n"),
            );
            assert_eq!(repo.is_some(), ok, "{image}: {diags:?}");
        }
    }
}

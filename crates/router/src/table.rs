//! The routing table in force: a router config with its backends resolved, ready to answer
//! "which track, which backend" per request without locks. A reload builds a new table and
//! swaps it in; requests in flight keep the table they started with.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use cohort_core::model::Protocol;
use cohort_core::router_config::{RouterConfig, RouterRoute, RouterTrack};
use cohort_core::{Sticky, TrackName};
use http::HeaderMap;
use http::header::{COOKIE, HeaderName};

use crate::decide::{BUCKETS, bucket, cohort_index, pick_sticky, spread_cycle, trim_ows};

/// One track: where its backends are.
#[derive(Debug)]
pub struct Track {
    /// Track name.
    pub name: String,
    /// The version it runs.
    pub version: String,
    /// Its backends: every A/AAAA record of each `host:port`, or each ready pod of its
    /// Service's EndpointSlices.
    pub backends: Vec<Arc<Backend>>,
    /// How the router speaks to its backends.
    pub protocol: Protocol,
    /// Round robin over backends, request by request.
    next: AtomicUsize,
}

/// One backend of a track: its address, its health and its idle connections. A table built
/// to replace another (a reload, new addresses, a pod added or gone) takes over the backends
/// whose address it keeps, so their pooled connections and health carry on.
#[derive(Debug)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Whether it takes traffic.
    pub health: BackendHealth,
    /// Idle connections to it.
    pub(crate) pool: crate::upstream::Pool,
    /// Whether its health checks have been started (once, by the first table put in force
    /// with it; they stop when the last table holding it is dropped).
    pub(crate) checked: AtomicBool,
}

impl Backend {
    fn new(addr: SocketAddr) -> Backend {
        Backend {
            addr,
            health: BackendHealth::default(),
            pool: crate::upstream::Pool::default(),
            checked: AtomicBool::new(false),
        }
    }
}

/// Whether a backend takes traffic, with HAProxy's rise/fall hysteresis: `fall` failed checks
/// in a row take it out, `rise` good ones bring it back; a refused connection takes it out at once.
#[derive(Debug)]
pub struct BackendHealth {
    up: AtomicBool,
    /// Consecutive results against the current state.
    streak: AtomicU32,
}

impl Default for BackendHealth {
    fn default() -> BackendHealth {
        // Up until proven otherwise, as HAProxy starts its servers.
        BackendHealth {
            up: AtomicBool::new(true),
            streak: AtomicU32::new(0),
        }
    }
}

impl BackendHealth {
    /// Whether the backend takes traffic.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Records one health check; returns the new state if it flipped.
    pub fn record(&self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        let up = self.is_up();
        if ok == up {
            self.streak.store(0, Ordering::Relaxed);
            return None;
        }
        let streak = self.streak.fetch_add(1, Ordering::Relaxed) + 1;
        if streak >= if up { fall } else { rise } {
            self.up.store(ok, Ordering::Relaxed);
            self.streak.store(0, Ordering::Relaxed);
            return Some(ok);
        }
        None
    }

    /// A connection was refused or timed out: out at once.
    pub fn mark_down(&self) {
        self.up.store(false, Ordering::Relaxed);
        self.streak.store(0, Ordering::Relaxed);
    }
}

impl Track {
    /// The healthy backends in the order to try them for the next request: each once,
    /// starting with the next in turn (so requests spread evenly over them, whatever
    /// connections are pooled), and a failed connect moves on to another backend.
    pub fn request_order(&self) -> impl Iterator<Item = &Arc<Backend>> + '_ {
        let n = self.backends.len();
        let start = match n {
            0 => 0,
            1 => 0,
            _ => self.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        (0..n)
            .map(move |i| &self.backends[(start + i) % n])
            .filter(|b| b.health.is_up())
    }

    /// Whether any backend takes traffic.
    pub fn is_healthy(&self) -> bool {
        self.backends.iter().any(|b| b.health.is_up())
    }

    /// Its backends' addresses, sorted.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        let mut a: Vec<SocketAddr> = self.backends.iter().map(|b| b.addr).collect();
        a.sort();
        a
    }
}

/// The addresses of each track's backends, in the config's track order.
pub type Addresses = Vec<Vec<SocketAddr>>;

/// One cohort's route, resolved to track indexes.
#[derive(Debug)]
struct Route {
    cohort: Option<String>,
    legs: Vec<usize>,
    weights: Vec<u32>,
    cycle: Vec<usize>,
    counter: AtomicUsize,
}

/// The table in force.
#[derive(Debug)]
pub struct Table {
    /// The config it was built from (served on `/config`).
    pub config: RouterConfig,
    /// Tracks, in config order.
    pub tracks: Vec<Arc<Track>>,
    routes: Vec<Route>,
    default_route: Route,
    header: HeaderName,
    /// The sticky key's header, parsed once (`None` for a cookie key or none).
    sticky_header: Option<HeaderName>,
    /// Metric handles for this table's routes and tracks, made on first use so the hot path
    /// neither allocates labels nor looks them up.
    handles: std::sync::OnceLock<crate::metrics::TableHandles>,
    /// Traffic mirroring's rules, and for each route (the default route last) the index of
    /// its rule, if it has one.
    pub mirrors: Vec<MirrorRule>,
    route_mirror: Vec<Option<usize>>,
}

/// A mirror rule, resolved: copy a share of the requests its route sends to track `from` to
/// track `to`.
#[derive(Debug)]
pub struct MirrorRule {
    /// The index of the track whose requests are copied.
    pub from: usize,
    /// The index of the track the copies go to.
    pub to: usize,
    /// Requests with a larger body are not copied.
    pub max_body: u64,
    /// The route's cohort (`default` for the default route), as the series are labelled.
    pub cohort: String,
    basis_points: u32,
    counter: AtomicU64,
}

impl MirrorRule {
    /// Whether this request is one to copy: exactly `share` of them, spread evenly (request n
    /// is copied when n × share crosses a whole number).
    pub fn take(&self) -> bool {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let bp = u64::from(self.basis_points);
        (n + 1) * bp / 10_000 != n * bp / 10_000
    }
}

/// Why a config cannot become a table.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The cohort header is not a valid header name.
    #[error("`{0}` is not a valid header name")]
    BadHeader(String),
    /// The header's name has a `_`: the router drops such headers from every request (as nginx
    /// does), so it would never be seen.
    #[error("header `{0}` has an underscore, and the router drops headers whose names have one: use `-`")]
    Underscore(String),
    /// Resolving a backend name failed for lack of a local resource (file descriptors...): the
    /// name says nothing about the backend, so the table in force is kept.
    #[error("cannot resolve backend `{backend}` now: the router is out of resources")]
    OutOfResources {
        /// The `host:port` being resolved.
        backend: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
}

/// Where a request goes.
#[derive(Debug)]
pub struct Decision<'t> {
    /// The cohort it was routed as (`None`: the default route).
    pub cohort: Option<&'t str>,
    /// The track chosen, or `None` when no track of the route has a version.
    pub track: Option<&'t Arc<Track>>,
    /// The route's index: a cohort's position, or the number of cohorts for the default route.
    pub route: usize,
    /// The chosen track's index in the table.
    pub track_index: Option<usize>,
    /// Whether a cohort header from an untrusted peer was ignored (and must be removed).
    pub spoofed: bool,
    /// When no track was chosen although the route has tracks: their names (all down).
    pub down: Vec<&'t str>,
}

impl Decision<'_> {
    /// Why no track was chosen, for the client's 503: no track of the route has a version
    /// yet, or every one is down.
    pub fn why_no_track(&self, service: &str) -> String {
        let cohort = self.cohort.unwrap_or("default");
        if self.down.is_empty() {
            format!("{service}: no track of the route for cohort {cohort} has a version yet\n")
        } else {
            format!(
                "{service}: no healthy track for cohort {cohort} ({} down)\n",
                self.down.join(", ")
            )
        }
    }
}

impl Table {
    /// Builds a table, resolving every backend name now (names that do not resolve leave
    /// their track without backends until the next resolution).
    pub async fn build(config: RouterConfig) -> Result<Table, TableError> {
        let addresses = Table::resolve(&config).await?;
        Table::assemble(config, &addresses, None)
    }

    /// Every A/AAAA record of each track's `host:port` backends, in the config's track order.
    pub async fn resolve(config: &RouterConfig) -> Result<Addresses, TableError> {
        let mut out = Vec::with_capacity(config.tracks.len());
        for t in &config.tracks {
            out.push(Table::resolve_track(t).await?);
        }
        Ok(out)
    }

    /// Every A/AAAA record of `track`'s `host:port` backends (names that do not resolve give
    /// none).
    pub async fn resolve_track(track: &RouterTrack) -> Result<Vec<SocketAddr>, TableError> {
        let mut addrs = vec![];
        for b in &track.backends {
            match tokio::net::lookup_host(b.as_str()).await {
                Ok(found) => addrs.extend(found),
                Err(e) if crate::resources::out_of_resources(&e) => {
                    return Err(TableError::OutOfResources {
                        backend: b.to_string(),
                        source: e,
                    });
                }
                Err(_) => {}
            }
        }
        Ok(addrs)
    }

    /// A table for `config` whose tracks reach `addresses` (one list per track, in order; a
    /// missing list is a track without backends). Backends `previous` already has for the same
    /// track, address and health check are taken over with their pooled connections and
    /// health, and a route whose split is unchanged keeps its place in its cycle.
    pub fn assemble(
        config: RouterConfig,
        addresses: &[Vec<SocketAddr>],
        previous: Option<&Table>,
    ) -> Result<Table, TableError> {
        let header_name = |name: &str| {
            if name.contains('_') {
                return Err(TableError::Underscore(name.to_string()));
            }
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| TableError::BadHeader(name.to_string()))
        };
        let header = header_name(&config.cohort_header)?;
        let sticky_header = match &config.sticky {
            Some(Sticky::Header(name)) => Some(header_name(name)?),
            _ => None,
        };
        // Health state and pooled connections carry over only as long as they mean the same.
        let same_checks = previous.is_some_and(|p| {
            p.config.health_check == config.health_check && p.config.protocol == config.protocol
        });
        let mut tracks = vec![];
        for (i, t) in config.tracks.iter().enumerate() {
            let before = previous
                .filter(|_| same_checks)
                .and_then(|p| p.tracks.iter().find(|o| o.name == t.name.as_str()));
            let mut backends: Vec<Arc<Backend>> = vec![];
            for addr in addresses.get(i).into_iter().flatten() {
                if backends.iter().any(|b| b.addr == *addr) {
                    continue;
                }
                let kept = before.and_then(|o| o.backends.iter().find(|b| b.addr == *addr));
                backends.push(kept.map_or_else(|| Arc::new(Backend::new(*addr)), Arc::clone));
            }
            tracks.push(Arc::new(Track {
                name: t.name.to_string(),
                version: t.version.to_string(),
                backends,
                protocol: config.protocol,
                next: AtomicUsize::new(0),
            }));
        }
        let route = |r: &RouterRoute, before: Option<&Route>| {
            let mut legs = vec![];
            let mut weights = vec![];
            for tw in &r.weights {
                if let Some(i) = config.tracks.iter().position(|t| t.name == tw.track) {
                    legs.push(i);
                    weights.push(tw.weight.basis_points());
                }
            }
            // Tables change whenever a pod comes or goes: restarting each cycle from its first
            // leg every time would skew a small share.
            let at = before
                .filter(|b| b.weights == weights && b.legs.len() == legs.len())
                .map_or(0, |b| b.counter.load(Ordering::Relaxed));
            Route {
                cohort: r.cohort.clone(),
                cycle: spread_cycle(&weights),
                legs,
                weights,
                counter: AtomicUsize::new(at),
            }
        };
        let routes = config
            .cohorts
            .iter()
            .map(|r| {
                let before = previous.and_then(|p| p.routes.iter().find(|o| o.cohort == r.cohort));
                route(r, before)
            })
            .collect();
        let default_route = route(&config.default_route, previous.map(|p| &p.default_route));
        let track_index = |name: &TrackName| config.tracks.iter().position(|t| t.name == *name);
        let mut mirrors = vec![];
        let mut route_mirror = vec![None; config.cohorts.len() + 1];
        for m in &config.mirrors {
            let (Some(from), Some(to)) = (track_index(&m.from), track_index(&m.to)) else {
                continue;
            };
            let at = match &m.cohort {
                None => Some(config.cohorts.len()),
                Some(c) => config
                    .cohorts
                    .iter()
                    .position(|r| r.cohort.as_deref().is_some_and(|rc| rc.eq_ignore_ascii_case(c))),
            };
            let Some(at) = at else { continue };
            route_mirror[at] = Some(mirrors.len());
            mirrors.push(MirrorRule {
                from,
                to,
                max_body: m.max_body,
                cohort: m.cohort.clone().unwrap_or_else(|| "default".into()),
                basis_points: m.share.basis_points(),
                counter: AtomicU64::new(0),
            });
        }
        Ok(Table {
            mirrors,
            route_mirror,
            tracks,
            routes,
            default_route,
            header,
            sticky_header,
            config,
            handles: std::sync::OnceLock::new(),
        })
    }

    /// The addresses of each track's backends, in track order.
    pub fn addresses(&self) -> Addresses {
        self.tracks.iter().map(|t| t.addresses()).collect()
    }

    /// Whether `other` reaches the same backend addresses for every track (names are
    /// re-resolved periodically; only a real change is worth a new table).
    pub fn same_backends(&self, other: &Table) -> bool {
        let names = |t: &Table| t.tracks.iter().map(|tr| tr.name.clone()).collect::<Vec<_>>();
        names(self) == names(other) && self.addresses() == other.addresses()
    }

    /// This table's metric handles in `metrics`.
    pub fn handles(&self, metrics: &crate::metrics::Metrics) -> &crate::metrics::TableHandles {
        self.handles.get_or_init(|| {
            let cohorts: Vec<String> = self
                .routes
                .iter()
                .map(|r| r.cohort.clone().unwrap_or_else(|| "default".into()))
                .chain(std::iter::once("default".to_string()))
                .collect();
            let tracks: Vec<String> = self.tracks.iter().map(|t| t.name.clone()).collect();
            let versions: Vec<String> = self.tracks.iter().map(|t| t.version.clone()).collect();
            // Per rule: the copies' series, then the sources' (`mirror_rings[2i]`, `[2i + 1]`).
            let mirrored: Vec<crate::window::Key> = self
                .mirrors
                .iter()
                .flat_map(|m| {
                    let (from, to) = (&self.tracks[m.from], &self.tracks[m.to]);
                    [
                        (
                            cohort_judge::mirror_copies(&to.name, &from.name),
                            to.version.clone(),
                            m.cohort.clone(),
                        ),
                        (
                            cohort_judge::mirror_sources(&from.name, &to.name),
                            from.version.clone(),
                            m.cohort.clone(),
                        ),
                    ]
                })
                .collect();
            metrics.handles(&cohorts, &tracks, &versions, &mirrored)
        })
    }

    /// The mirror rule of route `route` if the request goes to `track` and is one to copy.
    pub fn mirror_for(&self, route: usize, track: usize) -> Option<(usize, &MirrorRule)> {
        let i = (*self.route_mirror.get(route)?)?;
        let rule = &self.mirrors[i];
        (rule.from == track && rule.take()).then_some((i, rule))
    }

    /// The header that names the cohort.
    pub fn cohort_header(&self) -> &HeaderName {
        &self.header
    }

    /// The header holding the sticky key, if the key is a header.
    pub fn sticky_header(&self) -> Option<&HeaderName> {
        self.sticky_header.as_ref()
    }

    /// Decides where a request from `peer` with `headers` goes.
    pub fn decide<H: HeaderLookup + ?Sized>(&self, peer: IpAddr, headers: &H) -> Decision<'_> {
        let value = headers.first(&self.header);
        let trusted = self.config.trusted_peers.trusts(peer);
        let spoofed = value.is_some() && !trusted;
        let believed = if trusted { value } else { None };
        let route_index = believed
            .and_then(|v| cohort_index(self.routes.iter().map(|r| r.cohort.as_deref()), v))
            .unwrap_or(self.routes.len());
        let route = self.routes.get(route_index).unwrap_or(&self.default_route);
        let healthy = |leg: usize| self.tracks[route.legs[leg]].is_healthy();
        let leg = match self.sticky_key(headers) {
            Some(key) => pick_sticky(&route.weights, healthy, bucket(key)),
            None if route.cycle.is_empty() => None,
            None => {
                let n = route.counter.fetch_add(1, Ordering::Relaxed);
                match route.cycle[n % route.cycle.len()] {
                    leg if healthy(leg) => Some(leg),
                    // The leg's share goes to the healthy ones in proportion; spreading the
                    // counter over the buckets keeps that even too.
                    _ => pick_sticky(
                        &route.weights,
                        healthy,
                        ((n as u64 * 7919) % u64::from(BUCKETS)) as u32,
                    ),
                }
            }
        };
        let down = match leg {
            Some(_) => vec![],
            None => route.legs.iter().map(|t| self.tracks[*t].name.as_str()).collect(),
        };
        let track_index = leg.map(|l| route.legs[l]);
        Decision {
            cohort: route.cohort.as_deref(),
            track: track_index.map(|t| &self.tracks[t]),
            route: route_index,
            track_index,
            spoofed,
            down,
        }
    }

    fn sticky_key<'h, H: HeaderLookup + ?Sized>(&self, headers: &'h H) -> Option<&'h [u8]> {
        match self.config.sticky.as_ref()? {
            Sticky::Header(_) => headers.first(self.sticky_header.as_ref()?),
            Sticky::Cookie(name) => headers.find_map(&COOKIE, |v| cookie(v, name.as_bytes())),
        }
    }
}

/// The header lines a routing decision reads, from hyper's header map or straight from a
/// parsed head (`crate::h1`).
pub trait HeaderLookup {
    /// The value of the first line named `name`.
    fn first(&self, name: &HeaderName) -> Option<&[u8]>;
    /// The first `Some` that `f` gives for the values of the lines named `name`, in order.
    fn find_map<'s, T>(&'s self, name: &HeaderName, f: impl FnMut(&'s [u8]) -> Option<T>) -> Option<T>;
}

impl HeaderLookup for HeaderMap {
    fn first(&self, name: &HeaderName) -> Option<&[u8]> {
        self.get(name).map(|v| v.as_bytes())
    }

    fn find_map<'s, T>(&'s self, name: &HeaderName, mut f: impl FnMut(&'s [u8]) -> Option<T>) -> Option<T> {
        self.get_all(name).iter().find_map(|v| f(v.as_bytes()))
    }
}

impl HeaderLookup for [httparse::Header<'_>] {
    fn first(&self, name: &HeaderName) -> Option<&[u8]> {
        let name = name.as_str();
        self.iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    fn find_map<'s, T>(&'s self, name: &HeaderName, mut f: impl FnMut(&'s [u8]) -> Option<T>) -> Option<T> {
        let name = name.as_str();
        self.iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .find_map(|h| f(h.value))
    }
}

/// The value of cookie `name` in one `Cookie` header (`a=1; b=2`).
fn cookie<'h>(header: &'h [u8], name: &[u8]) -> Option<&'h [u8]> {
    header.split(|b| *b == b';').find_map(|pair| {
        let pair = trim_ows(pair);
        let eq = pair.iter().position(|b| *b == b'=')?;
        (&pair[..eq] == name).then(|| &pair[eq + 1..])
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn cookies_are_found_by_exact_name() {
        assert_eq!(super::cookie(b"a=1; uid=u-42; b=2", b"uid"), Some(&b"u-42"[..]));
        assert_eq!(super::cookie(b"xuid=1", b"uid"), None);
        assert_eq!(super::cookie(b"uid=", b"uid"), Some(&b""[..]));
    }
}

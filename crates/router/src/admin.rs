//! The admin port: `/live`, `/ready`, `/metrics` (Prometheus text), `/config` (the config
//! in force, as JSON), `/config-digest` (the digest of its text, which `cohort apply` waits
//! for after changing the router's ConfigMap) and `/stats?window=` (per-second counts for the
//! canary judgement).
//!
//! It is guarded as the traffic port is (a request head within `--header-timeout`, and the same
//! time between requests), plus an inactivity timeout, within a budget of its own
//! ([`ADMIN_CONNECTIONS`]) that the traffic port's limit leaves room for. When the budget is
//! full, the connection idle the longest (silent since it connected, or between requests) is
//! closed to make room: the kubelet's probes and Prometheus get through a flood of silent
//! connections instead of queueing behind it.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

use crate::idle::{Activity, Watched};
use crate::metrics::Exhausted;
use crate::proxy::Router;
use crate::resources::AcceptPause;

pub use crate::resources::ADMIN_CONNECTIONS;

/// Who may read `/config`, which lists the backends and the trusted peers: loopback always
/// (`kubectl port-forward` and `kubectl exec` arrive there), and the networks given. `/live`,
/// `/ready`, `/metrics`, `/config-digest` and `/stats` are open to all: the kubelet, Prometheus and `cohort
/// analyze` (through the API server's pod proxy) read them from other addresses.
#[derive(Clone, Debug, Default)]
pub struct ConfigReaders {
    /// Networks besides loopback (`--admin-config-from`).
    pub networks: Vec<IpNet>,
}

impl ConfigReaders {
    /// Whether `peer` may read `/config`.
    pub fn allow(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        peer.is_loopback() || self.networks.iter().any(|n| n.contains(&peer))
    }
}

/// Serves the admin endpoints until `shutdown` completes, `/config` to loopback only.
pub async fn serve_admin(listener: TcpListener, router: Arc<Router>, shutdown: impl Future<Output = ()>) {
    serve_admin_with(listener, router, ConfigReaders::default(), shutdown).await;
}

/// Serves the admin endpoints until `shutdown` completes, `/config` to `readers`.
pub async fn serve_admin_with(
    listener: TcpListener,
    router: Arc<Router>,
    readers: ConfigReaders,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let readers = Arc::new(readers);
    let slots = Arc::new(Semaphore::new(ADMIN_CONNECTIONS));
    let open = Arc::new(Open::default());
    let mut pause = AcceptPause::default();
    loop {
        let accepted = tokio::select! {
            a = pause.accept(&listener, &router.metrics, Exhausted::AdminAccept) => a,
            () = &mut shutdown => return,
        };
        let Some((stream, peer)) = accepted else { continue };
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                // Full: the quietest connection closes and gives its slot back, which this one
                // waits for (the ones already closing give theirs back at once too).
                open.close_longest_idle();
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => return,
                    },
                    () = &mut shutdown => return,
                }
            }
        };
        let activity = Activity::new();
        let conn = Open::add(&open, &activity);
        let (router, readers) = (Arc::clone(&router), Arc::clone(&readers));
        tokio::spawn(async move {
            let _slot = slot;
            let timeout = router.limits.header_read_timeout;
            let io = TokioIo::new(Watched::new(stream, &activity));
            let service = hyper::service::service_fn(move |req| {
                let answer = answer(&router, peer.ip(), &readers, &req);
                async move { answer }
            });
            let serving = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(io, service);
            tokio::select! {
                _ = serving => {}
                // Stuck mid-response (a client that does not read) or mid-body.
                () = activity.quiet_for(timeout) => {}
                () = conn.entry.close.notified() => {}
            }
        });
    }
}

/// The admin connections open now.
#[derive(Default)]
struct Open {
    conns: Mutex<Vec<Arc<Entry>>>,
}

/// One open admin connection.
struct Entry {
    /// When bytes last moved on it: a silent connection's is when it was accepted.
    activity: Arc<Activity>,
    /// Chosen to close, so not chosen again.
    closing: AtomicBool,
    close: Notify,
}

/// An admin connection's entry in [`Open`], taken out when the connection ends.
struct Registered {
    open: Arc<Open>,
    entry: Arc<Entry>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.open.lock().retain(|e| !Arc::ptr_eq(e, &self.entry));
    }
}

impl Open {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Entry>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(open: &Arc<Open>, activity: &Arc<Activity>) -> Registered {
        let entry = Arc::new(Entry {
            activity: Arc::clone(activity),
            closing: AtomicBool::new(false),
            close: Notify::new(),
        });
        open.lock().push(Arc::clone(&entry));
        Registered {
            open: Arc::clone(open),
            entry,
        }
    }

    /// Closes the connection on which no byte has moved for the longest: one silent since it
    /// connected, or waiting between requests. A request being read or answered has just moved
    /// bytes, so a probe is the last to go.
    fn close_longest_idle(&self) {
        let conns = self.lock();
        let quietest = conns
            .iter()
            .filter(|e| !e.closing.load(Ordering::Relaxed))
            .min_by_key(|e| e.activity.last());
        if let Some(entry) = quietest {
            entry.closing.store(true, Ordering::Relaxed);
            entry.close.notify_one();
        }
    }
}

fn answer(
    router: &Router,
    peer: IpAddr,
    readers: &ConfigReaders,
    req: &Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, kind, body) = match req.uri().path() {
        "/live" => (StatusCode::OK, "text/plain", "live\n".to_string()),
        "/ready" if router.is_ready() => (StatusCode::OK, "text/plain", "ready\n".to_string()),
        "/ready" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "draining\n".to_string(),
        ),
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            router.metrics.render(&router.table()),
        ),
        // A digest says nothing of what the config holds, so anyone may compare it.
        "/config-digest" => match router.config_digest() {
            d if d.is_empty() => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "this router's config was read from no file\n".to_string(),
            ),
            d => (StatusCode::OK, "text/plain", d + "\n"),
        },
        "/stats" => match stats_window(req.uri().query(), crate::window::now()) {
            Ok((until, window)) => {
                let table = router.table();
                let stats = router.metrics.windows.stats(&table.config.service, until, window);
                match serde_json::to_string(&stats) {
                    Ok(json) => (StatusCode::OK, "application/json", json + "\n"),
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
                }
            }
            Err(why) => (StatusCode::BAD_REQUEST, "text/plain", why),
        },
        "/config" if !readers.allow(peer) => (
            StatusCode::FORBIDDEN,
            "text/plain",
            format!(
                "/config shows the backends and trusted peers, so it is served only to loopback \
                 (kubectl port-forward) and to --admin-config-from networks; {peer} is not one of them\n"
            ),
        ),
        "/config" => match serde_json::to_string_pretty(&router.table().config) {
            Ok(json) => (StatusCode::OK, "application/json", json + "\n"),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "admin endpoints: /live /ready /metrics /config /config-digest /stats?window=10m\n".to_string(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(kind) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    Ok(resp)
}

/// The last second and the length of the window `/stats` asks for: `window=5m` ends with
/// the second under way (`now`; default and at most ten minutes); `after=S` takes the
/// seconds after unix second `S` up to the last whole one, so a reader that passes the
/// previous answer's `until` adds successive windows up without overlap (what was older than
/// ten minutes is gone).
fn stats_window(query: Option<&str>, now: u64) -> Result<(u64, u64), String> {
    let param = |key: &str| {
        query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|kv| kv.strip_prefix(key).map(str::to_string))
    };
    if let Some(after) = param("after=") {
        let until = now.saturating_sub(1);
        return match after.parse::<u64>() {
            Ok(s) => Ok((until, until.saturating_sub(s).min(crate::window::SECONDS))),
            Err(_) => Err(format!(
                "after `{after}` should be a unix second, e.g. `after={until}`\n"
            )),
        };
    }
    stats_length(param("window=").as_deref()).map(|w| (now, w))
}

/// The `window` of `/stats?window=5m` in seconds (default and at most ten minutes).
fn stats_length(asked: Option<&str>) -> Result<u64, String> {
    let Some(text) = asked else {
        return Ok(crate::window::SECONDS);
    };
    match cohort_core::Duration::parse(text) {
        Some(d) if d.as_millis() >= 1000 && d.as_millis() <= crate::window::SECONDS * 1000 => {
            Ok(d.as_millis() / 1000)
        }
        _ => Err(format!(
            "window `{text}` should be a duration from 1s to {}s, e.g. `window=5m`\n",
            crate::window::SECONDS
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::{ConfigReaders, stats_window};

    #[test]
    fn stats_after_a_second_take_the_whole_seconds_since_and_no_more_than_ten_minutes() {
        let now = 1_000_000;
        assert_eq!(stats_window(None, now), Ok((now, 600)));
        assert_eq!(stats_window(Some("window=5m"), now), Ok((now, 300)));
        // The second under way is left for the next read.
        assert_eq!(stats_window(Some("after=999990"), now), Ok((999_999, 9)));
        assert_eq!(stats_window(Some("after=999999"), now), Ok((999_999, 0)));
        assert_eq!(stats_window(Some("after=1000005"), now), Ok((999_999, 0)));
        assert_eq!(stats_window(Some("after=0"), now), Ok((999_999, 600)));
        assert!(stats_window(Some("after=yesterday"), now).is_err());
        assert!(stats_window(Some("window=11m"), now).is_err());
    }

    #[test]
    fn config_readers_are_loopback_and_the_networks_given() {
        let none = ConfigReaders::default();
        for ip in ["127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1"] {
            assert!(none.allow(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["10.0.0.7", "192.0.2.2", "fd00::2", "::ffff:10.0.0.7", "0.0.0.0"] {
            assert!(!none.allow(ip.parse().expect("ip")), "{ip}");
        }
        let some = ConfigReaders {
            networks: vec!["10.0.0.0/8".parse().expect("cidr")],
        };
        assert!(some.allow("10.1.2.3".parse().expect("ip")));
        assert!(
            some.allow("::ffff:10.1.2.3".parse().expect("ip")),
            "a v4-mapped peer is its v4 address"
        );
        assert!(!some.allow("192.0.2.2".parse().expect("ip")));
    }
}

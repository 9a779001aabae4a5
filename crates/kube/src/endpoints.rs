//! Where a router's tracks' pods are: the ready endpoints of each track's Service, read from
//! its EndpointSlices and kept current by a watch, so the router balances requests over pods
//! rather than connections over a ClusterIP.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use cohort_core::router_config::EndpointsRef;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::{Cluster, KubeError};

/// The label the EndpointSlice controller puts on each slice: the Service it lists.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The addresses of each Service's pods that should get new requests.
pub type EndpointMap = BTreeMap<EndpointsRef, Vec<SocketAddr>>;

/// The addresses a router should send new requests to, from one Service's `slices`, on the
/// port named `port`: every endpoint that is ready and not terminating. When there is none
/// (every pod is shutting down), the ones still serving while they terminate, as kube-proxy
/// does: better a pod on its way out than no answer at all. Sorted, without duplicates (an
/// endpoint can sit in two slices while the controller moves it).
pub fn ready_addresses<'s>(
    slices: impl IntoIterator<Item = &'s EndpointSlice>,
    port: &str,
) -> Vec<SocketAddr> {
    let mut ready = vec![];
    let mut terminating = vec![];
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let Some(number) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == port)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.as_ref();
            // Absent conditions mean ready and serving, and not terminating (the API's rule).
            let is_ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let is_serving = conditions.and_then(|c| c.serving).unwrap_or(is_ready);
            let is_terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            let into = match (is_ready && !is_terminating, is_serving && is_terminating) {
                (true, _) => &mut ready,
                (false, true) => &mut terminating,
                (false, false) => continue,
            };
            into.extend(
                endpoint
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<IpAddr>().ok())
                    .map(|ip| SocketAddr::new(ip, number)),
            );
        }
    }
    let mut out = if ready.is_empty() { terminating } else { ready };
    out.sort();
    out.dedup();
    out
}

/// The addresses for each of `refs` among `slices` (a Service with no slice gets an empty list).
pub fn endpoint_map(slices: &[Arc<EndpointSlice>], refs: &[EndpointsRef]) -> EndpointMap {
    refs.iter()
        .map(|r| {
            let of_service = slices.iter().map(|s| &**s).filter(|s| {
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .is_some_and(|name| *name == r.service)
            });
            (r.clone(), ready_addresses(of_service, &r.port))
        })
        .collect()
}

/// The label selector for the slices of `refs`' Services (`kubernetes.io/service-name in (…)`).
/// Service names are DNS labels (the router config's reader checks), so nothing needs quoting.
pub fn selector(refs: &[EndpointsRef]) -> String {
    let mut names: Vec<&str> = refs.iter().map(|r| r.service.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    format!("{SERVICE_NAME_LABEL} in ({})", names.join(","))
}

/// A watch of the EndpointSlices of some Services (one WATCH for all of them, re-listed with
/// backoff after errors); its task stops when this is dropped.
pub struct EndpointWatch {
    current: tokio::sync::watch::Receiver<Option<EndpointMap>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EndpointWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EndpointWatch {
    /// The map once the slices have been listed, and again after each change to it.
    pub async fn changed(&mut self) -> Result<EndpointMap, KubeError> {
        loop {
            self.current.changed().await.map_err(|_| KubeError::Ended)?;
            if let Some(map) = self.current.borrow_and_update().clone() {
                return Ok(map);
            }
        }
    }

    /// The map now, if the slices have been listed.
    pub fn now(&self) -> Option<EndpointMap> {
        self.current.borrow().clone()
    }
}

impl Cluster {
    /// Starts watching the EndpointSlices of `refs`' Services in the namespace. Errors (RBAC,
    /// the API server away) are retried with backoff and told through `report`, each as it
    /// happens; the last known addresses stay in force meanwhile.
    pub fn watch_endpoints(
        &self,
        refs: Vec<EndpointsRef>,
        report: impl Fn(KubeError) + Send + 'static,
    ) -> EndpointWatch {
        use futures::StreamExt;
        use kube::runtime::watcher::{self, Event};
        use kube::runtime::{WatchStreamExt, reflector};
        let (tx, current) = tokio::sync::watch::channel(None);
        let (store, writer) = reflector::store::<EndpointSlice>();
        let config = watcher::Config::default().labels(&selector(&refs));
        let stream =
            reflector(writer, watcher::watcher(self.api::<EndpointSlice>(), config)).default_backoff();
        let doing = format!("watch endpointslices in namespace {}", self.namespace);
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let mut listed = false;
            while let Some(event) = stream.next().await {
                match event {
                    Ok(Event::InitDone) => listed = true,
                    Ok(Event::Init | Event::InitApply(_)) => continue,
                    Ok(Event::Apply(_) | Event::Delete(_)) => {}
                    Err(watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e)) => {
                        report(KubeError::from_kube(doing.clone(), e));
                        continue;
                    }
                    Err(other) => {
                        report(KubeError::Watch {
                            doing: doing.clone(),
                            source: Box::new(other),
                        });
                        continue;
                    }
                }
                if !listed {
                    continue;
                }
                let map = endpoint_map(&store.state(), &refs);
                tx.send_if_modified(|now| {
                    let changed = now.as_ref() != Some(&map);
                    if changed {
                        *now = Some(map);
                    }
                    changed
                });
            }
        });
        EndpointWatch { current, task }
    }
}

#[cfg(test)]
mod tests;

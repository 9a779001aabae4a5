//! What the cluster's routers counted, for the reports: in pull mode nothing may connect into
//! the cluster, so the agent reads its routers' `/stats?after=` each pass and sends the counts
//! with its report; `cohort serve` adds every cluster's up for the autopilot.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use cohort_control::Counted;
use cohort_judge::WindowStats;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::target::Target;

/// Where the agent reads its routers' counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RouterCounts {
    /// Not at all (a git source takes no reports).
    #[default]
    Off,
    /// Each service's ready router pods, through the API server's pod proxy.
    Cluster,
    /// These routers' admin URLs (each says which service it routes).
    Urls(Vec<String>),
}

/// The largest `/stats` answer read.
const MAX_STATS_BYTES: usize = 4 << 20;
/// How long one router may take to answer.
const ROUTER_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the routers and keeps what they counted until a report carries it.
#[derive(Debug, Default)]
pub struct Counter {
    /// Per source, the router's last second read.
    until: BTreeMap<String, u64>,
    /// Counted and not yet taken by the server, per service.
    pending: BTreeMap<String, WindowStats>,
    /// The services whose routers could not be read at the last read.
    missing: Vec<String>,
}

impl Counter {
    /// Reads every router of `services` (name and the router's admin port) and adds what
    /// they counted since the last read to what is pending. A router that cannot be read is
    /// logged and read again next time from where it was left.
    pub async fn read<T: Target>(
        &mut self,
        how: &RouterCounts,
        target: &T,
        services: &[(String, u16)],
        first_window: Duration,
    ) {
        let window = first_window.as_secs().clamp(1, 600);
        let mut answers = vec![];
        let mut unlisted = vec![];
        match how {
            RouterCounts::Off => return,
            RouterCounts::Cluster => {
                for (service, port) in services {
                    let pods = match target.router_pods(service).await {
                        Ok(pods) => pods,
                        Err(e) => {
                            tracing::warn!(service = %service, error = %crate::agent::chain(&e), "cannot list the routers to count");
                            unlisted.push(service.clone());
                            continue;
                        }
                    };
                    for pod in pods {
                        let source = format!("pod {pod}");
                        let path = cohort_judge::gather::query(&source, &self.until, window);
                        let body =
                            match tokio::time::timeout(ROUTER_TIMEOUT, target.router_get(&pod, *port, &path))
                                .await
                            {
                                Ok(Ok(body)) => Ok(body),
                                Ok(Err(e)) => Err(crate::agent::chain(&e)),
                                Err(_) => Err(format!("no answer in {}s", ROUTER_TIMEOUT.as_secs())),
                            };
                        answers.push(cohort_judge::gather::Answer {
                            source,
                            expected: Some(service.clone()),
                            body,
                        });
                    }
                }
            }
            RouterCounts::Urls(urls) => {
                let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
                for url in urls {
                    let path = cohort_judge::gather::query(url, &self.until, window);
                    let full = format!("{}/{path}", url.trim_end_matches('/'));
                    answers.push(cohort_judge::gather::Answer {
                        source: url.clone(),
                        expected: None,
                        body: get(&client, &full).await,
                    });
                }
            }
        }
        // A service some of whose routers answered nothing, or none of them anything usable,
        // is missing: the autopilot must not judge it to pass without this cluster's counts.
        let expected: BTreeMap<String, Option<String>> = answers
            .iter()
            .map(|a| (a.source.clone(), a.expected.clone()))
            .collect();
        let gathered = cohort_judge::gather::gather(answers, Some(&mut self.until));
        for (source, why) in &gathered.unread {
            tracing::warn!(router = %source, why = %why, "cannot count this router's requests");
        }
        self.missing = unlisted;
        for (source, _) in &gathered.unread {
            let services: Vec<String> = match expected.get(source).cloned().flatten() {
                Some(service) => vec![service],
                // A router URL that did not answer could be any service's.
                None => services
                    .iter()
                    .map(|(s, _)| s.clone())
                    .filter(|s| !gathered.stats.contains_key(s))
                    .collect(),
            };
            for service in services {
                if !self.missing.contains(&service) {
                    self.missing.push(service);
                }
            }
        }
        for (service, stats) in gathered.stats {
            if !services.iter().any(|(s, _)| *s == service) {
                continue;
            }
            match self.pending.get_mut(&service) {
                Some(sum) => {
                    if let Err(e) = sum.merge(stats) {
                        tracing::warn!(service = %service, error = %e, "routers' counts do not add up");
                    }
                }
                None => {
                    self.pending.insert(service.clone(), stats);
                }
            }
            // Held while the control API is away, a service's counts grow with every version
            // seen; past what the server takes, they are let go (the autopilot then sees fewer
            // requests, which never makes a pass).
            if self
                .pending
                .get(&service)
                .is_some_and(|s| s.series.len() > cohort_control::counts::MAX_SERIES)
            {
                tracing::warn!(service = %service, "too many routers' counts held unsent; dropped");
                self.pending.remove(&service);
            }
        }
    }

    /// What is pending, for a report.
    pub fn pending(&self) -> Vec<Counted> {
        self.pending
            .iter()
            .map(|(service, stats)| Counted {
                service: service.clone(),
                stats: stats.clone(),
            })
            .collect()
    }

    /// The services whose routers could not be read at the last read.
    pub fn missing(&self) -> Vec<String> {
        self.missing.clone()
    }

    /// The server took the report: what it carried is no longer pending.
    pub fn taken(&mut self) {
        self.pending.clear();
    }
}

async fn get(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    url: &str,
) -> Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url} is not a URL: {e}"))?;
    let request = async {
        let response = client
            .get(uri)
            .await
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_STATS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("cannot read {url}: {e}"))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| format!("{url} answered what is not text"))
    };
    match tokio::time::timeout(ROUTER_TIMEOUT, request).await {
        Ok(answer) => answer,
        Err(_) => Err(format!("{url}: no answer in {}s", ROUTER_TIMEOUT.as_secs())),
    }
}

/// The admin port of a service's router, from its rendered objects (the router Deployment's
/// port named `admin`).
pub fn router_admin_port(objects: &[cohort_render::Rendered]) -> Option<u16> {
    objects
        .iter()
        .filter(|o| o.kind == "Deployment" && o.value["metadata"]["labels"]["tier"] == "router")
        .flat_map(|o| {
            o.value["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .find(|p| p["name"] == "admin")
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
}

//! The cluster the agent applies to. [`KubeTarget`] goes through the kube adapter's
//! `Cluster::apply_service`, the code path and order of `cohort apply`.

use std::future::Future;
use std::time::Duration;

use cohort_control::ServiceHealth;
use cohort_kube::Cluster;
use cohort_kube::apply::{ApplyError, ApplyOptions, Progress};
use cohort_render::Rendered;

use crate::state::{self, AppliedState};

/// Why something failed in the cluster.
#[derive(Debug, thiserror::Error)]
#[error("cannot {doing}")]
pub struct TargetError {
    /// What was being done.
    pub doing: String,
    /// Why.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl TargetError {
    /// `doing` failed because of `source`.
    pub fn new(
        doing: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        TargetError {
            doing: doing.into(),
            source: source.into(),
        }
    }
}

/// A cluster as the agent uses it.
pub trait Target: Send + Sync {
    /// The namespace it applies in.
    fn namespace(&self) -> &str;
    /// The state saved by the last agent (empty the first time).
    fn load(&self) -> impl Future<Output = Result<AppliedState, TargetError>> + Send;
    /// Saves the state.
    fn save(&self, state: &AppliedState) -> impl Future<Output = Result<(), TargetError>> + Send;
    /// Applies one service's objects, completely or not at all as far as the agent's state
    /// goes: only a success is recorded, so an interrupted apply is done again next time.
    fn apply(
        &self,
        service: &str,
        objects: &[Rendered],
    ) -> impl Future<Output = Result<(), TargetError>> + Send;
    /// `cohort status`'s evaluation of the namespace against what the revision renders.
    fn health(
        &self,
        expected: Option<&cohort_health::Expectations>,
    ) -> impl Future<Output = Result<Vec<ServiceHealth>, TargetError>> + Send;
    /// The ready router pods of `service`, to read their counts (none where there is no
    /// cluster to ask).
    fn router_pods(&self, service: &str) -> impl Future<Output = Result<Vec<String>, TargetError>> + Send {
        let _ = service;
        async { Ok(vec![]) }
    }
    /// GETs `path` from the router pod `pod`'s admin `port`.
    fn router_get(
        &self,
        pod: &str,
        port: u16,
        path: &str,
    ) -> impl Future<Output = Result<String, TargetError>> + Send {
        let _ = (port, path);
        let pod = pod.to_string();
        async move {
            Err(TargetError::new(
                format!("read router pod {pod}"),
                "no cluster to ask",
            ))
        }
    }
}

/// A real cluster through the kube adapter.
pub struct KubeTarget {
    cluster: Cluster,
    options: ApplyOptions,
}

impl KubeTarget {
    /// Applies in `cluster`'s namespace, each rollout given `timeout`.
    pub fn new(cluster: Cluster, timeout: Duration) -> KubeTarget {
        KubeTarget {
            cluster,
            options: ApplyOptions {
                timeout,
                holder: cohort_kube::lease::identity("cohort agent"),
                ..ApplyOptions::default()
            },
        }
    }
}

fn log_progress(service: &str, p: Progress) {
    match p {
        Progress::Step { what } => tracing::info!(service, step = what, "apply step"),
        Progress::Applied { kind, name, change } => {
            tracing::info!(service, kind, name = %name, change = ?change, "applied")
        }
        Progress::Waiting { deployment, progress } => {
            tracing::info!(service, deployment = %deployment, progress = %progress, "waiting for rollout")
        }
        Progress::Ready { deployment, after } => {
            tracing::info!(service, deployment = %deployment, seconds = after.as_secs_f64(), "rolled out")
        }
        Progress::Reloaded { routers, after } => {
            tracing::info!(
                service,
                routers,
                seconds = after.as_secs_f64(),
                "routers run the new config"
            )
        }
        Progress::NotNudged { why } => tracing::warn!(service, why = %why, "routers not nudged"),
        Progress::ReloadUnconfirmed { pods } => {
            for (pod, why) in pods {
                tracing::warn!(service, pod = %pod, why = %why, "cannot confirm the router runs the new config")
            }
        }
        Progress::Pruned { deployment } => tracing::info!(service, deployment = %deployment, "pruned"),
    }
}

impl Target for KubeTarget {
    fn namespace(&self) -> &str {
        &self.cluster.namespace
    }

    async fn router_pods(&self, service: &str) -> Result<Vec<String>, TargetError> {
        self.cluster
            .router_pods(service)
            .await
            .map_err(|e| TargetError::new(format!("list the router pods of {service}"), e))
    }

    async fn router_get(&self, pod: &str, port: u16, path: &str) -> Result<String, TargetError> {
        self.cluster
            .pod_get(pod, port, path)
            .await
            .map_err(|e| TargetError::new(format!("read {path} of router pod {pod}"), e))
    }

    async fn load(&self) -> Result<AppliedState, TargetError> {
        let data = self
            .cluster
            .agent_state()
            .await
            .map_err(|e| TargetError::new("read the agent's state", e))?;
        let (state, unreadable) = state::from_data(&data.unwrap_or_default());
        for service in unreadable {
            tracing::warn!(service = %service, "the saved state of this service is unreadable; it is applied again");
        }
        Ok(state)
    }

    async fn save(&self, state: &AppliedState) -> Result<(), TargetError> {
        self.cluster
            .save_agent_state(&state::to_data(state))
            .await
            .map_err(|e| TargetError::new("save the agent's state", e))
    }

    async fn apply(&self, service: &str, objects: &[Rendered]) -> Result<(), TargetError> {
        let doing = || format!("apply service {service}");
        // As `cohort apply` does: refuse what the server cannot run before changing anything.
        if let Some((major, minor)) = self
            .cluster
            .server_version()
            .await
            .map_err(|e| TargetError::new(doing(), e))?
        {
            cohort_kube::apply::check_server_supports(objects, major, minor)
                .map_err(|e| TargetError::new(doing(), e))?;
        }
        let mut progress = |p: Progress| log_progress(service, p);
        self.cluster
            .apply_service(service, objects, &self.options, &mut progress)
            .await
            .map_err(|e: ApplyError| TargetError::new(doing(), e))
    }

    async fn health(
        &self,
        expected: Option<&cohort_health::Expectations>,
    ) -> Result<Vec<ServiceHealth>, TargetError> {
        let inventory = self
            .cluster
            .inventory()
            .await
            .map_err(|e| TargetError::new("read the namespace", e))?;
        let settings = cohort_health::Settings::defaults(jiff::Timestamp::now());
        let report = cohort_health::evaluate(&inventory, expected, &settings);
        Ok(report
            .services
            .iter()
            .map(|s| ServiceHealth {
                service: s.service.clone(),
                healthy: s.healthy(),
                findings: s.findings.iter().map(ToString::to_string).collect(),
            })
            .collect())
    }
}

//! The ConfigMap in which the in-cluster agent remembers what it applied, so that a restart
//! neither applies a revision again nor loses its place.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::{Cluster, KubeError};

/// The ConfigMap's name.
pub const AGENT_STATE: &str = "cohort-agent-state";
/// The field manager the agent writes its state with. Not `cohort`, so that `cohort apply`
/// and `cohort diff` never take the state for one of the release repo's objects.
pub const AGENT_MANAGER: &str = "cohort-agent";

impl Cluster {
    /// The agent's state ConfigMap's data; `None` when there is none yet.
    pub async fn agent_state(&self) -> Result<Option<BTreeMap<String, String>>, KubeError> {
        let found = self.api::<ConfigMap>().get_opt(AGENT_STATE).await.map_err(|e| {
            KubeError::from_kube(
                format!("get configmap {AGENT_STATE} in namespace {}", self.namespace),
                e,
            )
        })?;
        Ok(found.map(|cm| cm.data.unwrap_or_default()))
    }

    /// Writes the agent's state ConfigMap (server-side apply: keys no longer given are removed).
    pub async fn save_agent_state(&self, data: &BTreeMap<String, String>) -> Result<(), KubeError> {
        let object = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": AGENT_STATE,
                "namespace": self.namespace,
                "labels": { cohort_render::LABEL_MANAGED_BY: AGENT_MANAGER },
            },
            "data": data,
        });
        let params = PatchParams::apply(AGENT_MANAGER).force();
        self.api::<ConfigMap>()
            .patch(AGENT_STATE, &params, &Patch::Apply(&object))
            .await
            .map_err(|e| {
                KubeError::from_kube(
                    format!("apply configmap {AGENT_STATE} in namespace {}", self.namespace),
                    e,
                )
            })?;
        Ok(())
    }
}

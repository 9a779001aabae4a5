//! The routers' own counts, read through the API server (the pods' admin port, by the pod
//! proxy): no route into the cluster is needed, only RBAC `get` on `pods/proxy`.

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;

use crate::{Cluster, KubeError};

impl Cluster {
    /// The ready router pods of `service`.
    pub async fn router_pods(&self, service: &str) -> Result<Vec<String>, KubeError> {
        let pods = self
            .api::<Pod>()
            .list(&ListParams::default().labels(&format!("app={service},tier=router")))
            .await
            .map_err(|e| KubeError::from_kube(format!("list pods in namespace {}", self.namespace), e))?;
        Ok(pods
            .items
            .into_iter()
            .filter(ready_and_staying)
            .filter_map(|p| p.metadata.name)
            .collect())
    }

    /// The names of cohort's Deployments in the namespace that have finished rolling out (one
    /// LIST): what the autopilot needs before it moves a version on.
    pub async fn rolled_out_deployments(&self) -> Result<std::collections::BTreeSet<String>, KubeError> {
        use cohort_health::rollout::{Rollout, rollout};
        use k8s_openapi::api::apps::v1::Deployment;
        let list = self
            .api::<Deployment>()
            .list(&ListParams::default().labels(&format!(
                "{}={}",
                cohort_render::LABEL_MANAGED_BY,
                cohort_render::MANAGER
            )))
            .await
            .map_err(|e| {
                KubeError::from_kube(format!("list deployments in namespace {}", self.namespace), e)
            })?;
        Ok(list
            .items
            .into_iter()
            .filter(|d| matches!(rollout(d), Rollout::Done))
            .filter_map(|d| d.metadata.name)
            .collect())
    }

    /// GET `path_and_query` from port `port` of pod `pod`, through the API server.
    pub async fn pod_get(&self, pod: &str, port: u16, path_and_query: &str) -> Result<String, KubeError> {
        let uri = pod_proxy_uri(&self.namespace, pod, port, path_and_query);
        let request = http::Request::get(&uri)
            .body(Vec::new())
            .map_err(|source| KubeError::Request {
                doing: format!("build a request for {uri}"),
                source,
            })?;
        self.client
            .request_text(request)
            .await
            .map_err(|e| KubeError::from_kube(format!("get {path_and_query} from pod {pod}"), e))
    }
}

/// Whether `pod` is Ready and not going away: one that takes traffic and will go on taking it.
pub(crate) fn ready_and_staying(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// The API server path that proxies to `port` of `pod`.
pub fn pod_proxy_uri(namespace: &str, pod: &str, port: u16, path_and_query: &str) -> String {
    format!(
        "/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/{}",
        path_and_query.trim_start_matches('/')
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pod_proxy_path_names_namespace_pod_and_port() {
        assert_eq!(
            super::pod_proxy_uri(
                "shop",
                "account-service-router-7d9-x2",
                9901,
                "/stats?window=600s"
            ),
            "/api/v1/namespaces/shop/pods/account-service-router-7d9-x2:9901/proxy/stats?window=600s"
        );
    }
}

//! cohort's adapter to a Kubernetes API server, through kube-rs: connecting like kubectl
//! does (kubeconfig, context, namespace, in-cluster), gathering a namespace with one LIST per
//! kind, and telling API errors the way kubectl tells them.

use std::path::PathBuf;

use cohort_health::Inventory;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::Status;

/// Where the cluster is, as kubectl's flags say it.
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// A kubeconfig file (default: `$KUBECONFIG`, `~/.kube/config`, then in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig (default: its current context).
    pub context: Option<String>,
    /// The namespace (default: the context's, else `default`).
    pub namespace: Option<String>,
}

/// What went wrong talking to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// No usable configuration: no kubeconfig, a broken one, an unknown context.
    #[error("cannot configure a Kubernetes client{}", .path.as_ref().map(|p| format!(" from {}", p.display())).unwrap_or_default())]
    Config {
        /// The kubeconfig named, if one was.
        path: Option<PathBuf>,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The API server answered with an error `Status` (Forbidden, NotFound, Conflict...).
    #[error("Error from server ({reason}): {message}")]
    Api {
        /// `Forbidden`, `NotFound`, ... (the HTTP code when the server gave no reason).
        reason: String,
        /// The HTTP status code.
        code: u16,
        /// The server's message: for Forbidden it names the user, the verb and the resource.
        message: String,
    },
    /// The API server could not be reached or its answer not read.
    #[error("cannot {doing}")]
    Transport {
        /// What was being done, e.g. `list deployments in namespace shop`.
        doing: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
}

impl KubeError {
    /// The error as kubectl shows it, from an API `Status` body.
    pub fn from_status(status: &Status) -> KubeError {
        let reason = match status.reason.as_str() {
            "" => status.code.to_string(),
            r => r.to_string(),
        };
        KubeError::Api {
            reason,
            code: status.code,
            message: status.message.clone(),
        }
    }

    fn from_kube(doing: String, e: kube::Error) -> KubeError {
        match e {
            kube::Error::Api(status) => KubeError::from_status(&status),
            source => KubeError::Transport { doing, source },
        }
    }

    /// Whether the server refused for lack of permission (RBAC).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, KubeError::Api { code: 403, .. })
    }
}

/// A connected client and the namespace it works in.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
    /// The namespace.
    pub namespace: String,
}

impl Cluster {
    /// Connects as kubectl would: the given kubeconfig and context, else the environment's
    /// kubeconfig, else the in-cluster service account.
    pub async fn connect(target: &Target) -> Result<Cluster, KubeError> {
        let options = KubeConfigOptions {
            context: target.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config_error = |source: Box<dyn std::error::Error + Send + Sync>| KubeError::Config {
            path: target.kubeconfig.clone(),
            source,
        };
        let config = match &target.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(|e| config_error(Box::new(e)))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| config_error(Box::new(e)))?
            }
            None if target.context.is_some() => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| config_error(Box::new(e)))?,
            None => kube::Config::infer()
                .await
                .map_err(|e| config_error(Box::new(e)))?,
        };
        let namespace = target
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config).map_err(|e| config_error(Box::new(e)))?;
        Ok(Cluster { client, namespace })
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn list<K>(&self, plural: &str) -> Result<Vec<K>, KubeError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        self.api::<K>()
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .map_err(|e| KubeError::from_kube(format!("list {plural} in namespace {}", self.namespace), e))
    }

    /// The namespace's Services, Deployments, EndpointSlices and Pods: one LIST per kind, all
    /// four at once, never a call per service.
    pub async fn inventory(&self) -> Result<Inventory, KubeError> {
        let (services, deployments, endpoint_slices, pods) = tokio::try_join!(
            self.list::<Service>("services"),
            self.list::<Deployment>("deployments"),
            self.list::<EndpointSlice>("endpointslices"),
            self.list::<Pod>("pods"),
        )?;
        Ok(Inventory {
            services,
            deployments,
            endpoint_slices,
            pods,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::KubeError;

    fn status(name: &str) -> kube::core::Status {
        let path = format!(
            "{}/../health/tests/fixtures/error-{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn api_errors_read_as_kubectl_prints_them() {
        let forbidden = KubeError::from_status(&status("403-forbidden"));
        assert!(forbidden.is_forbidden());
        let text = forbidden.to_string();
        assert!(text.starts_with("Error from server (Forbidden): "), "{text}");
        assert!(text.contains("cannot list resource"), "{text}");
        let not_found = KubeError::from_status(&status("404-notfound")).to_string();
        assert!(
            not_found.starts_with("Error from server (NotFound): "),
            "{not_found}"
        );
        assert!(not_found.contains("not found"), "{not_found}");
        let conflict = KubeError::from_status(&status("409-ssa-conflict")).to_string();
        assert!(
            conflict.starts_with("Error from server (Conflict): "),
            "{conflict}"
        );
        let invalid = KubeError::from_status(&status("422-invalid")).to_string();
        assert!(invalid.starts_with("Error from server (Invalid): "), "{invalid}");
    }
}

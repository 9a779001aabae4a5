//! cohort's adapter to a Kubernetes API server, through kube-rs: connecting like kubectl
//! does (kubeconfig, context, namespace, in-cluster), gathering a namespace with one LIST per
//! kind, and telling API errors the way kubectl tells them.

pub mod agent_state;
pub mod applied;
pub mod apply;
pub mod check_job;
pub mod compare;
pub mod endpoints;
pub mod lease;
pub mod plan;
pub mod reload;
pub mod stats;

pub use check_job::{
    CheckJobError, CheckJobFor, CheckJobState, JobOutcome, JobSpecProblem, check_job_object, job_outcome,
};

use std::path::PathBuf;
use std::sync::Arc;

use cohort_health::Inventory;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::Status;
use kube::runtime::reflector::Store;

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
    /// A watch failed after it had started (it is retried).
    #[error("cannot {doing}")]
    Watch {
        /// What was being watched.
        doing: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A request could not be formed (a name that does not fit in a URL).
    #[error("cannot {doing}")]
    Request {
        /// What was being done.
        doing: String,
        /// Why.
        #[source]
        source: http::Error,
    },
    /// The watch stopped (its tasks ended).
    #[error("the watch ended")]
    Ended,
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

    pub(crate) fn from_kube(doing: String, e: kube::Error) -> KubeError {
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

/// The files a `$KUBECONFIG` value lists that exist, in its order (empty entries and missing
/// files are skipped, as kubectl does).
pub fn existing_kubeconfigs(value: &std::ffi::OsStr) -> Vec<PathBuf> {
    std::env::split_paths(value)
        .filter(|p| !p.as_os_str().is_empty() && p.is_file())
        .collect()
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
        let from_env = match &target.kubeconfig {
            Some(_) => vec![],
            None => std::env::var_os("KUBECONFIG")
                .map(|v| existing_kubeconfigs(&v))
                .unwrap_or_default(),
        };
        let config = match &target.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(|e| config_error(Box::new(e)))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| config_error(Box::new(e)))?
            }
            // kubectl merges the files $KUBECONFIG lists and skips those that do not exist;
            // kube-rs fails on a missing one, so the list is read here.
            None if !from_env.is_empty() => {
                let mut merged: Option<Kubeconfig> = None;
                for path in &from_env {
                    let next = Kubeconfig::read_from(path).map_err(|e| KubeError::Config {
                        path: Some(path.clone()),
                        source: Box::new(e),
                    })?;
                    merged = Some(match merged {
                        None => next,
                        Some(m) => m.merge(next).map_err(|e| config_error(Box::new(e)))?,
                    });
                }
                let merged = merged.unwrap_or_default();
                kube::Config::from_custom_kubeconfig(merged, &options)
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

    pub(crate) fn api<K>(&self) -> Api<K>
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

/// A namespace kept current by one watch per kind (kube-runtime reflectors: a LIST, then
/// WATCH from its resourceVersion, re-listing with backoff after errors), never by polling.
pub struct Watch {
    services: Store<Service>,
    deployments: Store<Deployment>,
    endpoint_slices: Store<EndpointSlice>,
    pods: Store<Pod>,
    changed: tokio::sync::mpsc::Receiver<Result<(), KubeError>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    synced: bool,
}

impl Drop for Watch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Watch {
    /// The next state of the namespace: the first call returns once every kind is listed;
    /// later ones once something changed and `settle` passed without a further change (a
    /// rollout changes many objects at once; one evaluation covers them all). Before the
    /// first complete listing an error ends the watch (it is the configuration or RBAC that is
    /// wrong); after it, errors are retried by the watchers and only reported.
    pub async fn next(&mut self, settle: std::time::Duration) -> Result<Inventory, KubeError> {
        // Errors quote the API server (and the objects it names): escaped for the terminal.
        match self.changed.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) if !self.synced => return Err(e),
            Some(Err(e)) => eprintln!(
                "cohort: watch: {} (retrying)",
                cohort_core::Printable(&e.to_string())
            ),
            None => return Err(KubeError::Ended),
        }
        if !self.synced {
            let ready = tokio::try_join!(
                self.services.wait_until_ready(),
                self.deployments.wait_until_ready(),
                self.endpoint_slices.wait_until_ready(),
                self.pods.wait_until_ready(),
            );
            if ready.is_err() {
                return Err(KubeError::Ended);
            }
            self.synced = true;
        }
        // Let a burst of changes settle.
        loop {
            match tokio::time::timeout(settle, self.changed.recv()).await {
                Err(_) => break,
                Ok(Some(Err(e))) => eprintln!(
                    "cohort: watch: {} (retrying)",
                    cohort_core::Printable(&e.to_string())
                ),
                Ok(Some(Ok(()))) => {}
                Ok(None) => return Err(KubeError::Ended),
            }
        }
        Ok(self.current())
    }

    fn current(&self) -> Inventory {
        Inventory {
            services: owned(self.services.state()),
            deployments: owned(self.deployments.state()),
            endpoint_slices: owned(self.endpoint_slices.state()),
            pods: owned(self.pods.state()),
        }
    }

    /// The namespace as the watches know it now, once every kind has been listed. (`next` may
    /// be cancelled while it lets changes settle; what it saw is in the stores regardless.)
    pub fn snapshot(&self) -> Option<Inventory> {
        self.synced.then(|| self.current())
    }
}

/// The store's objects, owned (the evaluator takes plain objects).
fn owned<K: Clone>(objects: Vec<Arc<K>>) -> Vec<K> {
    objects.into_iter().map(|o| (*o).clone()).collect()
}

impl Cluster {
    /// Starts watching the namespace's Services, Deployments, EndpointSlices and Pods.
    pub fn watch(&self) -> Watch {
        let (tx, changed) = tokio::sync::mpsc::channel(64);
        let mut tasks = vec![];
        let services = self.reflect::<Service>("services", tx.clone(), &mut tasks);
        let deployments = self.reflect::<Deployment>("deployments", tx.clone(), &mut tasks);
        let endpoint_slices = self.reflect::<EndpointSlice>("endpointslices", tx.clone(), &mut tasks);
        let pods = self.reflect::<Pod>("pods", tx, &mut tasks);
        Watch {
            services,
            deployments,
            endpoint_slices,
            pods,
            changed,
            tasks,
            synced: false,
        }
    }

    fn reflect<K>(
        &self,
        plural: &'static str,
        tx: tokio::sync::mpsc::Sender<Result<(), KubeError>>,
        tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    ) -> Store<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
        <K as kube::Resource>::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, reflector, watcher};
        let (store, writer) = reflector::store::<K>();
        let stream =
            reflector(writer, watcher(self.api::<K>(), watcher::Config::default())).default_backoff();
        let namespace = self.namespace.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let signal = event.map(|_| ()).map_err(|e| match e {
                    watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e) => {
                        KubeError::from_kube(format!("watch {plural} in namespace {namespace}"), e)
                    }
                    other => KubeError::Watch {
                        doing: format!("watch {plural} in namespace {namespace}"),
                        source: Box::new(other),
                    },
                });
                if tx.send(signal).await.is_err() {
                    return;
                }
            }
        }));
        store
    }
}

#[cfg(test)]
mod tests {
    use super::KubeError;

    #[test]
    fn kubeconfig_lists_skip_missing_files_and_empty_entries_as_kubectl_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "apiVersion: v1\nkind: Config\n").expect("write");
        std::fs::write(&b, "apiVersion: v1\nkind: Config\n").expect("write");
        let missing = dir.path().join("missing");
        let value = std::env::join_paths([&missing, &a, std::path::Path::new(""), &b]).expect("join");
        assert_eq!(super::existing_kubeconfigs(&value), [a, b]);
        assert!(super::existing_kubeconfigs(missing.as_os_str()).is_empty());
    }

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

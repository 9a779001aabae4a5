//! A namespace as `cohort status` gathers it: one LIST per kind, kept as the API server
//! returned the objects.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;

/// The objects of one namespace that health is judged from.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    /// Every Service (only those labelled `tier: service` are looked at).
    pub services: Vec<Service>,
    /// Every Deployment.
    pub deployments: Vec<Deployment>,
    /// Every EndpointSlice (matched to Services by `kubernetes.io/service-name`).
    pub endpoint_slices: Vec<EndpointSlice>,
    /// Pods, to say why a rollout is stuck (may be empty: reasons are then left out).
    pub pods: Vec<Pod>,
}

/// A `List` as `kubectl get KIND -o json` or a LIST call returns it.
#[derive(Deserialize)]
struct List<T> {
    items: Vec<T>,
}

/// Why a list could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{kind} list: {source}")]
pub struct ListError {
    /// Which kind of list.
    pub kind: &'static str,
    /// What was wrong with it.
    #[source]
    pub source: serde_json::Error,
}

fn list<T: for<'de> Deserialize<'de>>(kind: &'static str, json: &[u8]) -> Result<Vec<T>, ListError> {
    serde_json::from_slice::<List<T>>(json)
        .map(|l| l.items)
        .map_err(|source| ListError { kind, source })
}

impl Inventory {
    /// An inventory from the JSON bodies of four LISTs (Services, Deployments,
    /// EndpointSlices, Pods), as the API server returns them.
    pub fn from_lists(
        services: &[u8],
        deployments: &[u8],
        endpoint_slices: &[u8],
        pods: &[u8],
    ) -> Result<Inventory, ListError> {
        Ok(Inventory {
            services: list("Service", services)?,
            deployments: list("Deployment", deployments)?,
            endpoint_slices: list("EndpointSlice", endpoint_slices)?,
            pods: list("Pod", pods)?,
        })
    }
}

//! After `apply` changes a router's ConfigMap: the routers' pods are told to look again, and
//! apply waits until every ready one reports the new config's digest. Without this a weight
//! change took effect only when the kubelet next synced the mounted ConfigMap, 10–90 s after
//! apply had returned.
//!
//! The kubelet refreshes a pod's ConfigMap volumes whenever it syncs the pod, and a change to
//! the pod's metadata makes it sync at once: so apply annotates each router pod with the
//! digest it wants (`cohort.dev/router-config`), then reads `/config-digest` from each pod's
//! admin port through the API server (RBAC `patch` on pods, `get` on `pods/proxy`). A pod that
//! cannot be asked (forbidden, an older router without the endpoint, no answer) is reported
//! as unconfirmed rather than waited on: the kubelet still brings it the config within its
//! sync period, and no request fails meanwhile.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};

use crate::apply::{ApplyError, ApplyOptions, Progress};
use crate::{Cluster, KubeError};

/// The annotation apply sets on router pods: the digest of the config they should run.
pub const ROUTER_CONFIG_ANNOTATION: &str = "cohort.dev/router-config";

/// How long one `/config-digest` request through the API server may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// Failed asks in a row after which a pod counts as one that cannot be asked.
const ASKS: u32 = 3;

/// What asking one router pod for its config's digest gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// It runs the config with this digest.
    Runs(String),
    /// RBAC refuses the pod proxy: nobody can be asked.
    Forbidden(String),
    /// No usable answer (an older router, a pod going away, a timeout): why.
    Failed(String),
}

/// Where one router pod stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodReload {
    /// Runs the wanted config.
    Reloaded,
    /// Runs another config, or has not said yet.
    Pending {
        /// The digest it runs (empty before its first answer).
        runs: String,
        /// Asks in a row that gave no answer.
        failures: u32,
    },
    /// Cannot be asked: why.
    Unconfirmed(String),
}

/// The routers' reload, decided from their answers without I/O.
#[derive(Clone, Debug)]
pub struct Reload {
    wanted: String,
    pods: BTreeMap<String, PodReload>,
}

impl Reload {
    /// Waiting for `pods` to run the config with digest `wanted`.
    pub fn new(wanted: &str, pods: impl IntoIterator<Item = String>) -> Reload {
        Reload {
            wanted: wanted.to_string(),
            pods: pods
                .into_iter()
                .map(|p| {
                    (
                        p,
                        PodReload::Pending {
                            runs: String::new(),
                            failures: 0,
                        },
                    )
                })
                .collect(),
        }
    }

    /// The pods still to ask.
    pub fn pending(&self) -> Vec<String> {
        self.pods
            .iter()
            .filter(|(_, s)| matches!(s, PodReload::Pending { .. }))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Takes `pod`'s answer into account.
    pub fn observe(&mut self, pod: &str, answer: Answer) {
        let Some(state) = self.pods.get_mut(pod) else {
            return;
        };
        let PodReload::Pending { runs, failures } = state else {
            return;
        };
        *state = match answer {
            Answer::Runs(d) if d == self.wanted => PodReload::Reloaded,
            Answer::Runs(d) => PodReload::Pending { runs: d, failures: 0 },
            Answer::Forbidden(why) => PodReload::Unconfirmed(why),
            Answer::Failed(why) if *failures + 1 >= ASKS => PodReload::Unconfirmed(why),
            Answer::Failed(_) => PodReload::Pending {
                runs: std::mem::take(runs),
                failures: *failures + 1,
            },
        };
    }

    /// Whether no pod is left to ask.
    pub fn settled(&self) -> bool {
        self.pending().is_empty()
    }

    /// The pods that run the wanted config.
    pub fn reloaded(&self) -> usize {
        self.pods.values().filter(|s| **s == PodReload::Reloaded).count()
    }

    /// The pods that could not be asked, with why.
    pub fn unconfirmed(&self) -> Vec<(String, String)> {
        self.pods
            .iter()
            .filter_map(|(p, s)| match s {
                PodReload::Unconfirmed(why) => Some((p.clone(), why.clone())),
                _ => None,
            })
            .collect()
    }

    /// The pods still running another config, with the digest they run (empty: not known).
    pub fn stale(&self) -> Vec<(String, String)> {
        self.pods
            .iter()
            .filter_map(|(p, s)| match s {
                PodReload::Pending { runs, .. } => Some((p.clone(), runs.clone())),
                _ => None,
            })
            .collect()
    }
}

/// A ready router pod that is not going away, and its admin port.
fn ready_router(pod: &Pod) -> Option<(String, u16)> {
    if !crate::stats::ready_and_staying(pod) {
        return None;
    }
    let port = pod
        .spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some("admin"))
        .and_then(|p| u16::try_from(p.container_port).ok())?;
    Some((pod.metadata.name.clone()?, port))
}

impl Cluster {
    /// Makes the ready router pods of `service` take up the config with digest `digest` now
    /// and waits until each reports it, up to `options.timeout`.
    pub(crate) async fn reload_routers(
        &self,
        service: &str,
        digest: &str,
        options: &ApplyOptions,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<(), ApplyError> {
        let started = Instant::now();
        let pods = self
            .api::<Pod>()
            .list(&ListParams::default().labels(&format!("app={service},tier=router")))
            .await
            .map_err(|e| KubeError::from_kube(format!("list pods in namespace {}", self.namespace), e))?;
        let routers: BTreeMap<String, u16> = pods.items.iter().filter_map(ready_router).collect();
        if routers.is_empty() {
            return Ok(());
        }
        let mut reload = Reload::new(digest, routers.keys().cloned());
        let nudge = serde_json::json!({
            "metadata": {"annotations": {ROUTER_CONFIG_ANNOTATION: digest}}
        });
        // Without the nudge the kubelet still brings the config within its sync period: a
        // refused or failed annotation is said, not fatal.
        let mut not_nudged: Option<String> = None;
        for pod in routers.keys() {
            match self
                .api::<Pod>()
                .patch(pod, &PatchParams::default(), &Patch::Merge(&nudge))
                .await
            {
                Ok(_) => {}
                // Gone meanwhile: its replacement starts with the new config.
                Err(kube::Error::Api(s)) if s.code == 404 => reload.observe(pod, Answer::Runs(digest.into())),
                Err(e) => {
                    not_nudged.get_or_insert_with(|| {
                        format!(
                            "could not annotate pod {pod} to make the kubelet refresh its config at once \
                             (RBAC: patch pods): {}",
                            KubeError::from_kube(format!("annotate pod {pod}"), e)
                        )
                    });
                }
            }
        }
        if let Some(why) = not_nudged {
            progress(Progress::NotNudged { why });
        }
        while !reload.settled() && started.elapsed() < options.timeout {
            for pod in reload.pending() {
                let port = routers.get(&pod).copied().unwrap_or_default();
                let answer =
                    match tokio::time::timeout(ASK_TIMEOUT, self.pod_get(&pod, port, "/config-digest")).await
                    {
                        Ok(Ok(text)) if text.trim().starts_with("sha256:") => {
                            Answer::Runs(text.trim().to_string())
                        }
                        Ok(Ok(text)) => Answer::Failed(format!("it answered {:?}", text.trim())),
                        Ok(Err(KubeError::Api {
                            code: 403, message, ..
                        })) => Answer::Forbidden(message),
                        Ok(Err(e)) => Answer::Failed(e.to_string()),
                        Err(_) => Answer::Failed(format!("no answer within {}s", ASK_TIMEOUT.as_secs())),
                    };
                reload.observe(&pod, answer);
            }
            if !reload.settled() {
                tokio::time::sleep(options.poll).await;
            }
        }
        let unconfirmed = reload.unconfirmed();
        if !unconfirmed.is_empty() {
            progress(Progress::ReloadUnconfirmed { pods: unconfirmed });
        }
        let stale = reload.stale();
        if !stale.is_empty() {
            return Err(ApplyError::NotReloaded {
                service: service.to_string(),
                namespace: self.namespace.clone(),
                digest: digest.to_string(),
                stale,
                timeout: options.timeout,
            });
        }
        progress(Progress::Reloaded {
            routers: reload.reloaded(),
            after: started.elapsed(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{ASKS, Answer, Reload, ready_router};
    use serde_json::json;

    const NEW: &str = "sha256:2222";
    const OLD: &str = "sha256:1111";

    #[test]
    fn a_pod_is_waited_on_until_it_runs_the_new_config() {
        let mut r = Reload::new(NEW, ["a".to_string(), "b".to_string()]);
        r.observe("a", Answer::Runs(OLD.into()));
        r.observe("b", Answer::Runs(NEW.into()));
        assert!(!r.settled());
        assert_eq!(r.stale(), [("a".to_string(), OLD.to_string())]);
        r.observe("a", Answer::Runs(NEW.into()));
        assert!(r.settled());
        assert_eq!(r.reloaded(), 2);
        assert!(r.unconfirmed().is_empty() && r.stale().is_empty());
    }

    #[test]
    fn a_pod_that_cannot_be_asked_is_unconfirmed_after_some_tries_not_waited_on_forever() {
        let mut r = Reload::new(NEW, ["a".to_string()]);
        for _ in 1..ASKS {
            r.observe("a", Answer::Failed("503".into()));
            assert!(!r.settled());
        }
        r.observe("a", Answer::Failed("503".into()));
        assert!(r.settled());
        assert_eq!(r.unconfirmed(), [("a".to_string(), "503".to_string())]);
        assert_eq!(r.reloaded(), 0);
    }

    #[test]
    fn an_answer_between_failures_starts_the_count_again() {
        let mut r = Reload::new(NEW, ["a".to_string()]);
        for _ in 1..ASKS {
            r.observe("a", Answer::Failed("timeout".into()));
        }
        r.observe("a", Answer::Runs(OLD.into()));
        for _ in 1..ASKS {
            r.observe("a", Answer::Failed("timeout".into()));
        }
        assert!(!r.settled(), "{r:?}");
        assert_eq!(r.stale(), [("a".to_string(), OLD.to_string())]);
    }

    #[test]
    fn forbidden_is_unconfirmed_at_once() {
        let mut r = Reload::new(NEW, ["a".to_string()]);
        r.observe("a", Answer::Forbidden("cannot get pods/proxy".into()));
        assert!(r.settled());
        assert_eq!(r.unconfirmed().len(), 1);
    }

    #[test]
    fn only_ready_pods_that_stay_and_name_an_admin_port_are_asked() {
        let pod = |ready: &str, deleting: bool, port: Option<&str>| -> k8s_openapi::api::core::v1::Pod {
            let mut v = json!({
                "metadata": {"name": "shop-router-1"},
                "spec": {"containers": [{"name": "router", "ports": [
                    {"name": "http", "containerPort": 8080},
                    {"name": port.unwrap_or("metrics"), "containerPort": 9901}
                ]}]},
                "status": {"conditions": [{"type": "Ready", "status": ready}]}
            });
            if deleting {
                v["metadata"]["deletionTimestamp"] = json!("2026-12-02T10:00:00Z");
            }
            serde_json::from_value(v).expect("a pod")
        };
        assert_eq!(
            ready_router(&pod("True", false, Some("admin"))),
            Some(("shop-router-1".to_string(), 9901))
        );
        assert_eq!(ready_router(&pod("False", false, Some("admin"))), None);
        assert_eq!(ready_router(&pod("True", true, Some("admin"))), None);
        assert_eq!(ready_router(&pod("True", false, None)), None);
    }
}

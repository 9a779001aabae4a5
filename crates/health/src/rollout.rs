//! Whether a Deployment's rollout is done, as `kubectl rollout status` judges it, and why its
//! pods are not ready: what `cohort apply` waits on and what it says when a wait fails.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};

/// Where a Deployment's rollout stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// Every replica updated, ready and available, and the controller has seen the newest spec.
    Done,
    /// Still going: what it is waiting for (`2 of 4 updated replicas available`).
    Waiting(String),
    /// The controller gave up (`Progressing=False`, `ProgressDeadlineExceeded`): its message.
    Failed(String),
}

fn count(n: Option<i32>) -> i32 {
    n.unwrap_or(0).max(0)
}

/// The rollout state of `d`: the controller must have observed its current generation, then
/// every desired replica must be updated, old replicas gone, and the updated ones available.
pub fn rollout(d: &Deployment) -> Rollout {
    let generation = d.metadata.generation.unwrap_or(0);
    let Some(status) = &d.status else {
        return Rollout::Waiting("waiting for the controller to see it".into());
    };
    if status.observed_generation.unwrap_or(0) < generation {
        return Rollout::Waiting(format!(
            "waiting for the controller to see generation {generation}"
        ));
    }
    // Only a passed progress deadline is final (as for kubectl rollout status); other
    // `Progressing=False` reasons, such as a ReplicaSet the quota refused, may still clear.
    if let Some(c) = status.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    }) {
        return Rollout::Failed(match c.message.as_deref() {
            Some(m) if !m.is_empty() => format!("ProgressDeadlineExceeded: {m}"),
            _ => "ProgressDeadlineExceeded".to_string(),
        });
    }
    let desired = d.spec.as_ref().map_or(1, |s| s.replicas.unwrap_or(1)).max(0);
    let updated = count(status.updated_replicas);
    let total = count(status.replicas);
    let available = count(status.available_replicas);
    if updated < desired {
        return Rollout::Waiting(format!("{updated} of {desired} replicas updated"));
    }
    if total > updated {
        let old = total - updated;
        return Rollout::Waiting(format!(
            "{old} old replica{} pending termination",
            if old == 1 { "" } else { "s" }
        ));
    }
    if available < updated {
        return Rollout::Waiting(format!("{available} of {updated} updated replicas available"));
    }
    Rollout::Done
}

/// One line of progress for `d`: `2/4 ready, 4/4 updated`.
pub fn progress(d: &Deployment) -> String {
    let desired = d.spec.as_ref().map_or(1, |s| s.replicas.unwrap_or(1)).max(0);
    let status = d.status.clone().unwrap_or_default();
    format!(
        "{}/{desired} ready, {}/{desired} updated",
        count(status.ready_replicas),
        count(status.updated_replicas)
    )
}

/// Why the pods `d` selects are not ready, most telling first, each with how many pods it
/// holds back: a waiting container's reason and message (`ImagePullBackOff: Back-off pulling
/// image "shop/app:9"`), a failed pod condition (`Unschedulable: 0/3 nodes are available...`),
/// a pod never scheduled, else its phase; then the Warning events about those pods, the
/// Deployment or its ReplicaSets (the scheduler's and kubelet's own words).
pub fn not_ready_reasons(d: &Deployment, pods: &[Pod], events: &[Event]) -> Vec<String> {
    let selector: BTreeMap<String, String> = d
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    let selected: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.as_ref();
            !selector.is_empty()
                && selector
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .collect();
    let mut out = pod_reasons(selected.iter().copied());

    let name = d.metadata.name.as_deref().unwrap_or_default();
    let pod_names: BTreeSet<&str> = selected
        .iter()
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    let mut seen = BTreeSet::new();
    for e in events {
        if e.type_.as_deref() != Some("Warning") {
            continue;
        }
        let about = e.involved_object.name.as_deref().unwrap_or_default();
        let relevant = match e.involved_object.kind.as_deref() {
            Some("Pod") => pod_names.contains(about),
            Some("Deployment") => about == name,
            // A ReplicaSet of the Deployment is named `<deployment>-<pod-template-hash>`.
            // The hash has no `-`, so `app-v1-15-0-rc-1-<hash>` is not one of `app-v1-15-0`'s.
            Some("ReplicaSet") => about
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|hash| !hash.is_empty() && !hash.contains('-')),
            _ => false,
        };
        if !relevant {
            continue;
        }
        let line = format!(
            "{}: {}",
            e.reason.as_deref().unwrap_or("Warning"),
            e.message.as_deref().unwrap_or("").trim()
        );
        // Many pods repeat the same warning: once is enough.
        if seen.insert(line.clone()) {
            out.push(line);
        }
    }
    out
}

/// Why `pods` are not ready, one line per reason with how many pods it holds back
/// (`2 pods Pending: not scheduled to a node`); pods being deleted are left out.
pub(crate) fn pod_reasons<'p>(pods: impl IntoIterator<Item = &'p Pod>) -> Vec<String> {
    let mut reasons: BTreeMap<String, u32> = BTreeMap::new();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Some(reason) = pod_not_ready(pod) {
            *reasons.entry(reason).or_default() += 1;
        }
    }
    reasons
        .into_iter()
        .map(|(reason, n)| format!("{n} pod{} {reason}", if n == 1 { "" } else { "s" }))
        .collect()
}

/// Why one pod is not ready, or `None` when it is.
fn pod_not_ready(pod: &Pod) -> Option<String> {
    let Some(status) = &pod.status else {
        return Some("not started".into());
    };
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if ready {
        return None;
    }
    let with_message = |reason: &str, message: Option<&str>| match message {
        Some(m) if !m.trim().is_empty() => format!("{reason}: {}", m.trim()),
        _ => reason.to_string(),
    };
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for c in containers {
        let Some(state) = &c.state else { continue };
        if let Some(w) = &state.waiting
            && let Some(reason) = w.reason.as_deref()
            // Every container waits in ContainerCreating for a moment; not a reason.
            && reason != "ContainerCreating"
        {
            return Some(with_message(reason, w.message.as_deref()));
        }
        if let Some(t) = &state.terminated {
            let reason = t.reason.as_deref().unwrap_or("Terminated");
            return Some(format!("{reason} (exit code {})", t.exit_code));
        }
    }
    if let Some(c) = status.conditions.iter().flatten().find(|c| {
        c.status == "False" && c.reason.is_some() && c.type_ != "Ready" && c.type_ != "ContainersReady"
    }) {
        return Some(with_message(
            c.reason.as_deref().unwrap_or_default(),
            c.message.as_deref(),
        ));
    }
    let scheduled = pod.spec.as_ref().is_some_and(|s| s.node_name.is_some());
    let phase = status.phase.as_deref().unwrap_or("Pending");
    Some(match (phase, scheduled) {
        ("Pending", false) => "Pending: not scheduled to a node".into(),
        ("Running", _) => "Running but not Ready (readiness probe failing)".into(),
        (phase, _) => phase.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::{Rollout, not_ready_reasons, progress, rollout};
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Event, Pod};

    fn items<T: serde::de::DeserializeOwned>(file: &str) -> Vec<T> {
        let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let list: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_value(list["items"].clone()).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn deployment(name: &str) -> Deployment {
        items::<Deployment>("seed-degraded.deployments.json")
            .into_iter()
            .find(|d| d.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no {name}"))
    }

    #[test]
    fn a_rollout_is_done_only_when_every_replica_is_updated_and_available() {
        assert_eq!(
            rollout(&deployment("account-service-production-v1.15.0")),
            Rollout::Done
        );
        assert_eq!(
            rollout(&deployment("account-service-canary-v1.17.0")),
            Rollout::Waiting("1 of 4 updated replicas available".into())
        );
        assert_eq!(
            progress(&deployment("account-service-canary-v1.17.0")),
            "1/4 ready, 4/4 updated"
        );
    }

    #[test]
    fn a_spec_the_controller_has_not_seen_is_not_done_whatever_its_status_says() {
        let mut d = deployment("account-service-production-v1.15.0");
        d.metadata.generation = Some(2);
        assert_eq!(
            rollout(&d),
            Rollout::Waiting("waiting for the controller to see generation 2".into())
        );
    }

    #[test]
    fn old_replicas_still_running_hold_the_rollout() {
        let mut d = deployment("account-service-production-v1.15.0");
        if let Some(s) = d.status.as_mut() {
            s.replicas = Some(12);
        }
        assert_eq!(
            rollout(&d),
            Rollout::Waiting("2 old replicas pending termination".into())
        );
    }

    #[test]
    fn a_rollout_past_its_deadline_has_failed_with_the_controllers_reason() {
        let Rollout::Failed(why) = rollout(&deployment("account-service-internal-v1.19.0")) else {
            panic!("not failed");
        };
        assert!(why.starts_with("ProgressDeadlineExceeded"), "{why}");

        // Another reason for Progressing=False may clear (quota freed): still waiting.
        let mut quota = deployment("account-service-internal-v1.19.0");
        for c in quota
            .status
            .iter_mut()
            .flat_map(|s| s.conditions.iter_mut().flatten())
        {
            if c.type_ == "Progressing" {
                c.reason = Some("ReplicaSetCreateError".into());
            }
        }
        assert!(
            matches!(rollout(&quota), Rollout::Waiting(_)),
            "{:?}",
            rollout(&quota)
        );
    }

    #[test]
    fn pending_pods_that_no_node_took_are_named_as_such() {
        let pods = items::<Pod>("seed-degraded.pods.json");
        let reasons = not_ready_reasons(&deployment("account-service-internal-v1.19.0"), &pods, &[]);
        assert_eq!(reasons, ["2 pods Pending: not scheduled to a node"]);
        // Ready pods give no reason.
        assert!(not_ready_reasons(&deployment("account-service-production-v1.15.0"), &pods, &[]).is_empty());
    }

    #[test]
    fn image_pull_failures_and_scheduler_warnings_are_reported_in_their_own_words() {
        let d = deployment("account-service-internal-v1.19.0");
        let mut pods: Vec<Pod> = items::<Pod>("seed-degraded.pods.json")
            .into_iter()
            .filter(|p| p.metadata.name.as_deref().is_some_and(|n| n.contains("v1.19.0")))
            .collect();
        let pulled: serde_json::Value = serde_json::json!({
            "phase": "Pending",
            "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
            "containerStatuses": [{
                "name": "app", "ready": false, "restartCount": 0, "image": "shop/account:1.19.0",
                "imageID": "",
                "state": {"waiting": {"reason": "ImagePullBackOff",
                                      "message": "Back-off pulling image \"shop/account:1.19.0\""}}
            }]
        });
        pods[0].status = Some(serde_json::from_value(pulled).expect("pod status"));
        let unschedulable: serde_json::Value = serde_json::json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": "0/3 nodes are available: 3 Insufficient cpu."}]
        });
        pods[1].status = Some(serde_json::from_value(unschedulable).expect("pod status"));
        let pod_name = pods[1].metadata.name.clone().unwrap_or_default();
        let event = |kind: &str, name: &str, message: &str| -> Event {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("{name}.1"), "namespace": "shop"},
                "involvedObject": {"kind": kind, "name": name, "namespace": "shop"},
                "type": "Warning", "reason": "FailedScheduling", "message": message
            }))
            .expect("event")
        };
        let events = vec![
            event("Pod", &pod_name, "0/3 nodes are available: 3 Insufficient cpu."),
            event("Pod", &pod_name, "0/3 nodes are available: 3 Insufficient cpu."),
            event("Pod", "someone-elses-pod", "not ours"),
            event(
                "ReplicaSet",
                "account-service-internal-v1.19.0-rc-1-5d8f7c9b4",
                "a release candidate's, not ours",
            ),
            event(
                "ReplicaSet",
                "account-service-internal-v1.19.0-75ff9d8455",
                "exceeded quota: compute",
            ),
        ];
        let reasons = not_ready_reasons(&d, &pods, &events);
        assert_eq!(
            reasons,
            [
                "1 pod ImagePullBackOff: Back-off pulling image \"shop/account:1.19.0\"",
                "1 pod Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.",
                "FailedScheduling: 0/3 nodes are available: 3 Insufficient cpu.",
                "FailedScheduling: exceeded quota: compute",
            ]
        );
    }
}

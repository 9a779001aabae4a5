//! The control API between a release repo and the clusters that pull from it: the desired
//! state of each cluster (rendered objects at a revision), agents' reports, the fleet view,
//! and the checks an agent makes before it applies anything it received.
#![forbid(unsafe_code)]

pub mod conn;
pub mod counts;
pub mod fleet;
pub mod server;
pub mod tokens;
pub mod wire;

use cohort_render::{LABEL_MANAGED_BY, LABEL_PART_OF, MANAGER, Rendered};
use cohort_spec::Repo;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use wire::{
    Counted, DesiredService, DesiredState, Fleet, FleetCluster, FleetCounts, REPORT_WANTED, Report,
    ReportTaken, ServiceHealth, ServiceReport, ServiceState, SilentCluster,
};

pub use cohort_render::SERVICE_KINDS;

/// The desired state of `cluster` at `revision`: every service of the repo (or only those
/// in `only`), rendered exactly as `cohort render` and `cohort apply` render them.
pub fn desired_state(
    repo: &Repo,
    revision: &str,
    cluster: &str,
    only: Option<&[String]>,
) -> Result<DesiredState, cohort_render::RenderError> {
    let mut services = vec![];
    for svc in &repo.services {
        let name = svc.spec.name.as_str();
        if only.is_some_and(|only| !only.iter().any(|o| o == name)) {
            continue;
        }
        let objects = cohort_render::render_service(&repo.pipeline, svc)?;
        services.push(DesiredService {
            name: name.to_string(),
            objects: objects.into_iter().map(|o| o.value).collect(),
        });
    }
    Ok(DesiredState {
        cluster: cluster.to_string(),
        revision: revision.to_string(),
        namespace: repo.pipeline.namespace.clone(),
        stages: repo.pipeline.stages.iter().map(ToString::to_string).collect(),
        services,
        problems: vec![],
    })
}

/// The desired state of `cluster` from the release repo's files at `revision`: validated as
/// `cohort validate` does, then rendered; an invalid revision carries its problems instead of
/// objects.
pub fn desired_from_files(
    files: &cohort_spec::repo::RepoFiles,
    revision: &str,
    cluster: &str,
    only: Option<&[String]>,
) -> DesiredState {
    let (repo, diags) = cohort_spec::repo::validate(files);
    let Some(repo) = repo else {
        let errors = diags
            .iter()
            .filter(|d| d.severity == cohort_spec::diag::Severity::Error)
            .map(ToString::to_string)
            .collect();
        return invalid_state(cluster, revision, errors);
    };
    desired_state(&repo, revision, cluster, only)
        .unwrap_or_else(|e| invalid_state(cluster, revision, vec![e.to_string()]))
}

/// A revision that cannot be applied, and why.
pub fn invalid_state(cluster: &str, revision: &str, problems: Vec<String>) -> DesiredState {
    DesiredState {
        cluster: cluster.to_string(),
        revision: revision.to_string(),
        namespace: String::new(),
        stages: vec![],
        services: vec![],
        problems,
    }
}

/// A fingerprint of a service's objects: an agent applies a service again only when it
/// changes, so a commit that touches one service leaves the others alone.
pub fn digest(objects: &[Value]) -> String {
    let mut hash = Sha256::new();
    for o in objects {
        // serde_json's maps are ordered by key, so equal objects serialize equally.
        hash.update(o.to_string().as_bytes());
        hash.update(b"\n");
    }
    hex(&hash.finalize())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why an agent refuses a desired state it received.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDesired {
    /// The revision itself was found invalid where it was rendered.
    #[error("revision {revision} is not valid: {}", problems.join("; "))]
    Revision {
        /// The revision.
        revision: String,
        /// Why.
        problems: Vec<String>,
    },
    /// An object is not one cohort renders for the service.
    #[error("revision {revision}, service {service}, object #{index}: {why}")]
    Object {
        /// The revision.
        revision: String,
        /// The service.
        service: String,
        /// Its place in the service's list, from 1.
        index: usize,
        /// What is wrong with it.
        why: String,
    },
    /// The state is for another cluster or namespace than the agent's.
    #[error("revision {revision} is for {what}")]
    NotOurs {
        /// The revision.
        revision: String,
        /// `cluster eu-west, not us-east`.
        what: String,
    },
}

/// A service's received objects as render made them, checked: only the kinds cohort renders,
/// each named, in the pipeline's namespace and labelled as cohort's and the service's. An
/// agent applies nothing from a state where any of this fails.
pub fn checked_objects(
    state: &DesiredState,
    service: &DesiredService,
) -> Result<Vec<Rendered>, InvalidDesired> {
    if !state.problems.is_empty() {
        return Err(InvalidDesired::Revision {
            revision: state.revision.clone(),
            problems: state.problems.clone(),
        });
    }
    let bad = |index: usize, why: String| InvalidDesired::Object {
        revision: state.revision.clone(),
        service: service.name.clone(),
        index: index + 1,
        why,
    };
    let mut out = vec![];
    for (i, value) in service.objects.iter().enumerate() {
        let kind_text = value["kind"].as_str().unwrap_or_default();
        let Some(kind) = SERVICE_KINDS.iter().find(|k| **k == kind_text) else {
            return Err(bad(i, format!("kind {kind_text:?} is not one cohort renders")));
        };
        let meta = &value["metadata"];
        let Some(name) = meta["name"].as_str().filter(|n| !n.is_empty()) else {
            return Err(bad(i, "it has no metadata.name".into()));
        };
        if meta["namespace"].as_str() != Some(state.namespace.as_str()) {
            return Err(bad(
                i,
                format!(
                    "{kind} {name} is in namespace {:?}, not the pipeline's {:?}",
                    meta["namespace"].as_str().unwrap_or_default(),
                    state.namespace
                ),
            ));
        }
        let labels = &meta["labels"];
        if labels[LABEL_MANAGED_BY].as_str() != Some(MANAGER)
            || labels[LABEL_PART_OF].as_str() != Some(service.name.as_str())
        {
            return Err(bad(
                i,
                format!(
                    "{kind} {name} is not labelled {LABEL_MANAGED_BY}={MANAGER}, {LABEL_PART_OF}={}",
                    service.name
                ),
            ));
        }
        if matches!(*kind, "ServiceAccount" | "Role" | "RoleBinding") {
            // Access is granted only as cohort grants it: a router's own identity, exactly.
            let expected = cohort_render::router_access(&state.namespace, &service.name)
                .map_err(|e| bad(i, e.to_string()))?;
            if !expected.iter().any(|o| o.kind == *kind && o.value == *value) {
                return Err(bad(
                    i,
                    format!(
                        "{kind} {name} is not the router's {kind} cohort renders for {}: an agent grants no other access",
                        service.name
                    ),
                ));
            }
        }
        out.push(Rendered {
            kind,
            name: name.to_string(),
            value: value.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn seed() -> Repo {
        let (repo, diags) = cohort_spec::repo::validate(&cohort_spec::scaffold::repo_files());
        assert!(diags.is_empty(), "{diags:?}");
        repo.expect("valid")
    }

    #[test]
    fn the_desired_state_is_what_render_makes_and_passes_the_agents_checks() {
        let repo = seed();
        let state = desired_state(&repo, "abc", "eu-west", None).expect("renders");
        assert_eq!(state.namespace, repo.pipeline.namespace);
        let svc = &state.services[0];
        let rendered = cohort_render::render_service(&repo.pipeline, &repo.services[0]).expect("renders");
        let checked = checked_objects(&state, svc).expect("valid");
        assert_eq!(checked, rendered);
        assert_eq!(digest(&svc.objects), digest(&svc.objects.clone()));
        let none = desired_state(&repo, "abc", "eu-west", Some(&["other".to_string()])).expect("renders");
        assert!(none.services.is_empty());
    }

    #[test]
    fn an_agent_refuses_objects_cohort_would_not_render() {
        let repo = seed();
        let state = desired_state(&repo, "abc", "eu-west", None).expect("renders");
        let mut svc = state.services[0].clone();
        let ns = state.namespace.clone();
        let cases = [
            (
                json!({"kind": "ClusterRoleBinding", "metadata": {"name": "x"}}),
                "is not one cohort renders",
            ),
            (
                json!({"kind": "Service", "metadata": {"namespace": ns}}),
                "no metadata.name",
            ),
            (
                json!({"kind": "Service", "metadata": {"name": "x", "namespace": "kube-system"}}),
                "kube-system",
            ),
            (
                json!({"kind": "Service", "metadata": {"name": "x", "namespace": ns}}),
                "is not labelled",
            ),
        ];
        for (object, why) in cases {
            svc.objects.push(object);
            let err = checked_objects(&state, &svc).expect_err("refused");
            let text = err.to_string();
            assert!(text.contains(why), "{text}");
            assert!(text.contains(&format!("object #{}", svc.objects.len())), "{text}");
            svc.objects.pop();
        }
        // A router's access objects pass only exactly as rendered: a control API cannot make an
        // agent grant more, or to someone else.
        let name = svc.name.clone();
        let position = |kind: &str| {
            svc.objects
                .iter()
                .position(|o| o["kind"] == kind)
                .unwrap_or_else(|| panic!("the rendered {kind}"))
        };
        let (role, binding) = (position("Role"), position("RoleBinding"));
        let mut wider = svc.clone();
        wider.objects[role]["rules"][0]["resources"] = json!(["secrets"]);
        let mut elsewhere = svc.clone();
        wider.objects[role]["metadata"]["labels"]["app.kubernetes.io/part-of"] = json!(name);
        elsewhere.objects[binding]["subjects"][0]["name"] = json!("default");
        for (tampered, at) in [(wider, role), (elsewhere, binding)] {
            let text = checked_objects(&state, &tampered)
                .expect_err("refused")
                .to_string();
            assert!(text.contains("an agent grants no other access"), "{text}");
            assert!(text.contains(&format!("object #{}", at + 1)), "{text}");
        }
        let invalid = invalid_state("eu-west", "def", vec!["cohort.yaml:3:1: bad".into()]);
        let err = checked_objects(&invalid, &svc).expect_err("invalid revision");
        assert!(matches!(err, InvalidDesired::Revision { .. }));
        assert!(
            err.to_string()
                .contains("revision def is not valid: cohort.yaml:3:1: bad")
        );
    }
}

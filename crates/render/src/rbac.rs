//! The RBAC objects cohort needs, and nothing broader: a read-only ClusterRole for `cohort
//! status`, and a Role in the pipeline's namespace for `cohort apply`.

use std::collections::BTreeMap;

use cohort_core::Pipeline;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::objects::{LABEL_MANAGED_BY, MANAGER, RenderError, Rendered, rendered};

/// The ClusterRole `cohort status` needs: it only reads.
pub const STATUS_ROLE: &str = "cohort-status";
/// The Role `cohort apply` needs in the pipeline's namespace.
pub const APPLY_ROLE: &str = "cohort-apply";

const READ: &[&str] = &["get", "list", "watch"];
/// Server-side apply is a PATCH; pruning a forgotten version is a DELETE.
const MANAGE: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    }
}

/// What `status` reads: Services, Pods, Deployments, ReplicaSets and EndpointSlices.
fn read_rules() -> Vec<PolicyRule> {
    vec![
        rule("", &["services", "pods"], READ),
        rule("apps", &["deployments", "replicasets"], READ),
        rule("discovery.k8s.io", &["endpointslices"], READ),
    ]
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(String::from),
        labels: Some(BTreeMap::from([(
            LABEL_MANAGED_BY.to_string(),
            MANAGER.to_string(),
        )])),
        ..ObjectMeta::default()
    }
}

/// What `apply` does in the namespace: manage exactly the kinds `render` makes, read what it
/// waits on (and the events that say why a rollout is stuck), and nothing else.
fn manage_rules() -> Vec<PolicyRule> {
    vec![
        rule("", &["services", "configmaps"], MANAGE),
        rule("apps", &["deployments"], MANAGE),
        rule("policy", &["poddisruptionbudgets"], MANAGE),
        // Each router's ServiceAccount, and its Role to watch EndpointSlices with the binding
        // (the API server lets a Role be made only by who holds what it grants: READ below).
        rule("", &["serviceaccounts"], MANAGE),
        rule("rbac.authorization.k8s.io", &["roles", "rolebindings"], MANAGE),
        rule("", &["events"], READ),
        // A changed router config is waited for: each router pod is annotated, which makes the
        // kubelet refresh its ConfigMap volume at once, and asked through the API server which
        // config it runs.
        rule("", &["pods"], &["get", "list", "watch", "patch"]),
        rule("", &["pods/proxy"], &["get"]),
        rule("apps", &["replicasets"], READ),
        rule("discovery.k8s.io", &["endpointslices"], READ),
        // One apply of a service at a time: the apply lease.
        rule(
            "coordination.k8s.io",
            &["leases"],
            &["get", "create", "update", "delete"],
        ),
    ]
}

fn sorted(mut rules: Vec<PolicyRule>) -> Vec<PolicyRule> {
    rules.sort_by(|a, b| (&a.api_groups, &a.resources).cmp(&(&b.api_groups, &b.resources)));
    rules
}

/// What a judgement's Job checks need: to start a check's Job and read how it went, and to
/// find its pods and read their logs' tail for the evidence. Neither delete (finished Jobs
/// expire by their TTL) nor update; `get` on Jobs cannot be limited to names, which are made
/// per run.
fn job_check_rules() -> Vec<PolicyRule> {
    vec![
        rule("batch", &["jobs"], &["get", "create"]),
        rule("", &["pods"], &["list"]),
        rule("", &["pods/log"], &["get"]),
    ]
}

/// `rules` with those on the same group and resources merged (verbs in order, once each), so
/// a Role lists each resource once.
fn merged(rules: Vec<PolicyRule>) -> Vec<PolicyRule> {
    let mut out: Vec<PolicyRule> = vec![];
    for r in rules {
        let same = out.iter_mut().find(|o| {
            o.api_groups == r.api_groups && o.resources == r.resources && o.resource_names == r.resource_names
        });
        match same {
            Some(o) => {
                for v in r.verbs {
                    if !o.verbs.contains(&v) {
                        o.verbs.push(v);
                    }
                }
            }
            None => out.push(r),
        }
    }
    out
}

/// The Role `cohort apply` (and `analyze` and `promote`, through the API server) needs.
fn apply_rules() -> Vec<PolicyRule> {
    // The canary judgement, too, reads the routers' counts through the pod proxy, and runs
    // the checks' Jobs.
    let mut rules = manage_rules();
    rules.extend(job_check_rules());
    sorted(merged(rules))
}

/// The agent's Role: what apply manages (its state ConfigMap among it) and what `status`
/// reads for its reports, in the namespace only.
pub(crate) fn agent_rules() -> Vec<PolicyRule> {
    sorted(manage_rules())
}

/// The autopilot's Role: reading the routers' counts (their pods, through the API server's
/// pod proxy) and whether Deployments have rolled out, running the judgements' Job checks,
/// and holding its Lease `lease`, which it may create but otherwise touch only by that name.
/// It changes nothing else: its decisions go to git.
pub(crate) fn autopilot_rules(lease: &str) -> Vec<PolicyRule> {
    let mut rules = vec![
        rule("", &["pods"], &["list"]),
        rule("", &["pods/proxy"], &["get"]),
        rule("apps", &["deployments"], &["list"]),
        // Creating cannot be limited to a name (the name is in the body, not the URL).
        rule("coordination.k8s.io", &["leases"], &["create"]),
    ];
    rules.extend(job_check_rules());
    let mut rules = merged(rules);
    rules.push(PolicyRule {
        resource_names: Some(vec![lease.to_string()]),
        ..rule("coordination.k8s.io", &["leases"], &["get", "update", "delete"])
    });
    rules
}

/// The ClusterRole for `status` and the Role for `apply` (bind them to whoever runs cohort).
pub fn rbac(pipeline: &Pipeline) -> Result<Vec<Rendered>, RenderError> {
    let status = ClusterRole {
        metadata: meta(STATUS_ROLE, None),
        rules: Some(read_rules()),
        ..ClusterRole::default()
    };
    let apply = Role {
        metadata: meta(APPLY_ROLE, Some(&pipeline.namespace)),
        rules: Some(apply_rules()),
    };
    Ok(vec![
        rendered("ClusterRole", STATUS_ROLE, &status)?,
        rendered("Role", APPLY_ROLE, &apply)?,
    ])
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn verbs_on(obj: &Value, group: &str, resource: &str) -> Vec<String> {
        obj["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| {
                r["apiGroups"]
                    .as_array()
                    .is_some_and(|g| g.iter().any(|g| g == group))
                    && r["resources"]
                        .as_array()
                        .is_some_and(|rs| rs.iter().any(|x| x == resource))
            })
            .flat_map(|r| r["verbs"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_str().map(String::from))
            .collect()
    }

    #[test]
    fn status_only_reads_and_apply_only_manages_what_render_makes() {
        let (repo, diags) = cohort_spec::repo::validate(&cohort_spec::scaffold::repo_files());
        assert!(diags.is_empty(), "{diags:?}");
        let pipeline = repo.expect("the scaffold is valid").pipeline;
        let objects = super::rbac(&pipeline).expect("renders");
        let (status, apply) = (&objects[0].value, &objects[1].value);
        assert_eq!(status["kind"], "ClusterRole");
        assert_eq!(apply["kind"], "Role");
        assert_eq!(apply["metadata"]["namespace"], pipeline.namespace.as_str());
        for rule in status["rules"].as_array().expect("rules") {
            let verbs: Vec<&str> = rule["verbs"]
                .as_array()
                .expect("verbs")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(verbs, ["get", "list", "watch"], "status may only read: {rule}");
        }
        assert_eq!(verbs_on(status, "apps", "deployments"), ["get", "list", "watch"]);
        assert_eq!(
            verbs_on(status, "discovery.k8s.io", "endpointslices"),
            ["get", "list", "watch"]
        );
        assert!(verbs_on(apply, "apps", "deployments").contains(&"patch".to_string()));
        assert!(verbs_on(apply, "apps", "deployments").contains(&"delete".to_string()));
        assert_eq!(
            verbs_on(apply, "coordination.k8s.io", "leases"),
            ["get", "create", "update", "delete"]
        );
        // Pods are read, and annotated to make the kubelet refresh a router's config at once;
        // never created or deleted (that is the Deployments' business).
        assert_eq!(verbs_on(apply, "", "pods"), ["get", "list", "watch", "patch"]);
        assert_eq!(verbs_on(apply, "", "pods/proxy"), ["get"]);
        // A judgement's Job checks: the Jobs started and read, their pods' logs read; never
        // a Job changed or deleted.
        assert_eq!(verbs_on(apply, "batch", "jobs"), ["get", "create"]);
        assert_eq!(verbs_on(apply, "", "pods/log"), ["get"]);
        // Each resource once.
        let rules = apply["rules"].as_array().expect("rules");
        let keys: std::collections::BTreeSet<String> = rules
            .iter()
            .map(|r| format!("{}{}", r["apiGroups"], r["resources"]))
            .collect();
        assert_eq!(keys.len(), rules.len(), "{rules:?}");
        // Nothing broader: no wildcards, no secrets, no cluster-wide writes.
        let text = format!("{status}{apply}");
        assert!(!text.contains('*') && !text.contains("secrets"), "{text}");
    }
}

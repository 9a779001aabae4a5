//! Whether an object in the cluster differs from what the release repo renders, decided
//! without I/O: both sides are read as the API server returns them (the live object, and the
//! result of a server-side dry-run apply), with what only the server writes left out.

use serde_json::Value;

/// Metadata only the API server writes; it differs between any two reads.
const SERVER_METADATA: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "uid",
    "selfLink",
];
/// Annotations controllers write on objects cohort applies, and the fingerprint cohort adds
/// (`crate::applied`), which says how an object was applied, not what it is.
const SERVER_ANNOTATIONS: &[&str] = &[
    "deployment.kubernetes.io/revision",
    crate::applied::APPLIED_ANNOTATION,
];

/// `object` without its status and the metadata only the server writes.
pub fn normalize(object: &Value) -> Value {
    let mut v = object.clone();
    if let Value::Object(top) = &mut v {
        top.remove("status");
        if let Some(Value::Object(meta)) = top.get_mut("metadata") {
            for key in SERVER_METADATA {
                meta.remove(*key);
            }
            if let Some(Value::Object(annotations)) = meta.get_mut("annotations") {
                for key in SERVER_ANNOTATIONS {
                    annotations.remove(*key);
                }
                if annotations.is_empty() {
                    meta.remove("annotations");
                }
            }
        }
    }
    v
}

/// What applying would do to one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// It does not exist yet.
    Create,
    /// It exists and would change: a unified diff of its YAML, live (`-`) to desired (`+`).
    Update(String),
    /// It exists as the repo says.
    Unchanged,
}

impl Change {
    /// `created`, `configured`, `unchanged`: kubectl's words.
    pub fn verb(&self) -> &'static str {
        match self {
            Change::Create => "created",
            Change::Update(_) => "configured",
            Change::Unchanged => "unchanged",
        }
    }
}

/// Compares the live object (`None`: absent) with the desired one as the server would store it.
pub fn change(live: Option<&Value>, desired: &Value) -> Change {
    let Some(live) = live else {
        return Change::Create;
    };
    let (live, desired) = (normalize(live), normalize(desired));
    if live == desired {
        return Change::Unchanged;
    }
    Change::Update(unified_diff(&yaml(&live), &yaml(&desired)))
}

fn yaml(v: &Value) -> String {
    cohort_yaml::to_yaml(v)
}

/// A unified diff with three lines of context; `---`/`+++` headers are left to the caller.
pub fn unified_diff(old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::{Change, change, normalize};
    use serde_json::json;

    fn live_deployment() -> serde_json::Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "account-service-production-v1-15-0", "namespace": "shop",
                "uid": "4f1c", "resourceVersion": "812", "generation": 3,
                "creationTimestamp": "2026-11-20T10:00:00Z",
                "annotations": {"deployment.kubernetes.io/revision": "1"},
                "managedFields": [{"manager": "cohort", "operation": "Apply"}]
            },
            "spec": {"replicas": 10, "template": {"spec": {"containers": [{"name": "app", "image": "shop/account:1.15.0"}]}}},
            "status": {"replicas": 10, "readyReplicas": 10}
        })
    }

    #[test]
    fn what_only_the_server_writes_is_no_difference() {
        let live = live_deployment();
        let mut dry_run = live.clone();
        dry_run["metadata"]["resourceVersion"] = json!("813");
        dry_run["metadata"]["managedFields"] = json!([{"manager": "cohort", "time": "later"}]);
        dry_run["status"] = json!({});
        assert_eq!(change(Some(&live), &dry_run), Change::Unchanged);
        assert!(normalize(&live)["metadata"].get("annotations").is_none());
        assert_eq!(change(None, &dry_run), Change::Create);
    }

    #[test]
    fn an_object_an_older_cohort_applied_differs_only_by_the_fingerprint_which_is_no_difference() {
        // `cohort diff` after an upgrade: the dry run adds the fingerprint, nothing else.
        let live = live_deployment();
        let mut dry_run = live.clone();
        dry_run["metadata"]["annotations"][crate::applied::APPLIED_ANNOTATION] = json!("0123abcd");
        assert_eq!(change(Some(&live), &dry_run), Change::Unchanged);
    }

    #[test]
    fn a_changed_field_shows_as_a_diff_of_the_yaml() {
        let live = live_deployment();
        let mut desired = live.clone();
        desired["spec"]["replicas"] = json!(4);
        let Change::Update(diff) = change(Some(&live), &desired) else {
            panic!("no change seen");
        };
        assert!(diff.contains("-  replicas: 10\n"), "{diff}");
        assert!(diff.contains("+  replicas: 4\n"), "{diff}");
        assert!(diff.starts_with("@@"), "{diff}");
        assert!(!diff.contains("resourceVersion"), "{diff}");
    }
}

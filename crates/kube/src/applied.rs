//! Whether an object already is as `cohort apply` would leave it, decided without I/O, so that
//! a fleet where nothing changed costs a few LISTs instead of a server-side apply (and a GET)
//! per object.
//!
//! Every object cohort applies carries, in the annotation `cohort.dev/applied`, a fingerprint
//! of the object as rendered. An object is left alone only when the live one carries the
//! fingerprint of what is rendered now (so nothing was added to or removed from the rendered
//! object since cohort last applied it) and still holds every value the rendered object sets
//! (so nobody changed one since, e.g. `kubectl scale`). Anything else is applied as before;
//! a value the server writes differently from how render spells it only costs the apply.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The annotation holding the fingerprint of the object as last applied.
pub const APPLIED_ANNOTATION: &str = "cohort.dev/applied";

/// The fingerprint of a rendered object: serde_json's maps are ordered by key, so equal
/// objects serialize equally.
pub fn fingerprint(rendered: &Value) -> String {
    let digest = Sha256::digest(rendered.to_string().as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The object to apply: the rendered one with its fingerprint in `metadata.annotations`.
pub fn marked(rendered: &Value) -> Value {
    let print = fingerprint(rendered);
    let mut v = rendered.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(APPLIED_ANNOTATION.to_string(), Value::String(print));
        }
    }
    v
}

/// Whether `live` is as applying `rendered` would leave it: applied from this very rendering
/// and with every value it sets still in place.
pub fn up_to_date(live: &Value, rendered: &Value) -> bool {
    let applied = live["metadata"]["annotations"][APPLIED_ANNOTATION].as_str();
    applied == Some(fingerprint(rendered).as_str()) && applied_by_cohort(live) && holds(live, rendered)
}

/// Whether cohort's field manager applied the object: an annotation copied onto an object
/// someone else made (a restore, `kubectl replace`) must not stand for cohort owning its fields.
fn applied_by_cohort(live: &Value) -> bool {
    live["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| m["manager"] == crate::apply::FIELD_MANAGER && m["operation"] == "Apply")
}

/// Whether `live` holds every value `wanted` sets: maps may hold more keys (the server's
/// defaults, other managers' fields), lists must match item for item.
fn holds(live: &Value, wanted: &Value) -> bool {
    match (live, wanted) {
        (Value::Object(l), Value::Object(w)) => {
            w.iter().all(|(k, wv)| l.get(k).is_some_and(|lv| holds(lv, wv)))
        }
        (Value::Array(l), Value::Array(w)) => {
            l.len() == w.len() && l.iter().zip(w).all(|(lv, wv)| holds(lv, wv))
        }
        (l, w) => l == w,
    }
}

#[cfg(test)]
mod tests {
    use super::{APPLIED_ANNOTATION, fingerprint, marked, up_to_date};
    use serde_json::{Value, json};

    fn rendered() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "account-service-production-v1-15-0", "namespace": "shop",
                         "labels": {"app": "account-service"}},
            "spec": {"replicas": 10, "template": {"spec": {"containers": [
                {"name": "app", "image": "shop/account:1.15.0", "env": [{"name": "LOG_LEVEL", "value": "info"}]}
            ]}}}
        })
    }

    /// As the API server returns it after the apply: defaults filled in, server metadata,
    /// another manager's annotation, a status.
    fn live(applied: &Value) -> Value {
        let mut v = applied.clone();
        v["metadata"]["managedFields"] = json!([
            {"manager": "cohort", "operation": "Apply", "apiVersion": "apps/v1"},
            {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status"}
        ]);
        v["metadata"]["uid"] = json!("4f1c");
        v["metadata"]["resourceVersion"] = json!("812");
        v["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!("1");
        v["spec"]["strategy"] = json!({"type": "RollingUpdate"});
        v["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = json!("IfNotPresent");
        v["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] =
            json!("/dev/termination-log");
        v["status"] = json!({"replicas": 10, "readyReplicas": 10});
        v
    }

    #[test]
    fn an_object_applied_from_this_rendering_and_untouched_since_is_up_to_date() {
        let r = rendered();
        let applied = marked(&r);
        assert_eq!(
            applied["metadata"]["annotations"][APPLIED_ANNOTATION],
            json!(fingerprint(&r))
        );
        assert_eq!(applied["metadata"]["labels"], r["metadata"]["labels"]);
        assert!(up_to_date(&live(&applied), &r));
    }

    #[test]
    fn a_value_someone_changed_since_is_applied_again() {
        let r = rendered();
        let mut scaled = live(&marked(&r));
        scaled["spec"]["replicas"] = json!(5);
        assert!(!up_to_date(&scaled, &r));
    }

    #[test]
    fn a_field_the_repo_removed_is_applied_again_so_the_apply_removes_it() {
        // The live object still holds everything the new rendering sets, but it was applied
        // from one that also set LOG_LEVEL: only an apply drops that.
        let before = rendered();
        let applied = live(&marked(&before));
        let mut now = before.clone();
        now["spec"]["template"]["spec"]["containers"][0]["env"] = json!([]);
        assert!(!up_to_date(&applied, &now));
        let mut fewer_labels = before.clone();
        fewer_labels["metadata"]["labels"] = json!({});
        assert!(!up_to_date(&applied, &fewer_labels));
    }

    #[test]
    fn an_object_cohort_never_marked_or_whose_list_grew_is_applied() {
        let r = rendered();
        assert!(
            !up_to_date(&live(&r), &r),
            "no fingerprint: applied by an older cohort or by hand"
        );
        let mut grown = live(&marked(&r));
        grown["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array_mut()
            .expect("env")
            .push(json!({"name": "DEBUG", "value": "1"}));
        assert!(!up_to_date(&grown, &r));
    }

    #[test]
    fn a_value_the_server_spells_differently_costs_only_an_apply() {
        let mut r = rendered();
        r["spec"]["template"]["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "1000m"}});
        let mut normalized = live(&marked(&r));
        normalized["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("1");
        assert!(!up_to_date(&normalized, &r));
    }

    #[test]
    fn an_annotation_copied_onto_an_object_cohort_did_not_apply_is_not_trusted() {
        let r = rendered();
        let mut restored = live(&marked(&r));
        restored["metadata"]["managedFields"] = json!([{"manager": "velero", "operation": "Update"}]);
        assert!(!up_to_date(&restored, &r));
    }
}

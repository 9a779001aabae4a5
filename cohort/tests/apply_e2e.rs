//! `cohort apply` and `cohort diff` against a real API server: they run when
//! `COHORT_E2E_KUBECONFIG` names a kubeconfig with rights to create namespaces (e.g. the
//! k8s-lab's cluster-admin one), and are skipped, saying so, otherwise. Need `kubectl` on PATH.

mod kube_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kube_common::{Namespace, kubectl, kubectl_json, kubectl_may_fail, release_repo, text, wait_for};

fn kubeconfig() -> Option<PathBuf> {
    kube_common::kubeconfig("cohort apply and cohort diff")
}

/// `cohort ARGS -C repo --kubeconfig kc`.
fn cohort(repo: &Path, kc: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(args)
        .arg("-C")
        .arg(repo)
        .arg("--kubeconfig")
        .arg(kc)
        .env("NO_COLOR", "1")
        .output()
        .expect("run cohort")
}

/// `cohort` on the repo alone (deploy, render...), which must succeed.
fn cohort_repo(repo: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(args)
        .arg("-C")
        .arg(repo)
        .output()
        .expect("run cohort");
    assert!(out.status.success(), "cohort {args:?}: {}", text(&out));
    out
}

fn position(haystack: &str, needle: &str) -> usize {
    haystack
        .find(needle)
        .unwrap_or_else(|| panic!("no `{needle}` in:\n{haystack}"))
}

#[test]
fn apply_rolls_out_in_order_diff_sees_drift_and_a_new_version_prunes_the_old_one() {
    let Some(kc) = kubeconfig() else { return };
    let ns = Namespace::new(&kc, "apply");
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = release_repo(dir.path(), &ns.name, &kc);

    // A server-side dry run checks everything and changes nothing.
    let dry = cohort(&repo, &kc, &["apply", "--dry-run"]);
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry));
    assert!(
        text(&dry).contains("deployment/account-service-router created (server dry run)"),
        "{}",
        text(&dry)
    );
    assert!(ns.names("deployments").is_empty(), "a dry run created objects");

    // Applied in an order that never sends traffic to what is not ready.
    let applied = cohort(&repo, &kc, &["apply"]);
    let said = text(&applied);
    assert_eq!(applied.status.code(), Some(0), "{said}");
    let tracks_ready = position(&said, "account-service-production-v1-15-0 rolled out");
    let track_services = position(&said, "service/account-service-production created");
    let router_config = position(&said, "configmap/account-service-router created");
    let router_ready = position(&said, "account-service-router rolled out");
    let front = position(&said, "service/account-service created");
    assert!(
        tracks_ready < track_services
            && track_services < router_config
            && router_config < router_ready
            && router_ready < front,
        "{said}"
    );
    // Every object is cohort's by server-side apply, and every Deployment has rolled out.
    let deployments = kubectl_json(
        &kc,
        &["-n", &ns.name, "get", "deployments", "--show-managed-fields"],
    );
    let items = deployments["items"].as_array().expect("items");
    assert_eq!(items.len(), 5, "{said}");
    for d in items {
        let managers: Vec<(&str, &str)> = d["metadata"]["managedFields"]
            .as_array()
            .expect("managedFields")
            .iter()
            .map(|m| {
                (
                    m["manager"].as_str().unwrap_or(""),
                    m["operation"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert!(managers.contains(&("cohort", "Apply")), "{managers:?}");
        assert_eq!(
            d["status"]["availableReplicas"], d["spec"]["replicas"],
            "{}",
            d["metadata"]["name"]
        );
    }

    // Nothing to do a second time.
    let again = cohort(&repo, &kc, &["apply", "-o", "json"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json");
    let changes: Vec<&str> = report["services"][0]["applied"]
        .as_array()
        .expect("applied")
        .iter()
        .filter_map(|a| a["change"].as_str())
        .collect();
    assert!(changes.iter().all(|c| *c == "unchanged"), "{changes:?}");
    let clean = cohort(&repo, &kc, &["diff"]);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));

    // Someone scales a track by hand: drift. Applying would take the field from kubectl,
    // which needs --force-conflicts.
    kubectl(
        &kc,
        &[
            "-n",
            &ns.name,
            "scale",
            "deployment/account-service-paid-v1-15-0",
            "--replicas=5",
        ],
        None,
    );
    let drift = cohort(&repo, &kc, &["diff", "-o", "json"]);
    assert_eq!(drift.status.code(), Some(1), "{}", text(&drift));
    let found: serde_json::Value = serde_json::from_slice(&drift.stdout).expect("json");
    let d = &found["differences"][0];
    assert_eq!(d["name"], "account-service-paid-v1-15-0");
    assert_eq!(d["change"], "update");
    let diff = d["diff"].as_str().expect("diff");
    assert!(
        diff.contains("-  replicas: 5") && diff.contains("+  replicas: 4"),
        "{diff}"
    );
    let refused = cohort(&repo, &kc, &["apply"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("Error from server (Conflict)")
            && text(&refused).contains("--force-conflicts"),
        "{}",
        text(&refused)
    );
    let forced = cohort(&repo, &kc, &["apply", "--force-conflicts"]);
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced));
    assert!(
        text(&forced).contains("deployment/account-service-paid-v1-15-0 configured"),
        "{}",
        text(&forced)
    );
    assert_eq!(cohort(&repo, &kc, &["diff"]).status.code(), Some(0));

    // A new build on internal: diff says what apply will create and prune; apply does it, the
    // old version going only after the new one rolled out.
    cohort_repo(&repo, &["deploy", "account-service", "1.19.0"]);
    let planned = cohort(&repo, &kc, &["diff"]);
    let planned_text = text(&planned);
    assert_eq!(planned.status.code(), Some(1), "{planned_text}");
    assert!(
        planned_text.contains("+ deployment/account-service-internal-v1-19-0")
            && planned_text.contains("- deployment/account-service-internal-v1-18-0")
            && planned_text.contains("~ configmap/account-service-router"),
        "{planned_text}"
    );
    let rolled = cohort(&repo, &kc, &["apply"]);
    let said = text(&rolled);
    assert_eq!(rolled.status.code(), Some(0), "{said}");
    assert!(
        position(&said, "account-service-internal-v1-19-0 rolled out")
            < position(&said, "deployment/account-service-internal-v1-18-0 deleted"),
        "{said}"
    );
    let names = ns.names("deployments");
    assert!(
        names.contains(&"account-service-internal-v1-19-0".to_string()),
        "{names:?}"
    );
    assert!(
        !names.contains(&"account-service-internal-v1-18-0".to_string()),
        "{names:?}"
    );
    // The router config changed, so the router pods were told to look again (annotated with
    // the digest of what was written) and asked for what they run. The lab's pods run no
    // router and cannot answer: that is a warning, not a failure and not a wait to the end.
    let config = kubectl_json(
        &kc,
        &[
            "-n",
            &ns.name,
            "get",
            "configmap",
            "account-service-router",
            "-o",
            "json",
        ],
    );
    let written = config["data"]["router.yaml"].as_str().expect("router.yaml");
    let digest = cohort_spec::router_config::digest(written.as_bytes());
    let routers = kubectl_json(
        &kc,
        &["-n", &ns.name, "get", "pods", "-l", "tier=router", "-o", "json"],
    );
    let annotated: Vec<&str> = routers["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|p| p["metadata"]["annotations"]["cohort.dev/router-config"].as_str())
        .collect();
    assert!(
        !annotated.is_empty() && annotated.iter().all(|d| *d == digest),
        "{annotated:?} {said}"
    );
    assert!(
        position(&said, "routers reload")
            < position(&said, "deployment/account-service-internal-v1-18-0 deleted")
            && said.contains("warning: cannot ask pod account-service-router-"),
        "{said}"
    );

    // A managed object of a service the repo no longer has is drift too (apply leaves it).
    let orphan = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"old-service-router","namespace":"{}",
            "labels":{{"app.kubernetes.io/managed-by":"cohort","app.kubernetes.io/part-of":"old-service"}}}}}}"#,
        ns.name
    );
    kubectl(&kc, &["apply", "-f", "-"], Some(&orphan));
    let left = cohort(&repo, &kc, &["diff"]);
    assert_eq!(left.status.code(), Some(1), "{}", text(&left));
    assert!(
        text(&left).contains("- configmap/old-service-router (managed by cohort for service old-service"),
        "{}",
        text(&left)
    );
    // So is one the repo's own service no longer renders (a track that stopped being a stage).
    let leftover = format!(
        r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"account-service-qa","namespace":"{}",
            "labels":{{"app.kubernetes.io/managed-by":"cohort","app.kubernetes.io/part-of":"account-service","tier":"service"}}}},
            "spec":{{"ports":[{{"port":80}}]}}}}"#,
        ns.name
    );
    kubectl(&kc, &["apply", "-f", "-"], Some(&leftover));
    let left = cohort(&repo, &kc, &["diff", "account-service"]);
    let said = text(&left);
    assert_eq!(left.status.code(), Some(1), "{said}");
    assert!(
        said.contains(
            "- service/account-service-qa (managed by cohort for account-service, which no longer renders it"
        ),
        "{said}"
    );
    // Asked about one service, diff leaves other services' objects out.
    assert!(!said.contains("old-service-router"), "{said}");
}

#[test]
fn a_rollout_that_cannot_finish_stops_apply_says_why_and_prunes_nothing() {
    let Some(kc) = kubeconfig() else { return };
    let ns = Namespace::new(&kc, "stuck");
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = release_repo(dir.path(), &ns.name, &kc);
    let first = cohort(&repo, &kc, &["apply"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));

    // The next build's pods never become ready: nothing runs them, and one cannot pull its
    // image (written into its status as a kubelet would).
    ns.pods_become_ready(false);
    cohort_repo(&repo, &["deploy", "account-service", "1.19.0"]);
    let child = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["apply", "--timeout", "15s", "-C"])
        .arg(&repo)
        .arg("--kubeconfig")
        .arg(&kc)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cohort apply");
    let selector = "version=1.19.0";
    let mut pod = String::new();
    wait_for("the new version's pods", 30, || {
        let pods = kubectl_json(&kc, &["-n", &ns.name, "get", "pods", "-l", selector]);
        pod = pods["items"][0]["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        !pod.is_empty()
    });
    let pulled = r#"{"status":{"phase":"Pending","containerStatuses":[{"name":"app","ready":false,"restartCount":0,
        "image":"registry.example/account-service:1.19.0","imageID":"",
        "state":{"waiting":{"reason":"ImagePullBackOff","message":"Back-off pulling image \"registry.example/account-service:1.19.0\""}}}]}}"#;
    let patched = kubectl_may_fail(
        &kc,
        &[
            "-n",
            &ns.name,
            "patch",
            "pod",
            &pod,
            "--subresource=status",
            "--type=merge",
            "-p",
            pulled,
        ],
        None,
    );
    assert!(patched.status.success(), "{}", text(&patched));

    let out = child.wait_with_output().expect("cohort apply");
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("not ready after 15s: account-service-internal-v1-19-0"),
        "{said}"
    );
    // Why the pods are not ready depends on the cluster: with nothing to run them, the pod
    // patched above cannot pull its image and the other is not scheduled (the pure tests of
    // `cohort_health::rollout` pin each reason's wording); on the real-pod lab's node both
    // really try to pull, and the kubelet's own reason replaces the patched one.
    assert!(
        said.contains("ImagePullBackOff: Back-off pulling image")
            || said.contains("ErrImagePull: failed to pull"),
        "{said}"
    );
    assert!(said.contains("nothing was pruned"), "{said}");
    // The running version stays, and the router still sends internal traffic to it.
    assert!(
        ns.names("deployments")
            .contains(&"account-service-internal-v1-18-0".to_string())
    );
    let config = kubectl_json(
        &kc,
        &["-n", &ns.name, "get", "configmap", "account-service-router"],
    );
    let router_yaml = config["data"]["router.yaml"].as_str().expect("router.yaml");
    assert!(router_yaml.contains("\"1.18.0\""), "{router_yaml}");
    assert!(!router_yaml.contains("1.19.0"), "{router_yaml}");
}

#[test]
fn apply_is_refused_without_rights_and_works_with_the_rendered_role() {
    let Some(kc) = kubeconfig() else { return };
    let ns = Namespace::new(&kc, "rbac");
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = release_repo(dir.path(), &ns.name, &kc);
    let limited = ns.service_account_kubeconfig("deployer", dir.path());

    let denied = cohort(&repo, &limited, &["apply"]);
    let said = text(&denied);
    assert_eq!(denied.status.code(), Some(2), "{said}");
    assert!(said.contains("Error from server (Forbidden)"), "{said}");
    assert!(said.contains("system:serviceaccount:"), "{said}");
    assert!(ns.names("deployments").is_empty());

    // Bound to the namespaced Role that `cohort render --rbac` emits, nothing more.
    let rbac = cohort_repo(&repo, &["render", "--rbac", "-o", "json"]);
    let objects: serde_json::Value = serde_json::from_slice(&rbac.stdout).expect("json");
    let role = &objects["items"][1];
    assert_eq!(role["kind"], "Role");
    assert_eq!(role["metadata"]["namespace"], ns.name.as_str());
    kubectl(&kc, &["apply", "-f", "-"], Some(&role.to_string()));
    ns.bind("deployer-applies", "--role=cohort-apply", "deployer");
    let allowed = cohort(&repo, &limited, &["apply"]);
    assert_eq!(allowed.status.code(), Some(0), "{}", text(&allowed));
    let diff = cohort(&repo, &limited, &["diff"]);
    assert_eq!(diff.status.code(), Some(0), "{}", text(&diff));
}

#[test]
fn an_apply_waits_its_turn_behind_another_holding_the_services_lease() {
    let Some(kc) = kubeconfig() else { return };
    let ns = Namespace::new(&kc, "lease");
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = release_repo(dir.path(), &ns.name, &kc);
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        .to_string();
    let lease = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "cohort-apply-account-service", "namespace": ns.name},
        "spec": {"holderIdentity": "cohort agent on cohort-agent-7d9, pid 1", "leaseDurationSeconds": 600,
                 "acquireTime": now, "renewTime": now}
    });
    kubectl(&kc, &["apply", "-f", "-"], Some(&lease.to_string()));

    let refused = cohort(&repo, &kc, &["apply"]);
    let said = text(&refused);
    assert_eq!(refused.status.code(), Some(2), "{said}");
    assert!(said.contains("another apply of account-service is under way: cohort agent on cohort-agent-7d9, pid 1 holds lease cohort-apply-account-service"), "{said}");
    assert!(
        said.contains(&format!(
            "kubectl -n {} delete lease cohort-apply-account-service",
            ns.name
        )),
        "{said}"
    );
    assert!(
        ns.names("deployments").is_empty(),
        "nothing applied while another holds the lease"
    );
    // A dry run changes nothing and needs no lease.
    let dry = cohort(&repo, &kc, &["apply", "--dry-run"]);
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry));

    kubectl(
        &kc,
        &["-n", &ns.name, "delete", "lease", "cohort-apply-account-service"],
        None,
    );
    let applied = cohort(&repo, &kc, &["apply"]);
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied));
    assert!(
        ns.names("leases").is_empty(),
        "the lease is given back after the apply"
    );
}

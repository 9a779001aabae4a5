//! `cohort status` against a real API server: runs when `COHORT_E2E_KUBECONFIG` names a
//! kubeconfig with rights to create namespaces (e.g. the k8s-lab's cluster-admin one), and is
//! skipped, saying so, otherwise. Needs `kubectl` on PATH to set the scene.
//!
//! Pods must become Ready in the test's namespace: on the k8s-lab that is the fake kubelet,
//! which serves namespaces labelled `k8s-lab/fake-kubelet=enabled` (harmless elsewhere).

mod kube_common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use kube_common::{Namespace, kubectl, wait_for};

fn kubeconfig() -> Option<std::path::PathBuf> {
    kube_common::kubeconfig("cohort status")
}

fn cohort(kc: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cohort"))
        .arg("status")
        .arg("--kubeconfig")
        .arg(kc)
        .args(args)
        // No release repo: expectations come from labels and flags.
        .current_dir(std::env::temp_dir())
        .env_remove("COHORT_REPO")
        .output()
        .expect("run cohort")
}

/// A service laid out as the seed's: a front Service selecting the router, a router
/// Deployment, and two tracks, each a Service and a versioned Deployment.
fn seed_like(ns: &str) -> String {
    let labels = |extra: &str| {
        format!(
            r#"{{"app":"shop-api","app.kubernetes.io/managed-by":"cohort","app.kubernetes.io/part-of":"shop-api",{extra}}}"#
        )
    };
    let deployment = |name: &str, sel: &str, replicas: u32| {
        format!(
            r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"{name}","namespace":"{ns}","labels":{l}}},
              "spec":{{"replicas":{replicas},"selector":{{"matchLabels":{l}}},
              "template":{{"metadata":{{"labels":{l}}},"spec":{{"containers":[{{"name":"app","image":"registry.example/shop-api:1"}}]}}}}}}}}"#,
            l = labels(sel)
        )
    };
    let service = |name: &str, sel: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"{name}","namespace":"{ns}","labels":{{"tier":"service"}}}},
              "spec":{{"selector":{sel},"ports":[{{"port":80,"targetPort":8080}}]}}}}"#
        )
    };
    let items = [
        service("shop-api", r#"{"app":"shop-api","tier":"router"}"#),
        service(
            "shop-api-canary",
            r#"{"app":"shop-api","tier":"service","track":"canary"}"#,
        ),
        service(
            "shop-api-production",
            r#"{"app":"shop-api","tier":"service","track":"production"}"#,
        ),
        deployment("shop-api-router", r#""tier":"router""#, 2),
        deployment(
            "shop-api-canary-v1-2-0",
            r#""tier":"service","track":"canary","version":"1.2.0""#,
            2,
        ),
        deployment(
            "shop-api-production-v1-1-0",
            r#""tier":"service","track":"production","version":"1.1.0""#,
            2,
        ),
    ];
    format!(
        r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#,
        items.join(",")
    )
}

/// A fresh namespace (pods made Ready by the lab's fake kubelet) holding `seed_like`.
fn seed_like_namespace<'k>(kc: &'k Path, test: &str) -> Namespace<'k> {
    let ns = Namespace::new(kc, test);
    kubectl(kc, &["apply", "-f", "-"], Some(&seed_like(&ns.name)));
    ns
}

#[test]
fn status_reads_a_real_namespace_and_exits_by_what_it_found() {
    let Some(kc) = kubeconfig() else { return };
    let ns = seed_like_namespace(&kc, "status");
    for d in [
        "shop-api-router",
        "shop-api-canary-v1-2-0",
        "shop-api-production-v1-1-0",
    ] {
        ns.wait_for_rollout(d);
    }
    // EndpointSlices follow the pods' readiness a moment later.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let healthy = loop {
        let out = cohort(&kc, &["-n", &ns.name, "--router-replicas", "2"]);
        if out.status.code() == Some(0) || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let table = String::from_utf8_lossy(&healthy.stdout);
    assert_eq!(
        healthy.status.code(),
        Some(0),
        "{table}{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    assert!(
        table.contains("shop-api  2/2     1.2.0 2/2  1.1.0 2/2   ok"),
        "{table}"
    );

    // Expecting more router replicas than run is a problem: exit 1, said under the service.
    let short = cohort(&kc, &["-n", &ns.name, "--router-replicas", "3", "-o", "json"]);
    assert_eq!(short.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&short.stdout).expect("json");
    assert_eq!(report["healthy"], false);
    assert_eq!(
        report["services"][0]["findings"][0]["message"],
        "router has 2 of 3 replicas available"
    );

    // A service account with no rights: the API server's refusal, as kubectl says it, exit 2.
    let dir = tempfile::tempdir().expect("tempdir");
    let limited = ns.service_account_kubeconfig("nobody", dir.path());
    let denied = cohort(&limited, &["-n", &ns.name]);
    let err = String::from_utf8_lossy(&denied.stderr);
    assert_eq!(denied.status.code(), Some(2), "{err}");
    assert!(err.contains("Error from server (Forbidden)"), "{err}");
    assert!(err.contains("cannot list resource"), "{err}");

    // Bound to the read-only ClusterRole `cohort render --rbac` emits, the same account is
    // enough for status: nothing broader is needed.
    let repo = dir.path().join("releases");
    let init = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .arg("init")
        .arg(&repo)
        .output()
        .expect("cohort init");
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let rbac = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["render", "--rbac", "-o", "json", "-C"])
        .arg(&repo)
        .output()
        .expect("cohort render --rbac");
    assert!(rbac.status.success(), "{}", String::from_utf8_lossy(&rbac.stderr));
    let objects: serde_json::Value = serde_json::from_slice(&rbac.stdout).expect("json");
    let cluster_role = &objects["items"][0];
    assert_eq!(cluster_role["kind"], "ClusterRole");
    kubectl(&kc, &["apply", "-f", "-"], Some(&cluster_role.to_string()));
    ns.bind("nobody-reads", "--clusterrole=cohort-status", "nobody");
    let allowed = cohort(&limited, &["-n", &ns.name, "--router-replicas", "2"]);
    assert_eq!(
        allowed.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&allowed.stdout),
        String::from_utf8_lossy(&allowed.stderr)
    );
}

/// A Slack incoming webhook stand-in on loopback: records each POST body.
fn slack_endpoint() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://{}/services/T0/B0/secret",
        listener.local_addr().expect("addr")
    );
    let seen = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
    let bodies = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok() {
                bodies
                    .lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&body).into_owned());
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (url, seen)
}

#[test]
fn watch_announces_a_problem_once_and_then_its_resolution() {
    let Some(kc) = kubeconfig() else { return };
    let ns = seed_like_namespace(&kc, "watch");
    ns.wait_for_rollout("shop-api-router");
    let (url, posts) = slack_endpoint();
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .arg("status")
        .arg("--kubeconfig")
        .arg(&kc)
        .args([
            "-n",
            &ns.name,
            "--router-replicas",
            "2",
            "--min-ready-endpoints",
            "1",
        ])
        .args([
            "--watch",
            "--recheck-every",
            "300ms",
            "--slack-webhook-env",
            "COHORT_TEST_HOOK",
        ])
        .env("COHORT_TEST_HOOK", &url)
        .current_dir(std::env::temp_dir())
        .env_remove("COHORT_REPO")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cohort status --watch");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut watcher_stderr = watcher.stderr.take().expect("stderr");
    let _guard = Kill(watcher);
    let count = |needle: &str| {
        posts
            .lock()
            .expect("lock")
            .iter()
            .filter(|b| b.contains(needle))
            .count()
    };

    // Let it settle on the healthy namespace, then take a router replica away.
    std::thread::sleep(std::time::Duration::from_secs(3));
    kubectl(
        &kc,
        &[
            "-n",
            &ns.name,
            "scale",
            "deployment/shop-api-router",
            "--replicas=1",
        ],
        None,
    );
    wait_for("the problem to reach Slack", 60, || {
        count("router has 1 of 2 replicas available") >= 1
    });
    // Persisting is not news: nothing more is sent while it lasts.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        count("router has 1 of 2 replicas available"),
        1,
        "{:?}",
        posts.lock().expect("lock")
    );

    kubectl(
        &kc,
        &[
            "-n",
            &ns.name,
            "scale",
            "deployment/shop-api-router",
            "--replicas=2",
        ],
        None,
    );
    wait_for("the resolution to reach Slack", 60, || count("Resolved") >= 1);
    let all = posts.lock().expect("lock").clone();
    assert_eq!(all.len(), 2, "one message opened, one resolved: {all:?}");
    // The webhook's secret path never shows in what the watcher says.
    drop(_guard);
    let mut said = String::new();
    use std::io::Read;
    let _ = watcher_stderr.read_to_string(&mut said);
    assert!(!said.contains("secret"), "{said}");
    assert!(
        said.contains("problem: shop-api: router has 1 of 2 replicas available"),
        "{said}"
    );
}

#[test]
fn a_kubeconfig_list_with_a_missing_file_works_as_with_kubectl() {
    let Some(kc) = kubeconfig() else { return };
    let ns = seed_like_namespace(&kc, "kcfg");
    let list = std::env::join_paths([Path::new("/nonexistent/kubeconfig"), kc.as_path()]).expect("join");
    let out = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["status", "-n", &ns.name])
        .current_dir(std::env::temp_dir())
        .env_remove("COHORT_REPO")
        .env("KUBECONFIG", &list)
        .output()
        .expect("run cohort");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("shop-api"), "{said}");
}

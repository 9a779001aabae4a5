//! Job checks on a cluster whose pods really run: a passing, a failing and a too-slow Job made
//! by `check_job_object`, started and read by `Cluster` with only the autopilot's rendered
//! Role, their outcomes and log tails as the judgement will see them.
//!
//! Needs `COHORT_E2E_KUBECONFIG` (a cluster's kubeconfig, with rights to make namespaces and
//! RBAC) and `COHORT_E2E_REAL_LAB` (the k8s-lab directory whose real node runs pods, with the
//! image `localhost/lab-web:1.15.0` imported: static busybox, so `sh`; see
//! ../shared/k8s-lab/real/). Skipped, saying so, otherwise. What it measured is printed
//! (`--nocapture` shows it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cohort_kube::{CheckJobFor, Cluster, JobOutcome, Target, check_job_object};
use serde_json::{Value, json};

/// The lab's image with a shell (static busybox); never pulled.
const IMAGE: &str = "localhost/lab-web:1.15.0";

fn lab() -> Option<PathBuf> {
    let Some(kc) = std::env::var_os("COHORT_E2E_KUBECONFIG") else {
        println!("SKIPPED: set COHORT_E2E_KUBECONFIG to a cluster's kubeconfig to run Job checks end to end");
        return None;
    };
    if std::env::var_os("COHORT_E2E_REAL_LAB").is_none() {
        println!(
            "SKIPPED: set COHORT_E2E_REAL_LAB to the k8s-lab directory whose real node runs pods \
             (../shared/k8s-lab/real/) to run Job checks in real pods"
        );
        return None;
    }
    Some(PathBuf::from(kc))
}

fn kubectl(kc: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kc)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl on PATH (the test sets the scene with it)");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
    }
    let out = child.wait_with_output().expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A namespace deleted when the test ends, however it ends.
struct Namespace<'k> {
    kc: &'k Path,
    name: String,
}

impl<'k> Namespace<'k> {
    fn new(kc: &'k Path, test: &str) -> Namespace<'k> {
        let name = format!("cohort-e2e-{test}-{}", std::process::id());
        kubectl(kc, &["create", "namespace", &name], None);
        Namespace { kc, name }
    }

    /// A kubeconfig for the autopilot's ServiceAccount, with its rendered Role and binding
    /// (not its Deployment: the test acts as it).
    fn as_autopilot(&self, dir: &Path) -> PathBuf {
        let objects = cohort_render::autopilot(&cohort_render::AutopilotSetup {
            place: cohort_render::AgentPlacement {
                namespace: Some(&self.name),
                image: "localhost/cohort:unused",
            },
            git: "https://git.example.com/releases.git",
            branch: "main",
            path: None,
            ca_config_map: None,
            replicas: 1,
        })
        .expect("the autopilot renders");
        let items: Vec<&Value> = objects
            .iter()
            .filter(|o| o.kind != "Deployment")
            .map(|o| &o.value)
            .collect();
        assert_eq!(items.len(), 3, "ServiceAccount, Role, RoleBinding");
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
        kubectl(self.kc, &["apply", "-f", "-"], Some(&list.to_string()));
        let token = kubectl(
            self.kc,
            &["-n", &self.name, "create", "token", cohort_render::AUTOPILOT_NAME],
            None,
        );
        let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
        let raw = kubectl(
            self.kc,
            &["config", "view", "--raw", "--minify", "-o", "json"],
            None,
        );
        let mut config: Value = serde_json::from_slice(&raw.stdout).expect("kubeconfig json");
        config["users"][0]["user"] = json!({ "token": token });
        let path = dir.join("kubeconfig-autopilot");
        std::fs::write(&path, serde_json::to_vec(&config).expect("json")).expect("write");
        path
    }
}

impl Drop for Namespace<'_> {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kc)
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .output();
    }
}

/// A check's `job:` running `script` in the lab's image.
fn job_spec(script: &str) -> Value {
    json!({
        "template": {
            "spec": {
                "containers": [{
                    "name": "tests",
                    "image": IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", script],
                }],
            },
        },
    })
}

/// A Job that says what it was given and checks COHORT_NAMESPACE against its pod's own
/// namespace, read from the ServiceAccount mount: it asks for the token, which a check's Job
/// otherwise goes without.
fn passing_spec() -> Value {
    let mut spec = job_spec(
        "echo \"integration ok against $COHORT_SERVICE $COHORT_TRACK $COHORT_VERSION at $COHORT_ADDRESS\"; \
         test \"$COHORT_NAMESPACE\" = \"$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)\"",
    );
    spec["template"]["spec"]["automountServiceAccountToken"] = json!(true);
    spec
}

/// Reads the Job's state until it has finished (at most `secs`); the state and how long.
async fn finished(cluster: &Cluster, name: &str, secs: u64) -> (cohort_kube::CheckJobState, Duration) {
    let start = Instant::now();
    loop {
        let state = cluster
            .check_job_state(name)
            .await
            .expect("the Job's state")
            .expect("the Job exists");
        if state.outcome != JobOutcome::Running {
            return (state, start.elapsed());
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "job {name} still running after {secs} s: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_checks_pass_fail_and_time_out_in_real_pods_with_only_the_autopilots_role() {
    let Some(kc) = lab() else { return };
    let ns = Namespace::new(&kc, "check-jobs");
    let dir = tempfile::tempdir().expect("tempdir");
    let as_autopilot = ns.as_autopilot(dir.path());
    let cluster = Cluster::connect(&Target {
        kubeconfig: Some(as_autopilot),
        context: None,
        namespace: Some(ns.name.clone()),
    })
    .await
    .expect("connect as the autopilot");

    let run = |check: &'static str, timeout_seconds: u64| CheckJobFor {
        namespace: &ns.name,
        service: "web",
        track: "canary",
        version: "1.18.0",
        check,
        address: "http://web-canary.shop.svc:80",
        timeout_seconds,
    };
    let passing = check_job_object(&passing_spec(), &run("integration", 120)).expect("a Job");
    let failing = check_job_object(
        &job_spec(
            "for i in $(seq 1 30); do echo \"step $i\"; done; echo 'FAIL: checkout returned 500'; exit 1",
        ),
        &run("smoke", 120),
    )
    .expect("a Job");
    let slow = check_job_object(&job_spec("echo started; sleep 120"), &run("slow", 3)).expect("a Job");

    let started = Instant::now();
    let pass_name = cluster.start_check_job(&passing).await.expect("started");
    let fail_name = cluster.start_check_job(&failing).await.expect("started");
    let slow_name = cluster.start_check_job(&slow).await.expect("started");
    println!("three Jobs created in {:?}", started.elapsed());
    assert_eq!(pass_name, passing["metadata"]["name"].as_str().expect("name"));

    // Another pass (or another replica) starting the same run finds it: no second Job.
    let again = check_job_object(&passing_spec(), &run("integration", 120)).expect("a Job");
    assert_eq!(cluster.start_check_job(&again).await.expect("found"), pass_name);
    let jobs = kubectl(&kc, &["-n", &ns.name, "get", "jobs", "-o", "json"], None);
    let jobs: Value = serde_json::from_slice(&jobs.stdout).expect("json");
    let mut names: Vec<&str> = jobs["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|j| j["metadata"]["name"].as_str())
        .collect();
    names.sort_unstable();
    let mut expected = vec![pass_name.as_str(), fail_name.as_str(), slow_name.as_str()];
    expected.sort_unstable();
    assert_eq!(names, expected);

    assert_eq!(cluster.check_job_state("no-such-job").await.expect("read"), None);

    let (pass, pass_took) = finished(&cluster, &pass_name, 120).await;
    println!(
        "passing Job {pass_name}: {:?} after {pass_took:?}; log tail {:?}",
        pass.outcome, pass.log_tail
    );
    assert_eq!(pass.outcome, JobOutcome::Succeeded, "{pass:?}");
    assert_eq!(
        pass.log_tail,
        "integration ok against web canary 1.18.0 at http://web-canary.shop.svc:80"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let began = pass.started.expect("a start time");
    let now = i64::try_from(now).expect("in range");
    assert!((now - 300..=now + 5).contains(&began), "{began} vs {now}");

    let (fail, fail_took) = finished(&cluster, &fail_name, 120).await;
    println!(
        "failing Job {fail_name}: {:?} after {fail_took:?}; log tail:\n{}",
        fail.outcome, fail.log_tail
    );
    match &fail.outcome {
        JobOutcome::Failed { reason, message } => {
            assert_eq!(reason, "BackoffLimitExceeded", "{message}");
            assert!(!message.is_empty());
        }
        other => panic!("the failing Job: {other:?}"),
    }
    let lines: Vec<&str> = fail.log_tail.lines().collect();
    assert_eq!(lines.len(), 20, "{lines:?}");
    assert_eq!(lines[0], "step 12");
    assert_eq!(lines[18], "step 30");
    assert_eq!(lines[19], "FAIL: checkout returned 500");

    let (slow, slow_took) = finished(&cluster, &slow_name, 60).await;
    println!("slow Job {slow_name}: {:?} after {slow_took:?}", slow.outcome);
    assert!(
        matches!(&slow.outcome, JobOutcome::Failed { reason, .. } if reason == "DeadlineExceeded"),
        "{slow:?}"
    );
    println!("all three judged in {:?}", started.elapsed());
}

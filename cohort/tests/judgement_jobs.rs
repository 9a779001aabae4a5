//! Job checks through `cohort analyze` on a cluster whose pods really run: the check's Job is
//! started against the track (its address, version and service passed in), waited for, and
//! its outcome is part of the verdict, a failing Job's log tail in the evidence.
//!
//! Needs `COHORT_E2E_KUBECONFIG` and `COHORT_E2E_REAL_LAB` (the k8s-lab directory whose real
//! node runs pods, with the image `localhost/lab-web:1.15.0` imported: static busybox, so
//! `sh`; ../shared/k8s-lab/real/). Skipped, saying so, otherwise. The routers' counts come
//! from a local router process.

mod kube_common;
mod router_common;

use std::path::Path;
use std::process::{Command, Output};

use kube_common::{Namespace, kubeconfig, text};
use router_common::{backend, canary_config, free_requests, start_router};
use serde_json::Value;

/// The lab's image with a shell (static busybox); never pulled.
const IMAGE: &str = "localhost/lab-web:1.15.0";

fn real_lab() -> bool {
    let set = std::env::var_os("COHORT_E2E_REAL_LAB").is_some();
    if !set {
        #[allow(clippy::disallowed_macros)]
        {
            eprintln!(
                "SKIPPED: set COHORT_E2E_REAL_LAB to the k8s-lab directory whose real node runs pods \
                 (../shared/k8s-lab/real/) to run Job checks in real pods"
            );
        }
    }
    set
}

fn cohort(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(args)
        .current_dir(dir)
        .env_remove("COHORT_REPO")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("cohort runs")
}

fn job(name: &str, script: &str) -> String {
    format!(
        "    - name: {name}\n      timeout: 2m\n      job:\n        template:\n          spec:\n            containers:\n              - name: tests\n                image: {IMAGE}\n                imagePullPolicy: Never\n                command: [sh, -c, '{script}']\n"
    )
}

#[test]
fn a_failing_job_check_fails_the_verdict_with_its_log_tail_and_a_passing_one_passes() {
    let Some(kc) = kubeconfig("Job checks") else {
        return;
    };
    if !real_lab() {
        return;
    }
    let ns = Namespace::new(&kc, "jobchecks");
    // Its pods run on the real node, which has their logs.
    ns.pods_become_ready(false);
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = kube_common::release_repo(dir.path(), &ns.name, &kc);
    let passing = job(
        "smoke",
        "echo smoke test of $COHORT_SERVICE $COHORT_VERSION at $COHORT_ADDRESS, templated {{address}}; exit 0",
    );
    let failing = job(
        "integration",
        "for i in $(seq 1 30); do echo step $i ok; done; echo FAIL: checkout answered 500; exit 1",
    );
    let yaml = |checks: &str| {
        format!(
            "judgement:\n  window: 1m\n  min_error_increase: 5%\n  confidence: 0.999\n  checks:\n{checks}"
        )
    };
    let path = repo.join("cohort.yaml");
    let seed = std::fs::read_to_string(&path).expect("read");
    std::fs::write(&path, format!("{seed}\n{}", yaml(&format!("{passing}{failing}")))).expect("write");

    let router_dir = tempfile::tempdir().expect("tempdir");
    let config = router_dir.path().join("router.yaml");
    std::fs::write(
        &config,
        canary_config("1.17.0", backend("canary", 0), backend("production", 0)),
    )
    .expect("write");
    let router = start_router(&["--config".as_ref(), config.as_os_str()]);
    free_requests(router.traffic, 3_000);
    let url = format!("http://{}", router.admin);
    let kc_text = kc.to_string_lossy().to_string();
    let analyze = [
        "analyze",
        "account-service",
        "--track",
        "canary",
        "--metrics-url",
        &url,
        "--kubeconfig",
        &kc_text,
        "-o",
        "json",
    ];
    let out = cohort(&repo, &analyze);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["judgement"]["verdict"], "pass", "{report:#}");
    assert_eq!(report["verdict"], "fail");
    let check = |name: &str| {
        report["checks"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name}: {report:#}"))
    };
    assert_eq!(check("smoke")["outcome"], "pass", "{report:#}");
    let failed = check("integration");
    assert_eq!(failed["outcome"], "fail", "{failed:#}");
    let summary = failed["summary"].as_str().expect("summary");
    assert!(summary.contains("failed (BackoffLimitExceeded"), "{summary}");
    let failed_job = summary
        .strip_prefix("Job ")
        .and_then(|s| s.split(' ').next())
        .expect("the Job's name");
    let evidence: Vec<&str> = failed["evidence"]
        .as_array()
        .expect("evidence")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        evidence.first(),
        Some(&"last 20 lines of its logs:"),
        "{evidence:?}"
    );
    let logs_of = |check: &str| {
        let jobs = kube_common::kubectl_json(&kc, &["-n", &ns.name, "get", "jobs", "-o", "json"]);
        let job = jobs["items"]
            .as_array()
            .and_then(|j| {
                j.iter()
                    .find(|j| j["metadata"]["labels"]["cohort.dev/check"] == check)
            })
            .cloned()
            .unwrap_or_else(|| panic!("no Job of {check}: {jobs:#}"));
        let name = job["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let logs = kube_common::kubectl(&kc, &["-n", &ns.name, "logs", &format!("job/{name}")], None);
        String::from_utf8_lossy(&logs.stdout).into_owned()
    };
    assert_eq!(
        evidence.last(),
        Some(
            &format!(
                "to run it again: kubectl -n {} delete job {}",
                ns.name, failed_job
            )
            .as_str()
        ),
        "{evidence:?}"
    );
    assert_eq!(
        evidence[evidence.len() - 2],
        "  FAIL: checkout answered 500",
        "{evidence:?}\n{}",
        logs_of("integration")
    );
    assert_eq!(evidence[1], "  step 12 ok", "{evidence:?}");

    // The passing Job was given the track's address, service and version.
    assert_eq!(
        logs_of("smoke").trim(),
        format!(
            "smoke test of account-service 1.17.0 at http://account-service-canary.{ns}.svc:8080, templated http://account-service-canary.{ns}.svc:8080",
            ns = ns.name
        )
    );

    // A Job of the check's name that cohort did not make for this run is not its outcome.
    let jobs = kube_common::kubectl_json(&kc, &["-n", &ns.name, "get", "jobs", "-o", "json"]);
    let smoke_name = jobs["items"]
        .as_array()
        .and_then(|j| {
            j.iter()
                .find(|j| j["metadata"]["labels"]["cohort.dev/check"] == "smoke")
        })
        .and_then(|j| j["metadata"]["name"].as_str())
        .expect("the smoke Job")
        .to_string();
    kube_common::kubectl(
        &kc,
        &["-n", &ns.name, "delete", "job", &smoke_name, "--wait"],
        None,
    );
    kube_common::kubectl(
        &kc,
        &[
            "-n",
            &ns.name,
            "create",
            "job",
            &smoke_name,
            "--image",
            IMAGE,
            "--",
            "sh",
            "-c",
            "exit 0",
        ],
        None,
    );
    let out = cohort(&repo, &analyze);
    let forged: Value = serde_json::from_slice(&out.stdout).expect("json");
    let smoke = forged["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "smoke"))
        .expect("smoke");
    assert_eq!(smoke["outcome"], "could_not_judge", "{smoke:#}");
    assert!(
        smoke["summary"]
            .as_str()
            .expect("summary")
            .contains("that cohort did not make for this run"),
        "{smoke:#}"
    );
    kube_common::kubectl(
        &kc,
        &["-n", &ns.name, "delete", "job", &smoke_name, "--wait"],
        None,
    );

    // Judged again, the same Jobs are read (or run again where deleted); without the failing
    // check it passes.
    std::fs::write(&path, format!("{seed}\n{}", yaml(&passing))).expect("write");
    let out = cohort(&repo, &analyze);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let jobs = kube_common::kubectl_json(&kc, &["-n", &ns.name, "get", "jobs", "-o", "json"]);
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(2), "{jobs:#}");
}

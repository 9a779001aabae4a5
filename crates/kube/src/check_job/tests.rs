use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::*;

fn run() -> CheckJobFor<'static> {
    CheckJobFor {
        namespace: "shop",
        service: "web",
        track: "canary",
        version: "1.18.0",
        check: "integration",
        address: "http://web-canary.shop.svc:80",
        timeout_seconds: 600,
    }
}

fn spec() -> Value {
    json!({
        "template": {
            "spec": {
                "containers": [{
                    "name": "tests",
                    "image": "registry.example.com/shop/web-tests:1",
                    "command": ["sh", "-c", "run-tests \"$COHORT_ADDRESS\""],
                }],
            },
        },
    })
}

fn problem(spec: &Value) -> JobSpecProblem {
    check_job_object(spec, &run()).expect_err("refused").problem
}

fn env_of(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_string(),
                e["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[test]
fn a_job_runs_in_the_pipelines_namespace_named_for_its_run_with_cohorts_labels() {
    let job = check_job_object(&spec(), &run()).expect("a Job");
    assert_eq!(job["apiVersion"], "batch/v1");
    assert_eq!(job["kind"], "Job");
    assert_eq!(job["metadata"]["namespace"], "shop");
    let name = job["metadata"]["name"].as_str().expect("a name");
    assert!(name.starts_with("web-canary-integration-v1-18-0-"), "{name}");
    assert_eq!(name.len(), "web-canary-integration-v1-18-0-".len() + 8, "{name}");
    assert!(is_dns_label(name), "{name}");
    let labels = &job["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/managed-by"], "cohort");
    assert_eq!(labels["app.kubernetes.io/part-of"], "web");
    assert_eq!(labels["cohort.dev/service"], "web");
    assert_eq!(labels["cohort.dev/track"], "canary");
    assert_eq!(labels["cohort.dev/check"], "integration");
    assert_eq!(job["metadata"]["annotations"]["cohort.dev/version"], "1.18.0");
    // The pods carry them too, and nothing that would put them behind the track's Service.
    let pod_labels = &job["spec"]["template"]["metadata"]["labels"];
    assert_eq!(pod_labels, labels);
    for plain in ["app", "tier", "track", "version"] {
        assert!(pod_labels.get(plain).is_none(), "{plain} in {pod_labels}");
    }
}

#[test]
fn the_same_run_gets_the_same_name_and_a_new_version_or_template_a_new_one() {
    let name = |spec: &Value, run: &CheckJobFor<'_>| {
        check_job_object(spec, run).expect("a Job")["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_string()
    };
    let first = name(&spec(), &run());
    assert_eq!(first, name(&spec(), &run()));
    let reordered: Value = serde_json::from_str(
        r#"{"template": {"spec": {"containers": [{"command": ["sh", "-c", "run-tests \"$COHORT_ADDRESS\""],
            "image": "registry.example.com/shop/web-tests:1", "name": "tests"}]}}}"#,
    )
    .expect("json");
    assert_eq!(first, name(&reordered, &run()));
    let newer = CheckJobFor {
        version: "1.19.0",
        ..run()
    };
    assert_ne!(first, name(&spec(), &newer));
    let mut changed = spec();
    changed["template"]["spec"]["containers"][0]["image"] = json!("registry.example.com/shop/web-tests:2");
    assert_ne!(first, name(&changed, &run()));
    let other_track = CheckJobFor {
        track: "paid",
        ..run()
    };
    assert_ne!(first, name(&spec(), &other_track));
}

#[test]
fn a_long_name_is_cut_to_a_dns_label_and_the_hash_keeps_runs_apart() {
    let long = CheckJobFor {
        service: "account-service-with-a-rather-long-name",
        check: "End_to_End integration suite (full)",
        version: "2024.10.3+build.517",
        ..run()
    };
    let job = check_job_object(&spec(), &long).expect("a Job");
    let name = job["metadata"]["name"].as_str().expect("name");
    assert!(is_dns_label(name), "{name}");
    assert!(
        name.starts_with("account-service-with-a-rather-long-name-canary-end-to-"),
        "{name}"
    );
    let other = CheckJobFor {
        version: "2024.10.3+build.518",
        ..long
    };
    let other_name = check_job_object(&spec(), &other).expect("a Job")["metadata"]["name"].clone();
    assert_ne!(job["metadata"]["name"], other_name);
    // Labels are label-safe; the annotations keep the exact text.
    assert_eq!(
        job["metadata"]["labels"]["cohort.dev/check"],
        "End_to_End-integration-suite--full"
    );
    assert_eq!(
        job["metadata"]["annotations"]["cohort.dev/check"],
        "End_to_End integration suite (full)"
    );
    assert_eq!(
        job["metadata"]["annotations"]["cohort.dev/version"],
        "2024.10.3+build.517"
    );
}

#[test]
fn left_out_the_job_does_not_retry_never_restarts_expires_in_a_week_and_ends_at_the_timeout() {
    let job = check_job_object(&spec(), &run()).expect("a Job");
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert_eq!(job["spec"]["ttlSecondsAfterFinished"], 7 * 24 * 3600);
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 600);
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
}

#[test]
fn what_the_template_sets_is_kept() {
    let mut s = spec();
    s["backoffLimit"] = json!(2);
    s["ttlSecondsAfterFinished"] = json!(60);
    s["activeDeadlineSeconds"] = json!(120);
    s["template"]["spec"]["restartPolicy"] = json!("OnFailure");
    s["template"]["metadata"] = json!({"labels": {"team": "checkout"}, "annotations": {"a": "b"}});
    let job = check_job_object(&s, &run()).expect("a Job");
    assert_eq!(job["spec"]["backoffLimit"], 2);
    assert_eq!(job["spec"]["ttlSecondsAfterFinished"], 60);
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 120);
    let template = &job["spec"]["template"];
    assert_eq!(template["spec"]["restartPolicy"], "OnFailure");
    assert_eq!(template["metadata"]["labels"]["team"], "checkout");
    assert_eq!(template["metadata"]["labels"]["cohort.dev/track"], "canary");
    assert_eq!(template["metadata"]["annotations"]["a"], "b");
    assert_eq!(
        template["spec"]["containers"][0]["image"],
        "registry.example.com/shop/web-tests:1"
    );
}

#[test]
fn every_container_learns_the_track_but_a_name_it_sets_itself_is_its_own() {
    let mut s = spec();
    s["template"]["spec"]["containers"][0]["env"] = json!([
        {"name": "COHORT_ADDRESS", "value": "http://web-canary.shop.svc:80/api"},
        {"name": "LOG_LEVEL", "value": "debug"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "t", "key": "k"}}},
    ]);
    s["template"]["spec"]["containers"]
        .as_array_mut()
        .expect("list")
        .push(json!({"name": "sidecar", "image": "busybox"}));
    s["template"]["spec"]["initContainers"] = json!([{"name": "wait", "image": "busybox"}]);
    let job = check_job_object(&s, &run()).expect("a Job");
    let pod = &job["spec"]["template"]["spec"];
    let expected = |address: &str| {
        vec![
            ("COHORT_SERVICE".to_string(), "web".to_string()),
            ("COHORT_TRACK".to_string(), "canary".to_string()),
            ("COHORT_VERSION".to_string(), "1.18.0".to_string()),
            ("COHORT_NAMESPACE".to_string(), "shop".to_string()),
            ("COHORT_ADDRESS".to_string(), address.to_string()),
        ]
    };
    let first = env_of(&pod["containers"][0]);
    assert_eq!(
        first[..3],
        [
            (
                "COHORT_ADDRESS".to_string(),
                "http://web-canary.shop.svc:80/api".to_string()
            ),
            ("LOG_LEVEL".to_string(), "debug".to_string()),
            ("TOKEN".to_string(), String::new()),
        ]
    );
    assert_eq!(first.len(), 7, "{first:?}");
    assert_eq!(
        first.iter().filter(|(n, _)| n == "COHORT_ADDRESS").count(),
        1,
        "{first:?}"
    );
    assert_eq!(
        pod["containers"][0]["env"][2]["valueFrom"]["secretKeyRef"]["name"],
        "t"
    );
    assert_eq!(
        env_of(&pod["containers"][1]),
        expected("http://web-canary.shop.svc:80")
    );
    assert_eq!(
        env_of(&pod["initContainers"][0]),
        expected("http://web-canary.shop.svc:80")
    );
}

#[test]
fn what_cannot_run_is_refused_saying_what_to_do() {
    assert_eq!(
        problem(&json!("tests.yaml")),
        JobSpecProblem::NotAMapping {
            path: "job".into(),
            found: "a string"
        }
    );
    assert_eq!(problem(&json!({})), JobSpecProblem::NoContainers);
    assert_eq!(
        problem(&json!({"template": {"spec": {}}})),
        JobSpecProblem::NoContainers
    );
    assert_eq!(
        problem(&json!({"template": {"spec": {"containers": []}}})),
        JobSpecProblem::NoContainers
    );
    assert_eq!(
        problem(&json!({"template": {"spec": {"containers": {"name": "x"}}}})),
        JobSpecProblem::NotAList {
            path: "job.template.spec.containers".into(),
            found: "a mapping"
        }
    );
    assert_eq!(
        problem(&json!({"template": ["x"]})),
        JobSpecProblem::NotAMapping {
            path: "job.template".into(),
            found: "a list"
        }
    );
    assert_eq!(
        problem(&json!({"template": {"spec": {"containers": ["tests"]}}})),
        JobSpecProblem::NotAMapping {
            path: "job.template.spec.containers[0]".into(),
            found: "a string"
        }
    );
    let mut s = spec();
    s["template"]["spec"]["containers"][0]["env"] = json!({"A": "b"});
    assert_eq!(
        problem(&s),
        JobSpecProblem::NotAList {
            path: "job.template.spec.containers[0].env".into(),
            found: "a mapping"
        }
    );
    let mut s = spec();
    s["selector"] = json!({"matchLabels": {"a": "b"}});
    assert_eq!(
        problem(&s),
        JobSpecProblem::ServerSetsSelector { field: "selector" }
    );
    let mut s = spec();
    s["manualSelector"] = json!(true);
    assert_eq!(
        problem(&s),
        JobSpecProblem::ServerSetsSelector {
            field: "manualSelector"
        }
    );
    let mut s = spec();
    s["template"]["spec"]["restartPolicy"] = json!("Always");
    assert_eq!(problem(&s), JobSpecProblem::RestartAlways);
    let mut s = spec();
    s["template"]["metadata"] = json!({"namespace": "tests"});
    assert_eq!(
        problem(&s),
        JobSpecProblem::OtherNamespace {
            written: "tests".into(),
            pipeline: "shop".into()
        }
    );
    let never = CheckJobFor {
        timeout_seconds: 0,
        ..run()
    };
    assert_eq!(
        check_job_object(&spec(), &never).expect_err("refused").problem,
        JobSpecProblem::ZeroTimeout
    );

    let e = check_job_object(&json!({"manualSelector": true}), &run()).expect_err("refused");
    assert_eq!(
        e.to_string(),
        "check integration of service web: job.manualSelector is set: the API server makes a Job's \
         selector (and labels its pods to match); remove it"
    );
    let e = check_job_object(&json!({}), &run()).expect_err("refused");
    assert!(e.to_string().contains("give the container(s) to run"), "{e}");
}

/// A Job as a 1.28 API server returns it once created (its selector and pod labels set).
fn job(status: Value) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "web-canary-integration-v1-18-0-3fa9c2b1",
            "namespace": "shop",
            "uid": "5b0c3b8e-4d3a-4c61-9a52-1f3f5e0f6a11",
            "creationTimestamp": "2025-03-01T10:00:00Z",
            "labels": {"app.kubernetes.io/managed-by": "cohort", "cohort.dev/check": "integration"},
        },
        "spec": {
            "parallelism": 1,
            "completions": 1,
            "activeDeadlineSeconds": 600,
            "backoffLimit": 0,
            "completionMode": "NonIndexed",
            "suspend": false,
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "5b0c3b8e-4d3a-4c61-9a52-1f3f5e0f6a11"}},
            "template": {"spec": {"containers": [{"name": "tests", "image": "t"}], "restartPolicy": "Never"}},
        },
        "status": status,
    })
}

#[test]
fn a_job_with_a_pod_running_is_running() {
    let j = job(json!({
        "active": 1, "ready": 1, "startTime": "2025-03-01T10:00:01Z",
        "uncountedTerminatedPods": {},
    }));
    assert_eq!(job_outcome(&j), JobOutcome::Running);
    assert_eq!(started(&j), Some(1_740_823_201));
    // Just created: no status yet.
    assert_eq!(job_outcome(&job(json!({}))), JobOutcome::Running);
    assert_eq!(started(&job(json!({}))), Some(1_740_823_200));
}

#[test]
fn a_complete_job_succeeded() {
    let j = job(json!({
        "conditions": [{
            "type": "Complete", "status": "True",
            "lastProbeTime": "2025-03-01T10:00:09Z", "lastTransitionTime": "2025-03-01T10:00:09Z",
        }],
        "startTime": "2025-03-01T10:00:01Z", "completionTime": "2025-03-01T10:00:09Z",
        "succeeded": 1, "ready": 0, "uncountedTerminatedPods": {},
    }));
    assert_eq!(job_outcome(&j), JobOutcome::Succeeded);
    // A newer server says so first, while the pods finish.
    let newer = job(json!({
        "conditions": [{"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                        "message": "Reached expected number of succeeded pods"}],
        "active": 0, "succeeded": 1, "terminating": 0,
    }));
    assert_eq!(job_outcome(&newer), JobOutcome::Succeeded);
}

#[test]
fn a_job_past_its_backoff_limit_failed_with_the_controllers_reason() {
    let j = job(json!({
        "conditions": [{
            "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit",
            "lastProbeTime": "2025-03-01T10:00:07Z", "lastTransitionTime": "2025-03-01T10:00:07Z",
        }],
        "failed": 1, "ready": 0, "startTime": "2025-03-01T10:00:01Z", "uncountedTerminatedPods": {},
    }));
    assert_eq!(
        job_outcome(&j),
        JobOutcome::Failed {
            reason: "BackoffLimitExceeded".into(),
            message: "Job has reached the specified backoff limit".into()
        }
    );
    // A newer server marks the failure as its target while the pods still terminate.
    let newer = job(json!({
        "conditions": [{"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                        "message": "Job has reached the specified backoff limit"}],
        "failed": 1, "terminating": 0, "active": 0,
    }));
    assert_eq!(job_outcome(&newer), job_outcome(&j));
    // Counted before the condition is written.
    let counted = job(json!({"failed": 1, "active": 0}));
    assert!(
        matches!(job_outcome(&counted), JobOutcome::Failed { reason, .. } if reason == "BackoffLimitExceeded")
    );
    // With retries allowed, a failed pod is not yet a failed Job.
    let mut retrying = job(json!({"failed": 1, "active": 1}));
    retrying["spec"]["backoffLimit"] = json!(2);
    assert_eq!(job_outcome(&retrying), JobOutcome::Running);
}

#[test]
fn a_job_past_its_deadline_failed_with_deadline_exceeded() {
    let j = job(json!({
        "conditions": [{
            "type": "Failed", "status": "True", "reason": "DeadlineExceeded",
            "message": "Job was active longer than specified deadline",
            "lastProbeTime": "2025-03-01T10:10:01Z", "lastTransitionTime": "2025-03-01T10:10:01Z",
        }],
        "failed": 1, "ready": 0, "startTime": "2025-03-01T10:00:01Z", "uncountedTerminatedPods": {},
    }));
    assert_eq!(
        job_outcome(&j),
        JobOutcome::Failed {
            reason: "DeadlineExceeded".into(),
            message: "Job was active longer than specified deadline".into()
        }
    );
    // A condition that is not (or no longer) true says nothing.
    let suspended = job(json!({
        "conditions": [{"type": "Suspended", "status": "False", "reason": "JobResumed"},
                       {"type": "Failed", "status": "False"}],
        "active": 1,
    }));
    assert_eq!(job_outcome(&suspended), JobOutcome::Running);
}

#[test]
fn a_jobs_pods_are_found_by_its_selector() {
    assert_eq!(
        pods_selector(&job(json!({}))),
        "batch.kubernetes.io/controller-uid=5b0c3b8e-4d3a-4c61-9a52-1f3f5e0f6a11"
    );
    let mut j = job(json!({}));
    j["spec"]["selector"] = Value::Null;
    assert_eq!(
        pods_selector(&j),
        "job-name=web-canary-integration-v1-18-0-3fa9c2b1"
    );
}

fn pod(name: &str, created: &str, statuses: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "creationTimestamp": created},
        "spec": {"containers": [{"name": "tests", "image": "t"}, {"name": "proxy", "image": "p"}]},
        "status": {"phase": "Failed", "containerStatuses": statuses},
    }))
    .expect("a pod")
}

#[test]
fn the_logs_come_from_the_newest_pod_and_its_failed_container() {
    let terminated = |name: &str, code: i32| {
        json!({"name": name, "ready": false, "restartCount": 0, "image": "t", "imageID": "",
               "state": {"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }}}})
    };
    let pods = [
        pod("a-1", "2025-03-01T10:00:01Z", json!([terminated("tests", 1)])),
        pod(
            "a-2",
            "2025-03-01T10:00:05Z",
            json!([terminated("tests", 0), terminated("proxy", 2)]),
        ),
    ];
    let newest = newest_pod(&pods).expect("a pod");
    assert_eq!(newest.metadata.name.as_deref(), Some("a-2"));
    assert_eq!(log_container(newest).as_deref(), Some("proxy"));
    let waiting = pod("a-3", "2025-03-01T10:00:09Z", json!([]));
    assert_eq!(log_container(&waiting).as_deref(), Some("tests"));
    assert!(newest_pod(&[]).is_none());
}

#[test]
fn the_log_tail_is_the_last_twenty_lines_and_at_most_8_kib() {
    let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
    let tail = log_tail(&text, 20, 8192);
    assert!(tail.starts_with("line 11\n"), "{tail}");
    assert!(tail.ends_with("line 30"), "{tail}");
    assert_eq!(tail.lines().count(), 20);
    assert_eq!(log_tail("only\n", 20, 8192), "only");
    assert_eq!(log_tail("", 20, 8192), "");
    // Long lines: the end is kept, from a line's start where one falls in it.
    let long = format!("{}\n{}\nlast\n", "a".repeat(9000), "b".repeat(100));
    assert_eq!(log_tail(&long, 20, 8192), format!("{}\nlast", "b".repeat(100)));
    // One line longer than the limit: its end, cut at a character.
    let wide = "é".repeat(5000);
    let tail = log_tail(&wide, 20, 8192);
    assert!(
        tail.len() <= 8192 && tail.chars().all(|c| c == 'é'),
        "{}",
        tail.len()
    );
}

#[test]
fn a_job_never_runs_as_an_account_of_the_namespace_nor_with_the_nodes_powers() {
    // Found in review: the autopilot made the Job with its rights, as whatever it named.
    let mut hostile = spec();
    hostile["template"]["spec"]["serviceAccountName"] = json!("cohort-autopilot");
    let e = check_job_object(&hostile, &run()).expect_err("refused");
    assert!(matches!(e.problem, JobSpecProblem::Refused(_)), "{e}");
    assert!(
        e.to_string()
            .contains("job.template.spec.serviceAccountName is set"),
        "{e}"
    );
    let mut host = spec();
    host["template"]["spec"]["hostPID"] = json!(true);
    assert!(check_job_object(&host, &run()).is_err());
    // Without a word about it, the default account's token is not mounted.
    let job = check_job_object(&spec(), &run()).expect("a Job");
    assert_eq!(
        job["spec"]["template"]["spec"]["automountServiceAccountToken"],
        false
    );
    let mut asks = spec();
    asks["template"]["spec"]["automountServiceAccountToken"] = json!(true);
    let job = check_job_object(&asks, &run()).expect("a Job");
    assert_eq!(
        job["spec"]["template"]["spec"]["automountServiceAccountToken"],
        true
    );
    // The run it was made for is written on it.
    assert_eq!(
        job["metadata"]["annotations"][RUN_ANNOTATION],
        job["metadata"]["name"]
    );
}

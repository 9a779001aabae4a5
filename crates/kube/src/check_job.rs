//! Job checks: a Job the team wrote (integration tests, say) run against one track as part of
//! its judgement. The Job object is made here from the template, deterministically, so every
//! autopilot pass (and every replica) finds the same run by name; what the API server says of
//! it is read into an outcome and the tail of its logs, the evidence a judgement shows.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, LogParams, PostParams};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::{Cluster, KubeError};

/// Label on a check's Job and its pods: the service it judges.
pub const LABEL_SERVICE: &str = "cohort.dev/service";
/// Label on a check's Job and its pods: the track it judges.
pub const LABEL_TRACK: &str = "cohort.dev/track";
/// Label on a check's Job and its pods: the check's name.
pub const LABEL_CHECK: &str = "cohort.dev/check";
/// Annotation on a check's Job: the version judged, exactly (a label could not hold `+`).
pub const VERSION_ANNOTATION: &str = "cohort.dev/version";
/// Annotation on a check's Job: the check's name, exactly (its label is made label-safe).
pub const CHECK_ANNOTATION: &str = "cohort.dev/check";
/// The annotation naming the run a Job was made for (its own name, as cohort made it): a Job
/// of that name without it was not made by cohort for this run.
pub const RUN_ANNOTATION: &str = "cohort.dev/run";

/// The environment every container of a check's Job gets (unless it sets the name itself).
pub const ENV_NAMES: [&str; 5] = [
    "COHORT_SERVICE",
    "COHORT_TRACK",
    "COHORT_VERSION",
    "COHORT_NAMESPACE",
    "COHORT_ADDRESS",
];

/// A failing test should fail the check, not be retried until it happens to pass.
const DEFAULT_BACKOFF_LIMIT: u64 = 0;
/// A finished Job is the record of its check for that version: every autopilot pass reads
/// it, and one deleted is run again. A week outlives a version's time on a track; older
/// Jobs (and their pods' logs) then go by themselves.
const DEFAULT_TTL_SECONDS: u64 = 7 * 24 * 3600;
/// At most this many of the last lines of the logs are kept as evidence.
pub const LOG_TAIL_LINES: usize = 20;
/// At most this many bytes of the last lines are kept as evidence.
pub const LOG_TAIL_BYTES: usize = 8 * 1024;
/// At most this many bytes of the last lines are read from the API server.
const LOG_READ_BYTES: i64 = 256 * 1024;
/// Hex digits of the run's hash in a Job's name: enough to tell templates of one version apart.
const HASH_DIGITS: usize = 8;
/// The longest Job name: its pods carry it in a label, and label values stop at 63.
const MAX_NAME: usize = 63;

/// What identifies one run of a check against a track.
#[derive(Clone, Copy, Debug)]
pub struct CheckJobFor<'a> {
    /// The pipeline's namespace: the Job runs there.
    pub namespace: &'a str,
    /// The service judged.
    pub service: &'a str,
    /// The track judged.
    pub track: &'a str,
    /// The track's version.
    pub version: &'a str,
    /// The check's name.
    pub check: &'a str,
    /// The track's address, e.g. http://web-canary.shop.svc:80
    pub address: &'a str,
    /// Fail the Job after this long (activeDeadlineSeconds unless the template sets one).
    pub timeout_seconds: u64,
}

/// Why a check's Job template cannot be run, and where: the check and its service.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("check {check} of service {service}: {problem}")]
pub struct CheckJobError {
    /// The service whose judgement has the check.
    pub service: String,
    /// The check's name.
    pub check: String,
    /// What is wrong with its `job:`.
    pub problem: JobSpecProblem,
}

/// What is wrong with a check's `job:` (a Job spec), each saying how to put it right.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobSpecProblem {
    /// A part that must be a mapping is something else.
    #[error("{path} is {found}, not a mapping: write a Job spec there (template.spec.containers, ...)")]
    NotAMapping {
        /// Where, as written under the check (`job.template.spec`).
        path: String,
        /// What it is (`a string`, `a list`, ...).
        found: &'static str,
    },
    /// A part that must be a list is something else.
    #[error("{path} is {found}, not a list")]
    NotAList {
        /// Where (`job.template.spec.containers[0].env`).
        path: String,
        /// What it is.
        found: &'static str,
    },
    /// No container to run.
    #[error(
        "job.template.spec.containers is missing or empty: give the container(s) to run, each with a name and an image"
    )]
    NoContainers,
    /// A field the API server sets itself.
    #[error(
        "job.{field} is set: the API server makes a Job's selector (and labels its pods to match); remove it"
    )]
    ServerSetsSelector {
        /// `selector` or `manualSelector`.
        field: &'static str,
    },
    /// `restartPolicy: Always`, which a Job's pods may not have: they must end.
    #[error(
        "job.template.spec.restartPolicy is Always: a Job's pods must end; use Never (the default) or OnFailure"
    )]
    RestartAlways,
    /// The pod template names another namespace.
    #[error(
        "job.template.metadata.namespace is {written}: a check's Job runs in the pipeline's namespace {pipeline}; remove it"
    )]
    OtherNamespace {
        /// The namespace written.
        written: String,
        /// The pipeline's.
        pipeline: String,
    },
    /// A timeout of zero, which the API server refuses (activeDeadlineSeconds must be positive).
    #[error("the check's timeout is 0 s: give it a positive timeout")]
    ZeroTimeout,
    /// A power a check's Job may not have (an account of the namespace, the node's namespaces
    /// or files, a privileged container): `cohort_core::checks::job_refusals` says which.
    #[error("job.{0}")]
    Refused(String),
}

/// Where a check's Job is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// Not finished (or not started yet).
    Running,
    /// Succeeded: the check passes.
    Succeeded,
    /// Failed: the check fails, for the reason the Job controller gave.
    Failed {
        /// `BackoffLimitExceeded`, `DeadlineExceeded`, `PodFailurePolicy`, ...
        reason: String,
        /// The controller's sentence.
        message: String,
    },
}

/// A check's Job as the cluster has it: the outcome and the evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckJobState {
    /// The Job's name.
    pub name: String,
    /// Running, succeeded or failed.
    pub outcome: JobOutcome,
    /// When the Job started (unix seconds): `status.startTime`, else when it was created.
    pub started: Option<i64>,
    /// The last lines (at most [`LOG_TAIL_LINES`], [`LOG_TAIL_BYTES`]) of its newest pod's
    /// logs; empty when that pod has not started or there is none.
    pub log_tail: String,
    /// Whether cohort made it for this run (its managed-by label and run annotation): a Job
    /// of the same name made by someone else is never read as the check's outcome.
    pub ours: bool,
}

/// The batch/v1 Job to create from `spec` (a JobSpec as JSON: what the user wrote under the
/// check's `job:`).
///
/// - Its name is `<service>-<track>-<check>-v<version>-<hash>`, the hash over the run (the
///   spec, the namespace, service, track, check, version, address and timeout): every pass
///   finds the same run, and a new version or a changed template is a new run. Longer than
///   63 characters, the readable part is cut (the hash keeps it unique).
/// - It runs in `run.namespace`, labelled as cohort's (`managed-by`, `part-of: <service>`)
///   and with the service, track and check; its pods too (not with `app`/`tier`/`track`,
///   which would put them behind the track's Service).
/// - Every container (and init container) gets `COHORT_SERVICE`, `COHORT_TRACK`,
///   `COHORT_VERSION`, `COHORT_NAMESPACE` and `COHORT_ADDRESS`, except a name the template
///   sets itself: what a user wrote on purpose (an address with a path, say) is theirs.
/// - Left out, `backoffLimit` is 0 (a failing test must not be retried into a pass
///   silently), `template.spec.restartPolicy` Never, `ttlSecondsAfterFinished` a week and
///   `activeDeadlineSeconds` the timeout; what the template sets is kept.
pub fn check_job_object(spec: &Value, run: &CheckJobFor<'_>) -> Result<Value, CheckJobError> {
    let refuse = |problem| CheckJobError {
        service: run.service.to_string(),
        check: run.check.to_string(),
        problem,
    };
    let mut spec_map = mapping(spec, "job").map_err(refuse)?.clone();
    for field in ["selector", "manualSelector"] {
        if spec_map.get(field).is_some_and(|v| !v.is_null()) {
            return Err(refuse(JobSpecProblem::ServerSetsSelector { field }));
        }
    }
    if run.timeout_seconds == 0 {
        return Err(refuse(JobSpecProblem::ZeroTimeout));
    }
    // Refused when the repo was read; again here, as the Job is made with cohort's rights.
    if let Some(why) = cohort_core::checks::job_refusals(spec).into_iter().next() {
        return Err(refuse(JobSpecProblem::Refused(why)));
    }
    let name = job_name(spec, run);
    let ours = labels(run);

    let template = spec_map
        .entry("template")
        .or_insert_with(|| Value::Object(Map::new()));
    let template = mapping_mut(template, "job.template").map_err(refuse)?;
    let metadata = template
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let metadata = mapping_mut(metadata, "job.template.metadata").map_err(refuse)?;
    if let Some(written) = metadata.get("namespace").and_then(Value::as_str)
        && written != run.namespace
    {
        return Err(refuse(JobSpecProblem::OtherNamespace {
            written: written.to_string(),
            pipeline: run.namespace.to_string(),
        }));
    }
    let pod_labels = metadata
        .entry("labels")
        .or_insert_with(|| Value::Object(Map::new()));
    let pod_labels = mapping_mut(pod_labels, "job.template.metadata.labels").map_err(refuse)?;
    for (k, v) in &ours {
        pod_labels.insert(k.clone(), Value::String(v.clone()));
    }

    let pod = template
        .get_mut("spec")
        .ok_or(JobSpecProblem::NoContainers)
        .map_err(refuse)?;
    let pod = mapping_mut(pod, "job.template.spec").map_err(refuse)?;
    // The namespace's default account's token is the Job's only if it asks for it.
    if pod.get("automountServiceAccountToken").is_none_or(Value::is_null) {
        pod.insert("automountServiceAccountToken".into(), json!(false));
    }
    match pod.get("restartPolicy").and_then(Value::as_str) {
        Some("Always") => return Err(refuse(JobSpecProblem::RestartAlways)),
        Some(_) => {}
        None => {
            pod.insert("restartPolicy".into(), json!("Never"));
        }
    }
    let env = cohort_env(run);
    let has_containers = pod
        .get("containers")
        .and_then(Value::as_array)
        .is_some_and(|c| !c.is_empty());
    if !has_containers {
        return Err(refuse(match pod.get("containers") {
            Some(c) if !c.is_array() && !c.is_null() => JobSpecProblem::NotAList {
                path: "job.template.spec.containers".into(),
                found: kind_of(c),
            },
            _ => JobSpecProblem::NoContainers,
        }));
    }
    for list in ["containers", "initContainers"] {
        let Some(containers) = pod.get_mut(list).filter(|c| !c.is_null()) else {
            continue;
        };
        let path = format!("job.template.spec.{list}");
        let found = kind_of(containers);
        let containers = containers.as_array_mut().ok_or_else(|| {
            refuse(JobSpecProblem::NotAList {
                path: path.clone(),
                found,
            })
        })?;
        for (i, container) in containers.iter_mut().enumerate() {
            let path = format!("{path}[{i}]");
            let container = mapping_mut(container, &path).map_err(refuse)?;
            add_env(container, &env, &format!("{path}.env")).map_err(refuse)?;
        }
    }

    let defaults = [
        ("backoffLimit", json!(DEFAULT_BACKOFF_LIMIT)),
        ("ttlSecondsAfterFinished", json!(DEFAULT_TTL_SECONDS)),
        // The API server takes an int64.
        (
            "activeDeadlineSeconds",
            json!(i64::try_from(run.timeout_seconds).unwrap_or(i64::MAX)),
        ),
    ];
    for (field, value) in defaults {
        if spec_map.get(field).is_none_or(Value::is_null) {
            spec_map.insert(field.into(), value);
        }
    }

    Ok(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": run.namespace,
            "labels": ours,
            "annotations": {
                VERSION_ANNOTATION: run.version,
                CHECK_ANNOTATION: run.check,
                RUN_ANNOTATION: name,
            },
        },
        "spec": spec_map,
    }))
}

/// The Job's name for `run` of `spec`: readable, unique to the run, a DNS-1123 label.
fn job_name(spec: &Value, run: &CheckJobFor<'_>) -> String {
    let mut hasher = Sha256::new();
    for part in [
        run.namespace,
        run.service,
        run.track,
        run.check,
        run.version,
        run.address,
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher.update(run.timeout_seconds.to_be_bytes());
    let mut canonical = String::new();
    canonical_json(spec, &mut canonical);
    hasher.update(canonical.as_bytes());
    let hash: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .chars()
        .take(HASH_DIGITS)
        .collect();
    let readable = dns_label(&format!(
        "{}-{}-{}-v{}",
        run.service, run.track, run.check, run.version
    ));
    let room = MAX_NAME - HASH_DIGITS - 1;
    let readable = readable
        .get(..room.min(readable.len()))
        .unwrap_or(&readable)
        .trim_end_matches('-');
    match readable {
        "" => format!("check-{hash}"),
        r => format!("{r}-{hash}"),
    }
}

/// `text` lowercased, with runs of anything but letters and digits made one `-`, no `-` at
/// either end: the characters of a DNS-1123 label.
fn dns_label(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().map(|c| c.to_ascii_lowercase()) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// `text` as a label value: at most 63 of `[A-Za-z0-9._-]`, beginning and ending with a
/// letter or digit (the exact text is in an annotation where it matters).
fn label_value(text: &str) -> String {
    let safe: String = text
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '-',
        })
        .take(MAX_NAME)
        .collect();
    safe.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// The labels of a check's Job and its pods.
fn labels(run: &CheckJobFor<'_>) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            cohort_render::LABEL_MANAGED_BY.to_string(),
            cohort_render::MANAGER.to_string(),
        ),
        (cohort_render::LABEL_PART_OF.to_string(), label_value(run.service)),
        (LABEL_SERVICE.to_string(), label_value(run.service)),
        (LABEL_TRACK.to_string(), label_value(run.track)),
        (LABEL_CHECK.to_string(), label_value(run.check)),
    ])
}

fn cohort_env(run: &CheckJobFor<'_>) -> Vec<(&'static str, String)> {
    let values = [run.service, run.track, run.version, run.namespace, run.address];
    ENV_NAMES
        .into_iter()
        .zip(values)
        .map(|(name, value)| (name, value.to_string()))
        .collect()
}

/// Adds `env` to `container`'s, leaving the names it sets itself as they are.
fn add_env(
    container: &mut Map<String, Value>,
    env: &[(&'static str, String)],
    path: &str,
) -> Result<(), JobSpecProblem> {
    let list = container.entry("env").or_insert_with(|| Value::Array(vec![]));
    if list.is_null() {
        *list = Value::Array(vec![]);
    }
    let found = kind_of(list);
    let list = list.as_array_mut().ok_or_else(|| JobSpecProblem::NotAList {
        path: path.to_string(),
        found,
    })?;
    for (name, value) in env {
        if !list.iter().any(|e| e["name"] == *name) {
            list.push(json!({ "name": name, "value": value }));
        }
    }
    Ok(())
}

fn mapping<'v>(v: &'v Value, path: &str) -> Result<&'v Map<String, Value>, JobSpecProblem> {
    v.as_object().ok_or_else(|| JobSpecProblem::NotAMapping {
        path: path.to_string(),
        found: kind_of(v),
    })
}

fn mapping_mut<'v>(v: &'v mut Value, path: &str) -> Result<&'v mut Map<String, Value>, JobSpecProblem> {
    if v.is_null() {
        *v = Value::Object(Map::new());
    }
    let found = kind_of(v);
    v.as_object_mut().ok_or_else(|| JobSpecProblem::NotAMapping {
        path: path.to_string(),
        found,
    })
}

/// What a JSON value is, as a sentence says it.
fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// `v` written with its keys sorted, whatever order they were parsed in: the same spec hashes
/// the same however its YAML was ordered.
fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            out.push('{');
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Where a Job is, from the object as the API server returns it: its conditions `Complete` /
/// `Failed` (and, on servers that say so before the pods have gone, `SuccessCriteriaMet` /
/// `FailureTarget`), else its counts (`succeeded` against `completions`, `failed` against
/// `backoffLimit`), which a controller that has not written its condition yet already shows.
pub fn job_outcome(job: &Value) -> JobOutcome {
    let status = &job["status"];
    let condition = |kind: &str| {
        status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == kind && c["status"] == "True")
    };
    let failed = |c: &Value| JobOutcome::Failed {
        reason: c["reason"].as_str().unwrap_or("Failed").to_string(),
        message: c["message"].as_str().unwrap_or_default().to_string(),
    };
    if condition("Complete").is_some() {
        return JobOutcome::Succeeded;
    }
    if let Some(c) = condition("Failed") {
        return failed(c);
    }
    if condition("SuccessCriteriaMet").is_some() {
        return JobOutcome::Succeeded;
    }
    if let Some(c) = condition("FailureTarget") {
        return failed(c);
    }
    let spec = &job["spec"];
    let count = |v: &Value| v.as_u64().unwrap_or(0);
    let (succeeded, failures, active) = (
        count(&status["succeeded"]),
        count(&status["failed"]),
        count(&status["active"]),
    );
    let done = match spec["completions"].as_u64() {
        Some(completions) => succeeded >= completions.max(1),
        // Without completions, the first pod to succeed completes the Job once none is left.
        None => succeeded >= 1 && active == 0,
    };
    if done {
        return JobOutcome::Succeeded;
    }
    // The API server's default backoffLimit is 6.
    let limit = spec["backoffLimit"].as_u64().unwrap_or(6);
    if failures > limit {
        return JobOutcome::Failed {
            reason: "BackoffLimitExceeded".into(),
            message: format!("{failures} pod(s) failed; the Job allows {limit} retries"),
        };
    }
    JobOutcome::Running
}

/// The label selector of a Job's pods: its `spec.selector.matchLabels` (the API server's own,
/// `controller-uid`), else the `job-name` label every Job controller puts on its pods.
pub fn pods_selector(job: &Value) -> String {
    let from_spec: Vec<String> = job["spec"]["selector"]["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
        .collect();
    match from_spec.is_empty() {
        false => from_spec.join(","),
        true => format!(
            "job-name={}",
            job["metadata"]["name"].as_str().unwrap_or_default()
        ),
    }
}

/// The pod whose logs say most about the run: the newest (a retry's, when there were some).
pub fn newest_pod(pods: &[Pod]) -> Option<&Pod> {
    pods.iter().max_by(|a, b| {
        let key = |p: &Pod| {
            (
                p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                p.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    })
}

/// The container of `pod` to read logs from: the first that failed, else the first that ran
/// (a pod of several containers needs one named).
pub fn log_container(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    let failed = statuses.into_iter().flatten().find(|s| {
        s.state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .is_some_and(|t| t.exit_code != 0)
    });
    failed.map(|s| s.name.clone()).or_else(|| {
        pod.spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .map(|c| c.name.clone())
    })
}

/// The last `lines` lines of `text`, and of those no more than the last `bytes` bytes (cut at
/// a character, and at a line when one starts in the part kept).
pub fn log_tail(text: &str, lines: usize, bytes: usize) -> String {
    let text = text.trim_end_matches('\n');
    let start = text
        .rmatch_indices('\n')
        .nth(lines.saturating_sub(1))
        .map_or(0, |(i, _)| i + 1);
    let mut tail = &text[start..];
    if tail.len() > bytes {
        let mut cut = tail.len() - bytes;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = &tail[cut..];
        if let Some(newline) = tail.find('\n') {
            tail = &tail[newline + 1..];
        }
    }
    tail.to_string()
}

/// When the Job started, in unix seconds: `status.startTime`, else its creation.
fn started(job: &Value) -> Option<i64> {
    [&job["status"]["startTime"], &job["metadata"]["creationTimestamp"]]
        .into_iter()
        .filter_map(Value::as_str)
        .find_map(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second())
}

impl Cluster {
    fn jobs(&self) -> Api<DynamicObject> {
        // Untyped: a Job as the user wrote it, fields newer than k8s-openapi's included.
        Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &ApiResource::erase::<Job>(&()),
        )
    }

    /// Creates the Job unless one of that name exists (AlreadyExists is fine: another
    /// autopilot replica, or an earlier pass, started it). Returns its name.
    pub async fn start_check_job(&self, job: &Value) -> Result<String, KubeError> {
        let name = job["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let doing = || format!("create job {name} in namespace {}", self.namespace);
        let object: DynamicObject =
            serde_json::from_value(job.clone()).map_err(|e| KubeError::Transport {
                doing: doing(),
                source: kube::Error::SerdeError(e),
            })?;
        match self.jobs().create(&PostParams::default(), &object).await {
            Ok(created) => Ok(created.metadata.name.unwrap_or(name)),
            Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => Ok(name),
            Err(e) => Err(KubeError::from_kube(doing(), e)),
        }
    }

    /// The Job's state and the last lines (at most 20 lines / 8 KiB) of its newest pod's logs;
    /// None when no such Job.
    pub async fn check_job_state(&self, name: &str) -> Result<Option<CheckJobState>, KubeError> {
        let ns = &self.namespace;
        let Some(job) = self
            .jobs()
            .get_opt(name)
            .await
            .map_err(|e| KubeError::from_kube(format!("get job {name} in namespace {ns}"), e))?
        else {
            return Ok(None);
        };
        let job = serde_json::to_value(&job).map_err(|e| KubeError::Transport {
            doing: format!("read job {name} in namespace {ns}"),
            source: kube::Error::SerdeError(e),
        })?;
        let pods = self
            .api::<Pod>()
            .list(&ListParams::default().labels(&pods_selector(&job)))
            .await
            .map_err(|e| KubeError::from_kube(format!("list pods of job {name} in namespace {ns}"), e))?;
        let log_tail = match newest_pod(&pods.items) {
            Some(pod) => self.pod_log_tail(pod).await,
            None => String::new(),
        };
        let ours = job["metadata"]["annotations"][RUN_ANNOTATION] == name
            && job["metadata"]["labels"][cohort_render::LABEL_MANAGED_BY] == cohort_render::MANAGER;
        Ok(Some(CheckJobState {
            ours,
            name: name.to_string(),
            outcome: job_outcome(&job),
            started: started(&job),
            log_tail,
        }))
    }

    /// The last lines of `pod`'s logs; empty when it has none yet (a container waiting to
    /// start) or it has just gone. Logs are evidence, not the outcome (the Job's status is):
    /// when they cannot be read (no `pods/log` right, a node the API server cannot reach),
    /// the tail says so and why.
    async fn pod_log_tail(&self, pod: &Pod) -> String {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let params = LogParams {
            container: log_container(pod),
            tail_lines: Some(LOG_TAIL_LINES as i64),
            // Twenty lines of a chatty test can be long: read a bounded amount (the server
            // cuts its end, so lines longer than that in all show their start), keep the end.
            limit_bytes: Some(LOG_READ_BYTES),
            ..LogParams::default()
        };
        match self.api::<Pod>().logs(&name, &params).await {
            Ok(text) => log_tail(&text, LOG_TAIL_LINES, LOG_TAIL_BYTES),
            Err(kube::Error::Api(s)) if s.code == 400 || s.code == 404 => String::new(),
            Err(e) => {
                let e = KubeError::from_kube(
                    format!("get logs of pod {name} in namespace {}", self.namespace),
                    e,
                );
                format!("(its logs could not be read: {e})")
            }
        }
    }
}

#[cfg(test)]
mod tests;

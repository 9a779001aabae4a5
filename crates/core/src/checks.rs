//! Extra checks of a canary judgement, beside the router's own counts: Prometheus queries,
//! web checks and Kubernetes Jobs, as written under `judgement.checks` in `cohort.yaml` and in
//! a service's spec (whose checks add to the pipeline's, or replace one of the same name).

use crate::{Duration, SecretRef};

/// What a template may name, each written `{{name}}`.
pub const TEMPLATE_VARIABLES: &[&str] = &["service", "track", "version", "namespace", "window", "address"];

/// A text with `{{variable}}` holes: a PromQL query or a URL.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Template(String);

/// Why a template cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without its `}}`.
    #[error("`{{{{` at byte {0} is not closed with `}}}}`")]
    Unclosed(usize),
    /// A name cohort does not fill in.
    #[error("`{{{{{0}}}}}` is not a variable cohort fills in")]
    Unknown(String),
}

/// The values a template is filled in with, for one track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateValues<'a> {
    /// The service.
    pub service: &'a str,
    /// The track judged (or its baseline).
    pub track: &'a str,
    /// The version it runs.
    pub version: &'a str,
    /// The pipeline's namespace.
    pub namespace: &'a str,
    /// The judgement window as a PromQL duration, e.g. `600s`.
    pub window: &'a str,
    /// The track's address inside the cluster, e.g. `http://web-canary.shop.svc:80`.
    pub address: &'a str,
}

impl Template {
    /// Reads a template, refusing unknown variables and unclosed holes.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut rest = text;
        let mut at = 0;
        while let Some(open) = rest.find("{{") {
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or(TemplateError::Unclosed(at + open))?;
            let name = after[..close].trim();
            if !TEMPLATE_VARIABLES.contains(&name) {
                return Err(TemplateError::Unknown(name.to_string()));
            }
            at += open + 2 + close + 2;
            rest = &after[close + 2..];
        }
        Ok(Template(text.to_string()))
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Fills every hole in.
    pub fn render(&self, v: &TemplateValues<'_>) -> String {
        let mut out = String::with_capacity(self.0.len() + 32);
        let mut rest = self.0.as_str();
        while let Some(open) = rest.find("{{") {
            out.push_str(&rest[..open]);
            let after = &rest[open + 2..];
            // parse() saw every hole closed and named.
            let Some(close) = after.find("}}") else {
                out.push_str(&rest[open..]);
                return out;
            };
            out.push_str(match after[..close].trim() {
                "service" => v.service,
                "track" => v.track,
                "version" => v.version,
                "namespace" => v.namespace,
                "window" => v.window,
                _ => v.address,
            });
            rest = &after[close + 2..];
        }
        out.push_str(rest);
        out
    }
}

/// A Prometheus server (or one with its HTTP API: Thanos, Mimir, VictoriaMetrics).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PrometheusServer {
    /// Its base URL, e.g. `https://prometheus.monitoring.svc:9090`.
    pub url: String,
    /// A bearer token sent with each query.
    pub bearer_token: Option<SecretRef>,
    /// CA certificates (PEM) trusted for its HTTPS, beside the public roots.
    pub ca_file: Option<std::path::PathBuf>,
}

/// How a value is judged.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ValueRule {
    /// Fails when the track's value is this share below the baseline's (0.1: 10% lower).
    pub must_not_drop_by: Option<f64>,
    /// Fails when the track's value is this share above the baseline's.
    pub must_not_rise_by: Option<f64>,
    /// Fails when the track's value is above it.
    pub at_most: Option<f64>,
    /// Fails when the track's value is below it.
    pub at_least: Option<f64>,
}

impl ValueRule {
    /// Whether the baseline's value is needed.
    pub fn compares_with_baseline(&self) -> bool {
        self.must_not_drop_by.is_some() || self.must_not_rise_by.is_some()
    }
}

/// What a Prometheus check asks.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PrometheusQuery {
    /// Two counts over the window, judged with the router's two-proportion test.
    Ratio {
        /// Failed events, e.g. `sum(increase(http_requests_total{code=~"5..",track="{{track}}"}[{{window}}]))`.
        errors: Template,
        /// All events.
        requests: Template,
    },
    /// One value, judged against the baseline's or thresholds.
    Value {
        /// The query.
        query: Template,
        /// The rule.
        rule: ValueRule,
    },
}

/// A comparison of a web check's JSON value.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Equal to this text, number or boolean (as written).
    Equals(String),
    /// A number at least this.
    AtLeast(f64),
    /// A number at most this.
    AtMost(f64),
}

/// A step of a JSON path: a member or an index.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum PathStep {
    /// `.name`
    Member(String),
    /// `[3]`
    Index(usize),
}

/// A JSON path, `checks.db.ok` or `items[0].state` (a leading `$.` is allowed).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct JsonPath {
    /// As written.
    pub text: String,
    /// Its steps.
    pub steps: Vec<PathStep>,
}

/// Why a JSON path cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{path}` is not a JSON path ({why}); write members and indexes, e.g. `checks.db.ok` or `items[0].state`"
)]
pub struct JsonPathError {
    /// As written.
    pub path: String,
    /// What is wrong.
    pub why: &'static str,
}

impl JsonPath {
    /// Reads `a.b[2].c`.
    pub fn parse(text: &str) -> Result<JsonPath, JsonPathError> {
        let err = |why| JsonPathError {
            path: text.to_string(),
            why,
        };
        let body = text
            .strip_prefix("$.")
            .or_else(|| text.strip_prefix('$'))
            .unwrap_or(text);
        if body.is_empty() {
            return Err(err("it is empty"));
        }
        let mut steps = vec![];
        for part in body.split('.') {
            let (name, mut indexes) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if name.is_empty() && (indexes.is_empty() || !steps.is_empty()) {
                return Err(err("a member name is empty"));
            }
            if !name.is_empty() {
                if name.contains([']', '"', '\'', '*', ' ']) {
                    return Err(err("a member name holds a bracket, quote, star or space"));
                }
                steps.push(PathStep::Member(name.to_string()));
            }
            while !indexes.is_empty() {
                let close = indexes.find(']').ok_or_else(|| err("`[` is not closed"))?;
                let n = indexes[1..close]
                    .parse::<usize>()
                    .map_err(|_| err("an index is not a whole number"))?;
                steps.push(PathStep::Index(n));
                indexes = &indexes[close + 1..];
                if !indexes.is_empty() && !indexes.starts_with('[') {
                    return Err(err("text follows an index"));
                }
            }
        }
        if steps.len() > 32 {
            return Err(err("it has more than 32 steps"));
        }
        Ok(JsonPath {
            text: text.to_string(),
            steps,
        })
    }
}

/// An HTTP(S) check of the track.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct WebCheck {
    /// The URL.
    pub url: Template,
    /// The status a pass needs.
    pub status: u16,
    /// A value in the JSON answer...
    pub json_path: Option<JsonPath>,
    /// ... and what it must be.
    pub expect: Option<Expect>,
    /// A bearer token sent with the request.
    pub bearer_token: Option<SecretRef>,
    /// CA certificates (PEM) trusted beside the public roots.
    pub ca_file: Option<std::path::PathBuf>,
}

/// One extra check.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CheckKind {
    /// A Prometheus query.
    Prometheus(PrometheusQuery),
    /// An HTTP(S) request.
    Web(WebCheck),
    /// A Kubernetes Job run against the track.
    Job {
        /// The Job's `spec` (a batch/v1 JobSpec), as written.
        spec: serde_json::Value,
    },
}

/// Where a Job check's spec holds a template that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {error}")]
pub struct JobTemplateError {
    /// Where, e.g. `template.spec.containers[0].args[1]`.
    pub path: String,
    /// What is wrong.
    pub error: TemplateError,
}

fn walk_strings<'v>(v: &'v serde_json::Value, path: String, out: &mut Vec<(String, &'v str)>) {
    match v {
        serde_json::Value::String(s) => out.push((path, s)),
        serde_json::Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                walk_strings(x, format!("{path}[{i}]"), out);
            }
        }
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let p = match path.is_empty() {
                    true => k.clone(),
                    false => format!("{path}.{k}"),
                };
                walk_strings(x, p, out);
            }
        }
        _ => {}
    }
}

/// Checks every string of a Job check's spec that holds `{{` as a template.
pub fn job_templates(spec: &serde_json::Value) -> Result<(), JobTemplateError> {
    let mut strings = vec![];
    walk_strings(spec, String::new(), &mut strings);
    for (path, text) in strings.into_iter().filter(|(_, t)| t.contains("{{")) {
        Template::parse(text).map_err(|error| JobTemplateError { path, error })?;
    }
    Ok(())
}

/// A Job check's spec with every template in its strings filled in.
pub fn render_job(spec: &serde_json::Value, values: &TemplateValues<'_>) -> serde_json::Value {
    match spec {
        serde_json::Value::String(s) if s.contains("{{") => match Template::parse(s) {
            Ok(t) => serde_json::Value::String(t.render(values)),
            // Refused when the repo was read; left as written otherwise.
            Err(_) => spec.clone(),
        },
        serde_json::Value::Array(items) => items.iter().map(|x| render_job(x, values)).collect(),
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, x)| (k.clone(), render_job(x, values)))
            .collect(),
        other => other.clone(),
    }
}

/// What a Job check's spec may not do, each said with its way out. The autopilot creates the
/// Job in the pipeline's namespace with its own rights, where cohort's own ServiceAccounts
/// live: a check's pod runs as the namespace's default account (without its token unless the
/// spec asks for it) and never with the node's namespaces, its files or privileged containers.
pub fn job_refusals(spec: &serde_json::Value) -> Vec<String> {
    let pod = &spec["template"]["spec"];
    let mut out = vec![];
    for field in ["serviceAccountName", "serviceAccount"] {
        if !pod[field].is_null() {
            out.push(format!(
                "template.spec.{field} is set: a check's Job runs as the namespace's default account, never as one of its accounts (cohort's own are there); remove it"
            ));
        }
    }
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[field] == serde_json::Value::Bool(true) {
            out.push(format!(
                "template.spec.{field} is true: a check's Job may not share the node's namespaces; remove it"
            ));
        }
    }
    for (i, volume) in pod["volumes"].as_array().into_iter().flatten().enumerate() {
        if !volume["hostPath"].is_null() {
            out.push(format!(
                "template.spec.volumes[{i}] is a hostPath: a check's Job may not mount the node's files; use an emptyDir, a ConfigMap or a Secret"
            ));
        }
    }
    for kind in ["initContainers", "containers", "ephemeralContainers"] {
        for (i, c) in pod[kind].as_array().into_iter().flatten().enumerate() {
            if c["securityContext"]["privileged"] == serde_json::Value::Bool(true) {
                out.push(format!(
                    "template.spec.{kind}[{i}].securityContext.privileged is true: a check's Job may not run privileged; remove it"
                ));
            }
        }
    }
    out
}

/// A named extra check.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Check {
    /// Its name, unique among the checks of a service.
    pub name: String,
    /// What it does.
    #[serde(flatten)]
    pub kind: CheckKind,
    /// How long it may take: a query or request's answer, a Job's run.
    pub timeout: Duration,
}

impl Check {
    /// The kind, in one word.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            CheckKind::Prometheus(_) => "prometheus",
            CheckKind::Web(_) => "web",
            CheckKind::Job { .. } => "job",
        }
    }
}

/// The checks written in one place (`cohort.yaml`'s `judgement`, or a service's).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Checks {
    /// The Prometheus server the queries go to.
    pub prometheus: Option<PrometheusServer>,
    /// The checks.
    pub checks: Vec<Check>,
}

impl Checks {
    /// A service's checks over the pipeline's: a check of the same name replaces the
    /// pipeline's (in its place), others are added after; the service's server, if any,
    /// replaces the pipeline's.
    pub fn merged(pipeline: &Checks, service: &Checks) -> Checks {
        let mut checks = pipeline.checks.clone();
        for c in &service.checks {
            match checks.iter_mut().find(|p| p.name == c.name) {
                Some(p) => *p = c.clone(),
                None => checks.push(c.clone()),
            }
        }
        Checks {
            prometheus: service.prometheus.clone().or_else(|| pipeline.prometheus.clone()),
            checks,
        }
    }
}

/// Default time a check may take: a query or request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a Job check may run.
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(600);

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> TemplateValues<'static> {
        TemplateValues {
            service: "web",
            track: "canary",
            version: "1.4.0",
            namespace: "shop",
            window: "600s",
            address: "http://web-canary.shop.svc:80",
        }
    }

    #[test]
    fn a_template_fills_in_every_variable_with_or_without_spaces() {
        let t = Template::parse(
            "rate(x{service=\"{{service}}\",track=\"{{ track }}\",v=\"{{version}}\",ns=\"{{namespace}}\"}[{{window}}]) {{address}}",
        )
        .expect("valid");
        assert_eq!(
            t.render(&values()),
            "rate(x{service=\"web\",track=\"canary\",v=\"1.4.0\",ns=\"shop\"}[600s]) http://web-canary.shop.svc:80"
        );
        assert_eq!(
            Template::parse("no holes").expect("valid").render(&values()),
            "no holes"
        );
    }

    #[test]
    fn a_template_naming_an_unknown_variable_or_left_open_is_refused() {
        assert_eq!(
            Template::parse("x{track=\"{{trak}}\"}"),
            Err(TemplateError::Unknown("trak".into()))
        );
        assert_eq!(Template::parse("ab{{track"), Err(TemplateError::Unclosed(2)));
        assert_eq!(
            Template::parse("{{track}} and {{track"),
            Err(TemplateError::Unclosed(14))
        );
        // PromQL's own braces are left alone.
        assert!(Template::parse("sum by (track) (x{a=\"b\"})").is_ok());
    }

    #[test]
    fn json_paths_read_members_and_indexes_and_refuse_the_rest() {
        let p = JsonPath::parse("$.items[0].state").expect("valid");
        assert_eq!(
            p.steps,
            vec![
                PathStep::Member("items".into()),
                PathStep::Index(0),
                PathStep::Member("state".into())
            ]
        );
        assert_eq!(
            JsonPath::parse("[2][1]").expect("valid").steps,
            vec![PathStep::Index(2), PathStep::Index(1)]
        );
        for bad in ["", "a..b", "a[x]", "a[1", "a[1]b", "a.*", "a.[1]"] {
            assert!(JsonPath::parse(bad).is_err(), "{bad}");
        }
    }

    fn check(name: &str, query: &str) -> Check {
        Check {
            name: name.into(),
            kind: CheckKind::Prometheus(PrometheusQuery::Value {
                query: Template::parse(query).expect("valid"),
                rule: ValueRule::default(),
            }),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    #[test]
    fn a_services_checks_replace_the_pipelines_of_the_same_name_and_add_the_others() {
        let server = |u: &str| PrometheusServer {
            url: u.into(),
            bearer_token: None,
            ca_file: None,
        };
        let pipeline = Checks {
            prometheus: Some(server("http://a")),
            checks: vec![check("mem", "a"), check("rate", "b")],
        };
        let service = Checks {
            prometheus: None,
            checks: vec![check("rate", "c"), check("queue", "d")],
        };
        let m = Checks::merged(&pipeline, &service);
        assert_eq!(m.prometheus, Some(server("http://a")));
        assert_eq!(
            m.checks,
            vec![check("mem", "a"), check("rate", "c"), check("queue", "d")]
        );
        let own = Checks {
            prometheus: Some(server("http://b")),
            checks: vec![],
        };
        assert_eq!(
            Checks::merged(&pipeline, &own).prometheus,
            Some(server("http://b"))
        );
    }

    #[test]
    fn a_jobs_strings_are_templates_checked_and_filled_in() {
        let spec = serde_json::json!({"template": {"spec": {"containers": [
            {"name": "t", "image": "x", "args": ["--target", "{{address}}", "--v={{ version }}"], "env": [{"name": "A", "value": "plain"}]}
        ]}}});
        assert_eq!(job_templates(&spec), Ok(()));
        let job = render_job(&spec, &values());
        let c = &job["template"]["spec"]["containers"][0];
        assert_eq!(c["args"][1], "http://web-canary.shop.svc:80");
        assert_eq!(c["args"][2], "--v=1.4.0");
        assert_eq!(c["env"][0]["value"], "plain");
        let typo = serde_json::json!({"template": {"spec": {"containers": [{"args": ["{{trak}}"]}]}}});
        assert_eq!(
            job_templates(&typo).map_err(|e| e.to_string()),
            Err(
                "template.spec.containers[0].args[0]: `{{trak}}` is not a variable cohort fills in"
                    .to_string()
            )
        );
    }

    #[test]
    fn a_job_may_not_run_as_an_account_of_the_namespace_or_with_the_nodes_powers() {
        let plain = serde_json::json!({"template": {"spec": {"containers": [{"name": "t", "image": "x"}]}}});
        assert!(job_refusals(&plain).is_empty());
        let hostile = serde_json::json!({"template": {"spec": {
            "serviceAccountName": "cohort-autopilot",
            "hostNetwork": true,
            "hostPID": true,
            "volumes": [{"name": "e", "emptyDir": {}}, {"name": "root", "hostPath": {"path": "/"}}],
            "initContainers": [{"name": "i", "image": "x", "securityContext": {"privileged": true}}],
            "containers": [{"name": "t", "image": "x", "securityContext": {"privileged": false}}]
        }}});
        let refused = job_refusals(&hostile);
        assert_eq!(refused.len(), 5, "{refused:#?}");
        assert!(
            refused[0].starts_with("template.spec.serviceAccountName is set"),
            "{refused:#?}"
        );
        assert!(
            refused
                .iter()
                .any(|r| r.starts_with("template.spec.volumes[1] is a hostPath")),
            "{refused:#?}"
        );
        assert!(
            refused
                .iter()
                .any(|r| r.starts_with("template.spec.initContainers[0].securityContext.privileged")),
            "{refused:#?}"
        );
    }
}

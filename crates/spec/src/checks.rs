//! `judgement.prometheus` and `judgement.checks`, in `cohort.yaml` and in a service's spec:
//! the extra checks of a canary judgement.
//!
//! ```yaml
//! judgement:
//!   prometheus:
//!     url: https://prometheus.monitoring.svc:9090
//!     bearer_token_file: /var/run/secrets/prometheus/token   # or bearer_token_env
//!     ca_file: /etc/cohort/prometheus-ca.pem
//!   checks:
//!     - name: checkouts-per-request
//!       prometheus: sum(rate(shop_checkouts_total{track="{{track}}"}[{{window}}])) / sum(rate(cohort_router_requests_total{track="{{track}}"}[{{window}}]))
//!       must_not_drop_by: 10%
//!     - name: app-errors
//!       prometheus:
//!         errors: sum(increase(http_requests_total{track="{{track}}",code=~"5.."}[{{window}}]))
//!         requests: sum(increase(http_requests_total{track="{{track}}"}[{{window}}]))
//!     - name: orders-api
//!       web: https://orders.internal/health?track={{track}}
//!       status: 200
//!       json_path: checks.db.ok
//!       equals: "true"
//!     - name: integration
//!       timeout: 10m
//!       job:
//!         template:
//!           spec:
//!             containers: [{name: tests, image: registry.example.com/shop/it:1}]
//! ```

use cohort_core::checks::{
    Check, CheckKind, Checks, DEFAULT_JOB_TIMEOUT, DEFAULT_TIMEOUT, Expect, JsonPath, PrometheusQuery,
    PrometheusServer, Template, ValueRule, WebCheck,
};
use cohort_yaml::{Node, NodeKind};
use serde_json::Value;

use crate::diag::{Kind, Sink};
use crate::notifications::read_secret;
use crate::read::{self, MapReader};

/// Most checks a service's judgement may have: each is a query, a request or a Job per pass.
const MAX_CHECKS: usize = 32;
/// Longest a template may be.
const MAX_TEMPLATE: usize = 8 * 1024;

/// Reads the `prometheus` and `checks` keys of a `judgement` mapping (`m` holds it).
pub(crate) fn read_checks(m: &mut MapReader<'_>, sink: &mut Sink<'_>) -> Option<Checks> {
    let (server_n, checks_n) = (m.opt("prometheus"), m.opt("checks"));
    let mut ok = true;
    let prometheus = match server_n {
        Some(n) => {
            let s = read_server(n, sink);
            ok &= s.is_some();
            s
        }
        None => None,
    };
    let mut checks: Vec<Check> = vec![];
    let items = checks_n
        .map(|n| read::list(n, "`judgement.checks`", sink))
        .unwrap_or_default();
    if items.len() > MAX_CHECKS {
        if let Some(n) = checks_n {
            sink.error(
                n.pos,
                Kind::OutOfRange,
                format!(
                    "`judgement.checks` has {} checks; at most {MAX_CHECKS}",
                    items.len()
                ),
                Some("each check runs on every judgement: keep the ones that decide".into()),
            );
        }
        return None;
    }
    for item in items {
        match read_check(item, sink) {
            Some(c) if checks.iter().any(|o| o.name == c.name) => {
                sink.error(
                    item.pos,
                    Kind::Duplicate,
                    format!("two checks are named `{}`", c.name),
                    Some("give each check its own name".into()),
                );
                ok = false;
            }
            Some(c) => checks.push(c),
            None => ok = false,
        }
    }
    ok.then_some(Checks { prometheus, checks })
}

/// Whether a service's checks over the pipeline's stay within the limit.
pub(crate) fn check_count(service: &Checks, pipeline: &Checks, at: &Node, sink: &mut Sink<'_>) -> bool {
    let merged = Checks::merged(pipeline, service).checks.len();
    if merged <= MAX_CHECKS {
        return true;
    }
    sink.error(
        at.pos,
        Kind::OutOfRange,
        format!("with the pipeline's, this service has {merged} checks; at most {MAX_CHECKS}"),
        Some("each check runs on every judgement: keep the ones that decide".into()),
    );
    false
}

/// Whether `checks` can run: Prometheus checks need a server, here or in the pipeline.
pub(crate) fn check_servers(service: &Checks, pipeline: &Checks, at: &Node, sink: &mut Sink<'_>) -> bool {
    if service.prometheus.is_some() || pipeline.prometheus.is_some() {
        return true;
    }
    let Some(c) = service
        .checks
        .iter()
        .find(|c| matches!(c.kind, CheckKind::Prometheus(_)))
    else {
        return true;
    };
    sink.error(
        at.pos,
        Kind::MissingKey,
        format!(
            "the check `{}` queries Prometheus, but no server is named",
            c.name
        ),
        Some("add `prometheus: {url: http://prometheus.monitoring.svc:9090}` under `judgement`".into()),
    );
    false
}

fn read_server(n: &Node, sink: &mut Sink<'_>) -> Option<PrometheusServer> {
    let mut m = MapReader::new(n, "`judgement.prometheus`", sink);
    let url = m
        .req(
            "url",
            "add `url: http://prometheus.monitoring.svc:9090` (the server's base URL)",
            sink,
        )
        .and_then(|u| http_url(u, "`judgement.prometheus.url`", sink));
    let token = read_secret(
        &mut m,
        ["bearer_token", "bearer_token_env", "bearer_token_file"],
        "the bearer token",
        sink,
    );
    let ca_file = m.opt("ca_file").map(|c| absolute_path(c, "`ca_file`", sink));
    m.finish(sink);
    Some(PrometheusServer {
        url: url?.trim_end_matches('/').to_string(),
        bearer_token: token?,
        ca_file: match ca_file {
            Some(c) => Some(c?),
            None => None,
        },
    })
}

fn http_url(n: &Node, what: &str, sink: &mut Sink<'_>) -> Option<String> {
    let t = read::text(n, what, sink)?;
    let rest = t.strip_prefix("https://").or_else(|| t.strip_prefix("http://"));
    // user:password@ would be shown with every error and evidence line; a query or fragment
    // would break the query URL made from it.
    let authority = rest.map(|r| r.split('/').next().unwrap_or_default());
    if authority.is_some_and(|a| a.contains('@')) || t.contains(['?', '#']) {
        sink.error(
            n.pos,
            Kind::WrongType,
            format!("{what} `{t}` holds a user, a query or a fragment"),
            Some("give the base URL alone; a token goes in `bearer_token_file` or `bearer_token_env`".into()),
        );
        return None;
    }
    if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) || t.chars().any(char::is_whitespace) {
        sink.error(
            n.pos,
            Kind::WrongType,
            format!("{what} `{t}` is not an http:// or https:// URL"),
            Some(
                "write the whole URL with its scheme and host, e.g. `https://prometheus.monitoring.svc:9090`"
                    .into(),
            ),
        );
        return None;
    }
    Some(t.to_string())
}

fn absolute_path(n: &Node, what: &str, sink: &mut Sink<'_>) -> Option<std::path::PathBuf> {
    let t = read::text(n, what, sink)?;
    if !t.starts_with('/') {
        sink.error(
            n.pos,
            Kind::WrongType,
            format!("{what} is `{t}`, not an absolute path"),
            Some("write the whole path, e.g. `/etc/cohort/ca.pem` (a mounted Secret or ConfigMap)".into()),
        );
        return None;
    }
    Some(t.into())
}

fn template(n: &Node, what: &str, sink: &mut Sink<'_>) -> Option<Template> {
    let t = read::text(n, what, sink)?;
    if t.trim().is_empty() || t.len() > MAX_TEMPLATE {
        sink.error(
            n.pos,
            Kind::OutOfRange,
            format!("{what} is empty or longer than {MAX_TEMPLATE} bytes"),
            None,
        );
        return None;
    }
    match Template::parse(t) {
        Ok(t) => Some(t),
        Err(e) => {
            sink.error(
                n.pos,
                Kind::WrongType,
                format!("{what}: {e}"),
                Some(format!(
                    "cohort fills in {}",
                    cohort_core::checks::TEMPLATE_VARIABLES
                        .iter()
                        .map(|v| format!("{{{{{v}}}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            );
            None
        }
    }
}

/// `10%` as 0.1.
fn share(n: &Node, what: &str, most: f64, sink: &mut Sink<'_>) -> Option<f64> {
    let t = read::text(n, what, sink)?;
    match t.strip_suffix('%').and_then(|p| p.trim().parse::<f64>().ok()) {
        Some(p) if p > 0.0 && p <= most => Some(p / 100.0),
        _ => {
            sink.error(
                n.pos,
                Kind::OutOfRange,
                format!("{what} is `{t}`; give a percentage above 0 and at most {most}%, like `10%`"),
                None,
            );
            None
        }
    }
}

fn finite(n: &Node, what: &str, sink: &mut Sink<'_>) -> Option<f64> {
    let t = read::text(n, what, sink)?;
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => Some(v),
        _ => {
            sink.error(
                n.pos,
                Kind::WrongType,
                format!("{what} should be a number, not `{t}`"),
                Some("e.g. `0.5`, `512e6` or `-3`".into()),
            );
            None
        }
    }
}

fn read_check(n: &Node, sink: &mut Sink<'_>) -> Option<Check> {
    let mut m = MapReader::new(n, "a check", sink);
    let name = m
        .req("name", "add `name:`, a short word naming what it checks", sink)
        .and_then(|v| {
            let t = read::text(v, "a check's `name`", sink)?;
            let valid = !t.is_empty()
                && t.len() <= 40
                && t.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !t.starts_with('-')
                && !t.ends_with('-');
            if !valid {
                sink.error(
                    v.pos,
                    Kind::BadName,
                    format!("the check name `{t}` is not lowercase letters, digits and `-`"),
                    Some("at most 40 characters, e.g. `checkout-rate`: it names the check's Job too".into()),
                );
                return None;
            }
            Some(t.to_string())
        });
    let label = match &name {
        Some(c) => format!("the check `{c}`"),
        None => "a check".to_string(),
    };
    let what = |field: &str| format!("`{field}` of {label}");
    let (prom_n, web_n, job_n) = (m.opt("prometheus"), m.opt("web"), m.opt("job"));
    let timeout_n = m.opt("timeout");
    let given: Vec<&str> = [("prometheus", prom_n), ("web", web_n), ("job", job_n)]
        .into_iter()
        .filter_map(|(k, v)| v.map(|_| k))
        .collect();
    if given.len() != 1 {
        sink.error(
            n.pos,
            Kind::MissingKey,
            match given.len() {
                0 => format!("{label} says nothing to check"),
                _ => format!("a check is one kind, and this one is {}", given.join(" and ")),
            },
            Some("give one of `prometheus: <query>`, `web: <url>` or `job: {template: ...}`".into()),
        );
        m.finish(sink);
        return None;
    }
    let is_job = job_n.is_some();
    let timeout = match timeout_n {
        None if is_job => Some(DEFAULT_JOB_TIMEOUT),
        None => Some(DEFAULT_TIMEOUT),
        Some(t) => {
            let (low, high) = match is_job {
                true => (10_000, 7_200_000),
                false => (1_000, 120_000),
            };
            match read::duration(t, &what("timeout"), sink) {
                Some(d) if (low..=high).contains(&d.as_millis()) => Some(d),
                Some(_) => {
                    sink.error(
                        t.pos,
                        Kind::OutOfRange,
                        format!(
                            "{} must be between {} and {}",
                            what("timeout"),
                            cohort_core::Duration::from_millis(low),
                            cohort_core::Duration::from_millis(high)
                        ),
                        None,
                    );
                    None
                }
                None => None,
            }
        }
    };
    let kind = if let Some(p) = prom_n {
        read_prometheus(p, &mut m, &what, sink).map(CheckKind::Prometheus)
    } else if let Some(w) = web_n {
        read_web(w, &mut m, &what, sink).map(CheckKind::Web)
    } else {
        job_n.and_then(|j| read_job(j, &what, sink))
    };
    m.finish(sink);
    Some(Check {
        name: name?,
        kind: kind?,
        timeout: timeout?,
    })
}

/// `prometheus: <query>` with a value rule beside it, or `prometheus: {errors, requests}`.
fn read_prometheus(
    p: &Node,
    m: &mut MapReader<'_>,
    what: &dyn Fn(&str) -> String,
    sink: &mut Sink<'_>,
) -> Option<PrometheusQuery> {
    let rule_keys = (
        m.opt("must_not_drop_by"),
        m.opt("must_not_rise_by"),
        m.opt("at_most"),
        m.opt("at_least"),
    );
    if let NodeKind::Map(_) = p.kind {
        let mut q = MapReader::new(p, what("prometheus"), sink);
        let errors = q.req(
            "errors",
            "add `errors:`, a query counting the failed events over `[{{window}}]`",
            sink,
        );
        let requests = q.req(
            "requests",
            "add `requests:`, a query counting all events over `[{{window}}]`",
            sink,
        );
        q.finish(sink);
        let (a, b, c, d) = rule_keys;
        if let Some(extra) = a.or(b).or(c).or(d) {
            sink.error(
                extra.pos,
                Kind::WrongType,
                "a ratio check (`errors` and `requests`) is judged like the router's error rate; it takes no value rule".to_string(),
                Some("for a value, write `prometheus: <query>` with `must_not_drop_by`, `must_not_rise_by`, `at_most` or `at_least`".into()),
            );
            return None;
        }
        let errors = errors.and_then(|e| template(e, &what("errors"), sink));
        let requests = requests.and_then(|r| template(r, &what("requests"), sink));
        return Some(PrometheusQuery::Ratio {
            errors: errors?,
            requests: requests?,
        });
    }
    let query = template(p, &what("prometheus"), sink);
    let (drop_n, rise_n, most_n, least_n) = rule_keys;
    let rule = ValueRule {
        must_not_drop_by: drop_n.and_then(|n| share(n, &what("must_not_drop_by"), 100.0, sink)),
        must_not_rise_by: rise_n.and_then(|n| share(n, &what("must_not_rise_by"), 1000.0, sink)),
        at_most: most_n.and_then(|n| finite(n, &what("at_most"), sink)),
        at_least: least_n.and_then(|n| finite(n, &what("at_least"), sink)),
    };
    let read_all = [
        drop_n.is_some(),
        rise_n.is_some(),
        most_n.is_some(),
        least_n.is_some(),
    ] == [
        rule.must_not_drop_by.is_some(),
        rule.must_not_rise_by.is_some(),
        rule.at_most.is_some(),
        rule.at_least.is_some(),
    ];
    if !read_all {
        return None;
    }
    if rule == ValueRule::default() {
        sink.error(
            p.pos,
            Kind::MissingKey,
            format!("{} has no rule to judge its value by", what("prometheus")),
            Some("add `must_not_drop_by: 10%`, `must_not_rise_by: 25%`, `at_most: <number>` or `at_least: <number>` beside it".into()),
        );
        return None;
    }
    Some(PrometheusQuery::Value { query: query?, rule })
}

fn read_web(
    w: &Node,
    m: &mut MapReader<'_>,
    what: &dyn Fn(&str) -> String,
    sink: &mut Sink<'_>,
) -> Option<WebCheck> {
    let url = template(w, &what("web"), sink).and_then(|t| {
        let probe = t.as_str();
        let ok = (probe.starts_with("http://") || probe.starts_with("https://"))
            && !probe.chars().any(char::is_whitespace);
        if !ok {
            sink.error(
                w.pos,
                Kind::WrongType,
                format!("{} `{probe}` is not an http:// or https:// URL", what("web")),
                Some("e.g. `https://orders.internal/health?track={{track}}`".into()),
            );
        }
        ok.then_some(t)
    });
    let status = m.opt("status").map_or(Some(200), |s| {
        read::number(s, &what("status"), 100, 599, sink).map(|n| n as u16)
    });
    let path_n = m.opt("json_path");
    let json_path = path_n.map(|p| {
        let t = read::text(p, &what("json_path"), sink)?;
        JsonPath::parse(t)
            .map_err(|e| sink.error(p.pos, Kind::WrongType, e.to_string(), None))
            .ok()
    });
    let (eq_n, least_n, most_n) = (m.opt("equals"), m.opt("at_least"), m.opt("at_most"));
    let expects: Vec<Option<Expect>> = [
        eq_n.map(|n| read::text(n, &what("equals"), sink).map(|t| Expect::Equals(t.to_string()))),
        least_n.map(|n| finite(n, &what("at_least"), sink).map(Expect::AtLeast)),
        most_n.map(|n| finite(n, &what("at_most"), sink).map(Expect::AtMost)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let token = read_secret(
        m,
        ["bearer_token", "bearer_token_env", "bearer_token_file"],
        "the bearer token",
        sink,
    );
    let ca_file = m.opt("ca_file").map(|c| absolute_path(c, &what("ca_file"), sink));
    let expect = match (path_n, expects.len()) {
        (None, 0) => Some(None),
        (Some(_), 1) => expects
            .into_iter()
            .next()
            .map(|e| e.map(Some))
            .unwrap_or(Some(None)),
        (Some(p), 0) => {
            sink.error(
                p.pos,
                Kind::MissingKey,
                format!("{} names a value but not what it must be", what("json_path")),
                Some("add one of `equals: <value>`, `at_least: <number>` or `at_most: <number>`".into()),
            );
            None
        }
        (Some(p), _) => {
            sink.error(
                p.pos,
                Kind::Duplicate,
                "a web check compares its value one way".to_string(),
                Some("keep one of `equals`, `at_least` and `at_most`".into()),
            );
            None
        }
        (None, _) => {
            sink.error(
                w.pos,
                Kind::MissingKey,
                format!("{} compares a value but names none", what("web")),
                Some("add `json_path:`, e.g. `json_path: checks.db.ok`".into()),
            );
            None
        }
    };
    Some(WebCheck {
        url: url?,
        status: status?,
        json_path: match json_path {
            Some(p) => Some(p?),
            None => None,
        },
        expect: expect?,
        bearer_token: token?,
        ca_file: match ca_file {
            Some(c) => Some(c?),
            None => None,
        },
    })
}

/// `job: {template: {...}}` or a JobSpec itself: the Job's spec, as JSON.
fn read_job(j: &Node, what: &dyn Fn(&str) -> String, sink: &mut Sink<'_>) -> Option<CheckKind> {
    let NodeKind::Map(_) = j.kind else {
        sink.error(
            j.pos,
            Kind::WrongType,
            format!(
                "{} should be a Job's spec (a mapping with `template:`), but this is {}",
                what("job"),
                j.describe()
            ),
            Some("write the `spec` of a batch/v1 Job: `job: {template: {spec: {containers: [...]}}}`".into()),
        );
        return None;
    };
    let spec = j.to_json();
    let containers = spec
        .pointer("/template/spec/containers")
        .and_then(Value::as_array)
        .is_some_and(|c| !c.is_empty());
    if !containers {
        sink.error(
            j.pos,
            Kind::MissingKey,
            format!("{} has no `template.spec.containers`", what("job")),
            Some("write the `spec` of a batch/v1 Job: `template: {spec: {containers: [{name: tests, image: ...}]}}`".into()),
        );
        return None;
    }
    if let Err(e) = cohort_core::checks::job_templates(&spec) {
        sink.error(
            j.pos,
            Kind::WrongType,
            format!("{} at {e}", what("job")),
            Some(format!(
                "cohort fills in {}; the containers also get COHORT_ADDRESS, COHORT_TRACK, COHORT_VERSION, COHORT_SERVICE and COHORT_NAMESPACE",
                cohort_core::checks::TEMPLATE_VARIABLES
                    .iter()
                    .map(|v| format!("{{{{{v}}}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        );
        return None;
    }
    let refused = cohort_core::checks::job_refusals(&spec);
    for why in &refused {
        sink.error(j.pos, Kind::WrongType, format!("{}: {why}", what("job")), None);
    }
    refused.is_empty().then_some(CheckKind::Job { spec })
}

#[cfg(test)]
mod tests {
    use cohort_core::SecretRef;
    use cohort_core::checks::{CheckKind, Expect, PathStep, PrometheusQuery};

    use crate::diag::Severity;
    use crate::repo::{Repo, seed_with, validate};

    /// The seed with `section` first, so the places in the tests do not move with the seed.
    fn errors(section: &str) -> Vec<String> {
        let mut files = crate::scaffold::repo_files();
        files.pipeline = files.pipeline.map(|text| format!("{section}{text}"));
        let (repo, diags) = validate(&files);
        let errors: Vec<String> = diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| format!("{}:{}: {}", d.file.display(), d.pos, d.message))
            .collect();
        assert!(repo.is_none() || errors.is_empty());
        errors
    }

    fn valid(section: &str) -> Repo {
        let (repo, diags) = seed_with(section);
        repo.unwrap_or_else(|| panic!("{diags:?}"))
    }

    const FOUR: &str = r#"judgement:
  prometheus:
    url: https://prometheus.monitoring.svc:9090/
    bearer_token_env: PROM_TOKEN
    ca_file: /etc/cohort/prom-ca.pem
  checks:
    - name: checkouts
      prometheus: sum(rate(shop_checkouts_total{track="{{track}}"}[{{window}}]))
      must_not_drop_by: 10%
    - name: app-errors
      prometheus:
        errors: sum(increase(e{track="{{track}}"}[{{window}}]))
        requests: sum(increase(r{track="{{track}}"}[{{window}}]))
    - name: orders
      web: https://orders.internal/health?track={{track}}
      status: 204
      json_path: $.checks.db[0].ok
      equals: "true"
      timeout: 3s
    - name: integration
      timeout: 15m
      job:
        backoffLimit: 1
        template:
          spec:
            containers:
              - name: tests
                image: registry.example.com/shop/it:1
                args: ["--target", "{{address}}"]
"#;

    #[test]
    fn every_kind_of_check_is_read_from_cohort_yaml() {
        let repo = valid(FOUR);
        let c = &repo.pipeline.checks;
        let server = c.prometheus.as_ref().expect("a server");
        assert_eq!(server.url, "https://prometheus.monitoring.svc:9090");
        assert_eq!(server.bearer_token, Some(SecretRef::Env("PROM_TOKEN".into())));
        assert_eq!(
            server.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/cohort/prom-ca.pem"))
        );
        let names: Vec<&str> = c.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["checkouts", "app-errors", "orders", "integration"]);
        let CheckKind::Prometheus(PrometheusQuery::Value { rule, .. }) = &c.checks[0].kind else {
            panic!("{:?}", c.checks[0])
        };
        assert_eq!(rule.must_not_drop_by, Some(0.1));
        assert!(matches!(
            c.checks[1].kind,
            CheckKind::Prometheus(PrometheusQuery::Ratio { .. })
        ));
        let CheckKind::Web(w) = &c.checks[2].kind else {
            panic!()
        };
        assert_eq!(w.status, 204);
        assert_eq!(w.expect, Some(Expect::Equals("true".into())));
        assert_eq!(w.json_path.as_ref().expect("path").steps[2], PathStep::Index(0));
        assert_eq!(c.checks[2].timeout, cohort_core::Duration::from_secs(3));
        let CheckKind::Job { spec } = &c.checks[3].kind else {
            panic!()
        };
        assert_eq!(spec["backoffLimit"], 1);
        assert_eq!(
            spec["template"]["spec"]["containers"][0]["args"][1],
            "{{address}}"
        );
        assert_eq!(c.checks[3].timeout, cohort_core::Duration::from_secs(900));
    }

    #[test]
    fn every_mistake_in_a_check_is_reported_where_it_is() {
        let e = errors(
            r#"judgement:
  checks:
    - name: Bad_Name
      web: https://x/
    - name: nothing
    - name: both
      web: https://x/
      job: {template: {spec: {containers: [{name: a, image: b}]}}}
    - name: typo
      prometheus: up{track="{{trak}}"}
      at_most: 3
    - name: norule
      prometheus: up
    - name: ratio-rule
      prometheus: {errors: a, requests: b}
      at_most: 3
    - name: path-only
      web: https://x/
      json_path: a.b
    - name: bad-url
      web: ftp://x/
    - name: nojob
      job: {template: {spec: {}}}
    - name: secret
      web: https://x/
      bearer_token: abc
    - name: slow
      web: https://x/
      timeout: 5m
    - name: dup
      web: https://x/
    - name: dup
      web: https://y/
"#,
        );
        let want = [
            "cohort.yaml:3:13: the check name `Bad_Name` is not lowercase",
            "cohort.yaml:5:7: the check `nothing` says nothing to check",
            "cohort.yaml:6:7: a check is one kind, and this one is web and job",
            "cohort.yaml:10:19: `prometheus` of the check `typo`: `{{trak}}` is not a variable",
            "has no rule to judge its value by",
            "it takes no value rule",
            "names a value but not what it must be",
            "`ftp://x/` is not an http:// or https:// URL",
            "has no `template.spec.containers`",
            "must not be written in the release repo",
            "`timeout` of the check `slow` must be between 1s and 2m",
            "cohort.yaml:32:7: two checks are named `dup`",
        ];
        for w in want {
            assert!(e.iter().any(|m| m.contains(w)), "{w}: {e:#?}");
        }
        assert_eq!(e.len(), want.len(), "{e:#?}");
        let e = errors("judgement:\n  checks:\n    - name: up\n      prometheus: up\n      at_least: 1\n");
        assert_eq!(
            e,
            ["cohort.yaml:2:3: the check `up` queries Prometheus, but no server is named"],
            "{e:#?}"
        );
    }

    #[test]
    fn a_services_judgement_adds_checks_and_replaces_the_pipelines_of_the_same_name() {
        let mut files = crate::scaffold::repo_files();
        files.pipeline = files.pipeline.map(|p| format!("{p}\n{FOUR}"));
        let (path, text) = files.services[0].clone();
        let own = "judgement:\n  checks:\n    - name: orders\n      web: https://orders.internal/v2/{{version}}\n    - name: queue\n      prometheus: max(queue_depth{service=\"{{service}}\"})\n      at_most: 100\n";
        files.services[0] = (path.clone(), format!("{text}\n{own}"));
        let (repo, diags) = validate(&files);
        let repo = repo.unwrap_or_else(|| panic!("{diags:?}"));
        let spec = &repo.services[0].spec;
        let merged = cohort_core::checks::Checks::merged(&repo.pipeline.checks, &spec.checks);
        let names: Vec<&str> = merged.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["checkouts", "app-errors", "orders", "integration", "queue"]
        );
        let CheckKind::Web(w) = &merged.checks[2].kind else {
            panic!()
        };
        assert_eq!(w.url.as_str(), "https://orders.internal/v2/{{version}}");

        // Without a server anywhere, a service's Prometheus check is refused in its file.
        let mut files = crate::scaffold::repo_files();
        files.services[0] = (path.clone(), format!("{text}\n{own}"));
        let (repo, diags) = validate(&files);
        assert!(repo.is_none());
        assert!(
            diags
                .iter()
                .any(|d| d.file == path && d.message.contains("no server is named")),
            "{diags:?}"
        );
        // How strict the judgement is stays the pipeline's.
        files.services[0] = (path.clone(), format!("{text}\njudgement:\n  confidence: 0.9\n"));
        let (repo, diags) = validate(&files);
        assert!(repo.is_none());
        assert!(
            diags
                .iter()
                .any(|d| d.message.contains("unknown key `confidence`")),
            "{diags:?}"
        );
    }
}

#[cfg(test)]
mod review_tests {
    use crate::diag::Severity;
    use crate::repo::validate;

    fn errors(section: &str) -> Vec<String> {
        let mut files = crate::scaffold::repo_files();
        files.pipeline = files.pipeline.map(|text| format!("{section}{text}"));
        let (repo, diags) = validate(&files);
        assert!(repo.is_none(), "{section}");
        diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| format!("{}: {}", d.pos, d.message))
            .collect()
    }

    #[test]
    fn a_jobs_templates_and_powers_are_checked_where_it_is_written() {
        let e = errors(
            "judgement:\n  checks:\n    - name: it\n      job:\n        template:\n          spec:\n            serviceAccountName: cohort-autopilot\n            containers: [{name: t, image: x, args: ['{{trak}}']}]\n",
        );
        assert_eq!(
            e,
            [
                "5:9: `job` of the check `it` at template.spec.containers[0].args[0]: `{{trak}}` is not a variable cohort fills in"
            ],
            "{e:#?}"
        );
        let e = errors(
            "judgement:\n  checks:\n    - name: it\n      job:\n        template:\n          spec:\n            serviceAccountName: cohort-autopilot\n            volumes: [{name: r, hostPath: {path: /}}]\n            containers: [{name: t, image: x}]\n",
        );
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(
            e[0].starts_with("5:9: `job` of the check `it`: template.spec.serviceAccountName is set"),
            "{e:#?}"
        );
    }

    #[test]
    fn a_prometheus_url_with_a_user_or_a_query_is_refused() {
        for url in ["https://u:p@prom:9090", "http://prom:9090/?x=1", "http://prom/#a"] {
            let e = errors(&format!("judgement:\n  prometheus:\n    url: {url}\n"));
            assert!(
                e.iter()
                    .any(|m| m.contains("holds a user, a query or a fragment")),
                "{url}: {e:#?}"
            );
        }
    }

    #[test]
    fn a_service_cannot_pass_the_check_limit_with_the_pipelines() {
        let web = |i: usize, who: &str| format!("    - name: {who}-{i}\n      web: http://x/\n");
        let pipeline: String = (0..20).map(|i| web(i, "p")).collect();
        let service: String = (0..20).map(|i| web(i, "s")).collect();
        let mut files = crate::scaffold::repo_files();
        files.pipeline = files
            .pipeline
            .map(|t| format!("judgement:\n  checks:\n{pipeline}{t}"));
        let (path, text) = files.services[0].clone();
        files.services[0] = (path, format!("{text}\njudgement:\n  checks:\n{service}"));
        let (repo, diags) = validate(&files);
        assert!(repo.is_none());
        assert!(
            diags
                .iter()
                .any(|d| d.message == "with the pipeline's, this service has 40 checks; at most 32"),
            "{diags:#?}"
        );
    }
}

#[cfg(test)]
mod seed_tests {
    use crate::repo::validate;

    /// The commented `judgement:` example in the seed's cohort.yaml, uncommented, is valid.
    #[test]
    fn the_seeds_commented_judgement_example_is_valid() {
        let mut files = crate::scaffold::repo_files();
        let text = files.pipeline.take().expect("cohort.yaml");
        let start = text.find("# judgement:\n").expect("the example");
        let block: String = text[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#'))))
            .collect();
        assert!(block.contains("checks:"), "{block}");
        files.pipeline = Some(format!("{text}\n{block}"));
        let (repo, diags) = validate(&files);
        let repo = repo.unwrap_or_else(|| panic!("{block}\n{diags:?}"));
        let names: Vec<&str> = repo
            .pipeline
            .checks
            .checks
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["checkouts-per-request", "integration-tests"]);
    }
}

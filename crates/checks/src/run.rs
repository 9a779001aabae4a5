//! Running a service's checks for one track and its baseline: every check at once, each
//! query of a pair at the same instant, each within its own deadline.

use std::future::Future;
use std::time::Duration;

use cohort_core::checks::{
    Check, CheckKind, Checks, PrometheusQuery, PrometheusServer, Template, TemplateValues,
};
use cohort_judge::Settings;

use crate::fetch::{FetchError, Fetcher, query_url, read_secret};
use crate::prometheus::{judge_ratio, judge_value, read_answer};
use crate::{CheckResult, Outcome};

/// The largest answer read from Prometheus.
const MAX_PROMETHEUS_ANSWER: usize = 4 << 20;
/// The largest answer read for a web check.
const MAX_WEB_ANSWER: usize = 1 << 20;

/// A track as the templates see it.
#[derive(Clone, Debug)]
pub struct Subject {
    /// The track.
    pub track: String,
    /// The version it runs.
    pub version: String,
    /// Its address inside the cluster.
    pub address: String,
}

/// What the checks of one judgement are run for.
#[derive(Clone, Debug)]
pub struct Judging<'a> {
    /// The service.
    pub service: &'a str,
    /// The pipeline's namespace.
    pub namespace: &'a str,
    /// The judgement window, seconds (`{{window}}`).
    pub window_seconds: u64,
    /// How strict ratio checks are (the router's own settings).
    pub settings: &'a Settings,
    /// The track judged.
    pub track: Subject,
    /// Its baseline.
    pub baseline: Subject,
    /// The instant queries are evaluated at (unix seconds).
    pub at: f64,
}

impl Judging<'_> {
    /// Fills `with` in with the values of `who`.
    fn filled<T>(&self, who: &Subject, with: impl FnOnce(&TemplateValues<'_>) -> T) -> T {
        let window = format!("{}s", self.window_seconds.max(1));
        with(&TemplateValues {
            service: self.service,
            track: &who.track,
            version: &who.version,
            namespace: self.namespace,
            window: &window,
            address: &who.address,
        })
    }

    fn fill(&self, t: &Template, who: &Subject) -> String {
        self.filled(who, |v| t.render(v))
    }

    /// A Job check's spec with its templates filled in for the track judged.
    pub fn fill_job(&self, spec: &serde_json::Value) -> serde_json::Value {
        self.filled(&self.track, |v| cohort_core::checks::render_job(spec, v))
    }
}

/// Runs every check of `checks`; Job checks through `job` (the cluster's part).
pub async fn run<J, F>(checks: &Checks, judging: &Judging<'_>, job: J) -> Vec<CheckResult>
where
    J: Fn(Check) -> F,
    F: Future<Output = CheckResult>,
{
    let each = checks.checks.iter().map(|c| {
        let job = &job;
        async move {
            match &c.kind {
                CheckKind::Prometheus(q) => prometheus(c, q, checks.prometheus.as_ref(), judging).await,
                CheckKind::Web(_) => web(c, judging).await,
                CheckKind::Job { .. } => job(c.clone()).await,
            }
        }
    });
    futures::future::join_all(each).await
}

fn could_not(c: &Check, why: impl std::fmt::Display) -> CheckResult {
    CheckResult::new(&c.name, c.kind_name(), Outcome::CouldNotJudge, why.to_string())
}

fn timeout(c: &Check) -> Duration {
    Duration::from_millis(c.timeout.as_millis())
}

async fn prometheus(
    c: &Check,
    q: &PrometheusQuery,
    server: Option<&PrometheusServer>,
    judging: &Judging<'_>,
) -> CheckResult {
    let Some(server) = server else {
        return could_not(c, "no Prometheus server is named (`judgement.prometheus.url`)");
    };
    let token = match server.bearer_token.as_ref().map(read_secret).transpose() {
        Ok(t) => t,
        Err(e) => return could_not(c, e),
    };
    let fetcher = match Fetcher::new(server.ca_file.as_deref()) {
        Ok(f) => f,
        Err(e) => return could_not(c, e),
    };
    let ask = |t: &Template, who: &Subject| {
        let promql = judging.fill(t, who);
        let url = query_url(&server.url, &promql, judging.at);
        let (fetcher, token) = (fetcher.clone(), token.clone());
        async move {
            let answer = fetcher
                .get(&url, token.as_deref(), timeout(c), MAX_PROMETHEUS_ANSWER)
                .await
                .map_err(|e| match e {
                    // The URL holds the query, percent-encoded: say the server and the query.
                    FetchError::Timeout { seconds, .. } => {
                        format!("{}: no answer within {seconds:.0} s to {promql}", server.url)
                    }
                    other => other.to_string().replace(&url, &server.url),
                })
                .and_then(|(status, body)| match read_answer(&body) {
                    Ok(a) => Ok(a),
                    Err(e) if status == 200 => Err(format!("{promql}: {e}")),
                    // Prometheus answers its own errors (400, 422, 503) as JSON.
                    Err(crate::prometheus::AnswerError::NotPrometheus(_)) => {
                        Err(format!("{} answered {status} to {promql}", server.url))
                    }
                    Err(e) => Err(format!("{promql}: {e}")),
                });
            (promql, answer)
        }
    };
    let (track, baseline) = (&judging.track, &judging.baseline);
    match q {
        PrometheusQuery::Ratio { errors, requests } => {
            let ((te, ter), (tr, trr), (be, ber), (br, brr)) = tokio::join!(
                ask(errors, track),
                ask(requests, track),
                ask(errors, baseline),
                ask(requests, baseline)
            );
            let queries = [te, tr, be, br];
            match (ter, trr, ber, brr) {
                (Ok(a), Ok(b), Ok(c2), Ok(d)) => {
                    let mut r = judge_ratio(&c.name, (a, b), (c2, d), judging.settings);
                    r.evidence = queries.to_vec();
                    r
                }
                (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
                    let mut r = could_not(c, e);
                    r.queries = 4;
                    r.evidence = queries.to_vec();
                    r
                }
            }
        }
        PrometheusQuery::Value { query, rule } => {
            let compare = rule.compares_with_baseline();
            let (t, b) = tokio::join!(ask(query, track), async {
                match compare {
                    true => Some(ask(query, baseline).await),
                    false => None,
                }
            });
            let mut evidence = vec![t.0];
            evidence.extend(b.as_ref().map(|b| b.0.clone()));
            let b = b.map(|b| b.1).transpose();
            let mut r = match (t.1, b) {
                (Ok(t), Ok(b)) => judge_value(&c.name, rule, t, b),
                (Err(e), _) | (_, Err(e)) => {
                    let mut r = could_not(c, e);
                    r.queries = 1 + u32::from(compare);
                    r
                }
            };
            r.evidence = evidence;
            r
        }
    }
}

async fn web(c: &Check, judging: &Judging<'_>) -> CheckResult {
    let CheckKind::Web(w) = &c.kind else {
        return could_not(c, "not a web check");
    };
    let url = judging.fill(&w.url, &judging.track);
    let token = match w.bearer_token.as_ref().map(read_secret).transpose() {
        Ok(t) => t,
        Err(e) => return could_not(c, e),
    };
    let fetcher = match Fetcher::new(w.ca_file.as_deref()) {
        Ok(f) => f,
        Err(e) => return could_not(c, e),
    };
    match fetcher
        .get(&url, token.as_deref(), timeout(c), MAX_WEB_ANSWER)
        .await
    {
        Ok((status, body)) => crate::web::judge(&c.name, w, &url, status, &body),
        Err(e) => could_not(c, e),
    }
}

/// Prometheus queries `checks` make per judgement.
pub fn queries_per_judgement(checks: &Checks) -> u32 {
    checks
        .checks
        .iter()
        .map(|c| match &c.kind {
            CheckKind::Prometheus(PrometheusQuery::Ratio { .. }) => 4,
            CheckKind::Prometheus(PrometheusQuery::Value { rule, .. }) => {
                1 + u32::from(rule.compares_with_baseline())
            }
            _ => 0,
        })
        .sum()
}

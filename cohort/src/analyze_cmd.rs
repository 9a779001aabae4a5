//! `cohort analyze`, and the judgement `cohort promote` asks for when a gate requires one:
//! the routers' own counts (through the cluster, or from given admin URLs), summed, and
//! judged by the pure `cohort-judge`.

use std::time::Duration;

use anyhow::{Context, Result};
use cohort_judge::{Judgement, Settings, Verdict, WindowStats};
use cohort_spec::Repo;
use serde_json::json;

use crate::cli::{AnalyzeArgs, Cli, JudgeArgs, TextOrJson};
use crate::repo_cmds::{load_valid, repo_dir, repo_root};
use crate::{CouldNotApply, CouldNotCheck, Inconclusive, Reported, UsageError};

/// A judgement of one track against its baseline, with the versions compared.
pub struct Judged {
    /// The service.
    pub service: String,
    /// The track judged and the version it ran in the window.
    pub track: (String, String),
    /// The baseline and its version.
    pub baseline: (String, String),
    /// The window, seconds.
    pub window_seconds: u64,
    /// The routers' verdict and evidence.
    pub judgement: Judgement,
    /// The extra checks' results (`judgement.checks`).
    pub checks: Vec<cohort_checks::CheckResult>,
    /// The routers' verdict and the checks', as one.
    pub verdict: Verdict,
}

impl Judged {
    /// One line for a commit trailer and the terminal.
    pub fn one_line(&self) -> String {
        let j = &self.judgement;
        let cohorts = match j.cohorts.is_empty() {
            true => "all traffic".to_string(),
            false => format!("cohorts {}", j.cohorts.join(", ")),
        };
        let checks = cohort_checks::evidence_line(&self.checks)
            .map(|c| format!("; {c}"))
            .unwrap_or_default();
        format!(
            "{}: {} {} against {} {} over the last {}, {cohorts}: {}{checks}",
            self.verdict,
            self.track.0,
            self.track.1,
            self.baseline.0,
            self.baseline.1,
            cohort_judge::human_seconds(self.window_seconds),
            j.summary
        )
    }

    fn text(&self) -> String {
        let j = &self.judgement;
        // Mirrored series have long names: the column fits the longer.
        let width = self.track.0.len().max(self.baseline.0.len()).max(12);
        let row = |name: &str, s: &cohort_judge::Side| {
            format!(
                "  {name:<width$} {:>9} {:>7} {:>9.2}% {:>9.1} ms {:>9.1} ms",
                s.requests,
                s.errors,
                s.error_rate * 100.0,
                s.p50_ms,
                s.p99_ms
            )
        };
        let verdict = match self.verdict {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Inconclusive => "INCONCLUSIVE",
        };
        let summary = match (j.verdict, cohort_checks::evidence_line(&self.checks)) {
            (_, None) => j.summary.clone(),
            (Verdict::Pass, Some(c)) => format!("router counts pass; {c}"),
            (v, Some(c)) => format!("router counts {v}: {}; {c}", j.summary),
        };
        let mut lines = vec![
            format!(
                "{} {} ({}) against {} ({}), last {}, {}",
                self.service,
                self.track.0,
                self.track.1,
                self.baseline.0,
                self.baseline.1,
                cohort_judge::human_seconds(self.window_seconds),
                match j.cohorts.is_empty() {
                    true => "all traffic (no cohort in common)".to_string(),
                    false => format!("cohorts {}", j.cohorts.join(", ")),
                }
            ),
            format!(
                "  {:<width$} {:>9} {:>7} {:>10} {:>12} {:>12}",
                "", "requests", "errors", "error rate", "p50", "p99"
            ),
            row(&self.track.0, &j.track),
            row(&self.baseline.0, &j.baseline),
            format!(
                "  errors:  z = {:.2}, p = {:.3}{}",
                j.errors.z,
                j.errors.p_value,
                if j.errors.worse { " (worse)" } else { "" }
            ),
            format!(
                "  latency: Mann-Whitney z = {:.2}, p = {:.3}, p50 ×{:.2}, p99 ×{:.2}{}",
                j.latency.z,
                j.latency.p_value,
                j.latency.p50_ratio,
                j.latency.p99_ratio,
                if j.latency.worse { " (worse)" } else { "" }
            ),
            format!("  a pass needs {} requests on each side", j.needed_requests),
        ];
        if !self.checks.is_empty() {
            let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
            lines.push("  checks:".to_string());
            for c in &self.checks {
                lines.push(format!(
                    "    {:<width$}  {:<10} {:<15} {}",
                    c.name,
                    c.kind,
                    c.outcome.to_string(),
                    c.summary
                ));
                // The queries and answers behind anything short of a pass.
                if c.outcome != cohort_checks::Outcome::Pass {
                    lines.extend(c.evidence.iter().map(|e| format!("      {e}")));
                }
            }
        }
        lines.push(format!("verdict: {verdict} — {summary}"));
        lines.join("\n")
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "service": self.service,
            "track": {"name": self.track.0, "version": self.track.1},
            "baseline": {"name": self.baseline.0, "version": self.baseline.1},
            "window_seconds": self.window_seconds,
            "verdict": self.verdict,
            "judgement": self.judgement,
            "checks": self.checks,
            "prometheus_queries": self.checks.iter().map(|c| c.queries).sum::<u32>(),
        })
    }
}

/// The admin base of a router URL: `http://host:9901`, given that, `.../metrics` or `.../stats`.
pub(crate) fn admin_base(url: &str) -> String {
    let url = url.trim_end_matches('/');
    url.strip_suffix("/metrics")
        .or_else(|| url.strip_suffix("/stats"))
        .unwrap_or(url)
        .to_string()
}

pub(crate) async fn fetch(url: &str) -> Result<String> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri: http::Uri = url
        .parse()
        .map_err(|e| UsageError(format!("--metrics-url: `{url}` is not a URL: {e}")))?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
        .await
        .with_context(|| format!("{url}: no answer in 10 s"))?
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .with_context(|| format!("reading {url}"))?
        .to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() {
        anyhow::bail!("{url} answered {status}: {}", text.trim());
    }
    Ok(text)
}

/// Every router's window, summed.
async fn gather(
    repo: Option<&Repo>,
    service: &str,
    args: &JudgeArgs,
    window: cohort_core::Duration,
) -> Result<WindowStats> {
    let window = window.as_secs_ceil().clamp(1, 600);
    let query = format!("stats?window={window}s");
    let mut texts = vec![];
    if args.metrics_urls.is_empty() {
        let repo = repo.ok_or_else(|| {
            UsageError("no release repo here: give the routers' admin URLs with --metrics-url".into())
        })?;
        let target = args.cluster.target(Some(&repo.pipeline.namespace));
        let cluster = cohort_kube::Cluster::connect(&target)
            .await
            .map_err(CouldNotCheck)?;
        let pods = cluster.router_pods(service).await.map_err(CouldNotCheck)?;
        if pods.is_empty() {
            return Err(CouldNotApply(format!(
                "no ready router pod of {service} in namespace {}",
                cluster.namespace
            ))
            .into());
        }
        for pod in pods {
            texts.push((
                format!("pod {pod}"),
                cluster
                    .pod_get(&pod, repo.pipeline.router.admin_port, &query)
                    .await
                    .map_err(CouldNotCheck)?,
            ));
        }
    } else {
        for url in &args.metrics_urls {
            let full = format!("{}/{query}", admin_base(url));
            texts.push((
                full.clone(),
                fetch(&full).await.map_err(|e| CouldNotApply(format!("{e:#}")))?,
            ));
        }
    }
    let mut all: Option<WindowStats> = None;
    for (from, text) in texts {
        let stats: WindowStats = serde_json::from_str(&text)
            .map_err(|e| CouldNotApply(format!("{from} did not answer with router stats: {e}")))?;
        if stats.service != service {
            return Err(UsageError(format!("{from} routes for {}, not {service}", stats.service)).into());
        }
        match &mut all {
            None => all = Some(stats),
            Some(a) => a.merge(stats).map_err(|e| CouldNotApply(e.to_string()))?,
        }
    }
    all.ok_or_else(|| CouldNotApply("no router answered".into()).into())
}

/// The version the release repo gives `track` (`-` for none).
fn repo_version(svc: &cohort_spec::Service, track: &str) -> String {
    crate::checks_run::version(svc, track).unwrap_or_else(|| "-".to_string())
}

/// Whether the routers served the release repo's version of `track` in the window.
fn serves_repo_version(stats: &WindowStats, svc: &cohort_spec::Service, track: &str) -> bool {
    version_of(stats, track) == repo_version(svc, track)
}

/// The version a track ran in the window (the one with most requests).
fn version_of(stats: &WindowStats, track: &str) -> String {
    let mut by: std::collections::BTreeMap<&str, u64> = Default::default();
    for s in stats.series.iter().filter(|s| s.track == track) {
        *by.entry(s.version.as_str()).or_default() += s.counts.requests;
    }
    by.into_iter()
        .max_by_key(|(_, n)| *n)
        .map_or_else(|| "-".to_string(), |(v, _)| v.to_string())
}

/// The judgement's settings: each flag given, else cohort.yaml's `judgement:`, else the
/// built-in value.
pub(crate) fn effective(args: &JudgeArgs, repo: Option<&Repo>) -> cohort_core::JudgementSettings {
    let from_repo = repo.map(|r| r.pipeline.judgement).unwrap_or_default();
    cohort_core::JudgementSettings {
        window: args
            .window
            .map(|w| cohort_core::Duration::from_millis(u64::try_from(w.as_millis()).unwrap_or(u64::MAX)))
            .unwrap_or(from_repo.window),
        confidence: args.confidence.unwrap_or(from_repo.confidence),
        min_error_increase_percent: args
            .min_error_increase
            .unwrap_or(from_repo.min_error_increase_percent),
    }
}

pub(crate) fn settings(judgement: &cohort_core::JudgementSettings) -> Result<Settings> {
    if !(0.5..1.0).contains(&judgement.confidence) {
        return Err(UsageError(format!(
            "--confidence {}: give a value from 0.5 to below 1, e.g. 0.95",
            judgement.confidence
        ))
        .into());
    }
    Ok(Settings {
        confidence: judgement.confidence,
        min_error_difference: judgement.min_error_increase_percent / 100.0,
        ..Settings::default()
    })
}

/// Judges `track` of `service` against `baseline`.
pub async fn judge(
    repo: Option<&Repo>,
    service: &str,
    track: &str,
    baseline: &str,
    args: &JudgeArgs,
    with_checks: bool,
) -> Result<Judged> {
    if track == baseline {
        return Err(UsageError(format!("--track and --baseline are both {track}")).into());
    }
    let judgement = effective(args, repo);
    let settings = settings(&judgement)?;
    let stats = gather(repo, service, args, judgement.window).await?;
    let (t, b, cohorts) = cohort_judge::select(&stats, track, baseline);
    // The rate that says how long more requests take: over the time the track's counts took.
    let active = stats
        .series
        .iter()
        .filter(|s| s.track == track && s.seconds > 0)
        .map(|s| s.seconds)
        .max()
        .unwrap_or(stats.window_seconds)
        .clamp(1, stats.window_seconds.max(1));
    let judgement = cohort_judge::judge(&t, &b, cohorts, active, &stats.latency_bounds_ms, &settings);
    let checks = match (repo, with_checks) {
        (Some(repo), true) => match repo.services.iter().find(|s| s.spec.name.as_str() == service) {
            // A web check or a Job would reach the version being replaced (and a Job's outcome
            // is kept as the new one's): the checks wait until the routers serve the version.
            Some(svc)
                if !crate::checks_run::checks_of(repo, svc).checks.is_empty()
                    && !serves_repo_version(&stats, svc, track) =>
            {
                vec![cohort_checks::CheckResult::new(
                    "checks",
                    "all",
                    cohort_checks::Outcome::Inconclusive,
                    format!(
                        "not run: the routers serve {} on {track}, the release repo says {}; wait until it has rolled out",
                        version_of(&stats, track),
                        repo_version(svc, track)
                    ),
                )]
            }
            Some(svc) => {
                let target = args.cluster.target(Some(&repo.pipeline.namespace));
                crate::checks_run::run(
                    repo,
                    svc,
                    (track, baseline),
                    stats.window_seconds,
                    &settings,
                    &crate::checks_run::Jobs::Wait(&target),
                )
                .await
            }
            None => vec![],
        },
        _ => vec![],
    };
    Ok(Judged {
        service: service.to_string(),
        track: (track.to_string(), version_of(&stats, track)),
        baseline: (baseline.to_string(), version_of(&stats, baseline)),
        window_seconds: stats.window_seconds,
        verdict: cohort_checks::combine(judgement.verdict, &checks),
        judgement,
        checks,
    })
}

/// The release repo here, if there is one (analyze works from URLs without one).
fn repo_here(cli: &Cli) -> Result<Option<Repo>> {
    let root = repo_root(&repo_dir(cli));
    match root.join("cohort.yaml").is_file() {
        true => load_valid(&root).map(Some),
        false => Ok(None),
    }
}

/// Runs `cohort analyze`: exit 0 pass, 1 fail, 3 inconclusive, 2 could not judge.
pub fn analyze(cli: &Cli, args: &AnalyzeArgs) -> Result<()> {
    let repo = repo_here(cli)?;
    // The track the copies come from, per the service's spec.
    let mirrored_from = repo.as_ref().and_then(|r| {
        let svc = r.services.iter().find(|s| s.spec.name.as_str() == args.service)?;
        let m = svc.spec.mirrors.iter().find(|m| m.to.as_str() == args.track)?;
        Some(m.from.to_string())
    });
    let baseline = match (&args.baseline, &repo) {
        (Some(b), _) => b.clone(),
        (None, Some(_)) if args.mirror && mirrored_from.is_some() => {
            mirrored_from.clone().unwrap_or_default()
        }
        (None, Some(r)) => r
            .pipeline
            .stages
            .last()
            .map_or_else(|| "production".to_string(), ToString::to_string),
        (None, None) => "production".to_string(),
    };
    if let Some(r) = &repo {
        for t in [&args.track, &baseline] {
            if !r.pipeline.stages.iter().any(|s| s.as_str() == t) {
                let stages: Vec<&str> = r.pipeline.stages.iter().map(|s| s.as_str()).collect();
                return Err(
                    UsageError(format!("`{t}` is not a stage (stages: {})", stages.join(", "))).into(),
                );
            }
        }
    }
    if args.mirror && repo.is_some() && mirrored_from.as_deref() != Some(baseline.as_str()) {
        return Err(UsageError(format!(
            "{} has no mirror from {baseline} to {}; add one to its spec (`mirror:`), or judge without --mirror",
            args.service, args.track
        ))
        .into());
    }
    // Mirrored copies and their originals are series of their own.
    let (track, baseline) = match args.mirror {
        true => (
            cohort_judge::mirror_copies(&args.track, &baseline),
            cohort_judge::mirror_sources(&baseline, &args.track),
        ),
        false => (args.track.clone(), baseline),
    };
    let runtime = crate::runtime()?;
    let judged = runtime.block_on(judge(
        repo.as_ref(),
        &args.service,
        &track,
        &baseline,
        &args.judge,
        // Mirrored copies are not a track's own traffic: its checks judge the track itself.
        !(args.mirror || args.counts_only),
    ))?;
    match args.output {
        TextOrJson::Text => out!("{}", judged.text()),
        TextOrJson::Json => out_exact!("{}", serde_json::to_string_pretty(&judged.json())?),
    }
    match judged.verdict {
        Verdict::Pass => Ok(()),
        Verdict::Fail => Err(Reported.into()),
        Verdict::Inconclusive => Err(Inconclusive.into()),
    }
}

/// For `cohort promote` into a stage whose gate requires a judgement: the version on the
/// stage it leaves, judged against the last stage. `Some(evidence)` when it passed; the
/// judgement is printed either way.
pub fn judgement_for_promotion(
    repo: &Repo,
    service: &str,
    source: &str,
    args: &JudgeArgs,
) -> Result<Option<String>> {
    let baseline = repo
        .pipeline
        .stages
        .last()
        .map_or_else(|| "production".to_string(), ToString::to_string);
    let runtime = crate::runtime()?;
    let judged = runtime
        .block_on(judge(Some(repo), service, source, &baseline, args, true))
        .context("the gate requires a canary judgement, and it could not be made")?;
    eout!("{}", judged.text());
    Ok((judged.verdict == Verdict::Pass).then(|| judged.one_line()))
}

#[cfg(test)]
mod tests {
    use super::admin_base;

    #[test]
    fn a_router_url_may_name_its_metrics_or_stats() {
        for url in [
            "http://10.0.0.7:9901",
            "http://10.0.0.7:9901/",
            "http://10.0.0.7:9901/metrics",
            "http://10.0.0.7:9901/stats",
        ] {
            assert_eq!(admin_base(url), "http://10.0.0.7:9901", "{url}");
        }
    }
}

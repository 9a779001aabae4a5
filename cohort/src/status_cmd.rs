//! `cohort status`: the namespace gathered with one LIST per kind, judged by the pure
//! evaluator against the release repo (when there is one) and shown at a glance.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use anyhow::{Context, Result};
use cohort_health::table::{self, Color};
use cohort_health::{Expectations, ExpectedService, ExpectedTrack, Report, Settings};
use cohort_spec::Repo;
use serde_json::{Value, json};

use crate::cli::{Cli, StatusArgs, TextOrJson};
use crate::repo_cmds::{load_valid, repo_dir, repo_root};
use crate::{CouldNotCheck, Reported, UsageError};

/// What the release repo says each service should run, read off the objects `cohort render`
/// makes (one source of truth for apply and status).
pub fn expectations(repo: &Repo) -> Result<Expectations> {
    let mut services = BTreeMap::new();
    for svc in &repo.services {
        let name = svc.spec.name.to_string();
        let mut expected = ExpectedService::default();
        for stage in &repo.pipeline.stages {
            expected.tracks.insert(
                stage.to_string(),
                ExpectedTrack {
                    version: None,
                    replicas: 0,
                },
            );
        }
        let objects = cohort_render::render_service(&repo.pipeline, svc)
            .with_context(|| format!("rendering {name}"))?;
        for o in objects.iter().filter(|o| o.kind == "Deployment") {
            let labels = &o.value["metadata"]["labels"];
            let replicas = o.value["spec"]["replicas"]
                .as_u64()
                .and_then(|r| u32::try_from(r).ok())
                .unwrap_or(1);
            match (labels["tier"].as_str(), labels["track"].as_str()) {
                (Some("router"), _) => expected.router_replicas = replicas,
                (Some("service"), Some(track)) => {
                    expected.tracks.insert(
                        track.to_string(),
                        ExpectedTrack {
                            version: labels["version"].as_str().map(String::from),
                            replicas,
                        },
                    );
                }
                _ => {}
            }
        }
        services.insert(name, expected);
    }
    Ok(Expectations {
        services,
        stages: repo.pipeline.stages.iter().map(ToString::to_string).collect(),
    })
}

fn report_json(report: &Report) -> Value {
    let services: Vec<Value> = report
        .services
        .iter()
        .map(|s| {
            let findings: Vec<Value> = s
                .findings
                .iter()
                .map(|f| {
                    let mut v = serde_json::to_value(f).unwrap_or(Value::Null);
                    if let Value::Object(m) = &mut v {
                        m.insert("severity".into(), json!(f.severity()));
                        m.insert("key".into(), json!(f.key()));
                        m.insert("message".into(), json!(f.to_string()));
                    }
                    v
                })
                .collect();
            json!({
                "service": s.service,
                "healthy": s.healthy(),
                "router": s.router,
                "tracks": s.tracks,
                "findings": findings,
            })
        })
        .collect();
    json!({ "healthy": report.healthy(), "services": services })
}

/// Runs `cohort status`: exit 0 when every service is healthy, 1 when problems were found,
/// 2 when the cluster could not be checked.
pub fn status(cli: &Cli, args: &StatusArgs) -> Result<()> {
    let root = repo_root(&repo_dir(cli));
    // Without a release repo, expectations come from labels and defaults (as the seed's tool
    // worked); with one, from what it renders.
    let repo = match root.join("cohort.yaml").is_file() {
        true => Some(load_valid(&root)?),
        false => None,
    };
    let expected = repo.as_ref().map(expectations).transpose()?;
    let target = cohort_kube::Target {
        kubeconfig: args.kubeconfig.clone(),
        context: args.context.clone(),
        namespace: args
            .namespace
            .clone()
            .or_else(|| repo.as_ref().map(|r| r.pipeline.namespace.clone())),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let inventory = runtime
        .block_on(async {
            let cluster = cohort_kube::Cluster::connect(&target).await?;
            cluster.inventory().await
        })
        .map_err(CouldNotCheck)?;

    let mut settings = Settings::defaults(jiff::Timestamp::now());
    settings.min_ready_endpoints = args.min_ready_endpoints;
    settings.router_replicas = args.router_replicas;
    let mut report = cohort_health::evaluate(&inventory, expected.as_ref(), &settings);
    if !args.services.is_empty() {
        for wanted in &args.services {
            if !report.services.iter().any(|s| &s.service == wanted) {
                let known: Vec<&str> = report.services.iter().map(|s| s.service.as_str()).collect();
                return Err(UsageError(format!(
                    "no service {wanted} in namespace {} (services: {})",
                    target.namespace.as_deref().unwrap_or("default"),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
                .into());
            }
        }
        report.services.retain(|s| args.services.contains(&s.service));
    }

    match args.output {
        TextOrJson::Json => out!("{}", serde_json::to_string_pretty(&report_json(&report))?),
        TextOrJson::Text => {
            let color = match std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
                true => Color::Ansi,
                false => Color::Plain,
            };
            if report.services.is_empty() {
                out!(
                    "no services (Services labelled tier: service that select router pods) in this namespace"
                );
            } else {
                let text = table::render(&report, color);
                out!("{}", text.trim_end());
            }
        }
    }
    match report.healthy() {
        true => Ok(()),
        false => Err(Reported.into()),
    }
}

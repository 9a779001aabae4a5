//! `cohort status`: the namespace gathered with one LIST per kind, judged by the pure
//! evaluator against the release repo (when there is one) and shown at a glance.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use anyhow::{Context, Result};
use cohort_core::{EmailChannel, Notifications, Printable, SecretRef, SlackChannel, SmtpSecurity};
use cohort_health::table::{self, Color};
use cohort_health::{Expectations, ExpectedService, Report, Settings};
use cohort_notify::send::secret::SecretSource;
use cohort_spec::Repo;
use serde_json::{Value, json};

use cohort_notify::send::{ChannelConfig, ChannelKind, Notifier, RetryPolicy};
use cohort_notify::{Damping, Problem, Tracker};

use crate::cli::{Cli, SmtpSecurityArg, StatusArgs, TextOrJson};
use crate::repo_cmds::{load_valid, repo_dir, repo_root};
use crate::{CouldNotCheck, Reported, UsageError};

/// What the release repo says each service should run, read off the objects `cohort render`
/// makes (one source of truth for apply and status).
pub fn expectations(repo: &Repo) -> Result<Expectations> {
    let stages: Vec<String> = repo.pipeline.stages.iter().map(ToString::to_string).collect();
    let mut services = BTreeMap::new();
    for svc in &repo.services {
        let name = svc.spec.name.to_string();
        let objects = cohort_render::render_service(&repo.pipeline, svc)
            .with_context(|| format!("rendering {name}"))?;
        let values: Vec<Value> = objects.into_iter().map(|o| o.value).collect();
        services.insert(name, ExpectedService::from_objects(&values, &stages));
    }
    Ok(Expectations { services, stages })
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
    if let Some(url) = &args.fleet {
        return fleet(url, args);
    }
    let root = repo_root(&repo_dir(cli));
    // Without a release repo, expectations come from labels and defaults (as the seed's tool
    // worked); with one, from what it renders.
    let repo = match root.join("cohort.yaml").is_file() {
        true => Some(load_valid(&root)?),
        false => None,
    };
    let expected = repo.as_ref().map(expectations).transpose()?;
    let target = args
        .cluster
        .target(repo.as_ref().map(|r| r.pipeline.namespace.as_str()));
    let runtime = crate::runtime()?;
    let mut settings = Settings::defaults(jiff::Timestamp::now());
    settings.min_ready_endpoints = args.min_ready_endpoints;
    settings.router_replicas = args.router_replicas;
    if args.watch {
        let notifier = notifier(args, repo.as_ref())?;
        return runtime.block_on(watch(args, &target, expected.as_ref(), settings, notifier));
    }
    let (namespace, inventory) = runtime
        .block_on(async {
            let cluster = cohort_kube::Cluster::connect(&target).await?;
            Ok((cluster.namespace.clone(), cluster.inventory().await?))
        })
        .map_err(CouldNotCheck)?;
    let report = select(
        cohort_health::evaluate(&inventory, expected.as_ref(), &settings),
        args,
        &namespace,
    )?;
    match args.output {
        TextOrJson::Json => out_exact!("{}", serde_json::to_string_pretty(&report_json(&report))?),
        // Coloured: cohort_health's table escapes the text it shows.
        TextOrJson::Text => out_exact!("{}", text(&report)),
    }
    match report.healthy() {
        true => Ok(()),
        false => Err(Reported.into()),
    }
}

/// Only the services asked for; naming one the namespace does not have is a usage error.
fn select(mut report: Report, args: &StatusArgs, namespace: &str) -> Result<Report> {
    if args.services.is_empty() {
        return Ok(report);
    }
    for wanted in &args.services {
        if !report.services.iter().any(|s| &s.service == wanted) {
            let known: Vec<&str> = report.services.iter().map(|s| s.service.as_str()).collect();
            return Err(UsageError(format!(
                "no service {wanted} in namespace {namespace} (services: {})",
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
    Ok(report)
}

fn text(report: &Report) -> String {
    let color = match std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        true => Color::Ansi,
        false => Color::Plain,
    };
    match report.services.is_empty() {
        true => {
            "no services (Services labelled tier: service that select router pods) in this namespace".into()
        }
        false => table::render(report, color).trim_end().to_string(),
    }
}

/// The notification channels: cohort.yaml's `notifications`, each channel replaced by the
/// flags when they name one; checked (secrets loaded) before watching starts.
fn notifier(args: &StatusArgs, repo: Option<&Repo>) -> Result<Option<Notifier>> {
    let mut wanted = repo.map(|r| r.pipeline.notifications.clone()).unwrap_or_default();
    let flags = flag_channels(args)?;
    let mut from = vec![];
    if flags.slack.is_some() {
        wanted.slack = flags.slack;
        from.push("slack (flags)");
    } else if wanted.slack.is_some() {
        from.push("slack (cohort.yaml)");
    }
    if flags.email.is_some() {
        wanted.email = flags.email;
        from.push("email (flags)");
    } else if wanted.email.is_some() {
        from.push("email (cohort.yaml)");
    }
    let notifier = channels(&wanted)?;
    if !from.is_empty() {
        eout!("notifying: {}", from.join(", "));
    }
    Ok(notifier)
}

/// The channels the flags name.
fn flag_channels(args: &StatusArgs) -> Result<Notifications> {
    let slack = match (&args.slack_webhook_env, &args.slack_webhook_file) {
        (Some(var), _) => Some(SecretRef::Env(var.clone())),
        (None, Some(file)) => Some(SecretRef::File(file.clone())),
        (None, None) => None,
    }
    .map(|webhook| SlackChannel { webhook });
    let email = match &args.smtp_server {
        None => None,
        Some(server) => {
            let (host, port) = cohort_spec::notifications::host_and_port(server)
                .map_err(|e| UsageError(format!("--smtp-server {server}: {e}")))?;
            let login = match &args.smtp_user {
                None => None,
                Some(user) => {
                    let password = match (&args.smtp_password_env, &args.smtp_password_file) {
                        (Some(var), _) => SecretRef::Env(var.clone()),
                        (None, Some(file)) => SecretRef::File(file.clone()),
                        (None, None) => {
                            return Err(UsageError(
                                "--smtp-user needs --smtp-password-env VAR or --smtp-password-file FILE"
                                    .into(),
                            )
                            .into());
                        }
                    };
                    Some((user.clone(), password))
                }
            };
            Some(EmailChannel {
                host,
                port,
                security: match args.smtp_security {
                    SmtpSecurityArg::Starttls => SmtpSecurity::StartTls,
                    SmtpSecurityArg::Tls => SmtpSecurity::Tls,
                    SmtpSecurityArg::Plain => SmtpSecurity::Plain,
                },
                login,
                from: args.email_from.clone().unwrap_or_default(),
                to: args.email_to.clone(),
            })
        }
    };
    Ok(Notifications { slack, email })
}

/// The notifier for `wanted`, or `None` when it names no channel.
pub(crate) fn channels(wanted: &Notifications) -> Result<Option<Notifier>> {
    use cohort_notify::send::email::{EmailConfig, SmtpAuth};
    use cohort_notify::send::slack::SlackConfig;
    let secret = |s: &SecretRef| match s {
        SecretRef::Env(var) => SecretSource::Env(var.clone()),
        SecretRef::File(path) => SecretSource::File(path.clone()),
    };
    let mut channels = vec![];
    if let Some(slack) = &wanted.slack {
        channels.push(ChannelConfig {
            name: "slack".into(),
            kind: ChannelKind::Slack(SlackConfig::new(secret(&slack.webhook))),
        });
    }
    if let Some(e) = &wanted.email {
        use cohort_notify::send::email::SmtpSecurity as Security;
        let security = match e.security {
            SmtpSecurity::StartTls => Security::StartTls,
            SmtpSecurity::Tls => Security::ImplicitTls,
            SmtpSecurity::Plain => Security::Plain,
        };
        let mut email = EmailConfig::new(e.host.clone(), security, e.from.clone(), e.to.clone());
        if let Some(port) = e.port {
            email.port = port;
        }
        email.auth = e.login.as_ref().map(|(user, password)| SmtpAuth {
            username: user.clone(),
            password: secret(password),
        });
        channels.push(ChannelConfig {
            name: "email".into(),
            kind: ChannelKind::Email(email),
        });
    }
    if channels.is_empty() {
        return Ok(None);
    }
    Notifier::new(channels, RetryPolicy::default())
        .map(Some)
        .map_err(|e| UsageError(e.to_string()).into())
}

/// `status --watch`: re-evaluates on every change, prints the table when it changes, says
/// (and sends) which problems opened and resolved. Runs until Ctrl-C.
async fn watch(
    args: &StatusArgs,
    target: &cohort_kube::Target,
    expected: Option<&Expectations>,
    mut settings: Settings,
    notifier: Option<Notifier>,
) -> Result<()> {
    let cluster = cohort_kube::Cluster::connect(target)
        .await
        .map_err(CouldNotCheck)?;
    eout!("watching namespace {} (Ctrl-C to stop)", cluster.namespace);
    let mut watch = cluster.watch();
    let notifier = notifier.map(std::sync::Arc::new);
    // A problem must be seen in two evaluations in a row to be announced, and gone from two
    // to be resolved: a pod restarting does not page anyone.
    let mut tracker = Tracker::new(Damping::default());
    let mut shown = String::new();
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    // Damping counts evaluations, and a namespace where nothing changes would never get a
    // second one: the last state is also re-evaluated on a timer (no API call).
    let mut recheck = tokio::time::interval(args.recheck_every.max(std::time::Duration::from_millis(100)));
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let inventory = tokio::select! {
            next = watch.next(std::time::Duration::from_secs(1)) => {
                recheck.reset();
                next.map_err(CouldNotCheck)?
            }
            _ = recheck.tick() => match watch.snapshot() {
                Some(now) => now,
                None => continue,
            },
            _ = &mut interrupted => return Ok(()),
        };
        settings.now = jiff::Timestamp::now();
        let report = select(
            cohort_health::evaluate(&inventory, expected, &settings),
            args,
            &cluster.namespace,
        )?;
        let now = settings.now;
        match args.output {
            TextOrJson::Json => out_exact!("{}", serde_json::to_string(&report_json(&report))?),
            TextOrJson::Text => {
                let table = text(&report);
                if table != shown {
                    out!("--- {}", now.strftime("%Y-%m-%d %H:%M:%S UTC"));
                    out_exact!("{table}");
                    shown = table;
                }
            }
        }
        let problems: Vec<Problem> = report
            .services
            .iter()
            .flat_map(|s| {
                s.findings
                    .iter()
                    .filter(|f| f.severity() == cohort_health::Severity::Problem)
                    .map(|f| Problem::new(&s.service, f.key(), f.to_string()))
            })
            .collect();
        let events = tracker.observe(problems, now);
        for e in &events {
            let p = e.problem();
            let what = if e.is_resolved() { "resolved" } else { "problem" };
            eout!("{what}: {}: {}", Printable(&p.service), Printable(&p.summary));
        }
        if let (Some(n), false) = (&notifier, events.is_empty()) {
            // Sent in the background: a slow webhook or mail server must not hold up watching.
            let n = std::sync::Arc::clone(n);
            tokio::spawn(async move {
                n.notify(&events).await;
            });
        }
    }
}

/// A client of the control API at `url` with the fleet_token in `token_file`, trusting the
/// CA certificates in `ca_file` too (`status --fleet`, `autopilot --control`).
pub fn fleet_client(
    url: &str,
    token_file: Option<&std::path::Path>,
    ca_file: Option<&std::path::Path>,
) -> Result<cohort_agent::ControlSource> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(crate::UsageError(format!(
            "{url} is not the control API's URL: give it with its scheme, e.g. https://cohort.example.com"
        ))
        .into());
    }
    let token_file = token_file.unwrap_or(std::path::Path::new(""));
    let token = std::fs::read_to_string(token_file).map_err(|e| {
        crate::UsageError(format!(
            "cannot read the token file {}: {e}",
            token_file.display()
        ))
    })?;
    let token = token.trim();
    if token.is_empty() || token.contains(['\n', '\r']) {
        return Err(crate::UsageError(format!(
            "the token file {} must hold the fleet_token alone, on one line; it is {}",
            token_file.display(),
            if token.is_empty() {
                "empty"
            } else {
                "several lines"
            }
        ))
        .into());
    }
    cohort_agent::ControlSource::new(url, "", token, ca_file)
        .map_err(|e| crate::UsageError(format!("{:#}", anyhow::Error::new(e))).into())
}

/// `status --fleet`: every cluster's last report from the control API, one line each.
fn fleet(url: &str, args: &StatusArgs) -> Result<()> {
    let client = fleet_client(url, args.token_file.as_deref(), args.ca_file.as_deref())?;
    let runtime = crate::runtime()?;
    let fleet = runtime
        .block_on(client.fleet())
        .map_err(|e| crate::CouldNotApply(format!("{:#}", anyhow::Error::new(e))))?;
    let now = jiff::Timestamp::now().as_second();
    match args.output {
        TextOrJson::Text => out!("{}", cohort_control::fleet::table(&fleet, now).trim_end()),
        TextOrJson::Json => {
            let clusters: Vec<Value> = fleet
                .clusters
                .iter()
                .map(|c| {
                    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
                    if let Value::Object(m) = &mut v {
                        m.insert(
                            "state".into(),
                            json!(cohort_control::fleet::standing(c, fleet.revision.as_deref())),
                        );
                    }
                    v
                })
                .collect();
            out_exact!(
                "{}",
                serde_json::to_string_pretty(&json!({ "revision": fleet.revision, "clusters": clusters }))?
            );
        }
    }
    let all_good = fleet.clusters.iter().all(|c| {
        cohort_control::fleet::standing(c, fleet.revision.as_deref())
            == cohort_control::fleet::Standing::InSync
    });
    match all_good {
        true => Ok(()),
        false => Err(crate::Reported.into()),
    }
}

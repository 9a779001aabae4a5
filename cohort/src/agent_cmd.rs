//! `cohort agent`: the in-cluster agent's process: logging, the admin port, signals, and
//! the choice of source. The loop itself is cohort_agent's.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use cohort_agent::metrics::Metrics;
use cohort_agent::{Agent, ControlSource, GitSource, KubeTarget, Settings, Source};
use cohort_core::Printable;
use cohort_kube::{Cluster, Target as KubeTargetArgs};

use cohort_release::mirror::{Credentials, ExtraRoots, Mirror};

use crate::cli::{AgentArgs, GitRemoteArgs, LogFormat};
use crate::serve_cmd::stop_signal;
use crate::{CouldNotApply, CouldNotCheck, Reported, UsageError};

fn init_logging(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .with_target(false);
    // A second initialisation (never in this binary) would only be refused.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The local mirror of `--git URL`: in `--mirror-dir` or the default one, trusting
/// `--git-ca-file` for https and signing in with `--git-credentials-file`.
pub fn open_mirror(url: &str, remote: &GitRemoteArgs) -> Result<Mirror> {
    open_mirror_for("agent", url, remote)
}

/// [`open_mirror`] for the command `what`, whose default mirror directory is its own: an
/// agent and an autopilot on one machine never share one.
pub fn open_mirror_for(what: &str, url: &str, remote: &GitRemoteArgs) -> Result<Mirror> {
    // The flags are checked before the mirror directory is made.
    let roots = match &remote.git_ca_file {
        Some(_) if !url.starts_with("https://") => {
            return Err(UsageError(format!(
                "--git-ca-file is for an https remote; {url} is not one (drop the flag, or give the https:// URL)"
            ))
            .into());
        }
        Some(path) => Some(ExtraRoots::from_pem_file(path).map_err(crate::usage)?),
        None => None,
    };
    let dir = remote
        .mirror_dir
        .clone()
        .unwrap_or_else(|| default_mirror_dir(what, url));
    let credentials = match &remote.git_credentials_file {
        // Never in clear text: a token sent over http is a token given away.
        Some(_) if !url.starts_with("https://") => {
            return Err(UsageError(format!(
                "--git-credentials-file is for an https remote, and {url} is not one: credentials are never sent \
                 in clear text (give the https:// URL, or drop the flag)"
            ))
            .into());
        }
        Some(path) => Some(Credentials::from_file(path).map_err(crate::usage)?),
        None => None,
    };
    let mut mirror = Mirror::open(&dir, url, &remote.branch).map_err(crate::usage)?;
    if let Some(roots) = roots {
        mirror.trust(roots);
    }
    if let Some(credentials) = credentials {
        mirror.authenticate(credentials);
    }
    Ok(mirror)
}

/// A mirror directory named after the remote, so two remotes never share one.
pub fn default_mirror_dir(what: &str, url: &str) -> PathBuf {
    // Never a user or password written into the URL: the directory name is readable by all.
    let name: String = cohort_release::mirror::shown(url)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let tail: String = name
        .chars()
        .rev()
        .take(60)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    std::env::temp_dir().join(format!("cohort-{what}-{}", tail.trim_matches('-')))
}

fn read_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("cannot read the token file {}: {e}", path.display())))?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(UsageError(format!("the token file {} is empty", path.display())).into());
    }
    Ok(token)
}

pub fn agent(args: &AgentArgs) -> Result<()> {
    init_logging(args.log_format);
    let cluster_name = args.cluster.clone().unwrap_or_else(|| "default".to_string());
    let runtime = crate::two_thread_runtime()?;
    runtime.block_on(async {
        let target = KubeTargetArgs {
            kubeconfig: args.cluster_args.kubeconfig.clone(),
            context: args.cluster_args.context.clone(),
            namespace: args.cluster_args.namespace.clone(),
        };
        let cluster = Cluster::connect(&target).await.map_err(CouldNotCheck)?;
        let target = KubeTarget::new(cluster, args.timeout);
        let settings = Settings {
            cluster: cluster_name.clone(),
            interval: args.interval,
            max_backoff: args.max_backoff,
            shutdown_grace: args.shutdown_grace,
            parallel: usize::from(args.parallel),
            // Reports go to a control API only: there the routers' counts travel with them.
            router_counts: match (&args.control, args.metrics_urls.is_empty()) {
                (None, _) => cohort_agent::RouterCounts::Off,
                (Some(_), true) => cohort_agent::RouterCounts::Cluster,
                (Some(_), false) => cohort_agent::RouterCounts::Urls(args.metrics_urls.clone()),
            },
        };
        match (&args.remote.git, &args.control) {
            (Some(url), _) => {
                let prefix = args.remote.path.clone().unwrap_or_default();
                let only = (!args.services.is_empty()).then(|| args.services.clone());
                let source = GitSource::new(open_mirror(url, &args.remote)?, &prefix, &cluster_name, only);
                drive(source, target, settings, args).await
            }
            (None, Some(url)) => {
                let token = read_token(args.token_file.as_deref().unwrap_or(Path::new("")))?;
                let source = ControlSource::new(url, &cluster_name, &token, args.ca_file.as_deref())
                    .map_err(|e| UsageError(format!("{:#}", anyhow::Error::new(e))))?;
                drive(source, target, settings, args).await
            }
            (None, None) => Err(UsageError("give --git URL or --control URL".into()).into()),
        }
    })
}

async fn drive<S: Source>(source: S, target: KubeTarget, settings: Settings, args: &AgentArgs) -> Result<()> {
    let metrics = Arc::new(Metrics::default());
    let mut agent = Agent::start(source, target, settings, metrics.clone())
        .await
        .map_err(|e| CouldNotApply(cohort_agent::agent::chain(&e)))?;
    if args.once {
        let pass = agent.pass().await;
        let report = agent.report();
        for s in &report.services {
            let rev = s.applied_revision.as_deref().unwrap_or("-");
            out!(
                "{:<24} {:<8} {}{}",
                s.name,
                format!("{:?}", s.state).to_lowercase(),
                // By characters: the revision came from the control API, and a byte slice
                // through a multibyte character would panic.
                rev.chars().take(12).collect::<String>(),
                s.error
                    .as_deref()
                    .map(|e| format!("  {}", Printable(e)))
                    .unwrap_or_default()
            );
        }
        for p in &report.problems {
            out!("problem: {}", Printable(p));
        }
        if !pass.reached_source {
            return Err(
                CouldNotApply("the source could not be polled (see the problem above)".into()).into(),
            );
        }
        return match pass.failed.is_empty() && pass.invalid.is_none() {
            true => Ok(()),
            false => Err(Reported.into()),
        };
    }
    let listener = tokio::net::TcpListener::bind(args.admin)
        .await
        .with_context(|| format!("cannot listen on {} for the admin port", args.admin))?;
    tracing::info!(admin = %listener.local_addr()?, "admin port: /live /ready /metrics");
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin = tokio::spawn(cohort_agent::admin::serve(
        listener,
        metrics.registry(),
        cohort_agent::admin::agent_ready(agent.readiness()),
        async move {
            let _ = admin_stopped.await;
        },
    ));
    agent.run(stop_signal()).await;
    let _ = stop_admin.send(());
    let _ = admin.await;
    tracing::info!("agent stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The regression this pins: `--git https://user:token@host/...` without --mirror-dir
    /// named a directory in /tmp after the URL, token and all, readable by every local user.
    #[test]
    fn a_default_mirror_directory_never_names_the_credentials_in_the_url() {
        let dir = super::default_mirror_dir("autopilot", "https://user:s3cret@git.example.com/team/r.git");
        let name = dir.display().to_string();
        assert!(!name.contains("s3cret") && !name.contains("user"), "{name}");
        assert!(
            name.contains("cohort-autopilot-https---git-example-com-team-r-git"),
            "{name}"
        );
    }
}

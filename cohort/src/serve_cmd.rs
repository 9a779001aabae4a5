//! `cohort serve`: the control API over the release repo.

use std::sync::Arc;

use anyhow::{Context, Result};
use cohort_control::server::{Control, app, serve as serve_api, tls_config};
use cohort_control::tokens::Tokens;
use cohort_release::git::ReleaseRepo;

use crate::UsageError;
use crate::cli::{Cli, ServeArgs};
use crate::repo_cmds::{load_valid, prefix_in, repo_dir, repo_root};

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}

pub fn serve(cli: &Cli, args: &ServeArgs) -> Result<()> {
    let dir = repo_dir(cli);
    let root = repo_root(&dir);
    // Say what is wrong with the repo now rather than to every agent later; a later invalid
    // commit is served with its problems, and agents skip it.
    load_valid(&root)?;
    let git = ReleaseRepo::open(&dir)?;
    let prefix = prefix_in(&git, &root);
    let revision = git.head_commit()?.ok_or_else(|| {
        UsageError(format!(
            "the release repo at {} has no commit yet; run `cohort init` there first",
            root.display()
        ))
    })?;
    let tokens =
        Tokens::read(&args.tokens).map_err(|e| UsageError(format!("{:#}", anyhow::Error::new(e))))?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(
            tls_config(cert, key).map_err(|e| UsageError(format!("{:#}", anyhow::Error::new(e))))?,
        )),
        _ => None,
    };
    if tls.is_none() && !args.listen.ip().is_loopback() && !args.plain_http {
        return Err(UsageError(format!(
            "refusing plain HTTP on {}: bearer tokens would cross the network in the clear. Give \
             --tls-cert and --tls-key, listen on 127.0.0.1, or pass --plain-http if a proxy in front terminates TLS",
            args.listen
        ))
        .into());
    }
    let clusters: Vec<String> = tokens.clusters.iter().map(|c| c.name.clone()).collect();
    let control = Arc::new(Control::new(git, &prefix, tokens));
    let runtime = crate::two_thread_runtime()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        eprintln!(
            "cohort serve: control API on {scheme}://{addr} for {} cluster{} ({}), release repo {} at {}",
            clusters.len(),
            if clusters.len() == 1 { "" } else { "s" },
            clusters.join(", "),
            root.display(),
            &revision[..revision.len().min(8)],
        );
        eprintln!("  GET {scheme}://{addr}/openapi.json describes the API; Ctrl-C stops");
        serve_api(listener, app(control), tls, stop_signal()).await?;
        eprintln!("cohort serve: stopped");
        Ok(())
    })
}

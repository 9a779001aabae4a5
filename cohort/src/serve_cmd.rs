//! `cohort serve`: the control API over the release repo (a clone, or a mirror of a remote).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use cohort_control::conn::{Limits, serve as serve_api};
use cohort_control::server::{Control, RepoSource, app, tls_config};
use cohort_control::tokens::Tokens;
use cohort_release::git::ReleaseRepo;
use cohort_release::mirror::Mirror;

use crate::cli::{Cli, ServeArgs};
use crate::repo_cmds::{load_valid, prefix_in, repo_dir, repo_root};
use crate::{UsageError, usage};

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

/// What is served: the repo, where its files sit, what it is called in messages, its
/// revision now, and (for a remote) the mirror handle that fetches.
struct Served {
    source: RepoSource,
    prefix: PathBuf,
    name: String,
    revision: String,
    fetcher: Option<Mirror>,
}

fn served(cli: &Cli, args: &ServeArgs) -> Result<Served> {
    if let Some(url) = &args.remote.git {
        let mut fetcher = crate::agent_cmd::open_mirror(url, &args.remote)?;
        // The first fetch says at once whether the remote can be read at all.
        let revision = fetcher
            .fetch(&AtomicBool::new(false))
            .map_err(|e| crate::CouldNotApply(format!("{:#}", anyhow::Error::new(e))))?;
        let dir = fetcher.git_dir().to_owned();
        let reader = Mirror::open(&dir, url, &args.remote.branch).map_err(usage)?;
        return Ok(Served {
            source: RepoSource::Mirror {
                reader,
                head: Some(revision.clone()),
            },
            prefix: args.remote.path.clone().unwrap_or_default(),
            name: format!("{url} branch {}", args.remote.branch),
            revision,
            fetcher: Some(fetcher),
        });
    }
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
    Ok(Served {
        source: RepoSource::Worktree(git),
        prefix,
        name: root.display().to_string(),
        revision,
        fetcher: None,
    })
}

pub fn serve(cli: &Cli, args: &ServeArgs) -> Result<()> {
    let tokens = Tokens::read(&args.tokens).map_err(usage)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(tls_config(cert, key).map_err(usage)?)),
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
    let Served {
        source,
        prefix,
        name,
        revision,
        fetcher,
    } = served(cli, args)?;
    let clusters: Vec<String> = tokens.clusters.iter().map(|c| c.name.clone()).collect();
    let control = Arc::new(
        Control::new(source, &prefix, tokens)
            .with_body_timeout(args.body_timeout)
            .with_silent_after(args.silent_after),
    );
    let limits = Limits {
        max_connections: args.max_connections as usize,
        header_timeout: args.header_timeout,
        idle_timeout: args.idle_timeout,
    };
    for warning in control.warnings() {
        eout!("warning: {warning}");
    }
    let runtime = crate::two_thread_runtime()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        eout!(
            "cohort serve: control API on {scheme}://{addr} for {} cluster{} ({}), release repo {name} at {}",
            clusters.len(),
            if clusters.len() == 1 { "" } else { "s" },
            clusters.join(", "),
            &revision[..revision.len().min(8)],
        );
        eout!("  GET {scheme}://{addr}/openapi.json describes the API; Ctrl-C stops");
        if let Some(fetcher) = fetcher {
            tokio::spawn(keep_fetching(
                fetcher,
                control.clone(),
                args.fetch_every,
                revision.clone(),
            ));
        }
        serve_api(listener, app(control), tls, limits, stop_signal()).await?;
        eout!("cohort serve: stopped");
        Ok(())
    })
}

/// Fetches the remote every `every`; a failure is said once, and again when it heals.
async fn keep_fetching(fetcher: Mirror, control: Arc<Control>, every: std::time::Duration, mut last: String) {
    let fetcher = Arc::new(std::sync::Mutex::new(fetcher));
    let mut failing = false;
    loop {
        tokio::time::sleep(every).await;
        let f = fetcher.clone();
        let fetched = tokio::task::spawn_blocking(move || {
            let mut mirror = f.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            mirror
                .fetch(&AtomicBool::new(false))
                .map_err(|e| format!("{:#}", anyhow::Error::new(e)))
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match fetched {
            Ok(commit) => {
                if failing {
                    eout!("cohort serve: fetching works again");
                    failing = false;
                }
                let new = commit != last;
                if new {
                    eout!("cohort serve: new revision {}", &commit[..commit.len().min(8)]);
                    last.clone_from(&commit);
                }
                control.fetched(commit);
                if new {
                    for warning in control.warnings() {
                        eout!("warning: {warning}");
                    }
                }
            }
            Err(e) if !failing => {
                eout!("cohort serve: cannot fetch (agents keep getting the last revision fetched): {e}");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

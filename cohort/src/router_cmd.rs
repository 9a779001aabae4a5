//! `cohort router`: load the config, serve traffic and admin, reload on SIGHUP, drain on SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use cohort_core::router_config::RouterConfig;
use cohort_router::proxy::{Limits, Router};
use cohort_router::table::Table;
use cohort_spec::Diagnostic;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::Reported;

/// How often backend names are resolved again (all A/AAAA records), as HAProxy's resolvers do.
const RESOLVE_INTERVAL: Duration = Duration::from_secs(10);
/// How often the config file is checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
use crate::repo_cmds::print_diagnostics;

/// Where the routing comes from.
pub enum Source {
    /// A router.yaml as `cohort render` writes it.
    Cohort(PathBuf),
    /// An haproxy.cfg of the seed's shape.
    Haproxy(PathBuf),
}

impl Source {
    fn path(&self) -> &Path {
        match self {
            Source::Cohort(p) | Source::Haproxy(p) => p,
        }
    }
}

/// Reads and validates the config; every problem is reported with file:line:col. Warnings
/// (an haproxy.cfg's directives that cannot change routing) are printed as they are found.
fn read_config(source: &Source) -> Result<Result<RouterConfig, Vec<Diagnostic>>> {
    let path = source.path();
    // A ConfigMap's file is a symbolic link; a named pipe or a huge file put there instead
    // must not hang or swamp the reload loop.
    let text = cohort_spec::entry::read_named_file(path).context("cannot use the router config")?;
    let mut diags = vec![];
    if let Source::Haproxy(_) = source {
        let config = cohort_spec::haproxy::read_haproxy(
            &text,
            None,
            &mut cohort_spec::diag::Sink::new(path, &mut diags),
        );
        let (warnings, errors): (Vec<_>, Vec<_>) = diags
            .into_iter()
            .partition(|d| d.severity == cohort_spec::Severity::Warning);
        print_diagnostics(&warnings);
        return Ok(config.ok_or(errors));
    }
    let config = match cohort_yaml::parse(&text) {
        Ok(node) => cohort_spec::router_config::read_router_config(
            &node,
            &mut cohort_spec::diag::Sink::new(path, &mut diags),
        ),
        Err(e) => {
            cohort_spec::diag::Sink::new(path, &mut diags).error(
                e.pos,
                cohort_spec::Kind::Syntax,
                format!("this is not valid YAML: {}", e.message),
                None,
            );
            None
        }
    };
    Ok(config.ok_or(diags))
}

pub fn run(
    config: &Source,
    listen: SocketAddr,
    admin: SocketAddr,
    drain_delay: Duration,
    limits: Limits,
    threads: Option<usize>,
) -> Result<()> {
    // One thread: everything on the calling thread, no hand-offs between workers (what a
    // router pod limited to one CPU wants). Otherwise a worker per CPU.
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = builder.enable_all().build().context("cannot start the runtime")?;
    runtime.block_on(serve(config, listen, admin, drain_delay, limits))
}

async fn serve(
    path: &Source,
    listen: SocketAddr,
    admin: SocketAddr,
    drain_delay: Duration,
    limits: Limits,
) -> Result<()> {
    let config = match read_config(path)? {
        Ok(c) => c,
        Err(diags) => {
            print_diagnostics(&diags);
            return Err(Reported.into());
        }
    };
    let table = Table::build(config).await?;
    let router = Router::with_limits(table, limits);
    let traffic = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let admin_listener = TcpListener::bind(admin)
        .await
        .with_context(|| format!("cannot listen on {admin}"))?;
    eout!(
        "cohort router: {} on {} (admin on {})",
        router.table().config.service,
        traffic.local_addr()?,
        admin_listener.local_addr()?
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let serving = tokio::spawn(cohort_router::proxy::serve(
        traffic,
        Arc::clone(&router),
        stopped(stop_rx.clone()),
    ));
    let admin_serving = tokio::spawn(cohort_router::admin::serve_admin(
        admin_listener,
        Arc::clone(&router),
        stopped(stop_rx),
    ));

    let mut hangup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    // A ConfigMap volume updates by swapping a symlink, which inotify on the file misses;
    // comparing what the path resolves to each second sees every kind of update.
    let mut seen = fingerprint(path.path());
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    let mut resolve = tokio::time::interval(RESOLVE_INTERVAL);
    resolve.tick().await;
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                seen = fingerprint(path.path());
                reload(path, &router).await;
            }
            _ = tick.tick() => {
                let now = fingerprint(path.path());
                if now != seen {
                    seen = now;
                    reload(path, &router).await;
                }
            }
            _ = resolve.tick() => re_resolve(&router).await,
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    router.set_unready();
    eout!("cohort router: draining for {}ms", drain_delay.as_millis());
    tokio::time::sleep(drain_delay).await;
    let _ = stop_tx.send(true);
    let _ = serving.await;
    let _ = admin_serving.await;
    Ok(())
}

/// What identifies the file's content without reading it: the inode, size and mtime of what
/// the path resolves to now (after symlinks).
fn fingerprint(path: &Path) -> Option<(u64, u64, u64, std::time::SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.len(), m.modified().ok()?))
}

/// Resolves the backend names of the config in force again; a table with other addresses
/// takes over (health state starts afresh for it), the same addresses change nothing.
async fn re_resolve(router: &Router) {
    let current = router.table();
    if let Ok(fresh) = Table::build(current.config.clone()).await
        && !fresh.same_backends(&current)
    {
        eout!("cohort router: backend addresses changed; now using them");
        router.swap(fresh);
    }
}

async fn reload(path: &Source, router: &Router) {
    match read_config(path) {
        Ok(Ok(config)) => match Table::build(config).await {
            Ok(table) => {
                router.swap(table);
                router.metrics.reloaded(true);
                eout!("cohort router: reloaded {}", path.path().display());
            }
            Err(e) => {
                router.metrics.reloaded(false);
                eout!("cohort router: reload refused: {e}");
            }
        },
        Ok(Err(diags)) => {
            router.metrics.reloaded(false);
            eout!("cohort router: reload refused, the config in force keeps serving:");
            print_diagnostics(&diags);
        }
        Err(e) => {
            router.metrics.reloaded(false);
            eout!("cohort router: reload refused: {e:#}");
        }
    }
}

//! `cohort router`: load the config, serve traffic and admin, reload on SIGHUP, drain on SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use cohort_core::router_config::RouterConfig;
use cohort_router::admin::ConfigReaders;
use cohort_router::metrics::Exhausted;
use cohort_router::proxy::{Limits, Router};
use cohort_router::table::{Table, TableError};
use cohort_spec::Diagnostic;
use tokio::net::{TcpListener, TcpSocket};
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
/// A valid config comes with the digest of its text, which the admin port reports.
fn read_config(source: &Source) -> Result<Result<(RouterConfig, String), Vec<Diagnostic>>> {
    let path = source.path();
    // A ConfigMap's file is a symbolic link; a named pipe or a huge file put there instead
    // must not hang or swamp the reload loop.
    let text = cohort_spec::entry::read_named_file(path).context("cannot use the router config")?;
    let digest = cohort_spec::router_config::digest(text.as_bytes());
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
        return Ok(config.map(|c| (c, digest)).ok_or(errors));
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
    Ok(config.map(|c| (c, digest)).ok_or(diags))
}

/// The connection limit: `explicit` (`--max-connections`), or what the file-descriptor limit
/// allows once raised toward its hard limit (`resources::connections_within`). An explicit
/// limit beyond what the descriptors allow is kept, with a warning: past the descriptors,
/// accepts pause and requests get 503 naming the router, but no track is blamed.
pub fn max_connections(explicit: Option<usize>) -> Result<usize> {
    use cohort_router::resources::{
        ADMIN_CONNECTIONS, MAX_DEFAULT_CONNECTIONS, PROCESS_RESERVE, connections_within, descriptors_for,
        raise_fd_limit,
    };
    let fds = raise_fd_limit(explicit.unwrap_or(MAX_DEFAULT_CONNECTIONS));
    let fits = connections_within(fds.soft);
    let limit = fds.soft.map_or("unlimited".to_string(), |n| n.to_string());
    let hard = fds.hard.map_or("unlimited".to_string(), |n| n.to_string());
    match explicit {
        None if fits == 0 => anyhow::bail!(
            "the file-descriptor limit is {limit} (hard limit {hard}): the router needs {} for itself \
             and its admin port, and 2 per client connection; raise it (ulimit -n, or the container \
             runtime's default) to at least 1024",
            PROCESS_RESERVE + ADMIN_CONNECTIONS as u64
        ),
        None => Ok(fits),
        Some(n) => {
            if n > fits {
                eout!(
                    "cohort router: warning: --max-connections {n} needs {} file descriptors (2 per \
                     connection, {} for the router and its admin port) but the limit is {limit} (hard \
                     limit {hard}), which fits {fits}; past that, accepting pauses and requests get 503 \
                     (router overloaded). Raise the limit (ulimit -n) or lower --max-connections.",
                    descriptors_for(n),
                    PROCESS_RESERVE + ADMIN_CONNECTIONS as u64
                );
            }
            Ok(n)
        }
    }
}

pub fn run(
    config: &Source,
    listen: SocketAddr,
    admin: SocketAddr,
    drain_delay: Duration,
    limits: Limits,
    threads: Option<usize>,
    config_readers: ConfigReaders,
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
    runtime.block_on(serve(config, listen, admin, drain_delay, limits, config_readers))
}

async fn serve(
    path: &Source,
    listen: SocketAddr,
    admin: SocketAddr,
    drain_delay: Duration,
    limits: Limits,
    config_readers: ConfigReaders,
) -> Result<()> {
    // Taken before the first read, so a change made while the router starts (the kubelet
    // updating its ConfigMap, say) is seen at the first tick instead of being taken for the
    // config in force.
    let read_at_start = fingerprint(path.path());
    let (config, digest) = match read_config(path)? {
        Ok(loaded) => loaded,
        Err(diags) => {
            print_diagnostics(&diags);
            return Err(Reported.into());
        }
    };
    let table = Table::build(config).await?;
    let router = Router::with_limits(table, limits);
    router.set_config_digest(digest);
    let traffic = bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
    let admin_listener = bind(admin).with_context(|| format!("cannot listen on {admin}"))?;
    eout!(
        "cohort router: {} on {} (admin on {}), at most {} connections",
        router.table().config.service,
        traffic.local_addr()?,
        admin_listener.local_addr()?,
        limits.max_connections
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
    let admin_serving = tokio::spawn(cohort_router::admin::serve_admin_with(
        admin_listener,
        Arc::clone(&router),
        config_readers,
        stopped(stop_rx),
    ));

    let mut hangup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    // A ConfigMap volume updates by swapping a symlink, which inotify on the file misses;
    // comparing what the path resolves to each second sees every kind of update.
    let mut seen = read_at_start;
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    let mut resolve = tokio::time::interval(RESOLVE_INTERVAL);
    resolve.tick().await;
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                seen = fingerprint(path.path());
                if !reload(path, &router).await {
                    seen = None;
                }
            }
            _ = tick.tick() => {
                let now = fingerprint(path.path());
                if now != seen {
                    seen = now;
                    // Refused for want of descriptors: try again at the next tick.
                    if !reload(path, &router).await {
                        seen = None;
                    }
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

/// Listens on `addr` with as long a queue of connections waiting to be accepted as the kernel
/// allows (net.core.somaxconn, as Go does). At the connection limit, new connections wait there
/// for a slot; with std's and mio's 128 the queue soon fills and further clients see their
/// handshakes dropped and retried seconds later.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(65_535)
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
    match Table::build(current.config.clone()).await {
        Ok(fresh) if !fresh.same_backends(&current) => {
            eout!("cohort router: backend addresses changed; now using them");
            router.swap(fresh);
        }
        Ok(_) => {}
        // Out of descriptors, a name may seem to resolve to nothing: keep the addresses in force.
        Err(TableError::OutOfResources { .. }) => router.metrics.exhausted(Exhausted::Resolve),
        Err(_) => {}
    }
}

/// Reloads the config; false when it should be tried again (the router was out of resources
/// and could not resolve the backends).
async fn reload(path: &Source, router: &Router) -> bool {
    match read_config(path) {
        Ok(Ok((config, digest))) => match Table::build(config).await {
            Ok(table) => {
                router.swap(table);
                router.set_config_digest(digest);
                router.metrics.reloaded(true);
                eout!("cohort router: reloaded {}", path.path().display());
            }
            Err(e @ TableError::OutOfResources { .. }) => {
                router.metrics.exhausted(Exhausted::Resolve);
                eout!("cohort router: reload postponed: {e}; the config in force keeps serving");
                return false;
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
    true
}

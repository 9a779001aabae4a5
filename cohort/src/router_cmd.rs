//! `cohort router`: load the config, serve traffic and admin, reload on SIGHUP, drain on SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use cohort_core::router_config::EndpointsRef;
use cohort_core::router_config::RouterConfig;
use cohort_kube::endpoints::{EndpointMap, EndpointWatch};
use cohort_router::admin::ConfigReaders;
use cohort_router::metrics::Exhausted;
use cohort_router::proxy::{Limits, Router};
use cohort_router::table::{Addresses, Table, TableError};
use cohort_spec::Diagnostic;
use tokio::net::{TcpListener, TcpSocket};
use tokio::signal::unix::{SignalKind, signal};

use crate::Reported;

/// How often backend names are resolved again (all A/AAAA records), as HAProxy's resolvers do.
const RESOLVE_INTERVAL: Duration = Duration::from_secs(10);
/// How often the config file is checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
use crate::repo_cmds::print_diagnostics;

/// Where the tracks' backends are found.
pub enum Discovery {
    /// Resolve each track's `host:port` names (all A/AAAA records), again every 10 s.
    Dns,
    /// Watch the EndpointSlices of each track's Service (the config's `endpoints`) in the
    /// cluster `target` names and balance over the ready pods; tracks without `endpoints`
    /// resolve their names.
    Kubernetes(cohort_kube::Target),
}

/// The pods the EndpointSlice watch knows, and the watch (none with DNS discovery, or when no
/// track names its Service).
struct Pods {
    cluster: Option<cohort_kube::Cluster>,
    watch: Option<(Vec<EndpointsRef>, EndpointWatch)>,
    known: EndpointMap,
}

impl Pods {
    async fn connect(discovery: &Discovery) -> Result<Pods> {
        let cluster = match discovery {
            Discovery::Dns => None,
            Discovery::Kubernetes(target) => Some(
                cohort_kube::Cluster::connect(target)
                    .await
                    .context("--discovery kubernetes needs a Kubernetes API server")?,
            ),
        };
        Ok(Pods {
            cluster,
            watch: None,
            known: EndpointMap::new(),
        })
    }

    /// Watches the Services `config` names (unless it already does) and waits, at most
    /// `within`, for their pods to be listed. False when they were not listed in time.
    async fn follow(&mut self, config: &RouterConfig, within: Option<Duration>) -> bool {
        let Some(cluster) = &self.cluster else { return true };
        let mut refs: Vec<EndpointsRef> = config.tracks.iter().filter_map(|t| t.endpoints.clone()).collect();
        refs.sort();
        refs.dedup();
        if self.watch.as_ref().is_some_and(|(now, _)| *now == refs) {
            return true;
        }
        if refs.is_empty() {
            eout!(
                "cohort router: no track names its Service's EndpointSlices (`endpoints`); resolving backend names"
            );
            self.watch = None;
            return true;
        }
        let services: Vec<&str> = refs.iter().map(|r| r.service.as_str()).collect();
        eout!(
            "cohort router: watching the EndpointSlices of {} in namespace {}",
            services.join(", "),
            cluster.namespace
        );
        let mut watch = cluster.watch_endpoints(refs.clone(), |e| {
            eout!(
                "cohort router: {} (retrying; the router needs list and watch on endpointslices                  in its namespace: `cohort render` gives its ServiceAccount that Role)",
                cohort_core::Printable(&e.to_string())
            )
        });
        let first = match within {
            Some(limit) => tokio::time::timeout(limit, watch.changed()).await.ok(),
            None => Some(watch.changed().await),
        };
        match first {
            Some(Ok(map)) => {
                self.known = map;
                self.watch = Some((refs, watch));
                true
            }
            _ => false,
        }
    }

    /// The next change to the pods (never, without a watch).
    async fn changed(&mut self) -> Result<()> {
        match &mut self.watch {
            Some((_, watch)) => {
                self.known = watch.changed().await.context("the EndpointSlice watch ended")?;
                Ok(())
            }
            None => std::future::pending().await,
        }
    }

    /// Each track's backends: its Service's ready pods when it names one and they are
    /// watched, else what its names resolve to.
    async fn addresses(&self, config: &RouterConfig) -> Result<Addresses, TableError> {
        let mut out = Vec::with_capacity(config.tracks.len());
        for t in &config.tracks {
            let watched = self
                .watch
                .as_ref()
                .and(t.endpoints.as_ref())
                .and_then(|r| self.known.get(r));
            out.push(match watched {
                Some(pods) => pods.clone(),
                None => Table::resolve_track(t).await?,
            });
        }
        Ok(out)
    }

    /// A table for `config` over the backends known now, taking over `previous`'s backends
    /// that stay.
    async fn table(&self, config: RouterConfig, previous: Option<&Table>) -> Result<Table, TableError> {
        let addresses = self.addresses(&config).await?;
        Table::assemble(config, &addresses, previous)
    }
}

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

#[allow(clippy::too_many_arguments)]
pub fn run(
    config: &Source,
    discovery: &Discovery,
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
    runtime.block_on(serve(
        config,
        discovery,
        listen,
        admin,
        drain_delay,
        limits,
        config_readers,
    ))
}

async fn serve(
    path: &Source,
    discovery: &Discovery,
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
    let mut pods = Pods::connect(discovery).await?;
    // Until the pods are listed there is nowhere to send requests: the router does not listen
    // yet, so its pod is not ready and the routers already running keep the traffic.
    pods.follow(&config, None).await;
    let table = pods.table(config, None).await?;
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
    tokio::spawn(crate::heap::give_back_after_parking(Arc::clone(&router)));
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
                if !reload(path, &router, &mut pods).await {
                    seen = None;
                }
            }
            _ = tick.tick() => {
                let now = fingerprint(path.path());
                if now != seen {
                    seen = now;
                    // Refused for want of descriptors: try again at the next tick.
                    if !reload(path, &router, &mut pods).await {
                        seen = None;
                    }
                }
            }
            changed = pods.changed() => {
                changed?;
                re_resolve(&router, &pods).await;
            }
            _ = resolve.tick() => re_resolve(&router, &pods).await,
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

/// Finds the backends of the config in force again (names resolved, pods as last watched); a
/// table with other addresses takes over, keeping the backends that stay with their pooled
/// connections and health; the same addresses change nothing.
async fn re_resolve(router: &Router, pods: &Pods) {
    let current = router.table();
    match pods.table(current.config.clone(), Some(&current)).await {
        Ok(fresh) if !fresh.same_backends(&current) => {
            for (before, now) in current.tracks.iter().zip(&fresh.tracks) {
                let (was, is) = (before.addresses(), now.addresses());
                if was != is {
                    let list: Vec<String> = is.iter().map(SocketAddr::to_string).collect();
                    eout!(
                        "cohort router: track {} now has {} backend{}: {}",
                        now.name,
                        is.len(),
                        if is.len() == 1 { "" } else { "s" },
                        if list.is_empty() {
                            "none".into()
                        } else {
                            list.join(", ")
                        }
                    );
                }
            }
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
async fn reload(path: &Source, router: &Router, pods: &mut Pods) -> bool {
    match read_config(path) {
        Ok(Ok((config, digest))) => match async {
            // Pods of a Service it did not watch before are listed first (tried again at the next
            // tick if that takes too long).
            if !pods.follow(&config, Some(Duration::from_secs(10))).await {
                eout!("cohort router: reload postponed: the new tracks' pods are not listed yet");
                return None;
            }
            Some(pods.table(config, Some(&router.table())).await)
        }
        .await
        {
            None => return false,
            Some(table) => match table {
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

//! `cohort demo`: the whole pipeline on one machine, told with the real commands. A temporary
//! release repo, local "pods" per track (HTTP servers on loopback answering with their
//! version), the real router process on the rendered router config, synthetic traffic with a
//! cohort mix and user ids, and `cohort autopilot` deciding each promotion, ramp step and
//! rollback by itself while the demo plays the agent (pods and router follow each commit).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use cohort_judge::{Counts, LATENCY_BOUNDS_MS};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::Reported;

const SERVICE: &str = "account-service";
const GOOD: &str = "1.19.0";
/// The bad build: fine for internal users, but it fails some customers' requests and is
/// slower for them (a code path only real data reaches).
const BAD: &str = "1.20.0";
const PODS_PER_TRACK: usize = 3;
/// Share of traffic per cohort (`None`: no header, paying users), in percent.
const MIX: &[(Option<&str>, u32)] = &[
    (Some("INTERNAL"), 10),
    (Some("FREE"), 50),
    (Some("ENTERPRISE"), 15),
    (None, 25),
];

/// How the demo runs.
pub struct DemoOptions {
    /// Finish in under a minute: no pauses, more traffic.
    pub fast: bool,
    /// Leave the release repo behind.
    pub keep: bool,
}

/// What a pod serves, per track: the version it runs now.
type Versions = Arc<RwLock<BTreeMap<String, String>>>;

/// Runs the demo; exit 0 when the story ended as it should.
pub fn run(options: &DemoOptions) -> Result<()> {
    let runtime = crate::two_thread_runtime()?;
    runtime.block_on(demo(options))
}

/// The demo's narrator: step lines always; the live table redrawn in a terminal, or a line
/// every few seconds otherwise.
struct Screen {
    tty: bool,
    drawn: usize,
}

// The one place that drives the terminal on purpose (cursor up, clear); what it shows is
// escaped like everything else.
#[allow(clippy::disallowed_macros)]
impl Screen {
    fn say(&mut self, text: &str) {
        self.clear();
        println!("{}", cohort_core::printable::escape_lines(text));
    }

    fn clear(&mut self) {
        if self.tty && self.drawn > 0 {
            print!("\x1b[{}A\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }

    fn live(&mut self, lines: &[String]) {
        if !self.tty {
            return;
        }
        self.clear();
        // A line that wraps would throw off the cursor-up of the next redraw.
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse::<usize>().ok())
            .unwrap_or(80)
            .saturating_sub(1)
            .max(20);
        for l in lines {
            let cut: String = cohort_core::printable::escape(l).chars().take(width).collect();
            println!("{cut}");
        }
        self.drawn = lines.len();
        let _ = std::io::stdout().flush();
    }
}

/// Per-track counts of the last seconds, as the traffic generator saw them.
#[derive(Default)]
struct View {
    per_second: Mutex<BTreeMap<(String, String), BTreeMap<u64, Counts>>>,
    verdict: Mutex<String>,
    /// ENTERPRISE requests answered by a track other than production.
    enterprise_off_production: AtomicU64,
    /// Requests the bad build answered on paid or production.
    bad_on_paid_or_production: AtomicU64,
    requests: AtomicU64,
}

impl View {
    fn record(&self, track: &str, version: &str, ok: bool, ms: f64) {
        let now = cohort_router::window::now();
        let mut map = self.per_second.lock().unwrap_or_else(|e| e.into_inner());
        let seconds = map.entry((track.to_string(), version.to_string())).or_default();
        let c = seconds.entry(now).or_insert_with(|| Counts {
            requests: 0,
            errors: 0,
            latency: vec![0; LATENCY_BOUNDS_MS.len() + 1],
        });
        c.requests += 1;
        c.errors += u64::from(!ok);
        let bucket = LATENCY_BOUNDS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(LATENCY_BOUNDS_MS.len());
        c.latency[bucket] += 1;
        seconds.retain(|s, _| *s + 10 > now);
    }

    /// The table: per track, its version, requests/s, error rate and p99 over 5 s.
    fn table(&self, versions: &BTreeMap<String, String>, stages: &[String]) -> Vec<String> {
        let now = cohort_router::window::now();
        let map = self.per_second.lock().unwrap_or_else(|e| e.into_inner());
        let mut lines = vec![format!(
            "  {:<11} {:<8} {:>7} {:>7} {:>9}",
            "track", "version", "req/s", "errors", "p99"
        )];
        for track in stages {
            let version = versions.get(track).cloned().unwrap_or_else(|| "-".into());
            let mut sum = Counts::default();
            if let Some(seconds) = map.get(&(track.clone(), version.clone())) {
                for (_, c) in seconds.range(now.saturating_sub(5)..now) {
                    sum.add(c);
                }
            }
            let rate = sum.requests as f64 / 5.0;
            let errors = match sum.requests {
                0 => 0.0,
                n => sum.errors as f64 * 100.0 / n as f64,
            };
            lines.push(format!(
                "  {track:<11} {version:<8} {rate:>7.0} {errors:>6.2}% {:>6.1} ms",
                cohort_judge::quantile_ms(&sum.latency, LATENCY_BOUNDS_MS, 0.99)
            ));
        }
        lines.push(format!(
            "  autopilot: {}",
            self.verdict.lock().unwrap_or_else(|e| e.into_inner())
        ));
        lines
    }
}

/// A small deterministic generator for the traffic mix and the pods' misbehaviour.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Starts one pod of `track`: it answers with the track's current version; the bad build
/// fails 8% of customers' requests and takes three times as long for them.
async fn pod(track: String, versions: Versions) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a pod")?;
    let addr = listener.local_addr().context("a pod's address")?;
    let served = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (track, versions, served) = (track.clone(), Arc::clone(&versions), Arc::clone(&served));
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (track, versions, served) =
                        (track.clone(), Arc::clone(&versions), Arc::clone(&served));
                    async move {
                        let version = versions
                            .read()
                            .unwrap_or_else(|e| e.into_inner())
                            .get(&track)
                            .cloned()
                            .unwrap_or_default();
                        let customer = req
                            .headers()
                            .get("x-traffic-group")
                            .is_none_or(|v| v.as_bytes() != b"INTERNAL");
                        let n = mix(served.fetch_add(1, Ordering::Relaxed) ^ addr.port() as u64);
                        let bad = version == BAD && customer && req.uri().path() != "/healthz";
                        let base_us = 1_000 + n % 2_000;
                        let delay = if bad { base_us * 3 } else { base_us };
                        tokio::time::sleep(Duration::from_micros(delay)).await;
                        let fail = if bad { n % 100 < 8 } else { n % 1000 < 2 };
                        let status = if fail { 500 } else { 200 };
                        let body = format!("{SERVICE} {track} {version}\n");
                        let resp = http::Response::builder()
                            .status(status)
                            .header("x-track", track.as_str())
                            .header("x-version", version.as_str())
                            .body(Full::new(Bytes::from(body)));
                        resp.map_err(|e| e.to_string())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The router process, on the rendered router config.
struct RouterProcess {
    child: Child,
    traffic: SocketAddr,
    admin: SocketAddr,
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_router(config: &Path) -> Result<RouterProcess> {
    use std::io::BufRead;
    let exe = std::env::current_exe().context("finding the cohort binary")?;
    let mut child = Command::new(exe)
        .args(["router", "--config"])
        .arg(config)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--threads",
            "1",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .context("starting cohort router")?;
    let stderr = child.stderr.take().context("the router's stderr")?;
    let mut lines = std::io::BufReader::new(stderr).lines();
    let first = lines
        .next()
        .context("the router said nothing")?
        .context("reading the router's first line")?;
    let addrs: Vec<SocketAddr> = first
        .split([' ', '(', ')'])
        .filter_map(|w| w.parse().ok())
        .collect();
    std::thread::spawn(move || for _ in lines {});
    match addrs[..] {
        [traffic, admin] => Ok(RouterProcess {
            child,
            traffic,
            admin,
        }),
        _ => bail!("unexpected first line from the router: {first}"),
    }
}

/// Renders the router config of the repo's service with the pods' addresses as backends and
/// swaps it in (the router picks up the change by itself).
fn write_router_config(repo: &Path, pods: &BTreeMap<String, Vec<SocketAddr>>, path: &Path) -> Result<()> {
    let (repo, diags) = cohort_spec::repo::load_repo(repo);
    let repo = repo.with_context(|| format!("the demo's release repo is invalid: {diags:?}"))?;
    let svc = repo
        .services
        .iter()
        .find(|s| s.spec.name.as_str() == SERVICE)
        .context("the demo's service")?;
    let mut config = cohort_render::router_config(&repo.pipeline, svc);
    config.trusted_peers = cohort_core::TrustedPeers::Only(vec!["127.0.0.0/8".parse().context("loopback")?]);
    for t in &mut config.tracks {
        t.backends = pods
            .get(t.name.as_str())
            .map(|a| a.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
    }
    let text = cohort_yaml::to_yaml(&serde_json::to_value(&config)?);
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).context("writing the router config")?;
    std::fs::rename(&tmp, path).context("swapping the router config")?;
    Ok(())
}

/// The versions the repo's tracks run now.
fn track_versions(repo: &Path) -> Result<BTreeMap<String, String>> {
    let (repo, diags) = cohort_spec::repo::load_repo(repo);
    let repo = repo.with_context(|| format!("the demo's release repo is invalid: {diags:?}"))?;
    let svc = repo.services.first().context("the demo's service")?;
    Ok(svc
        .state
        .tracks
        .iter()
        .map(|(t, v)| (t.to_string(), v.to_string()))
        .collect())
}

/// Runs a real cohort command in the repo, showing it and what it printed.
fn cohort(screen: &mut Screen, repo: &Path, args: &[&str]) -> Result<(bool, String)> {
    let exe = std::env::current_exe().context("finding the cohort binary")?;
    screen.say(&format!("$ cohort {}", shown(args)));
    let out = Command::new(exe)
        .args(args)
        .current_dir(repo)
        .env_remove("COHORT_REPO")
        .env("NO_COLOR", "1")
        .env("GIT_AUTHOR_NAME", "cohort demo")
        .env("GIT_AUTHOR_EMAIL", "demo@localhost")
        .env("GIT_COMMITTER_NAME", "cohort demo")
        .env("GIT_COMMITTER_EMAIL", "demo@localhost")
        .output()
        .context("running cohort")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for line in text.lines() {
        screen.say(&format!("  {line}"));
    }
    Ok((out.status.success(), text))
}

/// The arguments as they would be typed (URLs shortened).
fn shown(args: &[&str]) -> String {
    args.iter()
        .map(|a| match a.contains(' ') {
            true => format!("{a:?}"),
            false => a.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sends traffic until `stop`: each request picks a cohort by the mix and a user id.
async fn traffic(
    router: SocketAddr,
    view: Arc<View>,
    stop: Arc<AtomicBool>,
    worker: u64,
    pace: Option<Duration>,
) {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4)
        .build_http::<Empty<Bytes>>();
    let mut n = worker << 40;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let r = mix(n);
        let mut roll = (r % 100) as u32;
        let cohort = MIX
            .iter()
            .find(|(_, share)| {
                let hit = roll < *share;
                roll = roll.saturating_sub(*share);
                hit
            })
            .and_then(|(c, _)| *c);
        let user = (r >> 8) % 10_000;
        let mut req = http::Request::get(format!("http://{router}/accounts/{user}"));
        if let Some(c) = cohort {
            req = req.header("X-Traffic-Group", c);
        }
        let Ok(req) = req.header("X-User-Id", user.to_string()).body(Empty::new()) else {
            continue;
        };
        let started = Instant::now();
        let Ok(resp) = client.request(req).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let ok = resp.status().is_success();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_string()
        };
        let (track, version) = (header("x-track"), header("x-version"));
        let _ = resp.into_body().collect().await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        view.requests.fetch_add(1, Ordering::Relaxed);
        if cohort == Some("ENTERPRISE") && track != "production" {
            view.enterprise_off_production.fetch_add(1, Ordering::Relaxed);
        }
        if version == BAD && (track == "paid" || track == "production") {
            view.bad_on_paid_or_production.fetch_add(1, Ordering::Relaxed);
        }
        view.record(&track, &version, ok, ms);
        if let Some(p) = pace {
            tokio::time::sleep(p).await;
        }
    }
}

/// What the demo needs at hand while it tells the story.
struct Stage<'a> {
    repo: &'a Path,
    config: &'a Path,
    pods: &'a BTreeMap<String, Vec<SocketAddr>>,
    versions: &'a Versions,
    view: &'a Arc<View>,
    stages: &'a [String],
}

impl Stage<'_> {
    /// After a command changed the repo: the pods roll to the new versions and the router
    /// takes the new config; waits until the router serves it.
    async fn roll(&self, router: &RouterProcess) -> Result<()> {
        let now = track_versions(self.repo)?;
        *self.versions.write().unwrap_or_else(|e| e.into_inner()) = now.clone();
        write_router_config(self.repo, self.pods, self.config)?;
        let client =
            hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let deadline = Instant::now() + Duration::from_secs(10);
        let uri: http::Uri = format!("http://{}/config", router.admin).parse()?;
        loop {
            if let Ok(resp) = client.get(uri.clone()).await
                && let Ok(body) = resp.into_body().collect().await
            {
                let config: serde_json::Value = serde_json::from_slice(&body.to_bytes()).unwrap_or_default();
                let served: BTreeMap<String, String> = config["tracks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| {
                        Some((
                            t["name"].as_str()?.to_string(),
                            t["version"].as_str()?.to_string(),
                        ))
                    })
                    .collect();
                if served == now {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("the router did not take the new config within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn demo(options: &DemoOptions) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("cohort-demo-")
        .tempdir()
        .context("creating a temporary directory")?;
    let mut screen = Screen {
        tty: std::io::stdout().is_terminal(),
        drawn: 0,
    };
    screen.say("cohort demo: one service, four tracks, real router, real commands, synthetic customers.\n");
    let repo = tmp.path().join("shop-releases");
    let repo_arg = repo.to_string_lossy().into_owned();
    cohort(&mut screen, tmp.path(), &["init", &repo_arg])?;
    // The demo's pipeline: every promotion needs a passing judgement instead of the seed's
    // soak times and manual checks, and canaries take 10% so a judgement needs seconds.
    let path = repo.join("cohort.yaml");
    let yaml = std::fs::read_to_string(&path).context("reading cohort.yaml")?;
    let gates_at = yaml.find("\ngates:\n").context("the scaffold's gates")?;
    let mut yaml = yaml[..gates_at].to_string();
    yaml.push_str(
        "\ngates:\n  canary:\n    require_judgement: true\n  paid:\n    require_judgement: true\n  production:\n    require_judgement: true\n",
    );
    let yaml = yaml
        .replace(
            "    canary: 5%\n    production: 95%",
            "    canary: 20%\n    production: 80%",
        )
        .replace("  paid: 5%\n  production: 95%", "  paid: 20%\n  production: 80%")
        .replace("# sticky:\n#   header: X-User-Id", "sticky:\n  header: X-User-Id");
    if !yaml.contains("sticky:\n  header: X-User-Id") || !yaml.contains("    canary: 20%") {
        bail!("the scaffold's cohort.yaml changed shape; the demo's edits no longer apply");
    }
    // The autopilot promotes into every stage after internal by itself, ramping canary's
    // share 5% → 10% → 20% of FREE first, and rolls canary back by itself when it fails.
    let step = if options.fast { "2s" } else { "5s" };
    let policy = format!(
        "autopilot:\n  stages:\n    canary:\n      promote: auto\n      ramp: [5%, 10%, 20%]\n      step_time: {step}\n    \
         paid:\n      promote: auto\n    production:\n      promote: auto\n\
         judgement:\n  confidence: 0.99\n  min_error_increase: 3%\n"
    );
    std::fs::write(&path, format!("{policy}{yaml}")).context("writing cohort.yaml")?;
    // A settled pipeline to start from: every track runs the scaffold's canary build.
    let state_path = repo.join(cohort_spec::state_path(
        &cohort_core::ServiceName::new(SERVICE).context("the demo's service name")?,
    ));
    let state = std::fs::read_to_string(&state_path).context("reading the service's state")?;
    let settled = [
        "internal: \"1.18.0\"",
        "paid: \"1.15.0\"",
        "production: \"1.15.0\"",
    ]
    .iter()
    .fold(state.clone(), |s, from| {
        let track = from.split(':').next().unwrap_or_default();
        s.replace(from, &format!("{track}: \"1.17.0\""))
    });
    if settled.matches("\"1.17.0\"").count() != 4 {
        bail!("the scaffold's state file changed shape; the demo's edits no longer apply");
    }
    std::fs::write(&state_path, settled).context("writing the service's state")?;
    commit_all(
        &repo,
        "demo: the autopilot promotes and ramps; 20% canaries; sticky users; every track on 1.17.0",
    )?;
    screen.say(&format!(
        "  (cohort.yaml: the autopilot promotes into canary, paid and production on passing judgements, ramps \
         canary 5% → 10% → 20% of FREE ({step} a step), and rolls canary back by itself; every track \
         starts on 1.17.0; users stay on their track by X-User-Id)\n"
    ));

    let (loaded, _) = cohort_spec::repo::load_repo(&repo);
    let loaded = loaded.context("the demo's release repo is valid")?;
    let stages: Vec<String> = loaded.pipeline.stages.iter().map(ToString::to_string).collect();
    let versions: Versions = Arc::new(RwLock::new(track_versions(&repo)?));
    let mut pods: BTreeMap<String, Vec<SocketAddr>> = BTreeMap::new();
    for track in &stages {
        for _ in 0..PODS_PER_TRACK {
            pods.entry(track.clone())
                .or_default()
                .push(pod(track.clone(), Arc::clone(&versions)).await?);
        }
    }
    let config = tmp.path().join("router.yaml");
    write_router_config(&repo, &pods, &config)?;
    let router = start_router(&config)?;
    screen.say(&format!(
        "started {} pods ({PODS_PER_TRACK} per track) and `cohort router` on {} (admin {})",
        stages.len() * PODS_PER_TRACK,
        router.traffic,
        router.admin
    ));
    screen.say("traffic: 10% INTERNAL, 50% FREE, 15% ENTERPRISE, 25% paying (no header), 10,000 user ids\n");

    let view = Arc::new(View::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (workers, pace) = match options.fast {
        true => (24, None),
        false => (8, Some(Duration::from_millis(4))),
    };
    let mut load = vec![];
    for w in 0..workers {
        load.push(tokio::spawn(traffic(
            router.traffic,
            Arc::clone(&view),
            Arc::clone(&stop),
            w,
            pace,
        )));
    }
    let metrics_url = format!("http://{}", router.admin);
    let stage = Stage {
        repo: &repo,
        config: &config,
        pods: &pods,
        versions: &versions,
        view: &view,
        stages: &stages,
    };
    let timeout = if options.fast {
        Duration::from_secs(25)
    } else {
        Duration::from_secs(120)
    };
    let outcome = story(&mut screen, &stage, &router, &metrics_url, timeout).await;
    stop.store(true, Ordering::Relaxed);
    // Workers stop after their request in flight; one stuck on a router that stopped
    // answering is not waited for.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        for l in load.iter_mut() {
            let _ = l.await;
        }
    })
    .await;
    for l in &load {
        l.abort();
    }
    drop(router);

    screen.say("");
    // The story's changes: the two deploys and what the autopilot did with them.
    cohort(&mut screen, &repo, &["history", "-n", "9"])?;
    let enterprise = view.enterprise_off_production.load(Ordering::Relaxed);
    let bad_reached = view.bad_on_paid_or_production.load(Ordering::Relaxed);
    let total = view.requests.load(Ordering::Relaxed);
    let final_versions = track_versions(&repo)?;
    let bad_in_repo = ["paid", "production"]
        .iter()
        .any(|t| final_versions.get(*t).map(String::as_str) == Some(BAD));
    screen.say("");
    screen.say(&format!("{total} requests served"));
    screen.say(&format!(
        "ENTERPRISE requests answered by a track other than production: {enterprise}"
    ));
    screen.say(&format!(
        "requests the bad build {BAD} answered on paid or production: {bad_reached}"
    ));
    if options.keep {
        let kept = tmp.keep();
        screen.say(&format!(
            "the release repo is kept at {}",
            kept.join("shop-releases").display()
        ));
    }
    outcome?;
    if enterprise > 0 || bad_reached > 0 || bad_in_repo {
        screen.say("the story did not end as it should");
        return Err(Reported.into());
    }
    screen.say(&format!(
        "done: the autopilot took {GOOD} internal → canary (5% → 10% → 20%) → paid → production on passing judgements, and caught {BAD} on canary and rolled it back."
    ));
    Ok(())
}

/// The autopilot, running as `cohort autopilot` does anywhere: a pass every second on the
/// router's counts, each decision a commit in the demo's repo. What it says is shown as it
/// says it.
struct Autopilot {
    child: tokio::process::Child,
    said: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Autopilot {
    fn start(repo: &Path, metrics_url: &str) -> Result<Autopilot> {
        let exe = std::env::current_exe().context("finding the cohort binary")?;
        let mut child = tokio::process::Command::new(exe)
            .args(["autopilot", "--interval", "1s", "--metrics-url", metrics_url])
            .current_dir(repo)
            .env_remove("COHORT_REPO")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting cohort autopilot")?;
        let (tx, said) = tokio::sync::mpsc::unbounded_channel();
        let forward = |from: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| {
            let tx = tx.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncBufReadExt;
                let Some(from) = from else { return };
                let mut lines = tokio::io::BufReader::new(from).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
        };
        forward(child.stdout.take().map(|o| Box::new(o) as _));
        forward(child.stderr.take().map(|e| Box::new(e) as _));
        Ok(Autopilot { child, said })
    }
}

/// Until `done` holds of the repo's tracks (or `timeout`): shows what the autopilot says, and
/// after each of its commits rolls the pods and the router to what the repo says (what
/// `cohort apply` or the agent does in a cluster).
async fn follow(
    screen: &mut Screen,
    stage: &Stage<'_>,
    router: &RouterProcess,
    autopilot: &mut Autopilot,
    timeout: Duration,
    done: &dyn Fn(&BTreeMap<String, String>) -> bool,
) -> Result<bool> {
    let started = Instant::now();
    let mut head = head_of(stage.repo);
    let mut last_table = Instant::now();
    loop {
        while let Ok(line) = autopilot.said.try_recv() {
            // Its reasons and evidence (indented) head the live view until the next.
            if let Some(why) = line.strip_prefix("  ") {
                *stage.view.verdict.lock().unwrap_or_else(|e| e.into_inner()) = why.to_string();
            }
            screen.say(&format!("  autopilot | {line}"));
        }
        let now = head_of(stage.repo);
        if now != head {
            head = now;
            stage.roll(router).await?;
        }
        let versions = stage.versions.read().unwrap_or_else(|e| e.into_inner()).clone();
        if done(&track_versions(stage.repo)?) {
            return Ok(true);
        }
        if let Ok(Some(status)) = autopilot.child.try_wait() {
            bail!("cohort autopilot stopped ({status})");
        }
        if started.elapsed() > timeout {
            return Ok(false);
        }
        screen.live(&stage.view.table(&versions, stage.stages));
        if !screen.tty && last_table.elapsed() > Duration::from_secs(5) {
            last_table = Instant::now();
            for l in stage.view.table(&versions, stage.stages) {
                screen.say(&l);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The release repo's HEAD, to see the autopilot's commits.
fn head_of(repo: &Path) -> Option<String> {
    cohort_release::git::ReleaseRepo::open(repo)
        .ok()
        .and_then(|r| r.head_commit().ok().flatten())
}

async fn story(
    screen: &mut Screen,
    stage: &Stage<'_>,
    router: &RouterProcess,
    metrics_url: &str,
    timeout: Duration,
) -> Result<()> {
    let repo = stage.repo;
    screen.say("--- the autopilot takes over: nobody types a promotion or a rollback from here on");
    screen.say(&format!(
        "$ cohort autopilot --interval 1s --metrics-url {metrics_url} &"
    ));
    let mut autopilot = Autopilot::start(repo, metrics_url)?;

    screen.say(&format!(
        "\n--- a good build, {GOOD}, from mainline (CI deploys it to internal)"
    ));
    cohort(screen, repo, &["deploy", SERVICE, GOOD])?;
    stage.roll(router).await?;
    let shipped = |t: &BTreeMap<String, String>| t.get("production").map(String::as_str) == Some(GOOD);
    if !follow(screen, stage, router, &mut autopilot, timeout * 3, &shipped).await? {
        bail!(
            "the autopilot did not ship {GOOD} to production in {}s",
            (timeout * 3).as_secs()
        );
    }

    screen.say(&format!(
        "\n--- a bad build, {BAD}, from mainline: fine for internal users, broken for customers"
    ));
    cohort(screen, repo, &["deploy", SERVICE, BAD])?;
    stage.roll(router).await?;
    let reached_canary = |t: &BTreeMap<String, String>| t.get("canary").map(String::as_str) == Some(BAD);
    if !follow(screen, stage, router, &mut autopilot, timeout, &reached_canary).await? {
        bail!("the autopilot did not promote {BAD} to canary (internal users see nothing wrong with it)");
    }
    let rolled_back = |t: &BTreeMap<String, String>| t.get("canary").map(String::as_str) == Some(GOOD);
    if !follow(screen, stage, router, &mut autopilot, timeout, &rolled_back).await? {
        bail!("the autopilot did not roll {BAD} back on canary");
    }
    // Its last words (the rollback's evidence) before it is stopped.
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(line) = autopilot.said.try_recv() {
        screen.say(&format!("  autopilot | {line}"));
    }
    let _ = autopilot.child.kill().await;
    Ok(())
}

/// Commits every change in the demo's repo (its cohort.yaml edit) with git itself.
fn commit_all(repo: &PathBuf, message: &str) -> Result<()> {
    let out = Command::new("git")
        .args(["-c", "user.name=cohort demo", "-c", "user.email=demo@localhost"])
        .args(["commit", "-qam", message])
        .current_dir(repo)
        .output()
        .context("running git")?;
    if !out.status.success() {
        bail!("git commit: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

//! The agent against a real `cohort serve` API (in this process, on 127.0.0.1) and against
//! a real git repository, applying into a recording cluster. The kube adapter itself is
//! exercised by cohort/tests/agent_e2e.rs against a real API server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cohort_agent::state::AppliedState;
use cohort_agent::{Agent, ControlSource, GitSource, Settings, Target, TargetError};
use cohort_control::ServiceHealth;
use cohort_control::conn::{Limits, serve};
use cohort_control::server::{Control, RepoSource, app};
use cohort_control::tokens::Tokens;
use cohort_release::git::ReleaseRepo;
use cohort_release::mirror::Mirror;
use cohort_render::Rendered;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const EU: &str = "eu-token-0123456789abcdef";
const US: &str = "us-token-0123456789abcdef";
const FLEET: &str = "fleet-token-0123456789abcdef";

/// A cluster that records what is applied to it, and keeps the agent's state across agents
/// as the ConfigMap would.
#[derive(Clone, Default)]
struct Recording {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    state: AppliedState,
    applies: Vec<(String, Vec<Rendered>)>,
    hang: bool,
    /// How long each apply takes.
    slow: Duration,
    in_flight: usize,
    most_at_once: usize,
    /// A router pod counting this many canary requests (and errors) each second it is read.
    router: Option<(u64, u64)>,
    /// The router's clock: each read counts one more second.
    router_second: u64,
    /// The router pod is there but cannot be read (its admin port refuses).
    router_broken: bool,
}

impl Recording {
    fn applies(&self) -> Vec<(String, Vec<Rendered>)> {
        self.inner.lock().expect("lock").applies.clone()
    }
    fn hang(&self, on: bool) {
        self.inner.lock().expect("lock").hang = on;
    }
    fn slow(&self, each: Duration) {
        self.inner.lock().expect("lock").slow = each;
    }
    fn most_at_once(&self) -> usize {
        self.inner.lock().expect("lock").most_at_once
    }
    fn router_counts(&self, requests: u64, errors: u64) {
        self.inner.lock().expect("lock").router = Some((requests, errors));
    }
    fn break_router(&self) {
        self.inner.lock().expect("lock").router_broken = true;
    }
}

impl Target for Recording {
    fn namespace(&self) -> &str {
        "shop"
    }
    async fn load(&self) -> Result<AppliedState, TargetError> {
        Ok(self.inner.lock().expect("lock").state.clone())
    }
    async fn save(&self, state: &AppliedState) -> Result<(), TargetError> {
        self.inner.lock().expect("lock").state = state.clone();
        Ok(())
    }
    async fn apply(&self, service: &str, objects: &[Rendered]) -> Result<(), TargetError> {
        let hang = self.inner.lock().expect("lock").hang;
        if hang {
            // A rollout that never finishes.
            std::future::pending::<()>().await;
        }
        let slow = {
            let mut inner = self.inner.lock().expect("lock");
            inner.in_flight += 1;
            inner.most_at_once = inner.most_at_once.max(inner.in_flight);
            inner.slow
        };
        tokio::time::sleep(slow).await;
        self.inner.lock().expect("lock").in_flight -= 1;
        self.inner
            .lock()
            .expect("lock")
            .applies
            .push((service.to_string(), objects.to_vec()));
        Ok(())
    }
    async fn health(
        &self,
        _: Option<&cohort_health::Expectations>,
    ) -> Result<Vec<ServiceHealth>, TargetError> {
        Ok(vec![ServiceHealth {
            service: "account-service".into(),
            healthy: true,
            findings: vec![],
        }])
    }
    async fn router_pods(&self, _: &str) -> Result<Vec<String>, TargetError> {
        Ok(match self.inner.lock().expect("lock").router {
            Some(_) => vec!["account-service-router-0".into()],
            None => vec![],
        })
    }
    /// Answers as a router's `/stats?after=` does: what it counted since.
    async fn router_get(&self, pod: &str, port: u16, path: &str) -> Result<String, TargetError> {
        assert_eq!((pod, port), ("account-service-router-0", 9901));
        assert!(path.starts_with("stats?"), "{path}");
        let mut inner = self.inner.lock().expect("lock");
        if inner.router_broken {
            return Err(TargetError::new("read the router", "connection refused"));
        }
        let (requests, errors) = inner.router.expect("a router");
        inner.router_second += 1;
        let latency = vec![0; cohort_judge::LATENCY_BOUNDS_MS.len() + 1];
        let stats = cohort_judge::WindowStats {
            service: "account-service".into(),
            window_seconds: 1,
            latency_bounds_ms: cohort_judge::LATENCY_BOUNDS_MS.to_vec(),
            series: vec![cohort_judge::Series {
                track: "canary".into(),
                version: "1.17.0".into(),
                cohort: "FREE".into(),
                seconds: 1,
                counts: cohort_judge::Counts {
                    requests,
                    errors,
                    latency,
                },
            }],
            until: inner.router_second,
        };
        Ok(serde_json::to_string(&stats).expect("json"))
    }
}

/// A release repo made by `cohort init`'s scaffold, committed.
struct Repo {
    _dir: tempfile::TempDir,
    git: ReleaseRepo,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().expect("tempdir");
        let git = ReleaseRepo::init(dir.path())
            .and_then(|r| r.with_fallback_identity("test", "test@example.com"))
            .expect("repo");
        let files = cohort_spec::scaffold::repo_files();
        let mut all = vec![(PathBuf::from("cohort.yaml"), files.pipeline.expect("pipeline"))];
        all.extend(files.services);
        all.extend(files.releases);
        let repo = Repo { _dir: dir, git };
        for (path, text) in all {
            repo.commit(&path.display().to_string(), &text);
        }
        repo
    }

    fn path(&self) -> &Path {
        self.git.root()
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.path().join(path)).expect("read")
    }

    fn commit(&self, path: &str, text: &str) -> String {
        let lock = self.git.lock().expect("lock");
        self.git
            .commit_files(
                &lock,
                &[(PathBuf::from(path), text.as_bytes().to_vec())],
                "test change",
            )
            .expect("commit")
    }

    fn head(&self) -> String {
        self.git.head_commit().expect("head").expect("a commit")
    }

    /// Commits `releases/account-service.yaml` as a symbolic link to the same text moved
    /// elsewhere in the repo (with git itself: cohort never writes a link).
    fn commit_symlinked_state(&self) -> String {
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
                .args(args)
                .current_dir(self.path())
                .output()
                .expect("git");
            assert!(out.status.success(), "git {args:?}: {out:?}");
        };
        std::fs::create_dir_all(self.path().join("elsewhere")).expect("mkdir");
        git(&["mv", "releases/account-service.yaml", "elsewhere/state.yaml"]);
        std::os::unix::fs::symlink(
            "../elsewhere/state.yaml",
            self.path().join("releases/account-service.yaml"),
        )
        .expect("symlink");
        git(&["add", "-A"]);
        git(&["commit", "-qm", "state file moved behind a link"]);
        self.head()
    }
}

fn tokens_file() -> Tokens {
    let text = format!(
        "fleet_token: {FLEET}\nclusters:\n  eu-west:\n    token: {EU}\n  us-east:\n    token: {US}\n"
    );
    Tokens::parse(Path::new("tokens.yaml"), &text).expect("tokens")
}

/// `cohort serve` over `repo` on `addr` (an ephemeral port when `None`); stops when the
/// returned sender is dropped.
async fn start_server(
    repo: &Repo,
    addr: Option<SocketAddr>,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let git = ReleaseRepo::open(repo.path()).expect("open");
    let control = Arc::new(Control::new(
        RepoSource::Worktree(git),
        Path::new(""),
        tokens_file(),
    ));
    let listener =
        tokio::net::TcpListener::bind(addr.unwrap_or_else(|| "127.0.0.1:0".parse().expect("addr")))
            .await
            .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        listener,
        app(control),
        None,
        Limits::default(),
        async move {
            let _ = rx.await;
        },
    ));
    (addr, tx)
}

/// Stops the server started on `addr` and waits until its listener is closed.
async fn stop_server(addr: SocketAddr, server: tokio::sync::oneshot::Sender<()>) {
    drop(server);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the server did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn settings(cluster: &str) -> Settings {
    Settings {
        cluster: cluster.into(),
        interval: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        shutdown_grace: Duration::from_millis(200),
        parallel: 4,
        router_counts: Default::default(),
    }
}

async fn control_agent(addr: SocketAddr, token: &str, cluster: Recording) -> Agent<ControlSource, Recording> {
    let source = ControlSource::new(&format!("http://{addr}"), "eu-west", token, None).expect("client");
    Agent::start(source, cluster, settings("eu-west"), Default::default())
        .await
        .expect("start")
}

/// Pull mode: each agent sends its cluster's router counts with its reports; the control API
/// adds every cluster's up for the autopilot, and says which clusters have gone silent.
#[tokio::test]
async fn agents_report_their_routers_counts_and_the_control_api_adds_them_up() {
    let repo = Repo::new();
    let (addr, _server) = start_server(&repo, None).await;
    let agent_of = |name: &str, token: &str, cluster: Recording| {
        let source = ControlSource::new(&format!("http://{addr}"), name, token, None).expect("client");
        let settings = Settings {
            router_counts: cohort_agent::RouterCounts::Cluster,
            ..settings(name)
        };
        Agent::start(source, cluster, settings, Default::default())
    };
    let (eu_cluster, us_cluster) = (Recording::default(), Recording::default());
    eu_cluster.router_counts(100, 1);
    us_cluster.router_counts(50, 0);
    let mut eu = agent_of("eu-west", EU, eu_cluster).await.expect("start");
    let mut us = agent_of("us-east", US, us_cluster.clone()).await.expect("start");
    let fleet = ControlSource::new(&format!("http://{addr}"), "", FLEET, None).expect("client");
    let canary = |c: &cohort_control::FleetCounts| -> (u64, u64) {
        c.services
            .iter()
            .flat_map(|s| &s.series)
            .filter(|s| s.track == "canary")
            .fold((0, 0), |(r, e), s| (r + s.counts.requests, e + s.counts.errors))
    };

    // Only eu-west has reported: us-east is silent, so account-service cannot pass yet.
    assert!(eu.pass().await.reported);
    let counts = fleet.counts(None).await.expect("counts");
    assert_eq!(canary(&counts), (100, 1));
    assert_eq!(
        counts.silent_for("account-service").as_deref(),
        Some("us-east (no report yet)")
    );

    assert!(us.pass().await.reported);
    let counts = fleet.counts(None).await.expect("counts");
    assert_eq!(canary(&counts), (150, 1), "both clusters' routers");
    assert_eq!(counts.silent_for("account-service"), None);

    // Read again from where the last read ended: only what came since, each count once.
    let mark = counts.until;
    assert_eq!(canary(&fleet.counts(Some(&mark)).await.expect("counts")), (0, 0));
    assert!(eu.pass().await.reported, "new counts are always worth a report");
    let since = fleet.counts(Some(&mark)).await.expect("counts");
    assert_eq!(canary(&since), (100, 1));
    assert_ne!(since.until, mark);
    assert!(since.complete);

    // A cluster that reports but whose agent cannot read its routers is as good as silent.
    us_cluster.break_router();
    assert!(us.pass().await.reported);
    let counts = fleet.counts(None).await.expect("counts");
    assert_eq!(
        counts.silent_for("account-service").as_deref(),
        Some("us-east (its agent cannot read the routers)")
    );

    // A cluster's token cannot read the fleet's counts.
    let (status, _) = http_get(addr, "/v1/counts", EU).await;
    assert_eq!(status, 403);

    // Counts that cannot be used are refused one by one, saying why; the report is taken.
    let mut report = eu.report();
    let mut lying = report
        .counts
        .first()
        .cloned()
        .unwrap_or_else(|| cohort_control::Counted {
            service: "account-service".into(),
            stats: since.services[0].clone(),
        });
    lying.stats.service = "cart".into();
    report.counts = vec![lying];
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::post(format!("http://{addr}/v1/clusters/eu-west/reports"))
        .header("authorization", format!("Bearer {EU}"))
        .header("content-type", "application/json")
        .body(Full::new(serde_json::to_vec(&report).expect("json").into()))
        .expect("request");
    let response = client.request(request).await.expect("answer");
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.expect("body").to_bytes();
    let taken: cohort_control::ReportTaken = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        taken.counts_refused,
        ["counts[0] (account-service): its stats are of service \"cart\""]
    );
    assert_eq!(
        canary(&fleet.counts(Some(&since.until)).await.expect("counts")),
        (0, 0)
    );
}

async fn http_get(addr: SocketAddr, path: &str, token: &str) -> (u16, String) {
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::get(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::default())
        .expect("request");
    let response = client.request(request).await.expect("answer");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn replicas(objects: &[Rendered], name_part: &str) -> Option<i64> {
    objects
        .iter()
        .find(|o| o.kind == "Deployment" && o.name.contains(name_part))
        .and_then(|o| o.value["spec"]["replicas"].as_i64())
}

#[tokio::test]
async fn through_the_control_api_the_agent_syncs_skips_what_is_invalid_and_reports() {
    let repo = Repo::new();
    let (addr, _server) = start_server(&repo, None).await;
    let cluster = Recording::default();
    let mut agent = control_agent(addr, EU, cluster.clone()).await;

    // First sync: the one service is applied at the head revision, and the report arrives.
    let first = repo.head();
    let pass = agent.pass().await;
    assert!(pass.reached_source && pass.new_revision, "{pass:?}");
    assert_eq!(pass.applied, ["account-service"]);
    assert!(pass.reported);
    assert_eq!(agent.applied()["account-service"].revision, first);
    let (status, fleet) = http_get(addr, "/v1/fleet", FLEET).await;
    assert_eq!(status, 200, "{fleet}");
    let fleet: cohort_control::Fleet = serde_json::from_str(&fleet).expect("fleet json");
    assert_eq!(fleet.revision.as_deref(), Some(first.as_str()));
    let eu = fleet
        .clusters
        .iter()
        .find(|c| c.name == "eu-west")
        .expect("eu-west");
    let report = eu.report.as_ref().expect("a report");
    assert_eq!(
        report.services[0].applied_revision.as_deref(),
        Some(first.as_str())
    );
    assert_eq!(report.services[0].state, cohort_control::ServiceState::Applied);
    assert!(eu.last_poll.is_some());
    assert!(
        fleet
            .clusters
            .iter()
            .any(|c| c.name == "us-east" && c.report.is_none())
    );

    // An idle poll: 304, nothing applied, no report (nothing changed) until the heartbeat.
    let pass = agent.pass().await;
    assert!(
        pass.reached_source && !pass.new_revision && pass.applied.is_empty(),
        "{pass:?}"
    );
    assert!(!pass.reported, "{pass:?}");
    let mut passes = 2;
    while !agent.pass().await.reported {
        passes += 1;
        assert!(
            passes <= cohort_agent::agent::HEARTBEAT_PASSES,
            "no heartbeat report"
        );
    }
    assert_eq!(passes, cohort_agent::agent::HEARTBEAT_PASSES);
    assert_eq!(cluster.applies().len(), 1);

    // A new revision that changes the service: applied again, with the new objects.
    let spec = repo.read("services/account-service.yaml");
    let second = repo.commit(
        "services/account-service.yaml",
        &spec.replace("# replicas:\n#   production: 12", "replicas:\n  production: 12"),
    );
    let pass = agent.pass().await;
    assert_eq!(pass.applied, ["account-service"], "{pass:?}");
    let applies = cluster.applies();
    assert_eq!(replicas(&applies[1].1, "production"), Some(12));
    assert_eq!(agent.applied()["account-service"].revision, second);

    // A revision that leaves the service's objects as they are: no apply, the revision moves on.
    let third = repo.commit("NOTES.md", "not part of the release repo's specs\n");
    let pass = agent.pass().await;
    assert!(pass.new_revision && pass.applied.is_empty(), "{pass:?}");
    assert_eq!(agent.applied()["account-service"].revision, third);

    // An invalid revision: skipped and reported; the cluster keeps the last good state.
    let pipeline = repo.read("cohort.yaml");
    let bad = repo.commit(
        "cohort.yaml",
        &pipeline.replace("namespace: shop", "namespace: [shop"),
    );
    let pass = agent.pass().await;
    let why = pass.invalid.clone().expect("refused");
    assert!(
        why.contains(&format!("revision {bad} is not valid")) && why.contains("cohort.yaml:"),
        "{why}"
    );
    assert!(pass.applied.is_empty());
    assert_eq!(cluster.applies().len(), 2);
    assert_eq!(agent.applied()["account-service"].revision, third);
    let report = agent.report();
    assert_eq!(report.seen_revision.as_deref(), Some(bad.as_str()));
    assert!(
        report.problems.iter().any(|p| p.contains("is not valid")),
        "{:?}",
        report.problems
    );
    // Polled again, it stays skipped (304) and nothing is applied.
    let pass = agent.pass().await;
    assert!(pass.invalid.is_some() && pass.applied.is_empty());

    // Fixed: the next revision is applied.
    let fixed = repo.commit("cohort.yaml", &pipeline);
    let pass = agent.pass().await;
    assert!(pass.invalid.is_none(), "{pass:?}");
    assert_eq!(agent.applied()["account-service"].revision, fixed);

    // A restart resumes from the saved state: nothing applied again.
    let applies_before = cluster.applies().len();
    let mut restarted = control_agent(addr, EU, cluster.clone()).await;
    let pass = restarted.pass().await;
    assert!(pass.reached_source && pass.applied.is_empty(), "{pass:?}");
    assert_eq!(cluster.applies().len(), applies_before);
}

#[tokio::test]
async fn a_wrong_token_is_401_and_another_clusters_token_is_403() {
    let repo = Repo::new();
    let (addr, _server) = start_server(&repo, None).await;
    let desired = "/v1/clusters/eu-west/desired-state";
    let (status, body) = http_get(addr, desired, "not-a-token-of-this-server").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("not in the server's tokens file"), "{body}");
    let (status, body) = http_get(addr, desired, US).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("cluster us-east's"), "{body}");
    let (status, _) = http_get(addr, "/v1/fleet", EU).await;
    assert_eq!(status, 403);
    let (status, _) = http_get(addr, desired, FLEET).await;
    assert_eq!(status, 403);
    let (status, body) = http_get(addr, desired, EU).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(addr, "/openapi.json", "").await;
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).expect("OpenAPI JSON");
    for path in [
        "/v1/clusters/{cluster}/desired-state",
        "/v1/clusters/{cluster}/reports",
        "/v1/fleet",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} documented");
    }

    // The agent with a wrong token applies nothing and says the server refused it.
    let cluster = Recording::default();
    let mut agent = control_agent(addr, "not-a-token-of-this-server", cluster.clone()).await;
    let pass = agent.pass().await;
    assert!(!pass.reached_source);
    assert!(cluster.applies().is_empty());
    let report = agent.report();
    assert!(
        report.problems.iter().any(|p| p.contains("401")),
        "{:?}",
        report.problems
    );
    // With another cluster's token it is refused too.
    let mut agent = control_agent(addr, US, cluster.clone()).await;
    assert!(!agent.pass().await.reached_source);
    assert!(cluster.applies().is_empty());
}

#[tokio::test]
async fn the_agent_waits_out_a_server_outage_and_then_applies() {
    let repo = Repo::new();
    let (addr, server) = start_server(&repo, None).await;
    stop_server(addr, server).await;
    let cluster = Recording::default();
    let mut agent = control_agent(addr, EU, cluster.clone()).await;
    let pass = agent.pass().await;
    assert!(!pass.reached_source, "{pass:?}");
    assert!(agent.report().problems.iter().any(|p| p.contains("cannot reach")));

    // The loop keeps polling (backing off) and applies once the server is back.
    let readiness = agent.readiness();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(agent.run(async move {
        let _ = stop_rx.await;
    }));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(cluster.applies().is_empty());
    assert!(!readiness.lock().expect("lock").source_reachable);
    let (_addr, _server) = start_server(&repo, Some(addr)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cluster.applies().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        cluster.applies().len(),
        1,
        "applied once the server answered again"
    );
    assert!(readiness.lock().expect("lock").source_reachable);
    drop(stop_tx);
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("stops on shutdown")
        .expect("no panic");
}

#[tokio::test]
async fn a_restarted_server_is_sent_a_report_at_the_next_poll_not_the_next_heartbeat() {
    let repo = Repo::new();
    let (addr, server) = start_server(&repo, None).await;
    let cluster = Recording::default();
    let mut agent = control_agent(addr, EU, cluster.clone()).await;
    assert!(agent.pass().await.reported, "the first pass reports");
    assert!(!agent.pass().await.reported, "an idle pass does not");

    // The server restarts (reports are kept in memory): its fleet view has nothing from us.
    stop_server(addr, server).await;
    let (_addr, _server) = start_server(&repo, Some(addr)).await;
    let fleet = |body: String| -> cohort_control::Fleet { serde_json::from_str(&body).expect("fleet json") };
    let (_, body) = http_get(addr, "/v1/fleet", FLEET).await;
    assert!(fleet(body).clusters.iter().all(|c| c.report.is_none()));

    // Same revision, so the poll is a 304, but it asks for a report: sent at once.
    let pass = agent.pass().await;
    assert!(
        pass.reached_source && !pass.new_revision && pass.applied.is_empty(),
        "{pass:?}"
    );
    assert!(pass.reported, "{pass:?}");
    let (_, body) = http_get(addr, "/v1/fleet", FLEET).await;
    let eu = fleet(body)
        .clusters
        .into_iter()
        .find(|c| c.name == "eu-west")
        .expect("eu-west");
    assert_eq!(
        eu.report.expect("the report").services[0].applied_revision,
        Some(repo.head())
    );
    // Held now: the next idle pass is quiet again.
    assert!(!agent.pass().await.reported);
    assert_eq!(
        cluster.applies().len(),
        1,
        "a restart of the server applies nothing"
    );
}

#[tokio::test]
async fn an_apply_cut_short_by_shutdown_is_not_recorded_and_the_next_start_does_it() {
    let repo = Repo::new();
    let (addr, _server) = start_server(&repo, None).await;
    let cluster = Recording::default();
    cluster.hang(true);
    let agent = control_agent(addr, EU, cluster.clone()).await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(agent.run(async move {
        let _ = stop_rx.await;
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(stop_tx);
    // The grace (200 ms) passes, the apply is abandoned, the agent stops.
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("stops within the grace")
        .expect("no panic");
    assert!(
        cluster.inner.lock().expect("lock").state.is_empty(),
        "nothing recorded"
    );

    cluster.hang(false);
    let mut agent = control_agent(addr, EU, cluster.clone()).await;
    let pass = agent.pass().await;
    assert_eq!(pass.applied, ["account-service"], "the next start applies it");
}

#[tokio::test]
async fn from_a_git_remote_the_agent_fetches_applies_skips_invalid_and_resumes() {
    let repo = Repo::new();
    let mirror = tempfile::tempdir().expect("tempdir");
    let url = repo.path().display().to_string();
    let git_agent = |cluster: Recording| {
        let mirror = Mirror::open(mirror.path(), &url, "main").expect("mirror");
        let source = GitSource::new(mirror, Path::new(""), "eu-west", None);
        Agent::start(source, cluster, settings("eu-west"), Default::default())
    };
    let cluster = Recording::default();
    let mut agent = git_agent(cluster.clone()).await.expect("start");
    let pass = agent.pass().await;
    assert_eq!(pass.applied, ["account-service"], "{pass:?}");
    assert_eq!(agent.applied()["account-service"].revision, repo.head());
    let pass = agent.pass().await;
    assert!(pass.reached_source && !pass.new_revision && pass.applied.is_empty());

    let pipeline = repo.read("cohort.yaml");
    let bad = repo.commit(
        "cohort.yaml",
        &pipeline.replace("namespace: shop", "namespace: Shop_"),
    );
    let pass = agent.pass().await;
    let why = pass.invalid.expect("refused");
    assert!(why.contains(&bad), "{why}");
    assert_eq!(cluster.applies().len(), 1);

    let spec = repo.read("services/account-service.yaml");
    repo.commit("cohort.yaml", &pipeline);
    let good = repo.commit(
        "services/account-service.yaml",
        &spec.replace("LOG_LEVEL: info", "LOG_LEVEL: debug"),
    );
    let pass = agent.pass().await;
    assert_eq!(pass.applied, ["account-service"]);
    assert_eq!(agent.applied()["account-service"].revision, good);

    // Restarted with the same mirror and cluster: nothing fetched twice, nothing applied again.
    let mut agent = git_agent(cluster.clone()).await.expect("restart");
    let pass = agent.pass().await;
    assert!(pass.reached_source && pass.applied.is_empty(), "{pass:?}");
    assert_eq!(cluster.applies().len(), 2);
}

#[tokio::test]
async fn a_revision_whose_state_file_is_a_symlink_is_refused_not_applied_with_fewer_tracks() {
    let repo = Repo::new();
    let (addr, _server) = start_server(&repo, None).await;
    let through_api = Recording::default();
    let mut api_agent = control_agent(addr, EU, through_api.clone()).await;
    let mirror = tempfile::tempdir().expect("tempdir");
    let mirror = Mirror::open(mirror.path(), &repo.path().display().to_string(), "main").expect("mirror");
    let from_git = Recording::default();
    let mut git_agent = Agent::start(
        GitSource::new(mirror, Path::new(""), "eu-west", None),
        from_git.clone(),
        settings("eu-west"),
        Default::default(),
    )
    .await
    .expect("start");
    for agent_pass in [api_agent.pass().await, git_agent.pass().await] {
        assert_eq!(agent_pass.applied, ["account-service"], "{agent_pass:?}");
    }
    let good = repo.head();

    // Read through the link, the state has all four tracks; skipped, it would have none but
    // what a deploy then wrote. Either way the agent must not apply it.
    let linked = repo.commit_symlinked_state();
    for (pass, cluster) in [
        (api_agent.pass().await, &through_api),
        (git_agent.pass().await, &from_git),
    ] {
        let why = pass.invalid.clone().expect("refused");
        assert!(
            why.contains(&format!("revision {linked} is not valid"))
                && why.contains(
                    "releases/account-service.yaml is a symbolic link; cohort reads only regular files"
                ),
            "{why}"
        );
        assert!(pass.applied.is_empty(), "{pass:?}");
        assert_eq!(
            cluster.applies().len(),
            1,
            "nothing applied after the first revision"
        );
    }
    assert_eq!(api_agent.applied()["account-service"].revision, good);
    assert_eq!(git_agent.applied()["account-service"].revision, good);
}

#[tokio::test]
async fn services_are_applied_at_once_up_to_the_parallel_setting_and_each_is_recorded() {
    let repo = Repo::new();
    let spec = repo.read("services/account-service.yaml");
    let state = repo.read("releases/account-service.yaml");
    let mut names = vec!["account-service".to_string()];
    for i in 1..=6 {
        let name = format!("service-{i}");
        repo.commit(
            &format!("services/{name}.yaml"),
            &spec.replace("account-service", &name),
        );
        repo.commit(
            &format!("releases/{name}.yaml"),
            &state.replace("account-service", &name),
        );
        names.push(name);
    }
    names.sort();
    let mirror = tempfile::tempdir().expect("tempdir");
    let url = repo.path().display().to_string();
    for (parallel, expected) in [(4, 4), (1, 1)] {
        let source = GitSource::new(
            Mirror::open(mirror.path(), &url, "main").expect("mirror"),
            Path::new(""),
            "eu-west",
            None,
        );
        let cluster = Recording::default();
        cluster.slow(Duration::from_millis(100));
        let settings = Settings {
            parallel,
            ..settings("eu-west")
        };
        let mut agent = Agent::start(source, cluster.clone(), settings, Default::default())
            .await
            .expect("start");
        let mut pass = agent.pass().await;
        pass.applied.sort();
        assert_eq!(pass.applied, names, "{pass:?}");
        assert_eq!(cluster.most_at_once(), expected, "--parallel {parallel}");
        // Each was recorded: the next pass applies nothing.
        assert_eq!(agent.applied().len(), names.len());
        assert!(agent.pass().await.applied.is_empty());
    }
}

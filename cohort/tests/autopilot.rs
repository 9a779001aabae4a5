//! `cohort autopilot` on a real release repo, judging from a real `cohort router` process in
//! front of real loopback backends (a bad build and a good one), through its admin `/stats`.
// The tests say what they measured; nothing from outside is printed.
#![allow(clippy::disallowed_macros)]

mod kube_common;
mod router_common;
mod tls_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use router_common::{RouterProcess, backend, canary_config, free_requests, start_router};

/// What the autopilot may do: roll canary back, promote into paid; paid's gate opens at once.
const POLICY: &str = "autopilot:\n  stages:\n    canary:\n      rollback: auto\n    paid:\n      promote: auto\njudgement:\n  min_error_increase: 2%\n";

fn cohort(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(args)
        .current_dir(dir)
        .env_remove("COHORT_REPO")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("cohort runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .args(["-c", "user.name=Ops", "-c", "user.email=ops@example.com"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git");
    assert!(o.status.success(), "git {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A release repo with the seed's services and `POLICY`, as person `Ops` made it; canary runs
/// `canary` (deployed and promoted by hand first when it is not the seed's 1.17.0).
fn release_repo(dir: &Path, canary: &str) -> PathBuf {
    let o = cohort(dir, &["init", "releases"]);
    assert!(o.status.success(), "{}", text(&o));
    let repo = dir.join("releases");
    let path = repo.join("cohort.yaml");
    let pipeline = std::fs::read_to_string(&path).expect("read");
    let pipeline = pipeline.replace("    min_time_in_previous: 1h\n", "");
    std::fs::write(&path, format!("{POLICY}{pipeline}")).expect("write");
    git(&repo, &["commit", "-qam", "autopilot policy"]);
    if canary != "1.17.0" {
        ops(&repo, &["deploy", "account-service", canary]);
        ops(
            &repo,
            &[
                "promote",
                "account-service",
                "--to",
                "canary",
                "--force",
                "--reason",
                "try it",
            ],
        );
    }
    repo
}

/// Runs cohort as the person `Ops`, who must succeed.
fn ops(repo: &Path, args: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(args)
        .current_dir(repo)
        .env("GIT_AUTHOR_NAME", "Ops")
        .env("GIT_AUTHOR_EMAIL", "ops@example.com")
        .env("GIT_COMMITTER_NAME", "Ops")
        .env("GIT_COMMITTER_EMAIL", "ops@example.com")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("cohort");
    assert!(o.status.success(), "{args:?}: {}", text(&o));
}

struct Router {
    process: RouterProcess,
    _dir: tempfile::TempDir,
}

/// A router for account-service: FREE 20% to canary (`version`, failing every
/// `canary_fails_every`-th request, 0 never), 80% to production 1.15.0.
fn router(version: &str, canary_fails_every: usize) -> Router {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("router.yaml");
    let config = canary_config(
        version,
        backend("canary", canary_fails_every),
        backend("production", 0),
    );
    std::fs::write(&path, config).expect("write");
    let process = start_router(&["--config".as_ref(), path.as_os_str()]);
    Router { process, _dir: dir }
}

/// A real SMTP server (aiosmtpd, run by the notify crate's `smtp_sink.py`) that saves each
/// message it accepts as `N.json`; killed when dropped.
struct SmtpSink {
    child: std::process::Child,
    port: u16,
    out: tempfile::TempDir,
}

impl SmtpSink {
    fn start() -> SmtpSink {
        use std::io::BufRead;
        let out = tempfile::tempdir().expect("tempdir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/notify/tests/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(out.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 smtp_sink.py (pip install aiosmtpd)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the port");
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!("smtp_sink.py printed {line:?}, not its port (is aiosmtpd installed?)")
        });
        SmtpSink { child, port, out }
    }

    fn received(&self) -> Vec<serde_json::Value> {
        let mut found: Vec<(u32, serde_json::Value)> = std::fs::read_dir(self.out.path())
            .expect("read")
            .filter_map(|e| {
                let path = e.ok()?.path();
                let n: u32 = path.file_stem()?.to_str()?.parse().ok()?;
                Some((
                    n,
                    serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?,
                ))
            })
            .collect();
        found.sort_by_key(|(n, _)| *n);
        found.into_iter().map(|(_, v)| v).collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` from `addr`: the whole answer, head and body.
fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn head(repo: &Path) -> String {
    git(repo, &["rev-parse", "HEAD"]).trim().to_string()
}

#[test]
fn a_failing_canary_is_rolled_back_by_itself_with_its_evidence_even_when_frozen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = release_repo(dir.path(), "1.19.0");
    // cohort.yaml's channels are told of each action, once.
    let smtp = SmtpSink::start();
    let path = repo.join("cohort.yaml");
    let pipeline = std::fs::read_to_string(&path).expect("read");
    std::fs::write(
        &path,
        format!(
            "notifications:\n  email:\n    smtp_server: 127.0.0.1:{}\n    security: plain\n    from: cohort <cohort@example.com>\n    to: [oncall@example.com]\n{pipeline}",
            smtp.port
        ),
    )
    .expect("write");
    git(&repo, &["commit", "-qam", "tell oncall"]);
    let bad = router("1.19.0", 3);
    free_requests(bad.process.traffic, 1_000);
    let url = format!("http://{}", bad.process.admin);
    let autopilot = ["autopilot", "--once", "--metrics-url", &url];

    // A dry run says what it would do and commits nothing.
    let before = head(&repo);
    let dry = cohort(&repo, &[&autopilot[..], &["--dry-run"]].concat());
    let said = text(&dry);
    assert_eq!(dry.status.code(), Some(0), "{said}");
    assert!(
        said.contains("account-service: roll canary back from 1.19.0 (dry run: nothing committed)"),
        "{said}"
    );
    assert!(
        said.contains("fail: canary 1.19.0 against production 1.15.0, cohorts FREE: error rate"),
        "{said}"
    );
    assert_eq!(head(&repo), before);

    // A freeze holds promotions and ramps, never a rollback.
    ops(&repo, &["freeze", "--reason", "quiet week"]);
    let acted = cohort(&repo, &[&autopilot[..], &["-o", "json"]].concat());
    assert_eq!(acted.status.code(), Some(0), "{}", text(&acted));
    let report: serde_json::Value = serde_json::from_slice(&acted.stdout).expect("json");
    let service = &report["services"][0];
    assert_eq!(service["decision"]["action"], "rollback");
    assert_eq!(service["decision"]["track"], "canary");
    let commit = service["commit"].as_str().expect("a commit");
    assert_eq!(head(&repo), commit);
    let message = git(&repo, &["log", "-1", "--format=%an <%ae>%n%B"]);
    assert!(
        message.starts_with(
            "cohort autopilot <autopilot@cohort.invalid>\nrollback account-service canary: 1.19.0 → 1.17.0"
        ),
        "{message}"
    );
    assert!(
        message.contains("Canary judgement: fail: canary 1.19.0 against production 1.15.0"),
        "{message}"
    );
    assert!(message.contains("Cohort-Judgement: fail:"), "{message}");
    let tracks = cohort(&repo, &["tracks", "-o", "json"]);
    let tracks: serde_json::Value = serde_json::from_slice(&tracks.stdout).expect("json");
    assert_eq!(tracks[0]["tracks"]["canary"], "1.17.0");
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");

    // One message: the rollback, with the version, track, numbers and commit.
    let mail = smtp.received();
    assert_eq!(mail.len(), 1, "{mail:#?}");
    assert_eq!(
        mail[0]["subject"],
        "[cohort] AUTOPILOT account-service: roll canary back from 1.19.0"
    );
    let body = mail[0]["body"].as_str().expect("body");
    assert!(
        body.contains("fail: canary 1.19.0 against production 1.15.0, cohorts FREE: error rate"),
        "{body}"
    );
    assert!(body.contains(&format!("commit {commit}")), "{body}");

    // The next pass finds nothing to judge on canary's 1.17.0 at the routers (they still run
    // 1.19.0 until the config is applied) and does not roll back again.
    let again = cohort(&repo, &autopilot);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert_eq!(head(&repo), commit, "{}", text(&again));
    assert_eq!(smtp.received().len(), 1, "nothing more to tell");
}

#[test]
fn a_healthy_canary_is_promoted_into_paid_by_itself_and_an_invalid_repo_is_not_acted_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = release_repo(dir.path(), "1.17.0");
    let good = router("1.17.0", 0);
    let url = format!("http://{}", good.process.admin);
    let autopilot = ["autopilot", "--once", "--metrics-url", &url];

    // Too little traffic: it waits and says why.
    free_requests(good.process.traffic, 100);
    let waited = cohort(&repo, &autopilot);
    let said = text(&waited);
    assert_eq!(waited.status.code(), Some(0), "{said}");
    assert!(said.contains("account-service: waiting"), "{said}");
    assert!(
        said.contains("canary: inconclusive: canary 1.17.0 against production 1.15.0"),
        "{said}"
    );

    free_requests(good.process.traffic, 5_000);
    let acted = cohort(&repo, &autopilot);
    let said = text(&acted);
    assert_eq!(acted.status.code(), Some(0), "{said}");
    assert!(
        said.contains("account-service: promote 1.17.0 from canary to paid ("),
        "{said}"
    );
    let message = git(&repo, &["log", "-1", "--format=%an%n%B"]);
    assert!(
        message.starts_with("cohort autopilot\npromote account-service 1.17.0: canary → paid"),
        "{message}"
    );
    assert!(
        message.contains("Cohort-Judgement: pass: canary 1.17.0 against production 1.15.0"),
        "{message}"
    );

    // A revision that does not validate is never acted on.
    let path = repo.join("cohort.yaml");
    let pipeline = std::fs::read_to_string(&path).expect("read");
    std::fs::write(&path, pipeline.replace("stages: [", "stages: [[")).expect("write");
    git(&repo, &["commit", "-qam", "broken"]);
    let before = head(&repo);
    let refused = cohort(&repo, &autopilot);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert_eq!(head(&repo), before);
    // A script reading JSON is told too.
    let json = cohort(&repo, &[&autopilot[..], &["-o", "json"]].concat());
    assert_eq!(json.status.code(), Some(2), "{}", text(&json));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json on stdout");
    assert_eq!(
        report["error"],
        "the release repo is invalid; its errors are on stderr"
    );
    assert_eq!(report["services"], serde_json::json!([]));
}

/// A long-running autopilot adds each pass's new counts to what it read before (the router's
/// `/stats?after=`), and acts once the sum is enough; a wait is said once, not every pass.
#[test]
fn a_running_autopilot_adds_up_its_passes_and_acts_when_the_sum_is_enough() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = release_repo(dir.path(), "1.17.0");
    let good = router("1.17.0", 0);
    let url = format!("http://{}", good.process.admin);
    let running = Running::start(&repo, &["--metrics-url", &url]);
    let admin = running.admin;
    let before = head(&repo);
    let mut promoted = false;
    for _ in 0..30 {
        free_requests(good.process.traffic, 400);
        if head(&repo) != before {
            promoted = true;
            break;
        }
    }
    let metrics = get(admin, "/metrics");
    let ready = get(admin, "/ready");
    let said = running.stop();
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    for line in [
        "cohort_autopilot_decisions_total{service=\"account-service\",action=\"promote\"} 1",
        "cohort_autopilot_passes_total{result=\"ok\"}",
        "cohort_autopilot_last_pass_success ",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert!(promoted, "no promotion: {said}");
    let message = git(&repo, &["log", "-1", "--format=%an%n%s"]);
    assert_eq!(
        message.trim(),
        "cohort autopilot\npromote account-service 1.17.0: canary → paid",
        "{said}"
    );
    assert!(
        said.contains("account-service: promote 1.17.0 from canary to paid ("),
        "{said}"
    );
    // Waiting for more requests was said once, not once per pass as the counts grew.
    assert_eq!(said.matches("canary: inconclusive: ").count(), 1, "{said}");
}

/// A pass that cannot read the routers does not end a running autopilot: it says why, `/ready`
/// says it too, and the next pass tries again.
#[test]
fn a_running_autopilot_outlives_a_failing_pass_and_says_why_on_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = release_repo(dir.path(), "1.17.0");
    // A port nobody listens on: bound, then let go.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port");
    let url = format!("http://{gone}");
    let mut running = Running::start(&repo, &["--metrics-url", &url]);
    let admin = running.admin;
    std::thread::sleep(Duration::from_millis(2_500));
    let ready = get(admin, "/ready");
    let metrics = get(admin, "/metrics");
    let alive = running.alive();
    drop(running);
    assert!(alive, "a failing pass ended the autopilot");
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(ready.contains(&format!("cannot reach {url}")), "{ready}");
    assert!(
        metrics.contains("cohort_autopilot_passes_total{result=\"error\"}"),
        "{metrics}"
    );
}

/// A running `cohort autopilot --interval 1s --admin 127.0.0.1:0`, killed when dropped (a
/// failing test leaves none behind); what it says is collected.
struct Running {
    child: std::process::Child,
    admin: SocketAddr,
    said: std::sync::Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(repo: &Path, extra: &[&str]) -> Running {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_cohort"))
            .args(["autopilot", "--interval", "1s", "--admin", "127.0.0.1:0"])
            .args(extra)
            .current_dir(repo)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("autopilot runs");
        let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
        let stdout = child.stdout.take().expect("stdout");
        // Its first line says where its admin port listens.
        let mut first = String::new();
        stderr.read_line(&mut first).expect("a line");
        let admin: SocketAddr = first
            .split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no address in {first:?}"));
        let said = std::sync::Arc::new(std::sync::Mutex::new(first));
        let collect = |mut from: Box<dyn Read + Send>| {
            let said = std::sync::Arc::clone(&said);
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = from.read_to_string(&mut text);
                said.lock().expect("lock").push_str(&text);
            })
        };
        let readers = vec![collect(Box::new(stderr)), collect(Box::new(stdout))];
        Running {
            child,
            admin,
            said,
            readers,
        }
    }

    /// Whether it is still running.
    fn alive(&mut self) -> bool {
        self.child.try_wait().expect("status").is_none()
    }

    /// Stops it (SIGKILL: the lease is not handed back); everything it said.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        self.said.lock().expect("lock").clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the autopilot at `admin` holds the lease, by its `/metrics`.
fn leads(admin: SocketAddr) -> bool {
    get(admin, "/metrics")
        .lines()
        .any(|l| l.trim() == "cohort_autopilot_leader 1")
}

/// Against a real API server, with only what `cohort render --autopilot` grants: a pass
/// that reads the cluster runs; two autopilots with one Lease, one acts and the other stands
/// by; when the one acting is killed, the other takes over once the lease runs out.
#[test]
fn two_autopilots_with_one_lease_act_one_at_a_time_and_the_other_takes_over() {
    let Some(kc) = kube_common::kubeconfig("autopilot leader election") else {
        return;
    };
    let ns = kube_common::Namespace::new(&kc, "autopilot-lease");
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = release_repo(dir.path(), "1.17.0");
    // The rendered ServiceAccount, Role and RoleBinding (not the Deployment: the processes
    // run here, as that ServiceAccount).
    let rendered = cohort(
        dir.path(),
        &[
            "render",
            "--autopilot",
            "--git",
            "https://git.example.com/r.git",
            "-n",
            &ns.name,
            "-o",
            "json",
        ],
    );
    assert!(rendered.status.success(), "{}", text(&rendered));
    let mut list: serde_json::Value = serde_json::from_slice(&rendered.stdout).expect("json");
    let items = list["items"].as_array_mut().expect("items");
    items.retain(|o| o["kind"] != "Deployment");
    assert_eq!(items.len(), 3);
    kube_common::kubectl(&kc, &["apply", "-f", "-"], Some(&list.to_string()));
    let as_autopilot = ns.kubeconfig_of("cohort-autopilot", dir.path());
    let kubeconfig = as_autopilot.to_string_lossy().into_owned();
    // A pass that finds the routers through the cluster (none run here) and reads the
    // Deployments' rollouts, with those rights alone.
    let pass = cohort(
        &repo,
        &[
            "autopilot",
            "--once",
            "--dry-run",
            "--kubeconfig",
            &kubeconfig,
            "-n",
            &ns.name,
        ],
    );
    assert_eq!(pass.status.code(), Some(0), "{}", text(&pass));
    assert!(
        text(&pass).contains("account-service: waiting"),
        "{}",
        text(&pass)
    );

    let routers = router("1.17.0", 0);
    let url = format!("http://{}", routers.process.admin);
    let extra = [
        "--metrics-url",
        &url,
        "--lease",
        "cohort-autopilot",
        "--kubeconfig",
        &kubeconfig,
        "-n",
        &ns.name,
    ];
    let first = Running::start(&repo, &extra);
    let second = Running::start(&repo, &extra);
    let (first_admin, second_admin) = (first.admin, second.admin);
    kube_common::wait_for("one autopilot to hold the lease", 30, || {
        leads(first_admin) || leads(second_admin)
    });
    std::thread::sleep(Duration::from_secs(3));
    let (a, b) = (leads(first_admin), leads(second_admin));
    assert!(a != b, "exactly one acts: {a} {b}");
    let lease = kube_common::kubectl_json(
        &kc,
        &["-n", &ns.name, "get", "lease", "cohort-autopilot", "-o", "json"],
    );
    let holder = lease["spec"]["holderIdentity"].as_str().expect("a holder");
    assert!(holder.starts_with("cohort autopilot on "), "{holder}");
    // The one acting dies without handing the lease back.
    let (leader, standby, _other) = match a {
        true => (first, second_admin, second),
        false => (second, first_admin, first),
    };
    leader.stop();
    let killed = std::time::Instant::now();
    kube_common::wait_for("the other autopilot to take over", 30, || leads(standby));
    let took = killed.elapsed().as_secs_f64();
    println!("the standby took over {took:.1} s after the autopilot acting was killed");
    // The lease is three intervals (3 s): the standby takes over once it runs out.
    assert!(took <= 8.0, "took over after {took:.1} s");
}

/// One service's action that cannot be taken (here: a failing canary with no earlier version
/// to go back to) is said with that service and the exit status; it does not stop the pass.
#[test]
fn an_action_that_cannot_be_taken_is_said_and_the_exit_status_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = release_repo(dir.path(), "1.17.0");
    let bad = router("1.17.0", 3);
    free_requests(bad.process.traffic, 1_000);
    let url = format!("http://{}", bad.process.admin);
    let before = head(&repo);
    let out = cohort(
        &repo,
        &["autopilot", "--once", "--metrics-url", &url, "-o", "json"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let service = &report["services"][0];
    assert_eq!(service["decision"]["action"], "rollback");
    let error = service["error"].as_str().expect("an error");
    assert!(
        error.contains("the history shows no version of account-service canary before 1.17.0"),
        "{error}"
    );
    assert_eq!(head(&repo), before);
    // A dry run plans the change too: it says the same, and exits the same.
    let dry = cohort(
        &repo,
        &["autopilot", "--once", "--dry-run", "--metrics-url", &url],
    );
    assert_eq!(dry.status.code(), Some(1), "{}", text(&dry));
    assert!(
        text(&dry).contains("the history shows no version of account-service canary before 1.17.0"),
        "{}",
        text(&dry)
    );
    let said = text(&cohort(&repo, &["autopilot", "--once", "--metrics-url", &url]));
    assert!(
        said.contains("account-service: could not roll canary back from 1.17.0"),
        "{said}"
    );
}

/// A bare copy of a release repo behind git's own smart HTTP backend (`git_https_server.py`):
/// plain HTTP, or with `auth` HTTPS (certificates from a test CA, `ca.pem` in its directory)
/// demanding that basic authentication; killed when dropped.
struct GitServer {
    child: std::process::Child,
    url: String,
    bare: PathBuf,
    _dir: tempfile::TempDir,
}

impl GitServer {
    fn start(repo: &Path, auth: Option<&str>) -> GitServer {
        use std::io::BufRead;
        let dir = tempfile::tempdir().expect("tempdir");
        let bare = dir.path().join("releases.git");
        git(
            dir.path(),
            &[
                "clone",
                "-q",
                "--bare",
                &repo.display().to_string(),
                &bare.display().to_string(),
            ],
        );
        // Without authentication, git's backend takes pushes only when the repository says so.
        git(&bare, &["config", "http.receivepack", "true"]);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/git_https_server.py");
        let mut server = Command::new("python3");
        server
            .arg(&script)
            .arg(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        if let Some(auth) = auth {
            tls_common::certificates(dir.path());
            server
                .arg(dir.path().join("server.pem"))
                .arg(dir.path().join("server.key"))
                .env("GIT_SERVER_AUTH", auth);
        }
        let mut child = server.spawn().expect("python3 git_https_server.py");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the port");
        let port: u16 = line.trim().parse().expect("a port");
        let scheme = if auth.is_some() { "https" } else { "http" };
        GitServer {
            child,
            url: format!("{scheme}://127.0.0.1:{port}/releases.git"),
            bare,
            _dir: dir,
        }
    }

    /// `git log` of the remote's main: (author, subject) newest first.
    fn log(&self) -> Vec<(String, String)> {
        git(&self.bare, &["log", "--format=%an|%s", "main"])
            .lines()
            .filter_map(|l| l.split_once('|'))
            .map(|(a, s)| (a.to_string(), s.to_string()))
            .collect()
    }

    fn show(&self, what: &str) -> String {
        git(&self.bare, &["show", what])
    }

    /// The CA that signed its certificate (with `auth`).
    fn ca(&self) -> PathBuf {
        self.bare.with_file_name("ca.pem")
    }
}

/// A pre-receive hook on `bare` that, the first time anyone pushes, first lands a person's
/// commit on main: the same tree, or with `change` (path, text, replacement) made to a file.
/// The push that triggered it then finds main moved, as when a person pushed a moment before.
fn person_pushes_first(bare: &Path, change: Option<(&str, &str, &str)>) {
    let tree = match change {
        None => "tree=$(git rev-parse 'main^{tree}')".to_string(),
        Some((path, from, to)) => format!(
            "export GIT_INDEX_FILE=\"$GIT_DIR/person-index\"\n  git read-tree main\n  \
             blob=$(git show main:{path} | sed 's/{from}/{to}/' | git hash-object -w --stdin)\n  \
             git update-index --cacheinfo 100644,$blob,{path}\n  tree=$(git write-tree)"
        ),
    };
    let hook = bare.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nif [ ! -e \"$GIT_DIR/raced\" ]; then\n  touch \"$GIT_DIR/raced\"\n  \
             unset GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES\n  {tree}\n  \
             c=$(git -c user.name=Ops -c user.email=ops@example.com commit-tree \"$tree\" -p main -m \"a person's change\")\n  \
             git update-ref refs/heads/main \"$c\"\nfi\n"
        ),
    )
    .expect("hook");
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// With `--git`, the rollback is pushed to the remote. A person who pushes while the pass
/// decides (a pre-receive hook does it the instant the autopilot pushes) keeps their commit:
/// the autopilot fetches, decides again on top of it and pushes that.
#[test]
fn with_git_a_rollback_is_pushed_on_top_of_a_persons_commit_that_raced_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = release_repo(dir.path(), "1.19.0");
    let remote = GitServer::start(&repo, Some("autopilot:s3cret"));
    // The person's push lands between the autopilot's fetch and its push.
    person_pushes_first(&remote.bare, None);
    let bad = router("1.19.0", 3);
    free_requests(bad.process.traffic, 1_000);
    let metrics = format!("http://{}", bad.process.admin);
    let creds = dir.path().join("git-credentials");
    let mirror = dir.path().join("mirror");
    let run = |creds_text: &str| {
        std::fs::write(&creds, creds_text).expect("write");
        cohort(
            dir.path(),
            &[
                "autopilot",
                "--once",
                "--git",
                &remote.url,
                "--git-credentials-file",
                &creds.display().to_string(),
                "--git-ca-file",
                &remote.ca().display().to_string(),
                "--mirror-dir",
                &mirror.display().to_string(),
                "--metrics-url",
                &metrics,
            ],
        )
    };

    // Wrong credentials: nothing is read, nothing pushed, and the status says it could not.
    let refused = run("autopilot:wrong\n");
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains(&format!("cannot fetch main from {}", remote.url)),
        "{}",
        text(&refused)
    );
    let before = remote.log();

    let acted = run("autopilot:s3cret\n");
    let said = text(&acted);
    assert_eq!(acted.status.code(), Some(0), "{said}");
    assert!(said.contains("deciding again on what is there now"), "{said}");
    assert!(
        said.contains("account-service: roll canary back from 1.19.0 ("),
        "{said}"
    );
    let log = remote.log();
    assert_eq!(log.len(), before.len() + 2, "{log:?}");
    assert_eq!(
        log[1],
        ("Ops".to_string(), "a person's change".to_string()),
        "the person's commit is kept"
    );
    assert_eq!(
        log[0],
        (
            "cohort autopilot".to_string(),
            "rollback account-service canary: 1.19.0 → 1.17.0".to_string()
        )
    );
    let message = remote.show("main");
    assert!(
        message.contains("Cohort-Judgement: fail: canary 1.19.0 against production 1.15.0"),
        "{message}"
    );
    assert!(
        remote
            .show("main:releases/account-service.yaml")
            .contains("canary: \"1.17.0\"")
    );
    git(&remote.bare, &["fsck", "--strict", "--no-dangling"]);

    // The next pass has nothing to do: the rollback is on the remote.
    let again = run("autopilot:s3cret\n");
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert_eq!(remote.log().len(), log.len(), "{}", text(&again));
}

/// The regression this pins: a person fixes the failing canary by hand (1.19.0 → 1.19.1) and
/// pushes while the autopilot pushes its rollback; deciding again, the autopilot must not
/// judge 1.19.1 on the counts of 1.19.0 and roll the fix back. It waits for the fix's own.
#[test]
fn a_persons_fix_pushed_during_a_rollback_is_not_judged_on_the_old_builds_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = release_repo(dir.path(), "1.19.0");
    let remote = GitServer::start(&repo, None);
    person_pushes_first(
        &remote.bare,
        Some((
            "releases/account-service.yaml",
            "canary: \"1.19.0\"",
            "canary: \"1.19.1\"",
        )),
    );
    let bad = router("1.19.0", 3);
    free_requests(bad.process.traffic, 1_000);
    let metrics = format!("http://{}", bad.process.admin);
    let before = remote.log();
    let mirror = dir.path().join("mirror");
    let out = cohort(
        dir.path(),
        &[
            "autopilot",
            "--once",
            "--git",
            &remote.url,
            "--metrics-url",
            &metrics,
            "--mirror-dir",
            &mirror.display().to_string(),
        ],
    );
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("deciding again on what is there now"), "{said}");
    let log = remote.log();
    assert_eq!(
        log.len(),
        before.len() + 1,
        "only the person's commit: {log:?}\n{said}"
    );
    assert_eq!(log[0], ("Ops".to_string(), "a person's change".to_string()));
    assert!(
        remote
            .show("main:releases/account-service.yaml")
            .contains("canary: \"1.19.1\""),
        "the fix stays"
    );
    assert!(said.contains("account-service: waiting"), "{said}");
}

/// Two autopilots on one remote (no lease: the push is the guard) make each decision once.
#[test]
fn two_autopilots_against_one_remote_never_make_the_same_decision_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = release_repo(dir.path(), "1.17.0");
    let remote = GitServer::start(&repo, None);
    let good = router("1.17.0", 0);
    free_requests(good.process.traffic, 5_000);
    let metrics = format!("http://{}", good.process.admin);
    let spawn = |mirror: &str| {
        Command::new(env!("CARGO_BIN_EXE_cohort"))
            .args([
                "autopilot",
                "--once",
                "--git",
                &remote.url,
                "--metrics-url",
                &metrics,
            ])
            .arg("--mirror-dir")
            .arg(dir.path().join(mirror))
            .current_dir(dir.path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("autopilot runs")
    };
    let mut said = String::new();
    for _ in 0..3 {
        let (a, b) = (spawn("a"), spawn("b"));
        for child in [a, b] {
            let out = child.wait_with_output().expect("wait");
            said.push_str(&text(&out));
            assert_eq!(out.status.code(), Some(0), "{said}");
        }
    }
    let promotions: Vec<_> = remote
        .log()
        .into_iter()
        .filter(|(author, _)| author == "cohort autopilot")
        .collect();
    assert_eq!(
        promotions,
        vec![(
            "cohort autopilot".to_string(),
            "promote account-service 1.17.0: canary → paid".to_string()
        )],
        "{said}"
    );
    eprintln!(
        "two autopilots, 3 rounds: {} race(s) lost and decided again",
        said.matches("deciding again").count()
    );
}

/// A canary ramped 1% → 2% → 5% through the remote, one step per commit; the autopilot killed
/// mid-ramp and started again goes on from the step git holds, then promotes into paid.
#[test]
fn with_git_a_ramp_killed_midway_resumes_at_its_step_and_ends_in_a_promotion() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = release_repo(dir.path(), "1.17.0");
    let path = repo.join("cohort.yaml");
    let pipeline = std::fs::read_to_string(&path).expect("read");
    let ramped = pipeline.replacen(
        "    canary:\n      rollback: auto\n",
        "    canary:\n      rollback: auto\n      ramp: [1%, 2%, 5%]\n      step_time: 1s\n",
        1,
    );
    assert_ne!(ramped, pipeline);
    std::fs::write(&path, ramped).expect("write");
    git(&repo, &["commit", "-qam", "ramp canary"]);
    // A version promoted into a ramped stage starts at its first step (internal runs 1.18.0).
    ops(
        &repo,
        &[
            "promote",
            "account-service",
            "--to",
            "canary",
            "--force",
            "--reason",
            "try it",
        ],
    );
    let remote = GitServer::start(&repo, None);
    assert!(
        remote
            .show("main:releases/account-service.yaml")
            .contains("ramp:\n  canary: 0\n")
    );
    let good = router("1.18.0", 0);
    let metrics = format!("http://{}", good.process.admin);
    let traffic = good.process.traffic;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                free_requests(traffic, 200);
            }
        })
    };
    let ours = |log: &[(String, String)]| -> Vec<String> {
        log.iter()
            .filter(|(a, _)| a == "cohort autopilot")
            .map(|(_, s)| s.clone())
            .rev()
            .collect()
    };
    let args = ["--git", remote.url.as_str(), "--metrics-url", metrics.as_str()];
    let wait_for = |n: usize| {
        // Generous: on a busy machine the judgement needs longer to see enough requests.
        for _ in 0..480 {
            if ours(&remote.log()).len() >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let first = Running::start(dir.path(), &args);
    wait_for(1);
    // Killed (SIGKILL) mid-ramp: what it knew is only what git holds.
    let said_first = first.stop();
    let after_kill = ours(&remote.log());
    assert_eq!(
        after_kill,
        ["ramp account-service canary: 1% → 2%"],
        "{said_first}"
    );
    assert!(
        remote
            .show("main:releases/account-service.yaml")
            .contains("ramp:\n  canary: 1\n")
    );

    let second = Running::start(dir.path(), &args);
    wait_for(3);
    let said_second = second.stop();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sender.join();
    assert_eq!(
        ours(&remote.log()),
        [
            "ramp account-service canary: 1% → 2%",
            "ramp account-service canary: 2% → 5%",
            "promote account-service 1.18.0: canary → paid",
        ],
        "{said_first}\n---\n{said_second}"
    );
    let state = remote.show("main:releases/account-service.yaml");
    assert!(
        !state.contains("ramp:"),
        "a promotion out of the stage ends its ramp: {state}"
    );
}

const FLEET_TOKEN: &str = "fleet-token-0123456789abcdef";
const EU_TOKEN: &str = "eu-west-token-0123456789abcdef";
const US_TOKEN: &str = "us-east-token-0123456789abcdef";

/// A real `cohort serve` over `repo` on a loopback port with clusters eu-west and us-east;
/// killed when dropped.
struct Serve {
    child: std::process::Child,
    url: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_serve(dir: &Path, repo: &Path) -> Serve {
    use std::io::BufRead;
    std::fs::write(
        dir.join("tokens.yaml"),
        format!(
            "fleet_token: {FLEET_TOKEN}\nclusters:\n  eu-west:\n    token: {EU_TOKEN}\n  us-east:\n    token: {US_TOKEN}\n"
        ),
    )
    .expect("tokens");
    std::fs::write(dir.join("fleet.token"), FLEET_TOKEN).expect("token");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .arg("-C")
        .arg(repo)
        .args(["serve", "--listen", "127.0.0.1:0", "--tokens"])
        .arg(dir.join("tokens.yaml"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cohort serve");
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let first = lines.next().expect("a line").expect("utf-8");
    let url = first
        .split("control API on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_string();
    std::thread::spawn(move || for _ in lines {});
    Serve { child, url }
}

/// What an agent sends: a report with its routers' counts (`/stats` of the router at
/// `admin`), posted as cluster `cluster`.
fn report_counts(serve: &Serve, cluster: &str, token: &str, admin: SocketAddr) {
    let stats = get(admin, "/stats?window=60s");
    let body = stats.split("\r\n\r\n").nth(1).expect("a body");
    let stats: serde_json::Value = serde_json::from_str(body).expect("router stats");
    let report = serde_json::json!({
        "cluster": cluster,
        "agent_version": "test",
        "at": 0,
        "seen_revision": null,
        "services": [],
        "counts": [{"service": "account-service", "stats": stats}],
    })
    .to_string();
    let addr: SocketAddr = serve.url.trim_start_matches("http://").parse().expect("addr");
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "POST /v1/clusters/{cluster}/reports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{report}",
        report.len()
    )
    .expect("write");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
}

/// The canary requests a router counted, from its `/stats`.
fn canary_requests(admin: SocketAddr) -> u64 {
    let stats = get(admin, "/stats?window=60s");
    let stats: serde_json::Value =
        serde_json::from_str(stats.split("\r\n\r\n").nth(1).expect("body")).expect("json");
    stats["series"]
        .as_array()
        .expect("series")
        .iter()
        .filter(|s| s["track"] == "canary")
        .map(|s| s["requests"].as_u64().expect("requests"))
        .sum()
}

/// Pull mode: nothing connects into the clusters; each cluster's agent sends its routers'
/// counts with its reports to `cohort serve`, and `cohort autopilot --control` judges on
/// every cluster's sum. While one cluster is silent, nothing passes.
#[test]
fn in_pull_mode_the_autopilot_judges_on_every_clusters_counts_and_a_silent_one_holds_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = release_repo(dir.path(), "1.17.0");
    let serve = start_serve(dir.path(), &repo);
    let (eu, us) = (router("1.17.0", 0), router("1.17.0", 0));
    free_requests(eu.process.traffic, 6_000);
    free_requests(us.process.traffic, 3_000);
    let token = dir.path().join("fleet.token");
    let token = token.to_string_lossy();
    let autopilot = [
        "autopilot",
        "--once",
        "--control",
        &serve.url,
        "--token-file",
        &token,
        "-o",
        "json",
    ];
    let judged = |out: &Output| -> String {
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)));
        report["services"][0]["judgements"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|j| j["track"] == "canary")
            .and_then(|j| j["evidence"].as_str())
            .unwrap_or_default()
            .to_string()
    };

    // Only eu-west has reported: its counts alone would pass, but us-east is silent.
    report_counts(&serve, "eu-west", EU_TOKEN, eu.process.admin);
    let before = head(&repo);
    let held = cohort(&repo, &autopilot);
    assert_eq!(held.status.code(), Some(0), "{}", text(&held));
    let evidence = judged(&held);
    assert!(evidence.starts_with("inconclusive: canary 1.17.0"), "{evidence}");
    assert!(
        evidence.contains("not on part of the fleet's counts: silent: us-east (no report yet)"),
        "{evidence}"
    );
    assert_eq!(head(&repo), before, "nothing is promoted on half the fleet");

    // Both clusters report: judged on both routers' counts, and promoted.
    report_counts(&serve, "us-east", US_TOKEN, us.process.admin);
    let both = canary_requests(eu.process.admin) + canary_requests(us.process.admin);
    let acted = cohort(&repo, &autopilot);
    assert_eq!(acted.status.code(), Some(0), "{}", text(&acted));
    let evidence = judged(&acted);
    assert!(evidence.starts_with("pass: canary 1.17.0"), "{evidence}");
    assert!(
        evidence.contains(&format!("over {both} and ")),
        "{both} canary requests in {evidence}"
    );
    let message = git(&repo, &["log", "-1", "--format=%an%n%s"]);
    assert_eq!(
        message.trim(),
        "cohort autopilot\npromote account-service 1.17.0: canary → paid"
    );
}

/// What cannot work is refused before anything is read or pushed, saying what to give instead
/// (exit 2): a remote it could not push to, a pass every instant, a control API without its
/// scheme or with an empty token file.
#[test]
fn what_cannot_work_is_refused_up_front_with_the_way_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = release_repo(dir.path(), "1.17.0");
    std::fs::write(dir.path().join("empty.token"), "\n").expect("token");
    let empty = dir.path().join("empty.token").display().to_string();
    let cases: [(&[&str], &str); 7] = [
        (&["autopilot", "--once", "--window", "20m"], "outside 1s to 10m"),
        (
            &[
                "autopilot",
                "--once",
                "--git",
                "git@example.com:team/releases.git",
            ],
            "give the repository's https URL",
        ),
        (
            &[
                "autopilot",
                "--once",
                "--git",
                "ssh://git@example.com/team/releases.git",
            ],
            "pushing over ssh or git:// is not supported",
        ),
        (&["autopilot", "--interval", "0s"], "give at least 1s"),
        (
            &[
                "autopilot",
                "--once",
                "--control",
                "127.0.0.1:8443",
                "--token-file",
                &empty,
            ],
            "give it with its scheme",
        ),
        (
            &[
                "autopilot",
                "--once",
                "--control",
                "http://127.0.0.1:1",
                "--token-file",
                &empty,
            ],
            "must hold the fleet_token alone, on one line; it is empty",
        ),
        (
            &[
                "render",
                "--autopilot",
                "--git",
                "ssh://git@example.com/r.git",
                "-n",
                "shop",
            ],
            "not ssh or git://",
        ),
    ];
    for (args, says) in cases {
        let out = cohort(&repo, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
    }
}

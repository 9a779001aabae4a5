//! The judgement's extra checks (`judgement.checks`) through `cohort analyze` and the
//! autopilot: a real Prometheus (Debian's) scraping a real `cohort router` and small shop
//! apps that count a business event, and real HTTP(S) servers for web checks.

mod prom_common;
mod router_common;
mod tls_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prom_common::{Prometheus, Target};
use router_common::{RouterProcess, canary_config, free_requests, start_router};
use serde_json::Value;

/// A shop app for one track: answers every request, counts it, and every `checkout_every`-th
/// is a checkout; `/metrics` exports both counters, as an application instrumented with a
/// Prometheus client does.
struct Shop {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
}

fn shop(checkout_every: u64) -> Shop {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let requests = Arc::new(AtomicU64::new(0));
    let checkouts = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&requests);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (requests, checkouts) = (Arc::clone(&seen), Arc::clone(&checkouts));
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = if head.starts_with(b"GET /metrics ") {
                    format!(
                        "# TYPE shop_requests_total counter\nshop_requests_total {}\n# TYPE shop_checkouts_total counter\nshop_checkouts_total {}\n",
                        requests.load(Ordering::SeqCst),
                        checkouts.load(Ordering::SeqCst)
                    )
                } else {
                    let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
                    if n.is_multiple_of(checkout_every) {
                        checkouts.fetch_add(1, Ordering::SeqCst);
                    }
                    "ok".to_string()
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    Shop { addr, requests }
}

/// An HTTP server answering `GET /health/<track>` with `status` and a JSON body.
fn health_api(status: u16, body: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

fn cohort(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(args)
        .current_dir(dir)
        .env_remove("COHORT_REPO")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("COHORT_TEST_WEB_TOKEN", "s3cret-token")
        .env("GIT_AUTHOR_NAME", "Release Bot")
        .env("GIT_AUTHOR_EMAIL", "bot@example.com")
        .env("GIT_COMMITTER_NAME", "Release Bot")
        .env("GIT_COMMITTER_EMAIL", "bot@example.com")
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

/// A release repo from `cohort init` with `judgement` (and more) added to cohort.yaml.
fn release_repo(dir: &Path, judgement: &str) -> PathBuf {
    let init = cohort(dir, &["init", "releases"]);
    assert!(init.status.success(), "{}", text(&init));
    let repo = dir.join("releases");
    let path = repo.join("cohort.yaml");
    let yaml = std::fs::read_to_string(&path).expect("read");
    // Promotion into paid needs a passing judgement.
    let gate = (
        "  paid:\n    min_time_in_previous: 1h\n",
        "  paid:\n    require_judgement: true\n",
    );
    assert!(yaml.contains(gate.0), "{yaml}");
    let yaml = yaml.replace(gate.0, gate.1);
    std::fs::write(&path, format!("{yaml}\n{judgement}")).expect("write");
    let check = cohort(&repo, &["validate"]);
    assert!(check.status.success(), "{}", text(&check));
    // The autopilot acts on what is committed.
    let commit = Command::new("git")
        .args([
            "-c",
            "user.name=Ops",
            "-c",
            "user.email=ops@example.com",
            "commit",
            "-qam",
            "judge with checks",
        ])
        .current_dir(&repo)
        .output()
        .expect("git");
    assert!(commit.status.success(), "{}", text(&commit));
    repo
}

/// A router for account-service (FREE: 20% canary 1.17.0, 80% production 1.15.0) in front of
/// two shops, scraped with them by a Prometheus.
struct Setup {
    router: RouterProcess,
    canary: Shop,
    production: Shop,
    prometheus: Prometheus,
    _dir: tempfile::TempDir,
}

fn setup(canary_checkout_every: u64) -> Setup {
    let (canary, production) = (shop(canary_checkout_every), shop(10));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("router.yaml");
    std::fs::write(&config, canary_config("1.17.0", canary.addr, production.addr)).expect("write");
    let router = start_router(&["--config".as_ref(), config.as_os_str()]);
    let prometheus = Prometheus::start(&[
        Target::new("shop", canary.addr, &[("track", "canary")]),
        Target::new("shop", production.addr, &[("track", "production")]),
        Target::new("cohort-router", router.admin, &[("service", "account-service")]),
    ]);
    Setup {
        router,
        canary,
        production,
        prometheus,
        _dir: dir,
    }
}

impl Setup {
    /// Sends `n` FREE requests and waits until Prometheus has scraped what the shops and the
    /// router counted.
    fn traffic(&self, n: usize) {
        // Prometheus sees a counter's increase only from its first scrape: a few requests
        // first, so the router's per-track series exist, and every target scraped once.
        free_requests(self.router.traffic, 20);
        self.prometheus
            .wait_for_series("count(up == 1) == 3", Duration::from_secs(30));
        self.prometheus.wait_for_series(
            "count(cohort_router_requests_total{track=\"canary\"})",
            Duration::from_secs(30),
        );
        free_requests(self.router.traffic, n);
        for (track, shop) in [("canary", &self.canary), ("production", &self.production)] {
            let want = shop.requests.load(Ordering::SeqCst);
            self.prometheus.wait_for_series(
                &format!("shop_requests_total{{track=\"{track}\"}} >= {want}"),
                Duration::from_secs(30),
            );
        }
        self.prometheus.wait_for_series(
            &format!(
                "sum(cohort_router_requests_total{{track=\"canary\"}}) >= {}",
                n / 5 - 5
            ),
            Duration::from_secs(30),
        );
        // A second scrape after the last, so a rate over the window has its end.
        std::thread::sleep(Duration::from_millis(1500));
    }
}

/// The three checks: a business rate per request that must not drop, the router's own
/// 5xx ratio as Prometheus has it, and a web check.
fn three_checks(prometheus: &str, api: SocketAddr) -> String {
    format!(
        r#"judgement:
  window: 1m
  min_error_increase: 5%
  confidence: 0.999
  prometheus:
    url: {prometheus}
  checks:
    - name: checkouts-per-request
      prometheus: sum(rate(shop_checkouts_total{{track="{{{{track}}}}"}}[{{{{window}}}}])) / sum(rate(shop_requests_total{{track="{{{{track}}}}"}}[{{{{window}}}}]))
      must_not_drop_by: 20%
    - name: router-errors
      prometheus:
        errors: sum(increase(cohort_router_requests_total{{service="{{{{service}}}}",track="{{{{track}}}}",class="5xx"}}[{{{{window}}}}])) or vector(0)
        requests: sum(increase(cohort_router_requests_total{{service="{{{{service}}}}",track="{{{{track}}}}"}}[{{{{window}}}}]))
    - name: orders-api
      web: http://{api}/health/{{{{track}}}}
      json_path: checks.db
      equals: ok
autopilot:
  stages:
    canary:
      rollback: auto
"#
    )
}

fn analyze(repo: &Path, router: &RouterProcess, extra: &[&str]) -> (Output, Value) {
    let url = format!("http://{}", router.admin);
    let args = [
        &[
            "analyze",
            "account-service",
            "--track",
            "canary",
            "--metrics-url",
            &url,
            "-o",
            "json",
        ][..],
        extra,
    ]
    .concat();
    let out = cohort(repo, &args);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    (out, report)
}

fn outcome<'r>(report: &'r Value, check: &str) -> &'r Value {
    report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == check))
        .unwrap_or_else(|| panic!("no check {check} in {report:#}"))
}

#[test]
fn a_canary_whose_business_rate_drops_is_failed_by_its_prometheus_check_while_the_router_counts_pass_it() {
    // The canary checks out one request in 30, production one in 10: no errors, no slowness.
    let s = setup(30);
    let dir = tempfile::tempdir().expect("tempdir");
    let api = health_api(200, r#"{"checks":{"db":"ok"}}"#);
    let repo = release_repo(dir.path(), &three_checks(&s.prometheus.url, api));
    s.traffic(3_000);

    let (alone, report) = analyze(&repo, &s.router, &["--counts-only"]);
    assert_eq!(alone.status.code(), Some(0), "{}", text(&alone));
    assert_eq!(report["verdict"], "pass");
    assert_eq!(report["checks"], serde_json::json!([]));

    let (with, report) = analyze(&repo, &s.router, &[]);
    assert_eq!(with.status.code(), Some(1), "{}", text(&with));
    assert_eq!(report["verdict"], "fail", "{report:#}");
    assert_eq!(
        report["judgement"]["verdict"], "pass",
        "the router's counts alone pass it"
    );
    let business = outcome(&report, "checkouts-per-request");
    assert_eq!(business["outcome"], "fail", "{business:#}");
    let (t, b) = (
        business["track_value"].as_f64().expect("track value"),
        business["baseline_value"].as_f64().expect("baseline value"),
    );
    assert!(
        (0.025..0.045).contains(&t) && (0.09..0.11).contains(&b),
        "{t} {b}"
    );
    assert!(
        business["summary"]
            .as_str()
            .expect("summary")
            .ends_with("may drop by 20%"),
        "{business:#}"
    );
    // The evidence holds the queries as sent, templated for each side.
    let queries = business["evidence"].to_string();
    assert!(queries.contains(r#"track=\"canary\"}[60s]"#), "{queries}");
    assert!(queries.contains(r#"track=\"production\"}[60s]"#), "{queries}");
    let errors = outcome(&report, "router-errors");
    assert_eq!(errors["outcome"], "pass", "{errors:#}");
    assert_eq!(outcome(&report, "orders-api")["outcome"], "pass");
    assert_eq!(
        report["prometheus_queries"], 6,
        "2 for the value, 4 for the ratio"
    );

    // The terminal says which check failed, and why.
    let url = format!("http://{}", s.router.admin);
    let said = cohort(
        &repo,
        &[
            "analyze",
            "account-service",
            "--track",
            "canary",
            "--metrics-url",
            &url,
        ],
    );
    let said = text(&said);
    assert!(
        said.contains("verdict: FAIL — router counts pass; checks: checkouts-per-request: fail: "),
        "{said}"
    );

    // Nor does promote's judgement gate let it into paid.
    let refused = cohort(
        &repo,
        &[
            "promote",
            "account-service",
            "--to",
            "paid",
            "--metrics-url",
            &url,
        ],
    );
    let said = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(said.contains("checks: checkouts-per-request: fail: "), "{said}");
    assert!(said.contains("a passing canary judgement is required"), "{said}");

    // The autopilot judges with the checks too: it would roll the canary back on them.
    let pass = cohort(
        &repo,
        &[
            "autopilot",
            "--once",
            "--dry-run",
            "-o",
            "json",
            "--metrics-url",
            &url,
        ],
    );
    let out: Value = serde_json::from_slice(&pass.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&pass)));
    let service = &out["services"][0];
    assert_eq!(service["decision"]["action"], "rollback", "{out:#}");
    assert_eq!(service["decision"]["track"], "canary");
    let evidence = service["decision"]["evidence"].as_str().expect("evidence");
    assert!(
        evidence.contains("checks: checkouts-per-request: fail: "),
        "{evidence}"
    );

    // Prometheus gone: its checks could not judge, and that is never a pass.
    let mut s = s;
    s.prometheus.stop();
    let (down, report) = analyze(&repo, &s.router, &[]);
    assert_eq!(down.status.code(), Some(3), "{}", text(&down));
    assert_eq!(report["verdict"], "inconclusive");
    for check in ["checkouts-per-request", "router-errors"] {
        let c = outcome(&report, check);
        assert_eq!(c["outcome"], "could_not_judge", "{c:#}");
        assert!(
            c["summary"]
                .as_str()
                .expect("summary")
                .starts_with("cannot reach http://127.0.0.1:"),
            "{c:#}"
        );
    }
}

#[test]
fn a_healthy_canary_passes_every_check_and_a_query_returning_nothing_is_inconclusive() {
    let s = setup(10);
    let dir = tempfile::tempdir().expect("tempdir");
    let api = health_api(200, r#"{"checks":{"db":"ok"}}"#);
    let repo = release_repo(dir.path(), &three_checks(&s.prometheus.url, api));
    s.traffic(3_000);

    let (passed, report) = analyze(&repo, &s.router, &[]);
    assert_eq!(passed.status.code(), Some(0), "{}", text(&passed));
    assert_eq!(report["verdict"], "pass", "{report:#}");
    for c in report["checks"].as_array().expect("checks") {
        assert_eq!(c["outcome"], "pass", "{c:#}");
    }

    // Promote's judgement gate runs them too, and the commit carries their evidence.
    let url = format!("http://{}", s.router.admin);
    let promoted = cohort(
        &repo,
        &[
            "promote",
            "account-service",
            "--to",
            "paid",
            "--metrics-url",
            &url,
        ],
    );
    assert_eq!(promoted.status.code(), Some(0), "{}", text(&promoted));
    let log = Command::new("git")
        .args(["log", "-1", "--format=%B"])
        .current_dir(&repo)
        .output()
        .expect("git log");
    let message = String::from_utf8_lossy(&log.stdout);
    assert!(
        message.contains("; checks passed: checkouts-per-request, router-errors, orders-api"),
        "{message}"
    );

    // The service's own check, over the pipeline's: a label that matches no series.
    let spec = repo.join("services/account-service.yaml");
    let text_before = std::fs::read_to_string(&spec).expect("read");
    std::fs::write(
        &spec,
        format!(
            "{text_before}\njudgement:\n  checks:\n    - name: queue-depth\n      prometheus: max(shop_queue_depth{{track=\"{{{{track}}}}\"}})\n      at_most: 100\n"
        ),
    )
    .expect("write");
    let (unsure, report) = analyze(&repo, &s.router, &[]);
    assert_eq!(unsure.status.code(), Some(3), "{}", text(&unsure));
    assert_eq!(report["verdict"], "inconclusive");
    let q = outcome(&report, "queue-depth");
    assert_eq!(q["outcome"], "inconclusive", "{q:#}");
    assert!(
        q["summary"]
            .as_str()
            .expect("summary")
            .starts_with("the query returned nothing for the track"),
        "{q:#}"
    );
    assert_eq!(q["evidence"][0], "max(shop_queue_depth{track=\"canary\"})");
}

/// An HTTPS server (Python's, with the test CA's certificate) answering `/ok` and `/queue`.
struct Https {
    child: std::process::Child,
    port: u16,
}

impl Drop for Https {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn https_api(dir: &Path) -> Https {
    let script = r#"
import http.server, json, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = {"/ok": {"checks": {"db": "ok"}}, "/queue": {"queue": {"depth": 50}}, "/auth": {"ok": True}}.get(self.path)
        data = json.dumps(body).encode()
        if self.path == "/auth" and self.headers.get("Authorization") != "Bearer s3cret-token":
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
c.load_cert_chain(sys.argv[1], sys.argv[2])
s.socket = c.wrap_socket(s.socket, server_side=True)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .arg(dir.join("server.pem"))
        .arg(dir.join("server.key"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("port");
    let port = line.trim().parse().unwrap_or_else(|_| panic!("port: {line:?}"));
    Https { child, port }
}

#[test]
fn web_checks_judge_the_status_and_a_json_value_over_https_with_the_teams_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    tls_common::certificates(dir.path());
    let server = https_api(dir.path());
    let ca = dir.path().join("ca.pem");
    let base = format!("https://127.0.0.1:{}", server.port);
    let checks = format!(
        r#"judgement:
  window: 1m
  checks:
    - name: db
      web: {base}/ok
      json_path: $.checks.db
      equals: ok
      ca_file: {ca}
    - name: queue
      web: {base}/queue
      json_path: queue.depth
      at_most: 10
      ca_file: {ca}
    - name: missing
      web: {base}/nope
      ca_file: {ca}
    - name: untrusted
      web: {base}/ok
    - name: with-token
      web: {base}/auth
      bearer_token_env: COHORT_TEST_WEB_TOKEN
      ca_file: {ca}
    - name: without-token
      web: {base}/auth
      ca_file: {ca}
"#,
        ca = ca.display()
    );
    let repo = release_repo(dir.path(), &checks);
    let tracks = tempfile::tempdir().expect("tempdir");
    let config = tracks.path().join("router.yaml");
    let (canary, production) = (shop(10), shop(10));
    std::fs::write(&config, canary_config("1.17.0", canary.addr, production.addr)).expect("write");
    let router = start_router(&["--config".as_ref(), config.as_os_str()]);
    free_requests(router.traffic, 100);
    let (out, report) = analyze(&repo, &router, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(outcome(&report, "db")["outcome"], "pass");
    let queue = outcome(&report, "queue");
    assert_eq!(queue["outcome"], "fail");
    assert_eq!(queue["summary"], "`queue.depth` is 50, not at most 10");
    assert_eq!(queue["track_value"], 50.0);
    let missing = outcome(&report, "missing");
    assert_eq!(missing["outcome"], "fail");
    assert_eq!(missing["summary"], format!("{base}/nope answered 404, not 200"));
    // Without the team's CA the server is not trusted: not a pass, and it says why.
    let untrusted = outcome(&report, "untrusted");
    assert_eq!(untrusted["outcome"], "could_not_judge", "{untrusted:#}");
    let why = untrusted["summary"].as_str().expect("summary");
    assert!(why.contains("UnknownIssuer"), "{why}");
    // The bearer token is read from where the repo says and sent; never shown.
    assert_eq!(outcome(&report, "with-token")["outcome"], "pass", "{report:#}");
    let refused = outcome(&report, "without-token");
    assert_eq!(refused["outcome"], "could_not_judge", "{refused:#}");
    assert!(
        refused["summary"]
            .as_str()
            .expect("summary")
            .ends_with("answered 401 (the credentials were refused or missing)"),
        "{refused:#}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cret-token"));

    // Routers still serving another version than the release repo's: the checks would reach
    // the version being replaced, so they wait.
    let config = tracks.path().join("older.yaml");
    std::fs::write(&config, canary_config("1.16.0", canary.addr, production.addr)).expect("write");
    let older = start_router(&["--config".as_ref(), config.as_os_str()]);
    free_requests(older.traffic, 100);
    let (out, report) = analyze(&repo, &older, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let waiting = outcome(&report, "checks");
    assert_eq!(waiting["outcome"], "inconclusive", "{report:#}");
    assert_eq!(
        waiting["summary"],
        "not run: the routers serve 1.16.0 on canary, the release repo says 1.17.0; wait until it has rolled out"
    );
}

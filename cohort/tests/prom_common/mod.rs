//! A real Prometheus server for the tests: Debian's `prometheus` (CI installs it), started on a
//! loopback ephemeral port with a generated config scraping the given targets every second, and
//! queried through its HTTP API. Missing, it fails the test that wanted it, saying how to
//! install it: a test of the shipped monitoring must not pass by not running.
#![allow(dead_code)]

pub mod dashboard;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One scrape target.
#[derive(Clone, Debug)]
pub struct Target {
    /// The scrape job's name (the `job` label). Targets of one job share its metrics path.
    pub job: String,
    /// `host:port`.
    pub address: String,
    /// Target labels added to every series scraped from it (e.g. `service`, `namespace`).
    pub labels: Vec<(String, String)>,
    /// Usually `/metrics`.
    pub metrics_path: String,
}

impl Target {
    /// A target of `job` at `address`, `/metrics`, with `labels`.
    pub fn new(job: &str, address: impl ToString, labels: &[(&str, &str)]) -> Target {
        Target {
            job: job.to_string(),
            address: address.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            metrics_path: "/metrics".to_string(),
        }
    }
}

/// A running Prometheus, killed when dropped.
pub struct Prometheus {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

/// The Prometheus binary: `$PROMETHEUS`, else `prometheus` on the PATH. Panics, saying how to
/// install it, when there is none.
pub fn prometheus_binary() -> PathBuf {
    installed("PROMETHEUS", "prometheus")
}

/// promtool (Debian's `prometheus` package brings it): `$PROMTOOL`, else `promtool` on the PATH.
pub fn promtool_binary() -> PathBuf {
    installed("PROMTOOL", "promtool")
}

fn installed(var: &str, name: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(name));
    match Command::new(&path)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => path,
        other => panic!(
            "{name} is needed by this test and could not be run ({}: {other:?}): \
             apt-get install prometheus (it brings promtool; CI installs it), or set ${var}",
            path.display()
        ),
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every second (evaluating every second too), on a
    /// free loopback port, and waits until it answers `/-/ready`.
    pub fn start(targets: &[Target]) -> Prometheus {
        let binary = prometheus_binary();
        let mut tried = vec![];
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir for Prometheus");
            let config = dir.path().join("prometheus.yml");
            std::fs::write(&config, config_text(targets)).expect("write prometheus.yml");
            let port = free_port();
            let log = dir.path().join("prometheus.log");
            let child = Command::new(&binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("Prometheus log file"))
                .spawn()
                .expect("start prometheus");
            let mut prometheus = Prometheus {
                url: format!("http://127.0.0.1:{port}"),
                child: Some(child),
                dir,
            };
            if prometheus.wait_ready(Duration::from_secs(30)) {
                return prometheus;
            }
            // Most likely the port was taken in between: another one.
            prometheus.stop();
            tried.push(prometheus.log());
        }
        panic!(
            "Prometheus did not become ready on any of 5 ports; it said:\n{}",
            tried.join("\n---\n")
        );
    }

    /// True once `/-/ready` answers 200; false when the process exits or `timeout` passes.
    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && !matches!(child.try_wait(), Ok(None))
            {
                return false;
            }
            if matches!(get(&self.url, "/-/ready"), Ok((200, _))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// The config it runs with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("prometheus.yml")
    }

    /// Evaluates `promql` now (`/api/v1/query`) and returns `data.result`: for a vector, a
    /// list of `{metric, value}`. Panics with Prometheus's error otherwise.
    pub fn query(&self, promql: &str) -> serde_json::Value {
        match self.try_query(promql) {
            Ok(result) => result,
            Err(e) => panic!("query `{promql}`: {e}"),
        }
    }

    /// [`Prometheus::query`], the error returned rather than panicking.
    pub fn try_query(&self, promql: &str) -> Result<serde_json::Value, String> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let (status, body) = get(&self.url, &path).map_err(|e| format!("Prometheus at {}: {e}", self.url))?;
        let answer: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("HTTP {status}, not JSON ({e}): {body}"))?;
        match answer["status"].as_str() {
            Some("success") => Ok(answer["data"]["result"].clone()),
            _ => Err(format!(
                "HTTP {status}, {}: {}",
                answer["errorType"].as_str().unwrap_or("?"),
                answer["error"].as_str().unwrap_or(&body)
            )),
        }
    }

    /// Polls `promql` every 250 ms until its result is not empty or `timeout` passes, and
    /// returns the last result (empty if it never had series); Prometheus's error at once.
    pub fn try_query_for_series(&self, promql: &str, timeout: Duration) -> Result<serde_json::Value, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let result = self.try_query(promql)?;
            if !is_empty(&result) || Instant::now() >= deadline {
                return Ok(result);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Polls `promql` every 250 ms until its result is not empty, and returns it; panics after
    /// `timeout` with the last (empty) result.
    pub fn wait_for_series(&self, promql: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let result = self.query(promql);
            if !is_empty(&result) {
                return result;
            }
            if Instant::now() >= deadline {
                panic!(
                    "`{promql}` still returned nothing after {timeout:?}; targets: {}",
                    self.targets_health()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Each target's scrape URL, health and last error, for messages.
    pub fn targets_health(&self) -> String {
        match get(&self.url, "/api/v1/targets") {
            Ok((_, body)) => {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                v["data"]["activeTargets"]
                    .as_array()
                    .map(|ts| {
                        ts.iter()
                            .map(|t| format!("{} {} {}", t["scrapeUrl"], t["health"], t["lastError"]))
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or(body)
            }
            Err(e) => e.to_string(),
        }
    }

    /// Kills it (for "Prometheus is down" cases); queries fail from then on.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its log (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True for an empty vector (or anything that is not a non-empty list, but a scalar).
pub fn is_empty(result: &serde_json::Value) -> bool {
    match result {
        serde_json::Value::Array(items) => {
            // A scalar or string result is `[time, "value"]`: not empty.
            items.is_empty()
        }
        _ => true,
    }
}

/// The config: one scrape job per job name, each target a static config with its labels.
/// JSON is YAML, and quoting it so keeps any label value intact.
fn config_text(targets: &[Target]) -> String {
    let mut jobs: BTreeMap<&str, (&str, Vec<serde_json::Value>)> = BTreeMap::new();
    for t in targets {
        let entry = jobs.entry(&t.job).or_insert((&t.metrics_path, vec![]));
        assert_eq!(
            entry.0, t.metrics_path,
            "the targets of job {} must share a metrics path",
            t.job
        );
        let labels: serde_json::Map<String, serde_json::Value> = t
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        entry
            .1
            .push(serde_json::json!({"targets": [t.address], "labels": labels}));
    }
    let scrape_configs: Vec<serde_json::Value> = jobs
        .into_iter()
        .map(|(job, (path, statics))| {
            serde_json::json!({
                "job_name": job,
                "metrics_path": path,
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "static_configs": statics,
            })
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": scrape_configs,
    }))
    .expect("config as JSON")
}

/// A port free a moment ago (bound to 127.0.0.1:0, read, released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Everything but unreserved characters percent-encoded.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A plain GET of `path` on `base` (`http://host:port`) over HTTP/1.0, so the body is neither
/// chunked nor kept alive: (status, body).
pub fn get(base: &str, path: &str) -> std::io::Result<(u16, String)> {
    let host = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let out = String::from_utf8_lossy(&out);
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The repository's root (the workspace), for the shipped files.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cohort/ sits in the repository")
}

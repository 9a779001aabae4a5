//! The shipped dashboard and alerts (deploy/monitoring/) against real tools: promtool checks
//! and unit-tests the rules (and each unit test is shown to catch a broken rule), and a real
//! Prometheus scraping two real `cohort router` processes, with real traffic through them to
//! loopback backends, answers every query of the Grafana dashboard with series and runs every
//! alert's expression.
//!
//! The agent is not run here: `cohort agent` reads its saved state from the Kubernetes API
//! server before its first poll and stops without one, and this test runs without a cluster.
//! Its panels' queries are still run against Prometheus (they must parse and evaluate), and
//! every `cohort_agent_*` name they use must be one the agent's own registry
//! (`cohort_agent::metrics::Metrics`, what its admin port serves) encodes. That they return
//! series from a running agent (applying, refusing an invalid revision, failing a poll), and
//! that `CohortAgentNotPolling` and `CohortAgentDown` stay quiet for one that polls, is
//! agent_monitoring.rs's, which runs when `COHORT_E2E_KUBECONFIG` names a cluster. The
//! dashboard and rule helpers both use are prom_common::dashboard.
// Timings for whoever runs it, no text from outside: the binary's rule on printing
// (cohort/clippy.toml) is for what it shows operators.
#![allow(clippy::disallowed_macros)]

mod prom_common;
mod router_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prom_common::dashboard::{
    alert_expr, alert_exprs, alert_rules, dashboard, dashboard_queries, metric_names, monitoring_dir,
    substitute,
};
use prom_common::{Prometheus, Target, is_empty, promtool_binary, repo_root};
use router_common::start_router;

/// Runs promtool with `args` in `dir`: (success, what it said).
fn promtool(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(promtool_binary())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn promtool_checks_the_shipped_rules() {
    let (ok, said) = promtool(&monitoring_dir(), &["check", "rules", "alerts.yaml"]);
    assert!(ok, "promtool check rules alerts.yaml:\n{said}");
    assert!(said.contains("SUCCESS: 4 rules found"), "{said}");
}

/// The example scrape configuration parses, and loads the rules. Debian's Prometheus is built
/// without Kubernetes service discovery, so its `kubernetes_sd_configs` are checked as static
/// configs; the relabelling, the jobs and `rule_files` are checked as written.
#[test]
fn promtool_checks_the_example_scrape_config() {
    let text =
        std::fs::read_to_string(monitoring_dir().join("prometheus.yaml")).expect("read prometheus.yaml");
    let sd = "kubernetes_sd_configs:\n      - role: pod";
    assert_eq!(text.matches(sd).count(), 2, "both jobs discover pods:\n{text}");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("prometheus.yaml"),
        text.replace(sd, "static_configs:\n      - targets: []"),
    )
    .expect("write");
    std::fs::copy(
        monitoring_dir().join("alerts.yaml"),
        dir.path().join("alerts.yaml"),
    )
    .expect("copy");
    let (ok, said) = promtool(dir.path(), &["check", "config", "prometheus.yaml"]);
    assert!(ok, "promtool check config:\n{said}");
    assert!(said.contains("SUCCESS: 4 rules found"), "{said}");
}

/// `promtool test rules` passes on the shipped rules, and fails on each of these breakages of
/// them: every alert's unit tests can tell a right rule from a wrong one.
#[test]
fn promtool_unit_tests_pass_and_catch_broken_rules() {
    let dir = monitoring_dir();
    let (ok, said) = promtool(&dir, &["test", "rules", "alerts.test.yaml"]);
    assert!(ok, "promtool test rules alerts.test.yaml:\n{said}");

    let rules = std::fs::read_to_string(dir.join("alerts.yaml")).expect("read alerts.yaml");
    let tests = std::fs::read_to_string(dir.join("alerts.test.yaml")).expect("read alerts.test.yaml");
    // (the alert, what in its rule (every occurrence), becomes what, which unit test catches it)
    let breakages: &[(&str, &str, &str, &str)] = &[
        (
            "CohortTrackErrorRateAboveProduction",
            "0.01\n",
            "0.001\n",
            "no margin: billing's canary, half a point above production, fires",
        ),
        (
            "CohortTrackErrorRateAboveProduction",
            ">= 100",
            ">= 10",
            "no traffic floor: internal, 15 answers in 5 minutes, fires",
        ),
        (
            "CohortTrackErrorRateAboveProduction",
            "track!~\"production|none\"",
            "track!=\"production\"",
            "requests no track took counted as a track's",
        ),
        (
            "CohortTrackErrorRateAboveProduction",
            "> on (namespace, service) group_left ()",
            "> on (namespace) group_left ()",
            "production's rate not per service",
        ),
        (
            "CohortTrackErrorRateAboveProduction",
            "for: 5m",
            "for: 0m",
            "fires at once",
        ),
        (
            "CohortRoutersShortOfReplicas",
            "0 * label_replace(",
            "1000 * label_replace(",
            "a service with no router scraped at all is not caught",
        ),
        (
            "CohortRoutersShortOfReplicas",
            "(up{job=\"cohort-router\"} == 1)",
            "(up{job=\"cohort-router\"})",
            "routers scraped down counted as up",
        ),
        (
            "CohortRoutersShortOfReplicas",
            "- on (namespace, service) group_left ()",
            "- on (service) group_left ()",
            "replicas not compared per namespace",
        ),
        (
            "CohortRoutersShortOfReplicas",
            "for: 10m",
            "for: 1m",
            "fires during a rolling update's minutes",
        ),
        (
            "CohortAgentNotPolling",
            "> 600",
            "> 6000",
            "a stale agent is not caught",
        ),
        ("CohortAgentNotPolling", "for: 5m", "for: 0m", "fires at once"),
        (
            "CohortAgentDown",
            "absent(up{job=\"cohort-agent\"} == 1)",
            "absent(up{job=\"cohort-agent\"})",
            "an agent scraped down counted as there",
        ),
    ];
    let work = tempfile::tempdir().expect("tempdir");
    std::fs::write(work.path().join("alerts.test.yaml"), &tests).expect("write tests");
    for (alert, from, to, why) in breakages {
        let start = rules
            .find(&format!("- alert: {alert}\n"))
            .unwrap_or_else(|| panic!("{alert} in alerts.yaml"));
        let end = rules[start + 1..]
            .find("- alert: ")
            .map_or(rules.len(), |n| start + 1 + n);
        let rule = &rules[start..end];
        assert!(
            rule.contains(from),
            "`{from}` is in {alert}'s rule (the breakage must change something)"
        );
        let broken = format!("{}{}{}", &rules[..start], rule.replace(from, to), &rules[end..]);
        std::fs::write(work.path().join("alerts.yaml"), broken).expect("write broken rules");
        let (ok, said) = promtool(work.path(), &["test", "rules", "alerts.test.yaml"]);
        assert!(
            !ok,
            "{alert} with `{from}` made `{to}` ({why}) still passes its unit tests:\n{said}"
        );
        // Failed on the rule's own tests, not on something else.
        assert!(
            said.contains(alert) || said.contains("error"),
            "{alert}, {why}:\n{said}"
        );
    }
}

/// A backend answering by path: `/fail` 500, `/drop` closes the connection without an answer
/// (the router's upstream `response` error, a 502), anything else 200 after `delay_ms`.
fn backend(name: &'static str, delay_ms: u64) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let status = if head.starts_with(b"GET /drop ") {
                    return;
                } else if head.starts_with(b"GET /fail ") {
                    "500 Internal Server Error"
                } else {
                    std::thread::sleep(Duration::from_millis(delay_ms));
                    "200 OK"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                    name.len()
                );
            });
        }
    });
    addr
}

/// One request, a connection of its own; its status (0: no answer).
fn request(addr: SocketAddr, path: &str, cohort: Option<&str>) -> u16 {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let header = cohort
        .map(|c| format!("X-Traffic-Group: {c}\r\n"))
        .unwrap_or_default();
    if write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{header}Connection: close\r\n\r\n"
    )
    .is_err()
    {
        return 0;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// account-service with internal, canary and production: INTERNAL all to internal, FREE half
/// to canary, everybody else to production.
fn router_config(trusted: bool, internal: SocketAddr, canary: SocketAddr, production: SocketAddr) -> String {
    let trusted = if trusted {
        "trusted_peers: [127.0.0.0/8]\n"
    } else {
        ""
    };
    format!(
        "service: account-service\n{trusted}tracks:\n\
         \x20 - name: internal\n    version: 1.17.0\n    backends: [\"{internal}\"]\n\
         \x20 - name: canary\n    version: 1.16.0\n    backends: [\"{canary}\"]\n\
         \x20 - name: production\n    version: 1.15.0\n    backends: [\"{production}\"]\n\
         cohorts:\n\
         \x20 - cohort: INTERNAL\n    weights:\n      - track: internal\n        weight: 100%\n\
         \x20 - cohort: FREE\n    weights:\n      - track: canary\n        weight: 50%\n      - track: production\n        weight: 50%\n\
         default_route:\n  weights:\n    - track: production\n      weight: 100%\n"
    )
}

/// The agent's metric names as its admin port serves them, from its own registry.
fn agent_metric_names() -> Vec<String> {
    use cohort_agent::metrics::{ApplyLabels, Metrics, PollLabels};
    let metrics = Metrics::default();
    // Families encode nothing until a label set exists.
    metrics.polls.get_or_create(&PollLabels { result: "error" }).inc();
    metrics
        .applies
        .get_or_create(&ApplyLabels {
            service: "account-service".into(),
            result: "ok",
        })
        .inc();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &metrics.registry())
        .expect("encode the agent's metrics");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_dashboard_query_returns_series_from_real_routers_in_a_real_prometheus() {
    let began = Instant::now();
    let dashboard = dashboard();
    let queries = dashboard_queries(&dashboard);
    assert!(
        queries.len() >= 15,
        "the dashboard's queries were found: {queries:?}"
    );
    // Importable anywhere: the data source is a variable of type prometheus, used by every
    // panel and target.
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("template variables");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("variable {name}"))
    };
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    let text = dashboard.to_string();
    assert!(
        !text.contains("\"uid\":\"prometheus\"") && !text.contains("__inputs"),
        "no data source named outright"
    );

    // Two routers of one service (two replicas): the first trusts loopback callers to choose
    // their cohort, the second trusts nobody, so the cohort headers sent to it are counted as
    // spoofed.
    let (internal, canary, production) = (
        backend("internal", 2),
        backend("canary", 5),
        backend("production", 1),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut routers = vec![];
    for (name, trusted) in [("router-a", true), ("router-b", false)] {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, router_config(trusted, internal, canary, production)).expect("write config");
        routers.push((name, start_router(&["--config".as_ref(), path.as_os_str()])));
    }
    let targets: Vec<Target> = routers
        .iter()
        .map(|(name, r)| {
            Target::new(
                "cohort-router",
                r.admin,
                &[
                    ("service", "account-service"),
                    ("namespace", "shop"),
                    ("pod", name),
                ],
            )
        })
        .collect();
    let prometheus = Prometheus::start(&targets);
    eprintln!(
        "Prometheus ready at {} after {:?}",
        prometheus.url,
        began.elapsed()
    );

    // Traffic until the end of the test: every cohort, some failing (500), some dropped by the
    // backend (502, an upstream error), on both routers.
    let stop = Arc::new(AtomicBool::new(false));
    let (a, b) = (routers[0].1.traffic, routers[1].1.traffic);
    let traffic = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut sent = 0u64;
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for (addr, path, cohort) in [
                    (a, "/", Some("FREE")),
                    (a, "/", Some("FREE")),
                    (a, "/fail", Some("FREE")),
                    (a, "/fail", Some("FREE")),
                    (a, "/", Some("INTERNAL")),
                    (a, "/fail", Some("INTERNAL")),
                    (a, "/", None),
                    (b, "/", Some("INTERNAL")),
                    (b, "/", None),
                ] {
                    request(addr, path, cohort);
                    sent += 1;
                }
                if round.is_multiple_of(4) {
                    for cohort in ["FREE", "FREE", "INTERNAL"] {
                        request(a, "/drop", Some(cohort));
                        sent += 1;
                    }
                }
                round += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            sent
        })
    };
    // A config reload on each router (SIGHUP: the file read again).
    for (_, r) in &routers {
        let ok = Command::new("kill")
            .args(["-HUP", &r.child.id().to_string()])
            .status()
            .expect("kill -HUP")
            .success();
        assert!(ok, "SIGHUP to the router");
    }

    // Both routers scraped, and rates over the panels' window exist.
    let wait = Duration::from_secs(60);
    prometheus.wait_for_series(r#"count(up{job="cohort-router"} == 1) == 2"#, wait);
    prometheus.wait_for_series(
        r#"sum(rate(cohort_router_upstream_errors_total{job="cohort-router"}[10s])) > 0"#,
        wait,
    );
    prometheus.wait_for_series(
        r#"rate(cohort_router_spoofed_cohort_headers_total{pod="router-b"}[10s]) > 0"#,
        wait,
    );
    prometheus.wait_for_series(r#"cohort_router_reloads_total{result="ok"} > 0"#, wait);
    eprintln!("routers scraped with traffic after {:?}", began.elapsed());

    // The template variables' label_values(selector, label) find values.
    for name in ["service", "track"] {
        let definition = variable(name)["definition"]
            .as_str()
            .expect("definition")
            .to_string();
        let inner = definition
            .strip_prefix("label_values(")
            .and_then(|d| d.strip_suffix(')'))
            .expect("label_values(selector, label)");
        let (selector, label) = inner.rsplit_once(',').expect("selector, label");
        let values = prometheus.query(&format!(
            "count by ({}) ({})",
            label.trim(),
            substitute(selector, "account-service", ".*")
        ));
        let found: Vec<&str> = values
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["metric"][label.trim()].as_str())
            .collect();
        match name {
            "service" => assert_eq!(found, ["account-service"], "{definition}"),
            _ => {
                for track in ["internal", "canary", "production"] {
                    assert!(found.contains(&track), "{definition} finds {track}: {found:?}");
                }
            }
        }
    }

    // Every query, for one service and one track, several tracks and all of them.
    let agent_names = agent_metric_names();
    let mut failures = vec![];
    let mut checked = 0;
    for (title, expr) in &queries {
        if expr.contains("cohort_agent_") {
            for name in metric_names(expr) {
                if !agent_names.contains(&name) {
                    failures.push(format!(
                        "{title}: {name} is not a metric the agent exports ({agent_names:?})"
                    ));
                }
            }
            if let Err(e) = prometheus.try_query(&substitute(expr, "account-service", ".*")) {
                failures.push(format!("{title}: {expr}: {e}"));
            }
            continue;
        }
        for track in ["canary", "(canary|production)", ".*"] {
            let query = substitute(expr, "account-service", track);
            match prometheus.try_query_for_series(&query, Duration::from_secs(15)) {
                Ok(r) if is_empty(&r) => failures.push(format!("{title}: no series for {query}")),
                Ok(_) => checked += 1,
                Err(e) => failures.push(format!("{title}: {query}: {e}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "dashboard queries that failed:\n{}\ntargets: {}",
        failures.join("\n"),
        prometheus.targets_health()
    );
    eprintln!(
        "{checked} dashboard queries returned series ({} panels' targets) after {:?}",
        queries.len(),
        began.elapsed()
    );

    // What the panels show is what was sent: the canary fails (a third of FREE's requests
    // are /fail) and its error rate is above zero; the second router counted spoofed headers.
    let error_rate = queries
        .iter()
        .find(|(t, _)| t.starts_with("Error rate"))
        .map(|(_, e)| substitute(e, "account-service", "canary"))
        .expect("an error-rate panel");
    let value: f64 = prometheus.query(&error_rate)[0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("a number");
    assert!(value > 0.1 && value < 0.9, "canary's error rate {value}");

    // Every alert's expression parses and runs against the same data (most are quiet here).
    let rules = alert_rules();
    let exprs = alert_exprs(&rules);
    assert_eq!(exprs.len(), rules.matches("- alert: ").count(), "{exprs:#?}");
    for expr in &exprs {
        prometheus.query(expr);
    }
    // No agent is scraped here: the agent-down alert's expression says so.
    let agent_down = alert_expr(&rules, "CohortAgentDown");
    assert!(!is_empty(&prometheus.query(&agent_down)), "{agent_down}");

    stop.store(true, Ordering::Relaxed);
    let sent = traffic.join().expect("traffic");
    eprintln!("{sent} requests sent; done after {:?}", began.elapsed());
}

/// The harness's stop: a stopped Prometheus answers no query.
#[test]
fn a_stopped_prometheus_answers_no_query() {
    let mut prometheus = Prometheus::start(&[]);
    assert!(!is_empty(&prometheus.query("vector(1)")));
    let bad = prometheus.try_query("sum(");
    assert!(bad.as_ref().is_err_and(|e| e.contains("parse")), "{bad:?}");
    prometheus.stop();
    assert!(prometheus.try_query("vector(1)").is_err());
}

/// What the scrape jobs and the replica alert assume of the objects `cohort render` makes: the
/// router Deployment of SERVICE is `SERVICE-router`, its pods carry the labels the job keeps and
/// takes `service` from, and the metrics are on a port named `admin`; the agent's install
/// (deploy/install.yaml) is labelled `app: cohort-agent` with its port named `admin` too.
#[test]
fn the_scrape_jobs_and_rules_match_what_render_makes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cohort = |cwd: &Path, args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_cohort"))
            .args(args)
            .current_dir(cwd)
            .output()
            .expect("run cohort");
        assert!(out.status.success(), "cohort {args:?}: {out:?}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    cohort(dir.path(), &["init", "releases"]);
    let rendered: serde_json::Value = serde_json::from_str(&cohort(
        &dir.path().join("releases"),
        &["render", "account-service", "-o", "json"],
    ))
    .expect("render's JSON");
    let router = rendered["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "account-service-router")
        .expect("the router Deployment is SERVICE-router, as CohortRoutersShortOfReplicas assumes");
    let labels = &router["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/managed-by"], "cohort", "{labels}");
    assert_eq!(labels["tier"], "router", "{labels}");
    assert_eq!(labels["app.kubernetes.io/part-of"], "account-service", "{labels}");
    let ports = &router["spec"]["template"]["spec"]["containers"][0]["ports"];
    assert!(
        ports
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["name"] == "admin"),
        "{ports}"
    );

    let scrape =
        std::fs::read_to_string(monitoring_dir().join("prometheus.yaml")).expect("read prometheus.yaml");
    for needed in [
        "source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_managed_by, __meta_kubernetes_pod_label_tier]\n        regex: cohort;router\n        action: keep",
        "source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_part_of]\n        target_label: service",
        "source_labels: [__meta_kubernetes_pod_container_port_name]\n        regex: admin\n        action: keep",
        "source_labels: [__meta_kubernetes_pod_label_app]\n        regex: cohort-agent\n        action: keep",
        "job_name: cohort-router",
        "job_name: cohort-agent",
    ] {
        assert!(scrape.contains(needed), "prometheus.yaml has\n{needed}");
    }
    let install =
        std::fs::read_to_string(repo_root().join("deploy/install.yaml")).expect("read install.yaml");
    let template = &install[install.find("template:").expect("the agent's pod template")..];
    assert!(template.contains("app: cohort-agent"), "{template}");
    assert!(template.contains("name: admin"), "{template}");
}

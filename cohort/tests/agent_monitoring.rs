//! The shipped dashboard's agent panels and the agent alerts (deploy/monitoring/) against a
//! real `cohort agent`: the agent runs against a real API server, pulling a real release repo
//! (`--git`, a repository in a temp dir), applies it, refuses an invalid revision and fails a
//! poll while the repository is away; a real Prometheus scrapes its admin port's `/metrics` as
//! job `cohort-agent` with the target labels deploy/monitoring/prometheus.yaml gives it
//! (`namespace`, `pod`), and every dashboard query of a `cohort_agent_*` metric returns series.
//! `CohortAgentNotPolling` and `CohortAgentDown` stay quiet for this freshly polling agent.
//!
//! Runs when `COHORT_E2E_KUBECONFIG` names a kubeconfig with rights to create namespaces (e.g.
//! the k8s-lab's), and is skipped, saying so, otherwise. Needs `kubectl`, `git` and
//! `prometheus` on PATH. The routers' panels are monitoring.rs's.
// Timings for whoever runs it, no text from outside: the binary's rule on printing
// (cohort/clippy.toml) is for what it shows operators.
#![allow(clippy::disallowed_macros)]

mod kube_common;
mod prom_common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kube_common::{Namespace, Running, git_commit, release_repo};
use prom_common::dashboard::{alert_expr, alert_rules, dashboard, dashboard_queries, substitute};
use prom_common::{Prometheus, Target, is_empty};

/// The first sample's value of a query's result, as a number.
fn value(result: &serde_json::Value) -> f64 {
    result[0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a number in {result}"))
}

#[test]
fn every_agent_panel_returns_series_from_a_real_agent_in_a_real_prometheus() {
    let Some(kc) = kube_common::kubeconfig("the dashboard's agent panels against a real agent") else {
        return;
    };
    let began = Instant::now();
    let queries: Vec<(String, String)> = dashboard_queries(&dashboard())
        .into_iter()
        .filter(|(_, expr)| expr.contains("cohort_agent_"))
        .collect();
    assert!(
        queries.len() >= 6,
        "the dashboard's agent queries were found: {queries:?}"
    );

    let ns = Namespace::new(&kc, "agent-metrics");
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path();
    let repo = release_repo(work, &ns.name, &kc);
    let mirror = work.join("mirror");
    let mut agent = Running::start(
        &[
            "agent",
            "--git",
            repo.to_str().expect("utf-8"),
            "--mirror-dir",
            mirror.to_str().expect("utf-8"),
            "--cluster",
            "eu-west",
            "--kubeconfig",
            kc.to_str().expect("utf-8"),
            "-n",
            &ns.name,
            "--interval",
            "1s",
            "--max-backoff",
            "2s",
            "--timeout",
            "90s",
            "--admin",
            "127.0.0.1:0",
        ],
        work,
    );
    let admin = agent.address_after("admin=");
    // As prometheus.yaml's job cohort-agent labels the agent's pod.
    let prometheus = Prometheus::start(&[Target::new(
        "cohort-agent",
        &admin,
        &[("namespace", &ns.name), ("pod", "cohort-agent-0")],
    )]);
    eprintln!(
        "agent admin at {admin}, Prometheus ready at {} after {:?}",
        prometheus.url,
        began.elapsed()
    );
    // Waits for `promql` to return series, saying what the agent logged if it does not.
    let wait = |promql: &str, secs: u64| -> serde_json::Value {
        let result = prometheus
            .try_query_for_series(promql, Duration::from_secs(secs))
            .unwrap_or_else(|e| panic!("{promql}: {e}"));
        assert!(
            !is_empty(&result),
            "`{promql}` returned nothing after {secs} s; targets: {}\nthe agent said:\n{}",
            prometheus.targets_health(),
            agent.said()
        );
        result
    };

    // The first poll applies the repo (and waits for its rollouts).
    wait(r#"up{job="cohort-agent"} == 1"#, 30);
    wait(
        r#"cohort_agent_applies_total{job="cohort-agent", service="account-service", result="ok"} > 0"#,
        150,
    );
    eprintln!("the agent applied the repo after {:?}", began.elapsed());

    // An invalid revision: refused and counted; then undone.
    let config_path = repo.join("cohort.yaml");
    let config = std::fs::read_to_string(&config_path).expect("cohort.yaml");
    std::fs::write(
        &config_path,
        config.replace("router:\n", "router:\n  bogus_key: 1\n"),
    )
    .expect("write");
    git_commit(&repo, "a bad edit");
    wait(
        r#"cohort_agent_invalid_revisions_total{job="cohort-agent"} > 0"#,
        30,
    );
    assert!(agent.said().contains("revision skipped"), "{}", agent.said());
    std::fs::write(&config_path, &config).expect("write");
    git_commit(&repo, "undo the bad edit");

    // The repository away for a while: a poll fails and is counted; back, the polls succeed.
    let away = work.join("releases-away");
    std::fs::rename(&repo, &away).expect("move the repo away");
    wait(
        r#"cohort_agent_polls_total{job="cohort-agent", result="error"} > 0"#,
        30,
    );
    assert!(agent.said().contains("poll failed"), "{}", agent.said());
    std::fs::rename(&away, &repo).expect("move the repo back");
    let back = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    wait(
        &format!(r#"cohort_agent_last_poll_success_timestamp_seconds{{job="cohort-agent"}} > {back}"#),
        30,
    );
    wait(r#"cohort_agent_services_behind{job="cohort-agent"} == 0"#, 30);
    eprintln!(
        "an invalid revision refused and a failed poll after {:?}",
        began.elapsed()
    );

    // Every agent query of the dashboard returns series.
    let mut failures = vec![];
    for (title, expr) in &queries {
        let query = substitute(expr, "account-service", ".*");
        match prometheus.try_query_for_series(&query, Duration::from_secs(15)) {
            Ok(r) if is_empty(&r) => failures.push(format!("{title}: no series for {query}")),
            Ok(_) => {}
            Err(e) => failures.push(format!("{title}: {query}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "dashboard agent queries that returned nothing:\n{}\ntargets: {}\nthe agent's /metrics, scraped:\n{}",
        failures.join("\n"),
        prometheus.targets_health(),
        prometheus.query(r#"{job="cohort-agent", __name__=~"cohort_agent_.*"}"#)
    );
    // What the age panel shows is the agent's: a poll a moment ago.
    let age = queries
        .iter()
        .find(|(t, _)| t.starts_with("Time since"))
        .map(|(_, e)| substitute(e, "account-service", ".*"))
        .expect("the age-of-the-last-poll panel");
    let seconds = value(&prometheus.query(&age));
    assert!((0.0..30.0).contains(&seconds), "{age}: {seconds}");
    eprintln!(
        "{} dashboard agent queries returned series after {:?}",
        queries.len(),
        began.elapsed()
    );

    // The agent alerts are quiet: it polls, and it is up. The staleness the polling alert
    // compares is this agent's, per its namespace, and small (not an empty comparison).
    let rules = alert_rules();
    let not_polling = alert_expr(&rules, "CohortAgentNotPolling");
    assert!(is_empty(&prometheus.query(&not_polling)), "{not_polling}");
    let (staleness, threshold) = not_polling.rsplit_once(" > ").expect("EXPR > SECONDS");
    assert_eq!(threshold.trim(), "600", "{not_polling}");
    let stale = prometheus.query(staleness);
    assert_eq!(stale[0]["metric"]["namespace"], ns.name.as_str(), "{stale}");
    assert!(value(&stale) < 30.0, "{staleness}: {stale}");
    let down = alert_expr(&rules, "CohortAgentDown");
    assert!(is_empty(&prometheus.query(&down)), "{down}");

    assert!(
        matches!(agent.child.try_wait(), Ok(None)),
        "the agent still runs: {}",
        agent.said()
    );
    eprintln!("done after {:?}", began.elapsed());
}

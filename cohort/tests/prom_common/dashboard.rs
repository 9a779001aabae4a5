//! The shipped monitoring files (deploy/monitoring/) as the tests read them: the Grafana
//! dashboard's queries with its variables filled in as Grafana would, and the alert rules'
//! expressions. Shared by the router (monitoring.rs) and agent (agent_monitoring.rs) tests.

use std::path::PathBuf;

use super::repo_root;

/// deploy/monitoring/.
pub fn monitoring_dir() -> PathBuf {
    repo_root().join("deploy/monitoring")
}

/// grafana-dashboard.json, parsed.
pub fn dashboard() -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(monitoring_dir().join("grafana-dashboard.json"))
            .expect("read the dashboard"),
    )
    .expect("the dashboard is JSON")
}

/// alerts.yaml's text.
pub fn alert_rules() -> String {
    std::fs::read_to_string(monitoring_dir().join("alerts.yaml")).expect("read alerts.yaml")
}

/// Every `expr` of every panel's targets, rows' nested panels included: (panel title, expr).
pub fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((title.clone(), expr.to_string()));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = vec![];
    walk(&dashboard["panels"], &mut out);
    out
}

/// Grafana's variables filled in: `$service` and `$track` as given (a value, or the regex of
/// several or all), the intervals as Grafana would for a 1 s scrape.
pub fn substitute(expr: &str, service: &str, track: &str) -> String {
    let mut e = expr.to_string();
    for (var, value) in [
        ("${datasource}", "prometheus"),
        ("$__rate_interval", "10s"),
        ("$__interval", "2s"),
        ("$__range", "1m"),
        ("${service}", service),
        ("$service", service),
        ("${track}", track),
        ("$track", track),
    ] {
        e = e.replace(var, value);
    }
    assert!(!e.contains('$'), "a variable this test does not fill in: {expr}");
    e
}

/// The `expr`s of alerts.yaml, in order: `expr: |` blocks (the lines indented deeper) and
/// one-line ones.
pub fn alert_exprs(rules: &str) -> Vec<String> {
    let lines: Vec<&str> = rules.lines().collect();
    let mut out = vec![];
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(rest) = line.trim_start().strip_prefix("expr:") {
            let rest = rest.trim();
            if rest == "|" || rest == ">" {
                let mut block = vec![];
                while i + 1 < lines.len()
                    && (lines[i + 1].trim().is_empty() || indent(lines[i + 1]) > indent(line))
                {
                    i += 1;
                    block.push(lines[i].trim());
                }
                out.push(block.join("\n"));
            } else {
                out.push(rest.to_string());
            }
        }
        i += 1;
    }
    out
}

/// The expression of the alert named `alert` in `rules` (alerts.yaml's text).
pub fn alert_expr(rules: &str, alert: &str) -> String {
    let start = rules
        .find(&format!("- alert: {alert}\n"))
        .unwrap_or_else(|| panic!("{alert} in alerts.yaml"));
    let end = rules[start + 1..]
        .find("- alert: ")
        .map_or(rules.len(), |n| start + 1 + n);
    alert_exprs(&rules[start..end])
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{alert} has an expr"))
}

/// The `cohort_*` metric names in a query.
pub fn metric_names(expr: &str) -> Vec<String> {
    let mut out = vec![];
    let mut rest = expr;
    while let Some(at) = rest.find("cohort_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        out.push(name);
    }
    out
}

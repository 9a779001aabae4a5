//! The fleet at a glance (`cohort status --fleet`): one line per cluster.

use cohort_core::printable::escape;

use crate::wire::{Fleet, FleetCluster, ServiceState};

/// Where one cluster stands, in a word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Standing {
    /// Every service runs the current revision and is healthy.
    InSync,
    /// It has not caught up with the current revision yet (or its report is older).
    Behind,
    /// An apply failed, the revision was refused, or a service is unhealthy.
    Failing,
    /// Its agent never reported.
    Unknown,
}

impl Standing {
    fn word(self) -> &'static str {
        match self {
            Standing::InSync => "in sync",
            Standing::Behind => "behind",
            Standing::Failing => "failing",
            Standing::Unknown => "no report",
        }
    }
}

/// Where `cluster` stands against the release repo's `revision`.
pub fn standing(cluster: &FleetCluster, revision: Option<&str>) -> Standing {
    let Some(report) = &cluster.report else {
        return Standing::Unknown;
    };
    if !report.problems.is_empty()
        || report.services.iter().any(|s| s.state == ServiceState::Failed)
        || report.health.iter().any(|h| !h.healthy)
    {
        return Standing::Failing;
    }
    let caught_up = report.seen_revision.as_deref() == revision
        && report
            .services
            .iter()
            .all(|s| s.state == ServiceState::Applied && s.applied_revision.as_deref() == revision);
    match caught_up {
        true => Standing::InSync,
        false => Standing::Behind,
    }
}

fn ago(then: Option<i64>, now: i64) -> String {
    match then {
        None => "never".into(),
        Some(t) => {
            let s = (now - t).max(0);
            match s {
                0..60 => format!("{s}s ago"),
                60..3600 => format!("{}m ago", s / 60),
                3600..86400 => format!("{}h ago", s / 3600),
                _ => format!("{}d ago", s / 86400),
            }
        }
    }
}

fn short(rev: Option<&str>) -> String {
    rev.map(|r| r.chars().take(8).collect())
        .unwrap_or_else(|| "-".into())
}

/// The table: cluster, standing, last poll and report, applied revision, services, and the
/// problems underneath each cluster that has some.
pub fn table(fleet: &Fleet, now: i64) -> String {
    let head = [
        "CLUSTER",
        "STATE",
        "LAST POLL",
        "LAST REPORT",
        "REVISION",
        "SERVICES",
        "HEALTH",
    ];
    let mut rows: Vec<[String; 7]> = vec![head.map(String::from)];
    let mut notes: Vec<Vec<String>> = vec![vec![]];
    for c in &fleet.clusters {
        let standing = standing(c, fleet.revision.as_deref());
        let (revision, services, health, mut problems) = match &c.report {
            None => ("-".into(), "-".into(), "-".into(), vec![]),
            Some(r) => {
                let applied = r
                    .services
                    .iter()
                    .filter(|s| s.state == ServiceState::Applied)
                    .count();
                let mut revs: Vec<&str> = r
                    .services
                    .iter()
                    .filter_map(|s| s.applied_revision.as_deref())
                    .collect();
                revs.sort_unstable();
                revs.dedup();
                let revision = match revs.as_slice() {
                    [one] => short(Some(one)),
                    [] => "-".into(),
                    many => format!("{} revisions", many.len()),
                };
                let unhealthy = r.health.iter().filter(|h| !h.healthy).count();
                let health = match (r.health.len(), unhealthy) {
                    (0, _) => "-".into(),
                    (_, 0) => "healthy".into(),
                    (n, u) => format!("{u}/{n} unhealthy"),
                };
                let mut problems: Vec<String> = r.problems.clone();
                for s in &r.services {
                    if let Some(e) = &s.error {
                        problems.push(format!("{}: {e}", s.name));
                    }
                }
                for h in r.health.iter().filter(|h| !h.healthy) {
                    for f in &h.findings {
                        problems.push(format!("{}: {f}", h.service));
                    }
                }
                (
                    revision,
                    format!("{applied}/{} applied", r.services.len()),
                    health,
                    problems,
                )
            }
        };
        if standing == Standing::Behind
            && let Some(r) = &c.report
            && r.seen_revision.as_deref() != fleet.revision.as_deref()
        {
            problems.push(format!(
                "has seen {}, the release repo is at {}",
                short(r.seen_revision.as_deref()),
                short(fleet.revision.as_deref())
            ));
        }
        rows.push([
            c.name.clone(),
            standing.word().into(),
            ago(c.last_poll, now),
            ago(c.last_report_at, now),
            revision,
            services,
            health,
        ]);
        notes.push(problems);
    }
    // What agents report is theirs to write: each cell and note is escaped (a control
    // character or line break in a report cannot move the cursor or forge a row) before the
    // columns are measured.
    let rows: Vec<[String; 7]> = rows
        .into_iter()
        .map(|row| row.map(|cell| escape(&cell).into_owned()))
        .collect();
    let notes: Vec<Vec<String>> = notes
        .into_iter()
        .map(|n| n.iter().map(|note| escape(note).into_owned()).collect())
        .collect();
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (row, notes) in rows.iter().zip(&notes) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        for n in notes {
            out.push_str("    ");
            out.push_str(n);
            out.push('\n');
        }
    }
    out.push_str(&format!(
        "release repo at {}\n",
        escape(&short(fleet.revision.as_deref()))
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Report, ServiceHealth, ServiceReport};

    fn cluster(name: &str, report: Option<Report>) -> FleetCluster {
        FleetCluster {
            name: name.into(),
            last_poll: Some(990),
            last_report_at: report.as_ref().map(|_| 940),
            report,
        }
    }

    fn report(seen: &str, applied: &str, state: ServiceState, healthy: bool) -> Report {
        Report {
            cluster: "x".into(),
            agent_version: "0.1.0".into(),
            at: 940,
            seen_revision: Some(seen.into()),
            services: vec![ServiceReport {
                name: "account-service".into(),
                applied_revision: Some(applied.into()),
                state,
                error: (state == ServiceState::Failed).then(|| "rollout timed out".into()),
            }],
            problems: vec![],
            counts: vec![],
            counts_missing: vec![],
            health: vec![ServiceHealth {
                service: "account-service".into(),
                healthy,
                findings: if healthy {
                    vec![]
                } else {
                    vec!["router 2/4 available".into()]
                },
            }],
        }
    }

    #[test]
    fn each_cluster_gets_a_line_with_its_standing_and_problems_underneath() {
        let fleet = Fleet {
            revision: Some("bbbbbbbbbbbb".into()),
            clusters: vec![
                cluster(
                    "eu-west",
                    Some(report(
                        "bbbbbbbbbbbb",
                        "bbbbbbbbbbbb",
                        ServiceState::Applied,
                        true,
                    )),
                ),
                cluster(
                    "us-east",
                    Some(report(
                        "aaaaaaaaaaaa",
                        "aaaaaaaaaaaa",
                        ServiceState::Applied,
                        true,
                    )),
                ),
                cluster(
                    "ap-south",
                    Some(report(
                        "bbbbbbbbbbbb",
                        "aaaaaaaaaaaa",
                        ServiceState::Failed,
                        false,
                    )),
                ),
                cluster("on-prem", None),
            ],
        };
        let standings: Vec<Standing> = fleet
            .clusters
            .iter()
            .map(|c| standing(c, fleet.revision.as_deref()))
            .collect();
        assert_eq!(
            standings,
            [
                Standing::InSync,
                Standing::Behind,
                Standing::Failing,
                Standing::Unknown
            ]
        );
        let text = table(&fleet, 1000);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("CLUSTER   STATE"), "{text}");
        assert!(
            lines[1]
                .starts_with("eu-west   in sync    10s ago    1m ago       bbbbbbbb  1/1 applied  healthy"),
            "{text}"
        );
        assert!(
            text.contains("    has seen aaaaaaaa, the release repo is at bbbbbbbb"),
            "{text}"
        );
        assert!(text.contains("    account-service: rollout timed out"), "{text}");
        assert!(
            text.contains("    account-service: router 2/4 available"),
            "{text}"
        );
        assert!(text.contains("1/1 unhealthy"), "{text}");
        assert!(text.contains("on-prem   no report  10s ago    never"), "{text}");
        assert!(text.ends_with("release repo at bbbbbbbb\n"), "{text}");
    }
}

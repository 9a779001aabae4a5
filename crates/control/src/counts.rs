//! The routers' counts that agents report, kept for a while so that the autopilot can read
//! every cluster's sum (`GET /v1/counts?after=`), the way it reads one router's
//! `/stats?after=`: each arrival gets a mark, and a reader asks for what came after the last
//! mark it saw. Pure: the server gives it the clock.

use std::collections::{BTreeMap, VecDeque};

use cohort_judge::{LATENCY_BOUNDS_MS, WindowStats};

use crate::wire::Counted;

/// How long counts are kept: a reader that comes back later than this has missed some.
pub const KEEP_SECONDS: i64 = 15 * 60;
/// The most arrivals kept, whatever their age (a bound on memory: each is one service's
/// counts from one cluster).
pub const MAX_KEPT: usize = 20_000;
/// The most series one service's counts may hold (tracks × versions × cohorts).
pub const MAX_SERIES: usize = 1_000;

/// Counts as they arrived.
#[derive(Debug, Default)]
pub struct CountLog {
    entries: VecDeque<Entry>,
    last_mark: u64,
}

#[derive(Debug)]
struct Entry {
    mark: u64,
    received_at: i64,
    stats: WindowStats,
}

/// Why a report's counts are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("counts[{index}] ({service}): {why}")]
pub struct BadCounts {
    /// Its place in the report's `counts`, from 0.
    pub index: usize,
    /// The service it says.
    pub service: String,
    /// What is wrong.
    pub why: String,
}

/// Checks a report's counts: each of a service the cluster runs (`may_run`), for the same
/// service as it says, in the routers' latency buckets, and of a bounded size.
pub fn check(counts: &[Counted], may_run: impl Fn(&str) -> bool) -> Result<(), BadCounts> {
    for (index, c) in counts.iter().enumerate() {
        let bad = |why: String| BadCounts {
            index,
            service: c.service.clone(),
            why,
        };
        if !may_run(&c.service) {
            return Err(bad("this cluster does not run that service".into()));
        }
        if c.stats.service != c.service {
            return Err(bad(format!("its stats are of service {:?}", c.stats.service)));
        }
        if c.stats.latency_bounds_ms != LATENCY_BOUNDS_MS {
            return Err(bad(
                "its latency buckets are not the routers' (run one cohort version)".into(),
            ));
        }
        if c.stats.series.len() > MAX_SERIES {
            return Err(bad(format!("more than {MAX_SERIES} series")));
        }
        if let Some(s) = c
            .stats
            .series
            .iter()
            .find(|s| s.counts.latency.len() != LATENCY_BOUNDS_MS.len() + 1)
        {
            return Err(bad(format!(
                "series {}/{}/{} has {} latency buckets, not {}",
                s.track,
                s.version,
                s.cohort,
                s.counts.latency.len(),
                LATENCY_BOUNDS_MS.len() + 1
            )));
        }
    }
    Ok(())
}

impl CountLog {
    /// Keeps `counts` (already [`check`]ed) as arrived at `now_ms` (milliseconds since the
    /// epoch). Marks grow with the clock, so a reader's mark from before a restart of the
    /// server still reads everything that came after it.
    pub fn add(&mut self, now_ms: u64, counts: Vec<Counted>) {
        for c in counts {
            self.last_mark = (self.last_mark + 1).max(now_ms);
            self.entries.push_back(Entry {
                mark: self.last_mark,
                received_at: (now_ms / 1000) as i64,
                stats: c.stats,
            });
        }
        while self.entries.len() > MAX_KEPT {
            self.entries.pop_front();
        }
    }

    /// Forgets what arrived more than [`KEEP_SECONDS`] before `now`.
    pub fn prune(&mut self, now: i64) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.received_at + KEEP_SECONDS < now)
        {
            self.entries.pop_front();
        }
    }

    /// Per service, the counts that arrived after `after` (all that is kept without it),
    /// summed; and the mark they end at.
    pub fn after(&self, after: Option<u64>) -> (u64, Vec<WindowStats>) {
        let from = after.unwrap_or(0);
        let mut sums: BTreeMap<String, WindowStats> = BTreeMap::new();
        for e in self.entries.iter().filter(|e| e.mark > from) {
            match sums.get_mut(&e.stats.service) {
                // Checked on arrival: same service, same buckets; cannot fail.
                Some(sum) => {
                    let _ = sum.merge(e.stats.clone());
                }
                None => {
                    sums.insert(e.stats.service.clone(), e.stats.clone());
                }
            }
        }
        (from.max(self.last_mark), sums.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_judge::{Counts, Series};

    fn counted(service: &str, requests: u64) -> Counted {
        Counted {
            service: service.into(),
            stats: WindowStats {
                service: service.into(),
                window_seconds: 30,
                latency_bounds_ms: LATENCY_BOUNDS_MS.to_vec(),
                series: vec![Series {
                    track: "canary".into(),
                    version: "1.2.0".into(),
                    cohort: "FREE".into(),
                    seconds: 30,
                    counts: Counts {
                        requests,
                        errors: 0,
                        latency: vec![0; LATENCY_BOUNDS_MS.len() + 1],
                    },
                }],
                until: 1,
            },
        }
    }

    fn requests(stats: &[WindowStats], service: &str) -> u64 {
        stats
            .iter()
            .filter(|s| s.service == service)
            .flat_map(|s| &s.series)
            .map(|s| s.counts.requests)
            .sum()
    }

    #[test]
    fn clusters_add_up_and_a_reader_gets_each_arrival_once() {
        let mut log = CountLog::default();
        log.add(1_000_000, vec![counted("shop", 10), counted("cart", 1)]);
        log.add(1_000_000, vec![counted("shop", 5)]);
        let (mark, all) = log.after(None);
        assert_eq!(requests(&all, "shop"), 15);
        assert_eq!(requests(&all, "cart"), 1);
        let (again, nothing) = log.after(Some(mark));
        assert_eq!(again, mark);
        assert!(nothing.is_empty());
        log.add(1_000_500, vec![counted("shop", 7)]);
        let (_, new) = log.after(Some(mark));
        assert_eq!(requests(&new, "shop"), 7);
        // A reader's mark from before a restart: what arrived since is newer.
        let mut restarted = CountLog::default();
        restarted.add(2_000_000, vec![counted("shop", 3)]);
        assert_eq!(requests(&restarted.after(Some(mark)).1, "shop"), 3);
    }

    #[test]
    fn old_counts_are_forgotten_and_memory_is_bounded() {
        let mut log = CountLog::default();
        log.add(1_000_000, vec![counted("shop", 10)]);
        log.add((1_000 + KEEP_SECONDS as u64) * 1000, vec![counted("shop", 1)]);
        log.prune(1_001 + KEEP_SECONDS);
        assert_eq!(requests(&log.after(None).1, "shop"), 1);
        for i in 0..(MAX_KEPT + 10) {
            log.add(3_000_000 + i as u64, vec![counted("shop", 1)]);
        }
        assert_eq!(log.entries.len(), MAX_KEPT);
    }

    #[test]
    fn counts_of_another_service_or_other_buckets_are_refused_with_where() {
        let ok = counted("shop", 1);
        assert!(check(std::slice::from_ref(&ok), |_| true).is_ok());
        let err = check(std::slice::from_ref(&ok), |s| s == "cart").expect_err("not its service");
        assert_eq!(
            err.to_string(),
            "counts[0] (shop): this cluster does not run that service"
        );
        let mut lying = ok.clone();
        lying.stats.service = "cart".into();
        assert!(
            check(&[ok.clone(), lying], |_| true)
                .expect_err("mismatch")
                .to_string()
                .starts_with("counts[1] (shop)")
        );
        let mut buckets = ok.clone();
        buckets.stats.latency_bounds_ms.pop();
        assert!(check(&[buckets], |_| true).is_err());
        let mut short = ok;
        short.stats.series[0].counts.latency.pop();
        assert!(
            check(&[short], |_| true)
                .expect_err("short")
                .why
                .contains("latency buckets")
        );
    }
}

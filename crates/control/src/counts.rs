//! The routers' counts that agents report, kept for a while so that the autopilot can read
//! every cluster's sum (`GET /v1/counts?after=`), the way it reads one router's
//! `/stats?after=`: each arrival gets a mark, and a reader asks for what came after the last
//! mark it saw. Pure: the server gives it the clock.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use cohort_judge::{Counts, LATENCY_BOUNDS_MS, Series, WindowStats};

use crate::wire::Counted;

/// How long counts are kept: a reader that comes back later than this has missed some.
pub const KEEP_SECONDS: i64 = 15 * 60;
/// The most series kept in all, whatever their age (a bound on memory: about 250 bytes each).
pub const MAX_SERIES_KEPT: usize = 200_000;
/// The most series one service's counts may hold (tracks × versions × cohorts).
pub const MAX_SERIES: usize = 1_000;
/// The largest count taken (2^53: more requests than any router serves in a report's span,
/// and what every JSON reader holds exactly).
pub const MAX_COUNT: u64 = 1 << 53;

/// Counts as they arrived.
#[derive(Debug)]
pub struct CountLog {
    /// When this log began (milliseconds since the epoch): a reader's mark from another
    /// log (before the server restarted) means nothing here.
    epoch: u64,
    entries: VecDeque<Entry>,
    series_kept: usize,
    last_mark: u64,
    /// The newest mark dropped before its time (over [`MAX_SERIES_KEPT`]) or pruned.
    dropped_through: u64,
}

#[derive(Debug)]
struct Entry {
    mark: u64,
    received_at: i64,
    stats: WindowStats,
}

/// Per (track, version, cohort): the counts and the longest span seen.
type SeriesSums<'a> = BTreeMap<(&'a str, &'a str, &'a str), (Counts, u64)>;

/// What a reader gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    /// Where it ends: the next read asks for what came after this.
    pub until: u64,
    /// The log's epoch.
    pub epoch: u64,
    /// Per service, the counts summed.
    pub services: Vec<WindowStats>,
    /// Whether all that arrived after the reader's mark is still here.
    pub complete: bool,
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

/// Checks a report's counts: each of a service the cluster runs (`may_run`) and given once,
/// for the same service as it says, in the routers' latency buckets, of a bounded size, with
/// no more errors than requests and no count over [`MAX_COUNT`]. The counts that pass, and
/// why each other one was refused.
pub fn check(counts: Vec<Counted>, may_run: impl Fn(&str) -> bool) -> (Vec<Counted>, Vec<BadCounts>) {
    let mut seen = BTreeSet::new();
    let mut taken = vec![];
    let mut refused = vec![];
    for (index, c) in counts.into_iter().enumerate() {
        match problem(&c, &may_run, &mut seen) {
            None => taken.push(c),
            Some(why) => refused.push(BadCounts {
                index,
                service: c.service,
                why,
            }),
        }
    }
    (taken, refused)
}

fn problem(c: &Counted, may_run: &impl Fn(&str) -> bool, seen: &mut BTreeSet<String>) -> Option<String> {
    if !may_run(&c.service) {
        return Some("this cluster does not run that service".into());
    }
    if c.stats.service != c.service {
        return Some(format!("its stats are of service {:?}", c.stats.service));
    }
    if c.stats.latency_bounds_ms != LATENCY_BOUNDS_MS {
        return Some("its latency buckets are not the routers' (run one cohort version)".into());
    }
    if c.stats.series.len() > MAX_SERIES {
        return Some(format!("more than {MAX_SERIES} series"));
    }
    for s in &c.stats.series {
        let at = || format!("series {}/{}/{}", s.track, s.version, s.cohort);
        if s.counts.latency.len() != LATENCY_BOUNDS_MS.len() + 1 {
            return Some(format!(
                "{} has {} latency buckets, not {}",
                at(),
                s.counts.latency.len(),
                LATENCY_BOUNDS_MS.len() + 1
            ));
        }
        let counts = std::iter::once(s.counts.requests).chain(std::iter::once(s.counts.errors));
        if counts
            .chain(s.counts.latency.iter().copied())
            .any(|n| n > MAX_COUNT)
        {
            return Some(format!("{} has a count over {MAX_COUNT}", at()));
        }
        if s.counts.errors > s.counts.requests {
            return Some(format!("{} has more errors than requests", at()));
        }
    }
    // Once per service: a second would count its requests twice.
    if !seen.insert(c.service.clone()) {
        return Some("the service's counts are given twice".into());
    }
    None
}

/// A mark as readers see it: `EPOCH.MARK`, so that one from before a restart is told apart.
pub fn show_mark(epoch: u64, mark: u64) -> String {
    format!("{epoch}.{mark}")
}

/// A mark as [`show_mark`] writes it.
pub fn parse_mark(text: &str) -> Option<(u64, u64)> {
    let (epoch, mark) = text.split_once('.')?;
    let digits = |t: &str| !t.is_empty() && t.len() <= 19 && t.bytes().all(|b| b.is_ascii_digit());
    match digits(epoch) && digits(mark) {
        true => Some((epoch.parse().ok()?, mark.parse().ok()?)),
        false => None,
    }
}

impl CountLog {
    /// An empty log begun at `now_ms` (milliseconds since the epoch).
    pub fn new(now_ms: u64) -> CountLog {
        CountLog {
            epoch: now_ms,
            entries: VecDeque::new(),
            series_kept: 0,
            last_mark: 0,
            dropped_through: 0,
        }
    }

    /// Keeps `counts` (already [`check`]ed) as arrived at `now_ms`.
    pub fn add(&mut self, now_ms: u64, counts: Vec<Counted>) {
        for c in counts {
            self.last_mark += 1;
            self.series_kept += c.stats.series.len();
            self.entries.push_back(Entry {
                mark: self.last_mark,
                received_at: (now_ms / 1000) as i64,
                stats: c.stats,
            });
        }
        while self.series_kept > MAX_SERIES_KEPT {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.series_kept -= e.stats.series.len();
            self.dropped_through = e.mark;
        }
    }

    /// Forgets what arrived more than [`KEEP_SECONDS`] before `now`.
    pub fn prune(&mut self, now: i64) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.received_at + KEEP_SECONDS < now)
        {
            self.drop_oldest();
        }
    }

    /// Per service, the counts that arrived after `after` (all that is kept without it, or
    /// when the mark is of another epoch), summed.
    pub fn after(&self, after: Option<(u64, u64)>) -> Read {
        let from = match after {
            Some((epoch, mark)) if epoch == self.epoch => Some(mark),
            _ => None,
        };
        // Summed through maps: many arrivals of many series stay linear.
        let mut sums: BTreeMap<&str, (&WindowStats, SeriesSums<'_>)> = BTreeMap::new();
        for e in self.entries.iter().filter(|e| e.mark > from.unwrap_or(0)) {
            let (first, series) = sums
                .entry(e.stats.service.as_str())
                .or_insert((&e.stats, BTreeMap::new()));
            *first = match first.until >= e.stats.until {
                true => first,
                false => &e.stats,
            };
            for s in &e.stats.series {
                let key = (s.track.as_str(), s.version.as_str(), s.cohort.as_str());
                let (counts, seconds) = series.entry(key).or_insert_with(|| (Counts::default(), 0));
                counts.add(&s.counts);
                *seconds = (*seconds).max(s.seconds);
            }
        }
        let services = sums
            .into_values()
            .map(|(latest, series)| WindowStats {
                service: latest.service.clone(),
                window_seconds: latest.window_seconds,
                latency_bounds_ms: latest.latency_bounds_ms.clone(),
                series: series
                    .into_iter()
                    .map(|((track, version, cohort), (counts, seconds))| Series {
                        track: track.into(),
                        version: version.into(),
                        cohort: cohort.into(),
                        counts,
                        seconds,
                    })
                    .collect(),
                until: latest.until,
            })
            .collect();
        Read {
            until: self.last_mark.max(from.unwrap_or(0)),
            epoch: self.epoch,
            services,
            complete: from.is_none_or(|m| m >= self.dropped_through),
        }
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
        let mut log = CountLog::new(7);
        log.add(1_000_000, vec![counted("shop", 10), counted("cart", 1)]);
        log.add(1_000_000, vec![counted("shop", 5)]);
        let all = log.after(None);
        assert_eq!(requests(&all.services, "shop"), 15);
        assert_eq!(requests(&all.services, "cart"), 1);
        assert!(all.complete);
        let again = log.after(Some((7, all.until)));
        assert_eq!(again.until, all.until);
        assert!(again.services.is_empty());
        log.add(1_000_500, vec![counted("shop", 7)]);
        assert_eq!(requests(&log.after(Some((7, all.until))).services, "shop"), 7);
        // A mark of another log (the server restarted): everything this one holds.
        let mut restarted = CountLog::new(8);
        restarted.add(2_000_000, vec![counted("shop", 3)]);
        let read = restarted.after(Some((7, 1_000)));
        assert_eq!(requests(&read.services, "shop"), 3);
        assert!(read.complete);
        // Marks round-trip as readers see them, and nothing else is one.
        assert_eq!(parse_mark(&show_mark(8, 42)), Some((8, 42)));
        for bad in [
            "",
            "8",
            "8.",
            ".4",
            "8.4.2",
            "-1.2",
            "1.99999999999999999999",
            "a.b",
        ] {
            assert_eq!(parse_mark(bad), None, "{bad}");
        }
    }

    #[test]
    fn old_counts_are_forgotten_memory_is_bounded_and_a_reader_told_it_missed_some() {
        let mut log = CountLog::new(1);
        log.add(1_000_000, vec![counted("shop", 10)]);
        let first = log.after(None).until;
        log.add((1_000 + KEEP_SECONDS as u64) * 1000, vec![counted("shop", 1)]);
        log.prune(1_001 + KEEP_SECONDS);
        let read = log.after(None);
        assert_eq!(requests(&read.services, "shop"), 1);
        assert!(
            !log.after(Some((1, first - 1))).complete,
            "the first arrival was pruned unread"
        );
        assert!(log.after(Some((1, first))).complete);
        for i in 0..(MAX_SERIES_KEPT + 10) {
            log.add(3_000_000 + i as u64, vec![counted("shop", 1)]);
        }
        assert_eq!(log.series_kept, MAX_SERIES_KEPT);
        assert_eq!(log.entries.len(), MAX_SERIES_KEPT);
    }

    #[test]
    fn counts_that_cannot_be_used_are_refused_one_by_one_with_where() {
        let ok = counted("shop", 1);
        let (taken, refused) = check(vec![ok.clone()], |_| true);
        assert_eq!((taken.len(), refused.len()), (1, 0));
        let (_, refused) = check(vec![ok.clone()], |s| s == "cart");
        assert_eq!(
            refused[0].to_string(),
            "counts[0] (shop): this cluster does not run that service"
        );
        let mut lying = ok.clone();
        lying.stats.service = "cart".into();
        let mut buckets = ok.clone();
        buckets.stats.latency_bounds_ms.pop();
        let mut short = ok.clone();
        short.stats.series[0].counts.latency.pop();
        let mut huge = counted("cart", 1);
        huge.stats.series[0].counts.errors = u64::MAX - 3;
        let mut more_errors = counted("cart", 1);
        more_errors.stats.series[0].counts.errors = 2;
        let (taken, refused) = check(
            vec![ok.clone(), lying, buckets, short, ok, huge, more_errors],
            |_| true,
        );
        assert_eq!(taken.len(), 1, "only the first");
        let why: Vec<String> = refused.iter().map(ToString::to_string).collect();
        assert_eq!(why[0], "counts[1] (shop): its stats are of service \"cart\"");
        assert!(
            why[1].starts_with("counts[2] (shop): its latency buckets"),
            "{}",
            why[1]
        );
        assert!(why[2].contains("latency buckets, not"), "{}", why[2]);
        assert_eq!(why[3], "counts[4] (shop): the service's counts are given twice");
        assert!(why[4].contains("has a count over"), "{}", why[4]);
        assert!(why[5].contains("more errors than requests"), "{}", why[5]);
    }

    /// The regression this pins: counts added as they came could wrap around and cancel
    /// another cluster's errors.
    #[test]
    fn sums_saturate_rather_than_wrap() {
        let mut log = CountLog::new(1);
        let mut big = counted("shop", MAX_COUNT);
        big.stats.series[0].counts.errors = MAX_COUNT;
        for _ in 0..3000 {
            log.add(1_000_000, vec![big.clone()]);
        }
        let read = log.after(None);
        assert_eq!(requests(&read.services, "shop"), u64::MAX);
    }
}

//! Per-second counts of the last ten minutes, per track version and cohort: what the canary
//! judgement reads at `/stats?window=`, so no metrics store is needed to compare a track
//! with its baseline over a recent window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use cohort_judge::{Counts, LATENCY_BOUNDS_MS, Series, WindowStats};

/// Seconds kept: the longest window that can be asked for.
pub const SECONDS: u64 = 600;
const BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

#[derive(Clone, Copy)]
struct Slot {
    second: u64,
    requests: u32,
    errors: u32,
    latency: [u32; BUCKETS],
}

const EMPTY: Slot = Slot {
    second: u64::MAX,
    requests: 0,
    errors: 0,
    latency: [0; BUCKETS],
};

/// The counts of one track version serving one cohort: a ring of one-second slots, made on
/// the first request (a series that never sees traffic costs nothing).
#[derive(Default)]
pub struct Ring {
    slots: Mutex<Vec<Slot>>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ring")
    }
}

impl Ring {
    /// Counts a request answered at unix second `now`: an error if `error`, and its latency
    /// when the track answered.
    pub fn record(&self, now: u64, error: bool, latency_ms: Option<f64>) {
        // A poisoned lock only means another request panicked mid-count; counting goes on.
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.is_empty() {
            slots.resize(SECONDS as usize, EMPTY);
        }
        let slot = &mut slots[(now % SECONDS) as usize];
        if slot.second != now {
            *slot = EMPTY;
            slot.second = now;
        }
        slot.requests = slot.requests.saturating_add(1);
        slot.errors = slot.errors.saturating_add(u32::from(error));
        if let Some(ms) = latency_ms {
            let bucket = LATENCY_BOUNDS_MS
                .iter()
                .position(|b| ms <= *b)
                .unwrap_or(BUCKETS - 1);
            slot.latency[bucket] = slot.latency[bucket].saturating_add(1);
        }
    }

    /// The sum of the `window` seconds up to and including `now`, and how many of them had
    /// passed since the first request among them.
    pub fn sum(&self, now: u64, window: u64) -> (Counts, u64) {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut c = Counts {
            requests: 0,
            errors: 0,
            latency: vec![0; BUCKETS],
        };
        let from = now.saturating_sub(window.min(SECONDS)) + 1;
        let mut first = now + 1;
        for s in slots
            .iter()
            .filter(|s| s.second != u64::MAX && (from..=now).contains(&s.second))
        {
            first = first.min(s.second);
            c.requests += u64::from(s.requests);
            c.errors += u64::from(s.errors);
            for (a, b) in c.latency.iter_mut().zip(s.latency) {
                *a += u64::from(b);
            }
        }
        (c, now + 1 - first)
    }
}

/// `(track, version, cohort)`.
pub type Key = (String, String, String);

/// Every ring of the router, kept across reloads for the versions the config still runs.
#[derive(Default)]
pub struct Windows {
    rings: Mutex<HashMap<Key, Arc<Ring>>>,
}

impl Windows {
    /// The ring of `key`, made if new.
    pub fn ring(&self, key: Key) -> Arc<Ring> {
        let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(rings.entry(key).or_default())
    }

    /// Drops the rings of versions and cohorts a new config no longer has.
    pub fn retain(&self, keep: &[Key]) {
        let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        rings.retain(|k, _| keep.contains(k));
    }

    /// The last `window` seconds up to `now`, every series with traffic in it.
    pub fn stats(&self, service: &str, now: u64, window: u64) -> WindowStats {
        let rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let mut series: Vec<Series> = rings
            .iter()
            .map(|((track, version, cohort), ring)| {
                let (counts, seconds) = ring.sum(now, window);
                Series {
                    track: track.clone(),
                    version: version.clone(),
                    cohort: cohort.clone(),
                    counts,
                    seconds,
                }
            })
            .filter(|s| s.counts.requests > 0)
            .collect();
        series.sort_by(|a, b| (&a.track, &a.cohort).cmp(&(&b.track, &b.cohort)));
        WindowStats {
            service: service.to_string(),
            window_seconds: window.min(SECONDS),
            latency_bounds_ms: LATENCY_BOUNDS_MS.to_vec(),
            series,
            until: now,
        }
    }
}

/// The current unix second.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::{Ring, SECONDS, Windows};

    #[test]
    fn a_window_counts_only_its_own_seconds() {
        let ring = Ring::default();
        for s in 1_000..1_100 {
            ring.record(s, s % 10 == 0, Some(12.0));
        }
        let (last_minute, seconds) = ring.sum(1_099, 60);
        assert_eq!(seconds, 60);
        assert_eq!((last_minute.requests, last_minute.errors), (60, 6));
        assert_eq!(last_minute.latency[7], 60, "12 ms falls in the 10-15 ms bucket");
        // Ten minutes later every slot has been reused or is too old.
        ring.record(1_099 + SECONDS, false, None);
        assert_eq!(ring.sum(1_099 + SECONDS, SECONDS), {
            let (mut c, _) = Ring::default().sum(0, 1);
            c.requests = 1;
            (c, 1)
        });
    }

    #[test]
    fn reloads_keep_the_versions_still_running() {
        let w = Windows::default();
        let key = |v: &str| ("canary".to_string(), v.to_string(), "FREE".to_string());
        w.ring(key("1.0.0")).record(5, false, Some(1.0));
        w.ring(key("1.1.0")).record(5, true, Some(1.0));
        w.retain(&[key("1.1.0")]);
        let stats = w.stats("shop", 5, 60);
        assert_eq!(stats.series.len(), 1);
        assert_eq!(stats.series[0].version, "1.1.0");
        assert_eq!(stats.series[0].counts.errors, 1);
    }
}

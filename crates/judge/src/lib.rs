//! Canary judgement from the router's own counts, without a metrics store: the router keeps
//! per-second counts of requests, errors and latency per track and cohort (the shapes here),
//! and [`judge`] compares a track with its baseline over the same window and cohorts — a
//! one-sided two-proportion test with a tolerance margin for the error rate, Mann-Whitney U
//! over the latency histograms for speed — and passes only when enough requests were seen to
//! have caught the degradation it is set to catch.

pub mod gather;
pub mod normal;
pub mod sequential;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Upper bounds (milliseconds) of the router's latency buckets; a last bucket holds the rest.
pub const LATENCY_BOUNDS_MS: &[f64] = &[
    0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0,
    750.0, 1000.0, 2000.0, 5000.0,
];

/// What a router counted for one track and cohort.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Requests the track answered (or failed to).
    pub requests: u64,
    /// Of those, answered with a 5xx (from the track, or 502/504 for it from the router).
    pub errors: u64,
    /// Requests per latency bucket (`LATENCY_BOUNDS_MS.len() + 1` entries).
    pub latency: Vec<u64>,
}

impl Counts {
    /// Adds `other` in. Saturating: counts from elsewhere (another cluster's report) can
    /// never wrap a sum around and so hide requests or errors.
    pub fn add(&mut self, other: &Counts) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        if self.latency.len() < other.latency.len() {
            self.latency.resize(other.latency.len(), 0);
        }
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            *a = a.saturating_add(*b);
        }
    }
}

/// One series of a router's window: a track's version serving a cohort.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Series {
    /// The track.
    pub track: String,
    /// The version it runs.
    pub version: String,
    /// The cohort (`default` for everybody else).
    pub cohort: String,
    /// The counts.
    #[serde(flatten)]
    pub counts: Counts,
    /// Seconds from its first request in the window to the window's end: the time the
    /// counts took (a version deployed a minute ago has a minute of data in a 10m window).
    #[serde(default)]
    pub seconds: u64,
}

/// What one router (its admin `/stats?window=`) reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowStats {
    /// The service it routes for.
    pub service: String,
    /// The window's length in seconds.
    pub window_seconds: u64,
    /// The latency buckets' upper bounds.
    pub latency_bounds_ms: Vec<f64>,
    /// Every series with traffic in the window.
    pub series: Vec<Series>,
    /// The router's unix second the window ends with (included): where the next
    /// `/stats?after=` should start, so successive reads add up without overlap. 0 from
    /// routers older than it.
    #[serde(default)]
    pub until: u64,
}

/// Why windows of several routers cannot be added up.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum MergeError {
    /// Different services.
    #[error("the routers serve different services: {0} and {1}")]
    Service(String, String),
    /// Different latency buckets (routers of different cohort versions).
    #[error("the routers count latency in different buckets; run one cohort version")]
    Buckets,
}

impl WindowStats {
    /// Adds another router's window of the same service and buckets in.
    pub fn merge(&mut self, other: WindowStats) -> Result<(), MergeError> {
        if other.service != self.service {
            return Err(MergeError::Service(self.service.clone(), other.service));
        }
        if other.latency_bounds_ms != self.latency_bounds_ms {
            return Err(MergeError::Buckets);
        }
        self.window_seconds = self.window_seconds.max(other.window_seconds);
        self.until = self.until.max(other.until);
        for s in other.series {
            match self
                .series
                .iter_mut()
                .find(|m| (&m.track, &m.version, &m.cohort) == (&s.track, &s.version, &s.cohort))
            {
                Some(m) => {
                    m.counts.add(&s.counts);
                    m.seconds = m.seconds.max(s.seconds);
                }
                None => self.series.push(s),
            }
        }
        Ok(())
    }
}

/// How strict the judgement is.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Settings {
    /// Confidence of a failing verdict (0.95: a healthy canary fails at most 5% of the time).
    pub confidence: f64,
    /// Chance a passing verdict would have caught a degradation of the set size.
    pub power: f64,
    /// The error-rate increase to catch, as a ratio to the baseline's (2: twice as many).
    pub error_ratio: f64,
    /// ... or at least this much more in absolute terms (0.005: half a percentage point).
    pub min_error_difference: f64,
    /// An error rate this much above the baseline's is tolerated (0.001: a tenth of a point).
    pub error_margin: f64,
    /// A p50 or p99 this many times the baseline's, and significantly slower, fails.
    pub latency_ratio: f64,
    /// Fewest requests on each side before anything is said.
    pub min_requests: u64,
    /// Fail only past the always-valid boundary of [`sequential`], so that a growing sample
    /// looked at again and again (a running autopilot's sums) fails no more often than the
    /// confidence says; `false` is the single-look test, valid for one look only.
    pub sequential: bool,
}

/// The mixture width of the latency test, in units of the Mann-Whitney z per √information:
/// a 1.25× slower log-normal track of spread 0.5 drifts about 0.4; tuned a little below so
/// smaller slowdowns are not left to the end of time.
const LATENCY_TAU: f64 = 0.3;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            confidence: 0.95,
            power: 0.8,
            error_ratio: 2.0,
            min_error_difference: 0.005,
            error_margin: 0.001,
            latency_ratio: 1.25,
            min_requests: 50,
            sequential: true,
        }
    }
}

/// The outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Enough requests were seen, and the track is not worse than its baseline.
    Pass,
    /// The track is worse than its baseline, with the configured confidence.
    Fail,
    /// Too few requests to say.
    Inconclusive,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        })
    }
}

/// One side of the comparison.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Side {
    /// Requests.
    pub requests: u64,
    /// 5xx answers.
    pub errors: u64,
    /// errors / requests.
    pub error_rate: f64,
    /// Median latency, ms (interpolated within its bucket).
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

/// The error-rate test.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorTest {
    /// The statistic: (rate difference − margin) / its standard error.
    pub z: f64,
    /// One-sided p-value of "the track errs more than the baseline plus the margin".
    pub p_value: f64,
    /// Whether that is shown at the configured confidence.
    pub worse: bool,
}

/// The latency test.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyTest {
    /// Mann-Whitney U of the track over the baseline (pairs where the track was slower, ties
    /// counting half).
    pub u: f64,
    /// Its normal approximation, tie-corrected.
    pub z: f64,
    /// One-sided p-value of "the track is slower".
    pub p_value: f64,
    /// Track p50 / baseline p50.
    pub p50_ratio: f64,
    /// Track p99 / baseline p99.
    pub p99_ratio: f64,
    /// Significantly slower and by more than the tolerated ratio.
    pub worse: bool,
}

/// A verdict with its evidence.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Judgement {
    /// Pass, fail or inconclusive.
    pub verdict: Verdict,
    /// Why, in one line.
    pub summary: String,
    /// The cohorts compared (both sides served them in the window); empty when the two
    /// sides share none and all their traffic was compared.
    pub cohorts: Vec<String>,
    /// The track judged.
    pub track: Side,
    /// Its baseline.
    pub baseline: Side,
    /// The error-rate test.
    pub errors: ErrorTest,
    /// The latency test.
    pub latency: LatencyTest,
    /// Requests each side needs for a pass to mean something.
    pub needed_requests: u64,
    /// When inconclusive: how many more requests the track needs.
    pub more_requests: Option<u64>,
    /// ... and about how long that takes at its rate in the window.
    pub more_seconds: Option<u64>,
}

/// The `/stats` series of copies of `from`'s requests answered by `to` (traffic mirroring): its
/// own name, so no judgement of `to`'s own traffic ever counts them.
pub fn mirror_copies(to: &str, from: &str) -> String {
    format!("{to} (mirror of {from})")
}

/// The `/stats` series of `from`'s answers to the very requests copied to `to`: what the
/// copies are judged against.
pub fn mirror_sources(from: &str, to: &str) -> String {
    format!("{from} (mirrored to {to})")
}

/// Sums the series of `track` and of `baseline` over the cohorts both served (all their
/// cohorts when they share none); returns the two sums and the cohorts.
pub fn select(stats: &WindowStats, track: &str, baseline: &str) -> (Counts, Counts, Vec<String>) {
    let cohorts_of = |t: &str| -> BTreeSet<&str> {
        stats
            .series
            .iter()
            .filter(|s| s.track == t && s.counts.requests > 0)
            .map(|s| s.cohort.as_str())
            .collect()
    };
    let common: Vec<String> = cohorts_of(track)
        .intersection(&cohorts_of(baseline))
        .map(|c| c.to_string())
        .collect();
    let sum = |t: &str| {
        let mut c = Counts::default();
        for s in stats
            .series
            .iter()
            .filter(|s| s.track == t && (common.is_empty() || common.contains(&s.cohort)))
        {
            c.add(&s.counts);
        }
        c
    };
    (sum(track), sum(baseline), common)
}

/// The latency below which a share `q` of the requests fell, interpolated within its bucket.
pub fn quantile_ms(latency: &[u64], bounds: &[f64], q: f64) -> f64 {
    let total: u64 = latency.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let rank = q * total as f64;
    let mut seen = 0.0;
    for (i, &n) in latency.iter().enumerate() {
        let n = n as f64;
        if n > 0.0 && seen + n >= rank {
            let low = if i == 0 { 0.0 } else { bounds[i - 1] };
            // The last bucket is open: report its lower bound (a lower limit).
            let Some(&high) = bounds.get(i) else {
                return low;
            };
            return low + (high - low) * ((rank - seen) / n).clamp(0.0, 1.0);
        }
        seen += n;
    }
    bounds.last().copied().unwrap_or(0.0)
}

fn side(c: &Counts, bounds: &[f64]) -> Side {
    Side {
        requests: c.requests,
        errors: c.errors,
        error_rate: rate(c),
        p50_ms: quantile_ms(&c.latency, bounds, 0.5),
        p99_ms: quantile_ms(&c.latency, bounds, 0.99),
    }
}

fn rate(c: &Counts) -> f64 {
    match c.requests {
        0 => 0.0,
        n => c.errors as f64 / n as f64,
    }
}

/// One-sided two-proportion test of "the track's error rate exceeds the baseline's by more
/// than `margin`" (unpooled standard error, as the hypothesis is not equality).
pub fn error_test(track: &Counts, baseline: &Counts, settings: &Settings) -> ErrorTest {
    let (margin, alpha) = (settings.error_margin, 1.0 - settings.confidence);
    let (pt, pb) = (rate(track), rate(baseline));
    let var = |p: f64, n: u64| if n == 0 { 0.0 } else { p * (1.0 - p) / n as f64 };
    // A side with no variance yet (no errors at all) still has the uncertainty of its size:
    // as if half an error had been seen (a common continuity floor).
    let floor = |p: f64, n: u64| {
        if n == 0 {
            0.0
        } else if p == 0.0 || p == 1.0 {
            let q = 0.5 / n as f64;
            q * (1.0 - q) / n as f64
        } else {
            var(p, n)
        }
    };
    let se = (floor(pt, track.requests) + floor(pb, baseline.requests)).sqrt();
    let diff = pt - pb - margin;
    let z = if se > 0.0 { diff / se } else { 0.0 };
    let p_value = match settings.sequential {
        true => sequential::p_value(
            z,
            sequential::information(track.requests as f64, baseline.requests as f64),
            error_drift(pb, settings),
        ),
        false => normal::upper_tail(z),
    };
    ErrorTest {
        z,
        p_value,
        worse: p_value < alpha,
    }
}

/// The rate the error test is set to catch above a baseline rate `p1`: `error_ratio` times
/// it, or `min_error_difference` more, whichever is more.
fn alternative(p1: f64, settings: &Settings) -> f64 {
    (p1 * settings.error_ratio)
        .max(p1 + settings.min_error_difference)
        .min(1.0)
}

/// The error test's z drift per unit of information at the alternative (two equal samples),
/// which is also the mixture width its sequential boundary is tuned for.
fn error_drift(baseline_rate: f64, settings: &Settings) -> f64 {
    let p1 = baseline_rate.clamp(0.0, 0.5);
    let p2 = alternative(p1, settings);
    let spread = (p1 * (1.0 - p1) + p2 * (1.0 - p2)).sqrt();
    match spread > 0.0 {
        true => ((p2 - p1 - settings.error_margin) * std::f64::consts::SQRT_2 / spread).max(0.0),
        false => 0.0,
    }
}

/// Mann-Whitney U of `track` over `baseline` on histogram counts (values in one bucket tie),
/// with the tie-corrected normal approximation and a continuity correction.
pub fn latency_test(track: &Counts, baseline: &Counts, bounds: &[f64], settings: &Settings) -> LatencyTest {
    let buckets = track.latency.len().max(baseline.latency.len());
    let at = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0) as f64;
    let (nt, nb) = (
        track.latency.iter().sum::<u64>() as f64,
        baseline.latency.iter().sum::<u64>() as f64,
    );
    let mut u = 0.0;
    let mut below_b = 0.0;
    let mut ties = 0.0;
    for i in 0..buckets {
        let (t, b) = (at(&track.latency, i), at(&baseline.latency, i));
        u += t * (below_b + b / 2.0);
        below_b += b;
        let n = t + b;
        ties += n * n * n - n;
    }
    let n = nt + nb;
    let mean = nt * nb / 2.0;
    let var = if n > 1.0 {
        nt * nb / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)))
    } else {
        0.0
    };
    // Upper tail with a continuity correction of half a pair.
    let z = if var > 0.0 {
        (u - mean - 0.5) / var.sqrt()
    } else {
        0.0
    };
    let p_value = match settings.sequential {
        true => sequential::p_value(z, sequential::information(nt, nb), LATENCY_TAU),
        false => normal::upper_tail(z),
    };
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            a / b
        } else if a > 0.0 {
            f64::INFINITY
        } else {
            1.0
        }
    };
    let p50_ratio = ratio(
        quantile_ms(&track.latency, bounds, 0.5),
        quantile_ms(&baseline.latency, bounds, 0.5),
    );
    let p99_ratio = ratio(
        quantile_ms(&track.latency, bounds, 0.99),
        quantile_ms(&baseline.latency, bounds, 0.99),
    );
    let alpha = 1.0 - settings.confidence;
    LatencyTest {
        u,
        z,
        p_value,
        p50_ratio,
        p99_ratio,
        // A p99 read off fewer than ten requests above it is noise, not evidence.
        worse: p_value < alpha
            && (p50_ratio >= settings.latency_ratio
                || (p99_ratio >= settings.latency_ratio && nt.min(nb) >= P99_EVIDENCE)),
    }
}

/// Requests with a latency a side needs before its p99 counts as evidence of slowness.
pub const P99_EVIDENCE: f64 = 1000.0;

/// Requests each side needs so that an error rate `error_ratio` times the baseline's (or
/// `min_error_difference` above it) would be caught with `power`, at `confidence`.
pub fn needed_requests(baseline_rate: f64, settings: &Settings) -> u64 {
    let p1 = baseline_rate.clamp(0.0, 0.5);
    let p2 = alternative(p1, settings);
    let effect = p2 - p1 - settings.error_margin;
    if settings.sequential {
        let drift = error_drift(p1, settings);
        let alpha = 1.0 - settings.confidence;
        return sequential::needed_requests(drift, drift, alpha, settings.power).max(settings.min_requests);
    }
    if effect <= 0.0 {
        return u64::MAX;
    }
    let za = normal::quantile(settings.confidence);
    let zb = normal::quantile(settings.power);
    let spread = (p1 * (1.0 - p1) + p2 * (1.0 - p2)).sqrt();
    let n = ((za + zb) * spread / effect).powi(2);
    (n.ceil() as u64).max(settings.min_requests)
}

/// Judges `track` against `baseline` (counts over the same window and cohorts).
pub fn judge(
    track: &Counts,
    baseline: &Counts,
    cohorts: Vec<String>,
    window_seconds: u64,
    bounds: &[f64],
    settings: &Settings,
) -> Judgement {
    let errors = error_test(track, baseline, settings);
    let latency = latency_test(track, baseline, bounds, settings);
    let (t, b) = (side(track, bounds), side(baseline, bounds));
    let needed = needed_requests(b.error_rate, settings);
    let enough_to_fail =
        track.requests >= settings.min_requests && baseline.requests >= settings.min_requests;
    let pct = |r: f64| format!("{:.2}%", r * 100.0);
    let (verdict, summary) = if enough_to_fail && (errors.worse || latency.worse) {
        let mut why = vec![];
        if errors.worse {
            why.push(format!(
                "error rate {} against {} (p = {:.2e})",
                pct(t.error_rate),
                pct(b.error_rate),
                errors.p_value
            ));
        }
        if latency.worse {
            why.push(format!(
                "slower: p50 {:.1} ms against {:.1}, p99 {:.1} ms against {:.1} (p = {:.2e})",
                t.p50_ms, b.p50_ms, t.p99_ms, b.p99_ms, latency.p_value
            ));
        }
        (Verdict::Fail, why.join("; "))
    } else if track.requests >= needed && baseline.requests >= needed {
        (
            Verdict::Pass,
            format!(
                "error rate {} against {}, p50 {:.1} ms against {:.1}, p99 {:.1} ms against {:.1}, over {} and {} requests",
                pct(t.error_rate),
                pct(b.error_rate),
                t.p50_ms,
                b.p50_ms,
                t.p99_ms,
                b.p99_ms,
                t.requests,
                b.requests
            ),
        )
    } else {
        (Verdict::Inconclusive, String::new())
    };
    let (more_requests, more_seconds, summary) = match verdict {
        Verdict::Inconclusive => {
            let more = needed
                .saturating_sub(track.requests.min(baseline.requests))
                .max(1);
            // The slower side sets the pace.
            let rate = track.requests.min(baseline.requests) as f64 / window_seconds.max(1) as f64;
            let seconds = (rate > 0.0).then(|| (more as f64 / rate).ceil() as u64);
            let when = match seconds {
                Some(s) => format!(" (about {} at the current rate)", human_seconds(s)),
                None => " (no traffic yet)".to_string(),
            };
            (Some(more), seconds, format!("need ~{more} more requests{when}"))
        }
        _ => (None, None, summary),
    };
    Judgement {
        verdict,
        summary,
        cohorts,
        track: t,
        baseline: b,
        errors,
        latency,
        needed_requests: needed,
        more_requests,
        more_seconds,
    }
}

/// `45s`, `12m`, `3h`.
pub fn human_seconds(s: u64) -> String {
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s.div_ceil(60)),
        _ => format!("{}h", s.div_ceil(3600)),
    }
}

#[cfg(test)]
mod tests;

//! The judgement on synthetic samples of known difference, drawn with a fixed seed.

use super::*;

/// SplitMix64: small, seedable, good enough to draw test samples.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal draw (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-300);
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * self.unit()).cos()
    }
}

/// `n` requests failing with probability `error_rate`, latencies log-normal around
/// `median_ms`.
fn sample(rng: &mut Rng, n: u64, error_rate: f64, median_ms: f64) -> Counts {
    let mut c = Counts {
        requests: n,
        errors: 0,
        latency: vec![0; LATENCY_BOUNDS_MS.len() + 1],
    };
    for _ in 0..n {
        if rng.unit() < error_rate {
            c.errors += 1;
        }
        let ms = median_ms * (0.5 * rng.normal()).exp();
        let bucket = LATENCY_BOUNDS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(LATENCY_BOUNDS_MS.len());
        c.latency[bucket] += 1;
    }
    c
}

fn verdicts(trials: u32, mut draw: impl FnMut(&mut Rng) -> (Counts, Counts)) -> [u32; 3] {
    let mut rng = Rng(20_261_122);
    let settings = Settings::default();
    let mut out = [0; 3];
    for _ in 0..trials {
        let (t, b) = draw(&mut rng);
        let j = judge(&t, &b, vec![], 60, LATENCY_BOUNDS_MS, &settings);
        out[match j.verdict {
            Verdict::Pass => 0,
            Verdict::Fail => 1,
            Verdict::Inconclusive => 2,
        }] += 1;
    }
    out
}

#[test]
fn twice_the_error_rate_is_caught_with_the_configured_power() {
    let settings = Settings::default();
    let n = needed_requests(0.01, &settings);
    // The sequential boundary asks for more than the single look's 2,254 at this rate.
    assert!((3_000..6_000).contains(&n), "{n}");
    let [_, fail, _] = verdicts(300, |rng| {
        (sample(rng, n, 0.02, 20.0), sample(rng, 20_000, 0.01, 20.0))
    });
    // Power 0.8 at exactly the needed size; allow for the 300 trials' own spread.
    assert!(fail >= 225, "caught {fail} of 300");
}

#[test]
fn identical_tracks_fail_no_more_often_than_the_confidence_allows() {
    // Half again the size needed at the true rate: the needed size moves with the
    // baseline's observed rate.
    let n = needed_requests(0.01, &Settings::default()) * 3 / 2;
    let [pass, fail, inconclusive] = verdicts(300, |rng| {
        (sample(rng, n, 0.01, 20.0), sample(rng, 20_000, 0.01, 20.0))
    });
    // At 95% confidence at most 5% may fail (the margin makes it fewer); the rest pass.
    assert!(fail <= 15, "failed {fail} of 300");
    assert_eq!(inconclusive, 0);
    assert_eq!(pass + fail, 300);
}

#[test]
fn a_slower_track_is_caught_and_a_slightly_slower_one_tolerated() {
    let [_, fail, _] = verdicts(100, |rng| {
        (sample(rng, 8_000, 0.0, 30.0), sample(rng, 20_000, 0.0, 20.0))
    });
    assert!(fail >= 95, "caught {fail} of 100");
    // 5% slower is significant at this size but under the tolerated 1.25×.
    let [pass, _, _] = verdicts(100, |rng| {
        (sample(rng, 8_000, 0.0, 21.0), sample(rng, 20_000, 0.0, 20.0))
    });
    assert!(pass >= 95, "passed {pass} of 100");
}

#[test]
fn low_traffic_is_inconclusive_and_says_how_much_more_is_needed() {
    let mut rng = Rng(7);
    let (t, b) = (
        sample(&mut rng, 300, 0.01, 20.0),
        sample(&mut rng, 6_000, 0.01, 20.0),
    );
    let j = judge(
        &t,
        &b,
        vec!["FREE".into()],
        60,
        LATENCY_BOUNDS_MS,
        &Settings::default(),
    );
    assert_eq!(j.verdict, Verdict::Inconclusive);
    let more = j.more_requests.expect("more");
    assert_eq!(more, j.needed_requests - 300);
    // 300 requests in 60 s is 5 per second.
    assert_eq!(j.more_seconds, Some(more.div_ceil(5)));
    assert!(
        j.summary
            .starts_with(&format!("need ~{more} more requests (about ")),
        "{}",
        j.summary
    );
}

#[test]
fn a_broken_track_fails_long_before_a_pass_could_be_given() {
    let mut rng = Rng(11);
    let (t, b) = (
        sample(&mut rng, 200, 0.2, 20.0),
        sample(&mut rng, 4_000, 0.005, 20.0),
    );
    let j = judge(&t, &b, vec![], 10, LATENCY_BOUNDS_MS, &Settings::default());
    assert_eq!(j.verdict, Verdict::Fail, "{j:?}");
    assert!(j.errors.worse && j.errors.p_value < 0.01, "{:?}", j.errors);
    assert!(j.summary.starts_with("error rate "), "{}", j.summary);
}

#[test]
fn quantiles_interpolate_within_buckets() {
    // 100 requests, all in the 10–15 ms bucket.
    let mut latency = vec![0; LATENCY_BOUNDS_MS.len() + 1];
    latency[7] = 100;
    assert!((quantile_ms(&latency, LATENCY_BOUNDS_MS, 0.5) - 12.5).abs() < 1e-9);
    assert!((quantile_ms(&latency, LATENCY_BOUNDS_MS, 0.99) - 14.95).abs() < 1e-9);
    assert_eq!(quantile_ms(&[0; 3], LATENCY_BOUNDS_MS, 0.5), 0.0);
}

fn series(track: &str, cohort: &str, requests: u64, errors: u64) -> Series {
    Series {
        track: track.into(),
        version: "1.0.0".into(),
        cohort: cohort.into(),
        counts: Counts {
            requests,
            errors,
            latency: vec![requests],
        },
        seconds: 60,
    }
}

#[test]
fn routers_add_up_and_the_same_cohorts_are_compared() {
    let window = |series: Vec<Series>| WindowStats {
        service: "shop".into(),
        window_seconds: 60,
        latency_bounds_ms: LATENCY_BOUNDS_MS.to_vec(),
        series,
        until: 1_000,
    };
    let mut all = window(vec![
        series("canary", "FREE", 10, 1),
        series("production", "FREE", 190, 2),
        series("production", "ENTERPRISE", 500, 0),
    ]);
    all.merge(window(vec![
        series("canary", "FREE", 5, 0),
        series("production", "FREE", 95, 1),
    ]))
    .expect("same service and buckets");
    let (canary, production, cohorts) = select(&all, "canary", "production");
    assert_eq!(cohorts, ["FREE"]);
    assert_eq!((canary.requests, canary.errors), (15, 1));
    // Enterprise traffic never reaches the canary, so it is not compared.
    assert_eq!((production.requests, production.errors), (285, 3));

    let mut other = window(vec![]);
    other.service = "billing".into();
    assert!(matches!(all.merge(other), Err(MergeError::Service(..))));
    // No cohort in common: everything each side served.
    let (internal, production, cohorts) = select(&all, "internal", "production");
    assert!(cohorts.is_empty());
    assert_eq!((internal.requests, production.requests), (0, 785));
}

#[test]
fn the_window_reads_back_from_json() {
    let text = r#"{"service":"shop","window_seconds":600,"latency_bounds_ms":[1.0],
        "series":[{"track":"canary","version":"1.2.0","cohort":"FREE","requests":3,"errors":1,"latency":[2,1]}]}"#;
    let w: WindowStats = serde_json::from_str(text).expect("json");
    assert_eq!(w.series[0].counts.latency, [2, 1]);
}

#[test]
fn a_p99_read_off_a_few_hundred_requests_is_not_evidence_of_slowness() {
    // Same median; a slow tail of 1 in 30 requests.
    let tail = |n: u64| {
        let mut latency = vec![0; LATENCY_BOUNDS_MS.len() + 1];
        latency[7] = n - n / 30;
        latency[18] = n / 30;
        Counts {
            requests: n,
            errors: 0,
            latency,
        }
    };
    let mut fast = vec![0; LATENCY_BOUNDS_MS.len() + 1];
    fast[7] = 20_000;
    let baseline = Counts {
        requests: 20_000,
        errors: 0,
        latency: fast,
    };
    let few = latency_test(&tail(300), &baseline, LATENCY_BOUNDS_MS, &Settings::default());
    assert!(few.p_value < 0.05 && few.p99_ratio > 10.0, "{few:?}");
    assert!(!few.worse, "{few:?}");
    let many = latency_test(&tail(3_000), &baseline, LATENCY_BOUNDS_MS, &Settings::default());
    assert!(many.worse, "{many:?}");
}

/// `n` draws failing with probability `p`, by geometric gaps between failures: as many draws
/// as failures, so a day of simulated traffic costs little.
fn binomial(rng: &mut Rng, n: u64, p: f64) -> u64 {
    if p <= 0.0 {
        return 0;
    }
    let log_q = (1.0 - p).ln();
    let (mut k, mut at) = (0, 0u64);
    loop {
        let gap = ((1.0 - rng.unit()).ln() / log_q).floor() as u64;
        at = at.saturating_add(gap).saturating_add(1);
        if at > n {
            return k;
        }
        k += 1;
    }
}

/// `n` requests' latencies spread over the buckets (log-normal around `median_ms`), each
/// bucket's count drawn from its normal approximation: fast enough for a day of looks.
fn latencies(rng: &mut Rng, n: u64, median_ms: f64) -> Vec<u64> {
    let cdf = |ms: f64| normal::cdf((ms / median_ms).ln() / 0.5);
    let mut below = 0.0;
    let mut out = Vec::with_capacity(LATENCY_BOUNDS_MS.len() + 1);
    for i in 0..=LATENCY_BOUNDS_MS.len() {
        let upto = LATENCY_BOUNDS_MS.get(i).map_or(1.0, |b| cdf(*b));
        let p = (upto - below).max(0.0);
        below = upto;
        let mean = n as f64 * p;
        let draw = mean + (mean * (1.0 - p)).sqrt() * rng.normal();
        out.push(draw.round().max(0.0) as u64);
    }
    out
}

/// One 30-second look's new traffic: `n` requests at `error_rate`, latencies around 20 ms.
fn look(rng: &mut Rng, n: u64, error_rate: f64) -> Counts {
    let latency = latencies(rng, n, 20.0);
    Counts {
        requests: latency.iter().sum(),
        errors: binomial(rng, n, error_rate),
        latency,
    }
}

/// Watches a canary (2 requests/s) against its baseline (38/s, 0.5% errors) every 30 s for
/// up to `looks` looks, judging the counts so far at each: the canary requests seen at the
/// first failing look, or `None`.
fn watch(rng: &mut Rng, canary_errors: f64, looks: u32, settings: &Settings) -> Option<u64> {
    let (mut t, mut b) = (Counts::default(), Counts::default());
    for i in 1..=looks {
        t.add(&look(rng, 60, canary_errors));
        b.add(&look(rng, 1_140, 0.005));
        let j = judge(&t, &b, vec![], u64::from(i) * 30, LATENCY_BOUNDS_MS, settings);
        if j.verdict == Verdict::Fail {
            return Some(t.requests);
        }
    }
    None
}

/// A day of looks every 30 s.
const DAY: u32 = 24 * 60 * 2;

#[test]
fn a_healthy_canary_watched_for_a_day_fails_no_more_often_than_the_confidence_says() {
    let trials = 200;
    let mut rng = Rng(20_261_202);
    // With the tolerated margin (a tenth of a point) and without it, as a test of equal rates.
    for margin in [0.001, 0.0] {
        let sequential = Settings {
            confidence: 0.99,
            error_margin: margin,
            ..Settings::default()
        };
        let single = Settings {
            sequential: false,
            ..sequential.clone()
        };
        let mut failed = |settings: &Settings| {
            (0..trials)
                .filter(|_| watch(&mut rng, 0.005, DAY, settings).is_some())
                .count()
        };
        let (seq, fixed) = (failed(&sequential), failed(&single));
        println!(
            "healthy canary, looked at every 30 s for 24 h, confidence 0.99, margin {margin}: failed \
             {seq} of {trials} (sequential), {fixed} of {trials} (single-look test)"
        );
        // At most 1 in 100 (2 of 200, with room for the trials' own spread).
        assert!(seq <= 4, "sequential, margin {margin}: {seq} of {trials} failed");
        if margin == 0.0 {
            // The single-look test, looked at this often, fails many times that.
            assert!(fixed >= 20, "single look: {fixed} of {trials} failed");
        }
    }
}

#[test]
fn a_canary_with_twice_the_error_rate_is_caught_while_watched() {
    let settings = Settings {
        confidence: 0.99,
        ..Settings::default()
    };
    let mut rng = Rng(7_2026);
    let mut caught: Vec<u64> = (0..200)
        .filter_map(|_| watch(&mut rng, 0.01, DAY, &settings))
        .collect();
    caught.sort_unstable();
    let median = caught.get(caught.len() / 2).copied().unwrap_or(u64::MAX);
    let fixed = needed_requests(
        0.005,
        &Settings {
            sequential: false,
            ..settings.clone()
        },
    );
    println!(
        "canary at 1% errors against 0.5%, confidence 0.99: caught in {} of 200 day-long watches, \
         median after {median} canary requests; the single-look test needs {fixed} for its one look",
        caught.len()
    );
    assert!(caught.len() >= 190, "caught {} of 200", caught.len());
}

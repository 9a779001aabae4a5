use super::*;
use proptest::prelude::*;

#[test]
fn buckets_are_stable_across_builds() {
    // Pinned: changing the hash would move every user to another track.
    assert_eq!(bucket(b"user-1"), bucket(b"user-1"));
    let pinned: Vec<u32> = [&b""[..], b"user-1", b"user-2", b"42"]
        .iter()
        .map(|k| bucket(k))
        .collect();
    assert_eq!(pinned, PINNED.to_vec());
}

/// Computed independently (Python) from the FNV-1a + SplitMix64 definition.
const PINNED: [u32; 4] = [6203, 7624, 8795, 4770];

#[test]
fn buckets_spread_evenly() {
    let n = 200_000u32;
    let mut counts = vec![0u32; 100];
    for i in 0..n {
        counts[(bucket(format!("user-{i}").as_bytes()) / 100) as usize] += 1;
    }
    let expected = n / 100;
    for (i, c) in counts.iter().enumerate() {
        let off = (i64::from(*c) - i64::from(expected)).abs();
        assert!(
            off < i64::from(expected) / 10,
            "percentile {i}: {c} vs {expected}"
        );
    }
}

#[test]
fn cohorts_match_case_insensitively_and_unknown_values_get_the_default() {
    let cohorts = [Some("INTERNAL"), Some("FREE"), None];
    assert_eq!(cohort_index(cohorts, b"free"), Some(1));
    assert_eq!(cohort_index(cohorts, b" Internal\t"), Some(0));
    assert_eq!(cohort_index(cohorts, b"GOLD"), None);
    assert_eq!(cohort_index(cohorts, b""), None);
}

#[test]
fn sticky_picks_by_range_and_moves_only_users_of_an_unhealthy_leg() {
    let w = [500, 9500];
    assert_eq!(pick_sticky(&w, |_| true, 0), Some(0));
    assert_eq!(pick_sticky(&w, |_| true, 499), Some(0));
    assert_eq!(pick_sticky(&w, |_| true, 500), Some(1));
    assert_eq!(pick_sticky(&w, |i| i != 0, 10), Some(1));
    assert_eq!(pick_sticky(&w, |_| false, 10), None);
    assert_eq!(
        pick_sticky(&[0, 10_000], |_| true, 0),
        Some(1),
        "a zero leg gets nobody"
    );
}

#[test]
fn the_spread_is_exact_and_not_bursty() {
    let cycle = spread_cycle(&[500, 9500]);
    assert_eq!(cycle.len(), 20);
    assert_eq!(cycle.iter().filter(|i| **i == 0).count(), 1);
    let cycle = spread_cycle(&[5000, 5000]);
    assert_eq!(cycle, vec![0, 1]);
    let cycle = spread_cycle(&[2500, 2500, 5000]);
    assert_eq!(cycle.len(), 4);
    assert!(cycle.windows(2).all(|w| !(w[0] == 2 && w[1] == 2)), "{cycle:?}");
    assert!(spread_cycle(&[0, 0]).is_empty());
}

proptest! {
    #[test]
    fn sticky_growth_keeps_users_on_the_growing_first_leg(key in any::<Vec<u8>>(), small in 1u32..5000, extra in 0u32..5000) {
        let b = bucket(&key);
        let before = pick_sticky(&[small, BUCKETS - small], |_| true, b);
        let after = pick_sticky(&[small + extra, BUCKETS - small - extra], |_| true, b);
        if before == Some(0) {
            prop_assert_eq!(after, Some(0));
        }
    }

    #[test]
    fn users_of_healthy_legs_never_move(b in 0u32..BUCKETS, w in proptest::collection::vec(0u32..4000, 3), down in 0usize..3) {
        let total: u32 = w.iter().sum();
        prop_assume!(total > 0);
        let healthy = |i: usize| i != down;
        if let Some(first) = leg_at(&w, b * total / BUCKETS)
            && first != down
        {
            prop_assert_eq!(pick_sticky(&w, healthy, b * total / BUCKETS), Some(first));
        }
    }

    #[test]
    fn each_cycle_gives_every_leg_its_exact_share(w in proptest::collection::vec(0u32..300, 1..5)) {
        let cycle = spread_cycle(&w);
        let g = w.iter().copied().filter(|x| *x > 0).fold(0, gcd);
        for (i, wi) in w.iter().enumerate() {
            let n = cycle.iter().filter(|c| **c == i).count() as u32;
            prop_assert_eq!(n, wi.checked_div(g).unwrap_or(0));
        }
    }
}

//! Routing decisions, pure: cohort matching, sticky buckets and an even
//! per-request spread. Nothing here does I/O or reads a clock.

/// Buckets a sticky key is hashed into: one per basis point, so 0.01% splits are exact.
pub const BUCKETS: u32 = 10_000;

/// The bucket of a sticky key (a user id), in `0..10_000`. Stable across processes, builds
/// and platforms: FNV-1a over the bytes, then a SplitMix64 finaliser so nearby ids spread.
pub fn bucket(key: &[u8]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h % u64::from(BUCKETS)) as u32
}

/// Which of `cohorts` (header values, `None` for the default route) the header `value` names,
/// matched case-insensitively without surrounding whitespace; `None` sends it to the default.
pub fn cohort_index<'a>(cohorts: impl IntoIterator<Item = Option<&'a str>>, value: &[u8]) -> Option<usize> {
    let value = trim_ows(value);
    cohorts
        .into_iter()
        .position(|c| c.is_some_and(|c| c.as_bytes().eq_ignore_ascii_case(value)))
}

/// Without the optional whitespace (spaces and tabs) HTTP allows around field values.
pub(crate) fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// The leg (index into `weights`) a sticky bucket lands on. Legs own consecutive bucket
/// ranges in the order written, so when a canary written first grows from 5% to 10%, every
/// user already on it stays. Legs that are not `healthy` give their share to the others in
/// proportion, and only their users move. `None` when no leg with weight is healthy.
pub fn pick_sticky(weights: &[u32], healthy: impl Fn(usize) -> bool, bucket: u32) -> Option<usize> {
    let chosen = leg_at(weights, bucket)?;
    if healthy(chosen) {
        return Some(chosen);
    }
    // Re-spread this user over the healthy legs, by the same bucket.
    let rest: Vec<u32> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| if healthy(i) { *w } else { 0 })
        .collect();
    let total: u64 = rest.iter().map(|w| u64::from(*w)).sum();
    if total == 0 {
        return None;
    }
    let scaled = (u64::from(bucket) * total / u64::from(BUCKETS)) as u32;
    leg_at(&rest, scaled)
}

/// The leg whose range holds `point`, ranges laid out in order by weight.
fn leg_at(weights: &[u32], point: u32) -> Option<usize> {
    let mut end = 0u32;
    for (i, w) in weights.iter().enumerate() {
        end += w;
        if *w > 0 && point < end {
            return Some(i);
        }
    }
    None
}

/// An even per-request spread for weights: smooth weighted round robin (as nginx does),
/// precomputed as one cycle, so each leg gets exactly its share in every cycle and picks of
/// the same leg are spaced out rather than bursty. Weights are reduced by their common
/// divisor first, so 5%/95% is a cycle of 20.
pub fn spread_cycle(weights: &[u32]) -> Vec<usize> {
    let g = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd);
    if g == 0 {
        return vec![];
    }
    let reduced: Vec<i64> = weights.iter().map(|w| i64::from(w / g)).collect();
    let total: i64 = reduced.iter().sum();
    let mut current = vec![0i64; reduced.len()];
    let mut cycle = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(&reduced) {
            *c += w;
        }
        let (best, _) = current.iter().enumerate().filter(|(i, _)| reduced[*i] > 0).fold(
            (0, i64::MIN),
            |(bi, bv), (i, v)| if *v > bv { (i, *v) } else { (bi, bv) },
        );
        current[best] -= total;
        cycle.push(best);
    }
    cycle
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests;

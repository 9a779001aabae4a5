//! A boundary for z-statistics that stays honest when looked at again and again: the normal
//! mixture of Robbins (1970), the mixture sequential probability ratio test (mSPRT) of Johari,
//! Pekelis and Walsh ("Always valid inference", 2017).
//!
//! A z-statistic computed on all the data so far, with information `n` (the effective number
//! of requests, `nt·nb/(nt+nb)` for two samples), moves under the null like Brownian motion in
//! `n`. Mixing the likelihood ratio of a drift `θ` per unit of information over `θ ~ N(0, τ²)`
//! gives the martingale
//!
//! `Λ(n) = (1 + nτ²)^(-1/2) · exp(nτ²·z² / (2(1 + nτ²)))`,
//!
//! and by Ville's inequality the chance that `Λ` ever reaches `1/α`, over any number of looks at
//! any times, is at most `α`. So "fail once `z` is past [`boundary`]" keeps its confidence
//! however often the autopilot looks, where the fixed-horizon `z > z₁₋α` fails a healthy canary
//! watched for a day far more often than `α` (see the tests). The price is a later verdict on
//! small effects; `τ` sets which effect size the boundary is tightest for.

use crate::normal;

/// The `z` a one-sided look needs at information `n` to fail with error `alpha` over all looks,
/// for a mixture of width `tau` (standardized effect per unit of information).
pub fn boundary(n: f64, tau: f64, alpha: f64) -> f64 {
    if n <= 0.0 || tau <= 0.0 || alpha <= 0.0 {
        return f64::INFINITY;
    }
    let v = n * tau * tau;
    ((1.0 + v) / v * (2.0 * (1.0 / alpha).ln() + (1.0 + v).ln())).sqrt()
}

/// The always-valid p-value of one look: `1/Λ` (capped at 1). Taking the running minimum over
/// looks keeps it valid; a single look's value is what is reported.
pub fn p_value(z: f64, n: f64, tau: f64) -> f64 {
    if n <= 0.0 || tau <= 0.0 || z <= 0.0 {
        return 1.0;
    }
    let v = n * tau * tau;
    let log_lambda = -0.5 * (1.0 + v).ln() + v * z * z / (2.0 * (1.0 + v));
    (-log_lambda).exp().min(1.0)
}

/// The information of a two-sample comparison: `nt·nb/(nt+nb)`.
pub fn information(nt: f64, nb: f64) -> f64 {
    if nt <= 0.0 || nb <= 0.0 {
        0.0
    } else {
        nt * nb / (nt + nb)
    }
}

/// The requests each side needs (equal sizes) so that a drift of `theta` per unit of
/// information crosses the boundary with chance `power`: the smallest `n` with
/// `theta·√(n/2) ≥ boundary(n/2) + z_power`. `u64::MAX` when no size does.
pub fn needed_requests(theta: f64, tau: f64, alpha: f64, power: f64) -> u64 {
    if theta <= 0.0 {
        return u64::MAX;
    }
    let zb = normal::quantile(power);
    let enough = |n: f64| theta * (n / 2.0).sqrt() >= boundary(n / 2.0, tau, alpha) + zb;
    let (mut low, mut high) = (1.0_f64, 2.0_f64);
    while !enough(high) {
        low = high;
        high *= 2.0;
        if high > 1e15 {
            return u64::MAX;
        }
    }
    while high - low > 1.0 {
        let mid = ((low + high) / 2.0).floor();
        if enough(mid) {
            high = mid;
        } else {
            low = mid;
        }
    }
    high as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boundary_is_wider_than_a_fixed_look_and_grows_slowly_with_information() {
        let fixed = normal::quantile(0.99);
        let at = |n: f64| boundary(n, 0.1, 0.01);
        assert!(at(100.0) > fixed && at(10_000.0) > fixed);
        // Tightest where nτ² is a few units; growing like √(log n) beyond.
        assert!(at(1_000.0) < at(100.0));
        assert!(at(1e6) > at(1e4) && at(1e6) < at(1e4) * 1.5);
    }

    #[test]
    fn the_p_value_is_below_alpha_exactly_past_the_boundary() {
        let (n, tau, alpha) = (500.0, 0.2, 0.01);
        let b = boundary(n, tau, alpha);
        assert!(p_value(b + 1e-6, n, tau) <= alpha);
        assert!(p_value(b - 1e-3, n, tau) > alpha);
        assert_eq!(p_value(-3.0, n, tau), 1.0);
    }

    #[test]
    fn the_needed_size_is_the_first_that_crosses_with_the_power_asked() {
        let (theta, tau, alpha, power) = (0.1, 0.1, 0.05, 0.8);
        let n = needed_requests(theta, tau, alpha, power) as f64;
        let zb = normal::quantile(power);
        assert!(theta * (n / 2.0).sqrt() >= boundary(n / 2.0, tau, alpha) + zb);
        let m = n - 1.0;
        assert!(theta * (m / 2.0).sqrt() < boundary(m / 2.0, tau, alpha) + zb);
        assert_eq!(needed_requests(0.0, tau, alpha, power), u64::MAX);
    }
}

//! Routes: for one cohort, an exact weighted split over tracks, and what happens to it when
//! some tracks have nothing deployed.

use crate::{TrackName, Weight, weight::WHOLE};

/// For one cohort, the split over tracks. Weights are exact and always sum to 100%.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Route {
    legs: Vec<(TrackName, Weight)>,
}

/// Why a split is not a route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The split has no tracks.
    #[error("the route names no track")]
    Empty,
    /// Weights do not add up to 100%.
    #[error("the weights add up to {total}, not 100%")]
    NotWhole {
        /// What they add up to, as a percentage.
        total: String,
    },
    /// A track appears twice.
    #[error("track `{track}` appears twice in the route")]
    DuplicateTrack {
        /// The track.
        track: TrackName,
    },
    /// Every track of the route is missing or has weight 0.
    #[error("no track of the route is left to take traffic")]
    NothingLeft,
}

/// A route after tracks with nothing deployed were taken out: which tracks lost their share,
/// and the route that results.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Redistribution {
    /// The route in force.
    pub route: Route,
    /// Tracks that were in the configured route but have no version, with the share they gave up.
    pub gave_up: Vec<(TrackName, Weight)>,
}

impl Route {
    /// Builds a route, checking that tracks are distinct and weights sum to exactly 100%.
    pub fn new(legs: Vec<(TrackName, Weight)>) -> Result<Route, RouteError> {
        if legs.is_empty() {
            return Err(RouteError::Empty);
        }
        for (i, (t, _)) in legs.iter().enumerate() {
            if legs[..i].iter().any(|(u, _)| u == t) {
                return Err(RouteError::DuplicateTrack { track: t.clone() });
            }
        }
        let total: u32 = legs.iter().map(|(_, w)| w.basis_points()).sum();
        if total != WHOLE {
            return Err(RouteError::NotWhole {
                total: crate::weight::percent(total),
            });
        }
        Ok(Route { legs })
    }

    /// The tracks and their weights, in the order written.
    pub fn legs(&self) -> &[(TrackName, Weight)] {
        &self.legs
    }

    /// The weight a track gets; 0 when the route does not name it.
    pub fn weight_of(&self, track: &TrackName) -> Weight {
        self.legs
            .iter()
            .find(|(t, _)| t == track)
            .map(|(_, w)| *w)
            .unwrap_or_default()
    }

    /// The route with `track`'s weight held to at most `max`, what it gives up going to
    /// `receiver` (a ramp: the rest of a growing canary's share stays with the track the
    /// traffic came from). Unchanged when `track` is within `max` or `receiver` is not in the
    /// route. The order of the legs is kept, so sticky users on `track` stay there as it grows.
    pub fn cap(&self, track: &TrackName, max: Weight, receiver: &TrackName) -> Route {
        let surplus = self
            .weight_of(track)
            .basis_points()
            .saturating_sub(max.basis_points());
        if surplus == 0 || track == receiver || !self.legs.iter().any(|(t, _)| t == receiver) {
            return self.clone();
        }
        let legs = self
            .legs
            .iter()
            .map(|(t, w)| {
                let bp = match t {
                    t if t == track => max.basis_points(),
                    t if t == receiver => w.basis_points() + surplus,
                    _ => w.basis_points(),
                };
                (t.clone(), Weight::from_basis_points(bp).unwrap_or(*w))
            })
            .collect();
        Route { legs }
    }

    /// Takes out the tracks for which `present` says false and gives their share to the tracks
    /// left, in proportion to their weights, exact to the basis point (largest remainder; ties go
    /// to the track written first). Tracks with weight 0 stay at 0.
    pub fn redistribute(&self, present: impl Fn(&TrackName) -> bool) -> Result<Redistribution, RouteError> {
        let (kept, gone): (Vec<_>, Vec<_>) = self.legs.iter().cloned().partition(|(t, _)| present(t));
        let kept_total: u32 = kept.iter().map(|(_, w)| w.basis_points()).sum();
        if kept_total == 0 {
            return Err(RouteError::NothingLeft);
        }
        if gone.is_empty() {
            return Ok(Redistribution {
                route: self.clone(),
                gave_up: vec![],
            });
        }
        let mut shares: Vec<(u32, u32)> = kept
            .iter()
            .map(|(_, w)| {
                let scaled = w.basis_points() * WHOLE;
                (scaled / kept_total, scaled % kept_total)
            })
            .collect();
        let handed: u32 = shares.iter().map(|(q, _)| q).sum();
        let mut order: Vec<usize> = (0..shares.len()).collect();
        order.sort_by(|&a, &b| shares[b].1.cmp(&shares[a].1).then(a.cmp(&b)));
        for &i in order.iter().take((WHOLE - handed) as usize) {
            shares[i].0 += 1;
        }
        let legs = kept
            .into_iter()
            .zip(shares)
            .map(|((t, _), (bp, _))| (t, Weight::from_basis_points(bp).unwrap_or(Weight::WHOLE)))
            .collect();
        Ok(Redistribution {
            route: Route { legs },
            gave_up: gone,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(n: &str) -> TrackName {
        TrackName::new(n).expect("valid track")
    }
    fn w(bp: u32) -> Weight {
        Weight::from_basis_points(bp).expect("valid weight")
    }

    #[test]
    fn a_capped_track_gives_the_rest_to_the_receiver_and_keeps_the_order() {
        let r = Route::new(vec![(t("canary"), w(500)), (t("production"), w(9500))]).expect("route");
        let capped = r.cap(&t("canary"), w(100), &t("production"));
        assert_eq!(capped.legs(), [(t("canary"), w(100)), (t("production"), w(9900))]);
        assert_eq!(r.cap(&t("canary"), w(500), &t("production")), r);
        assert_eq!(
            r.cap(&t("canary"), w(100), &t("paid")),
            r,
            "no receiver in the route"
        );
        assert_eq!(r.cap(&t("paid"), w(100), &t("production")), r, "not in the route");
    }

    #[test]
    fn weights_must_sum_to_whole() {
        assert!(Route::new(vec![(t("canary"), w(500)), (t("production"), w(9500))]).is_ok());
        assert_eq!(
            Route::new(vec![(t("canary"), w(500)), (t("production"), w(9000))]),
            Err(RouteError::NotWhole { total: "95%".into() })
        );
        assert!(matches!(
            Route::new(vec![(t("a"), w(5000)), (t("a"), w(5000))]),
            Err(RouteError::DuplicateTrack { .. })
        ));
        assert_eq!(Route::new(vec![]), Err(RouteError::Empty));
    }

    #[test]
    fn a_missing_canary_gives_its_share_to_production() {
        let r = Route::new(vec![(t("canary"), w(500)), (t("production"), w(9500))]).expect("route");
        let out = r
            .redistribute(|tr| tr.as_str() != "canary")
            .expect("redistributed");
        assert_eq!(out.route.legs(), &[(t("production"), w(10_000))]);
        assert_eq!(out.gave_up, vec![(t("canary"), w(500))]);
    }

    #[test]
    fn shares_go_in_proportion_and_exactly() {
        let r = Route::new(vec![
            (t("a"), w(1000)),
            (t("b"), w(1000)),
            (t("c"), w(2000)),
            (t("d"), w(6000)),
        ])
        .expect("route");
        let out = r.redistribute(|tr| tr.as_str() != "d").expect("redistributed");
        assert_eq!(
            out.route.legs(),
            &[(t("a"), w(2500)), (t("b"), w(2500)), (t("c"), w(5000))]
        );
        let r = Route::new(vec![
            (t("a"), w(1)),
            (t("b"), w(1)),
            (t("c"), w(1)),
            (t("d"), w(9997)),
        ])
        .expect("route");
        let out = r.redistribute(|tr| tr.as_str() != "d").expect("redistributed");
        assert_eq!(
            out.route.legs(),
            &[(t("a"), w(3334)), (t("b"), w(3333)), (t("c"), w(3333))]
        );
    }

    #[test]
    fn a_route_with_nothing_left_is_an_error() {
        let r = Route::new(vec![(t("internal"), w(10_000))]).expect("route");
        assert_eq!(r.redistribute(|_| false), Err(RouteError::NothingLeft));
        let r = Route::new(vec![(t("a"), w(0)), (t("b"), w(10_000))]).expect("route");
        assert_eq!(
            r.redistribute(|tr| tr.as_str() == "a"),
            Err(RouteError::NothingLeft)
        );
    }

    fn arb_route() -> impl Strategy<Value = Route> {
        proptest::collection::vec(0u32..=10_000, 1..6).prop_map(|raw| {
            let total: u32 = raw.iter().sum::<u32>().max(1);
            let mut bps: Vec<u32> = raw.iter().map(|x| x * 10_000 / total).collect();
            let short = 10_000 - bps.iter().sum::<u32>();
            bps[0] += short;
            let legs = bps
                .into_iter()
                .enumerate()
                .map(|(i, bp)| (t(&format!("t{i}")), w(bp)))
                .collect();
            Route::new(legs).expect("constructed whole")
        })
    }

    proptest! {
        #[test]
        fn redistribution_stays_whole_and_never_shrinks_a_kept_track(
            r in arb_route(), mask in proptest::collection::vec(any::<bool>(), 6)
        ) {
            let present = |tr: &TrackName| {
                let i: usize = tr.as_str()[1..].parse().expect("index");
                mask[i]
            };
            match r.redistribute(present) {
                Ok(out) => {
                    let total: u32 = out.route.legs().iter().map(|(_, w)| w.basis_points()).sum();
                    prop_assert_eq!(total, 10_000);
                    for (tr, wt) in out.route.legs() {
                        prop_assert!(present(tr));
                        prop_assert!(*wt >= r.weight_of(tr));
                        if r.weight_of(tr).basis_points() == 0 {
                            prop_assert_eq!(wt.basis_points(), 0);
                        }
                    }
                    prop_assert!(Route::new(out.route.legs().to_vec()).is_ok());
                }
                Err(e) => {
                    prop_assert_eq!(e, RouteError::NothingLeft);
                    let kept: u32 = r.legs().iter().filter(|(tr, _)| present(tr)).map(|(_, w)| w.basis_points()).sum();
                    prop_assert_eq!(kept, 0);
                }
            }
        }
    }
}

//! `autopilot:` in cohort.yaml: per stage, whether the autopilot promotes into it, rolls it
//! back and ramps its share; and the windows promotions and ramps keep to.
//!
//! ```yaml
//! autopilot:
//!   stages:
//!     canary:
//!       promote: auto          # auto | manual (default)
//!       rollback: auto         # auto | manual (default: auto where promote is auto)
//!       ramp: [1%, 2%, 5%]     # the last step is the largest weight the routes give canary
//!       step_time: 10m         # each step at least this long, with a passing judgement
//!     paid:
//!       promote: auto
//!   windows: [Mon-Fri 09:00-17:00 Europe/Berlin]
//! ```

use std::collections::BTreeMap;

use cohort_core::autopilot::DEFAULT_STEP_TIME;
use cohort_core::{AutopilotPolicy, ChangeWindow, Route, StagePolicy, TrackName, Weight};
use cohort_yaml::Node;

use crate::diag::{Kind, Sink};
use crate::read::{self, MapReader};

/// Reads `autopilot:`. `routes` are the pipeline's (cohorts and default route), which a ramp's
/// last step must reach.
pub(crate) fn read_autopilot(
    n: Option<&Node>,
    stages: &[TrackName],
    routes: &[&Route],
    sink: &mut Sink<'_>,
) -> Option<AutopilotPolicy> {
    let Some(n) = n else {
        return Some(AutopilotPolicy::default());
    };
    let mut m = MapReader::new(n, "`autopilot`", sink);
    let (stages_node, windows_node) = (m.opt("stages"), m.opt("windows"));
    m.finish(sink);
    let mut ok = true;
    let mut policy = AutopilotPolicy::default();
    if let Some(s) = stages_node {
        match read_stages(s, stages, routes, sink) {
            Some(p) => policy.stages = p,
            None => ok = false,
        }
    }
    for w in windows_node
        .map(|w| read::list(w, "`autopilot.windows`", sink))
        .unwrap_or_default()
    {
        let Some(text) = read::text(w, "a change window", sink) else {
            ok = false;
            continue;
        };
        match ChangeWindow::parse(text) {
            Ok(window) if jiff::tz::TimeZone::get(&window.zone).is_ok() => policy.windows.push(window),
            Ok(window) => {
                sink.error(
                    w.pos,
                    Kind::BadWindow,
                    format!("`{}` is not a time zone cohort knows", window.zone),
                    Some("name an IANA time zone, e.g. `Europe/Berlin`, `America/New_York` or `UTC`".into()),
                );
                ok = false;
            }
            Err(e) => {
                sink.error(w.pos, Kind::BadWindow, e.to_string(), None);
                ok = false;
            }
        }
    }
    ok.then_some(policy)
}

fn read_stages(
    n: &Node,
    stages: &[TrackName],
    routes: &[&Route],
    sink: &mut Sink<'_>,
) -> Option<BTreeMap<TrackName, StagePolicy>> {
    let mut m = MapReader::new(n, "`autopilot.stages`", sink);
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (k, v) in m.rest() {
        let t = read::text(k, "a stage name", sink).unwrap_or_default();
        let Some(stage) = TrackName::new(t).ok().filter(|s| stages.contains(s)) else {
            let names: Vec<&str> = stages.iter().map(TrackName::as_str).collect();
            sink.error(
                k.pos,
                Kind::UnknownTrack,
                format!("`autopilot.stages` names `{t}`, which is not a stage"),
                Some(format!("the stages are: {}", names.join(", "))),
            );
            ok = false;
            continue;
        };
        match read_stage(v, &stage, stages, routes, sink) {
            Some(p) => {
                out.insert(stage, p);
            }
            None => ok = false,
        }
    }
    m.finish(sink);
    ok.then_some(out)
}

/// `auto` or `manual`, as a bool.
fn auto(n: &Node, what: &str, sink: &mut Sink<'_>) -> Option<bool> {
    match read::text(n, what, sink)? {
        "auto" => Some(true),
        "manual" => Some(false),
        other => {
            sink.error(
                n.pos,
                Kind::WrongType,
                format!("{what} is `{other}`; write `auto` or `manual`"),
                None,
            );
            None
        }
    }
}

fn read_stage(
    n: &Node,
    stage: &TrackName,
    stages: &[TrackName],
    routes: &[&Route],
    sink: &mut Sink<'_>,
) -> Option<StagePolicy> {
    let mut m = MapReader::new(n, format!("the autopilot policy of `{stage}`"), sink);
    let (promote_n, rollback_n, ramp_n, step_n) = (
        m.opt("promote"),
        m.opt("rollback"),
        m.opt("ramp"),
        m.opt("step_time"),
    );
    m.finish(sink);
    let mut ok = true;
    let promote = match promote_n {
        Some(p) => auto(p, "`promote`", sink),
        None => Some(false),
    };
    if promote == Some(true) && stages.first() == Some(stage) {
        if let Some(p) = promote_n {
            sink.error(
                p.pos,
                Kind::UnknownTrack,
                format!(
                    "`{stage}` is the first stage: builds enter it with `cohort deploy`, not a promotion"
                ),
                Some("automatic promotion belongs to the stages after the first".into()),
            );
        }
        ok = false;
    }
    let rollback = match rollback_n {
        Some(r) => auto(r, "`rollback`", sink),
        // Automatic promotion into the last stage does not make its rollback automatic:
        // nothing judges the baseline.
        None if stages.last() == Some(stage) => Some(false),
        None => promote,
    };
    // The last stage is the baseline every other track is judged against; nothing judges it.
    if stages.last() == Some(stage) {
        for (node, what) in [(rollback_n, "`rollback: auto`"), (ramp_n, "a `ramp`")] {
            let Some(node) = node else { continue };
            if what == "`rollback: auto`" && rollback != Some(true) {
                continue;
            }
            sink.error(
                node.pos,
                Kind::UnknownTrack,
                format!(
                    "`{stage}` is the last stage, the baseline every other track is judged against: \
                     nothing judges it, so {what} there could never act"
                ),
                Some("roll it back by hand (`cohort rollback`); ramp the stages before it".into()),
            );
            ok = false;
        }
    }
    let step_time = match step_n {
        Some(s) => read::duration(s, "`step_time`", sink),
        None => Some(DEFAULT_STEP_TIME),
    };
    let ramp = match ramp_n {
        Some(r) => read_ramp(r, stage, routes, sink),
        None => Some(vec![]),
    };
    match (promote, rollback, ramp, step_time) {
        (Some(promote), Some(rollback), Some(ramp), Some(step_time)) if ok => Some(StagePolicy {
            promote,
            rollback,
            ramp,
            step_time,
        }),
        _ => None,
    }
}

fn read_ramp(n: &Node, stage: &TrackName, routes: &[&Route], sink: &mut Sink<'_>) -> Option<Vec<Weight>> {
    let configured = routes
        .iter()
        .map(|r| r.weight_of(stage))
        .max()
        .unwrap_or_default();
    if configured == Weight::default() {
        sink.error(
            n.pos,
            Kind::BadRoute,
            format!("`{stage}` has a ramp but no route sends it traffic"),
            Some(format!(
                "give `{stage}` a weight in `cohorts` or `default_route`, or drop the ramp"
            )),
        );
        return None;
    }
    let mut steps: Vec<Weight> = vec![];
    let mut ok = true;
    let items = read::list(n, "`ramp`", sink);
    for item in &items {
        let Some(w) = read::weight(item, "a ramp step", sink) else {
            ok = false;
            continue;
        };
        if w == Weight::default() || steps.last().is_some_and(|last| w <= *last) {
            sink.error(
                item.pos,
                Kind::BadWeight,
                format!("ramp step {w} does not grow: each step must be above 0% and above the one before"),
                None,
            );
            ok = false;
        } else if w > configured {
            sink.error(
                item.pos,
                Kind::BadWeight,
                format!("ramp step {w} is above {configured}, the most any route gives `{stage}`"),
                Some(
                    "the ramp ends at the configured weight; raise the route's weight or lower the step"
                        .into(),
                ),
            );
            ok = false;
        }
        steps.push(w);
    }
    if ok && steps.last() != Some(&configured) {
        let pos = items.last().map_or(n.pos, |i| i.pos);
        sink.error(
            pos,
            Kind::BadWeight,
            format!(
                "the ramp of `{stage}` ends at {}, but the routes give it up to {configured}",
                steps.last().map_or("nothing".to_string(), |w| w.to_string())
            ),
            Some(format!(
                "end the ramp with `{configured}`: the configured weight is its last step"
            )),
        );
        ok = false;
    }
    ok.then_some(steps)
}

#[cfg(test)]
mod tests {
    use cohort_core::{Duration, TrackName, Weight};

    use crate::diag::Severity;
    use crate::repo::{Repo, validate};
    use crate::scaffold::repo_files;

    fn with(section: &str) -> (Option<Repo>, Vec<String>) {
        let mut files = repo_files();
        // First, so the places in the tests do not move with the scaffold.
        files.pipeline = files.pipeline.map(|text| format!("{section}{text}"));
        let (repo, diags) = validate(&files);
        let errors = diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| format!("{}:{}: {}", d.file.display(), d.pos, d.message))
            .collect();
        (repo, errors)
    }

    fn pct(p: u32) -> Weight {
        Weight::from_basis_points(p * 100).expect("weight")
    }

    #[test]
    fn without_a_section_everything_is_left_to_people() {
        let (repo, errors) = with("");
        assert!(errors.is_empty(), "{errors:?}");
        let policy = repo.expect("valid").pipeline.autopilot;
        let canary = policy.stage(&TrackName::new("canary").expect("name"));
        assert!(!canary.promote && !canary.rollback && canary.ramp.is_empty());
        assert!(policy.windows.is_empty());
    }

    #[test]
    fn a_policy_reads_with_its_defaults() {
        let (repo, errors) = with(
            "autopilot:\n  stages:\n    canary:\n      promote: auto\n      ramp: [1%, 2%, 5%]\n      step_time: 15m\n    paid:\n      promote: auto\n      rollback: manual\n    production:\n      promote: auto\n  windows:\n    - Mon-Fri 09:00-17:00 Europe/Berlin\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let policy = repo.expect("valid").pipeline.autopilot;
        let stage = |s: &str| policy.stage(&TrackName::new(s).expect("name"));
        let canary = stage("canary");
        assert!(canary.promote && canary.rollback, "rollback follows promote");
        assert_eq!(canary.ramp, [pct(1), pct(2), pct(5)]);
        assert_eq!(canary.step_time, Duration::from_secs(900));
        assert!(stage("paid").promote && !stage("paid").rollback);
        assert!(stage("production").promote && !stage("production").rollback);
        assert_eq!(policy.windows.len(), 1);
        assert_eq!(policy.windows[0].zone, "Europe/Berlin");
    }

    #[test]
    fn every_mistake_is_reported_where_it_is() {
        let (repo, errors) = with(
            "autopilot:\n  stages:\n    canary:\n      promote: yes\n      ramp: [1%, 1%, 4%]\n    internal:\n      promote: auto\n    staging:\n      promote: auto\n    paid:\n      ramp: [2%, 10%]\n    production:\n      step_time: soon\n  windows:\n    - Mon-Fri 09:00-17:00 Mars/Olympus\n    - Fri-Mon 09:00-17:00 UTC\n    - weekdays\n",
        );
        assert!(repo.is_none());
        let expect = [
            "cohort.yaml:4:16: `promote` is `yes`; write `auto` or `manual`",
            "cohort.yaml:5:18: ramp step 1% does not grow",
            "cohort.yaml:7:16: `internal` is the first stage",
            "cohort.yaml:8:5: `autopilot.stages` names `staging`, which is not a stage",
            "cohort.yaml:11:18: ramp step 10% is above 5%, the most any route gives `paid`",
            "cohort.yaml:13:18: `step_time` `soon` is not a duration",
            "cohort.yaml:15:7: `Mars/Olympus` is not a time zone cohort knows",
            "cohort.yaml:16:7: `Fri-Mon` is not a day or range of days",
            "cohort.yaml:17:7: `weekdays` is not a window",
        ];
        for e in expect {
            assert!(errors.iter().any(|x| x.starts_with(e)), "{e} in {errors:#?}");
        }
    }

    #[test]
    fn the_last_stage_can_be_promoted_into_but_not_ramped_or_rolled_back_by_itself() {
        let (_, errors) =
            with("autopilot:\n  stages:\n    production:\n      rollback: auto\n      ramp: [50%, 100%]\n");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("cohort.yaml:4:17: `production` is the last stage"),
            "{errors:?}"
        );
        assert!(errors[1].contains("a `ramp` there could never act"), "{errors:?}");
    }

    #[test]
    fn a_ramp_must_end_at_the_configured_weight() {
        let (_, errors) = with("autopilot:\n  stages:\n    canary:\n      ramp: [1%, 2%]\n");
        assert!(
            errors == ["cohort.yaml:4:18: the ramp of `canary` ends at 2%, but the routes give it up to 5%"],
            "{errors:?}"
        );
        // internal gets all of INTERNAL's traffic: its ramp ends at 100%.
        let (_, errors) = with("autopilot:\n  stages:\n    internal:\n      ramp: [50%, 100%]\n");
        assert!(errors.is_empty(), "{errors:?}");
    }
}

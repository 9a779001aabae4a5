//! `releases/<name>.yaml`: the tool-managed release state of one service. Only cohort writes
//! it, so the hand-written files keep their comments and layout.

use cohort_core::{Pipeline, ReleaseState, ServiceName, TrackName, Version};
use cohort_yaml::Node;
use serde_json::{Map, Value, json};

use crate::diag::{Kind, Sink};
use crate::read::{self, MapReader};

const HEADER: &str = "# Managed by cohort: change it with `cohort deploy`, `promote`, `rollback` and `approve`.\n# Hand edits are refused until committed, and are overwritten by the next change.\n";

/// Reads a state file for `service`.
pub fn read_state(
    root: &Node,
    service: &ServiceName,
    pipeline: &Pipeline,
    sink: &mut Sink<'_>,
) -> Option<ReleaseState> {
    let mut m = MapReader::new(root, "the release state", sink);
    let mut ok = true;
    if let Some(n) = m.opt("service") {
        let t = read::text(n, "`service`", sink).unwrap_or_default();
        if t != service.as_str() {
            sink.error(
                n.pos,
                Kind::Mismatch,
                format!("this state file is for `{t}` but is named after `{service}`"),
                None,
            );
            ok = false;
        }
    }
    let mut state = ReleaseState::default();
    if let Some(t) = m.opt("tracks") {
        let mut tm = MapReader::new(t, "`tracks`", sink);
        for (k, v) in tm.rest() {
            let Some(track) = stage(k, pipeline, "names", sink) else {
                ok = false;
                continue;
            };
            match version(v, sink) {
                Some(ver) => {
                    state.tracks.insert(track, ver);
                }
                None => ok = false,
            }
        }
        tm.finish(sink);
    }
    if let Some(a) = m.opt("approvals") {
        let mut am = MapReader::new(a, "`approvals`", sink);
        for (k, v) in am.rest() {
            let Some(ver) = version(k, sink) else {
                ok = false;
                continue;
            };
            let mut cm = MapReader::new(v, format!("the approvals of {ver}"), sink);
            let mut checks = std::collections::BTreeMap::new();
            for (ck, cv) in cm.rest() {
                let check = read::text(ck, "a check name", sink)
                    .unwrap_or_default()
                    .to_string();
                let note = match &cv.kind {
                    cohort_yaml::NodeKind::Null => String::new(),
                    _ => read::text(cv, "an approval note", sink)
                        .unwrap_or_default()
                        .to_string(),
                };
                checks.insert(check, note);
            }
            cm.finish(sink);
            state.approvals.insert(ver, checks);
        }
        am.finish(sink);
    }
    if let Some(r) = m.opt("ramp") {
        let mut rm = MapReader::new(r, "`ramp`", sink);
        for (k, v) in rm.rest() {
            let Some(track) = stage(k, pipeline, "ramps", sink) else {
                ok = false;
                continue;
            };
            match read::number(v, "a ramp step", 0, 1_000, sink) {
                Some(step) => {
                    state.ramp.insert(track, step as usize);
                }
                None => ok = false,
            }
        }
        rm.finish(sink);
    }
    for (key, slot) in [("paused", &mut state.paused), ("frozen", &mut state.frozen)] {
        if let Some(n) = m.opt(key) {
            match read::text(n, "a reason", sink) {
                Some(reason) => *slot = Some(reason.to_string()),
                None => ok = false,
            }
        }
    }
    m.finish(sink);
    ok.then_some(state)
}

/// A key that must name a stage; otherwise an error that says the state `does` it.
fn stage(k: &Node, pipeline: &Pipeline, does: &str, sink: &mut Sink<'_>) -> Option<TrackName> {
    let name = read::text(k, "a track name", sink).unwrap_or_default();
    let track = TrackName::new(name).ok().filter(|t| pipeline.stages.contains(t));
    if track.is_none() {
        sink.error(
            k.pos,
            Kind::UnknownTrack,
            format!("the release state {does} track `{name}`, which is not a stage"),
            Some(
                "add it to `stages` in cohort.yaml, or roll the service back before removing a stage".into(),
            ),
        );
    }
    track
}

fn version(n: &Node, sink: &mut Sink<'_>) -> Option<Version> {
    let t = read::text(n, "a version", sink)?;
    match Version::new(t) {
        Ok(v) => Some(v),
        Err(e) => {
            sink.error(
                n.pos,
                Kind::BadVersion,
                e.to_string(),
                Some(
                    "versions are like `1.18.0` or `1.19.0-rc.1`: lowercase letters, digits, `.` and `-`"
                        .into(),
                ),
            );
            None
        }
    }
}

/// The file's text for a state: deterministic, so an unchanged state writes identical bytes.
pub fn write_state(service: &ServiceName, state: &ReleaseState) -> String {
    let tracks: Map<String, Value> = state
        .tracks
        .iter()
        .map(|(t, v)| (t.to_string(), json!(v.as_str())))
        .collect();
    let mut doc = Map::new();
    doc.insert("service".into(), json!(service.as_str()));
    doc.insert("tracks".into(), Value::Object(tracks));
    if !state.approvals.is_empty() {
        let approvals: Map<String, Value> = state
            .approvals
            .iter()
            .map(|(v, checks)| {
                (
                    v.to_string(),
                    Value::Object(checks.iter().map(|(c, n)| (c.clone(), json!(n))).collect()),
                )
            })
            .collect();
        doc.insert("approvals".into(), Value::Object(approvals));
    }
    if !state.ramp.is_empty() {
        let ramp: Map<String, Value> = state
            .ramp
            .iter()
            .map(|(t, step)| (t.to_string(), json!(step)))
            .collect();
        doc.insert("ramp".into(), Value::Object(ramp));
    }
    if let Some(reason) = &state.paused {
        doc.insert("paused".into(), json!(reason));
    }
    if let Some(reason) = &state.frozen {
        doc.insert("frozen".into(), json!(reason));
    }
    format!("{HEADER}{}", cohort_yaml::to_yaml(&Value::Object(doc)))
}

#[cfg(test)]
mod tests {
    use crate::repo::validate;
    use crate::scaffold::repo_files;

    #[test]
    fn ramp_steps_pauses_and_freezes_are_written_and_read_back() {
        let mut files = repo_files();
        let (repo, _) = validate(&files);
        let svc = &repo.expect("valid").services[0];
        let mut state = svc.state.clone();
        let canary = cohort_core::TrackName::new("canary").expect("track");
        state.ramp.insert(canary.clone(), 1);
        state.paused = Some("incident 42: \"db\" failover\nsecond line".into());
        state.frozen = Some("black friday".into());
        files.releases[0].1 = super::write_state(&svc.spec.name, &state);
        let (again, diags) = validate(&files);
        assert!(diags.is_empty(), "{diags:?}\n{}", files.releases[0].1);
        assert_eq!(again.expect("valid").services[0].state, state);
    }
}

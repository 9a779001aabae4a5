//! `services/<name>.yaml`: one service's hand-written spec.

use std::collections::BTreeMap;

use cohort_core::{Mirror, Pipeline, ServiceName, ServiceSpec, TrackName};
use cohort_yaml::Node;

use crate::diag::{Kind, Sink};
use crate::pipeline::{name_ok, read_cohorts, read_health_check, read_replicas, read_route};
use crate::read::{self, MapReader};

/// Reads one service spec against the pipeline. `file_stem` is the file's name without
/// `.yaml`, which must match the service's name so people find a service where they expect it.
pub fn read_service(
    root: &Node,
    file_stem: &str,
    pipeline: &Pipeline,
    sink: &mut Sink<'_>,
) -> Option<ServiceSpec> {
    let mut m = MapReader::new(root, "the service file", sink);
    let mut ok = true;
    let name = m
        .req("name", "add `name: <service>`, matching the file name", sink)
        .and_then(|n| {
            let t = read::text(n, "`name`", sink)?;
            match ServiceName::new(t) {
                Ok(name) if name.as_str() != file_stem => {
                    sink.error(
                        n.pos,
                        Kind::Mismatch,
                        format!("the service is named `{t}` but its file is `services/{file_stem}.yaml`"),
                        Some(format!(
                            "rename the file to `services/{t}.yaml` or the service to `{file_stem}`"
                        )),
                    );
                    None
                }
                Ok(name) => Some(name),
                Err(e) => {
                    name_ok(n, Err(e), sink);
                    None
                }
            }
        });
    ok &= name.is_some();
    let image = m
        .req("image", "add `image: <registry>/<repository>`; the version becomes the tag", sink)
        .and_then(|n| {
            let t = read::text(n, "`image`", sink)?;
            if let Err(e) = cohort_core::image::check_repository(t) {
                sink.error(
                    n.pos,
                    Kind::BadName,
                    format!("`image` `{t}` {e}"),
                    Some("write a repository without tag or digest, as the kubelet reads it, e.g. `registry.example.com/shop/account-service`; cohort adds the version as the tag".into()),
                );
                return None;
            }
            Some(t.to_string())
        });
    ok &= image.is_some();
    let port = m.opt("port").map_or(Some(pipeline.defaults.port), |p| {
        read::number(p, "`port`", 1, 65535, sink).map(|p| p as u16)
    });
    let protocol = m.opt("protocol").map_or(Some(Default::default()), |p| {
        read::protocol(p, "`protocol`", sink)
    });
    let mut env = vec![];
    if let Some(e) = m.opt("env") {
        let mut em = MapReader::new(e, "`env`", sink);
        for (k, v) in em.rest() {
            let key = read::text(k, "an environment variable name", sink).unwrap_or_default();
            let valid = !key.is_empty()
                && !key.starts_with(|c: char| c.is_ascii_digit())
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
            if !valid {
                sink.error(
                    k.pos,
                    Kind::BadName,
                    format!("`{key}` is not a valid environment variable name"),
                    Some("use letters, digits and `_`, not starting with a digit".into()),
                );
                ok = false;
                continue;
            }
            match read::text(v, &format!("the value of `{key}`"), sink) {
                Some(val) => env.push((key.to_string(), val.to_string())),
                None => ok = false,
            }
        }
        em.finish(sink);
    }
    let (mut requests, mut limits) = (BTreeMap::new(), BTreeMap::new());
    if let Some(r) = m.opt("resources") {
        let mut rm = MapReader::new(r, "`resources`", sink);
        for (key, target) in [("requests", &mut requests), ("limits", &mut limits)] {
            let Some(n) = rm.opt(key) else { continue };
            let mut qm = MapReader::new(n, format!("`resources.{key}`"), sink);
            for (k, v) in qm.rest() {
                let res = read::text(k, "a resource name", sink)
                    .unwrap_or_default()
                    .to_string();
                match read::text(v, &format!("`{res}`"), sink) {
                    Some(q) if is_quantity(q) => {
                        target.insert(res, q.to_string());
                    }
                    Some(q) => {
                        sink.error(
                            v.pos,
                            Kind::WrongType,
                            format!("`{q}` is not a Kubernetes quantity"),
                            Some("write e.g. `250m` for CPU or `256Mi` for memory".into()),
                        );
                        ok = false;
                    }
                    None => ok = false,
                }
            }
            qm.finish(sink);
        }
        rm.finish(sink);
    }
    let (mut readiness, mut liveness) = (Some(pipeline.defaults.health_check.clone()), None);
    if let Some(p) = m.opt("probes") {
        let mut pm = MapReader::new(p, "`probes`", sink);
        if let Some(r) = pm.opt("readiness") {
            readiness = read_health_check(r, "`probes.readiness`", &pipeline.defaults.health_check, sink);
        }
        if let Some(l) = pm.opt("liveness") {
            liveness = read_health_check(l, "`probes.liveness`", &pipeline.defaults.health_check, sink);
            ok &= liveness.is_some();
        }
        pm.finish(sink);
    }
    let mut replicas = pipeline.defaults.replicas.clone();
    if let Some(r) = m.opt("replicas") {
        match read_replicas(r, "`replicas`", &pipeline.stages, sink) {
            Some(over) => replicas.extend(over),
            None => ok = false,
        }
    }
    let mut cohorts = pipeline.cohorts.clone();
    if let Some(c) = m.opt("cohorts") {
        match read_cohorts(c, &pipeline.stages, "the service file", sink) {
            Some(over) => {
                for (name, route) in over {
                    match cohorts.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(&name)) {
                        Some(slot) => slot.1 = route,
                        None => cohorts.push((name, route)),
                    }
                }
            }
            None => ok = false,
        }
    }
    let default_route = match m.opt("default_route") {
        Some(d) => read_route(d, "`default_route`", &pipeline.stages, sink),
        None => Some(pipeline.default_route.clone()),
    };
    let mirrors = match m.opt("mirror") {
        Some(n) => read_mirrors(n, &pipeline.stages, &cohorts, sink),
        None => Some(vec![]),
    };
    // A service's `judgement` adds checks (or replaces the pipeline's of the same name);
    // how strict judgements are is the pipeline's alone.
    let checks = match m.opt("judgement") {
        Some(n) => {
            let mut jm = MapReader::new(n, "the service's `judgement`", sink);
            let checks = crate::checks::read_checks(&mut jm, sink);
            jm.finish(sink);
            checks.filter(|c| {
                crate::checks::check_servers(c, &pipeline.checks, n, sink)
                    & crate::checks::check_count(c, &pipeline.checks, n, sink)
            })
        }
        None => Some(Default::default()),
    };
    m.finish(sink);
    if !ok {
        return None;
    }
    Some(ServiceSpec {
        name: name?,
        image: image?,
        port: port?,
        protocol: protocol?,
        env,
        requests,
        limits,
        readiness: readiness?,
        liveness,
        replicas,
        cohorts,
        default_route: default_route?,
        mirrors: mirrors?,
        checks: checks?,
    })
}

/// The largest request body a mirror may copy: copies wait in memory until sent.
const MAX_MIRRORED_BODY: u64 = 1 << 20;

/// `mirror:`, a list of `{cohort, from, to, share, max_body}`: `cohort` names one of the
/// service's cohorts or `default` (the default route), `from` and `to` are different stages.
fn read_mirrors(
    n: &Node,
    stages: &[TrackName],
    cohorts: &[(String, cohort_core::Route)],
    sink: &mut Sink<'_>,
) -> Option<Vec<Mirror>> {
    let mut out: Vec<Mirror> = vec![];
    let mut ok = true;
    let names: Vec<&str> = stages.iter().map(TrackName::as_str).collect();
    for item in read::list(n, "`mirror`", sink) {
        let mut m = MapReader::new(item, "a mirror", sink);
        let cohort = m
            .req(
                "cohort",
                "add `cohort: <cohort>` (or `default` for the default route)",
                sink,
            )
            .and_then(|c| {
                let t = read::text(c, "the mirrored cohort", sink)?;
                if t == "default" {
                    return Some(None);
                }
                match cohorts.iter().find(|(name, _)| name.eq_ignore_ascii_case(t)) {
                    Some((name, _)) => Some(Some(name.clone())),
                    None => {
                        let known: Vec<&str> = cohorts.iter().map(|(n, _)| n.as_str()).collect();
                        sink.error(
                            c.pos,
                            Kind::UnknownTrack,
                            format!("`{t}` is not one of the service's cohorts"),
                            Some(format!(
                                "the cohorts are {}, and `default` for everybody else",
                                known.join(", ")
                            )),
                        );
                        None
                    }
                }
            });
        let track = |key: &'static str, help: &'static str, m: &mut MapReader<'_>, sink: &mut Sink<'_>| {
            m.req(key, help, sink).and_then(|t| {
                let text = read::text(t, &format!("`{key}`"), sink)?;
                let found = stages.iter().find(|s| s.as_str() == text).cloned();
                if found.is_none() {
                    sink.error(
                        t.pos,
                        Kind::UnknownTrack,
                        format!("`{text}` is not a track"),
                        Some(format!("the tracks are the stages: {}", names.join(", "))),
                    );
                }
                found.map(|f| (f, t.pos))
            })
        };
        let from = track(
            "from",
            "add `from: <the track whose requests are copied>`",
            &mut m,
            sink,
        );
        let to = track("to", "add `to: <the track the copies go to>`", &mut m, sink);
        let share = m
            .req(
                "share",
                "add `share: <percent of from's requests>`, e.g. `5%`",
                sink,
            )
            .and_then(|w| {
                let share = read::weight(w, "the mirrored share", sink)?;
                if share.basis_points() == 0 {
                    sink.error(
                        w.pos,
                        Kind::OutOfRange,
                        "a mirror of 0% copies nothing",
                        Some("remove the mirror instead".into()),
                    );
                    return None;
                }
                Some(share)
            });
        let max_body = m.opt("max_body").map_or(Some(Mirror::DEFAULT_MAX_BODY), |b| {
            read::bytes(b, "`max_body`", MAX_MIRRORED_BODY, sink)
        });
        m.finish(sink);
        let (Some(cohort), Some((from, _)), Some((to, to_pos)), Some(share), Some(max_body)) =
            (cohort, from, to, share, max_body)
        else {
            ok = false;
            continue;
        };
        if from == to {
            sink.error(
                to_pos,
                Kind::BadRoute,
                format!("a mirror copies `{from}`'s requests to another track, not to `{to}` itself"),
                None,
            );
            ok = false;
            continue;
        }
        if out.iter().any(|o| o.cohort == cohort && o.from == from) {
            sink.error(
                item.pos,
                Kind::Duplicate,
                format!(
                    "`{from}`'s requests of {} are mirrored twice",
                    cohort
                        .as_deref()
                        .map_or("the default route".to_string(), |c| format!("cohort `{c}`"))
                ),
                Some("keep one mirror per cohort and track".into()),
            );
            ok = false;
            continue;
        }
        out.push(Mirror {
            cohort,
            from,
            to,
            share,
            max_body,
        });
    }
    ok.then_some(out)
}

/// Kubernetes' resource quantity: a decimal number with an optional SI or binary suffix.
fn is_quantity(q: &str) -> bool {
    let body = q.strip_prefix(['+', '-']).unwrap_or(q);
    let digits_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (num, suffix) = body.split_at(digits_end);
    let num_ok = !num.is_empty() && num != "." && num.matches('.').count() <= 1;
    let suffix_ok = matches!(
        suffix,
        "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    ) || (suffix.starts_with(['e', 'E'])
        && suffix[1..]
            .strip_prefix(['+', '-'])
            .unwrap_or(&suffix[1..])
            .chars()
            .all(|c| c.is_ascii_digit())
        && suffix.len() > 1);
    num_ok && suffix_ok
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantities() {
        for q in ["250m", "1", "0.5", "256Mi", "1Gi", "1e3", "100k"] {
            assert!(super::is_quantity(q), "{q}");
        }
        for q in ["", "abc", "1GB", "1..2", "Mi"] {
            assert!(!super::is_quantity(q), "{q}");
        }
    }
}

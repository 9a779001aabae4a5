//! What goes over the wire between `cohort serve` and the agents (JSON).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A header on a desired-state answer (value `1`) when the server holds no report from the
/// cluster: the agent reports at once rather than at its next heartbeat.
pub const REPORT_WANTED: &str = "cohort-report-wanted";

/// What one cluster should run, at one revision of the release repo.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DesiredState {
    /// The cluster it is for.
    pub cluster: String,
    /// The release repo's commit.
    pub revision: String,
    /// The namespace the pipeline runs in.
    pub namespace: String,
    /// The pipeline's stages in order (what `cohort status` expects of every service).
    #[serde(default)]
    pub stages: Vec<String>,
    /// The services, each with its rendered objects (empty when the revision is invalid).
    pub services: Vec<DesiredService>,
    /// Why the revision cannot be applied (empty when it can).
    #[serde(default)]
    pub problems: Vec<String>,
}

/// One service's rendered objects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DesiredService {
    /// The service.
    pub name: String,
    /// Its objects as the API server takes them, in render's order.
    pub objects: Vec<Value>,
}

/// What an agent tells the control API after each pass.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The cluster (the server takes it from the token; a different one is refused).
    pub cluster: String,
    /// The agent's version.
    pub agent_version: String,
    /// When the agent wrote the report (seconds since the Unix epoch).
    #[serde(deserialize_with = "whole_seconds")]
    pub at: i64,
    /// The newest revision the agent has seen from its source.
    pub seen_revision: Option<String>,
    /// Per service: what is applied.
    pub services: Vec<ServiceReport>,
    /// Problems not tied to one service: an invalid revision, an unreachable source.
    #[serde(default)]
    pub problems: Vec<String>,
    /// `cohort status`'s evaluation of the namespace, per service.
    #[serde(default)]
    pub health: Vec<ServiceHealth>,
    /// What the cluster's routers counted since the agent's previous report taken, per
    /// service (the autopilot judges on every cluster's sum; see `GET /v1/counts`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counts: Vec<Counted>,
    /// The services whose routers the agent could not read this pass: their counts from this
    /// cluster are missing, so they cannot be judged to pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counts_missing: Vec<String>,
}

/// What one service's routers in a cluster counted over a span.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Counted {
    /// The service.
    pub service: String,
    /// The counts, as the routers' `/stats` gives them, summed over the cluster's routers.
    #[serde(deserialize_with = "whole_numbers")]
    pub stats: cohort_judge::WindowStats,
}

/// Router stats whose counts may also be written as numbers with no fraction (`175.0`),
/// which JSON Schema counts as integers and some JSON writers produce.
fn whole_numbers<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<cohort_judge::WindowStats, D::Error> {
    use serde::de::Error;
    fn integral(v: &mut Value) {
        match v {
            Value::Number(n) => {
                if let Some(f) = n
                    .as_f64()
                    .filter(|f| n.is_f64() && f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64)
                {
                    *v = Value::from(f as u64);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(integral),
            Value::Object(map) => map.values_mut().for_each(integral),
            _ => {}
        }
    }
    let mut value = Value::deserialize(deserializer)?;
    integral(&mut value);
    serde_json::from_value(value).map_err(D::Error::custom)
}

/// The answer to a report some of whose counts were not taken (the rest of it was).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportTaken {
    /// Why each count not taken was refused, e.g. `counts[0] (cart): this cluster does not
    /// run that service`.
    pub counts_refused: Vec<String>,
}

/// The fleet's router counts after a point (`GET /v1/counts?after=`), for the autopilot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetCounts {
    /// Where these counts end (`EPOCH.MARK`): the next read asks for what came `after` this.
    pub until: String,
    /// Whether every count that arrived after the mark asked for is here (false: some were
    /// dropped unread: the reader came too late, or the server held too much).
    pub complete: bool,
    /// Per service, every cluster's counts that arrived in the span, summed.
    pub services: Vec<cohort_judge::WindowStats>,
    /// Clusters whose agent has not reported lately: counts of theirs are missing, so the
    /// services they run cannot be judged to pass.
    pub silent: Vec<SilentCluster>,
}

/// A cluster that has not reported lately.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SilentCluster {
    /// The cluster.
    pub name: String,
    /// The services it runs (`None`: every service).
    pub services: Option<Vec<String>>,
    /// When its last report arrived (`None`: never).
    pub last_report_at: Option<i64>,
    /// It reports, but its agent could not read the routers of `services`.
    #[serde(default)]
    pub unread: bool,
}

impl FleetCounts {
    /// The silent clusters that run `service`, in words, if any.
    pub fn silent_for(&self, service: &str) -> Option<String> {
        let silent: Vec<String> = self
            .silent
            .iter()
            .filter(|c| c.services.as_ref().is_none_or(|s| s.iter().any(|s| s == service)))
            .map(|c| match (c.unread, c.last_report_at) {
                (true, _) => format!("{} (its agent cannot read the routers)", c.name),
                (false, Some(at)) => format!("{} (last report at {at})", c.name),
                (false, None) => format!("{} (no report yet)", c.name),
            })
            .collect();
        (!silent.is_empty()).then(|| silent.join(", "))
    }
}

/// One service as an agent sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceReport {
    /// The service.
    pub name: String,
    /// The revision whose objects are applied (`None`: never applied by this agent).
    pub applied_revision: Option<String>,
    /// `applied`, `pending` (a newer revision waits) or `failed`.
    pub state: ServiceState,
    /// Why the last apply failed.
    pub error: Option<String>,
}

/// Where a service stands in an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    /// The seen revision is applied.
    Applied,
    /// A newer revision is waiting to be applied.
    Pending,
    /// The last apply failed; it is retried on the next pass.
    Failed,
}

/// `cohort status`'s verdict on one service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceHealth {
    /// The service.
    pub service: String,
    /// Whether nothing is wrong (warnings allowed).
    pub healthy: bool,
    /// What is wrong, as `cohort status` words it.
    pub findings: Vec<String>,
}

/// Every cluster's last word, for `cohort status --fleet`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    /// The release repo's current revision.
    pub revision: Option<String>,
    /// The clusters named in the tokens file, by name.
    pub clusters: Vec<FleetCluster>,
}

/// One cluster in the fleet view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetCluster {
    /// Its name.
    pub name: String,
    /// When its agent last asked for its desired state (seconds since the Unix epoch).
    pub last_poll: Option<i64>,
    /// When its last report arrived.
    pub last_report_at: Option<i64>,
    /// Its last report.
    pub report: Option<Report>,
}

/// An integer, also written as a number with no fraction (`11.0`), which JSON Schema (and so
/// the OpenAPI document) counts as an integer and some clients' JSON writers produce.
fn whole_seconds<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    use serde::de::Error;
    match serde_json::Number::deserialize(deserializer)? {
        n if n.is_i64() => n.as_i64().ok_or_else(|| D::Error::custom("not an integer")),
        n => match n.as_f64() {
            // i64::MAX as f64 rounds up to 2^63, which is out of range: hence the strict `<`.
            Some(f) if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 => Ok(f as i64),
            _ => Err(D::Error::custom(format!(
                "invalid value: {n}, expected whole seconds since the Unix epoch (a 64-bit integer)"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::Report;

    fn at(text: &str) -> Result<i64, serde_json::Error> {
        serde_json::from_str::<Report>(&format!(
            r#"{{"cluster": "eu-west", "agent_version": "1", "at": {text}, "seen_revision": null, "services": []}}"#
        ))
        .map(|r| r.at)
    }

    #[test]
    fn counts_written_as_whole_floats_are_taken_and_fractions_are_not() {
        let report = |requests: &str| {
            serde_json::from_str::<Report>(&format!(
                r#"{{"cluster": "eu", "agent_version": "1", "at": 1, "services": [], "counts": [{{"service": "s",
                "stats": {{"service": "s", "window_seconds": 30.0, "latency_bounds_ms": [1.0, 2.5], "until": 7,
                "series": [{{"track": "canary", "version": "1", "cohort": "FREE", "requests": {requests},
                "errors": 0, "latency": [1, 0, 0], "seconds": 3}}]}}}}]}}"#
            ))
        };
        let taken = report("175.0").expect("a whole float");
        let stats = &taken.counts[0].stats;
        assert_eq!(stats.series[0].counts.requests, 175);
        // The regression this pins: parsed inexactly, a large whole float came back with a
        // fraction and a valid report was refused.
        let large = report("2010695587220485.0").expect("a large whole float");
        assert_eq!(
            large.counts[0].stats.series[0].counts.requests,
            2_010_695_587_220_485
        );
        assert_eq!(stats.window_seconds, 30);
        assert_eq!(stats.latency_bounds_ms, [1.0, 2.5]);
        assert!(report("17.5").is_err());
        assert!(report("-1").is_err());
    }

    #[test]
    fn a_report_time_written_as_a_whole_float_is_taken_and_a_fraction_or_overflow_is_not() {
        assert_eq!(at("1763800000").expect("integer"), 1_763_800_000);
        assert_eq!(at("11.0").expect("whole float"), 11);
        assert_eq!(at("-5").expect("negative"), -5);
        assert!(at("11.5").is_err());
        assert!(at("9223372036854775808").is_err());
        assert!(at("-2.7475073341026986e24").is_err());
        assert!(at("\"11\"").is_err());
    }
}

//! Prometheus checks, judged: an instant query's answer read to one value, a ratio of two
//! counts judged with the router's own two-proportion test, and a value judged against the
//! baseline's or thresholds.

use cohort_core::checks::ValueRule;
use cohort_judge::{Counts, Settings};
use serde_json::Value;

use crate::{CheckResult, Outcome};

/// What an instant query answered.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// One value (a one-series vector or a scalar).
    Value(f64),
    /// No series: nothing matched (yet).
    Nothing,
}

/// Why an answer could not be read to one value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// Prometheus refused the query.
    #[error("Prometheus refused the query ({kind}): {message}")]
    Refused {
        /// `bad_data`, `execution`, `timeout`...
        kind: String,
        /// Its message.
        message: String,
    },
    /// More than one series: the query must aggregate them.
    #[error("the query returned {count} series ({first} ...); aggregate them to one, e.g. with sum()")]
    Series {
        /// How many.
        count: usize,
        /// The first one's labels.
        first: String,
    },
    /// A range vector or a string.
    #[error("the query returned a {0}, not one value; make it an instant vector or a scalar")]
    Shape(String),
    /// Not the JSON of Prometheus's HTTP API.
    #[error("the answer is not Prometheus's query API: {0}")]
    NotPrometheus(String),
    /// A success with warnings: Thanos, Cortex or Mimir answering from part of their stores.
    #[error("the answer came with warnings, so it may be partial: {0}")]
    Warnings(String),
}

/// Reads the body of `/api/v1/query` to one value.
pub fn read_answer(body: &[u8]) -> Result<Answer, AnswerError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| AnswerError::NotPrometheus(e.to_string()))?;
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    match v.get("status").and_then(Value::as_str) {
        Some("success") => {}
        Some("error") => {
            return Err(AnswerError::Refused {
                kind: field(&v, "errorType"),
                message: field(&v, "error"),
            });
        }
        _ => return Err(AnswerError::NotPrometheus("no `status`".into())),
    }
    // A partial sum judged as a whole could pass a track on missing data.
    if let Some(w) = v
        .get("warnings")
        .and_then(Value::as_array)
        .filter(|w| !w.is_empty())
    {
        let texts: Vec<String> = w
            .iter()
            .take(3)
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
            .collect();
        return Err(AnswerError::Warnings(texts.join("; ")));
    }
    let data = v
        .get("data")
        .ok_or_else(|| AnswerError::NotPrometheus("no `data`".into()))?;
    let sample = |s: &Value| -> Result<f64, AnswerError> {
        // [unix time, "value"]; values are strings so NaN and ±Inf can be written.
        let text = s
            .get(1)
            .and_then(Value::as_str)
            .ok_or_else(|| AnswerError::NotPrometheus("a sample is not [time, \"value\"]".into()))?;
        match text {
            "NaN" => Ok(f64::NAN),
            "+Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            t => t
                .parse::<f64>()
                .map_err(|_| AnswerError::NotPrometheus(format!("a sample's value is `{t}`"))),
        }
    };
    match data.get("resultType").and_then(Value::as_str) {
        Some("vector") => {
            let result = data
                .get("result")
                .and_then(Value::as_array)
                .ok_or_else(|| AnswerError::NotPrometheus("no `result` list".into()))?;
            match result.as_slice() {
                [] => Ok(Answer::Nothing),
                [one] => Ok(Answer::Value(sample(one.get("value").unwrap_or(&Value::Null))?)),
                [first, ..] => Err(AnswerError::Series {
                    count: result.len(),
                    first: labels(first.get("metric")),
                }),
            }
        }
        Some("scalar") => Ok(Answer::Value(sample(data.get("result").unwrap_or(&Value::Null))?)),
        Some(other) => Err(AnswerError::Shape(match other {
            "matrix" => "range vector".to_string(),
            o => o.to_string(),
        })),
        None => Err(AnswerError::NotPrometheus("no `resultType`".into())),
    }
}

/// `{a="b",c="d"}`, at most 200 characters.
fn labels(metric: Option<&Value>) -> String {
    let pairs: Vec<String> = metric
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    format!(
                        "{k}={}",
                        v.as_str().map_or_else(|| v.to_string(), |s| format!("{s:?}"))
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let text = format!("{{{}}}", pairs.join(","));
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// Shortest readable form of a value: `0.0213`, `1.2e6`.
pub fn number(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if (1e-3..1e6).contains(&a) {
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    } else {
        format!("{v:.3e}")
    }
}

/// A ratio check: `errors` and `requests` counted over the window for the track and the
/// baseline (Prometheus's `increase` extrapolates, so counts are rounded), judged with the
/// router's own one-sided two-proportion test, the same settings, the same need for enough
/// events before a pass.
pub fn judge_ratio(
    name: &str,
    track: (Answer, Answer),
    baseline: (Answer, Answer),
    settings: &Settings,
) -> CheckResult {
    let counts = |(e, r): &(Answer, Answer)| -> Option<Counts> {
        let (Answer::Value(e), Answer::Value(r)) = (e, r) else {
            return None;
        };
        // A counter that was reset or a query that subtracts can go below zero; NaN is a
        // division somewhere. Neither is a count.
        if !(e.is_finite() && r.is_finite() && *e >= 0.0 && *r >= 0.0) {
            return None;
        }
        let requests = r.round() as u64;
        Some(Counts {
            requests,
            errors: (e.round() as u64).min(requests),
            latency: vec![],
        })
    };
    let mut result = CheckResult::new(name, "prometheus", Outcome::Inconclusive, "");
    result.queries = 4;
    let (Some(t), Some(b)) = (counts(&track), counts(&baseline)) else {
        let side = match counts(&track) {
            None => "the track",
            Some(_) => "the baseline",
        };
        result.summary = format!(
            "no counts for {side} (a query returned nothing, or not a count: NaN, infinite or negative)"
        );
        return result;
    };
    let rate = |c: &Counts| match c.requests {
        0 => 0.0,
        n => c.errors as f64 / n as f64,
    };
    let (tr, br) = (rate(&t), rate(&b));
    result.track_value = Some(tr);
    result.baseline_value = Some(br);
    let test = cohort_judge::error_test(&t, &b, settings);
    let needed = cohort_judge::needed_requests(br, settings);
    let pct = |r: f64| format!("{:.2}%", r * 100.0);
    let enough_to_fail = t.requests >= settings.min_requests && b.requests >= settings.min_requests;
    let over = format!(
        "{} against {}, over {} and {} events",
        pct(tr),
        pct(br),
        t.requests,
        b.requests
    );
    (result.outcome, result.summary) = if enough_to_fail && test.worse {
        (Outcome::Fail, format!("{over} (p = {:.2e})", test.p_value))
    } else if t.requests >= needed && b.requests >= needed {
        (Outcome::Pass, over)
    } else {
        let more = needed.saturating_sub(t.requests.min(b.requests)).max(1);
        (
            Outcome::Inconclusive,
            format!("{over}; need ~{more} more events on each side"),
        )
    };
    result
}

/// A value check: the track's value against the baseline's (`must_not_drop_by`,
/// `must_not_rise_by`) and thresholds (`at_most`, `at_least`). One value each: no test of
/// chance is possible, so the rule is the judgement (write rates per request, not totals:
/// a canary with 5% of the traffic has 5% of the checkouts).
pub fn judge_value(name: &str, rule: &ValueRule, track: Answer, baseline: Option<Answer>) -> CheckResult {
    let mut result = CheckResult::new(name, "prometheus", Outcome::Inconclusive, "");
    result.queries = 1 + u32::from(baseline.is_some());
    let Answer::Value(t) = track else {
        result.summary = "the query returned nothing for the track (no series: no traffic yet, or labels that do not match)".into();
        return result;
    };
    result.track_value = Some(t);
    if t.is_nan() {
        result.summary =
            "the query's value for the track is NaN (a division by zero: no traffic yet?)".into();
        return result;
    }
    let b = match baseline {
        None => None,
        Some(Answer::Nothing) => {
            result.summary = "the query returned nothing for the baseline (no series)".into();
            return result;
        }
        Some(Answer::Value(b)) if b.is_nan() => {
            result.baseline_value = Some(b);
            result.summary =
                "the query's value for the baseline is NaN (a division by zero: no traffic?)".into();
            return result;
        }
        Some(Answer::Value(b)) => {
            result.baseline_value = Some(b);
            Some(b)
        }
    };
    let mut broken = vec![];
    let mut held = vec![];
    // An infinite value (a division by zero, a quantile past the last bucket) has no
    // share to drop or rise by: compared, it says nothing.
    let unmeasurable = b.filter(|b| rule.compares_with_baseline() && !(t.is_finite() && b.is_finite()));
    let against = |b: f64| match b {
        0.0 => format!("{} against {}", number(t), number(b)),
        _ => format!(
            "{} against {} ({:+.1}%)",
            number(t),
            number(b),
            (t - b) / b.abs() * 100.0
        ),
    };
    let b = b.filter(|_| unmeasurable.is_none());
    if let (Some(d), Some(b)) = (rule.must_not_drop_by, b) {
        let floor = b - b.abs() * d;
        let line = format!("{}, may drop by {:.0}%", against(b), d * 100.0);
        match t < floor {
            true => broken.push(line),
            false => held.push(line),
        }
    }
    if let (Some(r), Some(b)) = (rule.must_not_rise_by, b) {
        let ceiling = b + b.abs() * r;
        let line = format!("{}, may rise by {:.0}%", against(b), r * 100.0);
        match t > ceiling {
            true => broken.push(line),
            false => held.push(line),
        }
    }
    if let Some(most) = rule.at_most {
        let line = format!("{} where at most {} is allowed", number(t), number(most));
        match t > most {
            true => broken.push(line),
            false => held.push(line),
        }
    }
    if let Some(least) = rule.at_least {
        let line = format!("{} where at least {} is needed", number(t), number(least));
        match t < least {
            true => broken.push(line),
            false => held.push(line),
        }
    }
    (result.outcome, result.summary) = match (broken.is_empty(), unmeasurable) {
        (false, _) => (Outcome::Fail, broken.join("; ")),
        (true, Some(b)) => (
            Outcome::Inconclusive,
            format!(
                "{} against {}: not finite, so no change can be measured (a division by zero, or a quantile past the last bucket?)",
                number(t),
                number(b)
            ),
        ),
        (true, None) => (Outcome::Pass, held.join("; ")),
    };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(values: &[&str]) -> Vec<u8> {
        let result: Vec<Value> = values
            .iter()
            .enumerate()
            .map(|(i, v)| serde_json::json!({"metric": {"track": format!("t{i}")}, "value": [1.7e9, v]}))
            .collect();
        serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": result}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn an_answer_is_one_value_nothing_or_a_located_refusal() {
        assert_eq!(read_answer(&vector(&["0.25"])), Ok(Answer::Value(0.25)));
        assert_eq!(read_answer(&vector(&[])), Ok(Answer::Nothing));
        assert!(matches!(read_answer(&vector(&["NaN"])), Ok(Answer::Value(v)) if v.is_nan()));
        assert_eq!(read_answer(&vector(&["+Inf"])), Ok(Answer::Value(f64::INFINITY)));
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1.7e9,"3"]}}"#;
        assert_eq!(read_answer(scalar), Ok(Answer::Value(3.0)));
        let err = read_answer(&vector(&["1", "2", "3"])).expect_err("three series");
        assert_eq!(
            err.to_string(),
            "the query returned 3 series ({track=\"t0\"} ...); aggregate them to one, e.g. with sum()"
        );
        let refused =
            br#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected \"}\""}"#;
        assert_eq!(
            read_answer(refused).expect_err("refused").to_string(),
            "Prometheus refused the query (bad_data): 1:5: parse error: unexpected \"}\""
        );
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(matches!(read_answer(matrix), Err(AnswerError::Shape(s)) if s == "range vector"));
        for junk in [&b"<html>"[..], b"{}", b"{\"status\":\"success\"}", b"[1,2]"] {
            assert!(
                matches!(read_answer(junk), Err(AnswerError::NotPrometheus(_))),
                "{junk:?}"
            );
        }
        let bad_sample = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}"#;
        assert!(matches!(
            read_answer(bad_sample),
            Err(AnswerError::NotPrometheus(_))
        ));
    }

    fn v(x: f64) -> Answer {
        Answer::Value(x)
    }

    #[test]
    fn a_ratio_is_judged_with_the_routers_own_test_and_needs_enough_events() {
        let s = Settings::default();
        // 8% against 0.2% over a thousand events each: worse.
        let r = judge_ratio("e", (v(80.0), v(1000.0)), (v(2.0), v(1000.0)), &s);
        assert_eq!(r.outcome, Outcome::Fail, "{r:?}");
        assert!(
            r.summary
                .starts_with("8.00% against 0.20%, over 1000 and 1000 events (p = "),
            "{}",
            r.summary
        );
        assert_eq!(r.queries, 4);
        // The same rates over plenty of events: a pass.
        let r = judge_ratio("e", (v(20.0), v(10000.0)), (v(21.0), v(10000.0)), &s);
        assert_eq!(r.outcome, Outcome::Pass, "{r:?}");
        // Healthy but few: inconclusive, saying how many more.
        let r = judge_ratio("e", (v(0.0), v(60.0)), (v(0.0), v(60.0)), &s);
        assert_eq!(r.outcome, Outcome::Inconclusive, "{r:?}");
        assert!(r.summary.contains("more events on each side"), "{}", r.summary);
        // Extrapolated counts are rounded; errors never exceed requests.
        let r = judge_ratio("e", (v(1200.4), v(1000.2)), (v(0.0), v(1000.0)), &s);
        assert_eq!(r.track_value, Some(1.0));
        // No series, NaN or a negative count: nothing to judge, never a pass.
        for track in [
            (Answer::Nothing, v(10.0)),
            (v(f64::NAN), v(10.0)),
            (v(-1.0), v(10.0)),
        ] {
            let r = judge_ratio("e", track, (v(0.0), v(100.0)), &s);
            assert_eq!(r.outcome, Outcome::Inconclusive);
            assert!(r.summary.starts_with("no counts for the track"), "{}", r.summary);
        }
    }

    #[test]
    fn a_value_is_judged_against_the_baseline_and_thresholds() {
        let drop = ValueRule {
            must_not_drop_by: Some(0.1),
            ..ValueRule::default()
        };
        let r = judge_value("c", &drop, v(0.02), Some(v(0.05)));
        assert_eq!(r.outcome, Outcome::Fail, "{r:?}");
        assert_eq!(r.summary, "0.02 against 0.05 (-60.0%), may drop by 10%");
        assert_eq!(
            judge_value("c", &drop, v(0.046), Some(v(0.05))).outcome,
            Outcome::Pass
        );
        assert_eq!(
            judge_value("c", &drop, v(0.5), Some(v(0.05))).outcome,
            Outcome::Pass
        );
        let rise = ValueRule {
            must_not_rise_by: Some(0.25),
            at_most: Some(0.5),
            ..ValueRule::default()
        };
        assert_eq!(
            judge_value("p99", &rise, v(0.3), Some(v(0.2))).outcome,
            Outcome::Fail
        );
        assert_eq!(
            judge_value("p99", &rise, v(0.24), Some(v(0.2))).outcome,
            Outcome::Pass
        );
        let r = judge_value("p99", &rise, v(0.6), Some(v(0.55)));
        assert_eq!(r.outcome, Outcome::Fail);
        assert_eq!(r.summary, "0.6 where at most 0.5 is allowed");
        let least = ValueRule {
            at_least: Some(10.0),
            ..ValueRule::default()
        };
        assert_eq!(judge_value("q", &least, v(9.0), None).outcome, Outcome::Fail);
        assert_eq!(judge_value("q", &least, v(10.0), None).queries, 1);
        // Nothing or NaN on either side: inconclusive, with the reason.
        let r = judge_value("c", &drop, Answer::Nothing, Some(v(1.0)));
        assert_eq!(r.outcome, Outcome::Inconclusive);
        assert!(
            r.summary.contains("returned nothing for the track"),
            "{}",
            r.summary
        );
        let r = judge_value("c", &drop, v(1.0), Some(Answer::Nothing));
        assert!(
            r.summary.contains("returned nothing for the baseline"),
            "{}",
            r.summary
        );
        assert_eq!(
            judge_value("c", &drop, v(f64::NAN), Some(v(1.0))).outcome,
            Outcome::Inconclusive
        );
        assert_eq!(
            judge_value("c", &drop, v(1.0), Some(v(f64::NAN))).outcome,
            Outcome::Inconclusive
        );
    }

    #[test]
    fn an_infinite_value_compared_with_the_baseline_is_inconclusive_not_a_pass() {
        // Found in review: `inf - inf * d` is NaN, every comparison with it false: a pass.
        let drop = ValueRule {
            must_not_drop_by: Some(0.1),
            ..ValueRule::default()
        };
        let r = judge_value("c", &drop, v(0.0), Some(v(f64::INFINITY)));
        assert_eq!(r.outcome, Outcome::Inconclusive, "{r:?}");
        assert!(r.summary.contains("not finite"), "{}", r.summary);
        let r = judge_value("c", &drop, v(-1e9), Some(v(f64::NEG_INFINITY)));
        assert_eq!(r.outcome, Outcome::Inconclusive);
        let rise = ValueRule {
            must_not_rise_by: Some(0.25),
            ..ValueRule::default()
        };
        let r = judge_value("p99", &rise, v(f64::INFINITY), Some(v(f64::INFINITY)));
        assert_eq!(r.outcome, Outcome::Inconclusive);
        // A threshold still judges an infinite value.
        let capped = ValueRule {
            at_most: Some(0.5),
            ..rise
        };
        assert_eq!(
            judge_value("p99", &capped, v(f64::INFINITY), Some(v(0.2))).outcome,
            Outcome::Fail
        );
    }

    #[test]
    fn a_partial_answer_with_warnings_could_not_be_judged() {
        // Found in review: Thanos answers a partial sum as a success with warnings.
        let partial = br#"{"status":"success","warnings":["partial response: store 10.0.0.7:10901 unavailable"],"data":{"resultType":"vector","result":[{"metric":{},"value":[1.7e9,"0.5"]}]}}"#;
        assert_eq!(
            read_answer(partial).expect_err("partial").to_string(),
            "the answer came with warnings, so it may be partial: partial response: store 10.0.0.7:10901 unavailable"
        );
        let none = br#"{"status":"success","warnings":[],"data":{"resultType":"scalar","result":[1,"2"]}}"#;
        assert_eq!(read_answer(none), Ok(Answer::Value(2.0)));
    }
}

//! Web checks, judged: the status a URL answered and, optionally, a value in its JSON.

use cohort_core::checks::{Expect, JsonPath, PathStep, WebCheck};
use serde_json::Value;

use crate::{CheckResult, Outcome};

/// The value at `path`, if there is one.
pub fn lookup<'v>(value: &'v Value, path: &JsonPath) -> Option<&'v Value> {
    path.steps.iter().try_fold(value, |v, step| match step {
        PathStep::Member(m) => v.get(m.as_str()),
        PathStep::Index(i) => v.get(*i),
    })
}

/// Whether `found` is what `expect` says, and how it reads.
fn compare(found: &Value, expect: &Expect) -> Result<bool, String> {
    let as_number = || match found {
        Value::Number(n) => n.as_f64(),
        // Some APIs write numbers as strings ("0.93").
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    };
    match expect {
        Expect::Equals(want) => Ok(match found {
            Value::String(s) => s == want,
            Value::Number(n) => {
                want.parse::<f64>()
                    .ok()
                    .zip(n.as_f64())
                    .is_some_and(|(w, n)| w == n)
                    || n.to_string() == *want
            }
            Value::Bool(b) => b.to_string() == *want,
            Value::Null => want == "null",
            _ => false,
        }),
        Expect::AtLeast(least) => as_number()
            .map(|n| n >= *least)
            .ok_or_else(|| format!("{} is not a number", short(found))),
        Expect::AtMost(most) => as_number()
            .map(|n| n <= *most)
            .ok_or_else(|| format!("{} is not a number", short(found))),
    }
}

/// A value as JSON, at most 120 characters.
fn short(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

fn wanted(expect: &Expect) -> String {
    match expect {
        Expect::Equals(w) => format!("`{w}`"),
        Expect::AtLeast(n) => format!("at least {}", crate::prometheus::number(*n)),
        Expect::AtMost(n) => format!("at most {}", crate::prometheus::number(*n)),
    }
}

/// Judges what `url` answered: the status first, then the value at the JSON path.
pub fn judge(name: &str, check: &WebCheck, url: &str, status: u16, body: &[u8]) -> CheckResult {
    let mut result = CheckResult::new(name, "web", Outcome::Pass, "");
    result.evidence.push(format!("GET {url} answered {status}"));
    if status != check.status {
        // A redirect (not followed) or refused credentials say nothing of the track: failing
        // on them would roll back every canary once a token expires or a URL moves.
        let unjudged = match status {
            300..=399 => Some("a redirect, not followed: give the final URL"),
            401 | 407 => Some("the credentials were refused or missing"),
            403 => Some("access is forbidden to the check's credentials"),
            _ => None,
        };
        if let Some(why) = unjudged {
            result.outcome = Outcome::CouldNotJudge;
            result.summary = format!("{url} answered {status} ({why})");
            return result;
        }
        result.outcome = Outcome::Fail;
        result.summary = format!("{url} answered {status}, not {}", check.status);
        let start = String::from_utf8_lossy(&body[..body.len().min(300)])
            .trim()
            .to_string();
        if !start.is_empty() {
            result.evidence.push(format!("answer: {start}"));
        }
        return result;
    }
    let (Some(path), Some(expect)) = (&check.json_path, &check.expect) else {
        result.summary = format!("{url} answered {status}");
        return result;
    };
    let json: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            result.outcome = Outcome::CouldNotJudge;
            result.summary = format!("{url} answered {status}, but not with JSON ({e})");
            return result;
        }
    };
    let Some(found) = lookup(&json, path) else {
        result.outcome = Outcome::CouldNotJudge;
        result.summary = format!("{url}'s answer has nothing at `{}`", path.text);
        return result;
    };
    if let Value::Number(n) = found {
        result.track_value = n.as_f64();
    }
    match compare(found, expect) {
        Ok(true) => result.summary = format!("`{}` is {}", path.text, short(found)),
        Ok(false) => {
            result.outcome = Outcome::Fail;
            result.summary = format!("`{}` is {}, not {}", path.text, short(found), wanted(expect));
        }
        Err(why) => {
            result.outcome = Outcome::CouldNotJudge;
            result.summary = format!("`{}`: {why}, so it cannot be {}", path.text, wanted(expect));
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use cohort_core::checks::Template;

    use super::*;

    fn check(path: Option<&str>, expect: Option<Expect>) -> WebCheck {
        WebCheck {
            url: Template::parse("http://x/").expect("valid"),
            status: 200,
            json_path: path.map(|p| JsonPath::parse(p).expect("valid")),
            expect,
            bearer_token: None,
            ca_file: None,
        }
    }

    const BODY: &[u8] =
        br#"{"checks":{"db":{"ok":true,"latency":"0.012"}},"items":[{"state":"ready","n":7}]}"#;

    #[test]
    fn the_status_decides_when_no_value_is_named() {
        let c = check(None, None);
        assert_eq!(judge("w", &c, "http://x/", 200, b"").outcome, Outcome::Pass);
        let r = judge("w", &c, "http://x/", 503, b"upstream down\n");
        assert_eq!(r.outcome, Outcome::Fail);
        assert_eq!(r.summary, "http://x/ answered 503, not 200");
        assert_eq!(
            r.evidence,
            ["GET http://x/ answered 503", "answer: upstream down"]
        );
    }

    #[test]
    fn a_value_at_a_json_path_is_compared_as_written() {
        let eq = |p: &str, w: &str| {
            judge(
                "w",
                &check(Some(p), Some(Expect::Equals(w.into()))),
                "u",
                200,
                BODY,
            )
        };
        assert_eq!(eq("checks.db.ok", "true").outcome, Outcome::Pass);
        assert_eq!(eq("items[0].state", "ready").outcome, Outcome::Pass);
        assert_eq!(eq("items[0].n", "7").outcome, Outcome::Pass);
        assert_eq!(eq("items[0].n", "7.0").outcome, Outcome::Pass);
        let r = eq("items[0].state", "draining");
        assert_eq!(r.outcome, Outcome::Fail);
        assert_eq!(r.summary, "`items[0].state` is \"ready\", not `draining`");
        let num = |p: &str, e: Expect| judge("w", &check(Some(p), Some(e)), "u", 200, BODY).outcome;
        assert_eq!(num("items[0].n", Expect::AtLeast(7.0)), Outcome::Pass);
        assert_eq!(num("items[0].n", Expect::AtMost(6.0)), Outcome::Fail);
        assert_eq!(num("checks.db.latency", Expect::AtMost(0.05)), Outcome::Pass);
        // What cannot be compared is not a pass.
        assert_eq!(num("checks.db.ok", Expect::AtLeast(1.0)), Outcome::CouldNotJudge);
        assert_eq!(num("items[3].n", Expect::AtLeast(1.0)), Outcome::CouldNotJudge);
        let r = judge(
            "w",
            &check(Some("a"), Some(Expect::AtLeast(1.0))),
            "u",
            200,
            b"<html>",
        );
        assert_eq!(r.outcome, Outcome::CouldNotJudge);
        assert!(
            r.summary.starts_with("u answered 200, but not with JSON"),
            "{}",
            r.summary
        );
    }

    #[test]
    fn a_redirect_or_refused_credentials_could_not_be_judged_rather_than_fail_the_track() {
        // Found in review: an expired token failed (and so rolled back) every canary.
        let c = check(None, None);
        for status in [301, 302, 307, 401, 403, 407] {
            let r = judge("w", &c, "http://x/", status, b"");
            assert_eq!(r.outcome, Outcome::CouldNotJudge, "{status}");
        }
        let expects_redirect = WebCheck { status: 302, ..c };
        assert_eq!(
            judge("w", &expects_redirect, "http://x/", 302, b"").outcome,
            Outcome::Pass
        );
    }
}

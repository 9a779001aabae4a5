//! Adding up what several routers answered to `/stats`: each answer checked (is it router
//! stats, of the service expected), merged per service, and for readers that come back
//! (`/stats?after=`), where each router's counts ended so that the next read starts there.
//! Used by the autopilot (routers read itself) and the agent (routers of its cluster).

use std::collections::BTreeMap;

use crate::WindowStats;

/// One router's answer to `/stats`, as it was read.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// Where it came from: a URL or `pod NAME`.
    pub source: String,
    /// The service it should route, when known (a router found by its service's label).
    pub expected: Option<String>,
    /// Its body, or why it could not be read.
    pub body: Result<String, String>,
}

/// What the answers added up to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gathered {
    /// Per service, every router's counts summed.
    pub stats: BTreeMap<String, WindowStats>,
    /// The answers that could not be used, and why.
    pub unread: Vec<(String, String)>,
}

impl Gathered {
    /// Whether nothing at all could be read of answers there were.
    pub fn all_unread(&self) -> bool {
        self.stats.is_empty() && !self.unread.is_empty()
    }
}

/// Adds the answers up. With `until` (a reader that adds reads up over time) each source's
/// last second is recorded there, and a router too old to say where its counts end is not
/// used, since its whole window would be counted again at every read.
pub fn gather(answers: Vec<Answer>, mut until: Option<&mut BTreeMap<String, u64>>) -> Gathered {
    let mut out = Gathered::default();
    for Answer {
        source,
        expected,
        body,
    } in answers
    {
        let read = body.and_then(|text| {
            serde_json::from_str::<WindowStats>(&text)
                .map_err(|e| format!("it did not answer with router stats: {e}"))
        });
        let read = match read {
            Ok(s) if expected.as_ref().is_some_and(|e| *e != s.service) => Err(format!(
                "it routes {}, not {}",
                s.service,
                expected.unwrap_or_default()
            )),
            Ok(s) if until.is_some() && s.until == 0 => Err(
                "it is too old to say where its window ends, which adding reads up needs; upgrade it"
                    .to_string(),
            ),
            other => other,
        };
        let merged = read.and_then(|s| {
            let last = s.until;
            match out.stats.get_mut(&s.service) {
                Some(sum) => sum.merge(s).map_err(|e| e.to_string())?,
                None => {
                    out.stats.insert(s.service.clone(), s);
                }
            }
            Ok(last)
        });
        match merged {
            Ok(last) => {
                if let Some(until) = until.as_deref_mut() {
                    until.insert(source, last);
                }
            }
            Err(why) => out.unread.push((source, why)),
        }
    }
    out
}

/// The `/stats` query for `source`: what it counted after the second it was last read up to,
/// else its last `window_seconds`.
pub fn query(source: &str, until: &BTreeMap<String, u64>, window_seconds: u64) -> String {
    match until.get(source) {
        Some(second) => format!("stats?after={second}"),
        None => format!("stats?window={window_seconds}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Counts, LATENCY_BOUNDS_MS, Series};

    fn stats(service: &str, requests: u64, until: u64) -> String {
        serde_json::to_string(&WindowStats {
            service: service.into(),
            window_seconds: 60,
            latency_bounds_ms: LATENCY_BOUNDS_MS.to_vec(),
            series: vec![Series {
                track: "canary".into(),
                version: "1.2.0".into(),
                cohort: "FREE".into(),
                seconds: 10,
                counts: Counts {
                    requests,
                    errors: 1,
                    latency: vec![0; LATENCY_BOUNDS_MS.len() + 1],
                },
            }],
            until,
        })
        .expect("json")
    }

    fn answer(source: &str, expected: Option<&str>, body: Result<String, String>) -> Answer {
        Answer {
            source: source.into(),
            expected: expected.map(Into::into),
            body,
        }
    }

    #[test]
    fn routers_of_a_service_add_up_and_each_source_remembers_its_last_second() {
        let mut until = BTreeMap::new();
        let got = gather(
            vec![
                answer("pod a", Some("shop"), Ok(stats("shop", 10, 100))),
                answer("pod b", Some("shop"), Ok(stats("shop", 5, 101))),
                answer("http://x", None, Ok(stats("cart", 7, 99))),
            ],
            Some(&mut until),
        );
        assert!(got.unread.is_empty(), "{:?}", got.unread);
        assert_eq!(got.stats["shop"].series[0].counts.requests, 15);
        assert_eq!(got.stats["cart"].series[0].counts.requests, 7);
        assert_eq!(until["pod a"], 100);
        assert_eq!(until["pod b"], 101);
        assert_eq!(query("pod a", &until, 60), "stats?after=100");
        assert_eq!(query("pod c", &until, 60), "stats?window=60s");
    }

    #[test]
    fn what_cannot_be_used_is_said_with_its_source_and_counted_nowhere() {
        let mut until = BTreeMap::new();
        let got = gather(
            vec![
                answer("pod a", Some("shop"), Ok(stats("cart", 10, 100))),
                answer("pod b", Some("shop"), Ok("<html>".into())),
                answer("pod c", Some("shop"), Err("no answer in 10 s".into())),
                answer("pod d", Some("shop"), Ok(stats("shop", 3, 0))),
            ],
            Some(&mut until),
        );
        assert!(got.stats.is_empty());
        assert!(got.all_unread());
        let why: Vec<&str> = got.unread.iter().map(|(_, w)| w.as_str()).collect();
        assert_eq!(why[0], "it routes cart, not shop");
        assert!(why[1].starts_with("it did not answer with router stats"));
        assert_eq!(why[2], "no answer in 10 s");
        assert!(why[3].starts_with("it is too old"));
        assert!(until.is_empty());
        // Read once, an old router's window is fine.
        let once = gather(vec![answer("pod d", Some("shop"), Ok(stats("shop", 3, 0)))], None);
        assert_eq!(once.stats["shop"].series[0].counts.requests, 3);
    }
}

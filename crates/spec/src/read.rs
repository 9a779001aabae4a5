//! Walking YAML nodes into typed values while collecting every problem on the way.

use cohort_core::{Duration, Weight};
use cohort_yaml::{Node, NodeKind, Pos};

use crate::diag::{Kind, Sink};

/// Reads one mapping: values are taken by key, and whatever was not taken is reported as an
/// unknown key (with the closest known key as a suggestion) when the reader is finished.
pub struct MapReader<'n> {
    pos: Pos,
    what: String,
    entries: Vec<(&'n Node, &'n Node, bool)>,
    known: Vec<&'static str>,
}

impl<'n> MapReader<'n> {
    /// Starts reading `node`, which should be a mapping described as `what` ("cohort.yaml",
    /// "`defaults`"...). Anything else is reported and read as an empty mapping; `null` is an
    /// empty mapping.
    pub fn new(node: &'n Node, what: impl Into<String>, sink: &mut Sink<'_>) -> MapReader<'n> {
        let what = what.into();
        let entries = match &node.kind {
            NodeKind::Map(entries) => entries.iter().map(|(k, v)| (k, v, false)).collect(),
            NodeKind::Null => vec![],
            _ => {
                sink.error(
                    node.pos,
                    Kind::WrongType,
                    format!(
                        "{what} should be a mapping of `key: value` lines, but this is {}",
                        node.describe()
                    ),
                    None,
                );
                vec![]
            }
        };
        MapReader {
            pos: node.pos,
            what,
            entries,
            known: vec![],
        }
    }

    /// Reads an optional section: absent is the same as empty, positioned at `at` (so what
    /// is missing from it is reported somewhere sensible).
    pub fn optional(
        node: Option<&'n Node>,
        at: Pos,
        what: impl Into<String>,
        sink: &mut Sink<'_>,
    ) -> MapReader<'n> {
        match node {
            Some(n) => MapReader::new(n, what, sink),
            None => MapReader {
                pos: at,
                what: what.into(),
                entries: vec![],
                known: vec![],
            },
        }
    }

    /// Where the mapping starts.
    pub fn pos(&self) -> Pos {
        self.pos
    }

    /// Takes the value under `key`, if present (a `null` value counts as absent).
    pub fn opt(&mut self, key: &'static str) -> Option<&'n Node> {
        self.known.push(key);
        let entry = self
            .entries
            .iter_mut()
            .find(|(k, _, _)| k.as_scalar() == Some(key))?;
        entry.2 = true;
        match entry.1.kind {
            NodeKind::Null => None,
            _ => Some(entry.1),
        }
    }

    /// Takes the value under `key`, reporting it missing if absent.
    pub fn req(&mut self, key: &'static str, help: &str, sink: &mut Sink<'_>) -> Option<&'n Node> {
        let v = self.opt(key);
        if v.is_none() {
            sink.error(
                self.pos,
                Kind::MissingKey,
                format!("{} has no `{key}`", self.what),
                Some(help.to_string()),
            );
        }
        v
    }

    /// All entries, for mappings whose keys are data (cohort names, track names, env names).
    pub fn rest(&mut self) -> Vec<(&'n Node, &'n Node)> {
        self.entries
            .iter_mut()
            .filter(|(_, _, taken)| !taken)
            .map(|e| {
                e.2 = true;
                (e.0, e.1)
            })
            .collect()
    }

    /// Reports every key that was not taken.
    pub fn finish(self, sink: &mut Sink<'_>) {
        for (k, _, taken) in &self.entries {
            if *taken {
                continue;
            }
            let key = k.as_scalar().unwrap_or("?");
            let help = match closest(key, &self.known) {
                Some(near) => format!(
                    "did you mean `{near}`? {} takes: {}",
                    self.what,
                    self.known.join(", ")
                ),
                None => format!("{} takes: {}", self.what, self.known.join(", ")),
            };
            sink.error(
                k.pos,
                Kind::UnknownKey,
                format!("unknown key `{key}` in {}", self.what),
                Some(help),
            );
        }
    }
}

/// The known word within edit distance 2 of `word`, if any.
fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (levenshtein(word, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A scalar as text; other shapes are reported.
pub fn text<'n>(node: &'n Node, what: &str, sink: &mut Sink<'_>) -> Option<&'n str> {
    match node.as_scalar() {
        Some(t) => Some(t),
        None => {
            sink.error(
                node.pos,
                Kind::WrongType,
                format!("{what} should be a value, but this is {}", node.describe()),
                None,
            );
            None
        }
    }
}

/// A whole number in `min..=max`.
pub fn number(node: &Node, what: &str, min: u64, max: u64, sink: &mut Sink<'_>) -> Option<u64> {
    let t = text(node, what, sink)?;
    match t.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Some(n),
        Ok(n) => {
            sink.error(
                node.pos,
                Kind::OutOfRange,
                format!("{what} is {n}; it must be between {min} and {max}"),
                None,
            );
            None
        }
        Err(_) => {
            sink.error(
                node.pos,
                Kind::WrongType,
                format!("{what} should be a whole number, not `{t}`"),
                None,
            );
            None
        }
    }
}

/// `true` or `false`.
pub fn boolean(node: &Node, what: &str, sink: &mut Sink<'_>) -> Option<bool> {
    match text(node, what, sink)? {
        "true" => Some(true),
        "false" => Some(false),
        other => {
            sink.error(
                node.pos,
                Kind::WrongType,
                format!("{what} should be `true` or `false`, not `{other}`"),
                None,
            );
            None
        }
    }
}

/// A duration such as `2s` or `24h`.
pub fn duration(node: &Node, what: &str, sink: &mut Sink<'_>) -> Option<Duration> {
    let t = text(node, what, sink)?;
    let d = Duration::parse(t);
    if d.is_none() {
        sink.error(
            node.pos,
            Kind::BadDuration,
            format!("{what} `{t}` is not a duration"),
            Some("write a number with a unit: `500ms`, `2s`, `10m`, `1h30m`, `1d`".into()),
        );
    }
    d
}

/// A weight such as `5%`.
pub fn weight(node: &Node, what: &str, sink: &mut Sink<'_>) -> Option<Weight> {
    let t = text(node, what, sink)?;
    match Weight::parse_percent(t) {
        Ok(w) => Some(w),
        Err(e) => {
            sink.error(node.pos, Kind::BadWeight, format!("{what}: {e}"), None);
            None
        }
    }
}

/// An HTTP path for health checks: it must start with `/`.
pub fn http_path(node: &Node, what: &str, sink: &mut Sink<'_>) -> Option<String> {
    let t = text(node, what, sink)?;
    if t.starts_with('/') {
        return Some(t.to_string());
    }
    sink.error(
        node.pos,
        Kind::WrongType,
        format!("{what} `{t}` does not start with `/`"),
        Some(format!("write `/{t}`")),
    );
    None
}

/// A list of values.
/// A size in bytes: a whole number, or one with `KiB` or `MiB`; between 0 and `max`.
pub fn bytes(node: &Node, what: &str, max: u64, sink: &mut Sink<'_>) -> Option<u64> {
    let t = text(node, what, sink)?;
    let (digits, unit) = match t.trim() {
        v if v.ends_with("MiB") => (&v[..v.len() - 3], 1 << 20),
        v if v.ends_with("KiB") => (&v[..v.len() - 3], 1 << 10),
        v => (v, 1),
    };
    match digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
    {
        Some(n) if n <= max => Some(n),
        Some(n) => {
            sink.error(
                node.pos,
                Kind::OutOfRange,
                format!("{what} is {n} bytes; at most {max} ({} MiB)", max >> 20),
                None,
            );
            None
        }
        None => {
            sink.error(
                node.pos,
                Kind::WrongType,
                format!("{what} should be a size, not `{t}`"),
                Some("write bytes, or e.g. `64KiB`, `1MiB`".into()),
            );
            None
        }
    }
}

/// How the router speaks to the tracks: `http1`, `h2c` or `grpc`.
pub fn protocol(node: &Node, what: &str, sink: &mut Sink<'_>) -> Option<cohort_core::model::Protocol> {
    use cohort_core::model::Protocol;
    let t = text(node, what, sink)?;
    let found = [Protocol::Http1, Protocol::H2c, Protocol::Grpc]
        .into_iter()
        .find(|p| p.as_str() == t);
    if found.is_none() {
        sink.error(
            node.pos,
            Kind::WrongType,
            format!("{what} `{t}` is not one the router speaks"),
            Some("write `http1` (the default), `h2c` (HTTP/2 without TLS) or `grpc`".into()),
        );
    }
    found
}

pub fn list<'n>(node: &'n Node, what: &str, sink: &mut Sink<'_>) -> Vec<&'n Node> {
    match &node.kind {
        NodeKind::Seq(items) => items.iter().collect(),
        NodeKind::Null => vec![],
        _ => {
            sink.error(
                node.pos,
                Kind::WrongType,
                format!("{what} should be a list, but this is {}", node.describe()),
                None,
            );
            vec![]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_are_close_words() {
        assert_eq!(closest("namespce", &["namespace", "stages"]), Some("namespace"));
        assert_eq!(closest("zzz", &["namespace", "stages"]), None);
    }
}

//! Spanned YAML nodes.

use std::collections::HashSet;

use saphyr_parser::{Event, ScalarStyle};

/// A position in a file: line and column, both counted from 1, as editors show them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A YAML node and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Where the node starts.
    pub pos: Pos,
    /// What it holds.
    pub kind: NodeKind,
}

/// The shapes a node can have. Scalars keep their source text, so `0.10` and `1.15` are read
/// exactly as written instead of through a float.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    /// A scalar as written; `quoted` when it was in quotes or a block literal (always a string).
    Scalar {
        /// The text.
        text: String,
        /// Whether it was quoted (so `"true"` is a string, `true` a boolean).
        quoted: bool,
    },
    /// `null`, `~` or nothing.
    Null,
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in the order written.
    Map(Vec<(Node, Node)>),
}

/// A file that is not YAML at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct SyntaxError {
    /// Where the parser gave up.
    pub pos: Pos,
    /// The parser's explanation.
    pub message: String,
}

/// How deeply lists and mappings may nest. cohort's own files nest a handful of levels; the
/// bound keeps a hostile file from exhausting the stack of whatever walks the tree later.
pub const MAX_DEPTH: usize = 64;

/// Parses the first document of `source`. An empty file is a `Null` node at 1:1.
///
/// The tree is built from the parser's events with an explicit stack, never by recursion
/// (saphyr's own loader recurses once per level of block nesting, and a few thousand `- - -`
/// overflowed the stack), and nesting deeper than [`MAX_DEPTH`] is refused where it starts.
pub fn parse(source: &str) -> Result<Node, SyntaxError> {
    let mut builder = Builder::default();
    for event in saphyr_parser::Parser::new_from_str(source) {
        let (event, span) = event.map_err(|e| SyntaxError {
            pos: pos_of(*e.marker()),
            message: e.info().to_string(),
        })?;
        if let Some(root) = builder.take(event, pos_of(span.start))? {
            return Ok(root);
        }
    }
    Ok(Node {
        pos: Pos { line: 1, col: 1 },
        kind: NodeKind::Null,
    })
}

fn pos_of(m: saphyr_parser::Marker) -> Pos {
    Pos {
        line: m.line(),
        col: m.col() + 1,
    }
}

/// Lists and mappings being read, innermost last; a mapping's entry waits for its value.
#[derive(Default)]
struct Builder {
    open: Vec<Open>,
}

enum Open {
    Seq(Node),
    /// `seen` holds the keys so far, so a duplicate is found in constant time: comparing with
    /// every earlier key made a mapping of 200,000 keys take minutes.
    Map {
        node: Node,
        key: Option<Node>,
        seen: HashSet<Option<String>>,
    },
}

impl Builder {
    /// Takes one event; gives the document's root once it is complete.
    fn take(&mut self, event: Event<'_>, pos: Pos) -> Result<Option<Node>, SyntaxError> {
        let done = match event {
            Event::Nothing | Event::StreamStart | Event::DocumentStart(_) => return Ok(None),
            // An empty document, or the end of the stream without one.
            Event::DocumentEnd | Event::StreamEnd => Node {
                pos: Pos { line: 1, col: 1 },
                kind: NodeKind::Null,
            },
            Event::Alias(_) => {
                return Err(SyntaxError {
                    pos,
                    message: "aliases (`*name`) are not supported in cohort files".into(),
                });
            }
            Event::Scalar(text, style, _anchor, _tag) => {
                let quoted = !matches!(style, ScalarStyle::Plain);
                let kind = if !quoted && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL") {
                    NodeKind::Null
                } else {
                    NodeKind::Scalar {
                        text: text.into_owned(),
                        quoted,
                    }
                };
                Node { pos, kind }
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if self.open.len() >= MAX_DEPTH {
                    return Err(SyntaxError {
                        pos,
                        message: format!(
                            "lists and mappings nest deeper than {MAX_DEPTH} levels here; cohort files need far fewer"
                        ),
                    });
                }
                let node = |kind| Node { pos, kind };
                self.open.push(match event {
                    Event::SequenceStart(..) => Open::Seq(node(NodeKind::Seq(vec![]))),
                    _ => Open::Map {
                        node: node(NodeKind::Map(vec![])),
                        key: None,
                        seen: HashSet::new(),
                    },
                });
                return Ok(None);
            }
            Event::SequenceEnd | Event::MappingEnd => match self.open.pop() {
                Some(Open::Seq(node) | Open::Map { node, .. }) => node,
                None => {
                    return Err(SyntaxError {
                        pos,
                        message: "the end of a list or mapping that was never started".into(),
                    });
                }
            },
        };
        self.place(done)
    }

    /// Puts a complete node into what is open; with nothing open, it is the root.
    fn place(&mut self, node: Node) -> Result<Option<Node>, SyntaxError> {
        match self.open.last_mut() {
            None => Ok(Some(node)),
            Some(Open::Seq(seq)) => {
                if let NodeKind::Seq(items) = &mut seq.kind {
                    items.push(node);
                }
                Ok(None)
            }
            Some(Open::Map { node: map, key, seen }) => {
                let Some(k) = key.take() else {
                    if matches!(node.kind, NodeKind::Seq(_) | NodeKind::Map(_)) {
                        return Err(SyntaxError {
                            pos: node.pos,
                            message: format!("a mapping key must be a plain value, not {}", node.describe()),
                        });
                    }
                    *key = Some(node);
                    return Ok(None);
                };
                // `a`, `"a"` and `'a'` are all the string a; every null is the same key.
                if !seen.insert(k.as_scalar().map(str::to_string)) {
                    return Err(SyntaxError {
                        pos: k.pos,
                        message: "duplicated key in mapping".into(),
                    });
                }
                if let NodeKind::Map(entries) = &mut map.kind {
                    entries.push((k, node));
                }
                Ok(None)
            }
        }
    }
}

impl Node {
    /// The node as JSON the way a YAML 1.2 (core schema) reader types plain scalars: `true`,
    /// `false`, whole and finite numbers; quoted scalars and everything else are strings.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            NodeKind::Null => Value::Null,
            NodeKind::Scalar { text, quoted: true } => Value::String(text.clone()),
            NodeKind::Scalar { text, quoted: false } => match text.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                t => t
                    .parse::<i64>()
                    .map(Value::from)
                    .ok()
                    .or_else(|| t.parse::<f64>().ok().filter(|f| f.is_finite()).map(Value::from))
                    .unwrap_or_else(|| Value::String(t.to_string())),
            },
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.as_scalar().unwrap_or_default().to_string(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// The scalar text, if this is a scalar.
    pub fn as_scalar(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// What kind of node this is, in words for error messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar { .. } => "a value",
            NodeKind::Null => "nothing",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }
}

#[cfg(test)]
mod tests;

//! Spanned YAML nodes.

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
    Map { node: Node, key: Option<Node> },
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
            Some(Open::Map { node: map, key }) => {
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
                if let NodeKind::Map(entries) = &mut map.kind {
                    if entries.iter().any(|(seen, _)| same_key(seen, &k)) {
                        return Err(SyntaxError {
                            pos: k.pos,
                            message: "duplicated key in mapping".into(),
                        });
                    }
                    entries.push((k, node));
                }
                Ok(None)
            }
        }
    }
}

/// Whether two keys name the same entry: `a`, `"a"` and `'a'` are all the string a.
fn same_key(a: &Node, b: &Node) -> bool {
    match (&a.kind, &b.kind) {
        (NodeKind::Null, NodeKind::Null) => true,
        (NodeKind::Scalar { text: x, .. }, NodeKind::Scalar { text: y, .. }) => x == y,
        _ => false,
    }
}

impl Node {
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
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_lines_and_columns() {
        let n = parse("a: 1\nb:\n  c: 0.10\n  d: [x, \"y\"]\n").expect("parses");
        let NodeKind::Map(entries) = &n.kind else {
            panic!("map expected")
        };
        assert_eq!(entries[0].0.pos, Pos { line: 1, col: 1 });
        assert_eq!(entries[0].1.pos, Pos { line: 1, col: 4 });
        let NodeKind::Map(inner) = &entries[1].1.kind else {
            panic!("map expected")
        };
        assert_eq!(inner[0].1.as_scalar(), Some("0.10"));
        assert_eq!(inner[0].1.pos, Pos { line: 3, col: 6 });
        let NodeKind::Seq(items) = &inner[1].1.kind else {
            panic!("seq expected")
        };
        assert_eq!(
            items[1].kind,
            NodeKind::Scalar {
                text: "y".into(),
                quoted: true
            }
        );
    }

    #[test]
    fn syntax_errors_say_where() {
        let e = parse("a: 1\n  b: [\n").expect_err("bad yaml");
        assert!(e.pos.line >= 2, "{e}");
        let e = parse("a: 1\na: 2\n").expect_err("duplicate key");
        assert_eq!(e.pos.line, 2, "{e}");
    }

    /// `- - - ...` and indented mappings thousands deep made saphyr's recursive loader abort the
    /// process ("has overflowed its stack"): `cohort validate`, `serve` and the router died.
    #[test]
    fn deeply_nested_block_yaml_is_refused_instead_of_overflowing_the_stack() {
        let lists = format!("env:\n{}x\n", "- ".repeat(100_000));
        let mappings: String = (0..20_000).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect();
        let flow = format!("a: {}", "[".repeat(100_000));
        let mixed: String = (0..5_000).map(|i| format!("{}- k:\n", "  ".repeat(i))).collect();
        for text in [lists, mappings, flow, mixed] {
            let e = parse(&text).expect_err("too deep");
            assert!(
                e.message.contains("nest deeper") || e.message.contains("recursion limit"),
                "{e}"
            );
            assert!(e.pos.line >= 1, "{e}");
        }
    }

    #[test]
    fn nesting_up_to_the_bound_is_read_and_one_more_level_is_refused_where_it_starts() {
        let nested = |levels: usize| format!("{}x\n", "- ".repeat(levels));
        let mut node = parse(&nested(MAX_DEPTH)).expect("at the bound");
        for _ in 0..MAX_DEPTH {
            let NodeKind::Seq(mut items) = node.kind else {
                panic!("a list expected")
            };
            node = items.remove(0);
        }
        assert_eq!(node.as_scalar(), Some("x"));
        let e = parse(&nested(MAX_DEPTH + 1)).expect_err("one too deep");
        assert_eq!(
            e.pos,
            Pos {
                line: 1,
                col: 2 * MAX_DEPTH + 1
            },
            "{e}"
        );
    }

    #[test]
    fn duplicate_keys_are_found_however_they_are_quoted() {
        for (text, line) in [
            ("a: 1\n\"a\": 2\n", 2),
            ("a: 1\n'a': 2\n", 2),
            ("? a\n: 1\na: 2\n", 3),
            ("~: 1\nnull: 2\n", 2),
        ] {
            let e = parse(text).expect_err(text);
            assert_eq!(e.pos.line, line, "{text}: {e}");
            assert!(e.message.contains("duplicated key"), "{e}");
        }
        parse("a: 1\nb: 2\nA: 3\n").expect("distinct keys");
    }

    #[test]
    fn keys_that_are_lists_or_mappings_are_refused() {
        let e = parse("? [a, b]\n: 1\n").expect_err("a list as key");
        assert!(e.message.contains("plain value"), "{e}");
        let e = parse("{a: 1}: 2\n").expect_err("a mapping as key");
        assert!(e.message.contains("plain value"), "{e}");
    }

    #[test]
    fn only_the_first_document_is_read_and_aliases_are_refused() {
        let n = parse("a: 1\n---\nb: [\n").expect("first document only");
        assert!(matches!(n.kind, NodeKind::Map(ref e) if e.len() == 1));
        let e = parse("a: &x 1\nb: *x\n").expect_err("alias");
        assert_eq!(e.pos, Pos { line: 2, col: 4 }, "{e}");
        assert_eq!(parse("---\n").expect("empty document").kind, NodeKind::Null);
        assert_eq!(
            parse("# only a comment\n").expect("no document").kind,
            NodeKind::Null
        );
        let tagged = parse("a: !!str 5\nb: !custom [x]\n").expect("tags are ignored");
        let NodeKind::Map(entries) = tagged.kind else {
            panic!("map expected")
        };
        assert_eq!(entries[0].1.as_scalar(), Some("5"));
    }

    #[test]
    fn empty_and_null() {
        assert_eq!(parse("").expect("empty").kind, NodeKind::Null);
        let n = parse("a: ~\nb:\n").expect("parses");
        let NodeKind::Map(entries) = &n.kind else {
            panic!("map expected")
        };
        assert_eq!(entries[0].1.kind, NodeKind::Null);
        assert_eq!(entries[1].1.kind, NodeKind::Null);
    }
}

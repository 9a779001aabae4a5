//! Spanned YAML nodes.

use saphyr::{MarkedYaml, Scalar, ScalarStyle, YamlData, YamlLoader};

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

/// Parses the first document of `source`. An empty file is a `Null` node at 1:1.
pub fn parse(source: &str) -> Result<Node, SyntaxError> {
    let mut loader: YamlLoader<'_, MarkedYaml<'_>> = YamlLoader::default();
    // Keep scalars as written: we decide what `5%`, `1.15` or `yes` mean, not the YAML 1.2 core schema.
    loader.early_parse(false);
    let mut parser = saphyr_parser::Parser::new_from_str(source);
    let scan = |e: saphyr::ScanError| SyntaxError {
        pos: Pos {
            line: e.marker().line(),
            col: e.marker().col() + 1,
        },
        message: e.info().to_string(),
    };
    parser.load(&mut loader, false).map_err(scan)?;
    if let Some(e) = loader.error() {
        return Err(scan(e.clone()));
    }
    let docs = loader.into_documents();
    match docs.into_iter().next() {
        Some(doc) => convert(doc),
        None => Ok(Node {
            pos: Pos { line: 1, col: 1 },
            kind: NodeKind::Null,
        }),
    }
}

fn convert(y: MarkedYaml<'_>) -> Result<Node, SyntaxError> {
    let pos = Pos {
        line: y.span.start.line(),
        col: y.span.start.col() + 1,
    };
    let kind = match y.data {
        YamlData::Representation(text, style, _tag) => {
            let quoted = !matches!(style, ScalarStyle::Plain);
            if !quoted && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL") {
                NodeKind::Null
            } else {
                NodeKind::Scalar {
                    text: text.into_owned(),
                    quoted,
                }
            }
        }
        YamlData::Value(Scalar::Null) => NodeKind::Null,
        YamlData::Value(Scalar::String(s)) => NodeKind::Scalar {
            text: s.into_owned(),
            quoted: true,
        },
        YamlData::Value(Scalar::Boolean(b)) => NodeKind::Scalar {
            text: b.to_string(),
            quoted: false,
        },
        YamlData::Value(Scalar::Integer(i)) => NodeKind::Scalar {
            text: i.to_string(),
            quoted: false,
        },
        YamlData::Value(Scalar::FloatingPoint(f)) => NodeKind::Scalar {
            text: f.into_inner().to_string(),
            quoted: false,
        },
        YamlData::Sequence(items) => NodeKind::Seq(items.into_iter().map(convert).collect::<Result<_, _>>()?),
        YamlData::Mapping(map) => NodeKind::Map(
            map.into_iter()
                .map(|(k, v)| Ok((convert(k)?, convert(v)?)))
                .collect::<Result<_, _>>()?,
        ),
        YamlData::Tagged(_, inner) => return convert(*inner),
        YamlData::Alias(_) => {
            return Err(SyntaxError {
                pos,
                message: "aliases (`*name`) are not supported in cohort files".into(),
            });
        }
        YamlData::BadValue => {
            return Err(SyntaxError {
                pos,
                message: "this value cannot be read".into(),
            });
        }
    };
    Ok(Node { pos, kind })
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

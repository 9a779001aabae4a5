//! YAML for cohort's files: reading into nodes that know their line and column (so every
//! validation error can say file:line:col), and writing deterministic YAML from JSON values.
//!
//! Reading builds the tree from saphyr-parser's events without recursion, nesting bounded;
//! writing is our own small emitter because rendered output must be byte-identical across
//! runs and versions, which we control here.
#![forbid(unsafe_code)]

mod emit;
mod node;

pub use emit::{to_yaml, to_yaml_stream};
pub use node::{MAX_DEPTH, Node, NodeKind, Pos, SyntaxError, parse};

//! The YAML reader on deeply nested input: block lists (`- - -`), indented mappings and flow
//! collections mixed, thousands of levels deep. It must answer every input with a tree no
//! deeper than `MAX_DEPTH` or a located error: never a panic or a stack overflow.
#![no_main]

use cohort_yaml::{MAX_DEPTH, Node, NodeKind};
use libfuzzer_sys::fuzz_target;

/// Builds nested YAML from the input: each byte picks a kind of level (low bits) and how many
/// levels of it to open (high bits, up to 512), so short inputs reach deep nesting.
fn nested(data: &[u8]) -> String {
    let mut out = String::from("root:\n");
    let mut indent = 2;
    let mut closers = String::new();
    for &b in data {
        let times = 1usize << (b >> 5).min(9);
        for i in 0..times {
            match b & 0b111 {
                0 => out.push_str("- "),
                1 => {
                    out.push('\n');
                    out.push_str(&" ".repeat(indent));
                    out.push_str(&format!("k{i}:"));
                    indent += 1;
                }
                2 => {
                    out.push('[');
                    closers.insert(0, ']');
                }
                3 => {
                    out.push_str("{a: ");
                    closers.insert(0, '}');
                }
                4 => {
                    out.push('\n');
                    out.push_str(&" ".repeat(indent));
                    out.push_str("- ");
                    indent += 2;
                }
                5 => out.push_str("x"),
                6 => {
                    out.push_str(&closers);
                    closers.clear();
                }
                _ => out.push_str(" &a *a"),
            }
        }
    }
    out.push_str("x");
    out.push_str(&closers);
    out.push('\n');
    out
}

fn depth(node: &Node) -> usize {
    // Iterative: the tree is bounded, but the check must not rely on that.
    let mut deepest = 0;
    let mut stack = vec![(node, 0usize)];
    while let Some((n, d)) = stack.pop() {
        deepest = deepest.max(d);
        match &n.kind {
            NodeKind::Seq(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            NodeKind::Map(entries) => stack.extend(entries.iter().flat_map(|(k, v)| [(k, d + 1), (v, d + 1)])),
            _ => {}
        }
    }
    deepest
}

fuzz_target!(|data: &[u8]| {
    let text = nested(data);
    match cohort_yaml::parse(&text) {
        Ok(node) => {
            assert!(depth(&node) <= MAX_DEPTH, "a tree deeper than the bound was built");
            let mut diags = vec![];
            let _ = cohort_spec::router_config::read_router_config(
                &node,
                &mut cohort_spec::diag::Sink::new("router.yaml", &mut diags),
            );
        }
        Err(e) => assert!(e.pos.line >= 1 && e.pos.col >= 1, "{e}"),
    }
});

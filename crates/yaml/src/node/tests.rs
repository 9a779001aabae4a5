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

/// Nesting of every kind, mixed, at random depths around the bound: a tree within the bound
/// or an error, never a panic.
fn nested(ops: &[(u8, u16)]) -> String {
    let mut out = String::from("root:\n");
    let mut indent = 2;
    let mut closers = String::new();
    for &(kind, times) in ops {
        for i in 0..times {
            match kind % 5 {
                0 => out.push_str("- "),
                1 => {
                    out.push_str(&format!("\n{}k{i}:", " ".repeat(indent)));
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
                _ => {
                    out.push_str(&format!("\n{}- ", " ".repeat(indent)));
                    indent += 2;
                }
            }
        }
    }
    format!("{out}x{closers}\n")
}

fn depth(node: &Node) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(node, 0usize)];
    while let Some((n, d)) = stack.pop() {
        deepest = deepest.max(d);
        match &n.kind {
            NodeKind::Seq(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            NodeKind::Map(entries) => {
                stack.extend(entries.iter().flat_map(|(k, v)| [(k, d + 1), (v, d + 1)]))
            }
            _ => {}
        }
    }
    deepest
}

proptest::proptest! {
    #[test]
    fn any_nesting_is_a_bounded_tree_or_a_located_error(ops in proptest::collection::vec((0u8..5, 1u16..200), 1..12)) {
        match parse(&nested(&ops)) {
            Ok(node) => proptest::prop_assert!(depth(&node) <= MAX_DEPTH),
            Err(e) => proptest::prop_assert!(e.pos.line >= 1 && e.pos.col >= 1),
        }
    }
}

/// Each key used to be compared with every earlier one: a 1 MiB file of 200,000 keys took
/// minutes (found in review). Keys are now remembered in a set.
#[test]
fn a_mapping_of_a_hundred_thousand_keys_is_read_and_a_late_duplicate_found() {
    let keys: String = (0..100_000).map(|i| format!("k{i}: 0\n")).collect();
    let n = parse(&keys).expect("distinct keys");
    assert!(matches!(n.kind, NodeKind::Map(ref e) if e.len() == 100_000));
    let e = parse(&format!("{keys}\"k7\": 1\n")).expect_err("a duplicate at the end");
    assert_eq!(e.pos.line, 100_001, "{e}");
}

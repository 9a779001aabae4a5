//! Deterministic YAML writing: keys in the order the value holds them (sorted, for
//! `serde_json::Map` without `preserve_order`), two-space indents, strings quoted whenever a
//! YAML 1.1 or 1.2 reader could take them for anything but a string, multi-line strings as
//! literal blocks so a ConfigMap's embedded file stays readable.

use std::borrow::Cow;
use std::fmt::Write;

use serde_json::Value;

/// One YAML document for `value`, ending in a newline.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => write_map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => write_seq(&mut out, a, 0),
        other => {
            out.push_str(&inline(other, 0));
            out.push('\n');
        }
    }
    out
}

/// Several documents, separated by `---`.
pub fn to_yaml_stream<'a>(values: impl IntoIterator<Item = &'a Value>) -> String {
    let mut out = String::new();
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&to_yaml(v));
    }
    out
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn write_map(out: &mut String, m: &serde_json::Map<String, Value>, indent: usize) {
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            pad(out, indent);
        }
        out.push_str(&scalar_string(k, indent));
        out.push(':');
        write_value_after_key(out, v, indent);
    }
}

fn write_value_after_key(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            pad(out, indent + 2);
            write_map(out, m, indent + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            pad(out, indent + 2);
            write_seq(out, a, indent + 2);
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other, indent + 2));
            out.push('\n');
        }
    }
}

fn write_seq(out: &mut String, a: &[Value], indent: usize) {
    for (i, v) in a.iter().enumerate() {
        if i > 0 {
            pad(out, indent);
        }
        out.push_str("- ");
        match v {
            Value::Object(m) if !m.is_empty() => write_map(out, m, indent + 2),
            Value::Array(inner) if !inner.is_empty() => write_seq(out, inner, indent + 2),
            other => {
                out.push_str(&inline(other, indent + 2));
                out.push('\n');
            }
        }
    }
}

/// A value that fits on the rest of the line (or starts a literal block indented by `indent`).
fn inline(v: &Value, indent: usize) -> Cow<'_, str> {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => if *b { "true" } else { "false" }.into(),
        Value::Number(n) => n.to_string().into(),
        Value::String(s) => scalar_string(s, indent),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

fn scalar_string(s: &str, indent: usize) -> Cow<'_, str> {
    if is_plain_word(s) || is_plain_safe(s) {
        return Cow::Borrowed(s);
    }
    if fits_literal_block(s) {
        let body = s.trim_end_matches('\n');
        let chomp = match s.len() - body.len() {
            0 => "-",
            1 => "",
            _ => "+",
        };
        let mut out = format!("|{chomp}");
        for line in s.strip_suffix('\n').unwrap_or(s).split('\n') {
            out.push('\n');
            if !line.is_empty() {
                pad(&mut out, indent);
                out.push_str(line);
            }
        }
        return out.into();
    }
    double_quoted(s).into()
}

/// The common case, decided cheaply: keys and values like `apiVersion`, `account-service`,
/// `registry.example.com/shop/app`. Starting with a letter rules out numbers, dates and
/// indicators; only a few words remain that some reader takes for a boolean, null or float.
fn is_plain_word(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphabetic()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'/'))
        && !SPECIAL_WORDS.iter().any(|w| s.eq_ignore_ascii_case(w))
}

/// Words some YAML reader (1.1 or 1.2) does not read as a string, and words Rust's float
/// parser accepts.
const SPECIAL_WORDS: [&str; 17] = [
    "null", "~", "true", "false", "yes", "no", "on", "off", "y", "n", ".inf", "-.inf", "+.inf", ".nan",
    "inf", "infinity", "nan",
];

fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if must_escape(c) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Characters written only as `\uXXXX`: controls (C0, DEL and C1, which YAML does not allow
/// raw), the byte-order mark, the line and paragraph separators some readers take for line
/// breaks, and the bidirectional overrides that make text read in another order than it is
/// (CVE-2021-42574) when rendered objects are reviewed.
fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{feff}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

fn fits_literal_block(s: &str) -> bool {
    s.contains('\n') && !s.starts_with([' ', '\n']) && s.chars().all(|c| c == '\n' || !must_escape(c))
}

fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return false;
    }
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) {
        // `-x` and `-1` look harmless but `- ` starts a list item; keep the rule simple.
        return false;
    }
    if s.chars().any(must_escape) {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') || s.contains(':') && looks_numeric(s) {
        return false;
    }
    if s.contains(['{', '}', '[', ']', ',']) {
        // Safe in block context, but not inside flow collections of other tools' rewrites.
        return false;
    }
    !looks_special(s)
}

/// Words and numbers that some YAML reader (1.1 or 1.2) would not read as a string.
fn looks_special(s: &str) -> bool {
    SPECIAL_WORDS.iter().any(|w| s.eq_ignore_ascii_case(w)) || looks_numeric(s)
}

fn looks_numeric(s: &str) -> bool {
    let body = s.trim_start_matches(['+', '-']);
    if body.is_empty() {
        return false;
    }
    if s.parse::<f64>().is_ok() {
        return true;
    }
    let lower = body.to_ascii_lowercase();
    if let Some(rest) = lower
        .strip_prefix("0x")
        .or(lower.strip_prefix("0o"))
        .or(lower.strip_prefix("0b"))
    {
        return !rest.is_empty() && rest.chars().all(|c| c.is_ascii_hexdigit() || c == '_');
    }
    // YAML 1.1: `1_000`, sexagesimal `1:30`, and dates `2026-01-01`.
    let numberish = body
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '_' | ':' | '.'));
    let b = body.as_bytes();
    let date = b.len() >= 8 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-';
    (numberish && body.starts_with(|c: char| c.is_ascii_digit())) || date
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NodeKind, parse};
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn writes_nested_values_readably() {
        let v = json!({
            "kind": "ConfigMap",
            "data": {"router.yaml": "a: 1\nb: 2\n"},
            "list": [{"name": "x", "port": 8080}, "1.15", "1.18.0", "true", ""],
            "empty": {}, "none": [], "n": null
        });
        let text = to_yaml(&v);
        assert_eq!(
            text,
            "data:\n  router.yaml: |\n    a: 1\n    b: 2\nempty: {}\nkind: ConfigMap\nlist:\n  - name: x\n    port: 8080\n  - \"1.15\"\n  - \"1.18.0\"\n  - \"true\"\n  - \"\"\n\"n\": null\nnone: []\n"
        );
    }

    /// C1 controls were written raw, and bidi overrides too: a reviewer of rendered objects
    /// could be shown text in another order than it is.
    #[test]
    fn c1_controls_and_bidi_overrides_are_escaped_and_read_back_the_same() {
        for s in [
            "a\u{9b}31m",
            "x\u{202e}gnp.exe",
            "line\u{2066}one\ntwo\n",
            "\u{85}",
            "\u{2028}",
        ] {
            let text = to_yaml(&json!({ "v": s }));
            assert!(text.is_ascii(), "{text:?}");
            let NodeKind::Map(entries) = parse(&text).expect("reads back").kind else {
                panic!("map expected")
            };
            assert_eq!(entries[0].1.as_scalar(), Some(s), "{text:?}");
        }
    }

    fn to_json(n: &crate::Node) -> Value {
        n.to_json()
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::String),
            "[ -~\n]{0,20}".prop_map(Value::String),
            prop_oneof![
                Just("1.15"),
                Just("yes"),
                Just("- a"),
                Just("a: b"),
                Just("#x"),
                Just("0x1f"),
                Just(" lead")
            ]
            .prop_map(|s| Value::String(s.to_string())),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z0-9.:/ -]{1,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn the_fast_path_agrees_with_the_full_check(s in "[a-zA-Z0-9._/~-]{0,12}") {
            if is_plain_word(&s) {
                prop_assert!(is_plain_safe(&s), "{s}");
            }
        }

        #[test]
        fn what_is_written_reads_back_the_same(v in arb_value()) {
            let text = to_yaml(&v);
            let node = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(to_json(&node), v, "{}", text);
        }
    }
}

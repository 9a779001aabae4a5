//! Text from outside (reports, commit messages, reasons, file contents, names, error messages)
//! made safe to print on a terminal: control characters and bidirectional overrides become
//! visible escapes, so nobody who can write such text can move the cursor, recolour, rewrite a
//! line or forge a row of a table on an operator's screen (kubectl does the same since
//! CVE-2021-25743). Human output only: JSON keeps the exact text.
//!
//! The escapes are Rust's (`\x1b`, `\r`, `\n`, `\t`, `\u{9b}`, `\u{202e}`) and are not
//! reversible: a backslash is left as it is, so a name that really contains the four characters
//! `\x1b` prints the same as one holding an ESC. `-o json` is for the exact text.

use std::borrow::Cow;
use std::fmt;

/// Whether `c` must not reach a terminal as it is: a C0 or C1 control character, DEL, or a
/// bidirectional embedding, override or isolate (U+202A–U+202E, U+2066–U+2069), which
/// reorder what follows them on the line.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every unsafe character escaped, line breaks included: for a value printed
/// within one line (a table cell, a name, a reason), so it cannot start a line of its own.
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_where(text, is_unsafe)
}

/// `text` with every unsafe character escaped but its line breaks (`\n`) kept: for text that
/// is printed as lines of its own (an error with its causes, a list of diagnostics).
pub fn escape_lines(text: &str) -> Cow<'_, str> {
    escape_where(text, |c| c != '\n' && is_unsafe(c))
}

fn escape_where(text: &str, unsafe_char: impl Fn(char) -> bool) -> Cow<'_, str> {
    let Some(first) = text.find(&unsafe_char) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 8);
    out.push_str(&text[..first]);
    for c in text[first..].chars() {
        if unsafe_char(c) {
            push_escape(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn push_escape(out: &mut String, c: char) {
    use fmt::Write as _;
    let _ = match c {
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        '\0'..='\u{7f}' => write!(out, "\\x{:02x}", u32::from(c)),
        _ => write!(out, "\\u{{{:x}}}", u32::from(c)),
    };
}

/// Displays a value from outside escaped as [`escape`] does: `format!("{}", Printable(name))`.
#[derive(Clone, Copy, Debug)]
pub struct Printable<'a>(pub &'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Through `pad`, so width and alignment (`{:<12}`) apply to what is shown.
        f.pad(&escape(self.0))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn controls_and_bidi_overrides_become_visible_escapes() {
        assert_eq!(escape("in sync"), "in sync");
        assert!(matches!(escape("plain text, ünïcödé ✓"), Cow::Borrowed(_)));
        assert_eq!(escape("a\x1b[2Kb"), "a\\x1b[2Kb");
        assert_eq!(escape("x\r\ny\tz"), "x\\r\\ny\\tz");
        assert_eq!(escape("\0\x07\x7f"), "\\x00\\x07\\x7f");
        assert_eq!(escape("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(escape("\u{85}"), "\\u{85}");
        assert_eq!(escape("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(escape("\u{2066}x\u{2069}"), "\\u{2066}x\\u{2069}");
        // Neighbours of the ranges are ordinary text.
        assert_eq!(
            escape("\u{2029}\u{202f}\u{2065}\u{206a}\u{a0}"),
            "\u{2029}\u{202f}\u{2065}\u{206a}\u{a0}"
        );
        assert_eq!(escape(r"C:\x1b"), r"C:\x1b");
    }

    #[test]
    fn escape_lines_keeps_line_breaks_only() {
        assert_eq!(escape_lines("one\ntwo\x1b[1A\r"), "one\ntwo\\x1b[1A\\r");
    }

    #[test]
    fn printable_pads_what_is_shown() {
        assert_eq!(format!("[{:<6}]", Printable("a\tb")), "[a\\tb  ]");
        assert_eq!(format!("{}", Printable("\x1b")), "\\x1b");
    }

    proptest! {
        #[test]
        fn nothing_unsafe_survives_and_safe_text_is_untouched(text in any::<String>()) {
            let shown = escape(&text);
            prop_assert!(!shown.chars().any(is_unsafe), "{shown:?}");
            let lines = escape_lines(&text);
            prop_assert!(!lines.chars().any(|c| c != '\n' && is_unsafe(c)), "{lines:?}");
            prop_assert_eq!(lines.lines().count(), text.lines().count());
            // Escaping twice changes nothing more: the escapes are printable ASCII.
            prop_assert_eq!(escape(&shown), shown.clone());
            if !text.chars().any(is_unsafe) {
                prop_assert_eq!(shown.as_ref(), text.as_str());
            }
        }

        #[test]
        fn each_unsafe_character_is_one_escape_and_the_rest_is_kept_in_order(text in any::<String>()) {
            let shown = escape(&text);
            let kept: String = text.chars().filter(|c| !is_unsafe(*c)).collect();
            let escapes = text.chars().filter(|c| is_unsafe(*c)).count();
            prop_assert_eq!(shown.matches('\\').count(), text.matches('\\').count() + escapes);
            let mut rest = shown.as_ref();
            for c in kept.chars() {
                let at = rest.find(c);
                prop_assert!(at.is_some(), "{c:?} lost from {shown:?}");
                rest = &rest[at.unwrap_or_default() + c.len_utf8()..];
            }
        }
    }
}

//! `cohort man --out DIR`: a page for cohort and for each command `--help` lists, each one
//! roff that groff formats without a warning (when groff is on the PATH; otherwise the pages'
//! structure alone is checked, and the test says so).

use std::path::Path;
use std::process::{Command, Output};

fn cohort(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(args)
        .env_remove("COHORT_REPO")
        .output()
        .expect("cohort runs")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The commands `cohort --help` lists, but `help`.
fn commands() -> Vec<String> {
    let help = stdout(&cohort(&["--help"]));
    let listed: Vec<String> = help
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // A command's line is indented by two; its wrapped description by more.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|c| c != "help")
        .collect();
    for known in ["status", "apply", "render", "agent", "man", "completions"] {
        assert!(listed.iter().any(|c| c == known), "{known} in {listed:?}");
    }
    listed
}

/// groff, if it is on the PATH; otherwise `None`, saying what is checked instead.
// A test's note to whoever runs it (cohort/clippy.toml's rule is for what cohort shows).
#[allow(clippy::disallowed_macros)]
fn groff() -> Option<&'static str> {
    match Command::new("groff").arg("--version").output() {
        Ok(o) if o.status.success() => Some("groff"),
        _ => {
            eprintln!(
                "SKIPPED (in part): groff is not on the PATH; the pages' structure is checked, not their roff"
            );
            None
        }
    }
}

/// The page formatted as `man` would (preconv for UTF-8, the man macros), with every warning.
fn format(groff: &str, page: &Path) -> String {
    let o = Command::new(groff)
        .args(["-k", "-man", "-Tutf8", "-ww"])
        .arg(page)
        .output()
        .expect("groff runs");
    let warnings = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && warnings.trim().is_empty(),
        "{}: {warnings}",
        page.display()
    );
    // Without the terminal's bold and underline (backspace overstrikes).
    let text = String::from_utf8_lossy(&o.stdout);
    let mut plain = String::new();
    for c in text.chars() {
        match c {
            '\u{8}' => {
                plain.pop();
            }
            c => plain.push(c),
        }
    }
    // Justified lines have runs of spaces.
    plain.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn every_command_has_a_man_page_and_each_is_valid_roff() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("man1");
    let said = stdout(&cohort(&["man", "--out", out.to_str().expect("utf-8")]));
    let commands = commands();

    let mut expected: Vec<String> = commands.iter().map(|c| format!("cohort-{c}.1")).collect();
    expected.push("cohort.1".into());
    expected.sort();
    let mut written: Vec<String> = std::fs::read_dir(&out)
        .expect("the pages' directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, expected);
    assert_eq!(said.lines().count(), expected.len(), "{said}");

    let groff = groff();
    let pages = std::iter::once((String::from("cohort"), String::from("cohort"))).chain(
        commands
            .iter()
            .map(|c| (format!("cohort-{c}"), format!("cohort {c}"))),
    );
    for (title, invocation) in pages {
        let path = out.join(format!("{title}.1"));
        let roff = std::fs::read_to_string(&path).expect("page");
        let th = roff
            .lines()
            .find(|l| l.starts_with(".TH "))
            .unwrap_or_else(|| panic!("{title}: no .TH line"));
        assert!(
            th.starts_with(&format!(".TH {title} 1 "))
                && th.contains(concat!("cohort ", env!("CARGO_PKG_VERSION"))),
            "{th}"
        );
        for section in [".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION", ".SH OPTIONS"] {
            assert!(roff.lines().any(|l| l == section), "{title}: no {section}");
        }
        let name = title.replace('-', "\\-");
        assert!(roff.contains(&format!("\n{name} \\- ")), "{title}: NAME");
        assert!(
            roff.contains(&format!("\\fB{invocation}\\fR")),
            "{title}: SYNOPSIS"
        );
        // Each request is a known one; roff that the generator got wrong shows up as text here.
        for line in roff.lines().filter(|l| l.starts_with('.')) {
            let request = line[1..].split_whitespace().next().unwrap_or_default();
            assert!(
                [
                    "TH", "SH", "TP", "PP", "RS", "RE", "IP", "br", "ie", "el", "B", "I"
                ]
                .contains(&request),
                "{title}: {line}"
            );
        }
        if let Some(groff) = groff {
            let text = format(groff, &path);
            assert!(
                text.contains("SYNOPSIS") && text.contains(&invocation),
                "{title}:\n{text}"
            );
        }
    }
    if let Some(groff) = groff {
        let apply = format(groff, &out.join("cohort-apply.1"));
        assert!(
            apply.contains("--kubeconfig") && apply.contains("--dry-run"),
            "{apply}"
        );
    }
}

#[test]
fn man_replaces_what_is_there_and_never_writes_through_a_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("man1");
    std::fs::create_dir(&out).expect("mkdir");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::write(&elsewhere, "not a man page").expect("write");
    std::os::unix::fs::symlink(&elsewhere, out.join("cohort.1")).expect("symlink");
    stdout(&cohort(&["man", "--out", out.to_str().expect("utf-8")]));
    assert_eq!(
        std::fs::read_to_string(&elsewhere).expect("read"),
        "not a man page"
    );
    let page = out.join("cohort.1");
    assert!(page.symlink_metadata().expect("page").file_type().is_file());
    let first = std::fs::read(&page).expect("page");
    stdout(&cohort(&["man", "--out", out.to_str().expect("utf-8")]));
    assert_eq!(
        std::fs::read(&page).expect("page"),
        first,
        "the same bytes every time"
    );
}

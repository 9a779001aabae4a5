//! The report as a terminal table: one line per service, a column per track (version and
//! ready/desired), the router, the state; what is wrong listed under the service.

use cohort_core::printable::escape;

use crate::evaluate::{Report, Severity, TrackHealth};

/// How the state column is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Color {
    /// ANSI colors (a terminal).
    Ansi,
    /// Plain text (a pipe, a file, `NO_COLOR`).
    Plain,
}

fn paint(text: &str, code: &str, color: Color) -> String {
    match color {
        Color::Ansi => format!("\x1b[{code}m{text}\x1b[0m"),
        Color::Plain => text.to_string(),
    }
}

/// One track's cell: the version that serves (else the newest), ready/desired, and `+N`
/// when N more versions run beside it.
fn cell(track: Option<&TrackHealth>) -> String {
    let Some(t) = track else { return "-".into() };
    let Some(shown) = t
        .running
        .iter()
        .find(|r| r.ready >= r.desired && r.desired > 0)
        .or(t.running.first())
    else {
        return match &t.expected_version {
            Some(v) => format!("{v} not running"),
            None => "-".into(),
        };
    };
    let mut s = format!("{} {}/{}", shown.version, shown.ready, shown.desired);
    if t.running.len() > 1 {
        s.push_str(&format!(" +{}", t.running.len() - 1));
    }
    s
}

/// The table. Track columns follow the order tracks first appear in (stage order, as the
/// evaluation lists them).
pub fn render(report: &Report, color: Color) -> String {
    let mut tracks: Vec<&str> = vec![];
    for svc in &report.services {
        for t in &svc.tracks {
            if !tracks.contains(&t.track.as_str()) {
                tracks.push(&t.track);
            }
        }
    }
    let mut header: Vec<String> = vec!["SERVICE".into(), "ROUTER".into()];
    header.extend(tracks.iter().map(|t| escape(&t.to_uppercase()).into_owned()));
    header.push("STATE".into());

    let mut rows: Vec<Vec<String>> = vec![];
    for svc in &report.services {
        // Names, versions and findings come from the cluster's objects, which whoever may
        // edit them writes: escaped, so they cannot drive the terminal or forge a line.
        let mut row = vec![
            escape(&svc.service).into_owned(),
            format!("{}/{}", svc.router.available, svc.router.expected),
        ];
        row.extend(
            tracks
                .iter()
                .map(|name| escape(&cell(svc.tracks.iter().find(|t| t.track == *name))).into_owned()),
        );
        rows.push(row);
    }

    let widths: Vec<usize> = (0..header.len() - 1)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain(std::iter::once(header[i].chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String], last: &str| -> String {
        let mut out = String::new();
        for (c, w) in cells.iter().zip(&widths) {
            out.push_str(&format!("{c:<w$}  "));
        }
        out.push_str(last);
        out.trim_end().to_string()
    };

    let mut out = line(&header[..header.len() - 1], "STATE");
    out.push('\n');
    for (svc, row) in report.services.iter().zip(&rows) {
        let problems = svc
            .findings
            .iter()
            .filter(|f| f.severity() == Severity::Problem)
            .count();
        let warnings = svc.findings.len() - problems;
        let state = match (problems, warnings) {
            (0, 0) => paint("ok", "32", color),
            (0, w) => paint(
                &format!("ok, {w} warning{}", if w == 1 { "" } else { "s" }),
                "33",
                color,
            ),
            (p, _) => paint(
                &format!("{p} problem{}", if p == 1 { "" } else { "s" }),
                "31",
                color,
            ),
        };
        out.push_str(&line(row, &state));
        out.push('\n');
        for f in &svc.findings {
            let mark = match f.severity() {
                Severity::Problem => paint("✗", "31", color),
                Severity::Warning => paint("!", "33", color),
            };
            out.push_str(&format!("  {mark} {}\n", escape(&f.to_string())));
        }
    }
    out
}

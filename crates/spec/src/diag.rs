//! Problems found in release-repo files, each with where it is, what is wrong and how to fix it.

use std::fmt;
use std::path::PathBuf;

use cohort_yaml::Pos;

/// What kind of problem a diagnostic is; tests and tools match on this, never on the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The file is not YAML.
    Syntax,
    /// The file could not be read.
    Unreadable,
    /// A symbolic link, pipe, device, submodule or directory where cohort reads a regular
    /// file (or a non-directory where it reads a directory).
    WrongFileType,
    /// A file larger than cohort reads from a release repo.
    TooLarge,
    /// A file whose bytes are not UTF-8 text.
    NotUtf8,
    /// A required file is missing.
    MissingFile,
    /// A key this file does not have.
    UnknownKey,
    /// A required key is absent.
    MissingKey,
    /// A value of the wrong shape (a list where a mapping belongs, text where a number belongs...).
    WrongType,
    /// A name Kubernetes would refuse (characters, length).
    BadName,
    /// A version string that cannot be used.
    BadVersion,
    /// A weight that is not an exact percentage.
    BadWeight,
    /// A route whose weights do not add up to 100%, or that names a track twice.
    BadRoute,
    /// A route or setting that names a track that is not a stage.
    UnknownTrack,
    /// A route left with no track once tracks with nothing deployed are taken out.
    RouteLeftEmpty,
    /// Something named twice.
    Duplicate,
    /// A CIDR that does not parse.
    BadCidr,
    /// Every caller may choose its cohort (`trusted_peers: any`, `0.0.0.0/0`), or nobody may.
    OpenTrust,
    /// A duration that does not parse.
    BadDuration,
    /// A number out of range.
    OutOfRange,
    /// A service file whose name does not match its file name, or a state file for no service.
    Mismatch,
    /// A change window that does not parse or names an unknown time zone.
    BadWindow,
}

/// How serious a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The repo cannot be used until it is fixed.
    Error,
    /// Works, but probably not as meant.
    Warning,
}

/// One problem in one file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file, relative to the repo root.
    pub file: PathBuf,
    /// Where in the file (1:1 for whole-file problems).
    pub pos: Pos,
    /// What kind of problem.
    pub kind: Kind,
    /// What is wrong, as a sentence.
    pub message: String,
    /// How to fix it, if there is something to say.
    pub help: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}:{}: {sev}: {}", self.file.display(), self.pos, self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics for one file.
#[derive(Debug)]
pub struct Sink<'a> {
    file: PathBuf,
    out: &'a mut Vec<Diagnostic>,
}

impl<'a> Sink<'a> {
    /// Diagnostics for `file` go into `out`.
    pub fn new(file: impl Into<PathBuf>, out: &'a mut Vec<Diagnostic>) -> Sink<'a> {
        Sink {
            file: file.into(),
            out,
        }
    }

    /// Reports an error.
    pub fn error(&mut self, pos: Pos, kind: Kind, message: impl Into<String>, help: Option<String>) {
        self.push(Severity::Error, pos, kind, message.into(), help);
    }

    /// Reports a warning.
    pub fn warning(&mut self, pos: Pos, kind: Kind, message: impl Into<String>, help: Option<String>) {
        self.push(Severity::Warning, pos, kind, message.into(), help);
    }

    /// How many errors it holds so far.
    pub fn errors(&self) -> usize {
        self.out.iter().filter(|d| d.severity == Severity::Error).count()
    }

    fn push(&mut self, severity: Severity, pos: Pos, kind: Kind, message: String, help: Option<String>) {
        self.out.push(Diagnostic {
            severity,
            file: self.file.clone(),
            pos,
            kind,
            message,
            help,
        });
    }
}

/// Whether any diagnostic is an error.
pub fn has_errors(diags: &[Diagnostic]) -> bool {
    diags.iter().any(|d| d.severity == Severity::Error)
}

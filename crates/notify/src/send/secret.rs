//! Secrets come from an environment variable or a file (a mounted Kubernetes Secret), never
//! from the configuration itself, and never show in `Debug` output.

use std::fmt;
use std::path::PathBuf;

use crate::Error;

/// A secret value. Its `Debug` shows `<redacted>`, and it has no `Display`, so it cannot slip
/// into a log line or an error message by formatting.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where a secret is read from. Its `Debug` shows the variable's name or the file's path,
/// which are not secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable holding the value.
    Env(String),
    /// A file holding the value; a trailing line break (as `echo` or an editor leaves) is not
    /// part of it.
    File(PathBuf),
}

impl SecretSource {
    /// Reads the secret now.
    pub fn load(&self) -> Result<Secret, Error> {
        let value = match self {
            SecretSource::Env(var) => std::env::var(var).map_err(|source| Error::SecretEnv {
                var: var.clone(),
                source,
            })?,
            SecretSource::File(path) => {
                let mut value = std::fs::read_to_string(path).map_err(|source| Error::SecretFile {
                    path: path.clone(),
                    source,
                })?;
                let kept = value.trim_end_matches(['\n', '\r']).len();
                value.truncate(kept);
                value
            }
        };
        if value.is_empty() {
            return Err(Error::SecretEmpty {
                origin: self.origin(),
            });
        }
        Ok(Secret(value))
    }

    fn origin(&self) -> String {
        match self {
            SecretSource::Env(var) => format!("environment variable `{var}`"),
            SecretSource::File(path) => format!("file {}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(
            format!("{:#?}", Some(&secret)),
            "Some(\n    Secret(<redacted>),\n)"
        );
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn a_file_secret_loses_its_trailing_line_break_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("password");
        std::fs::write(&path, " pass word \r\n").expect("write");
        let secret = SecretSource::File(path).load().expect("load");
        assert_eq!(secret.expose(), " pass word ");
    }

    #[test]
    fn an_empty_or_missing_file_is_an_error_that_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("write");
        let err = SecretSource::File(empty.clone()).load().expect_err("empty");
        assert!(matches!(err, Error::SecretEmpty { .. }), "{err:?}");
        assert!(err.to_string().contains(&empty.display().to_string()), "{err}");

        let missing = dir.path().join("missing");
        let err = SecretSource::File(missing.clone()).load().expect_err("missing");
        assert!(matches!(err, Error::SecretFile { .. }), "{err:?}");
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn an_environment_secret_is_read_and_an_unset_one_is_an_error_that_names_it() {
        // Setting variables needs `unsafe` in edition 2024, so read one every process has.
        let path = SecretSource::Env("PATH".into()).load().expect("PATH is set");
        assert_eq!(Some(path.expose().to_owned()), std::env::var("PATH").ok());

        let var = "COHORT_NOTIFY_TEST_SURELY_UNSET_7F3A";
        let err = SecretSource::Env(var.into()).load().expect_err("unset");
        assert!(matches!(err, Error::SecretEnv { .. }), "{err:?}");
        assert!(err.to_string().contains(var), "{err}");
    }
}

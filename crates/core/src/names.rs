//! Validated names: services, tracks and versions, checked against Kubernetes' rules up front
//! so that nothing fails later at apply time.

use std::fmt;

/// The longest DNS label Kubernetes accepts (Service names, label values, hostnames).
pub const MAX_LABEL: usize = 63;

/// Why a name or version is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing was written.
    #[error("the {what} is empty")]
    Empty {
        /// What kind of name it is ("service name", "track name", "version").
        what: &'static str,
    },
    /// Longer than a DNS label.
    #[error("the {what} `{name}` is {len} characters; Kubernetes allows at most {max}")]
    TooLong {
        /// What kind of name it is.
        what: &'static str,
        /// The name.
        name: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A character or shape Kubernetes refuses.
    #[error("the {what} `{name}` {problem}")]
    BadShape {
        /// What kind of name it is.
        what: &'static str,
        /// The name.
        name: String,
        /// What is wrong, as a phrase that ends the sentence.
        problem: &'static str,
    },
}

/// Checks an RFC 1123 DNS label: lowercase letters, digits and `-`, starting and ending with a
/// letter or digit, at most 63 characters. `letter_first` adds RFC 1035's rule (Service names).
pub fn check_dns_label(what: &'static str, name: &str, letter_first: bool) -> Result<(), NameError> {
    check_label(
        what,
        name,
        b"-",
        "may only contain lowercase letters, digits and `-`",
        letter_first,
    )
}

/// The shared shape of labels: 1 to 63 of lowercase letters, digits and `extra`, starting and
/// ending with a letter or digit.
fn check_label(
    what: &'static str,
    name: &str,
    extra: &[u8],
    charset: &'static str,
    letter_first: bool,
) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if name.len() > MAX_LABEL {
        return Err(NameError::TooLong {
            what,
            name: name.to_string(),
            len: name.len(),
            max: MAX_LABEL,
        });
    }
    let bad = |problem| {
        Err(NameError::BadShape {
            what,
            name: name.to_string(),
            problem,
        })
    };
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !name.bytes().all(|b| alnum(b) || extra.contains(&b)) {
        return bad(charset);
    }
    if letter_first && !name.as_bytes()[0].is_ascii_lowercase() {
        return bad("must start with a lowercase letter");
    }
    if !alnum(name.as_bytes()[0]) || !alnum(name.as_bytes()[name.len() - 1]) {
        return bad("must start and end with a letter or digit");
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $what:literal, $letter_first:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $ty(String);

        impl $ty {
            /// Checks and wraps a name.
            pub fn new(name: &str) -> Result<Self, NameError> {
                check_dns_label($what, name, $letter_first)?;
                Ok(Self(name.to_string()))
            }

            /// The name as written.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }
    };
}

name_type!(
    /// A service's name, e.g. `account-service`: a Service name, so an RFC 1035 label.
    ServiceName, "service name", true
);
name_type!(
    /// A track's name, e.g. `canary`: part of object names and the `track` label.
    TrackName, "track name", false
);

/// A build's version, e.g. `1.18.0`, `1.19.0-rc.1` or a git short hash.
///
/// It is the `version` label's value and, with dots turned into dashes, part of the
/// Deployment's name, so it is limited to what both accept: lowercase letters, digits, `.` and
/// `-`, starting and ending with a letter or digit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Version(String);

impl Version {
    /// Checks and wraps a version.
    pub fn new(v: &str) -> Result<Version, NameError> {
        check_label(
            "version",
            v,
            b"-.",
            "may only contain lowercase letters, digits, `.` and `-` (build metadata after `+` and capitals are not allowed in Kubernetes names and labels)",
            false,
        )?;
        Ok(Version(v.to_string()))
    }

    /// The version as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The version as it appears in object names: dots become dashes, because the API server
    /// warns about dots in Deployment names (pod hostnames are derived from them).
    pub fn name_slug(&self) -> String {
        self.0.replace('.', "-")
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Version {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_follow_rfc_1035() {
        assert!(ServiceName::new("account-service").is_ok());
        assert!(matches!(
            ServiceName::new("1account"),
            Err(NameError::BadShape { .. })
        ));
        assert!(matches!(
            ServiceName::new("Account"),
            Err(NameError::BadShape { .. })
        ));
        assert!(matches!(
            ServiceName::new("account-"),
            Err(NameError::BadShape { .. })
        ));
        assert!(matches!(ServiceName::new(""), Err(NameError::Empty { .. })));
        assert!(matches!(
            ServiceName::new(&"a".repeat(64)),
            Err(NameError::TooLong { len: 64, .. })
        ));
    }

    #[test]
    fn versions_become_dashed_slugs() {
        let v = Version::new("1.18.0").expect("valid");
        assert_eq!(v.name_slug(), "1-18-0");
        assert!(Version::new("1.19.0-rc.1").is_ok());
        assert!(Version::new("a1b2c3d").is_ok());
        for bad in ["1.0.0+build", "V1", "1.0.", "-1", "", "1 0"] {
            assert!(Version::new(bad).is_err(), "{bad}");
        }
    }
}

//! The tokens file of `cohort serve`: one bearer token per cluster (and what that cluster
//! runs), and optionally one for reading the fleet view.
//!
//! ```yaml
//! fleet_token: 8c0f...          # reads GET /v1/fleet (cohort status --fleet)
//! clusters:
//!   eu-west:
//!     token: 3f9a...
//!     services: [account-service]   # optional: all services when absent
//! ```

use std::path::{Path, PathBuf};

use cohort_yaml::{Node, NodeKind, Pos};
use subtle::ConstantTimeEq;

/// Tokens shorter than this are refused: a bearer token is a password.
pub const MIN_TOKEN_LEN: usize = 16;

/// Who may call the control API.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    /// The clusters, in the file's order.
    pub clusters: Vec<ClusterToken>,
    fleet: Option<String>,
}

/// One cluster: its name, its token and the services it runs.
#[derive(Clone)]
pub struct ClusterToken {
    /// The cluster's name.
    pub name: String,
    token: String,
    /// The services it runs (`None`: all of the repo's).
    pub services: Option<Vec<String>>,
}

impl std::fmt::Debug for ClusterToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterToken")
            .field("name", &self.name)
            .field("services", &self.services)
            .finish_non_exhaustive()
    }
}

/// Whose token a request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller<'a> {
    /// A cluster's agent.
    Cluster(&'a str),
    /// A reader of the fleet view.
    Fleet,
    /// Nobody: no token, or one the file does not hold.
    Unknown,
}

/// A tokens file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// It could not be read, or is not a regular file of a sane size (a named pipe would
    /// block the server's start; a link to /dev/zero would read for ever).
    #[error("cannot use the tokens file: {0}")]
    Read(#[from] cohort_spec::entry::Refusal),
    /// It is not what the format says.
    #[error("{}:{pos}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Where.
        pos: Pos,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl Tokens {
    /// Reads and checks the tokens file at `path`.
    pub fn read(path: &Path) -> Result<Tokens, TokensError> {
        let text = cohort_spec::entry::read_named_file(path)?;
        Tokens::parse(path, &text)
    }

    /// Checks the text of a tokens file (`path` is for messages).
    pub fn parse(path: &Path, text: &str) -> Result<Tokens, TokensError> {
        let invalid = |pos: Pos, message: String| TokensError::Invalid {
            path: path.to_owned(),
            pos,
            message,
        };
        let root = cohort_yaml::parse(text).map_err(|e| invalid(e.pos, e.message))?;
        let NodeKind::Map(entries) = &root.kind else {
            return Err(invalid(
                root.pos,
                format!(
                    "expected a mapping with `clusters:` (and `fleet_token:`), found {}",
                    root.describe()
                ),
            ));
        };
        let mut tokens = Tokens::default();
        let mut seen: Vec<(String, Pos)> = vec![];
        let mut check_token = |node: &Node, whose: &str| -> Result<String, TokensError> {
            let Some(token) = node.as_scalar() else {
                return Err(invalid(
                    node.pos,
                    format!("the token of {whose} must be a string"),
                ));
            };
            if token.chars().count() < MIN_TOKEN_LEN || token.chars().any(char::is_whitespace) {
                return Err(invalid(
                    node.pos,
                    format!(
                        "the token of {whose} must be at least {MIN_TOKEN_LEN} characters without spaces \
                         (make one with `openssl rand -hex 32`)"
                    ),
                ));
            }
            if let Some((_, at)) = seen.iter().find(|(t, _)| t == token) {
                return Err(invalid(
                    node.pos,
                    format!(
                        "the token of {whose} is also used at line {}; give each its own",
                        at.line
                    ),
                ));
            }
            seen.push((token.to_string(), node.pos));
            Ok(token.to_string())
        };
        let mut clusters_node = None;
        for (key, value) in entries {
            match key.as_scalar() {
                Some("fleet_token") => tokens.fleet = Some(check_token(value, "fleet_token")?),
                Some("clusters") => clusters_node = Some(value),
                other => {
                    return Err(invalid(
                        key.pos,
                        format!(
                            "unknown key {:?}; expected `clusters` or `fleet_token`",
                            other.unwrap_or_default()
                        ),
                    ));
                }
            }
        }
        let Some(clusters) = clusters_node else {
            return Err(invalid(
                root.pos,
                "no `clusters:`; name at least one cluster with its token".into(),
            ));
        };
        let NodeKind::Map(clusters) = &clusters.kind else {
            return Err(invalid(
                clusters.pos,
                format!(
                    "`clusters` must map cluster names to their token, found {}",
                    clusters.describe()
                ),
            ));
        };
        for (name_node, body) in clusters {
            let name = name_node.as_scalar().unwrap_or_default();
            if name.is_empty()
                || name.len() > 63
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                || name.starts_with('-')
                || name.ends_with('-')
            {
                return Err(invalid(
                    name_node.pos,
                    format!(
                        "cluster name {name:?} must be lowercase letters, digits and '-' (like eu-west-1)"
                    ),
                ));
            }
            if tokens.clusters.iter().any(|c| c.name == name) {
                return Err(invalid(name_node.pos, format!("cluster {name} is named twice")));
            }
            let NodeKind::Map(fields) = &body.kind else {
                return Err(invalid(
                    body.pos,
                    format!("cluster {name} needs `token:` (and optionally `services:`)"),
                ));
            };
            let mut token = None;
            let mut services = None;
            for (k, v) in fields {
                match k.as_scalar() {
                    Some("token") => token = Some(check_token(v, &format!("cluster {name}"))?),
                    Some("services") => {
                        let NodeKind::Seq(items) = &v.kind else {
                            return Err(invalid(
                                v.pos,
                                format!("`services` of cluster {name} must be a list"),
                            ));
                        };
                        let mut names = vec![];
                        for item in items {
                            match item.as_scalar() {
                                Some(s) if !s.is_empty() => names.push(s.to_string()),
                                _ => return Err(invalid(item.pos, "a service name must be a string".into())),
                            }
                        }
                        services = Some(names);
                    }
                    other => {
                        return Err(invalid(
                            k.pos,
                            format!(
                                "unknown key {:?} in cluster {name}; expected `token` or `services`",
                                other.unwrap_or_default()
                            ),
                        ));
                    }
                }
            }
            let Some(token) = token else {
                return Err(invalid(body.pos, format!("cluster {name} has no `token:`")));
            };
            tokens.clusters.push(ClusterToken {
                name: name.to_string(),
                token,
                services,
            });
        }
        if tokens.clusters.is_empty() {
            return Err(invalid(
                root.pos,
                "`clusters:` is empty; name at least one cluster".into(),
            ));
        }
        Ok(tokens)
    }

    /// Whose `presented` token it is. Every token is compared in constant time, all of
    /// them every time, so neither timing nor order tells how much of a token was right.
    pub fn caller(&self, presented: &str) -> Caller<'_> {
        let mut found = Caller::Unknown;
        let p = presented.as_bytes();
        for c in &self.clusters {
            if bool::from(c.token.as_bytes().ct_eq(p)) {
                found = Caller::Cluster(&c.name);
            }
        }
        if let Some(fleet) = &self.fleet
            && bool::from(fleet.as_bytes().ct_eq(p))
        {
            found = Caller::Fleet;
        }
        found
    }

    /// The cluster named `name`.
    pub fn cluster(&self, name: &str) -> Option<&ClusterToken> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{Caller, Tokens};

    const A: &str = "aaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbb";
    const F: &str = "ffffffffffffffffffff";

    #[test]
    fn each_token_names_its_cluster_and_the_fleet_reader() {
        let text = format!(
            "fleet_token: {F}\nclusters:\n  eu-west:\n    token: {A}\n    services: [account-service]\n  us-east:\n    token: {B}\n"
        );
        let tokens = Tokens::parse(Path::new("tokens.yaml"), &text).expect("valid");
        assert_eq!(tokens.caller(A), Caller::Cluster("eu-west"));
        assert_eq!(tokens.caller(B), Caller::Cluster("us-east"));
        assert_eq!(tokens.caller(F), Caller::Fleet);
        assert_eq!(tokens.caller("aaaaaaaaaaaaaaaaaaab"), Caller::Unknown);
        assert_eq!(tokens.caller(""), Caller::Unknown);
        let eu = tokens.cluster("eu-west").expect("eu-west");
        assert_eq!(eu.services.as_deref(), Some(&["account-service".to_string()][..]));
        assert_eq!(tokens.cluster("us-east").and_then(|c| c.services.clone()), None);
        assert!(!format!("{eu:?}").contains(A), "tokens stay out of debug output");
    }

    #[test]
    fn a_bad_tokens_file_is_refused_at_the_place_with_the_fix() {
        let cases = [
            (
                "clusters:\n  eu-west:\n    token: short\n",
                "3:12",
                "at least 16 characters",
            ),
            (
                &format!("clusters:\n  eu-west:\n    token: {A}\n  us-east:\n    token: {A}\n"),
                "5:12",
                "also used at line 3",
            ),
            ("clusters:\n  EU:\n    token: x\n", "2:3", "lowercase letters"),
            ("clusters:\n  eu:\n    services: [a]\n", "3:5", "has no `token:`"),
            ("cluster:\n  eu: {}\n", "1:1", "unknown key \"cluster\""),
            ("fleet_token: x\n", "1:14", "at least 16"),
            (&format!("fleet_token: {F}\n"), "1:1", "no `clusters:`"),
            ("clusters: [a\n", "", ""),
        ];
        for (text, pos, message) in cases {
            let err = Tokens::parse(Path::new("tokens.yaml"), text)
                .expect_err(text)
                .to_string();
            assert!(err.starts_with(&format!("tokens.yaml:{pos}")), "{text} -> {err}");
            assert!(err.contains(message), "{text} -> {err}");
        }
    }
}

//! Container image references, checked as the kubelet's container runtime parses them (the
//! distribution/reference grammar), so a spec that passes `validate` cannot leave pods in
//! `InvalidImageName` at apply time.
//!
//! ```text
//! reference  := repository [ ":" tag ] [ "@" digest ]
//! repository := [ registry "/" ] path-component ( "/" path-component )*
//! registry   := host [ ":" port ]     host: DNS-style components (any case), IPv4, or [IPv6]
//! path-component := [a-z0-9]+ ( separator [a-z0-9]+ )*     separator := "." | "_" | "__" | "-"+
//! tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest     := algorithm ":" encoded
//! ```
//!
//! The first component is the registry only when it has a `.` or a `:`, is `localhost`, or has
//! an uppercase letter, as Docker and containerd decide; otherwise it is part of the path.

/// The longest repository name (registry and path) the grammar allows.
pub const MAX_REPOSITORY: usize = 255;

/// Why an image reference would be refused by a container runtime.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Nothing was written.
    #[error("is empty")]
    Empty,
    /// The repository name is too long.
    #[error("is {len} characters long; a repository name may have at most {MAX_REPOSITORY}")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// A tag or digest where only a repository belongs.
    #[error("has a tag or digest (`{suffix}`); cohort adds the version as the tag")]
    HasTag {
        /// The `:tag` or `@digest` written.
        suffix: String,
    },
    /// The registry part is not a host with an optional port.
    #[error("has registry `{registry}`, which is not a host name or address with an optional port")]
    BadRegistry {
        /// The registry written.
        registry: String,
    },
    /// One `/`-separated part of the path breaks the grammar.
    #[error("has path component `{component}`, which {problem}")]
    BadComponent {
        /// The component (empty for `//` or a `/` at either end).
        component: String,
        /// What is wrong, as a phrase that ends the sentence.
        problem: &'static str,
    },
    /// A tag the grammar refuses.
    #[error(
        "has tag `{tag}`, which should be 1 to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`"
    )]
    BadTag {
        /// The tag.
        tag: String,
    },
    /// A digest the grammar refuses.
    #[error(
        "has digest `{digest}`, which should be `sha256:` and 64 lowercase hex digits (or another algorithm:value)"
    )]
    BadDigest {
        /// The digest.
        digest: String,
    },
}

/// Checks an image repository without tag or digest (`registry.example.com/shop/account`),
/// to which cohort appends `:<version>`.
pub fn check_repository(text: &str) -> Result<(), ImageError> {
    if text.is_empty() {
        return Err(ImageError::Empty);
    }
    let last = text.rsplit('/').next().unwrap_or(text);
    if let Some(at) = last.find([':', '@']) {
        return Err(ImageError::HasTag {
            suffix: last[at..].to_string(),
        });
    }
    if text.len() > MAX_REPOSITORY {
        return Err(ImageError::TooLong { len: text.len() });
    }
    let (registry, path) = split_registry(text);
    if let Some(registry) = registry
        && !registry_ok(registry)
    {
        return Err(ImageError::BadRegistry {
            registry: registry.to_string(),
        });
    }
    path.split('/').try_for_each(check_component)
}

/// Checks a whole reference: a repository with an optional tag and optional digest
/// (`ghcr.io/cohort-dev/cohort:0.1.0`).
pub fn check_reference(text: &str) -> Result<(), ImageError> {
    let (rest, digest) = match text.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (text, None),
    };
    if let Some(digest) = digest
        && !digest_ok(digest)
    {
        return Err(ImageError::BadDigest {
            digest: digest.to_string(),
        });
    }
    // A `:` after the last `/` starts the tag; one before it belongs to the registry's port.
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (repository, tag) = match rest[slash..].rfind(':') {
        Some(colon) => (&rest[..slash + colon], Some(&rest[slash + colon + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag
        && !tag_ok(tag)
    {
        return Err(ImageError::BadTag { tag: tag.to_string() });
    }
    check_repository(repository)
}

/// Whether `tag` is a tag the grammar takes (a version, for example, before it becomes one).
pub fn tag_ok(tag: &str) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let bytes = tag.as_bytes();
    matches!(bytes.first(), Some(&c) if word(c))
        && bytes.len() <= 128
        && bytes.iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// The registry (if the first component is one) and the path.
fn split_registry(text: &str) -> (Option<&str>, &str) {
    match text.split_once('/') {
        Some((first, path))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), path)
        }
        _ => (None, text),
    }
}

fn registry_ok(registry: &str) -> bool {
    let (host, port) = if let Some(v6) = registry.strip_prefix('[') {
        let Some((addr, rest)) = v6.split_once(']') else {
            return false;
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match rest {
            "" => return true,
            _ => match rest.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()));
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        matches!((b.first(), b.last()), (Some(f), Some(l)) if f.is_ascii_alphanumeric() && l.is_ascii_alphanumeric())
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
    };
    port_ok && (host.is_empty() && registry.starts_with('[') || host.split('.').all(component_ok))
}

fn check_component(component: &str) -> Result<(), ImageError> {
    let bad = |problem| {
        Err(ImageError::BadComponent {
            component: component.to_string(),
            problem,
        })
    };
    if component.is_empty() {
        return bad("is empty (two `/` in a row, or a `/` at either end)");
    }
    if component.bytes().any(|c| c.is_ascii_uppercase()) {
        return bad("has uppercase letters; repository paths must be lowercase");
    }
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bytes = component.as_bytes();
    if !bytes.first().is_some_and(|&c| alnum(c)) || !bytes.last().is_some_and(|&c| alnum(c)) {
        return bad("should start and end with a lowercase letter or digit");
    }
    // Between runs of letters and digits: one `.`, one `_`, two `_`, or any number of `-`.
    for separator in component.split(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        let ok = matches!(separator, "" | "." | "_" | "__") || separator.bytes().all(|c| c == b'-');
        if !ok {
            return bad("may only join letters and digits with `.`, `_`, `__` or dashes");
        }
    }
    Ok(())
}

fn digest_ok(digest: &str) -> bool {
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return false;
    };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.split(['+', '.', '_', '-']).all(|part| {
            !part.is_empty() && part.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    let encoded_ok = match algorithm {
        "sha256" => {
            encoded.len() == 64
                && encoded
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        }
        "sha512" => {
            encoded.len() == 128
                && encoded
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        }
        _ => {
            encoded.len() >= 32
                && encoded
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'=' | b'_' | b'-'))
        }
    };
    algorithm_ok && encoded_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_a_runtime_takes_pass() {
        for ok in [
            "registry.example.com/shop/account-service",
            "Registry.Example.com/shop/account",
            "localhost/account",
            "localhost:5000/shop/account",
            "registry:5000/account",
            "[fd00::1]:5000/shop/account",
            "[fd00::1]/account",
            "10.0.0.1:5000/a/b/c",
            "account",
            "library/nginx",
            "ghcr.io/cohort-dev/cohort",
            "shop/account__service",
            "shop/account_service.v2",
            "shop/account---service",
            "a/b0/c-9",
        ] {
            assert_eq!(check_repository(ok), Ok(()), "{ok}");
        }
    }

    /// Both passed `validate` before and would have left every pod in `InvalidImageName`.
    #[test]
    fn uppercase_paths_and_broken_components_are_refused_as_the_kubelet_would() {
        let e = check_repository("Registry.Example.com/SHOP/Account").expect_err("uppercase path");
        assert!(
            matches!(e, ImageError::BadComponent { ref component, .. } if component == "SHOP"),
            "{e}"
        );
        assert!(e.to_string().contains("lowercase"), "{e}");
        let e = check_repository("-registry/..//x__y").expect_err("broken");
        assert!(
            matches!(e, ImageError::BadComponent { ref component, .. } if component == "-registry"),
            "{e}"
        );
        for bad in [
            "shop//account",
            "shop/account/",
            "/shop/account",
            "shop/..",
            "shop/a..b",
            "shop/a___b",
            "shop/a_-b",
            "shop/-a",
            "shop/a.",
            "shop/acc ount",
            "shop/accöunt",
            "registry.example.com/",
            "registry..example.com/a",
            "-registry.example.com/a",
            "registry.example.com:port/a",
            "registry.example.com:/a",
            "[not-v6]:5000/a",
            "[fd00::1/a",
            "re_gistry.example.com/a",
        ] {
            assert!(check_repository(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_and_digests_are_not_part_of_a_repository() {
        for tagged in [
            "shop/account:1.0",
            "registry:5000/shop/account:latest",
            "shop/account@sha256:abc",
            "account:5000",
        ] {
            let e = check_repository(tagged).expect_err(tagged);
            assert!(matches!(e, ImageError::HasTag { .. }), "{tagged}: {e}");
        }
        assert_eq!(check_repository(""), Err(ImageError::Empty));
        let long = format!("shop/{}", "a".repeat(251));
        assert!(matches!(
            check_repository(&long),
            Err(ImageError::TooLong { len: 256 })
        ));
    }

    #[test]
    fn whole_references_check_tag_and_digest_too() {
        let sha = "a".repeat(64);
        for ok in [
            "ghcr.io/cohort-dev/cohort:0.1.0".to_string(),
            "registry:5000/cohort".to_string(),
            "registry:5000/cohort:v1_2-rc.3".to_string(),
            format!("ghcr.io/cohort-dev/cohort@sha256:{sha}"),
            format!("ghcr.io/cohort-dev/cohort:0.1.0@sha256:{sha}"),
        ] {
            assert_eq!(check_reference(&ok), Ok(()), "{ok}");
        }
        assert!(matches!(
            check_reference("cohort:.1"),
            Err(ImageError::BadTag { .. })
        ));
        assert!(matches!(
            check_reference("cohort:"),
            Err(ImageError::BadTag { .. })
        ));
        assert!(matches!(
            check_reference(&format!("cohort:{}", "a".repeat(129))),
            Err(ImageError::BadTag { .. })
        ));
        assert!(matches!(
            check_reference("cohort@sha256:abc"),
            Err(ImageError::BadDigest { .. })
        ));
        assert!(matches!(
            check_reference("cohort@sha256"),
            Err(ImageError::BadDigest { .. })
        ));
        // An uppercase first component is a registry host, as the runtimes read it.
        assert_eq!(check_reference("SHOP/cohort:1"), Ok(()));
        assert!(matches!(
            check_reference("shop/COHORT:1"),
            Err(ImageError::BadComponent { .. })
        ));
    }
}

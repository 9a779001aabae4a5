//! The `notifications` section of cohort.yaml: where `cohort status --watch` sends problems.
//! Secrets are named by where to read them (an environment variable or a file), never written
//! into the release repo.

use cohort_core::{EmailChannel, Notifications, SecretRef, SlackChannel, SmtpSecurity};
use cohort_yaml::Node;

use crate::diag::{Kind, Sink};
use crate::read::{self, MapReader};

/// Reads `notifications` (absent: none).
pub(crate) fn read_notifications(n: Option<&Node>, sink: &mut Sink<'_>) -> Option<Notifications> {
    let Some(n) = n else {
        return Some(Notifications::default());
    };
    let mut m = MapReader::new(n, "`notifications`", sink);
    let slack = m.opt("slack").map(|s| read_slack(s, sink));
    let email = m.opt("email").map(|e| read_email(e, sink));
    m.finish(sink);
    Some(Notifications {
        slack: match slack {
            Some(s) => Some(s?),
            None => None,
        },
        email: match email {
            Some(e) => Some(e?),
            None => None,
        },
    })
}

/// One secret: exactly one of `<name>_env` and `<name>_file`; `<name>` itself (the secret
/// written out) is refused.
pub(crate) fn read_secret(
    m: &mut MapReader<'_>,
    keys: [&'static str; 3],
    what: &str,
    sink: &mut Sink<'_>,
) -> Option<Option<SecretRef>> {
    let [inline, env, file] = keys;
    if let Some(n) = m.opt(inline) {
        sink.error(
            n.pos,
            Kind::WrongType,
            format!("{what} is a secret and must not be written in the release repo"),
            Some(format!(
                "name where to read it: `{env}: VARIABLE` or `{file}: /path/to/file` (e.g. a mounted Secret)"
            )),
        );
        return None;
    }
    match (m.opt(env), m.opt(file)) {
        (Some(_), Some(f)) => {
            sink.error(
                f.pos,
                Kind::Duplicate,
                format!("{what} is given both by `{env}` and `{file}`"),
                Some("keep one".into()),
            );
            None
        }
        (Some(e), None) => {
            let var = read::text(e, &format!("`{env}`"), sink)?;
            let valid = !var.is_empty()
                && !var.starts_with(|c: char| c.is_ascii_digit())
                && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                sink.error(
                    e.pos,
                    Kind::WrongType,
                    format!("`{env}` should name an environment variable, not `{var}`"),
                    Some("letters, digits and `_`, e.g. `COHORT_SLACK_WEBHOOK`".into()),
                );
                return None;
            }
            Some(Some(SecretRef::Env(var.to_string())))
        }
        (None, Some(f)) => {
            let path = read::text(f, &format!("`{file}`"), sink)?;
            // Relative to what? The watcher's working directory is not the repo's.
            if !path.starts_with('/') {
                sink.error(
                    f.pos,
                    Kind::WrongType,
                    format!("`{file}` is `{path}`, not an absolute path"),
                    Some("write the whole path, e.g. `/run/secrets/cohort/value`".into()),
                );
                return None;
            }
            Some(Some(SecretRef::File(path.into())))
        }
        (None, None) => Some(None),
    }
}

fn read_slack(n: &Node, sink: &mut Sink<'_>) -> Option<SlackChannel> {
    let mut m = MapReader::new(n, "`notifications.slack`", sink);
    let webhook = read_secret(
        &mut m,
        ["webhook", "webhook_env", "webhook_file"],
        "the Slack webhook URL",
        sink,
    );
    let at = m.pos();
    m.finish(sink);
    match webhook? {
        Some(webhook) => Some(SlackChannel { webhook }),
        None => {
            sink.error(
                at,
                Kind::MissingKey,
                "`notifications.slack` has no `webhook_env` or `webhook_file`",
                Some(
                    "name where the incoming webhook's URL is, e.g. `webhook_env: COHORT_SLACK_WEBHOOK`"
                        .into(),
                ),
            );
            None
        }
    }
}

fn read_email(n: &Node, sink: &mut Sink<'_>) -> Option<EmailChannel> {
    let mut m = MapReader::new(n, "`notifications.email`", sink);
    let server = m
        .req("smtp_server", "e.g. `smtp_server: smtp.example.com:587`", sink)
        .and_then(|s| {
            let text = read::text(s, "`smtp_server`", sink)?;
            match host_and_port(text) {
                Ok(hp) => Some(hp),
                Err(e) => {
                    sink.error(s.pos, Kind::WrongType, format!("`smtp_server`: {e}"), None);
                    None
                }
            }
        });
    let security = match m.opt("security") {
        None => Some(SmtpSecurity::StartTls),
        Some(s) => match read::text(s, "`security`", sink)? {
            "starttls" => Some(SmtpSecurity::StartTls),
            "tls" => Some(SmtpSecurity::Tls),
            "plain" => Some(SmtpSecurity::Plain),
            other => {
                sink.error(
                    s.pos,
                    Kind::WrongType,
                    format!("`security` is `{other}`"),
                    Some("write `starttls` (port 587), `tls` (port 465) or `plain` (port 25)".into()),
                );
                None
            }
        },
    };
    let user_node = m.opt("user");
    let user = user_node.and_then(|u| read::text(u, "`user`", sink).map(str::to_string));
    let password = read_secret(
        &mut m,
        ["password", "password_env", "password_file"],
        "the SMTP password",
        sink,
    );
    let from = m
        .req(
            "from",
            "the sender, e.g. `from: cohort <cohort@example.com>`",
            sink,
        )
        .and_then(|f| address(f, "`from`", sink));
    let to_node = m.req("to", "the recipients, e.g. `to: [oncall@example.com]`", sink);
    let at = m.pos();
    m.finish(sink);
    let to: Vec<String> = to_node
        .map(|t| match t.as_scalar() {
            Some(_) => address(t, "`to`", sink).into_iter().collect(),
            None => read::list(t, "`to`", sink)
                .into_iter()
                .filter_map(|a| address(a, "a recipient in `to`", sink))
                .collect(),
        })
        .unwrap_or_default();
    if to_node.is_some() && to.is_empty() {
        sink.error(
            at,
            Kind::MissingKey,
            "`notifications.email.to` names no recipient",
            None,
        );
        return None;
    }
    let login = match (user, password?) {
        (Some(user), Some(password)) => Some((user, password)),
        (None, None) => None,
        (Some(_), None) => {
            sink.error(
                user_node.map_or(at, |u| u.pos),
                Kind::MissingKey,
                "`user` is given without `password_env` or `password_file`",
                Some("name where the password is, e.g. `password_env: COHORT_SMTP_PASSWORD`".into()),
            );
            return None;
        }
        (None, Some(_)) => {
            sink.error(
                at,
                Kind::MissingKey,
                "a password is given without `user`",
                Some("add `user: NAME`".into()),
            );
            return None;
        }
    };
    let (host, port) = server?;
    Some(EmailChannel {
        host,
        port,
        security: security?,
        login,
        from: from?,
        to,
    })
}

/// A mail address, bare or with a display name (`cohort <cohort@example.com>`).
fn address(n: &Node, what: &str, sink: &mut Sink<'_>) -> Option<String> {
    let text = read::text(n, what, sink)?;
    let bare = match (text.rfind('<'), text.ends_with('>')) {
        (Some(open), true) => &text[open + 1..text.len() - 1],
        _ => text,
    };
    // One address: a list (`a@x, b@y`) belongs in `to` as a YAML list.
    let valid = matches!(bare.split_once('@'), Some((local, domain))
        if !local.is_empty()
            && !domain.is_empty()
            && !domain.contains('@')
            && !bare.contains(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '<' | '>')));
    if !valid {
        sink.error(
            n.pos,
            Kind::WrongType,
            format!("{what} `{text}` is not a mail address"),
            Some("write `name@example.com` or `Name <name@example.com>`".into()),
        );
        return None;
    }
    Some(text.to_string())
}

/// `HOST` or `HOST:PORT`; an IPv6 address bare or in brackets (`[::1]:2525`).
pub fn host_and_port(text: &str) -> Result<(String, Option<u16>), String> {
    let text = text.trim();
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{p}` is not a port number"))
    };
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{text}` has no closing `]`"))?;
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("`{host}` in brackets is not an IPv6 address"))?;
        return match after {
            "" => Ok((host.to_string(), None)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((host.to_string(), Some(port(p)?))),
                None => Err(format!("`{after}` after `]` should be `:PORT`")),
            },
        };
    }
    if text.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok((text.to_string(), None));
    }
    let (host, p) = match text.split_once(':') {
        Some((host, p)) => (host, Some(port(p)?)),
        None => (text, None),
    };
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if !valid {
        return Err(format!(
            "`{text}` is not HOST or HOST:PORT (e.g. `smtp.example.com:587`; no scheme)"
        ));
    }
    Ok((host.to_string(), p))
}

#[cfg(test)]
mod tests {
    use super::host_and_port;
    use crate::repo::seed_with as with;
    use cohort_core::{SecretRef, SmtpSecurity};

    #[test]
    fn channels_read_with_where_their_secrets_are() {
        let (repo, diags) = with(
            "notifications:\n  slack:\n    webhook_env: COHORT_SLACK_WEBHOOK\n  email:\n    \
             smtp_server: smtp.example.com:2525\n    user: cohort\n    password_file: /run/secrets/smtp\n    \
             from: cohort <cohort@example.com>\n    to: [oncall@example.com, dev@example.com]\n",
        );
        assert!(diags.is_empty(), "{diags:?}");
        let n = repo.expect("valid").pipeline.notifications;
        assert_eq!(
            n.slack.expect("slack").webhook,
            SecretRef::Env("COHORT_SLACK_WEBHOOK".into())
        );
        let email = n.email.expect("email");
        assert_eq!(
            (email.host.as_str(), email.port),
            ("smtp.example.com", Some(2525))
        );
        assert_eq!(email.security, SmtpSecurity::StartTls);
        assert_eq!(
            email.login,
            Some(("cohort".into(), SecretRef::File("/run/secrets/smtp".into())))
        );
        assert_eq!(email.to.len(), 2);
    }

    #[test]
    fn a_secret_written_into_the_repo_is_refused_where_it_is_written() {
        let (repo, diags) =
            with("notifications:\n  slack:\n    webhook: https://hooks.slack.com/services/T0/B0/xyz\n");
        assert!(repo.is_none());
        assert_eq!(diags.len(), 1, "{diags:?}");
        let d = &diags[0];
        assert!(d.message.contains("is a secret"), "{d:?}");
        assert!(
            d.help.as_deref().is_some_and(|h| h.contains("webhook_env")),
            "{d:?}"
        );
        assert_eq!(d.file.to_string_lossy(), "cohort.yaml");
        assert!(d.pos.line > 60, "{d:?}");
    }

    #[test]
    fn every_mistake_in_the_email_channel_is_reported_at_once() {
        let (repo, diags) = with(
            "notifications:\n  email:\n    smtp_server: mail:smtp\n    security: ssl\n    user: cohort\n    \
             from: nobody\n    to: [\"a@example.com, b@example.com\"]\n    password_file: secrets/smtp\n",
        );
        assert!(repo.is_none());
        let messages: Vec<&str> = diags.iter().map(|d| d.message.as_str()).collect();
        assert!(
            messages.iter().any(|m| m.contains("`smtp` is not a port number")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m.contains("`security` is `ssl`")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m.contains("not a mail address")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m.contains("names no recipient")),
            "{messages:?}"
        );
    }

    #[test]
    fn hosts_read_with_and_without_ports() {
        assert_eq!(host_and_port("mail"), Ok(("mail".into(), None)));
        assert_eq!(host_and_port("mail:25"), Ok(("mail".into(), Some(25))));
        assert_eq!(host_and_port("[::1]:2525"), Ok(("::1".into(), Some(2525))));
        assert_eq!(host_and_port("[::1]"), Ok(("::1".into(), None)));
        assert_eq!(host_and_port("::1"), Ok(("::1".into(), None)));
        assert!(host_and_port("mail:0").is_err());
        // A scheme or a second port is a mistake, not a host to try.
        assert!(host_and_port("smtp://mail:587").is_err());
        assert!(host_and_port("mail:25:25").is_err());
        assert!(host_and_port("[mail]:25").is_err());
        assert!(host_and_port("").is_err());
    }
}

use std::path::PathBuf;

use super::email::{SmtpAuth, SmtpSecurity, body, subject};
use super::secret::SecretSource;
use super::*;
use crate::events::Problem;

fn ts(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

fn canary() -> Problem {
    Problem::new(
        "account-service",
        "canary:too-few-endpoints",
        "canary has 1 ready endpoint (minimum 2)",
    )
}

fn secret_file(dir: &tempfile::TempDir, name: &str, value: &str) -> SecretSource {
    let path = dir.path().join(name);
    std::fs::write(&path, value).expect("write secret");
    SecretSource::File(path)
}

fn email(host: &str, security: SmtpSecurity) -> EmailConfig {
    EmailConfig::new(
        host,
        security,
        "cohort <cohort@example.com>",
        vec!["oncall@example.com".into()],
    )
}

#[test]
fn backoff_doubles_from_the_base_delay_up_to_the_cap() {
    let policy = RetryPolicy {
        max_attempts: NonZeroU32::MIN.saturating_add(9),
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(1000),
    };
    let delays: Vec<u128> = (1..=6).map(|n| policy.delay_after(n).as_millis()).collect();
    assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
    assert_eq!(policy.delay_after(u32::MAX), Duration::from_millis(1000));
}

#[test]
fn the_default_policy_is_five_attempts_over_about_fifteen_seconds() {
    let policy = RetryPolicy::default();
    assert_eq!(policy.max_attempts.get(), 5);
    let total: Duration = (1..5).map(|n| policy.delay_after(n)).sum();
    assert_eq!(total, Duration::from_secs(15));
}

#[test]
fn loopback_hosts() {
    for host in [
        "localhost",
        "LOCALHOST",
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "[::1]",
    ] {
        assert!(is_loopback_host(host), "{host}");
    }
    for host in ["smtp.example.com", "10.0.0.1", "localhost.example.com", "[::2]"] {
        assert!(!is_loopback_host(host), "{host}");
    }
}

#[test]
fn times_and_durations_for_people() {
    assert_eq!(
        human_time(ts("2026-11-22T09:12:00.5Z")),
        "2026-11-22 09:12:00 UTC"
    );
    assert_eq!(
        lasted(ts("2026-11-22T09:12:00Z"), ts("2026-11-23T09:12:59Z")),
        "24h 59s"
    );
    // A clock that stepped back must not print a negative duration.
    assert_eq!(
        lasted(ts("2026-11-22T09:12:00Z"), ts("2026-11-22T09:00:00Z")),
        "0s"
    );
}

#[test]
fn email_subject_and_body_say_what_when_and_whether_resolved() {
    let opened = Event::Opened {
        problem: canary(),
        since: ts("2026-11-22T09:12:00Z"),
    };
    assert_eq!(
        subject(&opened),
        "[cohort] PROBLEM account-service: canary has 1 ready endpoint (minimum 2)"
    );
    assert_eq!(
        body(&opened),
        "account-service: canary has 1 ready endpoint (minimum 2)\n\n\
         Service:   account-service\n\
         Problem:   canary:too-few-endpoints\n\
         Since:     2026-11-22 09:12:00 UTC\n\n\
         Sent once by cohort status --watch; another message follows when it is resolved.\n"
    );
    let resolved = Event::Resolved {
        problem: canary(),
        since: ts("2026-11-22T09:12:00Z"),
        resolved_at: ts("2026-11-22T09:30:00Z"),
    };
    assert_eq!(
        subject(&resolved),
        "[cohort] RESOLVED account-service: canary has 1 ready endpoint (minimum 2)"
    );
    let text = body(&resolved);
    assert!(
        text.starts_with("Resolved: account-service: canary has"),
        "{text}"
    );
    assert!(
        text.contains("Resolved:  2026-11-22 09:30:00 UTC\nLasted:    18m\n"),
        "{text}"
    );
}

#[test]
fn an_autopilot_decision_says_what_was_done_the_evidence_and_the_commit_in_email_and_slack() {
    let decided = Event::Decided {
        problem: Problem::new("account-service", "rollback", "roll canary back from 1.19.0"),
        detail: vec![
            "fail: canary 1.19.0 against production 1.15.0: error rate 9.15% against 0.19%".into(),
            "commit 3c0e5a1d2".into(),
        ],
        at: ts("2026-11-22T03:12:00Z"),
    };
    assert_eq!(
        subject(&decided),
        "[cohort] AUTOPILOT account-service: roll canary back from 1.19.0"
    );
    assert_eq!(
        body(&decided),
        "account-service: roll canary back from 1.19.0\n\n\
         fail: canary 1.19.0 against production 1.15.0: error rate 9.15% against 0.19%\n\
         commit 3c0e5a1d2\n\n\
         Service:   account-service\n\
         Action:    rollback\n\
         At:        2026-11-22 03:12:00 UTC\n\n\
         Sent once by cohort autopilot.\n"
    );
    let slack = super::slack::message(&decided).to_string();
    assert!(
        slack.contains(":robot_face: Autopilot: account-service"),
        "{slack}"
    );
    assert!(slack.contains("error rate 9.15% against 0.19%"), "{slack}");
    assert!(slack.contains("commit 3c0e5a1d2"), "{slack}");
    assert!(slack.contains("cohort autopilot"), "{slack}");
}

#[test]
fn a_summary_cannot_break_out_of_the_subject_header() {
    let event = Event::Opened {
        problem: Problem::new("svc", "k", "line one\r\nBcc: someone@example.com"),
        since: ts("2026-11-22T09:12:00Z"),
    };
    assert_eq!(
        subject(&event),
        "[cohort] PROBLEM svc: line one  Bcc: someone@example.com"
    );
}

#[test]
fn every_configuration_mistake_is_reported_at_once_with_its_channel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bad_email = email("smtp.example.com", SmtpSecurity::Plain);
    bad_email.from = "not an address".into();
    bad_email.to = vec!["also bad".into(), "fine@example.com".into()];
    bad_email.auth = Some(SmtpAuth {
        username: "cohort".into(),
        password: SecretSource::File(PathBuf::from("/nonexistent/password")),
    });
    let mut no_recipients = email("smtp.example.com", SmtpSecurity::StartTls);
    no_recipients.to.clear();
    let channels = vec![
        ChannelConfig {
            name: "slack-ops".into(),
            kind: ChannelKind::Slack(SlackConfig::new(secret_file(
                &dir,
                "hook",
                "http://hooks.slack.com/x",
            ))),
        },
        ChannelConfig {
            name: "mail-a".into(),
            kind: ChannelKind::Email(bad_email),
        },
        ChannelConfig {
            name: "mail-b".into(),
            kind: ChannelKind::Email(no_recipients),
        },
    ];
    let errors = Notifier::new(channels, RetryPolicy::default()).expect_err("invalid");
    let found: Vec<(&str, &str)> = errors
        .0
        .iter()
        .map(|(channel, error)| {
            let kind = match error {
                Error::InvalidWebhook { .. } => "webhook",
                Error::InvalidAddress { field, .. } => field,
                Error::PlaintextCredentials { .. } => "plaintext",
                Error::SecretFile { .. } => "secret",
                Error::NoRecipients { .. } => "recipients",
                _ => "other",
            };
            (channel.as_str(), kind)
        })
        .collect();
    assert_eq!(
        found,
        vec![
            ("slack-ops", "webhook"),
            ("mail-a", "from"),
            ("mail-a", "to"),
            ("mail-a", "plaintext"),
            ("mail-a", "secret"),
            ("mail-b", "recipients"),
        ]
    );
    let text = errors.to_string();
    assert!(
        text.starts_with(
            "invalid notification settings:\n  channel `slack-ops`: the Slack webhook URL must use https"
        ),
        "{text}"
    );
    assert!(
        text.contains("channel `mail-a`: cannot read the secret file /nonexistent/password: "),
        "{text}"
    );
}

#[test]
fn plain_smtp_with_credentials_is_allowed_only_to_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = email("127.0.0.1", SmtpSecurity::Plain);
    config.auth = Some(SmtpAuth {
        username: "cohort".into(),
        password: secret_file(&dir, "pw", "pw"),
    });
    assert!(email::Email::new(&config).is_ok());
    config.host = "smtp.example.com".into();
    let errors = email::Email::new(&config).expect_err("plaintext");
    assert!(
        matches!(errors[..], [Error::PlaintextCredentials { .. }]),
        "{errors:?}"
    );
    config.security = SmtpSecurity::StartTls;
    assert!(email::Email::new(&config).is_ok());
}

#[test]
fn no_secret_shows_in_debug_output_of_configs_or_a_built_notifier() {
    let dir = tempfile::tempdir().expect("tempdir");
    let webhook = secret_file(
        &dir,
        "hook",
        "https://hooks.slack.com/services/T0/B0/tokenSECRET1\n",
    );
    let password = secret_file(&dir, "pw", "passwordSECRET2\n");
    let mut mail = email("smtp.example.com", SmtpSecurity::ImplicitTls);
    mail.auth = Some(SmtpAuth {
        username: "cohort".into(),
        password,
    });
    let channels = vec![
        ChannelConfig {
            name: "slack-ops".into(),
            kind: ChannelKind::Slack(SlackConfig::new(webhook)),
        },
        ChannelConfig {
            name: "mail".into(),
            kind: ChannelKind::Email(mail),
        },
    ];
    let configs = format!("{channels:?} {channels:#?}");
    let notifier = Notifier::new(channels, RetryPolicy::default()).expect("valid");
    let built = format!("{notifier:?} {notifier:#?}");
    for text in [&configs, &built] {
        assert!(!text.contains("SECRET"), "{text}");
        assert!(!text.contains("/services/"), "{text}");
    }
    assert!(
        built.contains("WebhookUrl(https://hooks.slack.com/<redacted>)"),
        "{built}"
    );
    assert!(built.contains("smtp.example.com"), "{built}");
}

#[test]
fn retryable_errors_are_the_ones_that_may_pass_next_time() {
    let status = |code: u16| Error::SlackStatus {
        host: "h".into(),
        status: http::StatusCode::from_u16(code).expect("status"),
        body: String::new(),
        retry_after: None,
    };
    for code in [500, 502, 503, 429, 408] {
        assert!(status(code).is_retryable(), "{code}");
    }
    for code in [400, 403, 404, 410] {
        assert!(!status(code).is_retryable(), "{code}");
    }
    assert!(
        Error::SlackTimeout {
            host: "h".into(),
            timeout: Duration::from_secs(1)
        }
        .is_retryable()
    );
    assert!(!Error::NoRecipients { host: "h".into() }.is_retryable());
}

#[tokio::test]
async fn notifying_nothing_or_nobody_is_a_quiet_success() {
    let notifier = Notifier::new(vec![], RetryPolicy::default()).expect("no channels");
    assert!(notifier.notify(&[]).await.deliveries.is_empty());
    let event = Event::Opened {
        problem: canary(),
        since: ts("2026-11-22T09:12:00Z"),
    };
    let report = notifier.notify(&[event]).await;
    assert!(report.all_delivered() && report.deliveries.is_empty());
}

use jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::events::Problem;

const TOKEN_PATH: &str = "/services/T000/B000/XXXXsecretXXXX";

fn url(text: &str) -> Result<WebhookUrl, Error> {
    WebhookUrl::parse(&Secret::new(text))
}

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

#[test]
fn an_opened_event_reads_as_a_problem_with_service_summary_and_since() {
    let event = Event::Opened {
        problem: canary(),
        since: ts("2026-11-22T09:12:00Z"),
    };
    let since = ts("2026-11-22T09:12:00Z").as_second();
    assert_eq!(
        message(&event),
        json!({
            "text": ":rotating_light: Problem: account-service: canary has 1 ready endpoint (minimum 2)",
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": ":rotating_light: Problem: account-service", "emoji": true}},
                {"type": "section", "text": {"type": "mrkdwn", "text": "canary has 1 ready endpoint (minimum 2)"}},
                {"type": "section", "fields": [
                    {"type": "mrkdwn", "text": "*Service*\naccount-service"},
                    {"type": "mrkdwn", "text": format!("*Since*\n<!date^{since}^{{date_short_pretty}} {{time_secs}}|2026-11-22 09:12:00 UTC>")},
                ]},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": "`canary:too-few-endpoints` · cohort status --watch"}]},
            ],
        })
    );
}

#[test]
fn a_resolved_event_is_marked_resolved_and_says_until_when_and_for_how_long() {
    let event = Event::Resolved {
        problem: canary(),
        since: ts("2026-11-22T09:12:00Z"),
        resolved_at: ts("2026-11-22T10:14:05Z"),
    };
    let message = message(&event);
    assert_eq!(
        message["text"],
        ":white_check_mark: Resolved: account-service: canary has 1 ready endpoint (minimum 2)"
    );
    assert_eq!(
        message["blocks"][0]["text"]["text"],
        ":white_check_mark: Resolved: account-service"
    );
    assert_eq!(
        message["blocks"][1]["text"]["text"],
        "*Resolved:* canary has 1 ready endpoint (minimum 2)"
    );
    let fields: Vec<&str> = message["blocks"][2]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["text"].as_str().expect("text"))
        .collect();
    assert_eq!(fields.len(), 4);
    assert!(fields[2].starts_with("*Resolved*\n<!date^"), "{}", fields[2]);
    assert!(fields[2].ends_with("|2026-11-22 10:14:05 UTC>"), "{}", fields[2]);
    assert_eq!(fields[3], "*Lasted*\n1h 2m 5s");
}

#[test]
fn markup_in_a_summary_is_shown_as_written_and_long_text_is_cut_to_slacks_limits() {
    let long_service = "s".repeat(200);
    let event = Event::Opened {
        problem: Problem::new(&long_service, "k", "<!channel> & <https://x|click>"),
        since: ts("2026-11-22T09:12:00Z"),
    };
    let message = message(&event);
    assert_eq!(
        message["blocks"][1]["text"]["text"],
        "&lt;!channel&gt; &amp; &lt;https://x|click&gt;"
    );
    let header = message["blocks"][0]["text"]["text"].as_str().expect("header");
    assert_eq!(header.chars().count(), HEADER_MAX_CHARS);
    assert!(header.ends_with('…'));
}

#[test]
fn truncate_counts_characters_not_bytes() {
    assert_eq!(truncate("ééé", 3), "ééé");
    assert_eq!(truncate("éééé", 3), "éé…");
    assert_eq!(truncate("", 3), "");
}

#[test]
fn webhook_urls_must_be_https_or_http_to_loopback() {
    assert!(url(&format!("https://hooks.slack.com{TOKEN_PATH}")).is_ok());
    assert!(url("http://127.0.0.1:8080/hook").is_ok());
    assert!(url("http://[::1]:8080/hook").is_ok());
    assert!(url("http://localhost/hook").is_ok());
    for (bad, why) in [
        ("http://hooks.slack.com/services/x", "must use https"),
        ("ftp://hooks.slack.com/x", "must start with https://"),
        ("/services/x", "has no host"),
        ("not a url", "is not a valid absolute URL"),
    ] {
        let err = url(bad).expect_err(bad);
        assert!(err.to_string().contains(why), "{bad}: {err}");
    }
}

#[test]
fn a_webhook_url_never_shows_its_path_or_user_info() {
    let webhook = url(&format!("https://user:pw@hooks.slack.com:443{TOKEN_PATH}")).expect("url");
    let debug = format!("{webhook:?}");
    assert_eq!(debug, "WebhookUrl(https://hooks.slack.com:443/<redacted>)");
    assert_eq!(webhook.host(), "hooks.slack.com");

    let slack = Slack::new(&SlackConfig::new(SecretSource::File("/nonexistent".into())));
    assert!(matches!(slack, Err(Error::SecretFile { .. })), "{slack:?}");

    let err = url(&format!("http://hooks.slack.com{TOKEN_PATH}")).expect_err("http");
    assert!(!format!("{err} {err:?}").contains("secret"), "{err:?}");
}

#[test]
fn an_error_answer_is_kept_short_and_without_the_webhook_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("hook");
    std::fs::write(&file, format!("https://hooks.slack.com{TOKEN_PATH}\n")).expect("write");
    let slack = Slack::new(&SlackConfig::new(SecretSource::File(file))).expect("slack");
    assert!(!format!("{slack:?}").contains("secret"), "{slack:?}");
    let page = format!("<html>\n502: upstream failed for POST {TOKEN_PATH}\n</html>");
    let body = slack.error_body(page.as_bytes());
    assert_eq!(body, "<html> 502: upstream failed for POST /<redacted> </html>");
    assert_eq!(
        slack.error_body("x".repeat(500).as_bytes()).chars().count(),
        ERROR_BODY_MAX_CHARS
    );
}

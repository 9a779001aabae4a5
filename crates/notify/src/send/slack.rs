//! Slack incoming webhooks: one POST of Block Kit JSON per event.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use super::secret::{Secret, SecretSource};
use super::{human_time, is_loopback_host, lasted};
use crate::Error;
use crate::events::Event;

/// Slack's limit on a header block's text, in characters.
const HEADER_MAX_CHARS: usize = 150;
/// Slack's limit on a section block's text, in characters.
const SECTION_MAX_CHARS: usize = 3000;
/// How much of an error answer's body to keep: Slack's reasons are one short word.
const ERROR_BODY_MAX_BYTES: usize = 1024;
const ERROR_BODY_MAX_CHARS: usize = 200;

/// A Slack incoming-webhook URL. Its path is the credential (anyone holding it can post), so
/// `Debug` shows only the scheme and host, and errors name only the host.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    uri: http::Uri,
}

impl WebhookUrl {
    /// Checks a webhook URL: `https`, or plain `http` to a loopback address (a local relay or
    /// a test server), because over plain http the credential would cross the network in the
    /// clear.
    pub fn parse(url: &Secret) -> Result<Self, Error> {
        let uri: http::Uri = url.expose().parse().map_err(|_| Error::InvalidWebhook {
            reason: "is not a valid absolute URL",
        })?;
        let Some(host) = uri.host() else {
            return Err(Error::InvalidWebhook {
                reason: "has no host",
            });
        };
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if is_loopback_host(host) => {}
            Some("http") => {
                return Err(Error::InvalidWebhook {
                    reason: "must use https (plain http is only for a loopback address)",
                });
            }
            _ => {
                return Err(Error::InvalidWebhook {
                    reason: "must start with https://",
                });
            }
        }
        Ok(Self { uri })
    }

    /// Reads the URL from where it is kept and checks it.
    pub fn load(source: &SecretSource) -> Result<Self, Error> {
        Self::parse(&source.load()?)
    }

    /// The host the webhook is on: the one part of it that may be shown.
    pub fn host(&self) -> &str {
        self.uri.host().unwrap_or_default()
    }

    fn path(&self) -> &str {
        self.uri.path_and_query().map(|p| p.as_str()).unwrap_or_default()
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.uri.scheme_str().unwrap_or_default();
        let port = self.uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
        write!(f, "WebhookUrl({scheme}://{}{port}/<redacted>)", self.host())
    }
}

/// One Slack channel, reached through its incoming webhook. It holds where the URL is kept,
/// not the URL, so its derived `Debug` is safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackConfig {
    /// Where the webhook URL is kept.
    pub webhook: SecretSource,
    /// How long one attempt (connect, TLS, request, answer) may take.
    pub timeout: Duration,
}

impl SlackConfig {
    /// Posts to the webhook kept in `webhook`, giving each attempt 10 s.
    pub fn new(webhook: SecretSource) -> Self {
        Self {
            webhook,
            timeout: Duration::from_secs(10),
        }
    }
}

/// The Block Kit message for `event`: a header that says whether it is a problem or its
/// resolution and for which service, what is wrong, since when (and for resolutions, until
/// when and for how long), and the problem's key for whoever greps for it. `text` is the
/// fallback Slack shows in notifications.
pub fn message(event: &Event) -> Value {
    let problem = event.problem();
    let service = &problem.service;
    let since = slack_time(event.since());
    let (icon, title, fields) = match event {
        Event::Decided { at, .. } => (
            ":robot_face:",
            "Autopilot",
            vec![field("Service", &escape(service)), field("At", &slack_time(*at))],
        ),
        Event::Opened { .. } => (
            ":rotating_light:",
            "Problem",
            vec![field("Service", &escape(service)), field("Since", &since)],
        ),
        Event::Resolved {
            since: from,
            resolved_at,
            ..
        } => (
            ":white_check_mark:",
            "Resolved",
            vec![
                field("Service", &escape(service)),
                field("Since", &since),
                field("Resolved", &slack_time(*resolved_at)),
                field("Lasted", &lasted(*from, *resolved_at)),
            ],
        ),
    };
    let summary = escape(&problem.summary);
    let what = match event {
        Event::Opened { .. } => summary,
        Event::Resolved { .. } => format!("*Resolved:* {summary}"),
        Event::Decided { detail, .. } => {
            let mut text = format!("*{summary}*");
            for line in detail {
                text.push('\n');
                text.push_str(&escape(line));
            }
            text
        }
    };
    let from = match event {
        Event::Decided { .. } => "cohort autopilot",
        _ => "cohort status --watch",
    };
    json!({
        "text": format!("{icon} {title}: {service}: {}", problem.summary),
        "blocks": [
            {
                "type": "header",
                "text": {
                    "type": "plain_text",
                    "text": truncate(&format!("{icon} {title}: {service}"), HEADER_MAX_CHARS),
                    "emoji": true,
                },
            },
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": truncate(&what, SECTION_MAX_CHARS)},
            },
            {"type": "section", "fields": fields},
            {
                "type": "context",
                "elements": [{
                    "type": "mrkdwn",
                    "text": truncate(&format!("`{}` · {from}", escape(&problem.key)), SECTION_MAX_CHARS),
                }],
            },
        ],
    })
}

fn field(label: &str, value: &str) -> Value {
    json!({"type": "mrkdwn", "text": truncate(&format!("*{label}*\n{value}"), 2000)})
}

/// Slack shows `<!date^…>` in each reader's own time zone; the text after `|` is for clients
/// that cannot.
fn slack_time(at: jiff::Timestamp) -> String {
    format!(
        "<!date^{}^{{date_short_pretty}} {{time_secs}}|{}>",
        at.as_second(),
        human_time(at)
    )
}

/// Slack's mrkdwn reads `&`, `<` and `>` as markup; a summary must show as written.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let kept: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// A channel ready to post: the configuration and a client with its connection pool.
pub(crate) struct Slack {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    webhook: WebhookUrl,
    timeout: Duration,
}

impl Slack {
    /// Builds the HTTPS client. hyper-rustls rather than rustls by hand: it is the connector
    /// hyper-util's client expects, and it shares rustls, tokio-rustls and webpki-roots with
    /// lettre, so it adds one small crate to the build.
    pub(crate) fn new(config: &SlackConfig) -> Result<Self, Error> {
        let webhook = WebhookUrl::load(&config.webhook)?;
        let tls_error = |source: rustls::Error| Error::Tls {
            host: webhook.host().to_owned(),
            source: Box::new(source),
        };
        // The provider is named rather than taken from rustls's process default, so that
        // another crate enabling aws-lc-rs in the same build changes nothing here.
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(tls_error)?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            webhook,
            timeout: config.timeout,
        })
    }

    pub(crate) async fn send(&self, event: &Event) -> Result<(), Error> {
        let body = Bytes::from(message(event).to_string());
        let request = http::Request::post(self.webhook.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|_| Error::InvalidWebhook {
                reason: "cannot be used for a request",
            })?;
        let host = self.webhook.host();
        let attempt = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|source| Error::SlackRequest {
                    host: host.to_owned(),
                    source,
                })?;
            let (parts, body) = response.into_parts();
            // The answer is read even on success so the connection can go back to the pool.
            let body = Limited::new(body, ERROR_BODY_MAX_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if parts.status.is_success() {
                return Ok(());
            }
            let retry_after = parts
                .headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            Err(Error::SlackStatus {
                host: host.to_owned(),
                status: parts.status,
                body: self.error_body(&body),
                retry_after,
            })
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(Error::SlackTimeout {
                    host: host.to_owned(),
                    timeout: self.timeout,
                })
            })
    }

    /// The start of an error answer, cleaned for a log line. A proxy's error page may quote the
    /// URL it was asked for, so the webhook's path is cut out of it.
    fn error_body(&self, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body);
        let path = self.webhook.path();
        let text = if path.len() > 1 {
            text.replace(path, "/<redacted>")
        } else {
            text.into_owned()
        };
        let text: String = text
            .trim()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        truncate(&text, ERROR_BODY_MAX_CHARS)
    }
}

impl fmt::Debug for Slack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slack")
            .field("webhook", &self.webhook)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;

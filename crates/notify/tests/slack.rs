//! The Slack channel against a real HTTP server on an ephemeral loopback port that records
//! every request and answers as each test scripts it.

mod common;

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cohort_notify::send::secret::SecretSource;
use cohort_notify::send::slack::{SlackConfig, message};
use cohort_notify::send::{ChannelConfig, ChannelKind, Notifier, Report};
use cohort_notify::{Error, Event};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

const HOOK_PATH: &str = "/services/T0001/B0002/hookTOKENsecret";

/// A request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    content_type: String,
    body: Value,
}

/// How the server answers its `n`th request (from 0).
type Script = Arc<dyn Fn(usize) -> Answer + Send + Sync>;

enum Answer {
    Status(StatusCode, &'static str),
    /// Accept the request and never answer.
    Hang,
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    async fn start(script: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Script = Arc::new(script);
        let recorded = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (seen, script) = (Arc::clone(&recorded), Arc::clone(&script));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (seen, script) = (Arc::clone(&seen), Arc::clone(&script));
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.expect("request body").to_bytes();
                            let n = {
                                let mut seen = seen.lock().expect("lock");
                                seen.push(Seen {
                                    method: parts.method.to_string(),
                                    path: parts.uri.path().to_owned(),
                                    content_type: parts
                                        .headers
                                        .get(http::header::CONTENT_TYPE)
                                        .and_then(|v| v.to_str().ok())
                                        .unwrap_or_default()
                                        .to_owned(),
                                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                                });
                                seen.len() - 1
                            };
                            let (status, text) = match script(n) {
                                Answer::Status(status, text) => (status, text),
                                Answer::Hang => std::future::pending().await,
                            };
                            let mut response = Response::new(Full::new(Bytes::from(text)));
                            *response.status_mut() = status;
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Server { addr, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

/// A notifier with one Slack channel whose webhook URL (kept in a file, as a mounted Secret
/// would be) points at `addr`.
fn notifier(dir: &tempfile::TempDir, addr: SocketAddr, attempts: u32, timeout: Duration) -> Notifier {
    let file = dir.path().join("webhook-url");
    std::fs::write(&file, format!("http://{addr}{HOOK_PATH}\n")).expect("write webhook file");
    let mut slack = SlackConfig::new(SecretSource::File(file));
    slack.timeout = timeout;
    let retry = common::fast_retry(attempts);
    let channels = vec![ChannelConfig {
        name: "slack-ops".into(),
        kind: ChannelKind::Slack(slack),
    }];
    Notifier::new(channels, retry).expect("valid settings")
}

/// What every test here sends.
const SUMMARY: &str = "canary has 1 ready endpoint (minimum 2)";

fn opened() -> Event {
    common::opened(SUMMARY)
}

fn resolved() -> Event {
    common::resolved(SUMMARY)
}

fn single(report: &Report) -> &cohort_notify::send::Delivery {
    assert_eq!(report.deliveries.len(), 1, "{report:?}");
    &report.deliveries[0]
}

/// Collects what `tracing` logs on this thread while alive.
struct Logs {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Only for current-thread runtimes: the notifier's tasks then log on this thread.
    fn capture() -> Logs {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&buffer);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&writer)))
            .finish();
        Logs {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().expect("lock")).into_owned()
    }
}

#[tokio::test]
async fn an_event_arrives_exactly_once_as_block_kit_json() {
    let server = Server::start(|_| Answer::Status(StatusCode::OK, "ok")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let notifier = notifier(&dir, server.addr, 5, Duration::from_secs(5));

    let report = notifier.notify(&[opened()]).await;

    let delivery = single(&report);
    assert!(delivery.result.is_ok(), "{report:?}");
    assert_eq!(
        (delivery.channel.as_str(), delivery.attempts, delivery.resolved),
        ("slack-ops", 1, false)
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let request = &seen[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, HOOK_PATH);
    assert_eq!(request.content_type, "application/json");
    assert_eq!(request.body, message(&opened()));
    let blocks = &request.body["blocks"];
    assert_eq!(
        blocks[0]["text"]["text"],
        ":rotating_light: Problem: account-service"
    );
    assert_eq!(
        blocks[1]["text"]["text"],
        "canary has 1 ready endpoint (minimum 2)"
    );
    assert_eq!(blocks[2]["fields"][0]["text"], "*Service*\naccount-service");
    let since = blocks[2]["fields"][1]["text"].as_str().expect("since");
    assert!(since.ends_with("|2026-11-22 09:12:00 UTC>"), "{since}");
}

#[tokio::test]
async fn events_of_one_call_arrive_in_order_and_the_resolution_is_marked() {
    let server = Server::start(|_| Answer::Status(StatusCode::OK, "ok")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let notifier = notifier(&dir, server.addr, 5, Duration::from_secs(5));

    let report = notifier.notify(&[opened(), resolved()]).await;

    assert!(report.all_delivered(), "{report:?}");
    let headers: Vec<Value> = server
        .seen()
        .iter()
        .map(|s| s.body["blocks"][0]["text"]["text"].clone())
        .collect();
    assert_eq!(
        headers,
        vec![
            ":rotating_light: Problem: account-service",
            ":white_check_mark: Resolved: account-service"
        ]
    );
}

#[tokio::test]
async fn a_server_that_fails_twice_with_500_gets_the_message_once_on_the_third_attempt() {
    let server = Server::start(|n| {
        if n < 2 {
            Answer::Status(StatusCode::INTERNAL_SERVER_ERROR, "oops")
        } else {
            Answer::Status(StatusCode::OK, "ok")
        }
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let notifier = notifier(&dir, server.addr, 5, Duration::from_secs(5));
    let logs = Logs::capture();

    let report = notifier.notify(&[opened()]).await;

    let delivery = single(&report);
    assert!(delivery.result.is_ok(), "{report:?}");
    assert_eq!(delivery.attempts, 3);
    let seen = server.seen();
    assert_eq!(seen.len(), 3, "two refused, one accepted");
    assert!(seen.iter().all(|s| s.body == message(&opened())));
    let logs = logs.text();
    assert_eq!(logs.matches("will retry").count(), 2, "{logs}");
    assert!(
        logs.contains("answered 500 Internal Server Error: oops"),
        "{logs}"
    );
    assert!(logs.contains("notification sent"), "{logs}");
    assert!(!logs.contains("TOKEN") && !logs.contains("/services/"), "{logs}");
}

#[tokio::test]
async fn a_server_that_is_down_is_given_up_on_after_the_bounded_attempts() {
    // A port that was just free and has nobody listening: connections are refused.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let dir = tempfile::tempdir().expect("tempdir");
    let notifier = notifier(&dir, addr, 4, Duration::from_secs(5));
    let logs = Logs::capture();

    let report = notifier.notify(&[opened()]).await;

    let delivery = single(&report);
    assert_eq!(delivery.attempts, 4);
    let error = delivery.result.as_ref().expect_err("undeliverable");
    assert!(matches!(error, Error::SlackRequest { .. }), "{error:?}");
    let logs = logs.text();
    assert_eq!(logs.matches("will retry").count(), 3, "{logs}");
    assert_eq!(logs.matches("giving up").count(), 1, "{logs}");
    assert!(
        logs.contains("Slack webhook at 127.0.0.1: the request failed"),
        "{logs}"
    );
    let everything = format!("{logs} {error} {error:?} {report:?}");
    assert!(
        !everything.contains("TOKEN") && !everything.contains("/services/"),
        "{everything}"
    );
}

#[tokio::test]
async fn a_refused_payload_is_not_retried() {
    let server = Server::start(|_| Answer::Status(StatusCode::NOT_FOUND, "no_service")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let notifier = notifier(&dir, server.addr, 5, Duration::from_secs(5));

    let report = notifier.notify(&[opened()]).await;

    let delivery = single(&report);
    assert_eq!(delivery.attempts, 1);
    let error = delivery.result.as_ref().expect_err("refused");
    assert_eq!(
        error.to_string(),
        "Slack webhook at 127.0.0.1 answered 404 Not Found: no_service"
    );
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_each_attempt() {
    let server = Server::start(|_| Answer::Hang).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let notifier = notifier(&dir, server.addr, 2, Duration::from_millis(200));

    let report = notifier.notify(&[opened()]).await;

    let delivery = single(&report);
    assert_eq!(delivery.attempts, 2);
    assert!(
        matches!(delivery.result, Err(Error::SlackTimeout { .. })),
        "{report:?}"
    );
    assert_eq!(server.seen().len(), 2);
}

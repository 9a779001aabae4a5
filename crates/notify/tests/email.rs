//! The email channel against a real SMTP server: aiosmtpd, run by `tests/smtp_sink.py`, which
//! saves every message it accepts as JSON. Each test starts its own server on a port the OS
//! picks and kills it when done.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cohort_notify::send::email::{EmailConfig, SmtpAuth, SmtpSecurity, body, subject};
use cohort_notify::send::secret::SecretSource;
use cohort_notify::send::{ChannelConfig, ChannelKind, Delivery, Notifier, Report};
use cohort_notify::{Error, Event};
use serde_json::Value;

/// A running `smtp_sink.py`; killed when dropped, so a failing test leaves no server behind.
struct SmtpSink {
    child: Child,
    port: u16,
    out: tempfile::TempDir,
    stderr: PathBuf,
}

impl SmtpSink {
    fn start(args: &[&str]) -> SmtpSink {
        require_aiosmtpd();
        let out = tempfile::tempdir().expect("tempdir");
        let stderr = out.path().join("server.stderr");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(out.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start python3 tests/smtp_sink.py");
        let stdout = child.stdout.take().expect("piped stdout");
        // The first line is the port; read it on a thread so a stuck server fails the test
        // after a bound rather than hanging it.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut sink = SmtpSink {
            child,
            port: 0,
            out,
            stderr,
        };
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        sink.port = match line.trim().parse() {
            Ok(port) => port,
            Err(_) => panic!(
                "smtp_sink.py did not report its port (got {line:?}); its stderr:\n{}",
                sink.server_stderr()
            ),
        };
        // It prints the port once listening; connecting proves it accepts.
        TcpStream::connect(("127.0.0.1", sink.port)).expect("the SMTP server accepts connections");
        sink
    }

    fn server_stderr(&self) -> String {
        let mut text = String::new();
        let _ = std::fs::File::open(&self.stderr).and_then(|mut f| f.read_to_string(&mut text));
        text
    }

    /// The messages accepted so far, in order.
    fn received(&self) -> Vec<Value> {
        let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(self.out.path())
            .expect("read out dir")
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                let n = path.file_name()?.to_str()?.strip_suffix(".json")?.parse().ok()?;
                Some((n, path))
            })
            .collect();
        files.sort();
        files
            .iter()
            .map(|(_, path)| {
                serde_json::from_str(&std::fs::read_to_string(path).expect("read message")).expect("json")
            })
            .collect()
    }

    fn config(&self, to: &[&str]) -> EmailConfig {
        let mut config = EmailConfig::new(
            "127.0.0.1",
            SmtpSecurity::Plain,
            "cohort <cohort@example.com>",
            to.iter().map(|s| s.to_string()).collect(),
        );
        config.port = self.port;
        config.timeout = Duration::from_secs(5);
        config
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The email tests need aiosmtpd; without it they fail and say how to get it, rather than
/// pass having tested nothing.
fn require_aiosmtpd() {
    let status = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match status {
        Ok(status) if status.success() => {}
        _ => panic!(
            "the email tests need the Python package aiosmtpd: run `pip install aiosmtpd` \
             (`python3 -c 'import aiosmtpd'` failed)"
        ),
    }
}

fn notifier(config: EmailConfig, attempts: u32) -> Notifier {
    let retry = common::fast_retry(attempts);
    let channels = vec![ChannelConfig {
        name: "mail-oncall".into(),
        kind: ChannelKind::Email(config),
    }];
    Notifier::new(channels, retry).expect("valid settings")
}

/// What every test here sends.
const SUMMARY: &str = "canary has 1 ready endpoint (minimum 2) — since the last rollout";

fn opened() -> Event {
    common::opened(SUMMARY)
}

fn resolved() -> Event {
    common::resolved(SUMMARY)
}

fn single(report: &Report) -> &Delivery {
    assert_eq!(report.deliveries.len(), 1, "{report:?}");
    &report.deliveries[0]
}

#[tokio::test]
async fn an_event_arrives_once_with_its_subject_recipients_and_body() {
    let sink = SmtpSink::start(&[]);
    let notifier = notifier(sink.config(&["oncall@example.com", "Ana <ana@example.com>"]), 5);

    let report = notifier.notify(&[opened()]).await;

    let delivery = single(&report);
    assert!(delivery.result.is_ok(), "{report:?}");
    assert_eq!(delivery.attempts, 1);
    let received = sink.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let mail = &received[0];
    assert_eq!(mail["mail_from"], "cohort@example.com");
    assert_eq!(
        mail["rcpt_tos"],
        serde_json::json!(["oncall@example.com", "ana@example.com"])
    );
    assert_eq!(mail["from"], "cohort <cohort@example.com>");
    assert_eq!(mail["to"], "oncall@example.com, Ana <ana@example.com>");
    assert_eq!(mail["subject"], subject(&opened()));
    assert_eq!(
        mail["subject"],
        "[cohort] PROBLEM account-service: canary has 1 ready endpoint (minimum 2) — since the last rollout"
    );
    assert_eq!(mail["content_type"], "text/plain");
    // SMTP carries lines ending in CRLF, and the encoding may add a final line break.
    let received_body = mail["body"].as_str().expect("body").replace("\r\n", "\n");
    assert_eq!(received_body.trim_end(), body(&opened()).trim_end());
    assert_eq!(mail["login"], Value::Null);
}

#[tokio::test]
async fn a_problem_and_its_resolution_arrive_in_order() {
    let sink = SmtpSink::start(&[]);
    let notifier = notifier(sink.config(&["oncall@example.com"]), 5);

    let report = notifier.notify(&[opened(), resolved()]).await;

    assert!(report.all_delivered(), "{report:?}");
    let subjects: Vec<String> = sink
        .received()
        .iter()
        .map(|m| m["subject"].as_str().expect("subject").to_owned())
        .collect();
    assert_eq!(subjects, vec![subject(&opened()), subject(&resolved())]);
    assert!(subjects[1].starts_with("[cohort] RESOLVED account-service: "));
}

#[tokio::test]
async fn credentials_come_from_a_file_and_are_used_to_log_in() {
    let sink = SmtpSink::start(&["--user", "cohort", "--password", "pw-SECRET-42"]);
    let secrets = tempfile::tempdir().expect("tempdir");
    let password = secrets.path().join("smtp-password");
    std::fs::write(&password, "pw-SECRET-42\n").expect("write password");
    let mut config = sink.config(&["oncall@example.com"]);
    config.auth = Some(SmtpAuth {
        username: "cohort".into(),
        password: SecretSource::File(password),
    });
    let notifier = notifier(config, 5);
    assert!(!format!("{notifier:?}").contains("SECRET"), "{notifier:?}");

    let report = notifier.notify(&[opened()]).await;

    assert!(report.all_delivered(), "{report:?}");
    let received = sink.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0]["login"], "cohort");
}

#[tokio::test]
async fn a_wrong_password_is_a_permanent_failure_that_is_not_retried_nor_shown() {
    let sink = SmtpSink::start(&["--user", "cohort", "--password", "right"]);
    let secrets = tempfile::tempdir().expect("tempdir");
    let password = secrets.path().join("smtp-password");
    std::fs::write(&password, "wrong-SECRET-7").expect("write password");
    let mut config = sink.config(&["oncall@example.com"]);
    config.auth = Some(SmtpAuth {
        username: "cohort".into(),
        password: SecretSource::File(password),
    });
    let notifier = notifier(config, 5);

    let report = notifier.notify(&[opened()]).await;

    let delivery = single(&report);
    assert_eq!(delivery.attempts, 1, "{report:?}");
    let error = delivery.result.as_ref().expect_err("refused");
    assert!(
        matches!(error, Error::Smtp { .. }) && !error.is_retryable(),
        "{error:?}"
    );
    let shown = format!("{error} {error:?} {report:?}");
    assert!(
        shown.contains(&format!("SMTP server 127.0.0.1:{}", sink.port)),
        "{shown}"
    );
    assert!(!shown.contains("SECRET"), "{shown}");
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn a_server_that_answers_451_twice_gets_the_message_once_on_the_third_attempt() {
    let sink = SmtpSink::start(&["--fail-first", "2"]);
    let notifier = notifier(sink.config(&["oncall@example.com"]), 5);

    let report = notifier.notify(&[opened()]).await;

    let delivery = single(&report);
    assert!(delivery.result.is_ok(), "{report:?}");
    assert_eq!(delivery.attempts, 3);
    let received = sink.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0]["subject"], subject(&opened()));
}

#[tokio::test]
async fn a_server_that_is_gone_is_given_up_on_after_the_bounded_attempts() {
    let sink = SmtpSink::start(&[]);
    let config = sink.config(&["oncall@example.com"]);
    drop(sink);
    let notifier = notifier(config, 3);

    let report = notifier.notify(&[opened()]).await;

    let delivery = single(&report);
    assert_eq!(delivery.attempts, 3, "{report:?}");
    let error = delivery.result.as_ref().expect_err("nobody listening");
    assert!(
        matches!(error, Error::Smtp { .. }) && error.is_retryable(),
        "{error:?}"
    );
}

//! The crate's one error type. No variant holds a secret: not the webhook URL (only its host),
//! not a password, so errors can be logged and printed as they are.

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong, where, and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A secret's environment variable is not set, or its value is not UTF-8.
    #[error("the secret's environment variable `{var}` is not set or not UTF-8")]
    SecretEnv {
        /// The variable's name.
        var: String,
        /// Why it could not be read.
        #[source]
        source: std::env::VarError,
    },
    /// A secret's file could not be read.
    #[error("cannot read the secret file {}", path.display())]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// A secret's source holds nothing (an empty variable or file).
    #[error("the secret from {origin} is empty")]
    SecretEmpty {
        /// Where it came from: `environment variable X` or `file Y`.
        origin: String,
    },
    /// The Slack webhook URL is unusable. The URL itself is never shown: its path is the
    /// credential.
    #[error("the Slack webhook URL {reason}")]
    InvalidWebhook {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An email address in the configuration does not parse.
    #[error("the email {field} address `{address}` is invalid")]
    InvalidAddress {
        /// `from` or `to`.
        field: &'static str,
        /// The address as configured.
        address: String,
        /// Why it is invalid.
        #[source]
        source: lettre::address::AddressError,
    },
    /// An email channel has nobody to send to.
    #[error("the email channel to {host} has no recipients")]
    NoRecipients {
        /// The SMTP server.
        host: String,
    },
    /// SMTP credentials were configured for an unencrypted connection to another machine.
    #[error(
        "SMTP credentials for {host} would cross the network unencrypted: use STARTTLS or \
         implicit TLS (plain is only for a server on a loopback address)"
    )]
    PlaintextCredentials {
        /// The SMTP server.
        host: String,
    },
    /// TLS could not be set up for a channel.
    #[error("cannot set up TLS for {host}")]
    Tls {
        /// The server TLS was for.
        host: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The HTTP request to the Slack webhook failed before an answer (connect, TLS, I/O).
    #[error("Slack webhook at {host}: the request failed")]
    SlackRequest {
        /// The webhook's host.
        host: String,
        /// Why.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The Slack webhook did not answer in time.
    #[error("Slack webhook at {host}: no answer within {timeout:?}")]
    SlackTimeout {
        /// The webhook's host.
        host: String,
        /// How long it was given.
        timeout: Duration,
    },
    /// The Slack webhook answered with an error status.
    #[error("Slack webhook at {host} answered {status}: {body}")]
    SlackStatus {
        /// The webhook's host.
        host: String,
        /// The status.
        status: http::StatusCode,
        /// The start of the answer's body (Slack puts the reason there, e.g. `invalid_payload`).
        body: String,
        /// How long a `429 Too Many Requests` asked us to wait.
        retry_after: Option<Duration>,
    },
    /// The email could not be put together.
    #[error("cannot build the email to send through {host}")]
    EmailBuild {
        /// The SMTP server.
        host: String,
        /// Why.
        #[source]
        source: lettre::error::Error,
    },
    /// The SMTP conversation failed.
    #[error("SMTP server {host}:{port}: delivery failed")]
    Smtp {
        /// The SMTP server.
        host: String,
        /// Its port.
        port: u16,
        /// Why, with the server's answer when there was one.
        #[source]
        source: lettre::transport::smtp::Error,
    },
    /// The task delivering to a channel ended without a result.
    #[error("the delivery task for channel `{channel}` {how}")]
    TaskFailed {
        /// The channel's name.
        channel: String,
        /// `panicked` or `was cancelled`.
        how: &'static str,
    },
}

impl Error {
    /// Whether sending the same notification again may succeed: network trouble, timeouts,
    /// server errors, rate limits and SMTP's transient (4xx) answers. A refused payload, a
    /// revoked webhook or an SMTP permanent (5xx) answer will fail the same way again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::SlackRequest { .. } | Error::SlackTimeout { .. } => true,
            Error::SlackStatus { status, .. } => {
                status.is_server_error()
                    || *status == http::StatusCode::TOO_MANY_REQUESTS
                    || *status == http::StatusCode::REQUEST_TIMEOUT
            }
            // Connection and network errors may pass; a 5xx answer, a client-side refusal (no
            // usable auth mechanism, say) or a TLS setup error will not.
            Error::Smtp { source, .. } => !(source.is_permanent() || source.is_client() || source.is_tls()),
            Error::SecretEnv { .. }
            | Error::SecretFile { .. }
            | Error::SecretEmpty { .. }
            | Error::InvalidWebhook { .. }
            | Error::InvalidAddress { .. }
            | Error::NoRecipients { .. }
            | Error::PlaintextCredentials { .. }
            | Error::Tls { .. }
            | Error::EmailBuild { .. }
            | Error::TaskFailed { .. } => false,
        }
    }

    /// How long the server asked us to wait before trying again, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::SlackStatus { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Shows an error with its causes, `outer: inner: innermost`, for logs.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

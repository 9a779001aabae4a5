//! Email over SMTP (lettre): one plain-text message per event to every recipient.

use std::fmt;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::secret::SecretSource;
use super::{human_time, is_loopback_host, lasted};
use crate::Error;
use crate::events::Event;

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Connect in the clear, then upgrade with STARTTLS; refuse servers that cannot (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    ImplicitTls,
    /// No encryption: for a server on a loopback address (a local relay or a test), or a
    /// relay without credentials on a trusted network.
    Plain,
}

impl SmtpSecurity {
    /// The port this mode is usually served on.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpSecurity::StartTls => 587,
            SmtpSecurity::ImplicitTls => 465,
            SmtpSecurity::Plain => 25,
        }
    }
}

/// SMTP credentials: the user name as configured, the password from a variable or a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpAuth {
    /// The user name.
    pub username: String,
    /// Where the password is kept.
    pub password: SecretSource,
}

/// One email channel: a server and the people to write to. It holds no secret (the password
/// is only a [`SecretSource`]), so its derived `Debug` is safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailConfig {
    /// The SMTP server's host name (checked against its certificate) or address.
    pub host: String,
    /// The SMTP server's port.
    pub port: u16,
    /// How the connection is protected.
    pub security: SmtpSecurity,
    /// Credentials, if the server wants them.
    pub auth: Option<SmtpAuth>,
    /// The sender, e.g. `cohort <cohort@example.com>`.
    pub from: String,
    /// The recipients, each like `from`.
    pub to: Vec<String>,
    /// How long one SMTP command may take.
    pub timeout: Duration,
}

impl EmailConfig {
    /// Mail from `from` to `to` through `host` on the usual port of `security`, without
    /// credentials, each SMTP command given 30 s.
    pub fn new(
        host: impl Into<String>,
        security: SmtpSecurity,
        from: impl Into<String>,
        to: Vec<String>,
    ) -> Self {
        Self {
            host: host.into(),
            port: security.default_port(),
            security,
            auth: None,
            from: from.into(),
            to,
            timeout: Duration::from_secs(30),
        }
    }
}

/// The subject line for `event`. Line breaks in a summary would end the header early, so
/// control characters become spaces.
pub fn subject(event: &Event) -> String {
    let problem = event.problem();
    let state = match event {
        Event::Resolved { .. } => "RESOLVED",
        Event::Decided { .. } => "AUTOPILOT",
        Event::Opened { .. } => "PROBLEM",
    };
    let line = format!("[cohort] {state} {}: {}", problem.service, problem.summary);
    line.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The plain-text body for `event`.
pub fn body(event: &Event) -> String {
    let problem = event.problem();
    if let Event::Decided { detail, at, .. } = event {
        let mut text = format!("{}: {}\n\n", problem.service, problem.summary);
        for line in detail {
            text.push_str(&format!("{line}\n"));
        }
        text.push_str(&format!("\nService:   {}\n", problem.service));
        text.push_str(&format!("Action:    {}\n", problem.key));
        text.push_str(&format!("At:        {}\n", human_time(*at)));
        text.push_str("\nSent once by cohort autopilot.\n");
        return text;
    }
    let mut text = match event {
        Event::Opened { .. } | Event::Decided { .. } => {
            format!("{}: {}\n\n", problem.service, problem.summary)
        }
        Event::Resolved { .. } => format!("Resolved: {}: {}\n\n", problem.service, problem.summary),
    };
    text.push_str(&format!("Service:   {}\n", problem.service));
    text.push_str(&format!("Problem:   {}\n", problem.key));
    text.push_str(&format!("Since:     {}\n", human_time(event.since())));
    match event {
        Event::Opened { .. } | Event::Decided { .. } => text
            .push_str("\nSent once by cohort status --watch; another message follows when it is resolved.\n"),
        Event::Resolved {
            since, resolved_at, ..
        } => {
            text.push_str(&format!("Resolved:  {}\n", human_time(*resolved_at)));
            text.push_str(&format!("Lasted:    {}\n", lasted(*since, *resolved_at)));
            text.push_str("\nSent by cohort status --watch.\n");
        }
    }
    text
}

/// A channel ready to send: a checked configuration with its password loaded.
pub(crate) struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    host: String,
    port: u16,
}

impl Email {
    /// Checks `config` and loads its password, reporting every problem found.
    pub(crate) fn new(config: &EmailConfig) -> Result<Self, Vec<Error>> {
        let mut problems = Vec::new();
        let from = parse_mailbox("from", &config.from)
            .map_err(|e| problems.push(e))
            .ok();
        let to: Vec<Mailbox> = config
            .to
            .iter()
            .filter_map(|to| parse_mailbox("to", to).map_err(|e| problems.push(e)).ok())
            .collect();
        if config.to.is_empty() {
            problems.push(Error::NoRecipients {
                host: config.host.clone(),
            });
        }

        // lettre calls the bare builder dangerous because it starts without TLS; TLS is set
        // just below from `security`, which has no default.
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port)
            .timeout(Some(config.timeout));
        let tls = match config.security {
            SmtpSecurity::Plain => Some(Tls::None),
            SmtpSecurity::StartTls | SmtpSecurity::ImplicitTls => {
                // Compiled-in Mozilla roots, as for Slack: a slim container image may carry no
                // CA bundle.
                match TlsParameters::builder(config.host.clone())
                    .certificate_store(CertificateStore::WebpkiRoots)
                    .build_rustls()
                {
                    Ok(params) if config.security == SmtpSecurity::StartTls => Some(Tls::Required(params)),
                    Ok(params) => Some(Tls::Wrapper(params)),
                    Err(source) => {
                        problems.push(Error::Tls {
                            host: config.host.clone(),
                            source: Box::new(source),
                        });
                        None
                    }
                }
            }
        };
        if let Some(tls) = tls {
            builder = builder.tls(tls);
        }
        if let Some(auth) = &config.auth {
            if config.security == SmtpSecurity::Plain && !is_loopback_host(&config.host) {
                problems.push(Error::PlaintextCredentials {
                    host: config.host.clone(),
                });
            }
            match auth.password.load() {
                Ok(password) => {
                    builder = builder.credentials(Credentials::new(
                        auth.username.clone(),
                        password.expose().to_owned(),
                    ));
                }
                Err(e) => problems.push(e),
            }
        }

        match from {
            Some(from) if problems.is_empty() => Ok(Self {
                transport: builder.build(),
                from,
                to,
                host: config.host.clone(),
                port: config.port,
            }),
            _ => Err(problems),
        }
    }

    pub(crate) async fn send(&self, event: &Event) -> Result<(), Error> {
        let mut message = Message::builder().from(self.from.clone()).subject(subject(event));
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message
            .header(ContentType::TEXT_PLAIN)
            .body(body(event))
            .map_err(|source| Error::EmailBuild {
                host: self.host.clone(),
                source,
            })?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|source| Error::Smtp {
                host: self.host.clone(),
                port: self.port,
                source,
            })
    }
}

/// By hand, because lettre's transport `Debug` would print the credentials.
impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Email")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("from", &self.from.to_string())
            .field("to", &self.to.iter().map(ToString::to_string).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn parse_mailbox(field: &'static str, address: &str) -> Result<Mailbox, Error> {
    address.parse().map_err(|source| Error::InvalidAddress {
        field,
        address: address.to_owned(),
        source,
    })
}

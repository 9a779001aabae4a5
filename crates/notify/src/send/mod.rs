//! Delivering events: Slack webhooks and email, each retried with exponential backoff. The
//! [`Notifier`] never fails its caller: a watcher must keep watching whether or not Slack is
//! up, so failures are logged (through `tracing`) and reported, never raised.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::task::JoinSet;

use crate::Error;
use crate::error::Chain;
use crate::events::Event;

pub mod email;
pub mod secret;
pub mod slack;

use email::{Email, EmailConfig};
use slack::{Slack, SlackConfig};

/// Where to send, and what to call it in logs and reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelConfig {
    /// A name for logs and reports, e.g. `slack-ops` or `email-oncall`. Not secret.
    pub name: String,
    /// The channel.
    pub kind: ChannelKind,
}

/// The kinds of channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelKind {
    /// A Slack incoming webhook.
    Slack(SlackConfig),
    /// Email over SMTP.
    Email(EmailConfig),
}

/// How often and how patiently to retry a failed delivery: attempt `n` (from 1) that fails is
/// followed, if attempts remain and the error is retryable, by a wait of
/// `base_delay × 2^(n-1)`, at most `max_delay` (longer if a `429` asked for it, still at most
/// `max_delay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: NonZeroU32,
    /// The wait after the first failure.
    pub base_delay: Duration,
    /// The longest wait between two attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Five attempts over about 15 s (1, 2, 4, 8 s apart): long enough to ride out a webhook's
    /// brief outage, short enough that a watcher's next cycle is not held up for minutes.
    fn default() -> Self {
        Self {
            max_attempts: NonZeroU32::MIN.saturating_add(4),
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (counted from 1), before the server's say.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// What happened to one event on one channel.
#[derive(Debug)]
pub struct Delivery {
    /// The channel's name.
    pub channel: String,
    /// The service of the event's problem.
    pub service: String,
    /// The key of the event's problem.
    pub key: String,
    /// Whether the event was a resolution.
    pub resolved: bool,
    /// Attempts made.
    pub attempts: u32,
    /// `Ok` if delivered, else the last attempt's error.
    pub result: Result<(), Error>,
}

/// What happened to every event on every channel, by channel in configuration order, then by
/// event in the order given.
#[derive(Debug, Default)]
pub struct Report {
    /// One entry per event and channel.
    pub deliveries: Vec<Delivery>,
}

impl Report {
    /// Whether every event reached every channel.
    pub fn all_delivered(&self) -> bool {
        self.deliveries.iter().all(|d| d.result.is_ok())
    }

    /// The deliveries that gave up.
    pub fn failures(&self) -> impl Iterator<Item = &Delivery> {
        self.deliveries.iter().filter(|d| d.result.is_err())
    }
}

/// Every problem found in a notifier's configuration, each with its channel's name.
#[derive(Debug, thiserror::Error)]
#[error("invalid notification settings:{}", self.list())]
pub struct ConfigErrors(pub Vec<(String, Error)>);

impl ConfigErrors {
    fn list(&self) -> String {
        self.0
            .iter()
            .map(|(channel, error)| format!("\n  channel `{channel}`: {}", Chain(error)))
            .collect()
    }
}

/// Sends events to every configured channel. Cheap to clone; clones share connections. Its
/// `Debug` is safe to log: the senders' own `Debug` leaves their secrets out.
#[derive(Debug, Clone)]
pub struct Notifier {
    channels: Arc<[Channel]>,
    retry: RetryPolicy,
}

#[derive(Debug)]
struct Channel {
    name: String,
    sender: Sender,
}

#[derive(Debug)]
enum Sender {
    Slack(Slack),
    Email(Email),
}

impl Notifier {
    /// Checks every channel and loads its secrets now, so that a mistake shows when the watcher
    /// starts rather than at the first problem; reports every mistake at once.
    pub fn new(channels: Vec<ChannelConfig>, retry: RetryPolicy) -> Result<Self, ConfigErrors> {
        let mut built = Vec::with_capacity(channels.len());
        let mut problems = Vec::new();
        for config in channels {
            let sender = match &config.kind {
                ChannelKind::Slack(slack) => Slack::new(slack).map(Sender::Slack).map_err(|e| vec![e]),
                ChannelKind::Email(email) => Email::new(email).map(Sender::Email),
            };
            match sender {
                Ok(sender) => built.push(Channel {
                    name: config.name,
                    sender,
                }),
                Err(errors) => problems.extend(errors.into_iter().map(|e| (config.name.clone(), e))),
            }
        }
        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        Ok(Self {
            channels: built.into(),
            retry,
        })
    }

    /// Delivers `events` to every channel: each channel in its own task, so a slow SMTP server
    /// does not hold up Slack, and within a channel one event after another, in order, so a
    /// resolution never arrives before its problem. Returns when every delivery has succeeded
    /// or given up; never fails and never panics. Dropping the future abandons the deliveries.
    /// Runs on Tokio: it spawns a task per channel.
    pub async fn notify(&self, events: &[Event]) -> Report {
        if events.is_empty() {
            return Report::default();
        }
        let events: Arc<[Event]> = events.into();
        let mut tasks = JoinSet::new();
        let mut task_channel = HashMap::new();
        for index in 0..self.channels.len() {
            let (channels, events, retry) = (Arc::clone(&self.channels), Arc::clone(&events), self.retry);
            let handle = tasks.spawn(async move {
                let channel = &channels[index];
                let mut deliveries = Vec::with_capacity(events.len());
                for event in events.iter() {
                    deliveries.push(channel.deliver(event, &retry).await);
                }
                deliveries
            });
            task_channel.insert(handle.id(), index);
        }

        let mut by_channel: Vec<Vec<Delivery>> = (0..self.channels.len()).map(|_| Vec::new()).collect();
        while let Some(joined) = tasks.join_next_with_id().await {
            match joined {
                Ok((id, deliveries)) => {
                    if let Some(&index) = task_channel.get(&id) {
                        by_channel[index] = deliveries;
                    }
                }
                Err(join_error) => {
                    let Some(&index) = task_channel.get(&join_error.id()) else {
                        continue;
                    };
                    let channel = &self.channels[index].name;
                    let how = if join_error.is_panic() {
                        "panicked"
                    } else {
                        "was cancelled"
                    };
                    tracing::error!(channel = %channel, how, "notification task ended without a result");
                    by_channel[index] = events
                        .iter()
                        .map(|event| Delivery {
                            channel: channel.clone(),
                            service: event.problem().service.clone(),
                            key: event.problem().key.clone(),
                            resolved: event.is_resolved(),
                            attempts: 0,
                            result: Err(Error::TaskFailed {
                                channel: channel.clone(),
                                how,
                            }),
                        })
                        .collect();
                }
            }
        }
        Report {
            deliveries: by_channel.into_iter().flatten().collect(),
        }
    }
}

impl Channel {
    async fn send(&self, event: &Event) -> Result<(), Error> {
        match &self.sender {
            Sender::Slack(slack) => slack.send(event).await,
            Sender::Email(email) => email.send(event).await,
        }
    }

    async fn deliver(&self, event: &Event, retry: &RetryPolicy) -> Delivery {
        let problem = event.problem();
        let max_attempts = retry.max_attempts.get();
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let error = match self.send(event).await {
                Ok(()) => {
                    tracing::info!(
                        channel = %self.name, service = %problem.service, key = %problem.key,
                        resolved = event.is_resolved(), attempt, "notification sent"
                    );
                    break Ok(());
                }
                Err(error) => error,
            };
            if attempt >= max_attempts || !error.is_retryable() {
                tracing::error!(
                    channel = %self.name, service = %problem.service, key = %problem.key,
                    resolved = event.is_resolved(), attempts = attempt, retryable = error.is_retryable(),
                    error = %Chain(&error), "notification not sent; giving up"
                );
                break Err(error);
            }
            let wait = match error.retry_after() {
                Some(asked) => asked.max(retry.delay_after(attempt)).min(retry.max_delay),
                None => retry.delay_after(attempt),
            };
            tracing::warn!(
                channel = %self.name, service = %problem.service, key = %problem.key,
                attempt, max_attempts, retry_in = ?wait, error = %Chain(&error),
                "notification failed; will retry"
            );
            tokio::time::sleep(wait).await;
        };
        Delivery {
            channel: self.name.clone(),
            service: problem.service.clone(),
            key: problem.key.clone(),
            resolved: event.is_resolved(),
            attempts: attempt,
            result,
        }
    }
}

/// A time for people: UTC to the second, with its zone said.
pub(crate) fn human_time(at: Timestamp) -> String {
    at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// How long a problem lasted, to the second, e.g. `1h 2m 5s`.
pub(crate) fn lasted(since: Timestamp, until: Timestamp) -> String {
    let seconds = until.duration_since(since).as_secs().max(0);
    format!("{:#}", SignedDuration::from_secs(seconds))
}

/// Whether `host` names this machine: `localhost` or a loopback address.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests;

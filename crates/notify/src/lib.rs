//! Notifications for `cohort status --watch`: problems opened and resolved, sent on change only
//! to Slack incoming webhooks and to email over SMTP.
//!
//! [`events`] is pure: a [`Tracker`] turns the problems each evaluation finds
//! into `Opened` and `Resolved` events, damped against flapping. [`send`] is thin I/O: a
//! [`Notifier`](send::Notifier) delivers events to every channel, retrying with backoff, and
//! logs rather than fails. TLS is rustls with the ring provider throughout (aws-lc-rs needs
//! cmake to build); HTTPS to Slack goes through hyper-rustls, because it is the connector
//! hyper-util's client takes and it adds one small crate over what lettre already brings.
//!
//! ```no_run
//! # async fn watch(evaluate: impl Fn() -> Vec<cohort_notify::Problem>) -> Result<(), cohort_notify::send::ConfigErrors> {
//! use cohort_notify::send::{ChannelConfig, ChannelKind, Notifier, RetryPolicy};
//! use cohort_notify::send::secret::SecretSource;
//! use cohort_notify::send::slack::SlackConfig;
//! use cohort_notify::{Damping, Tracker};
//!
//! let slack = SlackConfig::new(SecretSource::Env("SLACK_WEBHOOK_URL".into()));
//! let channels = vec![ChannelConfig { name: "slack-ops".into(), kind: ChannelKind::Slack(slack) }];
//! let notifier = Notifier::new(channels, RetryPolicy::default())?;
//! let mut tracker = Tracker::new(Damping::default());
//! loop {
//!     let events = tracker.observe(evaluate(), jiff::Timestamp::now());
//!     notifier.notify(&events).await;
//!     tokio::time::sleep(std::time::Duration::from_secs(30)).await;
//! }
//! # }
//! ```
#![forbid(unsafe_code)]

mod error;
pub mod events;
pub mod send;

pub use error::Error;
pub use events::{Damping, Event, Problem, Tracker};

//! cohort's domain: services, tracks, cohorts, routes, weights, stage order and promotion gates.
//!
//! Everything here is pure data and pure functions; parsing files, git, Kubernetes and the
//! network live in other crates that depend on this one.
#![forbid(unsafe_code)]

pub mod autopilot;
pub mod checks;
pub mod duration;
pub mod gate;
pub mod image;
pub mod model;
pub mod names;
pub mod peers;
pub mod printable;
pub mod route;
pub mod router_config;
pub mod weight;

pub use autopilot::{AutopilotPolicy, ChangeWindow, StagePolicy};
pub use duration::Duration;
pub use gate::{GateBlock, GateInput, check_gate};
pub use model::{
    Defaults, EmailChannel, Gate, HealthCheck, JudgementSettings, Mirror, Notifications, Pipeline, PreStop,
    ReleaseState, RouterSettings, SecretRef, ServiceSpec, SlackChannel, SmtpSecurity, Sticky,
};
pub use names::{NameError, ServiceName, TrackName, Version};
pub use peers::TrustedPeers;
pub use printable::Printable;
pub use route::{Redistribution, Route, RouteError};
pub use weight::{Weight, WeightError};

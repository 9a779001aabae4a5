//! The in-cluster agent: outbound-only, pull-based delivery. It polls a git remote of the
//! release repo or a cohort control API, applies what changed through the same kube adapter
//! code path as `cohort apply`, remembers what it applied in a ConfigMap, and reports back.
#![forbid(unsafe_code)]

pub mod admin;
pub mod agent;
pub mod counts;
pub mod metrics;
pub mod source;
pub mod state;
pub mod target;

pub use agent::{Agent, Pass, Readiness, Settings, next_delay};
pub use counts::RouterCounts;
pub use source::{ControlSource, GitSource, Polled, Source, SourceError};
pub use target::{KubeTarget, Target, TargetError};

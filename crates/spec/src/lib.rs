//! Release-repo files to validated cohort-core types.
//!
//! `cohort.yaml` and `services/*.yaml` are written by people; `releases/*.yaml` by cohort.
//! Reading never stops at the first problem: every problem is collected with its
//! file:line:col, what is wrong and how to fix it, so `cohort validate` shows them all at once.
#![forbid(unsafe_code)]

mod autopilot;
mod checks;
pub mod diag;
pub mod entry;
pub mod haproxy;
pub mod notifications;
mod pipeline;
mod read;
pub mod repo;
pub mod router_config;
pub mod scaffold;
mod service;
mod state;

pub use diag::{Diagnostic, Kind, Severity};
pub use entry::MAX_FILE_BYTES;
pub use pipeline::{DEFAULT_ROUTER_IMAGE, DEFAULT_STAGES, read_pipeline, seed_cohorts, seed_default_route};
pub use repo::{Repo, Service, load_repo, state_path};
pub use service::read_service;
pub use state::{read_state, write_state};

//! Service health at a glance: `cohort status` gathers a namespace with one LIST per kind and
//! this crate decides, without I/O, what is wrong with each service — router availability,
//! ready endpoints per track, replica counts, stuck rollouts, forgotten versions, drift from
//! the release repo and version order across stages.

pub mod evaluate;
pub mod inventory;
pub mod rollout;
pub mod table;

pub use evaluate::{
    Expectations, ExpectedService, ExpectedTrack, Finding, Report, Settings, Severity, evaluate,
};
pub use inventory::Inventory;

//! Git-recorded changes to the release repo: deploy, promote, rollback, approve, history.
#![forbid(unsafe_code)]

pub mod git;
pub mod history;
pub mod mirror;
pub mod plan;
pub mod push;
pub mod record;
pub mod snapshot;
pub mod tls;
mod tree;

//! cohort's data plane: a cohort-aware canary reverse proxy.
//!
//! `decide` holds every routing decision as pure functions over the router config: which
//! cohort a request belongs to, whether its cohort header is believed, and which track it
//! goes to (sticky by user, or evenly spread per request). The proxy around it is I/O only.
#![forbid(unsafe_code)]

pub mod admin;
pub mod client_body;
pub mod decide;
mod express;
pub mod grpc;
pub mod h1;
pub mod health;
mod idle;
pub mod metrics;
pub mod mirror;
mod park;
pub mod proxy;
pub mod resources;
pub mod table;
pub mod upstream;
pub mod window;

//! The native shell: tokio, reqwest, axum and a file store. This is what
//! `cargo run` starts.

pub mod api;
pub mod io;
pub mod limits;
pub mod metrics;
pub mod posthog;
pub mod report;
pub mod runner;
pub mod status;
pub mod store;
pub mod ui;

//! Vigil's edge: probes, debounce, incidents, alerts and the remediation
//! loop. `core` is pure; `remediation` runs a round over an I/O trait;
//! `native` is the tokio shell that `cargo run` starts, `worker` the
//! Cloudflare Worker shell (wasm32 only). See ARCHITECTURE.md.

pub mod ack_page;
pub mod analytics;
pub mod audit_page;
pub mod client;
pub mod config;
pub mod core;
pub mod html;
pub mod ops_requests;
pub mod posthog;
pub mod remediation;
pub mod shell;
pub mod status_page;
pub mod ui;
pub mod views;

#[cfg(not(target_arch = "wasm32"))]
pub mod native;
#[cfg(target_arch = "wasm32")]
mod worker;

#[cfg(test)]
mod quorum_simulation;
#[cfg(test)]
mod simulation;

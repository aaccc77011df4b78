//! Vigil's edge: probes, debounce, incidents, alerts and the remediation
//! loop. `core` is pure; `remediation` runs a round over an I/O trait;
//! `native` is the tokio shell that `cargo run` starts. See ARCHITECTURE.md.

pub mod config;
pub mod core;
pub mod remediation;
pub mod views;

#[cfg(not(target_arch = "wasm32"))]
pub mod native;

#[cfg(test)]
mod simulation;

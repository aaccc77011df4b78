//! Vigil's ops-agent: runs allowlisted Docker actions for the edge, and
//! nothing else. See ARCHITECTURE.md for the map.

pub mod actions;
pub mod audit;
pub mod config;
pub mod docker;
pub mod host;
pub mod metrics;
pub use vigil_wire::{client_ip, ratelimit};
pub mod server;
pub mod signal;

//! Vigil's ops-agent: runs allowlisted Docker actions for the edge, and
//! nothing else. See ARCHITECTURE.md for the map.

pub mod actions;
pub mod audit;
pub mod client_ip;
pub mod config;
pub mod docker;
pub mod host;
pub mod listen;
pub mod metrics;
pub mod ratelimit;
pub mod server;

//! The sans-IO core: pure state machines that take observations and `now`
//! (epoch milliseconds) and return state changes and events. Nothing here
//! reads a clock or does I/O.

pub mod acklink;
pub mod alert;
pub mod budget;
pub mod cert;
pub mod channel;
// Targets through the API and runbooks: the native edge only (the Worker
// bundle does not carry them).
#[cfg(not(target_arch = "wasm32"))]
pub mod control;
pub mod crash;
pub mod deadman;
pub mod depend;
pub mod escalate;
pub mod flap;
pub mod history;
pub mod history_rows;
pub mod incident;
pub mod jobs;
pub mod json;
pub mod planner;
pub mod probe;
pub mod remind;
pub mod route;
#[cfg(not(target_arch = "wasm32"))]
pub mod runbook;
pub mod schedule;
pub mod signal;
pub mod slo;
pub mod state;
pub mod store_health;
pub mod tzdb;
pub mod vantage;

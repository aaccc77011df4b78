//! Wire types of the ops-agent HTTP API.
//!
//! The ops-agent serialises these and the edge deserialises them: one
//! definition of each, so the two sides cannot drift apart. Also the bearer
//! token check both programs use. Light enough to build for wasm32 (the
//! Worker).

use serde::{Deserialize, Serialize};

pub mod token;
pub use token::TokenCheck;
#[cfg(not(target_arch = "wasm32"))]
pub mod client_ip;
#[cfg(not(target_arch = "wasm32"))]
pub mod listen;
#[cfg(not(target_arch = "wasm32"))]
pub mod ratelimit;

/// The fixed Docker operation an action performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Restart every container of the named services.
    Restart,
    /// Replace the service's container by an identical new one.
    Recreate,
    /// Run a fixed argv inside the service's container.
    Exec,
    /// Prune stopped containers, dangling images and build cache.
    Prune,
}

/// One allowlisted action, as `GET /v1/actions` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionInfo {
    pub name: String,
    pub description: String,
    pub kind: ActionKind,
    /// Compose services the action touches (empty for prune).
    pub services: Vec<String>,
    pub timeout_ms: u64,
    /// Runs only when a human approves it (a runbook's approval): the
    /// remediation ladder and the planner never pick it on their own.
    #[serde(default)]
    pub approval: bool,
}

/// Body of `GET /v1/actions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionList {
    pub actions: Vec<ActionInfo>,
}

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionOutcome {
    Ok,
    Failed,
    TimedOut,
}

/// Body of a `POST /v1/actions/{name}` answer (200 for every outcome of an
/// action that was allowed to run; refusals are [`ErrorBody`]s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    pub name: String,
    pub ok: bool,
    pub outcome: ActionOutcome,
    pub request_id: String,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    pub duration_ms: u64,
    /// What the operation reported, truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One container of the compose project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub name: String,
    pub service: String,
    /// Docker's state: running, exited, restarting, ...
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    pub restart_count: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
}

/// Host metrics read from /proc and statvfs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostMetrics {
    pub cpu_percent: f64,
    pub mem_used_bytes: u64,
    pub mem_total_bytes: u64,
    pub disk_used_percent: f64,
    pub load_1: f64,
    pub load_5: f64,
    pub load_15: f64,
    pub uptime_s: u64,
}

/// Body of `GET /v1/diagnostics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnostics {
    pub compose_project: String,
    pub docker_ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_error: Option<String>,
    pub containers: Vec<ContainerInfo>,
    pub host: HostMetrics,
}

/// Body of `GET /v1/logs/{service}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLines {
    pub service: String,
    pub lines: Vec<String>,
}

/// One line of the ops-agent's audit log, and of `GET /v1/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub ts_ms: u64,
    pub request_id: String,
    pub client_ip: String,
    pub action: String,
    /// `started` (written before the action runs), then `ok`, `failed`,
    /// `timed_out`; or the refusal: `unknown_action`, `busy`,
    /// `unauthorized`, `rate_limited` (one line per client per minute, then
    /// a summary), `replayed`, `body_too_large`, `body_timeout`,
    /// `bad_request`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub duration_ms: u64,
}

/// Body of `GET /v1/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
}

/// Every error answer: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

/// The header that makes `POST /v1/actions/{name}` replay an earlier answer.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// Set on an answer that was replayed rather than run.
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_result_omits_absent_fields_and_reads_back() {
        let r = ActionResult {
            name: "restart_api_core".into(),
            ok: true,
            outcome: ActionOutcome::Ok,
            request_id: "r1".into(),
            started_at_ms: 1,
            finished_at_ms: 3,
            duration_ms: 2,
            output: None,
            error: None,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains("error"), "{text}");
        assert!(text.contains(r#""outcome":"ok""#), "{text}");
        let back: ActionResult = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn error_body_has_the_documented_shape() {
        let v = serde_json::to_value(ErrorBody::new("unknown_action", "no such action")).unwrap();
        assert_eq!(v["error"]["code"], "unknown_action");
        assert_eq!(v["error"]["message"], "no such action");
    }
}

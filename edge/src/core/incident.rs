//! An incident and its audit trail: state history, remediation rounds, page,
//! acknowledgement, manual actions.

use serde::{Deserialize, Serialize};
use vigil_wire::{ActionResult, LogLines};

use super::probe::{truncate, Health, Observation};

/// The most container log lines a round keeps, and the most characters of
/// each: at most about 4 KB per round in the state document.
pub const ROUND_LOG_LINES: usize = 20;
pub const LOG_LINE_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateChange {
    /// The target's transition number: alerts are keyed by it.
    pub seq: u64,
    pub at_ms: u64,
    pub from: Health,
    pub to: Health,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// With `regions`: what each vantage point saw (`core::vantage`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vantages: Vec<super::vantage::Seen>,
}

/// Where automatic remediation of an incident stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "snake_case")]
pub enum RemediationStatus {
    /// Rounds may run.
    Pending,
    /// Not for this incident (alert-only target, degraded only, ...).
    NotApplicable(String),
    /// Held back: cooldown after a recent incident (a flapping target).
    Suppressed(String),
    /// The planner escalated to a human.
    Escalated(String),
    /// Every round ran and the target is still bad.
    Exhausted,
    /// The host's agent could not be reached, or Docker was down.
    HostUnreachable(String),
    /// A human acknowledged the incident.
    Acknowledged,
    /// The target recovered.
    Done,
}

/// Read as a plain struct of `status` and `reason`, not by the derive for
/// `tag` + `content`, which buffers the value in serde's `Content` first:
/// code the Worker bundle needed only for this and `crash::Timestamp`
/// (BENCHMARKS.md, "The edge Worker"). The same documents are read.
impl<'de> Deserialize<'de> for RemediationStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case")]
        enum Status {
            Pending,
            NotApplicable,
            Suppressed,
            Escalated,
            Exhausted,
            HostUnreachable,
            Acknowledged,
            Done,
        }
        #[derive(Deserialize)]
        struct Tagged {
            status: Status,
            #[serde(default)]
            reason: Option<String>,
        }
        let Tagged { status, reason } = Tagged::deserialize(d)?;
        match (status, reason) {
            (Status::Pending, None) => Ok(Self::Pending),
            (Status::Exhausted, None) => Ok(Self::Exhausted),
            (Status::Acknowledged, None) => Ok(Self::Acknowledged),
            (Status::Done, None) => Ok(Self::Done),
            (Status::NotApplicable, Some(r)) => Ok(Self::NotApplicable(r)),
            (Status::Suppressed, Some(r)) => Ok(Self::Suppressed(r)),
            (Status::Escalated, Some(r)) => Ok(Self::Escalated(r)),
            (Status::HostUnreachable, Some(r)) => Ok(Self::HostUnreachable(r)),
            // A status without a reason given one, or one with a reason not.
            (_, Some(_)) => Err(D::Error::unknown_field("reason", &[])),
            (_, None) => Err(D::Error::missing_field("reason")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlannerKind {
    Llm,
    Ladder,
}

/// A tool call the model made, and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallRecord {
    pub name: String,
    pub arguments: String,
    /// `accepted`, `read`, or `refused: <why>`.
    pub verdict: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

impl TokenUsage {
    pub fn add(&mut self, other: TokenUsage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundOutcome {
    Recovered,
    NotRecovered,
    Escalated,
    HostUnreachable,
    /// No allowed action was left to try.
    NoAction,
    /// Stopped before acting: acknowledged, resolved or in maintenance
    /// while the round was planning.
    Cancelled,
}

/// One remediation round, as the audit trail keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    pub n: u32,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    /// What the agent's diagnostics said, summarised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<String>,
    /// The host's metrics when the round read its diagnostics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_metrics: Option<vigil_wire::HostMetrics>,
    pub planner: PlannerKind,
    /// Why the ladder planned when a model is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    #[serde(default)]
    pub tool_calls: Vec<ToolCallRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The planner's stated reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_result: Option<ActionResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprobe: Option<Observation>,
    #[serde(default)]
    pub usage: TokenUsage,
    pub outcome: RoundOutcome,
    /// Later checks of an unreachable host folded into this round's record
    /// (each one found it still unreachable); `finished_at_ms` is the last.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub retries: u32,
    /// What the monitor adds, e.g. that remediation resumed after the host
    /// was unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// An action of the ladder that needs a human's approval (`approval` in
    /// the agent's allowlist), proposed when nothing else was left: it
    /// waits on the incident like a runbook's approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<String>,
    /// The container log lines the round read (the model's `get_logs`
    /// calls), as the model saw them, within [`ROUND_LOG_LINES`] and
    /// [`LOG_LINE_CHARS`] ([`keep_log_lines`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogLines>,
}

/// Adds what one read of `service`'s logs returned to a round's `kept`
/// lines: its newest lines that fit in [`ROUND_LOG_LINES`] for the round,
/// each cut to [`LOG_LINE_CHARS`]. A read past the cap keeps nothing.
pub fn keep_log_lines(kept: &mut Vec<LogLines>, service: &str, lines: &[String]) {
    let room = ROUND_LOG_LINES.saturating_sub(kept.iter().map(|l| l.lines.len()).sum());
    if room == 0 || lines.is_empty() {
        return;
    }
    kept.push(LogLines {
        service: service.to_string(),
        lines: lines[lines.len().saturating_sub(room)..]
            .iter()
            .map(|l| truncate(l, LOG_LINE_CHARS))
            .collect(),
    });
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// An incident's id: its number and its opening time (epoch ms, base 36).
/// The time makes an id unique by construction, even when the counter is
/// lost with a state that could not be stored (a crash while the disk was
/// full, a KV write that failed): a later incident opens at a later time.
pub fn incident_id(n: u64, opened_at_ms: u64) -> String {
    let mut t = opened_at_ms;
    let mut digits = Vec::new();
    loop {
        digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(t % 36) as usize]);
        t /= 36;
        if t == 0 {
            break;
        }
    }
    digits.reverse();
    format!("inc-{n}-{}", String::from_utf8_lossy(&digits))
}

/// An action run by hand through the control API: recorded when it is
/// sent, completed when the agent answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManualAction {
    pub at_ms: u64,
    pub by: String,
    pub host: String,
    pub action: String,
    /// The idempotency key it is sent with; names the record until it ends.
    #[serde(default)]
    pub key: String,
    /// None while the action runs (or when the edge stopped before it
    /// answered: the agent's audit log has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ActionResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An action a round decided on and is about to send (or has sent):
/// persisted first, so a runner restarted mid-round resumes the same action
/// under the same idempotency key instead of planning anew.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAction {
    pub round: u32,
    pub action: String,
    pub reason: String,
    pub planner: PlannerKind,
}

impl ManualAction {
    /// An action about to be sent.
    pub fn start(at_ms: u64, by: String, host: &str, action: &str) -> Self {
        ManualAction {
            at_ms,
            by,
            host: host.to_string(),
            action: action.to_string(),
            key: format!("vigil-manual-{host}-{action}-{at_ms}"),
            finished_at_ms: None,
            result: None,
            error: None,
        }
    }

    /// The agent answered (or the call failed).
    pub fn finish(&mut self, at_ms: u64, result: Result<ActionResult, String>) {
        self.finished_at_ms = Some(at_ms);
        match result {
            Ok(r) => self.result = Some(r),
            Err(e) => self.error = Some(e),
        }
    }
}

/// Who runs the incident's current round, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    pub round: u32,
    pub until_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub target: String,
    pub opened_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    pub history: Vec<StateChange>,
    pub remediation: RemediationStatus,
    #[serde(default)]
    pub rounds: Vec<Round>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paged_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_reason: Option<String>,
    /// Not paged because this earlier incident of the same target paged
    /// within the flap window (a relapse or a flapping episode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_covered_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_action: Option<PendingAction>,
    #[serde(default)]
    pub manual_actions: Vec<ManualAction>,
    /// The paging channels its page went to: they hear of its ack and close.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paged_to: Vec<String>,
    /// Folded into this incident of a parent target (`depends_on`) while
    /// the parent is down: no alert, page or remediation of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folded_into: Option<String>,
    /// Children folded into this incident, and whether that was alerted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affected: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub affected_alerted: bool,
    /// The levels it escalated to (`[[escalation]]`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalations: Vec<super::escalate::EscalationStep>,
    /// Signatures of the ack links used (each works once).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ack_links_used: Vec<String>,
    /// Reminders queued (`remind_every_s`).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub reminders: u32,
    /// Its ack / close was queued to `paged_to`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub page_acked: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub page_resolved: bool,
    /// Critical crash reports counted into this incident (crash subjects).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub crash_reports: u64,
    /// A runbook's request, approval and steps (subject `runbook:<id>`),
    /// or the ladder's proposal waiting for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<super::runbook::RunbookRun>,
}

fn is_false(b: &bool) -> bool {
    !b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Incident {
    /// A new open incident with nothing recorded yet.
    pub fn new(
        id: String,
        target: String,
        opened_at_ms: u64,
        remediation: RemediationStatus,
    ) -> Self {
        Incident {
            id,
            target,
            opened_at_ms,
            resolved_at_ms: None,
            resolution: None,
            history: Vec::new(),
            remediation,
            rounds: Vec::new(),
            paged_at_ms: None,
            page_reason: None,
            page_covered_by: None,
            acked_at_ms: None,
            acked_by: None,
            lease: None,
            pending_action: None,
            manual_actions: Vec::new(),
            paged_to: Vec::new(),
            folded_into: None,
            affected: Vec::new(),
            affected_alerted: false,
            escalations: Vec::new(),
            ack_links_used: Vec::new(),
            reminders: 0,
            page_acked: false,
            page_resolved: false,
            crash_reports: 0,
            runbook: None,
        }
    }

    /// Whether it carries a runbook's run (or a proposal).
    pub fn is_runbook(&self) -> bool {
        self.runbook.is_some()
    }

    pub fn is_open(&self) -> bool {
        self.resolved_at_ms.is_none()
    }

    /// Rounds that count against `max_remediation_rounds`: a round that
    /// found the host unreachable did nothing, so it does not.
    pub fn rounds_counted(&self) -> u32 {
        self.rounds
            .iter()
            .filter(|r| r.outcome != RoundOutcome::HostUnreachable)
            .count() as u32
    }

    /// How often `action` ran in this incident's rounds.
    pub fn runs_of(&self, action: &str) -> u32 {
        self.rounds
            .iter()
            .filter(|r| r.action.as_deref() == Some(action) && r.action_result.is_some())
            .count() as u32
    }

    /// One line per round, for the page.
    pub fn tried(&self) -> Vec<String> {
        self.rounds
            .iter()
            .map(|r| {
                let what = r.action.as_deref().unwrap_or("no action");
                let result = match (&r.action_result, &r.action_error) {
                    (Some(res), _) => format!("{:?}", res.outcome).to_ascii_lowercase(),
                    (None, Some(e)) => format!("error: {e}"),
                    (None, None) => "-".into(),
                };
                let after = r.reprobe.as_ref().map_or("not re-probed".to_string(), |o| {
                    format!("then {}", o.health.as_str())
                });
                format!(
                    "round {} ({:?}): {what} → {result}, {after}",
                    r.n, r.planner
                )
                .to_ascii_lowercase()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remediation_status_reads_back_as_written_and_a_wrong_reason_is_refused() {
        use RemediationStatus::*;
        let all = [
            Pending,
            NotApplicable("alert only".into()),
            Suppressed("flapping".into()),
            Escalated("disk full".into()),
            Exhausted,
            HostUnreachable("agent down".into()),
            Acknowledged,
            Done,
        ];
        for status in all {
            let text = serde_json::to_string(&status).unwrap();
            assert_eq!(
                crate::core::json::read::<RemediationStatus>(text.as_bytes()).unwrap(),
                status
            );
            assert_eq!(
                serde_json::from_str::<RemediationStatus>(&text).unwrap(),
                status
            );
        }
        let why = |text: &str| {
            serde_json::from_str::<RemediationStatus>(text)
                .unwrap_err()
                .to_string()
        };
        assert!(why(r#"{"status":"escalated"}"#).contains("missing field `reason`"));
        assert!(why(r#"{"status":"done","reason":"x"}"#).contains("unknown field `reason`"));
        assert!(why(r#"{"status":"gone"}"#).contains("unknown variant `gone`"));
        assert_eq!(
            serde_json::from_str::<RemediationStatus>(r#"{"status":"done","reason":null}"#)
                .unwrap(),
            Done
        );
    }

    #[test]
    fn an_id_is_its_number_and_its_opening_time_in_base_36() {
        assert_eq!(incident_id(7, 0), "inc-7-0");
        assert_eq!(incident_id(1, 36), "inc-1-10");
        assert_eq!(incident_id(12, 1_764_000_000_000), "inc-12-midc1z40");
        assert_ne!(
            incident_id(5, 1_764_000_000_000),
            incident_id(5, 1_764_000_000_001),
            "a number lost with an unsaved state is not reused"
        );
    }

    #[test]
    fn a_round_keeps_the_newest_log_lines_within_its_cap() {
        let lines: Vec<String> = (0..50).map(|n| format!("line {n}")).collect();
        let mut kept = Vec::new();
        keep_log_lines(&mut kept, "web", &lines[..5]);
        keep_log_lines(&mut kept, "db", &lines);
        keep_log_lines(&mut kept, "web", &lines);
        assert_eq!(kept.len(), 2, "a read past the cap keeps nothing");
        assert_eq!(kept[0].lines, lines[..5]);
        assert_eq!(kept[1].service, "db");
        assert_eq!(kept[1].lines, lines[35..], "the newest lines that fit");
        let mut long = Vec::new();
        keep_log_lines(&mut long, "web", &["x".repeat(1_000)]);
        assert!(long[0].lines[0].chars().count() <= LOG_LINE_CHARS);
    }
}

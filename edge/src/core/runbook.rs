//! Runbooks (`[[runbook]]`): a named, ordered list of allowlisted actions on
//! one host, run on request (`POST /ops/runbook/{id}/execute`), with a
//! human's approval when it says `approval = true`.
//!
//! Each request opens an incident (subject `runbook:<id>`) that carries the
//! run ([`RunbookRun`]): the request, the approval's decision (or its
//! expiry), every step with the agent's answer and the re-probes after it.
//! Nothing runs before an approval; an approval that comes after
//! `expires_s`, a second decision, and a decision on a denied or expired
//! request are refused and change nothing. The state's lock (native) or the
//! Durable Object (Worker) orders concurrent decisions: exactly one wins.

use serde::{Deserialize, Serialize};
use vigil_wire::{ActionInfo, ActionResult};

use super::alert::{notice, Alert};
use super::incident::RemediationStatus;
use super::probe::{Health, Observation};
use super::route::{HookEvent, Severity};
use super::state::{Event, State};
use crate::config::{Config, Runbook};

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    AwaitingApproval,
    /// Approved (or needing no approval), its first step not sent yet.
    Approved,
    Running,
    Denied,
    Expired,
    Succeeded,
    /// A step failed; the steps after it were not run.
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::AwaitingApproval => "awaiting_approval",
            RunStatus::Approved => "approved",
            RunStatus::Running => "running",
            RunStatus::Denied => "denied",
            RunStatus::Expired => "expired",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
        }
    }
}

/// One step as it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub action: String,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ActionResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The targets on the runbook's host, probed after the step settled.
    #[serde(default)]
    pub reprobes: Vec<Observation>,
}

impl StepRecord {
    pub fn ok(&self) -> bool {
        self.result.as_ref().is_some_and(|r| r.ok)
    }
}

/// A runbook's request and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunbookRun {
    /// The approval's id too (`/ops/approvals/{id}/...`).
    pub id: String,
    pub runbook: String,
    pub host: String,
    pub steps: Vec<String>,
    pub requested_by: String,
    pub requested_at_ms: u64,
    pub status: RunStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at_ms: Option<u64>,
    #[serde(default)]
    pub steps_run: Vec<StepRecord>,
    /// The target whose ladder proposed this one action (then `runbook`
    /// names the action); none for a `[[runbook]]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposed_for: Option<String>,
}

impl RunbookRun {
    /// The idempotency key of step `k` (from 0): a step resent after a
    /// restart is replayed by the agent, not run twice.
    pub fn step_key(&self, k: usize) -> String {
        format!("vigil-{}-step-{}", self.id, k + 1)
    }

    /// The next step to run, if the run is on.
    pub fn next_step(&self) -> Option<(usize, &str)> {
        match self.status {
            RunStatus::Approved | RunStatus::Running => {
                let k = self.steps_run.len();
                self.steps.get(k).map(|s| (k, s.as_str()))
            }
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RunbookError {
    #[error("no runbook {0:?} in the configuration")]
    UnknownRunbook(String),
    #[error("no approval {0:?}")]
    UnknownApproval(String),
    #[error("approval {id:?} is already {status}")]
    AlreadyDecided { id: String, status: &'static str },
    #[error("approval {0:?} expired: nothing ran")]
    Expired(String),
}

impl RunbookError {
    /// The HTTP answer both shells give: status, error code, message.
    pub fn answer(&self) -> (u16, &'static str, String) {
        let (status, code) = match self {
            RunbookError::UnknownRunbook(_) => (404, "unknown_runbook"),
            RunbookError::UnknownApproval(_) => (404, "unknown_approval"),
            RunbookError::AlreadyDecided { .. } => (409, "already_decided"),
            RunbookError::Expired(_) => (410, "expired"),
        };
        (status, code, self.to_string())
    }
}

/// How long the ladder's proposal waits for a decision.
pub const PROPOSAL_EXPIRES_MS: u64 = 3_600_000;

/// The subject of a runbook's incident and alerts.
pub fn subject(runbook: &str) -> String {
    format!("runbook:{runbook}")
}

/// A runbook's steps against its host's allowlist (`GET /v1/actions`): each
/// step listed; a runbook without approval may not run an action that
/// needs one. The error names the key, as a configuration error does.
pub fn check_allowlist(
    index: usize,
    runbook: &Runbook,
    agent: &[ActionInfo],
) -> Result<(), (String, String)> {
    let key = format!("runbook[{index}].steps");
    for step in &runbook.steps {
        match agent.iter().find(|a| &a.name == step) {
            None => {
                return Err((
                    key,
                    format!("{step:?} is not allowlisted on host {:?}", runbook.host),
                ))
            }
            Some(a) if a.approval && !runbook.approval => {
                return Err((
                    key,
                    format!(
                        "{step:?} needs approval on host {:?}: set approval = true",
                        runbook.host
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn outcome_line(run: &RunbookRun) -> String {
    let by = run.decided_by.as_deref().unwrap_or("nobody");
    match run.status {
        RunStatus::Denied => format!("denied by {by}; nothing ran"),
        RunStatus::Expired => "the approval expired; nothing ran".into(),
        RunStatus::Succeeded => format!("every step ran ({})", run.steps.join(" → ")),
        RunStatus::Failed => {
            let last = run.steps_run.last();
            format!(
                "step {} ({}) failed: {}; the steps after it did not run",
                run.steps_run.len(),
                last.map_or("", |s| s.action.as_str()),
                last.and_then(|s| s.error.clone())
                    .or_else(|| last
                        .and_then(|s| s.result.as_ref())
                        .and_then(|r| r.error.clone()))
                    .unwrap_or_else(|| "not ok".into())
            )
        }
        RunStatus::AwaitingApproval | RunStatus::Approved | RunStatus::Running => {
            run.status.as_str().into()
        }
    }
}

impl State {
    fn run_incident(&mut self, run_id: &str) -> Option<&mut super::incident::Incident> {
        self.incidents
            .iter_mut()
            .find(|i| i.runbook.as_ref().is_some_and(|r| r.id == run_id))
    }

    fn run_mut(&mut self, run_id: &str) -> Option<&mut RunbookRun> {
        self.run_incident(run_id).and_then(|i| i.runbook.as_mut())
    }

    /// The run `run_id` (its incident's copy).
    pub fn run(&self, run_id: &str) -> Option<&RunbookRun> {
        self.incidents
            .iter()
            .filter_map(|i| i.runbook.as_ref())
            .find(|r| r.id == run_id)
    }

    /// `POST /ops/runbook/{id}/execute`: opens the run's incident, awaiting
    /// approval (alerted with what would run) or approved at once. An
    /// unknown id is refused and recorded in the audit list.
    pub fn execute_runbook(
        &mut self,
        config: &Config,
        id: &str,
        by: &str,
        now_ms: u64,
    ) -> Result<RunbookRun, RunbookError> {
        let Some(rb) = config.runbook(id) else {
            self.audit(now_ms, by, "runbook.unknown", id, None);
            return Err(RunbookError::UnknownRunbook(id.to_string()));
        };
        let incident = self.open_incident(
            &subject(id),
            RemediationStatus::NotApplicable("a runbook".into()),
            now_ms,
        );
        let run = RunbookRun {
            id: incident.replacen("inc-", "run-", 1),
            runbook: id.to_string(),
            host: rb.host.clone(),
            steps: rb.steps.clone(),
            requested_by: by.to_string(),
            requested_at_ms: now_ms,
            status: match rb.approval {
                true => RunStatus::AwaitingApproval,
                false => RunStatus::Approved,
            },
            expires_at_ms: rb
                .approval
                .then(|| now_ms + (rb.expires_s * 1000.0).round() as u64),
            decided_by: None,
            decided_at_ms: None,
            steps_run: Vec::new(),
            proposed_for: None,
        };
        if let Some(inc) = self.incident_mut(&incident) {
            inc.runbook = Some(run.clone());
        }
        let (title, what) = match rb.approval {
            true => (
                format!("Runbook {id} on {} awaits approval", rb.host),
                format!(
                    "Would run, one at a time: {}. Requested by {by}. Approve or deny {} before it expires (in {} s).",
                    rb.steps.join(" → "),
                    run.id,
                    rb.expires_s
                ),
            ),
            false => (
                format!("Runbook {id} on {} runs", rb.host),
                format!("Runs, one at a time: {}. Requested by {by}.", rb.steps.join(" → ")),
            ),
        };
        let event = match rb.approval {
            true => HookEvent::ApprovalRequest,
            false => HookEvent::Runbook,
        };
        self.runbook_alert(&run, event, title, what, now_ms);
        self.audit(now_ms, by, "runbook.execute", id, Some(run.id.clone()));
        Ok(run)
    }

    /// The ladder's proposal of `action` (which needs approval) for the
    /// open incident `incident`: it waits for a human like a runbook with
    /// `approval = true` (one per incident). The incident stays open: the
    /// monitor resolves it when the target recovers.
    pub fn propose_action(&mut self, config: &Config, incident: &str, action: &str, now_ms: u64) {
        let Some(inc) = self
            .incident(incident)
            .filter(|i| i.is_open() && i.runbook.is_none())
        else {
            return;
        };
        let Some(host) = config.target(&inc.target).and_then(|t| t.host.clone()) else {
            return;
        };
        let target = inc.target.clone();
        let run = RunbookRun {
            id: incident.replacen("inc-", "run-", 1),
            runbook: action.to_string(),
            host: host.clone(),
            steps: vec![action.to_string()],
            requested_by: "vigil (ladder)".into(),
            requested_at_ms: now_ms,
            status: RunStatus::AwaitingApproval,
            expires_at_ms: Some(now_ms + PROPOSAL_EXPIRES_MS),
            decided_by: None,
            decided_at_ms: None,
            steps_run: Vec::new(),
            proposed_for: Some(target.clone()),
        };
        if let Some(inc) = self.incident_mut(incident) {
            inc.runbook = Some(run.clone());
        }
        let title = format!("{action} on {host} for {target} awaits approval");
        let text = format!(
            "Nothing else is left to try for {target} ({incident}). Approve or deny {} within {} s.",
            run.id,
            PROPOSAL_EXPIRES_MS / 1000
        );
        self.runbook_alert(&run, HookEvent::ApprovalRequest, title, text, now_ms);
    }

    /// An alert about the run, keyed by its status (each sent once).
    fn runbook_alert(
        &mut self,
        run: &RunbookRun,
        event: HookEvent,
        title: String,
        text: String,
        now_ms: u64,
    ) {
        let about = run
            .proposed_for
            .clone()
            .unwrap_or_else(|| subject(&run.runbook));
        let mut alert = Alert::notice(
            format!("{}/{}", run.id, run.status.as_str()),
            Severity::Warning,
            &about,
            notice(title, Some(text), Health::Degraded, Vec::new()),
        )
        .with_event(event);
        alert.incident = Some(run.id.replacen("run-", "inc-", 1));
        self.outbox.push(alert, now_ms);
    }

    /// `POST /ops/approvals/{id}/approve|deny`: the first decision before
    /// the expiry wins; an approval past it is recorded as expired.
    pub fn decide_approval(
        &mut self,
        run_id: &str,
        approve: bool,
        by: &str,
        now_ms: u64,
    ) -> Result<RunbookRun, RunbookError> {
        let run = self
            .run(run_id)
            .ok_or_else(|| RunbookError::UnknownApproval(run_id.to_string()))?;
        if run.status != RunStatus::AwaitingApproval {
            return Err(RunbookError::AlreadyDecided {
                id: run_id.to_string(),
                status: run.status.as_str(),
            });
        }
        let what = if approve {
            "approval.approve"
        } else {
            "approval.deny"
        };
        if run.expires_at_ms.is_some_and(|at| now_ms >= at) {
            self.expire_run(run_id, now_ms);
            self.audit(now_ms, by, what, run_id, Some("refused: expired".into()));
            return Err(RunbookError::Expired(run_id.to_string()));
        }
        if let Some(run) = self.run_mut(run_id) {
            run.decided_by = Some(by.to_string());
            run.decided_at_ms = Some(now_ms);
            run.status = if approve {
                RunStatus::Approved
            } else {
                RunStatus::Denied
            };
        }
        self.audit(now_ms, by, what, run_id, None);
        match approve {
            true => {
                if let Some(run) = self.run(run_id).cloned() {
                    let title =
                        format!("Runbook {} on {}: approved by {by}", run.runbook, run.host);
                    let text = format!("Runs now, one at a time: {}.", run.steps.join(" → "));
                    self.runbook_alert(&run, HookEvent::ApprovalOutcome, title, text, now_ms);
                }
            }
            false => self.end_run(run_id, now_ms),
        }
        self.run(run_id)
            .cloned()
            .ok_or_else(|| RunbookError::UnknownApproval(run_id.to_string()))
    }

    /// Approvals past their expiry: recorded as expired, never run (from
    /// `tick`).
    pub fn expire_approvals(&mut self, now_ms: u64) {
        let due: Vec<String> = self
            .incidents
            .iter()
            .filter_map(|i| i.runbook.as_ref())
            .filter(|r| {
                r.status == RunStatus::AwaitingApproval
                    && r.expires_at_ms.is_some_and(|at| now_ms >= at)
            })
            .map(|r| r.id.clone())
            .collect();
        for id in due {
            self.expire_run(&id, now_ms);
            self.audit(now_ms, "vigil", "approval.expire", &id, None);
        }
    }

    fn expire_run(&mut self, run_id: &str, now_ms: u64) {
        if let Some(run) = self.run_mut(run_id) {
            run.status = RunStatus::Expired;
            run.decided_at_ms = Some(now_ms);
        }
        self.end_run(run_id, now_ms);
    }

    /// A run that ended: its incident resolved with the outcome, alerted.
    fn end_run(&mut self, run_id: &str, now_ms: u64) {
        let Some(inc) = self.run_incident(run_id) else {
            return;
        };
        let Some(run) = inc.runbook.clone() else {
            return;
        };
        let line = outcome_line(&run);
        if run.proposed_for.is_none() {
            inc.resolved_at_ms = Some(now_ms);
            inc.resolution = Some(format!("runbook {}: {line}", run.runbook));
        }
        let title = format!(
            "Runbook {} on {}: {}",
            run.runbook,
            run.host,
            run.status.as_str()
        );
        let event = match run.status {
            RunStatus::Denied | RunStatus::Expired => HookEvent::ApprovalOutcome,
            _ => HookEvent::Runbook,
        };
        self.runbook_alert(&run, event, title, line, now_ms);
    }

    /// Runs whose next step is due: approved, or running (resumed after a
    /// restart with the same step's key).
    pub fn runs_due(&self) -> Vec<RunbookRun> {
        self.incidents
            .iter()
            .filter(|i| i.is_open())
            .filter_map(|i| i.runbook.as_ref())
            .filter(|r| r.next_step().is_some())
            .cloned()
            .collect()
    }

    /// Whether an approved run acts on `host` (approved or running): no
    /// remediation round acts there meanwhile (`remediation_due`).
    pub fn run_acting_on(&self, host: &str) -> bool {
        self.incidents
            .iter()
            .filter(|i| i.is_open())
            .filter_map(|i| i.runbook.as_ref())
            .any(|r| r.host == host && r.next_step().is_some())
    }

    /// Marks the run started (before its first step is sent).
    pub fn start_run(&mut self, run_id: &str) {
        if let Some(run) = self
            .run_mut(run_id)
            .filter(|r| r.status == RunStatus::Approved)
        {
            run.status = RunStatus::Running;
        }
    }

    /// Stores a step as it ran and feeds its re-probes to the monitor; a
    /// failed step ends the run, and so does the last one.
    pub fn record_step(
        &mut self,
        config: &Config,
        run_id: &str,
        step: StepRecord,
        now_ms: u64,
    ) -> Vec<Event> {
        let Some(run) = self
            .run_mut(run_id)
            .filter(|r| r.status == RunStatus::Running)
        else {
            return Vec::new();
        };
        let ok = step.ok();
        let reprobes = step.reprobes.clone();
        run.steps_run.push(step);
        let done = run.steps_run.len() == run.steps.len();
        if !ok {
            run.status = RunStatus::Failed;
        } else if done {
            run.status = RunStatus::Succeeded;
        }
        if !ok || done {
            self.end_run(run_id, now_ms);
        }
        reprobes
            .iter()
            .flat_map(|obs| self.observe(config, obs, now_ms))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(approval: bool) -> Config {
        Config::parse(
            "t",
            &format!(
                "[[host]]\nid = \"web\"\nurl_env = \"U\"\ntoken_env = \"T\"\n[[runbook]]\nid = \"fix\"\nhost = \"web\"\nsteps = [\"restart_gateway\", \"reload_nginx\"]\napproval = {approval}\nexpires_s = 60\n"
            ),
        )
        .unwrap()
    }

    fn step(action: &str, ok: bool) -> StepRecord {
        StepRecord {
            action: action.into(),
            started_at_ms: 0,
            finished_at_ms: 1,
            result: Some(ActionResult {
                name: action.into(),
                ok,
                outcome: if ok {
                    vigil_wire::ActionOutcome::Ok
                } else {
                    vigil_wire::ActionOutcome::Failed
                },
                request_id: "r".into(),
                started_at_ms: 0,
                finished_at_ms: 1,
                duration_ms: 1,
                output: None,
                error: (!ok).then(|| "boom".into()),
            }),
            error: None,
            reprobes: Vec::new(),
        }
    }

    #[test]
    fn nothing_runs_before_approval_and_the_first_decision_wins() {
        let c = config(true);
        let mut s = State::default();
        let run = s.execute_runbook(&c, "fix", "alice", 1000).unwrap();
        assert_eq!(run.status, RunStatus::AwaitingApproval);
        assert_eq!(run.expires_at_ms, Some(61_000));
        assert!(s.runs_due().is_empty(), "nothing runs before an approval");
        let approved = s.decide_approval(&run.id, true, "bob", 2000).unwrap();
        assert_eq!(approved.status, RunStatus::Approved);
        assert_eq!(
            s.decide_approval(&run.id, false, "carol", 2001),
            Err(RunbookError::AlreadyDecided {
                id: run.id.clone(),
                status: "approved"
            })
        );
        assert_eq!(
            s.decide_approval(&run.id, true, "bob", 2002).unwrap_err(),
            RunbookError::AlreadyDecided {
                id: run.id.clone(),
                status: "approved"
            }
        );
        assert_eq!(s.runs_due().len(), 1);
        s.start_run(&run.id);
        s.record_step(&c, &run.id, step("restart_gateway", true), 3000);
        assert_eq!(
            s.run(&run.id).unwrap().next_step(),
            Some((1, "reload_nginx"))
        );
        s.record_step(&c, &run.id, step("reload_nginx", true), 4000);
        let done = s.run(&run.id).unwrap();
        assert_eq!(done.status, RunStatus::Succeeded);
        let inc = s.incidents.iter().find(|i| i.runbook.is_some()).unwrap();
        assert_eq!(
            inc.resolution.as_deref(),
            Some("runbook fix: every step ran (restart_gateway → reload_nginx)")
        );
        let whats: Vec<_> = s.audit.iter().map(|a| a.what.as_str()).collect();
        assert_eq!(whats, ["runbook.execute", "approval.approve"]);
    }

    #[test]
    fn a_denied_or_expired_request_never_runs() {
        let c = config(true);
        let mut s = State::default();
        let denied = s.execute_runbook(&c, "fix", "alice", 1000).unwrap();
        s.decide_approval(&denied.id, false, "bob", 2000).unwrap();
        assert_eq!(
            s.decide_approval(&denied.id, true, "mallory", 2001)
                .unwrap_err(),
            RunbookError::AlreadyDecided {
                id: denied.id.clone(),
                status: "denied"
            }
        );
        let late = s.execute_runbook(&c, "fix", "alice", 5000).unwrap();
        assert_eq!(
            s.decide_approval(&late.id, true, "bob", 65_000)
                .unwrap_err(),
            RunbookError::Expired(late.id.clone())
        );
        assert_eq!(s.run(&late.id).unwrap().status, RunStatus::Expired);
        let quiet = s.execute_runbook(&c, "fix", "alice", 100_000).unwrap();
        s.expire_approvals(159_999);
        assert_eq!(
            s.run(&quiet.id).unwrap().status,
            RunStatus::AwaitingApproval
        );
        s.expire_approvals(160_000);
        assert_eq!(s.run(&quiet.id).unwrap().status, RunStatus::Expired);
        assert!(s.runs_due().is_empty());
        assert!(s.incidents.iter().all(|i| !i.is_open()));
        assert_eq!(
            s.execute_runbook(&c, "nope", "eve", 1).unwrap_err(),
            RunbookError::UnknownRunbook("nope".into())
        );
        assert_eq!(s.audit.last().unwrap().what, "runbook.unknown");
        // Both shells answer with these.
        let answer = |e: RunbookError| (e.answer().0, e.answer().1);
        assert_eq!(
            answer(RunbookError::UnknownRunbook("x".into())),
            (404, "unknown_runbook")
        );
        assert_eq!(answer(RunbookError::Expired("x".into())), (410, "expired"));
        let second = RunbookError::AlreadyDecided {
            id: "x".into(),
            status: "denied",
        };
        assert_eq!(answer(second), (409, "already_decided"));
    }

    #[test]
    fn a_failed_step_stops_the_run_and_no_approval_runs_at_once() {
        let c = config(false);
        let mut s = State::default();
        let run = s.execute_runbook(&c, "fix", "alice", 1000).unwrap();
        assert_eq!(run.status, RunStatus::Approved);
        assert_eq!(run.step_key(0), format!("vigil-{}-step-1", run.id));
        s.start_run(&run.id);
        s.record_step(&c, &run.id, step("restart_gateway", false), 2000);
        let r = s.run(&run.id).unwrap();
        assert_eq!(r.status, RunStatus::Failed);
        assert_eq!(r.next_step(), None, "the steps after a failure never run");
    }

    #[test]
    fn the_ladders_proposal_waits_for_approval_on_the_targets_incident() {
        let c = Config::parse(
            "t",
            "[[host]]\nid = \"web\"\nurl_env = \"U\"\ntoken_env = \"T\"\n[[target]]\nid = \"api\"\nurl = \"http://127.0.0.1:1/\"\nrole = \"remediate\"\nhost = \"web\"\nactions = [\"prune_docker\"]\n",
        )
        .unwrap();
        let mut s = State::default();
        let inc = s.open_incident("api", RemediationStatus::Pending, 1000);
        s.propose_action(&c, &inc, "prune_docker", 2000);
        s.propose_action(&c, &inc, "prune_docker", 2001);
        let run = s.incident(&inc).unwrap().runbook.clone().unwrap();
        assert_eq!(
            (run.status, run.proposed_for.as_deref()),
            (RunStatus::AwaitingApproval, Some("api"))
        );
        assert!(
            s.runs_due().is_empty(),
            "nothing runs before a human approves"
        );
        let queued: Vec<_> = s
            .outbox
            .entries
            .iter()
            .map(|e| (e.headline(), e.subject.clone()))
            .collect();
        assert_eq!(
            queued,
            [(
                "prune_docker on web for api awaits approval".to_string(),
                "api".to_string()
            )]
        );
        s.decide_approval(&run.id, true, "bob", 3000).unwrap();
        s.start_run(&run.id);
        s.record_step(&c, &run.id, step("prune_docker", true), 4000);
        let inc = s.incident(&inc).unwrap();
        assert_eq!(inc.runbook.as_ref().unwrap().status, RunStatus::Succeeded);
        assert!(
            inc.is_open(),
            "the monitor, not the run, resolves a target's incident"
        );
    }

    #[test]
    fn no_remediation_round_acts_on_a_host_while_an_approved_run_does() {
        let c = Config::parse(
            "t",
            "[[host]]\nid = \"web\"\nurl_env = \"U\"\ntoken_env = \"T\"\n[[target]]\nid = \"api\"\nurl = \"http://127.0.0.1:1/\"\nrole = \"remediate\"\nhost = \"web\"\nactions = [\"restart_api\"]\n[[runbook]]\nid = \"fix\"\nhost = \"web\"\nsteps = [\"restart_gateway\", \"restart_api\"]\nexpires_s = 60\n",
        )
        .unwrap();
        let mut s = State::default();
        // The run's own restart takes api down: its incident must not get a
        // round of its own (a second restart) while the run is acting.
        let run = s.execute_runbook(&c, "fix", "alice", 1000).unwrap();
        let inc = s.open_incident("api", RemediationStatus::Pending, 1500);
        assert_eq!(
            s.remediation_due(&c, 1500),
            std::slice::from_ref(&inc),
            "awaiting approval: nothing acts yet"
        );
        s.decide_approval(&run.id, true, "bob", 2000).unwrap();
        assert!(s.remediation_due(&c, 2000).is_empty(), "approved");
        s.start_run(&run.id);
        assert!(
            s.take_lease(&c, &inc, "edge", 2500, 60_000).is_none(),
            "running"
        );
        s.record_step(&c, &run.id, step("restart_gateway", true), 3000);
        assert!(s.remediation_due(&c, 3000).is_empty(), "between steps");
        s.record_step(&c, &run.id, step("restart_api", true), 4000);
        assert_eq!(
            s.remediation_due(&c, 4000),
            [inc],
            "the run is over: the ladder may act"
        );
    }

    #[test]
    fn steps_are_checked_against_the_agents_allowlist() {
        let info = |name: &str, approval: bool| ActionInfo {
            name: name.into(),
            description: "d".into(),
            kind: vigil_wire::ActionKind::Restart,
            services: vec![],
            timeout_ms: 1,
            approval,
        };
        let rb = &config(false).runbooks[0];
        let agent = [info("restart_gateway", false), info("reload_nginx", false)];
        assert_eq!(check_allowlist(0, rb, &agent), Ok(()));
        let (key, why) = check_allowlist(0, rb, &agent[..1]).unwrap_err();
        assert_eq!(key, "runbook[0].steps");
        assert!(why.contains("\"reload_nginx\" is not allowlisted"), "{why}");
        let broad = [info("restart_gateway", true), info("reload_nginx", false)];
        assert!(check_allowlist(0, rb, &broad)
            .unwrap_err()
            .1
            .contains("needs approval"));
        assert_eq!(
            check_allowlist(0, &config(true).runbooks[0], &broad),
            Ok(())
        );
    }
}

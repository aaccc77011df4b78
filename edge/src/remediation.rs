//! One remediation round: diagnose, plan, act, settle, re-probe. The I/O is a
//! trait that each shell implements (native: reqwest and tokio; tests: fakes
//! on a fake clock), so every shell runs this same code. The round only
//! reads the incident; the shell stores the finished [`Round`] through
//! [`State::finish_round`](crate::core::state::State::finish_round).

use tracing::Instrument;
use vigil_wire::{ActionInfo, ActionResult, Diagnostics};

use crate::config::{Config, Target};
use vigil_wire::LogLines;

use crate::core::incident::{
    keep_log_lines, Incident, PendingAction, PlannerKind, Round, RoundOutcome, TokenUsage,
    ToolCallRecord,
};
use crate::core::planner::{self, Completion, Reply, LOG_TAIL};
use crate::core::probe::{Health, Observation};
use crate::core::runbook::{RunbookRun, StepRecord};

/// What a shell must provide. Errors are short human-readable texts: they
/// end up in the audit trail.
#[allow(async_fn_in_trait)] // each shell picks its own executor; Send is its business
pub trait RemediationIo {
    fn now_ms(&self) -> u64;
    async fn sleep_ms(&self, ms: u64);
    async fn diagnostics(&self, host: &str) -> Result<Diagnostics, String>;
    async fn actions(&self, host: &str) -> Result<Vec<ActionInfo>, String>;
    async fn logs(&self, host: &str, service: &str, tail: u32) -> Result<Vec<String>, String>;
    async fn run_action(
        &self,
        host: &str,
        action: &str,
        idempotency_key: &str,
    ) -> Result<ActionResult, String>;
    /// Whether a model is configured; without one the ladder plans.
    fn has_model(&self) -> bool;
    /// One chat completion, within the configured per-call timeout.
    async fn chat(&self, request: &serde_json::Value) -> Result<Completion, String>;
    async fn probe(&self, target: &Target) -> Observation;
    /// 128 random bits, fresh on every call: the delimiter of one frame of
    /// untrusted data in the model's conversation.
    fn fresh_nonce(&self) -> Result<u128, String>;
}

/// The key that makes a retried round replay instead of acting twice.
pub fn idempotency_key(incident: &str, round: u32) -> String {
    format!("vigil-{incident}-round-{round}")
}

enum Plan {
    Action {
        name: String,
        reason: String,
    },
    Escalate {
        reason: String,
    },
    /// The model could not decide; the ladder plans instead.
    Fallback {
        why: String,
    },
}

struct LlmPlan {
    plan: Plan,
    calls: Vec<ToolCallRecord>,
    usage: TokenUsage,
    logs: Vec<LogLines>,
}

/// What a round needs besides the I/O.
pub struct RoundInput<'a> {
    pub config: &'a Config,
    pub target: &'a Target,
    pub incident: &'a Incident,
    pub n: u32,
    /// The action an interrupted run of this round had decided on: resent
    /// under the same idempotency key, without planning again.
    pub resume: Option<PendingAction>,
    /// Called with the decision before the action is sent, so the shell can
    /// persist it ([`State::note_action`](crate::core::state::State::note_action));
    /// false stops the round before it acts.
    pub on_decision: &'a (dyn Fn(&PendingAction) -> bool + Sync),
}

pub async fn run_round<I: RemediationIo>(io: &I, input: RoundInput<'_>) -> Round {
    let span = tracing::info_span!("round", incident = %input.incident.id, target = %input.target.id, round = input.n);
    round_in_span(io, input).instrument(span).await
}

async fn round_in_span<I: RemediationIo>(io: &I, input: RoundInput<'_>) -> Round {
    let RoundInput {
        config,
        target,
        incident,
        n,
        resume,
        on_decision,
    } = input;
    let mut round = Round {
        n,
        started_at_ms: io.now_ms(),
        finished_at_ms: 0,
        diagnostics: None,
        host_metrics: None,
        planner: PlannerKind::Ladder,
        fallback: None,
        tool_calls: Vec::new(),
        action: None,
        reason: None,
        action_result: None,
        action_error: None,
        reprobe: None,
        usage: TokenUsage::default(),
        outcome: RoundOutcome::NoAction,
        retries: 0,
        note: None,
        logs: Vec::new(),
        proposal: None,
    };
    let host = target.host.clone().unwrap_or_default();
    let finish = |mut round: Round, outcome| {
        round.outcome = outcome;
        round.finished_at_ms = io.now_ms();
        tracing::info!(outcome = ?round.outcome, action = ?round.action, "round finished");
        round
    };

    let diagnostics = match io.diagnostics(&host).await {
        Ok(d) => d,
        Err(e) => {
            round.diagnostics = Some(format!("ops-agent on {host} unreachable: {e}"));
            return finish(round, RoundOutcome::HostUnreachable);
        }
    };
    let summary = planner::summarize(&diagnostics);
    round.diagnostics = Some(summary.clone());
    round.host_metrics = Some(diagnostics.host.clone());
    if !diagnostics.docker_ok {
        return finish(round, RoundOutcome::HostUnreachable);
    }
    let agent_actions = match io.actions(&host).await {
        Ok(a) => a,
        Err(e) => {
            round.diagnostics = Some(format!("ops-agent on {host} unreachable: {e}"));
            return finish(round, RoundOutcome::HostUnreachable);
        }
    };
    let allowed =
        planner::allowed_actions(&agent_actions, target, incident, config.max_runs_per_action);
    // Sorted and deduplicated as they come (no std sort in the Worker for
    // one short list: bundle size).
    let mut services: Vec<String> = Vec::new();
    for c in &diagnostics.containers {
        if let Err(i) = services.binary_search(&c.service) {
            services.insert(i, c.service.clone());
        }
    }

    let mut plan = Plan::Fallback {
        why: "no model configured".into(),
    };
    if let Some(p) = &resume {
        round.planner = p.planner;
        plan = Plan::Action {
            name: p.action.clone(),
            reason: format!("{} (resumed after a restart)", p.reason),
        };
    } else if io.has_model() {
        round.planner = PlannerKind::Llm;
        let llm = llm_plan(
            io, config, target, incident, &host, &summary, &allowed, &services,
        )
        .await;
        round.tool_calls = llm.calls;
        round.usage = llm.usage;
        round.logs = llm.logs;
        plan = llm.plan;
    }
    let (name, reason) = match plan {
        Plan::Action { name, reason } => (name, reason),
        Plan::Escalate { reason } => {
            round.reason = Some(reason);
            return finish(round, RoundOutcome::Escalated);
        }
        Plan::Fallback { why } => {
            if round.planner == PlannerKind::Llm {
                tracing::warn!(%why, "the ladder takes over from the model");
                round.fallback = Some(why);
            }
            round.planner = PlannerKind::Ladder;
            match planner::ladder_choice(&allowed, target, incident) {
                Some(name) => (
                    name,
                    "ladder: the narrowest action not yet tried".to_string(),
                ),
                None => {
                    round.proposal = planner::approval_choice(&agent_actions, target, incident);
                    round.reason = Some(match &round.proposal {
                        Some(a) => format!(
                            "no allowed action left to try; {a} needs a human's approval: proposed"
                        ),
                        None => "no allowed action left to try".into(),
                    });
                    return finish(round, RoundOutcome::NoAction);
                }
            }
        }
    };
    round.action = Some(name.clone());
    round.reason = Some(reason.clone());
    let decision = PendingAction {
        round: n,
        action: name.clone(),
        reason,
        planner: round.planner,
    };
    if !on_decision(&decision) {
        round.action_error = Some("not sent: the incident was acknowledged, resolved or put in maintenance while the round planned".into());
        return finish(round, RoundOutcome::Cancelled);
    }

    let key = idempotency_key(&incident.id, n);
    let (result, reprobes) = act_and_reprobe(io, config, &host, &name, &key, &[target]).await;
    match result {
        Ok(result) => round.action_result = Some(result),
        Err(e) => round.action_error = Some(e),
    }
    let reprobe = reprobes.into_iter().next();
    let recovered = reprobe
        .as_ref()
        .is_some_and(|o| o.health == Health::Healthy);
    round.reprobe = reprobe;
    finish(
        round,
        if recovered {
            RoundOutcome::Recovered
        } else {
            RoundOutcome::NotRecovered
        },
    )
}

/// Sends one action under its idempotency key, lets it settle, and probes
/// `targets` again: the end of a round, and each step of a runbook.
async fn act_and_reprobe<I: RemediationIo>(
    io: &I,
    config: &Config,
    host: &str,
    action: &str,
    key: &str,
    targets: &[&Target],
) -> (Result<ActionResult, String>, Vec<Observation>) {
    let action_span = tracing::info_span!("action", %action, %host);
    let result = io
        .run_action(host, action, key)
        .instrument(action_span)
        .await;
    io.sleep_ms(config.settle_ms()).await;
    let mut reprobes = Vec::with_capacity(targets.len());
    for t in targets {
        reprobes.push(io.probe(t).await);
    }
    (result, reprobes)
}

/// Step `k` of a runbook's run: the action through the agent (replayed, not
/// run twice, when resent after a restart), then a re-probe of every
/// target on the runbook's host.
pub async fn run_step<I: RemediationIo>(
    io: &I,
    config: &Config,
    run: &RunbookRun,
    k: usize,
) -> Option<StepRecord> {
    let action = run.steps.get(k)?;
    let span =
        tracing::info_span!("runbook_step", run = %run.id, runbook = %run.runbook, step = k + 1);
    async {
        let started_at_ms = io.now_ms();
        let targets: Vec<&Target> = config
            .targets
            .iter()
            .filter(|t| t.host.as_deref() == Some(run.host.as_str()))
            .collect();
        let (result, reprobes) =
            act_and_reprobe(io, config, &run.host, action, &run.step_key(k), &targets).await;
        let (result, error) = match result {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(e)),
        };
        tracing::info!(
            ok = result.as_ref().is_some_and(|r| r.ok),
            "runbook step finished"
        );
        Some(StepRecord {
            action: action.clone(),
            started_at_ms,
            finished_at_ms: io.now_ms(),
            result,
            error,
            reprobes,
        })
    }
    .instrument(span)
    .await
}

#[allow(clippy::too_many_arguments)]
async fn llm_plan<I: RemediationIo>(
    io: &I,
    config: &Config,
    target: &Target,
    incident: &Incident,
    host: &str,
    summary: &str,
    allowed: &[ActionInfo],
    services: &[String],
) -> LlmPlan {
    let mut calls: Vec<ToolCallRecord> = Vec::new();
    let mut usage = TokenUsage::default();
    let mut logs = Vec::new();
    // The plan, or (as the error) why the ladder plans instead.
    let conversation = async {
        let nonce = || {
            io.fresh_nonce()
                .map_err(|e| format!("no randomness to frame untrusted data: {e}"))
        };
        let tools = planner::tools(allowed);
        let mut messages = planner::initial_messages(target, incident, summary, allowed, nonce()?);
        let mut refusals_in_a_row = 0;
        for _turn in 0..config.llm.max_turns {
            let request = planner::request(&config.llm, &messages, &tools);
            let response = io
                .chat(&request)
                .await
                .map_err(|e| format!("model error: {e}"))?;
            let checked = planner::check(&response, allowed, services);
            usage.add(checked.usage);
            calls.extend(checked.records.iter().cloned());
            let result = match &checked.reply {
                Reply::Action { name, reason } => {
                    return Ok(Plan::Action {
                        name: name.clone(),
                        reason: reason.clone(),
                    })
                }
                Reply::Escalate { reason } => {
                    return Ok(Plan::Escalate {
                        reason: reason.clone(),
                    })
                }
                Reply::Refused { why } => {
                    refusals_in_a_row += 1;
                    if refusals_in_a_row >= 2 {
                        return Err(format!(
                            "the model's reply was refused twice in a row (last: {why})"
                        ));
                    }
                    format!("Refused: {why}. Call exactly one of the offered tools.")
                }
                Reply::Diagnostics => {
                    refusals_in_a_row = 0;
                    let text = match io.diagnostics(host).await {
                        Ok(d) => planner::summarize(&d),
                        Err(e) => format!("diagnostics unavailable: {e}"),
                    };
                    planner::frame("the host's diagnostics", &text, nonce()?)
                }
                Reply::Logs { service } => {
                    refusals_in_a_row = 0;
                    let (what, text) = match io.logs(host, service, LOG_TAIL).await {
                        Ok(lines) => {
                            keep_log_lines(&mut logs, service, &lines);
                            (
                                format!("the last {} lines of {service}'s logs", lines.len()),
                                lines.join("\n"),
                            )
                        }
                        Err(e) => (format!("{service}'s logs"), format!("unavailable: {e}")),
                    };
                    planner::frame(&what, &text, nonce()?)
                }
            };
            checked.continue_with(&mut messages, &result);
        }
        Err(format!(
            "no decision within {} model turns",
            config.llm.max_turns
        ))
    };
    let plan = conversation
        .await
        .unwrap_or_else(|why| Plan::Fallback { why });
    LlmPlan {
        plan,
        calls,
        usage,
        logs,
    }
}

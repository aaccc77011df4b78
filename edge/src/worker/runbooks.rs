//! Runbooks with approval in the Worker: `POST /ops/runbook/{id}/execute`,
//! `POST /ops/approvals/{id}/approve|deny` and `GET /ops/approvals` answer
//! as the native API does (the same `core::runbook` calls, the same
//! answers); `routes` stores the change before the answer. The cron's
//! cycle steps through the approved runs (`run_steps`).
//!
//! Concurrent decisions: the decisions one isolate serves take turns from
//! their read to their write (`turn`). The Durable Object is one instance,
//! so there every decision takes its turn: exactly one wins. On KV (no
//! compare-and-swap) decisions served by different isolates at once cannot
//! be ordered, which README states (the Durable Object store is the strict
//! one). Tested with the writes held (`VIGIL_TEST_FAIL_WRITES`): without the
//! turns every concurrent decision won, on both stores.

use std::cell::Cell;
use std::sync::{Mutex, PoisonError};

use worker::{console_error, Response};

use super::cycle::RoundIo;
use super::io::{now_ms, WorkerIo};
use super::routes::{error, json, json_text};
use super::store::Store;
use crate::client::Transport;
use crate::config::Config;
use crate::core::budget::{step_cost, Carried};
use crate::core::runbook::{RunbookError, RunbookRun};
use crate::core::state::State;
use crate::ops_requests::approval_verb;
use crate::remediation::run_step;
use crate::views;

thread_local! {
    /// A decision of this isolate is between its read and its write.
    static DECIDING: Cell<bool> = const { Cell::new(false) };
}

/// This isolate's turn to decide an approval, held until dropped.
pub struct Turn;

impl Drop for Turn {
    fn drop(&mut self) {
        DECIDING.with(|d| d.set(false));
    }
}

/// Waits for this isolate's decisions before it, for a request to
/// `segments` that decides one (none for any other request).
pub async fn turn(segments: &[&str]) -> Option<Turn> {
    if !matches!(segments, ["ops", "approvals", _, _]) {
        return None;
    }
    while DECIDING.with(|d| d.replace(true)) {
        super::io::WorkerFetch.sleep_ms(5).await;
    }
    Some(Turn)
}

/// `GET /ops/approvals`: every run, newest first.
pub fn approvals(state: &State) -> worker::Result<Response> {
    json_text(200, views::runbook_runs(state))
}

/// `POST /ops/runbook/{id}/execute` (202: accepted, the run awaits its
/// approval or the next cron).
pub fn execute(
    config: &Config,
    state: &mut State,
    id: &str,
    by: &str,
    now: u64,
) -> worker::Result<Response> {
    answer(state.execute_runbook(config, id, by, now), 202)
}

/// `POST /ops/approvals/{id}/{verb}`.
pub fn decide(
    state: &mut State,
    id: &str,
    verb: &str,
    by: &str,
    now: u64,
) -> worker::Result<Response> {
    match approval_verb(verb) {
        Some(approve) => answer(state.decide_approval(id, approve, by, now), 200),
        None => error(404, "not_found", "no such route"),
    }
}

fn answer(done: Result<RunbookRun, RunbookError>, ok: u16) -> worker::Result<Response> {
    match done {
        Ok(run) => json(
            ok,
            &views::RunAnswer {
                ok: true,
                run: &run,
            },
        ),
        Err(e) => {
            let (status, code, message) = e.answer();
            error(status, code, message)
        }
    }
}

/// Steps through the approved runs, one step at a time through the agent
/// with a re-probe after each (`remediation::run_step`), as far as the
/// invocation's budget allows with `keep` left over: a step that does not
/// fit waits for the next invocation (counted in `carried.steps`). The run
/// is stored as started before its first step is sent, and each step's
/// record before the next starts; a write that fails ends the stepping
/// (the record stays in this isolate until a save works). Returns the
/// steps run.
pub async fn run_steps(
    io: &WorkerIo,
    store: &Store<'_>,
    state: &mut State,
    keep: u32,
    carried: &mut Carried,
) -> usize {
    let config: &Config = &io.config;
    let mut ran = 0;
    for run in state.runs_due() {
        while let Some((k, _)) = state.run(&run.id).and_then(|r| r.next_step()) {
            if !store.budget().take(0, step_cost(config, &run.host) + keep) {
                carried.steps += 1;
                break;
            }
            state.start_run(&run.id);
            if let Err(e) = store.save(state).await {
                console_error!(
                    "runbook {}: not started, the run could not be stored: {e}",
                    run.id
                );
                return ran;
            }
            let Some(current) = state.run(&run.id).cloned() else {
                break;
            };
            let shared = Mutex::new(std::mem::take(state));
            let step = run_step(&RoundIo::for_steps(io, store, &shared), config, &current, k).await;
            *state = shared.into_inner().unwrap_or_else(PoisonError::into_inner);
            let Some(step) = step else {
                break;
            };
            state.record_step(config, &run.id, step, now_ms());
            ran += 1;
            if let Err(e) = store.save(state).await {
                console_error!(
                    "runbook {}: step {} not stored (kept in this isolate): {e}",
                    run.id,
                    k + 1
                );
                return ran;
            }
        }
    }
    ran
}

//! One cron cycle: probes and confirm probes, the debounce, periodic
//! checks, host metrics, remediation rounds, outbox delivery, saves.

use std::sync::Mutex;

use futures_util::future::join_all;
use serde::Serialize;
use worker::{console_error, console_log, AnalyticsEngineDataset, Env, Storage};

use super::analytics::{host_point, probe_point, round_point};
use super::io::{now_ms, worker_io, WorkerIo};
use super::store::{Store, HISTORY_KEY};
use super::{load_config, lookup, Fallible, AE_BINDING};
use crate::core::alert::Delivery;
use crate::core::history::{History, HostSample};
use crate::core::incident::PendingAction;
use crate::core::state::State;
use crate::remediation::{run_round, RemediationIo, RoundInput};
use crate::shell::Secrets;

/// A round's lease: longer than any round lasts inside one invocation.
const LEASE_MS: u64 = 5 * 60 * 1000;

#[derive(Serialize)]
pub struct CycleReport {
    probes: usize,
    rounds: usize,
    delivered: usize,
    host_polls: usize,
    kv_reads: u32,
    /// Writes of the state document.
    kv_writes: u32,
    /// Writes of the history document (every `history_flush_s`).
    history_writes: u32,
}

pub async fn cycle(env: &Env, durable: Option<&Storage>) -> Fallible<CycleReport> {
    let config = load_config(env)?;
    let io = worker_io(&config, Secrets::from_env(&config, |k| lookup(env, k)));
    let ae = env.analytics_engine(AE_BINDING).ok();
    let (mut store, mut state) = Store::open(env, durable).await?;
    let mut history = store.history().await?;
    history.retain_targets(|id| config.target(id).is_some());
    let start = now_ms();
    let owner = format!("worker-{start}");
    state.reconcile(&config, start, false);
    let mut report = CycleReport {
        probes: 0,
        rounds: 0,
        delivered: 0,
        host_polls: 0,
        kv_reads: 0,
        kv_writes: 0,
        history_writes: 0,
    };

    // The cron is the schedule: every invocation probes every target, then
    // the confirm probes the debounce asks for, inside the same invocation.
    let mut due: Vec<usize> = (0..config.targets.len()).collect();
    while !due.is_empty() {
        let observations = join_all(due.iter().map(|i| io.probe(&config.targets[*i]))).await;
        report.probes += observations.len();
        for o in &observations {
            state.observe_and_record(&config, &mut history, o, now_ms());
            if let Some(ae) = &ae {
                probe_point(ae, o);
            }
        }
        let next = state.targets.values().filter_map(|t| t.confirm_at_ms).min();
        match next {
            Some(at) if at < start + config.interval_ms() => {
                io.sleep_ms(at.saturating_sub(now_ms())).await;
                let now = now_ms();
                due = (0..config.targets.len())
                    .filter(|i| {
                        state
                            .targets
                            .get(&config.targets[*i].id)
                            .and_then(|t| t.confirm_at_ms)
                            .is_some_and(|c| c <= now)
                    })
                    .collect();
            }
            _ => due.clear(),
        }
    }
    let oncall = io.secrets.oncall_user.clone();
    state.tick(&config, &history, oncall.as_deref(), now_ms());
    let polls = history.take_host_polls(
        config.hosts.iter().map(|h| h.id.as_str()),
        now_ms(),
        config.host_metrics_every_ms(),
    );
    for host in polls {
        report.host_polls += 1;
        match io.diagnostics(&host).await {
            Ok(d) => record_host(&mut history, ae.as_ref(), &host, &d.host),
            Err(e) => console_log!("host metrics of {host} unavailable: {e}"),
        }
    }

    for id in state.remediation_due(&config, now_ms()) {
        let Some((n, resume)) = state.take_lease(&config, &id, &owner, now_ms(), LEASE_MS) else {
            continue;
        };
        let (Some(incident), Some(target)) = (
            state.incident(&id).cloned(),
            state
                .incident(&id)
                .and_then(|i| config.target(&i.target))
                .cloned(),
        ) else {
            continue;
        };
        // The lease is stored before the round acts.
        store.save(&state).await?;
        let shared = Mutex::new(std::mem::take(&mut state));
        let note = |p: &PendingAction| {
            shared
                .lock()
                .map(|mut s| s.note_action(&id, &owner, p.clone(), now_ms()))
                .unwrap_or(false)
        };
        let input = RoundInput {
            config: &config,
            target: &target,
            incident: &incident,
            n,
            resume,
            on_decision: &note,
        };
        let round = run_round(&io, input).await;
        state = shared
            .into_inner()
            .map_err(|_| "state lock poisoned".to_string())?;
        if let Some(ae) = &ae {
            round_point(ae, &target.id, &round);
        }
        if let (Some(host), Some(m)) = (&target.host, &round.host_metrics) {
            record_host(&mut history, ae.as_ref(), host, m);
        }
        state.complete_round(&config, &id, &owner, round, oncall.as_deref(), now_ms());
        report.rounds += 1;
    }

    report.delivered = deliver(&io, &mut state).await;
    store.save(&state).await?;
    if history.flush_due(now_ms(), config.history_flush_ms()) {
        match store.save_doc(HISTORY_KEY, &history).await {
            Ok(()) => history.mark_stored(),
            Err(e) => console_error!("storing the history failed (kept in memory): {e}"),
        }
    }
    Store::keep_history(history);
    report.kv_reads = store.reads;
    report.kv_writes = store.writes;
    report.history_writes = store.doc_writes;
    Ok(report)
}

fn record_host(
    history: &mut History,
    ae: Option<&AnalyticsEngineDataset>,
    host: &str,
    metrics: &vigil_wire::HostMetrics,
) {
    let at = now_ms();
    history.record_host(host, metrics, at);
    if let Some(ae) = ae {
        host_point(ae, host, &HostSample::new(metrics, at));
    }
}

/// Delivers the outbox oldest first, stopping at the first failure.
async fn deliver(io: &WorkerIo, state: &mut State) -> usize {
    let mut sent = 0;
    while let Some(entry) = state.outbox.due(now_ms()).cloned() {
        let outcome = io.deliver(&entry.message).await;
        let stop = !matches!(outcome, Delivery::Sent | Delivery::Rejected { .. });
        if matches!(outcome, Delivery::Sent) {
            sent += 1;
        }
        state.outbox.record(entry.id, outcome, now_ms());
        if stop {
            break;
        }
    }
    sent
}

//! One cron cycle: probes and confirm probes, the debounce, periodic
//! checks, host metrics, remediation rounds, outbox delivery, saves; each
//! call only when it fits the invocation's budget (`core::budget`), the
//! rest carried to the next invocation.

use std::cell::{Cell, RefCell};
use std::sync::Mutex;

use serde::Serialize;
use worker::{console_error, console_log, AnalyticsEngineDataset, Env, Storage};

use super::analytics::write;
use super::io::{now_ms, worker_io, WorkerIo};
use super::runbooks;
use super::shards::{region_calls, Prober, RegionCall};
use super::store::Store;
use super::{load_config, lookup, Fallible, AE_BINDING};
use crate::analytics;
use crate::config::{Config, Target};
use crate::core::alert::Delivery;
use crate::core::budget::{self, Budget, Carried, DailyWrites, ALERTS_KEPT};
use crate::core::deadman::{self, Ping};
use crate::core::history::{History, HostSample};
use crate::core::incident::PendingAction;
use crate::core::planner::Completion;
use crate::core::probe::Observation;
use crate::core::state::State;
use crate::remediation::{run_round, RemediationIo, RoundInput};
use crate::shell::Secrets;

/// Test only: `VIGIL_TEST_DROP_AFTER_DECISION = "1"` ends the cycle right
/// after a fresh (not resumed) round's decision is stored and its action
/// sent, before the round is recorded, as an isolate killed there would
/// (tests/tests/worker.rs sets it; never set in deploy/wrangler.toml).
const DROP_VAR: &str = "VIGIL_TEST_DROP_AFTER_DECISION";
/// The final saves of the state and the history, kept for whatever else
/// happens.
const SAVES_KEPT: u32 = 2;

/// What a cycle keeps for its end: the saves, and `[deadman]`'s ping when
/// there is one (counted in `budget::overhead`).
fn kept(config: &Config) -> u32 {
    SAVES_KEPT + u32::from(config.deadman.url_env.is_some())
}

#[derive(Clone, Serialize)]
pub struct CycleReport {
    probes: usize,
    rounds: usize,
    /// Runbook steps run.
    steps: usize,
    delivered: usize,
    host_polls: usize,
    kv_reads: u32,
    /// Writes of the state document.
    kv_writes: u32,
    /// Writes of the history document (every `history_flush_s`).
    history_writes: u32,
    plan: &'static str,
    /// Subrequests spent (Vigil's own count) and the budget.
    subrequests: u32,
    subrequest_budget: u32,
    storage_writes: u32,
    /// Rows written (keys put or deleted: what a SQLite-backed Durable
    /// Object is billed and capped by), and by this isolate today (UTC).
    rows_written: u32,
    rows_written_today: u32,
    /// The largest stored value this cycle read or wrote.
    largest_value_bytes: usize,
    /// The largest shard invocation's subrequests (0: no shards).
    shard_subrequests_max: u32,
    /// Work that did not fit and waits for the next invocation.
    carried: Carried,
}

thread_local! {
    /// The last cycle's report, for `/ops/summary`.
    static LAST: RefCell<Option<CycleReport>> = const { RefCell::new(None) };
    /// Rows this isolate's cycles wrote today.
    static ROWS_TODAY: RefCell<DailyWrites> = RefCell::new(DailyWrites::default());
}

/// The last cycle this isolate ran, if any.
pub fn last_report() -> Option<CycleReport> {
    LAST.with(|l| l.borrow().clone())
}

/// A wave of probes: targets probed by this edge (indices into the
/// configuration), and region objects' calls.
#[derive(Default)]
pub struct Wave {
    pub here: Vec<usize>,
    pub regions: Vec<RegionCall>,
}

/// Takes the budget for as many of the wave's probes as fit, keeping room
/// for the final saves and alerts (one subrequest a probe, a shard or a
/// region object's call); the rest is carried.
fn fit(store: &Store<'_>, prober: &Prober, wave: &mut Wave, carried: &mut u32) {
    let keep = SAVES_KEPT + ALERTS_KEPT;
    let calls = store.budget().take_up_to(wave.regions.len() as u32, keep) as usize;
    for (_, ids) in wave.regions.drain(calls..) {
        *carried += ids.len() as u32;
    }
    let due = &mut wave.here;
    let calls = store
        .budget()
        .take_up_to(prober.cost(due.len()) as u32, keep) as usize;
    let n = prober.covered(due.len(), calls);
    *carried += (due.len() - n) as u32;
    due.truncate(n);
}

/// Probes the wave, then the confirm probes the debounce asks for (this
/// edge's, and the region objects' views still confirming) until
/// `until_ms`, each wave within the budget; returns the probes made and
/// the probes carried.
pub async fn probe_waves(
    (prober, store): (&Prober<'_>, &Store<'_>),
    state: &mut State,
    history: &mut History,
    mut wave: Wave,
    until_ms: u64,
) -> (usize, u32) {
    let config = prober.config();
    let ae = prober.analytics();
    let (mut probes, mut carried) = (0, 0);
    fit(store, prober, &mut wave, &mut carried);
    while !(wave.here.is_empty() && wave.regions.is_empty()) {
        let here = wave.here.iter().map(|i| &config.targets[*i]).collect();
        // At once: one after the other would hold this edge's probes for a
        // region's slowest (a 0.4 KB gzip saving measured, not taken).
        let (observations, answers) =
            futures_util::future::join(prober.probe(here), prober.ask_regions(wave.regions)).await;
        probes += observations.len();
        for o in &observations {
            state.observe_and_record(config, history, o, now_ms());
            if let Some(ae) = &ae {
                write(ae, analytics::probe(o));
            }
        }
        for (region, a) in answers {
            probes += a.observations.len();
            state.take_observations(config, &region, a.sent_at_ms, &a.observations, now_ms());
        }
        // This edge's confirm probes, and the region objects' views still
        // confirming (but those that failed this invocation).
        let next = state
            .targets
            .values()
            .filter_map(|t| t.confirm_at_ms)
            .chain(
                state
                    .view_confirms(config)
                    .into_iter()
                    .filter(|(r, ..)| !prober.failed(r))
                    .map(|(.., at)| at),
            )
            .min();
        wave = Wave::default();
        if let Some(at) = next.filter(|at| *at < until_ms) {
            prober.sleep_until(at).await;
            let now = now_ms();
            wave.here = (0..config.targets.len())
                .filter(|i| {
                    state
                        .targets
                        .get(&config.targets[*i].id)
                        .and_then(|t| t.confirm_at_ms)
                        .is_some_and(|c| c <= now)
                })
                .collect();
            let asks: Vec<(&str, &str)> = state
                .view_confirms(config)
                .into_iter()
                .filter(|(r, _, at)| *at <= now && !prober.failed(r))
                .map(|(r, id, _)| (r, id))
                .collect();
            wave.regions = region_calls(config, &asks);
            fit(store, prober, &mut wave, &mut carried);
        }
    }
    (probes, carried)
}

pub async fn cycle(env: &Env, durable: Option<&Storage>) -> Fallible<CycleReport> {
    let file = load_config(env)?;
    let (store, mut state) = Store::open(env, durable, Budget::new(file.plan())).await?;
    // The file's targets and the API's (`core::control`).
    let config = super::control::effective(env, &file, &state.api_targets)?;
    let io = worker_io(&config, Secrets::from_env(&config, |k| lookup(env, k)));
    let ae = env.analytics_engine(AE_BINDING).ok();
    let ack_links = io.secrets().ack_links(&config)?;
    // Pages carry ack links when `[ack_link]` is set (its secret checked).
    state.ack_links = ack_links;
    let mut history = store.history().await?;
    history.retain_targets(|id| config.target(id).is_some());
    let start = now_ms();
    let owner = format!("worker-{start}");
    state.reconcile(&config, start, false);
    let mut carried = Carried::default();
    let mut report = (0, 0, 0, 0, 0);
    let keep = kept(&config) + ALERTS_KEPT;

    // The cron is the schedule: each invocation probes the targets in its
    // slot (all of them when interval_s is a minute), then the confirm
    // probes the debounce asks for, inside the same invocation.
    let shards = durable.map(|_| budget::shard_size(config.plan()));
    let prober = Prober::new(&io, env, shards, &state.api_targets)?;
    let slots = budget::slots(&config);
    let due: Vec<usize> = (0..config.targets.len())
        .filter(|i| budget::in_slot(*i, slots, start))
        .collect();
    // Targets with `regions`: from each region's object, and from here
    // only when this edge's `region` is one of them.
    let asks: Vec<(&str, &str)> = due
        .iter()
        .map(|i| &config.targets[*i])
        .flat_map(|t| t.regions.iter().map(move |r| (r.as_str(), t.id.as_str())))
        .filter(|(r, _)| *r != config.region)
        .collect();
    let wave = Wave {
        regions: region_calls(&config, &asks),
        here: due
            .into_iter()
            .filter(|i| config.probes_here(&config.targets[*i]))
            .collect(),
    };
    let until = start + config.interval_ms();
    let waves = probe_waves((&prober, &store), &mut state, &mut history, wave, until);
    let (probes, unprobed) = waves.await;
    report.0 = probes;
    carried.probes += unprobed;
    let oncall = io.secrets.oncall_user.clone();
    state.tick(&config, &history, oncall.as_deref(), now_ms());
    let hosts = config.hosts.len() as u32;
    if store.budget().take(0, hosts + keep) {
        let polls = history.take_host_polls(
            config.hosts.iter().map(|h| h.id.as_str()),
            now_ms(),
            config.host_metrics_every_ms(),
        );
        for host in polls {
            report.3 += 1;
            store.budget().take(1, 0);
            match io.diagnostics(&host).await {
                Ok(d) => record_host(&mut history, ae.as_ref(), &host, &d.host),
                Err(e) => console_log!("host metrics of {host} unavailable: {e}"),
            }
        }
    } else {
        carried.host_polls += hosts;
    }

    let drop_after_decision = lookup(env, DROP_VAR).as_deref() == Some("1");
    for id in state.remediation_due(&config, now_ms()) {
        // A round only starts when all its calls fit.
        if !store.budget().take(0, budget::round_cost(&config) + keep) {
            carried.rounds += 1;
            continue;
        }
        let before = state.clone();
        let Some((n, resume)) =
            state.take_lease(&config, &id, &owner, now_ms(), config.worker_lease_ms())
        else {
            continue;
        };
        let (Some(incident), Some(target)) = (
            state.incident(&id).cloned(),
            state.incident(&id).and_then(|i| config.target(&i.target)),
        ) else {
            continue;
        };
        // The lease is stored before the round acts; a store that cannot
        // take it acts on nothing this cycle.
        if let Err(e) = store.save_change(&mut state, before).await {
            console_error!("no round: the lease could not be stored: {e}");
            break;
        }
        let shared = Mutex::new(std::mem::take(&mut state));
        let note = |p: &PendingAction| {
            shared
                .lock()
                .map(|mut s| s.note_action(&id, &owner, p.clone(), now_ms()))
                .unwrap_or(false)
        };
        let round_io = RoundIo {
            io: &io,
            store: &store,
            state: &shared,
            drop_after_decision: drop_after_decision && resume.is_none(),
            dropped: Cell::new(false),
        };
        let input = RoundInput {
            config: &config,
            target,
            incident: &incident,
            n,
            resume,
            on_decision: &note,
        };
        let round = run_round(&round_io, input).await;
        if round_io.dropped.get() {
            return Err(format!(
                "cycle dropped after round {n} of {id} stored its decision ({DROP_VAR})"
            ));
        }
        state = shared
            .into_inner()
            .map_err(|_| "state lock poisoned".to_string())?;
        if let Some(ae) = &ae {
            write(ae, analytics::round(&target.id, &round));
        }
        if let (Some(host), Some(m)) = (&target.host, &round.host_metrics) {
            record_host(&mut history, ae.as_ref(), host, m);
        }
        state.complete_round(&config, &id, &owner, round, oncall.as_deref(), now_ms());
        report.1 += 1;
    }

    report.4 = runbooks::run_steps(&io, &store, &mut state, keep, &mut carried).await;
    carried.probes += prober.lost.get();
    report.2 = deliver(&io, &store, &mut state, &mut carried).await;
    let saved = store.save(&mut state).await;
    ping_deadman(&io, &store, &state, saved.as_ref().err()).await;
    let now = now_ms();
    if history.flush_due(now, config.history_flush_ms()) {
        if let Err(e) = store.save_history(&mut history, now).await {
            console_error!("storing the history failed (kept in memory): {e}");
        }
    }
    Store::keep_history(history);
    saved.map_err(|e| format!("the state could not be stored (kept in this isolate): {e}"))?;
    let (spent, writes, doc_writes, largest, rows) = store.spent();
    let rows_today = ROWS_TODAY.with(|d| d.borrow_mut().add(rows, now));
    let report = CycleReport {
        probes: report.0,
        rounds: report.1,
        steps: report.4,
        delivered: report.2,
        host_polls: report.3,
        kv_reads: spent.storage_reads,
        kv_writes: writes,
        history_writes: doc_writes,
        plan: config.plan().as_str(),
        subrequests: spent.subrequests,
        subrequest_budget: spent.limit,
        storage_writes: spent.storage_writes,
        rows_written: rows,
        rows_written_today: rows_today,
        largest_value_bytes: largest,
        shard_subrequests_max: prober.shard_max.get(),
        carried,
    };
    LAST.with(|l| *l.borrow_mut() = Some(report.clone()));
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
        write(ae, analytics::host(host, &HostSample::new(metrics, at)));
    }
}

/// `[deadman]`'s ping after the state is saved (`core::deadman`): success,
/// or `/fail` with the reason. No `/start` ping: the cron is the schedule,
/// and a subrequest on the free plan is worth more than the run time.
async fn ping_deadman(io: &WorkerIo, store: &Store<'_>, state: &State, unsaved: Option<&String>) {
    // The history's save is still to come; the ping's subrequest was kept.
    if io.secrets().deadman_url.is_none() || !store.budget().take(1, SAVES_KEPT - 1) {
        return;
    }
    let ping = match unsaved {
        Some(e) => Ping::Fail(format!("the state cannot be saved: {e}")),
        None => deadman::ping(state, now_ms(), io.config.deadman.fail_after_ms()),
    };
    if let Err(e) = io.ping_deadman(&ping).await {
        console_error!("the deadman ping failed: {e}");
    }
}

/// Delivers the outbox oldest first, stopping at the first failure or when
/// the budget has no room left but the final saves (the rest is carried).
pub async fn deliver(
    io: &WorkerIo,
    store: &Store<'_>,
    state: &mut State,
    carried: &mut Carried,
) -> usize {
    let mut sent = 0;
    let per_minute = io.config.discord.max_per_minute as usize;
    while let Some(entry) = state.outbox.due(now_ms(), per_minute) {
        if !store.budget().take(1, kept(&io.config)) {
            carried.alerts += state.outbox.entries.len() as u32;
            break;
        }
        // To its channel: Discord, PagerDuty, Slack or a signed webhook.
        let outcome = io.deliver_entry(&entry).await;
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

/// A round's I/O in the Worker: every call counted in the invocation's
/// budget, and the state (with the decision the round just noted) saved
/// before the action is sent, so an isolate killed in between resumes the
/// same action, with the same Idempotency-Key, next time.
pub(super) struct RoundIo<'a, 's> {
    io: &'a WorkerIo,
    store: &'a Store<'s>,
    state: &'a Mutex<State>,
    drop_after_decision: bool,
    dropped: Cell<bool>,
}

impl<'a, 's> RoundIo<'a, 's> {
    /// The I/O of a runbook's steps (`runbooks::run_steps`): counted like a
    /// round's, the run stored before its action is sent.
    pub(super) fn for_steps(
        io: &'a WorkerIo,
        store: &'a Store<'s>,
        state: &'a Mutex<State>,
    ) -> Self {
        RoundIo {
            io,
            store,
            state,
            drop_after_decision: false,
            dropped: Cell::new(false),
        }
    }

    /// Takes one subrequest, or refuses the call: the round started only
    /// when its calls fit (`budget::round_cost`), so this is a backstop.
    fn count(&self) -> Result<(), String> {
        if self.store.budget().take(1, kept(&self.io.config)) {
            Ok(())
        } else {
            Err("not made: the invocation's subrequest budget is spent".into())
        }
    }
}

impl RemediationIo for RoundIo<'_, '_> {
    fn now_ms(&self) -> u64 {
        self.io.now_ms()
    }
    fn fresh_nonce(&self) -> Result<u128, String> {
        self.io.fresh_nonce()
    }
    async fn sleep_ms(&self, ms: u64) {
        self.io.sleep_ms(ms).await
    }
    async fn diagnostics(&self, host: &str) -> Result<vigil_wire::Diagnostics, String> {
        self.count()?;
        self.io.diagnostics(host).await
    }
    async fn actions(&self, host: &str) -> Result<Vec<vigil_wire::ActionInfo>, String> {
        self.count()?;
        self.io.actions(host).await
    }
    async fn logs(&self, host: &str, service: &str, tail: u32) -> Result<Vec<String>, String> {
        self.count()?;
        self.io.logs(host, service, tail).await
    }
    async fn run_action(
        &self,
        host: &str,
        action: &str,
        idempotency_key: &str,
    ) -> Result<vigil_wire::ActionResult, String> {
        let mut decided = self
            .state
            .lock()
            .map(|s| s.clone())
            .map_err(|_| "state lock poisoned".to_string())?;
        let saved = self.store.save(&mut decided).await;
        // The store's health as the save left it, with the round's state.
        if let Ok(mut s) = self.state.lock() {
            *s = decided;
        }
        if let Err(e) = saved {
            return Err(format!("not sent: the decision could not be stored: {e}"));
        }
        self.count()?;
        let sent = self.io.run_action(host, action, idempotency_key).await;
        self.dropped.set(self.drop_after_decision);
        sent
    }
    fn has_model(&self) -> bool {
        self.io.has_model()
    }
    async fn chat(&self, request: &serde_json::Value) -> Result<Completion, String> {
        self.count()?;
        self.io.chat(request).await
    }
    async fn probe(&self, target: &Target) -> Observation {
        // The re-probe: kept for by the round's cost, counted whatever.
        self.store.budget().take(1, 0);
        self.io.probe(target).await
    }
}

//! The native runner: wakes when a probe is due, feeds observations to the
//! core, starts remediation rounds beside the cycle (never inside it), and
//! delivers the outbox in a task of its own (neither the cycle nor a request
//! waits on Discord). State lives in memory behind a mutex and is saved
//! after every change; a change a caller is told about is undone when it
//! cannot be saved.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::io::{now_ms, NativeIo};
use super::store::{FileStore, StoreError, CRASHES_DOC, HISTORY_DOC};
use crate::config::Config;
use crate::core::alert::Delivery;
use crate::core::control::{self, TargetChange, TargetChangeError};
use crate::core::crash::{self, Crash, CrashError, CrashLog, CrashReport};
use crate::core::deadman;
use crate::core::history::History;
use crate::core::probe::Observation;
use crate::core::signal::{HostSignal, SignalOutcome};
use crate::core::state::{Event, State};
use crate::core::store_health::StoreView;
use crate::core::vantage::{Batch, BatchError, BatchOutcome};
use crate::remediation::{run_round, run_step, RemediationIo, RoundInput};

/// Recent observations kept per target, in memory.
const RECENT_KEPT: usize = 120;
/// How long a round may hold its incident's lease before another runner
/// may assume it died.
const LEASE_MS: u64 = 15 * 60 * 1000;

pub struct Runner {
    /// The configuration as read from the file.
    pub file_config: Arc<Config>,
    /// The effective configuration: the file's with the API targets
    /// (`core::control`); replaced, under the state's lock, when they change.
    config: Mutex<Arc<Config>>,
    pub io: Arc<NativeIo>,
    state: Mutex<State>,
    /// Locked before `state` where both are needed.
    history: Mutex<History>,
    crashes: Mutex<CrashLog>,
    store: Mutex<FileStore>,
    recent: Mutex<HashMap<String, VecDeque<Observation>>>,
    /// One delivery pass at a time, so no message is sent twice.
    delivering: tokio::sync::Mutex<()>,
    /// Wakes the delivery task.
    wake_delivery: tokio::sync::Notify,
    /// Cuts the cycle's sleep short (a host's signal made a probe due).
    wake_cycle: tokio::sync::Notify,
    owner: String,
    rounds: Mutex<Vec<JoinHandle<()>>>,
    /// Runbook runs with a task stepping through them.
    running: Mutex<std::collections::HashSet<String>>,
    pub metrics: super::metrics::Metrics,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Runner {
    /// Opens the store (refusing a state dir another runner holds) and
    /// brings the stored state in line with the configuration.
    pub fn open(file_config: Arc<Config>, io: Arc<NativeIo>) -> Result<Arc<Self>, StoreError> {
        let mut store = FileStore::open(std::path::Path::new(&file_config.state_dir))?;
        let mut state = store.load()?;
        let (config, left_out) =
            control::effective(Config::clone(&file_config), &state.api_targets);
        for (id, why) in &left_out {
            tracing::warn!(target_id = %id, %why, "API target not watched");
        }
        let config = Arc::new(config);
        // The lock is ours: leases in the file belong to a runner that is gone.
        state.reconcile(&config, now_ms(), true);
        // Checked at start (main): an error here means no links.
        state.ack_links = io.secrets().ack_links(&config).ok().flatten();
        store.save(&state)?;
        let mut history: History = store.load_doc(HISTORY_DOC)?;
        history.retain_targets(|id| config.target(id).is_some());
        let crashes = store.load_doc(CRASHES_DOC)?;
        Ok(Arc::new(Runner {
            owner: format!("native-{}-{}", std::process::id(), now_ms()),
            file_config,
            config: Mutex::new(config),
            io,
            state: Mutex::new(state),
            history: Mutex::new(history),
            crashes: Mutex::new(crashes),
            store: Mutex::new(store),
            recent: Mutex::new(HashMap::new()),
            delivering: tokio::sync::Mutex::new(()),
            wake_delivery: tokio::sync::Notify::new(),
            wake_cycle: tokio::sync::Notify::new(),
            rounds: Mutex::new(Vec::new()),
            running: Mutex::new(Default::default()),
            metrics: Default::default(),
        }))
    }

    /// The effective configuration now (a snapshot: a target change made
    /// meanwhile is seen by the next call).
    pub fn config(&self) -> Arc<Config> {
        lock(&self.config).clone()
    }

    /// Adds, replaces or removes an API target (`change` is one of
    /// `State::put_api_target`, `State::remove_api_target`): stored before
    /// the effective configuration changes, or refused and undone.
    pub fn change_targets(
        &self,
        change: impl FnOnce(
            &mut State,
            (&Config, [Config; 2]),
        ) -> Result<(Config, TargetChange), TargetChangeError>,
    ) -> Result<Result<TargetChange, TargetChangeError>, StoreError> {
        let file = self.file_config.clone();
        let copies = [Config::clone(&file), Config::clone(&file)];
        let done = self.try_update(|s| match change(s, (&file, copies)) {
            Ok((config, change)) => {
                // Under the state's lock: the next cycle sees both at once.
                *lock(&self.config) = Arc::new(config);
                Ok(Ok(change))
            }
            Err(e) => Ok(Err(e)),
        });
        if done.is_err() {
            // The state was put back: so is the configuration.
            let api = self.read(|s| s.api_targets.clone());
            *lock(&self.config) = Arc::new(control::effective(Config::clone(&file), &api).0);
        }
        if matches!(done, Ok(Ok(_))) {
            self.wake_cycle.notify_one();
            self.deliver_soon();
        }
        done
    }

    /// `GET /ops/targets`.
    pub fn targets_listing(&self) -> serde_json::Value {
        let api = self.read(|s| s.api_targets.clone());
        let (effective, left_out) = control::effective(Config::clone(&self.file_config), &api);
        control::listing(&self.file_config, &effective, &api, &left_out)
    }

    /// Reads the state under the lock.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&lock(&self.state))
    }

    /// Changes the state under the lock and saves it. The monitor's own
    /// changes stay in memory when the save fails (the failure is alerted
    /// and they are saved with the next change that can be).
    pub fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut state = lock(&self.state);
        let out = f(&mut state);
        if let Err(e) = self.save(&mut state) {
            tracing::error!(error = %e, "saving the state failed; it stays in memory and is saved with the next change");
            state.store_failed(&e.to_string(), now_ms());
        }
        out
    }

    /// Changes the state for a caller who will be told it is done: when the
    /// change (or what `f` stores itself) cannot be saved, it is undone and
    /// the error returned, so nothing is claimed that a crash would lose.
    pub fn try_update<R>(
        &self,
        f: impl FnOnce(&mut State) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut state = lock(&self.state);
        let before = state.clone();
        let saved = f(&mut state).and_then(|out| {
            if *state != before {
                self.save(&mut state)?;
            }
            Ok(out)
        });
        if let Err(e) = &saved {
            tracing::error!(error = %e, "saving the state failed; the change is refused");
            *state = before;
            state.store_failed(&e.to_string(), now_ms());
        }
        saved
    }

    /// Saves the state; a save that works after failures ends the episode
    /// (its alert is saved too, best effort).
    fn save(&self, state: &mut State) -> Result<(), StoreError> {
        let mut store = lock(&self.store);
        store.save(state)?;
        if state.store_saved(now_ms()) {
            tracing::info!("the state store works again");
            let _ = store.save(state);
            self.wake_delivery.notify_one();
        }
        Ok(())
    }

    pub fn store_health(&self) -> StoreView {
        self.read(|s| s.store.view())
    }

    /// Reads the history and the state together.
    pub fn read_with_history<R>(&self, f: impl FnOnce(&State, &History) -> R) -> R {
        let history = lock(&self.history);
        f(&lock(&self.state), &history)
    }

    pub fn read_crashes<R>(&self, f: impl FnOnce(&CrashLog) -> R) -> R {
        f(&lock(&self.crashes))
    }

    /// Takes a crash report: incident and alert in the state, the report in
    /// the crash log; both saved before this returns, or neither kept. A
    /// report the configuration refuses (an app not allowed) changes nothing.
    pub fn take_crash(
        &self,
        report: CrashReport,
        truncated: bool,
    ) -> Result<Result<Crash, CrashError>, StoreError> {
        let mut log = lock(&self.crashes);
        let before = log.clone();
        let config = &*self.config();
        let taken = self.try_update(|s| {
            let crash = match crash::intake(s, &mut log, report, truncated, config, now_ms()) {
                Ok(c) => c.clone(),
                Err(refused) => return Ok(Err(refused)),
            };
            lock(&self.store).save_doc(CRASHES_DOC, &*log)?;
            Ok(Ok(crash))
        });
        if taken.is_err() {
            *log = before;
        }
        self.wake_delivery.notify_one();
        taken
    }

    /// A host's signal: the targets it concerns are due at once, and the
    /// cycle wakes for them. Nothing is stored (the schedule is not).
    pub fn signal(&self, sig: &HostSignal) -> SignalOutcome {
        let config = self.config();
        let outcome = lock(&self.state).signal(&config, sig, now_ms());
        if !outcome.probing.is_empty() {
            self.wake_cycle.notify_one();
        }
        outcome
    }

    /// A remote prober's batch (`core::vantage`): taken and saved before
    /// the answer, or refused with nothing changed.
    pub fn take_batch(
        self: &Arc<Self>,
        batch: &Batch,
    ) -> Result<Result<BatchOutcome, BatchError>, StoreError> {
        let taken = self.try_update(|s| {
            Ok(s.take_batch(&self.config(), batch, now_ms())
                .map(|(outcome, events)| {
                    log_events(&events);
                    outcome
                }))
        });
        self.start_rounds();
        self.deliver_soon();
        taken
    }

    /// Stores the history when its flush is due (or now, with `force`).
    fn flush_history(&self, force: bool) {
        let mut history = lock(&self.history);
        if !(force || history.flush_due(now_ms(), self.config().history_flush_ms())) {
            return;
        }
        match lock(&self.store).save_doc(HISTORY_DOC, &*history) {
            Ok(_) => history.mark_stored(now_ms()),
            Err(e) => {
                tracing::error!(error = %e, "saving the history failed; retried at the next flush")
            }
        }
    }

    /// Reads the metrics of every host whose poll is due, beside the cycle.
    fn poll_hosts(self: &Arc<Self>) {
        let config = self.config();
        let every = config.host_metrics_every_ms();
        let now = now_ms();
        let due = lock(&self.history).take_host_polls(
            config.hosts.iter().map(|h| h.id.as_str()),
            now,
            every,
        );
        for host in due {
            let this = self.clone();
            tokio::spawn(
                async move {
                    match this.io.diagnostics(&host).await {
                        Ok(d) => lock(&this.history).record_host(&host, &d.host, now_ms()),
                        Err(e) => tracing::info!(%host, error = %e, "host metrics unavailable"),
                    }
                }
                .instrument(tracing::info_span!("host_metrics")),
            );
        }
    }

    pub fn recent(&self, target: &str) -> Vec<Observation> {
        lock(&self.recent)
            .get(target)
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn oncall(&self) -> Option<String> {
        self.io.secrets().oncall_user.clone()
    }

    /// One cycle: every due probe (concurrently, bounded), then rounds and
    /// deliveries. Returns the number of targets probed.
    pub async fn cycle(self: &Arc<Self>) -> usize {
        let span = tracing::info_span!("cycle");
        async {
            let started = std::time::Instant::now();
            self.ping_deadman(true);
            let now = now_ms();
            let config = self.config();
            let due = self.update(|s| s.due_targets(&config, now));
            let probed = due.len();
            // Owned indexes: a stream closure borrowing targets would tie the
            // future to one lifetime and keep it from being spawned.
            let indexes: Vec<usize> = (0..config.targets.len())
                .filter(|i| due.contains(&config.targets[*i].id))
                .collect();
            let observations: Vec<Observation> = stream::iter(indexes)
                .map(|i| {
                    let (io, config) = (self.io.clone(), config.clone());
                    async move { io.probe(&config.targets[i]).await }
                })
                .buffer_unordered(config.probe_concurrency)
                .collect()
                .await;
            self.record(&observations);
            self.metrics.probes(&observations);
            let oncall = self.oncall();
            {
                let mut history = lock(&self.history);
                self.update(|s| {
                    // Read again under the state's lock: a target removed
                    // during the probes is not observed back into the state.
                    let config = self.config();
                    let at = now_ms();
                    for obs in &observations {
                        log_events(&s.observe_and_record(&config, &mut history, obs, at));
                    }
                    log_events(&s.tick(&config, &history, oncall.as_deref(), at));
                });
            }
            self.flush_history(false);
            self.poll_hosts();
            self.start_rounds();
            self.start_runs();
            self.deliver_soon();
            self.metrics.cycle(started.elapsed(), now_ms());
            self.ping_deadman(false);
            tracing::debug!(probed, "cycle done");
            probed
        }
        .instrument(span)
        .await
    }

    fn record(&self, observations: &[Observation]) {
        let mut recent = lock(&self.recent);
        for obs in observations {
            let q = recent.entry(obs.target.clone()).or_default();
            q.push_front(obs.clone());
            q.truncate(RECENT_KEPT);
        }
    }

    /// Starts a round for every incident that wants one and whose lease is
    /// free; each runs as its own task.
    pub fn start_rounds(self: &Arc<Self>) {
        let now = now_ms();
        let config = self.config();
        let leased: Vec<_> = self.update(|s| {
            s.remediation_due(&config, now)
                .into_iter()
                .filter_map(|id| {
                    let (n, resume) = s.take_lease(&config, &id, &self.owner, now, LEASE_MS)?;
                    Some((s.incident(&id)?.clone(), n, resume))
                })
                .collect()
        });
        for (incident, n, resume) in leased {
            let Some(target) = config.target(&incident.target).cloned() else {
                continue;
            };
            let (this, config) = (self.clone(), config.clone());
            let handle = tokio::spawn(async move {
                let note = |p: &crate::core::incident::PendingAction| {
                    this.update(|s| s.note_action(&incident.id, &this.owner, p.clone(), now_ms()))
                };
                let input = RoundInput {
                    config: &config,
                    target: &target,
                    incident: &incident,
                    n,
                    resume,
                    on_decision: &note,
                };
                let round = run_round(&*this.io, input).await;
                let oncall = this.oncall();
                this.record(round.reprobe.as_slice());
                this.metrics.round(&round);
                if let (Some(host), Some(m)) = (&target.host, &round.host_metrics) {
                    lock(&this.history).record_host(host, m, round.finished_at_ms);
                }
                this.update(|s| {
                    log_events(&s.complete_round(
                        &this.config(),
                        &incident.id,
                        &this.owner,
                        round,
                        oncall.as_deref(),
                        now_ms(),
                    ));
                });
                this.deliver_soon();
            });
            lock(&self.rounds).push(handle);
        }
    }

    /// Steps through every approved runbook run, one step at a time, each
    /// run in a task of its own (a run resumed after a restart resends its
    /// step under the same key: the agent replays it).
    pub fn start_runs(self: &Arc<Self>) {
        for run in self.read(|s| s.runs_due()) {
            if !lock(&self.running).insert(run.id.clone()) {
                continue;
            }
            let this = self.clone();
            let handle = tokio::spawn(async move {
                this.update(|s| s.start_run(&run.id));
                while let Some(run) = this.read(|s| s.run(&run.id).cloned()) {
                    let Some((k, _)) = run.next_step() else {
                        break;
                    };
                    let config = this.config();
                    let Some(step) = run_step(&*this.io, &config, &run, k).await else {
                        break;
                    };
                    this.record(&step.reprobes);
                    this.update(|s| {
                        log_events(&s.record_step(&this.config(), &run.id, step, now_ms()))
                    });
                    this.deliver_soon();
                }
                lock(&this.running).remove(&run.id);
            });
            lock(&self.rounds).push(handle);
        }
    }

    /// Waits for every round started so far (for `--once` and shutdown).
    pub async fn wait_for_rounds(&self) {
        loop {
            let handles: Vec<_> = lock(&self.rounds).drain(..).collect();
            if handles.is_empty() {
                return;
            }
            for h in handles {
                let _ = h.await;
            }
        }
    }

    /// Pings `[deadman]`'s URL (`/start` before the cycle, its outcome
    /// after), in a task of its own (a slow watcher never holds the cycle).
    fn ping_deadman(&self, start: bool) {
        if self.io.secrets().deadman_url.is_none() {
            return;
        }
        let fail_after = self.config().deadman.fail_after_ms();
        let ping = match start {
            true => deadman::Ping::Start,
            false => self.read(|s| deadman::ping(s, now_ms(), fail_after)),
        };
        let io = self.io.clone();
        tokio::spawn(async move {
            if let Err(e) = io.ping_deadman(&ping).await {
                tracing::warn!(error = %e, "deadman ping failed");
            }
        });
    }

    /// Asks the delivery task for a pass; returns at once.
    pub fn deliver_soon(&self) {
        self.wake_delivery.notify_one();
    }

    /// Delivers whenever woken (a wake-up during a pass is kept for after
    /// it), until the runner stops.
    async fn delivery_loop(self: Arc<Self>) {
        loop {
            self.wake_delivery.notified().await;
            self.deliver().await;
        }
    }

    /// Delivers queued messages oldest first per channel; a channel that
    /// fails waits out its backoff (its order kept) while the others go on.
    pub async fn deliver(&self) {
        let _one_at_a_time = self.delivering.lock().await;
        loop {
            let per_minute = self.config().discord.max_per_minute as usize;
            let Some(entry) = self.update(|s| s.outbox.due(now_ms(), per_minute)) else {
                return;
            };
            let outcome = self.io.deliver_entry(&entry).await;
            self.metrics.delivery(&entry.channel, &outcome);
            match &outcome {
                Delivery::Sent => {
                    tracing::info!(key = %entry.key, channel = %entry.channel, "alert delivered")
                }
                other => {
                    tracing::warn!(key = %entry.key, channel = %entry.channel, outcome = ?other, "alert not delivered")
                }
            }
            self.update(|s| s.outbox.record(entry.id, outcome, now_ms()));
        }
    }

    /// How long to sleep before the next probe is due, at most an interval
    /// (the periodic checks run every cycle, also when this edge probes
    /// nothing itself and remote probers report).
    pub fn until_next(&self) -> Duration {
        let next = self
            .read(|s| s.next_probe_at_ms())
            .unwrap_or(u64::MAX)
            .min(now_ms() + self.config().interval_ms());
        Duration::from_millis(next.saturating_sub(now_ms()).max(10))
    }

    /// Runs cycles until `shutdown` resolves.
    pub async fn run(self: &Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let delivery = tokio::spawn(self.clone().delivery_loop());
        loop {
            self.cycle().await;
            tokio::select! {
                _ = tokio::time::sleep(self.until_next()) => {}
                _ = self.wake_cycle.notified() => {}
                _ = &mut shutdown => break,
            }
        }
        tracing::info!("stopping: letting running rounds finish");
        self.wait_for_rounds().await;
        delivery.abort();
        self.flush_history(true);
    }

    /// One whole cycle for `--once`: every target, the confirm probes the
    /// cycle asks for, the rounds it starts, and the deliveries.
    pub async fn once(self: &Arc<Self>) {
        let now = now_ms();
        let config = self.config();
        self.update(|s| {
            s.due_targets(&config, now);
            for ts in s.targets.values_mut() {
                ts.next_regular_at_ms = now;
            }
        });
        let end = now + self.config().interval_ms();
        loop {
            self.cycle().await;
            let confirm = self.read(|s| s.targets.values().filter_map(|t| t.confirm_at_ms).min());
            match confirm {
                Some(at) if at < end => {
                    tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await
                }
                _ => break,
            }
        }
        self.wait_for_rounds().await;
        self.deliver().await;
        self.flush_history(true);
    }
}

fn log_events(events: &[Event]) {
    for e in events {
        match e {
            Event::Suspect { target, .. } => {
                tracing::info!(%target, "first bad observation: confirming")
            }
            Event::Transition { target, from, to } => {
                tracing::warn!(%target, from = from.as_str(), to = to.as_str(), "state changed")
            }
            Event::IncidentOpened { target, incident } => {
                tracing::warn!(%target, %incident, "incident opened")
            }
            Event::IncidentResolved { target, incident } => {
                tracing::info!(%target, %incident, "incident resolved")
            }
            Event::InMaintenance { target } => tracing::debug!(%target, "in maintenance"),
            Event::Flapping { target, incident } => {
                tracing::warn!(%target, %incident, "flapping: one alert for the episode")
            }
            Event::BurnRate { target, window } => {
                tracing::warn!(%target, window_ms = window, "error budget burning: alerted")
            }
            Event::SeenDownPartly { target, regions } => {
                tracing::warn!(%target, ?regions, "seen down from fewer vantage points than the quorum: no incident")
            }
            Event::ProberSilent { region } => {
                tracing::warn!(%region, "prober silent: its views no longer count")
            }
        }
    }
}

//! `POST /ops/signal` on the Worker: the core names the targets a host's
//! signal concerns (`State::signal`), and this request probes them at once
//! (through the shards on the Durable Object store) and then confirms after
//! `signal_confirm_s`, as a cycle's waves do (`cycle::probe_waves`); an
//! incident's alert goes out before it answers. A signal is never an
//! incident by itself: only the probes decide.

use std::cell::RefCell;
use std::collections::BTreeMap;

use worker::{console_error, console_log, Env, Response, Storage};

use super::cycle::{deliver, probe_waves, Wave};
use super::io::{now_ms, WorkerIo};
use super::routes::{error, json};
use super::shards::Prober;
use super::store::Store;
use crate::core::budget::{self, Carried};
use crate::core::signal::HostSignal;
use crate::core::state::State;

thread_local! {
    /// When a signal last moved each target's probe (the core's
    /// `early_probe_ms`, which is not stored): a flood reaching this isolate
    /// costs at most one early probe per target per `retry_after_s`.
    static EARLY: RefCell<BTreeMap<String, u64>> = const { RefCell::new(BTreeMap::new()) };
}

/// Takes one signal: 202 with the targets probed (or why none was).
pub async fn take(
    body: &[u8],
    env: &Env,
    io: &WorkerIo,
    store: &Store<'_>,
    mut state: State,
    durable: Option<&Storage>,
) -> worker::Result<Response> {
    let sig = match HostSignal::parse(body) {
        Ok(s) => s,
        Err(why) => return error(400, "bad_body", why),
    };
    let config = &*io.config;
    let now = now_ms();
    let outcome = EARLY.with(|early| {
        let mut early = early.borrow_mut();
        for (id, at) in early.iter() {
            if let Some(ts) = state.targets.get_mut(id) {
                ts.early_probe_ms = Some(*at);
            }
        }
        let outcome = state.signal(config, &sig, now);
        for id in &outcome.probing {
            early.insert(id.clone(), now);
        }
        outcome
    });
    console_log!(
        "host signal {}/{} {} at {}: probing {:?}, throttled {:?}",
        sig.host,
        sig.service,
        sig.event,
        sig.at_ms,
        outcome.probing,
        outcome.throttled
    );
    if outcome.probing.is_empty() {
        return json(202, &outcome);
    }
    let wave = Wave {
        here: (0..config.targets.len())
            .filter(|i| outcome.probing.contains(&config.targets[*i].id))
            .collect(),
        regions: Vec::new(),
    };
    let shards = durable.map(|_| budget::shard_size(config.plan()));
    let prober = match Prober::new(io, env, shards, &state.api_targets) {
        Ok(p) => p,
        Err(e) => return error(500, "internal", e),
    };
    let mut history = match store.history().await {
        Ok(h) => h,
        Err(e) => return error(502, "kv_unavailable", e),
    };
    let until = now
        .saturating_add(config.retry_after_ms())
        .saturating_add(1);
    probe_waves((&prober, store), &mut state, &mut history, wave, until).await;
    Store::keep_history(history);
    deliver(io, store, &mut state, &mut Carried::default()).await;
    // The probes' outcome is the monitor's own: kept in this isolate when it
    // cannot be stored, like a cycle's.
    if let Err(e) = store.save(&mut state).await {
        console_error!("a signal's probes could not be stored: {e}");
    }
    json(202, &outcome)
}

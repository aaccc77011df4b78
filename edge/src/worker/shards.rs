//! Where a wave of probes runs: here, or in the Durable Object store spread
//! over shard objects (`shard-0`, `shard-1`, ...), each probing up to
//! `budget::shard_size` targets in its own invocation, within its own
//! subrequest budget, so the cycle's invocation spends one subrequest per
//! shard. Shards only probe and answer observations; the cycle feeds them
//! to the core like its own.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;

use futures_util::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use worker::wasm_bindgen::JsValue;
use worker::{console_error, AnalyticsEngineDataset, Env, Headers};

use super::durable::durable_stub;
use super::io::WorkerIo;
use super::{Fallible, AE_BINDING};
use crate::config::{Config, Target};
use crate::core::budget::{Budget, CONNECTIONS};
use crate::core::probe::Observation;
use crate::remediation::RemediationIo;

/// A shard's answer.
#[derive(Serialize, Deserialize)]
pub struct ShardAnswer {
    pub observations: Vec<Observation>,
    /// The shard invocation's subrequests (its own count).
    pub subrequests: u32,
}

/// A probe here or a shard's call, as one future type: each future type
/// `buffered` runs is its own copy of futures-util's ordered stream in the Worker
/// (1.3 KB gzip; BENCHMARKS.md).
type Calls<'a> = Pin<Box<dyn Future<Output = Vec<Observation>> + 'a>>;

/// Runs `calls` at most `CONNECTIONS` at a time; their observations in order.
async fn run<'a>(calls: impl Iterator<Item = Calls<'a>>) -> Vec<Observation> {
    let answers: Vec<Vec<Observation>> = stream::iter(calls).buffered(CONNECTIONS).collect().await;
    answers.into_iter().flatten().collect()
}

/// Probes `targets` at most `CONNECTIONS` at a time, in order.
pub async fn probe_all(io: &WorkerIo, targets: Vec<&Target>) -> Vec<Observation> {
    run(targets
        .into_iter()
        .map(|t| Box::pin(async move { vec![io.probe(t).await] }) as Calls))
    .await
}

/// A shard's job: the targets named in `ids` (as many as its budget
/// allows), probed here.
pub async fn probe_here(config: &Config, io: &WorkerIo, ids: &[String]) -> ShardAnswer {
    let mut budget = Budget::new(config.plan());
    let n = budget.take_up_to(ids.len() as u32, 0) as usize;
    let targets: Vec<&Target> = ids[..n].iter().filter_map(|id| config.target(id)).collect();
    ShardAnswer {
        observations: probe_all(io, targets).await,
        subrequests: budget.subrequests,
    }
}

pub struct Prober<'a> {
    io: &'a WorkerIo,
    env: &'a Env,
    /// Probes per shard call, when probing is spread over shards.
    shard: Option<usize>,
    /// The largest shard invocation's subrequests, and targets not probed
    /// because their shard failed (carried to the next invocation).
    pub shard_max: Cell<u32>,
    pub lost: Cell<u32>,
}

impl<'a> Prober<'a> {
    pub fn new(io: &'a WorkerIo, env: &'a Env, shard: Option<usize>) -> Self {
        Prober {
            io,
            env,
            shard,
            shard_max: Cell::new(0),
            lost: Cell::new(0),
        }
    }

    fn spread(&self, n: usize) -> Option<usize> {
        self.shard.filter(|s| n > *s)
    }

    /// The subrequests a wave of `n` probes costs this invocation.
    pub fn config(&self) -> &Config {
        &self.io.config
    }

    /// Where the probes' data points go, when bound.
    pub fn analytics(&self) -> Option<AnalyticsEngineDataset> {
        self.env.analytics_engine(AE_BINDING).ok()
    }

    /// Waits until `at_ms` (a confirm wave's time).
    pub async fn sleep_until(&self, at_ms: u64) {
        self.io
            .sleep_ms(at_ms.saturating_sub(self.io.now_ms()))
            .await;
    }

    pub fn cost(&self, n: usize) -> usize {
        self.spread(n).map_or(n, |s| n.div_ceil(s))
    }

    /// How many of `n` targets `calls` subrequests probe.
    pub fn covered(&self, n: usize, calls: usize) -> usize {
        self.spread(n).map_or(calls, |s| (calls * s).min(n))
    }

    pub async fn probe(&self, targets: Vec<&Target>) -> Vec<Observation> {
        let Some(size) = self.spread(targets.len()) else {
            return probe_all(self.io, targets).await;
        };
        let calls = targets.chunks(size).enumerate().map(|(k, chunk)| {
            let ids: Vec<String> = chunk.iter().map(|t| t.id.clone()).collect();
            Box::pin(async move {
                let n = ids.len() as u32;
                match self.call(k, ids).await {
                    Ok(a) => {
                        self.shard_max.set(self.shard_max.get().max(a.subrequests));
                        a.observations
                    }
                    Err(e) => {
                        console_error!("shard-{k} failed ({n} targets carried): {e}");
                        self.lost.set(self.lost.get() + n);
                        Vec::new()
                    }
                }
            }) as Calls
        });
        run(calls).await
    }

    async fn call(&self, k: usize, ids: Vec<String>) -> Fallible<ShardAnswer> {
        let stub = durable_stub(self.env, &format!("shard-{k}")).map_err(|e| e.to_string())?;
        let body = serde_json::to_string(&ids).map_err(|e| e.to_string())?;
        let init = super::io::request_init("POST", &Headers::new());
        init.set_body(&JsValue::from_str(&body));
        let req = super::io::request("https://vigil.internal/probe", &init)?;
        let mut res = stub
            .fetch_with_request(req)
            .await
            .map_err(|e| e.to_string())?;
        let bytes = res.bytes().await.map_err(|e| e.to_string())?;
        if res.status_code() != 200 {
            return Err(String::from_utf8_lossy(&bytes).into_owned());
        }
        crate::core::json::read(&bytes).map_err(|e| e.to_string())
    }
}

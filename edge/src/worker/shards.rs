//! Where a wave of probes runs: here, or in the Durable Object store spread
//! over shard objects (`shard-0`, `shard-1`, ...), each probing up to
//! `budget::shard_size` targets in its own invocation, within its own
//! subrequest budget, so the cycle's invocation spends one subrequest per
//! shard. Shards only probe and answer observations; the cycle feeds them
//! to the core like its own. A shard's job is `POST /probe?ids=a,b,c` (ids
//! are `[a-z0-9_-]`) with the state's API targets as its body: it has no
//! state of its own and looks the ids up in the same effective
//! configuration (`control::effective`) as the cycle.
//!
//! Several vantage points (`regions`): each region is an object of the same
//! class, `region-<name>`, created with that region as its location hint.
//! It probes the targets of its region like a shard (its probes carry
//! `X-Vigil-Region: <name>`), one call per `shard_size` targets; the cycle
//! takes its answer as a remote prober's batch (`State::take_observations`).
//! A region object that fails to answer is not heard: the core counts its
//! views out and calls it silent after `prober_silent_s`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
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
use crate::core::budget::{shard_size, Budget, CONNECTIONS};
use crate::core::control::ApiTarget;
use crate::core::probe::{Observation, REGION_HEADER};
use crate::remediation::RemediationIo;

/// A shard's answer.
#[derive(Serialize, Deserialize)]
pub struct ShardAnswer {
    pub observations: Vec<Observation>,
    /// The shard invocation's subrequests (its own count).
    pub subrequests: u32,
    /// Its clock when it answered (a region object's observations are
    /// aged on it).
    #[serde(default)]
    pub sent_at_ms: u64,
}

/// One region object's call: its region, and the ids of the targets it
/// probes (at most `shard_size`).
pub type RegionCall = (String, Vec<String>);

/// The region objects' calls that probe `asks` (region, target id): one
/// per `shard_size` targets of a region.
pub fn region_calls(config: &Config, asks: &[(&str, &str)]) -> Vec<RegionCall> {
    let size = shard_size(config.plan());
    let mut calls: Vec<RegionCall> = Vec::new();
    for (region, id) in asks {
        match calls
            .iter_mut()
            .find(|(r, ids)| r == region && ids.len() < size)
        {
            Some((_, ids)) => ids.push(id.to_string()),
            None => calls.push((region.to_string(), vec![id.to_string()])),
        }
    }
    calls
}

/// What one call of a wave answered: a probe here (no region), or a
/// shard's or a region object's answer (with its region); none when the
/// call failed.
type Answer = Option<(String, ShardAnswer)>;

/// A probe here, a shard's or a region object's call, as one future type:
/// each future type `buffered` runs is its own copy of futures-util's
/// ordered stream in the Worker (1.3 KB gzip; BENCHMARKS.md).
type Calls<'a> = Pin<Box<dyn Future<Output = Answer> + 'a>>;

/// Runs `calls` at most `CONNECTIONS` at a time: the answers, in order.
async fn run<'a>(calls: impl Iterator<Item = Calls<'a>>) -> Vec<(String, ShardAnswer)> {
    let answers: Vec<Answer> = stream::iter(calls).buffered(CONNECTIONS).collect().await;
    answers.into_iter().flatten().collect()
}

fn observations(answers: Vec<(String, ShardAnswer)>) -> Vec<Observation> {
    answers
        .into_iter()
        .flat_map(|(_, a)| a.observations)
        .collect()
}

/// Probes `targets` at most `CONNECTIONS` at a time, in order.
pub async fn probe_all(io: &WorkerIo, targets: Vec<&Target>) -> Vec<Observation> {
    let calls = targets.into_iter().map(|t| {
        Box::pin(async move {
            let answer = ShardAnswer {
                observations: vec![io.probe(t).await],
                subrequests: 0,
                sent_at_ms: 0,
            };
            Some((String::new(), answer))
        }) as Calls
    });
    observations(run(calls).await)
}

/// A shard's job: the targets named in `ids` (as many as its budget
/// allows), probed here.
pub async fn probe_here(config: &Config, io: &WorkerIo, ids: &[&str]) -> ShardAnswer {
    let mut budget = Budget::new(config.plan());
    let n = budget.take_up_to(ids.len() as u32, 0) as usize;
    let targets: Vec<&Target> = ids[..n].iter().filter_map(|id| config.target(id)).collect();
    let observations = probe_all(io, targets).await;
    ShardAnswer {
        observations,
        subrequests: budget.subrequests,
        sent_at_ms: io.now_ms(),
    }
}

pub struct Prober<'a> {
    io: &'a WorkerIo,
    env: &'a Env,
    /// Probes per shard call, when probing is spread over shards.
    shard: Option<usize>,
    /// The state's API targets as sent to the shards (their JSON text,
    /// written once: a copy of the map would bring its `Clone` into the
    /// bundle).
    api_targets: String,
    /// The largest shard invocation's subrequests, and targets not probed
    /// because their shard failed (carried to the next invocation).
    pub shard_max: Cell<u32>,
    pub lost: Cell<u32>,
    /// Region objects that failed to answer this invocation: not asked
    /// again in it (their confirm probes wait for the next cycle).
    failed: RefCell<Vec<String>>,
}

impl<'a> Prober<'a> {
    pub fn new(
        io: &'a WorkerIo,
        env: &'a Env,
        shard: Option<usize>,
        api_targets: &BTreeMap<String, ApiTarget>,
    ) -> Fallible<Self> {
        Ok(Prober {
            io,
            env,
            shard,
            api_targets: serde_json::to_string(api_targets).map_err(|e| e.to_string())?,
            shard_max: Cell::new(0),
            lost: Cell::new(0),
            failed: RefCell::new(Vec::new()),
        })
    }

    fn spread(&self, n: usize) -> Option<usize> {
        self.shard.filter(|s| n > *s)
    }

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

    /// The subrequests a wave of `n` probes costs this invocation.
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
            (format!("shard-{k}"), None, ids)
        });
        observations(self.call_all(calls).await)
    }

    /// Whether region `region`'s object failed this invocation.
    pub fn failed(&self, region: &str) -> bool {
        self.failed.borrow().iter().any(|r| r == region)
    }

    /// Asks each region object for its probes: (region, answer) for those
    /// that answered.
    pub async fn ask_regions(&self, calls: Vec<RegionCall>) -> Vec<(String, ShardAnswer)> {
        let calls = calls
            .into_iter()
            .map(|(region, ids)| (format!("region-{region}"), Some(region), ids));
        self.call_all(calls).await
    }

    /// Calls the objects named, `CONNECTIONS` at a time: each a shard, or a
    /// region's object (with its region); the answers of those that
    /// answered.
    async fn call_all(
        &self,
        calls: impl Iterator<Item = (String, Option<String>, Vec<String>)>,
    ) -> Vec<(String, ShardAnswer)> {
        let calls = calls.map(|(name, region, ids)| {
            Box::pin(async move {
                let n = ids.len() as u32;
                match self.call(&name, region.as_deref(), ids).await {
                    Ok(a) => {
                        self.shard_max.set(self.shard_max.get().max(a.subrequests));
                        Some((region.unwrap_or_default(), a))
                    }
                    Err(e) => {
                        console_error!("{name} failed ({n} targets carried): {e}");
                        self.lost.set(self.lost.get() + n);
                        if let Some(r) = region {
                            self.failed.borrow_mut().push(r);
                        }
                        None
                    }
                }
            }) as Calls
        });
        run(calls).await
    }

    async fn call(
        &self,
        name: &str,
        region: Option<&str>,
        ids: Vec<String>,
    ) -> Fallible<ShardAnswer> {
        let stub = durable_stub(self.env, name, region).map_err(|e| e.to_string())?;
        let headers = Headers::new();
        if let Some(r) = region {
            headers.set(REGION_HEADER, r).map_err(|e| e.to_string())?;
        }
        let init = super::io::request_init("POST", &headers);
        init.set_body(&JsValue::from_str(&self.api_targets));
        let url = format!("https://vigil.internal/probe?ids={}", ids.join(","));
        let req = super::io::request(&url, &init)?;
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

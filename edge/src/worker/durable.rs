//! The Durable Object store: one instance (by name) owns the documents and
//! runs every cycle itself, one at a time. Its storage is strongly
//! consistent, and nothing else writes the state while a cycle runs
//! (control requests then get 503 with Retry-After), so a page or an action
//! decided by one cycle is seen by the next: exactly once.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;

use worker::{durable_object, DurableObject, Env, Method, Request, Response};

use super::cycle::cycle;
use super::io::worker_io;
use super::routes::{error, json, serve};
use super::shards::probe_here;
use super::{checked_config, lookup, Fallible};
use crate::core::control::{self, ApiTarget};
use crate::core::json;
use crate::core::probe::REGION_HEADER;
use crate::ops_requests::query_param;
use crate::shell::Secrets;

const DO_BINDING: &str = "VIGIL_DO";
/// `kv` (default) or `durable_object`.
const STORE_VAR: &str = "VIGIL_STORE";
/// Test only: `VIGIL_TEST_MUTE_REGIONS = "apac"` (regions, comma-separated)
/// makes those region objects refuse to probe, as objects the coordinator
/// cannot reach would (tests/tests/worker_regions.rs sets it; never set in
/// deploy/wrangler.toml).
const MUTE_VAR: &str = "VIGIL_TEST_MUTE_REGIONS";

pub fn durable_mode(env: &Env) -> bool {
    lookup(env, STORE_VAR).as_deref() == Some("durable_object")
}

/// The one Durable Object that owns the state.
pub const COORDINATOR: &str = "vigil";

/// The Durable Object named `name`: the coordinator, a shard, or a
/// region's object, created with its region as the location hint (a hint:
/// Cloudflare places the object near it when it is first created, and never
/// moves it).
pub fn durable_stub(env: &Env, name: &str, hint: Option<&str>) -> worker::Result<worker::Stub> {
    let namespace = env.durable_object(DO_BINDING)?;
    let id = namespace.id_from_name(name)?;
    match hint {
        Some(hint) => id.get_stub_with_location_hint(hint),
        None => id.get_stub(),
    }
}

/// Asks the Durable Object to run the cycle against its own storage.
pub async fn durable_cycle(env: &Env) -> Fallible<String> {
    let stub = durable_stub(env, COORDINATOR, None).map_err(|e| e.to_string())?;
    let mut res = stub
        .fetch_with_str("https://vigil.internal/cycle")
        .await
        .map_err(|e| e.to_string())?;
    let text = res.text().await.map_err(|e| e.to_string())?;
    if res.status_code() == 200 {
        Ok(text)
    } else {
        Err(text)
    }
}

#[durable_object]
pub struct VigilEdge {
    state: worker::State,
    env: Env,
    /// A cycle, or a signal's probes (a read-modify-write of the state
    /// across awaits too), is running.
    cycling: Cell<bool>,
}

impl DurableObject for VigilEdge {
    fn new(state: worker::State, env: Env) -> Self {
        VigilEdge {
            state,
            env,
            cycling: Cell::new(false),
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let storage = self.state.storage();
        if req.path() == "/cycle" {
            if self.cycling.replace(true) {
                return error(409, "cycle_running", "a cycle is already running");
            }
            let result = cycle(&self.env, Some(&storage)).await;
            self.cycling.set(false);
            return match result {
                Ok(report) => json(200, &report),
                Err(e) => error(500, "cycle_failed", e),
            };
        }
        if req.path() == "/probe" {
            // A shard's job (see `shards`): probe the targets named; a
            // region's object probes them as that vantage point.
            let file = match checked_config(&self.env) {
                Ok(c) => c,
                Err(e) => return error(500, "no_configuration", e),
            };
            let api: BTreeMap<String, ApiTarget> = match json::read(&req.bytes().await?) {
                Ok(api) => api,
                Err(e) => return error(400, "bad_body", e.to_string()),
            };
            let ids = query_param(&req.inner().url(), "ids").unwrap_or_default();
            let ids: Vec<&str> = ids.split(',').collect();
            let mut config = control::effective(file, &api).0;
            if let Some(region) = req.headers().get(REGION_HEADER)? {
                let muted = lookup(&self.env, MUTE_VAR);
                if muted.is_some_and(|m| m.split(',').any(|r| r == region)) {
                    return error(503, "muted", MUTE_VAR);
                }
                if !config.remote_regions().contains(&region.as_str()) {
                    return error(
                        400,
                        "bad_region",
                        format!("no target lists {region:?} in its regions"),
                    );
                }
                config.region = region;
            }
            let config = Arc::new(config);
            let io = worker_io(
                &config,
                Secrets::from_env(&config, |k| lookup(&self.env, k)),
            );
            return json(200, &probe_here(&config, &io, &ids).await);
        }
        let change = matches!(req.method(), Method::Post | Method::Delete);
        if self.cycling.get() && change {
            let mut res = error(
                503,
                "cycle_running",
                "a cycle is running; retry in a few seconds",
            )?;
            res.headers_mut().set("retry-after", "5")?;
            return Ok(res);
        }
        // Not cycling (a POST would have been refused above): a signal holds
        // the object like a cycle until its probes are stored.
        let signal = req.method() == Method::Post && req.path() == "/ops/signal";
        if signal {
            self.cycling.set(true);
        }
        let res = serve(&mut req, &self.env, Some(&storage)).await;
        if signal {
            self.cycling.set(false);
        }
        match res {
            Ok(res) => Ok(res),
            Err(e) => error(500, "internal", e.to_string()),
        }
    }
}

//! The Cloudflare Worker shell: the cron trigger runs one cycle of the same
//! core (probes and confirm probes, debounce, alerts, remediation rounds),
//! the fetch handler serves the same `/ops` API. State is one document, read
//! once per cycle and written only when it changed: in Workers KV (the
//! default), or in a Durable Object (`VIGIL_STORE = "durable_object"`) that
//! runs every cycle itself, one at a time, for a strongly consistent store.
//! Analytics Engine gets one data point per probe, round, host sample and
//! request, best effort (`crate::analytics` has the layout).
//! Every error is handled here: a panic would abort the isolate.
//!
//! `cycle`: one cron cycle; `shards`: where its probes run; `routes`: the
//! HTTP API; `control`: targets through the API (the effective
//! configuration, its routes); `runbooks`: runbook and approval routes,
//! approved steps; `signal`: a host's signal, probed within its request;
//! `store`: the stored documents; `durable`: the Durable Object;
//! `analytics`: Analytics Engine points; `io`: the `worker::Fetch`
//! transport.

mod analytics;
mod control;
mod cycle;
mod durable;
mod io;
mod posthog;
mod routes;
mod runbooks;
mod shards;
mod signal;
mod store;

use std::sync::Arc;

use worker::js_sys::{Array, Function, Promise, Reflect, JSON};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{
    console_error, console_log, event, Context, Env, Request, Response, ScheduleContext,
    ScheduledEvent,
};

use self::cycle::cycle;
use self::durable::{durable_cycle, durable_mode, durable_stub, COORDINATOR};
use self::routes::{error, serve};
use crate::config::Config;
use crate::core::budget;

// talc instead of std's dlmalloc: the allocator made for single-threaded
// WebAssembly, about 3 KB gzip smaller (BENCHMARKS.md, "The edge Worker").
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

const AE_BINDING: &str = "VIGIL_AE";
/// The configuration TOML, as a var (or secret).
const CONFIG_VAR: &str = "VIGIL_CONFIG";

type Fallible<T> = std::result::Result<T, String>;

/// `object.method(args)`, awaited: a binding's method called as JavaScript
/// where worker's wrapper would pass its arguments through serde.
async fn call(object: &JsValue, method: &str, args: &[JsValue]) -> worker::Result<JsValue> {
    let method: Function = Reflect::get(object, &method.into())?.dyn_into()?;
    let promise: Promise = method
        .apply(object, &args.iter().collect::<Array>())?
        .dyn_into()?;
    Ok(JsFuture::from(promise).await?)
}

fn lookup(env: &Env, key: &str) -> Option<String> {
    env.secret(key)
        .ok()
        .map(|s| s.to_string())
        .or_else(|| env.var(key).ok().map(|v| v.to_string()))
}

/// `VIGIL_CONFIG` as JSON text: a table in wrangler.toml
/// (`[vars.VIGIL_CONFIG]`) arrives as an object, a secret or `--var` as a
/// string.
fn config_json(env: &Env) -> Fallible<String> {
    let value = Reflect::get(env, &JsValue::from_str(CONFIG_VAR)).unwrap_or(JsValue::UNDEFINED);
    let text = match value.as_string() {
        Some(text) => text,
        None if value.is_object() => JSON::stringify(&value)
            .map(String::from)
            .map_err(|_| format!("{CONFIG_VAR} cannot be read as JSON"))?,
        None => return Err(format!("{CONFIG_VAR} is not set")),
    };
    if !text.trim_start().starts_with('{') {
        return Err(format!(
            "{CONFIG_VAR} must be JSON or a [vars.{CONFIG_VAR}] table in wrangler.toml, not TOML text \
             (the Worker has no TOML parser); `vigil-edge --config FILE --print-json` converts a file"
        ));
    }
    Ok(text)
}

/// The configuration in `VIGIL_CONFIG` (without the API targets: see
/// `control::effective`), refused when it cannot run on the Worker. Shared
/// (`Arc`) with the clients built on it: a copy would bring every
/// configuration type's `Clone` into the bundle.
fn load_config(env: &Env) -> Fallible<Arc<Config>> {
    checked_config(env).map(Arc::new)
}

/// `load_config`'s configuration, owned.
fn checked_config(env: &Env) -> Fallible<Config> {
    let config = config_copy(env)?;
    fits(&config, env)
        .and_then(|()| config.check_worker(store_kind(env)))
        .map_err(|e| format!("{CONFIG_VAR}: {e}"))?;
    Ok(config)
}

/// `VIGIL_CONFIG` read again, for a configuration of its own to lay the
/// API targets over (`control::effective`): cheaper in the bundle than
/// `Config: Clone` (every configuration type's copy code, 2.2 KB gzip).
fn config_copy(env: &Env) -> Fallible<Config> {
    Config::from_json(CONFIG_VAR, &config_json(env)?).map_err(|e| e.to_string())
}

fn store_kind(env: &Env) -> budget::StoreKind {
    if durable_mode(env) {
        budget::StoreKind::DurableObject
    } else {
        budget::StoreKind::Kv
    }
}

/// A configuration the plan or the store cannot carry is refused, not run
/// past the platform's limits.
fn fits(config: &Config, env: &Env) -> Fallible<()> {
    let store = store_kind(env);
    budget::check(config, config.plan(), store)
        .and_then(|()| budget::check_store(config, store))
        .map_err(|e| e.to_string())
}

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    let report = if durable_mode(&env) {
        durable_cycle(&env).await
    } else {
        cycle(&env, None)
            .await
            .map(|r| serde_json::to_string(&r).unwrap_or_default())
    };
    match report {
        Ok(report) => console_log!("vigil cycle: {report}"),
        Err(e) => console_error!("vigil cycle failed: {e}"),
    }
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    let started = io::now_ms();
    let method = req.method();
    let path = req.path();
    let proxied = posthog::is_posthog(&req);
    let route = if proxied {
        crate::posthog::route(&path)
    } else {
        crate::analytics::route_template(&path)
    };
    let mut res = if proxied {
        posthog::proxy(req, &env).await
    } else {
        answer(req, &env).await
    };
    // Every request is one Analytics Engine point, best effort: nothing in
    // it can fail the answer.
    let status = res.as_ref().map_or(500, Response::status_code);
    let message = match &mut res {
        Ok(r) if status >= 400 => error_message(r).await,
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    };
    analytics::write_to_env(
        &env,
        crate::analytics::route(&crate::analytics::Request {
            method: method.as_ref(),
            route,
            status,
            duration_ms: io::now_ms().saturating_sub(started),
            error: message.as_deref(),
        }),
    );
    res
}

/// The routes, here or in the Durable Object.
async fn answer(mut req: Request, env: &Env) -> worker::Result<Response> {
    // `/healthz` too: it says what the object saw of its store.
    let stateful = ["/ops/", "/_log", "/status", "/ui", "/healthz"]
        .iter()
        .any(|p| req.path().starts_with(p));
    if durable_mode(env) && stateful {
        return match durable_stub(env, COORDINATOR, None) {
            Ok(stub) => stub.fetch_with_request(req).await,
            Err(e) => error(502, "durable_object_unavailable", e.to_string()),
        };
    }
    match serve(&mut req, env, None).await {
        Ok(res) => Ok(res),
        Err(e) => error(500, "internal", e.to_string()),
    }
}

/// An error answer's message (`{"error": {"message"}}`), read from a copy.
async fn error_message(res: &mut Response) -> Option<String> {
    // From bytes, as every JSON here: `Response::json` reads from a `&str`,
    // a second serde_json reader in the bundle (1.9 KB gzip).
    let bytes = res.cloned().ok()?.bytes().await.ok()?;
    let body: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some(body.pointer("/error/message")?.as_str()?.to_string())
}

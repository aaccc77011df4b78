//! The Cloudflare Worker shell: the cron trigger runs one cycle of the same
//! core (probes and confirm probes, debounce, alerts, remediation rounds),
//! the fetch handler serves the same `/ops` API. State is one document, read
//! once per cycle and written only when it changed: in Workers KV (the
//! default), or in a Durable Object (`VIGIL_STORE = "durable_object"`) that
//! runs every cycle itself, one at a time, for a strongly consistent store.
//! Analytics Engine gets one data point per probe and per round, best effort.
//! Every error is handled here: a panic would abort the isolate.

mod io;

use std::cell::{Cell, RefCell};
use std::sync::Mutex;

use futures_util::future::join_all;
use serde::Serialize;
use vigil_wire::{ErrorBody, TokenCheck};
use worker::{
    console_error, console_log, durable_object, event, AnalyticsEngineDataPointBuilder,
    AnalyticsEngineDataset, Context, DurableObject, Env, KvStore, Method, Request, Response,
    ScheduleContext, ScheduledEvent, Storage,
};

use self::io::{now_ms, worker_io, WorkerIo};
use crate::config::Config;
use crate::core::crash::{self, CrashLog, CrashReport};
use crate::core::history::{History, HostSample};
use crate::core::incident::{PendingAction, Round};
use crate::core::probe::{truncate, Observation};
use crate::core::state::{State, StateError};
use crate::remediation::{run_round, RemediationIo, RoundInput};
use crate::shell::{manual_failure, Secrets, BODY_LIMIT, CRASH_BODY_LIMIT, CRASH_CORS};
use crate::{ops_requests, status_page, views};

const KV_BINDING: &str = "VIGIL_KV";
const DO_BINDING: &str = "VIGIL_DO";
/// `kv` (default) or `durable_object`.
const STORE_VAR: &str = "VIGIL_STORE";
const AE_BINDING: &str = "VIGIL_AE";
const STATE_KEY: &str = "state";
/// History and crash reports are documents of their own: they change at
/// other times than the state.
const HISTORY_KEY: &str = "history";
const CRASHES_KEY: &str = "crashes";
/// The configuration TOML, as a var (or secret).
const CONFIG_VAR: &str = "VIGIL_CONFIG";
/// A round's lease: longer than any round lasts inside one invocation.
const LEASE_MS: u64 = 5 * 60 * 1000;

type Fallible<T> = std::result::Result<T, String>;

thread_local! {
    /// The history as this isolate last saw it, changes not yet stored
    /// included: it is stored every `history_flush_s` (and when an hour
    /// ends), not every cycle, to keep within KV's write budget. An isolate
    /// evicted meanwhile loses those samples; uptime and percentiles are
    /// over the samples kept, so they lose precision, not correctness.
    static HISTORY: RefCell<Option<History>> = const { RefCell::new(None) };
}

fn lookup(env: &Env, key: &str) -> Option<String> {
    env.secret(key)
        .ok()
        .map(|s| s.to_string())
        .or_else(|| env.var(key).ok().map(|v| v.to_string()))
}

fn load_config(env: &Env) -> Fallible<Config> {
    let text = lookup(env, CONFIG_VAR).ok_or_else(|| format!("{CONFIG_VAR} is not set"))?;
    Config::parse(CONFIG_VAR, &text).map_err(|e| e.to_string())
}

/// Where the state document lives.
enum Backend<'a> {
    Kv(KvStore),
    Durable(&'a Storage),
}

/// The state document and what it held when read, so unchanged state is
/// never written back; other documents through `load_doc`/`save_doc`.
struct Store<'a> {
    backend: Backend<'a>,
    stored: Option<String>,
    reads: u32,
    writes: u32,
    doc_writes: u32,
}

impl<'a> Store<'a> {
    /// `durable`: the Durable Object's storage, when this runs inside it.
    async fn open(env: &Env, durable: Option<&'a Storage>) -> Fallible<(Self, State)> {
        let (backend, stored) = match durable {
            Some(storage) => {
                let stored: Option<String> =
                    storage.get(STATE_KEY).await.map_err(|e| e.to_string())?;
                (Backend::Durable(storage), stored)
            }
            None => {
                let kv = env.kv(KV_BINDING).map_err(|e| e.to_string())?;
                let stored = kv.get(STATE_KEY).text().await.map_err(|e| e.to_string())?;
                (Backend::Kv(kv), stored)
            }
        };
        let state = match &stored {
            // JSON is read from bytes everywhere: one serde_json reader type
            // in the bundle, not two.
            Some(text) => serde_json::from_slice(text.as_bytes())
                .map_err(|e| format!("stored state is unreadable: {e}"))?,
            None => State::default(),
        };
        Ok((
            Store {
                backend,
                stored,
                reads: 1,
                writes: 0,
                doc_writes: 0,
            },
            state,
        ))
    }

    async fn get_text(&mut self, key: &str) -> Fallible<Option<String>> {
        self.reads += 1;
        match &self.backend {
            Backend::Kv(kv) => kv.get(key).text().await.map_err(|e| e.to_string()),
            Backend::Durable(storage) => storage.get(key).await.map_err(|e| e.to_string()),
        }
    }

    async fn put_text(&self, key: &str, text: &str) -> Fallible<()> {
        match &self.backend {
            Backend::Kv(kv) => kv
                .put(key, text)
                .map_err(|e| e.to_string())?
                .execute()
                .await
                .map_err(|e| e.to_string()),
            Backend::Durable(storage) => storage.put(key, text).await.map_err(|e| e.to_string()),
        }
    }

    async fn load_doc<T: serde::de::DeserializeOwned + Default>(
        &mut self,
        key: &str,
    ) -> Fallible<T> {
        match self.get_text(key).await? {
            Some(text) => serde_json::from_slice(text.as_bytes())
                .map_err(|e| format!("stored {key} is unreadable: {e}")),
            None => Ok(T::default()),
        }
    }

    async fn save_doc<T: Serialize>(&mut self, key: &str, value: &T) -> Fallible<()> {
        let text = serde_json::to_string(value).map_err(|e| e.to_string())?;
        self.put_text(key, &text).await?;
        self.doc_writes += 1;
        Ok(())
    }

    /// The history: this isolate's copy, else the stored one.
    async fn history(&mut self) -> Fallible<History> {
        match HISTORY.with(|h| h.borrow_mut().take()) {
            Some(h) => Ok(h),
            None => self.load_doc(HISTORY_KEY).await,
        }
    }

    async fn save(&mut self, state: &State) -> Fallible<bool> {
        let text = serde_json::to_string(state).map_err(|e| e.to_string())?;
        if self.stored.as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        self.put_text(STATE_KEY, &text).await?;
        self.stored = Some(text);
        self.writes += 1;
        Ok(true)
    }
}

fn durable_mode(env: &Env) -> bool {
    lookup(env, STORE_VAR).as_deref() == Some("durable_object")
}

/// The one Durable Object that owns the state.
fn durable_stub(env: &Env) -> worker::Result<worker::Stub> {
    env.durable_object(DO_BINDING)?
        .id_from_name("vigil")?
        .get_stub()
}

fn probe_point(ae: &AnalyticsEngineDataset, o: &Observation) {
    let point = AnalyticsEngineDataPointBuilder::new()
        .indexes([o.target.as_str()])
        .add_blob(o.health.as_str())
        .add_blob(truncate(o.error.as_deref().unwrap_or(""), 200).as_str())
        .add_blob("scheduled")
        .add_double(o.latency_ms as f64)
        .add_double(o.status.unwrap_or(0) as f64);
    if let Err(e) = point.write_to(ae) {
        console_log!("analytics engine write failed: {e}");
    }
}

fn host_point(ae: &AnalyticsEngineDataset, host: &str, s: &HostSample) {
    let point = AnalyticsEngineDataPointBuilder::new()
        .indexes([host])
        .add_blob("host")
        .add_double(s.cpu_percent)
        .add_double(s.mem_used_percent)
        .add_double(s.disk_used_percent)
        .add_double(s.load_1);
    if let Err(e) = point.write_to(ae) {
        console_log!("analytics engine write failed: {e}");
    }
}

fn round_point(ae: &AnalyticsEngineDataset, target: &str, r: &Round) {
    let point = AnalyticsEngineDataPointBuilder::new()
        .indexes([target])
        .add_blob("round")
        .add_blob(r.action.as_deref().unwrap_or("-"))
        .add_blob(format!("{:?}", r.planner).to_lowercase().as_str())
        .add_blob(format!("{:?}", r.outcome).to_lowercase().as_str())
        .add_double(r.finished_at_ms.saturating_sub(r.started_at_ms) as f64);
    if let Err(e) = point.write_to(ae) {
        console_log!("analytics engine write failed: {e}");
    }
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

/// Asks the Durable Object to run the cycle against its own storage.
async fn durable_cycle(env: &Env) -> Fallible<String> {
    let stub = durable_stub(env).map_err(|e| e.to_string())?;
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

/// The Durable Object store: one instance (by name) owns the state and runs
/// every cycle itself, one at a time. Its storage is strongly consistent,
/// and nothing else writes the state while a cycle runs (control requests
/// then get 503 with Retry-After), so a page or an action decided by one
/// cycle is seen by the next: exactly once.
#[durable_object]
pub struct VigilEdge {
    state: worker::State,
    env: Env,
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
        if self.cycling.get() && req.method() == Method::Post {
            let mut res = error(
                503,
                "cycle_running",
                "a cycle is running; retry in a few seconds",
            )?;
            res.headers_mut().set("retry-after", "5")?;
            return Ok(res);
        }
        match serve(&mut req, &self.env, Some(&storage)).await {
            Ok(res) => Ok(res),
            Err(e) => error(500, "internal", e.to_string()),
        }
    }
}

#[derive(Serialize)]
struct CycleReport {
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

async fn cycle(env: &Env, durable: Option<&Storage>) -> Fallible<CycleReport> {
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
    HISTORY.with(|h| *h.borrow_mut() = Some(history));
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
    while let Some(entry) = state
        .outbox
        .due(now_ms(), io.config.discord.max_per_minute as usize)
    {
        let outcome = io.deliver(&entry.message).await;
        let stop = !matches!(
            outcome,
            crate::core::alert::Delivery::Sent | crate::core::alert::Delivery::Rejected { .. }
        );
        if matches!(outcome, crate::core::alert::Delivery::Sent) {
            sent += 1;
        }
        state.outbox.record(entry.id, outcome, now_ms());
        if stop {
            break;
        }
    }
    sent
}

fn json<T: Serialize>(status: u16, body: &T) -> worker::Result<Response> {
    Ok(Response::from_json(body)?.with_status(status))
}

fn error(status: u16, code: &str, message: impl Into<String>) -> worker::Result<Response> {
    json(status, &ErrorBody::new(code, message))
}

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    let stateful = ["/ops/", "/_log", "/status"]
        .iter()
        .any(|p| req.path().starts_with(p));
    if durable_mode(&env) && stateful {
        return match durable_stub(&env) {
            Ok(stub) => stub.fetch_with_request(req).await,
            Err(e) => error(502, "durable_object_unavailable", e.to_string()),
        };
    }
    match serve(&mut req, &env, None).await {
        Ok(res) => Ok(res),
        Err(e) => error(500, "internal", e.to_string()),
    }
}

enum Access {
    Open,
    Read,
    Control,
    Jobs,
    CrashLog,
    /// The status page: no token, but only when enabled.
    Public,
}

/// Every request: `/_log` answers with CORS headers (browsers post crash
/// reports from other origins), the rest goes straight to `route`.
async fn serve(
    req: &mut Request,
    env: &Env,
    durable: Option<&Storage>,
) -> worker::Result<Response> {
    if req.path() == "/_log" {
        let mut res = match req.method() {
            Method::Options => Response::empty().map(|r| r.with_status(204)),
            _ if !within_rate(req, env, "VIGIL_CRASH_RATE").await? => error(
                429,
                "rate_limited",
                "too many requests from this address; retry in a minute",
            ),
            _ => route(req, env, durable).await,
        }?;
        for (name, value) in CRASH_CORS {
            res.headers_mut().set(name, value)?;
        }
        return Ok(res);
    }
    route(req, env, durable).await
}

/// Counts one event of the client (`CF-Connecting-IP`) through the
/// rate-limit binding `binding` (when bound): `VIGIL_CRASH_RATE` counts
/// `/_log` requests, `VIGIL_AUTH_FAIL_RATE` failed authentications.
async fn within_rate(req: &Request, env: &Env, binding: &str) -> worker::Result<bool> {
    let Ok(limiter) = env.rate_limiter(binding) else {
        return Ok(true);
    };
    let client = req
        .headers()
        .get("cf-connecting-ip")?
        .unwrap_or_else(|| "unknown".into());
    Ok(limiter.limit(client).await?.success)
}

async fn route(
    req: &mut Request,
    env: &Env,
    durable: Option<&Storage>,
) -> worker::Result<Response> {
    let path = req.path();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method();
    let access = match (&method, segments.as_slice()) {
        (Method::Get, ["healthz"]) => Access::Open,
        (Method::Get, ["status" | "status.json"]) => Access::Public,
        (Method::Post, ["_log"]) => Access::CrashLog,
        (Method::Post, ["ops", "jobs", "heartbeat"]) => Access::Jobs,
        (Method::Get, ["ops", "summary" | "incidents" | "anomalies" | "jobs" | "crashes"])
        | (Method::Get, ["ops", "incidents" | "target", _]) => Access::Read,
        (Method::Post, ["ops", "actions", _, _]) | (Method::Post, ["ops", "restart", _]) => {
            Access::Control
        }
        (Method::Post, ["ops", "incidents", _, "ack" | "resolve"])
        | (Method::Post, ["ops", "target", _, "maintenance"]) => Access::Control,
        _ => return error(404, "not_found", "no such route"),
    };
    if matches!(access, Access::Open) {
        return json(200, &serde_json::json!({"ok": true}));
    }
    let config = match load_config(env) {
        Ok(c) => c,
        Err(e) => return error(500, "no_configuration", e),
    };
    let secrets = Secrets::from_env(&config, |k| lookup(env, k));
    if let Err(why) = secrets.check_tokens() {
        return error(500, "bad_token", why);
    }
    let header = req.headers().get("authorization")?;
    let check = |t: &Option<String>| {
        t.as_deref()
            .map(TokenCheck::new)
            .is_some_and(|c| c.accepts_header(header.as_deref()))
    };
    let allowed = match access {
        Access::Public if !config.status_page.enabled => {
            return error(404, "not_found", "no such route")
        }
        Access::Public => true,
        Access::Read => check(&secrets.read_token) | check(&secrets.control_token),
        Access::Jobs => check(&secrets.jobs_token),
        Access::CrashLog => check(&secrets.crash_log_token),
        _ => check(&secrets.control_token),
    };
    if !allowed {
        if !within_rate(req, env, "VIGIL_AUTH_FAIL_RATE").await? {
            return error(
                429,
                "rate_limited",
                "too many failed authentications from this address; retry in a minute",
            );
        }
        return error(401, "unauthorized", "missing or wrong bearer token");
    }
    let (mut store, mut state) = match Store::open(env, durable).await {
        Ok(s) => s,
        Err(e) => return error(502, "kv_unavailable", e),
    };
    let now = now_ms();
    let operator = ops_requests::operator(req.headers().get("x-vigil-operator")?.as_deref());
    let url = req.inner().url();
    let query = |k: &str| ops_requests::query_param(&url, k);
    let res = match segments.as_slice() {
        ["ops", "summary"] => {
            with_history(&mut store, |h| {
                json(200, &views::summary(&config, &state, h, now, |_| None))
            })
            .await
        }
        ["ops", "crashes"] => {
            let log: CrashLog = match store.load_doc(CRASHES_KEY).await {
                Ok(l) => l,
                Err(e) => return error(502, "kv_unavailable", e),
            };
            match views::crashes(&log, query("app").as_deref(), query("limit").as_deref()) {
                Ok(list) => json(200, &list),
                Err(why) => error(400, "bad_query", why),
            }
        }
        ["_log"] => {
            let body = match body_within(req, CRASH_BODY_LIMIT).await? {
                Ok(body) => body,
                Err(too_large) => return Ok(too_large),
            };
            let (report, truncated) = match CrashReport::parse(&body) {
                Ok(r) => r,
                Err(e) => return error(400, "bad_body", e.to_string()),
            };
            let mut log: CrashLog = match store.load_doc(CRASHES_KEY).await {
                Ok(l) => l,
                Err(e) => return error(502, "kv_unavailable", e),
            };
            let stored = match crash::intake(&mut state, &mut log, report, truncated, &config, now)
            {
                Ok(stored) => stored.clone(),
                Err(e) => return error(400, "unknown_app", e.to_string()),
            };
            if let Err(e) = store.save_doc(CRASHES_KEY, &log).await {
                return error(502, "kv_unavailable", e);
            }
            // Alerts go out with the next cycle's outbox.
            json(202, &stored)
        }
        ["ops", "anomalies"] => json(200, &serde_json::json!({"anomalies": state.anomalies})),
        ["status"] => {
            let page = with_history(&mut store, |h| {
                status_page::html(&status_page::view(&config, &state, h, now))
            })
            .await;
            let mut res = Response::from_html(page)?;
            res.headers_mut()
                .set("content-security-policy", status_page::CSP)?;
            Ok(res)
        }
        ["status.json"] => {
            with_history(&mut store, |h| {
                json(200, &status_page::view(&config, &state, h, now))
            })
            .await
        }
        ["ops", "jobs"] => json(
            200,
            &serde_json::json!({"jobs": views::jobs(&config, &state)}),
        ),
        ["ops", "jobs", "heartbeat"] => {
            let body = match body_within(req, BODY_LIMIT).await? {
                Ok(body) => body,
                Err(too_large) => return Ok(too_large),
            };
            match ops_requests::heartbeat(&body) {
                Err(why) => error(400, "bad_body", why),
                Ok(hb) => match state.heartbeat(
                    &config,
                    &hb.job,
                    hb.status,
                    hb.run_id.as_deref(),
                    secrets.oncall_user.as_deref(),
                    now,
                ) {
                    // Alerts go out with the next cycle's outbox.
                    Ok(_) => json(200, &serde_json::json!({"ok": true, "job": hb.job})),
                    Err(e) => error(404, "unknown_job", e.to_string()),
                },
            }
        }
        ["ops", "incidents"] => match ops_requests::state_filter(query("state").as_deref()) {
            Ok(open) => json(200, &views::incidents(&state, open)),
            Err(why) => error(400, "bad_query", why),
        },
        ["ops", "incidents", id] => match state.incident(id) {
            Some(i) => json(200, i),
            None => error(404, "unknown_incident", format!("no incident {id:?}")),
        },
        // Each observation is a point in Analytics Engine: no list of recent
        // ones here.
        ["ops", "target", id] => {
            with_history(&mut store, |h| {
                match views::target(&config, &state, h, id, Vec::new(), now) {
                    Some(v) => json(200, &v),
                    None => error(404, "unknown_target", format!("no target {id:?}")),
                }
            })
            .await
        }
        ["ops", "incidents", id, verb] => {
            let done = if *verb == "ack" {
                state.acknowledge(id, &operator, now)
            } else {
                state.resolve(id, &operator, now)
            };
            match done {
                Ok(()) => json(200, &serde_json::json!({"ok": true, "incident": id})),
                Err(StateError::NoIncident) => {
                    error(404, "unknown_incident", format!("no incident {id:?}"))
                }
                Err(StateError::AlreadyResolved) => error(
                    409,
                    "already_resolved",
                    format!("incident {id:?} is already resolved"),
                ),
            }
        }
        ["ops", "target", id, "maintenance"] => {
            let body = match body_within(req, BODY_LIMIT).await? {
                Ok(body) => body,
                Err(too_large) => return Ok(too_large),
            };
            if config.target(id).is_none() {
                error(404, "unknown_target", format!("no target {id:?}"))
            } else {
                match ops_requests::maintenance_until(&body, now) {
                    Ok(until) => {
                        let _ = state.set_maintenance(id, until, now);
                        json(
                            200,
                            &serde_json::json!({"ok": true, "target": id, "maintenance_until_ms": until}),
                        )
                    }
                    Err(why) => error(400, "bad_body", why),
                }
            }
        }
        ["ops", "actions", host, name] => {
            manual(&config, secrets, &mut state, host, name, operator).await
        }
        ["ops", "restart", id] => match config
            .target(id)
            .and_then(|t| Some((t.host.clone()?, t.actions.first()?.clone())))
        {
            Some((host, first)) => {
                manual(&config, secrets, &mut state, &host, &first, operator).await
            }
            None => error(
                404,
                "unknown_target",
                format!("no target {id:?} with a host and actions"),
            ),
        },
        _ => error(404, "not_found", "no such route"),
    };
    if let Err(e) = store.save(&state).await {
        return error(502, "kv_unavailable", e);
    }
    res
}

/// Runs a read route's `f` on the history: this isolate's copy (unstored
/// samples included), borrowed rather than copied, else the stored one,
/// else none yet. Only the cycle replaces the isolate's copy.
async fn with_history<R>(store: &mut Store<'_>, f: impl FnOnce(&History) -> R) -> R {
    if HISTORY.with(|h| h.borrow().is_none()) {
        return f(&store.load_doc(HISTORY_KEY).await.unwrap_or_default());
    }
    // Nothing awaits between the check and here: the copy is still there.
    HISTORY.with(|h| f(h.borrow().as_ref().unwrap_or(&History::default())))
}

/// The request's body, or the 413 answer when it is over `limit`.
async fn body_within(
    req: &mut Request,
    limit: usize,
) -> worker::Result<std::result::Result<Vec<u8>, Response>> {
    let body = req.bytes().await?;
    if body.len() > limit {
        return error(413, "body_too_large", format!("body over {limit} bytes")).map(Err);
    }
    Ok(Ok(body))
}

async fn manual(
    config: &Config,
    secrets: Secrets,
    state: &mut State,
    host: &str,
    name: &str,
    by: String,
) -> worker::Result<Response> {
    // Recorded on the open incidents as it starts, like a round's decision.
    let shared = Mutex::new(std::mem::take(state));
    let start = |a: &crate::core::incident::ManualAction| {
        shared
            .lock()
            .map(|mut s| s.start_manual_action(config, a.clone()))
            .map_err(|_| "state lock poisoned".to_string())
    };
    let outcome = worker_io(config, secrets)
        .manual_action(host, name, by, &start)
        .await;
    *state = shared.into_inner().unwrap_or_else(|e| e.into_inner());
    let record = match outcome {
        Ok(r) => r,
        Err(refusal) => {
            let (status, code, message) = refusal.answer(host, name);
            return error(status, code, message);
        }
    };
    state.finish_manual_action(&record);
    match (record.result, record.error) {
        (Some(r), _) => json(200, &r),
        (None, e) => {
            let (status, code, message) = manual_failure(e);
            error(status, code, message)
        }
    }
}

//! The `/ops` routes, `/healthz`, `/_log`, `/status` and `/ui`: token
//! checks, then the same views, pages and state methods as the native API,
//! on the stored state. A change is answered only once it is stored (else
//! 503, not made).

use std::sync::Arc;

use vigil_wire::{ErrorBody, TokenCheck};
use worker::js_sys::{Object, Reflect};
use worker::{Env, Method, Request, Response, Storage};

use super::cycle::last_report;
use super::io::{now_ms, worker_io};
use super::runbooks;
use super::signal;
use super::store::{self, Store, CRASHES_KEY};
use super::{load_config, lookup};
use crate::config::Config;
use crate::core::acklink::AckLinkError;
use crate::core::budget::Budget;
use crate::core::crash::{self, CrashLog, CrashReport};
use crate::core::route::Routing;
use crate::core::state::{State, StateError};
use crate::shell::{manual_unstored, Secrets, BODY_LIMIT, CRASH_BODY_LIMIT, CRASH_CORS};
use crate::ui::{changed, Answer, Step, Ui, UiRequest, HEADERS};
use crate::{ack_page, ops_requests, status_page, views};

/// Writes one crash report costs at most: the crash log and the state.
const CRASH_REPORT_WRITES: u32 = 2;

pub fn json<T: serde::Serialize>(status: u16, body: &T) -> worker::Result<Response> {
    json_text(status, serde_json::to_string(body))
}

/// `object` (a JSON object's text) with `members` (key, JSON text) added at
/// its end. The answers that add to a typed body are built so instead of
/// through `serde_json::to_value`/`json!`, which compile every type in the
/// body for `Value`'s serializer too (bundle size).
fn object_with(mut object: String, members: &[(&str, String)]) -> String {
    object.pop();
    for (key, value) in members {
        if !object.ends_with('{') {
            object.push(',');
        }
        object.push_str(&format!("\"{key}\":{value}"));
    }
    object.push('}');
    object
}

/// What worker's `Response::from_json` does (the same header, the same
/// error), built once instead of once per body type (bundle size).
/// `/ops/summary`'s `worker`: what the Worker may spend, and what its last
/// cycle (in this isolate) spent and carried over. This and `WritesToday`
/// are typed bodies, not `json!` (the cycle report's types compiled for
/// `Value`'s serializer too); members in the order `Value` sorted them.
#[derive(serde::Serialize)]
struct WorkerSpend {
    analytics: super::analytics::Counts,
    last_cycle: Option<super::cycle::CycleReport>,
    plan: &'static str,
    subrequest_budget: u32,
}

/// `/ops/crashes`' `writes_today`.
#[derive(serde::Serialize)]
struct WritesToday {
    allowance: u32,
    day: u64,
    used: u32,
}

pub fn json_text(status: u16, text: serde_json::Result<String>) -> worker::Result<Response> {
    let Ok(text) = text else {
        return Err(worker::Error::Json((
            "Failed to encode data to json".into(),
            500,
        )));
    };
    let builder = worker::ResponseBuilder::new().with_header("content-type", "application/json")?;
    Ok(builder.with_status(status).fixed(text.into_bytes()))
}

pub fn error(status: u16, code: &str, message: impl Into<String>) -> worker::Result<Response> {
    json(status, &ErrorBody::new(code, message))
}

enum Access {
    Open,
    Read,
    Control,
    Jobs,
    CrashLog,
    Signal,
    /// The status page: no token, but only when enabled.
    Public,
    /// A page's ack link: no token, its signature is checked.
    AckLink,
}

/// Every request: `/_log` answers with CORS headers (browsers post crash
/// reports from other origins), the rest goes straight to `route`.
pub async fn serve(
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
    if req.path() == "/ui" || req.path().starts_with("/ui/") {
        return ui(req, env, durable).await;
    }
    route(req, env, durable).await
}

/// The configuration and the secrets, with the tokens checked; `Err` is the
/// answer when they cannot be had.
fn setup(env: &Env) -> std::result::Result<(Arc<Config>, Secrets), worker::Result<Response>> {
    let config = load_config(env).map_err(|e| error(500, "no_configuration", e))?;
    let secrets = Secrets::from_env(&config, |k| lookup(env, k));
    secrets
        .check_tokens()
        .map_err(|why| error(500, "bad_token", why))?;
    Ok((config, secrets))
}

/// `/ui`, the audit view: answered by `crate::ui` as on the native edge.
/// The request came over TLS when its URL (as Cloudflare received it) is
/// `https:`; then the session cookie is `Secure`.
async fn ui(req: &mut Request, env: &Env, durable: Option<&Storage>) -> worker::Result<Response> {
    let post = req.method() == Method::Post;
    let body = if post {
        match body_within(req, BODY_LIMIT).await? {
            Ok(body) => body,
            Err(too_large) => return Ok(too_large),
        }
    } else {
        Vec::new()
    };
    let url = req.inner().url();
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let Some(request) = UiRequest::parse(post, &req.path(), query, &body) else {
        return error(404, "not_found", "no such route");
    };
    let signing_in = matches!(request, UiRequest::SignIn { .. });
    let (file, secrets) = match setup(env) {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let (store, mut state) = match Store::open(env, durable, Budget::new(file.plan())).await {
        Ok(s) => s,
        Err(e) => return error(502, "kv_unavailable", e),
    };
    let config = match super::control::effective(env, &file, &state.api_targets) {
        Ok(config) => config,
        Err(e) => return error(500, "no_configuration", e),
    };
    let cookie = req.headers().get("cookie")?;
    let now = now_ms();
    let tls = url.starts_with("https:");
    let answer = match Ui::new(&secrets).answer(
        request,
        cookie.as_deref(),
        tls,
        now,
        &state,
        &config.targets,
    ) {
        Step::Answer(a) => a,
        Step::Change { id, verb } => {
            let before = state.clone();
            let done = verb.apply(&mut state, &id, now);
            let stored = store.save_change(&mut state, before).await;
            changed(&id, stored.map(|_| done))
        }
    };
    if signing_in && answer.status == 401 {
        if let Some(too_many) = auth_failure(req, env).await? {
            return Ok(too_many);
        }
    }
    page(answer)
}

fn page(a: Answer) -> worker::Result<Response> {
    let mut res = Response::from_html(a.body)?.with_status(a.status);
    let headers = res.headers_mut();
    for (name, value) in HEADERS {
        headers.set(name, value)?;
    }
    for (name, value) in [("location", a.location), ("set-cookie", a.set_cookie)] {
        if let Some(v) = value {
            headers.set(name, &v)?;
        }
    }
    Ok(res)
}

/// Counts one event of the client (`CF-Connecting-IP`) through the
/// rate-limit binding `binding` (when bound): `VIGIL_CRASH_RATE` counts
/// `/_log` requests, `VIGIL_AUTH_FAIL_RATE` failed authentications.
/// Called as JavaScript (`super::call`), not by worker's `RateLimiter`,
/// whose options and outcome go through serde_wasm_bindgen.
async fn within_rate(req: &Request, env: &Env, binding: &str) -> worker::Result<bool> {
    let limiter = Reflect::get(env, &binding.into())?;
    if !limiter.is_object() {
        return Ok(true);
    }
    let client = req
        .headers()
        .get("cf-connecting-ip")?
        .unwrap_or_else(|| "unknown".into());
    let options = Object::new();
    Reflect::set(&options, &"key".into(), &client.into())?;
    let outcome = super::call(&limiter, "limit", &[options.into()]).await?;
    Ok(Reflect::get(&outcome, &"success".into())?.as_bool() == Some(true))
}

/// Counts one failed authentication of the client; `Some` is the 429 to
/// answer once it has failed too often.
async fn auth_failure(req: &Request, env: &Env) -> worker::Result<Option<Response>> {
    if within_rate(req, env, "VIGIL_AUTH_FAIL_RATE").await? {
        return Ok(None);
    }
    error(
        429,
        "rate_limited",
        "too many failed authentications from this address; retry in a minute",
    )
    .map(Some)
}

/// An ack-link page as the answer.
fn html(p: ack_page::Page) -> worker::Result<Response> {
    Ok(Response::from_html(p.html)?.with_status(p.status))
}

/// A write that could not be stored: the change was not made.
pub fn not_stored(e: impl std::fmt::Display) -> worker::Result<Response> {
    let mut res = error(
        503,
        "store_unavailable",
        format!("the change could not be stored, so it was not made: {e}"),
    )?;
    res.headers_mut().set("retry-after", "30")?;
    Ok(res)
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
        (Method::Post, ["ops", "signal"]) => Access::Signal,
        (Method::Post, ["ops", "jobs", "heartbeat"]) => Access::Jobs,
        (
            Method::Get,
            ["ops", "summary" | "incidents" | "anomalies" | "jobs" | "crashes" | "vantage"],
        )
        | (Method::Get, ["ops", "incidents" | "target", _])
        | (Method::Get, ["ops", "targets" | "audit" | "approvals"]) => Access::Read,
        (Method::Post, ["ops", "targets"]) | (Method::Delete, ["ops", "targets", _]) => {
            Access::Control
        }
        (Method::Post, ["ops", "actions", _, _]) | (Method::Post, ["ops", "restart", _]) => {
            Access::Control
        }
        (Method::Get | Method::Post, ["ops", "ack-link"]) => Access::AckLink,
        (Method::Post, ["ops", "incidents", _, "ack" | "resolve"])
        | (Method::Post, ["ops", "target", _, "maintenance"])
        | (Method::Post, ["ops", "runbook", _, "execute"])
        | (Method::Post, ["ops", "approvals", _, _]) => Access::Control,
        _ => return error(404, "not_found", "no such route"),
    };
    if matches!(access, Access::Open) {
        // What this isolate saw of the store (`core::store_health`).
        let store = store::health();
        let status = if store.ok { 200 } else { 503 };
        let body = serde_json::to_string(&store)
            .map(|s| object_with("{}".into(), &[("ok", store.ok.to_string()), ("store", s)]));
        return json_text(status, body);
    }
    let (file, secrets) = match setup(env) {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let header = req.headers().get("authorization")?;
    let check = |t: &Option<String>| {
        t.as_deref()
            .map(TokenCheck::new)
            .is_some_and(|c| c.accepts_header(header.as_deref()))
    };
    let allowed = match access {
        Access::Public if !file.status_page.enabled => {
            return error(404, "not_found", "no such route")
        }
        Access::Public | Access::AckLink => true,
        Access::Read => check(&secrets.read_token) | check(&secrets.control_token),
        Access::Jobs => check(&secrets.jobs_token),
        Access::CrashLog => check(&secrets.crash_log_token),
        Access::Signal => check(&secrets.signal_token),
        _ => check(&secrets.control_token),
    };
    if !allowed {
        return match auth_failure(req, env).await? {
            Some(too_many) => Ok(too_many),
            None => error(401, "unauthorized", "missing or wrong bearer token"),
        };
    }
    let ack_links = secrets.ack_links(&file);
    let budget = Budget::new(file.plan());
    let _turn = runbooks::turn(&segments).await;
    let (store, mut state) = match Store::open(env, durable, budget).await {
        Ok(s) => s,
        Err(e) => return error(502, "kv_unavailable", e),
    };
    let config = match super::control::effective(env, &file, &state.api_targets) {
        Ok(config) => config,
        Err(e) => return error(500, "no_configuration", e),
    };
    state.ack_links = ack_links.ok().flatten();
    // Alerts queued by a request go where the cycle's would (`[[route]]`,
    // `[[webhook]]`): the routing is not stored with the state.
    state.outbox.routing = Routing::from_config(&config);
    // Read routes store nothing; a change is stored before it is answered.
    let changes = matches!(access, Access::Control | Access::Jobs | Access::CrashLog);
    let before = state.clone();
    let now = now_ms();
    let operator = ops_requests::operator(req.headers().get("x-vigil-operator")?.as_deref());
    let url = req.inner().url();
    let query = |k: &str| ops_requests::query_param(&url, k);
    let res = match segments.as_slice() {
        ["ops", "targets" | "audit", ..] => {
            let state = (&store, &mut state, before);
            return super::control::serve(req, env, &segments, &file, state, &operator).await;
        }
        ["ops", "summary"] => {
            let summary = store
                .with_history(|h| {
                    serde_json::to_string(&views::summary(&config, &state, h, now, |_| None))
                })
                .await;
            match summary {
                Ok(summary) => {
                    let worker = serde_json::to_string(&WorkerSpend {
                        analytics: super::analytics::counts(),
                        last_cycle: last_report(),
                        plan: config.plan().as_str(),
                        subrequest_budget: config.plan().subrequest_budget(),
                    });
                    json_text(200, worker.map(|w| object_with(summary, &[("worker", w)])))
                }
                Err(e) => error(500, "internal", e.to_string()),
            }
        }
        ["ops", "crashes"] => {
            let doc: CrashLog = match store.load_doc(CRASHES_KEY).await {
                Ok(l) => l,
                Err(e) => return error(502, "kv_unavailable", e),
            };
            match views::crashes(&doc, query("app").as_deref(), query("limit").as_deref()) {
                Ok(list) => match serde_json::to_string(&list) {
                    Ok(list) => {
                        // What crash reports spent of their daily writes.
                        let writes = serde_json::to_string(&WritesToday {
                            allowance: config.plan().crash_writes_per_day(),
                            day: doc.writes.day,
                            used: doc.writes.used,
                        });
                        json_text(
                            200,
                            writes.map(|w| object_with(list, &[("writes_today", w)])),
                        )
                    }
                    Err(e) => error(500, "internal", e.to_string()),
                },
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
            let mut doc: CrashLog = match store.load_doc(CRASHES_KEY).await {
                Ok(l) => l,
                Err(e) => return error(502, "kv_unavailable", e),
            };
            // A report costs up to two writes (the log, and the state it
            // changes): refused, nothing changed, once today's allowance is
            // spent, so a flood cannot use up the writes state saves need.
            let allowance = config.plan().crash_writes_per_day();
            if let Err(wait_ms) = doc.writes.take(CRASH_REPORT_WRITES, allowance, now) {
                let mut res = error(
                    429,
                    "crash_writes_spent",
                    format!("the {allowance} writes a day kept for crash reports are spent; report not stored"),
                )?;
                res.headers_mut()
                    .set("retry-after", &wait_ms.div_ceil(1000).to_string())?;
                return Ok(res);
            }
            let stored = match crash::intake(&mut state, &mut doc, report, truncated, &config, now)
            {
                Ok(stored) => stored.clone(),
                Err(e) => return error(400, "unknown_app", e.to_string()),
            };
            if let Err(e) = store.save_doc(CRASHES_KEY, &doc).await {
                let mut kept = before;
                store.failed(&mut kept, &e);
                return not_stored(e);
            }
            // Alerts go out with the next cycle's outbox.
            json(202, &stored)
        }
        ["ops", "vantage"] => json(200, &views::vantage(&config, &state, now)),
        ["ops", "anomalies"] => json_text(
            200,
            serde_json::to_string(&state.anomalies)
                .map(|a| object_with("{}".into(), &[("anomalies", a)])),
        ),
        ["ops", "ack-link"] => {
            let (incident, sig) = (
                query("incident").unwrap_or_default(),
                query("sig").unwrap_or_default(),
            );
            let Some(expires) = query("expires").and_then(|e| e.parse().ok()) else {
                return html(ack_page::refused(AckLinkError::BadSignature));
            };
            if method == Method::Get {
                // A GET acknowledges nothing (link previews follow links).
                let links = state.ack_links.as_ref();
                return html(ack_page::open(links, &incident, expires, &sig, now));
            }
            let done = state.acknowledge_by_link(&incident, expires, &sig, now);
            if done.is_ok() {
                if let Err(e) = store.save_change(&mut state, before).await {
                    return html(ack_page::unstored(&e));
                }
            }
            return html(ack_page::outcome(done));
        }
        ["status"] => {
            let page = store
                .with_history(|h| status_page::html(&status_page::view(&config, &state, h, now)))
                .await;
            let mut res = Response::from_html(page)?;
            res.headers_mut()
                .set("content-security-policy", status_page::CSP)?;
            Ok(res)
        }
        ["status.json"] => {
            store
                .with_history(|h| json(200, &status_page::view(&config, &state, h, now)))
                .await
        }
        ["ops", "jobs"] => json_text(
            200,
            serde_json::to_string(&views::jobs(&config, &state))
                .map(|j| object_with("{}".into(), &[("jobs", j)])),
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
            store
                .with_history(
                    |h| match views::target(&config, &state, h, id, Vec::new(), now) {
                        Some(v) => json(200, &v),
                        None => error(404, "unknown_target", format!("no target {id:?}")),
                    },
                )
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
        ["ops", "signal"] => {
            let body = match body_within(req, BODY_LIMIT).await? {
                Ok(body) => body,
                Err(too_large) => return Ok(too_large),
            };
            // The secrets of the effective targets (API targets' `headers_env`).
            let io = worker_io(&config, Secrets::from_env(&config, |k| lookup(env, k)));
            return signal::take(&body, env, &io, &store, state, durable).await;
        }
        ["ops", "approvals"] => runbooks::approvals(&state),
        ["ops", "runbook", id, "execute"] => {
            runbooks::execute(&config, &mut state, id, &operator, now)
        }
        ["ops", "approvals", id, verb] => runbooks::decide(&mut state, id, verb, &operator, now),
        ["ops", "actions", host, name] => {
            return manual(&config, secrets, &store, &mut state, host, name, operator).await
        }
        ["ops", "restart", id] => match config
            .target(id)
            .and_then(|t| Some((t.host.clone()?, t.actions.first()?.clone())))
        {
            Some((host, first)) => {
                return manual(
                    &config, secrets, &store, &mut state, &host, &first, operator,
                )
                .await
            }
            None => error(
                404,
                "unknown_target",
                format!("no target {id:?} with a host and actions"),
            ),
        },
        _ => error(404, "not_found", "no such route"),
    };
    if changes {
        if let Err(e) = store.save_change(&mut state, before).await {
            return not_stored(e);
        }
    }
    res
}

/// The request's body, or the 413 answer when it is over `limit`.
pub async fn body_within(
    req: &mut Request,
    limit: usize,
) -> worker::Result<std::result::Result<Vec<u8>, Response>> {
    let body = req.bytes().await?;
    if body.len() > limit {
        return error(413, "body_too_large", format!("body over {limit} bytes")).map(Err);
    }
    Ok(Ok(body))
}

/// A manual action: recorded on the open incidents and stored before it
/// is sent (like a round's decision), completed when the agent answers.
async fn manual(
    config: &Arc<Config>,
    secrets: Secrets,
    store: &Store<'_>,
    state: &mut State,
    host: &str,
    name: &str,
    by: String,
) -> worker::Result<Response> {
    let io = worker_io(config, secrets);
    let record = match io.prepare_manual_action(host, name, by).await {
        Ok(r) => r,
        Err(refusal) => {
            let (status, code, message) = refusal.answer(host, name);
            return error(status, code, message);
        }
    };
    let before = state.clone();
    state.start_manual_action(config, record.clone());
    if let Err(e) = store.save_change(state, before).await {
        return not_stored(e);
    }
    let (record, answer) = io.send_manual_action(record).await;
    state.finish_manual_action(&record);
    // It ran: a result that cannot be stored stays in this isolate until a
    // save works, and the answer says so.
    if let Err(e) = store.save(state).await {
        return error(503, "store_unavailable", manual_unstored(&record, &e));
    }
    match answer {
        Ok(r) => json(200, &r),
        Err(e) => {
            let (status, code, message) = e.answer("action_failed");
            error(status, code, message)
        }
    }
}

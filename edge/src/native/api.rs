//! The native runner's HTTP API: read routes (OPS_READ_TOKEN or
//! CONTROL_TOKEN) and control routes (CONTROL_TOKEN only).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;
use tower_http::timeout::TimeoutLayer;
use vigil_wire::{ErrorBody, TokenCheck};

use super::io::now_ms;
use super::limits::ClientLimits;
use super::report;
use super::runner::Runner;
use super::store::StoreError;
use crate::core::acklink::AckLinkError;
use crate::core::control::{TargetChange, TargetChangeError};
use crate::core::crash::CrashReport;
use crate::core::incident::ManualAction;
use crate::core::runbook::{RunbookError, RunbookRun};
use crate::core::signal::HostSignal;
use crate::core::state::StateError;
use crate::core::vantage::{Batch, BatchError};
use crate::shell::{manual_unstored, BODY_LIMIT, CRASH_BODY_LIMIT, CRASH_CORS};
use crate::{ack_page, ops_requests, shell, views};

struct Api {
    runner: Arc<Runner>,
    read: Vec<TokenCheck>,
    control: Option<TokenCheck>,
    jobs: Option<TokenCheck>,
    crash_log: Option<TokenCheck>,
    signal: Option<TokenCheck>,
    observations: Option<String>,
    limits: Arc<ClientLimits>,
}

type Shared = Arc<Api>;

pub fn router(runner: Arc<Runner>) -> Router {
    let secrets = runner.io.secrets().clone();
    let control = secrets.control_token.as_deref().map(TokenCheck::new);
    let read = [
        secrets.read_token.as_deref(),
        secrets.control_token.as_deref(),
    ]
    .into_iter()
    .flatten()
    .map(TokenCheck::new)
    .collect();
    let jobs = secrets.jobs_token.as_deref().map(TokenCheck::new);
    let crash_log = secrets.crash_log_token.as_deref().map(TokenCheck::new);
    let signal = secrets.signal_token.as_deref().map(TokenCheck::new);
    let limits = ClientLimits::start(&runner.config());
    // Routes with their own access rules: /metrics, the status page, /ui
    // (its failed sign-ins count like failed authentications).
    let own_rules = super::metrics::router(runner.clone())
        .merge(super::status::router(runner.clone()))
        .merge(super::ui::router(runner.clone(), limits.clone()));
    let api = Arc::new(Api {
        limits,
        runner,
        read,
        control,
        jobs,
        crash_log,
        signal,
        observations: secrets.observations_token.clone(),
    });
    let reads = Router::new()
        .route("/ops/summary", get(summary))
        .route("/ops/incidents", get(incidents))
        .route("/ops/incidents/{id}", get(incident))
        .route("/ops/target/{id}", get(target))
        .route("/ops/anomalies", get(anomalies))
        .route("/ops/jobs", get(list_jobs))
        .route("/ops/crashes", get(crashes))
        .route("/ops/vantage", get(vantage))
        .route("/ops/targets", get(list_targets))
        .route("/ops/audit", get(audit))
        .route("/ops/approvals", get(approvals))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_read));
    // Manual actions last as long as the action: no request timeout.
    let actions = Router::new()
        .route("/ops/actions/{host}/{name}", post(manual_action))
        .route("/ops/restart/{target}", post(restart_target))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_control));
    let controls = Router::new()
        .route("/ops/incidents/{id}/ack", post(ack))
        .route("/ops/incidents/{id}/resolve", post(resolve))
        .route("/ops/target/{id}/maintenance", post(maintenance))
        .route("/ops/targets", post(put_target))
        .route("/ops/targets/{id}", delete(delete_target))
        .route("/ops/runbook/{id}/execute", post(execute_runbook))
        .route("/ops/approvals/{id}/{decision}", post(decide_approval))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_control));
    let heartbeats = Router::new()
        .route("/ops/jobs/heartbeat", post(heartbeat))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_jobs));
    let signals = Router::new()
        .route("/ops/signal", post(host_signal))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_signal));
    let observations = Router::new()
        .route("/ops/observations", post(observations))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_signed))
        .layer(DefaultBodyLimit::max(report::BODY_LIMIT));
    let crash_log = Router::new()
        .route("/_log", post(crash_report))
        .route_layer(middleware::from_fn_with_state(
            api.clone(),
            require_crash_log,
        ))
        .route_layer(middleware::from_fn_with_state(api.clone(), limit_crash_log))
        .route("/_log", axum::routing::options(crash_preflight))
        .layer(DefaultBodyLimit::max(CRASH_BODY_LIMIT));
    // The signature is the credential: no token.
    let ack_links = Router::new().route("/ops/ack-link", get(ack_link_page).post(ack_link));
    let timed = Router::new()
        .route("/healthz", get(healthz))
        .merge(ack_links)
        .merge(heartbeats)
        .merge(signals)
        .merge(reads)
        .merge(controls)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .merge(crash_log)
        .merge(observations);
    timed_out_as_408(timed)
        .merge(actions.layer(DefaultBodyLimit::max(BODY_LIMIT)))
        .with_state(api)
        .merge(own_rules)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed",
            )
        })
}

/// A request's headers must arrive within this long of the connection
/// opening or of the previous answer; otherwise the connection is closed
/// (`vigil_wire::listen`: idle keep-alive connections too).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A request, its body included, must be read and answered within this
/// long (manual actions excepted: they last as long as the action).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `router`'s requests answered 408 (closing the connection, whose request
/// was not read to its end) when they take longer than [`REQUEST_TIMEOUT`]:
/// a client that holds its body back does not hold a connection.
fn timed_out_as_408(router: Router<Shared>) -> Router<Shared> {
    router
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(middleware::map_response(|res: Response| async move {
            if res.status() != StatusCode::REQUEST_TIMEOUT {
                return res;
            }
            let mut res = error(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request was not received within {} s",
                    REQUEST_TIMEOUT.as_secs()
                ),
            );
            res.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            res
        }))
}

pub(super) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(ErrorBody::new(code, message))).into_response()
}

/// The answer to a body over `limit`. The rest of the body is never read,
/// so the connection cannot carry another request: the answer says so, or a
/// client that reuses it gets a broken answer.
fn too_large(limit: usize) -> Response {
    let mut res = error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("body over {limit} bytes"),
    );
    res.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    res
}

/// The answer to a change that could not be stored (and so was not made).
fn not_stored(e: &StoreError) -> Response {
    let mut res = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        format!("the change could not be stored, so it was not made: {e}"),
    );
    res.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("30"));
    res
}

/// 200 while the state can be stored; 503 with the store's error when not.
async fn healthz(State(api): State<Shared>) -> Response {
    let store = api.runner.store_health();
    let status = if store.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"ok": store.ok, "store": store}))).into_response()
}

pub(super) fn unauthorized() -> Response {
    let mut res = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong bearer token",
    );
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    res
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()
}

async fn require_read(State(api): State<Shared>, req: Request, next: Next) -> Response {
    let header = bearer(req.headers());
    // Every check runs, so timing does not tell which token matched.
    let ok = api
        .read
        .iter()
        .fold(false, |ok, t| t.accepts_header(header) | ok);
    if ok {
        next.run(req).await
    } else {
        refuse(&api, &req)
    }
}

/// A request without a valid token: 401, counted per client; 429 once the
/// client has failed too often.
fn refuse(api: &Api, req: &Request) -> Response {
    api.limits.auth_failure(req).unwrap_or_else(unauthorized)
}

/// Runs the request when `token` is configured and presented.
async fn admit(api: &Api, token: Option<&TokenCheck>, req: Request, next: Next) -> Response {
    if token.is_some_and(|t| t.accepts_header(bearer(req.headers()))) {
        next.run(req).await
    } else {
        refuse(api, &req)
    }
}

async fn require_control(State(api): State<Shared>, req: Request, next: Next) -> Response {
    admit(&api, api.control.as_ref(), req, next).await
}

async fn require_jobs(State(api): State<Shared>, req: Request, next: Next) -> Response {
    admit(&api, api.jobs.as_ref(), req, next).await
}

async fn require_signal(State(api): State<Shared>, req: Request, next: Next) -> Response {
    admit(&api, api.signal.as_ref(), req, next).await
}

/// A prober's batch must be signed with `OBSERVATIONS_TOKEN`
/// (`native::report`); the body is read here to check it.
async fn require_signed(State(api): State<Shared>, req: Request, next: Next) -> Response {
    let Some(token) = api.observations.as_deref() else {
        return refuse(&api, &req);
    };
    let (parts, body) = req.into_parts();
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (timestamp, signature) = (
        header(shell::TIMESTAMP_HEADER),
        header(shell::SIGNATURE_HEADER),
    );
    let Ok(bytes) = axum::body::to_bytes(body, report::BODY_LIMIT).await else {
        return too_large(report::BODY_LIMIT);
    };
    let req = Request::from_parts(parts, axum::body::Body::from(bytes.clone()));
    if !shell::verify_signature(token, &timestamp, &signature, &bytes) {
        return refuse(&api, &req);
    }
    next.run(req).await
}

async fn require_crash_log(State(api): State<Shared>, req: Request, next: Next) -> Response {
    let mut res = admit(&api, api.crash_log.as_ref(), req, next).await;
    with_cors(&mut res);
    res
}

/// `/_log` takes `crash_log.per_minute` requests a minute per client.
async fn limit_crash_log(State(api): State<Shared>, req: Request, next: Next) -> Response {
    match api.limits.crash_report(&req) {
        None => next.run(req).await,
        Some(mut res) => {
            with_cors(&mut res);
            res
        }
    }
}

fn with_cors(res: &mut Response) {
    for (name, value) in CRASH_CORS {
        res.headers_mut()
            .insert(name, header::HeaderValue::from_static(value));
    }
}

async fn crash_preflight() -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    with_cors(&mut res);
    res
}

async fn crash_report(State(api): State<Shared>, body: Result<Bytes, BytesRejection>) -> Response {
    let Ok(body) = body else {
        return too_large(CRASH_BODY_LIMIT);
    };
    let (report, truncated) = match CrashReport::parse(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_body", e.to_string()),
    };
    match api.runner.take_crash(report, truncated) {
        Ok(Ok(crash)) => (StatusCode::ACCEPTED, Json(crash)).into_response(),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, "unknown_app", e.to_string()),
        Err(e) => not_stored(&e),
    }
}

async fn crashes(
    State(api): State<Shared>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    api.runner.read_crashes(|log| {
        match views::crashes(
            log,
            q.get("app").map(String::as_str),
            q.get("limit").map(String::as_str),
        ) {
            Ok(list) => Json(list).into_response(),
            Err(why) => error(StatusCode::BAD_REQUEST, "bad_query", why),
        }
    })
}

fn operator(headers: &HeaderMap) -> String {
    ops_requests::operator(
        headers
            .get("x-vigil-operator")
            .and_then(|v| v.to_str().ok()),
    )
}

async fn summary(State(api): State<Shared>) -> Response {
    let now = now_ms();
    let runner = &api.runner;
    Json(runner.read_with_history(|s, h| {
        views::summary(&runner.config(), s, h, now, |id| {
            runner.recent(id).into_iter().next()
        })
    }))
    .into_response()
}

async fn incidents(
    State(api): State<Shared>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let open = match ops_requests::state_filter(q.get("state").map(String::as_str)) {
        Ok(o) => o,
        Err(why) => return error(StatusCode::BAD_REQUEST, "bad_query", why),
    };
    api.runner
        .read(|s| Json(views::incidents(s, open)).into_response())
}

async fn incident(State(api): State<Shared>, Path(id): Path<String>) -> Response {
    match api.runner.read(|s| s.incident(&id).cloned()) {
        Some(i) => Json(i).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "unknown_incident",
            format!("no incident {id:?}"),
        ),
    }
}

async fn target(State(api): State<Shared>, Path(id): Path<String>) -> Response {
    let now = now_ms();
    let recent = api.runner.recent(&id);
    api.runner.read_with_history(|s, h| {
        match views::target(&api.runner.config(), s, h, &id, recent, now) {
            Some(v) => Json(v).into_response(),
            None => error(
                StatusCode::NOT_FOUND,
                "unknown_target",
                format!("no target {id:?}"),
            ),
        }
    })
}

async fn list_jobs(State(api): State<Shared>) -> Response {
    let config = &api.runner.config();
    api.runner
        .read(|s| Json(json!({"jobs": views::jobs(config, s)})).into_response())
}

async fn heartbeat(State(api): State<Shared>, body: Result<Bytes, BytesRejection>) -> Response {
    let Ok(body) = body else {
        return too_large(BODY_LIMIT);
    };
    let hb = match ops_requests::heartbeat(&body) {
        Ok(hb) => hb,
        Err(why) => return error(StatusCode::BAD_REQUEST, "bad_body", why),
    };
    let config = api.runner.config().clone();
    let oncall = api.runner.io.secrets().oncall_user.clone();
    let done = api.runner.try_update(|s| {
        Ok(s.heartbeat(
            &config,
            &hb.job,
            hb.status,
            hb.run_id.as_deref(),
            oncall.as_deref(),
            now_ms(),
        ))
    });
    match done {
        Ok(Ok(_)) => {
            api.runner.deliver_soon();
            Json(json!({"ok": true, "job": hb.job})).into_response()
        }
        Ok(Err(e)) => error(StatusCode::NOT_FOUND, "unknown_job", e.to_string()),
        Err(e) => not_stored(&e),
    }
}

/// A host's signal: 202 with the targets probed at once (or why none is).
async fn host_signal(State(api): State<Shared>, body: Result<Bytes, BytesRejection>) -> Response {
    let Ok(body) = body else {
        return too_large(BODY_LIMIT);
    };
    let sig = match HostSignal::parse(&body) {
        Ok(s) => s,
        Err(why) => return error(StatusCode::BAD_REQUEST, "bad_body", why),
    };
    let outcome = api.runner.signal(&sig);
    tracing::info!(
        host = %sig.host, service = %sig.service, event = %sig.event, at_ms = sig.at_ms, probing = ?outcome.probing, throttled = ?outcome.throttled, "host signal");
    (StatusCode::ACCEPTED, Json(outcome)).into_response()
}

/// A remote prober's batch: 200 with what was taken, 400 naming the
/// field, 409 for a replayed one, 503 when it cannot be stored.
async fn observations(
    State(api): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(body) = body else {
        return too_large(report::BODY_LIMIT);
    };
    let batch = match Batch::parse(&body) {
        Ok(b) => b,
        Err(why) => return error(StatusCode::BAD_REQUEST, "bad_body", why.to_string()),
    };
    let timestamp = headers
        .get(shell::TIMESTAMP_HEADER)
        .and_then(|v| v.to_str().ok());
    if timestamp != Some(batch.sent_at_ms.to_string().as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "x-vigil-timestamp: must be the batch's sent_at_ms",
        );
    }
    match api.runner.take_batch(&batch) {
        Ok(Ok(outcome)) => Json(outcome).into_response(),
        Ok(Err(e @ BatchError::Replayed { .. })) => {
            error(StatusCode::CONFLICT, "replayed", e.to_string())
        }
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, "bad_body", e.to_string()),
        Err(e) => not_stored(&e),
    }
}

async fn vantage(State(api): State<Shared>) -> Response {
    let config = api.runner.config();
    let view = api
        .runner
        .read(|s| serde_json::to_value(views::vantage(&config, s, now_ms())));
    match view {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn anomalies(State(api): State<Shared>) -> Response {
    Json(api.runner.read(|s| json!({"anomalies": s.anomalies}))).into_response()
}

/// Runs an allowlisted action by hand, recorded on the open incidents
/// before it is sent and completed when it ends.
async fn run_manual(api: &Api, host: &str, name: &str, by: String) -> Response {
    let runner = &api.runner;
    let config = runner.config().clone();
    let start = |a: &ManualAction| {
        runner
            .try_update(|s| {
                s.start_manual_action(&config, a.clone());
                Ok(())
            })
            .map_err(|e| e.to_string())
    };
    let (record, answer) = match runner.io.manual_action(host, name, by, &start).await {
        Ok(r) => r,
        Err(refusal) => {
            let (status, code, message) = refusal.answer(host, name);
            return error(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                code,
                message,
            );
        }
    };
    // It ran: the record stays in memory even if it cannot be stored.
    let stored = runner.try_update(|s| {
        s.finish_manual_action(&record);
        Ok(())
    });
    if let Err(e) = stored {
        runner.update(|s| s.finish_manual_action(&record));
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            manual_unstored(&record, &e.to_string()),
        );
    }
    match answer {
        Ok(r) => Json(r).into_response(),
        Err(e) => {
            let (status, code, message) = e.answer("action_failed");
            error(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                code,
                message,
            )
        }
    }
}

async fn manual_action(
    State(api): State<Shared>,
    Path((host, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    run_manual(&api, &host, &name, operator(&headers)).await
}

async fn restart_target(
    State(api): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(t) = api.runner.config().target(&id).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_target",
            format!("no target {id:?}"),
        );
    };
    let (Some(host), Some(first)) = (t.host.as_deref(), t.actions.first()) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_ladder",
            format!("target {id:?} has no host or actions"),
        );
    };
    run_manual(&api, host, first, operator(&headers)).await
}

fn state_result(r: Result<Result<(), StateError>, StoreError>, id: &str) -> Response {
    match r {
        Ok(Ok(())) => Json(json!({"ok": true, "incident": id})).into_response(),
        Err(e) => not_stored(&e),
        Ok(Err(StateError::NoIncident)) => error(
            StatusCode::NOT_FOUND,
            "unknown_incident",
            format!("no incident {id:?}"),
        ),
        Ok(Err(StateError::AlreadyResolved)) => error(
            StatusCode::CONFLICT,
            "already_resolved",
            format!("incident {id:?} is already resolved"),
        ),
    }
}

async fn ack(State(api): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let by = operator(&headers);
    state_result(
        api.runner
            .try_update(|s| Ok(s.acknowledge(&id, &by, now_ms()))),
        &id,
    )
}

#[derive(serde::Deserialize)]
struct AckLinkQuery {
    incident: String,
    expires: u64,
    sig: String,
}

/// An ack-link page as the answer.
fn html(p: ack_page::Page) -> Response {
    (
        StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        p.html,
    )
        .into_response()
}

/// The confirmation page: a GET acknowledges nothing (link previews).
async fn ack_link_page(
    State(api): State<Shared>,
    query: Result<Query<AckLinkQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return html(ack_page::refused(AckLinkError::BadSignature));
    };
    html(api.runner.read(|s| {
        ack_page::open(
            s.ack_links.as_ref(),
            &q.incident,
            q.expires,
            &q.sig,
            now_ms(),
        )
    }))
}

async fn ack_link(
    State(api): State<Shared>,
    query: Result<Query<AckLinkQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return html(ack_page::refused(AckLinkError::BadSignature));
    };
    let done = api
        .runner
        .try_update(|s| Ok(s.acknowledge_by_link(&q.incident, q.expires, &q.sig, now_ms())));
    html(match done {
        Ok(done) => ack_page::outcome(done),
        Err(e) => ack_page::unstored(&e.to_string()),
    })
}

async fn resolve(
    State(api): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let by = operator(&headers);
    state_result(
        api.runner.try_update(|s| Ok(s.resolve(&id, &by, now_ms()))),
        &id,
    )
}

async fn maintenance(
    State(api): State<Shared>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(body) = body else {
        return too_large(BODY_LIMIT);
    };
    if api.runner.config().target(&id).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_target",
            format!("no target {id:?}"),
        );
    }
    let now = now_ms();
    let until = match ops_requests::maintenance_until(&body, now) {
        Ok(u) => u,
        Err(why) => return error(StatusCode::BAD_REQUEST, "bad_body", why),
    };
    match api
        .runner
        .try_update(|s| Ok(s.set_maintenance(&id, until, now)))
    {
        Ok(_) => {
            Json(json!({"ok": true, "target": id, "maintenance_until_ms": until})).into_response()
        }
        Err(e) => not_stored(&e),
    }
}

async fn list_targets(State(api): State<Shared>) -> Response {
    Json(api.runner.targets_listing()).into_response()
}

async fn audit(State(api): State<Shared>) -> Response {
    Json(
        api.runner
            .read(|s| crate::core::control::audit_view(&s.audit)),
    )
    .into_response()
}

/// The answer to a target change: 200 with what was done, or why not.
fn target_change(r: Result<Result<TargetChange, TargetChangeError>, StoreError>) -> Response {
    match r {
        Err(e) => not_stored(&e),
        Ok(done) => {
            let (status, body) = views::target_change(done);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, Json(body)).into_response()
        }
    }
}

async fn put_target(
    State(api): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(body) = body else {
        return too_large(BODY_LIMIT);
    };
    let body = match ops_requests::target_body(&body) {
        Ok(v) => v,
        Err(why) => return error(StatusCode::BAD_REQUEST, "bad_body", why),
    };
    let by = operator(&headers);
    target_change(
        api.runner
            .change_targets(|s, files| s.put_api_target(files, body, &by, now_ms())),
    )
}

async fn delete_target(
    State(api): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let by = operator(&headers);
    target_change(
        api.runner
            .change_targets(|s, files| s.remove_api_target(files, &id, &by, now_ms())),
    )
}

/// Runbook runs, newest first (those awaiting approval among them).
async fn approvals(State(api): State<Shared>) -> Response {
    match api.runner.read(views::runbook_runs) {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// The answer to a runbook request or decision.
fn run_answer(
    r: Result<Result<RunbookRun, RunbookError>, StoreError>,
    ok: StatusCode,
    runner: &Arc<Runner>,
) -> Response {
    match r {
        Ok(Ok(run)) => {
            runner.start_runs();
            runner.deliver_soon();
            (
                ok,
                Json(views::RunAnswer {
                    ok: true,
                    run: &run,
                }),
            )
                .into_response()
        }
        Err(e) => not_stored(&e),
        Ok(Err(e)) => {
            runner.deliver_soon();
            let (status, code, message) = e.answer();
            error(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                code,
                message,
            )
        }
    }
}

async fn execute_runbook(
    State(api): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let by = operator(&headers);
    let config = api.runner.config();
    let done = api
        .runner
        .try_update(|s| Ok(s.execute_runbook(&config, &id, &by, now_ms())));
    run_answer(done, StatusCode::ACCEPTED, &api.runner)
}

async fn decide_approval(
    State(api): State<Shared>,
    Path((id, decision)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(approve) = ops_requests::approval_verb(&decision) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such route");
    };
    let by = operator(&headers);
    let done = api
        .runner
        .try_update(|s| Ok(s.decide_approval(&id, approve, &by, now_ms())));
    run_answer(done, StatusCode::OK, &api.runner)
}

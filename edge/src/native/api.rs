//! The native runner's HTTP API: read routes (OPS_READ_TOKEN or
//! CONTROL_TOKEN) and control routes (CONTROL_TOKEN only).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use vigil_wire::{ErrorBody, TokenCheck};

use super::io::now_ms;
use super::runner::Runner;
use crate::core::crash::CrashReport;
use crate::core::state::StateError;
use crate::shell::{BODY_LIMIT, CRASH_BODY_LIMIT, CRASH_CORS};
use crate::{ops_requests, views};

struct Api {
    runner: Arc<Runner>,
    read: Vec<TokenCheck>,
    control: Option<TokenCheck>,
    jobs: Option<TokenCheck>,
    crash_log: Option<TokenCheck>,
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
    if control.is_none() {
        tracing::warn!("CONTROL_TOKEN is not set: control routes refuse every request");
    }
    let jobs = secrets.jobs_token.as_deref().map(TokenCheck::new);
    let crash_log = secrets.crash_log_token.as_deref().map(TokenCheck::new);
    // Routes with their own access rules: /metrics, the status page, /ui.
    let own_rules = super::metrics::router(runner.clone())
        .merge(super::status::router(runner.clone()))
        .merge(super::ui::router(runner.clone()));
    let api = Arc::new(Api {
        runner,
        read,
        control,
        jobs,
        crash_log,
    });
    let reads = Router::new()
        .route("/ops/summary", get(summary))
        .route("/ops/incidents", get(incidents))
        .route("/ops/incidents/{id}", get(incident))
        .route("/ops/target/{id}", get(target))
        .route("/ops/anomalies", get(anomalies))
        .route("/ops/jobs", get(list_jobs))
        .route("/ops/crashes", get(crashes))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_read));
    let controls = Router::new()
        .route("/ops/actions/{host}/{name}", post(manual_action))
        .route("/ops/restart/{target}", post(restart_target))
        .route("/ops/incidents/{id}/ack", post(ack))
        .route("/ops/incidents/{id}/resolve", post(resolve))
        .route("/ops/target/{id}/maintenance", post(maintenance))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_control));
    let heartbeats = Router::new()
        .route("/ops/jobs/heartbeat", post(heartbeat))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_jobs));
    let crash_log = Router::new()
        .route("/_log", post(crash_report))
        .route_layer(middleware::from_fn_with_state(
            api.clone(),
            require_crash_log,
        ))
        .route("/_log", axum::routing::options(crash_preflight))
        .layer(DefaultBodyLimit::max(CRASH_BODY_LIMIT));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"ok": true})) }))
        .merge(heartbeats)
        .merge(reads)
        .merge(controls)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .merge(crash_log)
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

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
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
        unauthorized()
    }
}

/// Runs the request when `token` is configured and presented.
async fn admit(token: Option<&TokenCheck>, req: Request, next: Next) -> Response {
    if token.is_some_and(|t| t.accepts_header(bearer(req.headers()))) {
        next.run(req).await
    } else {
        unauthorized()
    }
}

async fn require_control(State(api): State<Shared>, req: Request, next: Next) -> Response {
    admit(api.control.as_ref(), req, next).await
}

async fn require_jobs(State(api): State<Shared>, req: Request, next: Next) -> Response {
    admit(api.jobs.as_ref(), req, next).await
}

async fn require_crash_log(State(api): State<Shared>, req: Request, next: Next) -> Response {
    let mut res = admit(api.crash_log.as_ref(), req, next).await;
    with_cors(&mut res);
    res
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
    let crash = api.runner.take_crash(report, truncated);
    if crash.alerted {
        api.runner.deliver().await;
    }
    (StatusCode::ACCEPTED, Json(crash)).into_response()
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
        views::summary(&runner.config, s, h, now, |id| {
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
        match views::target(&api.runner.config, s, h, &id, recent, now) {
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
    let config = &api.runner.config;
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
    let config = api.runner.config.clone();
    let oncall = api.runner.io.secrets().oncall_user.clone();
    let done = api.runner.update(|s| {
        s.heartbeat(
            &config,
            &hb.job,
            hb.status,
            hb.run_id.as_deref(),
            oncall.as_deref(),
            now_ms(),
        )
    });
    match done {
        Ok(_) => {
            api.runner.deliver().await;
            Json(json!({"ok": true, "job": hb.job})).into_response()
        }
        Err(e) => error(StatusCode::NOT_FOUND, "unknown_job", e.to_string()),
    }
}

async fn anomalies(State(api): State<Shared>) -> Response {
    Json(api.runner.read(|s| json!({"anomalies": s.anomalies}))).into_response()
}

/// Runs an allowlisted action by hand and records it.
async fn run_manual(api: &Api, host: &str, name: &str, by: String) -> Response {
    let record = match api.runner.io.manual_action(host, name, by).await {
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
    let config = api.runner.config.clone();
    api.runner
        .update(|s| s.record_manual_action(&config, record.clone()));
    match (record.result, record.error) {
        (Some(r), _) => Json(r).into_response(),
        (None, e) => error(
            StatusCode::BAD_GATEWAY,
            "action_failed",
            e.unwrap_or_default(),
        ),
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
    let Some(t) = api.runner.config.target(&id).cloned() else {
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

fn state_result(r: Result<(), StateError>, id: &str) -> Response {
    match r {
        Ok(()) => Json(json!({"ok": true, "incident": id})).into_response(),
        Err(StateError::NoIncident) => error(
            StatusCode::NOT_FOUND,
            "unknown_incident",
            format!("no incident {id:?}"),
        ),
        Err(StateError::AlreadyResolved) => error(
            StatusCode::CONFLICT,
            "already_resolved",
            format!("incident {id:?} is already resolved"),
        ),
    }
}

async fn ack(State(api): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let by = operator(&headers);
    state_result(
        api.runner.update(|s| s.acknowledge(&id, &by, now_ms())),
        &id,
    )
}

async fn resolve(
    State(api): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let by = operator(&headers);
    state_result(api.runner.update(|s| s.resolve(&id, &by, now_ms())), &id)
}

async fn maintenance(
    State(api): State<Shared>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(body) = body else {
        return too_large(BODY_LIMIT);
    };
    if api.runner.config.target(&id).is_none() {
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
    let _ = api.runner.update(|s| s.set_maintenance(&id, until, now));
    Json(json!({"ok": true, "target": id, "maintenance_until_ms": until})).into_response()
}

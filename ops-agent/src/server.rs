//! The HTTP API: routes, middleware (rate limit, body limit, auth, metrics),
//! and the action runner's one-at-a-time and idempotency rules.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use tracing::Instrument;
use vigil_wire::{
    ActionList, ActionOutcome, ActionResult, AuditEntry, AuditList, Diagnostics, ErrorBody,
    LogLines, TokenCheck, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED,
};

use crate::actions::Allowlist;
use crate::audit::{AuditError, AuditLog, Tally};
use crate::client_ip::client_ip;
use crate::config::Config;
use crate::docker::{DockerError, Engine};
use crate::metrics::Metrics;
use crate::ratelimit::Limiters;

/// Answers remembered for `Idempotency-Key` replays.
const IDEMPOTENCY_CAPACITY: usize = 1024;
const LOG_TAIL_DEFAULT: usize = 100;
const LOG_TAIL_MAX: usize = 1000;
const AUDIT_LIMIT_DEFAULT: usize = 50;
const AUDIT_LIMIT_MAX: usize = 1000;
/// How long a CPU sample for diagnostics lasts.
const CPU_WINDOW: Duration = Duration::from_millis(200);
/// Rate-limited refusals of one client within this window are written as
/// one line and a summary.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

pub struct AppState {
    pub token: TokenCheck,
    pub config: Config,
    pub allowlist: Allowlist,
    pub engine: Engine,
    pub audit: AuditLog,
    /// Rate-limited refusals, summarised per client.
    pub refusals: Tally,
    pub metrics: Metrics,
    pub limiters: Limiters,
    /// Filesystem whose fullness diagnostics report.
    pub data_path: PathBuf,
    running: Mutex<Option<String>>,
    replays: Mutex<Replays>,
}

impl AppState {
    pub fn new(config: Config, allowlist: Allowlist, audit: AuditLog) -> Self {
        Self {
            token: TokenCheck::new(&config.token),
            engine: Engine::new(config.compose_project.clone(), config.docker_timeout),
            refusals: Tally::new(REFUSAL_WINDOW),
            limiters: Limiters::new(config.rate),
            metrics: Metrics::default(),
            data_path: PathBuf::from("/"),
            running: Mutex::new(None),
            replays: Mutex::new(Replays::default()),
            config,
            allowlist,
            audit,
        }
    }

    /// Claims the single action slot, or names the action holding it.
    fn begin(self: &Arc<Self>, name: &str) -> Result<RunningGuard, String> {
        let mut running = lock(&self.running);
        if let Some(other) = running.as_ref() {
            return Err(other.clone());
        }
        *running = Some(name.to_string());
        Ok(RunningGuard(self.clone()))
    }

    /// Writes the summaries of rate-limit windows that ended by `now_ms`
    /// (all of them with `u64::MAX`, at shutdown).
    pub async fn write_refusal_summaries(&self, now_ms: u64) {
        for entry in self.refusals.ended(now_ms) {
            let _ = write_audit(self, &entry).await;
        }
    }
}

struct RunningGuard(Arc<AppState>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        *lock(&self.0.running) = None;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct Replays {
    answers: HashMap<String, ActionResult>,
    order: VecDeque<String>,
}

impl Replays {
    fn remember(&mut self, key: String, result: ActionResult) {
        if self.answers.insert(key.clone(), result).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > IDEMPOTENCY_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.answers.remove(&old);
            }
        }
    }
}

#[derive(Clone)]
struct ClientIp(IpAddr);

#[derive(Clone)]
struct RequestId(String);

pub fn router(state: Arc<AppState>) -> Router {
    let request_timeout = state.allowlist.longest_timeout() + Duration::from_secs(15);
    let protected = Router::new()
        .route("/v1/actions", get(list_actions))
        .route("/v1/actions/{name}", post(run_action))
        .route("/v1/diagnostics", get(diagnostics))
        .route("/v1/logs/{service}", get(logs))
        .route("/v1/audit", get(audit))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state.clone());
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"ok": true})) }),
        )
        .merge(protected)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), limit_body))
        .layer(middleware::from_fn_with_state(state.clone(), rate_limit))
        .layer(middleware::from_fn_with_state(
            (state, request_timeout),
            observe,
        ))
}

pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(ErrorBody::new(code, message))).into_response()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Outermost layer: request id, span, client address, timeout, metrics.
async fn observe(
    State((state, timeout)): State<(Arc<AppState>, Duration)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let ip = client_ip(peer.ip(), req.headers(), &state.config.trusted_proxies);
    let request_id = uuid::Uuid::new_v4().to_string();
    req.extensions_mut().insert(ClientIp(ip));
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let span = tracing::info_span!("request", %request_id, method = %req.method(), path = %req.uri().path(), client = %ip);
    let mut res = match tokio::time::timeout(timeout, next.run(req).instrument(span.clone())).await
    {
        Ok(res) => res,
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "request_timeout",
            "the request took too long",
        ),
    };
    span.in_scope(|| tracing::info!(status = res.status().as_u16(), "answered"));
    state.metrics.request(&route, res.status().as_u16());
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

async fn rate_limit(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let ip = req.extensions().get::<ClientIp>().map(|c| c.0);
    if let Some(ip) = ip {
        if let Err(wait) = state.limiters.check_request(ip) {
            return too_many(&state, Attempt::of(&req), wait).await;
        }
    }
    next.run(req).await
}

async fn too_many(state: &AppState, attempt: Option<Attempt>, wait: Duration) -> Response {
    state.metrics.rate_limited();
    // Counted, not written one by one: a client's first refusal in a window
    // is written, the rest as one summary when the window ends.
    if let Some(attempt) = attempt {
        let ip = attempt.ip;
        let refusal = attempt.entry("rate_limited", "too many requests");
        for entry in state.refusals.count(ip, refusal) {
            let _ = write_audit(state, &entry).await;
        }
    }
    let mut res = error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests; retry after {} s", wait.as_secs().max(1)),
    );
    res.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(wait.as_secs().max(1)),
    );
    res
}

/// Refuses bodies over the configured limit, whether announced by
/// Content-Length or streamed (413), and bodies that take longer than the
/// body timeout to arrive (408). Either refusal of an action is audited.
async fn limit_body(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let limit = state.config.body_limit;
    let timeout = state.config.body_timeout;
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let attempt = Attempt::of(&req);
    let too_large = (
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("request body over {limit} bytes"),
    );
    let (status, code, message) = if announced.is_some_and(|n| n > limit) {
        too_large
    } else {
        let (parts, body) = req.into_parts();
        match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
            Ok(Ok(bytes)) => {
                return next
                    .run(Request::from_parts(parts, Body::from(bytes)))
                    .await
            }
            Ok(Err(_)) => too_large,
            Err(_) => (
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} ms",
                    timeout.as_millis()
                ),
            ),
        }
    };
    audit_refusal(&state, attempt, code, &message).await;
    // The rest of the body is never read, so the connection cannot carry
    // another request: the answer says so, or a client reusing it breaks.
    let mut res = error(status, code, message);
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

async fn require_token(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if state.token.accepts_header(header) {
        return next.run(req).await;
    }
    let attempt = Attempt::of(&req);
    if let Some(ClientIp(ip)) = req.extensions().get::<ClientIp>().cloned() {
        if let Err(wait) = state.limiters.check_auth_failure(ip) {
            return too_many(&state, attempt, wait).await;
        }
    }
    audit_refusal(
        &state,
        attempt,
        "unauthorized",
        "missing or wrong bearer token",
    )
    .await;
    let mut res = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong bearer token",
    );
    res.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    res
}

/// A request that asks to run an action, as the audit log records it.
struct Attempt {
    action: String,
    request_id: String,
    ip: IpAddr,
}

impl Attempt {
    /// `None` for requests that are not attempts to run an action.
    fn of(req: &Request) -> Option<Self> {
        let action = req.uri().path().strip_prefix("/v1/actions/")?;
        (req.method() == Method::POST).then(|| Attempt {
            action: action.chars().take(64).collect(),
            request_id: req
                .extensions()
                .get::<RequestId>()
                .map(|r| r.0.clone())
                .unwrap_or_default(),
            ip: req
                .extensions()
                .get::<ClientIp>()
                .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0),
        })
    }

    fn entry(self, outcome: &str, reason: &str) -> AuditEntry {
        AuditEntry {
            ts_ms: now_ms(),
            request_id: self.request_id,
            client_ip: self.ip.to_string(),
            action: self.action,
            outcome: outcome.to_string(),
            reason: Some(reason.to_string()),
            duration_ms: 0,
        }
    }
}

async fn audit_refusal(state: &AppState, attempt: Option<Attempt>, outcome: &str, reason: &str) {
    if let Some(attempt) = attempt {
        let _ = write_audit(state, &attempt.entry(outcome, reason)).await;
    }
}

/// Writes one audit line; a failure is logged and counted, and returned so
/// that an action is not run without its line.
async fn write_audit(state: &AppState, entry: &AuditEntry) -> Result<(), AuditError> {
    let written = state.audit.append(entry).await;
    if let Err(e) = &written {
        state.metrics.audit_write_failed();
        tracing::error!(error = %e, outcome = %entry.outcome, "audit log write failed");
    }
    written
}

async fn list_actions(State(state): State<Arc<AppState>>) -> Json<ActionList> {
    Json(ActionList {
        actions: state.allowlist.iter().map(|a| a.info()).collect(),
    })
}

async fn run_action(
    State(state): State<Arc<AppState>>,
    name: Result<Path<String>, PathRejection>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let name = match name {
        Ok(Path(name)) => name,
        // The raw segment, as sent: it may not even decode.
        Err(rejection) => {
            let raw = uri.path().trim_start_matches("/v1/actions/");
            let attempt = Attempt {
                action: raw.chars().take(64).collect(),
                request_id,
                ip,
            };
            let message = rejection.body_text();
            audit_refusal(&state, Some(attempt), "bad_request", &message).await;
            return error(StatusCode::BAD_REQUEST, "bad_path", message);
        }
    };
    let entry = |outcome: &str, reason: Option<String>, duration_ms: u64| AuditEntry {
        ts_ms: now_ms(),
        request_id: request_id.clone(),
        client_ip: ip.to_string(),
        action: name.chars().take(64).collect(),
        outcome: outcome.to_string(),
        reason,
        duration_ms,
    };
    let Some(action) = state.allowlist.get(&name).cloned() else {
        let _ = write_audit(
            &state,
            &entry("unknown_action", Some("not in the allowlist".into()), 0),
        )
        .await;
        return error(
            StatusCode::NOT_FOUND,
            "unknown_action",
            format!("no action named {name:?} in the allowlist"),
        );
    };
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(key) = &key {
        let earlier = lock(&state.replays).answers.get(key).cloned();
        if let Some(earlier) = earlier {
            if earlier.name != name {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    format!("Idempotency-Key already used for action {:?}", earlier.name),
                );
            }
            let _ = write_audit(
                &state,
                &entry("replayed", Some(format!("Idempotency-Key {key}")), 0),
            )
            .await;
            let mut res = Json(earlier).into_response();
            res.headers_mut()
                .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            return res;
        }
    }
    let _slot = match state.begin(&name) {
        Ok(guard) => guard,
        Err(other) => {
            let _ = write_audit(
                &state,
                &entry("busy", Some(format!("{other} is running")), 0),
            )
            .await;
            return error(
                StatusCode::CONFLICT,
                "busy",
                format!("action {other:?} is running; one action at a time"),
            );
        }
    };
    // The line that says the action runs is on disk before it runs: an
    // action whose line cannot be written does not run.
    if let Err(e) = write_audit(&state, &entry("started", None, 0)).await {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            format!("the action was not run: its audit line cannot be written: {e}"),
        );
    }

    let started_at_ms = now_ms();
    let clock = Instant::now();
    let span = tracing::info_span!("action", action = %name, %request_id);
    let run = async {
        match tokio::time::timeout(action.timeout, state.engine.run(&action.operation)).await {
            Ok(done) => done.map_err(Some),
            // Past the action's time: a hung daemon, or a slow operation?
            Err(_) => Err(state.engine.ping().await.err()),
        }
    };
    let run = run.instrument(span.clone()).await;
    let took = clock.elapsed();
    let (outcome, output, err) = match run {
        Ok(output) => (ActionOutcome::Ok, Some(output), None),
        Err(Some(DockerError::Unavailable(e))) => {
            let message = format!("docker engine unavailable: {e}");
            let _ = write_audit(
                &state,
                &entry("failed", Some(message.clone()), took.as_millis() as u64),
            )
            .await;
            state.metrics.action(&name, "docker_unavailable", took);
            return error(StatusCode::BAD_GATEWAY, "docker_unavailable", message);
        }
        Err(Some(DockerError::Failed(e))) => (ActionOutcome::Failed, None, Some(e)),
        Err(None) => (
            ActionOutcome::TimedOut,
            None,
            Some(format!(
                "timed out after {} ms; the operation was abandoned",
                action.timeout.as_millis()
            )),
        ),
    };
    let outcome_name = match outcome {
        ActionOutcome::Ok => "ok",
        ActionOutcome::Failed => "failed",
        ActionOutcome::TimedOut => "timed_out",
    };
    span.in_scope(|| {
        tracing::info!(
            outcome = outcome_name,
            duration_ms = took.as_millis() as u64,
            "action finished"
        )
    });
    let result = ActionResult {
        name: name.clone(),
        ok: outcome == ActionOutcome::Ok,
        outcome,
        request_id: request_id.clone(),
        started_at_ms,
        finished_at_ms: started_at_ms + took.as_millis() as u64,
        duration_ms: took.as_millis() as u64,
        output,
        error: err.clone(),
    };
    state.metrics.action(&name, outcome_name, took);
    // The action has run: its result is answered even if this line fails
    // (the "started" line is on disk; the failure is logged and counted).
    let _ = write_audit(&state, &entry(outcome_name, err, result.duration_ms)).await;
    if let Some(key) = key {
        lock(&state.replays).remember(key, result.clone());
    }
    Json(result).into_response()
}

async fn diagnostics(State(state): State<Arc<AppState>>) -> Json<Diagnostics> {
    let host = crate::host::sample(&state.data_path, CPU_WINDOW);
    let containers = async {
        state.engine.ping().await?;
        state.engine.container_infos().await
    };
    let (host, containers) = tokio::join!(host, containers);
    let (docker_ok, docker_error, containers) = match containers {
        Ok(c) => (true, None, c),
        Err(e) => (false, Some(e.to_string()), Vec::new()),
    };
    Json(Diagnostics {
        compose_project: state.engine.project().to_string(),
        docker_ok,
        docker_error,
        containers,
        host,
    })
}

/// A whole-number query parameter, capped at `max`; the error is the
/// answer to give.
fn bounded_param(
    query: &HashMap<String, String>,
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, String> {
    match query.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .map(|n| n.min(max))
            .map_err(|_| format!("{name} must be a whole number, got {v:?}")),
    }
}

fn docker_error(e: DockerError) -> Response {
    match e {
        DockerError::Unavailable(_) => {
            error(StatusCode::BAD_GATEWAY, "docker_unavailable", e.to_string())
        }
        DockerError::Failed(_) => error(StatusCode::BAD_GATEWAY, "docker_failed", e.to_string()),
    }
}

/// A path or query that did not decode, in the JSON error format.
fn bad_request(code: &str, message: String) -> Response {
    error(StatusCode::BAD_REQUEST, code, message)
}

async fn logs(
    State(state): State<Arc<AppState>>,
    service: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let (Path(service), Query(query)) = match (service, query) {
        (Ok(s), Ok(q)) => (s, q),
        (Err(e), _) => return bad_request("bad_path", e.body_text()),
        (_, Err(e)) => return bad_request("bad_query", e.body_text()),
    };
    let tail = match bounded_param(&query, "tail", LOG_TAIL_DEFAULT, LOG_TAIL_MAX) {
        Ok(t) => t,
        Err(why) => return bad_request("bad_query", why),
    };
    match state.engine.services().await {
        Err(e) => return docker_error(e),
        Ok(services) if !services.contains(&service) => {
            return error(
                StatusCode::NOT_FOUND,
                "unknown_service",
                format!(
                    "no service {service:?} in project {:?}",
                    state.engine.project()
                ),
            )
        }
        Ok(_) => {}
    }
    match state.engine.logs(&service, tail).await {
        Ok(lines) => Json(LogLines { service, lines }).into_response(),
        Err(e) => docker_error(e),
    }
}

async fn audit(
    State(state): State<Arc<AppState>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(q) => q,
        Err(e) => return bad_request("bad_query", e.body_text()),
    };
    let limit = match bounded_param(&query, "limit", AUDIT_LIMIT_DEFAULT, AUDIT_LIMIT_MAX) {
        Ok(l) => l,
        Err(why) => return bad_request("bad_query", why),
    };
    match state.audit.newest(limit).await {
        Ok(entries) => Json(AuditList { entries }).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "audit_unreadable",
            e.to_string(),
        ),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

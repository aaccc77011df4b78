//! `/ui` on the native edge: carries each request to [`crate::ui`] (which
//! answers it alike in both shells) and its changes to the runner. The
//! request came over TLS when the proxy says so (`X-Forwarded-Proto: https`).
//! A refused sign-in counts as a failed authentication of the client.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;

use super::io::now_ms;
use super::limits::ClientLimits;
use super::runner::Runner;
use crate::shell::BODY_LIMIT;
use crate::ui::{changed, Answer, Step, Ui, UiRequest, HEADERS};

struct Shared {
    runner: Arc<Runner>,
    limits: Arc<ClientLimits>,
    ui: Ui,
}

/// The `/ui` routes; without a read or control token they refuse to sign in.
pub fn router(runner: Arc<Runner>, limits: Arc<ClientLimits>) -> Router {
    let shared = Arc::new(Shared {
        limits,
        ui: Ui::new(runner.io.secrets()),
        runner,
    });
    Router::new()
        .route("/ui", any(serve))
        .route("/ui/{*rest}", any(serve))
        .with_state(shared)
}

fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

async fn serve(AxState(shared): AxState<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = to_bytes(body, BODY_LIMIT).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let (post, uri, headers) = (parts.method == Method::POST, &parts.uri, &parts.headers);
    let Some(ui_req) = UiRequest::parse(post, uri.path(), uri.query().unwrap_or(""), &body) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let signing_in = matches!(ui_req, UiRequest::SignIn { .. });
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join("; ");
    let step = shared.runner.read(|s| {
        shared.ui.answer(
            ui_req,
            Some(&cookie),
            over_tls(headers),
            now_ms(),
            s,
            &shared.runner.config().targets,
        )
    });
    let answer = match step {
        Step::Answer(a) => a,
        Step::Change { id, verb } => {
            let done = shared
                .runner
                .try_update(|s| Ok(verb.apply(s, &id, now_ms())));
            changed(&id, done.map_err(|e| e.to_string()))
        }
    };
    if signing_in && answer.status == 401 {
        let counted = Request::from_parts(parts, Body::empty());
        if let Some(too_many) = shared.limits.auth_failure(&counted) {
            return too_many;
        }
    }
    respond(answer)
}

fn respond(a: Answer) -> Response {
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = (status, HEADERS, a.body).into_response();
    for (name, value) in [
        (header::LOCATION, a.location),
        (header::SET_COOKIE, a.set_cookie),
    ] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            res.headers_mut().insert(name, v);
        }
    }
    res
}

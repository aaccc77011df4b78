//! `GET /status` and `GET /status.json`: the public status page
//! (`crate::status_page`), without a token, when `[status_page] enabled`.

use std::sync::Arc;

use axum::extract::State as AxState;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::io::now_ms;
use super::runner::Runner;
use crate::status_page::{self, StatusView, CSP};

/// The routes, or none when the page is off (they answer 404 then).
pub fn router(runner: Arc<Runner>) -> Router {
    if !runner.config().status_page.enabled {
        return Router::new();
    }
    Router::new()
        .route("/status", get(page))
        .route("/status.json", get(data))
        .with_state(runner)
}

fn view(runner: &Runner) -> StatusView {
    let now = now_ms();
    runner.read_with_history(|s, h| status_page::view(&runner.config(), s, h, now))
}

async fn page(AxState(runner): AxState<Arc<Runner>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        status_page::html(&view(&runner)),
    )
        .into_response()
}

async fn data(AxState(runner): AxState<Arc<Runner>>) -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Json(view(&runner))).into_response()
}

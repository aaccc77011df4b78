//! The PostHog proxy on a listener of its own (`[posthog] listen`): the
//! same rules as the Worker's `ph.` host (`crate::posthog`), bodies streamed
//! both ways, never buffered.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use vigil_wire::client_ip::{client_ip, IpNet};

use crate::config::PostHog;
use crate::posthog::{forward_request_header, forward_response_header, upstream, METHODS};

/// An upstream exchange that takes longer is abandoned (502).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

struct Proxy {
    config: PostHog,
    trusted: Vec<IpNet>,
    http: reqwest::Client,
}

pub fn router(config: PostHog, trusted: Vec<IpNet>) -> Result<Router, reqwest::Error> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(UPSTREAM_TIMEOUT)
        .build()?;
    let proxy = Arc::new(Proxy {
        config,
        trusted,
        http,
    });
    Ok(Router::new().fallback(forward).with_state(proxy))
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain")],
        message.to_string(),
    )
        .into_response()
}

#[tracing::instrument(skip_all, fields(method = %req.method(), path = %req.uri().path()))]
async fn forward(State(proxy): State<Arc<Proxy>>, req: Request) -> Response {
    if !METHODS.contains(&req.method().as_str()) {
        let mut res = refuse(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        res.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, OPTIONS"),
        );
        return res;
    }
    let limit = proxy.config.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let client = peer.map(|p| client_ip(p, req.headers(), &proxy.trusted));
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let url = upstream(&proxy.config, path);
    let mut out = proxy.http.request(req.method().clone(), &url);
    for (name, value) in req.headers() {
        if forward_request_header(name.as_str()) {
            out = out.header(name, value);
        }
    }
    if let Some(ip) = client {
        out = out.header("x-forwarded-for", ip.to_string());
    }
    if let Some(n) = declared {
        out = out.header(header::CONTENT_LENGTH, n);
    }
    // The body streams through; one longer than the limit (without a
    // Content-Length to refuse it early) is cut off and the exchange fails.
    let body = http_body_util::Limited::new(req.into_body(), limit as usize);
    let out = out.body(reqwest::Body::wrap_stream(
        http_body_util::BodyDataStream::new(body),
    ));
    match out.send().await {
        Ok(res) => {
            let mut answer = Response::builder().status(res.status().as_u16());
            for (name, value) in res.headers() {
                if forward_response_header(name.as_str()) {
                    answer = answer.header(name.as_str(), value.as_bytes());
                }
            }
            answer
                .body(Body::from_stream(res.bytes_stream()))
                .unwrap_or_else(|_| refuse(StatusCode::BAD_GATEWAY, "bad upstream answer"))
        }
        Err(e) => {
            let mut cause: Option<&dyn std::error::Error> = Some(&e);
            let mut too_large = false;
            while let Some(c) = cause {
                too_large |= c.is::<http_body_util::LengthLimitError>();
                cause = c.source();
            }
            if too_large {
                return refuse(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
            }
            tracing::warn!(error = %e, "posthog upstream failed");
            refuse(StatusCode::BAD_GATEWAY, "PostHog did not answer")
        }
    }
}

//! A fake PostHog (ingestion and assets alike) that records exactly what
//! arrives: method, path and query, headers, body bytes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;

#[derive(Debug, Clone)]
pub struct Arrived {
    pub method: String,
    pub path_and_query: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

#[derive(Clone)]
pub struct FakePostHog {
    pub addr: SocketAddr,
    arrived: Arc<Mutex<Vec<Arrived>>>,
}

impl FakePostHog {
    /// Answers `/static/*` with a script, `/reject` with 400, the rest
    /// with `{"status": 1}`; each answer sets a cookie the proxy must drop.
    pub fn start() -> Self {
        let arrived = Arc::new(Mutex::new(Vec::new()));
        let router = Router::new().fallback(record).with_state(arrived.clone());
        FakePostHog {
            addr: crate::serve::spawn(router),
            arrived,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn arrived(&self) -> Vec<Arrived> {
        self.arrived.lock().unwrap().clone()
    }
}

async fn record(
    State(arrived): State<Arc<Mutex<Vec<Arrived>>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    arrived.lock().unwrap().push(Arrived {
        method: method.to_string(),
        path_and_query: path_and_query.clone(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect(),
        body: body.to_vec(),
    });
    let cookie = [
        ("set-cookie", "ph_tracker=1; Path=/"),
        ("x-posthog", "fake"),
    ];
    if path_and_query.starts_with("/static/") {
        (cookie, "/* posthog-js */").into_response()
    } else if path_and_query.starts_with("/reject") {
        (
            StatusCode::BAD_REQUEST,
            cookie,
            r#"{"type":"validation_error"}"#,
        )
            .into_response()
    } else {
        (cookie, r#"{"status":1}"#).into_response()
    }
}

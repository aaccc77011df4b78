//! A probed target whose behaviour tests change at run time; it records what
//! each probe sent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

#[derive(Debug, Clone)]
pub enum Behaviour {
    Ok,
    Status(u16),
    Body(String),
    Slow(Duration),
    /// Accepts and never answers.
    Hang,
    /// Answers this status once, then is well again.
    Blip(u16),
    /// Answers these statuses in turn, over and over (200 says "ok").
    Cycle(Vec<u16>),
    /// Answers 503 to the probes from these regions (their `X-Vigil-Region`
    /// header), as if cut off from them; "ok" to the others.
    FailFrom(Vec<&'static str>),
    /// A form: "ok" with `X-Form: accepted` only to a POST carrying this
    /// header (name in lower case, value) and exactly this body; 401
    /// without the header, 400 with another body.
    Form {
        header: (String, String),
        body: String,
    },
    /// 302 to this location.
    Redirect(String),
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub query: Option<String>,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

struct Inner {
    behaviour: Behaviour,
    seen: Vec<Seen>,
}

#[derive(Clone)]
pub struct TargetServer {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl TargetServer {
    pub fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            behaviour: Behaviour::Ok,
            seen: Vec::new(),
        }));
        let router = Router::new().fallback(answer).with_state(inner.clone());
        TargetServer {
            addr: crate::serve::spawn(router),
            inner,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/healthz", self.addr)
    }

    pub fn set(&self, b: Behaviour) {
        self.inner.lock().unwrap().behaviour = b;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.inner.lock().unwrap().seen.clone()
    }
}

async fn answer(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        method: method.to_string(),
        query,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect(),
        body: body.to_vec(),
    };
    let behaviour = {
        let mut i = inner.lock().unwrap();
        i.seen.push(seen.clone());
        let n = i.seen.len() - 1;
        let region = headers.get("x-vigil-region").and_then(|v| v.to_str().ok());
        let b = match &i.behaviour {
            Behaviour::Cycle(statuses) => Behaviour::Status(statuses[n % statuses.len()]),
            Behaviour::FailFrom(regions) if region.is_some_and(|r| regions.contains(&r)) => {
                Behaviour::Status(503)
            }
            Behaviour::FailFrom(_) => Behaviour::Ok,
            other => other.clone(),
        };
        if matches!(b, Behaviour::Blip(_)) {
            i.behaviour = Behaviour::Ok;
        }
        b
    };
    match behaviour {
        Behaviour::Ok | Behaviour::Status(200) => "ok".into_response(),
        Behaviour::Status(s) | Behaviour::Blip(s) => {
            (StatusCode::from_u16(s).unwrap(), "error").into_response()
        }
        Behaviour::Body(b) => b.into_response(),
        Behaviour::Slow(d) => {
            tokio::time::sleep(d).await;
            "ok".into_response()
        }
        Behaviour::Cycle(_) | Behaviour::FailFrom(_) => unreachable!("resolved above"),
        Behaviour::Form { header, body } => {
            if seen.headers.get(&header.0) != Some(&header.1) {
                (StatusCode::UNAUTHORIZED, "no").into_response()
            } else if seen.method != "POST" || seen.body != body.as_bytes() {
                (StatusCode::BAD_REQUEST, "bad form").into_response()
            } else {
                ([("x-form", "accepted")], "ok").into_response()
            }
        }
        Behaviour::Redirect(to) => (StatusCode::FOUND, [("location", to)], "moved").into_response(),
        Behaviour::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "late".into_response()
        }
    }
}

//! Two more channel peers, strict: a Slack-compatible incoming webhook
//! (`{"text"}` required and non-empty, 400 `invalid_payload` / `no_text`
//! otherwise, as Slack answers) and a generic webhook that checks Vigil's
//! signature (`X-Vigil-Timestamp: <ms>`, `X-Vigil-Signature: sha256=<hex
//! HMAC-SHA256 of "<ms>.<body>">`) and refuses a bad or old one with 401.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use serde_json::Value;

/// Oldest signature accepted.
const MAX_AGE_MS: u64 = 300_000;

#[derive(Default)]
struct Inner {
    accepted: Vec<Value>,
    refused: Vec<String>,
}

#[derive(Clone)]
pub struct Hook {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl Hook {
    /// A Slack-compatible incoming webhook.
    pub fn slack() -> Self {
        Self::serve(Router::new().route("/services/T0/B0/x", post(slack)), None)
    }

    /// A generic webhook checking signatures made with `secret`.
    pub fn signed(secret: &str) -> Self {
        Self::serve(
            Router::new().route("/hook", post(signed)),
            Some(secret.to_string()),
        )
    }

    fn serve(router: Router<(Arc<Mutex<Inner>>, Option<String>)>, secret: Option<String>) -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        Hook {
            addr: crate::serve::spawn(router.with_state((inner.clone(), secret))),
            inner,
        }
    }

    pub fn slack_url(&self) -> String {
        format!("http://{}/services/T0/B0/x", self.addr)
    }

    pub fn hook_url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn accepted(&self) -> Vec<Value> {
        self.inner.lock().unwrap().accepted.clone()
    }

    pub fn refused(&self) -> Vec<String> {
        self.inner.lock().unwrap().refused.clone()
    }
}

type Shared = (Arc<Mutex<Inner>>, Option<String>);

async fn slack(State((inner, _)): State<Shared>, body: String) -> (StatusCode, &'static str) {
    let mut inner = inner.lock().unwrap();
    let Ok(v) = serde_json::from_str::<Value>(&body) else {
        inner.refused.push("invalid_payload".into());
        return (StatusCode::BAD_REQUEST, "invalid_payload");
    };
    match v["text"].as_str() {
        Some(t) if !t.trim().is_empty() && t.chars().count() <= 40_000 => {
            inner.accepted.push(v);
            (StatusCode::OK, "ok")
        }
        _ => {
            inner.refused.push("no_text".into());
            (StatusCode::BAD_REQUEST, "no_text")
        }
    }
}

/// Checks `sha256=<hex>` over `<timestamp>.<body>`; `Err` says why not.
pub fn verify(
    secret: &str,
    timestamp: &str,
    signature: &str,
    body: &str,
    now_ms: u64,
) -> Result<(), String> {
    let t: u64 = timestamp.parse().map_err(|_| "malformed timestamp")?;
    let sig = signature
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or("malformed signature")?;
    if now_ms.abs_diff(t) > MAX_AGE_MS {
        return Err("signature too old".into());
    }
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    mac.verify_slice(&sig)
        .map_err(|_| "bad signature".to_string())
}

async fn signed(
    State((inner, secret)): State<Shared>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (timestamp, signature) = (header("x-vigil-timestamp"), header("x-vigil-signature"));
    let mut inner = inner.lock().unwrap();
    let checked = verify(
        secret.as_deref().unwrap_or_default(),
        &timestamp,
        &signature,
        &body,
        now,
    )
    .and_then(|()| serde_json::from_str::<Value>(&body).map_err(|e| e.to_string()));
    match checked {
        Ok(v) => {
            inner.accepted.push(v);
            StatusCode::NO_CONTENT
        }
        Err(why) => {
            inner.refused.push(why);
            StatusCode::UNAUTHORIZED
        }
    }
}

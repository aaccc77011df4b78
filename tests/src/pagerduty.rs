//! A PagerDuty Events v2 endpoint as strict as its documented contract
//! (`POST /v2/enqueue`): 202 with the `dedup_key`; 400 `invalid event` on a
//! missing routing key, an unknown action, a bad severity, a summary over
//! 1,024 characters, a missing `dedup_key` on acknowledge/resolve. It keeps
//! the incidents it would open (trigger), acknowledge and resolve.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Default)]
struct Inner {
    /// Every accepted event, in order.
    accepted: Vec<Value>,
    rejected: Vec<(Value, Vec<String>)>,
    /// dedup_key -> `triggered`, `acknowledged` or `resolved`.
    incidents: BTreeMap<String, String>,
}

#[derive(Clone)]
pub struct PagerDuty {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl PagerDuty {
    pub fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let router = Router::new()
            .route("/v2/enqueue", post(enqueue))
            .with_state(inner.clone());
        PagerDuty {
            addr: crate::serve::spawn(router),
            inner,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/v2/enqueue", self.addr)
    }

    /// (event_action, dedup_key) of every accepted event, in order.
    pub fn events(&self) -> Vec<(String, String)> {
        let inner = self.inner.lock().unwrap();
        inner
            .accepted
            .iter()
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                (s("event_action"), s("dedup_key"))
            })
            .collect()
    }

    pub fn accepted(&self) -> Vec<Value> {
        self.inner.lock().unwrap().accepted.clone()
    }

    pub fn rejected(&self) -> Vec<(Value, Vec<String>)> {
        self.inner.lock().unwrap().rejected.clone()
    }

    /// Where each incident stands.
    pub fn incidents(&self) -> BTreeMap<String, String> {
        self.inner.lock().unwrap().incidents.clone()
    }

    /// The scenario both shells' tests run: target `api-core` (a
    /// `remediate` target at `target_url` whose agent is not reachable, so
    /// it pages at once), its critical alerts routed to this receiver (the
    /// `oncall` channel, key in `PD_ROUTING_KEY`) and to Discord (`ops`),
    /// the rest to Discord.
    pub fn paged_target_config(&self, target_url: &str) -> String {
        format!(
            "[[target]]\nid = \"api-core\"\nurl = {target_url:?}\nrole = \"remediate\"\nhost = \"vps1\"\nactions = [\"restart_api_core\"]\ntimeout_ms = 2000\n\
             [[host]]\nid = \"vps1\"\nurl_env = \"NO_SUCH_AGENT_URL\"\ntoken_env = \"NO_SUCH_AGENT_TOKEN\"\n\
             [[channel]]\nid = \"oncall\"\nkind = \"pagerduty\"\nrouting_key_env = \"PD_ROUTING_KEY\"\nevents_url = {:?}\n\
             [[channel]]\nid = \"ops\"\nkind = \"discord\"\nurl_env = \"DISCORD_WEBHOOK_URL\"\n\
             [[route]]\nseverity = [\"critical\"]\ntargets = [\"api*\"]\nchannels = [\"oncall\", \"ops\"]\n\
             [[route]]\nseverity = [\"warning\", \"info\"]\nchannels = [\"ops\"]\n",
            self.url()
        )
    }

    /// Asserts that incident `id` was triggered, acknowledged and resolved,
    /// each once, under its one `dedup_key`, and that nothing was refused.
    pub fn assert_triggered_acked_resolved_once(&self, id: &str) {
        let expected: Vec<(String, String)> = ["trigger", "acknowledge", "resolve"]
            .iter()
            .map(|a| (a.to_string(), id.to_string()))
            .collect();
        assert_eq!(self.events(), expected, "each once, one dedup_key");
        assert_eq!(self.incidents()[id], "resolved");
        assert!(self.rejected().is_empty(), "{:?}", self.rejected());
    }
}

/// The documented checks on an event.
pub fn validate(e: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    if e["routing_key"].as_str().is_none_or(str::is_empty) {
        errors.push("'routing_key' is missing or blank".to_string());
    }
    let action = e["event_action"].as_str().unwrap_or_default();
    let dedup = e["dedup_key"].as_str();
    if dedup.is_some_and(|d| d.chars().count() > 255) {
        errors.push("'dedup_key' must be 255 characters or fewer".into());
    }
    match action {
        "trigger" => {
            let p = &e["payload"];
            match p["summary"].as_str() {
                None | Some("") => errors.push("'payload.summary' is missing or blank".into()),
                Some(s) if s.chars().count() > 1024 => {
                    errors.push("'payload.summary' must be 1024 characters or fewer".into())
                }
                Some(_) => {}
            }
            if p["source"].as_str().is_none_or(str::is_empty) {
                errors.push("'payload.source' is missing or blank".into());
            }
            if !matches!(
                p["severity"].as_str(),
                Some("critical" | "error" | "warning" | "info")
            ) {
                errors.push("'payload.severity' is invalid (must be one of the following: 'critical', 'warning', 'error' or 'info')".into());
            }
        }
        "acknowledge" | "resolve" => {
            if dedup.is_none_or(str::is_empty) {
                errors.push("'dedup_key' is required for acknowledge and resolve".into());
            }
        }
        _ => errors.push("'event_action' is invalid".into()),
    }
    errors
}

async fn enqueue(State(inner): State<Arc<Mutex<Inner>>>, body: String) -> Response {
    let Ok(event) = serde_json::from_str::<Value>(&body) else {
        let body = json!({"status": "invalid event", "message": "Event object is invalid", "errors": ["not JSON"]});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    };
    let errors = validate(&event);
    let mut inner = inner.lock().unwrap();
    if !errors.is_empty() {
        inner.rejected.push((event, errors.clone()));
        let body = json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    let dedup_key = match event["dedup_key"].as_str() {
        Some(k) if !k.is_empty() => k.to_string(),
        _ => format!("generated-{}", inner.accepted.len()),
    };
    let state = match event["event_action"].as_str() {
        Some("trigger") => "triggered",
        Some("acknowledge") => "acknowledged",
        _ => "resolved",
    };
    inner.incidents.insert(dedup_key.clone(), state.into());
    inner.accepted.push(event);
    let body = json!({"status": "success", "message": "Event processed", "dedup_key": dedup_key});
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

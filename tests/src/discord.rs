//! A Discord webhook as strict as the real one: messages over Discord's
//! limits get 400 (code 50035), and failures (500, 429 with retry_after) can
//! be scripted ahead of acceptance.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy)]
pub enum Fail {
    Status500,
    /// 429 with this retry_after, in seconds.
    RateLimited(f64),
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Fail>,
    down: bool,
    accepted: Vec<Value>,
    /// (when, HTTP status answered) for every request.
    attempts: Vec<(Instant, u16)>,
    rejected: Vec<(Value, String)>,
    /// Like Discord's webhook rate: at most this many accepted a minute,
    /// 429 past it.
    per_minute: Option<usize>,
}

#[derive(Clone)]
pub struct Discord {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl Discord {
    pub fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let router = Router::new()
            .route("/api/webhooks/{id}/{token}", post(execute))
            .with_state(inner.clone());
        Discord {
            addr: crate::serve::spawn(router),
            inner,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/api/webhooks/1234/secret-token", self.addr)
    }

    pub fn script(&self, fails: &[Fail]) {
        self.inner
            .lock()
            .unwrap()
            .script
            .extend(fails.iter().copied());
    }

    /// Answers 429 (with retry_after) past `n` accepted messages a minute,
    /// as a real webhook does past about 30.
    pub fn limit_rate(&self, n: usize) {
        self.inner.lock().unwrap().per_minute = Some(n);
    }

    /// While down, every request gets 500.
    pub fn set_down(&self, down: bool) {
        self.inner.lock().unwrap().down = down;
    }

    pub fn accepted(&self) -> Vec<Value> {
        self.inner.lock().unwrap().accepted.clone()
    }

    pub fn attempts(&self) -> Vec<(Instant, u16)> {
        self.inner.lock().unwrap().attempts.clone()
    }

    pub fn rejected(&self) -> Vec<(Value, String)> {
        self.inner.lock().unwrap().rejected.clone()
    }

    /// Titles of accepted embeds, or the content of messages without one.
    pub fn titles(&self) -> Vec<String> {
        self.accepted()
            .iter()
            .map(|m| {
                m["embeds"][0]["title"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| m["content"].as_str().unwrap_or_default().to_string())
            })
            .collect()
    }

    /// The ack link of a page (its `Acknowledge` field).
    pub fn ack_link(page: &Value) -> String {
        let field = page["embeds"][0]["fields"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["name"] == "Acknowledge"))
            .unwrap_or_else(|| panic!("no Acknowledge field: {page}"))["value"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        field
            .strip_prefix("[Acknowledge](")
            .and_then(|l| l.strip_suffix(')'))
            .unwrap_or_else(|| panic!("not a link: {field}"))
            .to_string()
    }

    /// Accepted messages that @mention someone.
    pub fn pages(&self) -> Vec<Value> {
        self.accepted()
            .into_iter()
            .filter(|m| m["content"].as_str().is_some_and(|c| c.contains("<@")))
            .collect()
    }
}

fn chars(v: &Value) -> usize {
    v.as_str().map_or(0, |s| s.chars().count())
}

/// Discord's own checks on a webhook message, as documented.
pub fn validate(m: &Value) -> Result<(), String> {
    let content = chars(&m["content"]);
    let embeds = m["embeds"].as_array().cloned().unwrap_or_default();
    if content == 0 && embeds.is_empty() {
        return Err("Cannot send an empty message".into());
    }
    if content > 2000 {
        return Err("content: Must be 2000 or fewer in length".into());
    }
    if embeds.len() > 10 {
        return Err("embeds: Must be 10 or fewer in length".into());
    }
    let mut total = 0;
    for e in &embeds {
        let title = chars(&e["title"]);
        let desc = chars(&e["description"]);
        if title > 256 {
            return Err("embeds.0.title: Must be 256 or fewer in length".into());
        }
        if desc > 4096 {
            return Err("embeds.0.description: Must be 4096 or fewer in length".into());
        }
        let fields = e["fields"].as_array().cloned().unwrap_or_default();
        if fields.len() > 25 {
            return Err("embeds.0.fields: Must be 25 or fewer in length".into());
        }
        for f in &fields {
            let (n, v) = (chars(&f["name"]), chars(&f["value"]));
            if n == 0 || v == 0 {
                return Err("embeds.0.fields: name and value are required".into());
            }
            if n > 256 || v > 1024 {
                return Err("embeds.0.fields: name or value too long".into());
            }
            total += n + v;
        }
        let footer = chars(&e["footer"]["text"]);
        if footer > 2048 {
            return Err("embeds.0.footer.text: Must be 2048 or fewer in length".into());
        }
        if let Some(c) = e.get("color") {
            if c.as_u64().is_none_or(|c| c > 0xFF_FF_FF) {
                return Err(
                    "embeds.0.color: Int value should be less than or equal to 16777215".into(),
                );
            }
        }
        total += title + desc + footer;
    }
    if total > 6000 {
        return Err("embeds: Embed size exceeds maximum size of 6000".into());
    }
    let am = &m["allowed_mentions"];
    let parses_users = am["parse"]
        .as_array()
        .is_some_and(|p| p.iter().any(|x| x == "users"));
    if parses_users && am["users"].as_array().is_some_and(|u| !u.is_empty()) {
        return Err(
            "allowed_mentions: parse:[\"users\"] and users: [ids] are mutually exclusive".into(),
        );
    }
    Ok(())
}

/// 429 when the rate is reached: retry when the oldest message of the
/// minute leaves it.
fn over_rate(inner: &Inner) -> Option<Fail> {
    let n = inner.per_minute?;
    let minute = std::time::Duration::from_secs(60);
    let accepted: Vec<Instant> = inner
        .attempts
        .iter()
        .filter(|(at, status)| *status == 200 && at.elapsed() < minute)
        .map(|(at, _)| *at)
        .collect();
    (accepted.len() >= n).then(|| {
        let oldest = accepted[accepted.len() - n];
        Fail::RateLimited((minute - oldest.elapsed()).as_secs_f64())
    })
}

async fn execute(State(inner): State<Arc<Mutex<Inner>>>, body: String) -> Response {
    let mut inner = inner.lock().unwrap();
    let (status, res) = if inner.down {
        (
            500,
            (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response(),
        )
    } else if let Some(fail) = inner.script.pop_front().or_else(|| over_rate(&inner)) {
        match fail {
            Fail::Status500 => (
                500,
                (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
            ),
            Fail::RateLimited(secs) => {
                let mut r = (StatusCode::TOO_MANY_REQUESTS, Json(json!({"message": "You are being rate limited.", "retry_after": secs, "global": false}))).into_response();
                r.headers_mut().insert(
                    "retry-after",
                    format!("{}", secs.ceil() as u64).parse().unwrap(),
                );
                (429, r)
            }
        }
    } else {
        match serde_json::from_str::<Value>(&body)
            .map_err(|e| e.to_string())
            .and_then(|m| validate(&m).map(|()| m))
        {
            Ok(m) => {
                inner.accepted.push(m.clone());
                let id = inner.accepted.len();
                (200, Json(json!({"id": id.to_string(), "content": m["content"], "embeds": m["embeds"]})).into_response())
            }
            Err(why) => {
                inner.rejected.push((
                    serde_json::from_str(&body).unwrap_or(Value::Null),
                    why.clone(),
                ));
                (
                    400,
                    (
                        StatusCode::BAD_REQUEST,
                        Json(json!({"code": 50035, "message": "Invalid Form Body", "errors": why})),
                    )
                        .into_response(),
                )
            }
        }
    };
    inner.attempts.push((Instant::now(), status));
    res
}

//! An OpenAI-compatible chat completions server with scripted replies.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub enum Reply {
    /// One call of `name` with these (raw JSON) arguments.
    Tool(String, String),
    /// Two calls at once.
    TwoTools,
    Text(String),
    Status(u16),
    /// Sleeps, then answers the next reply.
    Slow(Duration),
}

impl Reply {
    pub fn tool(name: &str, args: &str) -> Self {
        Reply::Tool(name.into(), args.into())
    }
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Reply>,
    requests: Vec<Value>,
    bearer: Vec<String>,
}

#[derive(Clone)]
pub struct Model {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl Model {
    pub fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let router = Router::new()
            .route("/v1/chat/completions", post(complete))
            .with_state(inner.clone());
        Model {
            addr: crate::serve::spawn(router),
            inner,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn script(&self, replies: Vec<Reply>) {
        self.inner.lock().unwrap().script.extend(replies);
    }

    pub fn requests(&self) -> Vec<Value> {
        self.inner.lock().unwrap().requests.clone()
    }

    pub fn bearers(&self) -> Vec<String> {
        self.inner.lock().unwrap().bearer.clone()
    }

    /// The last message of request `n`: what the edge answered the model's
    /// previous tool call with.
    pub fn last_message(&self, n: usize) -> String {
        self.requests()[n]["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_string()
    }
}

/// The names of the tools a chat completions request offered.
pub fn tool_names(request: &Value) -> Vec<String> {
    request["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t["function"]["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn completion(message: Value, finish: &str) -> Value {
    json!({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 1_700_000_000, "model": "test-model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 12, "total_tokens": 132}
    })
}

fn call(id: &str, name: &str, args: &str) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}})
}

async fn complete(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Json(req): Json<Value>,
) -> Response {
    let mut next = {
        let mut i = inner.lock().unwrap();
        i.requests.push(req);
        i.bearer.push(
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
        );
        i.script.pop_front()
    };
    if let Some(Reply::Slow(d)) = next {
        tokio::time::sleep(d).await;
        next = inner.lock().unwrap().script.pop_front();
    }
    match next {
        None => (StatusCode::SERVICE_UNAVAILABLE, "script exhausted").into_response(),
        Some(Reply::Status(s)) => (StatusCode::from_u16(s).unwrap(), Json(json!({"error": {"message": "scripted failure"}}))).into_response(),
        Some(Reply::Text(t)) => Json(completion(json!({"role": "assistant", "content": t}), "stop")).into_response(),
        Some(Reply::Tool(name, args)) => {
            Json(completion(json!({"role": "assistant", "content": null, "tool_calls": [call("call_1", &name, &args)]}), "tool_calls")).into_response()
        }
        Some(Reply::TwoTools) => Json(completion(
            json!({"role": "assistant", "content": null, "tool_calls": [
                call("call_1", "restart_api_core", r#"{"reason":"a"}"#),
                call("call_2", "restart_all", r#"{"reason":"b"}"#)
            ]}),
            "tool_calls",
        ))
        .into_response(),
        Some(Reply::Slow(_)) => (StatusCode::SERVICE_UNAVAILABLE, "two slow replies in a row").into_response(),
    }
}

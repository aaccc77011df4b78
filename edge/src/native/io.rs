//! The native shell's I/O: probes, Discord deliveries, the ops-agents and the
//! model, over reqwest with a timeout on every call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use reqwest::{Client, Method};
use vigil_wire::{ActionInfo, ActionList, ActionResult, Diagnostics, LogLines, IDEMPOTENCY_KEY};

use crate::config::{Config, Target};
use crate::core::alert::{Delivery, DiscordMessage};
use crate::core::planner::Completion;
use crate::core::probe::{
    cache_busted_url, classify, Observation, ProbeResponse, NO_CACHE_HEADERS,
};
use crate::remediation::RemediationIo;
use crate::shell::{
    action_path, agent_error, chat_url, delivery_outcome, logs_path, model_error, Secrets,
};

/// Most of a probed body that is read (body checks look at the start).
const BODY_LIMIT: usize = 1 << 20;
/// Calls to an agent that are not actions.
const AGENT_READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Added to an action's own timeout for the HTTP round trip.
const ACTION_SLACK: Duration = Duration::from_secs(15);
const DISCORD_TIMEOUT: Duration = Duration::from_secs(10);

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub struct NativeIo {
    http: Client,
    config: std::sync::Arc<Config>,
    secrets: Secrets,
    nonce: AtomicU64,
    /// Each host's action timeouts, from its last `GET /v1/actions`.
    timeouts: Mutex<HashMap<(String, String), Duration>>,
}

impl NativeIo {
    pub fn new(config: std::sync::Arc<Config>, secrets: Secrets) -> Self {
        let http = Client::builder()
            .user_agent(concat!("vigil-edge/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds with static settings");
        NativeIo {
            http,
            config,
            secrets,
            nonce: AtomicU64::new(now_ms()),
            timeouts: Mutex::new(HashMap::new()),
        }
    }

    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// Sends one Discord message and says how it went.
    pub async fn deliver(&self, message: &DiscordMessage) -> Delivery {
        let url = match self.secrets.webhook(&self.config) {
            Ok(u) => u,
            Err(error) => return Delivery::Failed { error },
        };
        let res = match self
            .http
            .post(url)
            .json(message)
            .timeout(DISCORD_TIMEOUT)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return Delivery::Failed {
                    error: error_chain(&e),
                }
            }
        };
        let status = res.status().as_u16();
        let header_retry = res
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse::<f64>().ok());
        let body = res.text().await.unwrap_or_default();
        delivery_outcome(status, header_retry, &body)
    }

    async fn agent_call<T: serde::de::DeserializeOwned>(
        &self,
        host: &str,
        method: Method,
        path: &str,
        timeout: Duration,
        idempotency_key: Option<&str>,
    ) -> Result<T, String> {
        let (base, token) = self.secrets.agent(&self.config, host)?;
        let mut req = self
            .http
            .request(method, format!("{base}{path}"))
            .bearer_auth(token)
            .timeout(timeout);
        if let Some(key) = idempotency_key {
            req = req.header(IDEMPOTENCY_KEY, key);
        }
        let res = req.send().await.map_err(|e| error_chain(&e))?;
        let status = res.status();
        let body = res.bytes().await.map_err(|e| error_chain(&e))?;
        if !status.is_success() {
            return Err(agent_error(status.as_u16(), &body));
        }
        serde_json::from_slice(&body).map_err(|e| format!("unexpected answer from the agent: {e}"))
    }

    /// Runs one action on a host's agent: what the control API uses too.
    pub async fn run_action_on(
        &self,
        host: &str,
        action: &str,
        key: &str,
    ) -> Result<ActionResult, String> {
        let timeout = {
            let known = self.timeouts.lock().unwrap_or_else(|e| e.into_inner());
            known.get(&(host.to_string(), action.to_string())).copied()
        };
        let timeout = match timeout {
            Some(t) => t,
            None => {
                let list = self.actions(host).await?;
                let info = list
                    .iter()
                    .find(|a| a.name == action)
                    .ok_or_else(|| format!("{action} is not allowlisted on {host}"))?;
                Duration::from_millis(info.timeout_ms)
            }
        };
        let path = action_path(action);
        self.agent_call(host, Method::POST, &path, timeout + ACTION_SLACK, Some(key))
            .await
    }
}

/// An error with its causes, which reqwest keeps apart ("error sending
/// request" alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl RemediationIo for NativeIo {
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    async fn sleep_ms(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    async fn diagnostics(&self, host: &str) -> Result<Diagnostics, String> {
        self.agent_call(
            host,
            Method::GET,
            "/v1/diagnostics",
            AGENT_READ_TIMEOUT,
            None,
        )
        .await
    }

    async fn actions(&self, host: &str) -> Result<Vec<ActionInfo>, String> {
        let list: ActionList = self
            .agent_call(host, Method::GET, "/v1/actions", AGENT_READ_TIMEOUT, None)
            .await?;
        let mut known = self.timeouts.lock().unwrap_or_else(|e| e.into_inner());
        for a in &list.actions {
            known.insert(
                (host.to_string(), a.name.clone()),
                Duration::from_millis(a.timeout_ms),
            );
        }
        Ok(list.actions)
    }

    async fn logs(&self, host: &str, service: &str, tail: u32) -> Result<Vec<String>, String> {
        let path = logs_path(service, tail);
        let logs: LogLines = self
            .agent_call(host, Method::GET, &path, AGENT_READ_TIMEOUT, None)
            .await?;
        Ok(logs.lines)
    }

    async fn run_action(
        &self,
        host: &str,
        action: &str,
        key: &str,
    ) -> Result<ActionResult, String> {
        self.run_action_on(host, action, key).await
    }

    fn has_model(&self) -> bool {
        self.secrets.openai_key.is_some()
    }

    async fn chat(&self, request: &serde_json::Value) -> Result<Completion, String> {
        let key = self.secrets.openai_key.as_deref().ok_or("no model key")?;
        let url = chat_url(&self.config);
        let res = self
            .http
            .post(url)
            .bearer_auth(key)
            .json(request)
            .timeout(Duration::from_secs_f64(self.config.llm.timeout_s))
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "the model timed out".to_string()
                } else {
                    error_chain(&e)
                }
            })?;
        let status = res.status();
        let body = res.bytes().await.map_err(|e| {
            if e.is_timeout() {
                "the model timed out".to_string()
            } else {
                error_chain(&e)
            }
        })?;
        if !status.is_success() {
            return Err(model_error(status.as_u16(), &body));
        }
        serde_json::from_slice(&body).map_err(|e| format!("malformed completion: {e}"))
    }

    async fn probe(&self, target: &Target) -> Observation {
        let at_ms = now_ms();
        let nonce = self.nonce.fetch_add(1, Ordering::Relaxed);
        let method = Method::from_bytes(target.method.as_bytes()).unwrap_or(Method::GET);
        let timeout = Duration::from_millis(target.timeout_ms);
        let started = Instant::now();
        let mut req = self
            .http
            .request(method, cache_busted_url(&target.url, nonce))
            .timeout(timeout);
        for (k, v) in NO_CACHE_HEADERS {
            req = req.header(k, v);
        }
        let elapsed = || started.elapsed().as_millis() as u64;
        let response = match req.send().await {
            Err(e) if e.is_timeout() => ProbeResponse::TimedOut {
                latency_ms: elapsed(),
            },
            Err(e) => ProbeResponse::Failed {
                error: error_chain(&e),
                latency_ms: elapsed(),
            },
            Ok(res) => {
                let status = res.status().as_u16();
                let mut body = Vec::new();
                let mut stream = res.bytes_stream();
                let mut failure = None;
                while let Some(chunk) = stream.next().await {
                    match chunk {
                        Ok(c) => {
                            body.extend_from_slice(
                                &c[..c.len().min(BODY_LIMIT.saturating_sub(body.len()))],
                            );
                            if body.len() >= BODY_LIMIT {
                                break;
                            }
                        }
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                match failure {
                    Some(e) if e.is_timeout() => ProbeResponse::TimedOut {
                        latency_ms: elapsed(),
                    },
                    Some(e) => ProbeResponse::Failed {
                        error: error_chain(&e),
                        latency_ms: elapsed(),
                    },
                    None => ProbeResponse::Answered {
                        status,
                        body: String::from_utf8_lossy(&body).into_owned(),
                        latency_ms: elapsed(),
                    },
                }
            }
        };
        classify(target, response, at_ms)
    }
}

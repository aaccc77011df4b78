//! The Worker shell's I/O: `worker::Fetch` with a timeout (an abort signal
//! raced against a delay) and `cache: no-store` on every probe.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use futures_util::future::{select, Either};
use vigil_wire::{ActionInfo, ActionList, ActionResult, Diagnostics, LogLines, IDEMPOTENCY_KEY};
use worker::{
    AbortController, CacheMode, Date, Delay, Fetch, Headers, Method, Request, RequestInit,
};

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

const AGENT_READ_TIMEOUT_MS: u64 = 15_000;
const ACTION_SLACK_MS: u64 = 15_000;
const DISCORD_TIMEOUT_MS: u64 = 10_000;

pub fn now_ms() -> u64 {
    Date::now().as_millis()
}

/// `f`, or `None` when `ms` pass first (then `on_timeout` runs).
async fn within<F: Future>(f: F, ms: u64, on_timeout: impl FnOnce()) -> Option<F::Output> {
    let f = Box::pin(f);
    let delay = Box::pin(Delay::from(Duration::from_millis(ms)));
    match select(f, delay).await {
        Either::Left((out, _)) => Some(out),
        Either::Right(_) => {
            on_timeout();
            None
        }
    }
}

/// One HTTP exchange: status and body, or why there was none.
pub enum Exchange {
    Answered {
        status: u16,
        retry_after: Option<f64>,
        body: Vec<u8>,
    },
    TimedOut,
    Failed(String),
}

pub struct WorkerIo {
    pub config: Config,
    pub secrets: Secrets,
    nonce: Cell<u64>,
}

impl WorkerIo {
    pub fn new(config: Config, secrets: Secrets) -> Self {
        WorkerIo {
            config,
            secrets,
            nonce: Cell::new(now_ms()),
        }
    }

    pub async fn exchange(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
        timeout_ms: u64,
    ) -> Exchange {
        let h = Headers::new();
        for (k, v) in headers {
            if let Err(e) = h.set(k, v) {
                return Exchange::Failed(format!("header {k}: {e}"));
            }
        }
        let mut init = RequestInit::new();
        init.with_method(method)
            .with_headers(h)
            .with_cache(CacheMode::NoStore);
        if let Some(b) = body {
            init.with_body(Some(b.into()));
        }
        let request = match Request::new_with_init(url, &init) {
            Ok(r) => r,
            Err(e) => return Exchange::Failed(e.to_string()),
        };
        let controller = AbortController::default();
        let signal = controller.signal();
        let call = async {
            let mut res = Fetch::Request(request)
                .send_with_signal(&signal)
                .await
                .map_err(|e| e.to_string())?;
            let status = res.status_code();
            let retry_after = res
                .headers()
                .get("retry-after")
                .ok()
                .flatten()
                .and_then(|v| v.parse().ok());
            let body = res.bytes().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((status, retry_after, body))
        };
        match within(call, timeout_ms, || controller.abort()).await {
            None => Exchange::TimedOut,
            Some(Err(e)) => Exchange::Failed(e),
            Some(Ok((status, retry_after, body))) => Exchange::Answered {
                status,
                retry_after,
                body,
            },
        }
    }

    async fn agent_json<T: serde::de::DeserializeOwned>(
        &self,
        host: &str,
        method: Method,
        path: &str,
        timeout_ms: u64,
        key: Option<&str>,
    ) -> Result<T, String> {
        let (base, token) = self.secrets.agent(&self.config, host)?;
        let auth = format!("Bearer {token}");
        let mut headers = vec![("Authorization", auth.as_str())];
        if let Some(k) = key {
            headers.push((IDEMPOTENCY_KEY, k));
        }
        match self
            .exchange(method, &format!("{base}{path}"), &headers, None, timeout_ms)
            .await
        {
            Exchange::Answered { status, body, .. } if (200..300).contains(&status) => {
                serde_json::from_slice(&body)
                    .map_err(|e| format!("unexpected answer from the agent: {e}"))
            }
            Exchange::Answered { status, body, .. } => Err(agent_error(status, &body)),
            Exchange::TimedOut => Err(format!("no answer from the agent within {timeout_ms} ms")),
            Exchange::Failed(e) => Err(e),
        }
    }

    pub async fn deliver(&self, message: &DiscordMessage) -> Delivery {
        let url = match self.secrets.webhook(&self.config) {
            Ok(u) => u,
            Err(error) => return Delivery::Failed { error },
        };
        let body = match serde_json::to_string(message) {
            Ok(b) => b,
            Err(e) => {
                return Delivery::Rejected {
                    error: e.to_string(),
                }
            }
        };
        match self
            .exchange(
                Method::Post,
                &url,
                &[("Content-Type", "application/json")],
                Some(body),
                DISCORD_TIMEOUT_MS,
            )
            .await
        {
            Exchange::Answered {
                status,
                retry_after,
                body,
            } => delivery_outcome(status, retry_after, &String::from_utf8_lossy(&body)),
            Exchange::TimedOut => Delivery::Failed {
                error: "Discord timed out".into(),
            },
            Exchange::Failed(error) => Delivery::Failed { error },
        }
    }

    pub async fn run_action_on(
        &self,
        host: &str,
        action: &str,
        key: &str,
    ) -> Result<ActionResult, String> {
        let list = self.actions(host).await?;
        let info = list
            .iter()
            .find(|a| a.name == action)
            .ok_or_else(|| format!("{action} is not allowlisted on {host}"))?;
        let path = action_path(action);
        self.agent_json(
            host,
            Method::Post,
            &path,
            info.timeout_ms + ACTION_SLACK_MS,
            Some(key),
        )
        .await
    }
}

impl RemediationIo for WorkerIo {
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    async fn sleep_ms(&self, ms: u64) {
        Delay::from(Duration::from_millis(ms)).await;
    }

    async fn diagnostics(&self, host: &str) -> Result<Diagnostics, String> {
        self.agent_json(
            host,
            Method::Get,
            "/v1/diagnostics",
            AGENT_READ_TIMEOUT_MS,
            None,
        )
        .await
    }

    async fn actions(&self, host: &str) -> Result<Vec<ActionInfo>, String> {
        let list: ActionList = self
            .agent_json(
                host,
                Method::Get,
                "/v1/actions",
                AGENT_READ_TIMEOUT_MS,
                None,
            )
            .await?;
        Ok(list.actions)
    }

    async fn logs(&self, host: &str, service: &str, tail: u32) -> Result<Vec<String>, String> {
        let path = logs_path(service, tail);
        let logs: LogLines = self
            .agent_json(host, Method::Get, &path, AGENT_READ_TIMEOUT_MS, None)
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
        let body = serde_json::to_string(request).map_err(|e| e.to_string())?;
        let auth = format!("Bearer {key}");
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ];
        let timeout_ms = (self.config.llm.timeout_s * 1000.0) as u64;
        match self
            .exchange(Method::Post, &url, &headers, Some(body), timeout_ms)
            .await
        {
            Exchange::Answered { status, body, .. } if (200..300).contains(&status) => {
                serde_json::from_slice(&body).map_err(|e| format!("malformed completion: {e}"))
            }
            Exchange::Answered { status, body, .. } => Err(model_error(status, &body)),
            Exchange::TimedOut => Err("the model timed out".into()),
            Exchange::Failed(e) => Err(e),
        }
    }

    async fn probe(&self, target: &Target) -> Observation {
        let at_ms = now_ms();
        let nonce = self.nonce.get();
        self.nonce.set(nonce + 1);
        let url = cache_busted_url(&target.url, nonce);
        let method = Method::from(target.method.clone());
        let response = match self
            .exchange(method, &url, &NO_CACHE_HEADERS, None, target.timeout_ms)
            .await
        {
            Exchange::Answered { status, body, .. } => ProbeResponse::Answered {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
                latency_ms: now_ms().saturating_sub(at_ms),
            },
            Exchange::TimedOut => ProbeResponse::TimedOut {
                latency_ms: now_ms().saturating_sub(at_ms),
            },
            Exchange::Failed(error) => ProbeResponse::Failed {
                error,
                latency_ms: now_ms().saturating_sub(at_ms),
            },
        };
        classify(target, response, at_ms)
    }
}

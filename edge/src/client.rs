//! The edge's outbound calls, written once: probes, Discord deliveries, the
//! ops-agents and the model. Each shell supplies only a [`Transport`] (one
//! HTTP exchange with a timeout, a clock, a sleep): reqwest and tokio
//! natively, `worker::Fetch` in the Worker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vigil_wire::{ActionInfo, ActionList, ActionResult, Diagnostics, LogLines, IDEMPOTENCY_KEY};

use crate::config::{text_pairs, Config, Target};
use crate::core::alert::{backoff_ms, Delivery, DiscordMessage, OutboxEntry};
use crate::core::deadman::Ping;
use crate::core::incident::ManualAction;
use crate::core::json;
use crate::core::planner::Completion;
use crate::core::probe::{
    cache_busted_url, classify, Observation, PeerCert, ProbeResponse, NO_CACHE_HEADERS,
    REGION_HEADER,
};
use crate::remediation::RemediationIo;
use crate::shell::{
    action_path, chat_url, delivery_outcome, logs_path, model_error, AgentError, Secrets,
};

/// Most of an answer's body that is read (a probe's body check looks at the
/// start).
pub const BODY_LIMIT: usize = 1 << 20;
/// Calls to an agent that are not actions.
const AGENT_READ_TIMEOUT_MS: u64 = 15_000;
/// Added to an action's own timeout for the HTTP round trip.
const ACTION_SLACK_MS: u64 = 15_000;
const DELIVERY_TIMEOUT_MS: u64 = 10_000;

/// One outbound request.
pub struct Call<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Option<String>,
    pub timeout_ms: u64,
    /// Follow redirects (up to 10); otherwise a 3xx is the answer.
    pub follow_redirects: bool,
}

/// How one HTTP exchange ended, and how long it took.
#[derive(Debug)]
pub enum Exchange {
    Answered {
        status: u16,
        retry_after: Option<f64>,
        /// Response headers, names in lower case.
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        /// The server's certificate, where the transport can see it.
        cert: Option<PeerCert>,
        elapsed_ms: u64,
    },
    TimedOut {
        elapsed_ms: u64,
    },
    Failed {
        error: String,
        elapsed_ms: u64,
    },
}

/// What a shell provides for the edge's outbound calls.
#[allow(async_fn_in_trait)] // each shell picks its own executor; Send is its business
pub trait Transport {
    /// Wall-clock epoch milliseconds.
    fn now_ms(&self) -> u64;
    async fn sleep_ms(&self, ms: u64);
    /// One request, abandoned after `call.timeout_ms`, bypassing caches
    /// where the transport has one, reading at most [`BODY_LIMIT`] of the
    /// answer.
    async fn send(&self, call: Call<'_>) -> Exchange;

    /// [`Transport::send`], following redirects.
    async fn exchange(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
        timeout_ms: u64,
    ) -> Exchange {
        self.send(Call {
            method,
            url,
            headers,
            body,
            timeout_ms,
            follow_redirects: true,
        })
        .await
    }
}

pub struct Client<T> {
    pub transport: T,
    pub config: Arc<Config>,
    pub secrets: Secrets,
    nonce: AtomicU64,
    /// Each host's action timeouts, from its last `GET /v1/actions`:
    /// ((host, action), timeout) pairs, a few (no `HashMap` code in the
    /// Worker: bundle size).
    timeouts: Mutex<Vec<((String, String), u64)>>,
}

impl<T: Transport> Client<T> {
    pub fn with_transport(transport: T, config: Arc<Config>, secrets: Secrets) -> Self {
        let nonce = AtomicU64::new(transport.now_ms());
        Client {
            transport,
            config,
            secrets,
            nonce,
            timeouts: Mutex::new(Vec::new()),
        }
    }

    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// Sends one message to the `[discord]` webhook and says how it went.
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
        self.post(&url, &[], body, 0).await
    }

    /// Sends one outbox entry to its channel (a `[[channel]]`, else the
    /// `[discord]` webhook) and says how it went.
    pub async fn deliver_entry(&self, entry: &OutboxEntry) -> Delivery {
        let Some(channel) = self.config.channel(&entry.channel) else {
            return self.deliver(&entry.message).await;
        };
        match self
            .secrets
            .channel_request(channel, entry, self.transport.now_ms())
        {
            Ok(r) => {
                let headers: Vec<(&str, &str)> =
                    r.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                self.post(&r.url, &headers, r.body, entry.attempts).await
            }
            Err(outcome) => outcome,
        }
    }

    /// One JSON POST to a channel. A 429 without a wait, or a 5xx, backs
    /// off by the entry's `attempts` so far.
    async fn post(
        &self,
        url: &str,
        extra: &[(&str, &str)],
        body: String,
        attempts: u32,
    ) -> Delivery {
        let mut headers = vec![("Content-Type", "application/json")];
        headers.extend_from_slice(extra);
        match self
            .transport
            .exchange("POST", url, &headers, Some(body), DELIVERY_TIMEOUT_MS)
            .await
        {
            Exchange::Answered {
                status,
                retry_after,
                body,
                ..
            } => {
                let backoff = retry_after.or(Some(backoff_ms(attempts + 1) as f64 / 1000.0));
                delivery_outcome(status, backoff, &String::from_utf8_lossy(&body))
            }
            Exchange::TimedOut { .. } => Delivery::Failed {
                error: format!("no answer within {DELIVERY_TIMEOUT_MS} ms"),
            },
            Exchange::Failed { error, .. } => Delivery::Failed { error },
        }
    }

    /// Tells the deadman URL a cycle starts (`GET <url>/start`) or how it
    /// went: a GET on success, a POST of the reason to `<url>/fail`
    /// otherwise. Nothing when not configured.
    pub async fn ping_deadman(&self, ping: &Ping) -> Result<(), String> {
        let Some(url) = self.secrets.deadman_url.as_deref() else {
            return Ok(());
        };
        let url = url.trim_end_matches('/');
        let exchange = match ping {
            Ping::Start => {
                let start = format!("{url}/start");
                self.transport
                    .exchange("GET", &start, &[], None, DELIVERY_TIMEOUT_MS)
                    .await
            }
            Ping::Success => {
                self.transport
                    .exchange("GET", url, &[], None, DELIVERY_TIMEOUT_MS)
                    .await
            }
            Ping::Fail(reason) => {
                let headers = [("Content-Type", "text/plain")];
                let fail = format!("{url}/fail");
                self.transport
                    .exchange(
                        "POST",
                        &fail,
                        &headers,
                        Some(reason.clone()),
                        DELIVERY_TIMEOUT_MS,
                    )
                    .await
            }
        };
        match exchange {
            Exchange::Answered { status, .. } if (200..300).contains(&status) => Ok(()),
            Exchange::Answered { status, .. } => Err(format!("the deadman URL answered {status}")),
            Exchange::TimedOut { .. } => Err("the deadman URL timed out".into()),
            Exchange::Failed { error, .. } => Err(error),
        }
    }

    async fn agent_json<D: serde::de::DeserializeOwned>(
        &self,
        host: &str,
        method: &str,
        path: &str,
        timeout_ms: u64,
        key: Option<&str>,
    ) -> Result<D, AgentError> {
        let (base, token) = self
            .secrets
            .agent(&self.config, host)
            .map_err(AgentError::Failed)?;
        let auth = format!("Bearer {token}");
        let mut headers = vec![("Authorization", auth.as_str())];
        if let Some(k) = key {
            headers.push((IDEMPOTENCY_KEY, k));
        }
        match self
            .transport
            .exchange(method, &format!("{base}{path}"), &headers, None, timeout_ms)
            .await
        {
            Exchange::Answered { status, body, .. } if (200..300).contains(&status) => {
                json::read(&body).map_err(|e| {
                    AgentError::Failed(format!("unexpected answer from the agent: {e}"))
                })
            }
            Exchange::Answered { status, body, .. } => Err(AgentError::answered(status, &body)),
            Exchange::TimedOut { .. } => Err(AgentError::Failed(format!(
                "no answer from the agent within {timeout_ms} ms"
            ))),
            Exchange::Failed { error, .. } => Err(AgentError::Failed(error)),
        }
    }

    /// Runs one action on a host's agent: what the control API uses too.
    pub async fn run_action_on(
        &self,
        host: &str,
        action: &str,
        key: &str,
    ) -> Result<ActionResult, AgentError> {
        let known = {
            let known = self.timeouts.lock().unwrap_or_else(|e| e.into_inner());
            (known.iter())
                .find(|((h, a), _)| h == host && a == action)
                .map(|(_, t)| *t)
        };
        let timeout_ms = match known {
            Some(t) => t,
            None => {
                let list = self.action_list(host).await?;
                list.iter()
                    .find(|a| a.name == action)
                    .ok_or_else(|| {
                        AgentError::Failed(format!("{action} is not allowlisted on {host}"))
                    })?
                    .timeout_ms
            }
        };
        self.agent_json(
            host,
            "POST",
            &action_path(action),
            timeout_ms + ACTION_SLACK_MS,
            Some(key),
        )
        .await
    }
}

/// Why an action asked for by hand was not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManualRefusal {
    UnknownHost,
    AgentUnreachable(AgentError),
    NotAllowlisted,
    /// Its start could not be recorded, so it was not sent.
    NotRecorded(String),
}

impl ManualRefusal {
    /// The HTTP answer: status, error code, message.
    pub fn answer(&self, host: &str, action: &str) -> (u16, &'static str, String) {
        match self {
            ManualRefusal::UnknownHost => (404, "unknown_host", format!("no host {host:?}")),
            ManualRefusal::AgentUnreachable(e) => e.answer("agent_unreachable"),
            ManualRefusal::NotAllowlisted => (
                404,
                "unknown_action",
                format!("{action:?} is not allowlisted on {host}"),
            ),
            ManualRefusal::NotRecorded(e) => (
                503,
                "store_unavailable",
                format!("{action} was not run: its start could not be stored: {e}"),
            ),
        }
    }
}

impl<T: Transport> Client<T> {
    /// Runs an action by hand (the control API): the host must be
    /// configured and its agent must list the action. `on_start` records it
    /// before it is sent ([`State::start_manual_action`](crate::core::state::State::start_manual_action));
    /// an error there stops it. Returns what [`Client::send_manual_action`]
    /// does.
    pub async fn manual_action(
        &self,
        host: &str,
        action: &str,
        by: String,
        on_start: &(dyn Fn(&ManualAction) -> Result<(), String> + Sync),
    ) -> Result<Sent, ManualRefusal> {
        let record = self.prepare_manual_action(host, action, by).await?;
        on_start(&record).map_err(ManualRefusal::NotRecorded)?;
        Ok(self.send_manual_action(record).await)
    }

    /// The first half of [`Client::manual_action`], for a shell whose store
    /// is async: checks the host and the agent's list, and makes the record
    /// to store before [`Client::send_manual_action`].
    pub async fn prepare_manual_action(
        &self,
        host: &str,
        action: &str,
        by: String,
    ) -> Result<ManualAction, ManualRefusal> {
        if self.config.host(host).is_none() {
            return Err(ManualRefusal::UnknownHost);
        }
        let list = self
            .action_list(host)
            .await
            .map_err(ManualRefusal::AgentUnreachable)?;
        if !list.iter().any(|a| a.name == action) {
            return Err(ManualRefusal::NotAllowlisted);
        }
        Ok(ManualAction::start(
            self.transport.now_ms(),
            by,
            host,
            action,
        ))
    }

    /// Sends a prepared manual action (its key makes a retry a replay):
    /// its record completed with the result or the error, and the agent's
    /// answer (an error keeps the agent's own refusal for the operator).
    pub async fn send_manual_action(&self, mut record: ManualAction) -> Sent {
        let (host, action) = (record.host.clone(), record.action.clone());
        let span = tracing::info_span!("action", %action, %host, manual = true, by = %record.by);
        let answer =
            tracing::Instrument::instrument(self.run_action_on(&host, &action, &record.key), span)
                .await;
        let result = answer.clone().map_err(|e| e.to_string());
        record.finish(self.transport.now_ms(), result);
        (record, answer)
    }

    /// The actions the host's agent lists (their timeouts remembered).
    async fn action_list(&self, host: &str) -> Result<Vec<ActionInfo>, AgentError> {
        let list: ActionList = self
            .agent_json(host, "GET", "/v1/actions", AGENT_READ_TIMEOUT_MS, None)
            .await?;
        let mut known = self.timeouts.lock().unwrap_or_else(|e| e.into_inner());
        for a in &list.actions {
            match known
                .iter_mut()
                .find(|((h, n), _)| h == host && *n == a.name)
            {
                Some((_, t)) => *t = a.timeout_ms,
                None => known.push(((host.to_string(), a.name.clone()), a.timeout_ms)),
            }
        }
        Ok(list.actions)
    }
}

/// A manual action sent: its completed record, and the agent's answer.
pub type Sent = (ManualAction, Result<ActionResult, AgentError>);

impl<T: Transport> RemediationIo for Client<T> {
    fn now_ms(&self) -> u64 {
        self.transport.now_ms()
    }

    async fn sleep_ms(&self, ms: u64) {
        self.transport.sleep_ms(ms).await;
    }

    async fn diagnostics(&self, host: &str) -> Result<Diagnostics, String> {
        self.agent_json(host, "GET", "/v1/diagnostics", AGENT_READ_TIMEOUT_MS, None)
            .await
            .map_err(|e| e.to_string())
    }

    async fn actions(&self, host: &str) -> Result<Vec<ActionInfo>, String> {
        self.action_list(host).await.map_err(|e| e.to_string())
    }

    async fn logs(&self, host: &str, service: &str, tail: u32) -> Result<Vec<String>, String> {
        let logs: LogLines = self
            .agent_json(
                host,
                "GET",
                &logs_path(service, tail),
                AGENT_READ_TIMEOUT_MS,
                None,
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(logs.lines)
    }

    async fn run_action(
        &self,
        host: &str,
        action: &str,
        key: &str,
    ) -> Result<ActionResult, String> {
        self.run_action_on(host, action, key)
            .await
            .map_err(|e| e.to_string())
    }

    fn has_model(&self) -> bool {
        self.secrets.openai_key.is_some()
    }

    async fn chat(&self, request: &serde_json::Value) -> Result<Completion, String> {
        let key = self.secrets.openai_key.as_deref().ok_or("no model key")?;
        let body = serde_json::to_string(request).map_err(|e| e.to_string())?;
        let auth = format!("Bearer {key}");
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ];
        let timeout_ms = (self.config.llm.timeout_s * 1000.0) as u64;
        match self
            .transport
            .exchange(
                "POST",
                &chat_url(&self.config),
                &headers,
                Some(body),
                timeout_ms,
            )
            .await
        {
            Exchange::Answered { status, body, .. } if (200..300).contains(&status) => {
                json::read(&body).map_err(|e| format!("malformed completion: {e}"))
            }
            Exchange::Answered { status, body, .. } => Err(model_error(status, &body)),
            Exchange::TimedOut { .. } => Err("the model timed out".into()),
            Exchange::Failed { error, .. } => Err(error),
        }
    }

    fn fresh_nonce(&self) -> Result<u128, String> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
        Ok(u128::from_le_bytes(bytes))
    }

    async fn probe(&self, target: &Target) -> Observation {
        let at_ms = self.transport.now_ms();
        let nonce = self.nonce.fetch_add(1, Ordering::Relaxed);
        let url = cache_busted_url(&target.url, nonce);
        let response = match self.probe_headers(target) {
            Err(error) => ProbeResponse::Failed {
                error,
                latency_ms: 0,
            },
            Ok(headers) => {
                let body = target.request_body();
                let mut pairs: Vec<(&str, &str)> = NO_CACHE_HEADERS.to_vec();
                pairs.extend(headers);
                // Probed from several vantage points: each says which it is.
                if target.has_regions() {
                    pairs.push((REGION_HEADER, &self.config.region));
                }
                if let Some((_, content_type)) = &body {
                    pairs.push(("Content-Type", content_type));
                }
                let call = Call {
                    method: &target.method,
                    url: &url,
                    headers: &pairs,
                    body: body.as_ref().map(|(text, _)| text.clone()),
                    timeout_ms: target.timeout_ms,
                    follow_redirects: target.follow_redirects,
                };
                probe_response(self.transport.send(call).await)
            }
        };
        classify(target, response, at_ms)
    }
}

impl<T: Transport> Client<T> {
    /// A target's request headers: its own, then those from the
    /// environment (an unset variable fails the probe, naming it).
    fn probe_headers<'a>(&'a self, target: &'a Target) -> Result<Vec<(&'a str, &'a str)>, String> {
        let mut headers: Vec<_> = text_pairs(&target.headers).collect();
        for (name, var) in text_pairs(&target.headers_env) {
            let value = self
                .secrets
                .probe_header(var)
                .ok_or_else(|| format!("{var} is not set (headers_env.{name})"))?;
            headers.push((name, value));
        }
        Ok(headers)
    }
}

fn probe_response(exchange: Exchange) -> ProbeResponse {
    match exchange {
        Exchange::Answered {
            status,
            headers,
            body,
            cert,
            elapsed_ms,
            ..
        } => ProbeResponse::Answered {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            cert,
            latency_ms: elapsed_ms,
        },
        Exchange::TimedOut { elapsed_ms } => ProbeResponse::TimedOut {
            latency_ms: elapsed_ms,
        },
        Exchange::Failed { error, elapsed_ms } => ProbeResponse::Failed {
            error,
            latency_ms: elapsed_ms,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_wire::ErrorBody;

    #[test]
    fn an_agents_refusal_reaches_the_operator_as_what_happened() {
        let refused = |status, code| {
            ManualRefusal::AgentUnreachable(AgentError::answered(
                status,
                &serde_json::to_vec(&ErrorBody::new(code, "details")).unwrap(),
            ))
        };
        let answer = |r: &ManualRefusal| {
            let (status, code, _) = r.answer("vps1", "restart_api_core");
            (status, code.to_string())
        };
        assert_eq!(
            answer(&refused(429, "rate_limited")),
            (429, "rate_limited".into())
        );
        assert_eq!(answer(&refused(409, "busy")), (409, "busy".into()));
        assert_eq!(
            answer(&refused(502, "docker_unavailable")),
            (502, "docker_unavailable".into())
        );
        let silent = ManualRefusal::AgentUnreachable(AgentError::Failed(
            "no answer from the agent within 15000 ms".into(),
        ));
        assert_eq!(answer(&silent), (502, "agent_unreachable".into()));
    }
}

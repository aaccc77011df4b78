//! What every shell (native, Worker) shares around its own HTTP client:
//! secrets from the environment, where an agent is, and what the answers of
//! Discord, the agents and the model mean.

use std::collections::HashMap;

use vigil_wire::ErrorBody;

use crate::config::{Channel, ChannelKind, Config, PAGERDUTY_EVENTS_URL};
use crate::core::acklink::AckLinks;
use crate::core::alert::{Delivery, OutboxEntry};
use crate::core::channel;
use crate::core::probe::truncate;

/// Secrets and endpoints, read from the environment once.
#[derive(Clone, Default)]
pub struct Secrets {
    pub webhook_url: Option<String>,
    pub oncall_user: Option<String>,
    pub openai_key: Option<String>,
    pub read_token: Option<String>,
    pub control_token: Option<String>,
    pub jobs_token: Option<String>,
    pub crash_log_token: Option<String>,
    /// The optional bearer token of the native `/metrics`.
    pub metrics_token: Option<String>,
    pub signal_token: Option<String>,
    /// host id -> (agent URL, agent token)
    pub hosts: HashMap<String, (Option<String>, Option<String>)>,
    /// `[ack_link] secret_env`'s secret.
    pub ack_link_secret: Option<String>,
    /// `[deadman] url_env`'s URL.
    pub deadman_url: Option<String>,
    /// `[[channel]]` id -> its URL, routing key and signing secret.
    pub channels: HashMap<String, ChannelSecrets>,
}

#[derive(Debug, Clone, Default)]
pub struct ChannelSecrets {
    pub url: Option<String>,
    pub routing_key: Option<String>,
    pub secret: Option<String>,
}

impl Secrets {
    pub fn from_env(config: &Config, lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| lookup(k).filter(|v| !v.is_empty());
        Secrets {
            webhook_url: get(&config.discord.webhook_url_env),
            oncall_user: get(&config.discord.oncall_user_id_env),
            openai_key: get(&config.llm.api_key_env),
            read_token: get("OPS_READ_TOKEN"),
            control_token: get("CONTROL_TOKEN"),
            jobs_token: get("JOBS_TOKEN"),
            crash_log_token: get("CRASH_LOG_TOKEN"),
            metrics_token: get("METRICS_TOKEN"),
            signal_token: get("SIGNAL_TOKEN"),
            hosts: config
                .hosts
                .iter()
                .map(|h| (h.id.clone(), (get(&h.url_env), get(&h.token_env))))
                .collect(),
            deadman_url: config.deadman.url_env.as_deref().and_then(get),
            ack_link_secret: config.ack_link.as_ref().and_then(|a| get(&a.secret_env)),
            channels: config
                .channels
                .iter()
                .map(|c| {
                    let var = |v: &Option<String>| v.as_deref().and_then(get);
                    let s = ChannelSecrets {
                        url: var(&c.url_env),
                        routing_key: var(&c.routing_key_env),
                        secret: var(&c.secret_env),
                    };
                    (c.id.clone(), s)
                })
                .collect(),
        }
    }

    /// The API tokens as the edge requires them, by the ops-agent's rule
    /// (`vigil_wire::token::check_configured`). The error names the variable.
    pub fn check_tokens(&self) -> Result<(), String> {
        for (var, token) in self.api_tokens() {
            if let Some(t) = token {
                vigil_wire::token::check_configured(t).map_err(|why| format!("{var} {why}"))?;
            }
        }
        Ok(())
    }

    /// The ack links' signer, when `[ack_link]` is configured; an error when
    /// its secret is missing or short.
    pub fn ack_links(&self, config: &Config) -> Result<Option<AckLinks>, String> {
        let Some(a) = &config.ack_link else {
            return Ok(None);
        };
        let secret = self
            .ack_link_secret
            .clone()
            .ok_or_else(|| format!("{} is not set ([ack_link] needs it)", a.secret_env))?;
        vigil_wire::token::check_configured(&secret)
            .map_err(|why| format!("{} {why}", a.secret_env))?;
        Ok(Some(AckLinks::new(
            &a.base_url,
            secret,
            (a.valid_s * 1000.0) as u64,
        )))
    }

    /// Every API token with its variable and the routes it opens.
    pub fn api_tokens(&self) -> [(&'static str, Option<&str>); 5] {
        [
            ("CONTROL_TOKEN", self.control_token.as_deref()),
            ("OPS_READ_TOKEN", self.read_token.as_deref()),
            ("JOBS_TOKEN", self.jobs_token.as_deref()),
            ("CRASH_LOG_TOKEN", self.crash_log_token.as_deref()),
            ("SIGNAL_TOKEN", self.signal_token.as_deref()),
        ]
    }

    /// A host's agent: base URL (no trailing slash) and token.
    pub fn agent<'a>(&'a self, config: &Config, host: &str) -> Result<(&'a str, &'a str), String> {
        let cfg = config
            .host(host)
            .ok_or_else(|| format!("no host {host:?} configured"))?;
        let (url, token) = self
            .hosts
            .get(host)
            .ok_or_else(|| format!("no host {host:?} configured"))?;
        let url = url
            .as_deref()
            .ok_or_else(|| format!("{} is not set", cfg.url_env))?;
        let token = token
            .as_deref()
            .ok_or_else(|| format!("{} is not set", cfg.token_env))?;
        Ok((url.trim_end_matches('/'), token))
    }

    /// The webhook URL asking Discord to answer with the created message.
    pub fn webhook(&self, config: &Config) -> Result<String, String> {
        let url = self
            .webhook_url
            .as_deref()
            .ok_or_else(|| format!("{} is not set", config.discord.webhook_url_env))?;
        Ok(discord_wait(url))
    }

    /// Where and what to send an outbox entry on a `[[channel]]`: URL,
    /// extra headers, body. An error says what is missing (the entry waits).
    pub fn channel_request(
        &self,
        channel: &Channel,
        entry: &OutboxEntry,
        now_ms: u64,
    ) -> Result<ChannelRequest, Delivery> {
        let secrets = self.channels.get(&channel.id).cloned().unwrap_or_default();
        let missing = |v: &Option<String>| Delivery::Failed {
            error: format!("{} is not set", v.as_deref().unwrap_or("?")),
        };
        let url = || secrets.url.clone().ok_or_else(|| missing(&channel.url_env));
        let json = |v: &serde_json::Value| v.to_string();
        Ok(match channel.kind {
            ChannelKind::Discord => ChannelRequest {
                url: discord_wait(&url()?),
                headers: Vec::new(),
                body: serde_json::to_string(&entry.message).map_err(|e| Delivery::Rejected {
                    error: e.to_string(),
                })?,
            },
            ChannelKind::Slack => ChannelRequest {
                url: url()?,
                headers: Vec::new(),
                body: json(&channel::slack_message(entry)),
            },
            ChannelKind::Webhook => {
                let secret = secrets
                    .secret
                    .clone()
                    .ok_or_else(|| missing(&channel.secret_env))?;
                let body = json(&channel::webhook_body(entry));
                ChannelRequest {
                    url: url()?,
                    headers: signature(&secret, now_ms, &body).into(),
                    body,
                }
            }
            ChannelKind::Pagerduty => {
                let key = secrets
                    .routing_key
                    .clone()
                    .ok_or_else(|| missing(&channel.routing_key_env))?;
                let event =
                    channel::pagerduty_event(entry, &key).ok_or_else(|| Delivery::Rejected {
                        error: "a pagerduty channel takes pages only".into(),
                    })?;
                ChannelRequest {
                    url: channel
                        .events_url
                        .clone()
                        .unwrap_or_else(|| PAGERDUTY_EVENTS_URL.into()),
                    headers: Vec::new(),
                    body: json(&event),
                }
            }
        })
    }
}

/// One delivery to a channel.
pub struct ChannelRequest {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

/// The header of a generic webhook's signature.
pub const SIGNATURE_HEADER: &str = "X-Vigil-Signature";
pub const TIMESTAMP_HEADER: &str = "X-Vigil-Timestamp";

/// The signed webhook's headers: `X-Vigil-Timestamp: <ms>` (Unix epoch
/// milliseconds) and `X-Vigil-Signature: sha256=<hex HMAC-SHA256 of
/// "<ms>.<body>">`; the receiver recomputes it with the shared secret and
/// refuses an old timestamp (replay).
pub fn signature(secret: &str, now_ms: u64, body: &str) -> [(&'static str, String); 2] {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(format!("{now_ms}.{body}").as_bytes());
    [
        (TIMESTAMP_HEADER, now_ms.to_string()),
        (
            SIGNATURE_HEADER,
            format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
        ),
    ]
}

fn discord_wait(url: &str) -> String {
    if url.contains('?') {
        format!("{url}&wait=true")
    } else {
        format!("{url}?wait=true")
    }
}

/// What a missing token closes, for the log at start.
pub fn closed_by_missing(var: &str) -> &'static str {
    match var {
        "CONTROL_TOKEN" => "the control routes (POST /ops/actions, /ops/restart, ack, resolve, maintenance) refuse every request; the read routes take OPS_READ_TOKEN only",
        "OPS_READ_TOKEN" => "the read routes (GET /ops/...) take CONTROL_TOKEN only",
        "JOBS_TOKEN" => "POST /ops/jobs/heartbeat refuses every request",
        "SIGNAL_TOKEN" => "POST /ops/signal (the ops-agents' signals) refuses every request; polling alone detects outages",
        _ => "POST /_log (crash reports) refuses every request",
    }
}

/// Largest body of a crash report (`POST /_log`).
pub const CRASH_BODY_LIMIT: usize = 32 * 1024;
/// Largest body of every other request.
pub const BODY_LIMIT: usize = 16 * 1024;

/// CORS answers for `/_log`: browsers post crash reports from the pages
/// they crash in, on other origins.
pub const CRASH_CORS: [(&str, &str); 4] = [
    ("access-control-allow-origin", "*"),
    ("access-control-allow-methods", "POST, OPTIONS"),
    (
        "access-control-allow-headers",
        "authorization, content-type",
    ),
    ("access-control-max-age", "86400"),
];

/// The agent API's paths, as the edge calls them.
pub fn action_path(action: &str) -> String {
    format!("/v1/actions/{action}")
}

pub fn logs_path(service: &str, tail: u32) -> String {
    format!("/v1/logs/{service}?tail={tail}")
}

/// The chat completions endpoint under a configured base URL.
pub fn chat_url(config: &Config) -> String {
    format!(
        "{}/chat/completions",
        config.llm.base_url.trim_end_matches('/')
    )
}

/// What a webhook's answer means for the outbox.
pub fn delivery_outcome(status: u16, retry_after_header: Option<f64>, body: &str) -> Delivery {
    match status {
        200..=299 => Delivery::Sent,
        429 => {
            let body_retry = serde_json::from_slice::<serde_json::Value>(body.as_bytes())
                .ok()
                .and_then(|v| v.get("retry_after")?.as_f64());
            let secs = body_retry.or(retry_after_header).unwrap_or(1.0).max(0.0);
            Delivery::RateLimited {
                retry_after_ms: (secs * 1000.0).ceil() as u64,
            }
        }
        400..=499 => Delivery::Rejected {
            error: format!("HTTP {status}: {}", truncate(body, 300)),
        },
        _ => Delivery::Failed {
            error: format!("HTTP {status}"),
        },
    }
}

/// An agent's error answer, as the audit trail shows it.
pub fn agent_error(status: u16, body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => format!("HTTP {status}: {}: {}", e.error.code, e.error.message),
        Err(_) => format!("HTTP {status}"),
    }
}

/// Agent refusals an operator is told as they are: the agent said what
/// happened, and it is not that the agent is unreachable.
const AGENT_REFUSALS: [(u16, &str); 4] = [
    (429, "rate_limited"),
    (409, "busy"),
    (502, "docker_unavailable"),
    (503, "audit_unavailable"),
];

/// The agent's own status and code in an error from [`agent_error`] when
/// it is one of [`AGENT_REFUSALS`]; `None` when the agent did not answer or
/// failed otherwise.
pub fn agent_refusal(error: &str) -> Option<(u16, &'static str)> {
    let rest = error.strip_prefix("HTTP ")?;
    let (status, rest) = rest.split_once(": ")?;
    let (code, _) = rest.split_once(": ")?;
    let status: u16 = status.parse().ok()?;
    AGENT_REFUSALS
        .iter()
        .find(|(s, c)| *s == status && *c == code)
        .copied()
}

/// The answer to a manual action that failed, from its record's error:
/// what the agent said when it said what happened, else 502 `action_failed`.
pub fn manual_failure(error: Option<String>) -> (u16, &'static str, String) {
    let error = error.unwrap_or_default();
    let (status, code) = agent_refusal(&error).unwrap_or((502, "action_failed"));
    (status, code, error)
}

/// A model server's error answer.
pub fn model_error(status: u16, body: &[u8]) -> String {
    format!(
        "HTTP {status}: {}",
        truncate(&String::from_utf8_lossy(body), 200)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_answers() {
        assert_eq!(delivery_outcome(204, None, ""), Delivery::Sent);
        assert_eq!(
            delivery_outcome(429, Some(3.0), r#"{"retry_after": 1.5}"#),
            Delivery::RateLimited {
                retry_after_ms: 1500
            }
        );
        assert_eq!(
            delivery_outcome(429, Some(3.0), "not json"),
            Delivery::RateLimited {
                retry_after_ms: 3000
            }
        );
        assert!(
            matches!(delivery_outcome(400, None, "Invalid Form Body"), Delivery::Rejected { error } if error.contains("Invalid Form Body"))
        );
        assert!(matches!(
            delivery_outcome(502, None, ""),
            Delivery::Failed { .. }
        ));
    }

    #[test]
    fn short_or_padded_tokens_are_refused_naming_the_variable() {
        let config = Config::parse("t.toml", "").unwrap();
        let secrets = |pairs: &'static [(&'static str, &'static str)]| {
            Secrets::from_env(&config, |k| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            })
        };
        assert!(secrets(&[("CONTROL_TOKEN", "0123456789abcdef")])
            .check_tokens()
            .is_ok());
        assert!(secrets(&[]).check_tokens().is_ok(), "missing is not short");
        assert_eq!(
            secrets(&[("JOBS_TOKEN", "short")]).check_tokens(),
            Err("JOBS_TOKEN is 5 characters: it must be at least 16".into())
        );
        assert_eq!(
            secrets(&[("SIGNAL_TOKEN", "short-signal")]).check_tokens(),
            Err("SIGNAL_TOKEN is 12 characters: it must be at least 16".into())
        );
        assert_eq!(
            secrets(&[("CRASH_LOG_TOKEN", "0123456789abcdef\n")]).check_tokens(),
            Err(
                "CRASH_LOG_TOKEN is blank or starts or ends with whitespace (a trailing newline?): remove it"
                    .into()
            )
        );
        assert!(secrets(&[("OPS_READ_TOKEN", "                ")])
            .check_tokens()
            .is_err());
    }

    #[test]
    fn agent_errors_name_code_and_message() {
        let body = serde_json::to_vec(&ErrorBody::new("busy", "restart_all is running")).unwrap();
        assert_eq!(
            agent_error(409, &body),
            "HTTP 409: busy: restart_all is running"
        );
        assert_eq!(agent_error(502, b"<html>"), "HTTP 502");
    }

    #[test]
    fn agent_refusals_keep_what_happened() {
        let said = |status, code| {
            agent_error(
                status,
                &serde_json::to_vec(&ErrorBody::new(code, "why: details")).unwrap(),
            )
        };
        for (status, code) in [
            (429, "rate_limited"),
            (409, "busy"),
            (502, "docker_unavailable"),
            (503, "audit_unavailable"),
        ] {
            assert_eq!(agent_refusal(&said(status, code)), Some((status, code)));
        }
        assert_eq!(
            manual_failure(Some(said(409, "busy"))),
            (409, "busy", said(409, "busy"))
        );
        assert_eq!(manual_failure(None).1, "action_failed");
        assert_eq!(agent_refusal(&said(502, "docker_failed")), None);
        assert_eq!(agent_refusal(&said(404, "unknown_action")), None);
        assert_eq!(agent_refusal("HTTP 502"), None);
        assert_eq!(
            agent_refusal("no answer from the agent within 15000 ms"),
            None
        );
    }
}

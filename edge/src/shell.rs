//! What every shell (native, Worker) shares around its own HTTP client:
//! secrets from the environment, where an agent is, and what the answers of
//! Discord, the agents and the model mean.

use vigil_wire::ErrorBody;

use crate::config::{text_pairs, Channel, ChannelKind, Config, PAGERDUTY_EVENTS_URL};
use crate::core::acklink::AckLinks;
use crate::core::alert::{Delivery, OutboxEntry};
use crate::core::channel;
use crate::core::incident::ManualAction;
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
    /// The key remote probers sign their batches with (`POST
    /// /ops/observations`, `vigil-edge --probe-only`).
    pub observations_token: Option<String>,
    /// host id -> (agent URL, agent token). Pairs, like the two lists
    /// below: a few entries with unique ids (the configuration checks them),
    /// and no `HashMap` code in the Worker (bundle size).
    pub hosts: Vec<(String, AgentSecrets)>,
    /// The probes' secret header values: variable (a target's
    /// `headers_env`) -> value.
    pub probe_headers: Vec<(String, String)>,
    /// `[ack_link] secret_env`'s secret.
    pub ack_link_secret: Option<String>,
    /// `[deadman] url_env`'s URL.
    pub deadman_url: Option<String>,
    /// `[[channel]]` id -> its URL, routing key and signing secret.
    pub channels: Vec<(String, ChannelSecrets)>,
}

/// A host's agent: its URL and its token, each if set.
pub type AgentSecrets = (Option<String>, Option<String>);

#[derive(Debug, Clone, Default)]
pub struct ChannelSecrets {
    pub url: Option<String>,
    pub routing_key: Option<String>,
    pub secret: Option<String>,
}

impl Secrets {
    pub fn from_env(config: &Config, lookup: impl Fn(&str) -> Option<String>) -> Self {
        Self::read(config, &lookup)
    }

    /// One copy for every caller's `lookup` (six in the Worker bundle, 0.9
    /// KB gzip).
    fn read(config: &Config, lookup: &dyn Fn(&str) -> Option<String>) -> Self {
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
            observations_token: get("OBSERVATIONS_TOKEN"),
            hosts: config
                .hosts
                .iter()
                .map(|h| (h.id.clone(), (get(&h.url_env), get(&h.token_env))))
                .collect(),
            probe_headers: config
                .targets
                .iter()
                .flat_map(|t| text_pairs(&t.headers_env))
                .filter_map(|(_, var)| Some((var.to_string(), get(var)?)))
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

    /// A probe header's value, by its variable.
    pub fn probe_header(&self, var: &str) -> Option<&str> {
        self.probe_headers
            .iter()
            .find(|(k, _)| k == var)
            .map(|(_, v)| v.as_str())
    }

    /// Every target's `headers_env` variable is set; the error names the
    /// key and the variable.
    pub fn check_probe_headers(&self, config: &Config) -> Result<(), String> {
        for (i, t) in config.targets.iter().enumerate() {
            for (name, var) in text_pairs(&t.headers_env) {
                if self.probe_header(var).is_none() {
                    return Err(format!(
                        "target[{i}].headers_env.{name}: {var} is not set (target {:?})",
                        t.id
                    ));
                }
            }
        }
        Ok(())
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
    pub fn api_tokens(&self) -> [(&'static str, Option<&str>); 6] {
        [
            ("CONTROL_TOKEN", self.control_token.as_deref()),
            ("OPS_READ_TOKEN", self.read_token.as_deref()),
            ("JOBS_TOKEN", self.jobs_token.as_deref()),
            ("CRASH_LOG_TOKEN", self.crash_log_token.as_deref()),
            ("SIGNAL_TOKEN", self.signal_token.as_deref()),
            ("OBSERVATIONS_TOKEN", self.observations_token.as_deref()),
        ]
    }

    /// A host's agent: base URL (no trailing slash) and token.
    pub fn agent<'a>(&'a self, config: &Config, host: &str) -> Result<(&'a str, &'a str), String> {
        let cfg = config
            .host(host)
            .ok_or_else(|| format!("no host {host:?} configured"))?;
        let (url, token) = self
            .hosts
            .iter()
            .find(|(id, _)| id == host)
            .map(|(_, agent)| agent)
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
        let secrets = (self.channels.iter())
            .find(|(id, _)| *id == channel.id)
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
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
    let timestamp = now_ms.to_string();
    let signed = sign(secret, &timestamp, body.as_bytes());
    [(TIMESTAMP_HEADER, timestamp), (SIGNATURE_HEADER, signed)]
}

fn mac(secret: &str, timestamp: &str, body: &[u8]) -> hmac::Hmac<sha2::Sha256> {
    use hmac::Mac;
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">` under `secret`: the
/// `X-Vigil-Signature` of webhooks and of remote probers' batches.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let bytes = mac(secret, timestamp, body).finalize().into_bytes();
    format!("sha256={}", hex::encode(bytes))
}

/// Whether `signature` is [`sign`]`(secret, timestamp, body)` (compared in
/// constant time).
pub fn verify_signature(secret: &str, timestamp: &str, signature: &str, body: &[u8]) -> bool {
    use hmac::Mac;
    let Some(bytes) = signature
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    mac(secret, timestamp, body).verify_slice(&bytes).is_ok()
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
        "OBSERVATIONS_TOKEN" => "POST /ops/observations (remote probers' batches) refuses every request: the views of targets' other regions stay silent",
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

/// A `Retry-After` header's seconds (a date is not taken). Read as a JSON
/// number: the parser is in both shells already, where `str::parse::<f64>`
/// brought core's float parser and its 10 KB table of powers of five into
/// the Worker bundle (14.5 KB gzip, BENCHMARKS.md).
pub fn retry_after_secs(header: &str) -> Option<f64> {
    serde_json::from_slice::<serde_json::Value>(header.as_bytes())
        .ok()?
        .as_f64()
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

/// A failed call to an agent. Shown (on the audit trail, to the model) as
/// the text the agent's answer gave; to the operator of a manual action,
/// an agent's own refusal keeps its status and code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// One of [`AGENT_REFUSALS`]: the agent said what happened, and it is
    /// not that the agent is unreachable.
    #[error("HTTP {status}: {code}: {message}")]
    Refused {
        status: u16,
        code: &'static str,
        message: String,
    },
    /// Any other error answer, no answer, or an answer not understood.
    #[error("{0}")]
    Failed(String),
}

impl AgentError {
    /// An agent's error answer.
    pub fn answered(status: u16, body: &[u8]) -> Self {
        let Ok(e) = crate::core::json::read::<ErrorBody>(body) else {
            return AgentError::Failed(format!("HTTP {status}"));
        };
        let refusal = AGENT_REFUSALS
            .iter()
            .find(|(s, c)| *s == status && *c == e.error.code);
        match refusal {
            Some((_, code)) => AgentError::Refused {
                status,
                code,
                message: e.error.message,
            },
            None => AgentError::Failed(format!(
                "HTTP {status}: {}: {}",
                e.error.code, e.error.message
            )),
        }
    }

    /// The status and code the operator is answered with: the agent's own
    /// for a refusal, else `otherwise` (502 with the caller's code).
    pub fn answer(&self, otherwise: &'static str) -> (u16, &'static str, String) {
        match self {
            AgentError::Refused { status, code, .. } => (*status, *code, self.to_string()),
            AgentError::Failed(e) => (502, otherwise, e.clone()),
        }
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

/// The message of a manual action that ran but whose result could not be
/// stored (answered 503 `store_unavailable`: the record stays in memory).
pub fn manual_unstored(record: &ManualAction, error: &str) -> String {
    let outcome = record.result.as_ref().map_or_else(
        || format!("failed: {}", record.error.clone().unwrap_or_default()),
        |r| format!("{:?}", r.outcome).to_ascii_lowercase(),
    );
    format!(
        "{} ran on {} ({outcome}) but its result could not be stored: {error}",
        record.action, record.host
    )
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
    fn retry_after_is_seconds_integer_or_decimal() {
        assert_eq!(retry_after_secs("120"), Some(120.0));
        assert_eq!(retry_after_secs("1.5"), Some(1.5));
        assert_eq!(retry_after_secs("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(retry_after_secs("\"5\""), None);
        assert_eq!(retry_after_secs(""), None);
    }

    #[test]
    fn a_signature_holds_for_its_timestamp_and_body_only() {
        let token = "observations-token-0123";
        let sig = sign(token, "1700", b"{}");
        assert!(verify_signature(token, "1700", &sig, b"{}"));
        assert!(
            !verify_signature(token, "1701", &sig, b"{}"),
            "another timestamp"
        );
        assert!(
            !verify_signature(token, "1700", &sig, b"{ }"),
            "another body"
        );
        assert!(!verify_signature(
            "another-token-0123456",
            "1700",
            &sig,
            b"{}"
        ));
        assert!(
            !verify_signature(token, "1700", &sig[7..], b"{}"),
            "no scheme"
        );
        assert!(!verify_signature(token, "1700", "sha256=zz", b"{}"));
        assert!(!verify_signature(token, "1700", "sha256=", b"{}"));
    }

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
    fn agent_errors_keep_the_agents_refusals_typed() {
        let said = |status, code| {
            AgentError::answered(
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
            let e = said(status, code);
            assert_eq!(
                e.to_string(),
                format!("HTTP {status}: {code}: why: details")
            );
            assert_eq!(e.answer("action_failed"), (status, code, e.to_string()));
        }
        for (e, text) in [
            (
                said(502, "docker_failed"),
                "HTTP 502: docker_failed: why: details",
            ),
            (
                said(404, "unknown_action"),
                "HTTP 404: unknown_action: why: details",
            ),
            (AgentError::answered(502, b"<html>"), "HTTP 502"),
            // Text that reads like a refusal is not one.
            (
                AgentError::Failed("HTTP 409: busy: x".into()),
                "HTTP 409: busy: x",
            ),
        ] {
            assert_eq!(
                e.answer("action_failed"),
                (502, "action_failed", text.into())
            );
        }
    }
}

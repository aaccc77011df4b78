//! Signals from a host's ops-agent (`POST /ops/signal`): a container of a
//! service died, was killed or went unhealthy. A signal only moves the
//! probes of the targets that name that host and service to now; the probe
//! (then the confirm probe after `retry_after_s`, as usual) decides. So a
//! signal is never an incident by itself, and a flood of them costs at most
//! one early probe per target per `retry_after_s`.

use serde::Serialize;

use super::probe::Health;
use super::state::{State, TargetState};
use crate::config::Config;

/// The body of `POST /ops/signal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSignal {
    /// The agent's host id as the edge knows it (`[[host]] id`).
    pub host: String,
    /// The compose service the event is about.
    pub service: String,
    /// What the engine said (`die`, `oom`, `kill`, `unhealthy`, ...).
    pub event: String,
    /// When the agent saw it (for the log; the edge's clock decides).
    pub at_ms: u64,
}

/// Longest host, service or event name taken.
const NAME_MAX: usize = 128;

impl HostSignal {
    /// Parses a request body; the error names the field at fault.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
            format!(
                "expected {{\"host\": id, \"service\": name, \"event\": name, \"at_ms\": ms}}: {e}"
            )
        })?;
        let Some(fields) = value.as_object() else {
            return Err("the body must be a JSON object".into());
        };
        if let Some(extra) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(format!("{extra}: unknown field (expected {FIELDS:?})"));
        }
        let name = |field: &str| match fields.get(field).map(|v| v.as_str()) {
            None => Err(format!("{field}: missing")),
            Some(Some(v)) if !v.is_empty() && v.len() <= NAME_MAX => Ok(v.to_string()),
            Some(_) => Err(format!("{field}: a string of 1 to {NAME_MAX} characters")),
        };
        Ok(HostSignal {
            host: name("host")?,
            service: name("service")?,
            event: name("event")?,
            at_ms: match fields.get("at_ms") {
                None => return Err("at_ms: missing".into()),
                Some(v) => v
                    .as_u64()
                    .ok_or("at_ms: milliseconds since the epoch (a whole number)")?,
            },
        })
    }
}

const FIELDS: [&str; 4] = ["host", "service", "event", "at_ms"];

/// What a signal did (the body of the 202 answer): the targets probed at
/// once, and the matching targets that were not (each had an early probe
/// within `retry_after_s`, is being confirmed already, or is down). Both
/// empty: no target watches that host and service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SignalOutcome {
    pub probing: Vec<String>,
    pub throttled: Vec<String>,
}

impl State {
    /// Schedules an early probe of every target watching the signal's host
    /// and service (see the module's documentation).
    pub fn signal(&mut self, config: &Config, sig: &HostSignal, now_ms: u64) -> SignalOutcome {
        let gap = config.retry_after_ms();
        let mut outcome = SignalOutcome::default();
        for t in config.targets.iter().filter(|t| {
            t.host.as_deref() == Some(sig.host.as_str())
                && t.services.contains(&sig.service)
                && config.probes_here(t)
        }) {
            let ts = self
                .targets
                .entry(t.id.clone())
                .or_insert_with(|| TargetState::new(now_ms));
            let recent = ts
                .early_probe_ms
                .is_some_and(|at| now_ms < at.saturating_add(gap));
            if recent || ts.confirm_at_ms.is_some() || ts.health == Health::Down {
                outcome.throttled.push(t.id.clone());
                continue;
            }
            ts.early_probe_ms = Some(now_ms);
            ts.confirm_at_ms = Some(now_ms);
            outcome.probing.push(t.id.clone());
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_body_is_refused_naming_the_field() {
        let ok = HostSignal::parse(
            br#"{"host": "vps1", "service": "api-core", "event": "die", "at_ms": 5}"#,
        )
        .unwrap();
        assert_eq!(ok.service, "api-core");
        for (body, field) in [
            (r#"{"host": "vps1", "event": "die", "at_ms": 5}"#, "service"),
            (
                r#"{"host": "vps1", "service": "a", "event": "die", "at_ms": -1}"#,
                "at_ms",
            ),
            (
                r#"{"host": "", "service": "a", "event": "die", "at_ms": 1}"#,
                "host",
            ),
            (
                r#"{"host": "h", "service": "a", "event": "die", "at_ms": 1, "x": 1}"#,
                "x",
            ),
            ("not json", "expected"),
        ] {
            let e = HostSignal::parse(body.as_bytes()).unwrap_err();
            assert!(e.starts_with(field), "{body}: {e}");
        }
    }
}

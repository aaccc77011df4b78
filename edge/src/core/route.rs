//! Which channels an alert goes to: severities, `[[channel]]`s and
//! `[[route]]`s. Without routes everything goes to the `[discord]` webhook,
//! as the channel [`DEFAULT_CHANNEL`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{ChannelKind, Config};

/// The channel of the `[discord]` section (no `[[channel]]` of that id).
pub const DEFAULT_CHANNEL: &str = "discord";

/// How much an alert matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A page, a remediable target down, remediation exhausted.
    Critical,
    /// Degraded, an alert-only target down, a job late, a burn alert.
    Warning,
    /// Resolved, maintenance, outcomes.
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// What an alert does to a paging channel's incident (PagerDuty's
/// `event_action`); alerts without one are notices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PageEvent {
    Trigger,
    Acknowledge,
    Resolve,
}

#[derive(Debug, Clone, PartialEq)]
struct Route {
    severity: Vec<Severity>,
    targets: Vec<glob::Pattern>,
    channels: Vec<String>,
}

/// The routes and channels of a configuration, as the outbox applies them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routing {
    routes: Vec<Route>,
    /// Channels that take page events only (PagerDuty).
    paging_only: Vec<String>,
    cooldown_ms: BTreeMap<String, u64>,
}

impl Routing {
    pub fn from_config(config: &Config) -> Self {
        Routing {
            routes: config
                .routes
                .iter()
                .map(|r| Route {
                    severity: r.severity.clone(),
                    // Validated when the configuration was read.
                    targets: r
                        .targets
                        .iter()
                        .filter_map(|t| glob::Pattern::new(t).ok())
                        .collect(),
                    channels: r.channels.clone(),
                })
                .collect(),
            paging_only: config
                .channels
                .iter()
                .filter(|c| c.kind == ChannelKind::Pagerduty)
                .map(|c| c.id.clone())
                .collect(),
            cooldown_ms: config
                .channels
                .iter()
                .filter(|c| c.cooldown_s > 0.0)
                .map(|c| (c.id.clone(), (c.cooldown_s * 1000.0) as u64))
                .collect(),
        }
    }

    /// The channels an alert of `severity` about `subject` goes to, each
    /// once, in the order the routes name them. A paging-only channel takes
    /// page events only.
    pub fn channels(&self, severity: Severity, subject: &str, page: bool) -> Vec<String> {
        if self.routes.is_empty() {
            return vec![DEFAULT_CHANNEL.to_string()];
        }
        let mut out: Vec<String> = Vec::new();
        for r in &self.routes {
            let severity_ok = r.severity.is_empty() || r.severity.contains(&severity);
            let target_ok = r.targets.is_empty() || r.targets.iter().any(|p| p.matches(subject));
            if !(severity_ok && target_ok) {
                continue;
            }
            for c in &r.channels {
                if !out.contains(c) && (page || !self.paging_only.contains(c)) {
                    out.push(c.clone());
                }
            }
        }
        out
    }

    /// Whether `channel` takes page events only (and hears of their ack
    /// and resolve: a chat channel sees the recovery itself).
    pub fn is_paging(&self, channel: &str) -> bool {
        self.paging_only.iter().any(|c| c == channel)
    }

    /// How long repeats about one subject are held off on `channel`.
    pub fn cooldown_ms(&self, channel: &str) -> u64 {
        self.cooldown_ms.get(channel).copied().unwrap_or(0)
    }
}

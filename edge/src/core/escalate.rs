//! Escalation (`[[escalation]]`): a page not acknowledged within a level's
//! `ack_within_s` pages that level's channels (a second person, another
//! PagerDuty service). Each level is recorded on the incident (its audit
//! trail) before anything is sent, so it pages at most once per level,
//! across restarts and overlapping cycles.

use serde::{Deserialize, Serialize};

use super::alert::{page_message, with_ack_link, Alert};
use super::route::{PageEvent, Severity};
use super::state::State;
use crate::config::Config;

/// One level an incident escalated to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationStep {
    /// 1 for the first `[[escalation]]`.
    pub level: usize,
    pub at_ms: u64,
    pub channels: Vec<String>,
}

impl State {
    /// Pages the next level of every paged, unacknowledged incident whose
    /// current level has waited its `ack_within_s`.
    pub fn check_escalations(&mut self, config: &Config, now_ms: u64) {
        let mut pages = Vec::new();
        for inc in self.incidents.iter_mut() {
            let Some(paged_at) = inc.paged_at_ms else {
                continue;
            };
            if !inc.is_open() || inc.acked_at_ms.is_some() || inc.folded_into.is_some() {
                continue;
            }
            let done = inc.escalations.len();
            let Some(level) = config.escalations.get(done) else {
                continue;
            };
            let since = inc.escalations.last().map_or(paged_at, |e| e.at_ms);
            let wait = (level.ack_within_s * 1000.0) as u64;
            if now_ms.saturating_sub(since) < wait {
                continue;
            }
            let n = done + 1;
            let reason = format!(
                "not acknowledged within {} s: escalated to level {n}",
                level.ack_within_s
            );
            let tried = inc.tried();
            let mut message = page_message(
                level.user_id.as_deref(),
                &inc.target,
                &inc.id,
                &reason,
                &tried,
            );
            if let Some(l) = &self.ack_links {
                message = with_ack_link(message, &l.link(&inc.id, now_ms));
            }
            inc.escalations.push(EscalationStep {
                level: n,
                at_ms: now_ms,
                channels: level.channels.clone(),
            });
            pages.push((
                level.channels.clone(),
                Alert {
                    key: format!("{}/page/{n}", inc.id),
                    severity: Severity::Critical,
                    subject: inc.target.clone(),
                    message,
                    page: Some(PageEvent::Trigger),
                    incident: Some(inc.id.clone()),
                    details: tried,
                    event: None,
                },
            ));
        }
        for (channels, alert) in pages {
            let paging: Vec<String> = channels
                .iter()
                .filter(|c| self.outbox.routing.is_paging(c))
                .cloned()
                .collect();
            if let Some(inc) = alert.incident.as_deref().and_then(|i| self.incident_mut(i)) {
                for c in paging {
                    if !inc.paged_to.contains(&c) {
                        inc.paged_to.push(c);
                    }
                }
            }
            self.outbox.push_to(&channels, alert, now_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::channel::pagerduty_event;
    use crate::core::incident::RemediationStatus;

    const ESCALATING: &str = r#"
[[channel]]
id = "pd-primary"
kind = "pagerduty"
routing_key_env = "PD1"
[[channel]]
id = "pd-backup"
kind = "pagerduty"
routing_key_env = "PD2"
[[route]]
severity = ["critical"]
channels = ["pd-primary"]
[[escalation]]
ack_within_s = 900
channels = ["pd-backup"]
[[target]]
id = "api"
url = "http://127.0.0.1:1/"
"#;

    #[test]
    fn the_backup_service_is_paged_once_after_ack_within_and_hears_the_resolve() {
        let c = Config::parse("t.toml", ESCALATING).unwrap();
        let mut s = State::default();
        s.reconcile(&c, 0, true);
        let id = s.open_incident("api", RemediationStatus::Exhausted, 0);
        s.page(&id, "remediation exhausted", None, 1000);
        let to = |s: &State, ch: &str| {
            s.outbox
                .entries
                .iter()
                .filter(|e| e.channel == ch)
                .map(|e| pagerduty_event(e, "k").unwrap()["event_action"].to_string())
                .collect::<Vec<_>>()
        };
        s.check_escalations(&c, 900_999);
        assert!(to(&s, "pd-backup").is_empty(), "not yet");
        s.check_escalations(&c, 901_000);
        s.check_escalations(&c, 901_001);
        assert_eq!(to(&s, "pd-backup"), ["\"trigger\""], "once");
        let mut s: State =
            crate::core::json::read(serde_json::to_string(&s).unwrap().as_bytes()).unwrap();
        s.reconcile(&c, 950_000, true);
        s.check_escalations(&c, 5_000_000);
        assert_eq!(
            to(&s, "pd-backup"),
            ["\"trigger\""],
            "once, across a restart"
        );
        s.resolve(&id, "alice", 5_000_001).unwrap();
        assert_eq!(to(&s, "pd-backup"), ["\"trigger\"", "\"resolve\""]);
        assert_eq!(to(&s, "pd-primary"), ["\"trigger\"", "\"resolve\""]);
        let trail = &s.incident(&id).unwrap().escalations;
        assert_eq!(trail.len(), 1);
        assert_eq!((trail[0].level, trail[0].at_ms), (1, 901_000));
    }
}

//! Reminders: while an incident stays open and unacknowledged, its routes
//! hear of it again every `remind_every_s` (off by default), with how long
//! and what was tried. Each reminder is counted on the incident, so none is
//! sent twice, across restarts too.

use super::alert::{reminder_message, Alert};
use super::route::Severity;
use super::state::State;
use crate::config::Config;

impl State {
    /// Queues the reminders that are due at `now_ms`: the n-th one
    /// `n × remind_every_s` after the incident opened, at most one per
    /// incident per call (a long stop does not send a burst).
    pub fn check_reminders(&mut self, config: &Config, now_ms: u64) {
        let every = config.remind_every_ms();
        if every == 0 {
            return;
        }
        let mut due = Vec::new();
        for inc in self.incidents.iter_mut() {
            if !inc.is_open() || inc.acked_at_ms.is_some() || inc.folded_into.is_some() {
                continue;
            }
            let open_for = now_ms.saturating_sub(inc.opened_at_ms);
            let n = open_for / every;
            if n <= u64::from(inc.reminders) {
                continue;
            }
            inc.reminders = u32::try_from(n).unwrap_or(u32::MAX);
            let health = inc.history.last().map_or("down", |c| c.to.as_str());
            let severity = if inc.paged_at_ms.is_some() {
                Severity::Critical
            } else {
                Severity::Warning
            };
            let message = reminder_message(&inc.target, &inc.id, health, open_for, &inc.tried());
            let key = format!("{}/remind/{n}", inc.id);
            due.push(Alert::notice(key, severity, &inc.target, message));
        }
        for alert in due {
            self.outbox.push(alert, now_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::incident::RemediationStatus;

    #[test]
    fn reminders_come_every_period_until_acked_once_each_across_a_restart() {
        let c = Config::parse(
            "t.toml",
            "remind_every_s = 600\n[[target]]\nid = \"api\"\nurl = \"http://127.0.0.1:1/\"\n",
        )
        .unwrap();
        let mut s = State::default();
        s.reconcile(&c, 0, true);
        let id = s.open_incident("api", RemediationStatus::Exhausted, 0);
        let reminders = |s: &State| {
            s.outbox
                .entries
                .iter()
                .filter(|e| e.key.contains("/remind/"))
                .count()
        };
        s.check_reminders(&c, 599_999);
        assert_eq!(reminders(&s), 0);
        s.check_reminders(&c, 600_000);
        s.check_reminders(&c, 600_001);
        assert_eq!(reminders(&s), 1);
        let title = s.outbox.entries.last().unwrap().headline();
        assert_eq!(title, "api: still down after 10 min");
        // A restart: nothing is sent twice.
        let mut s: State =
            crate::core::json::read(serde_json::to_string(&s).unwrap().as_bytes()).unwrap();
        s.reconcile(&c, 700_000, true);
        s.check_reminders(&c, 700_000);
        assert_eq!(reminders(&s), 1);
        // The edge was stopped for an hour: one reminder, not six.
        s.check_reminders(&c, 4_800_000);
        assert_eq!(reminders(&s), 2);
        s.acknowledge(&id, "alice", 4_800_001).unwrap();
        s.check_reminders(&c, 6_000_000);
        assert_eq!(reminders(&s), 2, "acknowledged: no more");
        let off = Config::parse("t.toml", "").unwrap();
        let mut quiet = State::default();
        quiet.open_incident("api", RemediationStatus::Exhausted, 0);
        quiet.check_reminders(&off, 10_000_000);
        assert!(quiet.outbox.entries.is_empty(), "off by default");
    }
}

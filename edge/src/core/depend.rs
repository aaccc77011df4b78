//! Dependencies (`depends_on`): while a parent target is down, a child's
//! incident is recorded but folded into the parent's: no alert of its own
//! (the parent's incident gets one "affected" alert naming its children), no
//! page, no remediation. When the parent is no longer down, a child still
//! bad alerts (and may be remediated and paged) on its own at once; a child
//! that recovered meanwhile closes without any alert, so nothing is left
//! half-told on a channel.

use super::alert::{affected_message, released_message, Alert};
use super::probe::Health;
use super::route::Severity;
use super::state::State;
use crate::config::{Config, Role};

impl State {
    /// A down parent of `target` and its open incident.
    fn down_parent(&self, config: &Config, target: &str) -> Option<(String, String)> {
        config.target(target)?.depends_on.iter().find_map(|p| {
            let ts = self.targets.get(p)?;
            let inc = ts.open_incident.clone()?;
            (ts.health == Health::Down).then(|| (p.clone(), inc))
        })
    }

    /// Whether any alert of `incident` went out already.
    fn told(&self, incident: &str) -> bool {
        let part = format!("/{incident}/");
        self.outbox.sent_keys.iter().any(|k| k.contains(&part))
    }

    /// Folds and releases children after a cycle's observations (before
    /// pages are considered).
    pub fn fold_dependencies(&mut self, config: &Config, now_ms: u64) {
        let mut folds = Vec::new();
        let mut releases = Vec::new();
        let mut silenced = Vec::new();
        for inc in &self.incidents {
            let parent = self.down_parent(config, &inc.target);
            match (&inc.folded_into, parent) {
                (None, Some((_, p))) if inc.is_open() && !self.told(&inc.id) => {
                    folds.push((inc.id.clone(), p));
                    silenced.push(inc.id.clone());
                }
                (Some(_), Some(_)) => silenced.push(inc.id.clone()),
                (Some(_), None) if !inc.is_open() => silenced.push(inc.id.clone()),
                (Some(p), None) => releases.push((inc.id.clone(), p.clone())),
                _ => {}
            }
        }
        // Nothing of a folded incident goes out.
        self.outbox.entries.retain(|e| {
            e.attempts > 0
                || !silenced
                    .iter()
                    .any(|id| e.key.starts_with(&format!("{id}/")))
        });
        for (child, parent) in folds {
            let target = match self.incident_mut(&child) {
                Some(inc) => {
                    inc.folded_into = Some(parent.clone());
                    inc.target.clone()
                }
                None => continue,
            };
            if let Some(p) = self.incident_mut(&parent) {
                if !p.affected.contains(&target) {
                    p.affected.push(target);
                }
            }
        }
        for (child, parent) in releases {
            let parent_target = self
                .incident(&parent)
                .map_or(parent.clone(), |p| p.target.clone());
            let Some(inc) = self.incident_mut(&child) else {
                continue;
            };
            inc.folded_into = None;
            let health = inc.history.last().map_or(Health::Down, |c| c.to);
            let remediable = config
                .target(&inc.target)
                .is_some_and(|t| t.role == Role::Remediate);
            let severity = if health == Health::Down && remediable {
                Severity::Critical
            } else {
                Severity::Warning
            };
            let message = released_message(&inc.target, &inc.id, health, &parent_target);
            let key = format!("{}/released", inc.id);
            let alert = Alert::notice(key, severity, &inc.target.clone(), message);
            self.outbox.push(alert, now_ms);
        }
        let mut affected = Vec::new();
        for p in self.incidents.iter_mut() {
            if !p.affected.is_empty() && !p.affected_alerted && p.is_open() {
                p.affected_alerted = true;
                let message = affected_message(&p.target, &p.id, &p.affected);
                let key = format!("{}/affected", p.id);
                affected.push(Alert::notice(key, Severity::Warning, &p.target, message));
            }
        }
        for alert in affected {
            self.outbox.push(alert, now_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::alert::Delivery;
    use crate::core::history::History;
    use crate::core::probe::Observation;

    const DEPS: &str = r#"
interval_s = 60
retry_after_s = 1
failure_threshold = 1
recovery_threshold = 1
[[target]]
id = "gateway"
url = "http://127.0.0.1:1/"
[[target]]
id = "api"
url = "http://127.0.0.1:2/"
depends_on = ["gateway"]
[[target]]
id = "docs"
url = "http://127.0.0.1:3/"
depends_on = ["gateway"]
"#;

    /// One cycle on the fake clock: observations (in the given order),
    /// the tick, then every due message "sent".
    fn cycle(s: &mut State, c: &Config, at: u64, health: &[(&str, Health)]) -> Vec<String> {
        for (t, h) in health {
            let obs = Observation {
                target: t.to_string(),
                at_ms: at,
                health: *h,
                status: None,
                latency_ms: 1,
                error: None,
                cert: None,
            };
            s.observe(c, &obs, at);
        }
        s.tick(c, &History::default(), None, at);
        let mut sent = Vec::new();
        while let Some(e) = s.outbox.due(at, 100) {
            sent.push(e.headline());
            s.outbox.record(e.id, Delivery::Sent, at);
        }
        sent
    }

    fn setup() -> (Config, State) {
        let c = Config::parse("t.toml", DEPS).unwrap();
        let mut s = State::default();
        s.reconcile(&c, 0, true);
        (c, s)
    }

    use Health::{Down, Healthy};

    #[test]
    fn a_parent_outage_folds_its_children_into_one_alert_whatever_the_order() {
        let (c, mut s) = setup();
        cycle(
            &mut s,
            &c,
            0,
            &[("gateway", Healthy), ("api", Healthy), ("docs", Healthy)],
        );
        // The children are observed before their parent in this cycle.
        let sent = cycle(
            &mut s,
            &c,
            60_000,
            &[("api", Down), ("docs", Down), ("gateway", Down)],
        );
        assert_eq!(
            sent,
            [
                "gateway: healthy → down",
                "gateway down; api, docs affected"
            ]
        );
        let gw = s.targets["gateway"].open_incident.clone().unwrap();
        let api = s.targets["api"].open_incident.clone().unwrap();
        assert_eq!(
            s.incident(&api).unwrap().folded_into.as_deref(),
            Some(gw.as_str())
        );
        assert!(s.remediation_due(&c, 60_000).iter().all(|i| i == &gw));
        assert!(s.pages_due().iter().all(|(i, _)| i == &gw));
        // docs recovers while folded: it closes without a word.
        let sent = cycle(
            &mut s,
            &c,
            120_000,
            &[("docs", Healthy), ("api", Down), ("gateway", Down)],
        );
        assert!(sent.is_empty(), "{sent:?}");
        // A restart in the middle keeps the fold.
        let mut s: State =
            crate::core::json::read(serde_json::to_string(&s).unwrap().as_bytes()).unwrap();
        s.reconcile(&c, 150_000, true);
        // The parent is back; api, still down, stands alone at once.
        let sent = cycle(
            &mut s,
            &c,
            180_000,
            &[("gateway", Healthy), ("api", Down), ("docs", Healthy)],
        );
        assert_eq!(
            sent,
            [
                "gateway: down → healthy",
                "api: still down after gateway recovered"
            ]
        );
        assert_eq!(s.incident(&api).unwrap().folded_into, None);
        let sent = cycle(&mut s, &c, 240_000, &[("api", Healthy)]);
        assert_eq!(sent, ["api: down → healthy"]);
        assert!(s.outbox.entries.is_empty());
    }

    #[test]
    fn a_child_already_alerted_stands_alone() {
        let (c, mut s) = setup();
        cycle(&mut s, &c, 0, &[("gateway", Healthy), ("api", Healthy)]);
        let sent = cycle(&mut s, &c, 60_000, &[("api", Down)]);
        assert_eq!(sent, ["api: healthy → down"]);
        let sent = cycle(&mut s, &c, 120_000, &[("gateway", Down), ("api", Down)]);
        assert_eq!(sent, ["gateway: healthy → down"]);
        let sent = cycle(&mut s, &c, 180_000, &[("api", Healthy)]);
        assert_eq!(
            sent,
            ["api: down → healthy"],
            "its down was told: so is its recovery"
        );
    }

    #[test]
    fn cycles_in_depends_on_are_refused_with_the_path() {
        let text = r#"
[[target]]
id = "a"
url = "http://127.0.0.1:1/"
depends_on = ["b"]
[[target]]
id = "b"
url = "http://127.0.0.1:1/"
depends_on = ["c"]
[[target]]
id = "c"
url = "http://127.0.0.1:1/"
depends_on = ["a"]
"#;
        let e = Config::parse("t.toml", text).unwrap_err().to_string();
        assert!(e.contains("target[0].depends_on"), "{e}");
        assert!(e.contains("a → b → c → a"), "{e}");
        let unknown = "[[target]]\nid = \"a\"\nurl = \"http://x/\"\ndepends_on = [\"zz\"]\n";
        let e = Config::parse("t.toml", unknown).unwrap_err().to_string();
        assert!(e.contains("no target \"zz\""), "{e}");
    }
}

//! Flap detection: a target whose debounced state changes more than
//! `flap_threshold` times within `flap_window_s` is flapping. The episode is
//! one incident with one alert saying so (and at most one page), its
//! remediation held; later changes are recorded on the incident without an
//! alert; once the target keeps one state for `flap_settle_s`, one alert says
//! it settled (and the incident resolves if it settled healthy). Pure.

use serde::{Deserialize, Serialize};

use super::alert::{flap_message, settled_message, Alert};
use super::incident::{RemediationStatus, StateChange};
use super::probe::Health;
use super::route::Severity;
use super::state::{Event, State};
use crate::config::{Config, Role, Target};

/// A target's recent changes and its flapping episode, if any.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Flap {
    /// When the debounced state changed, within the window (at most
    /// `flap_threshold + 1` kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes_ms: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub episode: Option<Episode>,
}

/// A flapping episode: its incident and how many changes it has seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Episode {
    pub incident: String,
    pub since_ms: u64,
    pub last_change_ms: u64,
    pub changes: u64,
}

impl Flap {
    pub fn is_quiet(&self) -> bool {
        self.changes_ms.is_empty() && self.episode.is_none()
    }

    /// Notes a change at `now_ms`; true when the changes within the window
    /// now exceed the threshold.
    fn note(&mut self, config: &Config, now_ms: u64) -> bool {
        let window = config.flap_window_ms();
        self.changes_ms.push(now_ms);
        while self
            .changes_ms
            .first()
            .is_some_and(|&t| now_ms.saturating_sub(t) >= window)
            || self.changes_ms.len() > config.flap_threshold as usize + 1
        {
            self.changes_ms.remove(0);
        }
        self.changes_ms.len() > config.flap_threshold as usize
    }
}

/// Why remediation waits while a target flaps.
fn held(changes: usize, config: &Config) -> String {
    format!(
        "flapping: {changes} state changes within {} s; remediation waits until it keeps one state for {} s",
        config.flap_window_s, config.flap_settle_s
    )
}

impl State {
    /// Takes a debounced transition of `target` before the ordinary incident
    /// logic. True when the flap logic handled it (an episode began or goes
    /// on): the caller then opens, resolves and alerts nothing.
    pub(super) fn flap_transition(
        &mut self,
        config: &Config,
        target: &Target,
        change: &StateChange,
        events: &mut Vec<Event>,
    ) -> bool {
        let now_ms = change.at_ms;
        let Some(ts) = self.targets.get_mut(&target.id) else {
            return false;
        };
        let flapping = ts.flap.note(config, now_ms);
        let changes = ts.flap.changes_ms.len();
        let open = ts.open_incident.clone();
        let going_on = ts.flap.episode.as_ref().map(|e| e.incident.clone());
        let incident = match going_on {
            Some(id) if self.incident(&id).is_some_and(|i| i.is_open()) => {
                if let Some(e) = self
                    .targets
                    .get_mut(&target.id)
                    .and_then(|t| t.flap.episode.as_mut())
                {
                    e.changes += 1;
                    e.last_change_ms = now_ms;
                }
                id
            }
            _ if !flapping => {
                // Resolved by hand meanwhile, or not flapping: ordinary.
                if let Some(ts) = self.targets.get_mut(&target.id) {
                    ts.flap.episode = None;
                }
                return false;
            }
            _ => {
                let id = match open {
                    Some(id) => id,
                    None => {
                        let held = RemediationStatus::Suppressed(held(changes, config));
                        self.open_incident(&target.id, held, now_ms)
                    }
                };
                self.begin_episode(config, target, &id, changes, now_ms);
                events.push(Event::Flapping {
                    target: target.id.clone(),
                    incident: id.clone(),
                });
                id
            }
        };
        if let Some(ts) = self.targets.get_mut(&target.id) {
            ts.open_incident = Some(incident.clone());
        }
        if let Some(inc) = self.incident_mut(&incident) {
            inc.history.push(change.clone());
        }
        true
    }

    fn begin_episode(
        &mut self,
        config: &Config,
        target: &Target,
        incident: &str,
        changes: usize,
        now_ms: u64,
    ) {
        self.cover_page(config, &target.id, incident, now_ms);
        if let Some(inc) = self.incident_mut(incident) {
            // Held: rounds wait, and the incident pages (once) unless covered.
            if target.role == Role::Remediate && inc.acked_at_ms.is_none() {
                inc.remediation = RemediationStatus::Suppressed(held(changes, config));
            } else if target.role == Role::AlertOnly {
                inc.remediation = RemediationStatus::NotApplicable("alert-only target".into());
            }
        }
        if let Some(ts) = self.targets.get_mut(&target.id) {
            ts.flap.episode = Some(Episode {
                incident: incident.to_string(),
                since_ms: now_ms,
                last_change_ms: now_ms,
                changes: changes as u64,
            });
        }
        let message = flap_message(&target.id, incident, changes, config.flap_window_s);
        let key = format!("{incident}/flapping");
        self.outbox.push(
            Alert::notice(key, Severity::Warning, &target.id, message),
            now_ms,
        );
    }

    /// A page about this target within the flap window covers `incident`
    /// (a relapse or an episode): the person already knows, so it does not
    /// page again.
    pub(super) fn cover_page(
        &mut self,
        config: &Config,
        target: &str,
        incident: &str,
        now_ms: u64,
    ) {
        let window_start = now_ms.saturating_sub(config.flap_window_ms());
        let covered_by = self
            .incidents
            .iter()
            .filter(|i| i.target == target && i.id != incident)
            .filter(|i| i.paged_at_ms.is_some_and(|p| p >= window_start))
            .map(|i| i.id.clone())
            .next_back();
        if let Some(inc) = self.incident_mut(incident) {
            if inc.paged_at_ms.is_none() {
                inc.page_covered_by = covered_by;
            }
        }
    }

    /// Ends the episodes of targets that kept one state for
    /// `flap_settle_s`: one alert each; a target settled healthy resolves
    /// its incident, one settled bad gets its remediation back.
    pub fn check_flapping(&mut self, config: &Config, now_ms: u64) {
        let settle = config.flap_settle_ms();
        let settled: Vec<(String, Episode, Health)> = self
            .targets
            .iter()
            .filter_map(|(id, ts)| {
                let e = ts.flap.episode.as_ref()?;
                (now_ms.saturating_sub(e.last_change_ms) >= settle)
                    .then(|| (id.clone(), e.clone(), ts.health))
            })
            .collect();
        for (id, episode, health) in settled {
            if let Some(ts) = self.targets.get_mut(&id) {
                ts.flap = Flap::default();
                if health == Health::Healthy {
                    ts.open_incident = None;
                    ts.last_resolved_at_ms = Some(now_ms);
                }
            }
            let remediate = config
                .target(&id)
                .is_some_and(|t| t.role == Role::Remediate);
            let Some(inc) = self.incident_mut(&episode.incident) else {
                continue;
            };
            if !inc.is_open() {
                continue;
            }
            if health == Health::Healthy {
                inc.resolved_at_ms = Some(now_ms);
                inc.resolution = Some(format!(
                    "stopped flapping: healthy for {} s after {} changes",
                    config.flap_settle_s, episode.changes
                ));
            } else if remediate && matches!(inc.remediation, RemediationStatus::Suppressed(_)) {
                inc.remediation = RemediationStatus::Pending;
            }
            let message = settled_message(&id, &episode.incident, health, episode.changes);
            let key = format!("{}/settled", episode.incident);
            self.outbox
                .push(Alert::notice(key, Severity::Info, &id, message), now_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::probe::Observation;

    fn config() -> Config {
        Config::parse(
            "t.toml",
            r#"
interval_s = 10
retry_after_s = 1
failure_threshold = 1
flap_threshold = 3
flap_window_s = 100
flap_settle_s = 50
[[target]]
id = "api"
url = "http://127.0.0.1:1/"
"#,
        )
        .unwrap()
    }

    fn obs(health: Health, at_ms: u64) -> Observation {
        Observation {
            target: "api".into(),
            at_ms,
            health,
            status: Some(if health == Health::Healthy { 200 } else { 500 }),
            latency_ms: 1,
            error: None,
            cert: None,
        }
    }

    #[test]
    fn more_changes_than_the_threshold_make_one_episode_that_settles() {
        let c = config();
        let mut s = State::default();
        let mut t = 0;
        let mut events = Vec::new();
        for i in 0..20 {
            let h = if i % 2 == 0 {
                Health::Down
            } else {
                Health::Healthy
            };
            t += 10_000;
            events.extend(s.observe(&c, &obs(h, t), t));
            s.check_flapping(&c, t);
        }
        // Changes 1-3 are ordinary (two incidents), the 4th begins the episode.
        assert_eq!(s.incidents.len(), 2, "{:?}", s.incidents);
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, Event::Flapping { .. }))
                .count(),
            1
        );
        let keys: Vec<&str> = s.outbox.entries.iter().map(|e| e.key.as_str()).collect();
        let (first, second) = (s.incidents[0].id.clone(), s.incidents[1].id.clone());
        assert_eq!(
            keys,
            [
                format!("{first}/t1"),
                format!("{first}/t2"),
                format!("{second}/t3"),
                format!("{second}/flapping")
            ],
            "no alert per change while flapping"
        );
        let inc = s.incident(&second).unwrap();
        assert!(inc.is_open());
        assert_eq!(inc.history.len(), 18, "every change is on the record");
        // The last observation was healthy; 50 s later it has settled.
        s.check_flapping(&c, t + 49_999);
        assert!(s.incident(&second).unwrap().is_open());
        s.check_flapping(&c, t + 50_000);
        let inc = s.incident(&second).unwrap();
        assert!(!inc.is_open());
        assert!(inc
            .resolution
            .as_deref()
            .unwrap()
            .contains("stopped flapping"));
        assert_eq!(
            s.outbox.entries.last().unwrap().key,
            format!("{second}/settled")
        );
        assert!(s.targets["api"].flap.is_quiet());
        assert!(s.targets["api"].open_incident.is_none());
        // Afterwards it is an ordinary target again.
        s.observe(&c, &obs(Health::Down, t + 60_000), t + 60_000);
        assert_eq!(s.incidents.len(), 3);
    }

    #[test]
    fn changes_spread_beyond_the_window_are_not_flapping() {
        let c = config();
        let mut s = State::default();
        for i in 0..10u64 {
            let h = if i % 2 == 0 {
                Health::Down
            } else {
                Health::Healthy
            };
            let t = (i + 1) * 40_000;
            s.observe(&c, &obs(h, t), t);
        }
        assert!(s.targets["api"].flap.episode.is_none());
        assert_eq!(s.incidents.len(), 5);
    }
}

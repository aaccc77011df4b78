//! SLO burn-rate alerts: a target with an availability objective alerts
//! when its error budget goes at more than 14.4× the sustainable rate over
//! one hour (fast burn: 2 % of a 30-day budget in that hour) or 6× over six
//! hours (slow burn), once per episode: again only after the rate has
//! dropped below the threshold and risen over it anew.

use serde::{Deserialize, Serialize};

use super::alert::{slo_message, Alert};
use super::history::{History, HOUR_MS};
use super::route::Severity;
use super::state::{Event, State, TargetState};
use crate::config::Config;

pub const FAST_BURN: f64 = 14.4;
pub const SLOW_BURN: f64 = 6.0;

/// The burn episodes in progress: when each began.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Burning {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_since_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_since_ms: Option<u64>,
}

impl Burning {
    pub fn is_quiet(&self) -> bool {
        self.fast_since_ms.is_none() && self.slow_since_ms.is_none()
    }
}

impl State {
    /// Starts and ends burn episodes from the history; alerts at each start.
    pub fn check_slo(&mut self, config: &Config, history: &History, now_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        for t in &config.targets {
            let Some(objective) = t.slo else { continue };
            let status = history.slo(&t.id, objective, t.slo_days, now_ms);
            let ts = self
                .targets
                .entry(t.id.clone())
                .or_insert_with(|| TargetState::new(now_ms));
            let in_maintenance = ts.in_maintenance(now_ms);
            let windows = [
                (
                    "fast",
                    "hour",
                    HOUR_MS,
                    status.burn_1h,
                    FAST_BURN,
                    &mut ts.burning.fast_since_ms,
                ),
                (
                    "slow",
                    "6 hours",
                    6 * HOUR_MS,
                    status.burn_6h,
                    SLOW_BURN,
                    &mut ts.burning.slow_since_ms,
                ),
            ];
            let mut alerts = Vec::new();
            for (kind, label, window_ms, burn, threshold, since) in windows {
                match burn.filter(|b| *b > threshold) {
                    Some(b) if since.is_none() => {
                        *since = Some(now_ms);
                        if !in_maintenance {
                            alerts.push((kind, label, window_ms, b, threshold));
                        }
                    }
                    Some(_) => {}
                    None => *since = None,
                }
            }
            for (kind, label, window_ms, burn, threshold) in alerts {
                let message = slo_message(&t.id, label, burn, threshold, &status);
                let key = format!("slo/{}/{kind}/{now_ms}", t.id);
                self.outbox.push(
                    Alert::notice(key, Severity::Warning, &t.id, message),
                    now_ms,
                );
                events.push(Event::BurnRate {
                    target: t.id.clone(),
                    window: window_ms,
                });
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::probe::{Health, Observation};

    const MIN: u64 = 60_000;

    fn config() -> Config {
        Config::parse(
            "t.toml",
            r#"
[[target]]
id = "web"
url = "http://127.0.0.1:9/"
slo = 99.9
[[target]]
id = "plain"
url = "http://127.0.0.1:9/"
"#,
        )
        .unwrap()
    }

    fn probe(h: &mut History, target: &str, at: u64, down: bool) {
        h.record(
            &Observation {
                target: target.into(),
                at_ms: at,
                health: if down { Health::Down } else { Health::Healthy },
                status: None,
                latency_ms: 10,
                error: None,
                cert: None,
            },
            MIN,
        );
    }

    fn alerts(s: &State) -> Vec<String> {
        s.outbox.entries.iter().map(|e| e.key.clone()).collect()
    }

    /// A target probed each minute with a 99.9 % objective: one minute down
    /// in an hour (credited when the next probe comes) is a burn of
    /// 1/60 / 0.001 ≈ 16.7× (fast); after it leaves the hour window the
    /// episode ends; a second outage is a new episode.
    #[test]
    fn fast_and_slow_burn_alert_once_per_episode() {
        let config = config();
        let mut h = History::default();
        let mut s = State::default();
        let start = 100 * HOUR_MS;
        let mut sent = Vec::new();
        for m in 0..(8 * 60) {
            let at = start + m * MIN;
            // Down at minute 30, and for six minutes from minute 300.
            let down = m == 30 || (300..306).contains(&m);
            probe(&mut h, "web", at, down);
            probe(&mut h, "plain", at, down);
            s.check_slo(&config, &h, at);
            for k in alerts(&s) {
                if !sent.contains(&k) {
                    sent.push(k);
                }
            }
        }
        let fast: Vec<_> = sent.iter().filter(|k| k.contains("/fast/")).collect();
        let slow: Vec<_> = sent.iter().filter(|k| k.contains("/slow/")).collect();
        // Fast: once for the one-minute blip, once for the second outage.
        assert_eq!(fast.len(), 2, "{sent:?}");
        assert_eq!(fast[0], &format!("slo/web/fast/{}", start + 31 * MIN));
        assert_eq!(fast[1], &format!("slo/web/fast/{}", start + 301 * MIN));
        // Slow: one minute in 6 hours is 2.8× (no alert); two are 5.6× (no
        // alert), three 8.3× (alert), and it still burns at the end: no
        // second alert.
        assert_eq!(slow.len(), 1, "{sent:?}");
        assert_eq!(slow[0], &format!("slo/web/slow/{}", start + 302 * MIN));
        assert!(s.targets["web"].burning.slow_since_ms.is_some());
        // No objective, no alerts.
        assert!(sent.iter().all(|k| k.starts_with("slo/web/")));
        assert!(s.targets.get("plain").is_none_or(|t| t.burning.is_quiet()));
    }

    /// A blip that the confirm probe clears 15 s later is 15 s down: 4.2×
    /// a 99.9 % budget over the hour, no alert (the debounce ignores it
    /// too). Had it counted the whole minute, it would have been 16.7×.
    #[test]
    fn a_blip_cleared_by_the_confirm_probe_burns_too_little_to_alert() {
        let config = config();
        let mut h = History::default();
        let mut s = State::default();
        let start = 100 * HOUR_MS;
        for m in 0..120 {
            let at = start + m * MIN;
            probe(&mut h, "web", at, m == 30);
            if m == 30 {
                probe(&mut h, "web", at + 15_000, false);
            }
            s.check_slo(&config, &h, at);
        }
        assert!(alerts(&s).is_empty(), "{:?}", alerts(&s));
        let burn = h.slo("web", 99.9, 30, start + 40 * MIN).burn_1h.unwrap();
        assert!((burn - 15.0 / 3600.0 / 0.001).abs() < 0.01, "{burn}");
    }

    #[test]
    fn no_alert_while_in_maintenance_but_the_episode_counts() {
        let config = config();
        let mut h = History::default();
        let mut s = State::default();
        let start = 100 * HOUR_MS;
        s.set_maintenance("web", Some(start + HOUR_MS), start)
            .unwrap();
        probe(&mut h, "web", start, true);
        probe(&mut h, "web", start + MIN, true);
        s.check_slo(&config, &h, start + MIN);
        assert!(alerts(&s).is_empty());
        assert!(s.targets["web"].burning.fast_since_ms.is_some());
    }
}

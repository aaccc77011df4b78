//! Frontend crash reports (`POST /_log`): kept in a log of their own with a
//! retention limit; a critical one opens (or adds to) an incident for its
//! app and alerts Discord, once per fingerprint of app + message within the
//! cooldown. Pure: reports and `now` in, state changes out.

use serde::{Deserialize, Serialize};

use super::alert::{crash_flood_message, crash_message, Alert};
use super::incident::{RemediationStatus, StateChange};
use super::probe::{truncate, Health};
use super::route::Severity as AlertSeverity;
use super::state::State;
use crate::config::Config;

/// Reports kept, newest first.
const CRASHES_KEPT: usize = 200;
/// Reports older than this are dropped.
const CRASH_RETENTION_MS: u64 = 7 * 24 * 3_600_000;
/// A crash incident with no critical report for this long resolves itself.
pub const CRASH_QUIET_MS: u64 = 24 * 3_600_000;

// Field limits, in characters: longer values are cut and the report is
// marked `truncated`.
const APP_MAX: usize = 64;
const MESSAGE_MAX: usize = 1000;
const STACK_MAX: usize = 8000;
const URL_MAX: usize = 2000;
const USER_AGENT_MAX: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

/// When the browser saw it: epoch ms, or the text it sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Timestamp {
    Ms(u64),
    Text(String),
}

/// Read by a visitor, not `#[serde(untagged)]`: an untagged enum buffers the
/// value in serde's `Content` first, code the Worker bundle needed only for
/// this and `RemediationStatus` (BENCHMARKS.md, "The edge Worker").
impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MsOrText;
        impl serde::de::Visitor<'_> for MsOrText {
            type Value = Timestamp;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("epoch milliseconds or a text")
            }
            fn visit_u64<E>(self, ms: u64) -> Result<Timestamp, E> {
                Ok(Timestamp::Ms(ms))
            }
            fn visit_str<E>(self, text: &str) -> Result<Timestamp, E> {
                Ok(Timestamp::Text(text.to_string()))
            }
            fn visit_string<E>(self, text: String) -> Result<Timestamp, E> {
                Ok(Timestamp::Text(text))
            }
        }
        d.deserialize_any(MsOrText)
    }
}

/// The body of `POST /_log`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrashReport {
    pub app: String,
    pub message: String,
    #[serde(default)]
    pub stack: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default, alias = "userAgent")]
    pub user_agent: Option<String>,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    #[serde(default)]
    pub timestamp: Option<Timestamp>,
}

fn default_severity() -> Severity {
    Severity::Error
}

/// A stored report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Crash {
    pub id: u64,
    pub received_at_ms: u64,
    /// App + message, hashed: reports of one bug share it.
    pub fingerprint: String,
    pub app: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// The incident it opened or joined (critical reports only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
    /// Whether it was alerted, or folded into an alert within the cooldown.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub alerted: bool,
}

/// The crash log document, kept apart from the state: reports are bulky
/// and the monitor never reads them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CrashLog {
    pub crashes: Vec<Crash>,
    pub next_id: u64,
    /// The writes crash reports spent today: the Worker's daily allowance
    /// (stored with the log, so counting costs no write of its own).
    #[serde(default)]
    pub writes: crate::core::budget::DailyWrites,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CrashError {
    #[error("{0}")]
    Malformed(String),
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("app {0:?} is not in crash_log.apps")]
    UnknownApp(String),
}

impl CrashReport {
    /// Parses a body; a field over its limit is cut (and `truncated` set).
    pub fn parse(body: &[u8]) -> Result<(Self, bool), CrashError> {
        let mut r: CrashReport = super::json::read(body).map_err(|e| {
            CrashError::Malformed(format!(
                "expected {{\"app\", \"message\", \"stack\"?, \"url\"?, \"user_agent\"?, \"severity\"?: debug|info|warning|error|critical, \"timestamp\"?}}: {e}"
            ))
        })?;
        r.app = r.app.trim().to_string();
        if r.app.is_empty() {
            return Err(CrashError::Empty("app"));
        }
        if r.message.trim().is_empty() {
            return Err(CrashError::Empty("message"));
        }
        let mut truncated = false;
        let mut cut = |s: &mut String, max: usize| {
            if s.chars().count() > max {
                *s = truncate(s, max);
                truncated = true;
            }
        };
        cut(&mut r.app, APP_MAX);
        cut(&mut r.message, MESSAGE_MAX);
        for (field, max) in [
            (&mut r.stack, STACK_MAX),
            (&mut r.url, URL_MAX),
            (&mut r.user_agent, USER_AGENT_MAX),
        ] {
            if let Some(v) = field.as_mut() {
                cut(v, max);
            }
        }
        if let Some(Timestamp::Text(t)) = r.timestamp.as_mut() {
            cut(t, 64);
        }
        Ok((r, truncated))
    }

    /// FNV-1a of app and message: stable across shells and releases.
    pub fn fingerprint(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.app.bytes().chain([0]).chain(self.message.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }
}

impl CrashLog {
    /// Stores a report, dropping what is past retention.
    pub fn add(&mut self, mut crash: Crash, now_ms: u64) -> u64 {
        self.next_id += 1;
        crash.id = self.next_id;
        self.crashes.insert(0, crash);
        self.crashes.truncate(CRASHES_KEPT);
        while self
            .crashes
            .last()
            .is_some_and(|c| c.received_at_ms + CRASH_RETENTION_MS < now_ms)
        {
            self.crashes.pop();
        }
        self.next_id
    }

    /// Newest first, optionally of one app.
    pub fn recent<'a>(&'a self, app: Option<&'a str>, limit: usize) -> Vec<&'a Crash> {
        self.crashes
            .iter()
            .filter(|c| app.is_none_or(|a| c.app == a))
            .take(limit)
            .collect()
    }
}

/// Takes one parsed report: the state decides on incident and alert, the
/// log keeps the report. Returns the stored report; a report of an app not
/// in `crash_log.apps` is refused, nothing stored.
pub fn intake<'a>(
    state: &mut State,
    log: &'a mut CrashLog,
    report: CrashReport,
    truncated: bool,
    config: &Config,
    now_ms: u64,
) -> Result<&'a Crash, CrashError> {
    if !config.crash_log.allows(&report.app) {
        return Err(CrashError::UnknownApp(report.app));
    }
    let outcome = state.crash(&report, &config.crash_limits(), now_ms);
    let fingerprint = report.fingerprint();
    log.add(
        Crash {
            id: 0,
            received_at_ms: now_ms,
            fingerprint,
            app: report.app,
            message: report.message,
            stack: report.stack,
            url: report.url,
            user_agent: report.user_agent,
            severity: report.severity,
            timestamp: report.timestamp,
            truncated,
            incident: outcome.incident,
            alerted: outcome.alerted,
        },
        now_ms,
    );
    Ok(&log.crashes[0])
}

/// The subject of an app's crash incidents, beside target ids.
pub fn subject(app: &str) -> String {
    format!("crash:{app}")
}

/// Distinct crashes of one app alerted within the cooldown; more only count.
const ALERTS_PER_APP: usize = 5;

/// How much crash reports may open and alert, all apps together: the token
/// is public, the app name is whatever the sender writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashLimits {
    /// The window: alerts are remembered this long.
    pub cooldown_ms: u64,
    /// Crash alerts within the window.
    pub max_alerts: usize,
    /// Open crash incidents.
    pub max_open: usize,
}

/// A crash alert sent, remembered for the cooldown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashAlert {
    pub app: String,
    pub fingerprint: String,
    pub at_ms: u64,
}

/// What a report did to the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashOutcome {
    pub incident: Option<String>,
    pub alerted: bool,
}

impl State {
    /// Takes a report: a critical one opens or joins its app's incident and
    /// alerts, unless its fingerprint alerted within the cooldown, its app
    /// already alerted `ALERTS_PER_APP` distinct crashes in that time, or
    /// the global limits are reached (then one alert per window says so).
    pub fn crash(
        &mut self,
        report: &CrashReport,
        limits: &CrashLimits,
        now_ms: u64,
    ) -> CrashOutcome {
        let cooldown_ms = limits.cooldown_ms;
        if report.severity != Severity::Critical {
            return CrashOutcome {
                incident: None,
                alerted: false,
            };
        }
        self.crash_alerts.retain(|a| now_ms < a.at_ms + cooldown_ms);
        let fingerprint = report.fingerprint();
        let subject = subject(&report.app);
        let open = self
            .incidents
            .iter()
            .rev()
            .find(|i| i.is_open() && i.target == subject)
            .map(|i| i.id.clone());
        let seen = self
            .crash_alerts
            .iter()
            .any(|a| a.fingerprint == fingerprint);
        let app_alerts = self
            .crash_alerts
            .iter()
            .filter(|a| a.app == report.app)
            .count();
        let open_crashes = self
            .incidents
            .iter()
            .filter(|i| i.is_open() && i.target.starts_with("crash:"))
            .count();
        let over = self.crash_alerts.len() >= limits.max_alerts
            || (open.is_none() && open_crashes >= limits.max_open);
        // The token of a crash log is in every visitor's browser: a flood of
        // made-up messages (or app names) must not become a flood of alerts.
        if seen || app_alerts >= ALERTS_PER_APP || over {
            if over && !seen {
                // Keyed by window: one such alert per window.
                let window = now_ms / cooldown_ms.max(1);
                let message = crash_flood_message(limits);
                let key = format!("crash-flood/{window}");
                self.outbox.push(
                    Alert::notice(key, AlertSeverity::Warning, "vigil", message),
                    now_ms,
                );
            }
            if let Some(inc) = open.as_deref().and_then(|id| self.incident_mut(id)) {
                inc.crash_reports += 1;
            }
            return CrashOutcome {
                incident: open,
                alerted: false,
            };
        }
        self.crash_alerts.push(CrashAlert {
            app: report.app.clone(),
            fingerprint: fingerprint.clone(),
            at_ms: now_ms,
        });
        let id = open.unwrap_or_else(|| {
            let remediation =
                RemediationStatus::NotApplicable("a crash report: no remediation".into());
            let id = self.open_incident(&subject, remediation, now_ms);
            self.forget_old_incidents();
            id
        });
        let message = crash_message(&report.app, &report.message, report.url.as_deref(), &id);
        let key = format!("{id}/crash/{fingerprint}/{now_ms}");
        self.outbox.push(
            Alert::notice(key, AlertSeverity::Critical, &subject, message),
            now_ms,
        );
        if let Some(inc) = self.incident_mut(&id) {
            inc.crash_reports += 1;
            let from = inc.history.last().map_or(Health::Healthy, |c| c.to);
            let seq = inc.history.len() as u64 + 1;
            inc.history.push(StateChange {
                seq,
                at_ms: now_ms,
                from,
                to: Health::Down,
                status: None,
                latency_ms: 0,
                error: Some(format!(
                    "critical crash: {}",
                    truncate(&report.message, 300)
                )),
                vantages: Vec::new(),
            });
        }
        CrashOutcome {
            incident: Some(id),
            alerted: true,
        }
    }

    /// Resolves crash incidents that have been quiet for a day.
    pub fn check_crashes(&mut self, now_ms: u64) {
        for inc in self
            .incidents
            .iter_mut()
            .filter(|i| i.is_open() && i.target.starts_with("crash:"))
        {
            let last = inc.history.last().map_or(inc.opened_at_ms, |c| c.at_ms);
            if now_ms >= last + CRASH_QUIET_MS {
                inc.resolved_at_ms = Some(now_ms);
                inc.resolution = Some("no new critical crash for 24 h".into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;
    const LIMITS: CrashLimits = CrashLimits {
        cooldown_ms: HOUR,
        max_alerts: 1000,
        max_open: 1000,
    };

    fn report(body: &str) -> CrashReport {
        CrashReport::parse(body.as_bytes()).unwrap().0
    }

    #[test]
    fn bodies_are_checked_and_long_fields_cut() {
        let (r, truncated) = CrashReport::parse(
            br#"{"app": "shop", "message": "TypeError: x is undefined", "userAgent": "Firefox", "severity": "critical", "timestamp": 1700000000000}"#,
        )
        .unwrap();
        assert_eq!(r.user_agent.as_deref(), Some("Firefox"));
        assert_eq!(r.timestamp, Some(Timestamp::Ms(1_700_000_000_000)));
        for bad in [
            r#""timestamp": -1"#,
            r#""timestamp": 1.5"#,
            r#""timestamp": [1]"#,
        ] {
            let body = format!(r#"{{"app": "shop", "message": "m", {bad}}}"#);
            let why = CrashReport::parse(body.as_bytes()).unwrap_err().to_string();
            assert!(
                why.contains("expected epoch milliseconds or a text"),
                "{why}"
            );
        }
        assert!(!truncated);
        let long = "x".repeat(STACK_MAX + 10);
        let body = format!(r#"{{"app": "shop", "message": "m", "stack": "{long}"}}"#);
        let (r, truncated) = CrashReport::parse(body.as_bytes()).unwrap();
        assert!(truncated);
        assert_eq!(r.stack.unwrap().chars().count(), STACK_MAX);
        assert_eq!(r.severity, Severity::Error);
        for (bad, why) in [
            (r#"{"message": "m"}"#, "missing field `app`"),
            (r#"{"app": " ", "message": "m"}"#, "app must not be empty"),
            (
                r#"{"app": "a", "message": ""}"#,
                "message must not be empty",
            ),
            (
                r#"{"app": "a", "message": "m", "severity": "fatal"}"#,
                "unknown variant",
            ),
            (
                r#"{"app": "a", "message": "m", "extra": 1}"#,
                "unknown field",
            ),
            ("{not json", "expected"),
        ] {
            let e = CrashReport::parse(bad.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn fingerprints_depend_on_app_and_message_only() {
        let a = report(r#"{"app": "shop", "message": "boom", "url": "/a"}"#);
        let b = report(r#"{"app": "shop", "message": "boom", "url": "/b"}"#);
        let c = report(r#"{"app": "shop", "message": "bang"}"#);
        let d = report(r#"{"app": "shopb", "message": "oom"}"#);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_ne!(a.fingerprint(), d.fingerprint());
    }

    #[test]
    fn critical_reports_alert_once_per_fingerprint_and_cooldown() {
        let mut s = State::default();
        let boom = report(r#"{"app": "shop", "message": "boom", "severity": "critical"}"#);
        let bang = report(r#"{"app": "shop", "message": "bang", "severity": "critical"}"#);
        let minor = report(r#"{"app": "shop", "message": "meh", "severity": "warning"}"#);
        assert_eq!(s.crash(&minor, &LIMITS, 0).incident, None);
        assert!(s.incidents.is_empty());

        let first = s.crash(&boom, &LIMITS, 1000);
        assert!(first.alerted);
        let id = first.incident.clone().unwrap();
        assert_eq!(s.incident(&id).unwrap().target, "crash:shop");
        // Same fingerprint within the hour: joins, no alert.
        let again = s.crash(&boom, &LIMITS, 1000 + HOUR / 2);
        assert_eq!(
            again,
            CrashOutcome {
                incident: Some(id.clone()),
                alerted: false
            }
        );
        // Another message of the same app: same incident, its own alert.
        let other = s.crash(&bang, &LIMITS, 2000);
        assert_eq!(
            other,
            CrashOutcome {
                incident: Some(id.clone()),
                alerted: true
            }
        );
        // After the cooldown the first fingerprint alerts again.
        assert!(s.crash(&boom, &LIMITS, 1000 + HOUR).alerted);
        assert_eq!(s.incidents.len(), 1);
        assert_eq!(s.incident(&id).unwrap().crash_reports, 4);
        assert_eq!(s.outbox.entries.len(), 3);
        // Quiet for a day: resolved; the next critical report opens anew.
        s.check_crashes(1000 + HOUR + CRASH_QUIET_MS - 1);
        assert!(s.incident(&id).unwrap().is_open());
        s.check_crashes(1000 + HOUR + CRASH_QUIET_MS);
        assert!(!s.incident(&id).unwrap().is_open());
        let later = s.crash(&bang, &LIMITS, 3 * CRASH_QUIET_MS);
        assert_ne!(later.incident, Some(id));
    }

    #[test]
    fn a_flood_of_distinct_crashes_alerts_a_few_times_and_counts_the_rest() {
        let mut s = State::default();
        for i in 0..50 {
            let r = report(&format!(
                r#"{{"app": "shop", "message": "made up {i}", "severity": "critical"}}"#
            ));
            s.crash(&r, &LIMITS, 1000 + i);
        }
        assert_eq!(s.outbox.entries.len(), ALERTS_PER_APP);
        assert_eq!(s.incidents.len(), 1);
        assert_eq!(s.incidents[0].crash_reports, 50);
        // Another app has its own allowance; after the cooldown, so does shop.
        let blog = report(r#"{"app": "blog", "message": "boom", "severity": "critical"}"#);
        assert!(s.crash(&blog, &LIMITS, 2000).alerted);
        let again = report(r#"{"app": "shop", "message": "made up 0", "severity": "critical"}"#);
        assert!(s.crash(&again, &LIMITS, 1000 + HOUR).alerted);
    }

    #[test]
    fn the_log_keeps_a_bounded_recent_window() {
        let mut log = CrashLog::default();
        let mut state = State::default();
        let config = Config::parse("t.toml", "").unwrap();
        let r = report(r#"{"app": "shop", "message": "m"}"#);
        for i in 0..(CRASHES_KEPT as u64 + 50) {
            intake(&mut state, &mut log, r.clone(), false, &config, i).unwrap();
        }
        assert_eq!(log.crashes.len(), CRASHES_KEPT);
        assert_eq!(log.recent(None, 1)[0].id, CRASHES_KEPT as u64 + 50);
        assert!(log.recent(Some("other"), 10).is_empty());
        let later = CRASH_RETENTION_MS + 1000;
        let stored = intake(&mut state, &mut log, r, true, &config, later).unwrap();
        assert!(stored.truncated && stored.incident.is_none() && !stored.alerted);
        assert_eq!(log.crashes.len(), 1, "older reports are past retention");
        assert!(state.incidents.is_empty(), "not critical: no incident");
    }
}

#[cfg(test)]
mod bounds {
    use super::*;

    fn config(extra: &str) -> Config {
        Config::parse("t.toml", &format!("crash_cooldown_s = 3600\n{extra}")).unwrap()
    }

    fn critical(app: &str) -> CrashReport {
        CrashReport::parse(
            format!(r#"{{"app": "{app}", "message": "boom", "severity": "critical"}}"#).as_bytes(),
        )
        .unwrap()
        .0
    }

    #[test]
    fn a_new_app_per_report_cannot_open_unbounded_incidents_or_alerts() {
        let c = config("[crash_log]\nmax_alerts = 20\nmax_open_incidents = 10\n");
        let mut state = State::default();
        let mut log = CrashLog::default();
        let mut small = 0;
        for i in 0..2300u64 {
            let r = critical(&format!("app-{i}"));
            intake(&mut state, &mut log, r, false, &c, 1000 + i).unwrap();
            if i == 30 {
                small = serde_json::to_vec(&state).unwrap().len();
            }
        }
        let open = state.incidents.iter().filter(|i| i.is_open()).count();
        assert_eq!(open, 10, "bounded open incidents");
        let crash_alerts: Vec<&str> = state
            .outbox
            .entries
            .iter()
            .map(|e| e.key.as_str())
            .collect();
        assert_eq!(
            crash_alerts.len(),
            11,
            "ten alerts and one saying the rest are only counted: {crash_alerts:?}"
        );
        assert!(crash_alerts[10].starts_with("crash-flood/"));
        assert!(state.crash_alerts.len() <= 20);
        let size = serde_json::to_vec(&state).unwrap().len();
        assert_eq!(size, small, "the state does not grow with the reports");
        assert_eq!(log.crashes.len(), CRASHES_KEPT);
        assert!(log
            .crashes
            .iter()
            .all(|c| !c.alerted && c.incident.is_none()));
        // Another window: the flood alert may go out once more, no more.
        for i in 0..100u64 {
            let r = critical(&format!("later-{i}"));
            intake(&mut state, &mut log, r, false, &c, 2 * 3_600_000 + i).unwrap();
        }
        let floods = state
            .outbox
            .entries
            .iter()
            .filter(|e| e.key.starts_with("crash-flood/"))
            .count();
        assert_eq!(floods, 2);
    }

    #[test]
    fn the_alert_bound_holds_across_apps_within_the_window() {
        let c = config("[crash_log]\nmax_alerts = 3\nmax_open_incidents = 100\n");
        let mut state = State::default();
        let mut log = CrashLog::default();
        for i in 0..10u64 {
            intake(
                &mut state,
                &mut log,
                critical(&format!("a{i}")),
                false,
                &c,
                1000 + i,
            )
            .unwrap();
        }
        assert_eq!(state.incidents.len(), 3);
        assert_eq!(state.outbox.entries.len(), 4);
        // After the window, alerts resume.
        let later = intake(
            &mut state,
            &mut log,
            critical("a9"),
            false,
            &c,
            1000 + 3_600_000,
        )
        .unwrap();
        assert!(later.alerted);
    }

    #[test]
    fn reports_of_apps_outside_the_allowlist_are_refused_and_not_stored() {
        let c = config("[crash_log]\napps = [\"shop\"]\n");
        let mut state = State::default();
        let mut log = CrashLog::default();
        let e = intake(&mut state, &mut log, critical("blog"), false, &c, 1).unwrap_err();
        assert_eq!(e.to_string(), "app \"blog\" is not in crash_log.apps");
        assert!(log.crashes.is_empty() && state.incidents.is_empty());
        assert!(
            intake(&mut state, &mut log, critical("shop"), false, &c, 2)
                .unwrap()
                .alerted
        );
    }
}

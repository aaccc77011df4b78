//! Which channels an alert goes to: severities, `[[channel]]`s and
//! `[[route]]`s. Without routes everything goes to the `[discord]` webhook,
//! as the channel [`DEFAULT_CHANNEL`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{ChannelKind, Config};

impl TryFrom<String> for PageEvent {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "trigger" => Ok(PageEvent::Trigger),
            "acknowledge" => Ok(PageEvent::Acknowledge),
            "resolve" => Ok(PageEvent::Resolve),
            _ => Err(format!("{s:?} is not a page event")),
        }
    }
}

/// The channel of the `[discord]` section (no `[[channel]]` of that id).
pub const DEFAULT_CHANNEL: &str = "discord";

/// How much an alert matters. Read through a string: an enum's own
/// deserializer costs the Worker bundle more than this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Severity {
    /// A page, a remediable target down, remediation exhausted.
    Critical,
    /// Degraded, an alert-only target down, a job late, a burn alert.
    Warning,
    /// Resolved, maintenance, outcomes.
    Info,
}

impl TryFrom<String> for Severity {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "critical" => Ok(Severity::Critical),
            "warning" => Ok(Severity::Warning),
            "info" => Ok(Severity::Info),
            _ => Err(format!("{s:?}: use critical, warning or info")),
        }
    }
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
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum PageEvent {
    Trigger,
    Acknowledge,
    Resolve,
}

#[derive(Debug, Clone, PartialEq)]
struct Route {
    severity: Vec<Severity>,
    targets: Vec<String>,
    channels: Vec<String>,
}

/// Characters a `targets` glob may hold: those of subjects, and `*` (any
/// run) and `?` (one character). A hand-written matcher: a glob crate
/// costs the Worker bundle more than this needs.
pub fn valid_glob(pattern: &str) -> bool {
    !pattern.is_empty()
        && pattern
            .chars()
            .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-' | ':' | '*' | '?'))
}

/// Whether `subject` matches `pattern` (`*` any run, `?` one character).
pub fn glob_matches(pattern: &str, subject: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), subject.chars().collect());
    let (mut pi, mut si) = (0, 0);
    // The last `*` seen and where in the subject it stands: on a mismatch,
    // that star takes one more character.
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == '?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// What an automation webhook (`[[webhook]] events`) can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookEvent {
    /// A target's (or job's) state changed.
    Transition,
    /// A page, its escalations, its acknowledgement and its close.
    Page,
    /// A runbook waits for a human's approval.
    ApprovalRequest,
    /// The approval was given, denied, or expired.
    ApprovalOutcome,
    /// A runbook run started without approval, succeeded or failed.
    Runbook,
}

impl HookEvent {
    pub const NAMES: &'static str = "transition, page, approval_request, approval_outcome, runbook";

    pub fn parse(s: &str) -> Option<Self> {
        // serde's own string deserializer: `serde_json::from_value` would put
        // serde_json's whole `Value` deserializer in the Worker (bundle size).
        use serde::de::{value::StrDeserializer, Deserialize};
        Self::deserialize(StrDeserializer::<serde_json::Error>::new(s)).ok()
    }
}

/// Each channel's cooldown, inserted one by one: `collect()` into a
/// `BTreeMap` sorts first, a std sort instance in the Worker (bundle size).
fn cooldowns(config: &Config) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for c in config.channels.iter().filter(|c| c.cooldown_s > 0.0) {
        out.insert(c.id.clone(), (c.cooldown_s * 1000.0) as u64);
    }
    out
}

/// The routes and channels of a configuration, as the outbox applies them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routing {
    routes: Vec<Route>,
    /// Automation webhooks (`[[webhook]]`): their channel and the events
    /// they take (empty: all).
    hooks: Vec<(String, Vec<HookEvent>)>,
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
                    targets: r.targets.clone(),
                    channels: r.channels.clone(),
                })
                .collect(),
            hooks: config
                .webhooks
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let events = h
                        .events
                        .iter()
                        .filter_map(|e| HookEvent::parse(e))
                        .collect();
                    (crate::config::webhook_channel_id(i), events)
                })
                .collect(),
            paging_only: config
                .channels
                .iter()
                .filter(|c| c.kind == ChannelKind::Pagerduty)
                .map(|c| c.id.clone())
                .collect(),
            cooldown_ms: cooldowns(config),
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
            let target_ok =
                r.targets.is_empty() || r.targets.iter().any(|p| glob_matches(p, subject));
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

    /// The automation webhooks that take `event`.
    pub fn hooks_for(&self, event: Option<HookEvent>) -> impl Iterator<Item = &String> {
        self.hooks
            .iter()
            .filter(move |(_, events)| {
                event.is_some_and(|e| events.is_empty() || events.contains(&e))
            })
            .map(|(c, _)| c)
    }

    /// Whether `channel` is an automation webhook.
    pub fn is_hook(&self, channel: &str) -> bool {
        self.hooks.iter().any(|(c, _)| c == channel)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::alert::{page_message, Alert, Delivery, Outbox};
    use crate::core::channel::pagerduty_event;
    use crate::core::incident::RemediationStatus;
    use crate::core::state::State;

    const ROUTED: &str = r#"
[[channel]]
id = "ops"
kind = "discord"
url_env = "OPS_HOOK"
cooldown_s = 60
[[channel]]
id = "pd"
kind = "pagerduty"
routing_key_env = "PD_KEY"
[[channel]]
id = "chat"
kind = "slack"
url_env = "SLACK_HOOK"
[[route]]
severity = ["critical"]
targets = ["api*"]
channels = ["pd", "ops"]
[[route]]
severity = ["warning", "info"]
channels = ["chat", "ops"]
[[target]]
id = "api-core"
url = "http://127.0.0.1:1/"
"#;

    fn routed() -> (Config, Outbox) {
        let c = Config::parse("t.toml", ROUTED).unwrap();
        let o = Outbox {
            routing: Routing::from_config(&c),
            ..Outbox::default()
        };
        (c, o)
    }

    fn notice(key: &str, severity: Severity, subject: &str) -> Alert {
        let m = page_message(None, subject, "inc", key, &[]);
        Alert::notice(key.into(), severity, subject, m)
    }

    fn queued(o: &Outbox) -> Vec<String> {
        o.entries
            .iter()
            .map(|e| format!("{} {}", e.channel, e.key))
            .collect()
    }

    #[test]
    fn bad_channels_and_routes_are_refused_naming_the_key() {
        let err = |t: &str| Config::parse("t.toml", t).unwrap_err().to_string();
        let pd = "[[channel]]\nid = \"pd\"\nkind = \"pagerduty\"\n";
        assert!(
            err(pd).contains("channel[0].routing_key_env"),
            "{}",
            err(pd)
        );
        let hook = "[[channel]]\nid = \"h\"\nkind = \"webhook\"\nurl_env = \"U\"\n";
        assert!(err(hook).contains("channel[0].secret_env"));
        let route = "[[route]]\nchannels = [\"nope\"]\n";
        assert!(err(route).contains("route[0].channels"));
        let glob = format!("{ROUTED}[[route]]\ntargets = [\"API*\"]\nchannels = [\"ops\"]\n");
        assert!(err(&glob).contains("route[2].targets"), "{}", err(&glob));
    }

    #[test]
    fn globs_match_runs_and_single_characters() {
        for (p, s, m) in [
            ("api*", "api-core", true),
            ("api*", "api", true),
            ("api*", "web-api", false),
            ("*api*", "web-api-2", true),
            ("a?i", "api", true),
            ("a?i", "ai", false),
            ("*-core", "api-core", true),
            ("*-core", "api-core2", false),
            ("job:*", "job:backup", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
        ] {
            assert_eq!(glob_matches(p, s), m, "{p} {s}");
        }
    }

    #[test]
    fn without_routes_everything_goes_to_discord() {
        let r = Routing::from_config(&Config::parse("t.toml", "").unwrap());
        assert_eq!(r.channels(Severity::Info, "x", false), ["discord"]);
        assert_eq!(r.channels(Severity::Critical, "x", true), ["discord"]);
    }

    #[test]
    fn routes_pick_channels_by_severity_and_glob_and_paging_channels_take_pages_only() {
        let (_, o) = routed();
        let r = &o.routing;
        assert_eq!(
            r.channels(Severity::Critical, "api-core", true),
            ["pd", "ops"]
        );
        assert_eq!(r.channels(Severity::Critical, "api-core", false), ["ops"]);
        assert!(r.channels(Severity::Critical, "docs", false).is_empty());
        assert_eq!(
            r.channels(Severity::Warning, "docs", false),
            ["chat", "ops"]
        );
    }

    #[test]
    fn one_alert_is_queued_once_per_channel_and_a_failing_channel_holds_only_itself() {
        let (_, mut o) = routed();
        assert!(o.push(notice("a", Severity::Warning, "docs"), 0));
        assert!(!o.push(notice("a", Severity::Warning, "docs"), 0), "dedup");
        assert!(o.push(notice("b", Severity::Warning, "web"), 0));
        assert_eq!(queued(&o), ["chat a", "ops a", "chat b", "ops b"]);
        let first = o.due(0, 30).unwrap();
        assert_eq!((first.channel.as_str(), first.key.as_str()), ("chat", "a"));
        o.record(
            first.id,
            Delivery::Failed {
                error: "500".into(),
            },
            0,
        );
        // chat waits out its backoff; ops goes on, in its own order.
        let next = o.due(0, 30).unwrap();
        assert_eq!((next.channel.as_str(), next.key.as_str()), ("ops", "a"));
        o.record(next.id, Delivery::Sent, 0);
        assert_eq!(o.due(0, 30).unwrap().key, "b");
        assert!(
            !o.push(notice("a", Severity::Warning, "docs"), 5),
            "sent, not again"
        );
        let retry = o.due(1000, 30).unwrap();
        assert_eq!((retry.channel.as_str(), retry.key.as_str()), ("chat", "a"));
    }

    #[test]
    fn a_channels_cooldown_holds_repeats_about_one_subject_there_only() {
        let (_, mut o) = routed();
        o.push(notice("a", Severity::Warning, "docs"), 0);
        o.push(notice("b", Severity::Warning, "docs"), 59_999);
        assert_eq!(queued(&o), ["chat a", "ops a", "chat b"], "ops cools down");
        assert_eq!(o.cooled, 1);
        o.push(notice("c", Severity::Warning, "docs"), 60_000);
        assert_eq!(queued(&o).last().unwrap(), "ops c");
    }

    #[test]
    fn the_per_minute_cap_and_summaries_are_per_channel() {
        let (_, mut o) = routed();
        for n in 0..5 {
            o.push(
                notice(&format!("k{n}"), Severity::Info, &format!("t{n}")),
                0,
            );
        }
        let mut sent = Vec::new();
        while let Some(e) = o.due(0, 2) {
            sent.push(format!("{} {}", e.channel, e.headline()));
            o.record(e.id, Delivery::Sent, 0);
        }
        assert_eq!(
            sent,
            [
                "chat Page: t0",
                "ops Page: t0",
                "chat Vigil: 4 alerts in one (over 2 messages a minute)",
                "ops Vigil: 4 alerts in one (over 2 messages a minute)",
            ]
        );
    }

    #[test]
    fn a_page_triggers_acks_and_resolves_pagerduty_with_one_dedup_key_across_a_restart() {
        let (c, _) = routed();
        let mut s = State::default();
        s.reconcile(&c, 0, true);
        let id = s.open_incident("api-core", RemediationStatus::Exhausted, 0);
        s.incident_mut(&id).unwrap().remediation = RemediationStatus::Exhausted;
        assert!(s.page(&id, "remediation exhausted", None, 1));
        assert!(!s.page(&id, "again", None, 2), "once per incident");
        let pd: Vec<_> = s
            .outbox
            .entries
            .iter()
            .filter(|e| e.channel == "pd")
            .collect();
        assert_eq!(pd.len(), 1);
        let trigger = pagerduty_event(pd[0], "k").unwrap();
        assert_eq!(trigger["event_action"], "trigger");
        assert_eq!(trigger["dedup_key"], id.as_str());
        assert_eq!(trigger["payload"]["severity"], "critical");
        assert_eq!(trigger["payload"]["source"], "api-core");
        s.acknowledge(&id, "alice", 3).unwrap();
        // A restart: the state is stored and read back.
        let mut s: State =
            crate::core::json::read(serde_json::to_string(&s).unwrap().as_bytes()).unwrap();
        s.reconcile(&c, 4, true);
        s.resolve(&id, "alice", 5).unwrap();
        s.follow_pages(6);
        let events: Vec<(String, String)> = s
            .outbox
            .entries
            .iter()
            .filter(|e| e.channel == "pd")
            .map(|e| {
                let v = pagerduty_event(e, "k").unwrap();
                (v["event_action"].to_string(), v["dedup_key"].to_string())
            })
            .collect();
        let key = format!("{id:?}");
        assert_eq!(
            events,
            [
                ("\"trigger\"".to_string(), key.clone()),
                ("\"acknowledge\"".to_string(), key.clone()),
                ("\"resolve\"".to_string(), key)
            ]
        );
        assert!(
            s.outbox
                .entries
                .iter()
                .all(|e| e.channel != "ops" || e.page != Some(PageEvent::Resolve)),
            "a chat channel sees the recovery itself"
        );
    }

    #[test]
    fn a_pagerduty_summary_stays_within_its_limit() {
        let (_, mut o) = routed();
        let long = "x".repeat(5000);
        let mut a = notice("inc/page", Severity::Critical, "api-core");
        a.message = page_message(None, "api-core", "inc", &long, &[]);
        a.page = Some(PageEvent::Trigger);
        a.incident = Some("inc".into());
        o.push(a, 0);
        let e = o.entries.iter().find(|e| e.channel == "pd").unwrap();
        let v = pagerduty_event(e, "k").unwrap();
        assert_eq!(
            v["payload"]["summary"].as_str().unwrap().chars().count(),
            1024
        );
    }
}

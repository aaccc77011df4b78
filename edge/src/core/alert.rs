//! Discord messages and the outbox that delivers them in order, once each.
//!
//! Messages are built within Discord's limits (a webhook answers 400 to an
//! embed over them); the outbox is part of the persisted state, so an alert
//! that could not be sent is retried, after a restart too.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::probe::{truncate, Health};
use super::route::{HookEvent, PageEvent, Routing, Severity, DEFAULT_CHANNEL};

// Discord's limits (webhook execute).
const CONTENT_MAX: usize = 2000;
const TITLE_MAX: usize = 256;
const DESCRIPTION_MAX: usize = 4096;
const FIELD_NAME_MAX: usize = 256;
const FIELD_VALUE_MAX: usize = 1024;
const FIELDS_MAX: usize = 25;
const FOOTER_MAX: usize = 2048;
const EMBED_TOTAL_MAX: usize = 6000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbedField {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub inline: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbedFooter {
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Embed {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub color: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<EmbedField>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub footer: Option<EmbedFooter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedMentions {
    /// Empty: no @everyone, no roles, no users parsed from the text.
    pub parse: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
}

/// The body of a webhook execute request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscordMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    pub embeds: Vec<Embed>,
    pub allowed_mentions: AllowedMentions,
}

pub fn color(h: Health) -> u32 {
    match h {
        Health::Healthy => 0x2E_CC_71,
        Health::Degraded => 0xF1_C4_0F,
        Health::Down => 0xE7_4C_3C,
    }
}

/// Fits an embed into Discord's limits, trimming the longest texts first.
fn fit(mut e: Embed) -> Embed {
    e.title = truncate(&e.title, TITLE_MAX);
    e.description = e.description.map(|d| truncate(&d, DESCRIPTION_MAX));
    e.fields.truncate(FIELDS_MAX);
    for f in &mut e.fields {
        f.name = truncate(non_empty(&f.name), FIELD_NAME_MAX);
        f.value = truncate(non_empty(&f.value), FIELD_VALUE_MAX);
    }
    if let Some(f) = &mut e.footer {
        f.text = truncate(&f.text, FOOTER_MAX);
    }
    let total = |e: &Embed| {
        e.title.chars().count()
            + e.description.as_ref().map_or(0, |d| d.chars().count())
            + e.fields
                .iter()
                .map(|f| f.name.chars().count() + f.value.chars().count())
                .sum::<usize>()
            + e.footer.as_ref().map_or(0, |f| f.text.chars().count())
    };
    while total(&e) > EMBED_TOTAL_MAX {
        let over = total(&e) - EMBED_TOTAL_MAX;
        match &e.description {
            Some(d) if d.chars().count() > 1 => {
                let keep = d.chars().count().saturating_sub(over).max(1);
                e.description = Some(truncate(d, keep));
            }
            _ => {
                e.fields.pop();
            }
        }
    }
    e
}

fn non_empty(s: &str) -> &str {
    if s.trim().is_empty() {
        "-"
    } else {
        s
    }
}

fn field(name: &str, value: impl Into<String>, inline: bool) -> EmbedField {
    EmbedField {
        name: name.into(),
        value: value.into(),
        inline,
    }
}

/// What a transition alert says.
pub struct TransitionAlert<'a> {
    pub target: &'a str,
    pub from: Health,
    pub to: Health,
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<&'a str>,
    /// With `regions`: what each vantage point saw.
    pub vantages: &'a [super::vantage::Seen],
    pub incident_id: &'a str,
}

pub fn transition_message(a: &TransitionAlert) -> DiscordMessage {
    let mut fields = vec![
        field(
            "Status",
            a.status.map_or("no answer".into(), |s| s.to_string()),
            true,
        ),
        field("Latency", format!("{} ms", a.latency_ms), true),
        field("Incident", a.incident_id, true),
    ];
    if let Some(e) = a.error {
        fields.push(field("Error", e, false));
    }
    if !a.vantages.is_empty() {
        fields.push(field(
            "Seen from",
            super::vantage::Seen::describe(a.vantages),
            false,
        ));
    }
    notice(
        format!("{}: {} → {}", a.target, a.from.as_str(), a.to.as_str()),
        None,
        a.to,
        fields,
    )
}

/// A warning that is no incident (`core::vantage`: seen down from fewer
/// vantage points than the quorum, a prober silent or back).
pub fn warning_message(title: String, description: String) -> DiscordMessage {
    notice(title, Some(description), Health::Degraded, Vec::new())
}

/// An embed-only message that mentions nobody.
pub(crate) fn notice(
    title: String,
    description: Option<String>,
    to: Health,
    fields: Vec<EmbedField>,
) -> DiscordMessage {
    DiscordMessage {
        content: None,
        embeds: vec![fit(Embed {
            title,
            description,
            color: color(to),
            fields,
            footer: Some(EmbedFooter {
                text: "Vigil".into(),
            }),
        })],
        allowed_mentions: AllowedMentions {
            parse: Vec::new(),
            users: Vec::new(),
        },
    }
}

/// A burn-rate alert: the error budget goes faster than `threshold` times
/// the sustainable rate over `window`.
pub fn slo_message(
    target: &str,
    window: &str,
    burn: f64,
    threshold: f64,
    status: &super::history::SloStatus,
) -> DiscordMessage {
    let (objective, days) = (status.objective, status.days);
    let percent = |r: Option<f64>| r.map_or("unknown".into(), |r| format!("{r:.1} %"));
    notice(
        format!("{target}: error budget burning {burn:.1}× over the last {window}"),
        Some(format!(
            "Objective {objective} % over {days} days. At this rate the budget is spent long before the window ends (alert threshold {threshold}×)."
        )),
        Health::Degraded,
        vec![
            field("Burn rate", format!("{burn:.1}×"), true),
            field(
                &format!("Budget left ({days} days)"),
                percent(status.budget_remaining_window),
                true,
            ),
            field(
                "Budget left (of the time watched)",
                percent(status.budget_remaining),
                true,
            ),
        ],
    )
}

/// The state store failing (`error`), or recovered (`None`) after
/// `failed_saves` failed saves since `since_ms`.
pub fn store_message(
    error: Option<&str>,
    since_ms: u64,
    now_ms: u64,
    failed_saves: u64,
) -> DiscordMessage {
    match error {
        Some(e) => notice(
            "vigil: state store failing".into(),
            Some(format!(
                "Saving the state failed: {e}. Vigil keeps probing and alerting from memory; control and heartbeat writes are refused (503) until the store recovers, and what changes meanwhile is lost if the edge stops."
            )),
            Health::Down,
            Vec::new(),
        ),
        None => notice(
            "vigil: state store recovered".into(),
            Some(format!(
                "Saving works again after {} s and {failed_saves} failed save(s).",
                now_ms.saturating_sub(since_ms) / 1000
            )),
            Health::Healthy,
            Vec::new(),
        ),
    }
}

/// A target's certificate nears its end (or has passed it): a warning,
/// not an incident.
pub fn cert_message(target: &str, cert: &super::probe::PeerCert, now_ms: u64) -> DiscordMessage {
    let days = super::cert::days_left(cert, now_ms);
    let title = if days < 0 {
        format!("{target}: TLS certificate expired")
    } else {
        format!("{target}: TLS certificate expires in {days} days")
    };
    notice(
        title,
        Some(
            "Renew it before browsers refuse the site. This warning is sent once per certificate."
                .into(),
        ),
        Health::Degraded,
        vec![
            field(
                "Not after",
                super::schedule::format_utc(cert.not_after_ms),
                true,
            ),
            field("SHA-256", truncate(&cert.fingerprint, 16), true),
        ],
    )
}

/// A target began flapping: the one alert of the episode.
pub fn flap_message(
    target: &str,
    incident_id: &str,
    changes: usize,
    window_s: f64,
) -> DiscordMessage {
    notice(
        format!("{target}: flapping"),
        Some(format!(
            "{changes} state changes within {window_s} s. Until it keeps one state, its changes are recorded on the incident without an alert each, and remediation waits."
        )),
        Health::Degraded,
        vec![field("Incident", incident_id, true)],
    )
}

/// A flapping target settled: the episode's closing alert.
pub fn settled_message(
    target: &str,
    incident_id: &str,
    now: Health,
    changes: u64,
) -> DiscordMessage {
    notice(
        format!("{target}: stopped flapping, {}", now.as_str()),
        Some(format!("{changes} state changes in the episode.")),
        now,
        vec![field("Incident", incident_id, true)],
    )
}

/// Messages folded into one because the channel's rate was reached.
fn summary_message(lines: &[String], total: u64, per_minute: usize) -> DiscordMessage {
    let mut description = lines
        .iter()
        .map(|l| format!("• {l}"))
        .collect::<Vec<_>>()
        .join("\n");
    let unlisted = total.saturating_sub(lines.len() as u64);
    if unlisted > 0 {
        description.push_str(&format!("\n… and {unlisted} more"));
    }
    notice(
        format!("Vigil: {total} alerts in one (over {per_minute} messages a minute)"),
        Some(description),
        Health::Degraded,
        Vec::new(),
    )
}

/// Crash reports reached the global limits: the one alert of the window.
pub fn crash_flood_message(limits: &super::crash::CrashLimits) -> DiscordMessage {
    notice(
        "Crash reports over the limit: alerts paused".into(),
        Some(format!(
            "More than {} crash alerts, or {} open crash incidents, within {} s (all apps together). Further critical reports are kept in the crash log (GET /ops/crashes) without an incident or an alert until the window ends.",
            limits.max_alerts,
            limits.max_open,
            limits.cooldown_ms / 1000
        )),
        Health::Down,
        Vec::new(),
    )
}

/// A critical crash report from a frontend.
pub fn crash_message(
    app: &str,
    message: &str,
    url: Option<&str>,
    incident_id: &str,
) -> DiscordMessage {
    let mut fields = vec![field("Incident", incident_id, true)];
    if let Some(u) = url {
        fields.push(field("URL", u, false));
    }
    notice(
        format!("{app}: critical crash"),
        Some(message.to_string()),
        Health::Down,
        fields,
    )
}

/// The one page of an incident: @mentions the on-call user only.
pub fn page_message(
    oncall_user: Option<&str>,
    target: &str,
    incident_id: &str,
    reason: &str,
    tried: &[String],
) -> DiscordMessage {
    let mention = oncall_user.map(|u| format!("<@{u}> ")).unwrap_or_default();
    let content = truncate(
        &format!("{mention}Vigil needs a human: {target} ({incident_id}) — {reason}"),
        CONTENT_MAX,
    );
    let description = if tried.is_empty() {
        "No action was run.".to_string()
    } else {
        tried
            .iter()
            .enumerate()
            .map(|(i, t)| format!("{}. {t}", i + 1))
            .collect::<Vec<_>>()
            .join("\n")
    };
    DiscordMessage {
        content: Some(content),
        embeds: vec![fit(Embed {
            title: format!("Page: {target}"),
            description: Some(description),
            color: color(Health::Down),
            fields: vec![
                field("Incident", incident_id, true),
                field("Reason", reason, false),
            ],
            footer: Some(EmbedFooter {
                text: "Vigil · paged once per incident".into(),
            }),
        })],
        allowed_mentions: AllowedMentions {
            parse: Vec::new(),
            users: oncall_user.map(|u| vec![u.to_string()]).unwrap_or_default(),
        },
    }
}

/// "1 h 5 min", "10 min", "40 s".
fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match (s / 3600, s % 3600 / 60) {
        (0, 0) => format!("{s} s"),
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

/// A reminder: the incident is still open after `open_for_ms`.
pub fn reminder_message(
    target: &str,
    incident_id: &str,
    health: &str,
    open_for_ms: u64,
    tried: &[String],
) -> DiscordMessage {
    let description = if tried.is_empty() {
        "Nothing was tried.".to_string()
    } else {
        tried.join("\n")
    };
    let to = if health == "degraded" {
        Health::Degraded
    } else {
        Health::Down
    };
    notice(
        format!("{target}: still {health} after {}", duration(open_for_ms)),
        Some(description),
        to,
        vec![field("Incident", incident_id, true)],
    )
}

/// The one alert about the children folded into a parent's incident.
pub fn affected_message(parent: &str, incident_id: &str, children: &[String]) -> DiscordMessage {
    notice(
        format!("{parent} down; {} affected", children.join(", ")),
        Some(format!(
            "They depend on {parent}: their incidents are recorded and folded into this one (no alerts, pages or remediation of their own) until {parent} is back."
        )),
        Health::Down,
        vec![field("Incident", incident_id, true)],
    )
}

/// A child still bad once its parent is no longer down: it stands alone.
pub fn released_message(
    target: &str,
    incident_id: &str,
    health: Health,
    parent: &str,
) -> DiscordMessage {
    notice(
        format!("{target}: still {} after {parent} recovered", health.as_str()),
        Some("Its incident is no longer folded into its parent's: it alerts and is remediated on its own.".into()),
        health,
        vec![field("Incident", incident_id, true)],
    )
}

/// A page with its one-click acknowledgement link.
pub fn with_ack_link(mut m: DiscordMessage, url: &str) -> DiscordMessage {
    m.embeds = m
        .embeds
        .into_iter()
        .map(|mut e| {
            e.fields
                .push(field("Acknowledge", format!("[Acknowledge]({url})"), false));
            fit(e)
        })
        .collect();
    m
}

/// The name of a page event in keys and logs.
pub fn event_name(event: PageEvent) -> &'static str {
    match event {
        PageEvent::Trigger => "page",
        PageEvent::Acknowledge => "ack",
        PageEvent::Resolve => "resolve",
    }
}

/// What a chat channel says when a page is acknowledged or its incident closes.
pub fn page_event_message(title: String, event: PageEvent) -> DiscordMessage {
    let to = match event {
        PageEvent::Resolve => Health::Healthy,
        PageEvent::Trigger | PageEvent::Acknowledge => Health::Degraded,
    };
    notice(title, None, to, Vec::new())
}

/// An alert as the core raises it, before routing.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// What it is for (incident and transition, or page): the same key is
    /// never queued twice to a channel.
    pub key: String,
    pub severity: Severity,
    /// What routes match: a target id, `job:<id>`, `crash:<app>`, `vigil`.
    pub subject: String,
    pub message: DiscordMessage,
    /// A page (or its ack/resolve): for paging channels, never folded.
    pub page: Option<PageEvent>,
    /// The incident a page event is about (PagerDuty's `dedup_key`).
    pub incident: Option<String>,
    /// What was tried (PagerDuty's `custom_details`).
    pub details: Vec<String>,
    /// What it tells automation webhooks (pages are `page` without saying).
    pub event: Option<HookEvent>,
}

impl Alert {
    /// An alert that is not a page event.
    pub fn notice(key: String, severity: Severity, subject: &str, message: DiscordMessage) -> Self {
        Alert {
            key,
            severity,
            subject: subject.to_string(),
            message,
            page: None,
            incident: None,
            details: Vec::new(),
            event: None,
        }
    }

    /// The alert, for automation webhooks taking `event`.
    pub fn with_event(mut self, event: HookEvent) -> Self {
        self.event = Some(event);
        self
    }
}

fn default_channel() -> String {
    DEFAULT_CHANNEL.to_string()
}

fn default_severity() -> Severity {
    Severity::Warning
}

/// One message waiting for delivery to one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub id: u64,
    /// What the message is for (incident and transition, or page): the same
    /// key is never queued twice to a channel.
    pub key: String,
    #[serde(default = "default_channel")]
    pub channel: String,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<PageEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// What it tells automation webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<HookEvent>,
    pub created_at_ms: u64,
    pub attempts: u32,
    pub next_attempt_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub message: DiscordMessage,
    /// A summary: the titles of the messages it stands for (the first
    /// `FOLDED_LISTED`), and how many there are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folded: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub folded_total: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl OutboxEntry {
    /// What the message says first: the embed's title, else the content.
    pub fn headline(&self) -> String {
        match (self.message.embeds.first(), &self.message.content) {
            (Some(e), _) => e.title.clone(),
            (None, Some(c)) => c.clone(),
            (None, None) => String::new(),
        }
    }

    /// Page events are never folded: they @mention the person on call, or
    /// open and close a paging channel's incident.
    fn is_page(&self) -> bool {
        self.page.is_some()
    }
}

/// How a delivery attempt went.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Sent,
    /// 429: try again after this long.
    RateLimited {
        retry_after_ms: u64,
    },
    /// The channel refused this message for good (4xx other than 429).
    Rejected {
        error: String,
    },
    /// 5xx, network error, no webhook configured: try again after a backoff.
    Failed {
        error: String,
    },
}

/// Keys remembered after delivery, so a replayed transition is not re-queued.
const SENT_KEYS_KEPT: usize = 1000;
/// Rejected messages kept for the API.
const DEAD_KEPT: usize = 100;
/// Titles a summary lists; the rest are counted.
const FOLDED_LISTED: usize = 40;
/// The longest wait a 429 may ask for.
const RETRY_AFTER_MAX_MS: u64 = 3_600_000;
/// The rate window of a channel.
const RATE_WINDOW_MS: u64 = 60_000;
/// The longest wait after failed attempts.
const BACKOFF_MAX_MS: u64 = 60_000;

/// The wait before the next attempt after `attempts` failed ones: 1 s,
/// doubling, a minute at most.
pub fn backoff_ms(attempts: u32) -> u64 {
    (1000u64 << attempts.saturating_sub(1).min(6)).min(BACKOFF_MAX_MS)
}

/// Alerts waiting for delivery, and what was delivered or refused. Its lists,
/// like the state's and the history's other short bounded lists,
/// are `Vec`s, not `VecDeque`s: each `VecDeque` element type carried its own
/// ring-buffer code in the Worker, 5.9 KB gzip for ten types (BENCHMARKS.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outbox {
    pub entries: Vec<OutboxEntry>,
    pub next_id: u64,
    /// `channel/key` of what was delivered (or folded).
    #[serde(default)]
    pub sent_keys: Vec<String>,
    /// Messages a channel refused (400): kept, visible, never silently dropped.
    #[serde(default)]
    pub dead: Vec<OutboxEntry>,
    /// Per channel, when messages were sent within the last minute.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rate_ms: BTreeMap<String, Vec<u64>>,
    /// `channel subject` → when the last alert about it was queued there
    /// (channels with a cooldown only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_about_ms: BTreeMap<String, u64>,
    /// Alerts not queued to a channel because of its cooldown.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cooled: u64,
    /// Alerts no route matched (with `[[route]]`s configured).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unrouted: u64,
    /// The configuration's routes (set by `State::reconcile`, not stored).
    #[serde(skip)]
    pub routing: Routing,
}

impl Outbox {
    /// Queues `alert` to the channels its routes name; false when it went
    /// to none (queued before, held by a cooldown, or no route).
    pub fn push(&mut self, alert: Alert, now_ms: u64) -> bool {
        let channels = self
            .routing
            .channels(alert.severity, &alert.subject, alert.page.is_some());
        if channels.is_empty() {
            self.unrouted += 1;
        }
        self.push_to(&channels, alert, now_ms)
    }

    /// Queues `alert` to `channels` and the automation webhooks that take
    /// its event (each at most once per key).
    pub fn push_to(&mut self, channels: &[String], alert: Alert, now_ms: u64) -> bool {
        let mut queued = false;
        let event = alert.event.or(alert.page.map(|_| HookEvent::Page));
        let hooks: Vec<String> = self.routing.hooks_for(event).cloned().collect();
        for channel in channels.iter().chain(&hooks) {
            let sent = format!("{channel}/{}", alert.key);
            if self
                .entries
                .iter()
                .any(|e| &e.channel == channel && e.key == alert.key)
                || self.sent_keys.contains(&sent)
            {
                continue;
            }
            if alert.page.is_none() && self.cooling(channel, &alert.subject, now_ms) {
                self.cooled += 1;
                continue;
            }
            self.next_id += 1;
            self.entries.push(OutboxEntry {
                id: self.next_id,
                key: alert.key.clone(),
                channel: channel.clone(),
                severity: alert.severity,
                subject: alert.subject.clone(),
                page: alert.page,
                incident: alert.incident.clone(),
                details: alert.details.clone(),
                event,
                created_at_ms: now_ms,
                attempts: 0,
                next_attempt_at_ms: now_ms,
                last_error: None,
                message: alert.message.clone(),
                folded: Vec::new(),
                folded_total: 0,
            });
            queued = true;
        }
        queued
    }

    /// True when an alert about `subject` went to `channel` within its
    /// cooldown; otherwise notes this one and says false.
    fn cooling(&mut self, channel: &str, subject: &str, now_ms: u64) -> bool {
        let cooldown = self.routing.cooldown_ms(channel);
        if cooldown == 0 {
            return false;
        }
        let routing = &self.routing;
        super::retain_map(&mut self.last_about_ms, |k, at| {
            let ch = k.split_once(' ').map_or(k.as_str(), |(c, _)| c);
            now_ms.saturating_sub(*at) < routing.cooldown_ms(ch)
        });
        let key = format!("{channel} {subject}");
        if self.last_about_ms.contains_key(&key) {
            return true;
        }
        self.last_about_ms.insert(key, now_ms);
        false
    }

    /// The message to send now, if any. Per channel, always the oldest, so
    /// alerts arrive in the order they happened, and none while
    /// `per_minute` messages went to that channel within the last minute;
    /// a channel waiting out a failure does not hold the others. When more
    /// wait than the minute allows, the ones beyond it (page events
    /// excepted) are folded into one summary that lists them: nothing is
    /// dropped, the channel is not flooded.
    pub fn due(&mut self, now_ms: u64, per_minute: usize) -> Option<OutboxEntry> {
        let mut heads: Vec<(String, u64)> = Vec::new();
        for e in &self.entries {
            if !heads.iter().any(|(c, _)| c == &e.channel) {
                heads.push((e.channel.clone(), e.next_attempt_at_ms));
            }
        }
        for (channel, next_attempt) in heads {
            if next_attempt > now_ms {
                // Nothing to send: nothing changes (a steady cycle stores nothing).
                continue;
            }
            if self.routing.is_hook(&channel) {
                // Automation takes every event, in order: never folded.
                return self.entries.iter().find(|e| e.channel == channel).cloned();
            }
            let rate = self.rate_ms.entry(channel.clone()).or_default();
            while rate
                .first()
                .is_some_and(|&t| now_ms.saturating_sub(t) >= RATE_WINDOW_MS)
            {
                rate.remove(0);
            }
            let sent = rate.len();
            if rate.is_empty() {
                super::retain_map(&mut self.rate_ms, |k, _| *k != channel);
            }
            let budget = per_minute.saturating_sub(sent);
            if budget == 0 {
                continue;
            }
            let waiting = self.entries.iter().filter(|e| e.channel == channel).count();
            if waiting > budget {
                self.fold(&channel, budget - 1, per_minute, now_ms);
            }
            return self.entries.iter().find(|e| e.channel == channel).cloned();
        }
        None
    }

    /// Folds every entry of `channel` after its first `keep` (page events
    /// excepted) into one summary placed after them; a summary among them
    /// is merged.
    fn fold(&mut self, channel: &str, keep: usize, per_minute: usize, now_ms: u64) {
        let mut seen = 0;
        let mut tail = Vec::new();
        let mut rest = Vec::new();
        for e in self.entries.drain(..) {
            if e.channel == channel {
                seen += 1;
                if seen > keep {
                    tail.push(e);
                    continue;
                }
            }
            rest.push(e);
        }
        self.entries = rest;
        let (pages, folded): (Vec<_>, Vec<_>) = tail.into_iter().partition(OutboxEntry::is_page);
        if let [only] = folded.as_slice() {
            if only.folded_total > 0 {
                // Already one summary: nothing to fold.
                self.entries.extend(folded);
                self.entries.extend(pages);
                return;
            }
        }
        let mut lines = Vec::new();
        let mut total = 0;
        for e in &folded {
            if e.folded_total > 0 {
                lines.extend(e.folded.iter().cloned());
                total += e.folded_total;
            } else {
                lines.push(e.headline());
                total += 1;
                self.sent_keys.push(format!("{channel}/{}", e.key));
            }
        }
        lines.truncate(FOLDED_LISTED);
        while self.sent_keys.len() > SENT_KEYS_KEPT {
            self.sent_keys.remove(0);
        }
        if total > 0 {
            self.next_id += 1;
            let severity = folded
                .iter()
                .map(|e| e.severity)
                .min()
                .unwrap_or(Severity::Warning);
            self.entries.push(OutboxEntry {
                id: self.next_id,
                key: format!("summary/{}", self.next_id),
                channel: channel.to_string(),
                severity,
                subject: "vigil".into(),
                page: None,
                incident: None,
                details: Vec::new(),
                event: None,
                created_at_ms: now_ms,
                attempts: 0,
                next_attempt_at_ms: now_ms,
                last_error: None,
                message: summary_message(&lines, total, per_minute),
                folded: lines,
                folded_total: total,
            });
        }
        self.entries.extend(pages);
    }

    /// Records how sending entry `id` went.
    pub fn record(&mut self, id: u64, outcome: Delivery, now_ms: u64) {
        let Some(pos) = self.entries.iter().position(|e| e.id == id) else {
            return;
        };
        match outcome {
            Delivery::Sent => {
                let e = self.entries.remove(pos);
                self.rate_ms
                    .entry(e.channel.clone())
                    .or_default()
                    .push(now_ms);
                self.sent_keys.push(format!("{}/{}", e.channel, e.key));
                while self.sent_keys.len() > SENT_KEYS_KEPT {
                    self.sent_keys.remove(0);
                }
            }
            Delivery::Rejected { error } => {
                let mut e = self.entries.remove(pos);
                e.attempts += 1;
                e.last_error = Some(error);
                self.dead.push(e);
                while self.dead.len() > DEAD_KEPT {
                    self.dead.remove(0);
                }
            }
            Delivery::RateLimited { retry_after_ms } => {
                // The peer's number: an hour at most, whatever it says.
                let retry_after_ms = retry_after_ms.min(RETRY_AFTER_MAX_MS);
                let e = &mut self.entries[pos];
                e.attempts += 1;
                // Clocks are read in whole milliseconds: `now_ms` may be up
                // to one short of the real time, so one more keeps the
                // wait at least `retry_after`.
                e.next_attempt_at_ms = now_ms.saturating_add(retry_after_ms).saturating_add(1);
                e.last_error = Some(format!("rate limited for {retry_after_ms} ms"));
            }
            Delivery::Failed { error } => {
                let e = &mut self.entries[pos];
                e.attempts += 1;
                e.last_error = Some(error);
                // The channel waits (its order is kept), the others go on.
                e.next_attempt_at_ms = now_ms.saturating_add(backoff_ms(e.attempts));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(o: &mut Outbox, key: String, m: DiscordMessage, now: u64) -> bool {
        let page = key.ends_with("/page").then_some(PageEvent::Trigger);
        o.push(
            Alert {
                page,
                ..Alert::notice(key, Severity::Warning, "t", m)
            },
            now,
        )
    }

    fn msg(n: u32) -> DiscordMessage {
        transition_message(&TransitionAlert {
            target: &format!("t{n}"),
            from: Health::Healthy,
            to: Health::Down,
            status: Some(500),
            latency_ms: 3,
            error: Some("boom"),
            vantages: &[],
            incident_id: "inc-1",
        })
    }

    #[test]
    fn outbox_delivers_in_order_and_retries_the_head() {
        let mut o = Outbox::default();
        assert!(push(&mut o, "a".into(), msg(1), 0));
        assert!(push(&mut o, "b".into(), msg(2), 0));
        assert!(!push(&mut o, "a".into(), msg(1), 0), "same key twice");
        let head = o.due(0, 30).unwrap().id;
        o.record(
            head,
            Delivery::Failed {
                error: "500".into(),
            },
            10,
        );
        assert!(o.due(1009, 30).is_none(), "not before its backoff");
        assert_eq!(
            o.due(1010, 30).unwrap().key,
            "a",
            "the failed one stays first"
        );
        o.record(
            head,
            Delivery::RateLimited {
                retry_after_ms: 2000,
            },
            20,
        );
        assert!(o.due(2020, 30).is_none());
        assert_eq!(o.due(2021, 30).unwrap().attempts, 2);
        // A 429 asking for an absurd wait: an hour at most, no overflow.
        o.record(
            head,
            Delivery::RateLimited {
                retry_after_ms: u64::MAX,
            },
            u64::MAX - 5,
        );
        assert_eq!(o.entries[0].next_attempt_at_ms, u64::MAX);
        o.record(
            head,
            Delivery::RateLimited {
                retry_after_ms: u64::MAX,
            },
            20,
        );
        assert_eq!(o.due(3_600_020, 30), None);
        assert_eq!(o.due(3_600_021, 30).unwrap().attempts, 4);
        o.record(head, Delivery::Sent, 3_600_021);
        assert_eq!(o.due(3_600_021, 30).unwrap().key, "b");
        assert!(
            !push(&mut o, "a".into(), msg(1), 3000),
            "a sent key is not queued again"
        );
    }

    #[test]
    fn rejected_messages_move_aside_and_do_not_block() {
        let mut o = Outbox::default();
        push(&mut o, "a".into(), msg(1), 0);
        push(&mut o, "b".into(), msg(2), 0);
        let head = o.due(0, 30).unwrap().id;
        o.record(
            head,
            Delivery::Rejected {
                error: "400".into(),
            },
            1,
        );
        assert_eq!(o.dead.len(), 1);
        assert_eq!(o.due(1, 30).unwrap().key, "b");
    }

    fn send_all(o: &mut Outbox, now: u64, per_minute: usize) -> Vec<String> {
        let mut sent = Vec::new();
        while let Some(e) = o.due(now, per_minute) {
            sent.push(e.headline());
            o.record(e.id, Delivery::Sent, now);
        }
        sent
    }

    #[test]
    fn over_the_rate_messages_are_folded_into_a_summary_and_pages_kept() {
        let mut o = Outbox::default();
        for n in 0..10 {
            push(&mut o, format!("inc-{n}/t1"), msg(n), 0);
        }
        push(
            &mut o,
            "inc-9/page".into(),
            page_message(Some("42"), "api", "inc-9", "why", &[]),
            0,
        );
        let sent = send_all(&mut o, 1000, 5);
        assert_eq!(sent.len(), 5, "{sent:?}");
        assert_eq!(
            &sent[..4],
            [
                "t0: healthy → down",
                "t1: healthy → down",
                "t2: healthy → down",
                "t3: healthy → down"
            ]
        );
        assert_eq!(sent[4], "Vigil: 6 alerts in one (over 5 messages a minute)");
        let summary = o
            .sent_keys
            .iter()
            .filter(|k| k.starts_with("discord/summary/"))
            .count();
        assert_eq!(summary, 1);
        assert!(
            o.sent_keys.contains(&"discord/inc-9/t1".to_string()),
            "folded keys are not queued again"
        );
        assert!(!push(&mut o, "inc-9/t1".into(), msg(9), 2000));
        // The page waits for the next minute; it is not folded.
        assert_eq!(o.entries.len(), 1);
        assert!(o.due(60_999, 5).is_none(), "the minute is full");
        let page = o.due(61_000, 5).unwrap();
        assert_eq!(page.key, "inc-9/page");
        assert_eq!(page.message.allowed_mentions.users, ["42"]);
    }

    #[test]
    fn a_summary_lists_what_it_folds_and_merges_an_earlier_one() {
        let mut o = Outbox::default();
        for n in 0..100 {
            push(&mut o, format!("k{n}"), msg(n), 0);
        }
        let first = o.due(0, 2).unwrap();
        o.record(first.id, Delivery::Sent, 0);
        assert_eq!(o.entries.len(), 1, "99 folded into one");
        for n in 100..150 {
            push(&mut o, format!("k{n}"), msg(n), 1);
        }
        let next = o.due(1, 2).unwrap();
        assert_eq!(next.folded_total, 149, "the earlier summary is merged");
        assert_eq!(o.entries.len(), 1);
        let d = next.message.embeds[0].description.clone().unwrap();
        assert!(d.starts_with("• t1: healthy → down"), "{d}");
        assert!(d.ends_with("… and 109 more"), "{d}");
        assert!(d.chars().count() <= DESCRIPTION_MAX);
        assert_eq!(next.folded.len(), FOLDED_LISTED);
    }

    #[test]
    fn embeds_are_fitted_to_discord_limits() {
        let long = "x".repeat(10_000);
        let m = transition_message(&TransitionAlert {
            target: &long,
            from: Health::Healthy,
            to: Health::Down,
            status: None,
            latency_ms: 1,
            error: Some(&long),
            vantages: &[],
            incident_id: "",
        });
        let e = &m.embeds[0];
        assert_eq!(e.title.chars().count(), TITLE_MAX);
        assert!(e
            .fields
            .iter()
            .all(|f| !f.value.is_empty() && f.value.chars().count() <= FIELD_VALUE_MAX));
        let tried: Vec<String> = (0..100)
            .map(|i| format!("round {i}: {}", "y".repeat(200)))
            .collect();
        let p = page_message(Some("42"), "api", "inc-1", &long, &tried);
        assert!(p.content.as_ref().unwrap().chars().count() <= CONTENT_MAX);
        assert!(p.content.as_ref().unwrap().starts_with("<@42> "));
        assert_eq!(p.allowed_mentions.users, ["42"]);
        assert!(p.allowed_mentions.parse.is_empty());
        let e = &p.embeds[0];
        let total = e.title.chars().count()
            + e.description.as_ref().unwrap().chars().count()
            + e.fields
                .iter()
                .map(|f| f.name.chars().count() + f.value.chars().count())
                .sum::<usize>()
            + e.footer.as_ref().unwrap().text.chars().count();
        assert!(total <= EMBED_TOTAL_MAX, "{total}");
    }

    #[test]
    fn paging_messages_stay_within_discord_limits() {
        let long = "x".repeat(3000);
        let children: Vec<String> = (0..300).map(|i| format!("child-{i}-{long}")).collect();
        let tried: Vec<String> = (0..100).map(|i| format!("round {i}: {long}")).collect();
        let messages = [
            affected_message(&long, "inc-1", &children),
            released_message(&long, "inc-1", Health::Down, &long),
            reminder_message(&long, "inc-1", "down", 90_061_000, &tried),
            with_ack_link(
                page_message(Some("42"), &long, "inc-1", &long, &tried),
                &long,
            ),
            page_event_message(long.clone(), PageEvent::Acknowledge),
        ];
        for m in &messages {
            let e = &m.embeds[0];
            assert!(e.title.chars().count() <= TITLE_MAX);
            assert!(e
                .description
                .as_ref()
                .is_none_or(|d| d.chars().count() <= DESCRIPTION_MAX));
            assert!(e
                .fields
                .iter()
                .all(|f| f.value.chars().count() <= FIELD_VALUE_MAX));
            let total = e.title.chars().count()
                + e.description.as_ref().map_or(0, |d| d.chars().count())
                + e.fields
                    .iter()
                    .map(|f| f.name.chars().count() + f.value.chars().count())
                    .sum::<usize>()
                + e.footer.as_ref().map_or(0, |f| f.text.chars().count());
            assert!(total <= EMBED_TOTAL_MAX, "{total}");
        }
        assert_eq!(duration(90_061_000), "25 h 1 min");
    }
}

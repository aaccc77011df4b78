//! What each kind of channel is sent: the bodies for PagerDuty Events v2,
//! Slack-compatible incoming webhooks and generic webhooks, made from an
//! outbox entry (Discord takes the entry's message as it is).

use serde_json::{json, Value};

use super::alert::OutboxEntry;
use super::probe::truncate;
use super::route::{PageEvent, Severity};

/// PagerDuty's limits (Events v2).
const PD_SUMMARY_MAX: usize = 1024;
const PD_DEDUP_KEY_MAX: usize = 255;
/// A Slack message's text is cut beyond this (Slack truncates at 40,000).
const SLACK_TEXT_MAX: usize = 3000;

/// The entry's title and description as plain text.
fn text(entry: &OutboxEntry) -> String {
    let mut t = entry.headline();
    if let Some(d) = entry
        .message
        .embeds
        .first()
        .and_then(|e| e.description.as_ref())
    {
        t.push('\n');
        t.push_str(d);
    }
    t
}

/// The Events v2 event for a page event; `None` for anything else (a
/// paging channel takes page events only).
pub fn pagerduty_event(entry: &OutboxEntry, routing_key: &str) -> Option<Value> {
    let event = entry.page?;
    let dedup_key = truncate(
        entry.incident.as_deref().unwrap_or(&entry.key),
        PD_DEDUP_KEY_MAX,
    );
    let action = match event {
        PageEvent::Trigger => "trigger",
        PageEvent::Acknowledge => "acknowledge",
        PageEvent::Resolve => "resolve",
    };
    let mut body = json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": dedup_key,
    });
    if event == PageEvent::Trigger {
        let summary = match &entry.message.content {
            Some(c) => c.clone(),
            None => entry.headline(),
        };
        body["payload"] = json!({
            "summary": truncate(&summary, PD_SUMMARY_MAX),
            "source": entry.subject,
            "severity": match entry.severity {
                Severity::Critical => "critical",
                Severity::Warning => "warning",
                Severity::Info => "info",
            },
            "component": entry.subject,
            "custom_details": { "tried": entry.details },
        });
    }
    Some(body)
}

/// A Slack-compatible incoming webhook's message.
pub fn slack_message(entry: &OutboxEntry) -> Value {
    json!({ "text": truncate(&text(entry), SLACK_TEXT_MAX) })
}

/// A generic webhook's body (a `[[channel]]` of kind webhook and every
/// `[[webhook]]`): the alert, channel-neutral. `event_id` is the alert's
/// key: the same on every retry and after a restart, for deduplication.
pub fn webhook_body(entry: &OutboxEntry) -> Value {
    json!({
        "event_id": entry.key,
        "type": entry.event,
        "key": entry.key,
        "severity": entry.severity,
        "subject": entry.subject,
        "incident": entry.incident,
        "event": entry.page,
        "title": entry.headline(),
        "text": text(entry),
        "details": entry.details,
        "created_at_ms": entry.created_at_ms,
    })
}

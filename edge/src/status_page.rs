//! The public status page: what `GET /status.json` answers (`view`) and the
//! HTML of `GET /status` (`html`), both pure (state, history and `now` in),
//! so every shell can serve them. Only targets marked `public = true`
//! appear, and only by id, state and figures: no URL, host, action name,
//! operator, status code or error text reaches the page. The HTML is
//! server-rendered without scripts and escapes every text it shows.

use std::fmt::Write;

use serde::Serialize;

use crate::config::Config;
use crate::core::history::{History, DAYS_KEPT, DAY_MS, HOUR_MS};
use crate::core::incident::Incident;
use crate::core::probe::Health;
use crate::core::schedule::format_utc;
use crate::core::state::State;
use crate::html::{escape, sort_small_by_key, when};

/// Resolved incidents shown.
const RESOLVED_SHOWN: usize = 5;
/// Below this daily uptime (percent) a day is a major outage, not a minor one.
const MAJOR_BELOW: f64 = 99.0;

/// The Content-Security-Policy the page is served with: it loads nothing.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusView {
    pub title: String,
    pub generated_at_ms: u64,
    /// `operational`, `degraded`, `outage` or `maintenance`.
    pub overall: &'static str,
    pub targets: Vec<PublicTarget>,
    /// Open incidents of public targets, newest first.
    pub incidents: Vec<PublicIncident>,
    /// The last resolved incidents of public targets, newest (opened) first.
    pub resolved: Vec<PublicIncident>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PublicTarget {
    pub id: String,
    /// `operational`, `degraded`, `outage`, `maintenance` or `unknown`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance_until_ms: Option<u64>,
    /// Percent up over the days shown that have data.
    pub uptime_90d: Option<f64>,
    /// Oldest first: the last 90 UTC days, today included.
    pub days: Vec<DayBar>,
    /// Oldest first: the median response time of each of the last 24 hours.
    pub response_24h: Vec<HourResponse>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayBar {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    pub uptime: Option<f64>,
    /// The ids of the target's incidents open at some time that day.
    pub incidents: Vec<String>,
    /// `ok` (100 %), `minor`, `major` (below 99 %) or `none` (no data).
    pub level: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HourResponse {
    pub hour_start_ms: u64,
    pub p50_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PublicIncident {
    pub id: String,
    pub target: String,
    pub opened_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at_ms: Option<u64>,
    pub timeline: Vec<TimelineEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    pub at_ms: u64,
    pub text: String,
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn health_word(h: Health) -> &'static str {
    match h {
        Health::Healthy => "operational",
        Health::Degraded => "degraded",
        Health::Down => "outage",
    }
}

fn day_level(uptime: Option<f64>) -> &'static str {
    match uptime {
        None => "none",
        Some(u) if u >= 100.0 => "ok",
        Some(u) if u >= MAJOR_BELOW => "minor",
        Some(_) => "major",
    }
}

fn open_during(i: &Incident, from_ms: u64, to_ms: u64, now_ms: u64) -> bool {
    i.opened_at_ms < to_ms && i.resolved_at_ms.unwrap_or(now_ms) >= from_ms
}

fn public_target(state: &State, history: &History, id: &str, now_ms: u64) -> PublicTarget {
    let ts = state.targets.get(id);
    let maintenance_until_ms = ts
        .filter(|t| t.in_maintenance(now_ms))
        .and_then(|t| t.maintenance_until_ms);
    let state_word = match ts {
        _ if maintenance_until_ms.is_some() => "maintenance",
        Some(t) if history.days(id).next().is_some() => health_word(t.health),
        _ => "unknown",
    };
    let today = now_ms / DAY_MS;
    let incidents: Vec<&Incident> = state.incidents.iter().filter(|i| i.target == id).collect();
    let days: Vec<DayBar> = ((today + 1).saturating_sub(DAYS_KEPT)..=today)
        .map(|d| {
            let uptime = history
                .days(id)
                .find(|x| x.d == d)
                .and_then(|x| x.uptime())
                .map(round2);
            let (from, to) = (d * DAY_MS, (d + 1) * DAY_MS);
            DayBar {
                date: format_utc(from)[..10].to_string(),
                uptime,
                incidents: incidents
                    .iter()
                    .filter(|i| open_during(i, from, to, now_ms))
                    .map(|i| i.id.clone())
                    .collect(),
                level: day_level(uptime),
            }
        })
        .collect();
    let (up, total) = history
        .days(id)
        .filter(|x| x.d + DAYS_KEPT > today)
        .fold((0, 0), |(u, t), x| (u + x.up_ms, t + x.total_ms));
    let now_hour = now_ms / HOUR_MS;
    let response_24h = (now_hour.saturating_sub(23)..=now_hour)
        .map(|h| HourResponse {
            hour_start_ms: h * HOUR_MS,
            p50_ms: history
                .targets
                .get(id)
                .and_then(|th| th.hours.iter().find(|r| r.hour == h))
                .and_then(|r| r.latency.quantile(0.5)),
        })
        .collect();
    PublicTarget {
        id: id.to_string(),
        state: state_word,
        maintenance_until_ms,
        uptime_90d: (total > 0).then(|| round2(up as f64 * 100.0 / total as f64)),
        days,
        response_24h,
    }
}

/// What a visitor may know of an incident: when it changed, and why only
/// when the operator opted in for the target (`details`).
fn public_incident(i: &Incident, details: bool) -> PublicIncident {
    let mut timeline: Vec<TimelineEntry> = i
        .history
        .iter()
        .map(|c| {
            let mut text = match c.to {
                Health::Down => "Unavailable".to_string(),
                Health::Degraded => "Degraded performance".to_string(),
                Health::Healthy => "Recovered".to_string(),
            };
            if details {
                let why: Vec<String> = c
                    .status
                    .map(|s| format!("HTTP {s}"))
                    .into_iter()
                    .chain(c.error.clone())
                    .collect();
                if !why.is_empty() {
                    text = format!("{text} ({})", why.join(": "));
                }
            }
            TimelineEntry {
                at_ms: c.at_ms,
                text,
            }
        })
        .collect();
    timeline.extend(i.acked_at_ms.map(|at| TimelineEntry {
        at_ms: at,
        text: "Acknowledged: the team is working on it".into(),
    }));
    timeline.extend(i.rounds.iter().map(|r| TimelineEntry {
        at_ms: r.finished_at_ms,
        text: "Automatic recovery attempted".into(),
    }));
    timeline.extend(i.resolved_at_ms.map(|at| TimelineEntry {
        at_ms: at,
        text: "Resolved".into(),
    }));
    sort_small_by_key(&mut timeline, |e| e.at_ms);
    PublicIncident {
        id: i.id.clone(),
        target: i.target.clone(),
        opened_at_ms: i.opened_at_ms,
        resolved_at_ms: i.resolved_at_ms,
        timeline,
    }
}

/// The page's data: public targets only.
pub fn view(config: &Config, state: &State, history: &History, now_ms: u64) -> StatusView {
    let public: Vec<&str> = config
        .targets
        .iter()
        .filter(|t| t.public)
        .map(|t| t.id.as_str())
        .collect();
    let shown_incident = |i: &Incident| {
        let details = config.target(&i.target).is_some_and(|t| t.public_details);
        public_incident(i, details)
    };
    let targets: Vec<PublicTarget> = public
        .iter()
        .map(|id| public_target(state, history, id, now_ms))
        .collect();
    // The state keeps incidents in the order they opened: newest first is
    // that order reversed (no sort: it would cost the Worker bundle).
    let (open, resolved): (Vec<&Incident>, Vec<&Incident>) = state
        .incidents
        .iter()
        .rev()
        .filter(|i| public.contains(&i.target.as_str()))
        .partition(|i| i.is_open());
    let states = || targets.iter().map(|t| t.state);
    let overall = if states().any(|s| s == "outage") {
        "outage"
    } else if states().any(|s| s == "degraded") {
        "degraded"
    } else if states().any(|s| s == "maintenance") {
        "maintenance"
    } else {
        "operational"
    };
    StatusView {
        title: config.status_page.title.clone(),
        generated_at_ms: now_ms,
        overall,
        incidents: open.into_iter().map(shown_incident).collect(),
        resolved: resolved
            .into_iter()
            .take(RESOLVED_SHOWN)
            .map(shown_incident)
            .collect(),
        targets,
    }
}

fn state_label(state: &str) -> &'static str {
    match state {
        "operational" => "Operational",
        "degraded" => "Degraded performance",
        "outage" => "Outage",
        "maintenance" => "Under maintenance",
        _ => "No data yet",
    }
}

fn overall_label(overall: &str) -> &'static str {
    match overall {
        "outage" => "Some services are unavailable",
        "degraded" => "Some services are degraded",
        "maintenance" => "Planned maintenance in progress",
        _ => "All systems operational",
    }
}

const STYLE: &str = "\
:root{color-scheme:light dark;--bg:#fff;--fg:#1b1b1b;--muted:#555;--card:#f4f5f7;--line:#d0d4da;\
--ok:#1e7b34;--minor:#9a6700;--major:#c4231c;--none:#c3c8cf;--maint:#2f5fb3}\
@media (prefers-color-scheme:dark){:root{--bg:#111418;--fg:#eceff3;--muted:#b4bcc6;--card:#1c2127;\
--line:#39414b;--ok:#3fb95f;--minor:#e3a82b;--major:#ff6b61;--none:#4a525c;--maint:#7aa7ff}}\
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--fg);\
font:16px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif}\
header,main,footer{max-width:52rem;margin:0 auto;padding:0 1rem}header{padding-top:1rem}h1{font-size:1.6rem;margin:.5rem 0}\
h2{font-size:1.25rem;margin:1.5rem 0 .5rem}h3{font-size:1.05rem;margin:0;display:flex;flex-wrap:wrap;\
justify-content:space-between;gap:.5rem}h4{font-size:.9rem;margin:.75rem 0 .25rem;color:var(--muted)}\
.overall{padding:.75rem 1rem;border-radius:.5rem;font-weight:600;color:#fff}\
.overall.operational{background:var(--ok)}.overall.degraded{background:var(--minor)}\
.overall.outage{background:var(--major)}.overall.maintenance{background:var(--maint)}\
@media (prefers-color-scheme:dark){.overall{color:#111418}}\
.card{background:var(--card);border:1px solid var(--line);border-radius:.5rem;padding:1rem;margin:.75rem 0}\
.state{font-weight:600}.state.operational{color:var(--ok)}.state.degraded{color:var(--minor)}\
.state.outage{color:var(--major)}.state.maintenance{color:var(--maint)}.state.unknown{color:var(--muted)}\
.bar{display:flex;gap:1px;height:2.25rem;margin:.5rem 0 .25rem}.day{flex:1;border-radius:1px;background:var(--none)}\
.day.ok{background:var(--ok)}.day.minor{background:var(--minor)}.day.major{background:var(--major)}\
.axis{display:flex;justify-content:space-between;font-size:.8rem;color:var(--muted)}\
.lat{display:flex;align-items:flex-end;gap:2px;height:3rem;border-bottom:1px solid var(--line)}\
.hour{flex:1;background:var(--maint);min-height:1px}.hour.none{background:transparent}\
.muted{color:var(--muted)}ol.timeline{margin:.5rem 0 0;padding-left:1.25rem}time{font-variant-numeric:tabular-nums}\
footer{font-size:.85rem;color:var(--muted)}";

fn day_title(d: &DayBar) -> String {
    let up = d
        .uptime
        .map_or("no data".to_string(), |u| format!("{u}% up"));
    let ids = d.incidents.join(", ");
    let incidents = match d.incidents.len() {
        0 => "no incidents".to_string(),
        1 => format!("1 incident ({ids})"),
        n => format!("{n} incidents ({ids})"),
    };
    format!("{}: {up}, {incidents}", d.date)
}

fn target_html(out: &mut String, t: &PublicTarget) {
    let id = escape(&t.id);
    let mut state = state_label(t.state).to_string();
    if let Some(until) = t.maintenance_until_ms {
        state.push_str(&format!(" until {}", when(until)));
    }
    let _ = write!(
        out,
        "<article class=\"card\" aria-labelledby=\"t-{id}\"><h3><span id=\"t-{id}\">{id}</span>\
         <span class=\"state {}\">{}</span></h3>",
        t.state,
        escape(&state)
    );
    let uptime = t
        .uptime_90d
        .map_or("no data yet".to_string(), |u| format!("{u}% uptime"));
    let bad_days = t
        .days
        .iter()
        .filter(|d| d.level == "minor" || d.level == "major")
        .count();
    let _ = write!(
        out,
        "<p class=\"muted\">{uptime} over the last 90 days</p><div class=\"bar\" role=\"img\" \
         aria-label=\"Daily uptime, last 90 days: {uptime}, {bad_days} days with outages\">"
    );
    for d in &t.days {
        let _ = write!(
            out,
            "<span class=\"day {}\" title=\"{}\"></span>",
            d.level,
            escape(&day_title(d))
        );
    }
    out.push_str("</div><div class=\"axis\" aria-hidden=\"true\"><span>90 days ago</span><span>Today</span></div>");
    let known: Vec<u64> = t.response_24h.iter().filter_map(|h| h.p50_ms).collect();
    let max = known.iter().copied().max().unwrap_or(0).max(1);
    let summary = match (known.iter().min(), known.iter().max()) {
        (Some(lo), Some(hi)) => format!("median per hour between {lo} ms and {hi} ms"),
        _ => "no data".to_string(),
    };
    let _ = write!(
        out,
        "<h4>Response time, last 24 hours</h4><div class=\"lat\" role=\"img\" \
         aria-label=\"Response time over the last 24 hours: {summary}\">"
    );
    for h in &t.response_24h {
        let hour = &format_utc(h.hour_start_ms)[11..16];
        match h.p50_ms {
            Some(ms) => {
                let _ = write!(
                    out,
                    "<span class=\"hour\" style=\"height:{}%\" title=\"{hour} UTC: {ms} ms\"></span>",
                    (ms * 100 / max).max(2)
                );
            }
            None => {
                let _ = write!(
                    out,
                    "<span class=\"hour none\" title=\"{hour} UTC: no data\"></span>"
                );
            }
        }
    }
    out.push_str("</div></article>");
}

fn incident_html(out: &mut String, i: &PublicIncident) {
    let target = escape(&i.target);
    let _ = write!(
        out,
        "<article class=\"card\"><h3><span>{target}</span><span class=\"muted\">{}</span></h3>\
         <p class=\"muted\">Started <time>{}</time>",
        escape(&i.id),
        when(i.opened_at_ms)
    );
    if let Some(at) = i.resolved_at_ms {
        let minutes = at.saturating_sub(i.opened_at_ms).div_ceil(60_000);
        let _ = write!(
            out,
            ", resolved <time>{}</time> after {minutes} min",
            when(at)
        );
    }
    out.push_str("</p><ol class=\"timeline\">");
    for e in &i.timeline {
        let _ = write!(
            out,
            "<li><time>{}</time>: {}</li>",
            when(e.at_ms),
            escape(&e.text)
        );
    }
    out.push_str("</ol></article>");
}

/// The whole page, from the view.
pub fn html(v: &StatusView) -> String {
    let title = escape(&v.title);
    let mut out = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\"><title>{title}</title>\
         <style>{STYLE}</style></head><body><header><h1>{title}</h1>\
         <p class=\"overall {}\" role=\"status\">{}</p></header><main>",
        v.overall,
        overall_label(v.overall)
    );
    out.push_str("<section aria-labelledby=\"current\"><h2 id=\"current\">Current incidents</h2>");
    if v.incidents.is_empty() {
        out.push_str("<p class=\"muted\">No open incidents.</p>");
    }
    for i in &v.incidents {
        incident_html(&mut out, i);
    }
    out.push_str(
        "</section><section aria-labelledby=\"services\"><h2 id=\"services\">Services</h2>",
    );
    if v.targets.is_empty() {
        out.push_str("<p class=\"muted\">No public services.</p>");
    }
    for t in &v.targets {
        target_html(&mut out, t);
    }
    out.push_str("</section><section aria-labelledby=\"resolved\"><h2 id=\"resolved\">Recently resolved</h2>");
    if v.resolved.is_empty() {
        out.push_str("<p class=\"muted\">No resolved incidents.</p>");
    }
    for i in &v.resolved {
        incident_html(&mut out, i);
    }
    let _ = write!(
        out,
        "</section></main><footer><p>Updated <time>{}</time>. Times are UTC.</p></footer></body></html>",
        when(v.generated_at_ms)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::incident::{RemediationStatus, StateChange};
    use crate::core::probe::Observation;
    use crate::core::state::TargetState;

    const NOW: u64 = 20_000 * DAY_MS + 15 * HOUR_MS;

    fn config() -> Config {
        Config::parse(
            "t.toml",
            "[status_page]\nenabled = true\ntitle = \"Acme <script>alert(1)</script>\"\n\
             [[target]]\nid = \"shop\"\nurl = \"http://secret-host.internal/health\"\npublic = true\n\
             [[target]]\nid = \"billing\"\nurl = \"http://billing.internal/\"\n",
        )
        .expect("config")
    }

    fn obs(target: &str, at_ms: u64, health: Health) -> Observation {
        Observation {
            target: target.into(),
            at_ms,
            health,
            status: Some(500),
            latency_ms: 42,
            error: Some("secret-error-body".into()),
            cert: None,
        }
    }

    fn world() -> (State, History) {
        let mut state = State::default();
        let mut history = History::default();
        let interval = 60_000;
        // Yesterday: down for an hour; today healthy.
        let start = NOW - DAY_MS - 3 * HOUR_MS;
        let mut at = start;
        while at <= NOW {
            let down = at >= start + HOUR_MS && at < start + 2 * HOUR_MS;
            let h = if down { Health::Down } else { Health::Healthy };
            history.record(&obs("shop", at, h), interval);
            history.record(&obs("billing", at, Health::Down), interval);
            at += interval;
        }
        state.targets.insert("shop".into(), TargetState::new(start));
        let mut billing = TargetState::new(start);
        billing.health = Health::Down;
        state.targets.insert("billing".into(), billing);
        let mut i = Incident::new(
            "inc-1".into(),
            "shop".into(),
            start + HOUR_MS,
            RemediationStatus::Pending,
        );
        i.history.push(StateChange {
            seq: 1,
            at_ms: start + HOUR_MS,
            from: Health::Healthy,
            to: Health::Down,
            status: Some(500),
            latency_ms: 42,
            error: Some("secret-error-body".into()),
            vantages: Vec::new(),
        });
        i.acked_at_ms = Some(start + HOUR_MS + 60_000);
        i.acked_by = Some("alice-the-operator".into());
        i.resolved_at_ms = Some(start + 2 * HOUR_MS);
        i.resolution = Some("resolved by alice-the-operator".into());
        state.incidents.push(i);
        state.incidents.push(Incident::new(
            "inc-2".into(),
            "billing".into(),
            start,
            RemediationStatus::Pending,
        ));
        (state, history)
    }

    #[test]
    fn only_public_targets_show_with_ninety_days_and_the_outage_day_marked() {
        let (state, history) = world();
        let v = view(&config(), &state, &history, NOW);
        assert_eq!(v.targets.len(), 1);
        let shop = &v.targets[0];
        assert_eq!(shop.state, "operational");
        assert_eq!(v.overall, "operational", "billing is private");
        assert_eq!(shop.days.len(), 90);
        assert_eq!(shop.days[89].date, &format_utc(NOW)[..10]);
        let yesterday = &shop.days[88];
        assert_eq!(yesterday.level, "major");
        assert_eq!(yesterday.incidents, ["inc-1"]);
        assert!(yesterday.uptime.unwrap() < 96.0, "{yesterday:?}");
        assert_eq!(shop.days[89].level, "ok");
        assert_eq!(shop.days[0].level, "none");
        assert_eq!(shop.response_24h.len(), 24);
        // 42 ms within the histogram's stated error.
        assert!((40..=45).contains(&shop.response_24h[23].p50_ms.unwrap()));
        assert!(v.incidents.is_empty());
        assert_eq!(v.resolved.len(), 1);
        let texts: Vec<&str> = v.resolved[0]
            .timeline
            .iter()
            .map(|e| e.text.as_str())
            .collect();
        assert_eq!(
            texts,
            [
                "Unavailable",
                "Acknowledged: the team is working on it",
                "Resolved"
            ]
        );
    }

    #[test]
    fn nothing_private_leaks_and_every_text_is_escaped() {
        let (state, history) = world();
        let v = view(&config(), &state, &history, NOW);
        let json = serde_json::to_string(&v).unwrap();
        let page = html(&v);
        for out in [&json, &page] {
            for secret in [
                "secret-host",
                "internal",
                "billing",
                "secret-error-body",
                "alice-the-operator",
                "500",
            ] {
                assert!(!out.contains(secret), "{secret} leaked");
            }
        }
        assert!(!page.contains("<script"), "the title is escaped");
        assert!(page.contains("Acme &lt;script&gt;alert(1)&lt;/script&gt;"));
        assert_eq!(page.matches("class=\"day ").count(), 90);
        assert!(page.contains("class=\"day major\" title=\""));
        assert!(page.contains("% up, 1 incident (inc-1)\""));
        assert!(page.contains("<main>") && page.contains("<header>") && page.contains("<footer>"));
        assert!(page.contains("prefers-color-scheme:dark"));
    }

    #[test]
    fn maintenance_shows_as_such() {
        let (mut state, history) = world();
        if let Some(t) = state.targets.get_mut("shop") {
            t.maintenance_until_ms = Some(NOW + HOUR_MS);
        }
        let v = view(&config(), &state, &history, NOW);
        assert_eq!(v.targets[0].state, "maintenance");
        assert_eq!(v.overall, "maintenance");
        assert!(html(&v).contains("Under maintenance until"));
    }

    #[test]
    fn an_operator_may_show_why_per_target() {
        let (state, history) = world();
        let text = "[[target]]\nid = \"shop\"\nurl = \"http://secret-host.internal/\"\n\
                    public = true\npublic_details = true\n";
        let v = view(
            &Config::parse("t.toml", text).unwrap(),
            &state,
            &history,
            NOW,
        );
        assert_eq!(
            v.resolved[0].timeline[0].text,
            "Unavailable (HTTP 500: secret-error-body)"
        );
        assert!(!serde_json::to_string(&v).unwrap().contains("secret-host"));
    }
}

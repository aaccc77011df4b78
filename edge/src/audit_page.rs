//! The incident audit view's HTML (`/ui`): the sign-in form, the incident
//! list and one incident as a timeline. Pure functions from data to text;
//! everything shown is escaped, because error texts, model output and
//! action output come from outside (a target's body, the model, a
//! container). No scripts: forms and links only.

use std::fmt::Write;

use serde::Serialize;

use crate::config::Target;
use crate::core::incident::{Incident, ManualAction, RemediationStatus, Round, StateChange};
use crate::core::runbook::{RunStatus, RunbookRun, StepRecord};
use crate::html::{escape, sort_small_by_key, when};

/// The Content-Security-Policy the view is served with: no scripts, nothing
/// loaded, forms only to itself.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const STYLE: &str = "\
:root{color-scheme:light dark;--bg:#fff;--fg:#1b1b1b;--muted:#555;--card:#f4f5f7;--line:#d0d4da;--accent:#2f5fb3;--bad:#c4231c}\
@media (prefers-color-scheme:dark){:root{--bg:#111418;--fg:#eceff3;--muted:#b4bcc6;--card:#1c2127;--line:#39414b;--accent:#7aa7ff;--bad:#ff6b61}}\
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--fg);font:16px/1.5 system-ui,'DejaVu Sans',sans-serif}\
header,main{max-width:60rem;margin:0 auto;padding:0 1rem}header{display:flex;flex-wrap:wrap;justify-content:space-between;align-items:center;gap:.5rem;padding-top:1rem}\
a{color:var(--accent)}h1{font-size:1.5rem;margin:.5rem 0}h2{font-size:1.15rem;margin:1.25rem 0 .5rem}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.4rem;border-bottom:1px solid var(--line);vertical-align:top}\
.card{background:var(--card);border:1px solid var(--line);border-radius:.5rem;padding:.75rem 1rem;margin:.5rem 0}\
pre{white-space:pre-wrap;word-break:break-word;margin:.25rem 0;font:14px/1.4 ui-monospace,'DejaVu Sans Mono',monospace}\
.muted{color:var(--muted)}.open{color:var(--bad);font-weight:600}form.inline{display:inline}\
button,input,select{font:inherit;padding:.35rem .6rem}ol.timeline{padding-left:1.25rem}ol.timeline>li{margin:.5rem 0}";

fn page(title: &str, signed_in: bool, body: &str) -> String {
    let sign_out = if signed_in {
        "<form class=\"inline\" method=\"post\" action=\"/ui/sign-out\"><button>Sign out</button></form>"
    } else {
        ""
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\"><title>{} · Vigil</title>\
         <style>{STYLE}</style></head><body><header><h1>{}</h1><nav aria-label=\"Vigil\">\
         <a href=\"/ui\">Incidents</a> {sign_out}</nav></header><main>{body}</main></body></html>",
        escape(title),
        escape(title)
    )
}

/// The sign-in form; `error` says why the last try failed.
pub fn sign_in(error: Option<&str>) -> String {
    let error = error.map_or(String::new(), |e| {
        format!("<p class=\"open\" role=\"alert\">{}</p>", escape(e))
    });
    page(
        "Sign in",
        false,
        &format!(
            "{error}<form method=\"post\" action=\"/ui/sign-in\" class=\"card\">\
             <p><label for=\"token\">Read or control token</label><br>\
             <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required size=\"40\"></p>\
             <p><button type=\"submit\">Sign in</button></p></form>\
             <p class=\"muted\">The session lasts 8 hours. The control token's session may acknowledge and resolve.</p>"
        ),
    )
}

/// The list's filters, as the query string gave them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListFilter {
    pub target: Option<String>,
    /// `Some(true)` open only, `Some(false)` resolved only.
    pub open: Option<bool>,
}

/// Every incident (open first, then newest first), filtered.
pub fn list(incidents: &[Incident], targets: &[Target], filter: &ListFilter) -> String {
    let mut shown: Vec<&Incident> = incidents
        .iter()
        .filter(|i| filter.target.as_ref().is_none_or(|t| &i.target == t))
        .filter(|i| filter.open.is_none_or(|o| i.is_open() == o))
        .collect();
    sort_small_by_key(&mut shown, |i| {
        std::cmp::Reverse((i.is_open(), i.opened_at_ms))
    });
    let mut body = String::from(
        "<form method=\"get\" action=\"/ui\" class=\"card\" aria-label=\"Filters\">\
         <label for=\"target\">Target</label> <select id=\"target\" name=\"target\"><option value=\"\">all</option>",
    );
    let mut subjects: Vec<&String> = targets.iter().map(|t| &t.id).collect();
    for i in incidents {
        if !subjects.contains(&&i.target) {
            subjects.push(&i.target);
        }
    }
    for t in subjects {
        let selected = if filter.target.as_ref() == Some(t) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            body,
            "<option value=\"{0}\"{selected}>{0}</option>",
            escape(t)
        );
    }
    body.push_str(
        "</select> <label for=\"state\">State</label> <select id=\"state\" name=\"state\">",
    );
    for (value, label, on) in [
        ("", "all", filter.open.is_none()),
        ("open", "open", filter.open == Some(true)),
        ("resolved", "resolved", filter.open == Some(false)),
    ] {
        let selected = if on { " selected" } else { "" };
        let _ = write!(body, "<option value=\"{value}\"{selected}>{label}</option>");
    }
    body.push_str("</select> <button type=\"submit\">Show</button></form>");
    if shown.is_empty() {
        body.push_str("<p class=\"muted\">No incidents.</p>");
        return page("Incidents", true, &body);
    }
    body.push_str(
        "<table><caption class=\"muted\">Open first, then newest first</caption><thead><tr>\
         <th scope=\"col\">Incident</th><th scope=\"col\">Target</th><th scope=\"col\">State</th>\
         <th scope=\"col\">Opened</th><th scope=\"col\">Rounds</th></tr></thead><tbody>",
    );
    for i in shown {
        let id = escape(&i.id);
        let state = match (i.is_open(), i.acked_at_ms) {
            (true, Some(_)) => "<span class=\"open\">open</span>, acknowledged",
            (true, None) => "<span class=\"open\">open</span>",
            (false, _) => "resolved",
        };
        let _ = write!(
            body,
            "<tr><td><a href=\"/ui/incidents/{id}\">{id}</a></td><td>{}</td><td>{state}</td><td>{}</td><td>{}</td></tr>",
            escape(&i.target),
            when(i.opened_at_ms),
            i.rounds.len()
        );
    }
    body.push_str("</tbody></table>");
    page("Incidents", true, &body)
}

/// `status (reason)` from the tagged form the API shows too, so a new
/// variant needs nothing here.
fn remediation(r: &RemediationStatus) -> String {
    // Through the JSON text: its serializer is in every build already
    // (`to_value` would add one for the type; Worker bundle size).
    let v: serde_json::Value = serde_json::to_string(r)
        .ok()
        .and_then(|t| serde_json::from_slice(t.as_bytes()).ok())
        .unwrap_or_default();
    let status = v["status"].as_str().unwrap_or_default().replace('_', " ");
    match v["reason"].as_str() {
        Some(why) => format!("{status} ({why})"),
        None => status,
    }
}

/// An enum's serde name (`not_recovered`, `llm`, ...).
fn word<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v)
        .map(|t| t.trim_matches('"').to_string())
        .unwrap_or_default()
}

fn pre(label: &str, text: &str) -> String {
    format!(
        "<div><span class=\"muted\">{label}</span><pre>{}</pre></div>",
        escape(text)
    )
}

fn round_html(r: &Round) -> String {
    let mut out = format!(
        "<strong>Remediation round {}</strong>: {} (planner: {}, {} ms)",
        r.n,
        word(&r.outcome),
        word(&r.planner),
        r.finished_at_ms.saturating_sub(r.started_at_ms)
    );
    if let Some(d) = &r.diagnostics {
        out.push_str(&pre("Diagnostics", d));
    }
    if let Some(m) = &r.host_metrics {
        let _ = write!(
            out,
            "<p class=\"muted\">Host: CPU {:.1} %, memory {} of {} MB, disk {:.1} %, load {:.2}</p>",
            m.cpu_percent,
            m.mem_used_bytes / 1_000_000,
            m.mem_total_bytes / 1_000_000,
            m.disk_used_percent,
            m.load_1
        );
    }
    if let Some(note) = &r.note {
        out.push_str(&pre("Note", note));
    }
    if r.retries > 0 {
        let _ = write!(
            out,
            "<p class=\"muted\">The host was checked {} more times before this record closed</p>",
            r.retries
        );
    }
    if let Some(f) = &r.fallback {
        out.push_str(&pre("Fell back to the ladder", f));
    }
    for c in &r.tool_calls {
        out.push_str(&pre(
            "Tool call",
            &format!("{}({}) → {}", c.name, c.arguments, c.verdict),
        ));
    }
    for l in &r.logs {
        let _ = write!(
            out,
            "<div class=\"log\"><span class=\"muted\">Logs of {}</span><pre>{}</pre></div>",
            escape(&l.service),
            escape(&l.lines.join("\n"))
        );
    }
    if let Some(reason) = &r.reason {
        out.push_str(&pre("Reason", reason));
    }
    if let Some(a) = &r.action {
        let _ = write!(out, "<p>Action: <code>{}</code></p>", escape(a));
    }
    if let Some(p) = &r.proposal {
        let _ = write!(
            out,
            "<p>Proposed for approval: <code>{}</code></p>",
            escape(p)
        );
    }
    if let Some(res) = &r.action_result {
        let _ = write!(
            out,
            "<p>Result: {} in {} ms</p>",
            word(&res.outcome),
            res.duration_ms
        );
        if let Some(o) = &res.output {
            out.push_str(&pre("Output", o));
        }
        if let Some(e) = &res.error {
            out.push_str(&pre("Error", e));
        }
    }
    if let Some(e) = &r.action_error {
        out.push_str(&pre("Action error", e));
    }
    if let Some(o) = &r.reprobe {
        let _ = write!(
            out,
            "<p>Re-probe: {} ({} ms{})</p>",
            o.health.as_str(),
            o.latency_ms,
            o.status.map_or(String::new(), |s| format!(", HTTP {s}"))
        );
    }
    out
}

/// One entry of an incident's timeline. A new kind of entry (an approval,
/// say) is a variant here, where [`entries`] finds it, and an arm in
/// [`Entry::html`].
enum Entry<'a> {
    Opened,
    Transition(&'a StateChange),
    Round(&'a Round),
    Paged(&'a str),
    Acked(&'a str),
    Manual(&'a ManualAction),
    /// A runbook's request (or the ladder's proposal) and its approval
    Requested(&'a RunbookRun),
    Decided(&'a RunbookRun),
    Step(&'a StepRecord),
    Resolved(&'a str),
}

impl Entry<'_> {
    fn html(&self) -> String {
        match self {
            Entry::Opened => "Incident opened".into(),
            Entry::Transition(c) => {
                let mut text = format!(
                    "<strong>{} → {}</strong> ({} ms{})",
                    c.from.as_str(),
                    c.to.as_str(),
                    c.latency_ms,
                    c.status.map_or(String::new(), |s| format!(", HTTP {s}"))
                );
                if let Some(e) = &c.error {
                    text.push_str(&pre("Error", e));
                }
                if !c.vantages.is_empty() {
                    let seen = crate::core::vantage::Seen::describe(&c.vantages);
                    text.push_str(&pre("Seen from", &seen));
                }
                text
            }
            Entry::Round(r) => round_html(r),
            Entry::Paged(reason) => format!("Paged: {}", escape(reason)),
            Entry::Acked(by) => format!("Acknowledged by {}", escape(by)),
            Entry::Manual(m) => {
                let mut text = format!(
                    "Manual action <code>{}</code> on {} by {}",
                    escape(&m.action),
                    escape(&m.host),
                    escape(&m.by)
                );
                if let Some(r) = &m.result {
                    let _ = write!(text, ": {} in {} ms", word(&r.outcome), r.duration_ms);
                }
                if let Some(e) = &m.error {
                    text.push_str(&pre("Error", e));
                }
                text
            }
            Entry::Requested(run) => requested_html(run),
            Entry::Decided(run) => {
                let by = run.decided_by.as_deref().unwrap_or("nobody");
                match run.status {
                    RunStatus::Denied => format!("<strong>Denied</strong> by {}", escape(by)),
                    RunStatus::Expired => "<strong>Expired</strong> unapproved: nothing ran".into(),
                    _ => format!("<strong>Approved</strong> by {}", escape(by)),
                }
            }
            Entry::Step(step) => step_html(step),
            Entry::Resolved(how) => format!("Resolved {}", escape(how)),
        }
    }
}

/// What was asked to run, by whom, and until when it may be approved.
fn requested_html(run: &RunbookRun) -> String {
    let what = match &run.proposed_for {
        Some(target) => format!(
            "The ladder proposed <code>{}</code> for {}",
            escape(&run.runbook),
            escape(target)
        ),
        None => format!(
            "Runbook <code>{}</code> ({}) on {} requested by {}",
            escape(&run.runbook),
            escape(&run.steps.join(" → ")),
            escape(&run.host),
            escape(&run.requested_by)
        ),
    };
    match (run.status, run.expires_at_ms) {
        (RunStatus::AwaitingApproval, Some(until)) => {
            format!(
                "{what}: <strong>awaiting approval</strong> until {}",
                when(until)
            )
        }
        _ => what,
    }
}

/// One runbook step: its result and the re-probe after it.
fn step_html(step: &StepRecord) -> String {
    let took = step.finished_at_ms.saturating_sub(step.started_at_ms);
    let mut out = match &step.result {
        Some(r) => format!(
            "Step <code>{}</code>: {} in {} ms",
            escape(&step.action),
            word(&r.outcome),
            took
        ),
        None => format!("Step <code>{}</code>: no result", escape(&step.action)),
    };
    if let Some(e) = &step.error {
        out.push_str(&pre("Error", e));
    }
    for o in &step.reprobes {
        let _ = write!(
            out,
            "<p>Re-probe of {}: {} ({} ms)</p>",
            escape(&o.target),
            o.health.as_str(),
            o.latency_ms
        );
    }
    out
}

/// The incident's entries in time order (the order found on a tie).
fn entries(i: &Incident) -> Vec<(u64, Entry<'_>)> {
    let mut out = vec![(i.opened_at_ms, Entry::Opened)];
    for c in &i.history {
        out.push((c.at_ms, Entry::Transition(c)));
    }
    for r in &i.rounds {
        out.push((r.started_at_ms, Entry::Round(r)));
    }
    if let Some(at) = i.paged_at_ms {
        out.push((at, Entry::Paged(i.page_reason.as_deref().unwrap_or(""))));
    }
    if let Some(at) = i.acked_at_ms {
        out.push((at, Entry::Acked(i.acked_by.as_deref().unwrap_or("someone"))));
    }
    for m in &i.manual_actions {
        out.push((m.at_ms, Entry::Manual(m)));
    }
    if let Some(run) = &i.runbook {
        out.push((run.requested_at_ms, Entry::Requested(run)));
        if let Some(at) = run.decided_at_ms {
            out.push((at, Entry::Decided(run)));
        }
        for step in &run.steps_run {
            out.push((step.started_at_ms, Entry::Step(step)));
        }
    }
    if let Some(at) = i.resolved_at_ms {
        out.push((at, Entry::Resolved(i.resolution.as_deref().unwrap_or(""))));
    }
    sort_small_by_key(&mut out, |(at, _)| *at);
    out
}

/// One incident as a timeline. With `csrf` (a control session), the
/// acknowledge and resolve buttons carry it.
pub fn incident(i: &Incident, csrf: Option<&str>) -> String {
    let id = escape(&i.id);
    let state = if i.is_open() {
        "<span class=\"open\">open</span>"
    } else {
        "resolved"
    };
    let mut body = format!(
        "<p>Target <strong>{}</strong>, {state}, remediation {}.</p>",
        escape(&i.target),
        escape(&remediation(&i.remediation))
    );
    if let Some(p) = &i.pending_action {
        body.push_str(&pre(
            "Pending action",
            &format!("{} (round {}): {}", p.action, p.round, p.reason),
        ));
    }
    match csrf {
        Some(token) if i.is_open() => {
            let token = escape(token);
            for (what, label) in [("ack", "Acknowledge"), ("resolve", "Resolve")] {
                if what == "ack" && i.acked_at_ms.is_some() {
                    continue;
                }
                let _ = write!(
                    body,
                    "<form class=\"inline\" method=\"post\" action=\"/ui/incidents/{id}/{what}\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{token}\"><button type=\"submit\">{label}</button></form> "
                );
            }
        }
        None if i.is_open() => body.push_str(
            "<p class=\"muted\">Sign in with the control token to acknowledge or resolve.</p>",
        ),
        _ => {}
    }
    body.push_str("<h2>Timeline</h2><ol class=\"timeline\">");
    for (at, entry) in entries(i) {
        let _ = write!(
            body,
            "<li class=\"card\"><time>{}</time><br>{}</li>",
            when(at),
            entry.html()
        );
    }
    body.push_str("</ol>");
    page(&format!("Incident {}", i.id), true, &body)
}

/// A page that only says something (not found, refused, a bad filter).
pub fn message(title: &str, text: &str) -> String {
    page(
        title,
        true,
        &format!("<p role=\"alert\">{}</p>", escape(text)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::incident::{PlannerKind, RemediationStatus, RoundOutcome, ToolCallRecord};
    use vigil_wire::LogLines;

    fn hostile() -> Incident {
        let mut i = Incident::new(
            "inc-1".into(),
            "api".into(),
            1_000,
            RemediationStatus::Pending,
        );
        i.rounds.push(Round {
            n: 1,
            started_at_ms: 2_000,
            finished_at_ms: 3_000,
            diagnostics: Some("web [web]: running <script>alert(1)</script>".into()),
            host_metrics: None,
            planner: PlannerKind::Llm,
            fallback: None,
            tool_calls: vec![ToolCallRecord {
                name: "logs".into(),
                arguments: "{\"service\":\"<img src=x onerror=alert(2)>\"}".into(),
                verdict: "ok".into(),
            }],
            action: Some("restart_web".into()),
            reason: Some("the log says </pre><script>alert(3)</script>".into()),
            action_result: None,
            action_error: None,
            reprobe: None,
            usage: Default::default(),
            outcome: RoundOutcome::NotRecovered,
            retries: 0,
            note: Some("resumed <b>after</b> the host answered".into()),
            logs: vec![LogLines {
                service: "api<i>".into(),
                lines: vec!["GET /<script>alert(4)</script> HTTP/1.1".into()],
            }],
            proposal: None,
        });
        i
    }

    #[test]
    fn model_output_and_logs_are_text_never_markup() {
        let page = incident(&hostile(), Some("tok\"en"));
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(!page.contains("<i>"), "{page}");
        assert!(page.contains("Logs of api&lt;i&gt;</span>"), "{page}");
        assert!(page.contains("GET /&lt;script&gt;alert(4)&lt;/script&gt; HTTP/1.1"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("&lt;/pre&gt;&lt;script&gt;alert(3)"));
        assert!(page.contains("resumed &lt;b&gt;after&lt;/b&gt; the host answered"));
        assert!(page.contains("name=\"csrf\" value=\"tok&quot;en\""));
        assert!(page.contains("/ui/incidents/inc-1/ack"));
        assert!(page.contains("remediation pending."));
        let read_only = incident(&hostile(), None);
        assert!(!read_only.contains("name=\"csrf\""));
        assert!(!read_only.contains("/ack\""));
    }

    /// A runbook's request, its approval and each step are on the
    /// timeline, in time order, as text; an expired request says nothing
    /// ran.
    #[test]
    fn approvals_and_runbook_steps_are_on_the_timeline() {
        use crate::core::probe::{Health, Observation};
        use crate::core::runbook::{RunStatus, RunbookRun, StepRecord};
        use vigil_wire::{ActionOutcome, ActionResult};
        let mut i = hostile();
        let step = StepRecord {
            action: "restart_gateway".into(),
            started_at_ms: 9_000,
            finished_at_ms: 9_400,
            result: Some(ActionResult {
                name: "restart_gateway".into(),
                ok: true,
                outcome: ActionOutcome::Ok,
                request_id: "r1".into(),
                started_at_ms: 9_000,
                finished_at_ms: 9_400,
                duration_ms: 400,
                output: None,
                error: None,
            }),
            error: None,
            reprobes: vec![Observation {
                target: "gw".into(),
                at_ms: 9_500,
                health: Health::Healthy,
                status: Some(200),
                latency_ms: 12,
                error: None,
                cert: None,
            }],
        };
        i.runbook = Some(RunbookRun {
            id: "run-1".into(),
            runbook: "web-reset".into(),
            host: "vps1".into(),
            steps: vec!["restart_gateway".into(), "reload_nginx".into()],
            requested_by: "mallory <b>".into(),
            requested_at_ms: 7_000,
            status: RunStatus::Running,
            expires_at_ms: Some(60_000),
            decided_by: Some("alice".into()),
            decided_at_ms: Some(8_000),
            steps_run: vec![step],
            proposed_for: None,
        });
        let page = incident(&i, None);
        assert!(!page.contains("<b>"), "{page}");
        let requested = page
            .find("Runbook <code>web-reset</code> (restart_gateway → reload_nginx) on vps1 requested by mallory &lt;b&gt;")
            .expect("the request");
        let approved = page
            .find("<strong>Approved</strong> by alice")
            .expect("the approval");
        let step = page
            .find("Step <code>restart_gateway</code>: ok in 400 ms")
            .expect("the step");
        assert!(requested < approved && approved < step, "{page}");
        assert!(page.contains("Re-probe of gw: healthy (12 ms)"), "{page}");
        let run = i.runbook.as_mut().unwrap();
        run.status = RunStatus::Expired;
        run.decided_by = None;
        run.steps_run.clear();
        let page = incident(&i, None);
        assert!(
            page.contains("<strong>Expired</strong> unapproved: nothing ran"),
            "{page}"
        );
        assert!(!page.contains("Step <code>"), "{page}");
    }

    #[test]
    fn a_transition_says_which_vantage_points_saw_what() {
        use crate::core::incident::StateChange;
        use crate::core::probe::Health;
        use crate::core::vantage::Seen;
        let mut i = hostile();
        let seen = |region: &str, health, error: Option<&str>| Seen {
            region: region.into(),
            health,
            status: None,
            error: error.map(str::to_string),
        };
        i.history.push(StateChange {
            seq: 1,
            at_ms: 1_500,
            from: Health::Healthy,
            to: Health::Down,
            status: None,
            latency_ms: 3,
            error: None,
            vantages: vec![
                seen("weur", Some(Health::Healthy), None),
                seen("enam", Some(Health::Down), Some("refused <b>")),
                seen("apac", None, None),
            ],
        });
        let page = incident(&i, None);
        assert!(
            page.contains("weur: healthy; enam: down (refused &lt;b&gt;); apac: silent"),
            "{page}"
        );
    }

    #[test]
    fn the_list_puts_open_first_and_filters() {
        let mut resolved = hostile();
        resolved.id = "inc-0".into();
        resolved.opened_at_ms = 5_000;
        resolved.resolved_at_ms = Some(6_000);
        let mut other = hostile();
        other.id = "inc-2".into();
        other.target = "web".into();
        let all = [resolved, hostile(), other];
        let config = crate::config::Config::parse(
            "t",
            "[[target]]\nid = \"db\"\nurl = \"http://127.0.0.1:1/\"\n",
        )
        .unwrap();
        let page = list(&all, &config.targets, &ListFilter::default());
        assert!(
            page.contains("<option value=\"db\">db</option>"),
            "a target without incidents"
        );
        let (a, b) = (page.find(">inc-1<").unwrap(), page.find(">inc-0<").unwrap());
        assert!(a < b, "open first");
        let api_open = list(
            &all,
            &[],
            &ListFilter {
                target: Some("api".into()),
                open: Some(true),
            },
        );
        assert!(api_open.contains(">inc-1<"));
        assert!(!api_open.contains(">inc-0<") && !api_open.contains(">inc-2<"));
    }
}

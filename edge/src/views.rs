//! What the `/ops` read routes answer, computed from the state: the same
//! views for every shell.

use serde::Serialize;

use crate::config::{Config, Role};
use crate::core::control::{TargetChange, TargetChangeError};
use crate::core::crash::{Crash, CrashLog};
use crate::core::flap::Episode;
use crate::core::history::{History, HostSample, SloStatus, Stats};
use crate::core::incident::Incident;
use crate::core::probe::{Health, Observation};
use crate::core::state::{State, TargetState};

#[derive(Debug, Serialize)]
pub struct TargetSummary {
    pub id: String,
    pub url: String,
    pub role: Role,
    pub state: Health,
    pub since_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_incident: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<Observation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance_until_ms: Option<u64>,
    /// The flapping episode going on, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flapping: Option<Episode>,
    #[serde(flatten)]
    pub stats: Stats,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slo: Option<SloStatus>,
}

/// Refused messages the summary lists.
const REJECTED_SHOWN: usize = 10;

/// A message a channel refused for good.
#[derive(Debug, Serialize)]
pub struct Rejected {
    pub channel: String,
    pub key: String,
    pub title: String,
    pub error: String,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub now_ms: u64,
    pub targets: Vec<TargetSummary>,
    pub open_incidents: usize,
    pub outbox_pending: usize,
    pub outbox_rejected: usize,
    /// Alerts no `[[route]]` matched, and alerts a channel's cooldown held.
    pub outbox_unrouted: u64,
    pub outbox_cooled: u64,
    /// The latest messages a channel refused (400), newest first.
    pub rejected: Vec<Rejected>,
    /// Whether the state can be stored (`ok`), else the error and since when.
    pub store: crate::core::store_health::StoreView,
}

fn target_summary(
    config: &Config,
    state: &State,
    history: &History,
    id: &str,
    last: Option<Observation>,
    now_ms: u64,
) -> Option<TargetSummary> {
    let t = config.target(id)?;
    let fresh;
    let ts: &TargetState = match state.targets.get(id) {
        Some(ts) => ts,
        None => {
            fresh = TargetState::new(now_ms);
            &fresh
        }
    };
    Some(TargetSummary {
        id: t.id.clone(),
        url: t.url.clone(),
        role: t.role,
        state: ts.health,
        since_ms: ts.since_ms,
        open_incident: ts.open_incident.clone(),
        last,
        maintenance_until_ms: ts.maintenance_until_ms.filter(|u| *u > now_ms),
        flapping: ts.flap.episode.clone(),
        stats: history.stats(id, now_ms),
        slo: t
            .slo
            .map(|objective| history.slo(id, objective, t.slo_days, now_ms)),
    })
}

/// `last` gives a target's latest observation, where the shell keeps one.
pub fn summary(
    config: &Config,
    state: &State,
    history: &History,
    now_ms: u64,
    last: impl Fn(&str) -> Option<Observation>,
) -> Summary {
    Summary {
        now_ms,
        targets: config
            .targets
            .iter()
            .filter_map(|t| target_summary(config, state, history, &t.id, last(&t.id), now_ms))
            .collect(),
        open_incidents: state.incidents.iter().filter(|i| i.is_open()).count(),
        outbox_pending: state.outbox.entries.len(),
        outbox_rejected: state.outbox.dead.len(),
        outbox_unrouted: state.outbox.unrouted,
        outbox_cooled: state.outbox.cooled,
        rejected: state
            .outbox
            .dead
            .iter()
            .rev()
            .take(REJECTED_SHOWN)
            .map(|e| Rejected {
                channel: e.channel.clone(),
                key: e.key.clone(),
                title: e.headline(),
                error: e.last_error.clone().unwrap_or_default(),
            })
            .collect(),
        store: state.store.view(),
    }
}

#[derive(Debug, Serialize)]
pub struct IncidentList<'a> {
    pub incidents: Vec<&'a Incident>,
}

/// Incidents newest first; `open` filters by state.
pub fn incidents(state: &State, open: Option<bool>) -> IncidentList<'_> {
    IncidentList {
        incidents: state
            .incidents
            .iter()
            .rev()
            .filter(|i| open.is_none_or(|o| i.is_open() == o))
            .collect(),
    }
}

#[derive(Debug, Serialize)]
pub struct TargetDetail<'a> {
    #[serde(flatten)]
    pub summary: TargetSummary,
    pub recent: Vec<Observation>,
    pub incidents: Vec<&'a Incident>,
    /// The target's host, and its metrics as read from its ops-agent
    /// (oldest first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<&'a str>,
    pub host_metrics: Vec<&'a HostSample>,
}

pub fn target<'a>(
    config: &'a Config,
    state: &'a State,
    history: &'a History,
    id: &str,
    recent: Vec<Observation>,
    now_ms: u64,
) -> Option<TargetDetail<'a>> {
    let summary = target_summary(config, state, history, id, recent.first().cloned(), now_ms)?;
    let host = config.target(id).and_then(|t| t.host.as_deref());
    Some(TargetDetail {
        summary,
        recent,
        host,
        host_metrics: host
            .and_then(|h| history.host_samples(h))
            .map(|s| s.iter().collect())
            .unwrap_or_default(),
        incidents: state
            .incidents
            .iter()
            .rev()
            .filter(|i| i.target == id)
            .take(20)
            .collect(),
    })
}

#[derive(Debug, Serialize)]
pub struct JobView<'a> {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    pub grace_s: f64,
    /// Created by its first heartbeat.
    pub auto: bool,
    pub state: Health,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// The last heartbeat of any kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_ok_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_fail_ms: Option<u64>,
    /// When the next `ok` is due; late after this plus grace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_due_ms: Option<u64>,
    /// Runs started and not ended: run id → start time.
    pub running: Option<&'a std::collections::BTreeMap<String, u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_incident: Option<&'a str>,
}

/// `GET /ops/jobs`: every job, configured or auto-created, and where it
/// stands.
pub fn jobs<'a>(config: &'a Config, state: &'a State) -> Vec<JobView<'a>> {
    let auto = state
        .jobs
        .iter()
        .filter(|(id, js)| js.auto && config.job(id).is_none())
        .filter_map(|(id, _)| config.auto_job(id));
    config
        .jobs
        .iter()
        .cloned()
        .chain(auto)
        .map(|j| {
            let js = state.jobs.get(&j.id);
            JobView {
                period_s: j.period_s,
                grace_s: j.grace_s,
                auto: js.is_some_and(|s| s.auto),
                state: js.map_or(Health::Healthy, |s| s.health),
                since_ms: js.map(|s| s.since_ms),
                last_seen_ms: js.and_then(|s| s.last_seen_ms),
                last_ok_ms: js.and_then(|s| s.last_ok_ms),
                last_fail_ms: js.and_then(|s| s.last_fail_ms),
                next_due_ms: js.and_then(|s| s.due_ms(&j)),
                running: js.map(|s| &s.running),
                open_incident: js.and_then(|s| s.open_incident.as_deref()),
                id: j.id,
                cron: j.cron,
                tz: j.tz,
            }
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct CrashList<'a> {
    pub crashes: Vec<&'a Crash>,
}

/// `GET /ops/crashes?app=&limit=`: newest first.
pub fn crashes<'a>(
    log: &'a CrashLog,
    app: Option<&'a str>,
    limit: Option<&str>,
) -> Result<CrashList<'a>, String> {
    let limit = match limit {
        None => 50,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| format!("limit must be 1 to 500, got {l:?}"))?,
    };
    Ok(CrashList {
        crashes: log.recent(app, limit),
    })
}

/// `GET /ops/vantage`: this edge's region, the remote probers, each
/// target's vantage points as they stand, and the recent notes.
#[derive(Debug, Serialize)]
pub struct VantageView<'a> {
    pub region: &'a str,
    pub probers: Vec<ProberView<'a>>,
    pub targets: Vec<VantageTarget<'a>>,
    pub notes: &'a crate::core::vantage::Notes,
}

#[derive(Debug, Serialize)]
pub struct ProberView<'a> {
    pub region: &'a str,
    pub last_seq: u64,
    /// How long ago its last batch came, since this edge started.
    pub heard_ms_ago: Option<u64>,
    pub silent_since_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct VantageTarget<'a> {
    pub id: &'a str,
    pub quorum: usize,
    pub state: Health,
    pub seen: Vec<crate::core::vantage::Seen>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial: Option<&'a crate::core::vantage::Partial>,
}

pub fn vantage<'a>(config: &'a Config, state: &'a State, now_ms: u64) -> VantageView<'a> {
    VantageView {
        region: &config.region,
        probers: state
            .probers
            .iter()
            .map(|(region, p)| ProberView {
                region,
                last_seq: p.last_seq,
                heard_ms_ago: p.heard_at_ms.map(|at| now_ms.saturating_sub(at)),
                silent_since_ms: p.silent_since_ms,
            })
            .collect(),
        targets: config
            .targets
            .iter()
            .filter(|t| t.has_regions())
            .filter_map(|t| {
                let ts = state.targets.get(&t.id)?;
                Some(VantageTarget {
                    id: &t.id,
                    quorum: t.quorum(),
                    state: ts.health,
                    seen: crate::core::vantage::seen(t, ts, config, now_ms),
                    partial: ts.partial.as_ref(),
                })
            })
            .collect(),
        notes: &state.vantage_notes,
    }
}

/// What a change of the API targets answers (`POST /ops/targets`,
/// `DELETE /ops/targets/{id}`) in every shell: 200 with what was done, or
/// the status and error body saying why not (400 naming the key and the
/// reason, 409, 404).
pub fn target_change(done: Result<TargetChange, TargetChangeError>) -> (u16, serde_json::Value) {
    let e = match done {
        Ok(change) => return (200, serde_json::json!({"ok": true, "change": change})),
        Err(e) => e,
    };
    let (status, code) = match &e {
        TargetChangeError::Invalid { .. } => (400, "invalid_target"),
        TargetChangeError::FileWins(_) | TargetChangeError::InFile(_) => (409, "file_target"),
        TargetChangeError::Unknown(_) => (404, "unknown_target"),
    };
    let mut error = serde_json::json!({"code": code, "message": e.to_string()});
    if let TargetChangeError::Invalid { key, reason } = e {
        error["key"] = key.into();
        error["reason"] = reason.into();
    }
    (status, serde_json::json!({ "error": error }))
}

/// `GET /ops/approvals`: runbook runs, newest first, each with its
/// incident (`{"runs": [...]}`), serialized straight and joined as text: not
/// through `serde_json::to_value`, which would compile every type of a run
/// for `Value`'s serializer too (Worker bundle size).
pub fn runbook_runs(state: &State) -> serde_json::Result<String> {
    let mut out = String::from("{\"runs\":[");
    let runs = state.incidents.iter().rev();
    for (i, run) in runs.filter_map(|i| Some((i, i.runbook.as_ref()?))) {
        if !out.ends_with('[') {
            out.push(',');
        }
        let run = serde_json::to_string(run)?;
        out.push_str(run.strip_suffix('}').unwrap_or(&run));
        out.push_str(",\"incident\":");
        out.push_str(&serde_json::to_string(&i.id)?);
        out.push('}');
    }
    out.push_str("]}");
    Ok(out)
}

/// The answer to a runbook request or decision (`{"ok": true, "run"}`).
#[derive(serde::Serialize)]
pub struct RunAnswer<'a> {
    pub ok: bool,
    pub run: &'a crate::core::runbook::RunbookRun,
}

//! The persisted state and the monitor state machine: observations and `now`
//! in, state changes and events out. No clock, no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::acklink::{AckLinkError, AckLinks};
use super::alert::{
    cert_message, page_message, transition_message, with_ack_link, Alert, Outbox, TransitionAlert,
};
use super::flap::Flap;
use super::history::History;
use super::incident::{
    incident_id, Incident, Lease, ManualAction, PendingAction, RemediationStatus, Round,
    RoundOutcome, StateChange, TokenUsage,
};
use super::probe::{Health, Observation};
use super::route::{HookEvent, PageEvent, Routing, Severity};
use super::slo::Burning;
use super::vantage::{self, advance_regular, debounce, Step};
use crate::config::{Config, Role, Target};

/// Manual actions kept in the state-wide log.
const MANUAL_KEPT: usize = 200;
/// Anomalies kept (slow observations).
const ANOMALIES_KEPT: usize = 500;
/// Resolved incidents kept; open ones are always kept.
const RESOLVED_KEPT: usize = 200;
/// After a round found the host unreachable, the next check waits one
/// interval, then twice as long after each failed check, up to this many.
const HOST_RETRY_MAX_INTERVALS: u64 = 16;

/// A target's debounced state and schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetState {
    pub health: Health,
    pub since_ms: u64,
    /// The observed health that differs from `health`, and how many times in
    /// a row it was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Health>,
    #[serde(default)]
    pub streak: u32,
    /// Number of debounced transitions so far.
    #[serde(default)]
    pub transitions: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_incident: Option<String>,
    /// The schedule is not persisted: after a restart every target is due
    /// at once, and a steady cycle changes nothing stored (no KV write).
    #[serde(skip)]
    pub next_regular_at_ms: u64,
    #[serde(skip)]
    pub confirm_at_ms: Option<u64>,
    /// When a host's signal last moved the probe to now (`core::signal`).
    #[serde(skip)]
    pub early_probe_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_resolved_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_until_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Burning::is_quiet")]
    pub burning: Burning,
    #[serde(default, skip_serializing_if = "Flap::is_quiet")]
    pub flap: Flap,
    /// With `regions`: each vantage point's view (`core::vantage`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vantages: BTreeMap<String, vantage::View>,
    /// With `regions`: seen bad from fewer than `quorum` vantage points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<vantage::Partial>,
    /// The certificate (fingerprint) whose expiry was last warned about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_warned: Option<String>,
}

impl TargetState {
    /// A target not observed yet: healthy, due at once.
    pub fn new(now_ms: u64) -> Self {
        TargetState {
            health: Health::Healthy,
            since_ms: now_ms,
            pending: None,
            streak: 0,
            transitions: 0,
            open_incident: None,
            next_regular_at_ms: now_ms,
            confirm_at_ms: None,
            early_probe_ms: None,
            last_resolved_at_ms: None,
            maintenance_until_ms: None,
            burning: Burning::default(),
            flap: Flap::default(),
            vantages: BTreeMap::new(),
            partial: None,
            cert_warned: None,
        }
    }

    pub fn next_probe_at_ms(&self) -> u64 {
        self.confirm_at_ms
            .map_or(self.next_regular_at_ms, |c| c.min(self.next_regular_at_ms))
    }

    pub fn in_maintenance(&self, now_ms: u64) -> bool {
        self.maintenance_until_ms
            .is_some_and(|until| now_ms < until)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    pub target: String,
    pub at_ms: u64,
    pub latency_ms: u64,
    pub degraded_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// What an observation caused, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A first bad (or good) observation: a confirm probe is scheduled.
    Suspect {
        target: String,
        confirm_at_ms: u64,
    },
    Transition {
        target: String,
        from: Health,
        to: Health,
    },
    IncidentOpened {
        target: String,
        incident: String,
    },
    IncidentResolved {
        target: String,
        incident: String,
    },
    /// Observed during a maintenance window: nothing else happens.
    InMaintenance {
        target: String,
    },
    /// The target began flapping: one incident and one alert for the episode.
    Flapping {
        target: String,
        incident: String,
    },
    /// A burn-rate episode began (and was alerted) over this window.
    BurnRate {
        target: String,
        window: u64,
    },
    /// Seen bad from fewer vantage points than the target's quorum.
    SeenDownPartly {
        target: String,
        regions: Vec<String>,
    },
    /// A remote prober stopped reporting.
    ProberSilent {
        region: String,
    },
}

/// Everything the edge must not forget: one document, so a shell can keep it
/// in one file or one KV value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub targets: BTreeMap<String, TargetState>,
    pub incidents: Vec<Incident>,
    pub next_incident: u64,
    pub outbox: Outbox,
    /// Signs pages' ack links (set by the shell from `[ack_link]` and its
    /// secret; not stored).
    #[serde(skip)]
    pub ack_links: Option<AckLinks>,
    #[serde(default)]
    pub anomalies: Vec<Anomaly>,
    /// Actions run by hand through the control API, newest first.
    #[serde(default)]
    pub manual_actions: Vec<ManualAction>,
    #[serde(default)]
    pub jobs: BTreeMap<String, super::jobs::JobState>,
    /// Crash alerts sent within the cooldown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crash_alerts: Vec<super::crash::CrashAlert>,
    /// Remote probers (`core::vantage`), by region.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub probers: BTreeMap<String, vantage::Prober>,
    /// What the vantage points saw that was no incident, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vantage_notes: vantage::Notes,
    /// Targets added through the control API (`core::control`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub api_targets: BTreeMap<String, super::control::ApiTarget>,
    /// Changes made through the control API, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit: Vec<super::control::AuditEntry>,
    /// Whether this process can store the state (not stored: it describes
    /// the process and its disk).
    #[serde(skip)]
    pub store: super::store_health::StoreHealth,
}

/// Who the on-call person is, for the page's @mention.
pub type OncallUser<'a> = Option<&'a str>;

impl State {
    pub fn incident(&self, id: &str) -> Option<&Incident> {
        self.incidents.iter().find(|i| i.id == id)
    }

    pub(super) fn incident_mut(&mut self, id: &str) -> Option<&mut Incident> {
        self.incidents.iter_mut().find(|i| i.id == id)
    }

    /// Targets whose probe is due at `now`. A target whose `regions` leave
    /// this edge out is never due here (its schedule is pushed to the end
    /// of time).
    pub fn due_targets(&mut self, config: &Config, now_ms: u64) -> Vec<String> {
        config
            .targets
            .iter()
            .filter(|t| {
                let s = self
                    .targets
                    .entry(t.id.clone())
                    .or_insert_with(|| TargetState::new(now_ms));
                if !config.probes_here(t) {
                    s.next_regular_at_ms = u64::MAX;
                    s.confirm_at_ms = None;
                }
                s.next_probe_at_ms() <= now_ms
            })
            .map(|t| t.id.clone())
            .collect()
    }

    /// When the next probe is due, over all targets.
    pub fn next_probe_at_ms(&self) -> Option<u64> {
        self.targets
            .values()
            .map(TargetState::next_probe_at_ms)
            .min()
    }

    /// Brings the state in line with the configuration: targets that are
    /// gone lose their state, and their open incidents are resolved so none
    /// is left open forever. Leases of a previous process are dropped.
    pub fn reconcile(&mut self, config: &Config, now_ms: u64, previous_owner_gone: bool) {
        self.outbox.routing = Routing::from_config(config);
        super::retain_map(&mut self.targets, |id, _| config.target(id).is_some());
        for inc in self.incidents.iter_mut() {
            let watched = match inc.target.split_once(':') {
                Some(("job", job)) => super::jobs::spec(config, &self.jobs, job).is_some(),
                Some(("crash", _)) => true,
                Some(("runbook", _)) => inc.is_runbook(),
                _ => config.target(&inc.target).is_some(),
            };
            if inc.is_open() && !watched {
                inc.resolved_at_ms = Some(now_ms);
                inc.resolution = Some("target removed from the configuration".into());
            }
            if previous_owner_gone && inc.lease.take().is_some() && !inc.is_open() {
                // The round's runner is gone and the incident ended
                // meanwhile: nobody will resume it, so record it as it stands.
                if let Some(p) = inc.pending_action.take() {
                    inc.rounds.push(interrupted_round(p, now_ms));
                }
            }
        }
    }

    /// Feeds one regular observation through the debounce and into the
    /// history (not while the target is in maintenance: a planned outage
    /// does not count against uptime).
    pub fn observe_and_record(
        &mut self,
        config: &Config,
        history: &mut History,
        obs: &Observation,
        now_ms: u64,
    ) -> Vec<Event> {
        let events = self.observe(config, obs, now_ms);
        if !events
            .iter()
            .any(|e| matches!(e, Event::InMaintenance { .. }))
        {
            history.record(obs, config.interval_ms());
        }
        events
    }

    /// The periodic checks after a cycle's observations: late jobs, quiet
    /// crash incidents, SLO burn rates, and the pages that are due.
    pub fn tick(
        &mut self,
        config: &Config,
        history: &History,
        oncall: OncallUser,
        now_ms: u64,
    ) -> Vec<Event> {
        let mut events = self.check_jobs(config, oncall, now_ms);
        events.extend(self.check_vantages(config, now_ms));
        self.check_crashes(now_ms);
        self.check_flapping(config, now_ms);
        events.extend(self.check_slo(config, history, now_ms));
        self.fold_dependencies(config, now_ms);
        self.page_due(oncall, now_ms);
        self.check_escalations(config, now_ms);
        self.follow_pages(now_ms);
        self.check_reminders(config, now_ms);
        self.expire_approvals(now_ms);
        events
    }

    /// Tells the channels a page went to when its incident is acknowledged
    /// and when it closes, once each (a paging channel acknowledges and
    /// resolves its own incident).
    pub fn follow_pages(&mut self, now_ms: u64) {
        let mut alerts = Vec::new();
        for inc in self.incidents.iter_mut().filter(|i| !i.paged_to.is_empty()) {
            let mut follow = |event, title: String| {
                let message = super::alert::page_event_message(title, event);
                alerts.push((
                    inc.paged_to.clone(),
                    Alert {
                        key: format!("{}/{}", inc.id, super::alert::event_name(event)),
                        severity: Severity::Info,
                        subject: inc.target.clone(),
                        message,
                        page: Some(event),
                        incident: Some(inc.id.clone()),
                        details: Vec::new(),
                        event: None,
                    },
                ));
            };
            if !inc.is_open() && !inc.page_resolved {
                let how = inc.resolution.clone().unwrap_or_else(|| "closed".into());
                follow(
                    PageEvent::Resolve,
                    format!("{}: incident {} resolved ({how})", inc.target, inc.id),
                );
                inc.page_resolved = true;
                inc.page_acked = true;
            } else if inc.acked_at_ms.is_some() && !inc.page_acked {
                let by = inc.acked_by.clone().unwrap_or_default();
                follow(
                    PageEvent::Acknowledge,
                    format!("{}: page acknowledged by {by}", inc.target),
                );
                inc.page_acked = true;
            }
        }
        for (channels, alert) in alerts {
            self.outbox.push_to(&channels, alert, now_ms);
        }
    }

    /// Feeds one observation through the debounce.
    pub fn observe(&mut self, config: &Config, obs: &Observation, now_ms: u64) -> Vec<Event> {
        let Some(target) = config.target(&obs.target) else {
            return Vec::new();
        };
        let mut events = Vec::new();
        if obs.latency_ms > target.degraded_ms {
            self.anomalies.insert(
                0,
                Anomaly {
                    target: target.id.clone(),
                    at_ms: obs.at_ms,
                    latency_ms: obs.latency_ms,
                    degraded_ms: target.degraded_ms,
                    status: obs.status,
                },
            );
            self.anomalies.truncate(ANOMALIES_KEPT);
        }
        let ts = self
            .targets
            .entry(target.id.clone())
            .or_insert_with(|| TargetState::new(now_ms));
        advance_regular(&mut ts.next_regular_at_ms, config.interval_ms(), now_ms);
        ts.confirm_at_ms = None;
        if let Some(cert) = &obs.cert {
            if ts.cert_expiring(target, cert, now_ms) {
                let key = format!("cert/{}/{}", target.id, cert.fingerprint);
                self.outbox.push(
                    Alert::notice(
                        key,
                        Severity::Warning,
                        &target.id,
                        cert_message(&target.id, cert, now_ms),
                    ),
                    now_ms,
                );
            }
        }
        if ts.in_maintenance(now_ms) {
            ts.pending = None;
            ts.streak = 0;
            events.push(Event::InMaintenance {
                target: target.id.clone(),
            });
            return events;
        }
        let step = if target.has_regions() {
            if !config.probes_here(target) {
                // A round's re-probe from an edge that is no vantage point.
                return events;
            }
            ts.vantages
                .entry(config.region.clone())
                .or_default()
                .see(obs, now_ms, config)
        } else {
            debounce(
                ts.health,
                &mut ts.pending,
                &mut ts.streak,
                obs.health,
                config,
            )
        };
        if step == Step::Confirming {
            // Within `retry_after_s` of a host's signal the confirm comes
            // sooner (`signal_confirm_s`): the host saw the crash already.
            let signalled = ts
                .early_probe_ms
                .is_some_and(|at| now_ms < at.saturating_add(config.retry_after_ms()));
            let wait = if signalled {
                config.signal_confirm_ms()
            } else {
                config.retry_after_ms()
            };
            let at = now_ms.saturating_add(wait);
            ts.confirm_at_ms = Some(at);
            events.push(Event::Suspect {
                target: target.id.clone(),
                confirm_at_ms: at,
            });
        }
        if target.has_regions() {
            self.combine(config, target, obs, now_ms, &mut events);
        } else if step == Step::Changed {
            events.extend(self.transition(config, target, obs.health, obs, Vec::new(), now_ms));
        }
        events
    }

    /// A debounced change of `target`'s health to `to`, on `obs` (and, with
    /// `regions`, what each vantage point saw): the incident opens, moves or
    /// resolves, and the transition is alerted.
    pub(super) fn transition(
        &mut self,
        config: &Config,
        target: &Target,
        to: Health,
        obs: &Observation,
        vantages: Vec<vantage::Seen>,
        now_ms: u64,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        let Some(ts) = self.targets.get_mut(&target.id) else {
            return events;
        };
        let from = ts.health;
        ts.health = to;
        ts.since_ms = now_ms;
        ts.pending = None;
        ts.streak = 0;
        ts.transitions += 1;
        let change = StateChange {
            seq: ts.transitions,
            at_ms: now_ms,
            from,
            to,
            status: obs.status,
            latency_ms: obs.latency_ms,
            error: obs.error.clone(),
            vantages,
        };
        events.push(Event::Transition {
            target: target.id.clone(),
            from,
            to,
        });
        if self.flap_transition(config, target, &change, &mut events) {
            return events;
        }
        let Some(ts) = self.targets.get(&target.id) else {
            return events;
        };
        let existing = ts.open_incident.clone();
        let cooldown_left = ts
            .last_resolved_at_ms
            .map(|r| (r + config.cooldown_ms()).saturating_sub(now_ms))
            .filter(|left| *left > 0);
        let incident_id = match existing {
            Some(id) => id,
            None => {
                let remediation = initial_remediation(target, to, cooldown_left);
                let id = self.open_incident(&target.id, remediation, now_ms);
                if cooldown_left.is_some() {
                    self.cover_page(config, &target.id, &id, now_ms);
                }
                events.push(Event::IncidentOpened {
                    target: target.id.clone(),
                    incident: id.clone(),
                });
                id
            }
        };
        if let Some(ts) = self.targets.get_mut(&target.id) {
            if to == Health::Healthy {
                ts.open_incident = None;
                ts.last_resolved_at_ms = Some(now_ms);
            } else {
                ts.open_incident = Some(incident_id.clone());
            }
        }
        if to == Health::Healthy {
            events.push(Event::IncidentResolved {
                target: target.id.clone(),
                incident: incident_id.clone(),
            });
        }
        if let Some(inc) = self.record_transition(
            &target.id,
            &incident_id,
            change,
            target.role == Role::Remediate,
            now_ms,
        ) {
            if to == Health::Healthy {
                inc.resolved_at_ms = Some(now_ms);
                inc.resolution = Some("recovered".into());
                // A round still in flight keeps its lease and stores its
                // record when it finishes; one whose runner is gone is kept
                // in the record as it stands.
                if inc.lease.is_none() {
                    if let Some(p) = inc.pending_action.take() {
                        inc.rounds.push(interrupted_round(p, now_ms));
                    }
                }
                if matches!(inc.remediation, RemediationStatus::Pending) {
                    inc.remediation = RemediationStatus::Done;
                }
            } else if to == Health::Down
                && matches!(inc.remediation, RemediationStatus::NotApplicable(_))
                && target.role == Role::Remediate
            {
                // Degraded became down: now it is worth fixing.
                inc.remediation = RemediationStatus::Pending;
            }
        }
        self.forget_old_incidents();
        events
    }

    /// A new open incident about `subject` (a target id, or `job:<id>`).
    pub(super) fn open_incident(
        &mut self,
        subject: &str,
        remediation: RemediationStatus,
        now_ms: u64,
    ) -> String {
        self.next_incident += 1;
        let id = incident_id(self.next_incident, now_ms);
        self.incidents.push(Incident::new(
            id.clone(),
            subject.to_string(),
            now_ms,
            remediation,
        ));
        id
    }

    /// Queues the alert for one debounced transition (keyed by incident and
    /// transition number, so it is never queued twice) and records it in the
    /// incident's history; returns the incident for the caller's own changes.
    /// Down is critical when the subject is `remediable`, a warning otherwise.
    pub(super) fn record_transition(
        &mut self,
        subject: &str,
        incident_id: &str,
        change: StateChange,
        remediable: bool,
        now_ms: u64,
    ) -> Option<&mut Incident> {
        let severity = match change.to {
            Health::Healthy => Severity::Info,
            Health::Down if remediable => Severity::Critical,
            Health::Degraded | Health::Down => Severity::Warning,
        };
        let message = transition_message(&TransitionAlert {
            target: subject,
            from: change.from,
            to: change.to,
            status: change.status,
            latency_ms: change.latency_ms,
            error: change.error.as_deref(),
            vantages: &change.vantages,
            incident_id,
        });
        let key = format!("{incident_id}/t{}", change.seq);
        let alert =
            Alert::notice(key, severity, subject, message).with_event(HookEvent::Transition);
        self.outbox.push(alert, now_ms);
        let inc = self.incident_mut(incident_id)?;
        inc.history.push(change);
        Some(inc)
    }

    pub(super) fn forget_old_incidents(&mut self) {
        let resolved = self.incidents.iter().filter(|i| !i.is_open()).count();
        let mut excess = resolved.saturating_sub(RESOLVED_KEPT);
        self.incidents.retain(|i| {
            if excess > 0 && !i.is_open() {
                excess -= 1;
                false
            } else {
                true
            }
        });
    }

    /// Open incidents that want a remediation round now: pending ones, and
    /// those whose host was unreachable once their next check is due.
    pub fn remediation_due(&self, config: &Config, now_ms: u64) -> Vec<String> {
        self.incidents
            .iter()
            .filter(|i| i.is_open() && i.acked_at_ms.is_none() && i.folded_into.is_none())
            .filter(|i| match i.remediation {
                RemediationStatus::Pending => true,
                RemediationStatus::HostUnreachable(_) => {
                    host_check_at(i, config.interval_ms()).is_some_and(|at| at <= now_ms)
                }
                _ => false,
            })
            .filter(|i| i.lease.as_ref().is_none_or(|l| l.until_ms <= now_ms))
            .filter(|i| i.rounds_counted() < config.max_remediation_rounds)
            .filter(|i| {
                !self
                    .targets
                    .get(&i.target)
                    .is_some_and(|t| t.in_maintenance(now_ms))
            })
            // A human-approved run acting on the host comes first: its
            // steps take targets down on purpose, and a round beside it
            // would act twice.
            .filter(|i| {
                let host = config.target(&i.target).and_then(|t| t.host.as_deref());
                !host.is_some_and(|h| self.run_acting_on(h))
            })
            .map(|i| i.id.clone())
            .collect()
    }

    /// Takes the incident's lease for its next round; `None` when someone
    /// else holds it or no round is due. The round number is derived from the
    /// record, so a round retried after a crash keeps its number (and its
    /// idempotency key), and with it the action it had decided on, if any.
    pub fn take_lease(
        &mut self,
        config: &Config,
        incident: &str,
        owner: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Option<(u32, Option<PendingAction>)> {
        if !self
            .remediation_due(config, now_ms)
            .iter()
            .any(|i| i == incident)
        {
            return None;
        }
        let inc = self.incident_mut(incident)?;
        let round = inc.rounds.len() as u32 + 1;
        inc.lease = Some(Lease {
            owner: owner.to_string(),
            round,
            until_ms: now_ms + ttl_ms,
        });
        let resume = inc.pending_action.clone().filter(|p| p.round == round);
        Some((round, resume))
    }

    /// Records, before it is sent, the action the lease holder's round is
    /// about to run. False (and the round must not act) when `owner` no
    /// longer holds the lease, or the incident was acknowledged, resolved or
    /// put in maintenance meanwhile.
    pub fn note_action(
        &mut self,
        incident: &str,
        owner: &str,
        pending: PendingAction,
        now_ms: u64,
    ) -> bool {
        let Some(target) = self.incident(incident).map(|i| i.target.clone()) else {
            return false;
        };
        let in_maintenance = self
            .targets
            .get(&target)
            .is_some_and(|t| t.in_maintenance(now_ms));
        let Some(inc) = self.incident_mut(incident) else {
            return false;
        };
        let holds = inc
            .lease
            .as_ref()
            .is_some_and(|l| l.owner == owner && l.round == pending.round);
        let proceed = holds && inc.is_open() && inc.acked_at_ms.is_none() && !in_maintenance;
        if proceed {
            inc.pending_action = Some(pending);
        }
        proceed
    }

    /// Stores a finished round and releases the lease. Returns false (and
    /// stores nothing) when `owner` no longer holds the lease for it.
    pub fn finish_round(
        &mut self,
        config: &Config,
        incident: &str,
        owner: &str,
        round: Round,
    ) -> bool {
        let Some(inc) = self.incident_mut(incident) else {
            return false;
        };
        let holds = inc
            .lease
            .as_ref()
            .is_some_and(|l| l.owner == owner && l.round == round.n);
        if !holds || inc.rounds.iter().any(|r| r.n == round.n) {
            return false;
        }
        inc.lease = None;
        inc.pending_action = None;
        let outcome = round.outcome.clone();
        store_round(inc, round);
        if matches!(
            inc.remediation,
            RemediationStatus::Pending | RemediationStatus::HostUnreachable(_)
        ) {
            inc.remediation = match outcome {
                RoundOutcome::Recovered => RemediationStatus::Done,
                RoundOutcome::Escalated => RemediationStatus::Escalated(
                    inc.rounds
                        .last()
                        .and_then(|r| r.reason.clone())
                        .unwrap_or_default(),
                ),
                RoundOutcome::HostUnreachable => RemediationStatus::HostUnreachable(
                    inc.rounds
                        .last()
                        .and_then(|r| r.diagnostics.clone())
                        .unwrap_or_default(),
                ),
                RoundOutcome::NoAction => RemediationStatus::Exhausted,
                RoundOutcome::Cancelled => RemediationStatus::Pending,
                RoundOutcome::NotRecovered
                    if inc.rounds_counted() >= config.max_remediation_rounds =>
                {
                    RemediationStatus::Exhausted
                }
                RoundOutcome::NotRecovered => RemediationStatus::Pending,
            };
        }
        true
    }

    /// Pages the on-call person about `incident`, at most once per incident:
    /// `paged_at` is recorded with the message queued, before any send.
    pub fn page(&mut self, incident: &str, reason: &str, oncall: OncallUser, now_ms: u64) -> bool {
        let ack_link = self.ack_links.as_ref().map(|l| l.link(incident, now_ms));
        let channels = match self.incident(incident) {
            Some(inc) => self
                .outbox
                .routing
                .channels(Severity::Critical, &inc.target, true),
            None => return false,
        };
        let paging: Vec<String> = channels
            .iter()
            .filter(|c| self.outbox.routing.is_paging(c))
            .cloned()
            .collect();
        let Some(inc) = self.incident_mut(incident) else {
            return false;
        };
        if inc.paged_at_ms.is_some() || inc.acked_at_ms.is_some() || !inc.is_open() {
            return false;
        }
        inc.paged_at_ms = Some(now_ms);
        inc.page_reason = Some(reason.to_string());
        let tried = inc.tried();
        let alert = Alert {
            key: format!("{}/page", inc.id),
            severity: Severity::Critical,
            subject: inc.target.clone(),
            message: match &ack_link {
                Some(url) => with_ack_link(
                    page_message(oncall, &inc.target, &inc.id, reason, &tried),
                    url,
                ),
                None => page_message(oncall, &inc.target, &inc.id, reason, &tried),
            },
            page: Some(PageEvent::Trigger),
            incident: Some(inc.id.clone()),
            details: tried,
            event: None,
        };
        inc.paged_to = paging;
        self.outbox.push_to(&channels, alert, now_ms);
        true
    }

    /// Incidents whose remediation has ended without a fix and that have not
    /// paged yet, with the reason to page.
    pub fn pages_due(&self) -> Vec<(String, String)> {
        self.incidents
            .iter()
            .filter(|i| i.is_open() && i.paged_at_ms.is_none() && i.acked_at_ms.is_none())
            .filter(|i| i.page_covered_by.is_none() && i.folded_into.is_none())
            .filter_map(|i| {
                let reason = match &i.remediation {
                    RemediationStatus::Exhausted => {
                        format!(
                            "remediation exhausted after {} round(s)",
                            i.rounds_counted()
                        )
                    }
                    RemediationStatus::Escalated(why) => format!("the planner escalated: {why}"),
                    RemediationStatus::HostUnreachable(why) => format!("host unreachable: {why}"),
                    RemediationStatus::Suppressed(why) => format!("remediation held back: {why}"),
                    _ => return None,
                };
                Some((i.id.clone(), reason))
            })
            .collect()
    }

    /// Stores a finished round, feeds its re-probe to the monitor, and pages
    /// if remediation has ended without a fix.
    pub fn complete_round(
        &mut self,
        config: &Config,
        incident: &str,
        owner: &str,
        round: Round,
        oncall: OncallUser,
        now_ms: u64,
    ) -> Vec<Event> {
        let reprobe = round.reprobe.clone();
        let proposal = round.proposal.clone();
        if !self.finish_round(config, incident, owner, round) {
            return Vec::new();
        }
        if let Some(action) = proposal {
            self.propose_action(config, incident, &action, now_ms);
        }
        let events = reprobe
            .map(|obs| self.observe(config, &obs, now_ms))
            .unwrap_or_default();
        self.page_due(oncall, now_ms);
        events
    }

    /// Sends every page that is due; returns how many were queued.
    pub fn page_due(&mut self, oncall: OncallUser, now_ms: u64) -> usize {
        self.pages_due()
            .into_iter()
            .filter(|(id, reason)| self.page(id, reason, oncall, now_ms))
            .count()
    }

    /// Records an action run by hand as it is sent, like a round's decision:
    /// in the state-wide log, and on every open incident of a target on that
    /// host, so the trail has it even when the incident resolves before the
    /// agent answers.
    pub fn start_manual_action(&mut self, config: &Config, action: ManualAction) {
        for inc in self.incidents.iter_mut().filter(|i| i.is_open()) {
            if config.target(&inc.target).and_then(|t| t.host.as_deref())
                == Some(action.host.as_str())
            {
                inc.manual_actions.push(action.clone());
            }
        }
        self.manual_actions.insert(0, action);
        self.manual_actions.truncate(MANUAL_KEPT);
    }

    /// Completes the records [`State::start_manual_action`] made (matched
    /// by key), whether their incidents are still open or not.
    pub fn finish_manual_action(&mut self, done: &ManualAction) {
        let records = self
            .incidents
            .iter_mut()
            .flat_map(|i| i.manual_actions.iter_mut())
            .chain(self.manual_actions.iter_mut());
        for record in records.filter(|r| r.key == done.key) {
            *record = done.clone();
        }
    }

    /// Acknowledges through a signed link (`[ack_link]`), once per link.
    pub fn acknowledge_by_link(
        &mut self,
        incident: &str,
        expires_ms: u64,
        sig: &str,
        now_ms: u64,
    ) -> Result<Result<(), StateError>, AckLinkError> {
        let links = self.ack_links.as_ref().ok_or(AckLinkError::BadSignature)?;
        links.check(incident, expires_ms, sig, now_ms)?;
        let Some(inc) = self.incident_mut(incident) else {
            return Ok(Err(StateError::NoIncident));
        };
        if inc.ack_links_used.iter().any(|s| s == sig) {
            return Err(AckLinkError::Used);
        }
        inc.ack_links_used.push(sig.to_string());
        Ok(self.acknowledge(incident, "ack link", now_ms))
    }

    pub fn acknowledge(&mut self, incident: &str, by: &str, now_ms: u64) -> Result<(), StateError> {
        let inc = self.incident_mut(incident).ok_or(StateError::NoIncident)?;
        if !inc.is_open() {
            return Err(StateError::AlreadyResolved);
        }
        inc.acked_at_ms.get_or_insert(now_ms);
        inc.acked_by.get_or_insert_with(|| by.to_string());
        inc.remediation = RemediationStatus::Acknowledged;
        self.follow_pages(now_ms);
        Ok(())
    }

    /// Resolves by hand. The target starts afresh as healthy: if it is not,
    /// the debounce opens a new incident.
    pub fn resolve(&mut self, incident: &str, by: &str, now_ms: u64) -> Result<(), StateError> {
        let inc = self.incident_mut(incident).ok_or(StateError::NoIncident)?;
        if !inc.is_open() {
            return Err(StateError::AlreadyResolved);
        }
        inc.resolved_at_ms = Some(now_ms);
        inc.resolution = Some(format!("resolved by {by}"));
        inc.lease = None;
        let target = inc.target.clone();
        if let Some(ts) = self.targets.get_mut(&target) {
            ts.health = Health::Healthy;
            ts.since_ms = now_ms;
            ts.pending = None;
            ts.streak = 0;
            ts.open_incident = None;
            ts.last_resolved_at_ms = Some(now_ms);
            // Every vantage point starts afresh too.
            ts.vantages.clear();
            ts.partial = None;
        }
        self.follow_pages(now_ms);
        Ok(())
    }

    pub fn set_maintenance(
        &mut self,
        target: &str,
        until_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<(), StateError> {
        let ts = self
            .targets
            .entry(target.to_string())
            .or_insert_with(|| TargetState::new(now_ms));
        ts.maintenance_until_ms = until_ms;
        ts.pending = None;
        ts.streak = 0;
        ts.vantages.clear();
        ts.partial = None;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("no such incident")]
    NoIncident,
    #[error("the incident is already resolved")]
    AlreadyResolved,
}

/// When the next check of an incident's unreachable host is due: one
/// interval after the last failed check, doubling with each one folded into
/// it, up to [`HOST_RETRY_MAX_INTERVALS`].
fn host_check_at(inc: &Incident, interval_ms: u64) -> Option<u64> {
    let last = inc
        .rounds
        .last()
        .filter(|r| r.outcome == RoundOutcome::HostUnreachable)?;
    let intervals = (1u64 << last.retries.min(8)).min(HOST_RETRY_MAX_INTERVALS);
    Some(
        last.finished_at_ms
            .saturating_add(interval_ms.saturating_mul(intervals)),
    )
}

/// Adds a finished round to the trail. Another check that finds the host
/// still unreachable is folded into the previous one (the trail stays
/// short however long the host is down); the first round after one says
/// that remediation resumed.
fn store_round(inc: &mut Incident, mut round: Round) {
    let after_unreachable = inc
        .rounds
        .last_mut()
        .filter(|r| r.outcome == RoundOutcome::HostUnreachable);
    match after_unreachable {
        Some(last) if round.outcome == RoundOutcome::HostUnreachable => {
            last.retries += 1;
            last.finished_at_ms = round.finished_at_ms;
            last.diagnostics = round.diagnostics;
            last.host_metrics = round.host_metrics.or(last.host_metrics.take());
        }
        Some(last) => {
            round.note = Some(format!(
                "remediation resumed: the host answers again after {} failed check(s)",
                last.retries + 1
            ));
            inc.rounds.push(round);
        }
        None => inc.rounds.push(round),
    }
}

fn interrupted_round(p: PendingAction, now_ms: u64) -> Round {
    Round {
        n: p.round,
        started_at_ms: now_ms,
        finished_at_ms: now_ms,
        diagnostics: None,
        host_metrics: None,
        planner: p.planner,
        fallback: None,
        tool_calls: Vec::new(),
        action: Some(p.action),
        reason: Some(p.reason),
        action_result: None,
        action_error: Some("the runner stopped before this round finished; the target recovered meanwhile (the agent's audit log has the action)".into()),
        reprobe: None,
        usage: TokenUsage::default(),
        outcome: RoundOutcome::Recovered,
        retries: 0,
        note: None,
        logs: Vec::new(),
        proposal: None,
    }
}

fn initial_remediation(
    target: &Target,
    health: Health,
    cooldown_left_ms: Option<u64>,
) -> RemediationStatus {
    if target.role == Role::AlertOnly {
        return RemediationStatus::NotApplicable("alert-only target".into());
    }
    if health == Health::Degraded && !target.remediate_degraded {
        return RemediationStatus::NotApplicable("degraded, and remediate_degraded is off".into());
    }
    if let Some(left) = cooldown_left_ms {
        return RemediationStatus::Suppressed(format!(
            "the target recovered from an incident moments ago (cooldown, {} s left): it may be flapping",
            left.div_ceil(1000)
        ));
    }
    RemediationStatus::Pending
}

//! Several vantage points (issue 15): a target with `regions = [...]` is
//! probed from each of them (this edge for its own `region`, remote probers,
//! `vigil-edge --probe-only`, for theirs; on the Worker, region Durable
//! Objects the cycle asks, `worker::shards`), and an incident opens only
//! when at least `quorum` of them see it bad.
//!
//! - Each vantage point has its own debounced view ([`View`]): the same
//!   blip/confirm rule as a single edge (`failure_threshold` bad
//!   observations in a row, `recovery_threshold` good ones), each prober
//!   scheduling its own confirm probes ([`ProberSchedule`]).
//! - The target goes bad when at least `quorum` fresh views are bad (down
//!   when `quorum` of them are down), and recovers when so many fresh views
//!   are healthy that a quorum of bad ones is impossible
//!   (`regions - quorum + 1`). A view is fresh when its vantage point was
//!   heard within `prober_silent_s`: a stale view counts neither way, so a
//!   prober that stops reporting can cause neither a false outage nor a
//!   false recovery.
//! - Fewer than `quorum` bad views on a healthy target for a whole
//!   interval (so not the moments in which the other vantage points are
//!   still confirming a real outage): a note "seen down from <regions>
//!   only" (and one warning alert per episode when `quorum_warning` is on),
//!   never an incident or a page. The episode ends, with a note and no
//!   alert, when no fresh view is bad.
//! - A remote prober not heard within `prober_silent_s`: a "prober silent"
//!   note and warning, once per episode, and one when it reports again.
//! - Batches (`POST /ops/observations`) carry the prober's sequence number
//!   (strictly increasing, so a replayed batch is refused) and its clock
//!   (`sent_at_ms`, within [`CLOCK_SKEW_MS`] of this edge's). An
//!   observation's age is measured on the prober's clock and carried over
//!   to this edge's, so a skewed clock shifts nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::alert::{warning_message, Alert};
use super::probe::{Health, Observation};
use super::route::Severity;
use super::state::{Event, State, TargetState};
use crate::config::{Config, Target};

/// How far a prober's clock may be from this edge's.
pub const CLOCK_SKEW_MS: u64 = 60_000;
/// Notes kept.
const NOTES_KEPT: usize = 200;
/// Observations taken in one batch.
pub const BATCH_MAX: usize = 1000;

/// What one more observation did to a debounced health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The same health as the debounced one.
    Steady,
    /// A different health, not yet seen often enough: confirm it.
    Confirming,
    /// Seen often enough: the debounced health is now the observed one.
    Changed,
}

/// The debounce every vantage point applies (and a single edge too):
/// `failure_threshold` bad observations in a row (from healthy, degraded
/// and down count together), `recovery_threshold` good ones.
pub fn debounce(
    health: Health,
    pending: &mut Option<Health>,
    streak: &mut u32,
    observed: Health,
    config: &Config,
) -> Step {
    if observed == health {
        *pending = None;
        *streak = 0;
        return Step::Steady;
    }
    let same_way =
        |p: Health| p == observed || (health == Health::Healthy && p.is_bad() && observed.is_bad());
    *streak = if pending.is_some_and(same_way) {
        *streak + 1
    } else {
        1
    };
    *pending = Some(observed);
    let threshold = if observed == Health::Healthy {
        config.recovery_threshold
    } else {
        config.failure_threshold
    };
    if *streak < threshold {
        return Step::Confirming;
    }
    *pending = None;
    *streak = 0;
    Step::Changed
}

/// One vantage point's debounced view of a target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct View {
    pub health: Health,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Health>,
    #[serde(default)]
    pub streak: u32,
    /// When (this edge's clock) its latest observation was taken; not
    /// stored: after a restart every remote view is stale until it reports.
    #[serde(skip)]
    pub heard_at_ms: Option<u64>,
    /// Its latest observation (the prober's clock), for the record.
    #[serde(skip)]
    pub last: Option<Observation>,
}

impl Default for View {
    fn default() -> Self {
        View {
            health: Health::Healthy,
            pending: None,
            streak: 0,
            heard_at_ms: None,
            last: None,
        }
    }
}

impl View {
    /// Feeds one observation, taken at `heard_at_ms` on this edge's clock.
    pub fn see(&mut self, obs: &Observation, heard_at_ms: u64, config: &Config) -> Step {
        let step = debounce(
            self.health,
            &mut self.pending,
            &mut self.streak,
            obs.health,
            config,
        );
        if step == Step::Changed {
            self.health = obs.health;
        }
        self.heard_at_ms = Some(heard_at_ms);
        self.last = Some(obs.clone());
        step
    }

    fn fresh(&self, config: &Config, now_ms: u64) -> bool {
        self.heard_at_ms
            .is_some_and(|at| now_ms.saturating_sub(at) <= config.prober_silent_ms())
    }
}

/// What one vantage point saw, in the audit trail and the alerts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    pub region: String,
    /// Its debounced view; `None` when it is silent (not heard within
    /// `prober_silent_s`, or never).
    pub health: Option<Health>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Seen {
    pub fn describe(seen: &[Seen]) -> String {
        seen.iter()
            .map(|s| {
                let what = s.health.map_or("silent", Health::as_str);
                match &s.error {
                    Some(e) if s.health.is_some() => format!("{}: {what} ({e})", s.region),
                    _ => format!("{}: {what}", s.region),
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A healthy target seen bad from fewer vantage points than its quorum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partial {
    pub since_ms: u64,
    pub regions: Vec<String>,
    /// Whether it lasted long enough to be noted (and alerted).
    #[serde(default)]
    pub noted: bool,
}

/// A remote prober, as this edge hears it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Prober {
    /// The last batch's sequence number: only a greater one is taken.
    pub last_seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent_since_ms: Option<u64>,
    /// When its last batch came (this edge's clock); not stored: the
    /// silence is measured from the start after a restart.
    #[serde(skip)]
    pub heard_at_ms: Option<u64>,
}

/// A recorded note: what the vantage points saw that is not an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    pub at_ms: u64,
    /// `seen_down_partly`, `seen_healthy_again`, `prober_silent`, `prober_back`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub regions: Vec<String>,
    pub text: String,
}

/// A prober's batch (`POST /ops/observations`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    pub region: String,
    pub seq: u64,
    /// The prober's clock when it sent the batch.
    pub sent_at_ms: u64,
    pub observations: Vec<Observation>,
}

/// Why a batch is refused (nothing is changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// A field is wrong: the message starts with its name.
    #[error("{0}")]
    Invalid(String),
    #[error("seq: {seq} is not after the last batch's {last} (replayed or out of order)")]
    Replayed { seq: u64, last: u64 },
}

/// What a batch did (the body of the answer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchOutcome {
    pub taken: usize,
    /// Observations older than `prober_silent_s`, or not newer than one
    /// already taken from that region: they would count for nothing.
    pub ignored: usize,
}

impl Batch {
    /// Parses a request body; the error names the field at fault.
    pub fn parse(body: &[u8]) -> Result<Batch, BatchError> {
        let batch: Batch = serde_json::from_slice(body).map_err(|e| {
            BatchError::Invalid(format!(
                "expected {{\"region\", \"seq\", \"sent_at_ms\", \"observations\": [...]}}: {e}"
            ))
        })?;
        if batch.observations.len() > BATCH_MAX {
            return Err(BatchError::Invalid(format!(
                "observations: at most {BATCH_MAX} a batch"
            )));
        }
        Ok(batch)
    }

    /// Checks the batch against the configuration and this edge's clock.
    fn check(&self, config: &Config, last_seq: u64, now_ms: u64) -> Result<(), BatchError> {
        let invalid = |s: String| Err(BatchError::Invalid(s));
        if self.region == config.region {
            return invalid(format!(
                "region: {:?} is this edge's own region",
                self.region
            ));
        }
        if !config.remote_regions().contains(&self.region.as_str()) {
            return invalid(format!(
                "region: no target lists {:?} in its regions",
                self.region
            ));
        }
        if self.seq <= last_seq {
            return Err(BatchError::Replayed {
                seq: self.seq,
                last: last_seq,
            });
        }
        if self.sent_at_ms.abs_diff(now_ms) > CLOCK_SKEW_MS {
            return invalid(format!(
                "sent_at_ms: the prober's clock is {} s off this edge's (at most {} s)",
                self.sent_at_ms.abs_diff(now_ms) / 1000,
                CLOCK_SKEW_MS / 1000
            ));
        }
        for (i, o) in self.observations.iter().enumerate() {
            if !config
                .target(&o.target)
                .is_some_and(|t| t.regions.contains(&self.region))
            {
                return invalid(format!(
                    "observations[{i}].target: {:?} is not a target of region {:?}",
                    o.target, self.region
                ));
            }
            if o.at_ms > self.sent_at_ms {
                return invalid(format!(
                    "observations[{i}].at_ms: after the batch's sent_at_ms"
                ));
            }
        }
        Ok(())
    }
}

impl State {
    /// Takes a prober's batch: every observation through its region's view
    /// and the quorum (see the module's documentation), or nothing when
    /// the batch is refused.
    pub fn take_batch(
        &mut self,
        config: &Config,
        batch: &Batch,
        now_ms: u64,
    ) -> Result<(BatchOutcome, Vec<Event>), BatchError> {
        let last_seq = self.probers.get(&batch.region).map_or(0, |p| p.last_seq);
        batch.check(config, last_seq, now_ms)?;
        self.probers
            .entry(batch.region.clone())
            .or_default()
            .last_seq = batch.seq;
        Ok(self.take_observations(
            config,
            &batch.region,
            batch.sent_at_ms,
            &batch.observations,
            now_ms,
        ))
    }

    /// Observations from a remote vantage point, taken at `sent_at_ms` on
    /// its clock: a checked batch's, or the answer of a vantage point this
    /// edge asked itself (the Worker's region objects, `worker::regions`:
    /// no sequence to replay, no clock of their own to skew).
    pub fn take_observations(
        &mut self,
        config: &Config,
        region: &str,
        sent_at_ms: u64,
        observations: &[Observation],
        now_ms: u64,
    ) -> (BatchOutcome, Vec<Event>) {
        let prober = self.probers.entry(region.to_string()).or_default();
        prober.heard_at_ms = Some(now_ms);
        let mut events = Vec::new();
        if let Some(since) = prober.silent_since_ms.take() {
            let text = format!(
                "prober {region} reports again after {} s of silence",
                now_ms.saturating_sub(since) / 1000
            );
            let key = format!("prober/{region}/back/{now_ms}");
            self.note(
                "prober_back",
                None,
                vec![region.to_string()],
                text,
                Some(key),
                now_ms,
            );
        }
        let mut observations: Vec<&Observation> = observations.iter().collect();
        super::sort_small_by_key(&mut observations, |o| o.at_ms);
        let mut outcome = BatchOutcome::default();
        for obs in observations {
            // The observation's age on the prober's clock, carried over.
            let heard_at = now_ms.saturating_sub(sent_at_ms.saturating_sub(obs.at_ms));
            let stale = now_ms.saturating_sub(heard_at) > config.prober_silent_ms();
            let seen_already = self
                .targets
                .get(&obs.target)
                .and_then(|ts| ts.vantages.get(region))
                .and_then(|v| v.last.as_ref())
                .is_some_and(|last| last.at_ms >= obs.at_ms);
            if stale || seen_already {
                outcome.ignored += 1;
                continue;
            }
            outcome.taken += 1;
            events.extend(self.observe_from(config, region, obs, heard_at, now_ms));
        }
        (outcome, events)
    }

    /// One observation from a remote vantage point.
    fn observe_from(
        &mut self,
        config: &Config,
        region: &str,
        obs: &Observation,
        heard_at_ms: u64,
        now_ms: u64,
    ) -> Vec<Event> {
        let Some(target) = config.target(&obs.target) else {
            return Vec::new();
        };
        let ts = self
            .targets
            .entry(target.id.clone())
            .or_insert_with(|| TargetState::new(now_ms));
        if ts.in_maintenance(now_ms) {
            return vec![Event::InMaintenance {
                target: target.id.clone(),
            }];
        }
        ts.vantages
            .entry(region.to_string())
            .or_default()
            .see(obs, heard_at_ms, config);
        let mut events = Vec::new();
        self.combine(config, target, obs, now_ms, &mut events);
        events
    }

    /// The target's health from its fresh views; a transition when it
    /// changes, a note when fewer than `quorum` see it bad.
    pub(super) fn combine(
        &mut self,
        config: &Config,
        target: &Target,
        obs: &Observation,
        now_ms: u64,
        events: &mut Vec<Event>,
    ) {
        let Some(ts) = self.targets.get_mut(&target.id) else {
            return;
        };
        super::retain_map(&mut ts.vantages, |r, _| target.regions.contains(r));
        let quorum = target.quorum();
        let fresh: Vec<&View> = ts
            .vantages
            .values()
            .filter(|v| v.fresh(config, now_ms))
            .collect();
        let count = |f: fn(Health) -> bool| fresh.iter().filter(|v| f(v.health)).count();
        let (down, bad, healthy) = (
            count(|h| h == Health::Down),
            count(Health::is_bad),
            count(|h| h == Health::Healthy),
        );
        let bad_health = if down >= quorum {
            Some(Health::Down)
        } else if bad >= quorum {
            Some(Health::Degraded)
        } else {
            None
        };
        let to = match (ts.health, bad_health) {
            (Health::Healthy, bad) => bad.unwrap_or(Health::Healthy),
            _ if healthy > target.regions.len() - quorum => Health::Healthy,
            (now, bad) => bad.unwrap_or(now),
        };
        let seen = seen(target, ts, config, now_ms);
        if to != ts.health {
            ts.partial = None;
            events.extend(self.transition(config, target, to, obs, seen, now_ms));
            return;
        }
        let bad_from: Vec<String> = seen
            .iter()
            .filter(|s| s.health.is_some_and(Health::is_bad))
            .map(|s| s.region.clone())
            .collect();
        match ts.partial.as_mut() {
            None if !bad_from.is_empty() && ts.health == Health::Healthy => {
                ts.partial = Some(Partial {
                    since_ms: now_ms,
                    regions: bad_from,
                    noted: false,
                });
            }
            Some(p) if !bad_from.is_empty() => p.regions = bad_from,
            Some(p) => {
                let noted = p.noted;
                ts.partial = None;
                if noted {
                    let text = format!(
                        "{} seen healthy again from every vantage point that reports",
                        target.id
                    );
                    self.note(
                        "seen_healthy_again",
                        Some(&target.id),
                        Vec::new(),
                        text,
                        None,
                        now_ms,
                    );
                }
            }
            None => {}
        }
    }

    /// Notes (and alerts, with `quorum_warning`) each target seen bad from
    /// fewer vantage points than its quorum for a whole interval.
    fn check_partial(&mut self, config: &Config, now_ms: u64) -> Vec<Event> {
        let due: Vec<(String, Vec<String>)> = self
            .targets
            .iter_mut()
            .filter_map(|(id, ts)| {
                let p = ts.partial.as_mut()?;
                if p.noted || now_ms < p.since_ms.saturating_add(config.interval_ms()) {
                    return None;
                }
                p.noted = true;
                Some((id.clone(), p.regions.clone()))
            })
            .collect();
        let mut events = Vec::new();
        for (id, regions) in due {
            let Some(target) = config.target(&id) else {
                continue;
            };
            let seen = self
                .targets
                .get(&id)
                .map(|ts| seen(target, ts, config, now_ms))
                .unwrap_or_default();
            let text = format!(
                "{id} seen down from {} only ({} of {} vantage points, quorum {}): no incident. {}",
                regions.join(", "),
                regions.len(),
                target.regions.len(),
                target.quorum(),
                Seen::describe(&seen)
            );
            let key = config
                .quorum_warning
                .then(|| format!("partial/{id}/{now_ms}"));
            self.note(
                "seen_down_partly",
                Some(&id),
                regions.clone(),
                text,
                key,
                now_ms,
            );
            events.push(Event::SeenDownPartly {
                target: id,
                regions,
            });
        }
        events
    }

    /// Records a note, and queues it as a warning alert under `alert_key`.
    fn note(
        &mut self,
        kind: &str,
        target: Option<&str>,
        regions: Vec<String>,
        text: String,
        alert_key: Option<String>,
        now_ms: u64,
    ) {
        if let Some(key) = alert_key {
            let title = match target {
                Some(t) => format!("{t}: seen down from {} only", regions.join(", ")),
                None => text.clone(),
            };
            // A minority view is about its target; a silent prober about
            // Vigil itself.
            let subject = target.unwrap_or("vigil");
            let message = warning_message(title, text.clone());
            self.outbox.push(
                Alert::notice(key, Severity::Warning, subject, message),
                now_ms,
            );
        }
        self.vantage_notes.insert(
            0,
            Note {
                at_ms: now_ms,
                kind: kind.to_string(),
                target: target.map(str::to_string),
                regions,
                text,
            },
        );
        self.vantage_notes.truncate(NOTES_KEPT);
    }

    /// The periodic checks (from `State::tick`): minority views that
    /// lasted an interval, and each remote prober that has not reported
    /// within `prober_silent_s` (alerted once per silence); probers no
    /// target names any more are forgotten.
    pub fn check_vantages(&mut self, config: &Config, now_ms: u64) -> Vec<Event> {
        let regions = config.remote_regions();
        super::retain_map(&mut self.probers, |r, _| regions.contains(&r.as_str()));
        let mut events = self.check_partial(config, now_ms);
        for region in regions {
            let p = self.probers.entry(region.to_string()).or_default();
            let heard = *p.heard_at_ms.get_or_insert(now_ms);
            if p.silent_since_ms.is_some()
                || now_ms.saturating_sub(heard) <= config.prober_silent_ms()
            {
                continue;
            }
            p.silent_since_ms = Some(heard);
            let text = format!(
                "prober {region} silent: no observations for {} s (its views do not count towards any quorum until it reports again)",
                now_ms.saturating_sub(heard) / 1000
            );
            let key = format!("prober/{region}/silent/{heard}");
            self.note(
                "prober_silent",
                None,
                vec![region.to_string()],
                text,
                Some(key),
                now_ms,
            );
            events.push(Event::ProberSilent {
                region: region.to_string(),
            });
        }
        events
    }
}

impl State {
    /// The confirm probes that remote views still confirming want,
    /// `retry_after_s` after each was heard: (region, target, when), for
    /// an edge that drives its vantage points' probes itself (the Worker's
    /// region objects); a remote prober schedules its own
    /// ([`ProberSchedule`]).
    pub fn view_confirms(&self, config: &Config) -> Vec<(&str, &str, u64)> {
        let mut due = Vec::new();
        for (id, ts) in &self.targets {
            for (region, v) in ts.vantages.iter().filter(|(r, _)| **r != config.region) {
                if let (Some(_), Some(at)) = (v.pending, v.heard_at_ms) {
                    due.push((region.as_str(), id.as_str(), at + config.retry_after_ms()));
                }
            }
        }
        due
    }

    /// Carries what is kept in memory only (when each prober and view was
    /// heard, and the view's last observation) over from `previous`, the
    /// state this process held, into `self`, the same state read back from
    /// its store: the Worker reads its state every cycle and request, so
    /// without this every remote view would be stale and no prober ever
    /// silent. A process that starts afresh has no `previous`: silence is
    /// then measured from its start, as on the native edge.
    pub fn carry_heard(&mut self, previous: &State) {
        for (region, p) in &mut self.probers {
            if let Some(q) = previous.probers.get(region) {
                p.heard_at_ms = q.heard_at_ms;
            }
        }
        for (id, ts) in &mut self.targets {
            let Some(before) = previous.targets.get(id) else {
                continue;
            };
            for (region, v) in &mut ts.vantages {
                if let Some(b) = before.vantages.get(region) {
                    v.heard_at_ms = b.heard_at_ms;
                    v.last.clone_from(&b.last);
                }
            }
        }
    }
}

/// What each of the target's vantage points sees now.
pub fn seen(target: &Target, ts: &TargetState, config: &Config, now_ms: u64) -> Vec<Seen> {
    target
        .regions
        .iter()
        .map(|region| {
            let view = ts.vantages.get(region).filter(|v| v.fresh(config, now_ms));
            let last = view.and_then(|v| v.last.as_ref());
            Seen {
                region: region.clone(),
                health: view.map(|v| v.health),
                status: last.and_then(|o| o.status),
                error: last.and_then(|o| o.error.clone()),
            }
        })
        .collect()
}

/// Keeps a regular schedule aligned to its first point: no drift.
pub fn advance_regular(next_regular_at_ms: &mut u64, interval_ms: u64, now_ms: u64) {
    if *next_regular_at_ms <= now_ms {
        let missed = (now_ms - *next_regular_at_ms) / interval_ms.max(1) + 1;
        *next_regular_at_ms += missed * interval_ms.max(1);
    }
}

/// A remote prober's own schedule (`vigil-edge --probe-only`): each target
/// of its region every interval, and a confirm probe `retry_after_s` after
/// an observation its view has not confirmed yet. Nothing else: the main
/// edge decides.
#[derive(Debug, Clone, Default)]
pub struct ProberSchedule {
    slots: BTreeMap<String, Slot>,
}

#[derive(Debug, Clone)]
struct Slot {
    next_regular_at_ms: u64,
    confirm_at_ms: Option<u64>,
    view: View,
}

impl ProberSchedule {
    /// The targets that list `config.region`, all due at once.
    pub fn new(config: &Config, now_ms: u64) -> Self {
        let slots = config
            .targets
            .iter()
            .filter(|t| t.regions.contains(&config.region))
            .map(|t| {
                let slot = Slot {
                    next_regular_at_ms: now_ms,
                    confirm_at_ms: None,
                    view: View::default(),
                };
                (t.id.clone(), slot)
            })
            .collect();
        ProberSchedule { slots }
    }

    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.slots.keys().map(String::as_str)
    }

    pub fn due(&self, now_ms: u64) -> Vec<String> {
        self.slots
            .iter()
            .filter(|(_, s)| s.next_at_ms() <= now_ms)
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn next_at_ms(&self) -> Option<u64> {
        self.slots.values().map(Slot::next_at_ms).min()
    }

    pub fn observe(&mut self, config: &Config, obs: &Observation, now_ms: u64) {
        let Some(slot) = self.slots.get_mut(&obs.target) else {
            return;
        };
        advance_regular(&mut slot.next_regular_at_ms, config.interval_ms(), now_ms);
        slot.confirm_at_ms = (slot.view.see(obs, now_ms, config) == Step::Confirming)
            .then(|| now_ms + config.retry_after_ms());
    }
}

impl Slot {
    fn next_at_ms(&self) -> u64 {
        self.confirm_at_ms
            .map_or(self.next_regular_at_ms, |c| c.min(self.next_regular_at_ms))
    }
}

/// Recent notes, newest first, kept in the state (a `Vec`: 200 at most,
/// and one collection type fewer in the Worker's bundle than a `VecDeque`).
pub type Notes = Vec<Note>;

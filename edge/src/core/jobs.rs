//! Job heartbeats: a job that stops reporting, runs too long or reports a
//! failure becomes an incident like a target does (alerted, paged per its
//! policy), and resolves when it reports `ok` again. Pure: signals and `now`
//! in, state changes and events out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::incident::{RemediationStatus, StateChange};
use super::probe::Health;
use super::schedule::format_utc;
use super::state::{Event, OncallUser, State};
use crate::config::{Config, Job};

/// Runs remembered per job (started, not yet ended).
const RUNS_KEPT: usize = 100;
/// The run id of a `start` sent without one.
const NO_RUN_ID: &str = "-";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    Ok,
    Start,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    pub health: Health,
    pub since_ms: u64,
    /// When Vigil started watching: the first deadline of a job never heard.
    pub watched_since_ms: u64,
    /// The last heartbeat of any kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ok_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fail_ms: Option<u64>,
    /// Runs started and not ended: run id → start time.
    #[serde(default)]
    pub running: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_incident: Option<String>,
    #[serde(default)]
    pub transitions: u64,
    /// Created by its first heartbeat (`[job_defaults] auto_create`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto: bool,
}

impl JobState {
    fn new(now_ms: u64) -> Self {
        JobState {
            health: Health::Healthy,
            since_ms: now_ms,
            watched_since_ms: now_ms,
            last_seen_ms: None,
            last_ok_ms: None,
            last_fail_ms: None,
            running: BTreeMap::new(),
            open_incident: None,
            transitions: 0,
            auto: false,
        }
    }

    /// When the next `ok` is due (before grace): a period after the last
    /// one, or the first scheduled run after it; counted from when Vigil
    /// started watching if the job never reported.
    pub fn due_ms(&self, job: &Job) -> Option<u64> {
        let since = self.last_ok_ms.unwrap_or(self.watched_since_ms);
        match (&job.schedule, job.period_s) {
            (Some(schedule), _) => schedule.next_after(since),
            (None, Some(period)) => Some(since + (period * 1000.0) as u64),
            (None, None) => None,
        }
    }

    /// Why the job is late at `now`, if it is.
    fn lateness(&self, job: &Job, now_ms: u64) -> Option<String> {
        let grace = (job.grace_s * 1000.0) as u64;
        if let Some((run, started)) = self.running.iter().find(|(_, s)| now_ms > **s + grace) {
            return Some(format!(
                "run {run} started {} s ago and has not ended (grace {} s)",
                (now_ms - started) / 1000,
                job.grace_s
            ));
        }
        let due = self.due_ms(job)?;
        if now_ms <= due + grace {
            return None;
        }
        let since = self.last_ok_ms.unwrap_or(self.watched_since_ms);
        let heard = match self.last_ok_ms {
            Some(_) => format!("no ok for {} s", (now_ms - since) / 1000),
            None => format!("never reported in {} s", (now_ms - since) / 1000),
        };
        Some(match (&job.schedule, job.period_s) {
            (Some(s), _) => format!(
                "{heard}: the run due at {} (cron {:?} in {}) has not reported (grace {} s)",
                format_utc(due),
                job.cron.as_deref().unwrap_or_default(),
                s.zone.name,
                job.grace_s
            ),
            (None, period) => format!(
                "{heard} (period {} s + grace {} s)",
                period.unwrap_or_default(),
                job.grace_s
            ),
        })
    }
}

/// The specification of a job: from the file, or auto-created.
pub fn spec(config: &Config, jobs: &BTreeMap<String, JobState>, id: &str) -> Option<Job> {
    match config.job(id) {
        Some(j) => Some(j.clone()),
        None if jobs.get(id).is_some_and(|j| j.auto) => config.auto_job(id),
        None => None,
    }
}

/// The subject of a job's incidents, beside target ids.
pub fn subject(job: &str) -> String {
    format!("job:{job}")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JobError {
    #[error("no job {0:?} is configured (and [job_defaults] auto_create is off)")]
    UnknownJob(String),
}

impl State {
    /// A heartbeat from `job`.
    pub fn heartbeat(
        &mut self,
        config: &Config,
        job: &str,
        signal: Signal,
        run_id: Option<&str>,
        oncall: OncallUser,
        now_ms: u64,
    ) -> Result<Vec<Event>, JobError> {
        let auto = config.job(job).is_none();
        let spec = config
            .job(job)
            .cloned()
            .or_else(|| config.auto_job(job))
            .ok_or_else(|| JobError::UnknownJob(job.to_string()))?;
        let js = self
            .jobs
            .entry(job.to_string())
            .or_insert_with(|| JobState::new(now_ms));
        js.auto = auto;
        js.last_seen_ms = Some(now_ms);
        let run = run_id.unwrap_or(NO_RUN_ID).to_string();
        match signal {
            Signal::Start => {
                js.running.insert(run, now_ms);
                while js.running.len() > RUNS_KEPT {
                    let oldest = js
                        .running
                        .iter()
                        .min_by_key(|(_, s)| **s)
                        .map(|(r, _)| r.clone());
                    if let Some(r) = oldest {
                        super::retain_map(&mut js.running, |k, _| *k != r);
                    }
                }
                Ok(Vec::new())
            }
            Signal::Ok => {
                js.last_ok_ms = Some(now_ms);
                super::retain_map(&mut js.running, |k, _| *k != run);
                Ok(self.job_transition(&spec, Health::Healthy, None, None, oncall, now_ms))
            }
            Signal::Fail => {
                js.last_fail_ms = Some(now_ms);
                super::retain_map(&mut js.running, |k, _| *k != run);
                let why = format!("the job reported a failure (run {run})");
                Ok(self.job_transition(&spec, Health::Down, Some(why), None, oncall, now_ms))
            }
        }
    }

    /// Opens incidents for jobs that are late at `now`.
    pub fn check_jobs(&mut self, config: &Config, oncall: OncallUser, now_ms: u64) -> Vec<Event> {
        super::retain_map(&mut self.jobs, |id, js| {
            config.job(id).is_some() || (js.auto && config.auto_job(id).is_some())
        });
        let auto: Vec<Job> = self
            .jobs
            .iter()
            .filter(|(_, js)| js.auto)
            .filter_map(|(id, _)| config.auto_job(id))
            .collect();
        let mut events = Vec::new();
        for job in config.jobs.iter().chain(&auto) {
            let js = self
                .jobs
                .entry(job.id.clone())
                .or_insert_with(|| JobState::new(now_ms));
            if js.health == Health::Healthy {
                if let Some(why) = js.lateness(job, now_ms) {
                    events.extend(self.job_transition(
                        job,
                        Health::Down,
                        Some(why),
                        None,
                        oncall,
                        now_ms,
                    ));
                }
            }
        }
        events
    }

    fn job_transition(
        &mut self,
        job: &Job,
        to: Health,
        error: Option<String>,
        status: Option<u16>,
        oncall: OncallUser,
        now_ms: u64,
    ) -> Vec<Event> {
        let subject = subject(&job.id);
        let Some(js) = self.jobs.get_mut(&job.id) else {
            return Vec::new();
        };
        if js.health == to {
            return Vec::new();
        }
        let from = js.health;
        js.health = to;
        js.since_ms = now_ms;
        js.transitions += 1;
        let seq = js.transitions;
        let mut events = vec![Event::Transition {
            target: subject.clone(),
            from,
            to,
        }];
        let existing = js.open_incident.clone();
        let incident_id = match existing {
            Some(id) => id,
            None => {
                let remediation = RemediationStatus::NotApplicable("a job: no remediation".into());
                let id = self.open_incident(&subject, remediation, now_ms);
                events.push(Event::IncidentOpened {
                    target: subject.clone(),
                    incident: id.clone(),
                });
                id
            }
        };
        if let Some(js) = self.jobs.get_mut(&job.id) {
            js.open_incident = (to != Health::Healthy).then(|| incident_id.clone());
        }
        let change = StateChange {
            seq,
            at_ms: now_ms,
            from,
            to,
            status,
            latency_ms: 0,
            error: error.clone(),
            vantages: Vec::new(),
        };
        if let Some(inc) = self.record_transition(&subject, &incident_id, change, false, now_ms) {
            if to == Health::Healthy {
                inc.resolved_at_ms = Some(now_ms);
                inc.resolution = Some("the job reported ok".into());
            }
        }
        if to == Health::Healthy {
            events.push(Event::IncidentResolved {
                target: subject,
                incident: incident_id,
            });
        } else if job.page {
            let reason = error.unwrap_or_else(|| "the job is late".into());
            self.page(&incident_id, &reason, oncall, now_ms);
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::incident::incident_id;

    const MIN: u64 = 60_000;

    fn config() -> Config {
        Config::parse(
            "jobs.toml",
            "[[job]]\nid = \"backup\"\nperiod_s = 3600\ngrace_s = 600\n[[job]]\nid = \"report\"\nperiod_s = 60\ngrace_s = 30\npage = true\n",
        )
        .unwrap()
    }

    /// The events about one job.
    fn about(events: Vec<Event>, job: &str) -> Vec<Event> {
        let subject = subject(job);
        events
            .into_iter()
            .filter(|e| match e {
                Event::Transition { target, .. }
                | Event::IncidentOpened { target, .. }
                | Event::IncidentResolved { target, .. } => *target == subject,
                _ => false,
            })
            .collect()
    }

    /// The first incident about `job`.
    fn incident_of<'a>(s: &'a State, job: &str) -> &'a crate::core::incident::Incident {
        let subject = subject(job);
        s.incidents
            .iter()
            .find(|i| i.target == subject)
            .expect("an incident about the job")
    }

    /// Why the first incident about `job` opened.
    fn why(s: &State, job: &str) -> String {
        incident_of(s, job).history[0]
            .error
            .clone()
            .unwrap_or_default()
    }

    fn titles(s: &State) -> Vec<String> {
        s.outbox
            .entries
            .iter()
            .map(|e| {
                e.message
                    .content
                    .clone()
                    .unwrap_or_else(|| e.message.embeds[0].title.clone())
            })
            .collect()
    }

    #[test]
    fn a_job_is_late_after_period_plus_grace_and_resolves_when_it_reports() {
        let c = config();
        let mut s = State::default();
        let mut c = c;
        c.jobs.retain(|j| j.id == "backup");
        s.heartbeat(&c, "backup", Signal::Ok, None, None, 0)
            .unwrap();
        assert!(
            s.check_jobs(&c, None, 70 * MIN).is_empty(),
            "within period + grace"
        );
        let ev = s.check_jobs(&c, None, 70 * MIN + 1);
        assert!(
            ev.contains(&Event::IncidentOpened {
                target: "job:backup".into(),
                incident: incident_id(1, 70 * MIN + 1)
            }),
            "{ev:?}"
        );
        assert!(
            s.check_jobs(&c, None, 80 * MIN).is_empty(),
            "one incident, one alert"
        );
        assert_eq!(incident_of(&s, "backup").id, incident_id(1, 70 * MIN + 1));
        assert!(why(&s, "backup").contains("no ok for 4200 s"));
        // The late job reports again: resolved.
        let ev = s
            .heartbeat(&c, "backup", Signal::Ok, None, None, 90 * MIN)
            .unwrap();
        assert!(ev.contains(&Event::IncidentResolved {
            target: "job:backup".into(),
            incident: incident_id(1, 70 * MIN + 1)
        }));
        assert_eq!(
            titles(&s),
            ["job:backup: healthy → down", "job:backup: down → healthy"]
        );
    }

    #[test]
    fn a_job_never_heard_from_is_late_from_when_it_was_first_watched() {
        let c = config();
        let mut s = State::default();
        s.check_jobs(&c, None, 1000);
        assert!(about(s.check_jobs(&c, None, 1000 + 70 * MIN), "backup").is_empty());
        let ev = about(s.check_jobs(&c, None, 1001 + 70 * MIN), "backup");
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert!(why(&s, "backup").contains("never reported"));
        let report = incident_of(&s, "report");
        assert_eq!(
            report.opened_at_ms,
            1000 + 70 * MIN,
            "report was late long before, and opened at the first check after"
        );
    }

    #[test]
    fn after_start_the_grace_caps_the_run_time() {
        let c = config();
        let mut s = State::default();
        s.heartbeat(&c, "backup", Signal::Ok, None, None, 0)
            .unwrap();
        s.heartbeat(&c, "backup", Signal::Start, Some("r1"), None, 5 * MIN)
            .unwrap();
        let js = &s.jobs["backup"];
        assert_eq!((js.last_ok_ms, js.last_seen_ms), (Some(0), Some(5 * MIN)));
        assert!(
            about(s.check_jobs(&c, None, 15 * MIN), "backup").is_empty(),
            "10 minutes of grace"
        );
        let ev = about(s.check_jobs(&c, None, 15 * MIN + 1), "backup");
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert!(why(&s, "backup").contains("run r1 started 600 s ago"));
    }

    #[test]
    fn run_ids_pair_overlapping_runs() {
        let c = config();
        let mut s = State::default();
        s.heartbeat(&c, "backup", Signal::Start, Some("a"), None, 0)
            .unwrap();
        s.heartbeat(&c, "backup", Signal::Start, Some("b"), None, 5 * MIN)
            .unwrap();
        // "a" ends; "b" is still within its grace.
        s.heartbeat(&c, "backup", Signal::Ok, Some("a"), None, 8 * MIN)
            .unwrap();
        assert!(about(s.check_jobs(&c, None, 14 * MIN), "backup").is_empty());
        assert_eq!(s.jobs["backup"].running.keys().collect::<Vec<_>>(), ["b"]);
        // "b" overruns its grace.
        let ev = about(s.check_jobs(&c, None, 15 * MIN + 1), "backup");
        assert!(!ev.is_empty());
        assert!(why(&s, "backup").contains("run b"));
    }

    #[test]
    fn fail_opens_an_incident_at_once_and_pages_per_policy() {
        let c = config();
        let mut s = State::default();
        let ev = s
            .heartbeat(&c, "report", Signal::Fail, Some("r9"), Some("42"), 10)
            .unwrap();
        assert_eq!(ev.len(), 2);
        let inc = s.incident(&incident_id(1, 10)).unwrap();
        assert!(inc.paged_at_ms.is_some(), "report pages");
        assert!(titles(&s)[1].starts_with("<@42>"), "{:?}", titles(&s));
        // A second failure neither re-alerts nor re-pages.
        s.heartbeat(&c, "report", Signal::Fail, None, Some("42"), 20)
            .unwrap();
        assert_eq!(s.outbox.entries.len(), 2);
        let ev = s
            .heartbeat(&c, "backup", Signal::Fail, None, Some("42"), 30)
            .unwrap();
        assert_eq!(ev.len(), 2);
        assert!(
            s.incident(&incident_id(2, 30))
                .unwrap()
                .paged_at_ms
                .is_none(),
            "backup does not page"
        );
    }

    #[test]
    fn unknown_jobs_are_refused_and_change_nothing() {
        let c = config();
        let mut s = State::default();
        assert_eq!(
            s.heartbeat(&c, "nope", Signal::Ok, None, None, 0),
            Err(JobError::UnknownJob("nope".into()))
        );
        assert_eq!(s, State::default());
    }

    #[test]
    fn job_incidents_survive_reconcile_and_removed_jobs_do_not() {
        let c = config();
        let mut s = State::default();
        s.heartbeat(&c, "backup", Signal::Fail, None, None, 0)
            .unwrap();
        s.reconcile(&c, 1, true);
        assert!(s.incident(&incident_id(1, 0)).unwrap().is_open());
        let mut fewer = c.clone();
        fewer.jobs.retain(|j| j.id != "backup");
        s.reconcile(&fewer, 2, true);
        assert!(!s.incident(&incident_id(1, 0)).unwrap().is_open());
    }

    fn at(y: i64, m: u32, d: u32, h: i64, min: i64) -> u64 {
        use crate::core::schedule::days_from_civil;
        ((days_from_civil(y, m, d) * 86_400 + h * 3600 + min * 60) * 1000) as u64
    }

    /// A nightly job at 02:30 Berlin time, with 30 minutes of grace, on a
    /// fake clock through the spring-forward night (02:30 does not exist:
    /// cron runs it at the jump, so it is due at 03:00 CEST = 01:00 UTC, and
    /// a missed run alerts at 01:30 UTC, not an hour late) and the fall-back
    /// night (02:30 happens twice: due at the first, 00:30 UTC).
    #[test]
    fn cron_jobs_are_late_by_the_local_wall_clock_across_time_changes() {
        let c = Config::parse(
            "jobs.toml",
            "[[job]]\nid = \"nightly\"\ncron = \"30 2 * * *\"\ntz = \"Europe/Berlin\"\ngrace_s = 1800\n",
        )
        .unwrap();
        let mut s = State::default();
        let ok = |s: &mut State, at_ms| {
            s.heartbeat(&c, "nightly", Signal::Ok, None, None, at_ms)
                .unwrap()
        };
        // Winter: 02:30 CET is 01:30 UTC; it reports at 01:40 UTC.
        ok(&mut s, at(2026, 3, 27, 1, 40));
        let due = at(2026, 3, 28, 1, 30);
        assert_eq!(s.jobs["nightly"].due_ms(&c.jobs[0]), Some(due));
        assert!(
            s.check_jobs(&c, None, due + 30 * MIN).is_empty(),
            "within grace"
        );
        ok(&mut s, due + 10 * MIN);
        // The spring-forward night: due at the jump, 01:00 UTC (03:00 CEST).
        let spring = at(2026, 3, 29, 1, 0);
        assert_eq!(s.jobs["nightly"].due_ms(&c.jobs[0]), Some(spring));
        assert!(s.check_jobs(&c, None, spring + 30 * MIN).is_empty());
        let ev = s.check_jobs(&c, None, spring + 30 * MIN + 1);
        assert_eq!(about(ev, "nightly").len(), 2, "transition and incident");
        let why = why(&s, "nightly");
        assert!(
            why.contains("2026-03-29T01:00:00Z") && why.contains("Europe/Berlin"),
            "{why}"
        );
        // Summer: it reports; the next run is 02:30 CEST = 00:30 UTC.
        ok(&mut s, spring + 40 * MIN);
        assert_eq!(s.jobs["nightly"].health, Health::Healthy);
        assert_eq!(
            s.jobs["nightly"].due_ms(&c.jobs[0]),
            Some(at(2026, 3, 30, 0, 30))
        );
        // The fall-back night: due at the first 02:30, 00:30 UTC.
        ok(&mut s, at(2026, 10, 24, 0, 40));
        let autumn = at(2026, 10, 25, 0, 30);
        assert_eq!(s.jobs["nightly"].due_ms(&c.jobs[0]), Some(autumn));
        assert!(!about(s.check_jobs(&c, None, autumn + 31 * MIN), "nightly").is_empty());
        // Winter again: 02:30 CET is 01:30 UTC.
        ok(&mut s, autumn + 35 * MIN);
        assert_eq!(
            s.jobs["nightly"].due_ms(&c.jobs[0]),
            Some(at(2026, 10, 26, 1, 30))
        );
    }

    #[test]
    fn unknown_jobs_are_created_only_when_configured_so() {
        let mut c = config();
        c.job_defaults.auto_create = true;
        c.job_defaults.period_s = 600.0;
        c.job_defaults.grace_s = 60.0;
        let mut s = State::default();
        s.heartbeat(&c, "adhoc", Signal::Ok, None, None, 0).unwrap();
        assert!(s.jobs["adhoc"].auto);
        assert!(
            s.heartbeat(&c, "Bad Name", Signal::Ok, None, None, 0)
                .is_err(),
            "ids follow the configuration's rule"
        );
        assert!(s.check_jobs(&c, None, 660 * 1000).is_empty());
        let ev = s.check_jobs(&c, None, 660 * 1000 + 1);
        assert_eq!(about(ev, "adhoc").len(), 2, "late like a configured job");
        s.reconcile(&c, 700 * 1000, true);
        assert!(s
            .incidents
            .iter()
            .any(|i| i.target == "job:adhoc" && i.is_open()));
        // Auto-creation switched off: the job and its incident go.
        c.job_defaults.auto_create = false;
        s.check_jobs(&c, None, 800 * 1000);
        s.reconcile(&c, 800 * 1000, true);
        assert!(!s.jobs.contains_key("adhoc"));
        assert!(s
            .incidents
            .iter()
            .all(|i| i.target != "job:adhoc" || !i.is_open()));
        assert_eq!(
            s.heartbeat(&c, "adhoc", Signal::Ok, None, None, 900 * 1000),
            Err(JobError::UnknownJob("adhoc".into()))
        );
    }
}

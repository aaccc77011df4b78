//! How targets have done over time, kept compact: per target, hourly
//! rollups over 30 days (time up, time watched, a log-bucket latency
//! histogram) and 5-minute slices over 6 hours for SLO burn rates; per host,
//! the metrics read from its ops-agent. Pure: observations and `now` in,
//! figures out.
//!
//! Uptime is time-weighted: what an observation saw holds until the next
//! observation (at most two intervals, so a gap while Vigil was stopped
//! counts as nothing). A blip that the confirm probe clears is down only
//! until that probe, not for a whole interval. Degraded counts as up.
//! Latency percentiles are over answers that were not down (a timeout is
//! not a latency).
//!
//! Percentile error bound: bucket `i` holds latencies in `[G^i, G^(i+1))` ms
//! with `G = 1.1`, and a percentile is reported as its bucket's geometric
//! middle rounded to a whole ms, so it is within `√G − 1 ≈ 4.9 %` plus
//! 0.5 ms of the exact nearest-rank percentile of the same samples.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vigil_wire::HostMetrics;

use super::probe::{Health, Observation};

pub const HOUR_MS: u64 = 3_600_000;
pub const DAY_MS: u64 = 24 * HOUR_MS;
pub(super) const SLICE_MS: u64 = 5 * 60_000;
/// Hourly rollups kept: 30 days.
pub(super) const HOURS_KEPT: u64 = 30 * 24;
/// 5-minute slices kept: 6 hours and the current one.
pub(super) const SLICES_KEPT: u64 = 6 * 12 + 1;
/// Daily rollups kept: 90 days (the status page's bar).
pub const DAYS_KEPT: u64 = 90;
/// Host metric samples kept per host.
const HOST_SAMPLES_KEPT: usize = 24 * 12;
/// Histogram bucket growth factor.
const GROWTH: f64 = 1.1;
/// The last bucket (1.1^140 ms is over 10 minutes).
const MAX_BUCKET: u8 = 140;

/// The percentile error bound stated above, as a fraction.
pub fn percentile_error_bound() -> f64 {
    GROWTH.sqrt() - 1.0
}

/// Latency counts per log bucket, sparse: `(bucket, count)` sorted by bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram(pub Vec<(u8, u32)>);

impl Histogram {
    fn bucket(latency_ms: u64) -> u8 {
        if latency_ms <= 1 {
            return 0;
        }
        let i = ((latency_ms as f64).ln() / GROWTH.ln()).floor();
        i.min(f64::from(MAX_BUCKET)) as u8
    }

    fn middle(bucket: u8) -> u64 {
        GROWTH.powf(f64::from(bucket) + 0.5).round() as u64
    }

    pub fn add(&mut self, latency_ms: u64) {
        let b = Self::bucket(latency_ms);
        match self.0.binary_search_by_key(&b, |(k, _)| *k) {
            Ok(i) => self.0[i].1 += 1,
            Err(i) => self.0.insert(i, (b, 1)),
        }
    }

    fn merge(&mut self, other: &Histogram) {
        for (b, n) in &other.0 {
            match self.0.binary_search_by_key(b, |(k, _)| *k) {
                Ok(i) => self.0[i].1 += n,
                Err(i) => self.0.insert(i, (*b, *n)),
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn count(&self) -> u64 {
        self.0.iter().map(|(_, n)| u64::from(*n)).sum()
    }

    /// The nearest-rank `q` quantile (0 < q ≤ 1), within the error bound.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        self.0.iter().find_map(|(b, c)| {
            seen += u64::from(*c);
            (seen >= rank).then(|| Self::middle(*b))
        })
    }
}

/// One hour of a target (short keys: 720 of these per target).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    /// Hours since the epoch.
    #[serde(rename = "h")]
    pub hour: u64,
    #[serde(rename = "up")]
    pub up_ms: u64,
    #[serde(rename = "t")]
    pub total_ms: u64,
    /// Kept for the last 24 hours only: that is what percentiles cover.
    #[serde(default, rename = "l", skip_serializing_if = "Histogram::is_empty")]
    pub latency: Histogram,
}

/// One UTC day of a target, for the status page (short keys: 90 of these
/// per target, about 3.5 KB).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Day {
    /// Days since the epoch.
    pub d: u64,
    #[serde(rename = "up")]
    pub up_ms: u64,
    #[serde(rename = "t")]
    pub total_ms: u64,
}

impl Day {
    /// Percent of the watched time up; `None` when nothing was watched.
    pub fn uptime(&self) -> Option<f64> {
        (self.total_ms > 0).then(|| self.up_ms as f64 * 100.0 / self.total_ms as f64)
    }
}

/// Five minutes of a target, for burn rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slice {
    /// Five-minute slices since the epoch.
    pub n: u64,
    #[serde(rename = "up")]
    pub up_ms: u64,
    #[serde(rename = "t")]
    pub total_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetHistory {
    /// Oldest first.
    #[serde(default)]
    pub hours: Vec<Rollup>,
    #[serde(default)]
    pub slices: Vec<Slice>,
    /// Oldest first, at most `DAYS_KEPT`.
    #[serde(default)]
    pub days: Vec<Day>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_at_ms: Option<u64>,
    /// Whether the last observation was up: it holds until the next one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_up: Option<bool>,
}

/// One reading of a host's metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSample {
    pub at_ms: u64,
    pub cpu_percent: f64,
    pub mem_used_percent: f64,
    pub disk_used_percent: f64,
    pub load_1: f64,
}

impl HostSample {
    pub fn new(m: &HostMetrics, at_ms: u64) -> Self {
        let mem = if m.mem_total_bytes == 0 {
            0.0
        } else {
            m.mem_used_bytes as f64 * 100.0 / m.mem_total_bytes as f64
        };
        HostSample {
            at_ms,
            cpu_percent: round2(m.cpu_percent),
            mem_used_percent: round2(mem),
            disk_used_percent: round2(m.disk_used_percent),
            load_1: round2(m.load_1),
        }
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Adds time to day `d`, dropping days older than `DAYS_KEPT`; a late
/// observation for a day already dropped or never seen is left out.
pub(super) fn record_day(days: &mut Vec<Day>, d: u64, up_ms: u64, total_ms: u64) {
    match days.last_mut() {
        Some(last) if last.d == d => {
            last.up_ms += up_ms;
            last.total_ms += total_ms;
        }
        Some(last) if last.d > d => {
            if let Some(day) = days.iter_mut().rev().find(|x| x.d == d) {
                day.up_ms += up_ms;
                day.total_ms += total_ms;
            }
        }
        _ => days.push(Day { d, up_ms, total_ms }),
    }
    while days.first().is_some_and(|x| x.d + DAYS_KEPT <= d) {
        days.remove(0);
    }
}

/// Uptime and latency figures of one target, as the API shows them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Percent of watched time up; `None` with no data in the window.
    pub uptime_24h: Option<f64>,
    pub uptime_7d: Option<f64>,
    pub uptime_30d: Option<f64>,
    pub p50_ms_24h: Option<u64>,
    pub p95_ms_24h: Option<u64>,
    pub p99_ms_24h: Option<u64>,
    pub samples_24h: u64,
}

/// Where a target stands against its availability objective.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloStatus {
    /// The objective, in percent.
    pub objective: f64,
    pub days: u32,
    /// Availability over the objective's window, in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability: Option<f64>,
    /// The error budget left, in percent of the budget (negative when
    /// overspent), relative to the time watched within the window: what
    /// would be left if the whole window went as the watched part did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_remaining: Option<f64>,
    /// The error budget of the whole window left, in percent: time not
    /// watched counts as good, as in the burn rates (a fresh start with one
    /// bad second has spent one second of the window's budget).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_remaining_window: Option<f64>,
    /// Budget consumption rate over the last hour and six hours, in
    /// multiples of the sustainable rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burn_1h: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burn_6h: Option<f64>,
}

/// The whole history document: kept apart from the state, because it
/// changes with every observation while the state does not.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    #[serde(default)]
    pub targets: BTreeMap<String, TargetHistory>,
    #[serde(default)]
    pub hosts: BTreeMap<String, Vec<HostSample>>,
    /// When each host's metrics were last asked for, answered or not.
    #[serde(default)]
    pub hosts_polled_at: BTreeMap<String, u64>,
    /// When the oldest change not yet stored was made.
    #[serde(skip)]
    pub dirty_since_ms: Option<u64>,
    /// What changed since the last store, for a store that keeps the
    /// history as rows by time (`history_rows`).
    #[serde(skip)]
    pub dirty: Dirty,
    /// Flushes are `flush_ms` times this apart (at least 1): the rows one
    /// store of an hour takes in a store that keeps rows by time
    /// (`History::stored_rows`), so a day's rows stay about the same
    /// whatever the number of targets.
    #[serde(skip)]
    pub flush_factor: u64,
}

/// The hours and days with changes not yet stored (a few: plain lists),
/// and whether the hosts' part has some.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dirty {
    pub hours: Vec<u64>,
    pub days: Vec<u64>,
    pub hosts: bool,
}

impl Dirty {
    pub fn mark(list: &mut Vec<u64>, n: u64) {
        if !list.contains(&n) {
            list.push(n);
        }
    }
}

impl History {
    /// Adds one observation; `interval_ms` caps the time it stands for.
    pub fn record(&mut self, obs: &Observation, interval_ms: u64) {
        let th = self.targets.entry(obs.target.clone()).or_default();
        let up = obs.health != Health::Down;
        // The time since the last observation is credited to what that one
        // saw; a late observation (a round's re-probe racing the cycle)
        // credits nothing and changes nothing but its latency.
        let (weight, was_up) = match (th.last_at_ms, th.last_up) {
            (Some(last), Some(was_up)) if obs.at_ms >= last => {
                ((obs.at_ms - last).min(2 * interval_ms), was_up)
            }
            _ => (0, up),
        };
        if th.last_at_ms.is_none_or(|last| obs.at_ms >= last) {
            th.last_at_ms = Some(obs.at_ms);
            th.last_up = Some(up);
        }
        let up_ms = if was_up { weight } else { 0 };

        let hour = obs.at_ms / HOUR_MS;
        let rollup = match th.hours.iter().rposition(|r| r.hour <= hour) {
            Some(i) if th.hours[i].hour == hour => &mut th.hours[i],
            Some(i) => {
                th.hours.insert(i + 1, Rollup::new(hour));
                // A new hour: histograms older than a day are not needed.
                for r in th.hours.iter_mut().filter(|r| r.hour + 24 <= hour) {
                    r.latency = Histogram::default();
                }
                &mut th.hours[i + 1]
            }
            None => {
                th.hours.insert(0, Rollup::new(hour));
                &mut th.hours[0]
            }
        };
        rollup.up_ms += up_ms;
        rollup.total_ms += weight;
        Dirty::mark(&mut self.dirty.hours, hour);
        Dirty::mark(&mut self.dirty.days, obs.at_ms / DAY_MS);
        if up {
            rollup.latency.add(obs.latency_ms);
        }
        let newest_hour = th.hours.last().map_or(hour, |r| r.hour);
        while th
            .hours
            .first()
            .is_some_and(|r| r.hour + HOURS_KEPT <= newest_hour)
        {
            th.hours.remove(0);
        }

        let n = obs.at_ms / SLICE_MS;
        let newest_n = th.slices.last().map_or(0, |s| s.n);
        if let Some(s) = th.slices.iter_mut().rev().find(|s| s.n == n) {
            s.up_ms += up_ms;
            s.total_ms += weight;
        } else if th.slices.is_empty() || newest_n < n {
            th.slices.push(Slice {
                n,
                up_ms,
                total_ms: weight,
            });
        }
        // Otherwise it is late (before the newest slice, with no slice of
        // its own): rare, and left out of burn rates.
        record_day(&mut th.days, obs.at_ms / DAY_MS, up_ms, weight);
        let newest = th.slices.last().map_or(n, |s| s.n);
        while th
            .slices
            .first()
            .is_some_and(|s| s.n + SLICES_KEPT <= newest)
        {
            th.slices.remove(0);
        }
        self.dirty_since_ms.get_or_insert(obs.at_ms);
    }

    /// A target's daily rollups, oldest first.
    pub fn days(&self, target: &str) -> impl Iterator<Item = &Day> {
        self.targets
            .get(target)
            .into_iter()
            .flat_map(|th| th.days.iter())
    }

    /// Drops the history of targets no longer configured.
    pub fn retain_targets(&mut self, keep: impl Fn(&str) -> bool) {
        super::retain_map(&mut self.targets, |id, _| keep(id));
    }

    /// Whether the host's metrics should be read again: `every_ms` after
    /// the last try, so an unreachable agent is not asked every cycle.
    pub fn host_poll_due(&self, host: &str, now_ms: u64, every_ms: u64) -> bool {
        self.hosts_polled_at
            .get(host)
            .is_none_or(|at| now_ms >= at + every_ms)
    }

    /// The hosts whose metrics are due at `now`, each marked as asked.
    pub fn take_host_polls<'a>(
        &mut self,
        hosts: impl IntoIterator<Item = &'a str>,
        now_ms: u64,
        every_ms: u64,
    ) -> Vec<String> {
        let due: Vec<String> = hosts
            .into_iter()
            .filter(|h| self.host_poll_due(h, now_ms, every_ms))
            .map(str::to_string)
            .collect();
        for h in &due {
            self.note_host_poll(h, now_ms);
        }
        due
    }

    pub fn note_host_poll(&mut self, host: &str, now_ms: u64) {
        self.hosts_polled_at.insert(host.to_string(), now_ms);
        self.dirty_since_ms.get_or_insert(now_ms);
        self.dirty.hosts = true;
    }

    pub fn record_host(&mut self, host: &str, metrics: &HostMetrics, now_ms: u64) {
        self.note_host_poll(host, now_ms);
        let samples = self.hosts.entry(host.to_string()).or_default();
        samples.push(HostSample::new(metrics, now_ms));
        while samples.len() > HOST_SAMPLES_KEPT {
            samples.remove(0);
        }
        self.dirty_since_ms.get_or_insert(now_ms);
    }

    /// Whether the shell should store the history now: changes older than
    /// `flush_ms`, or made in an hour that has ended (its rollup is whole).
    pub fn flush_due(&self, now_ms: u64, flush_ms: u64) -> bool {
        let every = flush_ms * self.flush_factor.max(1);
        self.dirty_since_ms.is_some_and(|d| now_ms >= d + every) || self.hour_ended(now_ms)
    }

    /// Whether changes were made in an hour that has ended: the flush at
    /// `now_ms` is the one that stores that hour whole.
    pub fn hour_ended(&self, now_ms: u64) -> bool {
        self.dirty_since_ms
            .is_some_and(|d| now_ms / HOUR_MS != d / HOUR_MS)
    }

    /// Everything changed before `now_ms` is stored (but for the first
    /// minutes of an hour that just began: `history_rows`); a day not yet ended
    /// stays marked, as its row is written once it ends.
    pub fn mark_stored(&mut self, now_ms: u64) {
        let ended = self.hour_ended(now_ms);
        self.dirty.hours.retain(|h| ended && *h >= now_ms / HOUR_MS);
        self.dirty_since_ms = None;
        self.dirty.days.retain(|d| *d >= now_ms / DAY_MS);
        self.dirty.hosts = false;
    }

    /// Up time and watched time over the last `window_ms` (whole hours, the
    /// current one included).
    fn up_total(&self, target: &str, now_ms: u64, window_ms: u64) -> (u64, u64) {
        self.hours_within(target, now_ms, window_ms)
            .fold((0, 0), |(u, t), r| (u + r.up_ms, t + r.total_ms))
    }

    /// A target's rollups of the last `window_ms`, in whole hours, the
    /// current one included.
    fn hours_within<'a>(
        &'a self,
        target: &str,
        now_ms: u64,
        window_ms: u64,
    ) -> impl Iterator<Item = &'a Rollup> {
        let now_hour = now_ms / HOUR_MS;
        let first_hour = (now_hour + 1).saturating_sub(window_ms / HOUR_MS);
        self.targets
            .get(target)
            .into_iter()
            .flat_map(|th| th.hours.iter())
            .filter(move |r| r.hour >= first_hour && r.hour <= now_hour)
    }

    /// Percent of watched time up over the last `window_ms`.
    pub fn uptime(&self, target: &str, now_ms: u64, window_ms: u64) -> Option<f64> {
        let (up, total) = self.up_total(target, now_ms, window_ms);
        (total > 0).then(|| up as f64 * 100.0 / total as f64)
    }

    /// The latency histogram of the last 24 hours.
    pub fn latency_24h(&self, target: &str, now_ms: u64) -> Histogram {
        let mut h = Histogram::default();
        for r in self.hours_within(target, now_ms, DAY_MS) {
            h.merge(&r.latency);
        }
        h
    }

    pub fn stats(&self, target: &str, now_ms: u64) -> Stats {
        let lat = self.latency_24h(target, now_ms);
        Stats {
            uptime_24h: self.uptime(target, now_ms, DAY_MS).map(round3),
            uptime_7d: self.uptime(target, now_ms, 7 * DAY_MS).map(round3),
            uptime_30d: self.uptime(target, now_ms, 30 * DAY_MS).map(round3),
            p50_ms_24h: lat.quantile(0.50),
            p95_ms_24h: lat.quantile(0.95),
            p99_ms_24h: lat.quantile(0.99),
            samples_24h: lat.count(),
        }
    }

    /// The share of the last `window_ms` (5-minute slices, the current one
    /// included) that was seen down. Time not watched counts as good, so a
    /// freshly started Vigil does not call one failure a burn of the whole
    /// budget; over a fully watched window it is the plain error ratio.
    pub fn error_ratio(&self, target: &str, now_ms: u64, window_ms: u64) -> Option<f64> {
        let first = (now_ms / SLICE_MS + 1).saturating_sub(window_ms / SLICE_MS);
        let (up, total) = self.targets.get(target).map_or((0, 0), |th| {
            th.slices
                .iter()
                .filter(|s| s.n >= first && s.n <= now_ms / SLICE_MS)
                .fold((0, 0), |(u, t), s| (u + s.up_ms, t + s.total_ms))
        });
        (total > 0).then(|| (total - up) as f64 / total.max(window_ms) as f64)
    }

    /// How `target` stands against an objective of `objective` percent over
    /// `days` days.
    pub fn slo(&self, target: &str, objective: f64, days: u32, now_ms: u64) -> SloStatus {
        let budget = 1.0 - objective / 100.0;
        let window_ms = u64::from(days) * DAY_MS;
        let (up, total) = self.up_total(target, now_ms, window_ms);
        let bad = (total > 0).then(|| (total - up) as f64 / total as f64);
        let bad_of_window = (total > 0).then(|| (total - up) as f64 / total.max(window_ms) as f64);
        let burn = |w| {
            self.error_ratio(target, now_ms, w)
                .map(|e| round3(e / budget))
        };
        SloStatus {
            objective,
            days,
            availability: bad.map(|b| round3((1.0 - b) * 100.0)),
            budget_remaining: bad.map(|b| round3((1.0 - b / budget) * 100.0)),
            budget_remaining_window: bad_of_window.map(|b| round3((1.0 - b / budget) * 100.0)),
            burn_1h: burn(HOUR_MS),
            burn_6h: burn(6 * HOUR_MS),
        }
    }

    pub fn host_samples(&self, host: &str) -> Option<&[HostSample]> {
        self.hosts.get(host).map(Vec::as_slice)
    }
}

impl Rollup {
    fn new(hour: u64) -> Self {
        Rollup {
            hour,
            up_ms: 0,
            total_ms: 0,
            latency: Histogram::default(),
        }
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn obs(target: &str, at_ms: u64, health: Health, latency_ms: u64) -> Observation {
        Observation {
            target: target.into(),
            at_ms,
            health,
            status: Some(200),
            latency_ms,
            error: None,
            cert: None,
        }
    }

    #[test]
    fn daily_rollups_keep_ninety_days_each_with_its_uptime() {
        let mut h = History::default();
        let every = 10 * MIN;
        // 100 days, one observation every 10 minutes; day 95 is down from
        // 06:00 to 12:00.
        for i in 0..(100 * DAY_MS / every) {
            let at = i * every;
            let (day, hour) = (at / DAY_MS, at % DAY_MS / HOUR_MS);
            let health = if day == 95 && (6..12).contains(&hour) {
                Health::Down
            } else {
                Health::Healthy
            };
            h.record(&obs("api", at, health, 20), every);
        }
        let days: Vec<&Day> = h.days("api").collect();
        assert_eq!(days.len(), DAYS_KEPT as usize);
        assert_eq!(days[0].d, 10);
        assert_eq!(days.last().unwrap().d, 99);
        let outage = days.iter().find(|d| d.d == 95).unwrap();
        assert_eq!(outage.uptime(), Some(75.0));
        assert_eq!(
            days.iter().find(|d| d.d == 50).unwrap().uptime(),
            Some(100.0)
        );
        // The size BENCHMARKS.md states: under 40 bytes a day stored.
        let stored = serde_json::to_string(&h.targets["api"].days).unwrap();
        assert!(stored.len() < 40 * DAYS_KEPT as usize, "{}", stored.len());
        // A late observation for a dropped day changes nothing.
        h.record(&obs("api", 2 * DAY_MS, Health::Down, 20), every);
        assert_eq!(h.days("api").count(), DAYS_KEPT as usize);
    }

    /// A deterministic spread of latencies, from a few ms to seconds.
    fn latencies(n: usize) -> Vec<u64> {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Log-uniform between 2 ms and ~8 s, with a slow tail.
                let u = (x % 10_000) as f64 / 10_000.0;
                (2.0 * 4000f64.powf(u)).round() as u64
            })
            .collect()
    }

    fn exact_nearest_rank(sorted: &[u64], q: f64) -> u64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    #[test]
    fn percentiles_are_within_the_stated_bound_of_the_exact_ones() {
        let bound = percentile_error_bound();
        assert!((bound - 0.0488).abs() < 0.001, "{bound}");
        for n in [1, 7, 100, 1440, 20_000] {
            let mut h = History::default();
            let mut lats = latencies(n);
            for (i, l) in lats.iter().enumerate() {
                h.record(&obs("web", i as u64 * 1000, Health::Healthy, *l), MIN);
            }
            lats.sort_unstable();
            let now = (n as u64) * 1000;
            let hist = h.latency_24h("web", now);
            assert_eq!(hist.count(), n as u64);
            for q in [0.5, 0.95, 0.99] {
                let exact = exact_nearest_rank(&lats, q) as f64;
                let got = hist.quantile(q).unwrap() as f64;
                let err = (got - exact).abs();
                assert!(
                    err <= exact * bound + 0.5,
                    "n={n} q={q}: exact {exact}, got {got}, error {err}"
                );
            }
        }
        // An estimate outside the bucket would fail: a skewed answer is caught.
        let mut h = Histogram::default();
        h.add(1000);
        assert_eq!(
            h.quantile(0.5),
            Some(Histogram::middle(Histogram::bucket(1000)))
        );
        assert!((h.quantile(0.5).unwrap() as f64 - 1000.0).abs() <= 1000.0 * bound + 0.5);
    }

    #[test]
    fn uptime_is_time_weighted_over_whole_hour_windows() {
        let mut h = History::default();
        let start = 1000 * HOUR_MS;
        // Two days of one probe a minute: down for 30 minutes on day one.
        for m in 0..(2 * 24 * 60) {
            let at = start + m * MIN;
            let health = if (600..630).contains(&m) {
                Health::Down
            } else {
                Health::Healthy
            };
            h.record(&obs("web", at, health, 40), MIN);
        }
        let now = start + 2 * DAY_MS - MIN;
        // The outage is more than 24 hours back.
        assert_eq!(h.uptime("web", now, DAY_MS), Some(100.0));
        // Each minute is credited when the next probe comes: 2,879 minutes
        // watched, 30 of them down.
        let two_days = h.uptime("web", now, 7 * DAY_MS).unwrap();
        let expected = 100.0 * (1.0 - 30.0 / (2.0 * 24.0 * 60.0 - 1.0));
        assert!(
            (two_days - expected).abs() < 1e-9,
            "{two_days} vs {expected}"
        );
        // Degraded is up; a gap while nothing watched counts as two
        // intervals at most; what a probe saw holds until the next one.
        let mut g = History::default();
        g.record(&obs("api", start, Health::Degraded, 5000), MIN);
        assert_eq!(g.uptime("api", start, DAY_MS), None, "nothing credited yet");
        g.record(&obs("api", start + 10 * HOUR_MS, Health::Down, 0), MIN);
        g.record(
            &obs("api", start + 10 * HOUR_MS + 15_000, Health::Healthy, 9),
            MIN,
        );
        let (up, total) = g.up_total("api", start + 10 * HOUR_MS, DAY_MS);
        assert_eq!((up, total), (2 * MIN, 2 * MIN + 15_000));
        assert_eq!(g.uptime("nope", start, DAY_MS), None);
        // A re-probe older than the last observation credits nothing.
        g.record(&obs("api", start + 10 * HOUR_MS, Health::Down, 7), MIN);
        assert_eq!(g.up_total("api", start + 10 * HOUR_MS, DAY_MS), (up, total));
    }

    #[test]
    fn rollups_stay_within_thirty_days_and_slices_within_six_hours() {
        let mut h = History::default();
        for hour in 0..(40 * 24) {
            h.record(&obs("web", hour * HOUR_MS, Health::Healthy, 10), MIN);
        }
        let th = &h.targets["web"];
        assert_eq!(th.hours.len() as u64, HOURS_KEPT);
        assert_eq!(th.hours.first().unwrap().hour, 40 * 24 - HOURS_KEPT);
        assert!(th.slices.len() as u64 <= SLICES_KEPT);
        // Latency histograms only for the last 24 hours.
        let with_latency = th.hours.iter().filter(|r| !r.latency.is_empty()).count();
        assert_eq!(with_latency, 24);
        // An hourly rollup is a few dozen bytes, whatever the probe rate.
        let json = serde_json::to_string(&h).unwrap();
        assert!(json.len() < 50 * 720, "{}", json.len());
    }

    /// The SRE workbook's worked example: a 99.9 % objective; an error rate
    /// of 1.44 % sustained for an hour burns the budget at 14.4×, 2 % of a
    /// 30-day budget in that hour.
    #[test]
    fn burn_rates_match_worked_examples() {
        let mut h = History::default();
        let start = 500 * HOUR_MS;
        // 1 s probes for 6 hours; in the last hour, 1.44 % of the time is
        // down (one second in 69: 52 of 3600 → 1.444 %); before, none.
        let secs = 6 * 3600;
        for s in 0..secs {
            let at = start + s * 1000;
            let in_last_hour = s >= secs - 3600;
            let down = in_last_hour && s % 3600 % 69 == 34;
            let health = if down { Health::Down } else { Health::Healthy };
            h.record(&obs("web", at, health, 20), 1000);
        }
        // now is at the end of a 5-minute slice, so windows are exact.
        let now = start + secs * 1000 - 1;
        let status = h.slo("web", 99.9, 30, now);
        let burn_1h = status.burn_1h.unwrap();
        assert!((burn_1h - 52.0 / 3600.0 / 0.001).abs() < 0.01, "{burn_1h}");
        assert!(burn_1h > 14.4);
        // Over six hours the same errors burn at a sixth of that: 2.4×.
        let burn_6h = status.burn_6h.unwrap();
        assert!((burn_6h - burn_1h / 6.0).abs() < 0.01, "{burn_6h}");
        // 52 s down of a 30-day budget of 43.2 min (2592 s) watched for
        // 6 h only (less the first probe's second, credited by none): the
        // budget is relative to the time watched.
        let bad = 52.0 / (6.0 * 3600.0 - 1.0);
        let remaining = status.budget_remaining.unwrap();
        assert!(
            (remaining - (1.0 - bad / 0.001) * 100.0).abs() < 0.01,
            "{remaining}"
        );
        // Counting the unwatched rest of the 30 days as good: 52 s of the
        // 2592 s budget spent.
        let remaining = status.budget_remaining_window.unwrap();
        assert!(
            (remaining - (1.0 - 52.0 / 2592.0) * 100.0).abs() < 0.01,
            "{remaining}"
        );
        assert!((status.availability.unwrap() - (1.0 - bad) * 100.0).abs() < 0.001);
    }

    /// One second down in the first ten after a fresh start: a 30-day
    /// 99.9 % objective has spent 1 s of its 2592 s budget, not 99 times it.
    #[test]
    fn a_fresh_start_does_not_call_one_bad_second_an_overspent_budget() {
        let mut h = History::default();
        let start = 500 * HOUR_MS;
        for s in 0..10 {
            let health = if s == 3 {
                Health::Down
            } else {
                Health::Healthy
            };
            h.record(&obs("web", start + s * 1000, health, 20), 1000);
        }
        let status = h.slo("web", 99.9, 30, start + 10_000);
        let remaining = status.budget_remaining_window.unwrap();
        assert!(
            (remaining - (1.0 - 1.0 / 2592.0) * 100.0).abs() < 0.01,
            "{remaining}"
        );
        let watched = status.budget_remaining.unwrap();
        assert!(watched < -9000.0, "relative to 9 s watched: {watched}");
    }

    #[test]
    fn flush_policy_and_host_samples() {
        let mut h = History::default();
        assert!(!h.flush_due(0, 600_000));
        let t0 = 10 * HOUR_MS + 1000;
        h.record(&obs("web", t0, Health::Healthy, 10), MIN);
        assert!(!h.flush_due(t0 + 60_000, 600_000));
        assert!(h.flush_due(t0 + 600_000, 600_000));
        // The hour ended: flush so the hour's rollup is stored whole.
        assert!(h.flush_due(11 * HOUR_MS, 600_000_000));
        h.mark_stored(11 * HOUR_MS);
        assert!(!h.flush_due(t0 + 600_000, 600_000));

        let m = HostMetrics {
            cpu_percent: 12.345,
            mem_used_bytes: 1,
            mem_total_bytes: 4,
            disk_used_percent: 50.0,
            ..HostMetrics::default()
        };
        assert!(h.host_poll_due("vps", t0, 300_000));
        h.note_host_poll("vps", t0);
        assert!(
            !h.host_poll_due("vps", t0 + 1000, 300_000),
            "tried, not answered"
        );
        assert!(h.host_samples("vps").is_none());
        h.record_host("vps", &m, t0);
        assert!(!h.host_poll_due("vps", t0 + 1000, 300_000));
        assert!(h.host_poll_due("vps", t0 + 300_000, 300_000));
        let s = &h.host_samples("vps").unwrap()[0];
        assert_eq!((s.cpu_percent, s.mem_used_percent), (12.35, 25.0));
        for i in 0..(HOST_SAMPLES_KEPT + 5) {
            h.record_host("vps", &m, t0 + i as u64);
        }
        assert_eq!(h.host_samples("vps").unwrap().len(), HOST_SAMPLES_KEPT);
    }
}

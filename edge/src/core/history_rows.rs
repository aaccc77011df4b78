//! The history as rows by time, the shape the Durable Object stores it in:
//! each row holds every target, so a flush writes the same rows whatever
//! the number of targets (one row up to several hundred targets; rows are
//! chunked so none exceeds `ROW_BYTES`). The one definition of the rows:
//!
//! - an hour row per hour, in slot `hour % HOUR_SLOTS` (the last 25 hours,
//!   slots overwritten as hours come round): each target's time watched and
//!   down, its 5-minute slices and its latency histogram. The open hour's
//!   row is rewritten at each flush; its last write is the closed hour.
//! - per ended day, a day row in slot `day % DAYS_KEPT` (90 days): each
//!   target's time watched and down that day; and a day-hours row in slot
//!   `day % 30` (the hourly rollups' 30 days): the same per hour.
//! - the hosts' row: their metric samples and poll times.
//!
//! `History::rows_due` says what a flush writes (what changed since the last
//! one); `History::from_rows` rebuilds the history a fresh isolate reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::history::{
    record_day, Dirty, Histogram, History, HostSample, Rollup, Slice, TargetHistory, DAYS_KEPT,
    DAY_MS, HOURS_KEPT, HOUR_MS, SLICES_KEPT, SLICE_MS,
};

/// The most a row's value may hold, in bytes (the 128 KB goal; the
/// platform takes 2 MB).
pub const ROW_BYTES: usize = 128_000;
/// Hour rows kept: the 24 hours latency percentiles cover, and the open one.
pub const HOUR_SLOTS: u64 = 25;
const SLICES_PER_HOUR: u64 = HOUR_MS / SLICE_MS;
const HOURS_PER_DAY: u64 = DAY_MS / HOUR_MS;

/// One target's hour: time watched, time down, the hour's 5-minute slices
/// as (watched, down) pairs from its first, and the latency histogram; or
/// its day (in a day row): time watched and down, the day's hours as
/// (watched, down) pairs from its first, no histogram. A tuple, so a
/// thousand of them stay within one row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HourPart(pub u64, pub u64, pub Vec<u64>, pub Histogram);

/// A row: the hour or day `n` since the epoch, when the flush that wrote it
/// ran (of a slot's rows only the newest write counts), and each target's
/// part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub n: u64,
    pub at: u64,
    pub t: Vec<(String, HourPart)>,
}

/// The hosts' row.
#[derive(Serialize, Deserialize)]
pub struct HostsRow<H, P> {
    pub hosts: H,
    pub hosts_polled_at: P,
}

pub type HostsRowOwned = HostsRow<BTreeMap<String, Vec<HostSample>>, BTreeMap<String, u64>>;

/// Which row, in the order a history is rebuilt from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Day,
    DayHours,
    Hour,
    Hosts,
}

impl Kind {
    /// The slots its rows take in turn.
    fn slots(self) -> u64 {
        match self {
            Kind::Day => DAYS_KEPT,
            Kind::DayHours => HOURS_KEPT / HOURS_PER_DAY,
            _ => HOUR_SLOTS,
        }
    }
}

/// A row to store: its kind, slot and chunk, and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct RowOut {
    pub kind: Kind,
    pub slot: u64,
    pub chunk: usize,
    pub json: String,
}

/// Time watched and time down, from time watched and time up.
fn pair(watched: u64, up: u64) -> [u64; 2] {
    [watched, watched.saturating_sub(up)]
}

/// `pairs` with the pair `at` set (zeros before it where missing).
fn set_pair(pairs: &mut Vec<u64>, at: u64, watched: u64, up: u64) {
    let i = at as usize * 2;
    pairs.resize(pairs.len().max(i + 2), 0);
    pairs[i..i + 2].copy_from_slice(&pair(watched, up));
}

fn hour_part(th: &TargetHistory, hour: u64) -> Option<HourPart> {
    let r = th.hours.iter().rev().find(|r| r.hour == hour)?;
    let mut slices = Vec::new();
    for s in th.slices.iter().filter(|s| s.n / SLICES_PER_HOUR == hour) {
        set_pair(&mut slices, s.n % SLICES_PER_HOUR, s.total_ms, s.up_ms);
    }
    let [watched, down] = pair(r.total_ms, r.up_ms);
    Some(HourPart(watched, down, slices, r.latency.clone()))
}

/// A target's ended day: its total (a day row), or its hours (a day-hours
/// row; none when they are no longer kept).
fn day_part(th: &TargetHistory, day: u64, kind: Kind) -> Option<HourPart> {
    if kind == Kind::Day {
        let d = th.days.iter().find(|d| d.d == day)?;
        let [watched, down] = pair(d.total_ms, d.up_ms);
        return Some(HourPart(watched, down, Vec::new(), Histogram::default()));
    }
    let mut pairs = Vec::new();
    for r in th.hours.iter().filter(|r| r.hour / HOURS_PER_DAY == day) {
        set_pair(&mut pairs, r.hour % HOURS_PER_DAY, r.total_ms, r.up_ms);
    }
    (!pairs.is_empty()).then(|| HourPart(0, 0, pairs, Histogram::default()))
}

/// Puts the rollup of `hour` (time watched and down) in its place, over
/// one already there.
fn put_hour(th: &mut TargetHistory, hour: u64, [watched, down]: [u64; 2], latency: Histogram) {
    let rollup = Rollup {
        hour,
        up_ms: watched.saturating_sub(down),
        total_ms: watched,
        latency,
    };
    match th.hours.iter().rposition(|r| r.hour <= hour) {
        Some(i) if th.hours[i].hour == hour => th.hours[i] = rollup,
        Some(i) => th.hours.insert(i + 1, rollup),
        None => th.hours.insert(0, rollup),
    }
}

/// Splits the targets' parts into rows of at most `ROW_BYTES`.
fn chunked(
    (kind, n, at): (Kind, u64, u64),
    parts: impl Iterator<Item = (String, HourPart)>,
    out: &mut Vec<RowOut>,
) -> Result<(), serde_json::Error> {
    let mut row = Row {
        n,
        at,
        t: Vec::new(),
    };
    let mut bytes = 0;
    let mut chunk = 0;
    let mut parts = parts.peekable();
    while let Some((id, part)) = parts.next() {
        // The part's JSON, its key and separators, within the row's framing.
        bytes += serde_json::to_string(&part)?.len() + id.len() + 8;
        row.t.push((id, part));
        let next = parts.peek().map_or(0, |(id, p)| {
            id.len() + 8 + 30 + p.2.len() * 8 + p.3 .0.len() * 9
        });
        if parts.peek().is_none() || bytes + next > ROW_BYTES - 64 {
            out.push(RowOut {
                kind,
                slot: n % kind.slots(),
                chunk,
                json: serde_json::to_string(&row)?,
            });
            row.t.clear();
            (bytes, chunk) = (0, chunk + 1);
        }
    }
    Ok(())
}

/// Of the rows read, the newest write of each kind's slot, in the order
/// the history is rebuilt from them (by kind, then time).
fn newest(mut rows: Vec<(Kind, Row)>) -> Vec<(Kind, Row)> {
    let keys: Vec<(Kind, u64, u64)> = rows.iter().map(|(k, r)| (*k, r.n, r.at)).collect();
    rows.retain(|(kind, r)| {
        let slot = |n: u64| n % kind.slots();
        keys.iter()
            .all(|k| k.0 != *kind || slot(k.1) != slot(r.n) || (k.1, k.2) <= (r.n, r.at))
    });
    super::sort_small_by_key(&mut rows, |(k, r)| (*k, r.n));
    rows
}

impl History {
    /// The rows a flush at `now_ms` writes: every hour changed since the
    /// last store, every changed day that has ended, the hosts' row if it
    /// changed. The flush that stores an ended hour leaves the first
    /// minutes of the new one to the next flush (one hour row, not two).
    /// `mark_stored` once they are stored.
    pub fn rows_due(&self, now_ms: u64) -> Result<Vec<RowOut>, serde_json::Error> {
        let mut out = Vec::new();
        let open = self.hour_ended(now_ms).then_some(now_ms / HOUR_MS);
        let today = now_ms / DAY_MS;
        let hours = self.dirty.hours.iter().filter(|h| Some(**h) != open);
        let days = self.dirty.days.iter().filter(|d| **d < today);
        let due = hours
            .map(|h| (Kind::Hour, *h))
            .chain(days.flat_map(|d| [(Kind::Day, *d), (Kind::DayHours, *d)]));
        for (kind, n) in due {
            let parts = self.targets.iter().filter_map(|(id, th)| {
                let part = match kind {
                    Kind::Hour => hour_part(th, n),
                    _ => day_part(th, n, kind),
                };
                Some((id.clone(), part?))
            });
            chunked((kind, n, now_ms), parts, &mut out)?;
        }
        if self.dirty.hosts {
            let row = HostsRow {
                hosts: &self.hosts,
                hosts_polled_at: &self.hosts_polled_at,
            };
            out.push(RowOut {
                kind: Kind::Hosts,
                slot: 0,
                chunk: 0,
                json: serde_json::to_string(&row)?,
            });
        }
        Ok(out)
    }

    /// `rows` (from `rows_due`) are stored at `now_ms`: what changed is
    /// stored, and the next flushes are spaced by the rows an hour took, so
    /// a steady day writes about 144 rows whatever the number of targets
    /// (one row a flush up to several hundred targets; at a thousand with
    /// latencies spread over many buckets, 3 rows every 30 minutes).
    pub fn stored_rows(&mut self, now_ms: u64, rows: &[RowOut]) {
        self.mark_stored(now_ms);
        let open = (now_ms / HOUR_MS) % HOUR_SLOTS;
        let chunks = |open_hour: bool| {
            rows.iter()
                .filter(|r| r.kind == Kind::Hour && (r.slot == open) == open_hour)
                .map(|r| r.chunk as u64 + 1)
                .max()
        };
        // A whole hour's rows, else the most an open hour took since.
        if let Some(n) = chunks(false) {
            self.flush_factor = n;
        }
        if let Some(n) = chunks(true) {
            self.flush_factor = self.flush_factor.max(n);
        }
    }

    /// The history the rows hold: each day's total from its day row, else
    /// from its hours; the hours of the day-hours rows, and of the hour
    /// rows, which stand over them. Days whose hours are stored but whose
    /// day row is not are marked, to be written once they have ended.
    pub fn from_rows(rows: Vec<(Kind, Row)>, hosts: Option<HostsRowOwned>) -> Self {
        let mut history = History::default();
        let rows = newest(rows);
        let stored: Vec<u64> = rows
            .iter()
            .filter(|(k, _)| *k == Kind::Day)
            .map(|(_, r)| r.n)
            .collect();
        for (kind, row) in rows {
            let (day, first_hour) = match kind {
                Kind::Hour => (row.n / HOURS_PER_DAY, row.n),
                _ => (row.n, row.n * HOURS_PER_DAY),
            };
            let has_total = stored.contains(&day);
            if !has_total {
                Dirty::mark(&mut history.dirty.days, day);
            }
            for (id, HourPart(watched, down, pairs, latency)) in row.t {
                let th = history.targets.entry(id).or_default();
                if kind == Kind::Day || (kind == Kind::Hour && !has_total) {
                    record_day(&mut th.days, day, watched.saturating_sub(down), watched);
                }
                match kind {
                    Kind::DayHours => {
                        for (i, p) in pairs.chunks_exact(2).enumerate() {
                            if p[0] > 0 {
                                let hour = first_hour + i as u64;
                                put_hour(th, hour, [p[0], p[1]], Histogram::default());
                            }
                        }
                    }
                    Kind::Hour => {
                        put_hour(th, first_hour, [watched, down], latency);
                        for (i, p) in pairs.chunks_exact(2).enumerate() {
                            if p[0] > 0 {
                                th.slices.push(Slice {
                                    n: first_hour * SLICES_PER_HOUR + i as u64,
                                    up_ms: p[0].saturating_sub(p[1]),
                                    total_ms: p[0],
                                });
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        for th in history.targets.values_mut() {
            let newest = th.hours.last().map_or(0, |r| r.hour);
            th.hours.retain(|r| r.hour + HOURS_KEPT > newest);
            for r in th.hours.iter_mut().filter(|r| r.hour + 24 <= newest) {
                r.latency = Histogram::default();
            }
            let newest_slice = th.slices.last().map_or(0, |s| s.n);
            th.slices.retain(|s| s.n + SLICES_KEPT > newest_slice);
        }
        if let Some(h) = hosts {
            history.hosts = h.hosts;
            history.hosts_polled_at = h.hosts_polled_at;
        }
        history
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::probe::{Health, Observation};

    const MIN: u64 = 60_000;

    /// Stores rows as the Durable Object does: by kind, slot and chunk.
    #[derive(Default)]
    struct Rows(BTreeMap<(Kind, u64, usize), String>);

    impl Rows {
        fn store(&mut self, rows: &[RowOut]) {
            for r in rows {
                self.0.insert((r.kind, r.slot, r.chunk), r.json.clone());
            }
        }

        fn read(&self) -> History {
            let (mut rows, mut hosts) = (Vec::new(), None);
            for ((kind, _, _), json) in &self.0 {
                match kind {
                    Kind::Hosts => hosts = Some(serde_json::from_str(json).unwrap()),
                    _ => rows.push((*kind, serde_json::from_str(json).unwrap())),
                }
            }
            History::from_rows(rows, hosts)
        }
    }

    /// A deterministic spread of latencies, 20 ms to 1 s.
    fn latency(i: u64) -> u64 {
        20 + (i.wrapping_mul(2_654_435_761) % 980)
    }

    fn obs(target: &str, at_ms: u64, down: bool, latency_ms: u64) -> Observation {
        Observation {
            target: target.into(),
            at_ms,
            health: if down { Health::Down } else { Health::Healthy },
            status: Some(200),
            latency_ms,
            error: None,
            cert: None,
        }
    }

    /// `targets` probed every minute for `days` days (one down for 25
    /// minutes a day), flushed as the Worker does; the rows written.
    fn run(
        h: &mut History,
        rows: &mut Rows,
        targets: usize,
        from: u64,
        minutes: u64,
    ) -> Vec<usize> {
        let mut per_flush = Vec::new();
        for m in 0..minutes {
            let at = from + m * MIN;
            for t in 0..targets {
                let down = t == 0 && at % DAY_MS / MIN % 1440 < 25;
                let lat = latency(m * targets as u64 + t as u64);
                h.record(&obs(&format!("t{t}"), at, down, lat), MIN);
            }
            if h.flush_due(at, 600_000) {
                let out = h.rows_due(at).unwrap();
                assert!(out.iter().all(|r| r.json.len() <= ROW_BYTES), "row size");
                per_flush.push(out.len());
                rows.store(&out);
                h.stored_rows(at, &out);
            }
        }
        per_flush
    }

    #[test]
    fn thirty_days_of_rows_read_back_as_the_history_they_were_written_from() {
        let mut h = History::default();
        let mut rows = Rows::default();
        let from = 20_000 * DAY_MS + 7 * HOUR_MS + 3 * MIN;
        let minutes = 32 * 1440 + 200;
        let per_flush = run(&mut h, &mut rows, 3, from, minutes);
        let now = from + (minutes - 1) * MIN;
        let read = rows.read();
        for t in ["t0", "t1", "t2"] {
            // Everything but the minutes since the last flush.
            let at = now - 9 * MIN;
            let (a, b) = (h.stats(t, at), read.stats(t, at));
            assert!(b.samples_24h + 10 >= a.samples_24h, "{t}: {a:?} {b:?}");
            let (ua, ub) = (
                h.uptime(t, now, 30 * DAY_MS),
                read.uptime(t, now, 30 * DAY_MS),
            );
            assert!(
                (ua.unwrap() - ub.unwrap()).abs() < 0.01,
                "{t}: {ua:?} {ub:?}"
            );
            let days_a: Vec<_> = h.days(t).filter(|d| d.d < now / DAY_MS).collect();
            let days_b: Vec<_> = read.days(t).filter(|d| d.d < now / DAY_MS).collect();
            assert_eq!(days_a, days_b, "{t}: the ended days, exactly");
            let burn = |x: &History| x.error_ratio(t, now - 10 * MIN, 6 * HOUR_MS);
            assert_eq!(burn(&h), burn(&read), "{t}: 6 h of slices");
        }
        assert_eq!(read.targets["t1"].hours.len(), h.targets["t1"].hours.len());
        assert!(read.targets["t0"].days.len() >= 32);
        // Each flush writes the open hour's row; at an hour's end the
        // closed one too, and at a day's end its day row.
        assert!(
            per_flush.iter().all(|n| (1..=3).contains(n)),
            "{per_flush:?}"
        );
    }

    #[test]
    fn a_flush_writes_the_same_rows_for_ten_targets_as_for_a_thousand() {
        let from = 20_000 * DAY_MS + 23 * HOUR_MS;
        let mut written = Vec::new();
        for targets in [10, 1000] {
            let mut h = History::default();
            let mut rows = Rows::default();
            // A steady day and an hour (past midnight: one day row).
            let per_flush = run(&mut h, &mut rows, targets, from, 1440 + 60);
            let largest = rows.0.values().map(String::len).max().unwrap();
            assert!(largest <= ROW_BYTES, "{targets}: {largest}");
            written.push((per_flush.len(), per_flush.iter().sum::<usize>()));
            // A fresh isolate reads them back.
            let read = rows.read();
            assert_eq!(read.targets.len(), targets);
        }
        let (flushes, rows_10) = written[0];
        assert!(flushes <= 6 * 25, "{written:?}");
        assert!(rows_10 <= flushes + 26, "{written:?}");
        // 25 hours: at most 6 rows an hour, and a day row in chunks.
        for (_, rows) in &written {
            assert!(*rows <= 6 * 25 + 3, "{written:?}");
        }
        println!("rows in a steady day and an hour (10, 1000 targets): {written:?}");
    }

    /// What a fresh isolate reads at 1,000 targets after 90 days: every
    /// row (25 hours, 30 days' hours, 90 days), each under 128 KB, fewer
    /// bytes than the history as one value.
    #[test]
    fn ninety_days_of_a_thousand_targets_in_rows() {
        let mut h = History::default();
        let from = 20_000 * DAY_MS;
        let minutes = 91 * 1440;
        run(&mut h, &mut Rows::default(), 1, from, minutes);
        let now = from + minutes * MIN;
        let one = h.targets["t0"].clone();
        for i in 0..1000 {
            h.targets.insert(format!("t{i}"), one.clone());
        }
        let newest = one.hours.last().unwrap().hour;
        h.dirty.hours = (newest + 1 - HOUR_SLOTS..=newest).collect();
        h.dirty.days = one.days.iter().map(|d| d.d).collect();
        let out = h.rows_due(now + 1).unwrap();
        let bytes: usize = out.iter().map(|r| r.json.len()).sum();
        let whole = serde_json::to_string(&h).unwrap().len();
        assert!(out.iter().all(|r| r.json.len() <= ROW_BYTES));
        assert!(bytes < whole, "{bytes} vs {whole}");
        let mut rows = Rows::default();
        rows.store(&out);
        let t = std::time::Instant::now();
        let read = rows.read();
        println!(
            "1,000 targets, 90 days: {} rows, {bytes} bytes (one value: {whole}); read back in {:?} (debug build)",
            out.len(),
            t.elapsed()
        );
        assert_eq!(read.targets.len(), 1000);
        assert_eq!(read.targets["t7"].hours.len(), one.hours.len());
    }

    #[test]
    fn of_a_slot_only_the_newest_write_counts() {
        let mut h = History::default();
        let mut rows = Rows::default();
        let from = 20_000 * DAY_MS;
        run(&mut h, &mut rows, 2, from, 30);
        // 25 hours later the same slot holds another hour: the older row,
        // in a chunk the newer write did not use, is not read.
        rows.0.insert(
            (Kind::Hour, (from / HOUR_MS) % HOUR_SLOTS, 7),
            serde_json::to_string(&Row {
                n: from / HOUR_MS - HOUR_SLOTS,
                at: from - DAY_MS,
                t: vec![("t9".to_string(), HourPart::default())],
            })
            .unwrap(),
        );
        assert!(!rows.read().targets.contains_key("t9"));
    }
}

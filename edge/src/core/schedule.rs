//! Cron schedules in a time zone, for jobs: five-field cron expressions
//! (minute hour day-of-month month day-of-week, with lists, ranges, steps
//! and names, and the @hourly/@daily/@weekly/@monthly/@yearly aliases) and
//! zones as POSIX TZ rules (an IANA name is looked up in `tzdb`, which
//! also carries the explicit offset changes of the few zones whose rule is
//! wrong, such as Morocco's during Ramadan).
//!
//! Clock changes are met the way Vixie cron (and cronie, croner, cronsim)
//! meets them. A fixed-time job (neither the minute nor the hour field
//! starts with `*`) runs once per scheduled local time: a time the clock
//! skips runs at the jump (02:30 on a spring-forward night runs at 03:00),
//! a time it repeats runs at its first occurrence. Any other job follows the
//! clock as it is: skipped times do not happen, repeated ones happen twice.
//! Day-of-month and day-of-week, when both are restricted, match either (as
//! Vixie cron does).

use super::tzdb;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("cron: {0}")]
    Cron(String),
    #[error("tz: {0}")]
    Zone(String),
}

/// A parsed cron expression: one bit per allowed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Whether day-of-month and day-of-week were both restricted.
    either_day: bool,
    /// Neither the minute nor the hour field starts with `*` (cron's
    /// "fixed-time" job, which clock changes move rather than skip).
    fixed_time: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Cron {
    pub fn parse(expr: &str) -> Result<Self, ScheduleError> {
        let expanded = match expr.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [min, hour, dom, mon, dow] = fields[..] else {
            return Err(ScheduleError::Cron(format!(
                "{expr:?}: expected five fields (minute hour day-of-month month day-of-week)"
            )));
        };
        let weekdays = field(dow, 0, 7, &WEEKDAYS, "day-of-week")?;
        // 7 is Sunday too.
        let weekdays = (weekdays | (weekdays >> 7)) & 0x7F;
        Ok(Cron {
            minutes: field(min, 0, 59, &[], "minute")?,
            hours: field(hour, 0, 23, &[], "hour")? as u32,
            days: field(dom, 1, 31, &[], "day-of-month")? as u32,
            months: field(mon, 1, 12, &MONTHS, "month")? as u16,
            weekdays: weekdays as u8,
            either_day: !dom.starts_with('*') && !dow.starts_with('*'),
            fixed_time: !min.starts_with('*') && !hour.starts_with('*'),
        })
    }

    fn day_matches(&self, month: u32, day: u32, weekday: u32) -> bool {
        if self.months & (1 << month) == 0 {
            return false;
        }
        let dom = self.days & (1 << day) != 0;
        let dow = self.weekdays & (1 << weekday) != 0;
        if self.either_day {
            dom || dow
        } else {
            dom && dow
        }
    }
}

/// One cron field as a bit set of `lo..=hi`.
fn field(text: &str, lo: u32, hi: u32, names: &[&str], what: &str) -> Result<u64, ScheduleError> {
    let bad = |why: String| ScheduleError::Cron(format!("{what} {text:?}: {why}"));
    let value = |v: &str| -> Result<u32, ScheduleError> {
        let lower = v.to_ascii_lowercase();
        let n = match names.iter().position(|n| *n == lower) {
            // Names count from the field's first value (jan = 1, sun = 0).
            Some(i) => i as u32 + lo,
            None => v
                .parse::<u32>()
                .map_err(|_| bad(format!("{v:?} is not a number")))?,
        };
        if (lo..=hi).contains(&n) {
            Ok(n)
        } else {
            Err(bad(format!("{n} is outside {lo}-{hi}")))
        }
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| bad(format!("step {s:?} is not a positive number")))?,
            ),
            None => (part, 1),
        };
        let (from, to) = match range {
            "*" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                None if step > 1 => (value(r)?, hi),
                None => {
                    let v = value(r)?;
                    (v, v)
                }
            },
        };
        if from > to {
            return Err(bad(format!("range {from}-{to} runs backwards")));
        }
        for v in (from..=to).step_by(step as usize) {
            bits |= 1 << v;
        }
    }
    Ok(bits)
}

/// When a daylight-saving rule switches, in the local time then in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DateRule {
    /// Month, week (1-5, 5 = last), weekday (0 = Sunday).
    MonthWeekDay(u32, u32, u32),
    /// Day 1-365, February 29 never counted.
    Julian(u32),
    /// Day 0-365, February 29 counted in leap years.
    Ordinal(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Transition {
    date: DateRule,
    /// Seconds after local midnight (may be negative or past 24 h).
    time_s: i64,
}

/// A time zone as a POSIX TZ rule, with explicit offset changes where the
/// rule is wrong: offsets are seconds east of UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    pub name: String,
    std_offset: i64,
    dst: Option<(i64, Transition, Transition)>,
    /// (minute since the epoch, offset in minutes from then on), until
    /// `tzdb::EXPLICIT_UNTIL_MIN`; empty for most zones.
    explicit: &'static [(i32, i16)],
}

/// What a local wall-clock time is on the real clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Local {
    Once(i64),
    /// Repeated when the clock went back: the two instants, in order.
    Twice(i64, i64),
    /// Skipped when the clock jumped forward at this instant.
    Skipped {
        jump: i64,
    },
}

/// The built-in table's zones: (IANA name, POSIX TZ rule).
fn zones() -> impl Iterator<Item = (&'static str, &'static str)> {
    tzdb::ZONES.lines().filter_map(|line| line.split_once(' '))
}

impl Zone {
    /// An IANA name (from the built-in table) or a POSIX TZ rule.
    pub fn named(name: &str) -> Result<Self, ScheduleError> {
        let rule = zones()
            .find_map(|(n, rule)| (n == name).then_some(rule))
            .unwrap_or(name);
        let mut zone = Self::posix(rule).map_err(|why| {
            ScheduleError::Zone(format!(
                "{name:?} is neither a zone of tzdata {} nor a POSIX TZ rule ({why})",
                tzdb::VERSION
            ))
        })?;
        zone.name = name.to_string();
        zone.explicit = tzdb::EXPLICIT
            .binary_search_by(|(n, _)| n.cmp(&name))
            .map_or(&[], |i| tzdb::EXPLICIT[i].1);
        Ok(zone)
    }

    fn posix(rule: &str) -> Result<Self, String> {
        let mut p = Cursor { s: rule, i: 0 };
        p.zone_name()?;
        let std_offset = -p.offset()?;
        if p.done() {
            return Ok(Zone {
                name: rule.to_string(),
                std_offset,
                dst: None,
                explicit: &[],
            });
        }
        p.zone_name()?;
        let dst_offset = if p.peek().is_some_and(|c| c != ',') {
            -p.offset()?
        } else {
            std_offset + 3600
        };
        // Without rules POSIX leaves the switch dates to the system; the US
        // rules are the customary default.
        let (start, end) = if p.done() {
            (
                Transition {
                    date: DateRule::MonthWeekDay(3, 2, 0),
                    time_s: 7200,
                },
                Transition {
                    date: DateRule::MonthWeekDay(11, 1, 0),
                    time_s: 7200,
                },
            )
        } else {
            p.expect(',')?;
            let start = p.transition()?;
            p.expect(',')?;
            (start, p.transition()?)
        };
        if !p.done() {
            return Err(format!("unexpected {:?}", &rule[p.i..]));
        }
        Ok(Zone {
            name: rule.to_string(),
            std_offset,
            dst: Some((dst_offset, start, end)),
            explicit: &[],
        })
    }

    /// The UTC offset in force at `utc_s`.
    pub fn offset_at(&self, utc_s: i64) -> i64 {
        if let Some(offset) = self.explicit_offset_at(utc_s) {
            return offset;
        }
        let Some((dst_offset, start, end)) = self.dst else {
            return self.std_offset;
        };
        let year = civil_from_days((utc_s + self.std_offset).div_euclid(86_400)).0;
        let start_utc = transition_local_s(year, start) - self.std_offset;
        let end_utc = transition_local_s(year, end) - dst_offset;
        let in_dst = if start_utc < end_utc {
            start_utc <= utc_s && utc_s < end_utc
        } else {
            !(end_utc <= utc_s && utc_s < start_utc)
        };
        if in_dst {
            dst_offset
        } else {
            self.std_offset
        }
    }

    /// The offset from the explicit changes, within their span.
    fn explicit_offset_at(&self, utc_s: i64) -> Option<i64> {
        let minute = utc_s.div_euclid(60);
        let first = i64::from(self.explicit.first()?.0);
        if minute < first || minute >= i64::from(tzdb::EXPLICIT_UNTIL_MIN) {
            return None;
        }
        let i = self
            .explicit
            .partition_point(|(m, _)| i64::from(*m) <= minute);
        Some(i64::from(self.explicit[i - 1].1) * 60)
    }

    /// The smallest and the largest offsets the zone uses.
    fn offset_range(&self) -> (i64, i64) {
        let offsets = self
            .explicit
            .iter()
            .map(|(_, off)| i64::from(*off) * 60)
            .chain([self.std_offset, self.dst.map_or(self.std_offset, |d| d.0)]);
        offsets.fold((i64::MAX, i64::MIN), |(lo, hi), o| (lo.min(o), hi.max(o)))
    }

    /// A local wall-clock time on the real clock. (Clock changes are taken
    /// to be more than two days apart, as they are in tzdata.)
    fn resolve(&self, local_s: i64) -> Local {
        let before = self.offset_at(local_s - 2 * 86_400);
        let after = self.offset_at(local_s + 2 * 86_400);
        let holds = |offset: i64| {
            let utc = local_s - offset;
            (self.offset_at(utc) == offset).then_some(utc)
        };
        match (holds(before), holds(after)) {
            (Some(a), Some(b)) if a != b => Local::Twice(a.min(b), a.max(b)),
            (Some(utc), _) | (None, Some(utc)) => Local::Once(utc),
            (None, None) => {
                // The jump lies between the two readings of the time.
                let (mut lo, mut hi) = (local_s - after, local_s - before);
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if self.offset_at(mid) == before {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                Local::Skipped { jump: hi }
            }
        }
    }
}

struct Cursor<'a> {
    s: &'a str,
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<char> {
        self.s[self.i..].chars().next()
    }
    fn done(&self) -> bool {
        self.i >= self.s.len()
    }
    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected {c:?} at {}", self.i))
        }
    }
    fn zone_name(&mut self) -> Result<(), String> {
        let start = self.i;
        if self.peek() == Some('<') {
            let close = self.s[self.i..]
                .find('>')
                .ok_or("unclosed < in a zone name")?;
            self.i += close + 1;
            return Ok(());
        }
        while self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
            self.i += 1;
        }
        if self.i - start < 3 {
            return Err(format!("expected a zone name at {start}"));
        }
        Ok(())
    }
    fn number(&mut self) -> Result<i64, String> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        self.s[start..self.i]
            .parse()
            .map_err(|_| format!("expected a number at {start}"))
    }
    /// `[+-]hh[:mm[:ss]]` in seconds.
    fn offset(&mut self) -> Result<i64, String> {
        let sign = match self.peek() {
            Some('-') => {
                self.i += 1;
                -1
            }
            Some('+') => {
                self.i += 1;
                1
            }
            _ => 1,
        };
        let mut secs = self.number()? * 3600;
        for unit in [60, 1] {
            if self.peek() != Some(':') {
                break;
            }
            self.i += 1;
            secs += self.number()? * unit;
        }
        Ok(sign * secs)
    }
    fn transition(&mut self) -> Result<Transition, String> {
        let date = match self.peek() {
            Some('M') => {
                self.i += 1;
                let m = self.number()?;
                self.expect('.')?;
                let w = self.number()?;
                self.expect('.')?;
                let d = self.number()?;
                if !(1..=12).contains(&m) || !(1..=5).contains(&w) || !(0..=6).contains(&d) {
                    return Err(format!("M{m}.{w}.{d} is not a date rule"));
                }
                DateRule::MonthWeekDay(m as u32, w as u32, d as u32)
            }
            Some('J') => {
                self.i += 1;
                DateRule::Julian(self.number()?.clamp(1, 365) as u32)
            }
            _ => DateRule::Ordinal(self.number()?.clamp(0, 365) as u32),
        };
        let time_s = if self.peek() == Some('/') {
            self.i += 1;
            self.offset()?
        } else {
            7200
        };
        Ok(Transition { date, time_s })
    }
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn month_days(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// 0 = Sunday.
fn weekday(days: i64) -> u32 {
    (days + 4).rem_euclid(7) as u32
}

/// A transition's local time in `year`, in seconds since the epoch as if
/// local time were UTC.
fn transition_local_s(year: i64, t: Transition) -> i64 {
    let day = match t.date {
        DateRule::MonthWeekDay(m, w, d) => {
            let first = days_from_civil(year, m, 1);
            let shift = (i64::from(d) - i64::from(weekday(first))).rem_euclid(7);
            let mut day = first + shift + 7 * (i64::from(w) - 1);
            while day >= first + i64::from(month_days(year, m)) {
                day -= 7;
            }
            day
        }
        DateRule::Julian(n) => {
            let jan1 = days_from_civil(year, 1, 1);
            let n = i64::from(n) - 1;
            jan1 + n + i64::from(is_leap(year) && n >= 59)
        }
        DateRule::Ordinal(n) => days_from_civil(year, 1, 1) + i64::from(n),
    };
    day * 86_400 + t.time_s
}

/// An instant as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_utc(ms: u64) -> String {
    let s = (ms / 1000) as i64;
    let (y, m, d) = civil_from_days(s.div_euclid(86_400));
    let t = s.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// A cron expression in a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    pub cron: Cron,
    pub zone: Zone,
}

/// How far ahead a schedule is searched (a February 29 job fires at least
/// once in eight years).
const SEARCH_DAYS: i64 = 8 * 366;

impl CronSchedule {
    pub fn new(expr: &str, tz: &str) -> Result<Self, ScheduleError> {
        Ok(CronSchedule {
            cron: Cron::parse(expr)?,
            zone: Zone::named(tz)?,
        })
    }

    /// The first time the schedule fires strictly after `after_ms`.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let after_s = (after_ms / 1000) as i64;
        let (min_offset, max_offset) = self.zone.offset_range();
        // A local time read with any offset of the zone is after `after`
        // only from here on.
        let from = after_s + min_offset;
        let first_day = from.div_euclid(86_400);
        let mut best: Option<i64> = None;
        'search: for day in first_day..first_day + SEARCH_DAYS {
            let (_, m, d) = civil_from_days(day);
            if !self.cron.day_matches(m, d, weekday(day)) {
                continue;
            }
            for h in (0..24).filter(|h| self.cron.hours & (1 << h) != 0) {
                for min in (0..60).filter(|m| self.cron.minutes & (1 << m) != 0) {
                    let local = day * 86_400 + h * 3600 + min * 60;
                    if local < from {
                        continue;
                    }
                    // Later local times are at instants after `local -
                    // max_offset`: past `best` once beyond a repeated hour.
                    if best.is_some_and(|b| local - max_offset > b) {
                        break 'search;
                    }
                    let instants = match (self.zone.resolve(local), self.cron.fixed_time) {
                        (Local::Once(utc), _) | (Local::Twice(utc, _), true) => [Some(utc), None],
                        (Local::Twice(first, second), false) => [Some(first), Some(second)],
                        (Local::Skipped { jump }, true) => [Some(jump), None],
                        (Local::Skipped { .. }, false) => [None, None],
                    };
                    for utc in instants.into_iter().flatten() {
                        if utc * 1000 > after_ms as i64 && best.is_none_or(|b| utc < b) {
                            best = Some(utc);
                        }
                    }
                }
            }
        }
        best.map(|utc| utc as u64 * 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(y: i64, m: u32, d: u32, h: i64, min: i64) -> u64 {
        ((days_from_civil(y, m, d) * 86_400 + h * 3600 + min * 60) * 1000) as u64
    }

    #[test]
    fn civil_dates_round_trip() {
        for day in [-800_000, -1, 0, 59, 10_957, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        assert_eq!(
            format_utc(utc(2026, 11, 24, 18, 47)),
            "2026-11-24T18:47:00Z"
        );
        assert_eq!(weekday(days_from_civil(2026, 11, 24)), 2, "a Tuesday");
    }

    #[test]
    fn cron_fields_parse_with_lists_ranges_steps_and_names() {
        let c = Cron::parse("*/15 9-17 * jan,JUL mon-fri").unwrap();
        assert_eq!(c.minutes, 1 | 1 << 15 | 1 << 30 | 1 << 45);
        assert_eq!(c.hours, (9..=17).map(|h| 1 << h).sum::<u32>());
        assert_eq!(c.months, 1 << 1 | 1 << 7);
        assert_eq!(c.weekdays, 0b0111110);
        assert_eq!(Cron::parse("0 0 * * 7").unwrap().weekdays, 1, "7 is Sunday");
        assert_eq!(
            Cron::parse("@daily").unwrap(),
            Cron::parse("0 0 * * *").unwrap()
        );
        assert_eq!(
            Cron::parse("5/20 * * * *").unwrap().minutes,
            1 << 5 | 1 << 25 | 1 << 45
        );
        for (bad, why) in [
            ("* * * *", "five fields"),
            ("60 * * * *", "outside 0-59"),
            ("* * 0 * *", "outside 1-31"),
            ("*/0 * * * *", "step"),
            ("5-1 * * * *", "backwards"),
            ("* * * foo *", "not a number"),
        ] {
            let e = Cron::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn zones_from_names_and_posix_rules() {
        let berlin = Zone::named("Europe/Berlin").unwrap();
        assert_eq!(
            berlin.offset_at(utc(2026, 1, 15, 12, 0) as i64 / 1000),
            3600
        );
        assert_eq!(
            berlin.offset_at(utc(2026, 7, 15, 12, 0) as i64 / 1000),
            7200
        );
        // Switches at 01:00 UTC on the last Sundays of March and October.
        let switch = utc(2026, 3, 29, 1, 0) as i64 / 1000;
        assert_eq!(berlin.offset_at(switch - 1), 3600);
        assert_eq!(berlin.offset_at(switch), 7200);
        let back = utc(2026, 10, 25, 1, 0) as i64 / 1000;
        assert_eq!(
            (berlin.offset_at(back - 1), berlin.offset_at(back)),
            (7200, 3600)
        );
        // The southern hemisphere: DST across the new year.
        let sydney = Zone::named("Australia/Sydney").unwrap();
        assert_eq!(
            sydney.offset_at(utc(2026, 1, 15, 0, 0) as i64 / 1000),
            11 * 3600
        );
        assert_eq!(
            sydney.offset_at(utc(2026, 7, 15, 0, 0) as i64 / 1000),
            10 * 3600
        );
        let kolkata = Zone::named("Asia/Kolkata").unwrap();
        assert_eq!(kolkata.offset_at(0), 5 * 3600 + 1800);
        let posix = Zone::named("EST5EDT,M3.2.0,M11.1.0").unwrap();
        assert_eq!(
            posix.offset_at(utc(2026, 7, 1, 0, 0) as i64 / 1000),
            -4 * 3600
        );
        assert!(Zone::named("Mars/Olympus")
            .unwrap_err()
            .to_string()
            .contains("tzdata"));
        assert!(Zone::named("UTC").is_ok());
    }

    #[test]
    fn next_runs_follow_the_wall_clock_across_a_time_change() {
        // 09:00 every day in Berlin: 08:00 UTC in winter, 07:00 in summer.
        let s = CronSchedule::new("0 9 * * *", "Europe/Berlin").unwrap();
        let sat = utc(2026, 3, 28, 8, 0);
        assert_eq!(s.next_after(sat - 1), Some(sat));
        assert_eq!(s.next_after(sat), Some(utc(2026, 3, 29, 7, 0)));
        // 02:30 does not exist on 29 March: like cron, it runs at the jump,
        // 03:00 CEST (01:00 UTC), not an hour late at 03:30.
        let night = CronSchedule::new("30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            night.next_after(utc(2026, 3, 28, 12, 0)),
            Some(utc(2026, 3, 29, 1, 0))
        );
        assert_eq!(
            night.next_after(utc(2026, 3, 29, 1, 0)),
            Some(utc(2026, 3, 30, 0, 30))
        );
        // 02:30 happens twice on 25 October: once, at the first (00:30 UTC).
        assert_eq!(
            night.next_after(utc(2026, 10, 24, 12, 0)),
            Some(utc(2026, 10, 25, 0, 30))
        );
        assert_eq!(
            night.next_after(utc(2026, 10, 25, 0, 30)),
            Some(utc(2026, 10, 26, 1, 30))
        );
        // New York switches on other dates.
        let ny = CronSchedule::new("0 6 * * mon", "America/New_York").unwrap();
        assert_eq!(
            ny.next_after(utc(2026, 3, 7, 0, 0)),
            Some(utc(2026, 3, 9, 10, 0))
        );
        assert_eq!(
            ny.next_after(utc(2026, 3, 1, 0, 0)),
            Some(utc(2026, 3, 2, 11, 0))
        );
        // Day-of-month or day-of-week; February 29.
        let either = CronSchedule::new("0 0 13 * fri", "UTC").unwrap();
        assert_eq!(
            either.next_after(utc(2026, 11, 24, 0, 0)),
            Some(utc(2026, 11, 27, 0, 0))
        );
        let leap = CronSchedule::new("0 0 29 2 *", "UTC").unwrap();
        assert_eq!(
            leap.next_after(utc(2026, 11, 24, 0, 0)),
            Some(utc(2028, 2, 29, 0, 0))
        );
    }

    /// Clock changes as cron meets them: the next run after a time, in UTC.
    #[test]
    fn skipped_and_repeated_hours_as_cron_meets_them() {
        #[rustfmt::skip]
        let cases = [
            // Fixed times in Berlin's skipped hour: one run, at the jump
            // (03:00 CEST), then the next day.
            ("0,30 2 * * *", "Europe/Berlin", "2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z"),
            ("0,30 2 * * *", "Europe/Berlin", "2026-03-29T01:00:00Z", "2026-03-30T00:00:00Z"),
            // New York jumps at 02:00 EST (07:00 UTC) to 03:00 EDT.
            ("15 2 * * *", "America/New_York", "2026-03-08T00:00:00Z", "2026-03-08T07:00:00Z"),
            // A wildcard hour or minute follows the real clock: a skipped
            // 02:30 does not happen (01:30 CET, then 03:30 CEST; no 02:xx)...
            ("30 * * * *", "Europe/Berlin", "2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z"),
            ("*/15 2 * * *", "Europe/Berlin", "2026-03-28T23:00:00Z", "2026-03-30T00:00:00Z"),
            // ...and a repeated 02:30 happens twice: 02:30 CEST, 02:30 CET,
            // 03:30 CET; 02:45 CEST, then 02:00 CET.
            ("30 * * * *", "Europe/Berlin", "2026-10-25T00:29:00Z", "2026-10-25T00:30:00Z"),
            ("30 * * * *", "Europe/Berlin", "2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z"),
            ("30 * * * *", "Europe/Berlin", "2026-10-25T01:30:00Z", "2026-10-25T02:30:00Z"),
            ("*/15 2 * * *", "Europe/Berlin", "2026-10-25T00:45:00Z", "2026-10-25T01:00:00Z"),
        ];
        let parse = |t: &str| {
            let n = |r: std::ops::Range<usize>| t[r].parse::<i64>().unwrap();
            let (m, d) = (n(5..7) as u32, n(8..10) as u32);
            utc(n(0..4), m, d, n(11..13), n(14..16))
        };
        for (expr, tz, after, next) in cases {
            let s = CronSchedule::new(expr, tz).unwrap();
            assert_eq!(
                s.next_after(parse(after)).map(format_utc).as_deref(),
                Some(next),
                "{expr:?} in {tz} after {after}"
            );
        }
    }

    #[test]
    fn ramadan_changes_in_morocco_and_palestine() {
        // Morocco is on +00 during Ramadan (15 February - 22 March 2026),
        // which its POSIX rule (always +01) cannot say.
        for name in ["Africa/Casablanca", "Africa/El_Aaiun"] {
            let z = Zone::named(name).unwrap();
            let at = |y, m, d, h| utc(y, m, d, h, 0) as i64 / 1000;
            assert_eq!(z.offset_at(at(2026, 2, 1, 12)), 3600, "{name}");
            assert_eq!(z.offset_at(at(2026, 3, 1, 12)), 0, "{name}");
            assert_eq!(z.offset_at(at(2026, 4, 1, 12)), 3600, "{name}");
            // After the explicit changes the rule holds.
            assert_eq!(z.offset_at(at(2101, 3, 1, 12)), 3600, "{name}");
        }
        let s = CronSchedule::new("0 9 * * *", "Africa/Casablanca").unwrap();
        assert_eq!(
            s.next_after(utc(2026, 3, 1, 0, 0)),
            Some(utc(2026, 3, 1, 9, 0))
        );
        // Palestine started summer time on 12 April 2025, not on the
        // rule's last Saturday of March.
        let gaza = Zone::named("Asia/Gaza").unwrap();
        let april = |d| gaza.offset_at(utc(2025, 4, d, 12, 0) as i64 / 1000);
        assert_eq!((april(5), april(20)), (2 * 3600, 3 * 3600));
    }

    /// The system's tzdata, which jiff reads: the table must be generated
    /// from the same release for the comparisons below to mean anything.
    fn system_tzdata() {
        let zi = std::fs::read_to_string("/usr/share/zoneinfo/tzdata.zi").unwrap();
        let version = zi
            .lines()
            .find_map(|l| l.strip_prefix("# version "))
            .unwrap();
        assert_eq!(
            version,
            tzdb::VERSION,
            "the system has tzdata {version}, the table {}: run scripts/gen-tzdb.sh",
            tzdb::VERSION
        );
    }

    fn jiff_zone(name: &str) -> jiff::tz::TimeZone {
        jiff::tz::TimeZone::get(name).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn at(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).unwrap()
    }

    /// Every zone of the table gives the system's offsets on both sides of
    /// every change from 2025 to 2100, and between them.
    #[test]
    fn every_zone_agrees_with_the_system_tzdata_until_2100() {
        system_tzdata();
        let (from, until) = (
            utc(2025, 1, 1, 0, 0) as i64 / 1000,
            utc(2100, 1, 1, 0, 0) as i64 / 1000,
        );
        let mut checked = 0;
        for (name, _) in zones() {
            let ours = Zone::named(name).unwrap();
            let theirs = jiff_zone(name);
            let changes: Vec<i64> = theirs
                .following(at(from))
                .map(|t| t.timestamp().as_second())
                .take_while(|t| *t < until)
                .collect();
            let mut points = vec![from, until - 1];
            for t in &changes {
                points.extend([t - 1, *t, t + 86_400]);
            }
            for p in points {
                assert_eq!(
                    ours.offset_at(p),
                    i64::from(theirs.to_offset(at(p)).seconds()),
                    "{name} at {}",
                    format_utc(p as u64 * 1000)
                );
                checked += 1;
            }
        }
        assert!(checked > 50_000, "{checked}");
    }

    /// The schedule against croner (over jiff and the system's tzdata):
    /// successive runs of many expressions in many zones, from points
    /// around every clock change of 2025-2032 and points spread over the
    /// years. The expressions are those on which croner and cron agree about
    /// which jobs are fixed-time (croner counts only single values; cron
    /// counts lists and ranges too, tested above) and about day-of-month
    /// with day-of-week (croner ORs `*/n` with a restricted other field).
    #[test]
    fn runs_agree_with_croner_over_many_expressions_and_zones() {
        system_tzdata();
        let exprs = [
            "30 2 * * *",
            "0 2 * * *",
            "59 1 * * *",
            "0 3 * * *",
            "30 0 * * *",
            "0 0 * * *",
            "15 23 * * *",
            "45 1 * * sun",
            "0 12 1 * *",
            "0 9 * * mon-fri",
            "30 4 13 * fri",
            "0 0 29 2 *",
            "0 6 * jan,jul *",
            "7 1 31 * *",
            "* * * * *",
            "*/15 * * * *",
            "*/7 2 * * *",
            "30 * * * *",
            "0 * * * *",
            "*/20 1-3 * * *",
            "5 */2 * * *",
            "* 2 * * *",
            "0,30 * * * 0",
            "@hourly",
            "@daily",
            "@weekly",
            "@monthly",
        ];
        let zones = [
            "UTC",
            "Europe/Berlin",
            "Europe/London",
            "Europe/Dublin",
            "America/New_York",
            "America/Sao_Paulo",
            "America/Santiago",
            "America/Havana",
            "America/St_Johns",
            "America/Nuuk",
            "America/Asuncion",
            "Australia/Sydney",
            "Australia/Lord_Howe",
            "Pacific/Chatham",
            "Pacific/Auckland",
            "Asia/Kolkata",
            "Asia/Tehran",
            "Africa/Cairo",
            "Africa/Casablanca",
            "Africa/El_Aaiun",
            "Asia/Gaza",
            "Asia/Hebron",
        ];
        let (from, until) = (
            utc(2025, 1, 1, 0, 0) as i64 / 1000,
            utc(2033, 1, 1, 0, 0) as i64 / 1000,
        );
        let mut compared = 0;
        for zone in zones {
            let tz = jiff_zone(zone);
            let mut starts: Vec<i64> = Vec::new();
            for t in tz
                .following(at(from))
                .map(|t| t.timestamp().as_second())
                .take_while(|t| *t < until)
            {
                starts.extend([t - 3 * 3600 - 1, t - 3600, t - 60, t, t + 1800]);
            }
            // And points spread over the span, a prime number of seconds apart.
            starts.extend((from..until).step_by(7_919_993));
            for expr in exprs {
                let ours = CronSchedule::new(expr, zone).unwrap();
                let theirs: croner::Cron = expr.parse().unwrap();
                for start in &starts {
                    let mut ours_at = *start;
                    let mut theirs_at = at(*start).to_zoned(tz.clone());
                    for _ in 0..3 {
                        let next = ours.next_after(ours_at as u64 * 1000).unwrap() as i64 / 1000;
                        theirs_at = theirs.find_next_occurrence(&theirs_at, false).unwrap();
                        assert_eq!(
                            format_utc(next as u64 * 1000),
                            format_utc(theirs_at.timestamp().as_second() as u64 * 1000),
                            "{expr:?} in {zone} after {} (croner: {theirs_at})",
                            format_utc(ours_at as u64 * 1000)
                        );
                        ours_at = next;
                        compared += 1;
                    }
                }
            }
        }
        assert!(compared > 50_000, "{compared}");
    }
}

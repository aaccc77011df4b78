//! The Cloudflare plans' limits and the per-invocation budget that keeps the
//! Worker inside them: every subrequest and storage operation is counted
//! before it is made, and work that does not fit waits for the next
//! invocation. Also the check that refuses a configuration that cannot fit
//! the plan, the cron slots that spread probes over invocations, and a daily
//! write allowance. Sans-IO: the shells make the calls, this decides.

use serde::{Deserialize, Serialize};

use crate::config::{Config, Role};
use crate::core::history_rows::ROW_BYTES;
use crate::core::state::State;

/// The Cloudflare Workers plan the edge runs on (`[worker] plan`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    #[default]
    Free,
    Paid,
}

/// The cron fires once a minute: one invocation per minute.
pub const CRON_MS: u64 = 60_000;
/// Simultaneous outgoing connections a Worker may hold (both plans).
pub const CONNECTIONS: usize = 6;
/// Storage operations one cycle keeps for itself whatever else happens:
/// reading the state and the history, writing them back.
pub const CYCLE_STORAGE: u32 = 4;
/// Outbox deliveries one cycle keeps room for.
pub const ALERTS_KEPT: u32 = 2;
/// A round's calls besides the model's: diagnostics, actions, the action,
/// the re-probe, and two state saves (the lease, the decision).
const ROUND_CALLS: u32 = 6;

impl Plan {
    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Free => "free",
            Plan::Paid => "paid",
        }
    }

    /// The plan's subrequests per invocation (Workers docs).
    pub fn subrequest_limit(self) -> u32 {
        match self {
            Plan::Free => 50,
            Plan::Paid => 10_000,
        }
    }

    /// What Vigil lets itself spend: the limit less a safety margin (a
    /// fifth on free, a tenth on paid) for what the platform counts that
    /// Vigil cannot see (retries, redirects).
    pub fn subrequest_budget(self) -> u32 {
        match self {
            Plan::Free => 40,
            Plan::Paid => 9_000,
        }
    }

    /// Workers KV writes a day: 1,000 on free; paid includes a million a
    /// month, taken here as a day's share.
    pub fn kv_writes_per_day(self) -> u32 {
        match self {
            Plan::Free => 1_000,
            Plan::Paid => 33_000,
        }
    }

    /// The writes a day crash reports may spend (the crash log and the state
    /// they change): a fifth of the day's writes, so a flood cannot starve
    /// state saves.
    pub fn crash_writes_per_day(self) -> u32 {
        self.kv_writes_per_day() / 5
    }

    /// Rows a SQLite-backed Durable Object may write a day: 100,000 on
    /// free; paid includes 50 million a month, taken as a day's share.
    pub fn durable_rows_per_day(self) -> u64 {
        match self {
            Plan::Free => 100_000,
            Plan::Paid => 1_600_000,
        }
    }

    /// The writes a day the history may spend at most.
    pub fn history_writes_per_day(self) -> u32 {
        self.kv_writes_per_day() * 3 / 10
    }
}

/// Probes one shard takes in one call: the Durable Object store spreads a
/// wave bigger than this over shard objects, each with its own invocation
/// budget (it keeps 8 for itself and its answer).
pub fn shard_size(plan: Plan) -> usize {
    (plan.subrequest_budget() - 8) as usize
}

/// The region objects' calls one invocation makes for its slot's regular
/// probes: per region other than this edge's, one per `shard_size` of its
/// targets due.
pub fn region_calls(config: &Config, plan: Plan, slots: u64) -> u32 {
    let per_call = shard_size(plan) as u64;
    config
        .remote_regions()
        .into_iter()
        .map(|r| {
            let n = config
                .targets
                .iter()
                .filter(|t| t.regions.iter().any(|x| x == r));
            (n.count() as u64).div_ceil(slots).div_ceil(per_call) as u32
        })
        .sum()
}

/// Subrequests of one remediation round at most: its calls, and per model
/// turn the model call and one read-only tool call.
pub fn round_cost(config: &Config) -> u32 {
    ROUND_CALLS + 2 * config.llm.max_turns
}

/// Subrequests of one runbook step on `host` at most: the run's save
/// before the action is sent, the action, a re-probe of each target on the
/// host, and the step's record saved after it.
pub fn step_cost(config: &Config, host: &str) -> u32 {
    let reprobes = config
        .targets
        .iter()
        .filter(|t| t.host.as_deref() == Some(host))
        .count();
    3 + reprobes as u32
}

/// How many cron invocations one probe interval spans: each target is
/// probed in one of them (its slot), so a shard probes a share each minute.
pub fn slots(config: &Config) -> u64 {
    config.interval_ms().div_ceil(CRON_MS).max(1)
}

/// Whether target `index` is due in the invocation at `now_ms`: targets are
/// spread over the interval's invocations round-robin, so every target is
/// probed once per interval with nothing stored.
pub fn in_slot(index: usize, slots: u64, now_ms: u64) -> bool {
    (index as u64) % slots == (now_ms / CRON_MS) % slots
}

/// The subrequests a cycle keeps for storage, alerts, host polls, one
/// remediation round or one `[[runbook]]` step (whichever costs more: a
/// step waits for an invocation where no round took them) and
/// `[deadman]`'s ping; the rest is for probes.
pub fn overhead(config: &Config) -> u32 {
    let round = if config.targets.iter().any(|t| t.role == Role::Remediate) {
        round_cost(config)
    } else {
        0
    };
    let deadman = u32::from(config.deadman.url_env.is_some());
    let step = config
        .runbooks
        .iter()
        .map(|r| step_cost(config, &r.host))
        .max()
        .unwrap_or(0);
    CYCLE_STORAGE + ALERTS_KEPT + config.hosts.len() as u32 + round.max(step) + deadman
}

/// Why a configuration cannot fit its plan: the number that does not fit
/// and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[worker] plan = {plan:?}: {reason}")]
pub struct DoesNotFit {
    pub plan: &'static str,
    pub reason: String,
}

/// Refuses a configuration that one invocation a minute cannot serve on
/// `plan`: more targets per invocation than the subrequest budget leaves
/// for probes, or a history flush that spends more writes a day than the
/// plan's share.
pub fn check(config: &Config, plan: Plan, store: StoreKind) -> Result<(), DoesNotFit> {
    let refuse = |reason: String| DoesNotFit {
        plan: plan.as_str(),
        reason,
    };
    let budget = plan.subrequest_budget();
    let slots = slots(config);
    // Each region object's call is one subrequest (up to `shard_size`
    // targets of its region each), kept like the overhead.
    let overhead = overhead(config) + region_calls(config, plan, slots);
    let room = budget.saturating_sub(overhead);
    // In the Durable Object store each subrequest of the cycle can be a
    // shard's call, carrying `shard_size` probes.
    let per_call = match store {
        StoreKind::Kv => 1,
        StoreKind::DurableObject => shard_size(plan) as u64,
    };
    let here = config
        .targets
        .iter()
        .filter(|t| config.probes_here(t))
        .count() as u64;
    let per_invocation = here.div_ceil(slots);
    let fits = room as u64 * per_call;
    if per_invocation > fits {
        let most = fits * slots;
        return Err(refuse(format!(
            "{here} targets need {per_invocation} probes per invocation ({slots} invocation(s) per interval_s = {}), but one invocation may make {budget} subrequests and {overhead} are kept for storage, alerts, host polls, a remediation round or runbook step, and region objects, leaving {room}{}: at most {most} targets fit; remove {} targets, raise interval_s, {}or set plan = \"paid\"",
            config.interval_s,
            if per_call > 1 { format!(", each a shard of {per_call} probes") } else { String::new() },
            here - most,
            if per_call > 1 { "" } else { "use the Durable Object store (it spreads probes over shards), " },
        )));
    }
    let flush_s = config.history_flush_s;
    let history_writes = if flush_s > 0.0 {
        (86_400.0 / flush_s).ceil() as u32 + 24
    } else {
        (86_400_000 / CRON_MS) as u32
    };
    if history_writes > plan.history_writes_per_day() {
        return Err(refuse(format!(
            "history_flush_s = {flush_s} stores the history about {history_writes} times a day, over the {} writes a day kept for it; raise history_flush_s (600 by default) or set plan = \"paid\"",
            plan.history_writes_per_day()
        )));
    }
    // The Durable Object store writes an hour row holding every target (in
    // chunks of `ROW_BYTES`) at each history store; half the day's rows are
    // kept for that.
    let chunks =
        (config.targets.len() as u64 * HOUR_ROW_BYTES_PER_TARGET).div_ceil(ROW_BYTES as u64);
    let rows = history_writes as u64 * chunks.max(1);
    let allowance = plan.durable_rows_per_day() / 2;
    if store == StoreKind::DurableObject && rows > allowance {
        return Err(refuse(format!(
            "{} targets: each history store writes {chunks} rows, about {history_writes} times a day at history_flush_s = {flush_s}: {rows} rows, over the {allowance} rows a day kept for the history in the Durable Object store; raise history_flush_s, remove targets or set plan = \"paid\"",
            config.targets.len()
        )));
    }
    Ok(())
}

/// Where the Worker keeps its documents (`VIGIL_STORE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Kv,
    DurableObject,
}

/// One target's part of an hour row at most (`core::history_rows`: the
/// hour, 12 slices and a latency histogram spread over 40 buckets).
pub const HOUR_ROW_BYTES_PER_TARGET: u64 = 400;
/// The history of one target after 30 days (BENCHMARKS.md: 35 KB), with a
/// margin.
pub const HISTORY_BYTES_PER_TARGET: u64 = 36_000;
/// One target's share of the state document (BENCHMARKS.md: 80 bytes
/// steady), with a margin for its incidents.
pub const STATE_BYTES_PER_TARGET: u64 = 200;

impl StoreKind {
    /// The largest value the store takes: 25 MiB in KV; 2 MB for key and
    /// value in a SQLite-backed Durable Object.
    pub fn value_limit(self) -> u64 {
        match self {
            StoreKind::Kv => 25 * 1024 * 1024,
            StoreKind::DurableObject => 2_000_000,
        }
    }

    /// What its largest value holds per target: KV keeps every target's
    /// history in one value; the Durable Object keeps the history in rows
    /// by time chunked under 128 KB, so its largest value is the state.
    fn bytes_per_target(self) -> (u64, &'static str) {
        match self {
            StoreKind::Kv => (
                HISTORY_BYTES_PER_TARGET,
                "the KV store keeps every target's 30-day history in one value",
            ),
            StoreKind::DurableObject => (
                STATE_BYTES_PER_TARGET,
                "the Durable Object store keeps every target's state in one value",
            ),
        }
    }
}

/// Refuses more targets than the store's largest value can hold.
pub fn check_store(config: &Config, store: StoreKind) -> Result<(), DoesNotFit> {
    let (per_target, what) = store.bytes_per_target();
    let most = store.value_limit() / per_target;
    let n = config.targets.len() as u64;
    if n > most {
        return Err(DoesNotFit {
            plan: config.plan().as_str(),
            reason: format!(
                "{n} targets: {what} (at most {} bytes, about {per_target} bytes per target), so at most {most} targets fit; remove {} targets{}",
                store.value_limit(),
                n - most,
                if store == StoreKind::Kv { ", or use the Durable Object store (VIGIL_STORE = \"durable_object\")" } else { "" },
            ),
        });
    }
    Ok(())
}

/// What one invocation may still spend, and what it spent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub limit: u32,
    /// Outgoing requests made (probes, alerts, agent and model calls, and
    /// Workers KV operations, which the platform counts alike).
    pub subrequests: u32,
    pub storage_reads: u32,
    pub storage_writes: u32,
    /// Work left for the next invocation because it did not fit.
    pub carried: Carried,
}

/// Work carried to the next invocation, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carried {
    pub probes: u32,
    pub rounds: u32,
    pub alerts: u32,
    pub host_polls: u32,
    /// Approved runbook steps (one a run) waiting for an invocation with
    /// room for them.
    #[serde(default)]
    pub steps: u32,
}

impl Carried {
    pub fn total(&self) -> u32 {
        self.probes + self.rounds + self.alerts + self.host_polls + self.steps
    }
}

/// A storage operation, for `Budget::storage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
}

impl Budget {
    pub fn new(plan: Plan) -> Self {
        Budget {
            limit: plan.subrequest_budget(),
            ..Budget::default()
        }
    }

    pub fn remaining(&self) -> u32 {
        self.limit.saturating_sub(self.subrequests)
    }

    /// Takes `n` subrequests if they fit, keeping `keep` for later.
    pub fn take(&mut self, n: u32, keep: u32) -> bool {
        let fits = self.subrequests + n + keep <= self.limit;
        if fits {
            self.subrequests += n;
        }
        fits
    }

    /// How many of `wanted` calls fit now, keeping `keep`; takes them.
    pub fn take_up_to(&mut self, wanted: u32, keep: u32) -> u32 {
        let n = wanted.min(self.limit.saturating_sub(self.subrequests + keep));
        self.subrequests += n;
        n
    }

    /// Counts a storage operation; on Workers KV it is a subrequest too.
    /// The cycle's own reads and writes are kept for (`CYCLE_STORAGE`), so
    /// they are counted, never refused.
    pub fn storage(&mut self, op: Op, kv: bool) {
        match op {
            Op::Read => self.storage_reads += 1,
            Op::Write => self.storage_writes += 1,
        }
        if kv {
            self.subrequests += 1;
        }
    }
}

/// Writes spent today on one kind of document, stored with it (so counting
/// costs no write of its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyWrites {
    /// Days since the epoch (UTC).
    pub day: u64,
    pub used: u32,
}

const DAY_MS: u64 = 86_400_000;

impl DailyWrites {
    /// Takes `n` writes of today's `allowance` if they fit; `Err` holds the
    /// milliseconds until the allowance renews (the next UTC day).
    pub fn take(&mut self, n: u32, allowance: u32, now_ms: u64) -> Result<(), u64> {
        let today = self.renew(now_ms);
        if self.used + n > allowance {
            return Err((today + 1) * DAY_MS - now_ms);
        }
        self.used += n;
        Ok(())
    }

    /// Counts `n` writes made today; the day's count so far.
    pub fn add(&mut self, n: u32, now_ms: u64) -> u32 {
        self.renew(now_ms);
        self.used += n;
        self.used
    }

    /// Starts a new count when the UTC day changed; today.
    fn renew(&mut self, now_ms: u64) -> u64 {
        let today = now_ms / DAY_MS;
        if self.day != today {
            *self = DailyWrites {
                day: today,
                used: 0,
            };
        }
        today
    }
}

/// The state as far as a write is worth it: an outbox entry's retry
/// bookkeeping (attempts, last error, next attempt) changes with every
/// failed delivery, and is not worth a write on its own, so an alert that
/// cannot be delivered costs no write per cycle. It is stored with the next
/// change that is.
pub fn worth_storing(state: &State) -> State {
    let mut settled = state.clone();
    for e in settled.outbox.entries.iter_mut() {
        e.attempts = 0;
        e.last_error = None;
        e.next_attempt_at_ms = e.created_at_ms;
    }
    settled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str, targets: usize) -> Config {
        let mut text = format!("interval_s = 60\n{extra}\n");
        for i in 0..targets {
            text.push_str(&format!(
                "[[target]]\nid = \"t{i}\"\nurl = \"http://127.0.0.1:9/{i}\"\n"
            ));
        }
        Config::parse("test.toml", &text).unwrap()
    }

    #[test]
    fn the_free_plan_refuses_more_targets_than_one_invocation_can_probe() {
        let room = (Plan::Free.subrequest_budget() - CYCLE_STORAGE - ALERTS_KEPT) as usize;
        assert_eq!(check(&config("", room), Plan::Free, StoreKind::Kv), Ok(()));
        let err = check(&config("", room + 5), Plan::Free, StoreKind::Kv).unwrap_err();
        assert!(
            err.to_string().contains(&format!("{} targets", room + 5)),
            "{err}"
        );
        assert!(err.to_string().contains("remove 5 targets"), "{err}");
        assert!(err.to_string().contains("plan = \"paid\""), "{err}");
        assert_eq!(check(&config("", 1000), Plan::Paid, StoreKind::Kv), Ok(()));
        // Shards: 34 calls of 32 probes.
        let sharded = check(&config("", 200), Plan::Free, StoreKind::DurableObject);
        assert_eq!(sharded, Ok(()));
        let err = check(&config("", 1100), Plan::Free, StoreKind::DurableObject).unwrap_err();
        assert!(
            err.to_string().contains("at most 1088 targets fit"),
            "{err}"
        );
    }

    #[test]
    fn each_region_object_call_is_kept_in_the_budget() {
        let room = (Plan::Free.subrequest_budget() - CYCLE_STORAGE - ALERTS_KEPT) as usize;
        let mut c = config("", room);
        assert_eq!(check(&c, Plan::Free, StoreKind::Kv), Ok(()));
        // Three regions on two targets: three calls kept, and those
        // targets are not probed from here (region "main" is not listed).
        let three: Vec<String> = ["weur", "enam", "apac"].map(String::from).into();
        assert_eq!(region_calls(&c, Plan::Free, 1), 0);
        c.targets[0].regions = three.clone();
        c.targets[1].regions = three;
        assert_eq!(region_calls(&c, Plan::Free, 1), 3);
        let err = check(&c, Plan::Free, StoreKind::Kv).unwrap_err();
        assert!(
            err.to_string().contains("32 targets need 32 probes per invocation")
                && err.to_string().contains(
                    "9 are kept for storage, alerts, host polls, a remediation round or runbook step, and region objects, leaving 31"
                ),
            "{err}"
        );
        // One more target probed from weur only: no new call, one probe
        // less from here.
        c.targets[2].regions = vec!["weur".into()];
        assert_eq!(region_calls(&c, Plan::Free, 1), 3);
        assert_eq!(check(&c, Plan::Free, StoreKind::Kv), Ok(()));
    }

    #[test]
    fn a_runbook_step_waits_for_an_invocation_with_room_for_it() {
        let mut c = config(
            "[[host]]\nid = \"web\"\nurl_env = \"U\"\ntoken_env = \"T\"\n",
            3,
        );
        c.targets[0].host = Some("web".into());
        c.targets[2].host = Some("web".into());
        // The run's save, the action, two re-probes, the step's record.
        assert_eq!(step_cost(&c, "web"), 5);
        assert_eq!(step_cost(&c, "other"), 3);
        let mut b = Budget::new(Plan::Free);
        let limit = b.limit;
        assert!(b.take(limit - 6, 0));
        assert!(!b.take(0, step_cost(&c, "web") + 2), "no room: carried");
        assert!(b.take(0, step_cost(&c, "web") + 1));
        // Kept for in every invocation, so that a step always fits one.
        let without = overhead(&c);
        c.runbooks.push(crate::config::Runbook {
            id: "fix".into(),
            host: "web".into(),
            steps: vec!["restart_gateway".into()],
            approval: true,
            expires_s: 60.0,
        });
        assert_eq!(overhead(&c), without + 5);
        // A round (14 with the default model turns) or a step, not both.
        c.targets[0].role = crate::config::Role::Remediate;
        assert_eq!(overhead(&c), without + round_cost(&c));
    }

    #[test]
    fn a_longer_interval_spreads_targets_over_invocations() {
        let c = config("", 0);
        let mut c5 = c.clone();
        c5.interval_s = 300.0;
        assert_eq!(slots(&c), 1);
        assert_eq!(slots(&c5), 5);
        // Over five consecutive invocations each of 12 targets is due once.
        for i in 0..12 {
            let times = (0..5)
                .filter(|k| in_slot(i, 5, 1_000_000 * CRON_MS + k * CRON_MS))
                .count();
            assert_eq!(times, 1, "target {i}");
        }
        let mut many = config("", 100);
        many.interval_s = 300.0;
        assert_eq!(
            check(&many, Plan::Free, StoreKind::Kv),
            Ok(()),
            "20 per invocation fit"
        );
    }

    #[test]
    fn a_history_flush_every_cycle_does_not_fit_the_free_plan() {
        let err = check(&config("history_flush_s = 0", 1), Plan::Free, StoreKind::Kv).unwrap_err();
        assert!(err.to_string().contains("history_flush_s"), "{err}");
        assert_eq!(
            check(&config("history_flush_s = 0", 1), Plan::Paid, StoreKind::Kv),
            Ok(())
        );
    }

    #[test]
    fn the_largest_value_limits_the_targets_per_store() {
        let paid = "[worker]\nplan = \"paid\"";
        assert_eq!(check_store(&config(paid, 700), StoreKind::Kv), Ok(()));
        let err = check_store(&config(paid, 1000), StoreKind::Kv).unwrap_err();
        assert!(
            err.to_string()
                .contains("at most 728 targets fit; remove 272"),
            "{err}"
        );
        assert!(err.to_string().contains("durable_object"), "{err}");
        // History rows by time, chunked: the state is the largest value.
        assert_eq!(
            check_store(&config(paid, 1000), StoreKind::DurableObject),
            Ok(())
        );
    }

    #[test]
    fn the_budget_never_goes_past_its_limit() {
        let mut b = Budget::new(Plan::Free);
        assert_eq!(b.take_up_to(100, 6), 34);
        assert!(!b.take(1, 6));
        assert!(b.take(1, 5));
        b.storage(Op::Write, false);
        assert_eq!((b.subrequests, b.storage_writes), (35, 1));
        b.storage(Op::Read, true);
        assert_eq!(b.remaining(), 4);
    }

    #[test]
    fn failed_deliveries_alone_are_not_worth_a_write() {
        use crate::core::alert::{Alert, Delivery};
        use crate::core::route::Severity;
        let mut state = State::default();
        let msg = crate::core::alert::page_message(None, "api", "inc-1", "why", &[]);
        let alert = |key: &str| Alert::notice(key.into(), Severity::Critical, "api", msg.clone());
        state.outbox.push(alert("k1"), 5);
        let before = serde_json::to_string(&worth_storing(&state)).unwrap();
        for t in 0..100 {
            // Past each failure's backoff (at most a minute).
            let at = 10 + t * 61_000;
            let id = state.outbox.due(at, 30).unwrap().id;
            let error = format!("503 at {t}");
            state.outbox.record(id, Delivery::Failed { error }, at);
        }
        let after = serde_json::to_string(&worth_storing(&state)).unwrap();
        assert_eq!(before, after);
        assert_eq!(state.outbox.entries[0].attempts, 100, "kept in memory");
        state.outbox.push(alert("k2"), 200);
        let queued = serde_json::to_string(&worth_storing(&state)).unwrap();
        assert_ne!(before, queued, "a new alert is worth a write");
    }

    #[test]
    fn daily_writes_renew_each_day() {
        let mut d = DailyWrites::default();
        let now = 10 * DAY_MS + 1000;
        assert_eq!(d.take(2, 3, now), Ok(()));
        assert_eq!(d.take(2, 3, now), Err(DAY_MS - 1000));
        assert_eq!(d.take(1, 3, now), Ok(()));
        assert_eq!(d.take(3, 3, 11 * DAY_MS), Ok(()));
        assert_eq!(d.add(4, 11 * DAY_MS), 7);
        assert_eq!(d.add(1, 12 * DAY_MS), 1, "a new day");
    }
}

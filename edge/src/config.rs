//! The edge's TOML configuration, validated once: a bad file fails at start
//! with the file, the key and the reason.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::core::budget::Plan;
use crate::core::schedule::{CronSchedule, ScheduleError};

#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

/// Whether a target may be healed automatically or is only watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Remediate,
    AlertOnly,
}

/// A body check: substring, or a JSON pointer that must equal a value.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodyJson {
    pub pointer: String,
    pub equals: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub id: String,
    pub url: String,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default = "default_expect_status")]
    pub expect_status: Vec<u16>,
    #[serde(default)]
    pub body_contains: Option<String>,
    #[serde(default)]
    pub body_json: Option<BodyJson>,
    #[serde(default = "default_degraded_ms")]
    pub degraded_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_role")]
    pub role: Role,
    #[serde(default)]
    pub host: Option<String>,
    /// The remediation ladder, narrowest first.
    #[serde(default)]
    pub actions: Vec<String>,
    /// Whether a degraded (slow but correct) target is remediated too.
    #[serde(default)]
    pub remediate_degraded: bool,
    /// Availability objective in percent (e.g. 99.9): error budget and
    /// burn-rate alerts.
    #[serde(default)]
    pub slo: Option<f64>,
    /// The objective's window, in days (at most 30: the history kept).
    #[serde(default = "default_slo_days")]
    pub slo_days: u32,
}

/// A job that reports heartbeats: late after `period_s + grace_s` without
/// an `ok` (or, with `cron`, `grace_s` after a scheduled run without one);
/// a run started and not ended within `grace_s` is late too.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub id: String,
    #[serde(default)]
    pub period_s: Option<f64>,
    /// Five-field cron expression, instead of `period_s`.
    #[serde(default)]
    pub cron: Option<String>,
    /// The cron's zone: an IANA name or a POSIX TZ rule (default UTC).
    #[serde(default)]
    pub tz: Option<String>,
    #[serde(default)]
    pub grace_s: f64,
    /// Page the on-call person when the job's incident opens.
    #[serde(default)]
    pub page: bool,
    /// Built from `cron` and `tz` when the file is read.
    #[serde(skip)]
    pub schedule: Option<CronSchedule>,
}

/// What a heartbeat from a job not in the file does.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobDefaults {
    /// Create the job (with the settings below) instead of answering 404.
    #[serde(default)]
    pub auto_create: bool,
    #[serde(default = "default_auto_period")]
    pub period_s: f64,
    #[serde(default)]
    pub grace_s: f64,
    #[serde(default)]
    pub page: bool,
}

impl Default for JobDefaults {
    fn default() -> Self {
        JobDefaults {
            auto_create: false,
            period_s: default_auto_period(),
            grace_s: 0.0,
            page: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub id: String,
    pub url_env: String,
    pub token_env: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discord {
    #[serde(default = "default_webhook_env")]
    pub webhook_url_env: String,
    #[serde(default = "default_oncall_env")]
    pub oncall_user_id_env: String,
}

impl Default for Discord {
    fn default() -> Self {
        Self {
            webhook_url_env: default_webhook_env(),
            oncall_user_id_env: default_oncall_env(),
        }
    }
}

/// The OpenAI-compatible planner. Without a key the ladder plans alone.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Llm {
    #[serde(default = "default_llm_base")]
    pub base_url: String,
    #[serde(default = "default_llm_model")]
    pub model: String,
    #[serde(default = "default_llm_key_env")]
    pub api_key_env: String,
    #[serde(default = "default_llm_timeout")]
    pub timeout_s: f64,
    /// Model turns allowed in one round (read-only tools use turns too).
    #[serde(default = "default_llm_turns")]
    pub max_turns: u32,
}

impl Default for Llm {
    fn default() -> Self {
        Self {
            base_url: default_llm_base(),
            model: default_llm_model(),
            api_key_env: default_llm_key_env(),
            timeout_s: default_llm_timeout(),
            max_turns: default_llm_turns(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_interval")]
    pub interval_s: f64,
    #[serde(default = "default_retry_after")]
    pub retry_after_s: f64,
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    #[serde(default = "default_recovery_threshold")]
    pub recovery_threshold: u32,
    #[serde(default = "default_state_dir")]
    pub state_dir: String,
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Targets probed at once.
    #[serde(default = "default_concurrency")]
    pub probe_concurrency: usize,
    #[serde(default = "default_settle")]
    pub settle_s: f64,
    #[serde(default = "default_max_rounds")]
    pub max_remediation_rounds: u32,
    /// How often one action may run in one incident (the ladder uses each
    /// action once whatever this says).
    #[serde(default = "default_max_runs_per_action")]
    pub max_runs_per_action: u32,
    #[serde(default = "default_cooldown")]
    pub remediation_cooldown_s: f64,
    /// How long history may wait in memory before it is stored (the Worker
    /// pays one KV write per store).
    #[serde(default = "default_history_flush")]
    pub history_flush_s: f64,
    /// How often an ops-agent's host metrics are read outside incidents.
    #[serde(default = "default_host_metrics_every")]
    pub host_metrics_every_s: f64,
    /// Crash reports: how long one fingerprint stays quiet after its alert.
    #[serde(default = "default_crash_cooldown")]
    pub crash_cooldown_s: f64,
    #[serde(default)]
    pub discord: Discord,
    #[serde(default)]
    pub llm: Llm,
    #[serde(default, rename = "target")]
    pub targets: Vec<Target>,
    #[serde(default, rename = "host")]
    pub hosts: Vec<Host>,
    #[serde(default, rename = "job")]
    pub jobs: Vec<Job>,
    #[serde(default)]
    pub job_defaults: JobDefaults,
    /// The Cloudflare Worker's plan; the native edge ignores it, `--check`
    /// checks the fit when the section is there.
    #[serde(default)]
    pub worker: Option<WorkerSection>,
}

/// `[worker]`: what the Worker may spend (see `core::budget`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSection {
    #[serde(default)]
    pub plan: Plan,
    /// How long a round's lease holds on the Worker: an invocation killed
    /// mid-round leaves it; the round resumes once it has expired.
    #[serde(default = "default_worker_lease")]
    pub lease_s: f64,
}

impl Default for WorkerSection {
    fn default() -> Self {
        WorkerSection {
            plan: Plan::default(),
            lease_s: default_worker_lease(),
        }
    }
}

fn default_worker_lease() -> f64 {
    300.0
}

fn default_method() -> String {
    "GET".into()
}
fn default_expect_status() -> Vec<u16> {
    vec![200]
}
fn default_degraded_ms() -> u64 {
    3500
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_role() -> Role {
    Role::AlertOnly
}
fn default_webhook_env() -> String {
    "DISCORD_WEBHOOK_URL".into()
}
fn default_oncall_env() -> String {
    "DISCORD_ALERT_USER_ID".into()
}
fn default_llm_base() -> String {
    "https://api.openai.com/v1".into()
}
fn default_llm_model() -> String {
    "gpt-4o-mini".into()
}
fn default_llm_key_env() -> String {
    "SEPARATE_OPENAI_KEY".into()
}
fn default_llm_timeout() -> f64 {
    20.0
}
fn default_llm_turns() -> u32 {
    4
}
fn default_interval() -> f64 {
    60.0
}
fn default_retry_after() -> f64 {
    15.0
}
fn default_failure_threshold() -> u32 {
    2
}
fn default_recovery_threshold() -> u32 {
    1
}
fn default_state_dir() -> String {
    ".vigil".into()
}
fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_concurrency() -> usize {
    256
}
fn default_settle() -> f64 {
    10.0
}
fn default_max_rounds() -> u32 {
    3
}
fn default_max_runs_per_action() -> u32 {
    2
}
fn default_cooldown() -> f64 {
    600.0
}

fn default_auto_period() -> f64 {
    86_400.0
}
fn default_slo_days() -> u32 {
    30
}
fn default_history_flush() -> f64 {
    600.0
}
fn default_host_metrics_every() -> f64 {
    300.0
}
fn default_crash_cooldown() -> f64 {
    3600.0
}

fn secs_to_ms(s: f64) -> u64 {
    (s * 1000.0).round() as u64
}

impl Config {
    pub fn interval_ms(&self) -> u64 {
        secs_to_ms(self.interval_s)
    }
    pub fn retry_after_ms(&self) -> u64 {
        secs_to_ms(self.retry_after_s)
    }
    pub fn settle_ms(&self) -> u64 {
        secs_to_ms(self.settle_s)
    }
    pub fn cooldown_ms(&self) -> u64 {
        secs_to_ms(self.remediation_cooldown_s)
    }
    pub fn history_flush_ms(&self) -> u64 {
        secs_to_ms(self.history_flush_s)
    }
    pub fn host_metrics_every_ms(&self) -> u64 {
        secs_to_ms(self.host_metrics_every_s)
    }
    pub fn crash_cooldown_ms(&self) -> u64 {
        secs_to_ms(self.crash_cooldown_s)
    }

    pub fn target(&self, id: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.id == id)
    }

    pub fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.id == id)
    }

    /// The job a heartbeat from an unconfigured `id` creates, when
    /// `[job_defaults] auto_create` allows it.
    pub fn auto_job(&self, id: &str) -> Option<Job> {
        let d = &self.job_defaults;
        (d.auto_create && valid_id(id)).then(|| Job {
            id: id.to_string(),
            period_s: Some(d.period_s),
            cron: None,
            tz: None,
            grace_s: d.grace_s,
            page: d.page,
            schedule: None,
        })
    }

    /// The Worker's plan: `[worker] plan`, free when not set.
    pub fn plan(&self) -> Plan {
        self.worker.as_ref().map(|w| w.plan).unwrap_or_default()
    }
    /// A round's lease on the Worker: `[worker] lease_s`.
    pub fn worker_lease_ms(&self) -> u64 {
        secs_to_ms(
            self.worker
                .as_ref()
                .map_or_else(default_worker_lease, |w| w.lease_s),
        )
    }

    pub fn host(&self, id: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.id == id)
    }

    /// Parses and validates `text`; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        let err = |key: &str, reason: String| ConfigError {
            file: file.to_string(),
            key: key.to_string(),
            reason,
        };
        let mut config: Config = basic_toml::from_str(text).map_err(|e| {
            let (key, reason) = split_toml_error(&e.to_string());
            err(&key, reason)
        })?;
        config
            .validate()
            .map_err(|(key, reason)| err(&key, reason))?;
        for (i, job) in config.jobs.iter_mut().enumerate() {
            if let Some(expr) = &job.cron {
                let schedule = CronSchedule::new(expr, job.tz.as_deref().unwrap_or("UTC"))
                    .map_err(|e| match e {
                        ScheduleError::Cron(why) => err(&format!("job[{i}].cron"), why),
                        ScheduleError::Zone(why) => err(&format!("job[{i}].tz"), why),
                    })?;
                job.schedule = Some(schedule);
            }
        }
        Ok(config)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let positive = |key: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err((
                    key.to_string(),
                    format!("must be greater than zero (got {v})"),
                ))
            }
        };
        positive("interval_s", self.interval_s)?;
        positive("retry_after_s", self.retry_after_s)?;
        positive("llm.timeout_s", self.llm.timeout_s)?;
        if let Some(w) = &self.worker {
            positive("worker.lease_s", w.lease_s)?;
        }
        if !(self.settle_s.is_finite() && self.settle_s >= 0.0) {
            return Err(("settle_s".into(), "must be zero or more".into()));
        }
        for (key, v) in [
            ("remediation_cooldown_s", self.remediation_cooldown_s),
            ("history_flush_s", self.history_flush_s),
            ("host_metrics_every_s", self.host_metrics_every_s),
            ("crash_cooldown_s", self.crash_cooldown_s),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err((key.into(), "must be zero or more".into()));
            }
        }
        if self.retry_after_s > self.interval_s {
            return Err((
                "retry_after_s".into(),
                "must not be longer than interval_s (the confirm probe belongs to the same cycle)"
                    .into(),
            ));
        }
        for (key, v) in [
            ("failure_threshold", self.failure_threshold),
            ("recovery_threshold", self.recovery_threshold),
            ("max_remediation_rounds", self.max_remediation_rounds),
            ("max_runs_per_action", self.max_runs_per_action),
            ("llm.max_turns", self.llm.max_turns),
        ] {
            if v == 0 {
                return Err((key.into(), "must be at least 1".into()));
            }
        }
        if self.probe_concurrency == 0 {
            return Err(("probe_concurrency".into(), "must be at least 1".into()));
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err((
                "listen".into(),
                format!("{:?} is not an address:port", self.listen),
            ));
        }
        let mut hosts = BTreeMap::new();
        for (i, h) in self.hosts.iter().enumerate() {
            let key = format!("host[{i}].id");
            if !valid_id(&h.id) {
                return Err((key, format!("{:?} must match [a-z0-9][a-z0-9_-]*", h.id)));
            }
            if hosts.insert(h.id.as_str(), ()).is_some() {
                return Err((key, format!("duplicate host id {:?}", h.id)));
            }
        }
        let mut ids = BTreeMap::new();
        for (i, t) in self.targets.iter().enumerate() {
            let key = |k: &str| format!("target[{i}].{k}");
            if !valid_id(&t.id) {
                return Err((
                    key("id"),
                    format!("{:?} must match [a-z0-9][a-z0-9_-]*", t.id),
                ));
            }
            if ids.insert(t.id.as_str(), ()).is_some() {
                return Err((key("id"), format!("duplicate target id {:?}", t.id)));
            }
            if !(t.url.starts_with("http://") || t.url.starts_with("https://")) {
                return Err((key("url"), format!("{:?} is not an http(s) URL", t.url)));
            }
            if !matches!(t.method.as_str(), "GET" | "HEAD" | "POST") {
                return Err((
                    key("method"),
                    format!("{:?}: use GET, HEAD or POST", t.method),
                ));
            }
            if t.expect_status.is_empty() || t.expect_status.iter().any(|s| !(100..600).contains(s))
            {
                return Err((
                    key("expect_status"),
                    "a non-empty list of HTTP statuses".into(),
                ));
            }
            if t.body_contains.is_some() && t.body_json.is_some() {
                return Err((
                    key("body_json"),
                    "give body_contains or body_json, not both".into(),
                ));
            }
            if let Some(j) = &t.body_json {
                if !(j.pointer.is_empty() || j.pointer.starts_with('/')) {
                    return Err((
                        key("body_json.pointer"),
                        "a JSON pointer starts with /".into(),
                    ));
                }
            }
            if t.timeout_ms == 0 {
                return Err((key("timeout_ms"), "must be greater than zero".into()));
            }
            if t.role == Role::Remediate {
                let Some(host) = &t.host else {
                    return Err((
                        key("host"),
                        "a remediate target names its ops-agent host".into(),
                    ));
                };
                if !hosts.contains_key(host.as_str()) {
                    return Err((key("host"), format!("no [[host]] with id {host:?}")));
                }
                if t.actions.is_empty() {
                    return Err((
                        key("actions"),
                        "a remediate target needs at least one action".into(),
                    ));
                }
            }
            if let Some(slo) = t.slo {
                if !(slo.is_finite() && slo > 0.0 && slo < 100.0) {
                    return Err((
                        key("slo"),
                        format!("a percentage between 0 and 100, exclusive (got {slo})"),
                    ));
                }
            }
            if !(1..=30).contains(&t.slo_days) {
                return Err((
                    key("slo_days"),
                    format!("1 to 30 days, the history kept (got {})", t.slo_days),
                ));
            }
            if let Some(bad) = t.actions.iter().find(|a| !valid_action(a)) {
                return Err((key("actions"), format!("{bad:?} is not an action name")));
            }
        }
        let mut jobs = BTreeMap::new();
        for (i, job) in self.jobs.iter().enumerate() {
            let key = |k: &str| format!("job[{i}].{k}");
            if !valid_id(&job.id) {
                return Err((
                    key("id"),
                    format!("{:?} must match [a-z0-9][a-z0-9_-]*", job.id),
                ));
            }
            if jobs.insert(job.id.as_str(), ()).is_some() {
                return Err((key("id"), format!("duplicate job id {:?}", job.id)));
            }
            match (job.period_s, &job.cron) {
                (Some(p), None) if !(p.is_finite() && p > 0.0) => {
                    return Err((
                        key("period_s"),
                        format!("must be greater than zero (got {p})"),
                    ));
                }
                (Some(_), None) => {}
                (None, Some(_)) => {}
                (Some(_), Some(_)) => {
                    return Err((key("cron"), "give period_s or cron, not both".into()))
                }
                (None, None) => return Err((key("period_s"), "give period_s or cron".into())),
            }
            if job.tz.is_some() && job.cron.is_none() {
                return Err((key("tz"), "tz goes with cron".into()));
            }
            if !(job.grace_s.is_finite() && job.grace_s >= 0.0) {
                return Err((
                    key("grace_s"),
                    format!("must be zero or more (got {})", job.grace_s),
                ));
            }
        }
        let d = &self.job_defaults;
        if !(d.period_s.is_finite() && d.period_s > 0.0) {
            return Err((
                "job_defaults.period_s".into(),
                "must be greater than zero".into(),
            ));
        }
        if !(d.grace_s.is_finite() && d.grace_s >= 0.0) {
            return Err(("job_defaults.grace_s".into(), "must be zero or more".into()));
        }
        Ok(())
    }
}

/// A TOML error names its key inside the message ("... for key `a.b` at
/// line 3 column 1"): the key moves to the error's key, the rest stays.
fn split_toml_error(message: &str) -> (String, String) {
    const MARK: &str = " for key `";
    let Some(start) = message.find(MARK) else {
        return ("(file)".into(), message.to_string());
    };
    let rest = &message[start + MARK.len()..];
    let Some(end) = rest.find('`') else {
        return ("(file)".into(), message.to_string());
    };
    let key = rest[..end].to_string();
    (key, format!("{}{}", &message[..start], &rest[end + 1..]))
}

fn valid_id(id: &str) -> bool {
    let mut c = id.chars();
    matches!(c.next(), Some('a'..='z' | '0'..='9'))
        && c.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
        && id.len() <= 64
}

/// Same rule as the ops-agent's allowlist.
fn valid_action(name: &str) -> bool {
    let mut c = name.chars();
    matches!(c.next(), Some('a'..='z')) && c.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
interval_s = 0.5
retry_after_s = 0.1
[[target]]
id = "api"
url = "http://127.0.0.1:9/healthz"
body_contains = "ok"
role = "remediate"
host = "vps1"
actions = ["restart_api_core", "restart_all"]
[[host]]
id = "vps1"
url_env = "OPS_AGENT_URL"
token_env = "OPS_AGENT_TOKEN"
"#;

    fn err(text: &str) -> String {
        Config::parse("edge.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn a_good_file_parses_with_defaults() {
        let c = Config::parse("edge.toml", GOOD).unwrap();
        assert_eq!(c.interval_ms(), 500);
        assert_eq!(c.failure_threshold, 2);
        assert_eq!(c.targets[0].expect_status, [200]);
        assert_eq!(c.targets[0].degraded_ms, 3500);
        assert_eq!(c.discord.webhook_url_env, "DISCORD_WEBHOOK_URL");
        assert_eq!(c.llm.api_key_env, "SEPARATE_OPENAI_KEY");
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../../deploy/edge.example.toml");
        Config::parse("deploy/edge.example.toml", text).unwrap();
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let e = err(&GOOD.replace("interval_s = 0.5", "interval_s = 0"));
        assert_eq!(
            e,
            "edge.toml: interval_s: must be greater than zero (got 0)"
        );
        let e = err(&GOOD.replace("host = \"vps1\"", "host = \"vps9\""));
        assert!(
            e.starts_with("edge.toml: target[0].host: no [[host]]"),
            "{e}"
        );
        let e = err(&GOOD.replace("body_contains", "body_containz"));
        assert!(e.contains("body_containz"), "{e}");
        let e = err(&GOOD.replace("\"remediate\"", "\"reboot\""));
        assert!(e.contains("reboot"), "{e}");
        let e = err(&GOOD.replace("http://127", "ftp://127"));
        assert!(e.contains("target[0].url"), "{e}");
        let e = err(&GOOD.replace("retry_after_s = 0.1", "retry_after_s = 0.7"));
        assert!(e.contains("retry_after_s: must not be longer"), "{e}");
        let e = err(&format!(
            "{GOOD}\n[[target]]\nid = \"api\"\nurl = \"http://x\"\n"
        ));
        assert!(e.contains("target[1].id: duplicate"), "{e}");
        let e = err(&GOOD.replace("\"restart_all\"", "\"rm -rf\""));
        assert!(e.contains("target[0].actions"), "{e}");
        let job = |extra: &str| err(&format!("{GOOD}\n[[job]]\nid = \"backup\"\n{extra}\n"));
        assert!(job("").contains("job[0].period_s: give period_s or cron"));
        assert!(job("period_s = 60\ncron = \"@daily\"").contains("not both"));
        assert!(
            job("cron = \"0 25 * * *\"").contains("job[0].cron: hour \"25\": 25 is outside 0-23")
        );
        let e = job("cron = \"0 9 * * *\"\ntz = \"Europe/Bérlin\"");
        assert!(e.contains("job[0].tz: \"Europe/Bérlin\" is neither"), "{e}");
        assert!(job("period_s = 60\ntz = \"UTC\"").contains("tz goes with cron"));
        let c = Config::parse(
            "edge.toml",
            &format!("{GOOD}\n[[job]]\nid = \"b\"\ncron = \"0 9 * * *\"\ntz = \"Europe/Berlin\"\n"),
        )
        .unwrap();
        assert_eq!(
            c.jobs[0].schedule.as_ref().unwrap().zone.name,
            "Europe/Berlin"
        );
        let e = err(&GOOD.replace("role =", "slo = 100\nrole ="));
        assert!(e.contains("target[0].slo: a percentage"), "{e}");
        let e = err(&GOOD.replace("role =", "slo = 99.9\nslo_days = 90\nrole ="));
        assert!(e.contains("target[0].slo_days"), "{e}");
    }
}

//! The edge's configuration (TOML natively, the same keys as JSON in the
//! Worker), validated once: a bad file fails at start with the file, the
//! key and the reason.

use serde::Deserialize;

use crate::core::budget::{Plan, StoreKind};
use crate::core::route::{valid_glob, DEFAULT_CHANNEL};
use crate::core::schedule::{CronSchedule, ScheduleError};

#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

/// A table of names to strings (header names to values or variables),
/// kept as JSON's map type (no second map type in the Worker's bundle);
/// validation makes every value a string.
pub type Table = serde_json::Map<String, serde_json::Value>;

/// A validated `Table`'s entries.
pub fn text_pairs(table: &Table) -> impl Iterator<Item = (&str, &str)> {
    table
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default()))
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
    /// The compose services on `host` this target depends on: a signal from
    /// the host's agent about one of them probes the target at once.
    #[serde(default)]
    pub services: Vec<String>,
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
    /// Shown on the public status page (its id, state and figures only).
    #[serde(default)]
    pub public: bool,
    /// With `public`: the page also shows each transition's HTTP status and
    /// error text (which may quote the target's body).
    #[serde(default)]
    pub public_details: bool,
    /// Targets this one needs: while one of them is down, this one's
    /// incident is folded into the parent's (no alert, page or remediation).
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// The vantage points that probe this target (`core::vantage`): region
    /// names, this edge's `region` among them or not. Empty: this edge alone.
    #[serde(default)]
    pub regions: Vec<String>,
    /// How many of `regions` must see the target bad for an incident
    /// (default: a majority).
    #[serde(default)]
    pub quorum: Option<u32>,
    /// Request headers sent with every probe (not secrets: the file is
    /// not a secret store).
    #[serde(default)]
    pub headers: Table,
    /// Request headers whose values come from the environment: header name
    /// -> variable name (an auth header's token).
    #[serde(default)]
    pub headers_env: Table,
    /// The request body: a string is sent as it is, anything else as
    /// JSON; none when absent (null).
    #[serde(default)]
    pub body: serde_json::Value,
    /// The body's `Content-Type` (default: `application/json` for a JSON
    /// body, `application/x-www-form-urlencoded` for a string).
    #[serde(default)]
    pub content_type: Option<String>,
    /// Follow redirects (up to 10); with `false` the 3xx is the answer.
    #[serde(default = "default_true")]
    pub follow_redirects: bool,
    /// Response headers that must be present and contain the given text
    /// (names are case-insensitive; `""` asks only for presence).
    #[serde(default)]
    pub expect_headers: Table,
    /// Warn (an alert, once per certificate) when the target's certificate
    /// expires within this many days. Native edge only.
    #[serde(default)]
    pub tls_expiry_days: Option<u32>,
}

impl Target {
    /// The probe's body and its content type, as sent.
    pub fn request_body(&self) -> Option<(String, &str)> {
        let (text, default_type) = match &self.body {
            serde_json::Value::Null => return None,
            serde_json::Value::String(s) => (s.clone(), "application/x-www-form-urlencoded"),
            other => (other.to_string(), "application/json"),
        };
        Some((text, self.content_type.as_deref().unwrap_or(default_type)))
    }

    /// Whether several vantage points decide this target's health.
    pub fn has_regions(&self) -> bool {
        !self.regions.is_empty()
    }

    /// The vantage points that must agree: `quorum`, or a majority of
    /// `regions`.
    pub fn quorum(&self) -> usize {
        self.quorum
            .map_or(self.regions.len() / 2 + 1, |q| q as usize)
    }
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
    /// Messages sent in any minute; more are folded into one summary
    /// (a webhook accepts about 30 a minute).
    #[serde(default = "default_discord_per_minute")]
    pub max_per_minute: u32,
}

impl Default for Discord {
    fn default() -> Self {
        Self {
            webhook_url_env: default_webhook_env(),
            oncall_user_id_env: default_oncall_env(),
            max_per_minute: default_discord_per_minute(),
        }
    }
}

/// The watcher's watcher: a URL pinged after every cycle (off by default).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deadman {
    /// The variable holding the ping URL (e.g. `https://hc-ping.com/<uuid>`).
    #[serde(default)]
    pub url_env: Option<String>,
    /// Alerts undelivered this long make the ping a `/fail`.
    #[serde(default = "default_deadman_fail_after")]
    pub fail_after_s: f64,
}

impl Deadman {
    pub fn fail_after_ms(&self) -> u64 {
        (self.fail_after_s * 1000.0) as u64
    }
}

impl Default for Deadman {
    fn default() -> Self {
        Deadman {
            url_env: None,
            fail_after_s: default_deadman_fail_after(),
        }
    }
}

fn default_deadman_fail_after() -> f64 {
    300.0
}

/// One-click ack links in pages: `<base_url>/ops/ack-link?...`, signed
/// with the secret in `secret_env`, valid `valid_s`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckLink {
    pub base_url: String,
    #[serde(default = "default_ack_link_secret_env")]
    pub secret_env: String,
    #[serde(default = "default_ack_link_valid")]
    pub valid_s: f64,
}

fn default_ack_link_secret_env() -> String {
    "ACK_LINK_SECRET".into()
}

fn default_ack_link_valid() -> f64 {
    86_400.0
}

/// One escalation level: a page not acknowledged within `ack_within_s` (of
/// the page, or of the previous level) pages these channels.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    pub ack_within_s: f64,
    pub channels: Vec<String>,
    /// The Discord user this level @mentions (an id, not a secret).
    #[serde(default)]
    pub user_id: Option<String>,
}

/// Where alerts can go (`[[channel]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum ChannelKind {
    Discord,
    Pagerduty,
    Slack,
    Webhook,
}

impl TryFrom<String> for ChannelKind {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "discord" => Ok(ChannelKind::Discord),
            "pagerduty" => Ok(ChannelKind::Pagerduty),
            "slack" => Ok(ChannelKind::Slack),
            "webhook" => Ok(ChannelKind::Webhook),
            _ => Err(format!("{s:?}: use discord, pagerduty, slack or webhook")),
        }
    }
}

/// PagerDuty's public Events v2 endpoint.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    pub id: String,
    pub kind: ChannelKind,
    /// The webhook URL's variable (Discord, Slack, webhook).
    #[serde(default)]
    pub url_env: Option<String>,
    /// The integration key's variable (PagerDuty).
    #[serde(default)]
    pub routing_key_env: Option<String>,
    #[serde(default)]
    pub events_url: Option<String>,
    /// The signing secret's variable (webhook).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Alerts about one subject within this long of the last are not sent
    /// again on this channel (pages and their ack/resolve excepted).
    #[serde(default)]
    pub cooldown_s: f64,
}

/// `[[webhook]]`: an automation receiver of state transitions, pages and
/// approvals, delivered through the outbox as a signed webhook channel.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url_env: String,
    pub secret_env: String,
    /// `transition`, `page`, `approval_request`, `approval_outcome`,
    /// `runbook`; empty: all of them.
    #[serde(default)]
    pub events: Vec<String>,
}

/// The outbox channel of the `[[webhook]]` at `index`: a name no
/// `[[channel]]` can have (ids take no dots).
pub fn webhook_channel_id(index: usize) -> String {
    format!("webhook.{}", index + 1)
}

/// `[[runbook]]`: a named, ordered list of allowlisted actions on one host,
/// run through `POST /ops/runbook/{id}/execute` (`core::runbook`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runbook {
    pub id: String,
    pub host: String,
    pub steps: Vec<String>,
    /// Nothing runs until a human approves (`/ops/approvals/{id}/approve`).
    #[serde(default = "default_true")]
    pub approval: bool,
    /// How long an approval may wait; after that it is expired, never run.
    #[serde(default = "default_runbook_expires")]
    pub expires_s: f64,
}

fn default_true() -> bool {
    true
}

fn default_runbook_expires() -> f64 {
    3600.0
}

/// Sends alerts of these severities about these targets to these channels.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Empty: every severity.
    #[serde(default)]
    pub severity: Vec<crate::core::route::Severity>,
    /// Globs over the alert's subject (target id, `job:<id>`, `crash:<app>`,
    /// `vigil`); empty: every subject.
    #[serde(default)]
    pub targets: Vec<String>,
    pub channels: Vec<String>,
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

/// `POST /_log`: what it takes and how much of it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrashLog {
    /// The apps whose reports are taken (others get 400); empty: any.
    #[serde(default)]
    pub apps: Vec<String>,
    /// Crash alerts within `crash_cooldown_s`, all apps together.
    #[serde(default = "default_crash_max_alerts")]
    pub max_alerts: u32,
    /// Open crash incidents, all apps together.
    #[serde(default = "default_crash_max_open")]
    pub max_open_incidents: u32,
    /// Requests per minute per client address (native edge).
    #[serde(default = "default_crash_per_minute")]
    pub per_minute: u32,
    #[serde(default = "default_crash_burst")]
    pub burst: u32,
}

impl Default for CrashLog {
    fn default() -> Self {
        CrashLog {
            apps: Vec::new(),
            max_alerts: default_crash_max_alerts(),
            max_open_incidents: default_crash_max_open(),
            per_minute: default_crash_per_minute(),
            burst: default_crash_burst(),
        }
    }
}

impl CrashLog {
    pub fn allows(&self, app: &str) -> bool {
        self.apps.is_empty() || self.apps.iter().any(|a| a == app)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_interval")]
    pub interval_s: f64,
    #[serde(default = "default_retry_after")]
    pub retry_after_s: f64,
    /// The confirm probe's wait after a host's signal moved a probe to now
    /// (`core::signal`); default 2 s, or `retry_after_s` when shorter.
    #[serde(default)]
    pub signal_confirm_s: Option<f64>,
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
    /// A target whose state changes more than this many times within
    /// `flap_window_s` is flapping.
    #[serde(default = "default_flap_threshold")]
    pub flap_threshold: u32,
    #[serde(default = "default_flap_window")]
    pub flap_window_s: f64,
    /// A flapping target that keeps one state this long has settled.
    #[serde(default = "default_flap_settle")]
    pub flap_settle_s: f64,
    /// An open, unacknowledged incident is reminded of this often (0: never).
    #[serde(default)]
    pub remind_every_s: f64,
    #[serde(default)]
    pub crash_log: CrashLog,
    /// This edge's vantage point: the region its own probes are from
    /// (`vigil-edge --probe-only` takes its region from `--region` or
    /// `VIGIL_REGION` instead).
    #[serde(default = "default_region")]
    pub region: String,
    /// A prober (and any vantage point's view) not heard from for this
    /// long is silent: alerted, and its view no longer counts (default:
    /// three intervals).
    #[serde(default)]
    pub prober_silent_s: Option<f64>,
    /// Whether a target seen bad from fewer vantage points than its quorum
    /// sends one warning alert per episode (it is recorded either way).
    #[serde(default = "default_true")]
    pub quorum_warning: bool,
    /// Proxies (CIDR) whose `CF-Connecting-IP` / `X-Real-IP` header names
    /// the client, for the native edge's per-client limits.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Failed authentications per minute per client address (native edge);
    /// past them, 429.
    #[serde(default = "default_auth_fail_per_minute")]
    pub auth_fail_per_minute: u32,
    #[serde(default = "default_auth_fail_burst")]
    pub auth_fail_burst: u32,
    /// A PEM file of extra root certificates the probes trust (a private
    /// CA), beside the built-in roots. Native edge only.
    #[serde(default)]
    pub probe_ca_file: Option<String>,
    #[serde(default)]
    pub discord: Discord,
    #[serde(default)]
    pub llm: Llm,
    #[serde(default)]
    pub deadman: Deadman,
    #[serde(default, rename = "channel")]
    pub channels: Vec<Channel>,
    #[serde(default, rename = "route")]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub ack_link: Option<AckLink>,
    #[serde(default, rename = "escalation")]
    pub escalations: Vec<Escalation>,
    #[serde(default, rename = "runbook")]
    pub runbooks: Vec<Runbook>,
    #[serde(default, rename = "webhook")]
    pub webhooks: Vec<Webhook>,
    #[serde(default, rename = "target")]
    pub targets: Vec<Target>,
    /// A target in this file wins over an API target of the same id
    /// (`POST /ops/targets` of its id is refused); by default the API
    /// target replaces the file's until it is deleted.
    #[serde(default)]
    pub file_targets_win: bool,
    #[serde(default, rename = "host")]
    pub hosts: Vec<Host>,
    #[serde(default, rename = "job")]
    pub jobs: Vec<Job>,
    #[serde(default)]
    pub job_defaults: JobDefaults,
    #[serde(default)]
    pub status_page: StatusPage,
    /// The PostHog proxy: natively on `listen`, on the Worker for `ph.`
    /// hosts.
    #[serde(default)]
    pub posthog: Option<PostHog>,
    /// The Cloudflare Worker's plan; the native edge ignores it, `--check`
    /// checks the fit when the section is there.
    #[serde(default)]
    pub worker: Option<WorkerSection>,
}

/// `[posthog]`: a first-party proxy to PostHog (`crate::posthog`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostHog {
    /// Native edge: the proxy's own address:port (the Worker serves it on
    /// `ph.` hosts instead).
    #[serde(default)]
    pub listen: Option<String>,
    #[serde(default = "default_ph_ingest")]
    pub ingest_host: String,
    #[serde(default = "default_ph_assets")]
    pub assets_host: String,
    /// Largest request body taken (413 past it).
    #[serde(default = "default_ph_max_body")]
    pub max_body_bytes: u64,
}

impl Default for PostHog {
    fn default() -> Self {
        PostHog {
            listen: None,
            ingest_host: default_ph_ingest(),
            assets_host: default_ph_assets(),
            max_body_bytes: default_ph_max_body(),
        }
    }
}

fn default_ph_ingest() -> String {
    "https://eu.i.posthog.com".into()
}
fn default_ph_assets() -> String {
    "https://eu-assets.i.posthog.com".into()
}
fn default_ph_max_body() -> u64 {
    5 << 20
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

/// The public status page (`GET /status`, `/status.json`): off by default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusPage {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_status_title")]
    pub title: String,
}

impl Default for StatusPage {
    fn default() -> Self {
        StatusPage {
            enabled: false,
            title: default_status_title(),
        }
    }
}

fn default_region() -> String {
    "main".into()
}

fn default_status_title() -> String {
    "Service status".into()
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
fn default_discord_per_minute() -> u32 {
    25
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

fn default_auth_fail_per_minute() -> u32 {
    10
}
fn default_auth_fail_burst() -> u32 {
    5
}
fn default_crash_max_alerts() -> u32 {
    20
}
fn default_crash_max_open() -> u32 {
    10
}
fn default_crash_per_minute() -> u32 {
    60
}
fn default_crash_burst() -> u32 {
    20
}
fn default_flap_threshold() -> u32 {
    6
}
fn default_flap_window() -> f64 {
    900.0
}
fn default_flap_settle() -> f64 {
    600.0
}

/// `signal_confirm_s` when not set (or `retry_after_s` when shorter).
const SIGNAL_CONFIRM_S: f64 = 2.0;

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
    /// The confirm probe's wait within `retry_after_s` of a host's signal:
    /// the host saw the crash, so the external probe only has to see it
    /// twice; 2 s leaves a container its restart policy brings straight
    /// back a chance, and is a thirtieth of the default interval.
    pub fn signal_confirm_ms(&self) -> u64 {
        secs_to_ms(
            self.signal_confirm_s
                .unwrap_or(SIGNAL_CONFIRM_S.min(self.retry_after_s)),
        )
    }
    pub fn settle_ms(&self) -> u64 {
        secs_to_ms(self.settle_s)
    }
    pub fn remind_every_ms(&self) -> u64 {
        secs_to_ms(self.remind_every_s)
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
    pub fn crash_limits(&self) -> crate::core::crash::CrashLimits {
        crate::core::crash::CrashLimits {
            cooldown_ms: self.crash_cooldown_ms(),
            max_alerts: self.crash_log.max_alerts as usize,
            max_open: self.crash_log.max_open_incidents as usize,
        }
    }
    pub fn flap_window_ms(&self) -> u64 {
        secs_to_ms(self.flap_window_s)
    }
    pub fn flap_settle_ms(&self) -> u64 {
        secs_to_ms(self.flap_settle_s)
    }

    /// How long a vantage point may stay quiet before it is silent.
    pub fn prober_silent_ms(&self) -> u64 {
        self.prober_silent_s
            .map_or(self.interval_ms().saturating_mul(3), secs_to_ms)
    }

    /// Whether this edge (its `region`) probes `target` itself.
    pub fn probes_here(&self, target: &Target) -> bool {
        !target.has_regions() || target.regions.contains(&self.region)
    }

    /// The regions other vantage points report from: every target's
    /// `regions` but this edge's own, each once, in the order listed (a
    /// short list: no set type in the Worker's bundle).
    pub fn remote_regions(&self) -> Vec<&str> {
        let mut regions = Vec::new();
        for r in self.targets.iter().flat_map(|t| t.regions.iter()) {
            if *r != self.region {
                first_time(&mut regions, r);
            }
        }
        regions
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

    /// What the Worker cannot do: `tls_expiry_days` (fetch shows no
    /// certificate), `probe_ca_file`; `regions` other than Cloudflare's
    /// location hints, or in the KV store (a region is a Durable Object).
    /// Refused at the Worker's start and by `--check` with a `[worker]`
    /// section, rather than silently never warning.
    pub fn check_worker(&self, store: StoreKind) -> Result<(), String> {
        if self.probe_ca_file.is_some() {
            return Err("probe_ca_file: the Worker trusts only the platform's roots".into());
        }
        for (i, t) in self.targets.iter().enumerate() {
            if t.tls_expiry_days.is_some() {
                return Err(format!(
                    "target[{i}].tls_expiry_days: the Worker cannot read certificates (fetch exposes none); \
                     remove it from the Worker's configuration or let a native edge watch the certificate"
                ));
            }
            if t.has_regions() && store == StoreKind::Kv {
                return Err(format!(
                    "target[{i}].regions: the KV store cannot host region objects (each region is a Durable Object \
                     created with that region as its location hint): set VIGIL_STORE = \"durable_object\""
                ));
            }
            if let Some(r) = t
                .regions
                .iter()
                .find(|r| !LOCATION_HINTS.contains(&r.as_str()))
            {
                return Err(format!(
                    "target[{i}].regions: {r:?} is not a Cloudflare location hint (the Worker's regions are {})",
                    LOCATION_HINTS.join(", ")
                ));
            }
        }
        Ok(())
    }

    pub fn host(&self, id: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.id == id)
    }

    /// Parses and validates TOML `text` (the native edge's file); `file`
    /// names it in errors.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        let config: Config = basic_toml::from_str(text).map_err(|e| {
            let (key, reason) = split_toml_error(&e.to_string());
            ConfigError {
                file: file.to_string(),
                key,
                reason,
            }
        })?;
        config.checked(file)
    }

    /// The TOML file as the JSON the Worker reads (`vigil-edge
    /// --print-json`), checked to give the same configuration.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn toml_as_json(file: &str, text: &str) -> Result<String, ConfigError> {
        let from_toml = Self::parse(file, text)?;
        let value: serde_json::Value = basic_toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_string(),
            key: String::new(),
            reason: e.to_string(),
        })?;
        let json = value.to_string();
        let from_json = Self::from_json(file, &json)?;
        if from_json != from_toml {
            return Err(ConfigError {
                file: file.to_string(),
                key: String::new(),
                reason: "the JSON form reads differently from the TOML (please report)".into(),
            });
        }
        Ok(json)
    }

    /// Parses and validates the same configuration as JSON (the Worker's
    /// `VIGIL_CONFIG`: no TOML parser in the Worker, whose bundle it would
    /// grow by 38 KB gzip; `vigil-edge --print-json` converts a file).
    pub fn from_json(file: &str, text: &str) -> Result<Self, ConfigError> {
        let config: Config = crate::core::json::read(text.as_bytes()).map_err(|e| ConfigError {
            file: file.to_string(),
            key: "(json)".into(),
            reason: e.to_string(),
        })?;
        config.checked(file)
    }

    /// Validates a configuration whose targets changed after it was read
    /// (targets added through the API), with the file's checks and errors.
    /// In place: the caller undoes a refused change (the Worker has no
    /// `Config: Clone`, see `core::control::effective`).
    pub fn revalidate(&mut self) -> Result<(), ConfigError> {
        // The `[[webhook]]`s' channels, added last by `checked`, set aside
        // while the declared ones are checked; a target changes neither
        // them nor the jobs' schedules.
        let declared = self.channels.len().saturating_sub(self.webhooks.len());
        let webhooks = self.channels.split_off(declared);
        let checked = self.validate();
        self.channels.extend(webhooks);
        checked.map_err(|(key, reason)| ConfigError {
            file: "(api)".into(),
            key,
            reason,
        })
    }

    /// Validates a parsed configuration and compiles its cron schedules.
    fn checked(mut self, file: &str) -> Result<Self, ConfigError> {
        let err = |key: &str, reason: String| ConfigError {
            file: file.to_string(),
            key: key.to_string(),
            reason,
        };
        self.validate().map_err(|(key, reason)| err(&key, reason))?;
        for (i, h) in self.webhooks.iter().enumerate() {
            self.channels.push(Channel {
                id: webhook_channel_id(i),
                kind: ChannelKind::Webhook,
                url_env: Some(h.url_env.clone()),
                routing_key_env: None,
                events_url: None,
                secret_env: Some(h.secret_env.clone()),
                cooldown_s: 0.0,
            });
        }
        for (i, job) in self.jobs.iter_mut().enumerate() {
            if let Some(expr) = &job.cron {
                let schedule = CronSchedule::new(expr, job.tz.as_deref().unwrap_or("UTC"))
                    .map_err(|e| match e {
                        ScheduleError::Cron(why) => err(&format!("job[{i}].cron"), why),
                        ScheduleError::Zone(why) => err(&format!("job[{i}].tz"), why),
                    })?;
                job.schedule = Some(schedule);
            }
        }
        Ok(self)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        for (key, v, max) in [
            ("interval_s", self.interval_s, DAY_S),
            ("retry_after_s", self.retry_after_s, DAY_S),
            ("llm.timeout_s", self.llm.timeout_s, 600.0),
            ("flap_window_s", self.flap_window_s, WEEK_S),
            ("flap_settle_s", self.flap_settle_s, WEEK_S),
        ] {
            seconds(key, v, false, max)?;
        }
        for (key, v, max) in [
            ("settle_s", self.settle_s, 3600.0),
            (
                "remediation_cooldown_s",
                self.remediation_cooldown_s,
                WEEK_S,
            ),
            ("history_flush_s", self.history_flush_s, DAY_S),
            ("host_metrics_every_s", self.host_metrics_every_s, DAY_S),
            ("crash_cooldown_s", self.crash_cooldown_s, WEEK_S),
            ("remind_every_s", self.remind_every_s, WEEK_S),
        ] {
            seconds(key, v, true, max)?;
        }
        if let Some(w) = &self.worker {
            seconds("worker.lease_s", w.lease_s, false, DAY_S)?;
        }
        if let Some(v) = self.signal_confirm_s {
            seconds("signal_confirm_s", v, false, DAY_S)?;
            if v > self.retry_after_s {
                return Err((
                    "signal_confirm_s".into(),
                    "must not be longer than retry_after_s (a signal only shortens the confirm wait)"
                        .into(),
                ));
            }
        }
        seconds(
            "deadman.fail_after_s",
            self.deadman.fail_after_s,
            false,
            DAY_S,
        )?;
        if self.deadman.url_env.as_deref() == Some("") {
            return Err(("deadman.url_env".into(), "name a variable".into()));
        }
        if self.retry_after_s > self.interval_s {
            return Err((
                "retry_after_s".into(),
                "must not be longer than interval_s (the confirm probe belongs to the same cycle)"
                    .into(),
            ));
        }
        for (key, v, max) in [
            ("failure_threshold", self.failure_threshold, 100),
            ("recovery_threshold", self.recovery_threshold, 100),
            ("max_remediation_rounds", self.max_remediation_rounds, 100),
            ("max_runs_per_action", self.max_runs_per_action, 100),
            ("llm.max_turns", self.llm.max_turns, 50),
            ("flap_threshold", self.flap_threshold, 1000),
            ("discord.max_per_minute", self.discord.max_per_minute, 1000),
            ("crash_log.max_alerts", self.crash_log.max_alerts, 10_000),
            (
                "crash_log.max_open_incidents",
                self.crash_log.max_open_incidents,
                10_000,
            ),
            ("crash_log.per_minute", self.crash_log.per_minute, 1_000_000),
            ("crash_log.burst", self.crash_log.burst, 1_000_000),
            ("auth_fail_per_minute", self.auth_fail_per_minute, 1_000_000),
            ("auth_fail_burst", self.auth_fail_burst, 1_000_000),
            (
                "probe_concurrency",
                self.probe_concurrency.try_into().unwrap_or(u32::MAX),
                10_000,
            ),
        ] {
            count(key, v, max)?;
        }
        if let Some(s) = self.prober_silent_s {
            seconds("prober_silent_s", s, false, DAY_S)?;
            if s < self.interval_s {
                return Err((
                    "prober_silent_s".into(),
                    "must be at least interval_s (a prober reports once an interval)".into(),
                ));
            }
        }
        if !valid_id(&self.region) {
            return Err((
                "region".into(),
                format!("{:?} must match [a-z0-9][a-z0-9_-]*", self.region),
            ));
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err((
                "listen".into(),
                format!("{:?} is not an address:port", self.listen),
            ));
        }
        if let Some(ph) = &self.posthog {
            for (key, url) in [
                ("posthog.ingest_host", &ph.ingest_host),
                ("posthog.assets_host", &ph.assets_host),
            ] {
                let rest = url
                    .strip_prefix("https://")
                    .or_else(|| url.strip_prefix("http://"));
                if !rest.is_some_and(|r| !r.is_empty() && !r.contains(['/', '?', '#'])) {
                    return Err((
                        key.into(),
                        format!("{url:?}: an http(s) origin without a path"),
                    ));
                }
            }
            if let Some(listen) = &ph.listen {
                if listen.parse::<std::net::SocketAddr>().is_err() {
                    return Err((
                        "posthog.listen".into(),
                        format!("{listen:?} is not an address:port"),
                    ));
                }
            }
            count(
                "posthog.max_body_bytes",
                ph.max_body_bytes.try_into().unwrap_or(u32::MAX),
                64 << 20,
            )?;
        }
        self.validate_channels()?;
        self.validate_dependencies()?;
        let mut hosts = Vec::new();
        for (i, h) in self.hosts.iter().enumerate() {
            let key = format!("host[{i}].id");
            if !valid_id(&h.id) {
                return Err((key, format!("{:?} must match [a-z0-9][a-z0-9_-]*", h.id)));
            }
            if !first_time(&mut hosts, h.id.as_str()) {
                return Err((key, format!("duplicate host id {:?}", h.id)));
            }
        }
        let mut ids = Vec::new();
        for (i, t) in self.targets.iter().enumerate() {
            let key = |k: &str| format!("target[{i}].{k}");
            if !valid_id(&t.id) {
                return Err((
                    key("id"),
                    format!("{:?} must match [a-z0-9][a-z0-9_-]*", t.id),
                ));
            }
            if !first_time(&mut ids, t.id.as_str()) {
                return Err((key("id"), format!("duplicate target id {:?}", t.id)));
            }
            if !(t.url.starts_with("http://") || t.url.starts_with("https://")) {
                return Err((key("url"), format!("{:?} is not an http(s) URL", t.url)));
            }
            t.check_request().map_err(|(k, why)| (key(&k), why))?;
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
            count(
                &key("timeout_ms"),
                t.timeout_ms.try_into().unwrap_or(u32::MAX),
                600_000,
            )?;
            if t.degraded_ms > 600_000 {
                return Err((
                    key("degraded_ms"),
                    format!("at most 600000 (got {})", t.degraded_ms),
                ));
            }
            if let Some(host) = &t.host {
                if !hosts.contains(&host.as_str()) {
                    return Err((key("host"), format!("no [[host]] with id {host:?}")));
                }
            }
            if !t.services.is_empty() && t.host.is_none() {
                return Err((
                    key("services"),
                    "services are on a host: name the target's host too".into(),
                ));
            }
            if let Some(bad) = t.services.iter().find(|s| !valid_service(s)) {
                return Err((
                    key("services"),
                    format!("{bad:?} is not a compose service name ([a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 128)"),
                ));
            }
            if t.role == Role::Remediate {
                if t.host.is_none() {
                    return Err((
                        key("host"),
                        "a remediate target names its ops-agent host".into(),
                    ));
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
            check_regions(t).map_err(|(k, why)| (key(k), why))?;
        }
        self.validate_runbooks()?;
        for (i, h) in self.webhooks.iter().enumerate() {
            let key = |k: &str| format!("webhook[{i}].{k}");
            for (k, v) in [("url_env", &h.url_env), ("secret_env", &h.secret_env)] {
                if v.is_empty() {
                    return Err((key(k), "name a variable".into()));
                }
            }
            if let Some(bad) = h
                .events
                .iter()
                .find(|e| crate::core::route::HookEvent::parse(e).is_none())
            {
                return Err((
                    key("events"),
                    format!("{bad:?}: use {}", crate::core::route::HookEvent::NAMES),
                ));
            }
        }
        let mut jobs = Vec::new();
        for (i, job) in self.jobs.iter().enumerate() {
            let key = |k: &str| format!("job[{i}].{k}");
            if !valid_id(&job.id) {
                return Err((
                    key("id"),
                    format!("{:?} must match [a-z0-9][a-z0-9_-]*", job.id),
                ));
            }
            if !first_time(&mut jobs, job.id.as_str()) {
                return Err((key("id"), format!("duplicate job id {:?}", job.id)));
            }
            match (job.period_s, &job.cron) {
                (Some(p), None) => seconds(&key("period_s"), p, false, YEAR_S)?,
                (None, Some(_)) => {}
                (Some(_), Some(_)) => {
                    return Err((key("cron"), "give period_s or cron, not both".into()))
                }
                (None, None) => return Err((key("period_s"), "give period_s or cron".into())),
            }
            if job.tz.is_some() && job.cron.is_none() {
                return Err((key("tz"), "tz goes with cron".into()));
            }
            seconds(&key("grace_s"), job.grace_s, true, YEAR_S)?;
        }
        let d = &self.job_defaults;
        seconds("job_defaults.period_s", d.period_s, false, YEAR_S)?;
        seconds("job_defaults.grace_s", d.grace_s, true, YEAR_S)?;
        Ok(())
    }
}

/// The Worker's regions: Cloudflare's location hints for Durable Objects.
pub const LOCATION_HINTS: [&str; 9] = [
    "wnam", "enam", "sam", "weur", "eeur", "apac", "oc", "afr", "me",
];

/// A target's `regions` and `quorum` (`core::vantage`).
fn check_regions(t: &Target) -> Result<(), (&'static str, String)> {
    let mut seen = Vec::new();
    for r in &t.regions {
        if !valid_id(r) {
            return Err(("regions", format!("{r:?} must match [a-z0-9][a-z0-9_-]*")));
        }
        if !first_time(&mut seen, r.as_str()) {
            return Err(("regions", format!("{r:?} is listed twice")));
        }
    }
    let Some(q) = t.quorum else {
        return Ok(());
    };
    let points = t.regions.len().max(1);
    if q == 0 || q as usize > points {
        let listed = if t.has_regions() {
            format!("{points} vantage point(s) in regions")
        } else {
            "1 vantage point (this edge: list regions for more)".into()
        };
        return Err((
            "quorum",
            format!("must be 1 to the number of vantage points, {listed} (got {q})"),
        ));
    }
    Ok(())
}

impl Target {
    /// The request a probe sends: method, headers, body.
    fn check_request(&self) -> Result<(), (String, String)> {
        const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
        if !METHODS.contains(&self.method.as_str()) {
            return Err((
                "method".into(),
                format!("{:?}: use one of {}", self.method, METHODS.join(", ")),
            ));
        }
        if !self.body.is_null() && matches!(self.method.as_str(), "GET" | "HEAD") {
            return Err((
                "body".into(),
                format!("a {} request has no body: set method", self.method),
            ));
        }
        if self.content_type.is_some() && self.body.is_null() {
            return Err(("content_type".into(), "goes with body".into()));
        }
        if let Some(ct) = &self.content_type {
            if !valid_header_value(ct) {
                return Err((
                    "content_type".into(),
                    "not a header value (control characters)".into(),
                ));
            }
        }
        let mut names = Vec::new();
        for (table, map) in [
            ("headers", &self.headers),
            ("headers_env", &self.headers_env),
        ] {
            for (name, value) in map {
                let key = format!("{table}.{name}");
                if !valid_header_name(name) {
                    return Err((key, "not a header name".into()));
                }
                let lower = name.to_ascii_lowercase();
                if matches!(
                    lower.as_str(),
                    "host" | "content-length" | "transfer-encoding" | "connection"
                ) {
                    return Err((key, "set by the HTTP client, not by the target".into()));
                }
                if lower == "content-type" {
                    return Err((key, "use content_type (with body)".into()));
                }
                if names.contains(&lower) {
                    return Err((key, "header given twice".into()));
                }
                names.push(lower);
                let Some(value) = value.as_str() else {
                    return Err((key, "must be a string".into()));
                };
                let ok = if table == "headers" {
                    valid_header_value(value)
                } else {
                    valid_env_name(value)
                };
                if !ok {
                    let why = if table == "headers" {
                        "not a header value (control characters)"
                    } else {
                        "an environment variable name ([A-Z0-9_]+)"
                    };
                    return Err((key, why.into()));
                }
            }
        }
        for (name, value) in &self.expect_headers {
            let key = format!("expect_headers.{name}");
            if !valid_header_name(name) {
                return Err((key, "not a header name".into()));
            }
            if !value.is_string() {
                return Err((key, "must be a string".into()));
            }
        }
        if let Some(days) = self.tls_expiry_days {
            if !self.url.starts_with("https://") {
                return Err((
                    "tls_expiry_days".into(),
                    "the target's url is not https".into(),
                ));
            }
            count("tls_expiry_days", days, 3650)?;
        }
        Ok(())
    }
}

impl Config {
    pub fn channel(&self, id: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.id == id)
    }

    pub fn runbook(&self, id: &str) -> Option<&Runbook> {
        self.runbooks.iter().find(|r| r.id == id)
    }

    /// `[[runbook]]`: unique ids, a declared host, action names as the
    /// agent's allowlist writes them (checked against it at start).
    fn validate_runbooks(&self) -> Result<(), (String, String)> {
        let mut ids = Vec::new();
        for (i, r) in self.runbooks.iter().enumerate() {
            let key = |k: &str| format!("runbook[{i}].{k}");
            if !valid_id(&r.id) {
                return Err((
                    key("id"),
                    format!("{:?} must match [a-z0-9][a-z0-9_-]*", r.id),
                ));
            }
            if !first_time(&mut ids, r.id.as_str()) {
                return Err((key("id"), format!("duplicate runbook id {:?}", r.id)));
            }
            if self.host(&r.host).is_none() {
                return Err((key("host"), format!("no [[host]] with id {:?}", r.host)));
            }
            if r.steps.is_empty() {
                return Err((key("steps"), "name at least one action".into()));
            }
            if let Some(bad) = r.steps.iter().find(|a| !valid_action(a)) {
                return Err((key("steps"), format!("{bad:?} is not an action name")));
            }
            seconds(&key("expires_s"), r.expires_s, false, WEEK_S)?;
        }
        Ok(())
    }

    /// `depends_on` names other targets, without a cycle (refused with
    /// its path).
    fn validate_dependencies(&self) -> Result<(), (String, String)> {
        for (i, t) in self.targets.iter().enumerate() {
            let key = format!("target[{i}].depends_on");
            if let Some(p) = t.depends_on.iter().find(|p| self.target(p).is_none()) {
                return Err((key, format!("no target {p:?}")));
            }
            // Depth first from this target: a path back to it is a cycle.
            let mut stack = vec![vec![t.id.as_str()]];
            let mut seen = Vec::new();
            while let Some(path) = stack.pop() {
                let last = path[path.len() - 1];
                for p in self.target(last).map_or(&[][..], |x| &x.depends_on[..]) {
                    let mut next = path.clone();
                    next.push(p);
                    if p == &t.id {
                        return Err((key, format!("a cycle: {}", next.join(" → "))));
                    }
                    if first_time(&mut seen, p.as_str()) {
                        stack.push(next);
                    }
                }
            }
        }
        Ok(())
    }

    /// `[[channel]]` and `[[route]]`: each channel has what its kind needs;
    /// each route names declared channels and valid globs.
    fn validate_channels(&self) -> Result<(), (String, String)> {
        let mut ids = Vec::new();
        for (i, c) in self.channels.iter().enumerate() {
            let key = |k: &str| format!("channel[{i}].{k}");
            if !valid_id(&c.id) {
                return Err((
                    key("id"),
                    format!("{:?} must match [a-z0-9][a-z0-9_-]*", c.id),
                ));
            }
            if !first_time(&mut ids, c.id.as_str()) {
                return Err((key("id"), format!("duplicate channel id {:?}", c.id)));
            }
            let needs: &[(&str, &Option<String>)] = match c.kind {
                ChannelKind::Discord | ChannelKind::Slack => &[("url_env", &c.url_env)],
                ChannelKind::Webhook => &[("url_env", &c.url_env), ("secret_env", &c.secret_env)],
                ChannelKind::Pagerduty => &[("routing_key_env", &c.routing_key_env)],
            };
            for (k, v) in needs {
                if v.as_deref().is_none_or(str::is_empty) {
                    return Err((key(k), format!("a {:?} channel needs {k}", c.kind)));
                }
            }
            if let Some(u) = &c.events_url {
                if c.kind != ChannelKind::Pagerduty {
                    return Err((key("events_url"), "only for a pagerduty channel".into()));
                }
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err((key("events_url"), format!("{u:?} is not an http(s) URL")));
                }
            }
            seconds(&key("cooldown_s"), c.cooldown_s, true, WEEK_S)?;
        }
        if let Some(a) = &self.ack_link {
            if !(a.base_url.starts_with("http://") || a.base_url.starts_with("https://")) {
                return Err((
                    "ack_link.base_url".into(),
                    format!("{:?} is not an http(s) URL", a.base_url),
                ));
            }
            seconds("ack_link.valid_s", a.valid_s, false, 30.0 * DAY_S)?;
        }
        for (i, e) in self.escalations.iter().enumerate() {
            let key = |k: &str| format!("escalation[{i}].{k}");
            seconds(&key("ack_within_s"), e.ack_within_s, false, WEEK_S)?;
            if e.channels.is_empty() {
                return Err((key("channels"), "name at least one channel".into()));
            }
            if let Some(c) = e
                .channels
                .iter()
                .find(|c| c.as_str() != DEFAULT_CHANNEL && self.channel(c).is_none())
            {
                return Err((key("channels"), format!("no [[channel]] with id {c:?}")));
            }
            if e.user_id
                .as_deref()
                .is_some_and(|u| !u.chars().all(|c| c.is_ascii_digit()) || u.is_empty())
            {
                return Err((key("user_id"), "a Discord user id (digits)".into()));
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            let key = |k: &str| format!("route[{i}].{k}");
            if r.channels.is_empty() {
                return Err((key("channels"), "name at least one channel".into()));
            }
            if let Some(c) = r.channels.iter().find(|c| self.channel(c).is_none()) {
                return Err((key("channels"), format!("no [[channel]] with id {c:?}")));
            }
            if let Some(t) = r.targets.iter().find(|t| !valid_glob(t)) {
                return Err((
                    key("targets"),
                    format!("{t:?}: use a-z 0-9 _ - : and the wildcards * ?"),
                ));
            }
        }
        Ok(())
    }
}

/// An HTTP header name (a token, RFC 9110).
fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header value: visible ASCII, spaces and tabs (no CR/LF to split it).
fn valid_header_value(value: &str) -> bool {
    value.len() <= 8192
        && value
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

const DAY_S: f64 = 86_400.0;
const WEEK_S: f64 = 7.0 * DAY_S;
const YEAR_S: f64 = 366.0 * DAY_S;

/// A duration in seconds within `(0 or more, max]`: no later arithmetic on
/// it can overflow.
fn seconds(key: &str, v: f64, zero_ok: bool, max: f64) -> Result<(), (String, String)> {
    let low_ok = if zero_ok { v >= 0.0 } else { v > 0.0 };
    if v.is_finite() && low_ok && v <= max {
        return Ok(());
    }
    let low = if zero_ok {
        "must be zero or more"
    } else {
        "must be greater than zero"
    };
    Err((
        key.to_string(),
        format!("{low} and at most {max} s (got {v})"),
    ))
}

/// A count within `1..=max`.
fn count(key: &str, v: u32, max: u32) -> Result<(), (String, String)> {
    if (1..=max).contains(&v) {
        Ok(())
    } else {
        Err((key.to_string(), format!("must be 1 to {max} (got {v})")))
    }
}

/// A TOML error names its key inside the message ("... for key `a.b` at
/// line 3 column 1"): the key moves to the error's key, the rest stays.
#[cfg(not(target_arch = "wasm32"))]
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

/// A compose service name as Docker Compose allows it.
fn valid_service(name: &str) -> bool {
    let mut c = name.chars();
    c.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && c.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 128
}

/// Same rule as the ops-agent's allowlist.
fn valid_action(name: &str) -> bool {
    let mut c = name.chars();
    matches!(c.next(), Some('a'..='z')) && c.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

/// Notes `id` in `seen`; false if it was there already. A list, not a
/// `BTreeMap`: a configuration's ids are few, and one more key type would
/// bring its own B-tree code into the Worker (bundle size).
fn first_time<'a>(seen: &mut Vec<&'a str>, id: &'a str) -> bool {
    if seen.contains(&id) {
        return false;
    }
    seen.push(id);
    true
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
        // Its commented runbook and webhook blocks (up to the next blank
        // line) and its precedence key too.
        let mut in_block = false;
        let uncommented = text
            .lines()
            .map(|l| {
                let rest = l.strip_prefix("# ");
                if l.trim().is_empty() {
                    in_block = false;
                }
                if rest.is_some_and(|r| r == "[[runbook]]" || r == "[[webhook]]") {
                    in_block = true;
                }
                match rest {
                    Some(r) if in_block || r.starts_with("file_targets_win =") => r,
                    _ => l,
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let c = Config::parse("deploy/edge.example.toml", &uncommented).unwrap();
        assert_eq!(c.runbooks.len(), 1);
        assert_eq!(c.webhooks.len(), 1);
        assert!(
            c.channel("webhook.1").is_some(),
            "a webhook is an outbox channel"
        );
    }

    #[test]
    fn runbooks_and_webhooks_are_refused_naming_the_key() {
        let rb = |extra: &str| {
            format!("{GOOD}[[runbook]]\nid = \"fix\"\nhost = \"vps1\"\nsteps = [\"restart_all\"]\n{extra}")
        };
        assert!(Config::parse("edge.toml", &rb("")).is_ok());
        for (text, want) in [
            (rb("").replace("host = \"vps1\"\nsteps", "host = \"vps9\"\nsteps"), "runbook[0].host: no [[host]] with id \"vps9\""),
            (rb("").replace("[\"restart_all\"]", "[]"), "runbook[0].steps: name at least one action"),
            (rb("").replace("[\"restart_all\"]", "[\"rm -rf\"]"), "runbook[0].steps: \"rm -rf\" is not an action name"),
            (rb("expires_s = 0\n"), "runbook[0].expires_s: must be greater than zero"),
            (rb("[[runbook]]\nid = \"fix\"\nhost = \"vps1\"\nsteps = [\"x\"]\n"), "runbook[1].id: duplicate runbook id"),
            (format!("{GOOD}[[webhook]]\nurl_env = \"U\"\nsecret_env = \"S\"\nevents = [\"pages\"]\n"), "webhook[0].events: \"pages\": use transition, page"),
            (format!("{GOOD}[[webhook]]\nurl_env = \"\"\nsecret_env = \"S\"\n"), "webhook[0].url_env: name a variable"),
            (format!("{GOOD}[[webhook]]\nurl_env = \"U\"\n"), "secret_env"),
        ] {
            let e = err(&text);
            assert!(e.contains(want), "{want}: {e}");
        }
        // A checked configuration checked again keeps one channel per webhook.
        let hooked = format!("{GOOD}[[webhook]]\nurl_env = \"U\"\nsecret_env = \"S\"\n");
        let once = Config::parse("edge.toml", &hooked).unwrap();
        let mut again = once.clone();
        again.revalidate().unwrap();
        assert_eq!(again.channels, once.channels);
        assert!(err(&format!(
            "{GOOD}[[channel]]\nid = \"a.b\"\nkind = \"slack\"\nurl_env = \"U\"\n"
        ))
        .contains("channel[0].id"));
        // A route cannot name a webhook's channel: it is not a [[channel]].
        let routed = format!("{GOOD}[[webhook]]\nurl_env = \"U\"\nsecret_env = \"S\"\n[[route]]\nchannels = [\"webhook.1\"]\n");
        assert!(
            err(&routed).contains("route[0].channels"),
            "{}",
            err(&routed)
        );
    }

    #[test]
    fn every_duration_and_count_has_a_sane_range() {
        for (line, key) in [
            ("interval_s = 1e300", "interval_s"),
            ("interval_s = inf", "interval_s"),
            ("interval_s = nan", "interval_s"),
            ("remediation_cooldown_s = 1e300", "remediation_cooldown_s"),
            ("crash_cooldown_s = -1", "crash_cooldown_s"),
            ("settle_s = 1e20", "settle_s"),
            ("history_flush_s = 1e300", "history_flush_s"),
            ("flap_window_s = 0", "flap_window_s"),
            ("flap_threshold = 0", "flap_threshold"),
            ("failure_threshold = 4000000000", "failure_threshold"),
            ("probe_concurrency = 0", "probe_concurrency"),
            ("[discord]\nmax_per_minute = 0", "discord.max_per_minute"),
            ("[crash_log]\nmax_alerts = 0", "crash_log.max_alerts"),
            ("[llm]\ntimeout_s = 1e308", "llm.timeout_s"),
            ("[job_defaults]\nperiod_s = 1e300", "job_defaults.period_s"),
        ] {
            let text = format!("{line}\n[[target]]\nid = \"api\"\nurl = \"http://127.0.0.1:9/\"\n");
            let e = err(&text);
            assert!(e.starts_with(&format!("edge.toml: {key}: ")), "{line}: {e}");
        }
        let job = err(&format!("{GOOD}\n[[job]]\nid = \"b\"\nperiod_s = 1e300\n"));
        assert!(
            job.contains("job[0].period_s: must be greater than zero and at most"),
            "{job}"
        );
        let grace = err(&format!(
            "{GOOD}\n[[job]]\nid = \"b\"\nperiod_s = 60\ngrace_s = 1e300\n"
        ));
        assert!(grace.contains("job[0].grace_s"), "{grace}");
        let t = err(&GOOD.replace(
            "body_contains",
            "timeout_ms = 9223372036854775807\nbody_contains",
        ));
        assert!(
            t.contains("target[0].timeout_ms: must be 1 to 600000"),
            "{t}"
        );
    }

    #[test]
    fn form_checks_are_read_and_bad_ones_named_by_key() {
        let form = r#"method = "POST"
headers = { "X-Form" = "contact" }
headers_env = { Authorization = "PROBE_TOKEN_API" }
body = { name = "vigil", n = 1 }
follow_redirects = false
expect_headers = { "content-type" = "json" }"#;
        let c = Config::parse("edge.toml", &GOOD.replace("body_contains = \"ok\"", form)).unwrap();
        let t = &c.targets[0];
        assert_eq!(t.headers_env["Authorization"], "PROBE_TOKEN_API");
        assert!(!t.follow_redirects);
        let (body, content_type) = t.request_body().unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({"name": "vigil", "n": 1})
        );
        assert_eq!(content_type, "application/json");
        let c = Config::parse(
            "edge.toml",
            &GOOD.replace(
                "body_contains = \"ok\"",
                "method = \"POST\"\nbody = \"a=1&b=2\"",
            ),
        )
        .unwrap();
        assert_eq!(
            c.targets[0].request_body(),
            Some(("a=1&b=2".into(), "application/x-www-form-urlencoded"))
        );
        assert!(
            c.targets[0].follow_redirects,
            "redirects are followed by default"
        );
        for (extra, want) in [
            ("body = \"x\"", "target[0].body: a GET request has no body"),
            (
                "method = \"BREW\"",
                "target[0].method: \"BREW\": use one of",
            ),
            (
                "content_type = \"text/plain\"",
                "target[0].content_type: goes with body",
            ),
            (
                "headers = { \"Bad Name\" = \"x\" }",
                "target[0].headers.Bad Name: not a header name",
            ),
            (
                "headers = { \"X-A\" = \"a\\r\\nX-B: b\" }",
                "target[0].headers.X-A: not a header value",
            ),
            (
                "headers = { \"Content-Type\" = \"x\" }",
                "target[0].headers.Content-Type: use content_type",
            ),
            (
                "headers = { Host = \"x\" }",
                "target[0].headers.Host: set by the HTTP client",
            ),
            (
                "headers_env = { Authorization = \"secret-value\" }",
                "target[0].headers_env.Authorization: an environment variable name",
            ),
            (
                "headers = { authorization = \"x\" }\nheaders_env = { Authorization = \"T\" }",
                "target[0].headers_env.Authorization: header given twice",
            ),
            (
                "expect_headers = { \"a b\" = \"x\" }",
                "target[0].expect_headers.a b: not a header name",
            ),
            (
                "tls_expiry_days = 14",
                "target[0].tls_expiry_days: the target's url is not https",
            ),
            ("follow_redirects = \"no\"", "follow_redirects"),
            (
                "headers = { \"X-A\" = 1 }",
                "target[0].headers.X-A: must be a string",
            ),
            (
                "expect_headers = { \"X-A\" = true }",
                "target[0].expect_headers.X-A: must be a string",
            ),
        ] {
            let e = err(&GOOD.replace("body_contains = \"ok\"", extra));
            assert!(e.contains(want), "{extra}: {e}");
        }
        let https = GOOD.replace("http://127", "https://127");
        let e = err(&https.replace("body_contains = \"ok\"", "tls_expiry_days = 0"));
        assert!(
            e.contains("target[0].tls_expiry_days: must be 1 to 3650"),
            "{e}"
        );
        let c = Config::parse(
            "edge.toml",
            &https.replace("body_contains = \"ok\"", "tls_expiry_days = 14"),
        )
        .unwrap();
        let e = c.check_worker(StoreKind::DurableObject).unwrap_err();
        assert!(
            e.starts_with("target[0].tls_expiry_days: the Worker cannot read certificates"),
            "{e}"
        );
        let good = Config::parse("edge.toml", GOOD).unwrap();
        assert!(good.check_worker(StoreKind::Kv).is_ok());
        // Regions: Durable Objects with Cloudflare's location hints.
        let mut regions = good.clone();
        regions.targets[0].regions = vec!["weur".into(), "enam".into()];
        assert!(regions.check_worker(StoreKind::DurableObject).is_ok());
        let e = regions.check_worker(StoreKind::Kv).unwrap_err();
        assert!(
            e.starts_with("target[0].regions: the KV store cannot host region objects"),
            "{e}"
        );
        regions.targets[0].regions.push("mars".into());
        let e = regions.check_worker(StoreKind::DurableObject).unwrap_err();
        assert!(
            e.starts_with("target[0].regions: \"mars\" is not a Cloudflare location hint (the Worker's regions are wnam, enam, sam, weur, eeur, apac, oc, afr, me)"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let e = err(&GOOD.replace("interval_s = 0.5", "interval_s = 0"));
        assert_eq!(
            e,
            "edge.toml: interval_s: must be greater than zero and at most 86400 s (got 0)"
        );
        let e = err(&GOOD.replace("host = \"vps1\"", "host = \"vps9\""));
        assert!(
            e.starts_with("edge.toml: target[0].host: no [[host]]"),
            "{e}"
        );
        let e = err(&GOOD
            .replace("\"remediate\"", "\"alert_only\"")
            .replace("host = \"vps1\"", "host = \"vps9\""));
        assert!(
            e.starts_with("edge.toml: target[0].host: no [[host]] with id \"vps9\""),
            "an alert-only target's host is checked too: {e}"
        );
        let e = err(&GOOD.replace(
            "host = \"vps1\"",
            "host = \"vps1\"\nservices = [\"api core\"]",
        ));
        assert!(
            e.starts_with("edge.toml: target[0].services: \"api core\""),
            "{e}"
        );
        let e = err(&GOOD
            .replace("\"remediate\"", "\"alert_only\"")
            .replace("host = \"vps1\"", "services = [\"api-core\"]"));
        assert!(
            e.starts_with("edge.toml: target[0].services: services are on a host"),
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
        let signal_confirm = |v: &str| {
            let at = "retry_after_s = 0.1";
            err(&GOOD.replace(at, &format!("{at}\nsignal_confirm_s = {v}")))
        };
        let e = signal_confirm("0.2");
        assert!(e.contains("signal_confirm_s: must not be longer"), "{e}");
        let e = signal_confirm("0");
        assert!(e.contains("signal_confirm_s: must be greater than"), "{e}");
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
        let e = err(&GOOD.replace("role =", "quorum = 2\nrole ="));
        assert!(
            e.starts_with("edge.toml: target[0].quorum: must be 1 to the number of vantage points, 1 vantage point"),
            "{e}"
        );
        let e = err(&GOOD.replace(
            "role =",
            "regions = [\"east\", \"west\"]\nquorum = 3\nrole =",
        ));
        assert!(e.contains("target[0].quorum: must be 1 to the number of vantage points, 2 vantage point(s) in regions (got 3)"), "{e}");
        let e = err(&GOOD.replace("role =", "regions = [\"east\"]\nquorum = 0\nrole ="));
        assert!(e.contains("target[0].quorum: must be 1"), "{e}");
        let e = err(&GOOD.replace("role =", "regions = [\"east\", \"east\"]\nrole ="));
        assert!(
            e.contains("target[0].regions: \"east\" is listed twice"),
            "{e}"
        );
        let e = err(&GOOD.replace("role =", "regions = [\"East Coast\"]\nrole ="));
        assert!(
            e.contains("target[0].regions: \"East Coast\" must match"),
            "{e}"
        );
        let e = err(&format!("region = \"\"\n{GOOD}"));
        assert!(e.starts_with("edge.toml: region: "), "{e}");
        let e = err(&format!("prober_silent_s = 0.2\n{GOOD}"));
        assert!(
            e.starts_with("edge.toml: prober_silent_s: must be at least interval_s"),
            "{e}"
        );
        let c = Config::parse(
            "edge.toml",
            &GOOD.replace("role =", "regions = [\"east\", \"west\", \"main\"]\nrole ="),
        )
        .unwrap();
        assert_eq!(c.targets[0].quorum(), 2, "a majority by default");
        assert_eq!(c.prober_silent_ms(), 1500, "three intervals by default");
        assert_eq!(c.remote_regions(), ["east", "west"]);
        assert!(c.probes_here(&c.targets[0]));
        let e = err(&GOOD.replace("role =", "slo = 100\nrole ="));
        assert!(e.contains("target[0].slo: a percentage"), "{e}");
        let e = err(&GOOD.replace("role =", "slo = 99.9\nslo_days = 90\nrole ="));
        assert!(e.contains("target[0].slo_days"), "{e}");
    }
}

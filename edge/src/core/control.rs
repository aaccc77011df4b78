//! Targets changed through the control API (`POST/DELETE /ops/targets`) and
//! the audit list of every change made through it (`GET /ops/audit`).
//!
//! API targets are stored in the state as the body they were posted with
//! (validated), never written into the operator's file. The effective set is
//! the file's targets with the API targets laid over them: an API target
//! replaces the file's target of the same id, unless the file says
//! `file_targets_win = true`, in which case the file's is kept and the API
//! one is listed as shadowed (and a POST of a file id is refused).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::state::State;
use crate::config::{Config, ConfigError, Target};

/// Audit entries kept, newest last.
pub const AUDIT_KEPT: usize = 1000;

/// A target added through the API: its body as posted, who and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiTarget {
    pub body: Value,
    pub at_ms: u64,
    pub by: String,
}

/// One change made through the control API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at_ms: u64,
    /// `X-Vigil-Operator`, or `control-token` without it.
    pub who: String,
    /// What was done (`target.add`, `target.replace`, `target.remove`, ...).
    pub what: String,
    /// What it was done to (a target id, a runbook id, ...).
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Why a change of the API targets was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TargetChangeError {
    /// The body is not a valid target (400; the key as in the file, `target.<field>`).
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
    /// The file's target of this id wins (`file_targets_win`): 409.
    #[error("target {0:?} is in the configuration file, which wins (file_targets_win = true)")]
    FileWins(String),
    /// Only API targets can be removed through the API: 409.
    #[error("target {0:?} is in the configuration file: remove it there")]
    InFile(String),
    #[error("no API target {0:?}")]
    Unknown(String),
}

/// API targets left out of the effective configuration, with why, in id
/// order (a list rather than a map: one map type less in the Worker).
pub type LeftOut = Vec<(String, TargetChangeError)>;

fn is_out(left_out: &LeftOut, id: &str) -> bool {
    left_out.iter().any(|(out, _)| out == id)
}

/// The effective configuration: `file` (the file's, owned) with `api`'s
/// targets laid over it (see the module's rule), and the API targets left
/// out with the reason (shadowed by the file, or no longer valid against
/// it). Owned and changed in place: the Worker's bundle has no
/// `Config: Clone` (2.2 KB gzip, BENCHMARKS.md).
pub fn effective(file: Config, api: &BTreeMap<String, ApiTarget>) -> (Config, LeftOut) {
    let mut config = file;
    let mut pending: Vec<&String> = api.keys().collect();
    // Passes until nothing more fits: a target may depend on one after it.
    loop {
        let mut left_out = Vec::new();
        let before = pending.len();
        pending.retain(|id| match lay_over(&mut config, id, &api[*id].body) {
            Ok(()) => false,
            Err(e) => {
                left_out.push(((*id).clone(), e));
                true
            }
        });
        if pending.is_empty() || pending.len() == before {
            return (config, left_out);
        }
    }
}

/// The effective configuration with `api` instead of `before`, refused
/// when `changed` or any API target that was in use would be left out.
/// `files`: two copies of the file's configuration, one for each.
fn change(
    files: [Config; 2],
    before: &BTreeMap<String, ApiTarget>,
    api: &BTreeMap<String, ApiTarget>,
    changed: &str,
) -> Result<Config, TargetChangeError> {
    let [file, again] = files;
    let (_, out_before) = effective(file, before);
    let (config, mut out) = effective(again, api);
    if let Some(i) = out.iter().position(|(id, _)| id == changed) {
        return Err(out.swap_remove(i).1);
    }
    match out.into_iter().find(|(id, _)| !is_out(&out_before, id)) {
        Some((id, e)) => Err(invalid(
            &format!("target {id:?}"),
            format!("the change would leave this API target invalid: {e}"),
        )),
        None => Ok(config),
    }
}

/// `config` with the target posted as `body` added or replaced, validated
/// like the file; unchanged when refused.
fn lay_over(config: &mut Config, id: &str, body: &Value) -> Result<(), TargetChangeError> {
    // Each API target is laid over once: a target `id` here is the file's.
    if config.file_targets_win && config.target(id).is_some() {
        return Err(TargetChangeError::FileWins(id.to_string()));
    }
    let target = parse_target(body)?;
    if target.id != id {
        return Err(invalid(
            "target.id",
            format!("{:?} is not {id:?}", target.id),
        ));
    }
    let (index, replaced) = match config.targets.iter().position(|t| t.id == id) {
        Some(i) => (i, Some(std::mem::replace(&mut config.targets[i], target))),
        None => {
            config.targets.push(target);
            (config.targets.len() - 1, None)
        }
    };
    config.revalidate().map_err(|e| {
        match replaced {
            Some(file_target) => config.targets[index] = file_target,
            None => {
                config.targets.pop();
            }
        }
        posted_key(e, index)
    })
}

/// Reads a posted target the way the file's `[[target]]` is read.
pub fn parse_target(body: &Value) -> Result<Target, TargetChangeError> {
    if !body.is_object() {
        return Err(invalid("target", "a JSON object".into()));
    }
    super::json::from_value(body.clone()).map_err(|e| {
        let message = e.to_string();
        // serde names the field in backquotes: "unknown field `urll`, ...".
        let key = message
            .split('`')
            .nth(1)
            .filter(|_| message.contains("field `"))
            .map_or_else(|| "target".to_string(), |f| format!("target.{f}"));
        invalid(&key, message)
    })
}

fn invalid(key: &str, reason: String) -> TargetChangeError {
    TargetChangeError::Invalid {
        key: key.to_string(),
        reason,
    }
}

/// The file's error for the posted target (`target[7].url`) as the body's
/// (`target.url`); an error about another target (one that depends on
/// this one, say) keeps its key.
fn posted_key(e: ConfigError, index: usize) -> TargetChangeError {
    let mark = format!("target[{index}].");
    let key = match e.key.strip_prefix(&mark) {
        Some(rest) => format!("target.{rest}"),
        None => e.key,
    };
    invalid(&key, e.reason)
}

/// What a change did, for the caller and the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetChange {
    pub what: &'static str,
    pub target: String,
    /// The incident the removal resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved: Option<String>,
}

impl State {
    /// Adds or replaces the API target `body`; returns the new effective
    /// configuration (the caller uses it from now on). Nothing changes when
    /// it is refused. `file` comes with two copies of it to lay over.
    pub fn put_api_target(
        &mut self,
        (file, copies): (&Config, [Config; 2]),
        body: Value,
        by: &str,
        now_ms: u64,
    ) -> Result<(Config, TargetChange), TargetChangeError> {
        let id = parse_target(&body)?.id;
        let mut api = self.api_targets.clone();
        let replaced = api
            .insert(
                id.clone(),
                ApiTarget {
                    body: body.clone(),
                    at_ms: now_ms,
                    by: by.to_string(),
                },
            )
            .is_some();
        let config = change(copies, &self.api_targets, &api, &id)?;
        let what = match replaced || file.target(&id).is_some() {
            true => "target.replace",
            false => "target.add",
        };
        self.api_targets = api;
        self.reconcile(&config, now_ms, false);
        self.audit(now_ms, by, what, &id, Some(body.to_string()));
        Ok((
            config,
            TargetChange {
                what,
                target: id,
                resolved: None,
            },
        ))
    }

    /// Removes the API target `id`; an open incident of a target that is
    /// gone is resolved with the reason. The file's target of the same id
    /// (if any) is watched again. `file` as for `put_api_target`.
    pub fn remove_api_target(
        &mut self,
        (file, copies): (&Config, [Config; 2]),
        id: &str,
        by: &str,
        now_ms: u64,
    ) -> Result<(Config, TargetChange), TargetChangeError> {
        if !self.api_targets.contains_key(id) {
            return Err(match file.target(id) {
                Some(_) => TargetChangeError::InFile(id.to_string()),
                None => TargetChangeError::Unknown(id.to_string()),
            });
        }
        // Copied without `id` rather than `BTreeMap::remove`d: removal's
        // rebalancing is about 4 KB of the Worker's bundle per map type.
        let mut api = BTreeMap::new();
        for (k, v) in self.api_targets.iter().filter(|(k, _)| *k != id) {
            api.insert(k.clone(), v.clone());
        }
        let config = change(copies, &self.api_targets, &api, id)?;
        self.api_targets = api;
        let mut resolved = None;
        if config.target(id).is_none() {
            if let Some(inc) = self.targets.get(id).and_then(|t| t.open_incident.clone()) {
                if let Some(i) = self.incident_mut(&inc) {
                    i.resolved_at_ms = Some(now_ms);
                    i.resolution = Some(format!("target removed through the API by {by}"));
                    i.lease = None;
                }
                resolved = Some(inc);
            }
        }
        self.reconcile(&config, now_ms, false);
        self.follow_pages(now_ms);
        self.audit(
            now_ms,
            by,
            "target.remove",
            id,
            resolved.as_ref().map(|i| format!("resolved incident {i}")),
        );
        Ok((
            config,
            TargetChange {
                what: "target.remove",
                target: id.to_string(),
                resolved,
            },
        ))
    }

    /// Records one change in the audit list (the oldest beyond
    /// [`AUDIT_KEPT`] dropped).
    pub fn audit(
        &mut self,
        now_ms: u64,
        who: &str,
        what: &str,
        subject: &str,
        detail: Option<String>,
    ) {
        self.audit.push(AuditEntry {
            at_ms: now_ms,
            who: who.to_string(),
            what: what.to_string(),
            subject: subject.to_string(),
            detail,
        });
        // A Vec, not a VecDeque: one ring-buffer copy fewer in the Worker
        // bundle, and a change through the API is rare.
        if self.audit.len() > AUDIT_KEPT {
            self.audit.remove(0);
        }
    }
}

/// `GET /ops/targets`: the effective targets (each marked `file` or `api`),
/// and the API targets left out, with why.
pub fn listing(
    file: &Config,
    effective: &Config,
    api: &BTreeMap<String, ApiTarget>,
    left_out: &LeftOut,
) -> Value {
    let targets: Vec<Value> = effective
        .targets
        .iter()
        .map(|t| {
            let body = match api.get(&t.id) {
                Some(a) if !is_out(left_out, &t.id) => serde_json::json!({
                    "source": "api", "added_at_ms": a.at_ms, "added_by": a.by,
                    "replaces_file_target": file.target(&t.id).is_some(), "target": a.body,
                }),
                _ => serde_json::json!({"source": "file"}),
            };
            let mut v =
                serde_json::json!({"id": t.id, "url": t.url, "role": t.role, "host": t.host});
            if let (Some(o), Some(b)) = (v.as_object_mut(), body.as_object()) {
                o.extend(b.clone());
            }
            v
        })
        .collect();
    let left: Vec<Value> = left_out
        .iter()
        .map(|(id, why)| serde_json::json!({"id": id, "why": why.to_string(), "target": api.get(id).map(|a| &a.body)}))
        .collect();
    serde_json::json!({
        "file_targets_win": file.file_targets_win,
        "targets": targets,
        "api_targets_left_out": left,
    })
}

/// The audit list, newest first.
pub fn audit_view(audit: &[AuditEntry]) -> Value {
    serde_json::json!({"audit": audit.iter().rev().collect::<Vec<_>>()})
}

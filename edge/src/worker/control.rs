//! Targets through the API on the Worker, by `core::control` as on the
//! native edge: the effective configuration every part of the Worker uses
//! (`VIGIL_CONFIG` with the stored API targets laid over it), and the
//! routes `GET/POST /ops/targets`, `DELETE /ops/targets/{id}` and
//! `GET /ops/audit`. A change the Worker could not run is refused, nothing
//! changed: a field it refuses (400, naming the key), more targets than the
//! plan or the store carries (409). A change is answered once stored.

use std::collections::BTreeMap;
use std::sync::Arc;

use worker::{Env, Method, Request, Response};

use super::io::now_ms;
use super::routes::{body_within, error, json, not_stored};
use super::store::Store;
use super::{config_copy, Fallible};
use crate::config::Config;
use crate::core::control::{self, ApiTarget, TargetChangeError};
use crate::core::state::State;
use crate::shell::BODY_LIMIT;
use crate::{ops_requests, views};

/// `file` with the API targets `api` laid over it (`control::effective`,
/// on `VIGIL_CONFIG` read again); those left out (`GET /ops/targets` says
/// why) are not watched.
pub fn effective(
    env: &Env,
    file: &Arc<Config>,
    api: &BTreeMap<String, ApiTarget>,
) -> Fallible<Arc<Config>> {
    if api.is_empty() {
        return Ok(Arc::clone(file));
    }
    Ok(Arc::new(control::effective(config_copy(env)?, api).0))
}

/// The routes (`segments` of the path), the token checked: read for
/// `GET`, control for a change. `before` is the state as stored.
pub async fn serve(
    req: &mut Request,
    env: &Env,
    segments: &[&str],
    file: &Config,
    (store, state, before): (&Store<'_>, &mut State, State),
    by: &str,
) -> worker::Result<Response> {
    let now = now_ms();
    if let (Method::Get, ["ops", "audit"]) = (req.method(), segments) {
        return json(200, &control::audit_view(&state.audit));
    }
    if req.method() == Method::Get {
        let (config, left_out) = match config_copy(env) {
            Ok(copy) => control::effective(copy, &state.api_targets),
            Err(e) => return error(500, "no_configuration", e),
        };
        let listing = control::listing(file, &config, &state.api_targets, &left_out);
        return json(200, &listing);
    }
    // A change: the file's configuration twice, to lay the API targets over
    // before and after it (`State::put_api_target`).
    let copies = match [config_copy(env), config_copy(env)] {
        [Ok(a), Ok(b)] => [a, b],
        [Err(e), _] | [_, Err(e)] => return error(500, "no_configuration", e),
    };
    let done = match (req.method(), segments) {
        (Method::Delete, [.., id]) => state.remove_api_target((file, copies), id, by, now),
        _ => {
            let body = match body_within(req, BODY_LIMIT).await? {
                Ok(body) => body,
                Err(too_large) => return Ok(too_large),
            };
            match ops_requests::target_body(&body) {
                Ok(body) => state.put_api_target((file, copies), body, by, now),
                Err(why) => return error(400, "bad_body", why),
            }
        }
    };
    let done = match done {
        Ok((config, change)) => match refusal(&config, env) {
            // Not stored: the change is dropped with this request's state.
            Some(refused) => return refused,
            None => Ok(change),
        },
        Err(e) => Err(e),
    };
    if done.is_ok() {
        if let Err(e) = store.save_change(state, before).await {
            return not_stored(e);
        }
    }
    let (status, body) = views::target_change(done);
    json(status, &body)
}

/// Why the Worker could not run `config`: a field it refuses (400, the
/// posted target's key, as the file's would be refused at start), or more
/// than the plan's subrequests or the store carry (409).
fn refusal(config: &Config, env: &Env) -> Option<worker::Result<Response>> {
    if let Err(why) = config.check_worker(super::store_kind(env)) {
        // "target[3].tls_expiry_days: why": the file passed, so the API
        // target is the one refused.
        let (key, reason) = why.split_once(": ").unwrap_or(("target", &why));
        let key = key
            .split_once("].")
            .map_or_else(|| key.to_string(), |(_, k)| format!("target.{k}"));
        let reason = reason.to_string();
        let (status, body) = views::target_change(Err(TargetChangeError::Invalid { key, reason }));
        return Some(json(status, &body));
    }
    super::fits(config, env).err().map(|why| {
        let why = format!("with this change the Worker could not run: {why}");
        error(409, "does_not_fit", why)
    })
}

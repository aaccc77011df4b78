//! Targets through the API on the Worker, in workerd, on both stores:
//! `GET/POST /ops/targets`, `DELETE /ops/targets/{id}` and `GET /ops/audit`
//! with the native edge's tokens, bodies, errors and answers (edge/tests/
//! control.rs has the native side); API targets probed by the cycle and by
//! the Durable Object store's shards, kept across a restart, refused when
//! the plan cannot carry them or the store cannot take the change.

use reqwest::Method;
use serde_json::{json, Value};
use vigil_testkit::edge::{listed_targets, ops_request, CONTROL_TOKEN, READ_TOKEN};
use vigil_testkit::target::{Behaviour, TargetServer};
use vigil_testkit::wrangler::{worker_or_skip, Wrangler};

const STORES: [&str; 2] = ["kv", "durable_object"];

fn start(config: String, extra: Vec<(&str, String)>) -> Wrangler {
    let mut vars = vec![
        ("VIGIL_CONFIG".to_string(), config),
        ("OPS_READ_TOKEN".to_string(), READ_TOKEN.to_string()),
        ("CONTROL_TOKEN".to_string(), CONTROL_TOKEN.to_string()),
    ];
    vars.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
    Wrangler::start(vars)
}

fn target(id: &str, url: &str) -> String {
    format!("[[target]]\nid = {id:?}\nurl = {url:?}\nbody_contains = \"ok\"\ntimeout_ms = 2000\n")
}

/// Runs `test` on each store, once the Worker is built.
fn on_each_store(test: impl Fn(&str)) {
    if worker_or_skip() {
        STORES.into_iter().for_each(test);
    }
}

fn post(w: &Wrangler, who: &str, body: &Value) -> (u16, Value) {
    post_raw(w, Some(who), body.to_string())
}

fn post_raw(w: &Wrangler, who: Option<&str>, body: String) -> (u16, Value) {
    let url = w.url("/ops/targets");
    ops_request(
        &w.http,
        Method::POST,
        url,
        Some(CONTROL_TOKEN),
        who,
        Some(body),
    )
}

fn delete(w: &Wrangler, who: &str, id: &str) -> (u16, Value) {
    let url = w.url(&format!("/ops/targets/{id}"));
    ops_request(
        &w.http,
        Method::DELETE,
        url,
        Some(CONTROL_TOKEN),
        Some(who),
        None,
    )
}

fn read(w: &Wrangler, path: &str) -> Value {
    let (status, body) = ops_request(
        &w.http,
        Method::GET,
        w.url(path),
        Some(READ_TOKEN),
        None,
        None,
    );
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// The effective targets as `(id, source)`.
fn listed(w: &Wrangler) -> Vec<(String, String)> {
    let listing = listed_targets(&read(w, "/ops/targets"));
    listing
        .into_iter()
        .map(|(id, source, _)| (id, source))
        .collect()
}

fn pair(id: &str, source: &str) -> (String, String) {
    (id.to_string(), source.to_string())
}

/// How many changes the audit list holds.
fn audited(w: &Wrangler) -> usize {
    read(w, "/ops/audit")["audit"]
        .as_array()
        .map_or(0, Vec::len)
}

/// A Worker on `store` watching 33 targets of one server (the free plan
/// fits 34 with KV; the Durable Object store probes more than 32 in shards).
fn thirty_three(store: &str) -> (TargetServer, Wrangler) {
    let up = TargetServer::start();
    let targets: String = (0..33)
        .map(|i| target(&format!("t{i}"), &up.url()))
        .collect();
    let config = format!("interval_s = 60\n{targets}");
    let w = start(config, vec![("VIGIL_STORE", store.into())]);
    (up, w)
}

/// Adds a failing target by API: refused without the control token and
/// for bad bodies (nothing changed); probed by the cycle and listed as
/// `api`; kept across a restart with its incident; removed, which resolves
/// the incident with the reason; every change in the audit list. Then not
/// probed any more. On both stores.
#[test]
fn targets_added_and_removed_through_the_api_in_the_worker() {
    on_each_store(|store| {
        let filed = TargetServer::start();
        let failing = TargetServer::start();
        failing.set(Behaviour::Status(500));
        let config = format!(
            "interval_s = 60\nretry_after_s = 0.3\n[status_page]\nenabled = true\n{}",
            target("filed", &filed.url())
        );
        let mut w = start(config, vec![("VIGIL_STORE", store.into())]);
        let start_listing = vec![pair("filed", "file")];
        assert_eq!(listed(&w), start_listing, "{store}");

        // Tokens: the read token lists, only the control token changes.
        let good =
            json!({"id": "added", "url": failing.url(), "body_contains": "ok", "public": true});
        let refused = [
            (Method::POST, "/ops/targets", None),
            (Method::POST, "/ops/targets", Some(READ_TOKEN)),
            (Method::POST, "/ops/targets", Some("wrong-token-0123456789")),
            (Method::DELETE, "/ops/targets/filed", Some(READ_TOKEN)),
            (Method::GET, "/ops/targets", None),
            (Method::GET, "/ops/audit", None),
        ];
        for (method, path, token) in refused {
            let what = format!("{method} {path} with {token:?}");
            let body = (method == Method::POST).then(|| good.to_string());
            let (status, _) = ops_request(&w.http, method, w.url(path), token, None, body);
            assert_eq!(status, 401, "{store}: {what}");
        }

        // Bad bodies: 400 naming the key and the reason, nothing changed.
        let url = failing.url();
        for (body, key, reason) in [
            (json!({"id": "x", "url": "ftp://x"}), "target.url", "http"),
            (
                json!({"id": "x", "url": url, "timeout_ms": 0}),
                "target.timeout_ms",
                "",
            ),
            (
                json!({"id": "x", "urll": url}),
                "target.urll",
                "unknown field",
            ),
            (json!({"id": "x"}), "target.url", "missing field"),
            (json!(["not", "an", "object"]), "target", "object"),
            // What the Worker refuses in its file, it refuses by API.
            (
                json!({"id": "x", "url": "https://127.0.0.1:9/", "tls_expiry_days": 14}),
                "target.tls_expiry_days",
                "the Worker cannot read certificates",
            ),
        ] {
            let (status, answer) = post(&w, "mallory", &body);
            assert_eq!(status, 400, "{store}: {body}: {answer}");
            assert_eq!(answer["error"]["code"], "invalid_target", "{answer}");
            assert_eq!(answer["error"]["key"], key, "{store}: {body}: {answer}");
            let why = answer["error"]["reason"].as_str().unwrap();
            assert!(why.contains(reason), "{store}: {body}: {answer}");
        }
        for raw in ["{not json", ""] {
            let (status, answer) = post_raw(&w, None, raw.into());
            assert_eq!(status, 400, "{store}: {raw:?}: {answer}");
            assert_eq!(answer["error"]["code"], "bad_body", "{answer}");
        }
        let huge = json!({"id": "x", "url": url, "body_contains": "a".repeat(100_000)});
        let (status, answer) = post(&w, "mallory", &huge);
        assert_eq!(status, 413, "{store}: {answer}");
        assert_eq!(answer["error"]["code"], "body_too_large");
        let (status, answer) = delete(&w, "mallory", "ghost");
        assert_eq!(status, 404, "{store}: {answer}");
        assert_eq!(answer["error"]["code"], "unknown_target");
        let (status, answer) = delete(&w, "mallory", "filed");
        assert_eq!(status, 409, "{store}: only API targets: {answer}");
        assert_eq!(listed(&w), start_listing, "{store}: nothing changed");
        assert_eq!(read(&w, "/ops/audit")["audit"], json!([]), "{store}");

        // Added: listed as `api`, probed by the cycle, down after its confirm.
        let (status, answer) = post(&w, "alice", &good);
        assert_eq!(status, 200, "{store}: {answer}");
        assert_eq!(answer["change"]["what"], "target.add", "{answer}");
        assert_eq!(listed(&w), [pair("filed", "file"), pair("added", "api")]);
        let listing = read(&w, "/ops/targets");
        let added = &listing["targets"][1];
        assert_eq!(added["added_by"], "alice", "{listing}");
        assert_eq!(added["target"], good, "{listing}");
        let report = w.scheduled();
        assert_eq!(
            report["probes"], 3,
            "{store}: both, and the confirm: {report}"
        );
        assert!(failing.seen().len() >= 2, "{store}: probed and confirmed");
        let view = read(&w, "/ops/target/added");
        assert_eq!(view["state"], "down", "{store}: {view}");
        let open = read(&w, "/ops/incidents?state=open");
        let incident = open["incidents"][0]["id"].as_str().unwrap().to_string();
        assert_eq!(open["incidents"][0]["target"], "added", "{store}: {open}");
        // The views and the public status page have it too.
        let ids = |list: &Value| -> Vec<String> {
            let ids = list.as_array().unwrap().iter().map(|t| t["id"].to_string());
            ids.collect()
        };
        let summary = read(&w, "/ops/summary");
        assert_eq!(ids(&summary["targets"]), [r#""filed""#, r#""added""#]);
        let status = read(&w, "/status.json");
        assert_eq!(ids(&status["targets"]), [r#""added""#], "{store}: {status}");
        assert_eq!(status["targets"][0]["state"], "outage", "{status}");

        // Kept across a restart of workerd (in the store, not the config).
        w.restart();
        assert_eq!(listed(&w), [pair("filed", "file"), pair("added", "api")]);
        let before = failing.seen().len();
        w.scheduled();
        assert!(failing.seen().len() > before, "{store}: still probed");

        // Removed: its open incident resolved with the reason.
        let (status, answer) = delete(&w, "bob", "added");
        assert_eq!(status, 200, "{store}: {answer}");
        assert_eq!(answer["change"]["what"], "target.remove");
        assert_eq!(answer["change"]["resolved"], incident.as_str(), "{answer}");
        let inc = read(&w, &format!("/ops/incidents/{incident}"));
        assert!(inc["resolved_at_ms"].as_u64().is_some(), "{store}: {inc}");
        assert_eq!(inc["resolution"], "target removed through the API by bob");
        assert_eq!(listed(&w), start_listing, "{store}");
        assert_eq!(read(&w, "/status.json")["targets"], json!([]), "{store}");
        let before = failing.seen().len();
        let report = w.scheduled();
        assert_eq!(report["probes"], 1, "{store}: {report}");
        assert_eq!(failing.seen().len(), before, "{store}: not probed any more");

        // The audit list: who, what, when, newest first.
        let audit = read(&w, "/ops/audit")["audit"].clone();
        let entries = audit.as_array().unwrap();
        assert_eq!(entries.len(), 2, "{store}: {audit}");
        let seen: Vec<(&str, &str, &str)> = entries
            .iter()
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap();
                (s("who"), s("what"), s("subject"))
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("bob", "target.remove", "added"),
                ("alice", "target.add", "added")
            ],
            "{store}"
        );
        assert!(entries[0]["at_ms"].as_u64() >= entries[1]["at_ms"].as_u64());
        assert!(entries[1]["at_ms"].as_u64() > Some(1_700_000_000_000));
        assert!(entries[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&incident)));

        // An API target replaces the file's of the same id (no
        // `file_targets_win`) until it is removed: the file's comes back.
        let other = TargetServer::start();
        let replace = json!({"id": "filed", "url": other.url(), "body_contains": "ok"});
        let (status, answer) = post(&w, "carol", &replace);
        assert_eq!(status, 200, "{store}: {answer}");
        assert_eq!(answer["change"]["what"], "target.replace", "{answer}");
        let listing = read(&w, "/ops/targets");
        assert_eq!(
            listing["targets"][0]["replaces_file_target"], true,
            "{listing}"
        );
        let before = filed.seen().len();
        w.scheduled();
        assert_eq!(
            (other.seen().len(), filed.seen().len()),
            (1, before),
            "{store}"
        );
        assert_eq!(delete(&w, "carol", "filed").0, 200, "{store}");
        assert_eq!(listed(&w), start_listing, "{store}");
        w.scheduled();
        assert_eq!((other.seen().len(), filed.seen().len()), (1, before + 1));
    });
}

/// While the store cannot take writes (VIGIL_TEST_FAIL_WRITES), a change
/// is answered 503 `store_unavailable` and not made; once it can, the same
/// change is taken. On both stores.
#[test]
fn a_target_change_that_cannot_be_stored_is_refused_in_the_worker() {
    on_each_store(|store| {
        let filed = TargetServer::start();
        let switch = TargetServer::start();
        let config = format!("interval_s = 60\n{}", target("filed", &filed.url()));
        let w = start(
            config,
            vec![
                ("VIGIL_STORE", store.into()),
                ("VIGIL_TEST_FAIL_WRITES", switch.url()),
            ],
        );
        // The first cycle stores the state.
        w.scheduled();
        let body = json!({"id": "added", "url": filed.url()});
        switch.set(Behaviour::Status(503));
        let (status, answer) = post(&w, "alice", &body);
        assert_eq!(status, 503, "{store}: {answer}");
        assert_eq!(answer["error"]["code"], "store_unavailable", "{answer}");
        assert_eq!(listed(&w), [pair("filed", "file")], "{store}: not made");
        assert_eq!(audited(&w), 0, "{store}");

        switch.set(Behaviour::Ok);
        let (status, answer) = post(&w, "alice", &body);
        assert_eq!(status, 200, "{store}: {answer}");
        switch.set(Behaviour::Status(503));
        let (status, answer) = delete(&w, "bob", "added");
        assert_eq!(status, 503, "{store}: {answer}");
        assert_eq!(listed(&w), [pair("filed", "file"), pair("added", "api")]);
        assert_eq!(audited(&w), 1, "{store}: the removal not audited");
    });
}

/// The free plan on the KV store probes at most 34 targets an invocation:
/// an API target past that is refused with 409, nothing changed.
#[test]
fn an_api_target_the_plan_cannot_carry_is_refused_in_the_worker() {
    if !worker_or_skip() {
        return;
    }
    let (up, w) = thirty_three("kv");
    let fits = post(&w, "alice", &json!({"id": "t33", "url": up.url()}));
    assert_eq!(fits.0, 200, "the 34th fits: {}", fits.1);
    let (status, answer) = post(&w, "alice", &json!({"id": "t34", "url": up.url()}));
    let code = answer["error"]["code"].as_str();
    assert_eq!((status, code), (409, Some("does_not_fit")), "{answer}");
    let why = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        why.contains("35 targets") && why.contains("at most 34"),
        "{why}"
    );
    assert_eq!((listed(&w).len(), audited(&w)), (34, 1), "nothing changed");
}

/// On the Durable Object store, more targets than a shard's share are
/// probed by shard objects, which have no state of their own: an API target
/// that falls to a shard is probed there all the same.
#[test]
fn shards_probe_api_targets_on_the_durable_object_store() {
    if !worker_or_skip() {
        return;
    }
    // 33 file targets and one by API: two shards of up to 32 probes.
    let (_up, w) = thirty_three("durable_object");
    let by_api = TargetServer::start();
    let (status, answer) = post(&w, "alice", &json!({"id": "zz", "url": by_api.url()}));
    assert_eq!(status, 200, "{answer}");
    let report = w.scheduled();
    assert_eq!(report["probes"], 34, "{report}");
    assert!(
        report["shard_subrequests_max"].as_u64() > Some(0),
        "{report}"
    );
    assert_eq!(by_api.seen().len(), 1, "the shard probed it: {report}");
    let view = read(&w, "/ops/target/zz");
    assert_eq!(view["state"], "healthy", "{view}");
}

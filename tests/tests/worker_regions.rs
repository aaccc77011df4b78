//! Several vantage points on the Worker (issue 15): each region of a
//! target's `regions` is a Durable Object (`region-<name>`, created with
//! that region as its location hint) that probes the target as that
//! vantage point, `X-Vigil-Region: <name>`. All objects run in one local
//! workerd, so a local target answering 503 to one region's probes stands
//! for a network problem near that prober.

use std::time::Duration;

use serde_json::{json, Value};
use vigil_testkit::discord::Discord;
use vigil_testkit::edge::READ_TOKEN;
use vigil_testkit::target::{Behaviour, TargetServer};
use vigil_testkit::wrangler::{worker_or_skip, Wrangler};

const AGENT_TOKEN: &str = "agent-token-0123456789";

/// An ops-agent stand-in whose restart heals `heals`; it records each
/// action run.
struct Agent {
    addr: std::net::SocketAddr,
    runs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Agent {
    fn start(heals: TargetServer) -> Self {
        use axum::extract::{Path, State};
        use axum::routing::{get, post};
        use std::sync::{Arc, Mutex};
        let runs = Arc::new(Mutex::new(Vec::new()));
        type Shared = (Arc<Mutex<Vec<String>>>, TargetServer);
        let router = axum::Router::new()
            .route(
                "/v1/diagnostics",
                get(|| async {
                    axum::Json(json!({"compose_project": "demo", "docker_ok": true,
                        "containers": [], "host": {"cpu_percent": 1.0, "mem_used_bytes": 1,
                        "mem_total_bytes": 2, "disk_used_percent": 1.0, "load_1": 0.1,
                        "load_5": 0.1, "load_15": 0.1, "uptime_s": 9}}))
                }),
            )
            .route(
                "/v1/actions",
                get(|| async {
                    axum::Json(json!({"actions": [{"name": "restart_api_core",
                        "description": "restart", "kind": "restart",
                        "services": ["api-core"], "timeout_ms": 30000}]}))
                }),
            )
            .route(
                "/v1/actions/{name}",
                post(
                    |State((runs, heals)): State<Shared>, Path(name): Path<String>| async move {
                        runs.lock().unwrap().push(name.clone());
                        heals.set(Behaviour::Ok);
                        axum::Json(json!({"name": name, "ok": true, "outcome": "ok",
                            "request_id": "r1", "started_at_ms": 1, "finished_at_ms": 2,
                            "duration_ms": 1}))
                    },
                ),
            )
            .with_state((runs.clone(), heals));
        Agent {
            addr: vigil_testkit::serve::spawn(router),
            runs,
        }
    }

    fn runs(&self) -> Vec<String> {
        self.runs.lock().unwrap().clone()
    }
}

fn config(regions: &str, url: &str) -> String {
    format!(
        "interval_s = 1\nretry_after_s = 0.2\nsettle_s = 0.1\nprober_silent_s = 120\n\
         [[target]]\nid = \"api\"\nurl = {url:?}\nrole = \"remediate\"\nhost = \"vps1\"\n\
         actions = [\"restart_api_core\"]\nregions = {regions}\nquorum = 2\n\
         [[host]]\nid = \"vps1\"\nurl_env = \"OPS_AGENT_URL\"\ntoken_env = \"OPS_AGENT_TOKEN\"\n"
    )
}

fn vars(config: String, extra: &[(&str, String)]) -> Vec<(String, String)> {
    let mut v = vec![
        ("VIGIL_CONFIG".to_string(), config),
        ("OPS_READ_TOKEN".to_string(), READ_TOKEN.to_string()),
    ];
    v.extend(extra.iter().map(|(k, s)| (k.to_string(), s.clone())));
    v
}

fn get(w: &Wrangler, path: &str) -> Value {
    let res = w.http.get(w.url(path)).bearer_auth(READ_TOKEN).send();
    let res = res.expect("GET");
    assert!(res.status().is_success(), "{path}: {}", res.status());
    res.json().expect("JSON")
}

fn notes(w: &Wrangler, kind: &str) -> Vec<Value> {
    let v = get(w, "/ops/vantage");
    let notes = v["notes"].as_array().cloned().unwrap_or_default();
    notes.into_iter().filter(|n| n["kind"] == kind).collect()
}

/// Runs cycles until `done` holds (a minute at most).
fn cycle_until(w: &Wrangler, what: &str, mut done: impl FnMut(&Wrangler) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done(w) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {what}:\n{}",
            w.logs()
        );
        let report = w.scheduled();
        assert!(
            report["subrequests"].as_u64() <= report["subrequest_budget"].as_u64(),
            "{report}"
        );
    }
}

/// Regions = 3, quorum = 2: one region cut off is one "seen down from
/// weur only" note and warning, no incident; two cut off open the incident
/// (who saw what on it) and remediation runs as it does without regions.
#[test]
fn region_objects_must_agree_before_an_incident() {
    if !worker_or_skip() {
        return;
    }
    let discord = Discord::start();
    let target = TargetServer::start();
    let agent = Agent::start(target.clone());
    let config = config(r#"["weur", "enam", "apac"]"#, &target.url());
    let w = Wrangler::start(vars(
        config,
        &[
            ("VIGIL_STORE", "durable_object".into()),
            ("DISCORD_WEBHOOK_URL", discord.url()),
            ("OPS_AGENT_URL", format!("http://{}", agent.addr)),
            ("OPS_AGENT_TOKEN", AGENT_TOKEN.into()),
        ],
    ));
    let first = w.scheduled();
    assert_eq!(first["probes"], 3, "one probe from each region: {first}");
    let vantage = get(&w, "/ops/vantage");
    assert_eq!(vantage["region"], "main", "{vantage}");
    let seen = &vantage["targets"][0]["seen"];
    for (i, region) in ["weur", "enam", "apac"].iter().enumerate() {
        assert_eq!(seen[i]["region"], *region, "{vantage}");
        assert_eq!(seen[i]["health"], "healthy", "{vantage}");
    }
    let regions: std::collections::BTreeSet<String> = target
        .seen()
        .iter()
        .map(|s| s.headers.get("x-vigil-region").cloned().unwrap_or_default())
        .collect();
    assert_eq!(
        regions.into_iter().collect::<Vec<_>>(),
        ["apac", "enam", "weur"],
        "each probe names its region, none is the coordinator's own"
    );

    // Cut off from weur only: a note and one warning, no incident.
    target.set(Behaviour::FailFrom(vec!["weur"]));
    cycle_until(&w, "seen-down-from-weur note", |w| {
        !notes(w, "seen_down_partly").is_empty()
    });
    for _ in 0..3 {
        w.scheduled();
    }
    let open = get(&w, "/ops/incidents");
    assert!(open["incidents"].as_array().unwrap().is_empty(), "{open}");
    assert_eq!(get(&w, "/ops/summary")["targets"][0]["state"], "healthy");
    let partly = notes(&w, "seen_down_partly");
    assert_eq!(partly.len(), 1, "{partly:?}");
    assert_eq!(partly[0]["regions"], json!(["weur"]));
    let text = partly[0]["text"].as_str().unwrap();
    assert!(
        text.contains("api seen down from weur only (1 of 3 vantage points, quorum 2)")
            && text.contains("weur: down (unexpected status 503"),
        "{text}"
    );
    let vantage = get(&w, "/ops/vantage");
    assert_eq!(vantage["targets"][0]["partial"]["regions"], json!(["weur"]));
    cycle_until(&w, "the warning", |_| {
        discord
            .titles()
            .contains(&"api: seen down from weur only".to_string())
    });
    assert!(
        agent.runs().is_empty(),
        "nothing restarted a healthy service"
    );

    // Cut off from weur and enam: the incident, remediation as today.
    target.set(Behaviour::FailFrom(vec!["weur", "enam"]));
    cycle_until(&w, "the incident, healed", |w| {
        get(w, "/ops/incidents")["incidents"]
            .as_array()
            .unwrap()
            .first()
            .is_some_and(|i| i["resolved_at_ms"].is_u64())
    });
    assert_eq!(agent.runs(), ["restart_api_core"]);
    let id = get(&w, "/ops/incidents")["incidents"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let inc = get(&w, &format!("/ops/incidents/{id}"));
    let seen = &inc["history"][0]["vantages"];
    let health = |i: usize| (seen[i]["region"].clone(), seen[i]["health"].clone());
    assert_eq!(health(0), (json!("weur"), json!("down")), "{inc:#}");
    assert_eq!(health(1), (json!("enam"), json!("down")), "{inc:#}");
    assert_eq!(health(2), (json!("apac"), json!("healthy")), "{inc:#}");
    assert_eq!(inc["rounds"][0]["outcome"], "recovered", "{inc:#}");
    assert!(discord
        .titles()
        .contains(&"api: healthy → down".to_string()));
}

/// A region object that does not answer (`VIGIL_TEST_MUTE_REGIONS`) is a
/// silent prober after `prober_silent_s`, alerted once, and its view counts
/// neither way: one other region cut off is no outage.
#[test]
fn a_region_object_that_does_not_answer_is_a_silent_prober_never_an_outage() {
    if !worker_or_skip() {
        return;
    }
    let discord = Discord::start();
    let target = TargetServer::start();
    let config = config(r#"["weur", "enam", "apac"]"#, &target.url())
        .replace("prober_silent_s = 120", "prober_silent_s = 5");
    let w = Wrangler::start(vars(
        config,
        &[
            ("VIGIL_STORE", "durable_object".into()),
            ("DISCORD_WEBHOOK_URL", discord.url()),
            ("VIGIL_TEST_MUTE_REGIONS", "apac".into()),
        ],
    ));
    target.set(Behaviour::FailFrom(vec!["enam"]));
    cycle_until(&w, "the prober-silent note", |w| {
        !notes(w, "prober_silent").is_empty()
    });
    cycle_until(&w, "the silent warning", |_| {
        discord
            .titles()
            .iter()
            .any(|t| t.starts_with("prober apac silent"))
    });
    let silent = notes(&w, "prober_silent");
    let apac: Vec<&Value> = silent
        .iter()
        .filter(|n| n["regions"] == json!(["apac"]))
        .collect();
    assert_eq!(apac.len(), 1, "once: {silent:?}");
    let vantage = get(&w, "/ops/vantage");
    let apac = &vantage["targets"][0]["seen"][2];
    assert_eq!(
        (&apac["region"], &apac["health"]),
        (&json!("apac"), &Value::Null),
        "{vantage}"
    );
    assert!(get(&w, "/ops/incidents")["incidents"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(
        target
            .seen()
            .iter()
            .all(|s| s.headers.get("x-vigil-region").map(String::as_str) != Some("apac")),
        "the muted object probed nothing"
    );
}

/// `regions` in the KV store, or a name that is no location hint: a start
/// error naming the key.
#[test]
fn regions_need_the_durable_object_store_and_location_hints() {
    if !worker_or_skip() {
        return;
    }
    for (regions, store, want) in [
        (
            r#"["weur", "enam"]"#,
            "kv",
            "target[0].regions: the KV store cannot host region objects",
        ),
        (
            r#"["weur", "mars"]"#,
            "durable_object",
            "mars\\\" is not a Cloudflare location hint (the Worker's regions are wnam, enam, sam, weur, eeur, apac, oc, afr, me)",
        ),
    ] {
        let target = TargetServer::start();
        let config = config(regions, &target.url());
        let w = Wrangler::start(vars(config, &[("VIGIL_STORE", store.into())]));
        assert!(w.trigger() > 0);
        let mut line = None;
        vigil_testkit::eventually(Duration::from_secs(60), Duration::from_millis(100), || {
            line = w
                .logs()
                .lines()
                .find(|l| l.contains("vigil cycle failed"))
                .map(str::to_string);
            line.is_some()
        });
        let line = line.unwrap_or_else(|| panic!("no cycle failure:\n{}", w.logs()));
        // The log line quotes the answer's JSON.
        assert!(line.contains(want), "{store}: {line}");
        let res = w.http.get(w.url("/ops/vantage")).bearer_auth(READ_TOKEN).send();
        let body: Value = res.unwrap().json().unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&want.replace('\\', "")), "{body}");
        assert!(message.contains("target[0].regions: "), "{body}");
        assert!(target.seen().is_empty(), "nothing probed");
    }
}

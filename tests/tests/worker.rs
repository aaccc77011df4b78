//! The edge as a Cloudflare Worker, running in workerd (`wrangler dev
//! --test-scheduled`), driven through `/__scheduled` against local targets, a
//! strict local Discord, a scripted model and the real ops-agent with real
//! containers. KV reads and writes are counted by the Worker itself (its
//! cycle report).

use serde_json::Value;
use vigil_testkit::discord::Discord;
use vigil_testkit::docker_or_skip;
use vigil_testkit::edge::{CONTROL_TOKEN, CRASH_LOG_TOKEN, JOBS_TOKEN, READ_TOKEN};
use vigil_testkit::healthchecks::Healthchecks;
use vigil_testkit::openai::Reply;
use vigil_testkit::pagerduty::PagerDuty;
use vigil_testkit::pair::{Options, Pair};
use vigil_testkit::target::{Behaviour, TargetServer};
use vigil_testkit::wrangler::{worker_or_skip, Wrangler};

fn vars(config: String, extra: Vec<(&'static str, String)>) -> Vec<(String, String)> {
    let mut v = vec![
        ("VIGIL_CONFIG".to_string(), config),
        ("OPS_READ_TOKEN".to_string(), READ_TOKEN.to_string()),
        ("CONTROL_TOKEN".to_string(), CONTROL_TOKEN.to_string()),
        ("JOBS_TOKEN".to_string(), JOBS_TOKEN.to_string()),
        ("CRASH_LOG_TOKEN".to_string(), CRASH_LOG_TOKEN.to_string()),
    ];
    v.extend(extra.into_iter().map(|(k, s)| (k.to_string(), s)));
    v
}

fn alert_only(id: &str, url: &str) -> String {
    format!("[[target]]\nid = {id:?}\nurl = {url:?}\nbody_contains = \"ok\"\ntimeout_ms = 2000\n")
}

fn get(w: &Wrangler, path: &str, token: Option<&str>) -> (u16, Value) {
    w.get_json(path, token)
}

/// Puts target `api` in maintenance for a minute.
fn maintenance(w: &Wrangler) -> reqwest::blocking::Response {
    w.http
        .post(w.url("/ops/target/api/maintenance"))
        .bearer_auth(CONTROL_TOKEN)
        .body(r#"{"duration_s": 60}"#)
        .send()
        .unwrap()
}

#[test]
fn blip_ignored_two_failures_alert_once_state_survives_restart_and_steady_cycles_write_nothing() {
    if !worker_or_skip() {
        return;
    }
    let discord = Discord::start();
    let target = TargetServer::start();
    let config = format!(
        "interval_s = 60\nretry_after_s = 0.3\n{}",
        alert_only("api", &target.url())
    );
    let mut w = Wrangler::start(vars(config, vec![("DISCORD_WEBHOOK_URL", discord.url())]));

    // First cycle stores the new target; a steady one then writes nothing.
    let first = w.scheduled();
    assert_eq!(
        first["kv_reads"], 2,
        "the state, and the history once per fresh isolate"
    );
    let steady = w.scheduled();
    assert_eq!(
        (steady["kv_reads"].as_u64(), steady["kv_writes"].as_u64()),
        (Some(1), Some(0)),
        "{steady}"
    );

    // A blip: the confirm probe inside the same invocation clears it.
    target.set(Behaviour::Blip(500));
    let blip = w.scheduled();
    assert_eq!(blip["probes"], 2, "the probe and its confirm: {blip}");
    assert_eq!(
        blip["kv_writes"], 0,
        "a blip that cleared changes nothing stored: {blip}"
    );
    assert!(discord.accepted().is_empty());

    // Down: two failures in one invocation, one alert.
    target.set(Behaviour::Status(500));
    let down = w.scheduled();
    assert_eq!(down["delivered"], 1, "{down}");
    assert_eq!(discord.titles(), ["api: healthy → down"]);
    let again = w.scheduled();
    assert_eq!(again["delivered"], 0);
    assert_eq!(again["kv_writes"], 0, "still down, nothing new: {again}");
    let (_, open) = get(&w, "/ops/incidents?state=open", Some(READ_TOKEN));
    let id = open["incidents"][0]["id"].as_str().unwrap().to_string();

    // The state survives a restart of wrangler (workerd and its local KV).
    w.restart();
    w.scheduled();
    let (_, open) = get(&w, "/ops/incidents?state=open", Some(READ_TOKEN));
    assert_eq!(open["incidents"].as_array().unwrap().len(), 1);
    assert_eq!(open["incidents"][0]["id"], id.as_str());
    assert_eq!(
        discord.accepted().len(),
        1,
        "no duplicate alert after the restart"
    );

    target.set(Behaviour::Ok);
    let up = w.scheduled();
    assert_eq!(up["delivered"], 1);
    assert_eq!(
        discord.titles(),
        ["api: healthy → down", "api: down → healthy"]
    );
    let (_, inc) = get(&w, &format!("/ops/incidents/{id}"), Some(READ_TOKEN));
    assert_eq!(inc["resolution"], "recovered");
    // The probes bypassed caches.
    assert!(target.seen().iter().all(|s| s
        .query
        .as_deref()
        .is_some_and(|q| q.starts_with("vigil_nocache="))
        && s.headers["cache-control"].contains("no-cache")));
}

#[test]
fn the_ops_api_answers_with_and_without_the_right_token() {
    if !worker_or_skip() {
        return;
    }
    let target = TargetServer::start();
    let config = format!(
        "interval_s = 60\nretry_after_s = 0.3\n{}",
        alert_only("api", &target.url())
    );
    let w = Wrangler::start(vars(config, vec![]));
    w.scheduled();
    assert_eq!(get(&w, "/healthz", None).0, 200);
    for path in [
        "/ops/summary",
        "/ops/incidents",
        "/ops/anomalies",
        "/ops/target/api",
        "/ops/jobs",
        "/ops/crashes",
    ] {
        assert_eq!(get(&w, path, None).0, 401, "{path}");
        assert_eq!(get(&w, path, Some("wrong-token-wrong")).0, 401, "{path}");
        assert_eq!(get(&w, path, Some(READ_TOKEN)).0, 200, "{path}");
    }
    let (_, summary) = get(&w, "/ops/summary", Some(READ_TOKEN));
    assert_eq!(summary["targets"][0]["state"], "healthy");
    assert_eq!(
        get(&w, "/ops/incidents?state=bogus", Some(READ_TOKEN)).0,
        400
    );
    assert_eq!(get(&w, "/ops/incidents/inc-9", Some(READ_TOKEN)).0, 404);
    assert_eq!(get(&w, "/nope", Some(READ_TOKEN)).0, 404);
    let post = |path: &str, token: &str, body: &str| {
        w.http
            .post(w.url(path))
            .bearer_auth(token)
            .body(body.to_string())
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(
        post(
            "/ops/target/api/maintenance",
            READ_TOKEN,
            r#"{"duration_s": 60}"#
        ),
        401,
        "read token cannot control"
    );
    assert_eq!(
        post("/ops/target/api/maintenance", CONTROL_TOKEN, "{nope"),
        400
    );
    assert_eq!(
        post(
            "/ops/target/api/maintenance",
            CONTROL_TOKEN,
            &" ".repeat(20_000)
        ),
        413
    );
    assert_eq!(
        post(
            "/ops/target/api/maintenance",
            CONTROL_TOKEN,
            r#"{"duration_s": 60}"#
        ),
        200
    );
    let (_, summary) = get(&w, "/ops/summary", Some(READ_TOKEN));
    assert!(summary["targets"][0]["maintenance_until_ms"]
        .as_u64()
        .is_some());
}

#[test]
fn remediation_runs_through_the_allowlist_and_the_target_recovers() {
    if !worker_or_skip() || !docker_or_skip() {
        return;
    }
    let p = Pair::start(
        "vw1",
        Options {
            native_edge: false,
            ..Options::default()
        },
    );
    let config = p.edge_config.replace("interval_s = 1", "interval_s = 60");
    let w = Wrangler::start(vars(config, p.edge_env.clone()));
    let first = w.scheduled();
    assert_eq!(
        first["host_polls"], 1,
        "host metrics read outside incidents: {first}"
    );
    p.fault(p.api_port, "/crash");
    let report = w.scheduled();
    assert_eq!(report["rounds"], 1, "{report}\n{}", w.logs());
    let (_, incidents) = get(&w, "/ops/incidents", Some(READ_TOKEN));
    let inc = &incidents["incidents"][0];
    assert_eq!(inc["resolution"], "recovered", "{inc:#}");
    assert_eq!(inc["rounds"][0]["action"], "restart_api_core");
    assert_eq!(inc["rounds"][0]["outcome"], "recovered");
    assert!(inc["rounds"][0]["host_metrics"]["mem_total_bytes"].as_u64() > Some(0));
    // The poll's sample and the round's: the target's host, over time.
    let (_, detail) = get(&w, "/ops/target/api", Some(READ_TOKEN));
    let samples = detail["host_metrics"].as_array().unwrap();
    assert_eq!(samples.len(), 2, "{detail}");
    assert!(samples
        .iter()
        .all(|m| m["mem_used_percent"].as_f64() > Some(0.0)));
    assert_eq!(detail["host"], "vps1");
    assert_eq!(
        p.discord.titles(),
        ["api: healthy → down", "api: down → healthy"]
    );
    assert!(p.discord.pages().is_empty());
    assert_eq!(p.restarts(&p.api), 1);
    let audit: Vec<String> = p
        .outcomes()
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(audit, ["restart_api_core:ok"]);
}

/// The model plans in the Worker too: the untrusted logs reach it framed by
/// delimiters drawn from the Worker's randomness (`crypto.getRandomValues`),
/// fresh for each frame.
#[test]
fn the_model_plans_from_the_worker_with_framed_logs() {
    if !worker_or_skip() || !docker_or_skip() {
        return;
    }
    let p = Pair::start(
        "vw5",
        Options {
            native_edge: false,
            with_model: true,
            ..Options::default()
        },
    );
    let model = p.model.clone().unwrap();
    model.script(vec![
        Reply::tool("get_logs", r#"{"service":"api-core"}"#),
        Reply::tool(
            "restart_api_core",
            r#"{"reason":"the logs say it crashed"}"#,
        ),
    ]);
    let config = p.edge_config.replace("interval_s = 1", "interval_s = 60");
    let w = Wrangler::start(vars(config, p.edge_env.clone()));
    w.scheduled();
    p.fault(p.api_port, "/crash");
    let report = w.scheduled();
    assert_eq!(report["rounds"], 1, "{report}\n{}", w.logs());
    let (_, incidents) = get(&w, "/ops/incidents", Some(READ_TOKEN));
    let round = &incidents["incidents"][0]["rounds"][0];
    assert_eq!(round["planner"], "llm", "{round:#}");
    assert_eq!(round["action"], "restart_api_core", "{round:#}");
    assert_eq!(round["reason"], "the logs say it crashed");
    let requests = model.requests();
    let text = |r: &Value, i: usize| r["messages"][i]["content"].as_str().unwrap().to_string();
    let first = text(&requests[0], 1);
    let logs = text(&requests[1], 3);
    let delimiter = |t: &str| {
        let open = t.find("<<<UNTRUSTED DATA ").expect("framed") + 18;
        t[open..open + 32].to_string()
    };
    let (d1, d2) = (delimiter(&first), delimiter(&logs));
    assert!(d1.chars().all(|c| c.is_ascii_hexdigit()), "{d1}");
    assert_ne!(d1, d2, "a fresh delimiter per frame");
    assert!(
        logs.ends_with(&format!("<<<END OF UNTRUSTED DATA {d2}>>>")),
        "{logs}"
    );
}

#[test]
fn exhaustion_pages_once_from_the_worker() {
    if !worker_or_skip() || !docker_or_skip() {
        return;
    }
    let p = Pair::start(
        "vw2",
        Options {
            native_edge: false,
            ladder: vec!["restart_api_core"],
            config: "max_remediation_rounds = 1".into(),
            ..Options::default()
        },
    );
    let config = p.edge_config.replace("interval_s = 1", "interval_s = 60");
    let w = Wrangler::start(vars(config, p.edge_env.clone()));
    w.scheduled();
    p.fault(p.api_port, "/break-disk");
    let report = w.scheduled();
    assert_eq!(report["rounds"], 1, "{report}");
    for _ in 0..2 {
        let later = w.scheduled();
        assert_eq!(later["rounds"], 0, "no round after exhaustion: {later}");
    }
    let pages = p.discord.pages();
    assert_eq!(pages.len(), 1, "{:?}", p.discord.titles());
    assert!(pages[0]["content"]
        .as_str()
        .unwrap()
        .contains("remediation exhausted after 1 round(s)"));
    let (_, incidents) = get(&w, "/ops/incidents?state=open", Some(READ_TOKEN));
    assert_eq!(
        incidents["incidents"][0]["remediation"]["status"],
        "exhausted"
    );
}

/// The Durable Object store: one cycle at a time (an overlapping one is
/// refused), so a page is sent once even when cron invocations overlap;
/// control writes during a cycle get 503; the state survives a restart.
#[test]
fn durable_object_store_runs_one_cycle_at_a_time_and_pages_once() {
    if !worker_or_skip() {
        return;
    }
    let discord = Discord::start();
    let target = TargetServer::start();
    target.set(Behaviour::Status(500));
    let dead_agent = format!("http://127.0.0.1:{}", vigil_testkit::free_port());
    let config = format!(
        "interval_s = 60\nretry_after_s = 3\n[[target]]\nid = \"api\"\nurl = {:?}\nbody_contains = \"ok\"\nrole = \"remediate\"\nhost = \"vps1\"\nactions = [\"restart_api_core\"]\n[[host]]\nid = \"vps1\"\nurl_env = \"OPS_AGENT_URL\"\ntoken_env = \"OPS_AGENT_TOKEN\"\n",
        target.url()
    );
    let mut w = Wrangler::start(vars(
        config,
        vec![
            ("VIGIL_STORE", "durable_object".into()),
            ("DISCORD_WEBHOOK_URL", discord.url()),
            ("DISCORD_ALERT_USER_ID", "424242".into()),
            ("OPS_AGENT_URL", dead_agent),
            ("OPS_AGENT_TOKEN", "agent-token-0123456789".into()),
        ],
    ));
    // Two invocations at once: the second finds the cycle running (the
    // first probed and waits `retry_after_s` for its confirm probe).
    std::thread::scope(|s| {
        let a = s.spawn(|| w.trigger());
        let every = std::time::Duration::from_millis(20);
        let probed = vigil_testkit::eventually(std::time::Duration::from_secs(60), every, || {
            !target.seen().is_empty()
        });
        assert!(probed, "the first cycle never probed:\n{}", w.logs());
        let b = s.spawn(|| w.trigger());
        wait_for_log(&w, "cycle_running");
        // A control write while the cycle runs is refused, not lost.
        let res = maintenance(&w);
        assert_eq!(res.status().as_u16(), 503);
        assert_eq!(res.headers()["retry-after"], "5");
        assert_eq!((a.join().unwrap(), b.join().unwrap()), (200, 200));
    });
    // The cycle's report may be logged after its trigger was answered.
    wait_for_log(&w, "vigil cycle: ");
    let logs = w.logs();
    assert_eq!(w.reports().len(), 1, "{logs}");
    assert!(logs.contains("cycle_running"), "{logs}");
    let report = &w.reports()[0];
    assert_eq!(report["rounds"], 1, "{report}");
    assert_eq!(discord.pages().len(), 1, "{:?}", discord.titles());
    assert!(discord.pages()[0]["content"]
        .as_str()
        .unwrap()
        .contains("host unreachable"));
    // Later cycles, and a restart, never page again.
    w.scheduled();
    w.restart();
    let after = w.scheduled();
    assert_eq!(
        after["kv_reads"], 2,
        "the state, and the history once per fresh isolate: {after}"
    );
    let (_, open) = get(&w, "/ops/incidents?state=open", Some(READ_TOKEN));
    assert_eq!(
        open["incidents"].as_array().unwrap().len(),
        1,
        "the state survived the restart: {open}"
    );
    assert_eq!(discord.pages().len(), 1);
    assert_eq!(
        discord
            .titles()
            .iter()
            .filter(|t| t.as_str() == "api: healthy → down")
            .count(),
        1
    );
    // Crash reports go to the Durable Object too, and keep their CORS.
    let res = w
        .http
        .post(w.url("/_log"))
        .bearer_auth(CRASH_LOG_TOKEN)
        .body(r#"{"app": "shop", "message": "boom", "severity": "critical"}"#)
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let (_, crashes) = get(&w, "/ops/crashes", Some(READ_TOKEN));
    assert_eq!(crashes["crashes"][0]["app"], "shop", "{crashes}");
    let (_, open) = get(&w, "/ops/incidents?state=open", Some(READ_TOKEN));
    assert_eq!(open["incidents"].as_array().unwrap().len(), 2, "{open}");
}

#[test]
fn job_heartbeats_in_the_worker() {
    if !worker_or_skip() {
        return;
    }
    let discord = Discord::start();
    let config = "interval_s = 60\n[job_defaults]\nauto_create = true\n[[job]]\nid = \"backup\"\nperiod_s = 3600\ngrace_s = 600\n[[job]]\nid = \"nightly\"\ncron = \"0 6 * * mon\"\ntz = \"America/New_York\"\n".to_string();
    let w = Wrangler::start(vars(config, vec![("DISCORD_WEBHOOK_URL", discord.url())]));
    let send = |token: Option<&str>, body: &str| {
        let mut req = w
            .http
            .post(w.url("/ops/jobs/heartbeat"))
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().unwrap().status().as_u16()
    };
    assert_eq!(send(None, r#"{"job": "backup", "status": "ok"}"#), 401);
    assert_eq!(
        send(Some(CONTROL_TOKEN), r#"{"job": "backup", "status": "ok"}"#),
        401
    );
    assert_eq!(send(Some(JOBS_TOKEN), "{nope"), 400);
    assert_eq!(
        send(Some(JOBS_TOKEN), r#"{"job": "Not An Id", "status": "ok"}"#),
        404
    );
    assert_eq!(send(Some(JOBS_TOKEN), &" ".repeat(20_000)), 413);
    assert_eq!(
        send(Some(JOBS_TOKEN), r#"{"job": "backup", "status": "ok"}"#),
        200
    );
    let (_, jobs) = get(&w, "/ops/jobs", Some(READ_TOKEN));
    assert_eq!(jobs["jobs"][0]["state"], "healthy", "{jobs}");
    // The tz table and cron in wasm: Mondays 06:00 in New York are 10:00
    // or 11:00 UTC, on a Monday, within a week (a cycle starts watching).
    w.scheduled();
    let (_, jobs) = get(&w, "/ops/jobs", Some(READ_TOKEN));
    let due = jobs["jobs"][1]["next_due_ms"].as_u64().unwrap();
    let days = due / 86_400_000;
    assert_eq!((days + 4) % 7, 1, "a Monday: {jobs}");
    assert!([600, 660].contains(&(due / 60_000 % 1440)), "{jobs}");
    // An unknown job is created, as configured.
    assert_eq!(
        send(Some(JOBS_TOKEN), r#"{"job": "adhoc", "status": "ok"}"#),
        200
    );
    let (_, jobs) = get(&w, "/ops/jobs", Some(READ_TOKEN));
    assert_eq!(jobs["jobs"][2]["auto"], true, "{jobs}");
    assert!(jobs["jobs"][0]["last_ok_ms"].as_u64().is_some());
    assert_eq!(
        send(
            Some(JOBS_TOKEN),
            r#"{"job": "backup", "status": "fail", "run_id": "r1"}"#
        ),
        200
    );
    let report = w.scheduled();
    assert_eq!(report["delivered"], 1, "{report}");
    assert_eq!(discord.titles(), ["job:backup: healthy → down"]);
    let (_, open) = get(&w, "/ops/incidents?state=open", Some(READ_TOKEN));
    assert_eq!(open["incidents"][0]["target"], "job:backup");
}

#[test]
fn crash_reports_in_the_worker() {
    if !worker_or_skip() {
        return;
    }
    let discord = Discord::start();
    let w = Wrangler::start(vars(
        "interval_s = 60\n".to_string(),
        vec![("DISCORD_WEBHOOK_URL", discord.url())],
    ));
    let send = |token: Option<&str>, body: &str| {
        let mut req = w.http.post(w.url("/_log")).body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().unwrap();
        assert_eq!(
            res.headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap()),
            Some("*")
        );
        let status = res.status().as_u16();
        (status, res.json::<Value>().unwrap_or(Value::Null))
    };
    let critical =
        r#"{"app": "shop", "message": "TypeError: cart is undefined", "severity": "critical"}"#;
    assert_eq!(send(None, critical).0, 401);
    assert_eq!(send(Some("wrong-wrong-wrong-wrong"), critical).0, 401);
    assert_eq!(send(Some(JOBS_TOKEN), critical).0, 401);
    assert_eq!(send(Some(CRASH_LOG_TOKEN), "{nope").0, 400);
    let (status, body) = send(Some(CRASH_LOG_TOKEN), r#"{"app": "", "message": "m"}"#);
    assert_eq!(status, 400);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("app must not be empty"));
    let huge = format!(
        r#"{{"app": "shop", "message": "m", "stack": "{}"}}"#,
        "s".repeat(40_000)
    );
    assert_eq!(send(Some(CRASH_LOG_TOKEN), &huge).0, 413);
    let (_, list) = get(&w, "/ops/crashes", Some(READ_TOKEN));
    assert!(list["crashes"].as_array().unwrap().is_empty(), "{list}");

    let long = format!(
        r#"{{"app": "shop", "message": "slow", "stack": "{}"}}"#,
        "s".repeat(20_000)
    );
    let (status, stored) = send(Some(CRASH_LOG_TOKEN), &long);
    assert_eq!(
        (status, stored["truncated"].as_bool()),
        (202, Some(true)),
        "{stored}"
    );
    let (_, first) = send(Some(CRASH_LOG_TOKEN), critical);
    assert_eq!(first["alerted"], true);
    let (_, again) = send(Some(CRASH_LOG_TOKEN), critical);
    assert_eq!(again["alerted"], Value::Null);
    assert_eq!(again["incident"], first["incident"]);
    let report = w.scheduled();
    assert_eq!(report["delivered"], 1, "{report}");
    assert_eq!(discord.titles(), ["shop: critical crash"]);
    let (_, list) = get(&w, "/ops/crashes?app=shop&limit=2", Some(READ_TOKEN));
    let list = list["crashes"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    assert!(
        list[0]["id"].as_u64() > list[1]["id"].as_u64(),
        "newest first"
    );
    assert_eq!(get(&w, "/ops/crashes?limit=9999", Some(READ_TOKEN)).0, 400);
    assert_eq!(get(&w, "/ops/crashes", None).0, 401);
    let pre = w
        .http
        .request(reqwest::Method::OPTIONS, w.url("/_log"))
        .send()
        .unwrap();
    assert_eq!(pre.status().as_u16(), 204);
    assert!(pre.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
}

#[test]
fn history_and_burn_alerts_in_the_worker_within_the_kv_budget() {
    if !worker_or_skip() {
        return;
    }
    let discord = Discord::start();
    let target = TargetServer::start();
    let config = format!(
        "interval_s = 60\nretry_after_s = 0.3\n{}slo = 99.9999\n",
        alert_only("web", &target.url())
    );
    let mut w = Wrangler::start(vars(config, vec![("DISCORD_WEBHOOK_URL", discord.url())]));
    // History waits in the isolate (history_flush_s, 10 min by default):
    // steady cycles store nothing at all.
    w.scheduled();
    for _ in 0..3 {
        let steady = w.scheduled();
        assert_eq!(
            (
                steady["kv_writes"].as_u64(),
                steady["history_writes"].as_u64()
            ),
            (Some(0), Some(0)),
            "{steady}"
        );
    }
    let (_, summary) = get(&w, "/ops/summary", Some(READ_TOKEN));
    let web = &summary["targets"][0];
    assert_eq!(web["samples_24h"], 4, "{web}");
    assert_eq!(web["uptime_24h"], 100.0);
    assert!(web["p99_ms_24h"].as_u64().is_some());
    assert_eq!(web["slo"]["budget_remaining"], 100.0);

    // Down for one cycle. Each observation stands for the time since the
    // one before, and the test runs cycles back to back, so the outage
    // weighs about the confirm delay (0.3 s): with a 99.9999 % objective
    // that burns the budget far faster than 14.4× over the hour and 6×
    // over six hours. One alert each; more cycles in the same episode add
    // none.
    target.set(Behaviour::Status(503));
    w.scheduled();
    target.set(Behaviour::Ok);
    w.scheduled();
    w.scheduled();
    let burns = || -> Vec<String> {
        discord
            .titles()
            .into_iter()
            .filter(|t| t.contains("burning"))
            .collect()
    };
    assert_eq!(burns().len(), 2, "{:?}", discord.titles());
    assert!(burns()[0].contains("last hour"), "{:?}", burns());
    assert!(burns()[1].contains("last 6 hours"), "{:?}", burns());
    let (_, detail) = get(&w, "/ops/target/web", Some(READ_TOKEN));
    assert!(detail["uptime_24h"].as_f64().unwrap() < 100.0, "{detail}");
    assert!(
        detail["slo"]["burn_1h"].as_f64().unwrap() > 14.4,
        "{detail}"
    );
    assert!(detail["slo"]["burn_6h"].as_f64().unwrap() > 6.0, "{detail}");
    assert!(
        detail["slo"]["budget_remaining"].as_f64().unwrap() < 0.0,
        "{detail}"
    );
    let steady = w.scheduled();
    assert_eq!(steady["kv_writes"], 0, "the episode goes on: {steady}");

    // A restart may lose the isolate's unstored samples, never the alert
    // state: no second alert for the same episode.
    w.restart();
    w.scheduled();
    assert_eq!(
        discord
            .titles()
            .iter()
            .filter(|t| t.contains("burning"))
            .count(),
        2
    );
}

#[test]
fn history_flushed_every_cycle_survives_a_restart() {
    if !worker_or_skip() {
        return;
    }
    let target = TargetServer::start();
    // A history write every cycle is more than the free plan's day allows.
    let config = format!(
        "interval_s = 60\nhistory_flush_s = 0\n{}[worker]\nplan = \"paid\"\n",
        alert_only("web", &target.url())
    );
    let mut w = Wrangler::start(vars(config, vec![]));
    for _ in 0..3 {
        let r = w.scheduled();
        assert_eq!(r["history_writes"], 1, "{r}");
    }
    w.restart();
    w.scheduled();
    let (_, summary) = get(&w, "/ops/summary", Some(READ_TOKEN));
    assert_eq!(summary["targets"][0]["samples_24h"], 4, "{summary}");
}

/// Issue 16 items 1 and 6 in the Worker: the same core bounds crash intake
/// (whatever app names are posted) and turns a flapping target into one
/// episode, the Worker only calls it.
#[test]
fn crash_floods_and_flapping_stay_bounded_in_the_worker() {
    if !worker_or_skip() {
        return;
    }
    let discord = Discord::start();
    let target = TargetServer::start();
    target.set(Behaviour::Cycle(vec![500, 500, 200]));
    let config = format!(
        "interval_s = 60\nretry_after_s = 0.2\nflap_threshold = 6\nflap_window_s = 600\nflap_settle_s = 1\n[crash_log]\napps = [\"shop\", \"blog\", \"a0\", \"a1\", \"a2\", \"a3\", \"a4\", \"a5\"]\nmax_alerts = 20\nmax_open_incidents = 3\n{}",
        alert_only("api", &target.url())
    );
    let w = Wrangler::start(vars(config, vec![("DISCORD_WEBHOOK_URL", discord.url())]));
    let send = |app: &str| {
        let res = w
            .http
            .post(w.url("/_log"))
            .bearer_auth(CRASH_LOG_TOKEN)
            .body(format!(
                r#"{{"app": "{app}", "message": "boom", "severity": "critical"}}"#
            ))
            .send()
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json::<Value>().unwrap_or(Value::Null))
    };
    let (status, body) = send("intruder");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("unknown_app")),
        "{body}"
    );
    for i in 0..6 {
        assert_eq!(send(&format!("a{i}")).0, 202);
    }
    let (_, open) = get(&w, "/ops/incidents?state=open", Some(READ_TOKEN));
    assert_eq!(open["incidents"].as_array().unwrap().len(), 3, "{open}");
    for _ in 0..14 {
        w.scheduled();
    }
    let titles = discord.titles();
    let crash: Vec<&String> = titles.iter().filter(|t| t.contains("crash")).collect();
    assert_eq!(crash.len(), 3, "{titles:?}");
    assert!(
        titles
            .iter()
            .any(|t| t == "Crash reports over the limit: alerts paused"),
        "{titles:?}"
    );
    let flapping = titles
        .iter()
        .filter(|t| t.as_str() == "api: flapping")
        .count();
    assert_eq!(flapping, 1, "{titles:?}");
    let api_alerts = titles.iter().filter(|t| t.starts_with("api: ")).count();
    assert_eq!(
        api_alerts, 7,
        "six changes alerted, then one for the episode: {titles:?}"
    );
    // Healthy from now on: the cycle after flap_settle_s sends the one
    // settled alert.
    target.set(Behaviour::Ok);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let settled = |d: &Discord| {
        d.titles().last().map(String::as_str) == Some("api: stopped flapping, healthy")
    };
    while !settled(&discord) && std::time::Instant::now() < deadline {
        w.scheduled();
    }
    assert!(settled(&discord), "{:?}", discord.titles());
    let (_, open) = get(&w, "/ops/incidents?state=open", Some(READ_TOKEN));
    let api_open = open["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["target"] == "api")
        .count();
    assert_eq!(api_open, 0, "{open}");
}

/// `/_log` and failed authentications (bearer tokens, the `/ui` sign-in
/// form) counted per client through the Workers rate-limit bindings
/// (simulated by wrangler dev).
#[test]
fn crash_log_and_failed_authentications_are_rate_limited_in_the_worker() {
    if !worker_or_skip() {
        return;
    }
    let bindings = "\n[[unsafe.bindings]]\nname = \"VIGIL_CRASH_RATE\"\ntype = \"ratelimit\"\nnamespace_id = \"1001\"\nsimple = { limit = 3, period = 60 }\n\n[[unsafe.bindings]]\nname = \"VIGIL_AUTH_FAIL_RATE\"\ntype = \"ratelimit\"\nnamespace_id = \"1002\"\nsimple = { limit = 2, period = 60 }\n";
    let w = Wrangler::start_with(vars("interval_s = 60\n".to_string(), vec![]), bindings);
    let post = |ip: &str| {
        w.http
            .post(w.url("/_log"))
            .bearer_auth(CRASH_LOG_TOKEN)
            .header("cf-connecting-ip", ip)
            .body(r#"{"app": "shop", "message": "boom"}"#)
            .send()
            .unwrap()
    };
    let statuses: Vec<u16> = (0..5)
        .map(|_| post("203.0.113.7").status().as_u16())
        .collect();
    assert_eq!(statuses, [202, 202, 202, 429, 429]);
    let refused = post("203.0.113.7");
    assert_eq!(refused.headers()["access-control-allow-origin"], "*");
    let body: Value = refused.json().unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(
        post("198.51.100.1").status().as_u16(),
        202,
        "another client"
    );
    let wrong = || {
        w.http
            .get(w.url("/ops/summary"))
            .bearer_auth("wrong-wrong-wrong-wrong")
            .header("cf-connecting-ip", "203.0.113.9")
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let statuses: Vec<u16> = (0..4).map(|_| wrong()).collect();
    assert_eq!(statuses, [401, 401, 429, 429]);
    // A wrong token in the audit view's sign-in form counts the same.
    let sign_in = |token: &str| {
        w.http
            .post(w.url("/ui/sign-in"))
            .header("cf-connecting-ip", "203.0.113.10")
            .form(&[("token", token)])
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let statuses: Vec<u16> = (0..3).map(|_| sign_in("wrong-wrong-wrong-wrong")).collect();
    assert_eq!(statuses, [401, 401, 429]);
}

/// A configured token under 16 characters is refused (500 naming it) on
/// every route but /healthz, as the native edge refuses to start.
#[test]
fn a_short_token_is_refused_by_the_worker() {
    if !worker_or_skip() {
        return;
    }
    let mut v = vars("interval_s = 60\n".to_string(), vec![]);
    v.retain(|(k, _)| k != "JOBS_TOKEN");
    v.push(("JOBS_TOKEN".to_string(), "short".to_string()));
    let w = Wrangler::start(v);
    assert_eq!(get(&w, "/healthz", None).0, 200);
    let (status, body) = get(&w, "/ops/summary", Some(READ_TOKEN));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (500, Some("bad_token")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("JOBS_TOKEN is 5 characters"),
        "{body}"
    );
}

/// Polls the Worker's log until `needle` shows up (or panics at the deadline).
fn wait_for_log(w: &Wrangler, needle: &str) -> String {
    let mut line = None;
    let every = std::time::Duration::from_millis(100);
    vigil_testkit::eventually(std::time::Duration::from_secs(60), every, || {
        line = w
            .logs()
            .lines()
            .find(|l| l.contains(needle))
            .map(str::to_string);
        line.is_some()
    });
    line.unwrap_or_else(|| panic!("no {needle:?} in the log:\n{}", w.logs()))
}

fn many_targets(n: usize, url: &str) -> String {
    (0..n).map(|i| alert_only(&format!("t{i}"), url)).collect()
}

/// The subrequests a KV cycle made, from its own counts.
fn kv_calls(r: &Value) -> u64 {
    [
        "kv_reads",
        "kv_writes",
        "history_writes",
        "probes",
        "delivered",
        "host_polls",
    ]
    .iter()
    .map(|k| r[*k].as_u64().unwrap())
    .sum()
}

#[test]
fn a_configuration_that_cannot_fit_the_free_plan_is_refused_at_start() {
    if !worker_or_skip() {
        return;
    }
    let target = TargetServer::start();
    let config = format!("interval_s = 60\n{}", many_targets(40, &target.url()));
    // The KV store (the Durable Object store spreads 40 probes over shards).
    let w = Wrangler::start(vars(config, vec![("VIGIL_STORE", "kv".into())]));
    assert!(w.trigger() > 0);
    let line = wait_for_log(&w, "vigil cycle failed");
    assert!(
        line.contains("[worker] plan = ")
            && line.contains("40 targets need 40 probes per invocation")
            && line.contains("at most 34 targets fit; remove 6 targets"),
        "{line}"
    );
    let (status, body) = get(&w, "/ops/summary", Some(READ_TOKEN));
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("plan = \"paid\""),
        "{body}"
    );
    assert!(target.seen().is_empty(), "nothing probed");
}

/// 34 targets on the free plan and the KV store (the most it fits), 5 of
/// them failing: every target is probed every cycle, the confirm probes and
/// alerts that no longer fit the 40 subrequests wait for the next
/// invocation (the summary says so), every alert goes out once, and no
/// invocation goes past the budget.
#[test]
fn the_free_plan_budget_carries_what_does_not_fit_to_the_next_invocation() {
    if !worker_or_skip() {
        return;
    }
    let discord = Discord::start();
    let good = TargetServer::start();
    let bad = TargetServer::start();
    bad.set(Behaviour::Status(500));
    let bad_ids: Vec<String> = (0..5).map(|i| format!("bad{i}")).collect();
    let config = format!(
        "interval_s = 60\nretry_after_s = 0.3\n{}{}",
        many_targets(29, &good.url()),
        bad_ids
            .iter()
            .map(|id| alert_only(id, &bad.url()))
            .collect::<String>()
    );
    // The KV store: its operations count too, and it has no shards (the
    // Durable Object store spreads these probes over two).
    let w = Wrangler::start(vars(
        config,
        vec![
            ("DISCORD_WEBHOOK_URL", discord.url()),
            ("VIGIL_STORE", "kv".into()),
        ],
    ));
    let mut reports = Vec::new();
    for _ in 0..4 {
        let r = w.scheduled();
        assert!(r["probes"].as_u64() >= Some(34), "every target: {r}");
        assert_eq!(r["subrequest_budget"], 40);
        assert!(r["subrequests"].as_u64().unwrap() <= 40, "{r}");
        assert_eq!(r["subrequests"].as_u64().unwrap(), kv_calls(&r), "{r}");
        reports.push(r);
    }
    let carried = |k: &str| reports.iter().any(|r| r["carried"][k].as_u64() > Some(0));
    assert!(carried("probes"), "confirm probes carried: {reports:?}");
    assert!(carried("alerts"), "alerts carried: {reports:?}");
    let (_, summary) = get(&w, "/ops/summary", Some(READ_TOKEN));
    assert_eq!(summary["worker"]["plan"], "free", "{summary}");
    assert_eq!(summary["worker"]["subrequest_budget"], 40, "{summary}");
    assert!(summary["worker"]["last_cycle"]["subrequests"].as_u64() > Some(0));
    let mut titles = discord.titles();
    titles.sort();
    let expected: Vec<String> = bad_ids
        .iter()
        .map(|id| format!("{id}: healthy → down"))
        .collect();
    assert_eq!(titles, expected, "each alert once");
    let (_, open) = get(&w, "/ops/incidents?state=open", Some(READ_TOKEN));
    assert_eq!(open["incidents"].as_array().unwrap().len(), 5, "{open}");
    assert_eq!(good.seen().len(), 29 * 4, "every target probed every cycle");
}

/// Discord down for 100 cycles while the target goes down, up and down
/// again: the state is written for those changes only, not once per cycle;
/// the failing channel is retried after its backoff (1 s doubling to a
/// minute: at most one cron cycle skipped), not at every cycle; once Discord
/// is back every alert arrives once, in order.
#[test]
fn alerts_held_through_a_discord_outage_cost_no_write_per_cycle() {
    if !worker_or_skip() {
        return;
    }
    let discord = Discord::start();
    discord.set_down(true);
    let target = TargetServer::start();
    let config = format!(
        "interval_s = 60\nretry_after_s = 0.3\n{}",
        alert_only("api", &target.url())
    );
    let w = Wrangler::start(vars(config, vec![("DISCORD_WEBHOOK_URL", discord.url())]));
    w.scheduled();
    let mut writes = 0;
    for cycle in 0..100 {
        target.set(match cycle {
            0..=29 | 60.. => Behaviour::Status(500),
            _ => Behaviour::Ok,
        });
        let r = w.scheduled();
        assert_eq!(r["delivered"], 0, "{r}");
        writes += r["kv_writes"].as_u64().unwrap();
    }
    // Three transitions (down, up, down): each a write or two (incident,
    // outbox); never one per cycle.
    assert!(writes <= 6, "{writes} state writes in 100 cycles");
    let attempts = discord.attempts().len();
    assert!(
        (2..100).contains(&attempts),
        "retried after each backoff, not every cycle: {attempts}"
    );
    assert!(discord.accepted().is_empty());
    discord.set_down(false);
    // The next attempt is due within the last backoff (a minute at most).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let r = loop {
        let r = w.scheduled();
        if r["delivered"] != 0 || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert_eq!(r["delivered"], 3, "{r}");
    assert_eq!(
        discord.titles(),
        [
            "api: healthy → down",
            "api: down → healthy",
            "api: healthy → down"
        ]
    );
    let r = w.scheduled();
    assert_eq!(r["delivered"], 0, "{r}");
    assert_eq!(discord.accepted().len(), 3, "each once");
}

/// A flood of 1,000 crash reports: once the writes kept for crash reports
/// (200 a day on free, two per report) are spent, reports get 429 with
/// Retry-After and nothing is written; state saves keep working, and crash
/// alerts stay capped.
#[test]
fn a_flood_of_crash_reports_stays_within_its_writes_and_state_saves_keep_working() {
    if !worker_or_skip() {
        return;
    }
    let discord = Discord::start();
    let target = TargetServer::start();
    let config = format!("interval_s = 60\n{}", alert_only("api", &target.url()));
    let w = Wrangler::start(vars(config, vec![("DISCORD_WEBHOOK_URL", discord.url())]));
    w.scheduled();
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..1000 {
        let body = format!(
            r#"{{"app": "shop", "message": "TypeError {}", "severity": "critical"}}"#,
            i % 20
        );
        let res = w
            .http
            .post(w.url("/_log"))
            .bearer_auth(CRASH_LOG_TOKEN)
            .body(body)
            .send()
            .unwrap();
        match res.status().as_u16() {
            202 => accepted += 1,
            429 => {
                let wait: u64 = res.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=86_400).contains(&wait));
                refused += 1;
            }
            other => panic!("report {i}: {other}"),
        }
    }
    assert_eq!((accepted, refused), (100, 900));
    let (_, crashes) = get(&w, "/ops/crashes?limit=1", Some(READ_TOKEN));
    assert_eq!(crashes["writes_today"]["used"], 200, "{crashes}");
    assert_eq!(crashes["writes_today"]["allowance"], 200, "{crashes}");
    // State saves still work: a control write, and a cycle's.
    let res = maintenance(&w);
    assert_eq!(res.status().as_u16(), 200);
    let (_, summary) = get(&w, "/ops/summary", Some(READ_TOKEN));
    assert!(summary["targets"][0]["maintenance_until_ms"]
        .as_u64()
        .is_some());
    let r = w.scheduled();
    assert!(r["kv_writes"].as_u64() >= Some(1), "the outbox sent: {r}");
    assert_eq!(
        discord.titles().len(),
        5,
        "crash alerts capped: {:?}",
        discord.titles()
    );
}

/// An isolate killed after a round's decision is stored and its action sent
/// (VIGIL_TEST_DROP_AFTER_DECISION drops the cycle there): once the lease
/// expires, the target still down, the next invocation resumes the same
/// action with the same Idempotency-Key, and the real agent replays its
/// answer instead of acting twice. On both stores.
#[test]
fn a_round_dropped_after_its_decision_resumes_with_the_same_idempotency_key() {
    if !worker_or_skip() || !docker_or_skip() {
        return;
    }
    for (name, store) in [("vw3", "kv"), ("vw4", "durable_object")] {
        let p = Pair::start(
            name,
            Options {
                native_edge: false,
                ..Options::default()
            },
        );
        let config =
            p.edge_config.replace("interval_s = 1", "interval_s = 60") + "[worker]\nlease_s = 1\n";
        let mut env = p.edge_env.clone();
        env.push(("VIGIL_STORE", store.into()));
        env.push(("VIGIL_TEST_DROP_AFTER_DECISION", "1".into()));
        let mut w = Wrangler::start(vars(config, env));
        w.scheduled();
        // A fault a restart does not mend: the target is still down when
        // the round resumes.
        p.fault(p.api_port, "/break-disk");
        assert!(w.trigger() > 0);
        wait_for_log(&w, "stored its decision");
        let (_, incidents) = get(&w, "/ops/incidents", Some(READ_TOKEN));
        let inc = &incidents["incidents"][0];
        assert_eq!(
            inc["pending_action"]["action"], "restart_api_core",
            "{store}: {inc:#}"
        );
        assert!(inc["rounds"].as_array().unwrap().is_empty(), "{inc:#}");
        // A fresh isolate; the round resumes once the lease (1 s) ran out.
        w.restart();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let report = w.scheduled();
            if report["rounds"] == 1 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{store}: {report}");
        }
        let (_, incidents) = get(&w, "/ops/incidents", Some(READ_TOKEN));
        let inc = &incidents["incidents"][0];
        assert_eq!(inc["rounds"][0]["action"], "restart_api_core", "{inc:#}");
        assert!(inc["rounds"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("resumed"));
        let audit: Vec<(String, String)> = p
            .outcomes()
            .iter()
            .map(|e| {
                (
                    e["outcome"].as_str().unwrap_or_default().to_string(),
                    e["reason"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let key = format!(
            "Idempotency-Key vigil-{}-round-1",
            inc["id"].as_str().unwrap()
        );
        assert_eq!(audit.len(), 2, "{store}: {audit:?}");
        assert_eq!(audit[0].0, "ok");
        assert_eq!(audit[1], ("replayed".to_string(), key), "{store}");
        assert_eq!(p.restarts(&p.api), 1, "acted once");
    }
}

/// 200 targets on the Durable Object store. On the free plan the probes are
/// spread over shard objects (32 each), so neither the cycle's invocation
/// nor any shard's goes past the 40-subrequest budget; on either plan all
/// are probed every cycle, one target down opens one incident and one
/// alert, and no stored value reaches 128 KB. On paid, with the history
/// stored every cycle, its rows (by hour, every target in one) survive a
/// restart.
#[test]
fn two_hundred_targets_on_the_durable_object_store() {
    if !worker_or_skip() {
        return;
    }
    for plan in ["free", "paid"] {
        let discord = Discord::start();
        let good = TargetServer::start();
        let bad = TargetServer::start();
        let flush = if plan == "paid" {
            "history_flush_s = 0\n"
        } else {
            ""
        };
        let config = format!(
            "interval_s = 60\nretry_after_s = 0.3\n{flush}{}{}[worker]\nplan = \"{plan}\"\n",
            many_targets(199, &good.url()),
            alert_only("api", &bad.url())
        );
        let mut w = Wrangler::start(vars(
            config,
            vec![
                ("DISCORD_WEBHOOK_URL", discord.url()),
                ("VIGIL_STORE", "durable_object".into()),
            ],
        ));
        let mut reports = vec![w.scheduled()];
        bad.set(Behaviour::Status(500));
        for _ in 0..3 {
            reports.push(w.scheduled());
        }
        for r in &reports {
            assert!(r["probes"].as_u64() >= Some(200), "{plan}: {r}");
            assert_eq!(r["carried"]["probes"], 0, "{plan}: {r}");
            let budget = r["subrequest_budget"].as_u64();
            assert!(r["subrequests"].as_u64() <= budget, "{plan}: {r}");
            assert!(r["shard_subrequests_max"].as_u64() <= budget, "{plan}: {r}");
            assert!(r["largest_value_bytes"].as_u64() < Some(128 * 1024), "{r}");
        }
        if plan == "free" {
            assert_eq!(reports[0]["subrequest_budget"], 40);
            assert!(
                reports[0]["shard_subrequests_max"].as_u64() > Some(0),
                "sharded"
            );
        }
        assert_eq!(discord.titles(), ["api: healthy → down"], "{plan}");
        let (_, open) = get(&w, "/ops/incidents?state=open", Some(READ_TOKEN));
        assert_eq!(open["incidents"].as_array().unwrap().len(), 1, "{open}");
        assert_eq!(
            good.seen().len(),
            199 * 4,
            "every target probed every cycle"
        );
        if plan == "paid" {
            // One hour row holds every target.
            assert_eq!(reports[1]["history_writes"], 1, "{}", reports[1]);
            w.restart();
            let (_, summary) = get(&w, "/ops/summary", Some(READ_TOKEN));
            let targets = summary["targets"].as_array().unwrap();
            assert_eq!(targets.len(), 200);
            // Latency samples are the healthy observations: `api` was down.
            let short: Vec<&Value> = targets
                .iter()
                .filter(|t| t["id"] != "api" && t["samples_24h"].as_u64() < Some(4))
                .collect();
            assert!(short.is_empty(), "every row read back: {short:?}");
        }
    }
}

/// How many lines of the Worker's log contain `needle`.
fn log_count(w: &Wrangler, needle: &str) -> usize {
    w.logs().lines().filter(|l| l.contains(needle)).count()
}

/// Waits until Discord has accepted a message titled `title`.
fn wait_for_alert(w: &Wrangler, discord: &Discord, title: &str) {
    let every = std::time::Duration::from_millis(100);
    let seen = vigil_testkit::eventually(std::time::Duration::from_secs(60), every, || {
        discord.titles().iter().any(|t| t == title)
    });
    assert!(seen, "no {title:?}: {:?}\n{}", discord.titles(), w.logs());
}

/// Writes fail (VIGIL_TEST_FAIL_WRITES points at a switch the test turns):
/// an ack is refused with 503 and not applied, `/healthz` answers 503, the
/// summary says the store fails, one "state store failing" alert goes out
/// from the isolate's memory however many saves fail; once writes work
/// again, the change is taken, `/healthz` answers 200 and one "recovered"
/// alert follows. On both stores.
#[test]
fn a_failing_store_refuses_changes_and_alerts_once_each_way_in_the_worker() {
    if !worker_or_skip() {
        return;
    }
    for store in ["kv", "durable_object"] {
        let discord = Discord::start();
        let target = TargetServer::start();
        let switch = TargetServer::start();
        let config = format!(
            "interval_s = 60\nretry_after_s = 0.3\n{}",
            alert_only("api", &target.url())
        );
        let w = Wrangler::start(vars(
            config,
            vec![
                ("DISCORD_WEBHOOK_URL", discord.url()),
                ("VIGIL_STORE", store.into()),
                ("VIGIL_TEST_FAIL_WRITES", switch.url()),
            ],
        ));
        target.set(Behaviour::Status(500));
        w.scheduled();
        assert_eq!(discord.titles(), ["api: healthy → down"], "{store}");
        let (_, open) = get(&w, "/ops/incidents?state=open", Some(READ_TOKEN));
        let id = open["incidents"][0]["id"].as_str().unwrap().to_string();
        let ack = || {
            w.http
                .post(w.url(&format!("/ops/incidents/{id}/ack")))
                .bearer_auth(CONTROL_TOKEN)
                .send()
                .unwrap()
        };

        switch.set(Behaviour::Status(503));
        let refused = ack();
        assert_eq!(refused.status().as_u16(), 503, "{store}");
        let body: Value = refused.json().unwrap();
        assert_eq!(
            body["error"]["code"], "store_unavailable",
            "{store}: {body}"
        );
        let (_, inc) = get(&w, &format!("/ops/incidents/{id}"), Some(READ_TOKEN));
        assert!(inc["acked_at_ms"].is_null(), "{store}: not applied: {inc}");
        let (status, health) = get(&w, "/healthz", None);
        assert_eq!(status, 503, "{store}: {health}");
        assert_eq!(health["store"]["ok"], false, "{store}: {health}");
        assert!(health["store"]["error"]
            .as_str()
            .unwrap()
            .contains("VIGIL_TEST_FAIL_WRITES"));
        let (_, summary) = get(&w, "/ops/summary", Some(READ_TOKEN));
        assert_eq!(summary["store"]["ok"], false, "{store}: {summary}");
        assert!(summary["store"]["failing_since_ms"].as_u64().is_some());

        // Cycles deliver the alert from memory, once, while saves fail.
        for n in 1..=2 {
            assert!(w.trigger() > 0);
            let every = std::time::Duration::from_millis(100);
            let failed =
                vigil_testkit::eventually(std::time::Duration::from_secs(60), every, || {
                    log_count(&w, "vigil cycle failed") >= n
                });
            assert!(failed, "{store}: cycle {n} did not end:\n{}", w.logs());
        }
        assert_eq!(
            discord.titles(),
            ["api: healthy → down", "vigil: state store failing"],
            "{store}"
        );
        let (_, summary) = get(&w, "/ops/summary", Some(READ_TOKEN));
        assert!(
            summary["store"]["failed_saves"].as_u64() >= Some(3),
            "{store}: {summary}"
        );

        switch.set(Behaviour::Ok);
        assert_eq!(ack().status().as_u16(), 200, "{store}");
        let (status, health) = get(&w, "/healthz", None);
        assert_eq!(
            (status, &health["store"]["ok"]),
            (200, &Value::Bool(true)),
            "{store}"
        );
        w.scheduled();
        wait_for_alert(&w, &discord, "vigil: state store recovered");
        assert_eq!(
            discord.titles(),
            [
                "api: healthy → down",
                "vigil: state store failing",
                "vigil: state store recovered"
            ],
            "{store}"
        );
        let (_, inc) = get(&w, &format!("/ops/incidents/{id}"), Some(READ_TOKEN));
        assert!(inc["acked_at_ms"].as_u64().is_some(), "{store}: {inc}");
    }
}

/// A stand-in agent whose one action answers only when the test lets it.
struct SlowAgent {
    url: String,
    release: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sent: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SlowAgent {
    fn start() -> Self {
        use axum::routing::{get as get_route, post};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let release = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicBool::new(false));
        let (r, s) = (release.clone(), sent.clone());
        let router = axum::Router::new()
            .route(
                "/v1/actions",
                get_route(|| async {
                    axum::Json(serde_json::json!({"actions": [{
                        "name": "restart_api_core", "description": "restart api-core",
                        "kind": "restart", "services": ["api-core"], "timeout_ms": 60000
                    }]}))
                }),
            )
            .route(
                "/v1/actions/{name}",
                post(move || async move {
                    s.store(true, Ordering::SeqCst);
                    while !r.load(Ordering::SeqCst) {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    axum::Json(serde_json::json!({
                        "name": "restart_api_core", "ok": true, "outcome": "ok",
                        "request_id": "r1", "started_at_ms": 1, "finished_at_ms": 2,
                        "duration_ms": 1
                    }))
                }),
            );
        SlowAgent {
            url: format!("http://{}", vigil_testkit::serve::spawn(router)),
            release,
            sent,
        }
    }
}

/// Issue 16 item 15 on the Worker: a manual action is on the open incident,
/// stored, while the agent still runs it (the record is read by another
/// request then), and its result is added when the agent answers; a result
/// that cannot be stored is answered 503 naming the outcome, and kept.
#[test]
fn a_manual_action_is_recorded_before_the_agent_answers_in_the_worker() {
    if !worker_or_skip() {
        return;
    }
    use std::sync::atomic::Ordering;
    let target = TargetServer::start();
    let switch = TargetServer::start();
    let agent = SlowAgent::start();
    let config = format!(
        "interval_s = 60\nretry_after_s = 0.3\n[[target]]\nid = \"api\"\nurl = {:?}\nrole = \"alert_only\"\nhost = \"vps1\"\n[[host]]\nid = \"vps1\"\nurl_env = \"OPS_AGENT_URL\"\ntoken_env = \"OPS_AGENT_TOKEN\"\n",
        target.url()
    );
    let w = Wrangler::start(vars(
        config,
        vec![
            ("OPS_AGENT_URL", agent.url.clone()),
            ("OPS_AGENT_TOKEN", "agent-token-0123456789".into()),
            ("VIGIL_TEST_FAIL_WRITES", switch.url()),
        ],
    ));
    target.set(Behaviour::Status(500));
    let (_, open) = {
        w.scheduled();
        get(&w, "/ops/incidents?state=open", Some(READ_TOKEN))
    };
    let id = open["incidents"][0]["id"].as_str().unwrap().to_string();
    let manual = std::thread::spawn({
        let url = w.url("/ops/actions/vps1/restart_api_core");
        let http = w.http.clone();
        move || {
            http.post(url)
                .bearer_auth(CONTROL_TOKEN)
                .header("x-vigil-operator", "alice")
                .send()
                .map(|r| (r.status().as_u16(), r.text().unwrap_or_default()))
        }
    });
    let every = std::time::Duration::from_millis(50);
    let within = std::time::Duration::from_secs(30);
    assert!(vigil_testkit::eventually(within, every, || agent
        .sent
        .load(Ordering::SeqCst)));
    // The agent holds the action: the record is already stored.
    let (_, inc) = get(&w, &format!("/ops/incidents/{id}"), Some(READ_TOKEN));
    let m = &inc["manual_actions"][0];
    assert_eq!(m["by"], "alice", "{inc:#}");
    assert_eq!(m["action"], "restart_api_core");
    assert!(m["result"].is_null(), "not answered yet: {m}");
    // The store fails before the agent answers.
    switch.set(Behaviour::Status(503));
    agent.release.store(true, Ordering::SeqCst);
    let (status, body) = manual.join().unwrap().unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("store_unavailable") && body.contains("restart_api_core ran on vps1 (ok)"),
        "{body}"
    );
    switch.set(Behaviour::Ok);
    // Kept in the isolate, and stored with the next save that works.
    let report = w.scheduled();
    assert!(report["kv_writes"].as_u64() > Some(0), "{report}");
    let (status, health) = get(&w, "/healthz", None);
    assert_eq!(status, 200, "{health}");
    let (_, inc) = get(&w, &format!("/ops/incidents/{id}"), Some(READ_TOKEN));
    assert_eq!(
        inc["manual_actions"][0]["result"]["outcome"], "ok",
        "{inc:#}"
    );
}

/// Issue 15 part 1 on the Worker: `POST /ops/signal` probes the targets
/// watching that host and service within the request, confirms after
/// `signal_confirm_s` and opens the incident (its alert sent) before it
/// answers; a signal about a healthy target costs one probe and nothing
/// else; a flood costs no probe beyond that; bad bodies and tokens are
/// refused. On both stores.
#[test]
fn a_host_signal_probes_and_confirms_within_its_request_in_the_worker() {
    if !worker_or_skip() {
        return;
    }
    use vigil_testkit::edge::SIGNAL_TOKEN;
    for store in ["kv", "durable_object"] {
        let discord = Discord::start();
        let (api, www) = (TargetServer::start(), TargetServer::start());
        let watched = |id: &str, url: &str, service: &str| {
            format!("[[target]]\nid = {id:?}\nurl = {url:?}\nbody_contains = \"ok\"\ntimeout_ms = 2000\nhost = \"vps1\"\nservices = [{service:?}]\n")
        };
        let config = format!(
            "interval_s = 60\nretry_after_s = 30\nsignal_confirm_s = 0.5\n{}{}[[host]]\nid = \"vps1\"\nurl_env = \"OPS_AGENT_URL\"\ntoken_env = \"OPS_AGENT_TOKEN\"\n",
            watched("api", &api.url(), "api-core"),
            watched("www", &www.url(), "web"),
        );
        let w = Wrangler::start(vars(
            config,
            vec![
                ("DISCORD_WEBHOOK_URL", discord.url()),
                ("SIGNAL_TOKEN", SIGNAL_TOKEN.into()),
                ("OPS_AGENT_URL", "http://127.0.0.1:9".into()),
                ("OPS_AGENT_TOKEN", "agent-token-0123456789".into()),
                ("VIGIL_STORE", store.into()),
            ],
        ));
        w.scheduled();
        let signal = |token: &str, body: String| {
            let res = w
                .http
                .post(w.url("/ops/signal"))
                .bearer_auth(token)
                .body(body)
                .send()
                .unwrap();
            (
                res.status().as_u16(),
                res.json::<Value>().unwrap_or(Value::Null),
            )
        };
        let sig = |service: &str| {
            format!(r#"{{"host": "vps1", "service": "{service}", "event": "die", "at_ms": 1}}"#)
        };
        assert_eq!(signal(CONTROL_TOKEN, sig("web")).0, 401, "{store}");
        let (status, bad) = signal(
            SIGNAL_TOKEN,
            r#"{"host": "vps1", "event": "die", "at_ms": 1}"#.into(),
        );
        assert_eq!(status, 400, "{store}");
        assert!(
            bad["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("service"),
            "{bad}"
        );

        // A mistaken signal: one probe, healthy, nothing else; a flood
        // after it probes nothing.
        // 202, with `id` listed under `list`.
        let answers = |service: &str, list: &str, id: &str| {
            let (status, out) = signal(SIGNAL_TOKEN, sig(service));
            let expected = (202, &serde_json::json!([id]));
            assert_eq!((status, &out[list]), expected, "{store}: {out}");
        };
        let probes = www.seen().len();
        answers("web", "probing", "www");
        assert_eq!(www.seen().len(), probes + 1, "{store}");
        for _ in 0..20 {
            answers("web", "throttled", "www");
        }
        assert_eq!(
            www.seen().len(),
            probes + 1,
            "{store}: the flood probed nothing"
        );

        // A real crash: probed, confirmed and alerted before the answer,
        // with no cycle in between.
        api.set(Behaviour::Status(500));
        let probes = api.seen().len();
        answers("api-core", "probing", "api");
        assert_eq!(
            api.seen().len(),
            probes + 2,
            "{store}: the probe and its confirm"
        );
        let (_, open) = get(&w, "/ops/incidents?state=open", Some(READ_TOKEN));
        assert_eq!(open["incidents"][0]["target"], "api", "{store}: {open}");
        assert_eq!(discord.titles(), ["api: healthy → down"], "{store}");
        answers("api-core", "throttled", "api");
        assert_eq!(api.seen().len(), probes + 2, "{store}");
        assert_eq!(discord.titles().len(), 1, "{store}");
    }
}

/// Form checks in the Worker: headers (the secret one from a Worker secret),
/// the JSON body with its content type, the answer's headers, redirects
/// taken or not; an unset secret fails the probe naming the variable.
#[test]
fn form_checks_in_the_worker() {
    if !worker_or_skip() {
        return;
    }
    const SECRET: &str = "Bearer form-secret-0123456789";
    let discord = Discord::start();
    let [form, wrong, unset, moved, moved_landing, followed, landing] =
        std::array::from_fn(|_| TargetServer::start());
    let want_body = r#"{"email":"probe@example.com","n":1}"#;
    for server in [&form, &wrong, &unset] {
        server.set(Behaviour::Form {
            header: ("authorization".into(), SECRET.into()),
            body: want_body.into(),
        });
    }
    moved.set(Behaviour::Redirect(moved_landing.url()));
    followed.set(Behaviour::Redirect(landing.url()));
    let form_toml = |id: &str, url: &str, email: &str, var: &str| {
        format!(
            "[[target]]\nid = {id:?}\nurl = {url:?}\nmethod = \"POST\"\nbody_contains = \"ok\"\ntimeout_ms = 2000\n\
             headers = {{ \"X-Probe\" = \"vigil\" }}\n\
             headers_env = {{ Authorization = {var:?} }}\n\
             body = {{ email = {email:?}, n = 1 }}\n\
             expect_headers = {{ \"X-Form\" = \"accepted\" }}\n"
        )
    };
    let moved_toml = format!(
        "[[target]]\nid = \"moved\"\nurl = {:?}\nbody_contains = \"moved\"\nfollow_redirects = false\nexpect_status = [302]\n",
        moved.url()
    );
    let config = [
        "interval_s = 60\nretry_after_s = 0.3\n".to_string(),
        form_toml("form", &form.url(), "probe@example.com", "PROBE_TOKEN_FORM"),
        form_toml(
            "wrong",
            &wrong.url(),
            "someone@else.com",
            "PROBE_TOKEN_FORM",
        ),
        form_toml(
            "unset",
            &unset.url(),
            "probe@example.com",
            "PROBE_TOKEN_NONE",
        ),
        moved_toml,
        alert_only("followed", &followed.url()),
    ]
    .concat();
    let w = Wrangler::start(vars(
        config,
        vec![
            ("DISCORD_WEBHOOK_URL", discord.url()),
            ("PROBE_TOKEN_FORM", SECRET.into()),
        ],
    ));
    let report = w.scheduled();
    assert_eq!(report["delivered"], 2, "{report}");
    let mut titles = discord.titles();
    titles.sort();
    assert_eq!(titles, ["unset: healthy → down", "wrong: healthy → down"]);
    let errors: Vec<String> = discord
        .accepted()
        .iter()
        .map(|m| m["embeds"][0]["fields"].to_string())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("PROBE_TOKEN_NONE is not set (headers_env.Authorization)")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("unexpected status 400")),
        "{errors:?}"
    );
    assert!(unset.seen().is_empty(), "no request without its secret");
    let sent = form.seen().last().cloned().expect("the form was probed");
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.headers["authorization"], SECRET);
    assert_eq!(sent.headers["x-probe"], "vigil");
    assert_eq!(sent.headers["content-type"], "application/json");
    assert_eq!(String::from_utf8(sent.body).unwrap(), want_body);
    let (_, summary) = get(&w, "/ops/summary", Some(READ_TOKEN));
    let state = |id: &str| {
        summary["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .map(|t| t["state"].as_str().unwrap_or_default().to_string())
    };
    for id in ["form", "moved", "followed"] {
        assert_eq!(state(id).as_deref(), Some("healthy"), "{id}: {summary}");
    }
    assert!(moved_landing.seen().is_empty(), "not followed");
    assert!(!landing.seen().is_empty(), "followed");
}

/// The Worker cannot see a certificate: `tls_expiry_days` is refused at
/// start, naming the key, rather than never warning.
#[test]
fn tls_expiry_days_is_refused_by_the_worker() {
    if !worker_or_skip() {
        return;
    }
    let config =
        "interval_s = 60\n[[target]]\nid = \"web\"\nurl = \"https://127.0.0.1:9/\"\ntls_expiry_days = 14\n";
    let w = Wrangler::start(vars(config.into(), vec![]));
    assert!(w.trigger() > 0);
    let line = wait_for_log(&w, "vigil cycle failed");
    assert!(
        line.contains("target[0].tls_expiry_days: the Worker cannot read certificates"),
        "{line}"
    );
}

/// Every request to the Worker is one Analytics Engine point (layout and
/// route templates: `edge::analytics`, unit-tested there), written without
/// failing the request: good and bad requests alike are counted as written
/// in the summary, none as failed. (wrangler dev's local dataset accepts
/// points and keeps nothing, so their content is checked natively.)
#[test]
fn every_request_writes_one_route_point() {
    if !worker_or_skip() {
        return;
    }
    let w = Wrangler::start(vars(
        "interval_s = 60\n".into(),
        vec![("VIGIL_STORE", "kv".into())],
    ));
    let counts = |w: &Wrangler| {
        let (status, summary) = get(w, "/ops/summary", Some(READ_TOKEN));
        assert_eq!(status, 200, "{summary}");
        let a = &summary["worker"]["analytics"];
        (
            a["written"].as_u64().unwrap(),
            a["failed"].as_u64().unwrap(),
        )
    };
    let (before, failed) = counts(&w);
    assert_eq!(failed, 0);
    let answers = [
        get(&w, "/healthz", None).0,
        get(&w, "/ops/summary", None).0,
        get(&w, "/ops/incidents/inc-1-nope", Some(READ_TOKEN)).0,
        get(&w, "/wp-login.php", None).0,
    ];
    assert_eq!(answers, [200, 401, 404, 404]);
    // The summary request that reads the counts is written after it
    // answers: the four requests and the first summary are counted.
    let (after, failed) = counts(&w);
    assert_eq!(after - before, 5, "one point per request");
    assert_eq!(failed, 0);
}

/// The PostHog proxy on a `ph.` host of the Worker, against the fake
/// PostHog: the same rules as the native proxy, X-Forwarded-For from
/// CF-Connecting-IP, bodies streamed, a POST without a length refused.
#[test]
fn the_posthog_proxy_in_the_worker() {
    if !worker_or_skip() {
        return;
    }
    use vigil_testkit::posthog::FakePostHog;
    let (ingest, assets) = (FakePostHog::start(), FakePostHog::start());
    let config = format!(
        "interval_s = 60\n[posthog]\ningest_host = {:?}\nassets_host = {:?}\nmax_body_bytes = 4096\n",
        ingest.url(),
        assets.url()
    );
    let w = Wrangler::start(vars(config, vec![]));
    let ph = |req: reqwest::blocking::RequestBuilder| {
        req.header("host", "ph.example.com").send().unwrap()
    };
    let batch: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let res = ph(w
        .http
        .post(w.url("/e/?compression=gzip-js"))
        .header("content-type", "text/plain")
        .header("cookie", "session=secret")
        .header("authorization", "Bearer secret")
        .header("cf-connecting-ip", "203.0.113.7")
        .header("x-forwarded-for", "6.6.6.6")
        .body(batch.clone()));
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("set-cookie").is_none(), "no cookie back");
    assert_eq!(res.headers()["x-posthog"], "fake");
    assert_eq!(res.text().unwrap(), r#"{"status":1}"#);
    let got = ingest.arrived();
    assert_eq!(got.len(), 1, "{got:?}");
    let e = &got[0];
    assert_eq!(
        (e.method.as_str(), e.path_and_query.as_str()),
        ("POST", "/e/?compression=gzip-js")
    );
    assert_eq!(e.body, batch);
    assert_eq!(e.headers["x-forwarded-for"], "203.0.113.7");
    assert_eq!(e.headers["content-type"], "text/plain");
    for h in ["cookie", "authorization", "cf-connecting-ip"] {
        assert!(!e.headers.contains_key(h), "{h} forwarded: {e:?}");
    }
    let res = ph(w.http.get(w.url("/static/array.js")));
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().unwrap(), "/* posthog-js */");
    assert_eq!(assets.arrived()[0].path_and_query, "/static/array.js");
    let res = ph(w.http.post(w.url("/reject")).body("{}"));
    assert_eq!(res.status(), 400);
    assert_eq!(res.text().unwrap(), r#"{"type":"validation_error"}"#);
    let before = ingest.arrived().len();
    assert_eq!(
        ph(w.http.post(w.url("/e/")).body(vec![b'x'; 5000])).status(),
        413
    );
    let streamed = reqwest::blocking::Body::new(std::io::Cursor::new(vec![b'y'; 100]));
    assert_eq!(ph(w.http.post(w.url("/e/")).body(streamed)).status(), 411);
    assert_eq!(ph(w.http.delete(w.url("/e/"))).status(), 405);
    assert_eq!(
        ingest.arrived().len(),
        before,
        "nothing refused reached PostHog"
    );
    // The Worker's own routes are untouched on its other hosts.
    assert_eq!(get(&w, "/healthz", None).0, 200);
}

/// The Durable Object store writes the history as rows by time, each
/// holding every target: with the history stored every cycle, a steady
/// cycle writes the same rows (one hour row; two when a day ends) for 3
/// targets as for 150, the cycle report counts them (per invocation and
/// for the isolate's day), and the history reads back after a restart.
#[test]
fn history_rows_written_per_flush_do_not_grow_with_the_targets() {
    if !worker_or_skip() {
        return;
    }
    let target = TargetServer::start();
    let mut steady_rows = Vec::new();
    for n in [3, 150] {
        let config = format!(
            "interval_s = 60\nhistory_flush_s = 0\n{}[worker]\nplan = \"paid\"\n",
            many_targets(n, &target.url())
        );
        let mut w = Wrangler::start(vars(config, vec![("VIGIL_STORE", "durable_object".into())]));
        let reports: Vec<Value> = (0..4).map(|_| w.scheduled()).collect();
        let rows = |r: &Value| r["rows_written"].as_u64().unwrap();
        // The first cycle stores the new targets' state too.
        for r in &reports[1..] {
            assert_eq!(r["kv_writes"], 0, "steady: {r}");
            assert!((1..=2).contains(&rows(r)), "{n} targets: {r}");
            steady_rows.push(rows(r));
        }
        let today = reports.last().unwrap()["rows_written_today"].as_u64();
        let sum: u64 = reports.iter().map(rows).sum();
        if steady_rows.iter().all(|r| *r == 1) {
            // No day ended: the day's count is these cycles' rows.
            assert_eq!(today, Some(sum), "{reports:?}");
        }
        w.restart();
        w.scheduled();
        let (_, summary) = get(&w, "/ops/summary", Some(READ_TOKEN));
        let targets = summary["targets"].as_array().unwrap();
        assert_eq!(targets.len(), n);
        for t in targets {
            assert_eq!(t["samples_24h"], 5, "read back after the restart: {t}");
        }
    }
    // A day ending between two cycles adds its day row; otherwise the
    // same single row for 3 targets as for 150.
    assert!(
        steady_rows.iter().filter(|r| **r == 1).count() >= steady_rows.len() - 1,
        "{steady_rows:?}"
    );
}

/// Issue 13 in the Worker: a page routed by `[[route]]` to a strict
/// PagerDuty Events v2 receiver triggers with `dedup_key` = the incident id,
/// the API's ack acknowledges it, and the recovery resolves it after a
/// restart of workerd; nothing is sent twice, and Discord gets the page once.
#[test]
fn a_page_reaches_pagerduty_from_the_worker_and_resolves_once_across_a_restart() {
    if !worker_or_skip() {
        return;
    }
    let discord = Discord::start();
    let pd = PagerDuty::start();
    let target = TargetServer::start();
    target.set(Behaviour::Status(500));
    let config = "interval_s = 60\nretry_after_s = 0.3\n".to_string()
        + &pd.paged_target_config(&target.url());
    let mut w = Wrangler::start(vars(
        config,
        vec![
            ("DISCORD_WEBHOOK_URL", discord.url()),
            ("DISCORD_ALERT_USER_ID", "424242".into()),
            ("PD_ROUTING_KEY", "0123456789abcdef0123456789abcdef".into()),
        ],
    ));
    // Each cycle is one step: the incident opens, its round finds no agent
    // and pages, the outbox delivers.
    for _ in 0..5 {
        w.scheduled();
        if !pd.events().is_empty() {
            break;
        }
    }
    let (_, open) = get(&w, "/ops/incidents?state=open", Some(READ_TOKEN));
    let id = open["incidents"][0]["id"].as_str().unwrap().to_string();
    let trigger = pd.accepted().first().cloned().expect("a trigger");
    assert_eq!(trigger["event_action"], "trigger", "{trigger}");
    assert_eq!(trigger["dedup_key"], id.as_str(), "{trigger}");
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert_eq!(trigger["payload"]["source"], "api-core");
    let ack = w
        .http
        .post(w.url(&format!("/ops/incidents/{id}/ack")))
        .bearer_auth(CONTROL_TOKEN)
        .send()
        .unwrap();
    assert_eq!(ack.status(), 200);
    let acked = w.scheduled();
    assert_eq!(pd.events().len(), 2, "the acknowledge: {acked}");
    // workerd restarts; the target recovers meanwhile; the resolve goes out.
    w.restart();
    target.set(Behaviour::Ok);
    for _ in 0..3 {
        w.scheduled();
        if pd.events().len() == 3 {
            break;
        }
    }
    let quiet = w.scheduled();
    assert_eq!(quiet["delivered"], 0, "nothing left to send: {quiet}");
    pd.assert_triggered_acked_resolved_once(&id);
    assert!(discord.rejected().is_empty(), "{:?}", discord.rejected());
    assert_eq!(discord.pages().len(), 1, "paged once");
    assert!(discord
        .titles()
        .contains(&"api-core: down → healthy".to_string()));
}

/// `[deadman]` in the Worker: each cron cycle pings the URL once (no
/// `/start`: a subrequest is worth more than the run time on the free
/// plan), and nothing pings between cycles.
#[test]
fn the_worker_pings_the_deadman_url_once_per_cycle() {
    if !worker_or_skip() {
        return;
    }
    let hc = Healthchecks::start();
    let target = TargetServer::start();
    let config = format!(
        "interval_s = 60\n[deadman]\nurl_env = \"DEADMAN_URL\"\n{}",
        alert_only("api", &target.url())
    );
    let w = Wrangler::start(vars(config, vec![("DEADMAN_URL", hc.url())]));
    for n in 1..=3 {
        let report = w.scheduled();
        assert_eq!(hc.successes(), n, "{report}");
    }
    assert_eq!(hc.starts(), 0);
    assert!(hc.failures().is_empty(), "{:?}", hc.failures());
    // No cycle, no ping: a stopped Worker goes quiet.
    let (status, _) = get(&w, "/healthz", None);
    assert_eq!(status, 200);
    assert_eq!(hc.successes(), 3);
}

/// Ack links in the Worker: the page carries a signed link; opening it
/// acknowledges nothing, posting it acknowledges once (a replay is refused,
/// a forged link too).
#[test]
fn a_pages_ack_link_acknowledges_once_in_the_worker() {
    if !worker_or_skip() {
        return;
    }
    let discord = Discord::start();
    let target = TargetServer::start();
    target.set(Behaviour::Status(500));
    // Links point at the Worker's public address; the test reaches it on
    // wrangler's.
    let base = "https://vigil.example";
    let config = format!(
        "interval_s = 60\nretry_after_s = 0.3\n[ack_link]\nbase_url = {base:?}\n[[target]]\nid = \"api\"\nurl = {:?}\nrole = \"remediate\"\nhost = \"vps1\"\nactions = [\"restart_api_core\"]\ntimeout_ms = 2000\n[[host]]\nid = \"vps1\"\nurl_env = \"NO_SUCH_AGENT_URL\"\ntoken_env = \"NO_SUCH_AGENT_TOKEN\"\n",
        target.url()
    );
    let w = Wrangler::start(vars(
        config,
        vec![
            ("DISCORD_WEBHOOK_URL", discord.url()),
            ("DISCORD_ALERT_USER_ID", "424242".into()),
            ("ACK_LINK_SECRET", "ack-link-secret-0123456789".into()),
        ],
    ));
    for _ in 0..5 {
        w.scheduled();
        if !discord.pages().is_empty() {
            break;
        }
    }
    let page = discord.pages().first().cloned().expect("a page");
    let link = Discord::ack_link(&page).replace(base, &w.url(""));
    let open = w.http.get(&link).send().unwrap();
    assert_eq!(open.status().as_u16(), 200);
    assert!(open.text().unwrap().contains("<form method=post"));
    let (_, incidents) = get(&w, "/ops/incidents?state=open", Some(READ_TOKEN));
    let id = incidents["incidents"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let inc = |w: &Wrangler| get(w, &format!("/ops/incidents/{id}"), Some(READ_TOKEN)).1;
    assert!(
        inc(&w)["acked_at_ms"].is_null(),
        "opening acknowledges nothing"
    );
    assert_eq!(w.http.post(&link).send().unwrap().status().as_u16(), 200);
    assert_eq!(inc(&w)["acked_by"], "ack link");
    let replay = w.http.post(&link).send().unwrap().status().as_u16();
    assert_eq!(replay, 409, "a replay is refused");
    let forged = link.replace("expires=", "expires=9");
    assert_eq!(w.http.post(&forged).send().unwrap().status().as_u16(), 403);
}

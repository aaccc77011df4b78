//! The real `vigil-edge` binary against real local HTTP peers: targets that
//! fail in every way, a strict Discord webhook, a restart mid-incident, and
//! the API's auth and bad inputs.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vigil_testkit::discord::{Discord, Fail};
use vigil_testkit::edge::{
    config_head, Edge, CONTROL_TOKEN, CRASH_LOG_TOKEN, JOBS_TOKEN, READ_TOKEN, SIGNAL_TOKEN,
};
use vigil_testkit::free_port;
use vigil_testkit::healthchecks::Healthchecks;
use vigil_testkit::pagerduty::PagerDuty;
use vigil_testkit::target::{Behaviour, TargetServer};
use vigil_testkit::webhooks::Hook;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_vigil-edge"))
}

fn target_toml(id: &str, url: &str, extra: &str) -> String {
    format!("[[target]]\nid = {id:?}\nurl = {url:?}\nrole = \"alert_only\"\nbody_contains = \"ok\"\n{extra}\n")
}

fn discord_env(d: &Discord) -> Vec<(&'static str, String)> {
    vec![
        ("DISCORD_WEBHOOK_URL", d.url()),
        ("DISCORD_ALERT_USER_ID", "424242".into()),
    ]
}

#[test]
fn every_failure_mode_is_classified_and_alerted_once() {
    let discord = Discord::start();
    let [error500, wrong_body, slow, hang, fine] = std::array::from_fn(|_| TargetServer::start());
    error500.set(Behaviour::Status(500));
    wrong_body.set(Behaviour::Body("maintenance page".into()));
    slow.set(Behaviour::Slow(Duration::from_millis(400)));
    hang.set(Behaviour::Hang);
    let refused = format!("http://127.0.0.1:{}/healthz", free_port());
    let (dir, addr) = Edge::prepare("modes");
    let config = config_head(dir.path(), addr, 0.5, 0.2)
        + &target_toml("error500", &error500.url(), "")
        + &target_toml("wrong-body", &wrong_body.url(), "")
        + &target_toml("slow", &slow.url(), "degraded_ms = 150")
        + &target_toml("hang", &hang.url(), "timeout_ms = 300")
        + &target_toml("refused", &refused, "")
        + &target_toml("fine", &fine.url(), "");
    let edge = Edge::start(bin(), dir, addr, &config, discord_env(&discord));
    let expect = [
        ("error500", "down"),
        ("wrong-body", "down"),
        ("slow", "degraded"),
        ("hang", "down"),
        ("refused", "down"),
        ("fine", "healthy"),
    ];
    edge.wait_for(
        "every bad target's incident",
        Duration::from_secs(15),
        |e| {
            e.get("/ops/incidents?state=open")["incidents"]
                .as_array()
                .unwrap()
                .len()
                == 5
        },
    );
    // A few more cycles: nothing must be alerted twice.
    std::thread::sleep(Duration::from_millis(1500));
    for (id, state) in expect {
        assert_eq!(edge.target_state(id), state, "{id}");
    }
    let mut titles = discord.titles();
    titles.sort();
    assert_eq!(
        titles,
        [
            "error500: healthy → down",
            "hang: healthy → down",
            "refused: healthy → down",
            "slow: healthy → degraded",
            "wrong-body: healthy → down"
        ]
    );
    let detail = edge.get("/ops/target/error500");
    assert_eq!(detail["recent"][0]["status"], 500);
    assert!(detail["recent"][0]["error"]
        .as_str()
        .unwrap()
        .contains("unexpected status 500"));
    let hang_detail = edge.get("/ops/target/hang");
    assert!(hang_detail["recent"][0]["error"]
        .as_str()
        .unwrap()
        .contains("timed out after 300 ms"));
    let anomalies = edge.get("/ops/anomalies");
    let slow_ones: Vec<&Value> = anomalies["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["target"] == "slow")
        .collect();
    assert!(slow_ones.len() >= 2, "{anomalies}");
    assert!(slow_ones
        .iter()
        .all(|a| a["latency_ms"].as_u64().unwrap() >= 400));
    assert!(discord.pages().is_empty(), "alert-only targets do not page");
    assert!(discord.rejected().is_empty(), "{:?}", discord.rejected());
}

#[test]
fn every_probe_bypasses_caches() {
    let target = TargetServer::start();
    let (dir, addr) = Edge::prepare("cache");
    let config = config_head(dir.path(), addr, 0.3, 0.1)
        + &target_toml("t", &format!("{}?x=1", target.url()), "");
    let edge = Edge::start(bin(), dir, addr, &config, vec![]);
    edge.wait_for("three probes", Duration::from_secs(10), |_| {
        target.seen().len() >= 3
    });
    let seen = target.seen();
    let mut nonces = Vec::new();
    for s in &seen {
        assert!(s.headers["cache-control"].contains("no-cache"), "{s:?}");
        assert_eq!(s.headers["pragma"], "no-cache");
        let q = s.query.clone().unwrap();
        assert!(q.starts_with("x=1&vigil_nocache="), "{q}");
        nonces.push(q);
    }
    nonces.dedup();
    assert_eq!(
        nonces.len(),
        seen.len(),
        "every probe has its own cache buster"
    );
}

#[test]
fn a_failing_webhook_is_retried_in_order_and_429_is_honoured() {
    let discord = Discord::start();
    discord.script(&[Fail::Status500, Fail::Status500, Fail::RateLimited(1.2)]);
    let target = TargetServer::start();
    target.set(Behaviour::Status(503));
    let (dir, addr) = Edge::prepare("webhook");
    let config = config_head(dir.path(), addr, 0.3, 0.1) + &target_toml("api", &target.url(), "");
    let edge = Edge::start(bin(), dir, addr, &config, discord_env(&discord));
    edge.wait_for("the down alert", Duration::from_secs(15), |_| {
        discord.accepted().len() == 1
    });
    target.set(Behaviour::Ok);
    edge.wait_for("the recovery alert", Duration::from_secs(15), |_| {
        discord.accepted().len() == 2
    });
    assert_eq!(
        discord.titles(),
        ["api: healthy → down", "api: down → healthy"]
    );
    let attempts = discord.attempts();
    let statuses: Vec<u16> = attempts.iter().map(|a| a.1).collect();
    assert_eq!(statuses, [500, 500, 429, 200, 200]);
    let after_429 = attempts[3].0 - attempts[2].0;
    assert!(
        after_429 >= Duration::from_millis(1200),
        "retry_after honoured: {after_429:?}"
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(discord.accepted().len(), 2, "nothing is sent twice");
}

#[test]
fn a_runner_killed_mid_incident_continues_the_same_incident() {
    let discord = Discord::start();
    let target = TargetServer::start();
    target.set(Behaviour::Status(500));
    let (dir, addr) = Edge::prepare("restart");
    let config = config_head(dir.path(), addr, 0.3, 0.1) + &target_toml("api", &target.url(), "");
    let mut edge = Edge::start(bin(), dir, addr, &config, discord_env(&discord));
    edge.wait_for("the incident", Duration::from_secs(10), |_| {
        discord.accepted().len() == 1
    });
    let open = edge.get("/ops/incidents?state=open");
    let id = open["incidents"][0]["id"].as_str().unwrap().to_string();
    edge.kill();
    edge.restart();
    std::thread::sleep(Duration::from_millis(1500));
    let open = edge.get("/ops/incidents?state=open")["incidents"].clone();
    assert_eq!(open.as_array().unwrap().len(), 1, "{open}");
    assert_eq!(open[0]["id"], id.as_str(), "the same incident continues");
    assert_eq!(
        discord.accepted().len(),
        1,
        "no duplicate alert after the restart"
    );
    // The target recovers while the runner is down: the incident is resolved
    // at the first probe after the restart, never left open.
    edge.kill();
    target.set(Behaviour::Ok);
    edge.restart();
    edge.wait_for("the resolve", Duration::from_secs(10), |e| {
        e.get("/ops/incidents?state=open")["incidents"]
            .as_array()
            .unwrap()
            .is_empty()
    });
    let inc = edge.get(&format!("/ops/incidents/{id}"));
    assert_eq!(inc["resolution"], "recovered");
    edge.wait_for("the recovery alert", Duration::from_secs(10), |_| {
        discord.accepted().len() == 2
    });
    assert_eq!(
        discord.titles(),
        ["api: healthy → down", "api: down → healthy"]
    );
}

#[test]
fn the_api_checks_tokens_and_refuses_bad_input() {
    let target = TargetServer::start();
    let (dir, addr) = Edge::prepare("api");
    let config = config_head(dir.path(), addr, 0.5, 0.2)
        + "auth_fail_burst = 100\n"
        + &target_toml("api", &target.url(), "");
    let edge = Edge::start(bin(), dir, addr, &config, vec![]);
    let base = format!("http://{addr}");
    let c = &edge.http;
    let status = |r: reqwest::blocking::RequestBuilder| r.send().unwrap().status().as_u16();
    assert_eq!(status(c.get(format!("{base}/healthz"))), 200);
    for path in [
        "/ops/summary",
        "/ops/incidents",
        "/ops/anomalies",
        "/ops/target/api",
        "/ops/jobs",
        "/ops/crashes",
    ] {
        assert_eq!(status(c.get(format!("{base}{path}"))), 401, "{path}");
        assert_eq!(
            status(
                c.get(format!("{base}{path}"))
                    .bearer_auth("wrong-wrong-wrong")
            ),
            401,
            "{path}"
        );
        assert_eq!(
            status(c.get(format!("{base}{path}")).bearer_auth(READ_TOKEN)),
            200,
            "{path}"
        );
        assert_eq!(
            status(c.get(format!("{base}{path}")).bearer_auth(CONTROL_TOKEN)),
            200,
            "{path}"
        );
    }
    let maint = format!("{base}/ops/target/api/maintenance");
    assert_eq!(
        status(
            c.post(&maint)
                .bearer_auth(READ_TOKEN)
                .json(&json!({"duration_s": 60}))
        ),
        401,
        "read token cannot control"
    );
    assert_eq!(
        status(
            c.get(format!("{base}/ops/incidents?state=bogus"))
                .bearer_auth(READ_TOKEN)
        ),
        400
    );
    assert_eq!(
        status(
            c.get(format!("{base}/ops/incidents/inc-999"))
                .bearer_auth(READ_TOKEN)
        ),
        404
    );
    assert_eq!(
        status(
            c.get(format!("{base}/ops/target/nope"))
                .bearer_auth(READ_TOKEN)
        ),
        404
    );
    assert_eq!(
        status(c.post(&maint).bearer_auth(CONTROL_TOKEN).body("{nope")),
        400
    );
    assert_eq!(
        status(
            c.post(&maint)
                .bearer_auth(CONTROL_TOKEN)
                .json(&json!({"duration_s": 60, "extra": 1}))
        ),
        400
    );
    let too_large = c
        .post(&maint)
        .bearer_auth(CONTROL_TOKEN)
        .body(vec![b' '; 64 * 1024])
        .send()
        .unwrap();
    assert_eq!(too_large.status().as_u16(), 413);
    assert_eq!(
        too_large.headers()["connection"],
        "close",
        "the unread body spoils the connection: the client must not reuse it"
    );
    assert_eq!(
        status(
            c.post(format!("{base}/ops/incidents/inc-999/ack"))
                .bearer_auth(CONTROL_TOKEN)
        ),
        404
    );
    assert_eq!(
        status(
            c.post(format!("{base}/ops/actions/nohost/restart_api_core"))
                .bearer_auth(CONTROL_TOKEN)
        ),
        404
    );
    let (code, body) = edge.post(
        "/ops/target/api/maintenance",
        Some(json!({"duration_s": 60})),
    );
    assert_eq!(code, 200, "{body}");
    let until = body["maintenance_until_ms"].as_u64().unwrap();
    let summary = edge.get("/ops/summary");
    assert_eq!(
        summary["targets"][0]["maintenance_until_ms"].as_u64(),
        Some(until)
    );
    // Nothing changed by the refused requests.
    assert_eq!(summary["open_incidents"], 0);
}

#[test]
fn once_runs_one_cycle_with_its_confirm_probe_and_prints_a_table() {
    let good = TargetServer::start();
    let bad = TargetServer::start();
    bad.set(Behaviour::Status(502));
    let (dir, addr) = Edge::prepare("once");
    let config = config_head(dir.path(), addr, 2.0, 0.3)
        + &target_toml("good", &good.url(), "")
        + &target_toml("bad", &bad.url(), "");
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, config).unwrap();
    let started = Instant::now();
    let out = std::process::Command::new(bin())
        .args(["--config", path.to_str().unwrap(), "--once"])
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "one cycle, not a whole interval"
    );
    let table = String::from_utf8_lossy(&out.stdout);
    let line = |id: &str| {
        table
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("good").contains("healthy"), "{table}");
    assert!(
        line("bad").contains("down") && line("bad").contains("inc-1"),
        "{table}"
    );
    assert!(
        line("bad").contains(": unexpected status 502"),
        "the cause of the down target: {table}"
    );
    assert_eq!(bad.seen().len(), 2, "the first probe and its confirm");
}

#[test]
fn a_bad_configuration_fails_at_start_naming_file_key_and_reason() {
    let (dir, _) = Edge::prepare("badcfg");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "interval_s = -1\n").unwrap();
    let out = std::process::Command::new(bin())
        .args(["--config", path.to_str().unwrap(), "--check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml: interval_s: must be greater than zero"),
        "{err}"
    );
}

/// `--check` with a `[worker]` section: a configuration the plan cannot
/// carry is refused with the number and what to change; the same targets
/// fit the paid plan.
#[test]
fn check_refuses_a_configuration_that_cannot_fit_the_worker_plan() {
    let (dir, _) = Edge::prepare("plancfg");
    let targets: String = (0..40)
        .map(|i| target_toml(&format!("t{i}"), "http://127.0.0.1:9/", ""))
        .collect();
    let check = |plan: &str| {
        let path = dir.path().join(format!("{plan}.toml"));
        let text = format!("interval_s = 60\n{targets}[worker]\nplan = {plan:?}\n");
        std::fs::write(&path, text).unwrap();
        std::process::Command::new(bin())
            .args(["--config", path.to_str().unwrap(), "--check"])
            .output()
            .unwrap()
    };
    let free = check("free");
    assert!(!free.status.success());
    let err = String::from_utf8_lossy(&free.stderr);
    assert!(
        err.contains("free.toml: [worker] plan = \"free\": 40 targets")
            && err.contains("at most 34 targets fit; remove 6 targets"),
        "{err}"
    );
    assert!(check("paid").status.success());
    // `regions`: region objects in the Durable Object store, named by
    // Cloudflare's location hints.
    let regions = |list: &str| {
        let path = dir.path().join("regions.toml");
        let text = format!("interval_s = 60\n[[target]]\nid = \"api\"\nurl = \"http://127.0.0.1:9/\"\nregions = {list}\n[worker]\n");
        std::fs::write(&path, text).unwrap();
        std::process::Command::new(bin())
            .args(["--config", path.to_str().unwrap(), "--check"])
            .output()
            .unwrap()
    };
    assert!(regions(r#"["weur", "enam", "apac"]"#).status.success());
    let mars = regions(r#"["weur", "mars"]"#);
    let err = String::from_utf8_lossy(&mars.stderr);
    assert!(
        !mars.status.success()
            && err.contains("target[0].regions: \"mars\" is not a Cloudflare location hint"),
        "{err}"
    );
}

#[test]
fn job_heartbeats_open_and_resolve_incidents_and_refuse_bad_input() {
    let discord = Discord::start();
    let (dir, addr) = Edge::prepare("jobs");
    let config = config_head(dir.path(), addr, 0.3, 0.1)
        + "[[job]]\nid = \"backup\"\nperiod_s = 1\ngrace_s = 0.5\n";
    let edge = Edge::start(bin(), dir, addr, &config, discord_env(&discord));
    let url = format!("http://{addr}/ops/jobs/heartbeat");
    let send = |token: Option<&str>, body: &str| {
        let mut req = edge.http.post(&url).body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().unwrap().status().as_u16()
    };
    let ok = r#"{"job": "backup", "status": "ok"}"#;
    assert_eq!(send(None, ok), 401);
    assert_eq!(send(Some("wrong-wrong-wrong-wrong"), ok), 401);
    assert_eq!(send(Some(READ_TOKEN), ok), 401, "the jobs token only");
    assert_eq!(send(Some(JOBS_TOKEN), "{nope"), 400);
    assert_eq!(
        send(Some(JOBS_TOKEN), r#"{"job": "backup", "status": "done"}"#),
        400
    );
    assert_eq!(
        send(Some(JOBS_TOKEN), r#"{"job": "nightly", "status": "ok"}"#),
        404
    );
    assert_eq!(
        send(
            Some(JOBS_TOKEN),
            &format!(
                r#"{{"job": "backup", "status": "ok", "run_id": "{}"}}"#,
                "x".repeat(20_000)
            )
        ),
        413
    );
    assert!(
        edge.get("/ops/incidents")["incidents"]
            .as_array()
            .unwrap()
            .is_empty(),
        "refused heartbeats changed nothing"
    );
    assert_eq!(send(Some(JOBS_TOKEN), ok), 200);
    let jobs = edge.get("/ops/jobs");
    assert!(jobs["jobs"][0]["last_ok_ms"].as_u64().is_some(), "{jobs}");
    assert_eq!(
        jobs["jobs"][0]["last_seen_ms"],
        jobs["jobs"][0]["last_ok_ms"]
    );
    // Silence: late after period + grace (1.5 s), within a cycle.
    edge.wait_for("the late job's incident", Duration::from_secs(10), |e| {
        e.get("/ops/jobs")["jobs"][0]["state"] == "down"
    });
    let inc = &edge.get("/ops/incidents?state=open")["incidents"][0];
    assert_eq!(inc["target"], "job:backup");
    assert!(
        inc["history"][0]["error"]
            .as_str()
            .unwrap()
            .contains("no ok for"),
        "{inc}"
    );
    // It reports again: resolved.
    assert_eq!(send(Some(JOBS_TOKEN), ok), 200);
    assert_eq!(edge.get("/ops/jobs")["jobs"][0]["state"], "healthy");
    // A failure opens an incident at once.
    assert_eq!(
        send(
            Some(JOBS_TOKEN),
            r#"{"job": "backup", "status": "fail", "run_id": "r7"}"#
        ),
        200
    );
    assert_eq!(edge.get("/ops/jobs")["jobs"][0]["state"], "down");
    edge.wait_for("the alerts", Duration::from_secs(10), |_| {
        discord.accepted().len() == 3
    });
    assert_eq!(
        discord.titles(),
        [
            "job:backup: healthy → down",
            "job:backup: down → healthy",
            "job:backup: healthy → down"
        ]
    );
    assert!(discord.rejected().is_empty());
}

#[test]
fn crash_reports_are_checked_stored_alerted_once_per_fingerprint_and_listed() {
    let discord = Discord::start();
    let (dir, addr) = Edge::prepare("crashes");
    let config = config_head(dir.path(), addr, 0.3, 0.1);
    let mut edge = Edge::start(bin(), dir, addr, &config, discord_env(&discord));
    let url = format!("http://{addr}/_log");
    let send = |edge: &Edge, token: Option<&str>, body: &str| {
        let mut req = edge.http.post(&url).body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().unwrap();
        let cors = res
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            cors.as_deref(),
            Some("*"),
            "every /_log answer allows browsers"
        );
        let status = res.status().as_u16();
        (status, res.json::<Value>().unwrap_or(Value::Null))
    };
    let critical = r#"{"app": "shop", "message": "TypeError: cart is undefined", "severity": "critical", "url": "https://shop.example/cart", "userAgent": "Firefox/140", "timestamp": 1732450000000}"#;
    assert_eq!(send(&edge, None, critical).0, 401);
    assert_eq!(
        send(&edge, Some("wrong-wrong-wrong-wrong"), critical).0,
        401
    );
    assert_eq!(
        send(&edge, Some(JOBS_TOKEN), critical).0,
        401,
        "the crash-log token only"
    );
    let (status, body) = send(&edge, Some(CRASH_LOG_TOKEN), "{nope");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_body"))
    );
    let (status, body) = send(&edge, Some(CRASH_LOG_TOKEN), r#"{"message": "m"}"#);
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("app"),
        "{body}"
    );
    let (status, _) = send(
        &edge,
        Some(CRASH_LOG_TOKEN),
        r#"{"app": "shop", "message": "m", "severity": "fatal"}"#,
    );
    assert_eq!(status, 400);
    let huge = format!(
        r#"{{"app": "shop", "message": "m", "stack": "{}"}}"#,
        "s".repeat(40_000)
    );
    assert_eq!(send(&edge, Some(CRASH_LOG_TOKEN), &huge).0, 413);
    let crashes = |edge: &Edge| {
        edge.get("/ops/crashes")["crashes"]
            .as_array()
            .unwrap()
            .clone()
    };
    assert!(crashes(&edge).is_empty(), "refused reports stored nothing");
    assert!(edge.get("/ops/incidents")["incidents"]
        .as_array()
        .unwrap()
        .is_empty());

    // 20 KiB: over the API's usual 16 KiB, within /_log's 32 KiB; the
    // stack is cut to its limit and the report says so.
    let long = format!(
        r#"{{"app": "shop", "message": "slow render", "stack": "{}"}}"#,
        "s".repeat(20_000)
    );
    let (status, stored) = send(&edge, Some(CRASH_LOG_TOKEN), &long);
    assert_eq!(status, 202, "{stored}");
    assert_eq!(stored["truncated"], true);
    assert_eq!(stored["stack"].as_str().unwrap().chars().count(), 8000);
    assert_eq!(stored["severity"], "error");
    assert!(
        stored.get("incident").is_none(),
        "not critical: no incident"
    );

    let (status, first) = send(&edge, Some(CRASH_LOG_TOKEN), critical);
    assert_eq!(status, 202);
    assert_eq!(first["alerted"], true);
    let incident = first["incident"].as_str().unwrap().to_string();
    let (_, again) = send(&edge, Some(CRASH_LOG_TOKEN), critical);
    assert_eq!(
        (again["alerted"].as_bool(), again["incident"].as_str()),
        (None, Some(incident.as_str()))
    );
    assert_eq!(again["fingerprint"], first["fingerprint"]);
    let other = r#"{"app": "shop", "message": "RangeError: too deep", "severity": "critical"}"#;
    let (_, third) = send(&edge, Some(CRASH_LOG_TOKEN), other);
    assert_eq!(
        (third["alerted"].as_bool(), third["incident"].as_str()),
        (Some(true), Some(incident.as_str()))
    );

    edge.wait_for("the crash alerts", Duration::from_secs(10), |_| {
        discord.accepted().len() == 2
    });
    assert_eq!(
        discord.titles(),
        ["shop: critical crash", "shop: critical crash"]
    );
    let inc = edge.get(&format!("/ops/incidents/{incident}"));
    assert_eq!(
        (inc["target"].as_str(), inc["crash_reports"].as_u64()),
        (Some("crash:shop"), Some(3))
    );

    // Listed newest first; filtered by app; a bad limit is refused.
    let list = crashes(&edge);
    assert_eq!(list.len(), 4);
    assert_eq!(list[0]["message"], "RangeError: too deep");
    assert_eq!(list[3]["message"], "slow render");
    assert_eq!(list[1]["user_agent"], "Firefox/140");
    assert_eq!(
        edge.get("/ops/crashes?limit=1")["crashes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(edge.get("/ops/crashes?app=blog")["crashes"]
        .as_array()
        .unwrap()
        .is_empty());
    let bad = edge
        .http
        .get(format!("http://{addr}/ops/crashes?limit=0"))
        .bearer_auth(READ_TOKEN)
        .send()
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let anon = edge
        .http
        .get(format!("http://{addr}/ops/crashes"))
        .send()
        .unwrap();
    assert_eq!(anon.status().as_u16(), 401);

    // A browser's preflight.
    let pre = edge
        .http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .send()
        .unwrap();
    assert_eq!(pre.status().as_u16(), 204);
    assert!(pre.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("authorization"));

    // The crash log and the incident survive a restart.
    edge.kill();
    edge.restart();
    assert_eq!(crashes(&edge).len(), 4);
    assert_eq!(
        edge.get(&format!("/ops/incidents/{incident}"))["resolved_at_ms"],
        Value::Null
    );
    assert!(discord.rejected().is_empty());
}

#[test]
fn targets_show_uptime_percentiles_and_their_objective_and_burn_alerts_once() {
    let discord = Discord::start();
    let target = TargetServer::start();
    let (dir, addr) = Edge::prepare("history");
    // history_flush_s = 0: stored every cycle, so a killed edge keeps it.
    let config = config_head(dir.path(), addr, 0.2, 0.1)
        + "history_flush_s = 0\n"
        + &target_toml("web", &target.url(), "slo = 99.999");
    let mut edge = Edge::start(bin(), dir, addr, &config, discord_env(&discord));
    let web = |edge: &Edge| {
        edge.get("/ops/summary")["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == "web")
            .cloned()
            .unwrap()
    };
    edge.wait_for("some history", Duration::from_secs(10), |e| {
        web(e)["samples_24h"].as_u64().unwrap_or(0) >= 5
    });
    let healthy = web(&edge);
    assert_eq!(healthy["uptime_24h"], 100.0, "{healthy}");
    assert!(healthy["p50_ms_24h"].as_u64().is_some(), "{healthy}");
    assert!(healthy["p50_ms_24h"].as_u64() <= healthy["p99_ms_24h"].as_u64());
    assert_eq!(healthy["slo"]["objective"], 99.999);
    assert_eq!(healthy["slo"]["budget_remaining"], 100.0);

    // Down for two seconds: uptime drops, the budget burns, one fast and
    // one slow burn alert (the episode lasts while the rate stays high).
    // Windows are real hours and time not watched counts as good, so the
    // objective is strict enough for seconds to matter: 14.4× a budget of
    // 0.001 % over an hour is 0.52 s down; 6× over six hours is 1.3 s.
    target.set(Behaviour::Status(503));
    edge.wait_for("the incident", Duration::from_secs(10), |e| {
        e.target_state("web") == "down"
    });
    std::thread::sleep(Duration::from_secs(2));
    target.set(Behaviour::Ok);
    edge.wait_for("recovery", Duration::from_secs(10), |e| {
        e.target_state("web") == "healthy"
    });
    let after = web(&edge);
    let uptime = after["uptime_24h"].as_f64().unwrap();
    assert!(uptime < 100.0 && uptime > 0.0, "{after}");
    assert!(
        after["slo"]["budget_remaining"].as_f64().unwrap() < 0.0,
        "relative to the seconds watched: {after}"
    );
    // Over the whole 30 days (26 s of budget), two seconds down leave most.
    let window = after["slo"]["budget_remaining_window"].as_f64().unwrap();
    assert!(window > 50.0 && window < 100.0, "{after}");
    assert!(after["slo"]["burn_1h"].as_f64().unwrap() > 14.4, "{after}");
    edge.wait_for("alerts", Duration::from_secs(10), |_| {
        discord.accepted().len() >= 4
    });
    std::thread::sleep(Duration::from_secs(1));
    let titles = discord.titles();
    let burns: Vec<_> = titles
        .iter()
        .filter(|t| t.contains("error budget burning"))
        .collect();
    assert_eq!(burns.len(), 2, "{titles:?}");
    assert!(
        burns.iter().any(|t| t.contains("last hour"))
            && burns.iter().any(|t| t.contains("last 6 hours"))
    );

    // Detail shows the same figures; the history survives a restart.
    let detail = edge.get("/ops/target/web");
    assert!(detail["uptime_24h"].as_f64().unwrap() < 100.0, "{detail}");
    assert!(detail["slo"]["burn_6h"].as_f64().unwrap() > 6.0, "{detail}");
    assert!(
        detail["host_metrics"].as_array().unwrap().is_empty(),
        "no host"
    );
    edge.kill();
    edge.restart();
    let restarted = web(&edge);
    assert!(
        restarted["uptime_24h"].as_f64().unwrap() < 100.0,
        "{restarted}"
    );
    assert!(restarted["samples_24h"].as_u64() >= after["samples_24h"].as_u64());
    assert!(discord.rejected().is_empty());
}

#[test]
fn cron_jobs_show_when_they_are_due_and_unknown_jobs_are_created_when_allowed() {
    let (dir, addr) = Edge::prepare("jobs-auto");
    let config = config_head(dir.path(), addr, 0.3, 0.1)
        + "[job_defaults]\nauto_create = true\nperiod_s = 3600\n"
        + "[[job]]\nid = \"nightly\"\ncron = \"30 2 * * *\"\ntz = \"Europe/Berlin\"\ngrace_s = 1800\n";
    let edge = Edge::start(bin(), dir, addr, &config, vec![]);
    let send = |body: &str| {
        edge.http
            .post(format!("http://{addr}/ops/jobs/heartbeat"))
            .bearer_auth(JOBS_TOKEN)
            .body(body.to_string())
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(send(r#"{"job": "Not An Id", "status": "ok"}"#), 404);
    assert_eq!(send(r#"{"job": "adhoc", "status": "ok"}"#), 200);
    let jobs = edge.get("/ops/jobs")["jobs"].as_array().unwrap().clone();
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    let nightly = &jobs[0];
    assert_eq!(
        (nightly["cron"].as_str(), nightly["tz"].as_str()),
        (Some("30 2 * * *"), Some("Europe/Berlin"))
    );
    // Due at the next 02:30 in Berlin: 00:30 or 01:30 UTC (01:00, the jump,
    // on the spring-forward night), within a day.
    let due = nightly["next_due_ms"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(due > now - 60_000 && due <= now + 86_400_000, "{nightly}");
    assert!([30, 60, 90].contains(&(due / 60_000 % 1440)), "{nightly}");
    let adhoc = &jobs[1];
    assert_eq!(
        (adhoc["id"].as_str(), adhoc["auto"].as_bool()),
        (Some("adhoc"), Some(true))
    );
    assert_eq!(adhoc["period_s"], 3600.0);
    assert_eq!(adhoc["state"], "healthy");
}

/// A heartbeat of job "backup": status, body, and how long it took.
fn backup_heartbeat(edge: &Edge, status: &str) -> (u16, Value, Duration) {
    let started = Instant::now();
    let res = edge
        .http
        .post(format!("http://{}/ops/jobs/heartbeat", edge.addr))
        .bearer_auth(JOBS_TOKEN)
        .json(&json!({"job": "backup", "status": status}))
        .send()
        .unwrap();
    let took = started.elapsed();
    (res.status().as_u16(), res.json::<Value>().unwrap(), took)
}

/// A tmpfs of 512 KiB mounted on the edge's state dir (needs root, like the
/// private Docker daemon), which the test fills and empties.
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a small tmpfs needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk {
            dir: dir.to_owned(),
        }
    }

    /// Fills what is left with one file.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.dir.join("filler")).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).and_then(|_| f.flush()).is_ok() {}
    }

    fn empty(&self) {
        std::fs::remove_file(self.dir.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

/// Signs in to `/ui` with the control token and posts the incident page's
/// acknowledge form (with its CSRF token): the answer's status and page.
fn ack_through_the_page(addr: std::net::SocketAddr, id: &str) -> (u16, String) {
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = format!("http://{addr}/ui");
    let signed_in = http
        .post(format!("{base}/sign-in"))
        .form(&[("token", CONTROL_TOKEN)])
        .send()
        .unwrap();
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let page = http
        .get(format!("{base}/incidents/{id}"))
        .header("cookie", &cookie)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF token on the page:\n{page}"))
        .to_string();
    let res = http
        .post(format!("{base}/incidents/{id}/ack"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf)])
        .send()
        .unwrap();
    (res.status().as_u16(), res.text().unwrap())
}

#[test]
fn a_write_the_store_cannot_keep_is_refused_alerted_and_ids_never_repeat() {
    let discord = Discord::start();
    let target = TargetServer::start();
    let (dir, addr) = Edge::prepare("full");
    let disk = SmallDisk::mount(&dir.path().join("state"));
    let config = config_head(dir.path(), addr, 0.3, 0.1)
        + &target_toml("api", &target.url(), "")
        + "[[job]]\nid = \"backup\"\nperiod_s = 3600\n";
    let mut edge = Edge::start(bin(), dir, addr, &config, discord_env(&discord));
    let heartbeat = |edge: &Edge, status: &str| {
        let (code, body, _) = backup_heartbeat(edge, status);
        (code, body)
    };
    let healthz = |edge: &Edge| {
        let res = edge
            .http
            .get(format!("http://{addr}/healthz"))
            .send()
            .unwrap();
        (res.status().as_u16(), res.json::<Value>().unwrap())
    };
    assert_eq!(heartbeat(&edge, "ok").0, 200);
    assert_eq!(healthz(&edge).0, 200);

    disk.fill();
    // The target goes down while nothing can be stored: the monitor goes on
    // from memory and alerts; so does the alert about the store.
    target.set(Behaviour::Status(500));
    edge.wait_for(
        "the down alert and the store alert",
        Duration::from_secs(15),
        |_| {
            let titles = discord.titles();
            titles.iter().any(|t| t == "api: healthy → down")
                && titles.iter().any(|t| t.contains("state store failing"))
        },
    );
    let lost = edge.get("/ops/incidents?state=open")["incidents"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, body) = healthz(&edge);
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["store"]["ok"], false, "{body}");
    let summary = edge.get("/ops/summary");
    assert_eq!(summary["store"]["ok"], false, "{summary}");
    assert!(
        summary["store"]["error"]
            .as_str()
            .unwrap()
            .contains("space"),
        "{summary}"
    );

    // Every write a caller would count on is refused, and nothing changes.
    let (code, body) = heartbeat(&edge, "fail");
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (503, Some("store_unavailable")),
        "{body}"
    );
    assert_eq!(edge.get("/ops/jobs")["jobs"][0]["state"], "healthy");
    let (code, body) = edge.post(&format!("/ops/incidents/{lost}/ack"), None);
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (503, Some("store_unavailable")),
        "{body}"
    );
    assert!(edge.get(&format!("/ops/incidents/{lost}"))["acked_at_ms"].is_null());
    // The same through the audit view's form: not answered as done.
    let (code, page) = ack_through_the_page(addr, &lost);
    assert_eq!(code, 503, "{page}");
    assert!(page.contains("could not be stored"), "{page}");
    assert!(edge.get(&format!("/ops/incidents/{lost}"))["acked_at_ms"].is_null());
    let (code, _) = edge.post(
        "/ops/target/api/maintenance",
        Some(json!({"duration_s": 60})),
    );
    assert_eq!(code, 503);
    assert!(edge.get("/ops/summary")["targets"][0]["maintenance_until_ms"].is_null());

    // A crash loses what was only in memory; the next incident has a new id.
    edge.kill();
    disk.empty();
    edge.restart();
    edge.wait_for("the incident again", Duration::from_secs(15), |e| {
        !e.get("/ops/incidents?state=open")["incidents"]
            .as_array()
            .unwrap()
            .is_empty()
    });
    let again = edge.get("/ops/incidents?state=open")["incidents"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(again, lost, "an incident id is never used twice");

    // A failing store that recovers says so (a steady state writes
    // nothing: the failure shows with the next change).
    disk.fill();
    assert_eq!(heartbeat(&edge, "fail").0, 503);
    assert_eq!(edge.get("/ops/summary")["store"]["ok"], false);
    disk.empty();
    edge.wait_for("the store recovered", Duration::from_secs(15), |_| {
        discord
            .titles()
            .iter()
            .any(|t| t.contains("state store recovered"))
    });
    assert_eq!(healthz(&edge).0, 200);
    assert_eq!(heartbeat(&edge, "fail").0, 200);
    assert!(discord.rejected().is_empty());
}

#[test]
fn a_hung_discord_never_slows_a_heartbeat_or_the_probes() {
    let hung = TargetServer::start();
    hung.set(Behaviour::Hang);
    let target = TargetServer::start();
    let (dir, addr) = Edge::prepare("hung");
    let config = config_head(dir.path(), addr, 0.2, 0.1)
        + &target_toml("api", &target.url(), "")
        + "[[job]]\nid = \"backup\"\nperiod_s = 3600\n";
    let edge = Edge::start(
        bin(),
        dir,
        addr,
        &config,
        vec![("DISCORD_WEBHOOK_URL", hung.url())],
    );
    let heartbeat = |status: &str| {
        let (code, body, took) = backup_heartbeat(&edge, status);
        assert_eq!(code, 200, "{body}");
        took
    };
    // The fail opens an incident whose alert goes to a Discord that never answers.
    let took = heartbeat("fail");
    assert!(took < Duration::from_secs(1), "fail took {took:?}");
    edge.wait_for("a delivery hanging", Duration::from_secs(10), |_| {
        !hung.seen().is_empty()
    });
    let probes = target.seen().len();
    for status in ["ok", "fail", "ok"] {
        let took = heartbeat(status);
        assert!(took < Duration::from_secs(1), "{status} took {took:?}");
    }
    edge.wait_for(
        "probes while the delivery hangs",
        Duration::from_secs(5),
        |_| target.seen().len() >= probes + 5,
    );
    assert_eq!(edge.get("/ops/jobs")["jobs"][0]["state"], "healthy");
}

/// Reads from `stream` until the server closes it (or `within` passes);
/// returns what was read and how long until the close, if it closed.
fn until_closed(mut stream: std::net::TcpStream, within: Duration) -> (String, Option<Duration>) {
    use std::io::Read;
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < within {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => {
                return (
                    String::from_utf8_lossy(&got).into(),
                    Some(started.elapsed()),
                )
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                return (
                    String::from_utf8_lossy(&got).into(),
                    Some(started.elapsed()),
                )
            }
        }
    }
    (String::from_utf8_lossy(&got).into(), None)
}

#[test]
fn slow_and_idle_connections_are_closed_and_a_held_body_gets_408() {
    use std::io::Write;
    let (dir, addr) = Edge::prepare("slow");
    let config =
        config_head(dir.path(), addr, 1.0, 0.5) + "[[job]]\nid = \"backup\"\nperiod_s = 3600\n";
    let edge = Edge::start(bin(), dir, addr, &config, vec![]);
    let connect = move || std::net::TcpStream::connect(addr).unwrap();
    // The server's limits are 10 s; each client gives it 16.
    let within = Duration::from_secs(16);
    let silent = std::thread::spawn(move || until_closed(connect(), within));
    let dribbling = std::thread::spawn(move || {
        let mut s = connect();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        let reader = s.try_clone().unwrap();
        let closed = std::thread::spawn(move || until_closed(reader, within));
        // A header line a second, never the blank line that ends them.
        for i in 0..16 {
            std::thread::sleep(Duration::from_secs(1));
            if s.write_all(format!("X-Dribble-{i}: y\r\n").as_bytes())
                .is_err()
            {
                break;
            }
        }
        closed.join().unwrap()
    });
    let held_body = std::thread::spawn(move || {
        let mut s = connect();
        s.write_all(
            format!(
                "POST /ops/jobs/heartbeat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {JOBS_TOKEN}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"job\": "
            )
            .as_bytes(),
        )
        .unwrap();
        until_closed(s, within)
    });
    let idle_after_answer = std::thread::spawn(move || {
        let mut s = connect();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        until_closed(s, within)
    });

    let (_, closed) = silent.join().unwrap();
    assert!(closed.is_some(), "a silent connection is closed");
    let (_, closed) = dribbling.join().unwrap();
    assert!(closed.is_some(), "dribbled headers are cut off");
    let (answer, closed) = held_body.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(closed.is_some(), "and the connection is closed: {answer}");
    let (answer, closed) = idle_after_answer.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed.is_some(), "an idle keep-alive connection is closed");
    // Nothing was half-taken from the held heartbeat.
    assert!(edge.get("/ops/jobs")["jobs"][0]["last_seen_ms"].is_null());
}

/// An ops-agent stand-in: diagnostics that say Docker is up or down, one
/// allowlisted action that heals `heals` at once and answers after `delay`.
#[derive(Clone)]
struct StandInAgent {
    addr: std::net::SocketAddr,
    docker_down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    runs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl StandInAgent {
    fn start(heals: TargetServer, delay: Duration) -> Self {
        use axum::extract::{Path as P, State as S};
        use axum::routing::{get, post};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let docker_down = Arc::new(AtomicBool::new(false));
        let runs = Arc::new(Mutex::new(Vec::new()));
        type Shared = (
            Arc<AtomicBool>,
            Arc<Mutex<Vec<String>>>,
            TargetServer,
            Duration,
        );
        let router = axum::Router::new()
            .route(
                "/v1/diagnostics",
                get(|S((down, ..)): S<Shared>| async move {
                    let down = down.load(Ordering::SeqCst);
                    axum::Json(vigil_wire::Diagnostics {
                        compose_project: "demo".into(),
                        docker_ok: !down,
                        docker_error: down.then(|| "docker engine unavailable".into()),
                        containers: Vec::new(),
                        host: Default::default(),
                    })
                }),
            )
            .route(
                "/v1/actions",
                get(|| async {
                    axum::Json(json!({"actions": [{
                        "name": "restart_api_core", "description": "restart", "kind": "restart",
                        "services": ["api-core"], "timeout_ms": 30000
                    }]}))
                }),
            )
            .route(
                "/v1/actions/{name}",
                post(
                    |S((_, runs, heals, delay)): S<Shared>, P(name): P<String>| async move {
                        runs.lock().unwrap().push(name.clone());
                        heals.set(Behaviour::Ok);
                        tokio::time::sleep(delay).await;
                        axum::Json(json!({
                            "name": name, "ok": true, "outcome": "ok", "request_id": "r1",
                            "started_at_ms": 1, "finished_at_ms": 2, "duration_ms": 1
                        }))
                    },
                ),
            )
            .with_state((docker_down.clone(), runs.clone(), heals, delay));
        StandInAgent {
            addr: vigil_testkit::serve::spawn(router),
            docker_down,
            runs,
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("OPS_AGENT_URL", format!("http://{}", self.addr)),
            ("OPS_AGENT_TOKEN", "agent-token-0123456789".into()),
        ]
    }

    fn set_docker_down(&self, down: bool) {
        self.docker_down
            .store(down, std::sync::atomic::Ordering::SeqCst);
    }

    fn runs(&self) -> Vec<String> {
        self.runs.lock().unwrap().clone()
    }
}

const HOST: &str =
    "[[host]]\nid = \"vps1\"\nurl_env = \"OPS_AGENT_URL\"\ntoken_env = \"OPS_AGENT_TOKEN\"\n";

#[test]
fn healing_resumes_when_docker_answers_again_and_the_page_goes_out_once() {
    let discord = Discord::start();
    let target = TargetServer::start();
    let agent = StandInAgent::start(target.clone(), Duration::ZERO);
    agent.set_docker_down(true);
    let (dir, addr) = Edge::prepare("resume");
    let config = config_head(dir.path(), addr, 0.3, 0.1)
        + "settle_s = 0.1\n"
        + &format!(
            "[[target]]\nid = \"api\"\nurl = {:?}\nrole = \"remediate\"\nhost = \"vps1\"\nactions = [\"restart_api_core\"]\n",
            target.url()
        )
        + HOST;
    let mut env = discord_env(&discord);
    env.extend(agent.env());
    let edge = Edge::start(bin(), dir, addr, &config, env);
    target.set(Behaviour::Status(500));
    edge.wait_for("the page", Duration::from_secs(15), |_| {
        !discord.pages().is_empty()
    });
    let id = edge.get("/ops/incidents?state=open")["incidents"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Checks go on while Docker is down, folded into the one round.
    edge.wait_for("a second check", Duration::from_secs(10), |e| {
        e.get(&format!("/ops/incidents/{id}"))["rounds"][0]["retries"]
            .as_u64()
            .is_some()
    });
    assert!(agent.runs().is_empty());
    agent.set_docker_down(false);
    edge.wait_for("the resumed round", Duration::from_secs(20), |e| {
        e.get(&format!("/ops/incidents/{id}"))["resolved_at_ms"].is_u64()
    });
    let inc = edge.get(&format!("/ops/incidents/{id}"));
    let rounds = inc["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "{inc:#}");
    assert_eq!(rounds[0]["outcome"], "host_unreachable");
    assert_eq!(rounds[1]["outcome"], "recovered");
    assert!(
        rounds[1]["note"]
            .as_str()
            .unwrap()
            .contains("remediation resumed"),
        "{inc:#}"
    );
    assert_eq!(agent.runs(), ["restart_api_core"]);
    assert_eq!(inc["remediation"]["status"], "done");
    assert_eq!(discord.pages().len(), 1, "the page went out once");
}

#[test]
fn a_manual_action_is_on_the_incident_from_its_start_even_when_the_cycle_resolves_first() {
    let target = TargetServer::start();
    let agent = StandInAgent::start(target.clone(), Duration::from_secs(3));
    let (dir, addr) = Edge::prepare("manual");
    let config = config_head(dir.path(), addr, 0.2, 0.1)
        + &target_toml("api", &target.url(), "host = \"vps1\"")
        + HOST;
    let edge = Edge::start(bin(), dir, addr, &config, agent.env());
    target.set(Behaviour::Status(500));
    edge.wait_for("the incident", Duration::from_secs(10), |e| {
        e.target_state("api") == "down"
    });
    let id = edge.get("/ops/incidents?state=open")["incidents"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let http = edge.http.clone();
    let run = std::thread::spawn(move || {
        let res = http
            .post(format!("http://{addr}/ops/actions/vps1/restart_api_core"))
            .bearer_auth(CONTROL_TOKEN)
            .header("X-Vigil-Operator", "alice")
            .send()
            .unwrap();
        (res.status().as_u16(), res.json::<Value>().unwrap())
    });
    // The action heals the target at once and answers later: the cycle
    // resolves the incident first, and the trail already has the action.
    edge.wait_for(
        "the resolve while the action runs",
        Duration::from_secs(10),
        |e| e.get(&format!("/ops/incidents/{id}"))["resolved_at_ms"].is_u64(),
    );
    let inc = edge.get(&format!("/ops/incidents/{id}"));
    assert_eq!(inc["manual_actions"][0]["by"], "alice", "{inc:#}");
    assert!(
        inc["manual_actions"][0]["finished_at_ms"].is_null(),
        "still running when the incident resolved: {inc:#}"
    );
    let (code, body) = run.join().unwrap();
    assert_eq!(code, 200, "{body}");
    let inc = edge.get(&format!("/ops/incidents/{id}"));
    let record = &inc["manual_actions"][0];
    assert_eq!(record["action"], "restart_api_core", "{inc:#}");
    assert_eq!(record["result"]["outcome"], "ok", "{inc:#}");
    assert!(record["finished_at_ms"].is_u64(), "{inc:#}");
    assert_eq!(inc["manual_actions"].as_array().unwrap().len(), 1);
}

#[test]
fn a_flapping_target_is_one_episode_one_page_and_no_flood() {
    let discord = Discord::start();
    discord.limit_rate(30);
    let target = TargetServer::start();
    let (dir, addr) = Edge::prepare("flap");
    // A remediate target whose agent is not reachable: its first incident
    // pages (host unreachable), as a real outage would.
    let config = config_head(dir.path(), addr, 0.3, 0.1)
        + "flap_threshold = 6\nflap_window_s = 60\nflap_settle_s = 2\n"
        + &format!(
            "[[target]]\nid = \"api\"\nurl = {:?}\nrole = \"remediate\"\nhost = \"vps1\"\nactions = [\"restart_api_core\"]\n",
            target.url()
        )
        + "[[host]]\nid = \"vps1\"\nurl_env = \"NO_SUCH_AGENT_URL\"\ntoken_env = \"NO_SUCH_AGENT_TOKEN\"\n";
    target.set(Behaviour::Cycle(vec![500, 500, 200]));
    let edge = Edge::start(bin(), dir, addr, &config, discord_env(&discord));
    edge.wait_for("the flapping alert", Duration::from_secs(30), |_| {
        discord.titles().iter().any(|t| t == "api: flapping")
    });
    // Keep it flapping a while longer: nothing more may go out.
    let changes = |e: &Edge| {
        e.get("/ops/incidents?state=open")["incidents"][0]["history"]
            .as_array()
            .map_or(0, Vec::len)
    };
    let at_alert = changes(&edge);
    edge.wait_for("twenty more changes", Duration::from_secs(60), |e| {
        changes(e) >= at_alert + 20
    });
    let during = discord.titles();
    assert_eq!(
        during
            .iter()
            .filter(|t| t.as_str() == "api: flapping")
            .count(),
        1,
        "{during:?}"
    );
    assert!(during.len() <= 8, "{during:?}");
    assert_eq!(discord.pages().len(), 1, "{during:?}");
    let incidents = edge.get("/ops/incidents")["incidents"].clone();
    assert!(incidents.as_array().unwrap().len() <= 4, "{incidents}");
    let open = edge.get("/ops/incidents?state=open")["incidents"].clone();
    assert_eq!(open.as_array().unwrap().len(), 1, "{open}");
    assert_eq!(open[0]["remediation"]["status"], "suppressed", "{open}");
    let summary = edge.get("/ops/summary");
    let flapping = &summary["targets"][0]["flapping"];
    assert_eq!(flapping["incident"], open[0]["id"], "{summary}");
    assert!(flapping["changes"].as_u64().unwrap() >= 20, "{summary}");
    // It settles: one alert, the incident resolves.
    target.set(Behaviour::Ok);
    edge.wait_for("the settled alert", Duration::from_secs(20), |_| {
        discord.titles().last().map(String::as_str) == Some("api: stopped flapping, healthy")
    });
    edge.wait_for("no open incident", Duration::from_secs(10), |e| {
        e.get("/ops/incidents?state=open")["incidents"]
            .as_array()
            .unwrap()
            .is_empty()
    });
    assert_eq!(discord.pages().len(), 1);
    assert!(
        discord.attempts().iter().all(|(_, status)| *status == 200),
        "never past Discord's rate: {:?}",
        discord.attempts()
    );
    assert!(discord.rejected().is_empty(), "{:?}", discord.rejected());
}

#[test]
fn alerts_over_the_channel_rate_are_folded_into_one_summary() {
    let discord = Discord::start();
    let (dir, addr) = Edge::prepare("fold");
    let targets: Vec<TargetServer> = (0..12).map(|_| TargetServer::start()).collect();
    let mut config = config_head(dir.path(), addr, 0.3, 0.1) + "[discord]\nmax_per_minute = 5\n";
    for (i, t) in targets.iter().enumerate() {
        t.set(Behaviour::Status(500));
        config += &target_toml(&format!("t{i:02}"), &t.url(), "");
    }
    let edge = Edge::start(bin(), dir, addr, &config, discord_env(&discord));
    edge.wait_for("five messages", Duration::from_secs(20), |_| {
        discord.accepted().len() == 5
    });
    edge.wait_for("twelve incidents", Duration::from_secs(20), |e| {
        e.get("/ops/incidents?state=open")["incidents"]
            .as_array()
            .unwrap()
            .len()
            == 12
    });
    std::thread::sleep(Duration::from_millis(1000));
    let titles = discord.titles();
    assert_eq!(titles.len(), 5, "the minute's cap holds: {titles:?}");
    // Everything sent or summarised: each target once.
    let summary = discord
        .accepted()
        .into_iter()
        .find(|m| {
            m["embeds"][0]["title"]
                .as_str()
                .unwrap()
                .starts_with("Vigil: ")
        })
        .expect("a summary");
    let listed = summary["embeds"][0]["description"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..12 {
        let title = format!("t{i:02}: healthy → down");
        let n = titles.iter().filter(|t| **t == title).count() + listed.matches(&title).count();
        assert_eq!(n, 1, "{title}: {titles:?} {listed}");
    }
}

fn post_log(edge: &Edge, token: &str, body: &str) -> reqwest::blocking::Response {
    edge.http
        .post(format!("http://{}/_log", edge.addr))
        .bearer_auth(token)
        .body(body.to_string())
        .send()
        .unwrap()
}

#[test]
fn crash_reports_with_a_new_app_each_stay_bounded() {
    let discord = Discord::start();
    let (dir, addr) = Edge::prepare("crashflood");
    let config = config_head(dir.path(), addr, 0.3, 0.1)
        + "[crash_log]\nmax_alerts = 20\nmax_open_incidents = 10\nper_minute = 100000\nburst = 10000\n";
    let state_file = dir.path().join("state/state.json");
    let edge = Edge::start(bin(), dir, addr, &config, discord_env(&discord));
    let mut size_after_20 = 0;
    for i in 0..2300 {
        let body = format!(r#"{{"app": "app-{i}", "message": "boom", "severity": "critical"}}"#);
        assert_eq!(
            post_log(&edge, CRASH_LOG_TOKEN, &body).status().as_u16(),
            202
        );
        if i == 20 {
            size_after_20 = std::fs::metadata(&state_file).unwrap().len();
        }
    }
    let open = edge.get("/ops/incidents?state=open")["incidents"].clone();
    assert_eq!(open.as_array().unwrap().len(), 10, "bounded open incidents");
    edge.wait_for("the alerts", Duration::from_secs(20), |_| {
        discord.accepted().len() == 11
    });
    std::thread::sleep(Duration::from_millis(600));
    let titles = discord.titles();
    assert_eq!(titles.len(), 11, "{titles:?}");
    assert_eq!(titles[10], "Crash reports over the limit: alerts paused");
    let size = std::fs::metadata(&state_file).unwrap().len();
    assert!(
        size <= size_after_20 + 1024,
        "the state does not grow with the reports: {size_after_20} → {size}"
    );
    assert_eq!(
        edge.get("/ops/crashes?limit=200")["crashes"]
            .as_array()
            .unwrap()
            .len(),
        200
    );
}

#[test]
fn crash_log_requests_and_failed_authentications_are_rate_limited_per_client() {
    let (dir, addr) = Edge::prepare("crashrate");
    let config = config_head(dir.path(), addr, 0.3, 0.1)
        + "[crash_log]\napps = [\"shop\"]\nper_minute = 6\nburst = 3\n";
    let edge = Edge::start(bin(), dir, addr, &config, vec![]);
    let report = r#"{"app": "shop", "message": "boom"}"#;
    let res = post_log(
        &edge,
        CRASH_LOG_TOKEN,
        r#"{"app": "blog", "message": "boom"}"#,
    );
    assert_eq!(res.status().as_u16(), 400);
    let body: Value = res.json().unwrap();
    assert_eq!(body["error"]["code"], "unknown_app");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("crash_log.apps"),
        "{body}"
    );
    for _ in 0..2 {
        assert_eq!(
            post_log(&edge, CRASH_LOG_TOKEN, report).status().as_u16(),
            202
        );
    }
    let res = post_log(&edge, CRASH_LOG_TOKEN, report);
    assert_eq!(res.status().as_u16(), 429, "the burst of 3 is spent");
    assert!(res.headers().get("retry-after").is_some());
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let body: Value = res.json().unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(
        edge.get("/ops/crashes")["crashes"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Failed authentications: counted per client, 429 past five.
    let wrong = |e: &Edge| {
        e.http
            .get(format!("http://{}/ops/summary", e.addr))
            .bearer_auth("wrong-wrong-wrong-wrong")
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let statuses: Vec<u16> = (0..7).map(|_| wrong(&edge)).collect();
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429]);
    assert!(
        edge.logs().contains("failed authentication"),
        "{}",
        edge.logs()
    );
}

#[test]
fn bad_numbers_are_refused_naming_the_key() {
    let target = TargetServer::start();
    let (dir, addr) = Edge::prepare("numbers");
    let check = |text: &str| {
        let path = dir.path().join("check.toml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(bin())
            .args(["--config", path.to_str().unwrap(), "--check"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, err) =
        check(&(String::from("interval_s = 1e300\n") + &target_toml("t", &target.url(), "")));
    assert!(
        !ok && err
            .contains("check.toml: interval_s: must be greater than zero and at most 86400 s"),
        "{err}"
    );
    let (ok, err) = check("[[target]]\nid = \"t\"\nurl = \"http://x/\"\ntimeout_ms = 0\n");
    assert!(!ok && err.contains("target[0].timeout_ms"), "{err}");
    let config = config_head(dir.path(), addr, 0.5, 0.2) + &target_toml("api", &target.url(), "");
    let edge = Edge::start(bin(), dir, addr, &config, vec![]);
    let path = "/ops/target/api/maintenance";
    for (body, key) in [
        (json!({"duration_s": 1e308}), "duration_s"),
        (json!({"duration_s": -5}), "duration_s"),
        (json!({"until_ms": u64::MAX}), "until_ms"),
    ] {
        let (status, res) = edge.post(path, Some(body.clone()));
        assert_eq!(status, 400, "{body}: {res}");
        let message = res["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(key), "{body}: {message}");
    }
    let summary = edge.get("/ops/summary");
    assert!(
        summary["targets"][0]["maintenance_until_ms"].is_null(),
        "nothing changed: {summary}"
    );
    let (status, res) = edge.post(path, Some(json!({"duration_s": 60})));
    assert_eq!(status, 200, "{res}");
}

#[test]
fn tokens_are_checked_at_start_and_missing_ones_named_without_colour() {
    let target = TargetServer::start();
    let (dir, addr) = Edge::prepare("tokens");
    let path = dir.path().join("edge.toml");
    std::fs::write(
        &path,
        config_head(dir.path(), addr, 0.5, 0.2) + &target_toml("t", &target.url(), ""),
    )
    .unwrap();
    let once = |env: &[(&str, &str)]| {
        let out = std::process::Command::new(bin())
            .args(["--config", path.to_str().unwrap(), "--once"])
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, err) = once(&[("CONTROL_TOKEN", "too-short")]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("CONTROL_TOKEN is 9 characters: it must be at least 16"),
        "{err}"
    );
    let (ok, err) = once(&[("JOBS_TOKEN", "0123456789abcdef\n")]);
    assert!(
        !ok && err.contains("JOBS_TOKEN is blank or starts or ends with whitespace (a trailing newline?): remove it"),
        "{err}"
    );
    let (ok, err) = once(&[("CONTROL_TOKEN", CONTROL_TOKEN)]);
    assert!(ok, "{err}");
    for line in [
        "OPS_READ_TOKEN is not set: the read routes (GET /ops/...) take CONTROL_TOKEN only",
        "JOBS_TOKEN is not set: POST /ops/jobs/heartbeat refuses every request",
        "CRASH_LOG_TOKEN is not set: POST /_log (crash reports) refuses every request",
    ] {
        assert!(err.contains(line), "{line}: {err}");
    }
    assert!(!err.contains("CONTROL_TOKEN is not set"), "{err}");
    assert!(
        !err.contains('\x1b'),
        "no colour codes into a pipe: {err:?}"
    );
}

#[test]
fn a_host_signal_probes_at_once_and_bad_signals_are_refused_naming_the_field() {
    let discord = Discord::start();
    let target = TargetServer::start();
    let (dir, addr) = Edge::prepare("signal");
    // A long interval: only a signal can make the second probe come soon.
    let config = config_head(dir.path(), addr, 60.0, 0.5)
        + &target_toml(
            "api",
            &target.url(),
            "host = \"vps1\"\nservices = [\"api-core\"]",
        )
        + "[[host]]\nid = \"vps1\"\nurl_env = \"OPS_AGENT_URL\"\ntoken_env = \"OPS_AGENT_TOKEN\"\n";
    let edge = Edge::start(bin(), dir, addr, &config, discord_env(&discord));
    let url = format!("http://{addr}/ops/signal");
    let send = |token: Option<&str>, body: &str| {
        let mut req = edge.http.post(&url).body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().unwrap();
        (
            res.status().as_u16(),
            res.json::<Value>().unwrap_or(Value::Null),
        )
    };
    edge.wait_for("the first probe", Duration::from_secs(10), |_| {
        !target.seen().is_empty()
    });
    let die = |service: &str| {
        format!(r#"{{"host": "vps1", "service": "{service}", "event": "die", "at_ms": 1}}"#)
    };
    assert_eq!(send(None, &die("api-core")).0, 401);
    assert_eq!(
        send(Some(READ_TOKEN), &die("api-core")).0,
        401,
        "the signal token only"
    );
    assert_eq!(send(Some(JOBS_TOKEN), &die("api-core")).0, 401);
    for (body, field) in [
        (r#"{"host": "vps1", "event": "die", "at_ms": 1}"#, "service"),
        (
            r#"{"host": "vps1", "service": "api-core", "event": "die", "at_ms": "x"}"#,
            "at_ms",
        ),
        (
            r#"{"host": "vps1", "service": "api-core", "event": "", "at_ms": 1}"#,
            "event",
        ),
        ("{nope", "expected"),
    ] {
        let (status, answer) = send(Some(SIGNAL_TOKEN), body);
        assert_eq!(status, 400, "{body}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with(field),
            "{body}: {answer}"
        );
    }
    let big = format!(
        r#"{{"host": "{}", "service": "a", "event": "die", "at_ms": 1}}"#,
        "h".repeat(70_000)
    );
    assert_eq!(send(Some(SIGNAL_TOKEN), &big).0, 413);
    // Another service: nothing probed.
    let (status, answer) = send(Some(SIGNAL_TOKEN), &die("db"));
    assert_eq!((status, &answer["probing"]), (202, &json!([])), "{answer}");
    assert_eq!(
        target.seen().len(),
        1,
        "refused or unmatched signals probe nothing"
    );
    // The service goes down; its host says so; the edge probes well before
    // the 60 s interval, confirms after retry_after_s and opens the incident.
    target.set(Behaviour::Status(502));
    let sent = Instant::now();
    let (status, answer) = send(Some(SIGNAL_TOKEN), &die("api-core"));
    assert_eq!(
        (status, &answer["probing"]),
        (202, &json!(["api"])),
        "{answer}"
    );
    let (_, again) = send(Some(SIGNAL_TOKEN), &die("api-core"));
    assert_eq!(again["throttled"], json!(["api"]), "{again}");
    edge.wait_for("the incident", Duration::from_secs(10), |e| {
        e.target_state("api") == "down"
    });
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "down {took:?} after the signal"
    );
    assert_eq!(target.seen().len(), 3, "first, early and confirm probes");
    edge.wait_for("the alert", Duration::from_secs(10), |_| {
        discord.accepted().len() == 1
    });
    assert_eq!(discord.titles(), ["api: healthy → down"]);
}

const OBSERVATIONS_TOKEN: &str = "observations-token-0123456789";

/// A remote prober (`--probe-only`) for `region`, killed when dropped.
fn prober(edge: &Edge, region: &str) -> vigil_testkit::process::Proc {
    let config = edge.dir.path().join("edge.toml").display().to_string();
    let log = edge.dir.path().join(format!("prober-{region}.log"));
    let report_to = format!("http://{}", edge.addr);
    let env = [
        ("OBSERVATIONS_TOKEN", OBSERVATIONS_TOKEN.to_string()),
        ("RUST_LOG", "info,edge=debug".to_string()),
    ];
    let args = [
        "--config",
        config.as_str(),
        "--probe-only",
        "--report-to",
        report_to.as_str(),
        "--region",
        region,
    ];
    vigil_testkit::process::Proc {
        child: vigil_testkit::process::Proc::spawn(bin(), &args, &env, &log),
        addr: edge.addr,
        log,
    }
}

/// POSTs a batch signed with `token` (and `timestamp`, the batch's own
/// `sent_at_ms` unless given).
fn post_batch(edge: &Edge, token: &str, batch: &Value, timestamp: Option<&str>) -> (u16, Value) {
    let body = batch.to_string();
    let sent_at = batch["sent_at_ms"].to_string();
    let timestamp = timestamp.unwrap_or(&sent_at);
    let res = edge
        .http
        .post(format!("http://{}/ops/observations", edge.addr))
        .header("x-vigil-timestamp", timestamp)
        .header(
            "x-vigil-signature",
            edge::shell::sign(token, timestamp, body.as_bytes()),
        )
        .body(body)
        .send()
        .expect("POST");
    let status = res.status().as_u16();
    (status, res.json().unwrap_or(Value::Null))
}

fn notes(edge: &Edge, kind: &str) -> Vec<Value> {
    edge.get("/ops/vantage")["notes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == kind)
        .cloned()
        .collect()
}

fn prober_seq(edge: &Edge, region: &str) -> u64 {
    edge.get("/ops/vantage")["probers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["region"] == region)
        .and_then(|p| p["last_seq"].as_u64())
        .unwrap_or(0)
}

#[test]
fn two_remote_probers_must_agree_before_an_incident_and_a_silent_one_is_alerted() {
    let discord = Discord::start();
    let target = TargetServer::start();
    let agent = StandInAgent::start(target.clone(), Duration::ZERO);
    let (dir, addr) = Edge::prepare("quorum");
    let config = config_head(dir.path(), addr, 0.5, 0.2)
        + "settle_s = 0.1\nprober_silent_s = 3\n"
        + &format!(
            "[[target]]\nid = \"api\"\nurl = {:?}\nrole = \"remediate\"\nhost = \"vps1\"\nactions = [\"restart_api_core\"]\nregions = [\"east\", \"west\"]\nquorum = 2\n",
            target.url()
        )
        + HOST;
    let mut env = discord_env(&discord);
    env.extend(agent.env());
    env.push(("OBSERVATIONS_TOKEN", OBSERVATIONS_TOKEN.into()));
    let edge = Edge::start(bin(), dir, addr, &config, env);
    let _east = prober(&edge, "east");
    let mut west = prober(&edge, "west");
    edge.wait_for("both probers' views", Duration::from_secs(20), |e| {
        let v = e.get("/ops/vantage");
        v["targets"][0]["seen"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["health"] == "healthy")
    });
    let regions: std::collections::BTreeSet<String> = target
        .seen()
        .iter()
        .filter_map(|s| s.headers.get("x-vigil-region").cloned())
        .collect();
    assert_eq!(
        regions.into_iter().collect::<Vec<_>>(),
        ["east", "west"],
        "the main edge (region main) does not probe it itself"
    );

    // Bad batches change nothing and say why.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let down = |region: &str, seq: u64| {
        json!({"region": region, "seq": seq, "sent_at_ms": now, "observations": [
            {"target": "api", "at_ms": now, "health": "down", "latency_ms": 1, "error": "forged"}
        ]})
    };
    let forged = down("west", u64::MAX);
    let (status, _) = post_batch(&edge, "not-the-token-0123456789", &forged, None);
    assert_eq!(status, 401, "a batch signed with another key");
    let (status, body) = post_batch(&edge, OBSERVATIONS_TOKEN, &forged, Some("1"));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("x-vigil-timestamp"),
        "{body}"
    );
    let (status, body) = post_batch(&edge, OBSERVATIONS_TOKEN, &down("mars", u64::MAX), None);
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("region: no target lists \"mars\""),
        "{body}"
    );
    let (status, body) = post_batch(&edge, OBSERVATIONS_TOKEN, &down("west", 1), None);
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("seq: 1 is not after"),
        "{body}"
    );
    let mut skewed = down("west", u64::MAX);
    skewed["sent_at_ms"] = json!(now - 600_000);
    let (status, body) = post_batch(&edge, OBSERVATIONS_TOKEN, &skewed, None);
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("sent_at_ms: the prober's clock is 600 s off"),
        "{body}"
    );

    // Cut off from east only: a note and one warning, no incident.
    target.set(Behaviour::FailFrom(vec!["east"]));
    edge.wait_for(
        "the seen-down-from-east note",
        Duration::from_secs(20),
        |e| !notes(e, "seen_down_partly").is_empty(),
    );
    let seq = prober_seq(&edge, "east");
    edge.wait_for(
        "four more batches from east",
        Duration::from_secs(20),
        |e| prober_seq(e, "east") >= seq + 4 && prober_seq(e, "west") > 0,
    );
    assert!(edge.get("/ops/incidents")["incidents"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(edge.target_state("api"), "healthy");
    let partly = notes(&edge, "seen_down_partly");
    assert_eq!(partly.len(), 1, "{partly:?}");
    assert_eq!(partly[0]["regions"], json!(["east"]));
    assert!(
        partly[0]["text"]
            .as_str()
            .unwrap()
            .contains("east: down (unexpected status 503"),
        "{partly:?}"
    );
    edge.wait_for("the warning", Duration::from_secs(10), |_| {
        discord
            .titles()
            .contains(&"api: seen down from east only".to_string())
    });
    assert!(
        agent.runs().is_empty(),
        "nothing restarted a healthy service"
    );

    // Cut off from both: the incident, remediation as today.
    target.set(Behaviour::FailFrom(vec!["east", "west"]));
    edge.wait_for("the incident, healed", Duration::from_secs(30), |e| {
        e.get("/ops/incidents")["incidents"]
            .as_array()
            .unwrap()
            .first()
            .is_some_and(|i| i["resolved_at_ms"].is_u64())
    });
    assert_eq!(agent.runs(), ["restart_api_core"]);
    let id = edge.get("/ops/incidents")["incidents"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let inc = edge.get(&format!("/ops/incidents/{id}"));
    let seen = &inc["history"][0]["vantages"];
    assert_eq!(seen[0]["region"], "east");
    assert_eq!(seen[0]["health"], "down");
    assert_eq!(seen[1]["region"], "west");
    assert_eq!(seen[1]["health"], "down", "{inc:#}");
    assert_eq!(inc["rounds"][0]["outcome"], "recovered", "{inc:#}");
    edge.wait_for("the down alert", Duration::from_secs(10), |_| {
        discord
            .titles()
            .contains(&"api: healthy → down".to_string())
    });

    // West stops reporting: alerted as silent, once.
    west.terminate();
    edge.wait_for("the prober-silent note", Duration::from_secs(20), |e| {
        !notes(e, "prober_silent").is_empty()
    });
    edge.wait_for("the silent warning", Duration::from_secs(10), |_| {
        discord
            .titles()
            .iter()
            .any(|t| t.starts_with("prober west silent"))
    });
    assert_eq!(notes(&edge, "prober_silent").len(), 1);
    assert!(discord.rejected().is_empty(), "{:?}", discord.rejected());
}

#[test]
fn a_prober_refuses_to_start_without_its_region_or_token() {
    let (dir, addr) = Edge::prepare("prober-args");
    let config = config_head(dir.path(), addr, 0.5, 0.2)
        + "[[target]]\nid = \"api\"\nurl = \"http://127.0.0.1:9/\"\nregions = [\"east\"]\n";
    let file = dir.path().join("edge.toml");
    std::fs::write(&file, config).unwrap();
    let file = file.display().to_string();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = std::process::Command::new(bin())
            .args(["--config", &file])
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let url = ["--probe-only", "--report-to", "http://127.0.0.1:9"];
    let token = ("OBSERVATIONS_TOKEN", OBSERVATIONS_TOKEN);
    let (code, err) = run(&url, &[token]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--probe-only needs its region"), "{err}");
    let (code, err) = run(&url, &[("VIGIL_REGION", "east")]);
    assert_eq!(code, Some(1));
    assert!(err.contains("needs OBSERVATIONS_TOKEN"), "{err}");
    let (_, err) = run(
        &url,
        &[("VIGIL_REGION", "east"), ("OBSERVATIONS_TOKEN", "short")],
    );
    assert!(err.contains("OBSERVATIONS_TOKEN is 5 characters"), "{err}");
    let (_, err) = run(&url, &[("VIGIL_REGION", "north"), token]);
    assert!(err.contains("no target lists region \"north\""), "{err}");
    let (code, err) = run(&["--probe-only"], &[token]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--probe-only and --report-to URL go together"),
        "{err}"
    );
}

/// A form check: the probe sends the target's headers (the secret one from
/// the environment, never the file), its JSON body with its content type,
/// and checks the answer's headers; a wrong body or a missing secret is
/// seen as such, and a redirect is taken or not as the target says.
#[test]
fn a_form_check_sends_headers_and_body_and_checks_the_answer() {
    const SECRET: &str = "Bearer form-secret-0123456789";
    let discord = Discord::start();
    let [form, wrong, moved, landing] = std::array::from_fn(|_| TargetServer::start());
    let want_body = r#"{"email":"probe@example.com","n":1}"#;
    for server in [&form, &wrong] {
        server.set(Behaviour::Form {
            header: ("authorization".into(), SECRET.into()),
            body: want_body.into(),
        });
    }
    moved.set(Behaviour::Redirect(landing.url()));
    let form_toml = |id: &str, url: &str, email: &str| {
        format!(
            "[[target]]\nid = {id:?}\nurl = {url:?}\nmethod = \"POST\"\nbody_contains = \"ok\"\n\
             headers = {{ \"X-Probe\" = \"vigil\" }}\n\
             headers_env = {{ Authorization = \"PROBE_TOKEN_FORM\" }}\n\
             body = {{ email = {email:?}, n = 1 }}\n\
             expect_headers = {{ \"X-Form\" = \"accepted\" }}\n"
        )
    };
    let (dir, addr) = Edge::prepare("form");
    let config = config_head(dir.path(), addr, 0.5, 0.2)
        + &form_toml("form", &form.url(), "probe@example.com")
        + &form_toml("wrong", &wrong.url(), "someone@else.com")
        + &target_toml(
            "moved",
            &moved.url(),
            "follow_redirects = false\nexpect_status = [302]\nbody_contains = \"moved\"",
        )
        .replace("body_contains = \"ok\"\n", "")
        + &target_toml("followed", &moved.url(), "");
    std::fs::write(dir.path().join("edge.toml"), &config).unwrap();
    assert!(!config.contains(SECRET));

    // Without the variable the edge does not start, naming the key.
    let out = std::process::Command::new(bin())
        .args([
            "--config",
            dir.path().join("edge.toml").to_str().unwrap(),
            "--once",
        ])
        .env_remove("PROBE_TOKEN_FORM")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("target[0].headers_env.Authorization: PROBE_TOKEN_FORM is not set"),
        "{err}"
    );

    let mut env = discord_env(&discord);
    env.push(("PROBE_TOKEN_FORM", SECRET.into()));
    let edge = Edge::start(bin(), dir, addr, &config, env);
    edge.wait_for("the wrong form's incident", Duration::from_secs(15), |e| {
        e.target_state("wrong") == "down"
    });
    let recent = |id: &str| edge.get(&format!("/ops/target/{id}"))["recent"][0].clone();
    edge.wait_for("probes of every target", Duration::from_secs(15), |_| {
        ["form", "moved", "followed"]
            .iter()
            .all(|id| recent(id)["status"].is_u64())
    });
    let form_seen = recent("form");
    assert_eq!(form_seen["status"], 200, "{form_seen}");
    assert!(form_seen["error"].is_null(), "{form_seen}");
    let wrong_seen = recent("wrong");
    assert_eq!(wrong_seen["status"], 400, "{wrong_seen}");
    // What the form saw: the method, both headers, the body's bytes and type.
    let sent = form.seen().last().cloned().unwrap();
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.headers["authorization"], SECRET);
    assert_eq!(sent.headers["x-probe"], "vigil");
    assert_eq!(sent.headers["content-type"], "application/json");
    assert_eq!(String::from_utf8(sent.body).unwrap(), want_body);
    // Not followed: the 302 is the answer; followed: the landing page.
    assert_eq!(recent("moved")["status"], 302);
    assert!(recent("moved")["error"].is_null(), "{}", recent("moved"));
    assert_eq!(recent("followed")["status"], 200);
    assert!(landing.seen().iter().all(|s| s.method == "GET"));
    assert!(!landing.seen().is_empty());
    assert_eq!(edge.target_state("form"), "healthy");
    assert_eq!(edge.target_state("moved"), "healthy");
    assert!(!edge.logs().contains(SECRET), "the secret is never logged");
}

/// tls_expiry_days: a certificate that ends within the window is warned
/// about once (not an incident); one with time left is not.
#[test]
fn a_certificate_near_its_end_is_warned_about_once() {
    use vigil_testkit::tls::TlsTarget;
    let discord = Discord::start();
    let short = TlsTarget::start(5);
    let long = TlsTarget::start(90);
    let (dir, addr) = Edge::prepare("tls");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, format!("{}{}", short.ca_pem, long.ca_pem)).unwrap();
    let config = config_head(dir.path(), addr, 0.3, 0.1)
        + &format!("probe_ca_file = {:?}\n", ca.display().to_string())
        + &target_toml("short", &short.url(), "tls_expiry_days = 14")
        + &target_toml("long", &long.url(), "tls_expiry_days = 14");
    let edge = Edge::start(bin(), dir, addr, &config, discord_env(&discord));
    edge.wait_for("the certificate warning", Duration::from_secs(15), |_| {
        !discord.titles().is_empty()
    });
    // Several more probes of both: still one warning, no incident.
    let probes = |id: &str| {
        edge.get(&format!("/ops/target/{id}"))["recent"]
            .as_array()
            .map_or(0, Vec::len)
    };
    let before = probes("short");
    edge.wait_for("five more probes", Duration::from_secs(15), |_| {
        probes("short") >= before + 5 && probes("long") >= 5
    });
    let titles = discord.titles();
    assert!(
        titles == ["short: TLS certificate expires in 4 days"]
            || titles == ["short: TLS certificate expires in 5 days"],
        "{titles:?}"
    );
    let warning = &discord.accepted()[0]["embeds"][0];
    let not_after = warning["fields"][0]["value"].as_str().unwrap();
    assert_eq!(
        not_after,
        time_utc(short.not_after_s),
        "the certificate's own notAfter"
    );
    assert_eq!(edge.target_state("short"), "healthy");
    assert_eq!(edge.target_state("long"), "healthy");
    let open = edge.get("/ops/incidents?state=open");
    assert!(open["incidents"].as_array().unwrap().is_empty(), "{open}");
}

/// Epoch seconds as `YYYY-MM-DDTHH:MM:SSZ`, by the system's `date`.
fn time_utc(s: i64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{s}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The PostHog proxy on its own listener, against a fake PostHog that
/// records what arrives: `/static/*` to the assets host, the rest to
/// ingestion, body bytes unchanged, the client's address in
/// X-Forwarded-For (a spoofed one replaced), no cookie or credentials
/// upstream, no cookie back, statuses passed back, oversized bodies and
/// other methods refused before anything is sent.
#[test]
fn the_posthog_proxy_forwards_what_posthog_needs_and_nothing_else() {
    use vigil_testkit::posthog::FakePostHog;
    let (ingest, assets) = (FakePostHog::start(), FakePostHog::start());
    let (dir, addr) = Edge::prepare("posthog");
    let proxy: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = config_head(dir.path(), addr, 60.0, 15.0)
        + &format!(
            "[posthog]\nlisten = \"{proxy}\"\ningest_host = {:?}\nassets_host = {:?}\nmax_body_bytes = 4096\n",
            ingest.url(),
            assets.url()
        );
    let _edge = Edge::start(bin(), dir, addr, &config, vec![]);
    assert!(vigil_testkit::wait_for_port(proxy, Duration::from_secs(10)));
    let http = reqwest::blocking::Client::new();
    let url = |p: &str| format!("http://{proxy}{p}");

    // An event batch: bytes that are not UTF-8 arrive exactly.
    let batch: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let res = http
        .post(url("/e/?compression=gzip-js&ver=1.0"))
        .header("content-type", "text/plain")
        .header("cookie", "session=secret")
        .header("authorization", "Bearer secret")
        .header("x-forwarded-for", "6.6.6.6")
        .header("origin", "https://example.com")
        .body(batch.clone())
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("set-cookie").is_none(), "no cookie back");
    assert_eq!(res.headers()["x-posthog"], "fake");
    assert_eq!(res.text().unwrap(), r#"{"status":1}"#);
    let got = ingest.arrived();
    assert_eq!(got.len(), 1);
    let e = &got[0];
    assert_eq!(e.method, "POST");
    assert_eq!(e.path_and_query, "/e/?compression=gzip-js&ver=1.0");
    assert_eq!(e.body, batch);
    assert_eq!(e.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(e.headers["content-type"], "text/plain");
    assert_eq!(e.headers["origin"], "https://example.com");
    assert_eq!(e.headers["host"], ingest.addr.to_string());
    for h in ["cookie", "authorization"] {
        assert!(!e.headers.contains_key(h), "{h} forwarded: {e:?}");
    }

    // Assets go to the assets host.
    let res = http.get(url("/static/array.js")).send().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().unwrap(), "/* posthog-js */");
    assert_eq!(assets.arrived()[0].path_and_query, "/static/array.js");
    assert_eq!(assets.arrived()[0].method, "GET");

    // PostHog's refusal comes back as it is.
    let res = http.post(url("/reject")).body("{}").send().unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.text().unwrap(), r#"{"type":"validation_error"}"#);

    // Too large (declared, or streamed without a length) and other methods:
    // refused, nothing more arrives.
    let before = ingest.arrived().len();
    let res = http.post(url("/e/")).body(vec![b'x'; 5000]).send().unwrap();
    assert_eq!(res.status(), 413);
    // A reader: sent chunked, without a length.
    let streamed = reqwest::blocking::Body::new(std::io::Cursor::new(vec![b'y'; 5000]));
    let res = http.post(url("/e/")).body(streamed).send().unwrap();
    assert_eq!(res.status(), 413);
    let res = http.delete(url("/e/")).send().unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "GET, HEAD, POST, OPTIONS");
    assert!(
        ingest.arrived()[before..]
            .iter()
            .all(|a| a.body.len() <= 4096),
        "no oversized body reached PostHog"
    );
}

#[test]
fn a_pagerduty_incident_is_triggered_acked_and_resolved_with_one_dedup_key_across_a_restart() {
    let discord = Discord::start();
    let pd = PagerDuty::start();
    let target = TargetServer::start();
    target.set(Behaviour::Status(500));
    let (dir, addr) = Edge::prepare("pagerduty");
    let config = config_head(dir.path(), addr, 0.3, 0.1) + &pd.paged_target_config(&target.url());
    let mut env = discord_env(&discord);
    env.push(("PD_ROUTING_KEY", "0123456789abcdef0123456789abcdef".into()));
    let mut edge = Edge::start(bin(), dir, addr, &config, env);
    edge.wait_for("the trigger", Duration::from_secs(20), |_| {
        !pd.events().is_empty()
    });
    let id = edge.get("/ops/incidents?state=open")["incidents"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let trigger = &pd.accepted()[0];
    assert_eq!(trigger["dedup_key"], id.as_str(), "{trigger}");
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert_eq!(trigger["payload"]["source"], "api-core");
    assert!(trigger["payload"]["custom_details"]["tried"].is_array());
    edge.wait_for("the Discord page", Duration::from_secs(10), |_| {
        discord.pages().len() == 1
    });
    let (status, _) = edge.post(&format!("/ops/incidents/{id}/ack"), None);
    assert_eq!(status, 200);
    // Delivered and its delivery stored: a kill between the two would send
    // it again after the restart (at least once, by design).
    edge.wait_for("the acknowledge", Duration::from_secs(10), |e| {
        pd.events().len() == 2 && e.get("/ops/summary")["outbox_pending"] == 0
    });
    // The edge stops; the target recovers meanwhile; the resolve goes out
    // after the restart.
    edge.kill();
    target.set(Behaviour::Ok);
    edge.restart();
    edge.wait_for("the resolve", Duration::from_secs(20), |_| {
        pd.events().len() == 3
    });
    pd.assert_triggered_acked_resolved_once(&id);
    assert!(discord.rejected().is_empty(), "{:?}", discord.rejected());
    assert_eq!(discord.pages().len(), 1, "paged once");
    assert!(
        discord
            .titles()
            .iter()
            .any(|t| t == "api-core: down → healthy"),
        "{:?}",
        discord.titles()
    );
}

#[test]
fn the_pagerduty_receiver_is_as_strict_as_events_v2() {
    let pd = PagerDuty::start();
    let http = reqwest::blocking::Client::new();
    let send = |e: Value| {
        let res = http.post(pd.url()).json(&e).send().unwrap();
        (res.status().as_u16(), res.json::<Value>().unwrap())
    };
    let good = json!({"routing_key": "k", "event_action": "trigger", "dedup_key": "inc-1",
        "payload": {"summary": "s", "source": "api", "severity": "critical"}});
    let (status, body) = send(good.clone());
    assert_eq!((status, body["dedup_key"].clone()), (202, json!("inc-1")));
    let mut no_key = good.clone();
    no_key.as_object_mut().unwrap().remove("routing_key");
    let mut bad_severity = good.clone();
    bad_severity["payload"]["severity"] = json!("high");
    let mut long = good.clone();
    long["payload"]["summary"] = json!("x".repeat(1025));
    for bad in [no_key, bad_severity, long] {
        let (status, body) = send(bad);
        assert_eq!(
            (status, body["status"].clone()),
            (400, json!("invalid event"))
        );
    }
    assert_eq!(pd.rejected().len(), 3);
}

#[test]
fn the_deadman_url_sees_a_ping_per_cycle_a_fail_while_alerts_are_stuck_and_none_once_killed() {
    let discord = Discord::start();
    let hc = Healthchecks::start();
    let target = TargetServer::start();
    let (dir, addr) = Edge::prepare("deadman");
    let config = config_head(dir.path(), addr, 0.3, 0.1)
        + "[deadman]\nurl_env = \"DEADMAN_URL\"\nfail_after_s = 1\n"
        + &target_toml("api", &target.url(), "");
    let mut env = discord_env(&discord);
    env.push(("DEADMAN_URL", hc.url()));
    let mut edge = Edge::start(bin(), dir, addr, &config, env);
    edge.wait_for("five pings", Duration::from_secs(20), |_| {
        hc.successes() >= 5
    });
    let pings = hc.pings();
    let span = pings.last().unwrap().0 - pings[0].0;
    // One a cycle (0.3 s), never more.
    assert!(
        (pings.len() as f64) <= span.as_secs_f64() / 0.3 + 2.0,
        "{} pings in {span:?}",
        pings.len()
    );
    assert!(hc.starts() >= 5, "a /start before each cycle");
    // Alerts that cannot go out for longer than fail_after_s: /fail, with why.
    discord.set_down(true);
    target.set(Behaviour::Status(500));
    edge.wait_for("a /fail", Duration::from_secs(20), |_| {
        !hc.failures().is_empty()
    });
    let why = hc.failures()[0].clone();
    assert!(why.starts_with("alerts undelivered for"), "{why}");
    assert!(why.contains("HTTP 500"), "{why}");
    discord.set_down(false);
    let failed = hc.pings().len();
    edge.wait_for("success again", Duration::from_secs(20), |_| {
        hc.pings()[failed..].iter().any(|(_, f)| f.is_none())
    });
    // Killed: the pings stop.
    edge.kill();
    let at_kill = (hc.pings().len(), hc.starts());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        (hc.pings().len(), hc.starts()),
        at_kill,
        "no ping from a dead edge"
    );
}

#[test]
fn a_parent_outage_with_two_children_is_one_page_and_one_folded_alert() {
    let discord = Discord::start();
    let [gateway, api, docs] = std::array::from_fn(|_| TargetServer::start());
    let (dir, addr) = Edge::prepare("depends");
    let config = config_head(dir.path(), addr, 0.3, 0.1)
        + &format!(
            "[[target]]\nid = \"gateway\"\nurl = {:?}\nrole = \"remediate\"\nhost = \"vps1\"\nactions = [\"restart_gateway\"]\n",
            gateway.url()
        )
        + "[[host]]\nid = \"vps1\"\nurl_env = \"NO_SUCH_AGENT_URL\"\ntoken_env = \"NO_SUCH_AGENT_TOKEN\"\n"
        + &target_toml("api", &api.url(), "depends_on = [\"gateway\"]")
        + &target_toml("docs", &docs.url(), "depends_on = [\"gateway\"]");
    let edge = Edge::start(bin(), dir, addr, &config, discord_env(&discord));
    gateway.set(Behaviour::Status(500));
    edge.wait_for("the gateway's incident", Duration::from_secs(20), |_| {
        discord
            .titles()
            .iter()
            .any(|t| t == "gateway: healthy → down")
    });
    api.set(Behaviour::Status(500));
    docs.set(Behaviour::Status(500));
    edge.wait_for("two folded children", Duration::from_secs(20), |e| {
        e.get("/ops/incidents?state=open")["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["folded_into"].is_string())
            .count()
            == 2
    });
    edge.wait_for("the page", Duration::from_secs(20), |_| {
        discord.pages().len() == 1
    });
    // Everything recovers: nothing about the children goes out.
    for t in [&gateway, &api, &docs] {
        t.set(Behaviour::Ok);
    }
    edge.wait_for("no open incident", Duration::from_secs(20), |e| {
        e.get("/ops/incidents?state=open")["incidents"]
            .as_array()
            .unwrap()
            .is_empty()
    });
    edge.wait_for("the recovery alert", Duration::from_secs(10), |_| {
        discord
            .titles()
            .iter()
            .any(|t| t == "gateway: down → healthy")
    });
    let titles = discord.titles();
    let folded: Vec<&String> = titles.iter().filter(|t| t.ends_with(" affected")).collect();
    assert_eq!(folded.len(), 1, "{titles:?}");
    assert!(
        folded[0] == "gateway down; api, docs affected"
            || folded[0] == "gateway down; docs, api affected",
        "{titles:?}"
    );
    assert_eq!(discord.pages().len(), 1, "{titles:?}");
    assert!(
        titles
            .iter()
            .all(|t| !t.starts_with("api") && !t.starts_with("docs")),
        "{titles:?}"
    );
    assert!(discord.rejected().is_empty());
}

#[test]
fn a_pages_signed_ack_link_confirms_acknowledges_once_and_expires() {
    let discord = Discord::start();
    let target = TargetServer::start();
    target.set(Behaviour::Status(500));
    let (dir, addr) = Edge::prepare("acklink");
    let config = config_head(dir.path(), addr, 0.3, 0.1)
        + &format!("[ack_link]\nbase_url = \"http://{addr}\"\nvalid_s = 4\n")
        + &format!(
            "[[target]]\nid = \"api\"\nurl = {:?}\nrole = \"remediate\"\nhost = \"vps1\"\nactions = [\"restart_api_core\"]\n",
            target.url()
        )
        + "[[host]]\nid = \"vps1\"\nurl_env = \"NO_SUCH_AGENT_URL\"\ntoken_env = \"NO_SUCH_AGENT_TOKEN\"\n";
    let mut env = discord_env(&discord);
    env.push(("ACK_LINK_SECRET", "ack-link-secret-0123456789".into()));
    let edge = Edge::start(bin(), dir, addr, &config, env);
    edge.wait_for("the page", Duration::from_secs(20), |_| {
        discord.pages().len() == 1
    });
    let page = discord.pages()[0].clone();
    let link = Discord::ack_link(&page);
    let http = reqwest::blocking::Client::new();
    let open = http.get(&link).send().unwrap();
    assert_eq!(open.status().as_u16(), 200);
    assert!(open.text().unwrap().contains("<form method=post"));
    let id = edge.get("/ops/incidents?state=open")["incidents"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        edge.get(&format!("/ops/incidents/{id}"))["acked_at_ms"].is_null(),
        "opening the link acknowledges nothing"
    );
    assert_eq!(http.post(&link).send().unwrap().status().as_u16(), 200);
    let inc = edge.get(&format!("/ops/incidents/{id}"));
    assert_eq!(inc["acked_by"], "ack link", "{inc}");
    assert_eq!(
        http.post(&link).send().unwrap().status().as_u16(),
        409,
        "a replay is refused"
    );
    let forged = link.replace("expires=", "expires=9");
    assert_eq!(http.post(&forged).send().unwrap().status().as_u16(), 403);
    edge.wait_for("the link to expire", Duration::from_secs(20), |_| {
        http.get(&link).send().unwrap().status().as_u16() == 410
    });
}

#[test]
fn slack_and_signed_webhook_channels_get_each_alert_once_in_order() {
    let slack = Hook::slack();
    let secret = "webhook-secret-0123456789";
    let hook = Hook::signed(secret);
    let target = TargetServer::start();
    let (dir, addr) = Edge::prepare("hooks");
    let config = config_head(dir.path(), addr, 0.3, 0.1)
        + "[[channel]]\nid = \"chat\"\nkind = \"slack\"\nurl_env = \"SLACK_URL\"\n"
        + "[[channel]]\nid = \"audit\"\nkind = \"webhook\"\nurl_env = \"HOOK_URL\"\nsecret_env = \"HOOK_SECRET\"\n"
        + "[[route]]\nchannels = [\"chat\", \"audit\"]\n"
        + &target_toml("api", &target.url(), "");
    let env = vec![
        ("SLACK_URL", slack.slack_url()),
        ("HOOK_URL", hook.hook_url()),
        ("HOOK_SECRET", secret.to_string()),
    ];
    let edge = Edge::start(bin(), dir, addr, &config, env);
    target.set(Behaviour::Status(500));
    edge.wait_for("the down alert on both", Duration::from_secs(20), |_| {
        !slack.accepted().is_empty() && !hook.accepted().is_empty()
    });
    target.set(Behaviour::Ok);
    edge.wait_for("the recovery on both", Duration::from_secs(20), |_| {
        slack.accepted().len() == 2 && hook.accepted().len() == 2
    });
    let texts: Vec<String> = slack
        .accepted()
        .iter()
        .map(|m| {
            m["text"]
                .as_str()
                .unwrap()
                .lines()
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(texts, ["api: healthy → down", "api: down → healthy"]);
    let hooked = hook.accepted();
    assert_eq!(hooked[0]["title"], "api: healthy → down");
    assert_eq!(hooked[0]["severity"], "warning", "alert-only down");
    assert_eq!(hooked[1]["severity"], "info");
    assert_eq!(hooked[0]["subject"], "api");
    assert!(slack.refused().is_empty() && hook.refused().is_empty());
    // The receiver is strict: a wrong secret and an empty Slack text fail.
    let http = reqwest::blocking::Client::new();
    let body = hooked[0].to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut forged = http.post(hook.hook_url());
    for (name, value) in edge::shell::signature("not-the-secret-0123", now, &body) {
        forged = forged.header(name, value);
    }
    let res = forged.body(body).send().unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let res = http
        .post(slack.slack_url())
        .body("{\"text\": \"\"}")
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    std::thread::sleep(Duration::from_millis(900));
    assert_eq!(slack.accepted().len(), 2, "nothing twice");
    assert_eq!(hook.accepted().len(), 2, "nothing twice");
}

#[test]
fn an_unacked_page_escalates_once_at_the_right_time() {
    let discord = Discord::start();
    let target = TargetServer::start();
    target.set(Behaviour::Status(500));
    let (dir, addr) = Edge::prepare("escalate");
    let config = config_head(dir.path(), addr, 0.3, 0.1)
        + "[[escalation]]\nack_within_s = 1.5\nchannels = [\"discord\"]\nuser_id = \"777\"\n"
        + &format!(
            "[[target]]\nid = \"api\"\nurl = {:?}\nrole = \"remediate\"\nhost = \"vps1\"\nactions = [\"restart_api_core\"]\n",
            target.url()
        )
        + "[[host]]\nid = \"vps1\"\nurl_env = \"NO_SUCH_AGENT_URL\"\ntoken_env = \"NO_SUCH_AGENT_TOKEN\"\n";
    let edge = Edge::start(bin(), dir, addr, &config, discord_env(&discord));
    let mentions = |who: &str| {
        discord
            .accepted()
            .iter()
            .filter(|m| {
                m["content"]
                    .as_str()
                    .is_some_and(|c| c.starts_with(&format!("<@{who}>")))
            })
            .count()
    };
    edge.wait_for("the escalation", Duration::from_secs(30), |_| {
        mentions("777") == 1
    });
    let inc = edge.get("/ops/incidents?state=open")["incidents"][0].clone();
    let paged = inc["paged_at_ms"].as_u64().unwrap();
    let step = &inc["escalations"][0];
    assert_eq!(step["level"], 1, "{inc}");
    let after = step["at_ms"].as_u64().unwrap() - paged;
    assert!(after >= 1500, "escalated after {after} ms");
    assert!(after < 1500 + 5_000, "escalated after {after} ms");
    // A few more cycles: one level, paged once each.
    let cycles = |e: &Edge| e.get("/ops/incidents?state=open")["incidents"][0]["history"].clone();
    let before = cycles(&edge);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(mentions("777"), 1);
    assert_eq!(mentions("424242"), 1);
    assert_eq!(cycles(&edge), before, "still the same outage");
}

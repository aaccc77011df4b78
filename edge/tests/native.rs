//! The real `vigil-edge` binary against real local HTTP peers: targets that
//! fail in every way, a strict Discord webhook, a restart mid-incident, and
//! the API's auth and bad inputs.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vigil_testkit::discord::{Discord, Fail};
use vigil_testkit::edge::{
    config_head, Edge, CONTROL_TOKEN, CRASH_LOG_TOKEN, JOBS_TOKEN, READ_TOKEN,
};
use vigil_testkit::free_port;
use vigil_testkit::target::{Behaviour, TargetServer};

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
    let config = config_head(dir.path(), addr, 0.5, 0.2) + &target_toml("api", &target.url(), "");
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
        "{after}"
    );
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
    // Due at the next 02:30 in Berlin: 00:30 or 01:30 UTC, within a day.
    let due = nightly["next_due_ms"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(due > now - 60_000 && due <= now + 86_400_000, "{nightly}");
    assert!([30, 90].contains(&(due / 60_000 % 1440)), "{nightly}");
    let adhoc = &jobs[1];
    assert_eq!(
        (adhoc["id"].as_str(), adhoc["auto"].as_bool()),
        (Some("adhoc"), Some(true))
    );
    assert_eq!(adhoc["period_s"], 3600.0);
    assert_eq!(adhoc["state"], "healthy");
}

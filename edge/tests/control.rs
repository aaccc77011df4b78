//! The control API's changes to what is watched, on the real binary:
//! targets added, replaced and removed through `/ops/targets`, validated
//! like the file, stored across restarts, and every change in `/ops/audit`.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use vigil_testkit::edge::{
    config_head, listed_targets, ops_request, Edge, CONTROL_TOKEN, READ_TOKEN,
};
use vigil_testkit::target::{Behaviour, TargetServer};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_vigil-edge"))
}

fn send(
    edge: &Edge,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    who: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let url = format!("http://{}{path}", edge.addr);
    ops_request(
        &edge.http,
        method,
        url,
        token,
        who,
        body.map(str::to_string),
    )
}

fn post_target(edge: &Edge, who: &str, body: &Value) -> (u16, Value) {
    send(
        edge,
        reqwest::Method::POST,
        "/ops/targets",
        Some(CONTROL_TOKEN),
        Some(who),
        Some(&body.to_string()),
    )
}

fn delete_target(edge: &Edge, who: &str, id: &str) -> (u16, Value) {
    send(
        edge,
        reqwest::Method::DELETE,
        &format!("/ops/targets/{id}"),
        Some(CONTROL_TOKEN),
        Some(who),
        None,
    )
}

/// The effective targets as `(id, source, url)`.
fn listed(edge: &Edge) -> Vec<(String, String, String)> {
    listed_targets(&edge.get("/ops/targets"))
}

/// What `--check` says about the file `head` + `[[target]]` `toml`.
fn file_error(edge: &Edge, head: &str, toml: &str) -> String {
    let path = edge.dir.path().join("bad.toml");
    std::fs::write(&path, format!("{head}[[target]]\n{toml}")).unwrap();
    let out = std::process::Command::new(bin())
        .args(["--config", path.to_str().unwrap(), "--check"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{toml} should be refused");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn targets_are_added_replaced_and_removed_through_the_api_validated_like_the_file_and_kept() {
    let filed = TargetServer::start();
    let failing = TargetServer::start();
    failing.set(Behaviour::Status(500));
    let other = TargetServer::start();
    let (dir, addr) = Edge::prepare("api-targets");
    let head = config_head(dir.path(), addr, 0.3, 0.1)
        + "auth_fail_burst = 100\n[[host]]\nid = \"web\"\nurl_env = \"AGENT_URL\"\ntoken_env = \"AGENT_TOKEN\"\n";
    let config = head.clone() + &format!("[[target]]\nid = \"filed\"\nurl = {:?}\n", filed.url());
    let mut edge = Edge::start(bin(), dir, addr, &config, vec![]);
    let toml_path = edge.dir.path().join("edge.toml");
    let file_before = std::fs::read(&toml_path).unwrap();
    let start = listed(&edge);
    assert_eq!(start, [("filed".into(), "file".into(), filed.url())]);

    // Tokens: the read token lists, only the control token changes.
    let good = json!({"id": "added", "url": failing.url(), "body_contains": "ok"});
    let post = |token: Option<&str>| {
        send(
            &edge,
            reqwest::Method::POST,
            "/ops/targets",
            token,
            None,
            Some(&good.to_string()),
        )
        .0
    };
    assert_eq!(post(None), 401);
    assert_eq!(post(Some(READ_TOKEN)), 401);
    assert_eq!(post(Some("wrong-token-0123456789")), 401);
    let (s, _) = send(
        &edge,
        reqwest::Method::DELETE,
        "/ops/targets/filed",
        Some(READ_TOKEN),
        None,
        None,
    );
    assert_eq!(s, 401);
    let (s, _) = send(
        &edge,
        reqwest::Method::GET,
        "/ops/targets",
        None,
        None,
        None,
    );
    assert_eq!(s, 401);
    let (s, _) = send(&edge, reqwest::Method::GET, "/ops/audit", None, None, None);
    assert_eq!(s, 401);

    // Bad bodies: 400 naming the key, with the file's reason, nothing changed.
    let url = failing.url();
    let bad: Vec<(Value, &str, String)> = vec![
        (
            json!({"id": "Bad!", "url": url}),
            "target.id",
            format!("id = \"Bad!\"\nurl = {url:?}\n"),
        ),
        (
            json!({"id": "x", "url": "ftp://x"}),
            "target.url",
            "id = \"x\"\nurl = \"ftp://x\"\n".into(),
        ),
        (
            json!({"id": "x", "url": url, "method": "TRACE"}),
            "target.method",
            format!("id = \"x\"\nurl = {url:?}\nmethod = \"TRACE\"\n"),
        ),
        (
            json!({"id": "x", "url": url, "host": "nowhere"}),
            "target.host",
            format!("id = \"x\"\nurl = {url:?}\nhost = \"nowhere\"\n"),
        ),
        (
            json!({"id": "x", "url": url, "role": "remediate", "host": "web"}),
            "target.actions",
            format!("id = \"x\"\nurl = {url:?}\nrole = \"remediate\"\nhost = \"web\"\n"),
        ),
        (
            json!({"id": "x", "url": url, "depends_on": ["ghost"]}),
            "target.depends_on",
            format!("id = \"x\"\nurl = {url:?}\ndepends_on = [\"ghost\"]\n"),
        ),
        (
            json!({"id": "x", "url": url, "slo": 100}),
            "target.slo",
            format!("id = \"x\"\nurl = {url:?}\nslo = 100.0\n"),
        ),
        (
            json!({"id": "x", "url": url, "timeout_ms": 0}),
            "target.timeout_ms",
            format!("id = \"x\"\nurl = {url:?}\ntimeout_ms = 0\n"),
        ),
    ];
    for (body, key, toml) in &bad {
        let (status, answer) = post_target(&edge, "mallory", body);
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_target", "{answer}");
        assert_eq!(answer["error"]["key"], *key, "{body}: {answer}");
        let reason = answer["error"]["reason"].as_str().unwrap();
        // The same target in the file: the same reason, for target[1].<key>.
        let from_file = file_error(&edge, &config, toml);
        let file_key = key.replace("target.", "target[1].");
        assert!(
            from_file.contains(&format!("{file_key}: {reason}")),
            "API: {key}: {reason}\nfile: {from_file}"
        );
    }
    for (body, key) in [
        (json!({"id": "x", "urll": url}), "target.urll"),
        (json!({"id": "x"}), "target.url"),
        (
            json!({"id": "x", "url": url, "expect_status": "200"}),
            "target",
        ),
        (json!(["not", "an", "object"]), "target"),
    ] {
        let (status, answer) = post_target(&edge, "mallory", &body);
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["key"], key, "{body}: {answer}");
    }
    for raw in ["{not json", ""] {
        let (status, answer) = send(
            &edge,
            reqwest::Method::POST,
            "/ops/targets",
            Some(CONTROL_TOKEN),
            None,
            Some(raw),
        );
        assert_eq!(status, 400, "{raw:?}: {answer}");
        assert_eq!(answer["error"]["code"], "bad_body");
    }
    let huge = json!({"id": "x", "url": url, "body_contains": "a".repeat(100_000)});
    assert_eq!(post_target(&edge, "mallory", &huge).0, 413);
    assert_eq!(listed(&edge), start, "nothing changed");
    assert_eq!(
        edge.get("/ops/audit")["audit"],
        json!([]),
        "nothing changed"
    );

    // A failing API target opens an incident like a file target.
    let (status, answer) = post_target(&edge, "alice", &good);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["change"]["what"], "target.add");
    edge.wait_for("the API target's incident", Duration::from_secs(15), |e| {
        e.target_state("added") == "down"
    });
    let incident = edge.get("/ops/incidents?state=open")["incidents"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Replacing the file's target (the default rule: the API's wins).
    let replace = json!({"id": "filed", "url": other.url()});
    let (status, answer) = post_target(&edge, "alice", &replace);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["change"]["what"], "target.replace");
    edge.wait_for("the replacement probed", Duration::from_secs(15), |_| {
        !other.seen().is_empty()
    });
    let listing = edge.get("/ops/targets");
    let by_id = |id: &str| {
        listing["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_id("filed")["source"], "api");
    assert_eq!(by_id("filed")["replaces_file_target"], true);
    assert_eq!(by_id("filed")["url"], other.url());
    assert_eq!(by_id("added")["added_by"], "alice");
    assert_eq!(by_id("added")["target"], good);

    // Kept across a restart (SIGKILL), in the store, not in the file.
    edge.kill();
    edge.restart();
    assert_eq!(
        listed(&edge),
        [
            ("filed".to_string(), "api".to_string(), other.url()),
            ("added".to_string(), "api".to_string(), failing.url()),
        ]
    );
    assert_eq!(
        std::fs::read(&toml_path).unwrap(),
        file_before,
        "the operator's file is untouched"
    );
    let open = edge.get("/ops/incidents?state=open");
    assert_eq!(open["incidents"][0]["id"], incident.as_str(), "{open}");

    // Removal: the open incident is resolved with the reason.
    let (status, answer) = delete_target(&edge, "bob", "added");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["change"]["resolved"], incident.as_str());
    let inc = edge.get(&format!("/ops/incidents/{incident}"));
    assert_eq!(inc["resolution"], "target removed through the API by bob");
    assert!(inc["resolved_at_ms"].is_u64());
    // The file's target comes back when its replacement is removed.
    assert_eq!(delete_target(&edge, "bob", "filed").0, 200);
    assert_eq!(listed(&edge), start);
    let (status, answer) = delete_target(&edge, "bob", "filed");
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (409, json!("file_target"))
    );
    let (status, answer) = delete_target(&edge, "bob", "ghost");
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (404, json!("unknown_target"))
    );

    // The audit: who, what, when, newest first; refusals change nothing.
    let audit = edge.get("/ops/audit")["audit"].clone();
    let rows: Vec<(String, String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert!(a["at_ms"].as_u64().unwrap() > 1_600_000_000_000);
            (
                a["who"].as_str().unwrap().into(),
                a["what"].as_str().unwrap().into(),
                a["subject"].as_str().unwrap().into(),
            )
        })
        .collect();
    let row = |w: &str, what: &str, s: &str| (w.to_string(), what.to_string(), s.to_string());
    assert_eq!(
        rows,
        [
            row("bob", "target.remove", "filed"),
            row("bob", "target.remove", "added"),
            row("alice", "target.replace", "filed"),
            row("alice", "target.add", "added"),
        ]
    );
    assert_eq!(
        audit[1]["detail"],
        format!("resolved incident {incident}").as_str()
    );
    // Kept across a restart too.
    edge.kill();
    edge.restart();
    assert_eq!(edge.get("/ops/audit")["audit"], audit);
    assert_eq!(listed(&edge), start);
}

#[test]
fn with_file_targets_win_the_file_keeps_its_targets_and_an_api_target_needing_another_stays() {
    let up = TargetServer::start();
    let (dir, addr) = Edge::prepare("file-wins");
    let config = config_head(dir.path(), addr, 0.3, 0.1)
        + "file_targets_win = true\n"
        + &format!("[[target]]\nid = \"filed\"\nurl = {:?}\n", up.url());
    let edge = Edge::start(bin(), dir, addr, &config, vec![]);
    let (status, answer) = post_target(
        &edge,
        "alice",
        &json!({"id": "filed", "url": "http://127.0.0.1:9/"}),
    );
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "file_target");
    assert_eq!(listed(&edge), [("filed".into(), "file".into(), up.url())]);
    // An API target another depends on cannot be removed from under it.
    assert_eq!(
        post_target(&edge, "alice", &json!({"id": "db", "url": up.url()})).0,
        200
    );
    assert_eq!(
        post_target(
            &edge,
            "alice",
            &json!({"id": "app", "url": up.url(), "depends_on": ["db"]})
        )
        .0,
        200
    );
    let (status, answer) = delete_target(&edge, "bob", "db");
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"].as_str().unwrap().contains("app"),
        "{answer}"
    );
    assert_eq!(listed(&edge).len(), 3);
    assert_eq!(edge.get("/ops/audit")["audit"].as_array().unwrap().len(), 2);
}

/// Runbooks on an edge whose agent cannot be reached (an approved run's
/// steps fail there; what matters here is the approval): unknown ids,
/// tokens, a second decision, one after the expiry, concurrent approve and
/// deny (exactly one wins), and a pending approval kept across a restart.
#[test]
fn runbook_approvals_are_decided_once_before_their_expiry() {
    let (dir, addr) = Edge::prepare("runbooks");
    let agent = format!("http://127.0.0.1:{}", vigil_testkit::free_port());
    let config = config_head(dir.path(), addr, 0.3, 0.1)
        + "auth_fail_burst = 100\n[[host]]\nid = \"web\"\nurl_env = \"AGENT_URL\"\ntoken_env = \"AGENT_TOKEN\"\n"
        + "[[runbook]]\nid = \"fix\"\nhost = \"web\"\nsteps = [\"restart_gateway\", \"reload_nginx\"]\nexpires_s = 600\n"
        + "[[runbook]]\nid = \"brief\"\nhost = \"web\"\nsteps = [\"restart_gateway\"]\nexpires_s = 1\n";
    let env = vec![
        ("AGENT_URL", agent),
        ("AGENT_TOKEN", "agent-token-0123456789abcdef".to_string()),
    ];
    let mut edge = Edge::start(bin(), dir, addr, &config, env);
    fn post_as(edge: &Edge, path: &str, token: Option<&str>, who: &str) -> (u16, Value) {
        send(edge, reqwest::Method::POST, path, token, Some(who), None)
    }
    let post = |path: &str, token: Option<&str>, who: &str| post_as(&edge, path, token, who);
    assert_eq!(post("/ops/runbook/fix/execute", None, "x").0, 401);
    assert_eq!(
        post("/ops/runbook/fix/execute", Some(READ_TOKEN), "x").0,
        401
    );
    let (status, body) = post("/ops/runbook/nope/execute", Some(CONTROL_TOKEN), "eve");
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("unknown_runbook"))
    );
    let audit = edge.get("/ops/audit")["audit"].clone();
    assert_eq!(
        audit[0]["what"], "runbook.unknown",
        "the refusal is recorded: {audit}"
    );
    assert_eq!(audit[0]["who"], "eve");
    assert_eq!(
        post("/ops/approvals/run-1-x/approve", Some(CONTROL_TOKEN), "bob").0,
        404
    );

    // Concurrent approve and deny of the same request: exactly one wins.
    for _ in 0..5 {
        let (status, body) = post("/ops/runbook/fix/execute", Some(CONTROL_TOKEN), "alice");
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["run"]["status"], "awaiting_approval");
        let id = body["run"]["id"].as_str().unwrap().to_string();
        let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
            let a = s.spawn(|| {
                post(
                    &format!("/ops/approvals/{id}/approve"),
                    Some(CONTROL_TOKEN),
                    "bob",
                )
            });
            let d = s.spawn(|| {
                post(
                    &format!("/ops/approvals/{id}/deny"),
                    Some(CONTROL_TOKEN),
                    "carol",
                )
            });
            vec![a.join().unwrap(), d.join().unwrap()]
        });
        let won: Vec<_> = answers.iter().filter(|(s, _)| *s == 200).collect();
        let lost: Vec<_> = answers.iter().filter(|(s, _)| *s == 409).collect();
        assert_eq!((won.len(), lost.len()), (1, 1), "{answers:?}");
        assert_eq!(lost[0].1["error"]["code"], "already_decided");
        // A second decision of any kind changes nothing.
        let (status, _) = post(
            &format!("/ops/approvals/{id}/approve"),
            Some(CONTROL_TOKEN),
            "dave",
        );
        assert_eq!(status, 409);
        let run = &edge.get("/ops/approvals")["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id.as_str())
            .cloned()
            .unwrap();
        let winner = if won[0].1["run"]["status"] == "approved" {
            "bob"
        } else {
            "carol"
        };
        assert_eq!(run["decided_by"], winner, "{run}");
    }
    assert_eq!(
        post("/ops/approvals/x/maybe", Some(CONTROL_TOKEN), "bob").0,
        404
    );

    // An approval after the expiry: 410, recorded as expired, never run.
    let (_, body) = post("/ops/runbook/brief/execute", Some(CONTROL_TOKEN), "alice");
    let late = body["run"]["id"].as_str().unwrap().to_string();
    let expires = body["run"]["expires_at_ms"].as_u64().unwrap();
    assert!(vigil_testkit::eventually(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            > expires
    ));
    let (status, body) = post(
        &format!("/ops/approvals/{late}/approve"),
        Some(CONTROL_TOKEN),
        "bob",
    );
    assert!(
        status == 410
            || (status == 409
                && body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("expired")),
        "{status} {body}"
    );
    let run_of = |e: &Edge, id: &str| {
        e.get("/ops/approvals")["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap()
    };
    let run = run_of(&edge, &late);
    assert_eq!(run["status"], "expired");
    assert_eq!(run["steps_run"], json!([]), "an expired request never runs");
    let inc = edge.get(&format!(
        "/ops/incidents/{}",
        run["incident"].as_str().unwrap()
    ));
    assert_eq!(
        inc["resolution"],
        "runbook brief: the approval expired; nothing ran"
    );

    // A pending approval survives a restart and is still decided once.
    let (_, body) = post("/ops/runbook/fix/execute", Some(CONTROL_TOKEN), "alice");
    let pending = body["run"]["id"].as_str().unwrap().to_string();
    edge.kill();
    edge.restart();
    let post = |path: &str, token: Option<&str>, who: &str| post_as(&edge, path, token, who);
    assert_eq!(run_of(&edge, &pending)["status"], "awaiting_approval");
    let (status, body) = post(
        &format!("/ops/approvals/{pending}/deny"),
        Some(CONTROL_TOKEN),
        "carol",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(run_of(&edge, &pending)["steps_run"], json!([]));
    // An approved run goes to the agent (here unreachable: the first step
    // fails and the rest never runs).
    let (_, body) = post("/ops/runbook/fix/execute", Some(CONTROL_TOKEN), "alice");
    let approved = body["run"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        post(
            &format!("/ops/approvals/{approved}/approve"),
            Some(CONTROL_TOKEN),
            "bob"
        )
        .0,
        200
    );
    edge.wait_for("the failed step", Duration::from_secs(20), |e| {
        run_of(e, &approved)["status"] == "failed"
    });
    let run = run_of(&edge, &approved);
    assert_eq!(run["steps_run"].as_array().unwrap().len(), 1, "{run}");
    assert_eq!(run["steps_run"][0]["action"], "restart_gateway");
    assert!(run["steps_run"][0]["error"].is_string(), "{run}");
}

/// An automation receiver written from README's "Automation webhooks":
/// checks `X-Vigil-Signature: sha256=<hex HMAC-SHA256(secret,
/// "<X-Vigil-Timestamp>.<raw body>")>` and a timestamp within 5 minutes;
/// answers 503 to its first delivery (to see the retry keep `event_id`), 204
/// to good ones, 401 to bad ones. Listens only once `start` is called, on
/// the port it was given (down until then: connections refused).
struct Receiver {
    port: u16,
    secret: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<(u16, Value)>>>,
}

impl Receiver {
    fn start(&self) {
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        let (secret, got) = (self.secret.clone(), self.got.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let answer = Self::answer(&secret, &got, &stream);
                let mut s = &stream;
                let _ = std::io::Write::write_all(
                    &mut s,
                    format!(
                        "HTTP/1.1 {answer} x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                );
            }
        });
    }

    fn answer(
        secret: &str,
        got: &std::sync::Mutex<Vec<(u16, Value)>>,
        stream: &std::net::TcpStream,
    ) -> u16 {
        use hmac::{Hmac, Mac};
        use std::io::{BufRead, Read};
        let mut r = std::io::BufReader::new(stream);
        let mut headers = std::collections::HashMap::new();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers["content-length"].parse().unwrap();
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        let body = String::from_utf8(body).unwrap();
        let timestamp = headers
            .get("x-vigil-timestamp")
            .cloned()
            .unwrap_or_default();
        let signature = headers
            .get("x-vigil-signature")
            .cloned()
            .unwrap_or_default();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{timestamp}.{body}").as_bytes());
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let fresh = timestamp
            .parse::<u64>()
            .is_ok_and(|t| t.abs_diff(now) < 300_000);
        let mut got = got.lock().unwrap();
        let status = match (signature == expected && fresh, got.is_empty()) {
            (false, _) => 401,
            (true, true) => 503,
            (true, false) => 204,
        };
        got.push((status, serde_json::from_str(&body).unwrap()));
        status
    }
}

#[test]
fn automation_webhooks_are_signed_kept_while_the_receiver_is_down_and_delivered_in_order() {
    let target = TargetServer::start();
    let receiver = Receiver {
        port: vigil_testkit::free_port(),
        secret: "automation-secret-0123456789".into(),
        got: Default::default(),
    };
    let (dir, addr) = Edge::prepare("automation");
    let config = config_head(dir.path(), addr, 0.3, 0.1)
        + "[[host]]\nid = \"web\"\nurl_env = \"AGENT_URL\"\ntoken_env = \"AGENT_TOKEN\"\n"
        + "[[runbook]]\nid = \"fix\"\nhost = \"web\"\nsteps = [\"restart_gateway\"]\n"
        + "[[webhook]]\nurl_env = \"AUTOMATION_URL\"\nsecret_env = \"AUTOMATION_SECRET\"\nevents = [\"transition\", \"approval_request\", \"approval_outcome\"]\n"
        + &format!("[[target]]\nid = \"api\"\nurl = {:?}\nbody_contains = \"ok\"\n", target.url());
    let env = vec![
        (
            "AGENT_URL",
            format!("http://127.0.0.1:{}", vigil_testkit::free_port()),
        ),
        ("AGENT_TOKEN", "agent-token-0123456789abcdef".to_string()),
        (
            "AUTOMATION_URL",
            format!("http://127.0.0.1:{}/hook", receiver.port),
        ),
        ("AUTOMATION_SECRET", receiver.secret.clone()),
    ];
    let edge = Edge::start(bin(), dir, addr, &config, env);
    // While the receiver is down: a transition, an approval request and its
    // outcome, the recovery.
    target.set(Behaviour::Status(500));
    edge.wait_for("the incident", Duration::from_secs(15), |e| {
        e.target_state("api") == "down"
    });
    let (status, body) = send(
        &edge,
        reqwest::Method::POST,
        "/ops/runbook/fix/execute",
        Some(CONTROL_TOKEN),
        Some("alice"),
        None,
    );
    assert_eq!(status, 202, "{body}");
    let run = body["run"]["id"].as_str().unwrap().to_string();
    let (status, _) = send(
        &edge,
        reqwest::Method::POST,
        &format!("/ops/approvals/{run}/deny"),
        Some(CONTROL_TOKEN),
        Some("bob"),
        None,
    );
    assert_eq!(status, 200);
    target.set(Behaviour::Ok);
    edge.wait_for("the recovery", Duration::from_secs(15), |e| {
        e.target_state("api") == "healthy"
    });
    assert!(receiver.got.lock().unwrap().is_empty());
    receiver.start();
    edge.wait_for("every event delivered", Duration::from_secs(60), |_| {
        receiver
            .got
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| *s == 204)
            .count()
            >= 4
    });
    let got = receiver.got.lock().unwrap().clone();
    assert!(
        got.iter().all(|(s, _)| *s != 401),
        "every signature verifies: {got:?}"
    );
    assert_eq!(got[0].0, 503);
    assert_eq!(
        got[1].1["event_id"], got[0].1["event_id"],
        "a retry keeps its event_id"
    );
    let delivered: Vec<(String, String)> = got
        .iter()
        .filter(|(s, _)| *s == 204)
        .map(|(_, v)| {
            (
                v["type"].as_str().unwrap().to_string(),
                v["title"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        delivered,
        [
            ("transition".to_string(), "api: healthy → down".to_string()),
            (
                "approval_request".to_string(),
                "Runbook fix on web awaits approval".to_string()
            ),
            (
                "approval_outcome".to_string(),
                "Runbook fix on web: denied".to_string()
            ),
            ("transition".to_string(), "api: down → healthy".to_string()),
        ],
        "nothing lost, in order"
    );
    let ids: std::collections::BTreeSet<_> = got
        .iter()
        .filter(|(s, _)| *s == 204)
        .map(|(_, v)| v["event_id"].to_string())
        .collect();
    assert_eq!(ids.len(), 4, "one event_id per event");
}

//! Runbooks with approval in the Worker (workerd, `VIGIL_TEST_STORE` picks
//! the store), on the real ops-agent and Docker: the routes' good and bad
//! inputs, the approval request and outcome in Discord and a signed
//! `[[webhook]]`, denied and expired requests that reach no agent (its
//! audit log stays empty), approved steps run by the cron in order with
//! re-probes, and concurrent approve and deny with exactly one winner.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vigil_testkit::docker_or_skip;
use vigil_testkit::edge::{CONTROL_TOKEN, READ_TOKEN};
use vigil_testkit::pair::{find_run, Options, Pair};
use vigil_testkit::target::{Behaviour, TargetServer};
use vigil_testkit::webhooks::Hook;
use vigil_testkit::wrangler::{worker_or_skip, Wrangler};

const HOOK_SECRET: &str = "hook-secret-0123456789abcdef0123";

fn post(w: &Wrangler, path: &str, token: Option<&str>, who: &str) -> (u16, Value) {
    let mut req = w.http.post(w.url(path)).header("X-Vigil-Operator", who);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().expect("POST");
    let status = res.status().as_u16();
    (status, res.json().unwrap_or(Value::Null))
}

fn run(w: &Wrangler, id: &str) -> Value {
    let (status, body) = w.get_json("/ops/approvals", Some(READ_TOKEN));
    assert_eq!(status, 200, "{body}");
    find_run(&body, id)
}

/// `POST /ops/approvals/{id}/{verb}` by `who`, with the control token.
fn decide(w: &Wrangler, id: &str, verb: &str, who: &str) -> (u16, Value) {
    let path = format!("/ops/approvals/{id}/{verb}");
    post(w, &path, Some(CONTROL_TOKEN), who)
}

fn execute(w: &Wrangler, runbook: &str) -> String {
    let (status, body) = post(
        w,
        &format!("/ops/runbook/{runbook}/execute"),
        Some(CONTROL_TOKEN),
        "alice",
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["run"]["status"], "awaiting_approval", "{body}");
    body["run"]["id"].as_str().unwrap().to_string()
}

/// Runs cron cycles until `done` holds (at most `secs` seconds).
fn cycles_until(w: &Wrangler, what: &str, secs: u64, done: impl Fn(&Wrangler) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done(w) {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {secs} s\n{}",
            w.logs()
        );
        w.scheduled();
    }
}

/// The audit view's page of incident `id`, signed in with the read token.
fn audit_view(w: &Wrangler, id: &str) -> String {
    let cookie = w.ui_sign_in(READ_TOKEN);
    let session = cookie.split(';').next().unwrap().to_string();
    let page = w
        .http
        .get(w.url(&format!("/ui/incidents/{id}")))
        .header("cookie", session)
        .send()
        .unwrap();
    assert_eq!(page.status(), 200);
    page.text().unwrap()
}

/// Whether the webhook received an event of `kind` titled `title`.
fn hooked(hook: &Hook, kind: &str, title: &str) -> bool {
    hook.accepted()
        .iter()
        .any(|e| e["type"] == kind && e["title"] == title)
}

/// The agent, its containers and Discord, without a native edge.
fn pair(name: &str, o: Options) -> Pair {
    Pair::start(
        name,
        Options {
            native_edge: false,
            ..o
        },
    )
}

/// The Worker for `p`'s configuration (a cycle a minute), with `extra`
/// variables, after its first cycle.
fn worker<const N: usize>(p: &Pair, extra: [(&str, String); N]) -> Wrangler {
    let config = p.edge_config.replace("interval_s = 1", "interval_s = 60");
    let mut vars = vec![
        ("VIGIL_CONFIG".to_string(), config),
        ("OPS_READ_TOKEN".to_string(), READ_TOKEN.to_string()),
        ("CONTROL_TOKEN".to_string(), CONTROL_TOKEN.to_string()),
    ];
    let env = p.edge_env.iter().map(|(k, v)| (*k, v.clone()));
    vars.extend(env.chain(extra).map(|(k, v)| (k.to_string(), v)));
    let w = Wrangler::start(vars);
    w.scheduled();
    w
}

#[test]
fn runbooks_wait_for_approval_and_run_in_order_in_the_worker() {
    if !worker_or_skip() || !docker_or_skip() {
        return;
    }
    let hook = Hook::signed(HOOK_SECRET);
    // Asked before every write (`VIGIL_TEST_FAIL_WRITES`): slowed down below
    // so that concurrent decisions overlap between their read and write.
    let writes = TargetServer::start();
    let p = pair(
        "vwrb",
        Options {
            with_gateway: true,
            config: "[[runbook]]\nid = \"web\"\nhost = \"vps1\"\nsteps = [\"restart_gateway\", \"restart_api_core\"]\nexpires_s = 600\n\
                     [[runbook]]\nid = \"hasty\"\nhost = \"vps1\"\nsteps = [\"restart_gateway\"]\nexpires_s = 1\n\
                     [[webhook]]\nurl_env = \"HOOK_URL\"\nsecret_env = \"HOOK_SECRET\"\nevents = [\"approval_request\", \"approval_outcome\", \"runbook\"]\n"
                .into(),
            ..Options::default()
        },
    );
    let w = worker(
        &p,
        [
            ("HOOK_URL", hook.hook_url()),
            ("HOOK_SECRET", HOOK_SECRET.to_string()),
            ("VIGIL_TEST_FAIL_WRITES", writes.url()),
        ],
    );

    // Tokens: none, wrong, or the read token on a control route.
    let wrong = "wrong-token-0123456789abcdef";
    for token in [None, Some(wrong), Some(READ_TOKEN)] {
        for path in ["/ops/runbook/web/execute", "/ops/approvals/run-1/approve"] {
            assert_eq!(post(&w, path, token, "eve").0, 401, "{path} {token:?}");
        }
    }
    assert_eq!(w.get_json("/ops/approvals", None).0, 401);
    assert_eq!(w.get_json("/ops/approvals", Some(wrong)).0, 401);
    // Unknown ids and verbs.
    let (status, body) = post(&w, "/ops/runbook/nope/execute", Some(CONTROL_TOKEN), "eve");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_runbook")),
        "{body}"
    );
    let (status, body) = post(
        &w,
        "/ops/approvals/run-9-x/approve",
        Some(CONTROL_TOKEN),
        "eve",
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_approval")),
        "{body}"
    );
    assert_eq!(
        w.get_json("/ops/approvals", Some(READ_TOKEN)).1,
        json!({"runs": []})
    );

    // Denied: nothing runs, and a second decision is refused.
    let denied = execute(&w, "web");
    let (status, body) = decide(&w, &denied, "maybe", "bob");
    assert_eq!(status, 404, "{body}");
    cycles_until(&w, "the approval request in Discord", 60, |_| {
        p.discord
            .titles()
            .iter()
            .any(|t| t == "Runbook web on vps1 awaits approval")
    });
    assert!(
        hooked(
            &hook,
            "approval_request",
            "Runbook web on vps1 awaits approval"
        ),
        "{:?}",
        hook.accepted()
    );
    assert!(hook.refused().is_empty(), "{:?}", hook.refused());
    let (status, body) = decide(&w, &denied, "deny", "bob");
    assert_eq!(
        (status, body["run"]["status"].as_str()),
        (200, Some("denied")),
        "{body}"
    );
    let (status, body) = decide(&w, &denied, "approve", "mallory");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_decided")),
        "{body}"
    );

    // Expired: a late approval is refused and recorded, never run; one left
    // alone is expired by the cron.
    let late = execute(&w, "hasty");
    let quiet = execute(&w, "hasty");
    let expires = run(&w, &late)["expires_at_ms"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    while now_ms() <= expires + 50 {
        assert!(
            Instant::now() < deadline,
            "the clock did not pass the expiry"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = decide(&w, &late, "approve", "bob");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (410, Some("expired")),
        "{body}"
    );
    assert_eq!(run(&w, &late)["status"], "expired");
    cycles_until(&w, "the cron's expiry", 60, |w| {
        run(w, &quiet)["status"] == "expired"
    });
    cycles_until(&w, "the outcomes in Discord", 60, |_| {
        let titles = p.discord.titles();
        titles.iter().any(|t| t == "Runbook web on vps1: denied")
            && titles.iter().any(|t| t == "Runbook hasty on vps1: expired")
    });
    assert!(
        hooked(&hook, "approval_outcome", "Runbook web on vps1: denied"),
        "{:?}",
        hook.accepted()
    );
    w.scheduled();
    assert!(
        p.audit().is_empty(),
        "denied and expired runs reach no agent: {:?}",
        p.audit()
    );
    assert_eq!(p.restarts(&p.gateway.as_ref().unwrap().0), 0);
    assert_eq!(p.restarts(&p.api), 0);

    // Approved: the cron runs the steps in order, each with a re-probe.
    let approved = execute(&w, "web");
    let (status, body) = decide(&w, &approved, "approve", "bob");
    assert_eq!(
        (status, body["run"]["status"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    // A run that cannot be stored as started sends nothing.
    writes.set(Behaviour::Status(503));
    assert_eq!(w.trigger(), 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    let failed = |l: &str| l.contains("vigil cycle failed") && l.contains("could not be stored");
    while !w.logs().lines().any(failed) {
        assert!(Instant::now() < deadline, "no failed cycle\n{}", w.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        p.audit().is_empty(),
        "an unstored run reached the agent: {:?}",
        p.audit()
    );
    assert_eq!(run(&w, &approved)["steps_run"], json!([]));
    writes.set(Behaviour::Ok);
    cycles_until(&w, "the run to succeed", 120, |w| {
        run(w, &approved)["status"] == "succeeded"
    });
    let r = run(&w, &approved);
    let gateway = &p.gateway.as_ref().unwrap().0;
    assert_eq!((p.restarts(gateway), p.restarts(&p.api)), (1, 1));
    // The agent's audit log too: exactly these two, in order, one at a time.
    p.assert_run(
        &r,
        &["restart_gateway", "restart_api_core"],
        &["api", "gateway"],
    );
    let (_, inc) = w.get_json(
        &format!("/ops/incidents/{}", r["incident"].as_str().unwrap()),
        Some(READ_TOKEN),
    );
    assert_eq!(inc["runbook"]["decided_by"], "bob");
    assert_eq!(
        inc["runbook"]["steps_run"][1]["reprobes"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{inc}"
    );
    assert_eq!(
        inc["resolution"],
        "runbook web: every step ran (restart_gateway → restart_api_core)"
    );
    // The audit view's timeline has the run: request, approval, steps.
    let page = audit_view(&w, r["incident"].as_str().unwrap());
    for line in [
        "Runbook <code>web</code> (restart_gateway → restart_api_core) on vps1 requested by alice",
        "<strong>Approved</strong> by bob",
        "Step <code>restart_gateway</code>: ok in",
        "Step <code>restart_api_core</code>: ok in",
        "<p>Re-probe of gateway: healthy",
    ] {
        assert!(page.contains(line), "{line:?} not in:\n{page}");
    }
    cycles_until(&w, "the outcome in Discord and the webhook", 60, |_| {
        hooked(&hook, "runbook", "Runbook web on vps1: succeeded")
    });
    assert!(p
        .discord
        .titles()
        .iter()
        .any(|t| t == "Runbook web on vps1: approved by bob"));

    // Concurrent approves and denies, each write held 300 ms: exactly one
    // wins, the others are 409.
    let contested = execute(&w, "web");
    writes.set(Behaviour::Slow(Duration::from_millis(300)));
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = ["approve", "deny"]
            .iter()
            .cycle()
            .take(8)
            .map(|verb| {
                let (w, contested) = (&w, &contested);
                s.spawn(move || decide(w, contested, verb, verb))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won: Vec<&(u16, Value)> = answers.iter().filter(|a| a.0 == 200).collect();
    assert_eq!(won.len(), 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| a.0 == 200 || a.1["error"]["code"] == "already_decided"),
        "{answers:?}"
    );
    assert_eq!(
        run(&w, &contested)["status"],
        won[0].1["run"]["status"],
        "{answers:?}"
    );
}

/// The ladder's last rung needs approval (`restart_all`, actions.toml): the
/// Worker's round never runs it, it proposes it on the incident; approved,
/// the cron runs it as a step with a re-probe.
#[test]
fn the_ladder_proposes_an_action_needing_approval_in_the_worker() {
    if !worker_or_skip() || !docker_or_skip() {
        return;
    }
    let p = pair(
        "vwrp",
        Options {
            config: "max_remediation_rounds = 1".into(),
            ladder: vec!["restart_all"],
            ..Options::default()
        },
    );
    let w = worker(&p, []);
    p.fault(p.api_port, "/break-disk");
    let proposal = || {
        let (_, list) = w.get_json("/ops/approvals", Some(READ_TOKEN));
        list["runs"][0].clone()
    };
    cycles_until(&w, "the proposal", 60, |_| {
        proposal()["status"] == "awaiting_approval"
    });
    let run = proposal();
    assert_eq!(run["proposed_for"], "api", "{run}");
    assert_eq!(run["steps"], json!(["restart_all"]));
    cycles_until(&w, "the proposal in Discord", 60, |_| {
        p.discord
            .titles()
            .contains(&"restart_all on vps1 for api awaits approval".to_string())
    });
    assert!(
        p.audit().is_empty(),
        "the ladder ran an action needing approval: {:?}",
        p.audit()
    );
    let id = run["id"].as_str().unwrap();
    let (status, body) = decide(&w, id, "approve", "bob");
    assert_eq!(status, 200, "{body}");
    cycles_until(&w, "the approved action", 120, |_| {
        proposal()["status"] == "succeeded"
    });
    assert_eq!(p.actions_done(), ["restart_all:ok"]);
    assert_eq!(proposal()["steps_run"][0]["reprobes"][0]["target"], "api");
}

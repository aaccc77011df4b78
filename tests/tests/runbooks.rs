//! A runbook end to end on the real agent and Docker: a denied and an
//! expired request run nothing (the agent's audit log stays empty and the
//! daemon sees no restart); an approved one runs its steps in order, one at
//! a time, with re-probes after each; a runbook whose step the agent does
//! not list is refused at start.

use std::time::Duration;

use serde_json::Value;
use vigil_testkit::docker_or_skip;
use vigil_testkit::edge::CONTROL_TOKEN;
use vigil_testkit::pair::{find_run, Options, Pair};

fn post(p: &Pair, path: &str, who: &str) -> (u16, Value) {
    let res = p
        .edge()
        .http
        .post(format!("http://{}{path}", p.edge().addr))
        .bearer_auth(CONTROL_TOKEN)
        .header("X-Vigil-Operator", who)
        .send()
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().unwrap_or(Value::Null))
}

fn run(p: &Pair, id: &str) -> Value {
    find_run(&p.edge().get("/ops/approvals"), id)
}

fn execute(p: &Pair, runbook: &str) -> String {
    let (status, body) = post(p, &format!("/ops/runbook/{runbook}/execute"), "alice");
    assert_eq!(status, 202, "{body}");
    body["run"]["id"].as_str().unwrap().to_string()
}

#[test]
fn a_runbook_runs_only_when_approved_in_order_with_reprobes() {
    if !docker_or_skip() {
        return;
    }
    let p = Pair::start(
        "vrb1",
        Options {
            with_gateway: true,
            config: "[[runbook]]\nid = \"web\"\nhost = \"vps1\"\nsteps = [\"restart_gateway\", \"restart_api_core\"]\nexpires_s = 600\n\
                     [[runbook]]\nid = \"hasty\"\nhost = \"vps1\"\nsteps = [\"restart_gateway\"]\nexpires_s = 2\n"
                .into(),
            ..Options::default()
        },
    );
    // Denied: nothing runs.
    let denied = execute(&p, "web");
    p.wait("the approval request in Discord", 20, |p| {
        p.discord
            .titles()
            .iter()
            .any(|t| t == "Runbook web on vps1 awaits approval")
    });
    assert_eq!(
        post(&p, &format!("/ops/approvals/{denied}/deny"), "bob").0,
        200
    );
    assert_eq!(
        post(&p, &format!("/ops/approvals/{denied}/approve"), "mallory").0,
        409
    );
    // Expired: nothing runs, and a late approval is refused.
    let expired = execute(&p, "hasty");
    p.wait("the expiry", 20, |p| {
        run(p, &expired)["status"] == "expired"
    });
    let (status, body) = post(&p, &format!("/ops/approvals/{expired}/approve"), "bob");
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));
    // Give a wrongly started run every chance to reach the agent.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        p.audit().is_empty(),
        "denied and expired runs reach no agent: {:?}",
        p.audit()
    );
    assert_eq!(p.restarts(&p.api), 0);
    assert_eq!(p.restarts(&p.gateway.as_ref().unwrap().0), 0);

    // Approved: the steps run in order, each with a re-probe.
    let approved = execute(&p, "web");
    assert_eq!(
        post(&p, &format!("/ops/approvals/{approved}/approve"), "bob").0,
        200
    );
    p.wait("the run to succeed", 90, |p| {
        run(p, &approved)["status"] == "succeeded"
    });
    let r = run(&p, &approved);
    // The agent's audit log too: exactly these two, in order, one at a time.
    p.assert_run(
        &r,
        &["restart_gateway", "restart_api_core"],
        &["api", "gateway"],
    );
    assert_eq!(p.restarts(&p.gateway.as_ref().unwrap().0), 1);
    assert_eq!(p.restarts(&p.api), 1);
    let inc = p.edge().get(&format!(
        "/ops/incidents/{}",
        r["incident"].as_str().unwrap()
    ));
    assert_eq!(inc["runbook"]["decided_by"], "bob");
    assert_eq!(
        inc["resolution"],
        "runbook web: every step ran (restart_gateway → restart_api_core)"
    );
    let audit: Vec<String> = p.edge().get("/ops/audit")["audit"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|a| {
            format!(
                "{} {} {}",
                a["who"].as_str().unwrap(),
                a["what"].as_str().unwrap(),
                a["subject"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        audit,
        [
            "alice runbook.execute web".to_string(),
            format!("bob approval.deny {denied}"),
            "alice runbook.execute hasty".to_string(),
            format!("vigil approval.expire {expired}"),
            "alice runbook.execute web".to_string(),
            format!("bob approval.approve {approved}"),
        ]
    );

    // A runbook whose step the agent does not list: refused at start.
    let bad = p.edge_config.replace(
        "steps = [\"restart_gateway\"]",
        "steps = [\"restart_gateway\", \"rm_everything\"]",
    );
    let path = p.agent_dir.path().join("bad-edge.toml");
    std::fs::write(&path, bad).unwrap();
    let out = std::process::Command::new(vigil_testkit::bin_path("vigil-edge"))
        .args(["--config", path.to_str().unwrap()])
        .envs(p.edge_env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("CONTROL_TOKEN", CONTROL_TOKEN)
        .env("OPS_READ_TOKEN", vigil_testkit::edge::READ_TOKEN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("runbook[1].steps: \"rm_everything\" is not allowlisted on host \"vps1\""),
        "{err}"
    );
}

//! The pages people look at, over a real incident with a real remediation
//! round (real ops-agent, real containers, a scripted model): the audit view
//! through Chromium shows the model's output and a container's hostile log
//! line as text, and the status page shows the outage and the recovery. The
//! same status page and audit view from the Worker in workerd.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use vigil_testkit::edge::{CONTROL_TOKEN, READ_TOKEN};
use vigil_testkit::observer::{browse, Browser};
use vigil_testkit::openai::Reply;
use vigil_testkit::pair::{Options, Pair};
use vigil_testkit::target::{Behaviour, TargetServer};
use vigil_testkit::wrangler::{worker_or_skip, Wrangler};
use vigil_testkit::{docker_or_skip, eventually};

/// Were it markup, it would change the page's title.
const HOSTILE: &str = "<script>document.title='pwned'</script>";

/// A request whose request line (which the stand-in logs) carries a script
/// tag; raw, so nothing percent-encodes it.
fn log_hostile_line(port: u16) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    // One write: `write!` sends each piece of the format on its own, and on
    // a busy machine the stand-in read (and logged) only "GET /".
    let request = format!("GET /{HOSTILE} HTTP/1.1\r\nHost: x\r\n\r\n");
    let _ = s.write_all(request.as_bytes());
    let _ = std::io::Read::read(&mut s, &mut [0; 256]);
}

fn resolved(p: &Pair) -> bool {
    p.incidents()
        .iter()
        .any(|i| i["target"] == "api" && !i["resolved_at_ms"].is_null() && i["lease"].is_null())
}

#[test]
fn a_real_round_is_audited_as_text_and_the_status_page_shows_the_outage() {
    if !docker_or_skip() {
        return;
    }
    let p = Pair::start(
        "vs-pages",
        Options {
            with_model: true,
            config: "[status_page]\nenabled = true\ntitle = \"Pair status\"\n".into(),
            api_target: "public = true".into(),
            ..Options::default()
        },
    );
    log_hostile_line(p.api_port);
    let model = p.model.clone().unwrap();
    let reason = format!("the log shows GET /{HOSTILE} before the exit");
    model.script(vec![
        Reply::tool("get_logs", r#"{"service":"api-core"}"#),
        Reply::tool(
            "restart_api_core",
            &serde_json::json!({ "reason": reason }).to_string(),
        ),
    ]);
    p.fault(p.api_port, "/crash");
    p.wait("recovery", 60, resolved);
    let logs_answer = model.last_message(1);
    assert!(
        logs_answer.contains(HOSTILE),
        "the container's hostile log line reached the model: {logs_answer}"
    );
    let incident: Value = p.incident("api");
    let id = incident["id"].as_str().unwrap().to_string();
    assert_eq!(incident["rounds"][0]["reason"], reason.as_str());

    let base = format!("http://{}", p.edge().addr);
    // The round and the alerts are counted for Prometheus.
    let metrics = vigil_testkit::observer::fetch(&format!("{base}/metrics"), None).body;
    for line in [
        "vigil_remediation_rounds_total{outcome=\"recovered\",action=\"restart_api_core\"} 1",
        "vigil_target_up{target=\"api\"} 1",
        "vigil_incidents_open 0",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    assert!(
        metrics.contains("vigil_alerts_sent_total{channel=\"discord\"}"),
        "{metrics}"
    );
    let browser = Browser::start();
    browser.goto(&format!("{base}/ui"));
    browser.type_into("input[name=token]", READ_TOKEN);
    browser.click("button[type=submit]");
    browser.text("form[aria-label=Filters]");
    browser.goto(&format!("{base}/ui/incidents/{id}"));
    let timeline = browser.text("ol.timeline");
    for text in [
        "Remediation round 1: recovered (planner: llm",
        &reason,
        "get_logs({\"service\":\"api-core\"})",
        "Action: restart_api_core",
        "Result: ok in",
        "Re-probe: healthy",
    ] {
        assert!(timeline.contains(text), "{text:?} not shown:\n{timeline}");
    }
    // The container's log lines the model read, kept with the round and
    // shown as text.
    let logs = browser.text("ol.timeline .log");
    assert!(logs.starts_with("Logs of api-core"), "{logs}");
    assert!(
        logs.contains(&format!("GET /{HOSTILE} HTTP/1.1")),
        "the hostile log line is shown as text:\n{logs}"
    );
    assert_eq!(incident["rounds"][0]["logs"][0]["service"], "api-core");
    assert_eq!(
        browser.title(),
        format!("Incident {id} · Vigil"),
        "nothing ran"
    );
    assert!(browser.find_all("main script").is_empty());
    let problems = browser.console_problems();
    assert!(problems.is_empty(), "{problems:?}");
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    browser.screenshot(1280, 1700, &shots.join("ui-round-desktop.png"));

    let status = browse(&format!("{base}/status"));
    let dom = &status.dom;
    assert!(dom.contains("Recently resolved"), "{dom}");
    assert!(dom.contains("Automatic recovery attempted"), "{dom}");
    let today = dom.split("<span class=\"day ").nth(90).unwrap();
    assert!(today.contains(&format!("1 incident ({id})\"")), "{today}");
    for private in ["restart_api_core", "vps1", "pwned", "127.0.0.1", "api-core"] {
        assert!(!dom.contains(private), "{private} leaked");
    }
    assert!(status.console.is_empty(), "{:?}", status.console);
}

#[test]
fn the_worker_serves_the_same_status_page() {
    if !worker_or_skip() {
        return;
    }
    let (shop, api) = (TargetServer::start(), TargetServer::start());
    api.set(Behaviour::Status(500));
    let target = |id: &str, url: &str| {
        format!("[[target]]\nid = {id:?}\nurl = {url:?}\nbody_contains = \"ok\"\npublic = true\n")
    };
    let config = format!(
        "interval_s = 60\nretry_after_s = 0.3\n[status_page]\nenabled = true\ntitle = \"Worker status\"\n{}{}\
         [[target]]\nid = \"backoffice\"\nurl = \"http://127.0.0.1:9/private-marker\"\n",
        target("shop", &shop.url()),
        target("api", &api.url())
    );
    let w = Wrangler::start(vec![("VIGIL_CONFIG".into(), config)]);
    w.scheduled();
    let data: Value = w
        .http
        .get(w.url("/status.json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(data["overall"], "outage", "{data}");
    assert_eq!(data["incidents"][0]["target"], "api", "{data}");
    assert_eq!(data["targets"].as_array().unwrap().len(), 2, "{data}");
    let page = w.http.get(w.url("/status")).send().unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    let seen = browse(&w.url("/status"));
    assert!(
        seen.dom.contains("Some services are unavailable"),
        "{}",
        seen.dom
    );
    assert_eq!(seen.dom.matches("class=\"day ").count(), 2 * 90);
    for private in [
        "private-marker",
        "backoffice",
        "127.0.0.1",
        "HTTP 5",
        "unexpected status",
    ] {
        assert!(!seen.dom.contains(private), "{private} leaked");
    }
    assert!(seen.console.is_empty(), "{:?}", seen.console);
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    vigil_testkit::observer::screenshot(
        &w.url("/status"),
        390,
        844,
        false,
        &shots.join("status-worker-phone.png"),
    );
}

/// Signs in through the form and waits for the incident list.
fn sign_in(browser: &Browser, base: &str, token: &str) {
    browser.goto(&format!("{base}/ui"));
    browser.type_into("input[name=token]", token);
    browser.click("button[type=submit]");
    browser.text("form[aria-label=Filters]");
}

#[test]
fn the_worker_serves_the_same_audit_view() {
    if !worker_or_skip() {
        return;
    }
    let api = TargetServer::start();
    // The probe's error quotes the body: hostile text in the timeline.
    api.set(Behaviour::Body(format!("{{\"status\":\"{HOSTILE}\"}}")));
    let config = format!(
        "interval_s = 60\nretry_after_s = 0.3\n[[target]]\nid = \"api\"\nurl = {:?}\n\
         role = \"alert_only\"\nbody_json = {{ pointer = \"/status\", equals = \"ok\" }}\n",
        api.url()
    );
    let w = Wrangler::start(vec![
        ("VIGIL_CONFIG".into(), config),
        ("OPS_READ_TOKEN".into(), READ_TOKEN.into()),
        ("CONTROL_TOKEN".into(), CONTROL_TOKEN.into()),
    ]);
    w.scheduled();
    let open: Value = w
        .http
        .get(w.url("/ops/incidents?state=open"))
        .bearer_auth(READ_TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = open["incidents"][0]["id"]
        .as_str()
        .expect("an incident")
        .to_string();
    let base = w.url("");

    let browser = Browser::start();
    sign_in(&browser, &base, CONTROL_TOKEN);
    let cookies = browser.cookies();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert_eq!(cookies[0]["httpOnly"], true);
    assert_eq!(cookies[0]["sameSite"], "Strict");
    assert_eq!(cookies[0]["secure"], false, "plain HTTP here");
    browser.click(&format!("a[href='/ui/incidents/{id}']"));
    let timeline = browser.text("ol.timeline");
    assert!(
        timeline.contains("healthy → down") && timeline.contains(HOSTILE),
        "the transition, its hostile error as text:\n{timeline}"
    );
    assert_eq!(
        browser.title(),
        format!("Incident {id} · Vigil"),
        "nothing ran"
    );
    assert!(browser.find_all("main script").is_empty());

    // Ack through the page; a forged POST (no CSRF token) is refused.
    let session = browser.cookies()[0]["value"].as_str().unwrap().to_string();
    let forged = w
        .http
        .post(w.url(&format!("/ui/incidents/{id}/resolve")))
        .header("cookie", format!("vigil_ui={session}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=forged")
        .send()
        .unwrap();
    assert_eq!(forged.status(), 403);
    let csp = forged.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    browser.click(&format!("form[action='/ui/incidents/{id}/ack'] button"));
    let shown = eventually(Duration::from_secs(20), Duration::from_millis(200), || {
        browser
            .text("ol.timeline")
            .contains("Acknowledged by ui (control token)")
    });
    assert!(shown, "the page shows the ack:\n{}", browser.source());
    let acked: Value = w
        .http
        .get(w.url(&format!("/ops/incidents/{id}")))
        .bearer_auth(READ_TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(acked["acked_by"], "ui (control token)", "{acked}");
    assert!(
        acked["resolved_at_ms"].is_null(),
        "the forged resolve did nothing"
    );
    let problems = browser.console_problems();
    assert!(problems.is_empty(), "{problems:?}");
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    browser.screenshot(1280, 900, &shots.join("ui-worker-desktop.png"));
}

#[test]
fn the_worker_marks_the_session_cookie_secure_over_tls() {
    if !worker_or_skip() {
        return;
    }
    let api = TargetServer::start();
    let config = format!("[[target]]\nid = \"api\"\nurl = {:?}\n", api.url());
    let w = Wrangler::start_https(vec![
        ("VIGIL_CONFIG".into(), config),
        ("OPS_READ_TOKEN".into(), READ_TOKEN.into()),
    ]);
    let cookie = w.ui_sign_in(READ_TOKEN);
    assert!(
        cookie.starts_with("vigil_ui=read.")
            && cookie.ends_with("; HttpOnly; SameSite=Strict; Secure"),
        "{cookie}"
    );
}

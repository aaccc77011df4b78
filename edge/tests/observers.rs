//! What people look at the real `vigil-edge` with: `/metrics` through
//! promtool and a real Prometheus, the public status page in headless
//! Chromium (visible text, what never leaks, what the browser loads,
//! screenshots in target/screenshots/), and the audit view `/ui` through
//! Chromium over WebDriver (sign-in, the session cookie, hostile text shown
//! as text, ack through the page, a forged POST).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use vigil_testkit::edge::{config_head, Edge, CONTROL_TOKEN, READ_TOKEN};
use vigil_testkit::observer::{browse, fetch, promtool_check, screenshot, Browser, Prometheus};
use vigil_testkit::target::{Behaviour, TargetServer};
use vigil_testkit::TempDir;

/// Starts the real binary with `config` (from `config_head(dir, addr, ..)`).
fn start(dir: TempDir, addr: SocketAddr, config: &str, env: Vec<(&'static str, String)>) -> Edge {
    Edge::start(
        Path::new(env!("CARGO_BIN_EXE_vigil-edge")),
        dir,
        addr,
        config,
        env,
    )
}

/// Where the screenshots go: the workspace's target/screenshots.
fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots")
}

const METRICS_TOKEN: &str = "metrics-token-0123456789";

#[test]
fn prometheus_scrapes_up_and_down_targets_and_promtool_finds_no_fault() {
    let (fine, broken) = (TargetServer::start(), TargetServer::start());
    broken.set(Behaviour::Status(500));
    let (dir, addr) = Edge::prepare("metrics");
    let config = config_head(dir.path(), addr, 0.3, 0.1)
        + &format!(
            "[[target]]\nid = \"fine\"\nurl = {:?}\nrole = \"alert_only\"\n\
             [[target]]\nid = \"broken\"\nurl = {:?}\nrole = \"alert_only\"\n",
            fine.url(),
            broken.url()
        );
    let edge = start(
        dir,
        addr,
        &config,
        vec![("METRICS_TOKEN", METRICS_TOKEN.into())],
    );
    let url = format!("http://{addr}/metrics");
    assert_eq!(fetch(&url, None).status, 401, "the token is required");
    assert_eq!(fetch(&url, Some("wrong-token-0123456789")).status, 401);
    edge.wait_for("the broken target down", Duration::from_secs(15), |e| {
        e.target_state("broken") == "down"
    });
    let scraped = fetch(&url, Some(METRICS_TOKEN));
    assert_eq!(scraped.status, 200);
    assert_eq!(
        scraped.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = scraped.body;
    for line in [
        "vigil_target_up{target=\"fine\"} 1",
        "vigil_target_up{target=\"broken\"} 0",
        "vigil_target_state{target=\"broken\",state=\"down\"} 1",
        "vigil_incidents_open 1",
        "# TYPE vigil_probe_duration_seconds histogram",
        "# TYPE vigil_cycle_duration_seconds histogram",
        "# TYPE vigil_alerts_failed_total counter",
    ] {
        assert!(text.contains(line), "{line:?} missing in:\n{text}");
    }
    // No webhook: the down alert waits in the outbox, and says how long.
    assert!(text.contains("vigil_outbox_entries 1"), "{text}");
    assert!(!text.contains(&fine.url()) && !text.contains("127.0.0.1"));
    let (code, lint) = promtool_check(&text);
    assert_eq!(code, 0, "promtool check metrics:\n{lint}\n{text}");

    let prometheus = Prometheus::start(addr, Some(METRICS_TOKEN));
    let within = Duration::from_secs(30);
    prometheus.wait_for_value("up{job=\"vigil\"}", "1", within);
    prometheus.wait_for_value("vigil_target_up{target=\"fine\"}", "1", within);
    prometheus.wait_for_value("vigil_target_up{target=\"broken\"}", "0", within);
    prometheus.wait_for_value(
        "count(vigil_probe_duration_seconds_count{target=\"fine\"} > 0)",
        "1",
        within,
    );
}

fn target(id: &str, url: &str, public: bool) -> String {
    format!("[[target]]\nid = {id:?}\nurl = {url:?}\nrole = \"alert_only\"\npublic = {public}\n")
}

fn open_incidents(e: &Edge, target: &str) -> usize {
    e.get("/ops/incidents?state=open")["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["target"] == target)
        .count()
}

#[test]
fn the_status_page_is_off_by_default() {
    let t = TargetServer::start();
    let (dir, addr) = Edge::prepare("status-off");
    let config = config_head(dir.path(), addr, 0.3, 0.1) + &target("shop", &t.url(), true);
    let _edge = start(dir, addr, &config, vec![]);
    assert_eq!(fetch(&format!("http://{addr}/status"), None).status, 404);
    assert_eq!(
        fetch(&format!("http://{addr}/status.json"), None).status,
        404
    );
}

#[test]
fn a_browser_sees_public_targets_their_outages_and_nothing_private() {
    let [shop, api, search, docs, internal] = std::array::from_fn(|_| TargetServer::start());
    api.set(Behaviour::Status(500));
    search.set(Behaviour::Status(503));
    let (dir, addr) = Edge::prepare("status");
    let private_url = format!("{}/private-marker", internal.url());
    let config = config_head(dir.path(), addr, 0.3, 0.1)
        + "[status_page]\nenabled = true\ntitle = \"Acme <Shop> status\"\n"
        + &target("shop", &shop.url(), true)
        + &target("api", &api.url(), true)
        + &target("search", &search.url(), true)
        + &target("docs", &docs.url(), true)
        + &target("internal", &private_url, false);
    let edge = start(dir, addr, &config, vec![]);
    edge.wait_for("api and search down", Duration::from_secs(15), |e| {
        open_incidents(e, "api") == 1 && open_incidents(e, "search") == 1
    });
    api.set(Behaviour::Ok);
    edge.wait_for("api recovered", Duration::from_secs(15), |e| {
        open_incidents(e, "api") == 0
    });
    let (status, _) = edge.post(
        "/ops/target/docs/maintenance",
        Some(json!({"duration_s": 3600})),
    );
    assert_eq!(status, 200);

    let url = format!("http://{addr}/status");
    let page = fetch(&url, None);
    assert_eq!(page.status, 200, "no token needed");
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    let data: Value = serde_json::from_str(&fetch(&format!("{url}.json"), None).body).unwrap();
    let ids: Vec<&str> = data["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["shop", "api", "search", "docs"]);
    assert_eq!(data["overall"], "outage");
    assert_eq!(data["targets"][3]["state"], "maintenance");
    assert_eq!(data["incidents"][0]["target"], "search");
    assert_eq!(data["resolved"][0]["target"], "api");

    let seen = browse(&url);
    let dom = &seen.dom;
    for text in [
        "Acme &lt;Shop&gt; status",
        "Some services are unavailable",
        "Current incidents",
        "Recently resolved",
        "Under maintenance until",
        "Response time, last 24 hours",
        "<main>",
    ] {
        assert!(dom.contains(text), "{text:?} not on the page:\n{dom}");
    }
    assert_eq!(
        dom.matches("class=\"day ").count(),
        4 * 90,
        "a 90-day bar per target"
    );
    // Today's bar of api: an outage, coloured and titled with its incident.
    let api_card = &dom[dom.find("id=\"t-api\"").unwrap()..];
    let today = api_card.split("<span class=\"day ").nth(90).unwrap();
    assert!(
        today.starts_with("major\"") || today.starts_with("minor\""),
        "{today}"
    );
    let api_incident = data["resolved"][0]["id"].as_str().unwrap();
    assert!(
        today.contains(&format!("% up, 1 incident ({api_incident})\"")),
        "{today}"
    );
    for secret in [
        "private-marker",
        "internal",
        "127.0.0.1",
        // The status codes and the probes' error texts.
        "HTTP 5",
        "\"status\":5",
        "unexpected status",
        "<script",
    ] {
        assert!(!dom.contains(secret), "{secret:?} leaked:\n{dom}");
        assert!(
            !data.to_string().contains(secret),
            "{secret:?} leaked: {data}"
        );
    }
    assert!(seen.console.is_empty(), "console: {:?}", seen.console);
    assert!(!seen.page_requests.is_empty(), "the net log saw the page");
    for (req, _) in &seen.page_requests {
        assert!(
            req.starts_with(&format!("http://{addr}/")),
            "request to {req}"
        );
    }

    // The colours a person sees: api's today red (or amber), shop's green.
    let browser = Browser::start();
    browser.goto(&url);
    let colour = |target: &str| {
        browser.css_value(
            &format!("article[aria-labelledby=t-{target}] .day:last-child"),
            "background-color",
        )
    };
    let api_today = colour("api");
    assert!(
        ["rgba(196, 35, 28, 1)", "rgba(154, 103, 0, 1)"].contains(&api_today.as_str()),
        "{api_today}"
    );
    assert_eq!(colour("shop"), "rgba(30, 123, 52, 1)");
    let problems = browser.console_problems();
    assert!(problems.is_empty(), "{problems:?}");

    let shots = screenshots();
    for (name, w, h, dark) in [
        ("status-phone.png", 390, 844, false),
        ("status-desktop.png", 1280, 900, false),
        ("status-phone-dark.png", 390, 844, true),
    ] {
        let file = shots.join(name);
        screenshot(&url, w, h, dark, &file);
        let size = std::fs::metadata(&file).unwrap().len();
        // A blank page is about 3 KB.
        assert!(size > 15_000, "{name}: {size} bytes");
    }
}

/// What the target answers: its JSON carries a script tag, which the probe's
/// error quotes, so it reaches the incident's timeline.
const HOSTILE: &str = r#"{"status":"<script>document.title='pwned'</script>"}"#;

/// Signs in through the form and waits for what the answer shows.
fn sign_in(browser: &Browser, base: &str, token: &str, then: &str) -> String {
    browser.goto(&format!("{base}/ui"));
    browser.type_into("input[name=token]", token);
    browser.click("button[type=submit]");
    browser.text(then)
}

#[test]
fn a_browser_signs_in_reads_hostile_text_as_text_and_acks_through_the_page() {
    let api = TargetServer::start();
    api.set(Behaviour::Body(HOSTILE.into()));
    let (dir, addr) = Edge::prepare("ui");
    let config = config_head(dir.path(), addr, 0.3, 0.1)
        + &format!(
            "[[target]]\nid = \"api\"\nurl = {:?}\nrole = \"alert_only\"\n\
             body_json = {{ pointer = \"/status\", equals = \"ok\" }}\n",
            api.url()
        );
    let edge = start(dir, addr, &config, vec![]);
    edge.wait_for("the incident", Duration::from_secs(15), |e| {
        e.get("/ops/incidents?state=open")["incidents"]
            .as_array()
            .is_some_and(|a| a.len() == 1)
    });
    let id = edge.get("/ops/incidents?state=open")["incidents"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let base = format!("http://{addr}");
    let browser = Browser::start();

    // Not signed in: the form; a wrong token is refused.
    let refused = sign_in(&browser, &base, "not-the-token-0123456789", "[role=alert]");
    assert!(refused.contains("not accepted"));
    // The refusal is a 401, which the console reports; nothing else.
    let problems = browser.console_problems();
    assert!(
        problems.len() == 1 && problems[0]["message"].as_str().unwrap().contains("401"),
        "{problems:?}"
    );
    assert!(browser.cookies().is_empty());

    // The read token: the list, then the incident, with no buttons.
    sign_in(&browser, &base, READ_TOKEN, "form[aria-label=Filters]");
    assert_eq!(browser.url(), format!("{base}/ui"));
    let cookies = browser.cookies();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert_eq!(cookies[0]["httpOnly"], true);
    assert_eq!(cookies[0]["sameSite"], "Strict");
    assert!(cookies[0]["expiry"].as_u64().is_some(), "{cookies:?}");
    browser.click(&format!("a[href='/ui/incidents/{id}']"));
    let shown = browser.text("ol.timeline");
    assert!(
        shown.contains("<script>document.title='pwned'</script>"),
        "the hostile text is shown as text:\n{shown}"
    );
    assert_eq!(
        browser.title(),
        format!("Incident {id} · Vigil"),
        "and runs nothing"
    );
    assert!(browser.find_all("main script").is_empty());
    assert!(browser.find_all("input[name=csrf]").is_empty(), "read only");
    assert!(browser
        .text("main")
        .contains("Sign in with the control token"));
    let problems = browser.console_problems();
    assert!(problems.is_empty(), "{problems:?}");

    // A bad filter is named, not ignored.
    browser.goto(&format!("{base}/ui?state=sideways"));
    assert!(browser
        .text("[role=alert]")
        .contains("state must be open or resolved"));
    let problems = browser.console_problems();
    assert!(problems.len() == 1 && problems[0]["message"].as_str().unwrap().contains("400"));

    // The control token: ack through the page.
    browser.click("nav button");
    browser.text("input[name=token]");
    sign_in(&browser, &base, CONTROL_TOKEN, "form[aria-label=Filters]");
    browser.goto(&format!("{base}/ui/incidents/{id}"));
    assert_eq!(browser.find_all("input[name=csrf]").len(), 2);
    browser.click(&format!("form[action='/ui/incidents/{id}/ack'] button"));
    // Once acknowledged, the page offers resolve only.
    browser.text(&format!("form[action='/ui/incidents/{id}/resolve'] button"));
    edge.wait_for("the ack", Duration::from_secs(10), |e| {
        browser.find_all("input[name=csrf]").len() == 1
            && !e.get(&format!("/ops/incidents/{id}"))["acked_at_ms"].is_null()
    });
    assert_eq!(browser.url(), format!("{base}/ui/incidents/{id}"));
    assert!(browser
        .text("main")
        .contains("Acknowledged by ui (control token)"));
    let acked = edge.get(&format!("/ops/incidents/{id}"));
    assert_eq!(acked["acked_by"], "ui (control token)");
    let shots = screenshots();
    browser.screenshot(1280, 900, &shots.join("ui-incident-desktop.png"));
    browser.screenshot(390, 844, &shots.join("ui-incident-phone.png"));
    browser.goto(&format!("{base}/ui"));
    browser.screenshot(1280, 900, &shots.join("ui-list-desktop.png"));
    let problems = browser.console_problems();
    assert!(problems.is_empty(), "{problems:?}");

    // A forged POST (the control session's cookie, no CSRF token) is refused.
    let session = browser.cookies()[0]["value"].as_str().unwrap().to_string();
    let http = reqwest::blocking::Client::new();
    let resolve = format!("{base}/ui/incidents/{id}/resolve");
    for (cookie, body) in [
        (format!("vigil_ui={session}"), "csrf=".to_string()),
        (format!("vigil_ui={session}"), "csrf=forged".to_string()),
        (String::new(), "csrf=".to_string()),
    ] {
        let res = http
            .post(&resolve)
            .header("cookie", cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(res.status(), 403);
    }
    assert!(edge.get(&format!("/ops/incidents/{id}"))["resolved_at_ms"].is_null());
    // The page itself loads nothing from anywhere.
    let page = fetch(&format!("{base}/ui"), None);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
}

#[test]
fn failed_sign_ins_count_as_failed_authentications() {
    let api = TargetServer::start();
    let (dir, addr) = Edge::prepare("ui-limit");
    let config = config_head(dir.path(), addr, 0.5, 0.2)
        + "auth_fail_per_minute = 1\nauth_fail_burst = 2\n"
        + &format!("[[target]]\nid = \"api\"\nurl = {:?}\n", api.url());
    let _edge = start(dir, addr, &config, vec![]);
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sign_in = |token: &str| {
        http.post(format!("http://{addr}/ui/sign-in"))
            .form(&[("token", token)])
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    // A right token is no failure; two wrong ones use up the burst.
    assert_eq!(sign_in(READ_TOKEN), 303);
    assert_eq!(sign_in("wrong-token-0123456789"), 401);
    assert_eq!(sign_in("wrong-token-0123456789"), 401);
    assert_eq!(sign_in("wrong-token-0123456789"), 429);
    // The bearer routes share the count.
    let res = http
        .get(format!("http://{addr}/ops/summary"))
        .bearer_auth("wrong-token-0123456789")
        .send()
        .unwrap();
    assert_eq!(res.status(), 429);
}

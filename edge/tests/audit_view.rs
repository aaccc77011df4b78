//! The incident audit view (`/ui`) of the real `vigil-edge`, used through
//! headless Chromium over WebDriver: sign-in, the session cookie, a hostile
//! error text shown as text, ack through the page, and a forged POST.

use std::path::Path;
use std::time::Duration;

use vigil_testkit::edge::{config_head, Edge, CONTROL_TOKEN, READ_TOKEN};
use vigil_testkit::observer::{fetch, Browser};
use vigil_testkit::target::{Behaviour, TargetServer};

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
    let edge = Edge::start(
        Path::new(env!("CARGO_BIN_EXE_vigil-edge")),
        dir,
        addr,
        &config,
        vec![],
    );
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
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
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

//! The public status page of the real `vigil-edge`, opened in headless
//! Chromium: what a visitor sees, what never leaks, what the browser loads,
//! and screenshots at phone and desktop widths (target/screenshots/).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use vigil_testkit::edge::{config_head, Edge};
use vigil_testkit::observer::{browse, fetch, screenshot};
use vigil_testkit::target::{Behaviour, TargetServer};

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

/// Where the screenshots go: the workspace's target/screenshots.
fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots")
}

#[test]
fn the_status_page_is_off_by_default() {
    let t = TargetServer::start();
    let (dir, addr) = Edge::prepare("status-off");
    let config = config_head(dir.path(), addr, 0.3, 0.1) + &target("shop", &t.url(), true);
    let _edge = Edge::start(
        Path::new(env!("CARGO_BIN_EXE_vigil-edge")),
        dir,
        addr,
        &config,
        vec![],
    );
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
    let edge = Edge::start(
        Path::new(env!("CARGO_BIN_EXE_vigil-edge")),
        dir,
        addr,
        &config,
        vec![],
    );
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
    assert!(today.contains("% up, 1 incident\""), "{today}");
    for secret in [
        "private-marker",
        "internal",
        "127.0.0.1",
        "500",
        "503",
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

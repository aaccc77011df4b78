//! `GET /metrics` on the real `vigil-edge`: the token, promtool's lint, and a
//! real Prometheus scraping it.

use std::path::Path;
use std::time::Duration;

use vigil_testkit::edge::{config_head, Edge};
use vigil_testkit::observer::{fetch, promtool_check, Prometheus};
use vigil_testkit::target::{Behaviour, TargetServer};

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
    let edge = Edge::start(
        Path::new(env!("CARGO_BIN_EXE_vigil-edge")),
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

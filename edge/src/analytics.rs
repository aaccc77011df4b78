//! The Analytics Engine layout: one dataset (`VIGIL_AE`) for every point
//! the Worker writes, so one SQL query can join them. Pure: the Worker's
//! `worker::analytics` writes these points.
//!
//! | kind  | index1         | blob1   | blob2   | blob3   | blob4 | double1     | double2 | double3 | double4 |
//! |-------|----------------|---------|---------|---------|-------|-------------|---------|---------|---------|
//! | probe | target         | `probe` | health  | source  | error | latency ms  | status  |         |         |
//! | round | target         | `round` | outcome | planner | action| duration ms |         |         |         |
//! | host  | host           | `host`  |         |         |       | CPU %       | memory %| disk %  | load 1  |
//! | route | route template | `route` | outcome | method  | error | duration ms | status  |         |         |
//!
//! blob2 is always the outcome, blob4 the error text (at most
//! [`ERROR_CHARS`] characters), double1 the duration.

use crate::core::history::HostSample;
use crate::core::incident::Round;
use crate::core::probe::{truncate, Observation};

/// Longest error text in a point.
pub const ERROR_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub index: String,
    pub blobs: Vec<String>,
    pub doubles: Vec<f64>,
}

fn error_blob(error: Option<&str>) -> String {
    truncate(error.unwrap_or(""), ERROR_CHARS)
}

pub fn probe(o: &Observation) -> Point {
    Point {
        index: o.target.clone(),
        blobs: vec![
            "probe".into(),
            o.health.as_str().into(),
            "scheduled".into(),
            error_blob(o.error.as_deref()),
        ],
        doubles: vec![o.latency_ms as f64, f64::from(o.status.unwrap_or(0))],
    }
}

pub fn round(target: &str, r: &Round) -> Point {
    let lower = |d: &dyn std::fmt::Debug| format!("{d:?}").to_ascii_lowercase();
    Point {
        index: target.into(),
        blobs: vec![
            "round".into(),
            lower(&r.outcome),
            lower(&r.planner),
            r.action.clone().unwrap_or_else(|| "-".into()),
        ],
        doubles: vec![r.finished_at_ms.saturating_sub(r.started_at_ms) as f64],
    }
}

pub fn host(host: &str, s: &HostSample) -> Point {
    Point {
        index: host.into(),
        blobs: vec!["host".into()],
        doubles: vec![
            s.cpu_percent,
            s.mem_used_percent,
            s.disk_used_percent,
            s.load_1,
        ],
    }
}

/// One request the Worker answered (or failed to).
pub struct Request<'a> {
    pub method: &'a str,
    /// The route template (`route_template`, `posthog::route`).
    pub route: &'a str,
    pub status: u16,
    pub duration_ms: u64,
    /// The error the request ended with: the answer's error message, or
    /// what failed before an answer.
    pub error: Option<&'a str>,
}

pub fn route(r: &Request<'_>) -> Point {
    let outcome = match r.status {
        0..400 => "ok",
        400..500 => "client_error",
        _ => "server_error",
    };
    Point {
        index: r.route.into(),
        blobs: vec![
            "route".into(),
            outcome.into(),
            r.method.into(),
            error_blob(r.error),
        ],
        doubles: vec![r.duration_ms as f64, f64::from(r.status)],
    }
}

/// The Worker's routes, placeholders in braces. A path that matches none
/// is `other`, so a scanner's paths cannot grow the index's cardinality.
const ROUTES: &[&str] = &[
    "/healthz",
    "/status",
    "/status.json",
    "/_log",
    "/ops/summary",
    "/ops/incidents",
    "/ops/anomalies",
    "/ops/jobs",
    "/ops/crashes",
    "/ops/jobs/heartbeat",
    "/ops/signal",
    "/ops/vantage",
    "/ops/targets",
    "/ops/audit",
    "/ops/incidents/{id}",
    "/ops/target/{id}",
    "/ops/targets/{id}",
    "/ops/restart/{target}",
    "/ops/incidents/{id}/{verb}",
    "/ops/target/{id}/maintenance",
    "/ops/actions/{host}/{action}",
    "/ops/runbook/{id}/execute",
    "/ops/approvals/{id}/{verb}",
];

/// The route template `path` matches: literal routes first, then those
/// with placeholders, in table order.
pub fn route_template(path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    ROUTES
        .iter()
        .find(|template| {
            let parts: Vec<&str> = template.trim_matches('/').split('/').collect();
            parts.len() == segments.len()
                && parts
                    .iter()
                    .zip(&segments)
                    .all(|(p, s)| *p == *s || (p.starts_with('{') && !s.is_empty()))
        })
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::probe::Health;

    #[test]
    fn paths_become_templates_and_strangers_are_other() {
        for (path, want) in [
            ("/healthz", "/healthz"),
            ("/ops/summary", "/ops/summary"),
            ("/ops/jobs/heartbeat", "/ops/jobs/heartbeat"),
            ("/ops/vantage", "/ops/vantage"),
            ("/ops/incidents/inc-7-midc1z40", "/ops/incidents/{id}"),
            (
                "/ops/incidents/inc-7-midc1z40/ack",
                "/ops/incidents/{id}/{verb}",
            ),
            (
                "/ops/target/api/maintenance",
                "/ops/target/{id}/maintenance",
            ),
            (
                "/ops/actions/vps1/restart_api",
                "/ops/actions/{host}/{action}",
            ),
            // Targets through the API (both shells).
            ("/ops/targets", "/ops/targets"),
            ("/ops/targets/docs", "/ops/targets/{id}"),
            ("/ops/audit", "/ops/audit"),
            ("/wp-login.php", "other"),
            ("/ops/incidents//ack", "other"),
            ("/ops/target/a/b/c", "other"),
        ] {
            assert_eq!(route_template(path), want, "{path}");
        }
    }

    #[test]
    fn a_route_point_has_the_shared_layout() {
        let long = "é".repeat(500);
        let p = route(&Request {
            method: "POST",
            route: route_template("/ops/incidents/inc-1-x/ack"),
            status: 404,
            duration_ms: 12,
            error: Some(&long),
        });
        assert_eq!(p.index, "/ops/incidents/{id}/{verb}");
        assert_eq!(&p.blobs[..3], ["route", "client_error", "POST"]);
        assert_eq!(p.blobs[3].chars().count(), ERROR_CHARS);
        assert_eq!(p.doubles, [12.0, 404.0]);
        let ok = route(&Request {
            method: "GET",
            route: route_template("/healthz"),
            status: 200,
            duration_ms: 1,
            error: None,
        });
        assert_eq!(ok.blobs, ["route", "ok", "GET", ""]);
        let probe = probe(&Observation {
            target: "api".into(),
            at_ms: 0,
            health: Health::Down,
            status: Some(502),
            latency_ms: 30,
            error: Some("unexpected status 502".into()),
            cert: None,
        });
        assert_eq!(probe.index, "api");
        assert_eq!(
            probe.blobs,
            ["probe", "down", "scheduled", "unexpected status 502"]
        );
        assert_eq!(probe.doubles, [30.0, 502.0]);
    }
}

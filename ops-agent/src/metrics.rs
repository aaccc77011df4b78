//! Prometheus text exposition of what the agent has done.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the action duration histogram, in seconds.
const BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    actions: BTreeMap<(String, String), u64>,
    durations: BTreeMap<String, Histogram>,
    rate_limited: u64,
    audit_write_failures: u64,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        // A panic elsewhere while holding the lock leaves counters usable.
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    pub fn request(&self, route: &str, status: u16) {
        self.with(|m| *m.requests.entry((route.to_string(), status)).or_default() += 1);
    }

    pub fn action(&self, name: &str, outcome: &str, took: Duration) {
        self.with(|m| {
            *m.actions
                .entry((name.to_string(), outcome.to_string()))
                .or_default() += 1;
            let h = m.durations.entry(name.to_string()).or_default();
            let secs = took.as_secs_f64();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.count += 1;
            h.sum += secs;
        });
    }

    pub fn rate_limited(&self) {
        self.with(|m| m.rate_limited += 1);
    }

    pub fn audit_write_failed(&self) {
        self.with(|m| m.audit_write_failures += 1);
    }

    pub fn render(&self) -> String {
        self.with(|m| {
            let mut out = String::new();
            out.push_str("# HELP ops_agent_http_requests_total HTTP requests by route and status.\n");
            out.push_str("# TYPE ops_agent_http_requests_total counter\n");
            for ((route, status), n) in &m.requests {
                let _ = writeln!(
                    out,
                    "ops_agent_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
            out.push_str("# HELP ops_agent_actions_total Actions run, by name and outcome.\n");
            out.push_str("# TYPE ops_agent_actions_total counter\n");
            for ((name, outcome), n) in &m.actions {
                let _ = writeln!(
                    out,
                    "ops_agent_actions_total{{action=\"{name}\",outcome=\"{outcome}\"}} {n}"
                );
            }
            out.push_str("# HELP ops_agent_action_duration_seconds How long actions took.\n");
            out.push_str("# TYPE ops_agent_action_duration_seconds histogram\n");
            for (name, h) in &m.durations {
                for (bound, n) in BUCKETS.iter().zip(h.counts) {
                    let _ = writeln!(
                        out,
                        "ops_agent_action_duration_seconds_bucket{{action=\"{name}\",le=\"{bound}\"}} {n}"
                    );
                }
                let _ = writeln!(
                    out,
                    "ops_agent_action_duration_seconds_bucket{{action=\"{name}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(out, "ops_agent_action_duration_seconds_sum{{action=\"{name}\"}} {}", h.sum);
                let _ = writeln!(out, "ops_agent_action_duration_seconds_count{{action=\"{name}\"}} {}", h.count);
            }
            out.push_str("# HELP ops_agent_rate_limited_total Requests refused with 429.\n");
            out.push_str("# TYPE ops_agent_rate_limited_total counter\n");
            let _ = writeln!(out, "ops_agent_rate_limited_total {}", m.rate_limited);
            out.push_str("# HELP ops_agent_audit_write_failures_total Audit lines that could not be written.\n");
            out.push_str("# TYPE ops_agent_audit_write_failures_total counter\n");
            let _ = writeln!(
                out,
                "ops_agent_audit_write_failures_total {}",
                m.audit_write_failures
            );
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.action("restart_api_core", "ok", Duration::from_millis(300));
        m.action("restart_api_core", "timed_out", Duration::from_secs(60));
        m.request("/v1/actions", 200);
        m.rate_limited();
        m.audit_write_failed();
        let text = m.render();
        assert!(
            text.contains(
                r#"ops_agent_action_duration_seconds_bucket{action="restart_api_core",le="0.25"} 0"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"ops_agent_action_duration_seconds_bucket{action="restart_api_core",le="0.5"} 1"#
        ));
        assert!(text.contains(
            r#"ops_agent_action_duration_seconds_bucket{action="restart_api_core",le="120"} 2"#
        ));
        assert!(text
            .contains(r#"ops_agent_action_duration_seconds_count{action="restart_api_core"} 2"#));
        assert!(text.contains(
            r#"ops_agent_actions_total{action="restart_api_core",outcome="timed_out"} 1"#
        ));
        assert!(
            text.contains(r#"ops_agent_http_requests_total{route="/v1/actions",status="200"} 1"#)
        );
        assert!(text.contains("ops_agent_rate_limited_total 1"));
        assert!(text.contains("ops_agent_audit_write_failures_total 1"));
    }
}

//! What a probe is asked to do, and what its answer means. The shell does the
//! HTTP request; everything here is pure.

use serde::{Deserialize, Serialize};

use crate::config::Target;

/// A target's health, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Healthy,
    Degraded,
    Down,
}

impl Health {
    pub fn is_bad(self) -> bool {
        self != Health::Healthy
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Down => "down",
        }
    }
}

/// The server's certificate as a probe saw it (native shell only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCert {
    /// The certificate's notAfter.
    pub not_after_ms: u64,
    /// Names this certificate (hex SHA-256 of its DER): one warning each.
    pub fingerprint: String,
}

/// What the shell saw when it probed.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeResponse {
    Answered {
        status: u16,
        /// Response headers, names in lower case.
        headers: Vec<(String, String)>,
        body: String,
        cert: Option<PeerCert>,
        latency_ms: u64,
    },
    /// No answer: connection refused, reset, DNS, TLS...
    Failed {
        error: String,
        latency_ms: u64,
    },
    TimedOut {
        latency_ms: u64,
    },
}

/// One classified probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub target: String,
    pub at_ms: u64,
    pub health: Health,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The certificate, for a target with `tls_expiry_days`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PeerCert>,
}

/// Longest error text kept on an observation.
const ERROR_LIMIT: usize = 300;

pub fn classify(target: &Target, response: ProbeResponse, at_ms: u64) -> Observation {
    let mut peer_cert = None;
    let (health, status, latency_ms, error) = match response {
        ProbeResponse::Failed { error, latency_ms } => {
            (Health::Down, None, latency_ms, Some(error))
        }
        ProbeResponse::TimedOut { latency_ms } => (
            Health::Down,
            None,
            latency_ms,
            Some(format!("timed out after {} ms", target.timeout_ms)),
        ),
        ProbeResponse::Answered {
            status,
            headers,
            body,
            cert,
            latency_ms,
        } => {
            peer_cert = cert.filter(|_| target.tls_expiry_days.is_some());
            match check(target, status, &headers, &body) {
                Err(e) => (Health::Down, Some(status), latency_ms, Some(e)),
                Ok(()) if latency_ms > target.degraded_ms => (
                    Health::Degraded,
                    Some(status),
                    latency_ms,
                    Some(format!("slow: {latency_ms} ms > {} ms", target.degraded_ms)),
                ),
                Ok(()) => (Health::Healthy, Some(status), latency_ms, None),
            }
        }
    };
    Observation {
        target: target.id.clone(),
        at_ms,
        health,
        status,
        latency_ms,
        error: error.map(|e| truncate(&e, ERROR_LIMIT)),
        cert: peer_cert,
    }
}

fn check(
    target: &Target,
    status: u16,
    headers: &[(String, String)],
    body: &str,
) -> Result<(), String> {
    if !target.expect_status.contains(&status) {
        return Err(format!(
            "unexpected status {status} (expected {:?})",
            target.expect_status
        ));
    }
    for (name, needle) in crate::config::text_pairs(&target.expect_headers) {
        let mut values = headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .peekable();
        if values.peek().is_none() {
            return Err(format!("no {name} header in the answer"));
        }
        if !values.any(|v| v.contains(needle)) {
            return Err(format!("header {name} does not contain {needle:?}"));
        }
    }
    if let Some(needle) = &target.body_contains {
        if !body.contains(needle.as_str()) {
            return Err(format!("body does not contain {needle:?}"));
        }
    }
    if let Some(rule) = &target.body_json {
        let doc: serde_json::Value = serde_json::from_slice(body.as_bytes())
            .map_err(|e| format!("body is not JSON: {e}"))?;
        match doc.pointer(&rule.pointer) {
            Some(v) if *v == rule.equals => {}
            Some(v) => return Err(format!("{} is {v}, expected {}", rule.pointer, rule.equals)),
            None => return Err(format!("{} is missing from the body", rule.pointer)),
        }
    }
    Ok(())
}

/// The URL to probe: the target's, with a cache-busting parameter so no
/// cache between us and the origin can answer for it.
pub fn cache_busted_url(url: &str, nonce: u64) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut out = format!("{base}{sep}vigil_nocache={nonce}");
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// The header a probe of a target with `regions` carries: the vantage
/// point's region.
pub const REGION_HEADER: &str = "X-Vigil-Region";

/// The request headers every probe carries.
pub const NO_CACHE_HEADERS: [(&str, &str); 2] = [
    ("Cache-Control", "no-cache, no-store"),
    ("Pragma", "no-cache"),
];

pub fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max_chars.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BodyJson, Config};

    fn target() -> Target {
        let c = Config::parse("t.toml", "[[target]]\nid = \"api\"\nurl = \"http://127.0.0.1:1/\"\nbody_contains = \"ok\"\ndegraded_ms = 100\ntimeout_ms = 500\n").unwrap();
        c.targets[0].clone()
    }

    fn answered(status: u16, body: &str, latency_ms: u64) -> ProbeResponse {
        ProbeResponse::Answered {
            status,
            headers: vec![("content-type".into(), "text/html; charset=utf-8".into())],
            body: body.into(),
            cert: None,
            latency_ms,
        }
    }

    #[test]
    fn response_headers_are_checked_by_name_in_any_case() {
        let mut t = target();
        t.expect_headers
            .insert("Content-Type".into(), "text/html".into());
        assert_eq!(
            classify(&t, answered(200, "ok", 1), 0).health,
            Health::Healthy
        );
        t.expect_headers
            .insert("Content-Type".into(), "json".into());
        let o = classify(&t, answered(200, "ok", 1), 0);
        assert_eq!(
            o.error.as_deref(),
            Some("header Content-Type does not contain \"json\"")
        );
        t.expect_headers.clear();
        t.expect_headers.insert("x-form".into(), "".into());
        let o = classify(&t, answered(200, "ok", 1), 0);
        assert_eq!(o.error.as_deref(), Some("no x-form header in the answer"));
    }

    #[test]
    fn classification() {
        let t = target();
        let h = |r| classify(&t, r, 7).health;
        assert_eq!(h(answered(200, "all ok", 20)), Health::Healthy);
        assert_eq!(h(answered(200, "all ok", 101)), Health::Degraded);
        assert_eq!(h(answered(500, "ok", 20)), Health::Down);
        assert_eq!(h(answered(200, "nope", 20)), Health::Down);
        assert_eq!(h(ProbeResponse::TimedOut { latency_ms: 500 }), Health::Down);
        assert_eq!(
            h(ProbeResponse::Failed {
                error: "connection refused".into(),
                latency_ms: 1
            }),
            Health::Down
        );
        // A wrong answer is down even when it is slow.
        assert_eq!(h(answered(503, "ok", 5000)), Health::Down);
    }

    #[test]
    fn observations_say_why() {
        let t = target();
        let o = classify(&t, answered(500, "", 3), 9);
        assert_eq!(o.status, Some(500));
        assert!(o.error.unwrap().contains("unexpected status 500"));
        let o = classify(&t, ProbeResponse::TimedOut { latency_ms: 500 }, 9);
        assert_eq!(o.error.as_deref(), Some("timed out after 500 ms"));
        let o = classify(
            &t,
            ProbeResponse::Failed {
                error: "x".repeat(1000),
                latency_ms: 1,
            },
            9,
        );
        assert_eq!(o.error.unwrap().chars().count(), ERROR_LIMIT);
    }

    #[test]
    fn json_pointer_check() {
        let mut t = target();
        t.body_contains = None;
        t.body_json = Some(BodyJson {
            pointer: "/status".into(),
            equals: serde_json::json!("UP"),
        });
        let h = |b: &str| classify(&t, answered(200, b, 1), 0);
        assert_eq!(h(r#"{"status":"UP"}"#).health, Health::Healthy);
        assert!(h(r#"{"status":"DOWN"}"#)
            .error
            .unwrap()
            .contains("expected \"UP\""));
        assert!(h(r#"{}"#).error.unwrap().contains("missing"));
        assert!(h("<html>").error.unwrap().contains("not JSON"));
    }

    #[test]
    fn cache_busting_keeps_query_and_fragment() {
        assert_eq!(
            cache_busted_url("http://a/h", 5),
            "http://a/h?vigil_nocache=5"
        );
        assert_eq!(
            cache_busted_url("http://a/h?x=1", 5),
            "http://a/h?x=1&vigil_nocache=5"
        );
        assert_eq!(
            cache_busted_url("http://a/h#top", 5),
            "http://a/h?vigil_nocache=5#top"
        );
    }
}

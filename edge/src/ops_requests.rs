//! The `/ops` routes' inputs, parsed the same way in every shell.

use serde::Deserialize;

/// `POST /ops/approvals/{id}/{verb}`: true to approve, false to deny, none
/// for another verb (404).
pub fn approval_verb(verb: &str) -> Option<bool> {
    match verb {
        "approve" => Some(true),
        "deny" => Some(false),
        _ => None,
    }
}

/// The first value of `key` in a URL's query string, form-decoded (`+` is a
/// space, `%XX` a byte). Written here rather than taken from the `url` crate:
/// this is the Worker's only use of it, and it is large in the bundle.
pub fn query_param(url: &str, key: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    form_param(query.split_once('#').map_or(query, |(q, _)| q), key)
}

/// One field of an `application/x-www-form-urlencoded` text (a form's body,
/// a query string).
pub fn form_param(form: &str, key: &str) -> Option<String> {
    form.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(k) == key).then(|| form_decode(v))
    })
}

fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `?state=open|resolved`: `None` lists all.
pub fn state_filter(state: Option<&str>) -> Result<Option<bool>, String> {
    match state {
        None => Ok(None),
        Some("open") => Ok(Some(true)),
        Some("resolved") => Ok(Some(false)),
        Some(other) => Err(format!("state must be open or resolved, got {other:?}")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceBody {
    /// End of the window (epoch ms).
    #[serde(default)]
    until_ms: Option<u64>,
    /// Or: how long from now.
    #[serde(default)]
    duration_s: Option<f64>,
}

/// The longest maintenance window: a year.
pub const MAINTENANCE_MAX_S: u64 = 366 * 86_400;

/// The end of a maintenance window from its request body; `None` ends the
/// window now (`{}`). A window ends after `now_ms` and within
/// `MAINTENANCE_MAX_S`.
pub fn maintenance_until(body: &[u8], now_ms: u64) -> Result<Option<u64>, String> {
    let parsed: MaintenanceBody = crate::core::json::read(body)
        .map_err(|e| format!("expected {{\"until_ms\": ms}} or {{\"duration_s\": s}}: {e}"))?;
    let latest = now_ms.saturating_add(MAINTENANCE_MAX_S * 1000);
    match (parsed.until_ms, parsed.duration_s) {
        (Some(_), Some(_)) => Err("give until_ms or duration_s, not both".into()),
        (Some(u), None) if u > now_ms && u <= latest => Ok(Some(u)),
        (Some(u), None) => Err(format!(
            "until_ms must be after now ({now_ms}) and at most {MAINTENANCE_MAX_S} s later (got {u}); send {{}} to end a window"
        )),
        (None, Some(d)) if d.is_finite() && d > 0.0 && d <= MAINTENANCE_MAX_S as f64 => {
            Ok(Some(now_ms.saturating_add((d * 1000.0).round() as u64)))
        }
        (None, Some(d)) => Err(format!(
            "duration_s must be greater than zero and at most {MAINTENANCE_MAX_S} (got {d})"
        )),
        (None, None) => Ok(None),
    }
}

/// The body of `POST /ops/jobs/heartbeat`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub job: String,
    pub status: crate::core::jobs::Signal,
    #[serde(default)]
    pub run_id: Option<String>,
}

pub fn heartbeat(body: &[u8]) -> Result<Heartbeat, String> {
    let hb: Heartbeat = crate::core::json::read(body)
        .map_err(|e| format!("expected {{\"job\": id, \"status\": \"ok\" | \"start\" | \"fail\", \"run_id\": optional}}: {e}"))?;
    if hb
        .run_id
        .as_ref()
        .is_some_and(|r| r.is_empty() || r.len() > 128)
    {
        return Err("run_id must be 1 to 128 characters".into());
    }
    Ok(hb)
}

/// The body of `POST /ops/targets`: any JSON here (`core::control` reads
/// it as a target, with the file's errors).
pub fn target_body(body: &[u8]) -> Result<serde_json::Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))
}

/// Who did it, for the audit trail: the `X-Vigil-Operator` header, else the
/// token's role.
pub fn operator(header: Option<&str>) -> String {
    header
        .map(|v| crate::core::probe::truncate(v.trim(), 64))
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "control-token".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maintenance_bodies() {
        assert_eq!(
            maintenance_until(br#"{"duration_s": 2}"#, 1000),
            Ok(Some(3000))
        );
        assert_eq!(
            maintenance_until(br#"{"until_ms": 5000}"#, 1000),
            Ok(Some(5000))
        );
        assert_eq!(maintenance_until(b"{}", 1000), Ok(None));
        assert!(maintenance_until(br#"{"duration_s": -1}"#, 0).is_err());
        let year = MAINTENANCE_MAX_S * 1000;
        assert_eq!(
            maintenance_until(
                format!(r#"{{"duration_s": {MAINTENANCE_MAX_S}}}"#).as_bytes(),
                7
            ),
            Ok(Some(7 + year))
        );
        for (body, key) in [
            (r#"{"duration_s": 1e308}"#.to_string(), "duration_s"),
            (r#"{"duration_s": 31622401}"#.into(), "duration_s"),
            (r#"{"duration_s": 0}"#.into(), "duration_s"),
            (format!(r#"{{"until_ms": {}}}"#, u64::MAX), "until_ms"),
            (r#"{"until_ms": 5}"#.into(), "until_ms"),
            (
                format!(r#"{{"until_ms": {}}}"#, 1000 + year + 1),
                "until_ms",
            ),
        ] {
            let e = maintenance_until(body.as_bytes(), 1000).unwrap_err();
            assert!(e.starts_with(key), "{body}: {e}");
        }
        assert!(maintenance_until(br#"{"until_ms": 1e30}"#, 0)
            .unwrap_err()
            .contains("until_ms"));
        assert!(maintenance_until(br#"{"duration_s": 1, "until_ms": 2}"#, 0).is_err());
        assert!(maintenance_until(br#"{"extra": 1}"#, 0).is_err());
        assert!(maintenance_until(b"{nope", 0).is_err());
    }

    #[test]
    fn heartbeat_bodies() {
        let hb = heartbeat(br#"{"job": "backup", "status": "start", "run_id": "r1"}"#).unwrap();
        assert_eq!(
            (hb.job.as_str(), hb.status, hb.run_id.as_deref()),
            ("backup", crate::core::jobs::Signal::Start, Some("r1"))
        );
        assert!(heartbeat(br#"{"job": "backup", "status": "done"}"#)
            .unwrap_err()
            .contains("unknown variant"));
        assert!(heartbeat(br#"{"status": "ok"}"#).is_err());
        assert!(heartbeat(br#"{"job": "b", "status": "ok", "run_id": ""}"#).is_err());
        assert!(heartbeat(br#"{"job": "b", "status": "ok", "extra": 1}"#).is_err());
    }

    #[test]
    fn query_parameters_are_form_decoded() {
        let url = "https://vigil.example/ops/crashes?app=my+shop%2Fv2&limit=5&app=other#frag";
        assert_eq!(query_param(url, "app").as_deref(), Some("my shop/v2"));
        assert_eq!(query_param(url, "limit").as_deref(), Some("5"));
        assert_eq!(query_param(url, "nope"), None);
        assert_eq!(query_param("https://x/ops/incidents", "state"), None);
        assert_eq!(query_param("https://x/?flag", "flag").as_deref(), Some(""));
        assert_eq!(
            query_param("https://x/?a=100%", "a").as_deref(),
            Some("100%")
        );
        assert_eq!(
            query_param("https://x/?a=%zz%41", "a").as_deref(),
            Some("%zzA")
        );
        assert_eq!(
            query_param("https://x/?a=%C3%A9", "a").as_deref(),
            Some("é")
        );
    }

    #[test]
    fn filters_and_operators() {
        assert_eq!(state_filter(Some("open")), Ok(Some(true)));
        assert!(state_filter(Some("bogus")).is_err());
        assert_eq!(operator(Some("  alice ")), "alice");
        assert_eq!(operator(Some("")), "control-token");
        assert_eq!(operator(None), "control-token");
    }
}

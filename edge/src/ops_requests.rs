//! The `/ops` routes' inputs, parsed the same way in every shell.

use serde::Deserialize;

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

/// The end of a maintenance window from its request body; `None` ends the
/// window now (`{}`).
pub fn maintenance_until(body: &[u8], now_ms: u64) -> Result<Option<u64>, String> {
    let parsed: MaintenanceBody = serde_json::from_slice(body)
        .map_err(|e| format!("expected {{\"until_ms\": ms}} or {{\"duration_s\": s}}: {e}"))?;
    match (parsed.until_ms, parsed.duration_s) {
        (Some(_), Some(_)) => Err("give until_ms or duration_s, not both".into()),
        (Some(u), None) => Ok(Some(u)),
        (None, Some(d)) if d.is_finite() && d > 0.0 => Ok(Some(now_ms + (d * 1000.0) as u64)),
        (None, Some(_)) => Err("duration_s must be greater than zero".into()),
        (None, None) => Ok(None),
    }
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
        assert_eq!(maintenance_until(br#"{"until_ms": 5}"#, 1000), Ok(Some(5)));
        assert_eq!(maintenance_until(b"{}", 1000), Ok(None));
        assert!(maintenance_until(br#"{"duration_s": -1}"#, 0).is_err());
        assert!(maintenance_until(br#"{"duration_s": 1, "until_ms": 2}"#, 0).is_err());
        assert!(maintenance_until(br#"{"extra": 1}"#, 0).is_err());
        assert!(maintenance_until(b"{nope", 0).is_err());
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

//! Configuration from the environment, checked once at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use vigil_wire::token::{check_configured, TokenProblem};

use crate::signal::SignalConfig;

/// Longest any configured timeout may be.
const MAX_TIMEOUT_S: f64 = 3600.0;
/// Smallest size at which the audit log may rotate: room for many lines.
const MIN_AUDIT_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("OPS_AGENT_TOKEN is not set: refusing to start without a bearer token")]
    MissingToken,
    #[error("OPS_AGENT_TOKEN {0}")]
    BadToken(TokenProblem),
    #[error("COMPOSE_PROJECT is not set: the agent must know which compose project it may touch")]
    MissingProject,
    #[error("{var}={value:?}: {reason}")]
    Invalid {
        var: &'static str,
        value: String,
        reason: String,
    },
}

pub use vigil_wire::ratelimit::RateLimits;

#[derive(Debug, Clone)]
pub struct Config {
    pub token: String,
    pub listen: SocketAddr,
    pub actions_path: PathBuf,
    pub compose_project: String,
    pub audit_log: PathBuf,
    pub trusted_proxies: Vec<IpNet>,
    pub rate: RateLimits,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// The audit log rotates (into `<audit_log>.1`) before it passes this.
    pub audit_max_bytes: u64,
    /// Longest wait for one Docker call before the daemon counts as hung.
    pub docker_timeout: Duration,
    /// Longest wait for a request's headers, and for the next request on an
    /// idle kept-alive connection.
    pub header_timeout: Duration,
    /// Longest wait for a whole request body.
    pub body_timeout: Duration,
    /// Where container events are signalled, when configured.
    pub signal: Option<SignalConfig>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the configuration through `lookup`, so tests need not touch the
    /// process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let token = lookup("OPS_AGENT_TOKEN").ok_or(ConfigError::MissingToken)?;
        check_configured(&token).map_err(ConfigError::BadToken)?;
        let compose_project = lookup("COMPOSE_PROJECT")
            .filter(|p| !p.is_empty())
            .ok_or(ConfigError::MissingProject)?;
        let listen = parse_var(&lookup, "OPS_AGENT_LISTEN", "127.0.0.1:7070")?;
        let trusted_proxies = match lookup("OPS_AGENT_TRUSTED_PROXIES") {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    parse_net(s)
                        .map_err(|reason| invalid("OPS_AGENT_TRUSTED_PROXIES", &list, reason))
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Config {
            token,
            listen,
            actions_path: lookup("OPS_AGENT_ACTIONS")
                .unwrap_or_else(|| "actions.toml".into())
                .into(),
            compose_project,
            audit_log: lookup("OPS_AGENT_AUDIT_LOG")
                .unwrap_or_else(|| "ops-agent-audit.jsonl".into())
                .into(),
            trusted_proxies,
            rate: RateLimits {
                per_minute: parse_var(&lookup, "OPS_AGENT_RATE_PER_MIN", "120")?,
                burst: parse_var(&lookup, "OPS_AGENT_RATE_BURST", "30")?,
                auth_fail_per_minute: parse_var(&lookup, "OPS_AGENT_AUTH_FAIL_PER_MIN", "10")?,
                auth_fail_burst: parse_var(&lookup, "OPS_AGENT_AUTH_FAIL_BURST", "5")?,
            },
            body_limit: parse_var(&lookup, "OPS_AGENT_BODY_LIMIT", "16384")?,
            audit_max_bytes: parse_audit_max(&lookup)?,
            docker_timeout: parse_secs(&lookup, "OPS_AGENT_DOCKER_TIMEOUT_S", "10")?,
            header_timeout: parse_secs(&lookup, "OPS_AGENT_HEADER_TIMEOUT_S", "10")?,
            body_timeout: parse_secs(&lookup, "OPS_AGENT_BODY_TIMEOUT_S", "10")?,
            signal: parse_signal(&lookup)?,
        })
    }
}

/// `OPS_AGENT_SIGNAL_URL`, `OPS_AGENT_SIGNAL_TOKEN` and `OPS_AGENT_HOST_ID`:
/// all three (signals on) or none (off); a partial set names what is missing.
fn parse_signal(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<Option<SignalConfig>, ConfigError> {
    const VARS: [&str; 3] = [
        "OPS_AGENT_SIGNAL_URL",
        "OPS_AGENT_SIGNAL_TOKEN",
        "OPS_AGENT_HOST_ID",
    ];
    let [url, token, host_id] = VARS.map(|v| lookup(v).filter(|x| !x.is_empty()));
    let (url, token, host_id) = match (url, token, host_id) {
        (None, None, None) => return Ok(None),
        (Some(u), Some(t), Some(h)) => (u, t, h),
        (u, t, h) => {
            let missing = [u.is_none(), t.is_none(), h.is_none()];
            let var = VARS[missing.iter().position(|m| *m).unwrap_or(0)];
            return Err(invalid(
                var,
                "",
                "signals need OPS_AGENT_SIGNAL_URL, OPS_AGENT_SIGNAL_TOKEN and OPS_AGENT_HOST_ID together",
            ));
        }
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(invalid(
            "OPS_AGENT_SIGNAL_URL",
            &url,
            "the edge's base URL: http:// or https://",
        ));
    }
    check_configured(&token).map_err(|p| invalid("OPS_AGENT_SIGNAL_TOKEN", "(hidden)", p))?;
    Ok(Some(SignalConfig {
        url: url.trim_end_matches('/').to_string(),
        token,
        host_id,
    }))
}

fn invalid(var: &'static str, value: &str, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        var,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn parse_var<T>(
    lookup: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: &str,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let value = lookup(var).unwrap_or_else(|| default.to_string());
    value.trim().parse().map_err(|e| invalid(var, &value, e))
}

fn parse_audit_max(lookup: &impl Fn(&str) -> Option<String>) -> Result<u64, ConfigError> {
    const VAR: &str = "OPS_AGENT_AUDIT_MAX_BYTES";
    let bytes: u64 = parse_var(lookup, VAR, "10485760")?;
    if bytes < MIN_AUDIT_BYTES {
        return Err(invalid(
            VAR,
            &bytes.to_string(),
            format!("must be at least {MIN_AUDIT_BYTES} bytes"),
        ));
    }
    Ok(bytes)
}

/// A duration in seconds (fractions allowed), above 0 and at most an hour.
fn parse_secs(
    lookup: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: &str,
) -> Result<Duration, ConfigError> {
    let value = lookup(var).unwrap_or_else(|| default.to_string());
    let secs: f64 = value.trim().parse().map_err(|e| invalid(var, &value, e))?;
    if !(secs > 0.0 && secs <= MAX_TIMEOUT_S) {
        return Err(invalid(
            var,
            &value,
            format!("must be more than 0 and at most {MAX_TIMEOUT_S} seconds"),
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A CIDR, or a bare address meaning just that host.
fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or CIDR"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    const TOKEN: (&str, &str) = ("OPS_AGENT_TOKEN", "0123456789abcdef");
    const PROJECT: (&str, &str) = ("COMPOSE_PROJECT", "demo");

    #[test]
    fn token_is_required_long_enough_and_unpadded() {
        assert!(matches!(from(&[PROJECT]), Err(ConfigError::MissingToken)));
        assert!(matches!(
            from(&[("OPS_AGENT_TOKEN", "short"), PROJECT]),
            Err(ConfigError::BadToken(TokenProblem::TooShort(5)))
        ));
        for padded in ["                ", "0123456789abcdef\n"] {
            let e = from(&[("OPS_AGENT_TOKEN", padded), PROJECT]).unwrap_err();
            assert!(matches!(e, ConfigError::BadToken(TokenProblem::Whitespace)));
            assert!(e.to_string().starts_with("OPS_AGENT_TOKEN "), "{e}");
        }
        assert!(from(&[TOKEN, PROJECT]).is_ok());
    }

    #[test]
    fn the_audit_log_size_has_a_floor() {
        assert_eq!(from(&[TOKEN, PROJECT]).unwrap().audit_max_bytes, 10 << 20);
        let e = from(&[TOKEN, PROJECT, ("OPS_AGENT_AUDIT_MAX_BYTES", "100")]).unwrap_err();
        assert!(
            e.to_string().starts_with("OPS_AGENT_AUDIT_MAX_BYTES="),
            "{e}"
        );
    }

    #[test]
    fn timeouts_take_seconds_within_range() {
        let c = from(&[TOKEN, PROJECT, ("OPS_AGENT_DOCKER_TIMEOUT_S", "0.5")]).unwrap();
        assert_eq!(c.docker_timeout, Duration::from_millis(500));
        assert_eq!(c.header_timeout, Duration::from_secs(10));
        for bad in ["0", "-1", "1e308", "NaN", "inf", "soon"] {
            let e = from(&[TOKEN, PROJECT, ("OPS_AGENT_BODY_TIMEOUT_S", bad)]).unwrap_err();
            assert!(
                e.to_string().starts_with("OPS_AGENT_BODY_TIMEOUT_S="),
                "{e}"
            );
        }
    }

    #[test]
    fn defaults_are_documented_ones() {
        let c = from(&[TOKEN, PROJECT]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(c.actions_path, PathBuf::from("actions.toml"));
        assert!(c.trusted_proxies.is_empty());
    }

    #[test]
    fn trusted_proxies_take_cidrs_and_addresses() {
        let c = from(&[
            TOKEN,
            PROJECT,
            ("OPS_AGENT_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1,::1"),
        ])
        .unwrap();
        assert_eq!(c.trusted_proxies.len(), 3);
        let e = from(&[TOKEN, PROJECT, ("OPS_AGENT_TRUSTED_PROXIES", "nope")]).unwrap_err();
        assert!(e.to_string().contains("OPS_AGENT_TRUSTED_PROXIES"), "{e}");
    }

    #[test]
    fn signals_need_url_token_and_host_together() {
        assert!(from(&[TOKEN, PROJECT]).unwrap().signal.is_none());
        let url = ("OPS_AGENT_SIGNAL_URL", "https://edge.example/");
        let token = ("OPS_AGENT_SIGNAL_TOKEN", "signal-token-0123456789");
        let host = ("OPS_AGENT_HOST_ID", "vps1");
        let c = from(&[TOKEN, PROJECT, url, token, host]).unwrap();
        let s = c.signal.unwrap();
        assert_eq!(
            (s.url.as_str(), s.host_id.as_str()),
            ("https://edge.example", "vps1")
        );
        let e = from(&[TOKEN, PROJECT, url, host]).unwrap_err();
        assert!(e.to_string().starts_with("OPS_AGENT_SIGNAL_TOKEN="), "{e}");
        let e = from(&[TOKEN, PROJECT, url, token]).unwrap_err();
        assert!(e.to_string().starts_with("OPS_AGENT_HOST_ID="), "{e}");
        let e = from(&[
            TOKEN,
            PROJECT,
            ("OPS_AGENT_SIGNAL_URL", "edge:8080"),
            token,
            host,
        ])
        .unwrap_err();
        assert!(e.to_string().starts_with("OPS_AGENT_SIGNAL_URL="), "{e}");
        let e = from(&[
            TOKEN,
            PROJECT,
            url,
            ("OPS_AGENT_SIGNAL_TOKEN", "short"),
            host,
        ])
        .unwrap_err();
        assert!(e.to_string().starts_with("OPS_AGENT_SIGNAL_TOKEN="), "{e}");
        assert!(
            !e.to_string().contains("short"),
            "the token is not echoed: {e}"
        );
    }

    #[test]
    fn bad_numbers_name_the_variable() {
        let e = from(&[TOKEN, PROJECT, ("OPS_AGENT_RATE_BURST", "0")]).unwrap_err();
        assert!(e.to_string().starts_with("OPS_AGENT_RATE_BURST="), "{e}");
    }
}

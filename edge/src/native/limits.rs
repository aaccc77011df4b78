//! Per-client limits of the native API (the ops-agent's governor limiters,
//! shared through `vigil_wire`): requests to `/_log`, and failed
//! authentications on every route.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use vigil_wire::client_ip::{client_ip, IpNet};
use vigil_wire::ratelimit::{Limiters, RateLimits};

use crate::config::Config;

/// How often clients whose quota refilled are forgotten.
const SWEEP: Duration = Duration::from_secs(60);

pub struct ClientLimits {
    limiters: Limiters,
    trusted: Vec<IpNet>,
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// The configured trusted proxies, or the key and reason of a bad one.
pub fn trusted_proxies(config: &Config) -> Result<Vec<IpNet>, (String, String)> {
    config
        .trusted_proxies
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|e| (format!("trusted_proxies[{i}]"), format!("{s:?}: {e}")))
        })
        .collect()
}

impl ClientLimits {
    /// The limits from the configuration (validated at start), with a task
    /// that forgets idle clients so memory stays bounded.
    pub fn start(config: &Config) -> Arc<Self> {
        let limits = RateLimits {
            per_minute: nz(config.crash_log.per_minute),
            burst: nz(config.crash_log.burst),
            auth_fail_per_minute: nz(config.auth_fail_per_minute),
            auth_fail_burst: nz(config.auth_fail_burst),
        };
        let this = Arc::new(ClientLimits {
            limiters: Limiters::new(limits),
            trusted: trusted_proxies(config).unwrap_or_default(),
        });
        let sweeper = Arc::downgrade(&this);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP);
            loop {
                tick.tick().await;
                let Some(l) = sweeper.upgrade() else { return };
                l.limiters.forget_idle();
            }
        });
        this
    }

    /// The client of a request: the peer, or what a trusted proxy says.
    pub fn client(&self, req: &Request) -> Option<IpAddr> {
        let peer = req.extensions().get::<ConnectInfo<SocketAddr>>()?.0.ip();
        Some(client_ip(peer, req.headers(), &self.trusted))
    }

    /// Counts one crash report request; `Some` is the 429 to answer.
    pub fn crash_report(&self, req: &Request) -> Option<Response> {
        let ip = self.client(req)?;
        let wait = self.limiters.check_request(ip).err()?;
        // Per refusal, at debug: a flood must not become a flood of lines.
        tracing::debug!(client = %ip, "/_log: rate limited");
        Some(too_many(wait))
    }

    /// Counts one failed authentication; `Some` is the 429 to answer once
    /// the client has failed too often.
    pub fn auth_failure(&self, req: &Request) -> Option<Response> {
        let ip = self.client(req)?;
        tracing::debug!(client = %ip, path = %req.uri().path(), "failed authentication");
        self.limiters.check_auth_failure(ip).err().map(too_many)
    }
}

fn too_many(wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut res = super::api::error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests from this address; retry in {secs} s"),
    );
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res
}

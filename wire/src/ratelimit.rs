//! Per-IP rate limits (governor): one quota for requests, a stricter one for
//! failed authentications. Shared by the ops-agent and the native edge.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

/// Per-client quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Requests per minute per client IP.
    pub per_minute: NonZeroU32,
    pub burst: NonZeroU32,
    /// Failed authentications per minute per client IP.
    pub auth_fail_per_minute: NonZeroU32,
    pub auth_fail_burst: NonZeroU32,
}

type Keyed<C> =
    RateLimiter<IpAddr, DashMapStateStore<IpAddr>, C, NoOpMiddleware<<C as Clock>::Instant>>;

pub struct Limiters<C: Clock = DefaultClock> {
    requests: Keyed<C>,
    auth_failures: Keyed<C>,
    clock: C,
}

impl Limiters<DefaultClock> {
    pub fn new(limits: RateLimits) -> Self {
        Self::with_clock(limits, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limiters<C> {
    pub fn with_clock(limits: RateLimits, clock: C) -> Self {
        let quota = |per_minute, burst| Quota::per_minute(per_minute).allow_burst(burst);
        Self {
            requests: RateLimiter::dashmap_with_clock(
                quota(limits.per_minute, limits.burst),
                clock.clone(),
            ),
            auth_failures: RateLimiter::dashmap_with_clock(
                quota(limits.auth_fail_per_minute, limits.auth_fail_burst),
                clock.clone(),
            ),
            clock,
        }
    }

    /// Counts one request; `Err` carries how long the client must wait.
    pub fn check_request(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check(&self.requests, ip)
    }

    /// Counts one failed authentication; `Err` once the client has failed too
    /// often.
    pub fn check_auth_failure(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check(&self.auth_failures, ip)
    }

    fn check(&self, limiter: &Keyed<C>, ip: IpAddr) -> Result<(), Duration> {
        limiter
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets clients whose quota has fully refilled, so memory stays bounded
    /// by the clients of the last refill period however many addresses call.
    pub fn forget_idle(&self) {
        for limiter in [&self.requests, &self.auth_failures] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    pub fn tracked_clients(&self) -> usize {
        self.requests.len() + self.auth_failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    fn limits() -> RateLimits {
        RateLimits {
            per_minute: nz(60),
            burst: nz(3),
            auth_fail_per_minute: nz(6),
            auth_fail_burst: nz(2),
        }
    }

    #[test]
    fn burst_then_refusal_then_refill() {
        let clock = FakeRelativeClock::default();
        let l = Limiters::with_clock(limits(), clock.clone());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check_request(a).is_ok());
        }
        let wait = l.check_request(a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        clock.advance(Duration::from_secs(1));
        assert!(l.check_request(a).is_ok());
    }

    #[test]
    fn clients_are_limited_apart() {
        let l = Limiters::with_clock(limits(), FakeRelativeClock::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            l.check_request(a).unwrap();
        }
        assert!(l.check_request(a).is_err());
        assert!(l.check_request(b).is_ok());
    }

    #[test]
    fn auth_failures_have_the_stricter_quota() {
        let l = Limiters::with_clock(limits(), FakeRelativeClock::default());
        let a: IpAddr = "::1".parse().unwrap();
        assert!(l.check_auth_failure(a).is_ok());
        assert!(l.check_auth_failure(a).is_ok());
        let wait = l.check_auth_failure(a).unwrap_err();
        assert!(wait > Duration::from_secs(5), "{wait:?}");
    }

    #[test]
    fn memory_is_bounded_under_many_addresses() {
        let clock = FakeRelativeClock::default();
        let l = Limiters::with_clock(limits(), clock.clone());
        for i in 0..10_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.check_request(ip).unwrap();
        }
        assert_eq!(l.tracked_clients(), 10_000);
        clock.advance(Duration::from_secs(60));
        l.forget_idle();
        assert_eq!(l.tracked_clients(), 0);
    }
}

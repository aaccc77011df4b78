//! Which address a request comes from: the TCP peer, unless the peer is a
//! trusted proxy, in which case the proxy's header says.

use std::net::IpAddr;

use http::HeaderMap;
pub use ipnet::IpNet;

/// Headers a trusted proxy sets, in order of preference.
const PROXY_HEADERS: [&str; 2] = ["cf-connecting-ip", "x-real-ip"];

pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if !trusted.iter().any(|net| net.contains(&peer)) {
        return peer;
    }
    PROXY_HEADERS
        .iter()
        .filter_map(|h| headers.get(*h)?.to_str().ok()?.trim().parse().ok())
        .next()
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_cannot_spoof_its_address() {
        let h = headers(&[("x-real-ip", "1.2.3.4"), ("cf-connecting-ip", "5.6.7.8")]);
        assert_eq!(client_ip(ip("9.9.9.9"), &h, &[]), ip("9.9.9.9"));
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        assert_eq!(client_ip(ip("9.9.9.9"), &h, &trusted), ip("9.9.9.9"));
    }

    #[test]
    fn trusted_proxy_header_is_used() {
        let trusted = ["127.0.0.1/32".parse().unwrap()];
        let h = headers(&[("x-real-ip", "1.2.3.4")]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("1.2.3.4"));
        let both = headers(&[
            ("x-real-ip", "1.2.3.4"),
            ("cf-connecting-ip", "2001:db8::1"),
        ]);
        assert_eq!(
            client_ip(ip("127.0.0.1"), &both, &trusted),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn trusted_proxy_with_garbage_header_falls_back_to_peer() {
        let trusted = ["127.0.0.1/32".parse().unwrap()];
        let h = headers(&[("x-real-ip", "not-an-ip")]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("127.0.0.1"));
        assert_eq!(
            client_ip(ip("127.0.0.1"), &HeaderMap::new(), &trusted),
            ip("127.0.0.1")
        );
    }
}

//! The PostHog proxy's rules, for both shells: which upstream a path goes
//! to, which methods are taken, which headers cross in each direction.
//! The browser talks to a first-party host; PostHog sees the client's
//! address in `X-Forwarded-For` (what PostHog reads behind a proxy), never
//! its cookies or credentials.

use crate::config::PostHog;

/// The methods the proxy takes (posthog-js sends GET and POST; browsers
/// send OPTIONS before a cross-origin POST).
pub const METHODS: [&str; 4] = ["GET", "HEAD", "POST", "OPTIONS"];

/// The upstream URL for `path_and_query`: `/static/*` to the assets host,
/// everything else to the ingestion host.
pub fn upstream(config: &PostHog, path_and_query: &str) -> String {
    let host = if path_and_query.starts_with("/static/") {
        &config.assets_host
    } else {
        &config.ingest_host
    };
    format!("{}{path_and_query}", host.trim_end_matches('/'))
}

/// A request URL's host (no port) and its path with the query:
/// `https://ph.example.com:8443/e/?v=1` is `("ph.example.com", "/e/?v=1")`
/// (by hand: the `url` crate would add 70 KB to the Worker's bundle).
pub fn split_url(url: &str) -> (&str, &str) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split('#').next().unwrap_or(rest);
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], &rest[i..]),
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host.split(':').next().unwrap_or(host),
    };
    (host, path)
}

/// Whether a host is the proxy's: its first label is `ph`.
pub fn is_proxy_host(host: &str) -> bool {
    host.starts_with("ph.")
}

/// The route template of a proxied request, for analytics.
pub fn route(path: &str) -> &'static str {
    if path.starts_with("/static/") {
        "ph./static/*"
    } else {
        "ph./*"
    }
}

/// Hop-by-hop headers (RFC 9110 7.6.1) and the ones the HTTP client sets.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
    "content-length",
];

/// Whether a request header goes upstream: not hop-by-hop, not the
/// client's cookies or credentials, not a client-supplied address (the
/// proxy sets `X-Forwarded-For` itself), no Cloudflare header.
pub fn forward_request_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    !(HOP_BY_HOP.contains(&name.as_str())
        || matches!(
            name.as_str(),
            "cookie"
                | "authorization"
                | "proxy-authorization"
                | "forwarded"
                | "x-forwarded-for"
                | "x-forwarded-host"
                | "x-forwarded-proto"
                | "x-real-ip"
        )
        || name.starts_with("cf-"))
}

/// Whether an answer's header goes back to the browser: not hop-by-hop,
/// and no cookie set on the first-party host.
pub fn forward_response_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    !(HOP_BY_HOP.contains(&name.as_str()) || name == "set-cookie")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PostHog {
        PostHog::default()
    }

    #[test]
    fn static_goes_to_assets_the_rest_to_ingestion() {
        let c = config();
        assert_eq!(
            upstream(&c, "/static/array.js?v=1"),
            "https://eu-assets.i.posthog.com/static/array.js?v=1"
        );
        assert_eq!(
            upstream(&c, "/e/?compression=gzip-js"),
            "https://eu.i.posthog.com/e/?compression=gzip-js"
        );
        assert_eq!(upstream(&c, "/staticx"), "https://eu.i.posthog.com/staticx");
    }

    #[test]
    fn urls_split_into_host_and_path() {
        assert_eq!(
            split_url("https://ph.example.com:8443/e/?v=1#x"),
            ("ph.example.com", "/e/?v=1")
        );
        assert_eq!(
            split_url("http://[::1]:8787/static/a.js"),
            ("::1", "/static/a.js")
        );
        assert_eq!(
            split_url("https://ph.example.com?v=1"),
            ("ph.example.com", "?v=1")
        );
        assert_eq!(split_url("https://ph.example.com"), ("ph.example.com", "/"));
        assert!(is_proxy_host(split_url("https://ph.example.com/").0));
        assert!(!is_proxy_host(split_url("https://graph.example.com/").0));
    }

    #[test]
    fn credentials_addresses_and_hop_headers_stay_behind() {
        for h in [
            "Cookie",
            "authorization",
            "X-Forwarded-For",
            "CF-Connecting-IP",
            "Host",
            "Connection",
            "x-real-ip",
        ] {
            assert!(!forward_request_header(h), "{h}");
        }
        for h in [
            "content-type",
            "content-encoding",
            "user-agent",
            "origin",
            "accept",
        ] {
            assert!(forward_request_header(h), "{h}");
        }
        assert!(!forward_response_header("Set-Cookie"));
        assert!(forward_response_header("access-control-allow-origin"));
    }
}

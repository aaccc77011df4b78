//! The PostHog proxy on `ph.` hosts (`crate::posthog` has the rules): the
//! request's body stream goes upstream and the answer's stream comes back,
//! never buffered. Without a `Content-Length` a body's size cannot be
//! checked before it streams, so such a POST is refused (411); posthog-js
//! always sends one.

use worker::web_sys::RequestRedirect;
use worker::{Env, Fetch, Headers, Method, Request, Response};

use super::load_config;
use super::routes::error;
use crate::posthog::{
    forward_request_header, forward_response_header, is_proxy_host, split_url, upstream, METHODS,
};

/// Whether `req` is for the proxy: a host whose first label is `ph`.
pub fn is_posthog(req: &Request) -> bool {
    is_proxy_host(split_url(&req.inner().url()).0)
}

pub async fn proxy(req: Request, env: &Env) -> worker::Result<Response> {
    let config = match load_config(env) {
        Ok(c) => c,
        Err(e) => return error(500, "no_configuration", e),
    };
    let Some(ph) = &config.posthog else {
        return error(404, "not_found", "no [posthog] section: the proxy is off");
    };
    let method = req.method();
    if !METHODS.contains(&method.as_ref()) {
        let mut res = error(405, "method_not_allowed", "GET, HEAD, POST or OPTIONS")?;
        res.headers_mut().set("allow", "GET, HEAD, POST, OPTIONS")?;
        return Ok(res);
    }
    let declared = req
        .headers()
        .get("content-length")?
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > ph.max_body_bytes => {
            return error(
                413,
                "too_large",
                format!("at most {} bytes", ph.max_body_bytes),
            )
        }
        None if method == Method::Post => {
            return error(411, "length_required", "a body needs a Content-Length")
        }
        _ => {}
    }
    let url = req.inner().url();
    let path = split_url(&url).1;
    let headers = Headers::new();
    for (name, value) in req.headers().entries() {
        if forward_request_header(&name) {
            headers.set(&name, &value)?;
        }
    }
    if let Some(ip) = req.headers().get("cf-connecting-ip")? {
        headers.set("x-forwarded-for", &ip)?;
    }
    let init = super::io::request_init(method.as_ref(), &headers);
    init.set_redirect(RequestRedirect::Manual);
    if let Some(body) = req.inner().body() {
        init.set_body(&body);
    }
    let out = super::io::request(&upstream(ph, path), &init).map_err(worker::Error::RustError)?;
    let res = match Fetch::Request(out).send().await {
        Ok(r) => r,
        Err(e) => return error(502, "posthog_unavailable", e.to_string()),
    };
    // A fetched answer's headers are immutable: the kept ones go into new
    // headers; status and body stream stay as they are.
    let kept = Headers::new();
    for (name, value) in res.headers().entries() {
        if forward_response_header(&name) {
            kept.append(&name, &value)?;
        }
    }
    Ok(res.with_headers(kept))
}

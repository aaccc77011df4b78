//! The Worker transport: `worker::Fetch` with `cache: no-store`, abandoned
//! after the timeout (an abort signal raced against a delay); redirects
//! followed or not per call (`redirect: manual`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{select, Either};
use worker::wasm_bindgen::JsValue;
use worker::web_sys::{self, RequestCache, RequestRedirect};
use worker::{AbortController, Date, Delay, Fetch, Headers, Request};

use crate::client::{Call, Client, Exchange, Transport, BODY_LIMIT};
use crate::config::Config;
use crate::shell::Secrets;

pub fn now_ms() -> u64 {
    Date::now().as_millis()
}

/// The edge's calls over `worker::Fetch`.
pub type WorkerIo = Client<WorkerFetch>;

pub fn worker_io(config: &Arc<Config>, secrets: Secrets) -> WorkerIo {
    Client::with_transport(WorkerFetch, Arc::clone(config), secrets)
}

/// A request built on web_sys's init: worker's `RequestInit` also carries
/// Cloudflare's `cf` options, whose serializer (11 KB of the bundle before
/// `wasm-opt`) Vigil never uses.
pub fn request_init(method: &str, headers: &Headers) -> web_sys::RequestInit {
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    init.set_headers(headers.as_ref());
    init
}

/// The request `init` describes, to `url`.
pub fn request(url: &str, init: &web_sys::RequestInit) -> Result<Request, String> {
    web_sys::Request::new_with_str_and_init(url, init)
        .map(Request::from)
        .map_err(|e| {
            e.as_string()
                .unwrap_or_else(|| format!("invalid URL or options for a request to {url}"))
        })
}

pub struct WorkerFetch;

/// `f`, or `None` when `ms` pass first (then `on_timeout` runs).
async fn within<F: Future>(f: F, ms: u64, on_timeout: impl FnOnce()) -> Option<F::Output> {
    let f = Box::pin(f);
    let delay = Box::pin(Delay::from(Duration::from_millis(ms)));
    match select(f, delay).await {
        Either::Left((out, _)) => Some(out),
        Either::Right(_) => {
            on_timeout();
            None
        }
    }
}

impl Transport for WorkerFetch {
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    async fn sleep_ms(&self, ms: u64) {
        Delay::from(Duration::from_millis(ms)).await;
    }

    async fn send(&self, call: Call<'_>) -> Exchange {
        let started = now_ms();
        let elapsed_ms = || now_ms().saturating_sub(started);
        let h = Headers::new();
        for (k, v) in call.headers {
            if let Err(e) = h.set(k, v) {
                return Exchange::Failed {
                    error: format!("header {k}: {e}"),
                    elapsed_ms: 0,
                };
            }
        }
        let init = request_init(call.method, &h);
        init.set_cache(RequestCache::NoStore);
        if !call.follow_redirects {
            init.set_redirect(RequestRedirect::Manual);
        }
        if let Some(b) = &call.body {
            init.set_body(&JsValue::from_str(b));
        }
        let request = match request(call.url, &init) {
            Ok(r) => r,
            Err(error) => {
                return Exchange::Failed {
                    error,
                    elapsed_ms: 0,
                }
            }
        };
        let controller = AbortController::default();
        let signal = controller.signal();
        let timeout_ms = call.timeout_ms;
        let call = async {
            let mut res = Fetch::Request(request)
                .send_with_signal(&signal)
                .await
                .map_err(|e| e.to_string())?;
            let status = res.status_code();
            let retry_after = res
                .headers()
                .get("retry-after")
                .ok()
                .flatten()
                .and_then(|v| crate::shell::retry_after_secs(&v));
            let headers = res.headers().entries().collect();
            let mut body = res.bytes().await.map_err(|e| e.to_string())?;
            body.truncate(BODY_LIMIT);
            Ok::<_, String>((status, retry_after, headers, body))
        };
        match within(call, timeout_ms, || controller.abort()).await {
            None => Exchange::TimedOut {
                elapsed_ms: elapsed_ms(),
            },
            Some(Err(error)) => Exchange::Failed {
                error,
                elapsed_ms: elapsed_ms(),
            },
            Some(Ok((status, retry_after, headers, body))) => Exchange::Answered {
                status,
                retry_after,
                headers,
                body,
                // fetch shows no certificate (tls_expiry_days is refused here).
                cert: None,
                elapsed_ms: elapsed_ms(),
            },
        }
    }
}

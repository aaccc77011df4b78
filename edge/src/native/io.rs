//! The native transport: reqwest with a timeout on every exchange, a
//! monotonic clock for latencies, tokio for sleeping.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use reqwest::Method;

use crate::client::{Client, Exchange, Transport, BODY_LIMIT};
use crate::config::Config;
use crate::shell::Secrets;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The edge's calls over reqwest.
pub type NativeIo = Client<Reqwest>;

impl NativeIo {
    pub fn new(config: Arc<Config>, secrets: Secrets) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("vigil-edge/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds with static settings");
        Client::with_transport(Reqwest(http), config, secrets)
    }
}

pub struct Reqwest(reqwest::Client);

/// An error with its causes, which reqwest keeps apart ("error sending
/// request" alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl Transport for Reqwest {
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    async fn sleep_ms(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    async fn exchange(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
        timeout_ms: u64,
    ) -> Exchange {
        let started = Instant::now();
        let elapsed_ms = || started.elapsed().as_millis() as u64;
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                Exchange::TimedOut {
                    elapsed_ms: elapsed_ms(),
                }
            } else {
                Exchange::Failed {
                    error: error_chain(&e),
                    elapsed_ms: elapsed_ms(),
                }
            }
        };
        let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
        let mut req = self
            .0
            .request(method, url)
            .timeout(Duration::from_millis(timeout_ms));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let res = match req.send().await {
            Ok(r) => r,
            Err(e) => return failed(e),
        };
        let status = res.status().as_u16();
        let retry_after = res
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let mut body = Vec::new();
        let mut stream = res.bytes_stream();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => {
                    body.extend_from_slice(&c[..c.len().min(BODY_LIMIT - body.len())]);
                    if body.len() >= BODY_LIMIT {
                        break;
                    }
                }
                Err(e) => return failed(e),
            }
        }
        Exchange::Answered {
            status,
            retry_after,
            body,
            elapsed_ms: elapsed_ms(),
        }
    }
}

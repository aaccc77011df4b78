//! The native transport: reqwest with a timeout on every exchange, a
//! monotonic clock for latencies, tokio for sleeping. Probes see the
//! server's certificate (`tls_info`), read here for `tls_expiry_days`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use reqwest::redirect::Policy;
use reqwest::Method;
use sha2::{Digest, Sha256};

use crate::client::{Call, Client, Exchange, Transport, BODY_LIMIT};
use crate::config::Config;
use crate::core::probe::PeerCert;
use crate::shell::Secrets;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The edge's calls over reqwest.
pub type NativeIo = Client<Reqwest>;

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("probe_ca_file {path}: {why}")]
    CaFile { path: String, why: String },
    #[error("the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

impl NativeIo {
    /// The HTTP clients; `probe_ca_file`'s roots are trusted beside the
    /// built-in ones.
    pub fn new(config: Arc<Config>, secrets: Secrets) -> Result<Self, IoError> {
        let roots = match &config.probe_ca_file {
            Some(path) => {
                let ca_error = |why: String| IoError::CaFile {
                    path: path.clone(),
                    why,
                };
                let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
                let roots = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| ca_error(e.to_string()))?;
                if roots.is_empty() {
                    return Err(ca_error("no certificate in the file".into()));
                }
                roots
            }
            None => Vec::new(),
        };
        let build = |redirects: Policy| {
            roots
                .iter()
                .fold(reqwest::Client::builder(), |b, c| {
                    b.add_root_certificate(c.clone())
                })
                .user_agent(concat!("vigil-edge/", env!("CARGO_PKG_VERSION")))
                .redirect(redirects)
                .tls_info(true)
                .build()
        };
        let transport = Reqwest {
            follow: build(Policy::default())?,
            no_follow: build(Policy::none())?,
        };
        Ok(Client::with_transport(transport, config, secrets))
    }
}

/// Two clients: redirects are a client's policy in reqwest.
pub struct Reqwest {
    follow: reqwest::Client,
    no_follow: reqwest::Client,
}

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

/// The server certificate's end and fingerprint, from its DER.
fn peer_cert(der: &[u8]) -> Option<PeerCert> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let not_after_s = cert.validity().not_after.timestamp();
    Some(PeerCert {
        not_after_ms: u64::try_from(not_after_s).ok()?.saturating_mul(1000),
        fingerprint: hex::encode(Sha256::digest(der)),
    })
}

impl Transport for Reqwest {
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    async fn sleep_ms(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    async fn send(&self, call: Call<'_>) -> Exchange {
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
        let method = Method::from_bytes(call.method.as_bytes()).unwrap_or(Method::GET);
        let client = if call.follow_redirects {
            &self.follow
        } else {
            &self.no_follow
        };
        let mut req = client
            .request(method, call.url)
            .timeout(Duration::from_millis(call.timeout_ms));
        for (k, v) in call.headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = call.body {
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
            .and_then(|v| crate::shell::retry_after_secs(v.to_str().ok()?));
        let headers = res
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let cert = res
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|tls| tls.peer_certificate())
            .and_then(peer_cert);
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
            headers,
            body,
            cert,
            elapsed_ms: elapsed_ms(),
        }
    }
}

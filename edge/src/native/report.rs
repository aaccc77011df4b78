//! Remote probers (issue 15): `vigil-edge --probe-only --report-to URL`
//! probes the targets that list its region and reports what it saw to the
//! main edge's `POST /ops/observations`, in signed batches; and the
//! signature the main edge checks.
//!
//! A batch is the JSON of `core::vantage::Batch` (region, sequence number,
//! the prober's clock, observations), sent with `X-Vigil-Timestamp` (the
//! batch's `sent_at_ms`) and `X-Vigil-Signature: sha256=<hex>`, the
//! HMAC-SHA256 of `<timestamp>.<body>` under `OBSERVATIONS_TOKEN`. The
//! token itself never travels. The sequence number (strictly increasing,
//! the prober's clock in milliseconds or one more than the last) makes a
//! replayed batch useless; the timestamp window (`vantage::CLOCK_SKEW_MS`)
//! bounds how long a captured batch could matter at all.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tracing::Instrument;

use super::io::{now_ms, NativeIo};
use crate::config::Config;
use crate::core::probe::Observation;
use crate::core::vantage::{Batch, ProberSchedule, BATCH_MAX};
use crate::remediation::RemediationIo;
use crate::shell::Secrets;

pub const TIMESTAMP_HEADER: &str = "x-vigil-timestamp";
pub const SIGNATURE_HEADER: &str = "x-vigil-signature";
/// Largest batch body the main edge reads.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// Observations a prober keeps while the main edge cannot be reached
/// (the oldest are dropped past it, and said so in the log).
const PENDING_MAX: usize = 10 * BATCH_MAX;

fn mac(token: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `X-Vigil-Signature` value for a body sent at `timestamp`.
pub fn signature(token: &str, timestamp: &str, body: &[u8]) -> String {
    let bytes = mac(token, timestamp, body).finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Whether `signature` signs `timestamp` and `body` under `token`
/// (compared in constant time).
pub fn verify(token: &str, timestamp: &str, signature: &str, body: &[u8]) -> bool {
    let Some(hex) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    bytes.is_some_and(|b| mac(token, timestamp, body).verify_slice(&b).is_ok())
}

/// Runs a prober for `config.region` until `shutdown`: probes on its own
/// schedule (`vantage::ProberSchedule`), a batch after every wave.
pub async fn run_prober(
    config: Arc<Config>,
    report_to: String,
    token: String,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut schedule = ProberSchedule::new(&config, now_ms());
    let targets: Vec<&str> = schedule.targets().collect();
    if targets.is_empty() {
        anyhow::bail!(
            "no target lists region {:?} in its regions: nothing to probe",
            config.region
        );
    }
    tracing::info!(region = %config.region, ?targets, report_to, "vigil-edge prober running");
    // The probes' own secrets (`headers_env`), as the main edge reads them.
    let secrets = Secrets::from_env(&config, |k| std::env::var(k).ok());
    secrets
        .check_probe_headers(&config)
        .map_err(anyhow::Error::msg)?;
    let io = Arc::new(NativeIo::new(config.clone(), secrets)?);
    let mut sender = Sender {
        http: reqwest::Client::builder()
            .user_agent(concat!("vigil-edge/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(10))
            .build()?,
        url: format!("{}/ops/observations", report_to.trim_end_matches('/')),
        token,
        region: config.region.clone(),
        seq: 0,
        pending: VecDeque::new(),
    };
    tokio::pin!(shutdown);
    loop {
        let due = schedule.due(now_ms());
        let targets = due.iter().filter_map(|id| config.target(id).cloned());
        let observations: Vec<Observation> = stream::iter(targets)
            .map(|target| {
                let io = io.clone();
                async move { io.probe(&target).await }
            })
            .buffer_unordered(config.probe_concurrency)
            .collect()
            .await;
        for obs in &observations {
            schedule.observe(&config, obs, now_ms());
        }
        sender
            .send(observations)
            .instrument(tracing::info_span!("report"))
            .await;
        let next = schedule
            .next_at_ms()
            .unwrap_or(now_ms() + config.interval_ms());
        let wait = Duration::from_millis(next.saturating_sub(now_ms()).max(10));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut shutdown => return Ok(()),
        }
    }
}

struct Sender {
    http: reqwest::Client,
    url: String,
    token: String,
    region: String,
    seq: u64,
    pending: VecDeque<Observation>,
}

impl Sender {
    /// Sends what is pending, oldest first, a batch at a time; what the
    /// main edge could not be asked about is kept for the next wave.
    async fn send(&mut self, observations: Vec<Observation>) {
        self.pending.extend(observations);
        let excess = self.pending.len().saturating_sub(PENDING_MAX);
        if excess > 0 {
            self.pending.drain(..excess);
            tracing::warn!(
                dropped = excess,
                "the main edge is unreachable for long: the oldest observations are dropped"
            );
        }
        while !self.pending.is_empty() {
            let n = self.pending.len().min(BATCH_MAX);
            let sent_at_ms = now_ms();
            self.seq = (self.seq + 1).max(sent_at_ms);
            let batch = Batch {
                region: self.region.clone(),
                seq: self.seq,
                sent_at_ms,
                observations: self.pending.iter().take(n).cloned().collect(),
            };
            let body = match serde_json::to_vec(&batch) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode a batch");
                    return;
                }
            };
            let timestamp = sent_at_ms.to_string();
            let res = self
                .http
                .post(&self.url)
                .header("content-type", "application/json")
                .header(TIMESTAMP_HEADER, &timestamp)
                .header(SIGNATURE_HEADER, signature(&self.token, &timestamp, &body))
                .body(body)
                .send()
                .await;
            match res {
                Ok(r) if r.status().is_success() => {
                    self.pending.drain(..n);
                    tracing::debug!(observations = n, seq = self.seq, "batch taken");
                }
                Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                    // Refused for what it is (token, region, clock):
                    // sending it again would change nothing.
                    let status = r.status();
                    let why = r.text().await.unwrap_or_default();
                    tracing::error!(%status, why, observations = n, "the main edge refused a batch; it is dropped");
                    self.pending.drain(..n);
                }
                Ok(r) => {
                    tracing::warn!(status = %r.status(), "the main edge did not take the batch; kept for the next wave");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the main edge is unreachable; the batch is kept for the next wave");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_holds_for_its_timestamp_and_body_only() {
        let token = "observations-token-0123";
        let sig = signature(token, "1700", b"{}");
        assert!(verify(token, "1700", &sig, b"{}"));
        assert!(!verify(token, "1701", &sig, b"{}"), "another timestamp");
        assert!(!verify(token, "1700", &sig, b"{ }"), "another body");
        assert!(!verify("another-token-0123456", "1700", &sig, b"{}"));
        assert!(!verify(token, "1700", &sig[7..], b"{}"), "no scheme");
        assert!(!verify(token, "1700", "sha256=zz", b"{}"));
        assert!(!verify(token, "1700", "sha256=", b"{}"));
    }
}

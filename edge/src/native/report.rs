//! Remote probers (issue 15): `vigil-edge --probe-only --report-to URL`
//! probes the targets that list its region and reports what it saw to the
//! main edge's `POST /ops/observations`, in signed batches
//! (`shell::sign`, checked by `shell::verify_signature`).
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
use tracing::Instrument;

use super::io::{now_ms, NativeIo};
use crate::config::Config;
use crate::core::probe::Observation;
use crate::core::vantage::{Batch, ProberSchedule, BATCH_MAX};
use crate::remediation::RemediationIo;
use crate::shell::{sign, Secrets, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Largest batch body the main edge reads.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// Observations a prober keeps while the main edge cannot be reached
/// (the oldest are dropped past it, and said so in the log).
const PENDING_MAX: usize = 10 * BATCH_MAX;

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
                .header(SIGNATURE_HEADER, sign(&self.token, &timestamp, &body))
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

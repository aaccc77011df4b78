//! Signals to the edge: the agent watches the Docker engine's event stream
//! for its compose project's containers and tells the edge at once when one
//! dies, is killed, runs out of memory or turns unhealthy
//! (`POST {OPS_AGENT_SIGNAL_URL}/ops/signal`, bearer
//! `OPS_AGENT_SIGNAL_TOKEN`). The edge then probes the targets that depend
//! on that service; a signal is never an incident by itself.
//!
//! Bounded everywhere: one signal per service per [`DEDUP`], at most
//! [`PER_MINUTE`] a minute (burst [`BURST`]), a queue of [`QUEUE`], and
//! [`ATTEMPTS`] tries with a doubling backoff, after which a signal is
//! dropped (the edge's polling still catches the outage). The stream is
//! opened again, with a backoff, whenever the engine goes away.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::models::EventMessage;
use futures_util::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::docker::{Engine, SERVICE_LABEL};

/// The same service's signals within this long are one.
pub const DEDUP: Duration = Duration::from_secs(5);
/// Signals a minute, and the burst allowed above that.
pub const PER_MINUTE: u32 = 30;
pub const BURST: u32 = 10;
/// Signals waiting to be sent; more are dropped.
const QUEUE: usize = 32;
/// Tries per signal, and the first wait between them (then doubled).
pub const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait for the edge's answer to one try.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Waits before opening the event stream again (doubled up to the last).
const RECONNECT_FIRST: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// Deaths of one service within this long that make a restart loop.
const LOOP_WINDOW: Duration = Duration::from_secs(60);
const LOOP_DEATHS: usize = 3;

/// Where signals go, from `OPS_AGENT_SIGNAL_URL`, `OPS_AGENT_SIGNAL_TOKEN`
/// and `OPS_AGENT_HOST_ID`.
#[derive(Debug, Clone)]
pub struct SignalConfig {
    /// The edge's base URL (no trailing slash).
    pub url: String,
    pub token: String,
    /// This host's id as the edge knows it (`[[host]] id`).
    pub host_id: String,
}

/// The body of `POST /ops/signal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signal {
    pub host: String,
    pub service: String,
    pub event: String,
    pub at_ms: u64,
}

/// What an engine event means for the edge: the service and the event's
/// name, or nothing (starts, creates, healthy checks, other labels...).
pub fn significant(event: &EventMessage) -> Option<(String, String)> {
    let action = event.action.as_deref()?;
    let name = match action {
        "die" | "oom" | "kill" => action,
        "health_status: unhealthy" => "unhealthy",
        _ => return None,
    };
    let service = event
        .actor
        .as_ref()?
        .attributes
        .as_ref()?
        .get(SERVICE_LABEL)?;
    Some((service.clone(), name.to_string()))
}

/// Deduplication and restart-loop detection, per service.
#[derive(Default)]
pub struct Filter {
    last_sent: HashMap<String, Instant>,
    deaths: HashMap<String, Vec<Instant>>,
}

impl Filter {
    /// The event to send for `service`, or `None` when one was sent for it
    /// within [`DEDUP`]. A death that makes [`LOOP_DEATHS`] within
    /// [`LOOP_WINDOW`] is sent as `restart_loop`.
    pub fn admit(&mut self, service: &str, event: &str, now: Instant) -> Option<String> {
        let mut event = event.to_string();
        if event == "die" {
            let deaths = self.deaths.entry(service.to_string()).or_default();
            deaths.retain(|t| now.duration_since(*t) < LOOP_WINDOW);
            deaths.push(now);
            if deaths.len() >= LOOP_DEATHS {
                event = "restart_loop".into();
            }
        }
        if self
            .last_sent
            .get(service)
            .is_some_and(|t| now.duration_since(*t) < DEDUP)
        {
            return None;
        }
        self.last_sent.insert(service.to_string(), now);
        // Services that went quiet are forgotten: the maps stay small.
        self.last_sent
            .retain(|_, t| now.duration_since(*t) < LOOP_WINDOW);
        self.deaths.retain(|_, d| !d.is_empty());
        Some(event)
    }
}

/// Starts the watcher and the sender as tasks of their own.
pub fn start(engine: Arc<Engine>, config: SignalConfig) {
    let (tx, rx) = mpsc::channel(QUEUE);
    tracing::info!(edge = %config.url, host = %config.host_id, "signalling container events to the edge");
    tokio::spawn(send_loop(config.clone(), rx).instrument(tracing::info_span!("signal_sender")));
    tokio::spawn(watch(engine, config.host_id, tx).instrument(tracing::info_span!("event_watch")));
}

/// Follows the engine's events, reopening the stream whenever it ends.
async fn watch(engine: Arc<Engine>, host: String, tx: mpsc::Sender<Signal>) {
    let limiter: DefaultDirectRateLimiter = RateLimiter::direct(
        Quota::per_minute(NonZeroU32::new(PER_MINUTE).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(BURST).unwrap_or(NonZeroU32::MIN)),
    );
    let mut filter = Filter::default();
    let mut wait = RECONNECT_FIRST;
    loop {
        match engine.events().await {
            Err(e) => tracing::warn!(error = %e, "docker events unavailable; retrying"),
            Ok(stream) => {
                tracing::info!("watching docker events");
                let mut stream = std::pin::pin!(stream);
                while let Some(item) = stream.next().await {
                    let event = match item {
                        Ok(e) => e,
                        Err(e) => {
                            tracing::warn!(error = %e, "docker event stream broke");
                            break;
                        }
                    };
                    wait = RECONNECT_FIRST;
                    let Some((service, name)) = significant(&event) else {
                        continue;
                    };
                    let Some(name) = filter.admit(&service, &name, Instant::now()) else {
                        continue;
                    };
                    if limiter.check().is_err() {
                        tracing::warn!(%service, event = %name, "signal over the rate limit: dropped");
                        continue;
                    }
                    let signal = Signal {
                        host: host.clone(),
                        service,
                        event: name,
                        at_ms: crate::server::now_ms(),
                    };
                    if let Err(e) = tx.try_send(signal) {
                        tracing::warn!(error = %e, "signal queue full: dropped");
                    }
                }
                tracing::warn!("docker event stream ended; reopening");
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RECONNECT_MAX);
    }
}

/// Sends queued signals one by one, each tried [`ATTEMPTS`] times.
async fn send_loop(config: SignalConfig, mut rx: mpsc::Receiver<Signal>) {
    let client = match reqwest::Client::builder().timeout(SEND_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client: signals are off");
            return;
        }
    };
    let url = format!("{}/ops/signal", config.url);
    while let Some(signal) = rx.recv().await {
        send(&client, &url, &config.token, &signal).await;
    }
}

async fn send(client: &reqwest::Client, url: &str, token: &str, signal: &Signal) {
    let mut wait = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let answer = client
            .post(url)
            .bearer_auth(token)
            .json(signal)
            .send()
            .await;
        let why = match answer {
            Ok(r) if r.status().is_success() => {
                tracing::info!(service = %signal.service, event = %signal.event, "signal sent");
                return;
            }
            // The edge refused it: sending it again would not help.
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                tracing::warn!(service = %signal.service, status = r.status().as_u16(), "the edge refused the signal");
                return;
            }
            Ok(r) => format!("answered {}", r.status()),
            Err(e) => e.to_string(),
        };
        if attempt == ATTEMPTS {
            tracing::warn!(service = %signal.service, error = %why, "signal dropped after {ATTEMPTS} tries (polling still catches the outage)");
            return;
        }
        tracing::info!(service = %signal.service, error = %why, attempt, "signal not delivered; retrying");
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    fn event(action: &str, service: Option<&str>) -> EventMessage {
        EventMessage {
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some("c1".into()),
                attributes: Some(
                    service
                        .map(|s| HashMap::from([(SERVICE_LABEL.to_string(), s.to_string())]))
                        .unwrap_or_default(),
                ),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_deaths_and_unhealthy_checks_are_signals() {
        let sig = |a: &str| significant(&event(a, Some("api-core")));
        assert_eq!(sig("die"), Some(("api-core".into(), "die".into())));
        assert_eq!(sig("oom"), Some(("api-core".into(), "oom".into())));
        assert_eq!(sig("kill"), Some(("api-core".into(), "kill".into())));
        assert_eq!(
            sig("health_status: unhealthy"),
            Some(("api-core".into(), "unhealthy".into()))
        );
        for quiet in [
            "start",
            "create",
            "health_status: healthy",
            "exec_start: sh",
        ] {
            assert_eq!(sig(quiet), None, "{quiet}");
        }
        assert_eq!(
            significant(&event("die", None)),
            None,
            "not a compose container"
        );
    }

    #[test]
    fn one_signal_per_service_within_the_window_and_loops_are_named() {
        let mut f = Filter::default();
        let t0 = Instant::now();
        assert_eq!(f.admit("api", "kill", t0).as_deref(), Some("kill"));
        assert_eq!(f.admit("api", "die", t0 + Duration::from_millis(10)), None);
        assert_eq!(
            f.admit("db", "die", t0).as_deref(),
            Some("die"),
            "per service"
        );
        let later = t0 + DEDUP + Duration::from_secs(1);
        assert_eq!(f.admit("api", "die", later).as_deref(), Some("die"));
        let third = later + DEDUP + Duration::from_secs(1);
        assert_eq!(
            f.admit("api", "die", third).as_deref(),
            Some("restart_loop"),
            "three deaths within a minute"
        );
    }
}

//! `GET /metrics`: the native edge in the Prometheus text format
//! (prometheus-client). Counters and histograms are counted where things
//! happen (probes, rounds, deliveries, cycles); everything the state already
//! knows (up, state, open incidents, the outbox) is read from it at scrape
//! time, so it can never drift from what `/ops` shows. Label values are
//! bounded: target ids, action names from the allowlist, fixed words.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State as AxState};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use vigil_wire::TokenCheck;

use super::io::now_ms;
use super::runner::Runner;
use crate::config::Config;
use crate::core::alert::Delivery;
use crate::core::incident::Round;
use crate::core::probe::{Health, Observation};
use crate::core::state::State;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabel {
    target: String,
}

/// A remote prober's region (from the configuration: bounded).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegionLabel {
    region: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    target: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoundLabels {
    outcome: String,
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: String,
}

type Seconds = Gauge<f64, AtomicU64>;
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn probe_histogram() -> Histogram {
    // 5 ms to about 41 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Every metric of the edge, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    up: Family<TargetLabel, Gauge>,
    state: Family<StateLabels, Gauge>,
    in_maintenance: Family<TargetLabel, Gauge>,
    probe_duration: Histograms<TargetLabel>,
    incidents_open: Gauge,
    rounds: Family<RoundLabels, Counter>,
    alerts_sent: Family<ChannelLabel, Counter>,
    alerts_failed: Family<ChannelLabel, Counter>,
    outbox_entries: Gauge,
    outbox_oldest_age: Seconds,
    cycle_duration: Histogram,
    last_cycle: Seconds,
    prober_silent: Family<RegionLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            up: Family::default(),
            state: Family::default(),
            in_maintenance: Family::default(),
            probe_duration: Family::new_with_constructor(probe_histogram),
            incidents_open: Gauge::default(),
            rounds: Family::default(),
            alerts_sent: Family::default(),
            alerts_failed: Family::default(),
            outbox_entries: Gauge::default(),
            outbox_oldest_age: Seconds::default(),
            cycle_duration: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            last_cycle: Seconds::default(),
            prober_silent: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "vigil_target_up",
            "1 when the target's confirmed state is healthy or degraded, 0 when down",
            m.up.clone(),
        );
        registry.register(
            "vigil_target_state",
            "1 for the target's confirmed state (healthy, degraded, down), 0 for the others",
            m.state.clone(),
        );
        registry.register(
            "vigil_target_in_maintenance",
            "1 while the target is in a maintenance window",
            m.in_maintenance.clone(),
        );
        registry.register(
            "vigil_probe_duration_seconds",
            "Time each probe took, answered or not",
            m.probe_duration.clone(),
        );
        registry.register(
            "vigil_incidents_open",
            "Incidents not yet resolved",
            m.incidents_open.clone(),
        );
        registry.register(
            "vigil_remediation_rounds",
            "Remediation rounds finished, by outcome and the action taken (none when no action ran)",
            m.rounds.clone(),
        );
        registry.register(
            "vigil_alerts_sent",
            "Alert messages delivered, by channel",
            m.alerts_sent.clone(),
        );
        registry.register(
            "vigil_alerts_failed",
            "Alert delivery attempts that failed (rate-limited, refused or unreachable), by channel",
            m.alerts_failed.clone(),
        );
        registry.register(
            "vigil_outbox_entries",
            "Alert messages waiting in the outbox",
            m.outbox_entries.clone(),
        );
        registry.register(
            "vigil_outbox_oldest_age_seconds",
            "Age of the oldest message waiting in the outbox (0 when empty)",
            m.outbox_oldest_age.clone(),
        );
        registry.register(
            "vigil_cycle_duration_seconds",
            "Time a monitoring cycle took (probes, state update, deliveries)",
            m.cycle_duration.clone(),
        );
        registry.register(
            "vigil_prober_silent",
            "1 while a remote prober (vigil-edge --probe-only) has not reported within prober_silent_s, by region",
            m.prober_silent.clone(),
        );
        registry.register(
            "vigil_last_successful_cycle_timestamp_seconds",
            "When the last cycle finished, in seconds since the Unix epoch",
            m.last_cycle.clone(),
        );
        Metrics { registry, ..m }
    }
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

impl Metrics {
    pub fn probes(&self, observations: &[Observation]) {
        for obs in observations {
            self.probe_duration
                .get_or_create(&TargetLabel {
                    target: obs.target.clone(),
                })
                .observe(seconds(obs.latency_ms));
        }
    }

    pub fn round(&self, round: &Round) {
        let outcome = serde_json::to_value(&round.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let action = round.action.clone().unwrap_or_else(|| "none".into());
        self.rounds
            .get_or_create(&RoundLabels { outcome, action })
            .inc();
    }

    /// A delivery to `channel` (a configured channel id: bounded).
    pub fn delivery(&self, channel: &str, outcome: &Delivery) {
        let family = match outcome {
            Delivery::Sent => &self.alerts_sent,
            _ => &self.alerts_failed,
        };
        family
            .get_or_create(&ChannelLabel {
                channel: channel.to_string(),
            })
            .inc();
    }

    pub fn cycle(&self, took: Duration, finished_at_ms: u64) {
        self.cycle_duration.observe(took.as_secs_f64());
        self.last_cycle.set(seconds(finished_at_ms));
    }

    /// Sets the gauges read from the state.
    fn read_state(&self, config: &Config, state: &State, now_ms: u64) {
        for t in &config.targets {
            let Some(ts) = state.targets.get(&t.id) else {
                continue;
            };
            let target = TargetLabel {
                target: t.id.clone(),
            };
            self.up
                .get_or_create(&target)
                .set(i64::from(ts.health != Health::Down));
            self.in_maintenance
                .get_or_create(&target)
                .set(i64::from(ts.in_maintenance(now_ms)));
            for h in [Health::Healthy, Health::Degraded, Health::Down] {
                self.state
                    .get_or_create(&StateLabels {
                        target: t.id.clone(),
                        state: h.as_str(),
                    })
                    .set(i64::from(ts.health == h));
            }
        }
        for region in config.remote_regions() {
            let silent = state
                .probers
                .get(region)
                .is_some_and(|p| p.silent_since_ms.is_some());
            self.prober_silent
                .get_or_create(&RegionLabel {
                    region: region.to_string(),
                })
                .set(i64::from(silent));
        }
        let open = state.incidents.iter().filter(|i| i.is_open()).count();
        self.incidents_open.set(open as i64);
        let entries = &state.outbox.entries;
        self.outbox_entries.set(entries.len() as i64);
        let oldest = entries.iter().map(|e| e.created_at_ms).min();
        self.outbox_oldest_age
            .set(oldest.map_or(0.0, |at| seconds(now_ms.saturating_sub(at))));
    }

    /// The text a scrape gets.
    pub fn render(&self, config: &Config, state: &State, now_ms: u64) -> String {
        self.read_state(config, state, now_ms);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

struct Scrape {
    runner: Arc<Runner>,
    token: Option<TokenCheck>,
}

/// `GET /metrics`, behind `METRICS_TOKEN` when it is set.
pub fn router(runner: Arc<Runner>) -> Router {
    let token = runner
        .io
        .secrets()
        .metrics_token
        .as_deref()
        .map(TokenCheck::new);
    let scrape = Arc::new(Scrape { runner, token });
    Router::new()
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(scrape.clone(), require))
        .with_state(scrape)
}

async fn require(AxState(s): AxState<Arc<Scrape>>, req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match &s.token {
        Some(t) if !t.accepts_header(header) => super::api::unauthorized(),
        _ => next.run(req).await,
    }
}

async fn metrics(AxState(s): AxState<Arc<Scrape>>) -> Response {
    let runner = &s.runner;
    let text = runner.read(|state| runner.metrics.render(&runner.config(), state, now_ms()));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::TargetState;

    fn config() -> Config {
        let text = "[[target]]\nid = \"api\"\nurl = \"http://127.0.0.1:1/\"\nrole = \"alert_only\"\nregions = [\"main\", \"enam\"]\n\
                    [[target]]\nid = \"web\"\nurl = \"http://127.0.0.1:2/\"\nrole = \"alert_only\"\n";
        Config::parse("t.toml", text).expect("config")
    }

    #[test]
    fn the_state_and_the_counters_show_with_bounded_labels() {
        let config = config();
        let mut state = State::default();
        let mut down = TargetState::new(0);
        down.health = Health::Down;
        state.targets.insert("api".into(), TargetState::new(0));
        state.targets.insert("web".into(), down);
        state.probers.insert(
            "enam".into(),
            crate::core::vantage::Prober {
                silent_since_ms: Some(1),
                ..Default::default()
            },
        );
        let m = Metrics::default();
        m.probes(&[Observation {
            target: "api".into(),
            at_ms: 0,
            health: Health::Healthy,
            status: Some(200),
            latency_ms: 30,
            error: Some("never a label".into()),
            cert: None,
        }]);
        m.delivery("discord", &Delivery::Sent);
        m.delivery(
            "discord",
            &Delivery::Failed {
                error: "boom".into(),
            },
        );
        m.cycle(Duration::from_millis(20), 5_000);
        let text = m.render(&config, &state, 10_000);
        for line in [
            "vigil_target_up{target=\"api\"} 1",
            "vigil_target_up{target=\"web\"} 0",
            "vigil_target_state{target=\"web\",state=\"down\"} 1",
            "vigil_target_state{target=\"web\",state=\"healthy\"} 0",
            "vigil_probe_duration_seconds_bucket{target=\"api\",le=\"0.04\"} 1",
            "vigil_alerts_sent_total{channel=\"discord\"} 1",
            "vigil_alerts_failed_total{channel=\"discord\"} 1",
            "vigil_outbox_entries 0",
            "vigil_prober_silent{region=\"enam\"} 1",
            "vigil_incidents_open 0",
            "vigil_last_successful_cycle_timestamp_seconds 5.0",
            "# TYPE vigil_alerts_sent_total counter",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
        assert!(!text.contains("never a label"));
        assert!(!text.contains("127.0.0.1"));
    }
}

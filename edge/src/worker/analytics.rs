//! Analytics Engine points: one per probe, per round and per host-metrics
//! sample, best effort (a failed write is logged, never an error).

use worker::{console_log, AnalyticsEngineDataPointBuilder, AnalyticsEngineDataset};

use crate::core::history::HostSample;
use crate::core::incident::Round;
use crate::core::probe::{truncate, Observation};

fn write(ae: &AnalyticsEngineDataset, point: AnalyticsEngineDataPointBuilder) {
    if let Err(e) = point.write_to(ae) {
        console_log!("analytics engine write failed: {e}");
    }
}

pub fn probe_point(ae: &AnalyticsEngineDataset, o: &Observation) {
    let point = AnalyticsEngineDataPointBuilder::new()
        .indexes([o.target.as_str()])
        .add_blob(o.health.as_str())
        .add_blob(truncate(o.error.as_deref().unwrap_or(""), 200).as_str())
        .add_blob("scheduled")
        .add_double(o.latency_ms as f64)
        .add_double(o.status.unwrap_or(0) as f64);
    write(ae, point);
}

pub fn host_point(ae: &AnalyticsEngineDataset, host: &str, s: &HostSample) {
    let point = AnalyticsEngineDataPointBuilder::new()
        .indexes([host])
        .add_blob("host")
        .add_double(s.cpu_percent)
        .add_double(s.mem_used_percent)
        .add_double(s.disk_used_percent)
        .add_double(s.load_1);
    write(ae, point);
}

pub fn round_point(ae: &AnalyticsEngineDataset, target: &str, r: &Round) {
    let point = AnalyticsEngineDataPointBuilder::new()
        .indexes([target])
        .add_blob("round")
        .add_blob(r.action.as_deref().unwrap_or("-"))
        .add_blob(format!("{:?}", r.planner).to_ascii_lowercase().as_str())
        .add_blob(format!("{:?}", r.outcome).to_ascii_lowercase().as_str())
        .add_double(r.finished_at_ms.saturating_sub(r.started_at_ms) as f64);
    write(ae, point);
}

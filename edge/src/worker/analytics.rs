//! Writes the Analytics Engine points (`crate::analytics` has the layout):
//! best effort, a failed write is logged and counted, never an error.

use std::sync::atomic::{AtomicU64, Ordering};

use worker::{console_log, AnalyticsEngineDataPointBuilder, AnalyticsEngineDataset, Env};

use super::AE_BINDING;
use crate::analytics::Point;

/// Points written and writes that failed, in this isolate.
static WRITTEN: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

pub fn write(ae: &AnalyticsEngineDataset, point: Point) {
    let written = AnalyticsEngineDataPointBuilder::new()
        .indexes([point.index.as_str()])
        .blobs(point.blobs)
        .doubles(point.doubles)
        .write_to(ae);
    match written {
        Ok(()) => WRITTEN.fetch_add(1, Ordering::Relaxed),
        Err(e) => {
            console_log!("analytics engine write failed: {e}");
            FAILED.fetch_add(1, Ordering::Relaxed)
        }
    };
}

/// Writes `point` when the dataset is bound (else counts it as failed).
pub fn write_to_env(env: &Env, point: Point) {
    match env.analytics_engine(AE_BINDING) {
        Ok(ae) => write(&ae, point),
        Err(_) => {
            FAILED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `{"failed": n, "written": n}` for `/ops/summary`.
#[derive(serde::Serialize)]
pub struct Counts {
    failed: u64,
    written: u64,
}

pub fn counts() -> Counts {
    Counts {
        failed: FAILED.load(Ordering::Relaxed),
        written: WRITTEN.load(Ordering::Relaxed),
    }
}

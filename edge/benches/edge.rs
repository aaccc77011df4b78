//! Edge benchmarks on the real runner against local HTTP servers:
//!   cycle     one cycle's wall time for 10, 100 and 1,000 targets behind a
//!             server answering in a fixed latency, as a ratio to that latency
//!   detection outage start → incident open, as a ratio to interval_s, for
//!             Vigil's defaults and for Uptime Kuma- and Gatus-like settings
//!   history 30 days of one-minute observations per target: the history
//!             document's size, its stores (KV writes) per day, the cost of
//!             recording a cycle against the debounce alone, and percentile
//!             error against the exact values
//! Run: cargo bench -p edge --bench edge [-- cycle|detection|history]

use std::sync::Arc;
use std::time::{Duration, Instant};

use edge::config::Config;
use edge::native::io::{now_ms, NativeIo};
use edge::native::runner::Runner;
use edge::shell::Secrets;
use vigil_testkit::target::{Behaviour, TargetServer};
use vigil_testkit::TempDir;

fn runner(config_text: &str, dir: &TempDir) -> Arc<Runner> {
    let text = format!(
        "state_dir = {:?}\n{config_text}",
        dir.path().join("state").display().to_string()
    );
    let config = Arc::new(Config::parse("bench.toml", &text).expect("bench config"));
    let io = Arc::new(NativeIo::new(config.clone(), Secrets::default()).expect("the HTTP client"));
    Runner::open(config, io).expect("runner")
}

fn targets(n: usize, url: &str, timeout_ms: u64) -> String {
    (0..n)
        .map(|i| format!("[[target]]\nid = \"t{i}\"\nurl = \"{url}\"\nbody_contains = \"ok\"\ntimeout_ms = {timeout_ms}\n"))
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn cycle() {
    const LATENCY: Duration = Duration::from_millis(200);
    let server = TargetServer::start();
    server.set(Behaviour::Slow(LATENCY));
    println!(
        "## cycle time vs targets (server latency {} ms, probe_concurrency = targets)",
        LATENCY.as_millis()
    );
    println!("| targets | median cycle (ms) | ratio to latency |");
    println!("|---|---|---|");
    for n in [10usize, 100, 1000] {
        let dir = TempDir::new("bench-cycle");
        let r = runner(
            &format!(
                "interval_s = 60\nprobe_concurrency = {n}\n{}",
                targets(n, &server.url(), 5000)
            ),
            &dir,
        );
        // A warm-up cycle opens the connections.
        r.cycle().await;
        let mut times = Vec::new();
        for _ in 0..5 {
            r.update(|s| {
                s.targets
                    .values_mut()
                    .for_each(|t| t.next_regular_at_ms = 0)
            });
            let start = Instant::now();
            let probed = r.cycle().await;
            assert_eq!(probed, n);
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        let m = median(&mut times);
        println!("| {n} | {m:.0} | {:.2} |", m / LATENCY.as_millis() as f64);
    }
}

/// Outage start → incident open, over `runs` outages starting at random
/// phases of the schedule.
async fn detection_ratio(
    label: &str,
    interval_s: f64,
    retry_after_s: f64,
    threshold: u32,
    runs: usize,
) {
    let mut ratios = Vec::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ threshold as u64;
    for _ in 0..runs {
        let server = TargetServer::start();
        let dir = TempDir::new("bench-detect");
        let r = runner(
            &format!("interval_s = {interval_s}\nretry_after_s = {retry_after_s}\nfailure_threshold = {threshold}\n{}", targets(1, &server.url(), 1000)),
            &dir,
        );
        let run = {
            let r = r.clone();
            tokio::spawn(async move { r.run(std::future::pending()).await })
        };
        tokio::time::sleep(Duration::from_secs_f64(interval_s * 1.2)).await;
        // xorshift: a phase in [0, interval)
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let phase = (seed % 1000) as f64 / 1000.0 * interval_s;
        tokio::time::sleep(Duration::from_secs_f64(phase)).await;
        server.set(Behaviour::Status(500));
        let outage = now_ms();
        let opened = loop {
            if let Some(at) = r.read(|s| s.incidents.first().map(|i| i.opened_at_ms)) {
                break at;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        run.abort();
        ratios.push((opened - outage) as f64 / (interval_s * 1000.0));
    }
    let worst = ratios.iter().cloned().fold(0.0, f64::max);
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    let med = median(&mut ratios);
    println!("| {label} | {interval_s} | {retry_after_s} | {threshold} | {runs} | {med:.2} | {mean:.2} | {worst:.2} |");
}

async fn detection() {
    println!("## detection time / interval, hard-down target (HTTP 500), random outage phase");
    println!("| settings | interval_s | retry_after_s | failure_threshold | runs | median | mean | worst |");
    println!("|---|---|---|---|---|---|---|---|");
    // Vigil's defaults scaled down: 60 s / 15 s → 0.8 s / 0.2 s.
    detection_ratio("Vigil (confirm probe)", 0.8, 0.2, 2, 20).await;
    // Uptime Kuma, retries = 1, retryInterval = interval.
    detection_ratio("Uptime Kuma-like (retries 1)", 0.8, 0.8, 2, 20).await;
    // Gatus default: failure-threshold 3, every check on the interval.
    detection_ratio("Gatus-like (threshold 3)", 0.8, 0.8, 3, 20).await;
}

fn history() {
    use edge::core::history::{percentile_error_bound, History, DAY_MS, HOUR_MS};
    use edge::core::probe::{Health, Observation};
    use edge::core::state::State;

    println!("## history: 30 days of one-minute observations (history_flush_s = 600)");
    println!("| targets | document (bytes) | per target | stores on day 30 | record + flush check / debounce alone | summary of all targets (ms) | worst P50/P95/P99 error over 24 h |");
    println!("|---|---|---|---|---|---|---|");
    for n in [10usize, 100] {
        let text = (0..n)
            .map(|i| {
                format!("[[target]]\nid = \"t{i}\"\nurl = \"http://127.0.0.1:9/\"\nslo = 99.9\n")
            })
            .collect::<String>();
        let config = Config::parse("bench.toml", &text).expect("config");
        let mut history = History::default();
        let mut state = State::default();
        let flush_ms = config.history_flush_ms();
        let start = 1_700_000_000_000 / DAY_MS * DAY_MS + 17 * 60_000;
        let minutes = 30 * 24 * 60;
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let (mut stores_last_day, mut observe_ns, mut record_ns) = (0, 0u128, 0u128);
        let mut last_day: Vec<Vec<u64>> = vec![Vec::new(); n];
        for m in 0..minutes {
            let now = start + m * 60_000;
            let observations: Vec<Observation> = (0..n)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let latency = 20 + (x % 1000) * (x % 7 + 1) / 7;
                    Observation {
                        target: format!("t{i}"),
                        at_ms: now,
                        health: if x.is_multiple_of(997) {
                            Health::Down
                        } else {
                            Health::Healthy
                        },
                        status: Some(200),
                        latency_ms: latency,
                        error: None,
                        cert: None,
                    }
                })
                .collect();
            let t = Instant::now();
            for o in &observations {
                state.observe(&config, o, now);
            }
            observe_ns += t.elapsed().as_nanos();
            let t = Instant::now();
            for o in &observations {
                history.record(o, config.interval_ms());
            }
            let flush = history.flush_due(now, flush_ms);
            if flush {
                history.mark_stored(now);
            }
            record_ns += t.elapsed().as_nanos();
            if m >= minutes - 24 * 60 {
                stores_last_day += usize::from(flush);
            }
            // The samples the 24-hour percentiles cover: this hour and the
            // 23 before it.
            let last_hour = (start + (minutes - 1) * 60_000) / HOUR_MS;
            if now / HOUR_MS + 23 >= last_hour {
                for (i, o) in observations.iter().enumerate() {
                    if o.health != Health::Down {
                        last_day[i].push(o.latency_ms);
                    }
                }
            }
        }
        let now = start + (minutes - 1) * 60_000;
        let bytes = serde_json::to_vec(&history).expect("json").len();
        let t = Instant::now();
        let views = edge::views::summary(&config, &state, &history, now, |_| None);
        let summary_ms = t.elapsed().as_secs_f64() * 1000.0;
        let mut worst: f64 = 0.0;
        for (i, lats) in last_day.iter_mut().enumerate() {
            lats.sort_unstable();
            let hist = history.latency_24h(&format!("t{i}"), now);
            for q in [0.5, 0.95, 0.99] {
                let rank = ((q * lats.len() as f64).ceil() as usize).clamp(1, lats.len());
                let exact = lats[rank - 1] as f64;
                let got = hist.quantile(q).expect("samples") as f64;
                // Error as a share of the stated bound (≤ 1 within it).
                worst = worst.max((got - exact).abs() / (exact * percentile_error_bound() + 0.5));
            }
        }
        assert_eq!(views.targets.len(), n);
        println!(
            "| {n} | {bytes} | {} | {stores_last_day} | {:.2} | {summary_ms:.1} | {worst:.2} of the bound ({:.1} % + 0.5 ms) |",
            bytes / n,
            record_ns as f64 / observe_ns as f64,
            percentile_error_bound() * 100.0
        );
    }
}

/// The Worker's own work per cron invocation, natively (a cross-check of
/// the workerd CPU figure, which includes the runtime): parse VIGIL_CONFIG,
/// read the state document, one observation per target through the
/// debounce and the history (30 days of it in the isolate), the periodic
/// checks, and the save check (`worth_storing` and the document, serialized).
fn worker_core() {
    use edge::core::budget::worth_storing;
    use edge::core::history::{History, DAY_MS};
    use edge::core::probe::{Health, Observation};
    use edge::core::state::State;

    println!("## the Worker's core work per invocation, natively (median of 200)");
    println!("| targets | config parse (ms) | state read (ms) | observe + record + tick (ms) | save check (ms) | total (ms) | state document (bytes) |");
    println!("|---|---|---|---|---|---|---|");
    for n in [10usize, 100, 1000] {
        let text = (0..n)
            .map(|i| format!("[[target]]\nid = \"t{i}\"\nurl = \"http://127.0.0.1:9/\"\nbody_contains = \"ok\"\n"))
            .collect::<String>()
            + "[worker]\nplan = \"paid\"\n";
        let config = Config::parse("bench.toml", &text).expect("config");
        let start = 1_700_000_000_000 / DAY_MS * DAY_MS;
        let obs = |i: usize, now: u64| Observation {
            target: format!("t{i}"),
            at_ms: now,
            health: Health::Healthy,
            status: Some(200),
            latency_ms: 40 + (i as u64 % 50),
            error: None,
            cert: None,
        };
        // 30 days of history, one observation a minute.
        let mut history = History::default();
        let mut state = State::default();
        for m in 0..30 * 24 * 60 {
            let now = start + m * 60_000;
            for i in 0..n {
                history.record(&obs(i, now), config.interval_ms());
            }
        }
        let mut now = start + 30 * DAY_MS;
        state.reconcile(&config, now, false);
        for i in 0..n {
            state.observe_and_record(&config, &mut history, &obs(i, now), now);
        }
        let doc = serde_json::to_string(&state).expect("json");
        let (mut parse, mut read, mut work, mut save) = (vec![], vec![], vec![], vec![]);
        let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
        for _ in 0..200 {
            now += 60_000;
            let t = Instant::now();
            let c = Config::parse("bench.toml", &text).expect("config");
            parse.push(ms(t));
            let t = Instant::now();
            let mut s: State = serde_json::from_slice(doc.as_bytes()).expect("state");
            s.reconcile(&c, now, false);
            read.push(ms(t));
            let t = Instant::now();
            for i in 0..n {
                s.observe_and_record(&c, &mut history, &obs(i, now), now);
            }
            s.tick(&c, &history, None, now);
            work.push(ms(t));
            let t = Instant::now();
            let worth = serde_json::to_string(&worth_storing(&s)).expect("json");
            assert!(!worth.is_empty());
            save.push(ms(t));
        }
        let (p, r, w, v) = (
            median(&mut parse),
            median(&mut read),
            median(&mut work),
            median(&mut save),
        );
        println!(
            "| {n} | {p:.3} | {r:.3} | {w:.3} | {v:.3} | {:.3} | {} |",
            p + r + w + v,
            doc.len()
        );
    }
}

fn main() {
    let which = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "all".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if which == "all" || which == "cycle" {
            cycle().await;
        }
        if which == "all" || which == "detection" {
            detection().await;
        }
        if which == "all" || which == "history" {
            history();
        }
        if which == "all" || which == "worker" {
            worker_core();
        }
    });
}

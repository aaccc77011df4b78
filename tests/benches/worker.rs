//! The edge Worker in workerd (`wrangler dev`), on each store (Workers KV,
//! Durable Object): for 10, 100 and 1,000 targets behind a local server
//! answering after a fixed latency, one cron cycle's wall time, the
//! subrequests of the largest invocation (the Worker's own count), storage
//! reads/writes per steady cycle, the largest stored value, and workerd's
//! CPU per cycle (all its processes, over the measured cycles, less an idle
//! stretch of the same length in the same run: an upper bound of Vigil's
//! own work, as it includes the runtime's HTTP, fetch and storage emulation).
//! Then the writes of one incident and of a Discord outage. First the
//! Durable Object history's rows per flush (alone with VIGIL_BENCH_ONLY=rows).
//! Run: cargo bench -p vigil-testkit --bench worker (after scripts/worker-build.sh).

use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_testkit::discord::Discord;
use vigil_testkit::target::{Behaviour, TargetServer};
use vigil_testkit::wrangler::{worker_or_skip, Wrangler};

const LATENCY: Duration = Duration::from_millis(50);

fn config(n: usize, url: &str, plan: &str) -> String {
    let mut c = String::from("interval_s = 60\nretry_after_s = 0.3\n");
    for i in 0..n {
        c += &format!("[[target]]\nid = \"t{i}\"\nurl = \"{url}\"\nbody_contains = \"ok\"\n");
    }
    c + &format!("[worker]\nplan = \"{plan}\"\n")
}

/// CPU seconds used so far by `root` and every process below it.
fn cpu_s(root: u32) -> f64 {
    let mut parent = std::collections::HashMap::new();
    let mut ticks = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the ")" closing the command: state ppid ... utime(14) stime(15).
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 13 {
            parent.insert(pid, f[1].parse::<u32>().unwrap_or(0));
            let t: u64 = f[11].parse().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
            ticks.insert(pid, t);
        }
    }
    let below = |mut p: u32| {
        while p > 1 {
            if p == root {
                return true;
            }
            p = parent.get(&p).copied().unwrap_or(0);
        }
        false
    };
    ticks
        .iter()
        .filter(|(p, _)| below(**p))
        .map(|(_, t)| *t)
        .sum::<u64>() as f64
        / 100.0
}

fn pid(w: &Wrangler) -> u32 {
    w.proc.as_ref().map(|p| p.child.id()).unwrap_or(0)
}

fn steady(store: &str, n: usize, plan: &str, cycles: usize) {
    let server = TargetServer::start();
    server.set(Behaviour::Slow(LATENCY));
    let w = Wrangler::start(vec![
        ("VIGIL_CONFIG".into(), config(n, &server.url(), plan)),
        ("VIGIL_STORE".into(), store.into()),
    ]);
    // A configuration the Worker refuses answers every route with why.
    let refused = w
        .http
        .get(w.url("/ops/summary"))
        .send()
        .ok()
        .filter(|r| r.status().as_u16() == 500);
    if let Some(r) = refused {
        let body: Value = r.json().unwrap_or_default();
        println!(
            "| {store} | {n} | {plan} | refused: {} |||||",
            body["error"]["message"]
        );
        return;
    }
    let first = w.scheduled();
    let mut times = Vec::new();
    let mut reports = vec![first];
    let cpu0 = cpu_s(pid(&w));
    let t0 = Instant::now();
    for _ in 0..cycles {
        let start = Instant::now();
        reports.push(w.scheduled());
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    let busy = cpu_s(pid(&w)) - cpu0;
    let span = t0.elapsed();
    let idle0 = cpu_s(pid(&w));
    std::thread::sleep(span);
    let idle = cpu_s(pid(&w)) - idle0;
    times.sort_by(|a, b| a.total_cmp(b));
    let m = times[times.len() / 2];
    let max = |k: &str| {
        reports
            .iter()
            .map(|r| r[k].as_u64().unwrap_or(0))
            .max()
            .unwrap_or(0)
    };
    let last: &Value = &reports[reports.len() - 1];
    println!(
        "| {store} | {n} | {plan} | {m:.0} | {} of {} (shards: {}) | {} / {} | {} | {:.1} |",
        max("subrequests"),
        last["subrequest_budget"],
        max("shard_subrequests_max"),
        last["kv_reads"],
        last["storage_writes"],
        max("largest_value_bytes"),
        (busy - idle).max(0.0) * 1000.0 / cycles as f64,
    );
}

fn outage(store: &str) {
    let server = TargetServer::start();
    let discord = Discord::start();
    let w = Wrangler::start(vec![
        ("VIGIL_CONFIG".into(), config(1, &server.url(), "free")),
        ("VIGIL_STORE".into(), store.into()),
        ("DISCORD_WEBHOOK_URL".into(), discord.url()),
    ]);
    w.scheduled();
    w.scheduled();
    let writes = |rs: &[Value]| -> u64 {
        rs.iter()
            .map(|r| r["storage_writes"].as_u64().unwrap_or(0))
            .sum()
    };
    server.set(Behaviour::Status(500));
    let incident: Vec<Value> = (0..3).map(|_| w.scheduled()).collect();
    server.set(Behaviour::Ok);
    let mut rest: Vec<Value> = (0..3).map(|_| w.scheduled()).collect();
    rest.extend(incident.iter().cloned());
    println!(
        "| {store} | one incident (open, 2 cycles down, recover, 2 steady) | {} |",
        writes(&rest)
    );
    discord.set_down(true);
    server.set(Behaviour::Status(500));
    let down: Vec<Value> = (0..60).map(|_| w.scheduled()).collect();
    println!(
        "| {store} | Discord down, 60 cycles, one incident opening | {} |",
        writes(&down)
    );
}

/// The Durable Object store's history rows: with the history stored every
/// cycle, the rows a steady cycle writes (Vigil's own count: the hour row's
/// chunks) and the largest value, at `n` targets.
fn history_rows(n: usize) {
    let server = TargetServer::start();
    server.set(Behaviour::Slow(LATENCY));
    let config = config(n, &server.url(), "paid").replace(
        "retry_after_s = 0.3\n",
        "retry_after_s = 0.3\nhistory_flush_s = 0\n",
    );
    let w = Wrangler::start(vec![
        ("VIGIL_CONFIG".into(), config),
        ("VIGIL_STORE".into(), "durable_object".into()),
    ]);
    let reports: Vec<Value> = (0..3).map(|_| w.scheduled()).collect();
    let steady = &reports[1..];
    let rows: Vec<u64> = steady
        .iter()
        .map(|r| r["rows_written"].as_u64().unwrap_or(0))
        .collect();
    let largest = steady
        .iter()
        .map(|r| r["largest_value_bytes"].as_u64().unwrap_or(0))
        .max();
    println!("| {n} | {rows:?} | {} |", largest.unwrap_or(0));
}

fn main() {
    if !worker_or_skip() {
        return;
    }
    println!("## Durable Object history: rows written per flush (history_flush_s = 0, paid)");
    println!("| targets | rows written by steady cycles | largest value written (bytes) |\n|---|---|---|");
    for n in [10, 100, 1000] {
        history_rows(n);
    }
    if std::env::var("VIGIL_BENCH_ONLY").as_deref() == Ok("rows") {
        return;
    }
    println!(
        "## one cron cycle in workerd (server latency {} ms), median after a warm-up",
        LATENCY.as_millis()
    );
    println!("| store | targets | plan | median cycle (ms) | largest invocation's subrequests | storage reads / writes per steady cycle | largest value read or written (bytes) | workerd CPU per cycle less idle (ms) |");
    println!("|---|---|---|---|---|---|---|---|");
    for (store, n, plan, cycles) in [
        ("kv", 10, "free", 20),
        ("kv", 100, "paid", 10),
        ("kv", 500, "paid", 5),
        ("kv", 1000, "paid", 3),
        ("durable_object", 10, "free", 20),
        ("durable_object", 200, "free", 5),
        ("durable_object", 100, "paid", 10),
        ("durable_object", 1000, "paid", 3),
    ] {
        steady(store, n, plan, cycles);
    }
    println!("\n## storage writes");
    println!("| store | run | writes |\n|---|---|---|");
    for store in ["kv", "durable_object"] {
        outage(store);
    }
}

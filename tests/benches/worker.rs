//! The edge Worker in workerd (`wrangler dev`): wall time of one cron cycle
//! for 10 and 100 targets behind a local server answering in a fixed
//! latency, and KV reads/writes per steady cycle and per incident (the
//! Worker's own counts). Run: cargo bench -p vigil-testkit --bench worker
//! (after scripts/worker-build.sh).

use std::time::{Duration, Instant};

use vigil_testkit::target::{Behaviour, TargetServer};
// (While Discord is unreachable, each cycle also writes the outbox's retry
// bookkeeping.)
use vigil_testkit::wrangler::{worker_or_skip, Wrangler};

const LATENCY: Duration = Duration::from_millis(50);

fn config(n: usize, url: &str) -> String {
    let mut c = String::from("interval_s = 60\nretry_after_s = 0.3\nprobe_concurrency = 1000\n");
    for i in 0..n {
        c += &format!("[[target]]\nid = \"t{i}\"\nurl = \"{url}\"\nbody_contains = \"ok\"\n");
    }
    c
}

fn main() {
    if !worker_or_skip() {
        return;
    }
    println!(
        "## one cron cycle in workerd (server latency {} ms), median of 5 after a warm-up",
        LATENCY.as_millis()
    );
    println!(
        "| targets | median cycle (ms) | ratio to latency | KV reads / writes per steady cycle |"
    );
    println!("|---|---|---|---|");
    for n in [10usize, 100] {
        let server = TargetServer::start();
        server.set(Behaviour::Slow(LATENCY));
        let w = Wrangler::start(vec![("VIGIL_CONFIG".into(), config(n, &server.url()))]);
        w.scheduled();
        let mut times = Vec::new();
        let mut last = serde_json::Value::Null;
        for _ in 0..5 {
            let start = Instant::now();
            last = w.scheduled();
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let m = times[2];
        println!(
            "| {n} | {m:.0} | {:.1} | {} / {} |",
            m / LATENCY.as_millis() as f64,
            last["kv_reads"],
            last["kv_writes"]
        );
    }

    println!(
        "\n## KV operations over one incident (alert-only target: detect, stay down, recover)"
    );
    let server = TargetServer::start();
    let discord = vigil_testkit::discord::Discord::start();
    let w = Wrangler::start(vec![
        ("VIGIL_CONFIG".into(), config(1, &server.url())),
        ("DISCORD_WEBHOOK_URL".into(), discord.url()),
    ]);
    w.scheduled();
    w.scheduled();
    let mut phases = Vec::new();
    server.set(Behaviour::Status(500));
    phases.push(("incident opens (alert queued and sent)", w.scheduled()));
    phases.push(("still down", w.scheduled()));
    server.set(Behaviour::Ok);
    phases.push(("recovers (resolve alert)", w.scheduled()));
    phases.push(("steady again", w.scheduled()));
    println!("| cycle | KV reads | KV writes |\n|---|---|---|");
    for (label, r) in phases {
        println!("| {label} | {} | {} |", r["kv_reads"], r["kv_writes"]);
    }
}

//! MTTD and MTTR of scenario 1 (api-core killed, fixed by restart_api_core),
//! over RUNS runs of the real pair in real containers (1 s cycles, confirm
//! probe after 0.25 s, settle 1 s), with the time from incident open to
//! recovery split into planning, action and settle + re-probe.
//! Each over polling alone, then with the agent's signals (`POST /ops/signal`:
//! the edge probes at once when the agent sees api-core die), in the same run.
//! Run: scripts/bench.sh (starts the private Docker daemon first).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use vigil_testkit::pair::{Options, Pair};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn stats(label: &str, v: &mut [f64]) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    format!(
        "| {label} | {:.0} | {:.0} | {:.0} |",
        v[v.len() / 2],
        v.iter().sum::<f64>() / v.len() as f64,
        v[v.len() - 1]
    )
}

fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    for signals in [false, true] {
        bench(runs, signals);
    }
}

fn bench(runs: usize, signals: bool) {
    let interval_ms = 1000.0;
    let (mut mttd, mut mttr, mut planning, mut action, mut settle, mut round_mttr) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        let p = Pair::start(
            &format!("vb{run}{}", if signals { "s" } else { "" }),
            Options {
                signals,
                // signal_confirm_s's default (2 s), scaled like every
                // other duration here (60 s → 1 s).
                config: if signals {
                    "signal_confirm_s = 0.033".into()
                } else {
                    String::new()
                },
                ..Options::default()
            },
        );
        // A random phase against the schedule.
        std::thread::sleep(Duration::from_millis(1000 + (run as u64 * 379) % 1000));
        let crash = now_ms();
        p.fault(p.api_port, "/crash");
        p.wait("recovery", 60, |p| {
            p.incidents()
                .iter()
                .any(|i| !i["resolved_at_ms"].is_null() && i["lease"].is_null())
        });
        let inc = p.incident("api");
        let n = |v: &Value| v.as_u64().unwrap_or(0) as f64;
        let opened = n(&inc["opened_at_ms"]);
        let resolved = n(&inc["resolved_at_ms"]);
        let r = &inc["rounds"][0];
        assert_eq!(r["action"], "restart_api_core", "{inc:#}");
        let act_start = n(&r["action_result"]["started_at_ms"]);
        let act_end = n(&r["action_result"]["finished_at_ms"]);
        mttd.push(opened - crash as f64);
        mttr.push(resolved - crash as f64);
        planning.push(act_start - n(&r["started_at_ms"]));
        action.push(act_end - act_start);
        settle.push(n(&r["finished_at_ms"]) - act_end);
        round_mttr.push(n(&r["finished_at_ms"]) - crash as f64);
        eprintln!(
            "run {run}: mttd {:.0} ms, mttr {:.0} ms",
            opened - crash as f64,
            resolved - crash as f64
        );
    }
    let mut ratio: Vec<f64> = mttd.iter().map(|d| d / interval_ms).collect();
    let how = if signals {
        "with the agent's signals"
    } else {
        "polling alone"
    };
    let confirm = if signals {
        ", signal_confirm 0.033 s"
    } else {
        ""
    };
    println!("## scenario 1 over {runs} runs, {how} (interval 1 s, retry_after 0.25 s{confirm}, settle 1 s), milliseconds");
    println!("| measure | median | mean | worst |\n|---|---|---|---|");
    println!("{}", stats("MTTD: crash → incident open", &mut mttd));
    println!(
        "| MTTD ÷ interval | {:.2} | {:.2} | {:.2} |",
        {
            ratio.sort_by(|a, b| a.total_cmp(b));
            ratio[ratio.len() / 2]
        },
        ratio.iter().sum::<f64>() / ratio.len() as f64,
        ratio[ratio.len() - 1]
    );
    println!(
        "{}",
        stats(
            "planning: round start → action sent (diagnostics, allowlist, ladder)",
            &mut planning
        )
    );
    println!(
        "{}",
        stats("action: restart_api_core on the agent", &mut action)
    );
    println!("{}", stats("settle + re-probe", &mut settle));
    println!(
        "{}",
        stats("MTTR: crash → resolved (first healthy probe)", &mut mttr)
    );
    println!(
        "{}",
        stats("crash → round finished (re-probe healthy)", &mut round_mttr)
    );
}

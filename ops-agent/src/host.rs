//! Host metrics from /proc and statvfs: read-only, no subprocess.

use std::path::Path;

use vigil_wire::HostMetrics;

/// CPU time counters from the first line of /proc/stat.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

pub fn parse_cpu(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    if fields.len() < 4 {
        return None;
    }
    let total: u64 = fields.iter().sum();
    // idle + iowait are not busy.
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total - idle,
        total,
    })
}

/// Busy share between two samples, in percent.
pub fn cpu_percent(before: CpuTimes, after: CpuTimes) -> f64 {
    let total = after.total.saturating_sub(before.total);
    if total == 0 {
        return 0.0;
    }
    100.0 * after.busy.saturating_sub(before.busy) as f64 / total as f64
}

/// (used, total) bytes from /proc/meminfo: used = total - available.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|kb| kb * 1024)
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    Some((total.saturating_sub(available), total))
}

pub fn parse_loadavg(text: &str) -> Option<(f64, f64, f64)> {
    let mut it = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

fn disk_used_percent(path: &Path) -> Option<f64> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let total = s.blocks() as f64;
    if total == 0.0 {
        return None;
    }
    Some(100.0 * (total - s.blocks_free() as f64) / total)
}

/// Samples the host. CPU is measured over `cpu_window`.
pub async fn sample(data_path: &Path, cpu_window: std::time::Duration) -> HostMetrics {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let before = parse_cpu(&read("/proc/stat")).unwrap_or_default();
    tokio::time::sleep(cpu_window).await;
    let after = parse_cpu(&read("/proc/stat")).unwrap_or_default();
    let (mem_used_bytes, mem_total_bytes) =
        parse_meminfo(&read("/proc/meminfo")).unwrap_or_default();
    let (load_1, load_5, load_15) = parse_loadavg(&read("/proc/loadavg")).unwrap_or_default();
    let uptime_s = read("/proc/uptime")
        .split_whitespace()
        .next()
        .and_then(|f| f.parse::<f64>().ok())
        .unwrap_or_default() as u64;
    HostMetrics {
        cpu_percent: cpu_percent(before, after),
        mem_used_bytes,
        mem_total_bytes,
        disk_used_percent: disk_used_percent(data_path).unwrap_or_default(),
        load_1,
        load_5,
        load_15,
        uptime_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_from_two_samples() {
        let a = parse_cpu("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        let b = parse_cpu("cpu  150 0 150 750 100 0 0 0 0 0\n").unwrap();
        assert_eq!(
            a,
            CpuTimes {
                busy: 200,
                total: 1000
            }
        );
        assert!((cpu_percent(a, b) - 66.666).abs() < 0.01);
        assert_eq!(cpu_percent(b, b), 0.0);
    }

    #[test]
    fn meminfo_uses_available_memory() {
        let text = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    400 kB\n";
        assert_eq!(parse_meminfo(text), Some((600 * 1024, 1000 * 1024)));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn loadavg_reads_three_numbers() {
        assert_eq!(
            parse_loadavg("0.50 0.25 1.00 1/200 999\n"),
            Some((0.5, 0.25, 1.0))
        );
        assert_eq!(parse_loadavg("x"), None);
    }

    #[tokio::test]
    async fn sampling_this_host_gives_plausible_numbers() {
        let m = sample(Path::new("/"), std::time::Duration::from_millis(20)).await;
        assert!(m.mem_total_bytes > 0 && m.mem_used_bytes <= m.mem_total_bytes);
        assert!((0.0..=100.0).contains(&m.disk_used_percent) && m.disk_used_percent > 0.0);
        assert!((0.0..=100.0).contains(&m.cpu_percent));
        assert!(m.uptime_s > 0);
    }
}

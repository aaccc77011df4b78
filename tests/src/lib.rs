//! Real local peers and helpers for Vigil's tests. Everything listens on
//! 127.0.0.1 only.

pub mod discord;
pub mod docker;
pub mod edge;
pub mod healthchecks;
pub mod observer;
pub mod openai;
pub mod pagerduty;
pub mod pair;
pub mod process;
pub mod serve;
pub mod target;
pub mod webhooks;
pub mod wrangler;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Polls `cond` every `every` until it holds (true) or `within` has passed
/// (false): the one wait loop of the tests, each caller saying what failed.
pub fn eventually(within: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, within: Duration) -> bool {
    eventually(within, Duration::from_millis(20), || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
    })
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("vigil-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where cargo put the workspace's binaries (tests live in target/*/deps).
pub fn bin_path(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --workspace` first",
        p.display()
    );
    p
}

/// Whether the Docker tests may be skipped: only when asked explicitly, so a
/// missing daemon can never turn them green by accident.
pub fn docker_or_skip() -> bool {
    if std::env::var_os("DOCKER_HOST").is_some() {
        return true;
    }
    if std::env::var("VIGIL_SKIP_DOCKER").as_deref() == Ok("1") {
        eprintln!("skipped: VIGIL_SKIP_DOCKER=1");
        return false;
    }
    panic!("DOCKER_HOST is not set: run the tests through scripts/test.sh (it starts a private Docker daemon), or set VIGIL_SKIP_DOCKER=1 to skip them knowingly");
}

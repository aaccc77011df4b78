//! Running the real `vigil-edge` binary on a generated configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::process::Proc;
use crate::{free_port, TempDir};

pub const READ_TOKEN: &str = "read-token-0123456789";
pub const CONTROL_TOKEN: &str = "control-token-0123456789";
pub const JOBS_TOKEN: &str = "jobs-token-0123456789";
pub const CRASH_LOG_TOKEN: &str = "crash-log-token-0123456789";
pub const SIGNAL_TOKEN: &str = "signal-token-0123456789";

pub struct Edge {
    pub proc: Option<Proc>,
    pub dir: TempDir,
    pub addr: SocketAddr,
    bin: PathBuf,
    env: Vec<(&'static str, String)>,
    pub http: reqwest::blocking::Client,
}

/// One request to either shell's API: `token` as the bearer, `who` as
/// `X-Vigil-Operator`, `body` as JSON; the status and the JSON answer
/// (null when it is none).
pub fn ops_request(
    http: &reqwest::blocking::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    who: Option<&str>,
    body: Option<String>,
) -> (u16, Value) {
    let mut req = http.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(w) = who {
        req = req.header("X-Vigil-Operator", w);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let res = req.send().expect("request");
    let status = res.status().as_u16();
    (status, res.json().unwrap_or(Value::Null))
}

/// `GET /ops/targets`' effective targets as `(id, source, url)`, in
/// either shell.
pub fn listed_targets(listing: &Value) -> Vec<(String, String, String)> {
    let text = |t: &Value, k: &str| t[k].as_str().unwrap_or_default().to_string();
    listing["targets"]
        .as_array()
        .map(|ts| {
            let entry = |t: &Value| (text(t, "id"), text(t, "source"), text(t, "url"));
            ts.iter().map(entry).collect()
        })
        .unwrap_or_default()
}

/// Configuration head for fast tests: cycles of `interval_s`, the state dir
/// and listen address filled in.
pub fn config_head(dir: &Path, addr: SocketAddr, interval_s: f64, retry_after_s: f64) -> String {
    format!(
        "interval_s = {interval_s}\nretry_after_s = {retry_after_s}\nstate_dir = {:?}\nlisten = \"{addr}\"\n",
        dir.join("state").display().to_string()
    )
}

impl Edge {
    /// Writes `config` (which must use `config_head`'s address) and starts.
    pub fn start(
        bin: &Path,
        dir: TempDir,
        addr: SocketAddr,
        config: &str,
        env: Vec<(&'static str, String)>,
    ) -> Self {
        std::fs::write(dir.path().join("edge.toml"), config).expect("write config");
        let mut e = Edge {
            proc: None,
            dir,
            addr,
            bin: bin.to_owned(),
            env,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        };
        e.restart();
        e
    }

    /// A fresh temp dir and address for a new edge.
    pub fn prepare(tag: &str) -> (TempDir, SocketAddr) {
        let dir = TempDir::new(tag);
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        (dir, addr)
    }

    pub fn restart(&mut self) {
        let mut env = self.env.clone();
        env.push(("OPS_READ_TOKEN", READ_TOKEN.into()));
        env.push(("CONTROL_TOKEN", CONTROL_TOKEN.into()));
        env.push(("JOBS_TOKEN", JOBS_TOKEN.into()));
        env.push(("CRASH_LOG_TOKEN", CRASH_LOG_TOKEN.into()));
        env.push(("SIGNAL_TOKEN", SIGNAL_TOKEN.into()));
        env.push(("RUST_LOG", "info,edge=debug".into()));
        let config = self.dir.path().join("edge.toml").display().to_string();
        let n = std::fs::read_dir(self.dir.path())
            .map(|d| d.count())
            .unwrap_or(0);
        let log = self.dir.path().join(format!("edge-{n}.log"));
        self.proc = Some(Proc::start(
            &self.bin,
            &["--config", &config],
            &env,
            self.addr,
            &log,
        ));
    }

    /// SIGKILL: no chance to save anything more.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    pub fn logs(&self) -> String {
        self.proc.as_ref().map(|p| p.logs()).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> Value {
        let res = self
            .http
            .get(format!("http://{}{path}", self.addr))
            .bearer_auth(READ_TOKEN)
            .send()
            .expect("GET");
        assert!(res.status().is_success(), "GET {path}: {}", res.status());
        res.json().expect("JSON")
    }

    pub fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("http://{}{path}", self.addr))
            .bearer_auth(CONTROL_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().expect("POST");
        let status = res.status().as_u16();
        (status, res.json().unwrap_or(Value::Null))
    }

    /// Polls `f` on the summary until it holds, or panics with the logs.
    pub fn wait_for(&self, what: &str, within: Duration, f: impl Fn(&Edge) -> bool) {
        if crate::eventually(within, Duration::from_millis(50), || f(self)) {
            return;
        }
        panic!(
            "timed out waiting for {what}; summary: {}\nlogs:\n{}",
            self.get("/ops/summary"),
            self.logs()
        );
    }

    pub fn target_state(&self, id: &str) -> String {
        let s = self.get("/ops/summary");
        s["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .map(|t| t["state"].as_str().unwrap().to_string())
            .unwrap_or_default()
    }
}

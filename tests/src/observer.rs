//! What people look at Vigil with, for real: Debian's Prometheus (and its
//! promtool) and a plain HTTP fetch with the headers. Everything on
//! 127.0.0.1.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::Proc;
use crate::{free_port, TempDir};

/// A GET with an optional bearer token: status, headers and body.
pub struct Fetched {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

pub fn fetch(url: &str, bearer: Option<&str>) -> Fetched {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let mut req = client.get(url);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let res = req.send().expect("GET");
    Fetched {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        body: res.text().expect("body"),
    }
}

/// `promtool check metrics` on `text`: its exit code and what it printed.
pub fn promtool_check(text: &str) -> (i32, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/setup.sh installs Debian's prometheus)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let printed =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), printed)
}

/// A real Prometheus scraping one target every second.
pub struct Prometheus {
    proc: Proc,
    _dir: TempDir,
}

impl Prometheus {
    pub fn start(scrape: SocketAddr, bearer: Option<&str>) -> Self {
        let dir = TempDir::new("prometheus");
        let auth = bearer.map_or(String::new(), |t| format!("    bearer_token: {t:?}\n"));
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: vigil\n{auth}    static_configs:\n      - targets: [\"{scrape}\"]\n"
        );
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config).expect("write prometheus.yml");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let proc = Proc::start(
            Path::new("/usr/bin/prometheus"),
            &[
                &format!("--config.file={}", file.display()),
                &format!("--storage.tsdb.path={}", dir.path().join("data").display()),
                &format!("--web.listen-address={addr}"),
            ],
            &[],
            addr,
            &dir.path().join("prometheus.log"),
        );
        Prometheus { proc, _dir: dir }
    }

    /// The instant query's result vector.
    pub fn query(&self, promql: &str) -> Vec<Value> {
        let url = reqwest::Url::parse_with_params(
            &format!("http://{}/api/v1/query", self.proc.addr),
            &[("query", promql)],
        )
        .expect("query url");
        let f = fetch(url.as_str(), None);
        let v: Value = serde_json::from_str(&f.body).unwrap_or(Value::Null);
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The single value `promql` yields, once it yields one.
    pub fn wait_for_value(&self, promql: &str, want: &str, within: Duration) {
        let deadline = Instant::now() + within;
        let mut last = Vec::new();
        while Instant::now() < deadline {
            last = self.query(promql);
            if last.len() == 1 && last[0]["value"][1] == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "{promql} did not become {want}; last: {last:?}\ntargets: {}\nlogs:\n{}",
            fetch(&format!("http://{}/api/v1/targets", self.proc.addr), None).body,
            self.proc.logs()
        );
    }
}

/// What headless Chromium (Debian's `chromium`) saw of a page.
pub struct Browsed {
    /// The DOM after loading.
    pub dom: String,
    /// Messages the page wrote to the console (errors, CSP refusals).
    pub console: Vec<String>,
    /// The page's own request and every request a page started: (url,
    /// initiating origin).
    pub page_requests: Vec<(String, String)>,
}

fn chromium(args: &[String], profile: &Path) -> std::process::Output {
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args);
    cmd.output()
        .expect("chromium (scripts/setup.sh installs Debian's chromium)")
}

/// Loads `url` and returns the DOM, the console and the page's requests
/// (from Chromium's net log: requests with a page as their initiator;
/// Chromium's own update checks have none and are left out).
pub fn browse(url: &str) -> Browsed {
    let dir = TempDir::new("chromium");
    let netlog = dir.path().join("net.json");
    let out = chromium(
        &[
            format!("--log-net-log={}", netlog.display()),
            "--dump-dom".into(),
            url.into(),
        ],
        &dir.path().join("profile"),
    );
    assert!(out.status.success(), "chromium: {out:?}");
    let log = String::from_utf8_lossy(&out.stderr);
    let console = log
        .lines()
        .filter(|l| l.contains(":CONSOLE:") || l.contains("Refused to"))
        .map(str::to_string)
        .collect();
    let net: Value = serde_json::from_str(&std::fs::read_to_string(&netlog).unwrap_or_default())
        .unwrap_or(Value::Null);
    let page_requests = net["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let p = &e["params"];
            let (initiator, req) = (p["initiator"].as_str()?, p["url"].as_str()?);
            (initiator.starts_with("http") || req == url)
                .then(|| (req.to_string(), initiator.to_string()))
        })
        .collect();
    Browsed {
        dom: String::from_utf8_lossy(&out.stdout).to_string(),
        console,
        page_requests,
    }
}

/// A PNG of `url` at `width`×`height`, light or dark, written to `file`.
pub fn screenshot(url: &str, width: u32, height: u32, dark: bool, file: &Path) {
    let dir = TempDir::new("chromium-shot");
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).expect("screenshot dir");
    }
    let mut args = vec![
        format!("--screenshot={}", file.display()),
        format!("--window-size={width},{height}"),
    ];
    if dark {
        args.push("--force-dark-mode".into());
        args.push("--blink-settings=preferredColorScheme=0".into());
    }
    args.push(url.into());
    let out = chromium(&args, &dir.path().join("profile"));
    assert!(
        out.status.success() && file.exists(),
        "chromium screenshot: {out:?}"
    );
}

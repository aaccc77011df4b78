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
        let mut last = Vec::new();
        if crate::eventually(within, Duration::from_millis(200), || {
            last = self.query(promql);
            last.len() == 1 && last[0]["value"][1] == want
        }) {
            return;
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

/// Headless Chromium driven over WebDriver (Debian's `chromium-driver`),
/// for what a page does when a person uses it: forms, cookies, console.
pub struct Browser {
    _driver: Proc,
    http: reqwest::blocking::Client,
    session: String,
    _dir: TempDir,
}

/// The key WebDriver names element references with.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    pub fn start() -> Self {
        let dir = TempDir::new("chromedriver");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let driver = Proc::start(
            Path::new("/usr/bin/chromedriver"),
            &[&format!("--port={}", addr.port())],
            &[],
            addr,
            &dir.path().join("chromedriver.log"),
        );
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let profile = dir.path().join("profile");
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                         "--disable-background-networking", "--hide-scrollbars",
                         format!("--user-data-dir={}", profile.display())]
            },
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let res: Value = http
            .post(format!("http://{addr}/session"))
            .json(&caps)
            .send()
            .and_then(|r| r.json())
            .expect("new WebDriver session");
        let session = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {res}"))
            .to_string();
        Browser {
            _driver: driver,
            http,
            session: format!("http://{addr}/session/{session}"),
            _dir: dir,
        }
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"))
    }

    /// A WebDriver call: its value, or the error it answered.
    fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().and_then(|r| r.json()).expect("WebDriver call");
        if v["value"]["error"].is_null() {
            Ok(v["value"].clone())
        } else {
            Err(v["value"].clone())
        }
    }

    /// `what` (a path below the element) on the element `css` selects. A
    /// page replaced between finding and using the element (a click's
    /// navigation) leaves it stale: it is found again on the new page.
    fn on_element(
        &self,
        css: &str,
        method: reqwest::Method,
        what: &str,
        body: Option<Value>,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let e = self.find(css);
            match self.try_call(
                method.clone(),
                &format!("/element/{e}/{what}"),
                body.clone(),
            ) {
                Ok(v) => return v,
                Err(err)
                    if err["error"] == "stale element reference" && Instant::now() < deadline => {}
                Err(err) => panic!("WebDriver {css} {what}: {err}"),
            }
        }
    }

    pub fn goto(&self, url: &str) {
        self.call(
            reqwest::Method::POST,
            "/url",
            Some(serde_json::json!({ "url": url })),
        );
    }

    pub fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn title(&self) -> String {
        self.call(reqwest::Method::GET, "/title", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The page's source as the browser holds it.
    pub fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The elements `css` selects.
    pub fn find_all(&self, css: &str) -> Vec<String> {
        let found = self.call(
            reqwest::Method::POST,
            "/elements",
            Some(serde_json::json!({"using": "css selector", "value": css})),
        );
        found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT].as_str().map(str::to_string))
            .collect()
    }

    /// The first element `css` selects, waiting for it (a page may still
    /// be loading after a click).
    fn find(&self, css: &str) -> String {
        let mut found = None;
        crate::eventually(Duration::from_secs(15), Duration::from_millis(100), || {
            found = self.find_all(css).into_iter().next();
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("no {css} on {}:\n{}", self.url(), self.source()))
    }

    /// What a person reads in the element `css` selects.
    pub fn text(&self, css: &str) -> String {
        self.on_element(css, reqwest::Method::GET, "text", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The computed value of a CSS `property` of the element `css` selects.
    pub fn css_value(&self, css: &str, property: &str) -> String {
        self.on_element(css, reqwest::Method::GET, &format!("css/{property}"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn type_into(&self, css: &str, text: &str) {
        self.on_element(
            css,
            reqwest::Method::POST,
            "value",
            Some(serde_json::json!({ "text": text })),
        );
    }

    pub fn click(&self, css: &str) {
        self.on_element(
            css,
            reqwest::Method::POST,
            "click",
            Some(serde_json::json!({})),
        );
    }

    pub fn cookies(&self) -> Vec<Value> {
        self.call(reqwest::Method::GET, "/cookie", None)
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Console messages at warning level or above since the last call.
    pub fn console_problems(&self) -> Vec<Value> {
        self.call(
            reqwest::Method::POST,
            "/se/log",
            Some(serde_json::json!({"type": "browser"})),
        )
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["level"] != "INFO" && e["level"] != "DEBUG")
        .cloned()
        .collect()
    }

    /// A PNG of the viewport at `width`×`height`, written to `file`.
    pub fn screenshot(&self, width: u32, height: u32, file: &Path) {
        use base64::Engine;
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(serde_json::json!({"width": width, "height": height})),
        );
        let png = self.call(reqwest::Method::GET, "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .expect("screenshot is base64");
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).expect("screenshot dir");
        }
        std::fs::write(file, bytes).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.http.delete(&self.session).send();
    }
}

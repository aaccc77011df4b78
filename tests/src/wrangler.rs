//! The edge Worker running in workerd under `wrangler dev`, with the
//! toolchain scripts/worker-toolchain.sh installs, on 127.0.0.1 only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::process::Proc;
use crate::{free_port, TempDir};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether the Worker tests may run: the built Worker and wrangler must be
/// there, unless VIGIL_SKIP_WORKER=1 says to skip them knowingly.
pub fn worker_or_skip() -> bool {
    let shim = repo().join("edge/build/worker/shim.mjs");
    let wrangler = repo().join("deploy/node_modules/.bin/wrangler");
    if shim.exists() && wrangler.exists() {
        return true;
    }
    if std::env::var("VIGIL_SKIP_WORKER").as_deref() == Ok("1") {
        eprintln!("skipped: VIGIL_SKIP_WORKER=1");
        return false;
    }
    panic!("the Worker is not built ({} or {} missing): run scripts/test.sh, or set VIGIL_SKIP_WORKER=1 to skip knowingly", shim.display(), wrangler.display());
}

pub struct Wrangler {
    pub proc: Option<Proc>,
    pub addr: SocketAddr,
    pub dir: TempDir,
    vars: Vec<(String, String)>,
    starts: u32,
    /// `http`, or `https` with wrangler's own self-signed certificate.
    scheme: &'static str,
    pub http: reqwest::blocking::Client,
}

impl Wrangler {
    /// `vars` become `--var NAME:VALUE` (VIGIL_CONFIG, secrets). Without a
    /// `VIGIL_STORE` among them, the store is `VIGIL_TEST_STORE` when set
    /// (`durable_object` runs a suite on the Durable Object store), else KV.
    pub fn start(vars: Vec<(String, String)>) -> Self {
        Self::start_with(vars, "")
    }

    /// Like `start`, with `extra` appended to wrangler.toml (bindings).
    pub fn start_with(vars: Vec<(String, String)>, extra: &str) -> Self {
        Self::launch(vars, extra, "http")
    }

    /// Served over TLS (`[dev] local_protocol = "https"`, wrangler's own
    /// self-signed certificate, which `http` accepts).
    pub fn start_https(vars: Vec<(String, String)>) -> Self {
        Self::launch(vars, "[dev]\nlocal_protocol = \"https\"\n", "https")
    }

    fn launch(mut vars: Vec<(String, String)>, extra: &str, scheme: &'static str) -> Self {
        if let Ok(store) = std::env::var("VIGIL_TEST_STORE") {
            if !vars.iter().any(|(k, _)| k == "VIGIL_STORE") {
                vars.push(("VIGIL_STORE".into(), store));
            }
        }
        let dir = TempDir::new("wrangler");
        let mut config = format!(
            "name = \"vigil-edge-test\"\nmain = {:?}\ncompatibility_date = \"2025-09-01\"\nsend_metrics = false\n\n[[kv_namespaces]]\nbinding = \"VIGIL_KV\"\nid = \"vigil-test\"\n\n[[analytics_engine_datasets]]\nbinding = \"VIGIL_AE\"\ndataset = \"vigil_test\"\n\n[[durable_objects.bindings]]\nname = \"VIGIL_DO\"\nclass_name = \"VigilEdge\"\n\n[[migrations]]\ntag = \"v1\"\nnew_sqlite_classes = [\"VigilEdge\"]\n",
            repo().join("edge/build/worker/shim.mjs").display().to_string()
        );
        config.push_str(extra);
        std::fs::write(dir.path().join("wrangler.toml"), config).expect("write wrangler.toml");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut w = Wrangler {
            proc: None,
            addr,
            dir,
            vars,
            starts: 0,
            scheme,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(120))
                .danger_accept_invalid_certs(scheme == "https")
                .build()
                .unwrap(),
        };
        w.restart();
        w
    }

    /// (Re)starts wrangler on the same port and the same persisted state.
    pub fn restart(&mut self) {
        self.stop();
        self.starts += 1;
        let bin = repo().join("deploy/node_modules/.bin");
        let inspector = free_port().to_string();
        let port = self.addr.port().to_string();
        let config = self.dir.path().join("wrangler.toml").display().to_string();
        let persist = self.dir.path().join("state").display().to_string();
        let mut args: Vec<String> = [
            "dev",
            "--config",
            &config,
            "--ip",
            "127.0.0.1",
            "--port",
            &port,
            "--inspector-port",
            &inspector,
            "--test-scheduled",
            "--persist-to",
            &persist,
            "--show-interactive-dev-session=false",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (k, v) in &self.vars {
            args.push("--var".into());
            args.push(format!("{k}:{}", as_worker_reads(k, v)));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let env = [
            ("PATH", path),
            ("HOME", self.dir.path().display().to_string()),
            ("WRANGLER_SEND_METRICS", "false".into()),
            ("WRANGLER_SEND_ERROR_REPORTS", "false".into()),
            ("CLOUDFLARE_CF_FETCH_ENABLED", "false".into()),
            ("CI", "true".into()),
        ];
        let log = self
            .dir
            .path()
            .join(format!("wrangler-{}.log", self.starts));
        self.proc = Some(Proc::start(
            &bin.join("wrangler"),
            &args,
            &env,
            self.addr,
            &log,
        ));
        // The port opens before the Worker is loaded: wait for an answer.
        for _ in 0..200 {
            if self
                .http
                .get(self.url("/healthz"))
                .send()
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the Worker did not answer:\n{}", self.logs());
    }

    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate();
        }
    }

    /// GET `path` with `token` (none: without one): status and JSON body.
    pub fn get_json(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().expect("GET");
        let status = res.status().as_u16();
        (status, res.json().unwrap_or(Value::Null))
    }

    /// Signs in to the audit view (`/ui`) with `token`: the `Set-Cookie`
    /// of its answer (a 303, not followed: the redirect carries the cookie).
    pub fn ui_sign_in(&self, token: &str) -> String {
        let http = reqwest::blocking::Client::builder()
            .danger_accept_invalid_certs(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let res = http
            .post(self.url("/ui/sign-in"))
            .form(&[("token", token)])
            .send()
            .expect("POST /ui/sign-in");
        assert_eq!(res.status(), 303);
        res.headers()["set-cookie"].to_str().unwrap().to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// Triggers the cron handler without waiting for a report.
    pub fn trigger(&self) -> u16 {
        self.http
            .get(self.url("/__scheduled?cron=*+*+*+*+*"))
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// Runs the cron handler once and returns its cycle report.
    pub fn scheduled(&self) -> Value {
        let before = self.reports().len();
        let res = self
            .http
            .get(self.url("/__scheduled?cron=*+*+*+*+*"))
            .send()
            .expect("/__scheduled");
        assert!(res.status().is_success(), "/__scheduled: {}", res.status());
        for _ in 0..100 {
            let reports = self.reports();
            if reports.len() > before {
                return reports[reports.len() - 1].clone();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no cycle report:\n{}", self.logs());
    }

    /// Every `vigil cycle: {...}` line the Worker logged, this start.
    pub fn reports(&self) -> Vec<Value> {
        self.logs()
            .lines()
            .filter_map(|l| {
                l.split_once("vigil cycle: ")
                    .and_then(|(_, j)| serde_json::from_str(j.trim()).ok())
            })
            .collect()
    }

    pub fn logs(&self) -> String {
        self.proc.as_ref().map(|p| p.logs()).unwrap_or_default()
    }
}

impl Drop for Wrangler {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What an operator puts in the Worker: `VIGIL_CONFIG` as the JSON of the
/// TOML file (`vigil-edge --print-json`); other vars as they are.
fn as_worker_reads(name: &str, value: &str) -> String {
    if name != "VIGIL_CONFIG" || value.trim_start().starts_with('{') {
        return value.to_string();
    }
    basic_toml::from_str::<serde_json::Value>(value)
        .unwrap_or_else(|e| panic!("VIGIL_CONFIG is not TOML: {e}"))
        .to_string()
}

//! Starting the real ops-agent binary for integration tests.

#![allow(dead_code)] // each test file uses its own part of this

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use vigil_testkit::process::Proc;
use vigil_testkit::{free_port, TempDir};

pub const TOKEN: &str = "test-token-0123456789";

pub struct Agent {
    pub proc: Proc,
    pub dir: TempDir,
    pub base: String,
    pub http: reqwest::Client,
}

impl Agent {
    pub fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.audit_path())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET")
    }

    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("POST")
    }
}

pub fn start(actions: &str, env: &[(&str, String)]) -> Agent {
    let dir = TempDir::new("agent");
    let actions_path = dir.path().join("actions.toml");
    std::fs::write(&actions_path, actions).unwrap();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut all = vec![
        ("OPS_AGENT_TOKEN", TOKEN.to_string()),
        ("OPS_AGENT_LISTEN", addr.to_string()),
        ("OPS_AGENT_ACTIONS", actions_path.display().to_string()),
        (
            "OPS_AGENT_AUDIT_LOG",
            dir.path().join("audit.jsonl").display().to_string(),
        ),
        ("COMPOSE_PROJECT", "demo".to_string()),
    ];
    for (k, v) in env {
        all.retain(|(key, _)| key != k);
        all.push((k, v.clone()));
    }
    let proc = Proc::start(
        &PathBuf::from(env!("CARGO_BIN_EXE_ops-agent")),
        &[],
        &all,
        addr,
        &dir.path().join("agent.log"),
    );
    Agent {
        proc,
        dir,
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
    }
}

/// An action of `kind` on `service` with the given timeout.
pub fn action(name: &str, kind: &str, services: &[&str], argv: &[&str], timeout_s: f64) -> String {
    let list = |xs: &[&str]| {
        xs.iter()
            .map(|x| format!("{x:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut s = format!(
        "[[action]]\nname = {name:?}\ndescription = \"test action\"\nkind = {kind:?}\ntimeout_s = {timeout_s}\ndocker_cli = [\"docker\"]\n"
    );
    if !services.is_empty() {
        s += &format!("services = [{}]\n", list(services));
    }
    if !argv.is_empty() {
        s += &format!("argv = [{}]\n", list(argv));
    }
    s
}

/// Polls `done` until it holds, failing the test after a deadline generous
/// enough for a busy machine.
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A stand-in for the edge's `POST /ops/signal`: every body and its
/// Authorization header, in order.
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>;

pub fn signal_standin() -> (String, Received) {
    use axum::http::HeaderMap;
    let received: Received = Default::default();
    let sink = received.clone();
    let router = axum::Router::new().route(
        "/ops/signal",
        axum::routing::post(
            move |headers: HeaderMap, axum::Json(body): axum::Json<serde_json::Value>| {
                let sink = sink.clone();
                async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    sink.lock().unwrap().push((auth, body));
                    axum::http::StatusCode::ACCEPTED
                }
            },
        ),
    );
    let addr = vigil_testkit::serve::spawn(router);
    (format!("http://{addr}"), received)
}

//! The real ops-agent binary over HTTP, without a Docker engine: start-up
//! refusals, auth, allowlist, one-at-a-time, timeouts, idempotency, rate
//! limits, body limits.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{action, signal_standin, start, wait_until, Agent, TOKEN};
use vigil_testkit::TempDir;
use vigil_wire::{ActionList, ActionOutcome, ActionResult, ErrorBody};

/// A stand-in Docker daemon on a Unix socket. `Hanging` accepts connections
/// and never answers (a hung daemon); `PingOnly` answers `/_ping` and
/// `/version` and never anything else (a live daemon whose operations take
/// forever). It counts the connections that send it a request.
struct FakeDocker {
    _dir: TempDir,
    socket: PathBuf,
    connections: Arc<AtomicUsize>,
}

#[derive(Clone, Copy, PartialEq)]
enum Daemon {
    Hanging,
    PingOnly,
    /// Also answers `/events` with one `die` of service `svc-<n>` (n counts
    /// the event streams opened), then closes: an engine that goes away
    /// and comes back.
    EventsThenGone,
}

impl FakeDocker {
    fn new(mode: Daemon) -> Self {
        let dir = TempDir::new("fakedocker");
        let socket = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        std::thread::spawn(move || {
            let streams = Arc::new(AtomicUsize::new(0));
            for conn in listener.incoming().flatten() {
                let (counter, streams) = (counter.clone(), streams.clone());
                std::thread::spawn(move || serve_fake(conn, mode, &counter, &streams));
            }
        });
        FakeDocker {
            _dir: dir,
            socket,
            connections,
        }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Waits until the agent has connected to the daemon: an action is under way.
    async fn wait_for_a_connection(&self) {
        wait_until("the agent connects to Docker", || self.connections() > 0).await;
    }
}

/// Counts the connections that send a request (the agent's start-up check
/// only connects), and answers them as `mode` says.
fn serve_fake(conn: UnixStream, mode: Daemon, requests: &AtomicUsize, streams: &AtomicUsize) {
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut out = conn;
    let mut first = true;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        if std::mem::take(&mut first) {
            requests.fetch_add(1, Ordering::SeqCst);
        }
        // Headers up to the blank line; the calls answered have no body.
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
        }
        let path = request_line.split(' ').nth(1).unwrap_or_default();
        let body = if mode == Daemon::Hanging {
            None
        } else if path.ends_with("/_ping") {
            Some(("text/plain", "OK".to_string()))
        } else if mode == Daemon::EventsThenGone && path.contains("/events") {
            let n = streams.fetch_add(1, Ordering::SeqCst) + 1;
            let event = format!(
                r#"{{"Type":"container","Action":"die","Actor":{{"ID":"c{n}","Attributes":{{"com.docker.compose.project":"demo","com.docker.compose.service":"svc-{n}"}}}},"time":1,"timeNano":1}}"#
            );
            let _ = write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{event}\n"
            );
            return;
        } else if path.ends_with("/version") {
            Some((
                "application/json",
                r#"{"ApiVersion":"1.41","Version":"20.10.24"}"#.to_string(),
            ))
        } else {
            None
        };
        let Some((kind, body)) = body else {
            // Never answer: hold the connection until the agent drops it.
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
            return;
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if out
            .write_all(head.as_bytes())
            .and_then(|()| out.write_all(body.as_bytes()))
            .is_err()
        {
            return;
        }
    }
}

/// A 64 KiB tmpfs mounted on a fresh directory (the tests run as root, as
/// the private Docker daemon needs), unmounted on drop.
struct SmallDisk {
    dir: TempDir,
}

impl SmallDisk {
    fn new() -> Self {
        let dir = TempDir::new("smalldisk");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(mounted.success(), "mounting a tmpfs needs root");
        SmallDisk { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Fills the disk up: the next write that needs a block fails.
    fn fill(&self) {
        let mut filler = std::fs::File::create(self.path("filler")).unwrap();
        while filler.write_all(&[0u8; 4096]).is_ok() {}
    }

    fn free(&self) {
        std::fs::remove_file(self.path("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn slow_actions() -> String {
    action("restart_api_core", "restart", &["api-core"], &[], 1.0)
        + &action("restart_gateway", "restart", &["gateway"], &[], 1.0)
}

/// How long the agent waits for one Docker call in these tests.
const DOCKER_TIMEOUT_S: &str = "3";

/// An agent whose Docker daemon behaves as `mode` says.
fn agent_with(mode: Daemon, env: &[(&str, String)]) -> (Agent, FakeDocker) {
    let docker = FakeDocker::new(mode);
    let mut all = vec![
        ("DOCKER_HOST", docker.host()),
        ("OPS_AGENT_DOCKER_TIMEOUT_S", DOCKER_TIMEOUT_S.to_string()),
    ];
    all.extend(env.iter().cloned());
    (start(&slow_actions(), &all), docker)
}

/// Expects an error answer with `status` and `code` whose message mentions
/// `mentions`.
async fn expect_error(res: reqwest::Response, status: u16, code: &str, mentions: &str) {
    assert_eq!(res.status(), status);
    let body: ErrorBody = res.json().await.unwrap();
    assert_eq!(body.error.code, code);
    assert!(
        body.error.message.contains(mentions),
        "{}",
        body.error.message
    );
}

/// Asks to run `action`, expects the refusal, and returns the one audit
/// line it wrote (naming the action as sent).
async fn refused_and_audited(
    agent: &Agent,
    action: &str,
    status: u16,
    code: &str,
) -> serde_json::Value {
    let res = agent.post(&format!("/v1/actions/{action}")).await;
    assert_eq!(res.status(), status);
    assert_eq!(error_code(res).await, code);
    let lines = agent.audit_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["action"], action);
    lines[0].clone()
}

fn outcomes(agent: &Agent) -> Vec<String> {
    agent
        .audit_lines()
        .iter()
        .map(|l| l["outcome"].as_str().unwrap().to_string())
        .collect()
}

async fn error_code(res: reqwest::Response) -> String {
    res.json::<ErrorBody>()
        .await
        .expect("error body")
        .error
        .code
}

#[test]
fn refuses_to_start_without_a_long_enough_token() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_ops-agent"));
    for (token, expect) in [
        (None, "OPS_AGENT_TOKEN is not set"),
        (Some("short"), "at least 16"),
        (Some("                "), "whitespace"),
        (Some("0123456789abcdefgh\n"), "whitespace"),
    ] {
        let mut cmd = Command::new(&bin);
        cmd.env_clear()
            .env("COMPOSE_PROJECT", "demo")
            .env("OPS_AGENT_LISTEN", "127.0.0.1:0");
        if let Some(t) = token {
            cmd.env("OPS_AGENT_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expect), "{stderr}");
    }
}

#[test]
fn check_validates_the_allowlist_and_names_the_problem() {
    let dir = TempDir::new("check");
    let bad = dir.path().join("actions.toml");
    std::fs::write(&bad, action("Bad-Name", "restart", &["x"], &[], 1.0)).unwrap();
    let run = |path: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_ops-agent"))
            .arg("check")
            .env_clear()
            .env("OPS_AGENT_TOKEN", TOKEN)
            .env("COMPOSE_PROJECT", "demo")
            .env("OPS_AGENT_ACTIONS", path)
            .output()
            .unwrap()
    };
    let out = run(&bad);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("actions.toml") && stderr.contains("Bad-Name"),
        "{stderr}"
    );
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../actions.toml");
    let out = run(&shipped);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("6 actions"));
}

#[tokio::test]
async fn healthz_is_open_and_everything_else_needs_the_token() {
    let (agent, _docker) = agent_with(
        Daemon::Hanging,
        &[("OPS_AGENT_AUTH_FAIL_BURST", "100".into())],
    );
    let res = agent.http.get(agent.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"ok": true})
    );

    for path in [
        "/v1/actions",
        "/v1/diagnostics",
        "/v1/audit",
        "/metrics",
        "/v1/logs/api-core",
    ] {
        let none = agent.http.get(agent.url(path)).send().await.unwrap();
        let wrong = agent
            .http
            .get(agent.url(path))
            .bearer_auth("wrong-token-0123456789")
            .send()
            .await
            .unwrap();
        assert_eq!(none.status(), 401, "{path}");
        assert_eq!(wrong.status(), 401, "{path}");
        let (a, b) = (none.text().await.unwrap(), wrong.text().await.unwrap());
        assert_eq!(a, b, "missing and wrong tokens must look the same");
    }
    let list: ActionList = agent.get("/v1/actions").await.json().await.unwrap();
    let names: Vec<_> = list.actions.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["restart_api_core", "restart_gateway"]);
    assert_eq!(list.actions[0].timeout_ms, 1000);
    let logs = agent.proc.logs();
    assert!(logs.contains("ops-agent listening"), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "colour codes in a log file: {logs}"
    );
}

#[tokio::test]
async fn unknown_action_is_404_runs_nothing_and_is_audited() {
    let (agent, _docker) = agent_with(Daemon::Hanging, &[]);
    let line = refused_and_audited(&agent, "rm_rf_everything", 404, "unknown_action").await;
    assert_eq!(line["outcome"], "unknown_action");
    assert_eq!(line["client_ip"], "127.0.0.1");
    // A wrong token on an action route is an attempt too.
    let res = agent
        .http
        .post(agent.url("/v1/actions/restart_api_core"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(agent.audit_lines()[1]["outcome"], "unauthorized");
}

#[tokio::test]
async fn a_slow_action_times_out_and_a_second_one_meanwhile_gets_409() {
    let (agent, docker) = agent_with(Daemon::PingOnly, &[]);
    let first = agent.post("/v1/actions/restart_api_core");
    let second = async {
        docker.wait_for_a_connection().await;
        agent.post("/v1/actions/restart_gateway").await
    };
    let (first, second) = tokio::join!(first, second);
    expect_error(second, 409, "busy", "restart_api_core").await;

    assert_eq!(first.status(), 200);
    let result: ActionResult = first.json().await.unwrap();
    assert_eq!(result.outcome, ActionOutcome::TimedOut);
    assert!(!result.ok);
    assert!(
        // The action's 1 s, not the 3 s a Docker call may take: the daemon
        // answered the ping, so the action was slow, not Docker hung.
        result.duration_ms >= 1000 && result.duration_ms < 3000,
        "{}",
        result.duration_ms
    );
    assert!(result.error.unwrap().contains("timed out"));

    // The slot is free again once the first has timed out.
    let again = agent.post("/v1/actions/restart_gateway").await;
    assert_eq!(again.status(), 200);
    assert_eq!(
        outcomes(&agent),
        ["started", "busy", "timed_out", "started", "timed_out"]
    );

    let metrics = agent.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(
            r#"ops_agent_actions_total{action="restart_api_core",outcome="timed_out"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_hung_docker_daemon_is_docker_unavailable_within_the_agents_limit() {
    // The action may take 30 s; a daemon that does not answer at all is
    // found out after the Docker call timeout (3 s), not after 30 s.
    let toml = action("restart_api_core", "restart", &["api-core"], &[], 30.0);
    let docker = FakeDocker::new(Daemon::Hanging);
    let agent = start(
        &toml,
        &[
            ("DOCKER_HOST", docker.host()),
            ("OPS_AGENT_DOCKER_TIMEOUT_S", DOCKER_TIMEOUT_S.to_string()),
        ],
    );
    let started = Instant::now();
    let res = agent.post("/v1/actions/restart_api_core").await;
    let took = started.elapsed();
    expect_error(res, 502, "docker_unavailable", "did not answer").await;
    assert!(took < Duration::from_secs(20), "{took:?}");

    let started = Instant::now();
    let diag: vigil_wire::Diagnostics = agent.get("/v1/diagnostics").await.json().await.unwrap();
    assert!(!diag.docker_ok);
    assert!(diag.docker_error.unwrap().contains("did not answer"));
    assert!(started.elapsed() < Duration::from_secs(20));

    let logs = agent.get("/v1/logs/api-core").await;
    assert_eq!(logs.status(), 502);
    assert_eq!(error_code(logs).await, "docker_unavailable");
    assert_eq!(outcomes(&agent), ["started", "failed"]);
}

#[tokio::test]
async fn an_idempotency_key_replays_instead_of_running_twice() {
    let (agent, docker) = agent_with(Daemon::PingOnly, &[]);
    let send = |key: &'static str, name: &'static str| {
        agent
            .http
            .post(agent.url(&format!("/v1/actions/{name}")))
            .bearer_auth(TOKEN)
            .header("Idempotency-Key", key)
            .send()
    };
    let first = send("incident-7-round-1", "restart_api_core")
        .await
        .unwrap();
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: ActionResult = first.json().await.unwrap();
    let calls = docker.connections();
    let replay = send("incident-7-round-1", "restart_api_core")
        .await
        .unwrap();
    assert_eq!(
        docker.connections(),
        calls,
        "a replay must not run the action"
    );
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replay: ActionResult = replay.json().await.unwrap();
    assert_eq!(replay, first);
    let misuse = send("incident-7-round-1", "restart_gateway").await.unwrap();
    assert_eq!(misuse.status(), 422);
    assert_eq!(outcomes(&agent), ["started", "timed_out", "replayed"]);
}

#[tokio::test]
async fn a_burst_gets_429_with_retry_after() {
    let (agent, _docker) = agent_with(
        Daemon::Hanging,
        &[
            ("OPS_AGENT_RATE_PER_MIN", "60".into()),
            ("OPS_AGENT_RATE_BURST", "5".into()),
        ],
    );
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(agent.get("/v1/actions").await);
    }
    let codes: Vec<u16> = statuses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(codes, [200, 200, 200, 200, 200, 429, 429, 429]);
    let limited = statuses.pop().unwrap();
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(error_code(limited).await, "rate_limited");
}

#[tokio::test]
async fn repeated_wrong_tokens_are_cut_off_sooner() {
    let (agent, _docker) = agent_with(
        Daemon::Hanging,
        &[("OPS_AGENT_AUTH_FAIL_BURST", "3".into())],
    );
    let mut codes = Vec::new();
    for _ in 0..5 {
        let r = agent
            .http
            .get(agent.url("/v1/actions"))
            .bearer_auth("nope-nope-nope-nope")
            .send()
            .await
            .unwrap();
        codes.push(r.status().as_u16());
    }
    assert_eq!(codes, [401, 401, 401, 429, 429]);
}

#[tokio::test]
async fn oversized_bodies_are_refused_before_anything_runs() {
    let (agent, _docker) = agent_with(Daemon::Hanging, &[]);
    let res = agent
        .http
        .post(agent.url("/v1/actions/restart_api_core"))
        .bearer_auth(TOKEN)
        .body(vec![b'x'; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(
        res.headers()["connection"],
        "close",
        "the unread body spoils the connection"
    );
    assert_eq!(error_code(res).await, "body_too_large");
    assert_eq!(outcomes(&agent), ["body_too_large"], "refused, and audited");
}

#[tokio::test]
async fn a_path_that_does_not_decode_is_a_json_400_and_audited() {
    let (agent, docker) = agent_with(Daemon::Hanging, &[]);
    let line = refused_and_audited(&agent, "%FF%FE", 400, "bad_path").await;
    assert_eq!(line["outcome"], "bad_request");
    for path in ["/v1/logs/%FF", "/v1/audit?limit=%FF"] {
        let res = agent.get(path).await;
        assert_eq!(res.status(), 400, "{path}");
        let code = error_code(res).await;
        assert!(code == "bad_path" || code == "bad_query", "{path}: {code}");
    }
    assert_eq!(docker.connections(), 0);
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let (agent, _docker) = agent_with(Daemon::Hanging, &[]);
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let res = agent
            .http
            .get(agent.url("/v1/actions"))
            .header("Authorization", format!("{scheme} {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{scheme}");
    }
}

#[tokio::test]
async fn docker_down_is_a_clear_502_not_a_crash() {
    let dir = TempDir::new("nodocker");
    let missing = format!("unix://{}", dir.path().join("absent.sock").display());
    let agent = start(&slow_actions(), &[("DOCKER_HOST", missing)]);
    let res = agent.post("/v1/actions/restart_api_core").await;
    assert_eq!(res.status(), 502);
    let body: ErrorBody = res.json().await.unwrap();
    assert_eq!(body.error.code, "docker_unavailable");
    let diag: vigil_wire::Diagnostics = agent.get("/v1/diagnostics").await.json().await.unwrap();
    assert!(!diag.docker_ok);
    assert!(diag.docker_error.unwrap().contains("unavailable"));
    assert!(diag.host.mem_total_bytes > 0);
    let logs = agent.get("/v1/logs/api-core").await;
    assert_eq!(logs.status(), 502);
    // Still serving.
    assert_eq!(agent.get("/v1/actions").await.status(), 200);
    assert_eq!(outcomes(&agent)[..2], ["started", "failed"]);
}

#[tokio::test]
async fn sigterm_lets_a_running_action_finish() {
    let (mut agent, docker) = agent_with(Daemon::PingOnly, &[]);
    let pending = agent.post("/v1/actions/restart_api_core");
    let pid = agent.proc.child.id();
    let stop = async {
        docker.wait_for_a_connection().await;
        Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap();
    };
    let (res, ()) = tokio::join!(pending, stop);
    assert_eq!(res.status(), 200);
    let result: ActionResult = res.json().await.unwrap();
    assert_eq!(result.outcome, ActionOutcome::TimedOut);
    let status = agent.proc.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn an_action_whose_audit_line_cannot_be_written_is_refused_and_not_run() {
    let disk = SmallDisk::new();
    let audit = disk.path("audit.jsonl");
    let (agent, docker) = agent_with(
        Daemon::PingOnly,
        &[("OPS_AGENT_AUDIT_LOG", audit.display().to_string())],
    );
    disk.fill();
    let res = agent.post("/v1/actions/restart_api_core").await;
    assert_eq!(res.status(), 503);
    assert_eq!(error_code(res).await, "audit_unavailable");
    assert_eq!(
        docker.connections(),
        0,
        "nothing ran: Docker was never called"
    );
    let metrics = agent.get("/metrics").await.text().await.unwrap();
    assert!(
        !metrics.contains(r#"ops_agent_actions_total{action="restart_api_core""#),
        "{metrics}"
    );
    assert!(
        metrics.contains("ops_agent_audit_write_failures_total 1"),
        "{metrics}"
    );

    // With room again, the line is written before the action runs.
    disk.free();
    let res = agent.post("/v1/actions/restart_api_core").await;
    assert_eq!(res.status(), 200);
    let written: Vec<String> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["outcome"].to_string())
        .collect();
    assert_eq!(written, [r#""started""#, r#""timed_out""#]);
}

#[tokio::test]
async fn a_flood_of_rate_limited_attempts_is_counted_not_written_line_by_line() {
    let (mut agent, _docker) = agent_with(
        Daemon::Hanging,
        &[
            // The flood comes "through a proxy" from 10.9.9.9, so that the
            // test's own /metrics call (from 127.0.0.1) is not limited.
            ("OPS_AGENT_TRUSTED_PROXIES", "127.0.0.1".into()),
            ("OPS_AGENT_RATE_PER_MIN", "1".into()),
            ("OPS_AGENT_RATE_BURST", "1".into()),
        ],
    );
    let attempt = || {
        agent
            .http
            .post(agent.url("/v1/actions/restart_api_core"))
            .header("X-Real-IP", "10.9.9.9")
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..150 {
        let wave = futures_util::future::join_all((0..20).map(|_| attempt())).await;
        statuses.extend(wave.into_iter().map(|r| r.unwrap().status().as_u16()));
    }
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 1);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 2999);
    // The first refusal of the window is written; the rest are counted.
    // (The 401 and the first 429 are written concurrently: either first.)
    let mut written = outcomes(&agent);
    written.sort();
    assert_eq!(written, ["rate_limited", "unauthorized"]);
    let metrics = agent.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("ops_agent_rate_limited_total 2999"),
        "{metrics}"
    );
    // The window's summary is written when it ends, at the latest at exit.
    assert!(agent.proc.terminate().success());
    let lines = agent.audit_lines();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[2]["outcome"], "rate_limited", "the summary is last");
    assert_eq!(lines[2]["client_ip"], "10.9.9.9");
    let reason = lines[2]["reason"].as_str().unwrap();
    assert!(reason.starts_with("2998 more refused"), "{reason}");
}

/// A raw TCP connection to the agent, for clients no HTTP library would be.
fn raw_connection(agent: &Agent) -> TcpStream {
    let addr = agent.base.trim_start_matches("http://");
    let stream = TcpStream::connect(addr).unwrap();
    // Far beyond the limits under test: a read that waits this long means
    // the agent never closed the connection.
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
}

/// Reads until the agent closes the connection; what it sent, and how long
/// that took.
fn read_until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the agent kept the connection open: {e}"),
        }
    }
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

fn agent_with_short_connection_limits() -> (Agent, FakeDocker) {
    agent_with(
        Daemon::Hanging,
        &[
            ("OPS_AGENT_HEADER_TIMEOUT_S", "1".into()),
            ("OPS_AGENT_BODY_TIMEOUT_S", "1".into()),
        ],
    )
}

#[test]
fn dribbled_headers_and_idle_connections_are_closed() {
    let (agent, _docker) = agent_with_short_connection_limits();
    // Headers, one line every 200 ms, never finished.
    let mut dribbler = raw_connection(&agent);
    let mut writer = dribbler.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = writer.write_all(b"GET /healthz HTTP/1.1\r\nHost: agent\r\n");
        while writer.write_all(b"X-Slow: yes\r\n").is_ok() {
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let (_, took) = read_until_closed(&mut dribbler);
    assert!(took < Duration::from_secs(10), "{took:?}");

    // A kept-alive connection left idle after its request.
    let mut idle = raw_connection(&agent);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: agent\r\n\r\n")
        .unwrap();
    let (answer, took) = read_until_closed(&mut idle);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn a_body_held_back_is_answered_408_and_audited() {
    let (agent, docker) = agent_with_short_connection_limits();
    let mut held = raw_connection(&agent);
    let head = format!(
        "POST /v1/actions/restart_api_core HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n0123456789"
    );
    held.write_all(head.as_bytes()).unwrap();
    let (answer, took) = read_until_closed(&mut held);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"body_timeout""#), "{answer}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(outcomes(&agent), ["body_timeout"]);
    assert_eq!(docker.connections(), 0, "nothing ran");
}

#[tokio::test]
async fn the_audit_log_rotates_at_its_configured_size_and_keeps_the_newest() {
    let (agent, _docker) = agent_with(
        Daemon::Hanging,
        &[
            ("OPS_AGENT_AUDIT_MAX_BYTES", "65536".into()),
            ("OPS_AGENT_RATE_BURST", "1000".into()),
        ],
    );
    for n in 0..500 {
        let res = agent.post(&format!("/v1/actions/no_such_action_{n}")).await;
        assert_eq!(res.status(), 404);
    }
    let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
    let rotated = agent.dir.path().join("audit.jsonl.1");
    assert!(size(&agent.audit_path()) <= 65536);
    assert!(size(&rotated) <= 65536 && size(&rotated) > 32768);
    let list: vigil_wire::AuditList = agent
        .get("/v1/audit?limit=1000")
        .await
        .json()
        .await
        .unwrap();
    let newest: Vec<&str> = list.entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(newest[..2], ["no_such_action_499", "no_such_action_498"]);
    // Everything in both files, newest first, without a gap.
    let oldest: usize = newest.last().unwrap()["no_such_action_".len()..]
        .parse()
        .unwrap();
    assert_eq!(newest.len(), 500 - oldest, "{newest:?}");
}

#[tokio::test]
async fn the_event_stream_is_opened_again_when_the_engine_goes_away() {
    let fake = FakeDocker::new(Daemon::EventsThenGone);
    let (edge, received) = signal_standin();
    let _agent = start(
        &action("restart_api_core", "restart", &["api-core"], &[], 30.0),
        &[
            ("DOCKER_HOST", fake.host()),
            ("OPS_AGENT_SIGNAL_URL", edge),
            ("OPS_AGENT_SIGNAL_TOKEN", "signal-token-0123456789".into()),
            ("OPS_AGENT_HOST_ID", "vps1".into()),
        ],
    );
    // Each stream carries one death, then the engine is gone: the second
    // and third come only from streams opened again.
    wait_until("three streams' signals", || {
        received.lock().unwrap().len() >= 3
    })
    .await;
    let services: Vec<String> = received.lock().unwrap()[..3]
        .iter()
        .map(|(_, b)| b["service"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(services, ["svc-1", "svc-2", "svc-3"]);
}

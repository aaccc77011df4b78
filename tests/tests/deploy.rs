//! Deploy for real: the agent's image (built by scripts/agent-image.sh from
//! the static musl binary) run in its compose stack from
//! deploy/docker-compose.yml on the private Docker daemon, with the scenario
//! suite's stand-in for api-core, gateway and nginx; then Debian's nginx with
//! the shipped snippet in front of it. The steps follow README's "Deploy"
//! section in the same order.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_testkit::docker::{docker, events, image, inspect, stdout_of, unix_s, Project};
use vigil_testkit::process::Proc;
use vigil_testkit::{docker_or_skip, free_port, TempDir};

const AGENT_IMAGE: &str = "vigil/ops-agent:latest";
const STANDIN_IMAGE: &str = "vigil-test/standin:latest";
const TOKEN: &str = "deploy-test-token-0123456789";
/// The "Cloudflare" peer of the nginx test (the snippet's ranges are
/// replaced by this one address) and a peer nginx must not believe.
const CLOUDFLARE: &str = "127.0.0.2";
const UNTRUSTED: &str = "127.0.0.3";
/// Another untrusted peer, for a burst of its own.
const UNTRUSTED_FRESH: &str = "127.0.0.4";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Polls `cond` until it holds, panicking with `what` after `within`.
fn wait_until(what: &str, within: Duration, cond: impl FnMut() -> bool) {
    assert!(
        vigil_testkit::eventually(within, Duration::from_millis(100), cond),
        "timed out waiting for {what}"
    );
}

/// The runtime stage (from the last `FROM`) of a Dockerfile.
fn runtime_stage(dockerfile: &str) -> String {
    let text = read(dockerfile);
    let start = text.rfind("\nFROM ").expect("a FROM line");
    text[start..].to_string()
}

#[test]
fn both_dockerfiles_build_the_same_runtime_stage() {
    let multi = runtime_stage("deploy/Dockerfile.ops-agent");
    assert!(multi.starts_with("\nFROM scratch\n"), "{multi}");
    assert!(multi.contains("USER 65532:65532"), "{multi}");
    assert_eq!(multi, runtime_stage("deploy/Dockerfile.ops-agent.prebuilt"));
}

#[test]
fn compose_file_refuses_a_missing_project_name_or_socket_group() {
    // `-p` alone would give the agent another project than the stack's (it
    // used to fall back to "myapp"), and a guessed group cannot open the
    // socket: both must be said before anything starts.
    let dir = TempDir::new("compose-env");
    for (missing, env) in [
        (
            "COMPOSE_PROJECT_NAME",
            "OPS_AGENT_TOKEN=0123456789abcdef\nDOCKER_GID=999\n",
        ),
        (
            "DOCKER_GID",
            "OPS_AGENT_TOKEN=0123456789abcdef\nCOMPOSE_PROJECT_NAME=app\n",
        ),
    ] {
        let env_file = dir.path().join(missing);
        std::fs::write(&env_file, env).expect("write env file");
        let out = Command::new("docker-compose")
            .args(["-p", "app", "-f"])
            .arg(repo().join("deploy/docker-compose.yml"))
            .arg("--env-file")
            .arg(&env_file)
            .args(["config", "-q"])
            .env_remove("COMPOSE_PROJECT_NAME")
            .env_remove("DOCKER_GID")
            .output()
            .expect("docker-compose");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{missing}: accepted");
        assert!(err.contains(&format!("set {missing} in .env")), "{err}");
    }
}

/// The exposure levels (0 = fully confined .. 10) that
/// `systemd-analyze security` gives the shipped units, as BENCHMARKS.md
/// records them: hardening may improve, never regress.
const UNIT_EXPOSURE: [(&str, f64); 2] = [("ops-agent.service", 1.1), ("vigil-edge.service", 1.1)];

#[test]
fn systemd_units_keep_their_hardening() {
    // systemd is not PID 1 on these machines, so the units are measured
    // offline rather than run.
    for (unit, max) in UNIT_EXPOSURE {
        let path = repo().join("deploy/systemd").join(unit);
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes"])
            .arg(&path)
            .output()
            .expect("systemd-analyze (scripts/setup.sh installs systemd)");
        let text = String::from_utf8_lossy(&out.stdout);
        let level: f64 = text
            .lines()
            .find_map(|l| l.split(&format!("exposure level for {unit}: ")).nth(1))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level for {unit}:\n{text}"));
        eprintln!("systemd-analyze security {unit}: {level}");
        assert!(level <= max, "{unit}: exposure {level} > {max}\n{text}");
    }
}

/// The stand-in service as an image of its own (the test image with the
/// stand-in as its command), built once per run on the private daemon.
fn standin_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut child = Command::new("docker")
            .args(["build", "-q", "-t", STANDIN_IMAGE, "-"])
            .env("DOCKER_BUILDKIT", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker build");
        let dockerfile = format!("FROM {}\nCMD [\"standin\", \"8080\"]\n", image());
        std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), dockerfile.as_bytes())
            .expect("write Dockerfile");
        drop(child.stdin.take());
        let out = child.wait_with_output().expect("docker build");
        assert!(
            out.status.success(),
            "docker build {STANDIN_IMAGE}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    STANDIN_IMAGE
}

fn docker_socket() -> PathBuf {
    let host = std::env::var("DOCKER_HOST").expect("DOCKER_HOST");
    PathBuf::from(host.strip_prefix("unix://").expect("a unix:// DOCKER_HOST"))
}

/// One compose project from deploy/docker-compose.yml, its `.env` in a temp
/// directory; `docker-compose down -v` when dropped, pass or fail.
struct Stack {
    project: String,
    dir: TempDir,
    agent_port: u16,
    socket_gid: u32,
}

impl Stack {
    fn up(project: &str) -> Stack {
        assert!(
            Command::new("docker")
                .args(["image", "inspect", AGENT_IMAGE])
                .stdout(Stdio::null())
                .status()
                .expect("docker")
                .success(),
            "{AGENT_IMAGE} is not on the daemon: run scripts/agent-image.sh (scripts/test.sh does)"
        );
        let socket_gid = std::fs::metadata(docker_socket())
            .expect("docker socket")
            .gid();
        let stack = Stack {
            project: project.into(),
            dir: TempDir::new(project),
            agent_port: free_port(),
            socket_gid,
        };
        stack.write_env(socket_gid);
        stack.compose(&["up", "-d", "--no-build"]);
        stack.wait_healthy();
        stack
    }

    /// README step 2's `.env`, plus what the test needs to place the stack:
    /// the private daemon's socket, stand-in images and loopback ports.
    fn write_env(&self, docker_gid: u32) {
        let standin = standin_image();
        let port = |_| format!("127.0.0.1:{}", free_port());
        let env = [
            ("COMPOSE_PROJECT_NAME", self.project.clone()),
            ("OPS_AGENT_TOKEN", TOKEN.into()),
            ("DOCKER_GID", docker_gid.to_string()),
            ("DOCKER_SOCKET", docker_socket().display().to_string()),
            ("API_CORE_IMAGE", standin.into()),
            ("GATEWAY_IMAGE", standin.into()),
            ("NGINX_IMAGE", standin.into()),
            ("API_CORE_PORT", port(())),
            ("GATEWAY_PORT", port(())),
            ("NGINX_HTTP_PORT", port(())),
            ("NGINX_HTTPS_PORT", port(())),
            ("OPS_AGENT_PORT", format!("127.0.0.1:{}", self.agent_port)),
        ];
        let text: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(self.dir.path().join(".env"), text).expect("write .env");
    }

    /// `docker-compose -p PROJECT -f deploy/docker-compose.yml --env-file .env args...`
    fn compose_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker-compose");
        cmd.arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(repo().join("deploy/docker-compose.yml"))
            .arg("--env-file")
            .arg(self.dir.path().join(".env"))
            .args(args);
        cmd
    }

    fn compose(&self, args: &[&str]) -> String {
        stdout_of(self.compose_command(args))
    }

    fn container(&self, service: &str) -> String {
        let id = self.compose(&["ps", "-q", service]);
        assert!(!id.is_empty(), "no container for {service}");
        id
    }

    fn agent(&self) -> String {
        self.container("ops-agent")
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.agent_port)
    }

    fn wait_healthy(&self) {
        let url = self.url("/healthz");
        wait_until("the agent's /healthz", Duration::from_secs(60), || {
            client(None)
                .get(&url)
                .send()
                .is_ok_and(|r| r.status() == 200)
        });
    }

    /// A token-bearing GET straight to the agent's published port.
    fn get(&self, path: &str) -> Value {
        let r = client(None)
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .expect("GET agent");
        assert_eq!(r.status(), 200, "{path}");
        r.json().expect("json")
    }

    /// Runs an action straight through the agent's published port; its
    /// answer, which must be a success.
    fn act(&self, action: &str) -> Value {
        let r = client(None)
            .post(self.url(&format!("/v1/actions/{action}")))
            .bearer_auth(TOKEN)
            .send()
            .unwrap_or_else(|e| panic!("POST {action}: {e}"));
        assert_eq!(r.status(), 200, "{action}");
        let result: Value = r.json().expect("json");
        assert_eq!(result["ok"], true, "{result:#}");
        result
    }

    fn audit(&self) -> Vec<Value> {
        self.get("/v1/audit?limit=100")["entries"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// A container's log, stderr and stdout.
    fn logs(&self, container: &str) -> String {
        let out = Command::new("docker")
            .args(["logs", container])
            .output()
            .expect("docker logs");
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout)
    }

    fn left_behind(&self) -> Vec<String> {
        let label = format!("label=com.docker.compose.project={}", self.project);
        let mut left = Vec::new();
        for kind in [
            &["ps", "-aq", "--filter"][..],
            &["volume", "ls", "-q", "--filter"],
            &["network", "ls", "-q", "--filter"],
        ] {
            let mut args = kind.to_vec();
            args.push(&label);
            left.extend(docker(&args).lines().map(|l| format!("{kind:?}: {l}")));
        }
        let volume = format!("{}_ops-agent-audit", self.project);
        left.extend(
            docker(&["volume", "ls", "-q", "--filter", &format!("name={volume}")])
                .lines()
                .map(str::to_string),
        );
        left
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let down = || {
            self.compose_command(&["down", "-v", "--timeout", "2"])
                .output()
        };
        let _ = down();
        // A container caught restarting escapes `down`: remove it and retry.
        let label = format!("label=com.docker.compose.project={}", self.project);
        if let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &label])
            .output()
        {
            let ids = String::from_utf8_lossy(&out.stdout).to_string();
            if !ids.trim().is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(ids.split_whitespace())
                    .output();
                let _ = down();
            }
        }
    }
}

fn client(local: Option<&str>) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .danger_accept_invalid_certs(true)
        .local_address(local.map(|a| a.parse::<IpAddr>().expect("address")))
        .build()
        .expect("client")
}

/// A field of /proc/PID/status, whitespace normalised.
fn proc_status(pid: &str, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[test]
fn compose_stack_runs_the_agent_confined_to_its_project() {
    if !docker_or_skip() {
        return;
    }
    let stack = Stack::up(&format!("vdeploy{}", std::process::id()));
    let agent = stack.agent();
    let log = stack.logs(&agent);
    assert!(log.contains("docker socket accessible"), "{log}");

    // Non-root, no capabilities, read-only root: as the kernel sees the process.
    let pid = inspect(&agent, "{{.State.Pid}}");
    assert_eq!(proc_status(&pid, "Uid"), "65532 65532 65532 65532");
    assert_eq!(proc_status(&pid, "Gid"), "65532 65532 65532 65532");
    let groups = proc_status(&pid, "Groups");
    assert!(
        groups.split(' ').any(|g| g == stack.socket_gid.to_string()),
        "the socket's group {} is not among {groups}",
        stack.socket_gid
    );
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(proc_status(&pid, caps), "0000000000000000", "{caps}");
    }
    assert_eq!(proc_status(&pid, "NoNewPrivs"), "1");
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let root = mountinfo
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&"/"))
        .expect("the root mount");
    assert!(root[5].split(',').any(|o| o == "ro"), "root mount {root:?}");

    // Another project with a same-named service, on the same daemon.
    let mut other = Project::new(&format!("{}x", stack.project));
    let other_api = other.web("api-core", None);

    let diag = stack.get("/v1/diagnostics");
    assert_eq!(diag["docker_ok"], true, "{diag:#}");
    assert_eq!(diag["compose_project"], stack.project.as_str());
    let containers = diag["containers"].as_array().expect("containers");
    let services: BTreeSet<&str> = containers
        .iter()
        .map(|c| c["service"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        services,
        BTreeSet::from(["api-core", "gateway", "nginx", "ops-agent"]),
        "{diag:#}"
    );
    for c in containers {
        let name = c["name"].as_str().unwrap_or_default();
        assert!(
            name.trim_start_matches('/')
                .starts_with(&format!("{}_", stack.project)),
            "{name} is not of the project"
        );
    }

    // restart_api_core restarts this project's api-core, not the other's.
    let api = stack.container("api-core");
    let since = unix_s();
    let result = stack.act("restart_api_core");
    wait_until(
        "the engine's restart event",
        Duration::from_secs(20),
        || events(&api, since).iter().any(|a| a == "restart"),
    );
    let other_events = events(&other_api, since);
    assert!(
        !other_events.iter().any(|a| a == "restart" || a == "die"),
        "{other_events:?}"
    );
    assert_eq!(inspect(&other_api, "{{.State.Status}}"), "running");
    drop(other);

    // The audit volume keeps the entry across a restart of the agent.
    let audited = |result: &Value| {
        stack
            .audit()
            .iter()
            .any(|e| e["request_id"] == result["request_id"] && e["outcome"] == "ok")
    };
    assert!(audited(&result));
    let started = inspect(&agent, "{{.State.StartedAt}}");
    stack.compose(&["restart", "ops-agent"]);
    assert_ne!(inspect(&agent, "{{.State.StartedAt}}"), started);
    stack.wait_healthy();
    assert!(audited(&result), "the audit entry did not survive");

    // restart_all restarts every other service of the project, but not the
    // agent: restarting itself would kill the action it is answering, its
    // answer and its audit entry with it.
    let started = inspect(&agent, "{{.State.StartedAt}}");
    let since = unix_s();
    let result = stack.act("restart_all");
    for service in ["api-core", "gateway", "nginx"] {
        let id = stack.container(service);
        wait_until(
            &format!("{service}'s restart event"),
            Duration::from_secs(20),
            || events(&id, since).iter().any(|a| a == "restart"),
        );
    }
    assert_eq!(inspect(&agent, "{{.State.StartedAt}}"), started);
    assert!(audited(&result), "{result:#}");

    // A wrong socket group: a clear error at start, and no restart loop.
    let wrong = stack.socket_gid + 4242;
    stack.write_env(wrong);
    stack.compose(&["up", "-d", "--no-build"]);
    let agent = stack.agent();
    let logs = || stack.logs(&agent);
    wait_until(
        "the socket error in the agent's log",
        Duration::from_secs(30),
        || logs().contains("cannot open the Docker socket"),
    );
    stack.wait_healthy();
    let log = logs();
    let line = log
        .lines()
        .find(|l| l.contains("cannot open the Docker socket"))
        .expect("the error line");
    assert!(
        line.contains(&format!("DOCKER_GID={}", stack.socket_gid))
            && line.contains("permission denied"),
        "{line}"
    );
    assert_eq!(
        log.matches("cannot open the Docker socket").count(),
        1,
        "{log}"
    );
    assert_eq!(inspect(&agent, "{{.RestartCount}}"), "0");
    assert_eq!(inspect(&agent, "{{.State.Status}}"), "running");
    let diag = stack.get("/v1/diagnostics");
    assert_eq!(diag["docker_ok"], false, "{diag:#}");

    // `docker-compose down -v` leaves nothing of the project behind.
    stack.compose(&["down", "-v", "--timeout", "2"]);
    assert_eq!(stack.left_behind(), Vec::<String>::new());
}

/// nginx with the shipped snippet, in a directory of its own on loopback.
struct Nginx {
    proc: Proc,
    _dir: TempDir,
}

impl Nginx {
    /// The snippet as shipped, but: the Cloudflare ranges become
    /// `CLOUDFLARE`/32, it listens on a loopback port, with a throwaway
    /// certificate, and proxies to the agent's published port.
    fn start(agent_port: u16) -> Nginx {
        let dir = TempDir::new("nginx");
        let d = dir.path().display().to_string();
        let cert = format!("{d}/cert.pem");
        let key = format!("{d}/key.pem");
        let ok = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args([
                "-subj",
                "/CN=ops.example.com",
                "-keyout",
                &key,
                "-out",
                &cert,
            ])
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(ok.success());
        let port = free_port();
        let mut replaced = BTreeSet::new();
        let mut conf = String::new();
        for line in read("deploy/nginx/ops-agent.conf").lines() {
            let t = line.trim();
            let new = if t.starts_with("set_real_ip_from ") {
                if !replaced.insert("set_real_ip_from") {
                    continue;
                }
                format!("set_real_ip_from {CLOUDFLARE}/32;")
            } else if t == "listen 443 ssl http2;" {
                replaced.insert("listen");
                format!("    listen 127.0.0.1:{port} ssl http2;")
            } else if t == "listen [::]:443 ssl http2;" {
                continue;
            } else if t.starts_with("ssl_certificate ") {
                replaced.insert("cert");
                format!("    ssl_certificate {cert};")
            } else if t.starts_with("ssl_certificate_key ") {
                replaced.insert("key");
                format!("    ssl_certificate_key {key};")
            } else if t == "proxy_pass http://127.0.0.1:7070;" {
                replaced.insert("proxy_pass");
                format!("        proxy_pass http://127.0.0.1:{agent_port};")
            } else {
                line.to_string()
            };
            conf.push_str(&new);
            conf.push('\n');
        }
        assert_eq!(replaced.len(), 5, "the snippet changed shape: {replaced:?}");
        std::fs::write(format!("{d}/ops-agent.conf"), conf).expect("write snippet");
        let main = format!(
            "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nworker_processes 1;\nevents {{}}\nhttp {{\n    \
             access_log off;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    \
             fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n    \
             include {d}/ops-agent.conf;\n}}\n"
        );
        std::fs::write(format!("{d}/nginx.conf"), main).expect("write nginx.conf");
        let proc = Proc::start(
            Path::new("nginx"),
            &[
                "-p",
                &d,
                "-c",
                &format!("{d}/nginx.conf"),
                "-g",
                "daemon off;",
            ],
            &[],
            SocketAddr::from(([127, 0, 0, 1], port)),
            &dir.path().join("nginx.log"),
        );
        Nginx { proc, _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.proc.addr.port())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master takes its workers down with it.
        self.proc.terminate();
    }
}

/// `rate=NR/s` and `burst=N` as the shipped snippet configures them.
fn snippet_limits() -> (f64, usize) {
    let conf = read("deploy/nginx/ops-agent.conf");
    let after = |key: &str| -> String {
        let at = conf
            .find(key)
            .unwrap_or_else(|| panic!("{key} in the snippet"))
            + key.len();
        conf[at..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect()
    };
    (
        after("rate=").parse().expect("rate"),
        after("burst=").parse().expect("burst"),
    )
}

/// GET /healthz through nginx from `peer` saying `cf` until the first 429;
/// how many passed before it, and how long that took.
fn until_limited(
    nginx: &Nginx,
    peer: &str,
    cf: &str,
) -> (usize, Duration, reqwest::blocking::Response) {
    let c = client(Some(peer));
    let start = Instant::now();
    for passed in 0..200 {
        let r = c
            .get(nginx.url("/healthz"))
            .header("CF-Connecting-IP", cf)
            .send()
            .expect("GET through nginx");
        if r.status() == 429 {
            return (passed, start.elapsed(), r);
        }
        assert_eq!(r.status(), 200);
    }
    panic!("{peer} saying {cf} was never limited");
}

fn is_nginx_page(r: &reqwest::blocking::Response) -> bool {
    let header = |h| {
        r.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    header("server").starts_with("nginx") && header("content-type").starts_with("text/html")
}

/// Requests the agent has answered, on every route but /metrics.
fn agent_requests(stack: &Stack) -> u64 {
    let text = client(None)
        .get(stack.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .and_then(|r| r.text())
        .expect("metrics");
    text.lines()
        .filter(|l| {
            l.starts_with("ops_agent_http_requests_total{") && !l.contains("route=\"/metrics\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn nginx_snippet_in_front_of_the_agent() {
    if !docker_or_skip() {
        return;
    }
    let stack = Stack::up(&format!("vnginx{}", std::process::id()));
    let nginx = Nginx::start(stack.agent_port);

    // The burst, then 429, at the snippet's numbers, for the client behind
    // the trusted peer.
    let (rate, burst) = snippet_limits();
    let (passed, took, r) = until_limited(&nginx, CLOUDFLARE, "203.0.113.9");
    let refilled = (took.as_secs_f64() * rate).ceil() as usize;
    eprintln!("nginx: {passed} passed in {took:?}, then 429 (burst {burst}, {rate} r/s)");
    assert!(
        passed > burst && passed <= burst + 1 + refilled,
        "{passed} passed in {took:?} (burst {burst}, {rate} r/s)"
    );
    assert!(is_nginx_page(&r), "the 429 is nginx's: {:?}", r.headers());
    // Another client behind the same trusted peer has a bucket of its own;
    // so has an untrusted peer, whatever client it claims to be.
    let (passed_other, ..) = until_limited(&nginx, CLOUDFLARE, "203.0.113.8");
    assert!(passed_other > burst, "{passed_other}");
    let (passed_untrusted, ..) = until_limited(&nginx, UNTRUSTED_FRESH, "203.0.113.9");
    assert!(passed_untrusted > burst, "{passed_untrusted}");

    // Who the agent's audit says acted: the real client behind the trusted
    // peer (once its bucket lets it through again), and the untrusted peer
    // itself whatever it claims.
    let act = |peer: &str| {
        let c = client(Some(peer));
        let send = || {
            c.post(nginx.url("/v1/actions/restart_api_core"))
                .header("CF-Connecting-IP", "203.0.113.9")
                .bearer_auth(TOKEN)
                .send()
                .expect("POST through nginx")
        };
        let mut r = send();
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.status() == 429 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            r = send();
        }
        assert_eq!(r.status(), 200);
        let result: Value = r.json().expect("json");
        assert_eq!(result["ok"], true, "{result:#}");
        stack
            .audit()
            .into_iter()
            .find(|e| e["request_id"] == result["request_id"])
            .expect("audit entry")["client_ip"]
            .as_str()
            .expect("client_ip")
            .to_string()
    };
    assert_eq!(act(CLOUDFLARE), "203.0.113.9");
    assert_eq!(act(UNTRUSTED), UNTRUSTED);

    // A body over client_max_body_size never reaches the agent.
    let before = agent_requests(&stack);
    let r = client(Some(CLOUDFLARE))
        .post(nginx.url("/v1/actions/restart_api_core"))
        .header("CF-Connecting-IP", "203.0.113.20")
        .bearer_auth(TOKEN)
        .body(vec![b'x'; 17 * 1024])
        .send()
        .expect("POST through nginx");
    assert_eq!(r.status(), 413);
    assert!(is_nginx_page(&r), "the 413 is nginx's: {:?}", r.headers());
    assert_eq!(agent_requests(&stack), before);
}

//! The whole pair on one machine: a compose-like project of labelled
//! containers on the private Docker daemon, the real ops-agent binary, the
//! real native edge, a strict local Discord and (optionally) a scripted model.

use std::net::SocketAddr;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::discord::Discord;
use crate::docker::{unix_s, Project};
use crate::edge::{config_head, Edge};
use crate::openai::Model;
use crate::process::Proc;
use crate::{bin_path, free_port, TempDir};

pub const AGENT_TOKEN: &str = "agent-token-0123456789abcdef";
pub const ONCALL: &str = "424242";

pub struct Options {
    /// Extra top-level configuration keys.
    pub config: String,
    /// The api target's ladder.
    pub ladder: Vec<&'static str>,
    pub with_model: bool,
    pub with_gateway: bool,
    /// Start the native edge (false: another shell, the Worker, runs it).
    pub native_edge: bool,
    /// Start the ops-agent (false: its URL points at nothing).
    pub agent: bool,
    /// Point the agent at a Docker socket with no daemon behind it.
    pub docker_dead: bool,
    /// Point the agent at a Docker socket that accepts and never answers
    /// (a hung daemon), with a 5 s Docker call timeout.
    pub docker_hung: bool,
    /// Extra keys for the api target.
    pub api_target: String,
    /// The agent signals container events to the edge (`POST /ops/signal`)
    /// and the api target watches the service api-core.
    pub signals: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config: String::new(),
            ladder: vec!["restart_api_core", "recreate_api_core", "restart_all"],
            with_model: false,
            with_gateway: false,
            native_edge: true,
            agent: true,
            docker_dead: false,
            docker_hung: false,
            signals: false,
            api_target: String::new(),
        }
    }
}

pub struct Pair {
    pub project: Project,
    pub api: String,
    pub api_port: u16,
    pub gateway: Option<(String, u16)>,
    pub agent: Option<Proc>,
    pub agent_dir: TempDir,
    pub discord: Discord,
    pub model: Option<Model>,
    edge: Option<Edge>,
    /// The edge configuration and environment the pair was set up with.
    pub edge_config: String,
    pub edge_env: Vec<(&'static str, String)>,
    /// Kept while no native edge owns it.
    _edge_dir: Option<TempDir>,
    pub started_s: u64,
}

/// The run `id` in a `GET /ops/approvals` answer (null when absent).
pub fn find_run(approvals: &Value, id: &str) -> Value {
    let runs = approvals["runs"].as_array().expect("runs");
    runs.iter()
        .find(|r| r["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

impl Pair {
    pub fn start(name: &str, o: Options) -> Pair {
        let started_s = unix_s();
        let mut project = Project::new(name);
        let api_port = free_port();
        let api = project.run(
            "api-core",
            Some(&format!("127.0.0.1:{api_port}:8080")),
            &["standin", "8080"],
        );
        let gateway = o.with_gateway.then(|| {
            let port = free_port();
            (
                project.run(
                    "gateway",
                    Some(&format!("127.0.0.1:{port}:8080")),
                    &["standin", "8080"],
                ),
                port,
            )
        });
        wait_serving(api_port);
        if let Some((_, p)) = &gateway {
            wait_serving(*p);
        }

        let (dir, addr) = Edge::prepare(name);
        let agent_dir = TempDir::new("pair-agent");
        let agent_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let actions = Path::new(env!("CARGO_MANIFEST_DIR")).join("../actions.toml");
        let mut docker_env = vec![(
            "DOCKER_HOST",
            std::env::var("DOCKER_HOST").expect("DOCKER_HOST"),
        )];
        if o.docker_dead {
            let socket = agent_dir.path().join("no-daemon.sock");
            docker_env = vec![("DOCKER_HOST", format!("unix://{}", socket.display()))];
        }
        if o.docker_hung {
            let socket = agent_dir.path().join("hung-daemon.sock");
            hold_connections(UnixListener::bind(&socket).expect("bind the hung socket"));
            docker_env = vec![
                ("DOCKER_HOST", format!("unix://{}", socket.display())),
                ("OPS_AGENT_DOCKER_TIMEOUT_S", "5".into()),
            ];
        }
        let signal_env = if o.signals {
            vec![
                ("OPS_AGENT_SIGNAL_URL", format!("http://{addr}")),
                (
                    "OPS_AGENT_SIGNAL_TOKEN",
                    crate::edge::SIGNAL_TOKEN.to_string(),
                ),
                ("OPS_AGENT_HOST_ID", "vps1".to_string()),
            ]
        } else {
            Vec::new()
        };
        let agent = o.agent.then(|| {
            Proc::start(
                &bin_path("ops-agent"),
                &[],
                &[
                    ("OPS_AGENT_TOKEN", AGENT_TOKEN.into()),
                    ("OPS_AGENT_LISTEN", agent_addr.to_string()),
                    ("OPS_AGENT_ACTIONS", actions.display().to_string()),
                    (
                        "OPS_AGENT_AUDIT_LOG",
                        agent_dir.path().join("audit.jsonl").display().to_string(),
                    ),
                    ("COMPOSE_PROJECT", name.to_string()),
                ]
                .into_iter()
                .chain(docker_env)
                .chain(signal_env)
                .collect::<Vec<_>>(),
                agent_addr,
                &agent_dir.path().join("agent.log"),
            )
        });

        let discord = Discord::start();
        let model = o.with_model.then(Model::start);
        let ladder = o
            .ladder
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut config = config_head(dir.path(), addr, 1.0, 0.25);
        for default in ["settle_s = 1.0", "remediation_cooldown_s = 600"] {
            let key = default.split(' ').next().unwrap_or_default();
            if !o.config.lines().any(|l| l.trim_start().starts_with(key)) {
                config += &format!("{default}\n");
            }
        }
        config += &format!("{}\n", o.config);
        if let Some(m) = &model {
            config += &format!(
                "[llm]\nbase_url = {:?}\nmodel = \"test-model\"\ntimeout_s = 2\n",
                m.base_url()
            );
        }
        config += &format!(
            "[[target]]\nid = \"api\"\nurl = \"http://127.0.0.1:{api_port}/healthz\"\nbody_contains = \"ok\"\ntimeout_ms = 700\nrole = \"remediate\"\nhost = \"vps1\"\nactions = [{ladder}]\n{}\n{}\n",
            o.api_target,
            if o.signals { "services = [\"api-core\"]" } else { "" }
        );
        if let Some((_, port)) = &gateway {
            config += &format!(
                "[[target]]\nid = \"gateway\"\nurl = \"http://127.0.0.1:{port}/healthz\"\nbody_contains = \"ok\"\ntimeout_ms = 700\nrole = \"remediate\"\nhost = \"vps1\"\nactions = [\"restart_gateway\", \"restart_all\"]\n"
            );
        }
        config += "[[host]]\nid = \"vps1\"\nurl_env = \"OPS_AGENT_URL\"\ntoken_env = \"OPS_AGENT_TOKEN\"\n";
        let mut env = vec![
            ("DISCORD_WEBHOOK_URL", discord.url()),
            ("DISCORD_ALERT_USER_ID", ONCALL.to_string()),
            ("OPS_AGENT_URL", format!("http://{agent_addr}")),
            ("OPS_AGENT_TOKEN", AGENT_TOKEN.to_string()),
        ];
        if model.is_some() {
            env.push(("SEPARATE_OPENAI_KEY", "sk-test-key".to_string()));
        }
        let edge_env = env.clone();
        let (edge, _edge_dir) = if o.native_edge {
            (
                Some(Edge::start(
                    &bin_path("vigil-edge"),
                    dir,
                    addr,
                    &config,
                    env,
                )),
                None,
            )
        } else {
            (None, Some(dir))
        };
        Pair {
            edge_config: config,
            edge_env,
            _edge_dir,
            project,
            api,
            api_port,
            gateway,
            agent,
            agent_dir,
            discord,
            model,
            edge,
            started_s,
        }
    }

    /// The native edge (the pair was started with one).
    pub fn edge(&self) -> &Edge {
        self.edge.as_ref().expect("this pair runs no native edge")
    }

    pub fn edge_mut(&mut self) -> &mut Edge {
        self.edge.as_mut().expect("this pair runs no native edge")
    }

    /// Injects a fault into the stand-in on `port` (see tests/standin).
    pub fn fault(&self, port: u16, path: &str) {
        let url = format!("http://127.0.0.1:{port}{path}");
        let _ = reqwest::blocking::Client::new()
            .get(url)
            .timeout(Duration::from_millis(500))
            .send();
    }

    /// The actions the Docker daemon saw on `container` since the pair
    /// started (restart, start, die, create, destroy, ...).
    pub fn docker_events(&self, container: &str) -> Vec<String> {
        crate::docker::events(container, self.started_s)
    }

    pub fn restarts(&self, container: &str) -> usize {
        self.docker_events(container)
            .iter()
            .filter(|a| *a == "restart")
            .count()
    }

    /// The agent's audit log, oldest first.
    pub fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.agent_dir.path().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The audit log's answers: every entry but the `started` line the agent
    /// writes before each action runs.
    pub fn outcomes(&self) -> Vec<Value> {
        let mut entries = self.audit();
        entries.retain(|e| e["outcome"] != "started");
        entries
    }

    /// A runbook run's steps (`/ops/approvals`' run): `actions` ran in
    /// this order, one at a time, each ok and followed by a re-probe of
    /// `reprobed`, and the agent's audit log has exactly them, in order.
    pub fn assert_run(&self, run: &Value, actions: &[&str], reprobed: &[&str]) {
        let steps = run["steps_run"].as_array().expect("steps_run");
        let ran: Vec<&str> = steps.iter().filter_map(|s| s["action"].as_str()).collect();
        assert_eq!(ran, actions, "{run}");
        for s in steps {
            assert_eq!(s["result"]["ok"], true, "{s}");
            let probed: Vec<&str> = s["reprobes"]
                .as_array()
                .expect("reprobes")
                .iter()
                .filter_map(|o| o["target"].as_str())
                .collect();
            assert_eq!(probed, reprobed, "{s}");
        }
        for pair in steps.windows(2) {
            assert!(pair[0]["finished_at_ms"].as_u64() <= pair[1]["started_at_ms"].as_u64());
        }
        let done: Vec<String> = actions.iter().map(|a| format!("{a}:ok")).collect();
        assert_eq!(self.actions_done(), done);
    }

    /// The agent's answers as `action:outcome`, oldest first.
    pub fn actions_done(&self) -> Vec<String> {
        self.outcomes()
            .iter()
            .map(|e| {
                let field = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                format!("{}:{}", field("action"), field("outcome"))
            })
            .collect()
    }

    pub fn incidents(&self) -> Vec<Value> {
        self.edge().get("/ops/incidents")["incidents"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The newest incident of `target`, in full.
    pub fn incident(&self, target: &str) -> Value {
        let id = self
            .incidents()
            .iter()
            .find(|i| i["target"] == target)
            .and_then(|i| i["id"].as_str().map(str::to_string))
            .unwrap_or_else(|| {
                panic!(
                    "no incident for {target}; logs:\n{}",
                    self.edge.as_ref().map(|e| e.logs()).unwrap_or_default()
                )
            });
        self.edge().get(&format!("/ops/incidents/{id}"))
    }

    /// How many rounds the newest incident of `target` has (0 if none yet).
    pub fn rounds_of(&self, target: &str) -> usize {
        let Some(id) = self
            .incidents()
            .iter()
            .find(|i| i["target"] == target)
            .and_then(|i| i["id"].as_str().map(str::to_string))
        else {
            return 0;
        };
        self.edge().get(&format!("/ops/incidents/{id}"))["rounds"]
            .as_array()
            .map_or(0, |r| r.len())
    }

    pub fn wait(&self, what: &str, secs: u64, f: impl Fn(&Pair) -> bool) {
        if crate::eventually(
            Duration::from_secs(secs),
            Duration::from_millis(100),
            || f(self),
        ) {
            return;
        }
        panic!(
            "timed out waiting for {what}\nincidents: {:#}\ndiscord: {:?}\nedge logs:\n{}\nagent logs:\n{}",
            Value::Array(self.incidents()),
            self.discord.titles(),
            self.edge.as_ref().map(|e| e.logs()).unwrap_or_default(),
            self.agent.as_ref().map(|a| a.logs()).unwrap_or_default()
        );
    }
}

fn wait_serving(port: u16) {
    let url = format!("http://127.0.0.1:{port}/healthz");
    let c = reqwest::blocking::Client::new();
    for _ in 0..100 {
        if c.get(&url)
            .timeout(Duration::from_millis(300))
            .send()
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the stand-in on {port} did not serve");
}

/// Accepts connections on `listener` and never answers them, for as long as
/// the test runs.
fn hold_connections(listener: UnixListener) {
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
}

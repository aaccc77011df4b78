//! The real ops-agent binary against a real Docker engine (the private daemon
//! scripts/test.sh starts). Each test owns its compose projects.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{action, signal_standin, start, wait_until, Agent};
use vigil_testkit::docker::{docker, docker_at, inspect, Project};
use vigil_testkit::{docker_or_skip, free_port};
use vigil_wire::{ActionOutcome, ActionResult, Diagnostics, ErrorBody, LogLines};

fn agent_for(project: &str, actions: &str) -> Agent {
    start(actions, &[("COMPOSE_PROJECT", project.to_string())])
}

async fn run(agent: &Agent, name: &str) -> ActionResult {
    let res = agent.post(&format!("/v1/actions/{name}")).await;
    assert_eq!(res.status(), 200, "{name}");
    res.json().await.unwrap()
}

/// GET http://127.0.0.1:port/healthz, retried while a container starts.
async fn healthz(port: u16) -> Option<(u16, String)> {
    let url = format!("http://127.0.0.1:{port}/healthz");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(&url).await {
            return Some((r.status().as_u16(), r.text().await.unwrap_or_default()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Waits until every container has exited.
async fn wait_exited(containers: &[&str]) {
    wait_until("the containers exit", || {
        containers
            .iter()
            .all(|c| inspect(c, "{{.State.Status}}") == "exited")
    })
    .await;
}

fn started_at(container: &str) -> String {
    inspect(container, "{{.State.StartedAt}}")
}

#[tokio::test]
async fn restart_touches_the_project_service_and_nothing_else() {
    if !docker_or_skip() {
        return;
    }
    let port = free_port();
    let mut demo = Project::new("vgr1");
    let mut other = Project::new("vgr1other");
    let ours = demo.web("api-core", Some(port));
    let gateway = demo.web("gateway", None);
    let theirs = other.web("api-core", None);
    // StartedAt has nanoseconds: a restart always changes it.
    let before = [started_at(&ours), started_at(&gateway), started_at(&theirs)];

    let agent = agent_for(
        "vgr1",
        &action("restart_api_core", "restart", &["api-core"], &[], 30.0),
    );
    let r = run(&agent, "restart_api_core").await;
    assert!(r.ok, "{r:?}");
    assert!(r.output.unwrap().contains("restarted 1 container"));

    assert_ne!(
        started_at(&ours),
        before[0],
        "api-core of the project was restarted"
    );
    assert_eq!(
        started_at(&gateway),
        before[1],
        "another service is untouched"
    );
    assert_eq!(
        started_at(&theirs),
        before[2],
        "a same-named service of another project is untouched"
    );
    assert_eq!(
        healthz(port).await,
        Some((200, "ok\n".into())),
        "it comes back serving"
    );
    let outcomes: Vec<_> = agent
        .audit_lines()
        .iter()
        .map(|l| l["outcome"].clone())
        .collect();
    assert_eq!(outcomes, ["started", "ok"]);
}

#[tokio::test]
async fn restart_all_restarts_every_service_of_the_project_only() {
    if !docker_or_skip() {
        return;
    }
    let mut demo = Project::new("vgr2");
    let mut other = Project::new("vgr2other");
    let a = demo.web("api-core", None);
    let g = demo.web("gateway", None);
    let t = other.web("gateway", None);
    let before = [started_at(&a), started_at(&g), started_at(&t)];
    let toml = "[[action]]\nname = \"restart_all\"\ndescription = \"all\"\nkind = \"restart\"\nall_services = true\ntimeout_s = 30\ndocker_cli = [\"docker\"]\n";
    let agent = agent_for("vgr2", toml);
    assert!(run(&agent, "restart_all").await.ok);
    assert_ne!(started_at(&a), before[0]);
    assert_ne!(started_at(&g), before[1]);
    assert_eq!(started_at(&t), before[2]);
}

#[tokio::test]
async fn recreate_clears_state_a_restart_keeps_and_keeps_config_and_aliases() {
    if !docker_or_skip() {
        return;
    }
    let port = free_port();
    let mut demo = Project::new("vgr3");
    let name = demo.web("api-core", Some(port));
    let old_id = demo.id_of(&name);
    // Bad state kept in the container's filesystem: the health file is gone.
    docker(&["exec", &name, "rm", "/www/healthz"]);
    assert_eq!(healthz(port).await.unwrap().0, 404);

    let actions = action("restart_api_core", "restart", &["api-core"], &[], 30.0)
        + &action("recreate_api_core", "recreate", &["api-core"], &[], 60.0);
    let agent = agent_for("vgr3", &actions);
    assert!(run(&agent, "restart_api_core").await.ok);
    assert_eq!(
        healthz(port).await.unwrap().0,
        404,
        "a restart keeps the bad state"
    );

    let r = run(&agent, "recreate_api_core").await;
    assert!(r.ok, "{r:?}");
    let new_id = demo.id_of(&name);
    assert_ne!(new_id, old_id, "a new container under the same name");
    assert_eq!(
        healthz(port).await,
        Some((200, "ok\n".into())),
        "fresh filesystem, same published port"
    );
    let aliases = inspect(
        &name,
        &format!(
            "{{{{json (index .NetworkSettings.Networks \"{}\").Aliases}}}}",
            demo.network
        ),
    );
    assert!(aliases.contains("\"api-core\""), "{aliases}");
    assert!(
        !aliases.contains(&old_id[..12]),
        "no alias of the old id: {aliases}"
    );
    assert_eq!(
        inspect(
            &name,
            "{{index .Config.Labels \"com.docker.compose.service\"}}"
        ),
        "api-core"
    );
    assert_eq!(
        inspect(&name, "{{json .Config.Cmd}}"),
        r#"["httpd","-f","-p","8080","-h","/www"]"#
    );
    assert_eq!(inspect(&name, "{{.HostConfig.Init}}"), "true");
    let all = docker(&[
        "ps",
        "-aq",
        "--filter",
        "label=com.docker.compose.project=vgr3",
    ]);
    assert_eq!(all.lines().count(), 1, "the old container is gone");
}

#[tokio::test]
async fn exec_runs_exactly_the_fixed_argv_and_a_failing_exec_fails() {
    if !docker_or_skip() {
        return;
    }
    let mut demo = Project::new("vgr4");
    let name = demo.web("nginx", None);
    let actions = action(
        "reload_nginx",
        "exec",
        &["nginx"],
        &["touch", "/tmp/reloaded by vigil"],
        10.0,
    ) + &action("broken_reload", "exec", &["nginx"], &["false"], 10.0)
        + &action("slow_reload", "exec", &["nginx"], &["sleep", "5"], 1.0);
    let agent = agent_for("vgr4", &actions);

    let ok = run(&agent, "reload_nginx").await;
    assert!(ok.ok, "{ok:?}");
    // The argument with a space arrived as one argv element: no shell split it.
    docker(&["exec", &name, "test", "-f", "/tmp/reloaded by vigil"]);

    let bad = run(&agent, "broken_reload").await;
    assert_eq!(bad.outcome, ActionOutcome::Failed);
    assert!(
        bad.error.as_deref().unwrap().contains("exited with 1"),
        "{bad:?}"
    );

    let slow = run(&agent, "slow_reload").await;
    assert_eq!(slow.outcome, ActionOutcome::TimedOut);
    assert!(slow.duration_ms < 3000, "{}", slow.duration_ms);
    let outcomes: Vec<String> = agent
        .audit_lines()
        .iter()
        .map(|l| l["outcome"].as_str().unwrap().into())
        .collect();
    assert_eq!(
        outcomes,
        ["started", "ok", "started", "failed", "started", "timed_out"]
    );
}

#[tokio::test]
async fn prune_removes_only_what_it_should() {
    if !docker_or_skip() {
        return;
    }
    let mut demo = Project::new("vgr5");
    let mut other = Project::new("vgr5other");
    let running = demo.web("api-core", None);
    let stopped = demo.run("oneshot", None, &["true"]);
    let theirs = other.run("oneshot", None, &["true"]);
    // A dangling image: imported without a tag.
    let dir = vigil_testkit::TempDir::new("dangling");
    let tar = dir.path().join("empty.tar");
    let status = std::process::Command::new("tar")
        .args(["-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(dir.path())
        .arg("--files-from=/dev/null")
        .status()
        .unwrap();
    assert!(status.success());
    let dangling = docker(&["import", tar.to_str().unwrap()]);
    wait_exited(&[&stopped, &theirs]).await;

    let agent = agent_for("vgr5", &action("prune_docker", "prune", &[], &[], 60.0));
    let r = run(&agent, "prune_docker").await;
    assert!(r.ok, "{r:?}");

    let exists = |what: &str| {
        std::process::Command::new("docker")
            .args(["inspect", what])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(
        !exists(&stopped),
        "the project's stopped container is pruned"
    );
    assert!(
        exists(&theirs),
        "another project's stopped container is kept"
    );
    assert!(exists(&running), "running containers are kept");
    assert!(!exists(&dangling), "dangling images are pruned");
    assert!(
        exists(&vigil_testkit::docker::image()),
        "tagged images are kept"
    );
}

#[tokio::test]
async fn diagnostics_and_logs_show_the_project_only() {
    if !docker_or_skip() {
        return;
    }
    let mut demo = Project::new("vgr6");
    let mut other = Project::new("vgr6other");
    demo.web("api-core", None);
    let talker = demo.run("talker", None, &["seq", "1", "500"]);
    other.run("secret", None, &["seq", "1", "3"]);
    wait_exited(&[&talker]).await;
    let agent = agent_for(
        "vgr6",
        &action("restart_api_core", "restart", &["api-core"], &[], 30.0),
    );

    let d: Diagnostics = agent.get("/v1/diagnostics").await.json().await.unwrap();
    assert!(d.docker_ok, "{d:?}");
    let mut services: Vec<_> = d
        .containers
        .iter()
        .map(|c| (c.service.as_str(), c.state.as_str()))
        .collect();
    services.sort();
    assert_eq!(services, [("api-core", "running"), ("talker", "exited")]);
    assert_eq!(
        d.containers
            .iter()
            .find(|c| c.service == "talker")
            .unwrap()
            .exit_code,
        Some(0)
    );

    let logs: LogLines = agent
        .get("/v1/logs/talker?tail=3")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(logs.lines, ["498", "499", "500"]);
    let capped: LogLines = agent
        .get("/v1/logs/talker?tail=99999")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(capped.lines.len(), 500);
    for path in ["/v1/logs/secret", "/v1/logs/nope"] {
        let res = agent.get(path).await;
        assert_eq!(res.status(), 404, "{path}");
        assert_eq!(
            res.json::<ErrorBody>().await.unwrap().error.code,
            "unknown_service"
        );
    }
    assert_eq!(agent.get("/v1/logs/talker?tail=ten").await.status(), 400);
}

/// A daemon of the test's own, from scripts/docker-up.sh; docker-down.sh on
/// drop, so a failing test leaves nothing running.
struct OwnDaemon {
    dir: vigil_testkit::TempDir,
    host: String,
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(name)
}

impl OwnDaemon {
    fn start() -> Self {
        let dir = vigil_testkit::TempDir::new("own-daemon");
        let up = Command::new("bash")
            .arg(script("docker-up.sh"))
            .arg(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&up.stdout);
        assert!(
            up.status.success(),
            "{}",
            String::from_utf8_lossy(&up.stderr)
        );
        let host = stdout
            .lines()
            .find_map(|l| l.strip_prefix("export DOCKER_HOST="))
            .expect("docker-up.sh prints DOCKER_HOST")
            .to_string();
        OwnDaemon { dir, host }
    }

    fn docker(&self, args: &[&str]) -> String {
        docker_at(&self.host, args)
    }

    fn stop(&self) {
        stop_daemon(self.dir.path());
    }
}

fn stop_daemon(dir: &Path) {
    let down = Command::new("bash")
        .arg(script("docker-down.sh"))
        .arg(dir)
        .status()
        .unwrap();
    assert!(down.success());
}

impl Drop for OwnDaemon {
    fn drop(&mut self) {
        if self.dir.path().exists() {
            stop_daemon(self.dir.path());
        }
    }
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", name])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn the_private_daemon_has_its_own_address_pool_and_leaves_no_bridges() {
    if !docker_or_skip() {
        return;
    }
    let daemon = OwnDaemon::start();
    daemon.docker(&["network", "create", "vg-pool"]);
    let subnet = daemon.docker(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
        "vg-pool",
    ]);
    assert!(subnet.starts_with("10.213."), "{subnet}");
    let id = daemon.docker(&["network", "inspect", "-f", "{{.Id}}", "vg-pool"]);
    let bridge = format!("br-{}", &id[..12]);
    assert!(link_exists(&bridge), "the network has its bridge");
    daemon.stop();
    assert!(
        !link_exists(&bridge),
        "{bridge} outlived the daemon: the next run would find its pool taken"
    );
}

#[tokio::test]
async fn a_killed_container_of_the_project_is_signalled_and_another_projects_is_not() {
    if !docker_or_skip() {
        return;
    }
    let mut demo = Project::new("vgsig");
    let mut other = Project::new("vgsigother");
    let ours = demo.web("api-core", None);
    // Another name, so that a signal for it could not hide behind ours.
    let theirs = other.web("gateway", None);
    let (edge, received) = signal_standin();
    let token = "signal-token-0123456789";
    let agent = start(
        &action("restart_api_core", "restart", &["api-core"], &[], 30.0),
        &[
            ("COMPOSE_PROJECT", "vgsig".to_string()),
            ("OPS_AGENT_SIGNAL_URL", edge),
            ("OPS_AGENT_SIGNAL_TOKEN", token.to_string()),
            ("OPS_AGENT_HOST_ID", "vps1".to_string()),
        ],
    );
    wait_until("the agent watches the engine's events", || {
        agent.proc.logs().contains("watching docker events")
    })
    .await;
    // Another project's container first: events arrive in order, so by the
    // time ours is signalled, theirs would have been too.
    docker(&["kill", &theirs]);
    docker(&["kill", &ours]);
    wait_until("the signal", || !received.lock().unwrap().is_empty()).await;
    let got = received.lock().unwrap().clone();
    assert_eq!(
        got.len(),
        1,
        "one signal for kill + die, none for the other project: {got:?}"
    );
    let (auth, body) = &got[0];
    assert_eq!(auth, &format!("Bearer {token}"));
    assert_eq!(body["host"], "vps1");
    assert_eq!(body["service"], "api-core");
    assert!(
        matches!(body["event"].as_str(), Some("kill" | "die")),
        "{body}"
    );
    assert!(body["at_ms"].as_u64().is_some_and(|t| t > 0), "{body}");
}

//! Containers for the tests, made with the docker CLI against the private
//! daemon that scripts/test.sh starts (DOCKER_HOST). Arguments are passed as
//! argv, never through a shell.

use std::process::Command;

/// The image scripts/test.sh imports: static busybox, /www/healthz = "ok".
pub fn image() -> String {
    std::env::var("VIGIL_TEST_IMAGE").unwrap_or_else(|_| "local/busybox:latest".into())
}

/// Runs `docker args...`, panicking with its stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    stdout_of(cmd)
}

/// [`docker`] against the daemon at `host` (a `unix://` address), not the
/// one of `DOCKER_HOST`.
pub fn docker_at(host: &str, args: &[&str]) -> String {
    let mut cmd = Command::new("docker");
    cmd.args(args).env("DOCKER_HOST", host);
    stdout_of(cmd)
}

/// Runs `cmd`; its trimmed stdout, or a panic with its stderr on failure.
pub fn stdout_of(mut cmd: Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `docker inspect -f FORMAT target`.
pub fn inspect(target: &str, format: &str) -> String {
    docker(&["inspect", "-f", format, target])
}

/// Seconds since the Unix epoch (what `docker events --since` takes).
pub fn unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The actions the Docker daemon saw on `container` since `since_s` (Unix
/// seconds): restart, start, die, create, destroy, ...
pub fn events(container: &str, since_s: u64) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "events",
            "--since",
            &since_s.to_string(),
            "--until",
            &(unix_s() + 1).to_string(),
            "--filter",
            &format!("container={container}"),
            "--format",
            "{{.Action}}",
        ])
        .output()
        .expect("docker events");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// A compose-like project: a network and labelled containers, removed on drop.
pub struct Project {
    pub name: String,
    pub network: String,
    containers: Vec<String>,
}

impl Project {
    pub fn new(name: &str) -> Self {
        let network = format!("{name}_default");
        // Leftovers of an earlier failed run.
        let _ = Command::new("docker")
            .args(["network", "rm", &network])
            .output();
        docker(&["network", "create", &network]);
        Project {
            name: name.into(),
            network,
            containers: Vec::new(),
        }
    }

    /// Starts `service` serving busybox httpd on `port` (127.0.0.1 only)
    /// with /www as its document root; returns the container name.
    pub fn web(&mut self, service: &str, port: Option<u16>) -> String {
        let publish = port.map(|p| format!("127.0.0.1:{p}:8080"));
        self.run(
            service,
            publish.as_deref(),
            &["httpd", "-f", "-p", "8080", "-h", "/www"],
        )
    }

    /// Starts `service` running `cmd`; returns the container name.
    pub fn run(&mut self, service: &str, publish: Option<&str>, cmd: &[&str]) -> String {
        let name = format!(
            "{}_{}_{}",
            self.name,
            service,
            1 + self
                .containers
                .iter()
                .filter(|c| c.contains(&format!("_{service}_")))
                .count()
        );
        let _ = Command::new("docker").args(["rm", "-f", &name]).output();
        let project_label = format!("com.docker.compose.project={}", self.name);
        let service_label = format!("com.docker.compose.service={service}");
        let alias = service.to_string();
        let mut args = vec![
            "run",
            "-d",
            "--init",
            "--name",
            &name,
            "--network",
            &self.network,
            "--network-alias",
            &alias,
            "--label",
            &project_label,
            "--label",
            &service_label,
        ];
        if let Some(p) = publish {
            args.extend(["-p", p]);
        }
        let image = image();
        args.push(&image);
        args.extend(cmd);
        docker(&args);
        self.containers.push(name.clone());
        name
    }

    pub fn id_of(&self, container: &str) -> String {
        inspect(container, "{{.Id}}")
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        // Every container carrying the label, including recreated ones.
        let label = format!("label=com.docker.compose.project={}", self.name);
        if let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &label])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
    }
}

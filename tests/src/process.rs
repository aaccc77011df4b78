//! Child processes (the real binaries) that are killed when dropped.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: std::path::PathBuf,
}

impl Proc {
    /// Starts `bin` with `env` (and nothing else from this process but PATH
    /// and DOCKER_HOST), logging to `log`, and waits for `addr` to accept.
    pub fn start(
        bin: &Path,
        args: &[&str],
        env: &[(&str, String)],
        addr: SocketAddr,
        log: &Path,
    ) -> Self {
        let child = Self::spawn(bin, args, env, log);
        let mut p = Proc {
            child,
            addr,
            log: log.to_owned(),
        };
        if !crate::wait_for_port(addr, Duration::from_secs(20)) {
            let status = p.child.try_wait();
            panic!(
                "{} did not listen on {addr} ({status:?}):\n{}",
                bin.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        p
    }

    pub fn spawn(bin: &Path, args: &[&str], env: &[(&str, String)], log: &Path) -> Child {
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for keep in ["PATH", "DOCKER_HOST", "RUST_LOG"] {
            if let Some(v) = std::env::var_os(keep) {
                cmd.env(keep, v);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.spawn().expect("spawn")
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

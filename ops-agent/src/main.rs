use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ops_agent::actions::Allowlist;
use ops_agent::audit::AuditLog;
use ops_agent::config::Config;
use ops_agent::server::{now_ms, router, AppState};

const USAGE: &str = "usage: ops-agent [check]\n\
  (no argument)  serve the API (configuration from OPS_AGENT_* and COMPOSE_PROJECT)\n\
  check          validate the environment and actions.toml, then exit";

/// How often idle clients are dropped from the rate limiters, and ended
/// rate-limit windows are summarised in the audit log.
const LIMITER_SWEEP: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in files.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check_only = match args.as_slice() {
        [] => false,
        [c] if c == "check" => true,
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (config, allowlist) = match Config::from_env().map_err(|e| e.to_string()).and_then(|c| {
        Ok((
            Allowlist::load(&c.actions_path).map_err(|e| e.to_string())?,
            c,
        ))
    }) {
        Ok((allowlist, config)) => (config, allowlist),
        Err(e) => {
            eprintln!("ops-agent: {e}");
            return ExitCode::from(1);
        }
    };
    if check_only {
        println!(
            "ok: {} actions from {}, project {:?}, listen {}",
            allowlist.iter().count(),
            config.actions_path.display(),
            config.compose_project,
            config.listen
        );
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ops-agent: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(config, allowlist)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ops-agent: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn serve(config: Config, allowlist: Allowlist) -> anyhow::Result<()> {
    use anyhow::Context;
    let audit = AuditLog::open(&config.audit_log, config.audit_max_bytes)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    check_docker_socket();
    let header_timeout = config.header_timeout;
    if let Some(signal) = config.signal.clone() {
        let engine =
            ops_agent::docker::Engine::new(config.compose_project.clone(), config.docker_timeout);
        ops_agent::signal::start(Arc::new(engine), signal);
    }
    let state = Arc::new(AppState::new(config, allowlist, audit));
    let sweeper = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(LIMITER_SWEEP);
        loop {
            tick.tick().await;
            sweeper.limiters.forget_idle();
            sweeper.write_refusal_summaries(now_ms()).await;
        }
    });
    tracing::info!(listen = %listener.local_addr()?, project = state.engine.project(), "ops-agent listening");
    vigil_wire::listen::serve(
        listener,
        router(state.clone()),
        header_timeout,
        shutdown_signal(),
    )
    .await;
    state.write_refusal_summaries(u64::MAX).await;
    tracing::info!("ops-agent stopped");
    Ok(())
}

/// Says once, at start, whether the Docker socket can be opened. A socket
/// this process may not open (its group not added) is a configuration error
/// that no restart fixes, so the agent names the fix and keeps serving
/// (its Docker calls fail with the reason) instead of exiting into a
/// restart loop. A daemon that is not up yet is only a warning.
fn check_docker_socket() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let path = match std::env::var("DOCKER_HOST") {
        Err(_) => "/var/run/docker.sock".to_string(),
        Ok(host) => match host.strip_prefix("unix://") {
            Some(path) => path.to_string(),
            None => return,
        },
    };
    // access(2), not a connection: the daemon sees nothing of this check.
    use nix::errno::Errno;
    use nix::unistd::{access, AccessFlags};
    match access(path.as_str(), AccessFlags::R_OK | AccessFlags::W_OK) {
        Ok(()) => tracing::info!(socket = %path, "docker socket accessible"),
        Err(Errno::EACCES) => {
            let (gid, mode) = std::fs::metadata(&path)
                .map(|m| {
                    (
                        m.gid().to_string(),
                        format!("{:o}", m.permissions().mode() & 0o777),
                    )
                })
                .unwrap_or_else(|_| ("?".into(), "?".into()));
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                    .unwrap_or_default()
            };
            tracing::error!(
                socket = %path,
                socket_gid = %gid,
                "cannot open the Docker socket {path}: permission denied. It belongs to group {gid} \
                 (mode {mode}); this agent runs as uid {} with groups [{}]. Add the socket's group: \
                 DOCKER_GID={gid} in the compose .env, or SupplementaryGroups= in the systemd unit. \
                 Until then every Docker call fails.",
                field("Uid:").split(' ').next().unwrap_or("?"),
                field("Groups:"),
            );
        }
        Err(e) => tracing::warn!(socket = %path, error = %e, "docker socket not there (yet)"),
    }
}

/// SIGTERM or SIGINT; running requests (a running action) finish first.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "no SIGTERM handler");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down: letting running requests finish");
}

//! `vigil-edge`: the native edge. `cargo run -- --config FILE`.

use std::process::ExitCode;
use std::sync::Arc;

use edge::config::Config;
use edge::native::api;
use edge::native::io::NativeIo;
use edge::native::limits;
use edge::native::report;
use edge::native::runner::Runner;
use edge::shell::{closed_by_missing, Secrets};

const USAGE: &str = "usage: vigil-edge --config FILE [--once | --check | --print-json]\n\
       vigil-edge --config FILE --probe-only --report-to URL [--region NAME]\n\
  --config FILE    the edge configuration (TOML); default: $VIGIL_CONFIG or vigil.toml\n\
  --once           run one cycle, print a table of targets and states, exit\n\
  --check          validate the configuration and exit\n\
  --print-json     validate it and print it as the JSON the Worker's VIGIL_CONFIG takes\n\
  --probe-only     run as a remote prober: probe the targets whose regions list this\n\
                   prober's region and report to the main edge (OBSERVATIONS_TOKEN signs)\n\
  --report-to URL  the main edge's base URL (it takes POST /ops/observations)\n\
  --region NAME    this prober's region; default: $VIGIL_REGION";

struct Args {
    config: String,
    once: bool,
    check: bool,
    print_json: bool,
    probe_only: bool,
    report_to: Option<String>,
    region: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        config: std::env::var("VIGIL_CONFIG").unwrap_or_else(|_| "vigil.toml".into()),
        once: false,
        check: false,
        print_json: false,
        probe_only: false,
        report_to: None,
        region: std::env::var("VIGIL_REGION").ok().filter(|r| !r.is_empty()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => args.config = it.next().ok_or("--config needs a file")?,
            "--once" => args.once = true,
            "--check" => args.check = true,
            "--print-json" => args.print_json = true,
            "--probe-only" => args.probe_only = true,
            "--report-to" => args.report_to = Some(it.next().ok_or("--report-to needs a URL")?),
            "--region" => args.region = Some(it.next().ok_or("--region needs a name")?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.probe_only != args.report_to.is_some() {
        return Err("--probe-only and --report-to URL go together".into());
    }
    if let Some(url) = &args.report_to {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("--report-to: {url:?} is not an http(s) URL"));
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("vigil-edge: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    init_tracing();
    if args.print_json {
        return match std::fs::read_to_string(&args.config)
            .map_err(|e| format!("{}: cannot read: {e}", args.config))
            .and_then(|text| Config::toml_as_json(&args.config, &text).map_err(|e| e.to_string()))
        {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vigil-edge: {e}");
                ExitCode::from(1)
            }
        };
    }
    let mut config = match std::fs::read_to_string(&args.config)
        .map_err(|e| format!("{}: cannot read: {e}", args.config))
        .and_then(|text| Config::parse(&args.config, &text).map_err(|e| e.to_string()))
        .and_then(|config| match limits::trusted_proxies(&config) {
            Ok(_) => Ok(config),
            Err((key, reason)) => Err(format!("{}: {key}: {reason}", args.config)),
        }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vigil-edge: {e}");
            return ExitCode::from(1);
        }
    };
    if args.probe_only {
        return match prober_setup(&mut config, args.region.as_deref()) {
            Ok(token) => {
                let report_to = args.report_to.unwrap_or_default();
                let prober =
                    report::run_prober(Arc::new(config), report_to, token, shutdown_signal());
                run_to_exit(prober)
            }
            Err(e) => {
                eprintln!("vigil-edge: {e}");
                ExitCode::from(1)
            }
        };
    }
    let config = Arc::new(config);
    if args.check {
        if config.worker.is_some() {
            // The KV store's fit, the stricter (the Durable Object store
            // spreads probes over shards), unless `regions` need the
            // Durable Object store.
            use edge::core::budget::StoreKind;
            let store = if config.targets.iter().any(|t| t.has_regions()) {
                StoreKind::DurableObject
            } else {
                StoreKind::Kv
            };
            let fits =
                edge::core::budget::check(&config, config.plan(), store).map_err(|e| e.to_string());
            if let Err(e) = fits.and_then(|()| config.check_worker(store)) {
                eprintln!("vigil-edge: {}: {e}", args.config);
                return ExitCode::from(1);
            }
        }
        println!(
            "ok: {} targets, {} hosts, {} jobs in {}",
            config.targets.len(),
            config.hosts.len(),
            config.jobs.len(),
            args.config
        );
        return ExitCode::SUCCESS;
    }
    run_to_exit(run(config, args.once))
}

/// A prober's region (`--region`, else `VIGIL_REGION`) set in its
/// configuration, and its signing key (`OBSERVATIONS_TOKEN`), checked.
fn prober_setup(config: &mut Config, region: Option<&str>) -> Result<String, String> {
    let region = region.ok_or("--probe-only needs its region: --region NAME or VIGIL_REGION")?;
    config.region = region.to_string();
    let token = std::env::var("OBSERVATIONS_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or("--probe-only needs OBSERVATIONS_TOKEN (the main edge's, to sign batches)")?;
    vigil_wire::token::check_configured(&token)
        .map_err(|why| format!("OBSERVATIONS_TOKEN {why}"))?;
    Ok(token)
}

fn run_to_exit(main: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vigil-edge: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-edge: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    use std::io::IsTerminal;
    // Colour only for a person at a terminal, never into a log file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if std::env::var("VIGIL_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(config: Arc<Config>, once: bool) -> anyhow::Result<()> {
    use anyhow::Context;
    let secrets = Secrets::from_env(&config, |k| std::env::var(k).ok());
    secrets.check_tokens().map_err(anyhow::Error::msg)?;
    secrets
        .check_probe_headers(&config)
        .map_err(anyhow::Error::msg)?;
    // Refused at start: [ack_link] without its secret, or a short one.
    secrets.ack_links(&config).map_err(anyhow::Error::msg)?;
    for (var, token) in secrets.api_tokens() {
        if token.is_none() {
            tracing::warn!(var, "{var} is not set: {}", closed_by_missing(var));
        }
    }
    if secrets.webhook_url.is_none() {
        tracing::warn!(var = %config.discord.webhook_url_env, "no Discord webhook: alerts wait in the outbox");
    }
    let io = Arc::new(NativeIo::new(config.clone(), secrets)?);
    check_runbooks(&config, &io).await?;
    let runner = Runner::open(config.clone(), io)?;
    if once {
        runner.once().await;
        print!("{}", table(&runner));
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(listen = %listener.local_addr()?, targets = config.targets.len(), "vigil-edge running");
    let server = vigil_wire::listen::serve(
        listener,
        api::router(runner.clone()),
        api::HEADER_READ_TIMEOUT,
        shutdown_signal(),
    );
    let posthog = posthog_proxy(&config).await?;
    let posthog = async {
        if let Some(proxy) = posthog {
            proxy.await;
        }
    };
    tokio::join!(server, runner.run(shutdown_signal()), posthog);
    Ok(())
}

/// The PostHog proxy on its own listener, when `[posthog] listen` is set.
async fn posthog_proxy(
    config: &Config,
) -> anyhow::Result<Option<impl std::future::Future<Output = ()>>> {
    use anyhow::Context;
    let Some((ph, listen)) = config
        .posthog
        .as_ref()
        .and_then(|ph| Some((ph, ph.listen.as_ref()?)))
    else {
        return Ok(None);
    };
    let trusted =
        limits::trusted_proxies(config).map_err(|(key, why)| anyhow::anyhow!("{key}: {why}"))?;
    let router = edge::native::posthog::router(ph.clone(), trusted)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("posthog.listen: cannot listen on {listen}"))?;
    tracing::info!(listen = %listener.local_addr()?, ingest = %ph.ingest_host, assets = %ph.assets_host, "posthog proxy running");
    Ok(Some(vigil_wire::listen::serve(
        listener,
        router,
        api::HEADER_READ_TIMEOUT,
        shutdown_signal(),
    )))
}

/// Each runbook's steps against its host's allowlist: a step the agent
/// does not list is refused at start; an agent that cannot be reached is
/// warned about (its steps are checked when they are sent).
async fn check_runbooks(config: &Config, io: &NativeIo) -> anyhow::Result<()> {
    use edge::remediation::RemediationIo;
    for (i, rb) in config.runbooks.iter().enumerate() {
        match io.actions(&rb.host).await {
            Ok(list) => edge::core::runbook::check_allowlist(i, rb, &list)
                .map_err(|(key, reason)| anyhow::anyhow!("{key}: {reason}"))?,
            Err(e) => {
                tracing::warn!(runbook = %rb.id, host = %rb.host, error = %e, "runbook not checked against the agent's allowlist: unreachable")
            }
        }
    }
    Ok(())
}

fn table(runner: &Runner) -> String {
    let mut out = format!(
        "{:<20} {:<9} {:>8} {:>6}  {}\n",
        "TARGET", "STATE", "LATENCY", "STATUS", "INCIDENT / ERROR"
    );
    runner.read(|s| {
        for t in &runner.config().targets {
            let ts = s.targets.get(&t.id);
            let last = runner.recent(&t.id).into_iter().next();
            let state = ts.map_or("unknown", |ts| ts.health.as_str());
            let latency = last
                .as_ref()
                .map_or("-".into(), |o| format!("{} ms", o.latency_ms));
            let status = last
                .as_ref()
                .and_then(|o| o.status)
                .map_or("-".into(), |s| s.to_string());
            // The incident and what the last probe saw: the cause.
            let note = [
                ts.and_then(|ts| ts.open_incident.clone()),
                last.as_ref().and_then(|o| o.error.clone()),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
            out.push_str(&format!(
                "{:<20} {:<9} {:>8} {:>6}  {}\n",
                t.id, state, latency, status, note
            ));
        }
    });
    out
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

//! The fixed Docker operations, done through the Engine API (bollard).
//!
//! Containers are found by their compose labels and only within the one
//! project the agent was configured for: a same-named service of another
//! project is never seen, so it can never be touched.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, EndpointSettings,
    EventMessage, NetworkConnectRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptions, ListContainersOptionsBuilder, LogsOptionsBuilder,
    PruneContainersOptionsBuilder, PruneImagesOptionsBuilder, RemoveContainerOptionsBuilder,
    RenameContainerOptionsBuilder, RestartContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::OnceCell;
use vigil_wire::ContainerInfo;

use crate::actions::Operation;

pub const PROJECT_LABEL: &str = "com.docker.compose.project";
pub const SERVICE_LABEL: &str = "com.docker.compose.service";

/// Most output kept from an operation (exec output, logs of a failure).
const OUTPUT_LIMIT: usize = 4096;
/// Seconds Docker waits for a container to stop before killing it.
const STOP_TIMEOUT_S: i32 = 10;
/// What a call that stops containers may take beyond the Docker call timeout.
const STOP_ALLOWANCE: Duration = Duration::from_secs(STOP_TIMEOUT_S as u64);

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The daemon did not answer: socket missing, connection refused, no
    /// answer within the call's deadline (hung), ...
    #[error("docker engine unavailable: {0}")]
    Unavailable(String),
    /// The daemon answered, and the operation failed.
    #[error("{0}")]
    Failed(String),
}

impl From<BollardError> for DockerError {
    fn from(e: BollardError) -> Self {
        match e {
            BollardError::DockerResponseServerError {
                status_code,
                message,
            } => DockerError::Failed(format!("docker answered {status_code}: {message}")),
            other => DockerError::Unavailable(other.to_string()),
        }
    }
}

type Result<T> = std::result::Result<T, DockerError>;

pub struct Engine {
    project: String,
    /// Longest wait for one call; a daemon that takes longer is hung.
    call_timeout: Duration,
    /// Negotiated lazily: the daemon may be down when the agent starts.
    client: OnceCell<Docker>,
}

impl Engine {
    pub fn new(project: String, call_timeout: Duration) -> Self {
        Self {
            project,
            call_timeout,
            client: OnceCell::new(),
        }
    }

    /// One Docker call, given up after the call timeout plus `allowance`
    /// (the time the operation itself may take, e.g. a container's stop).
    async fn call<T>(
        &self,
        what: &str,
        allowance: Duration,
        call: impl Future<Output = std::result::Result<T, BollardError>>,
    ) -> Result<T> {
        let limit = self.call_timeout + allowance;
        match tokio::time::timeout(limit, call).await {
            Ok(answer) => Ok(answer?),
            Err(_) => Err(DockerError::Unavailable(format!(
                "the Docker daemon did not answer {what} within {} ms (hung?)",
                limit.as_millis()
            ))),
        }
    }

    /// [`Engine::call`] without allowance: calls that should answer at once.
    async fn quick<T>(
        &self,
        what: &str,
        call: impl Future<Output = std::result::Result<T, BollardError>>,
    ) -> Result<T> {
        self.call(what, Duration::ZERO, call).await
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    async fn docker(&self) -> Result<&Docker> {
        self.client
            .get_or_try_init(|| async {
                let docker = Docker::connect_with_defaults()
                    .map_err(|e| DockerError::Unavailable(e.to_string()))?;
                self.quick("a version request", docker.negotiate_version())
                    .await
            })
            .await
    }

    pub async fn ping(&self) -> Result<()> {
        let docker = self.docker().await?;
        self.quick("a ping", docker.ping()).await?;
        Ok(())
    }

    /// Containers of the project (every state), optionally of one service.
    async fn containers(&self, service: Option<&str>) -> Result<Vec<ContainerSummary>> {
        let mut labels = vec![format!("{PROJECT_LABEL}={}", self.project)];
        if let Some(s) = service {
            labels.push(format!("{SERVICE_LABEL}={s}"));
        }
        let filters = HashMap::from([("label", labels)]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let docker = self.docker().await?;
        let mut found = self
            .quick("a container list", docker.list_containers(Some(options)))
            .await?;
        // Oldest first, so "the first container" is stable.
        found.sort_by_key(|c| c.created.unwrap_or_default());
        Ok(found)
    }

    async fn service_containers(&self, service: &str) -> Result<Vec<String>> {
        let ids: Vec<String> = self
            .containers(Some(service))
            .await?
            .into_iter()
            .filter_map(|c| c.id)
            .collect();
        if ids.is_empty() {
            return Err(DockerError::Failed(format!(
                "no container of service {service:?} in project {:?}",
                self.project
            )));
        }
        Ok(ids)
    }

    /// The engine's event stream for the project's containers (every
    /// action: the caller picks). It ends when the engine goes away.
    pub async fn events(
        &self,
    ) -> Result<impl futures_util::Stream<Item = std::result::Result<EventMessage, BollardError>>>
    {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "label".to_string(),
                vec![format!("{PROJECT_LABEL}={}", self.project)],
            ),
        ]);
        let docker = self.docker().await?;
        Ok(docker.events(Some(EventsOptions {
            filters: Some(filters),
            ..Default::default()
        })))
    }

    /// Services of the project that have at least one container.
    pub async fn services(&self) -> Result<Vec<String>> {
        let mut services: Vec<String> = self
            .containers(None)
            .await?
            .iter()
            .filter_map(|c| c.labels.as_ref()?.get(SERVICE_LABEL).cloned())
            .collect();
        services.sort();
        services.dedup();
        Ok(services)
    }

    /// Runs one operation; the answer is a short report for the audit trail.
    pub async fn run(&self, op: &Operation) -> Result<String> {
        match op {
            Operation::Restart { services } => {
                let mut ids = Vec::new();
                for s in services {
                    ids.extend(self.service_containers(s).await?);
                }
                self.restart(&ids).await
            }
            Operation::RestartAll => {
                // Never the agent's own container: restarting it would kill
                // this action, its answer and its audit entry.
                let own = own_container_id();
                let ids: Vec<String> = self
                    .containers(None)
                    .await?
                    .into_iter()
                    .filter_map(|c| c.id)
                    .filter(|id| Some(id) != own.as_ref())
                    .collect();
                self.restart(&ids).await
            }
            Operation::Recreate { service } => {
                let ids = self.service_containers(service).await?;
                let mut report = Vec::new();
                for id in ids {
                    report.push(self.recreate(&id).await?);
                }
                Ok(report.join("; "))
            }
            Operation::Exec { service, argv } => self.exec(service, argv).await,
            Operation::Prune => self.prune().await,
        }
    }

    async fn restart(&self, ids: &[String]) -> Result<String> {
        let docker = self.docker().await?;
        let options = RestartContainerOptionsBuilder::new()
            .t(STOP_TIMEOUT_S)
            .build();
        for id in ids {
            self.call(
                "a restart",
                STOP_ALLOWANCE,
                docker.restart_container(id, Some(options.clone())),
            )
            .await?;
        }
        Ok(format!(
            "restarted {} container(s): {}",
            ids.len(),
            short_ids(ids)
        ))
    }

    /// Replaces a container by an identical new one (image, config, host
    /// config, networks and aliases); the old one is kept, stopped, until the
    /// new one has started, and comes back if it does not.
    async fn recreate(&self, id: &str) -> Result<String> {
        let docker = self.docker().await?;
        let old = self
            .quick("an inspect", docker.inspect_container(id, None))
            .await?;
        let name = old
            .name
            .as_deref()
            .map(|n| n.trim_start_matches('/').to_string())
            .ok_or_else(|| DockerError::Failed(format!("container {id} has no name")))?;
        let (body, extra_networks) = create_body_from(&old, id)?;
        let parked = format!("{name}-vigil-old-{}", &id[..id.len().min(12)]);

        self.quick(
            "a rename",
            docker.rename_container(
                id,
                RenameContainerOptionsBuilder::new().name(&parked).build(),
            ),
        )
        .await?;
        let stop = StopContainerOptionsBuilder::new().t(STOP_TIMEOUT_S).build();
        if let Err(e) = self
            .call(
                "a stop",
                STOP_ALLOWANCE,
                docker.stop_container(id, Some(stop)),
            )
            .await
        {
            self.restore(id, &name, None).await;
            return Err(e);
        }
        let created = self
            .quick(
                "a create",
                docker.create_container(
                    Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                    body,
                ),
            )
            .await;
        let new_id = match created {
            Ok(c) => c.id,
            Err(e) => {
                self.restore(id, &name, None).await;
                return Err(DockerError::Failed(format!(
                    "recreate {name}: create failed, old container restored: {e}"
                )));
            }
        };
        let mut started = Ok(());
        for (network, endpoint) in extra_networks {
            let connect = NetworkConnectRequest {
                container: new_id.clone(),
                endpoint_config: Some(endpoint),
            };
            if let Err(e) = self
                .quick(
                    "a network connect",
                    docker.connect_network(&network, connect),
                )
                .await
            {
                started = Err(e);
                break;
            }
        }
        if started.is_ok() {
            started = self
                .quick("a start", docker.start_container(&new_id, None))
                .await;
        }
        if let Err(e) = started {
            self.restore(id, &name, Some(&new_id)).await;
            return Err(DockerError::Failed(format!(
                "recreate {name}: new container failed to start, old one restored: {e}"
            )));
        }
        self.remove(docker, id).await?;
        Ok(format!(
            "recreated {name}: {} -> {}",
            &id[..id.len().min(12)],
            &new_id[..new_id.len().min(12)]
        ))
    }

    /// Removes a container, killing it if it runs.
    async fn remove(&self, docker: &Docker, id: &str) -> Result<()> {
        let remove = RemoveContainerOptionsBuilder::new().force(true).build();
        self.call(
            "a remove",
            STOP_ALLOWANCE,
            docker.remove_container(id, Some(remove)),
        )
        .await
    }

    /// Best-effort rollback of a recreate: drop the new container, give the
    /// old one its name back and start it.
    async fn restore(&self, old_id: &str, name: &str, new_id: Option<&str>) {
        let Ok(docker) = self.docker().await else {
            return;
        };
        if let Some(new_id) = new_id {
            if let Err(e) = self.remove(docker, new_id).await {
                tracing::error!(error = %e, "rollback: removing the new container failed");
            }
        }
        let rename = RenameContainerOptionsBuilder::new().name(name).build();
        if let Err(e) = self
            .quick("a rename", docker.rename_container(old_id, rename))
            .await
        {
            tracing::error!(error = %e, "rollback: renaming the old container failed");
        }
        if let Err(e) = self
            .quick("a start", docker.start_container(old_id, None))
            .await
        {
            tracing::error!(error = %e, "rollback: starting the old container failed");
        }
    }

    async fn exec(&self, service: &str, argv: &[String]) -> Result<String> {
        let docker = self.docker().await?;
        let running = self
            .containers(Some(service))
            .await?
            .into_iter()
            .find(|c| c.state.map(|s| s.to_string()) == Some("running".into()))
            .and_then(|c| c.id)
            .ok_or_else(|| {
                DockerError::Failed(format!("no running container of service {service:?}"))
            })?;
        let exec = self
            .quick(
                "an exec create",
                docker.create_exec(
                    &running,
                    CreateExecOptions {
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        cmd: Some(argv.to_vec()),
                        ..Default::default()
                    },
                ),
            )
            .await?;
        let mut output = String::new();
        // The command's output streams as long as the command runs: the
        // action's own timeout bounds it.
        if let StartExecResults::Attached {
            output: mut stream, ..
        } = self
            .quick(
                "an exec start",
                docker.start_exec(&exec.id, None::<StartExecOptions>),
            )
            .await?
        {
            while let Some(chunk) = stream.next().await {
                push_bounded(&mut output, &chunk?.to_string());
            }
        }
        let code = self
            .quick("an exec inspect", docker.inspect_exec(&exec.id))
            .await?
            .exit_code;
        match code {
            Some(0) => Ok(format!("exit 0: {}", output.trim_end())),
            other => Err(DockerError::Failed(format!(
                "exec {argv:?} exited with {}: {}",
                other.map_or("unknown status".to_string(), |c| c.to_string()),
                output.trim_end()
            ))),
        }
    }

    async fn prune(&self) -> Result<String> {
        let docker = self.docker().await?;
        // Pruning may take long (many layers): the action's own timeout
        // bounds these calls, and a hung daemon is told apart afterwards.
        let project_only =
            HashMap::from([("label", vec![format!("{PROJECT_LABEL}={}", self.project)])]);
        let containers = docker
            .prune_containers(Some(
                PruneContainersOptionsBuilder::new()
                    .filters(&project_only)
                    .build(),
            ))
            .await?;
        let dangling = HashMap::from([("dangling", vec!["true".to_string()])]);
        let images = docker
            .prune_images(Some(
                PruneImagesOptionsBuilder::new().filters(&dangling).build(),
            ))
            .await?;
        // Daemons without BuildKit have no build cache to prune.
        let cache = match docker
            .prune_build(None::<bollard::query_parameters::PruneBuildOptions>)
            .await
        {
            Ok(r) => format!(
                "{} build cache entries",
                r.caches_deleted.map_or(0, |c| c.len())
            ),
            Err(e) => format!("build cache not pruned ({})", DockerError::from(e)),
        };
        let reclaimed =
            containers.space_reclaimed.unwrap_or(0) + images.space_reclaimed.unwrap_or(0);
        Ok(format!(
            "pruned {} stopped container(s), {} image layer(s), {cache}; {reclaimed} bytes reclaimed",
            containers.containers_deleted.map_or(0, |c| c.len()),
            images.images_deleted.map_or(0, |i| i.len()),
        ))
    }

    pub async fn container_infos(&self) -> Result<Vec<ContainerInfo>> {
        let docker = self.docker().await?;
        let mut infos = Vec::new();
        for summary in self.containers(None).await? {
            let Some(id) = summary.id else { continue };
            let inspect = self
                .quick("an inspect", docker.inspect_container(&id, None))
                .await?;
            let state = inspect.state.clone().unwrap_or_default();
            infos.push(ContainerInfo {
                name: inspect
                    .name
                    .as_deref()
                    .unwrap_or(&id)
                    .trim_start_matches('/')
                    .to_string(),
                service: summary
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_LABEL).cloned())
                    .unwrap_or_default(),
                state: state.status.map(|s| s.to_string()).unwrap_or_default(),
                health: state.health.and_then(|h| h.status).map(|s| s.to_string()),
                restart_count: inspect.restart_count.unwrap_or(0),
                started_at: state.started_at,
                exit_code: state.exit_code,
            });
        }
        Ok(infos)
    }

    /// The last `tail` lines of every container of `service`.
    pub async fn logs(&self, service: &str, tail: usize) -> Result<Vec<String>> {
        let docker = self.docker().await?;
        let mut lines = Vec::new();
        for id in self.service_containers(service).await? {
            let options = LogsOptionsBuilder::new()
                .stdout(true)
                .stderr(true)
                .tail(&tail.to_string())
                .build();
            let mut stream = docker.logs(&id, Some(options));
            let read = async {
                let mut text = String::new();
                while let Some(chunk) = stream.next().await {
                    text.push_str(&chunk?.to_string());
                }
                Ok::<_, BollardError>(text)
            };
            let text = self.quick("a log read", read).await?;
            lines.extend(text.lines().map(str::to_string));
        }
        let skip = lines.len().saturating_sub(tail);
        Ok(lines.split_off(skip))
    }
}

/// The creation body for a twin of `old`, and the networks to connect after
/// creation (the API takes one network at create time).
fn create_body_from(
    old: &ContainerInspectResponse,
    id: &str,
) -> Result<(ContainerCreateBody, Vec<(String, EndpointSettings)>)> {
    let config = old
        .config
        .clone()
        .ok_or_else(|| DockerError::Failed(format!("container {id} has no config")))?;
    let short_id = &id[..id.len().min(12)];
    let endpoint = |e: &EndpointSettings| EndpointSettings {
        aliases: e.aliases.as_ref().map(|a| {
            a.iter()
                .filter(|alias| !short_id.starts_with(alias.as_str()) && alias.as_str() != short_id)
                .cloned()
                .collect()
        }),
        links: e.links.clone(),
        ipam_config: e.ipam_config.clone(),
        driver_opts: e.driver_opts.clone(),
        ..Default::default()
    };
    let mut networks: Vec<(String, EndpointSettings)> = old
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .map(|n| {
            n.iter()
                .map(|(name, e)| (name.clone(), endpoint(e)))
                .collect()
        })
        .unwrap_or_default();
    networks.sort_by(|a, b| a.0.cmp(&b.0));
    let mode = old
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.clone())
        .unwrap_or_default();
    // The network named by network_mode must be the one given at creation.
    let first = networks
        .iter()
        .position(|(n, _)| *n == mode)
        .map(|i| networks.remove(i))
        .or_else(|| (!networks.is_empty()).then(|| networks.remove(0)));
    let builtin = matches!(mode.as_str(), "host" | "none" | "bridge" | "default")
        || mode.starts_with("container:");
    let networking_config = first
        .filter(|_| !builtin)
        .map(|(name, e)| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(name, e)])),
        });
    let extra = if builtin { Vec::new() } else { networks };
    // A hostname Docker derived from the old id would be wrong on the twin.
    let hostname = config
        .hostname
        .filter(|h| !short_id.starts_with(h.as_str()));
    let body = ContainerCreateBody {
        hostname,
        domainname: config.domainname,
        user: config.user,
        attach_stdin: config.attach_stdin,
        attach_stdout: config.attach_stdout,
        attach_stderr: config.attach_stderr,
        exposed_ports: config.exposed_ports,
        tty: config.tty,
        open_stdin: config.open_stdin,
        stdin_once: config.stdin_once,
        env: config.env,
        cmd: config.cmd,
        healthcheck: config.healthcheck,
        args_escaped: config.args_escaped,
        image: config.image,
        volumes: config.volumes,
        working_dir: config.working_dir,
        entrypoint: config.entrypoint,
        network_disabled: config.network_disabled,
        on_build: config.on_build,
        labels: config.labels,
        stop_signal: config.stop_signal,
        stop_timeout: config.stop_timeout,
        shell: config.shell,
        host_config: old.host_config.clone(),
        networking_config,
    };
    Ok((body, extra))
}

/// The id of the container this process runs in, if any: Docker bind-mounts
/// `<data-root>/containers/<id>/hostname` on /etc/hostname.
fn own_container_id() -> Option<String> {
    container_id_in(&std::fs::read_to_string("/proc/self/mountinfo").ok()?)
}

fn container_id_in(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let mut fields = line.split(' ');
        let root = fields.nth(3)?;
        if fields.next()? != "/etc/hostname" {
            return None;
        }
        let id = root.strip_suffix("/hostname")?.rsplit('/').next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
    })
}

fn short_ids(ids: &[String]) -> String {
    ids.iter()
        .map(|i| &i[..i.len().min(12)])
        .collect::<Vec<_>>()
        .join(", ")
}

fn push_bounded(out: &mut String, more: &str) {
    for c in more.chars() {
        if out.len() + c.len_utf8() > OUTPUT_LIMIT {
            return;
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::container_id_in;

    #[test]
    fn own_container_is_found_by_its_hostname_mount() {
        let id = "1e19453c986649fb20c9b8ba038ced839e68055c283ecf92a890400d7d4c9ebb";
        let mountinfo = format!(
            "136 100 0:52 / / ro,relatime - overlay overlay rw\n\
             220 136 254:0 /var/lib/docker/containers/{id}/resolv.conf /etc/resolv.conf rw - ext4 /dev/vda rw\n\
             221 136 254:0 /var/lib/docker/containers/{id}/hostname /etc/hostname rw - ext4 /dev/vda rw\n"
        );
        assert_eq!(container_id_in(&mountinfo).as_deref(), Some(id));
        // Not in a container (a host's own /etc/hostname is no bind mount).
        assert_eq!(
            container_id_in("22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"),
            None
        );
    }
}

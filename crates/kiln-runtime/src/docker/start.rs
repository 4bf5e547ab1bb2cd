//! Starting a container: its configuration (the agent as init, limits, no network,
//! no capabilities), readiness (the agent answers), and noticing its end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptions, LogsOptions, RemoveContainerOptions};
use futures_util::StreamExt;
use kiln_config::AgentConnection;
use kiln_protocol::AsyncAgentClient;
use tokio::sync::watch;

use super::image::EngineImage;
use super::{engine_err, DockerRuntime, Sandbox, AGENT_PATH, RUN_DIR, SOCKET_PATH};
use crate::backend::agent_secret;
use crate::egress_socket;
use crate::error::{Result, RuntimeError};
use crate::runtime::SandboxExit;
use crate::spec::{SandboxId, SandboxSpec};

/// How often readiness asks the agent.
const READY_POLL: Duration = Duration::from_millis(10);

/// What `create` learnt that the sandbox record keeps.
pub(super) struct Started {
    pub client: AsyncAgentClient,
    pub agent_version: String,
}

impl DockerRuntime {
    /// Creates and starts the container of `spec` from `image`; returns once its agent
    /// answers. On failure the container is removed.
    pub(super) async fn start(&self, spec: &SandboxSpec, image: &EngineImage) -> Result<Sandbox> {
        let name = self.settings.container_name(&spec.id);
        let secret = (self.settings.connection == AgentConnection::Tcp).then(agent_secret);
        let run_dir = self.settings.run_dir(spec.id.as_str());
        if self.settings.connection == AgentConnection::Socket {
            prepare_run_dir(&run_dir)?;
        }
        // Bound before the agent starts, which relays to it; stopped if the start fails.
        let egress = spec
            .egress
            .clone()
            .map(|egress| egress_socket::listen(&run_dir.join(egress_socket::SOCKET_NAME), egress))
            .transpose()?;
        let disk_limit = self
            .create_container(spec, image, &name, secret.as_deref())
            .await?;
        let ready = async {
            self.docker
                .start_container(&name, None)
                .await
                .map_err(|e| engine_err(&spec.id, "the engine cannot start it", &e))?;
            let client = self.agent_client(spec, &name, secret).await?;
            let started = self.wait_ready(&spec.id, &name, client).await?;
            if self.settings.connection == AgentConnection::Socket {
                let socket = run_dir.join("agent.sock");
                super::seal::seal_run_dir(&self.docker, &spec.id, &name, socket).await?;
            }
            Ok(started)
        };
        match ready.await {
            Ok(started) => {
                let destroying = Arc::new(AtomicBool::new(false));
                Ok(Sandbox {
                    id: spec.id.clone(),
                    exit: self.watch_exit(&name, Arc::clone(&destroying)),
                    container: name,
                    client: started.client,
                    workdir: spec.workdir.clone().or_else(|| image.workdir.clone()),
                    created_at: SystemTime::now(),
                    agent_version: started.agent_version,
                    destroying,
                    disk_limit,
                    egress: egress_socket::EgressSlot::new(egress),
                })
            }
            Err(err) => {
                self.remove_container(&name).await;
                let _ = std::fs::remove_dir_all(&run_dir);
                Err(err)
            }
        }
    }

    /// Creates the container; returns the disk limit the engine enforces on it. An
    /// engine that cannot limit a container's disk is asked once more without the limit,
    /// and never again with one (`limits.rs`).
    async fn create_container(
        &self,
        spec: &SandboxSpec,
        image: &EngineImage,
        name: &str,
        secret: Option<&str>,
    ) -> Result<Option<u64>> {
        let mut storage_opt = self.limits.storage_opt(&spec.limits);
        loop {
            let mut body = self.container_body(spec, image, secret);
            if let Some(host) = body.host_config.as_mut() {
                host.storage_opt.clone_from(&storage_opt);
            }
            let options = CreateContainerOptions {
                name: Some(name.to_string()),
                ..Default::default()
            };
            match self.docker.create_container(Some(options), body).await {
                Ok(_) => {
                    if storage_opt.is_some() {
                        self.limits.mark_supported();
                    }
                    return Ok(spec.limits.disk_bytes.filter(|_| storage_opt.is_some()));
                }
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409, ..
                }) => return Err(RuntimeError::AlreadyExists(spec.id.to_string())),
                Err(e)
                    if storage_opt.is_some()
                        && super::limits::DockerLimits::refuses_storage_opt(&e.to_string()) =>
                {
                    self.limits.mark_unsupported(&e.to_string());
                    storage_opt = None;
                }
                Err(e) => return Err(engine_err(&spec.id, "the engine refused the container", &e)),
            }
        }
    }

    fn container_body(
        &self,
        spec: &SandboxSpec,
        image: &EngineImage,
        secret: Option<&str>,
    ) -> ContainerCreateBody {
        let settings = &self.settings;
        let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut binds = vec![format!(
            "{}:{AGENT_PATH}:ro",
            settings.agent_binary.display()
        )];
        let (entrypoint, network) = match (settings.connection, secret) {
            (AgentConnection::Tcp, Some(secret)) => {
                env.push(format!("KILN_AGENT_SECRET={secret}"));
                let listen = format!("0.0.0.0:{}", settings.agent_port);
                (
                    vec![AGENT_PATH.into(), "--listen-tcp".into(), listen],
                    settings.network.clone().unwrap_or_else(|| "none".into()),
                )
            }
            _ => {
                binds.push(format!(
                    "{}:{RUN_DIR}",
                    settings.run_dir(spec.id.as_str()).display()
                ));
                let mut entrypoint = vec![AGENT_PATH.into(), "--listen".into(), SOCKET_PATH.into()];
                if spec.egress.is_some() {
                    entrypoint.extend(egress_socket::agent_args());
                }
                (entrypoint, "none".into())
            }
        };
        if let Some(workspace) = &spec.workspace {
            binds.push(format!("{}:{}", workspace.dir.display(), workspace.target));
        }
        let limits = &spec.limits;
        let memory = limits.memory_bytes.and_then(|m| i64::try_from(m).ok());
        let host_config = HostConfig {
            binds: Some(binds),
            network_mode: Some(network),
            memory,
            // No swap on top of the memory limit, as on the local backend.
            memory_swap: memory,
            nano_cpus: limits.cpu_millicores.map(|m| i64::from(m) * 1_000_000),
            pids_limit: limits.pids.and_then(|p| i64::try_from(p).ok()),
            cap_drop: Some(vec!["ALL".into()]),
            // The engine's default seccomp profile applies (the container is not privileged).
            security_opt: Some(vec!["no-new-privileges".into()]),
            init: Some(false),
            // `/proc` as on the local backend: only the container's own processes change.
            masked_paths: Some(super::proc_paths::proc_paths().0.clone()),
            readonly_paths: Some(super::proc_paths::proc_paths().1.clone()),
            ..Default::default()
        };
        let labels = HashMap::from([(settings.sandbox_label(), spec.id.to_string())]);
        ContainerCreateBody {
            image: Some(image.id.clone()),
            entrypoint: Some(entrypoint),
            cmd: Some(Vec::new()),
            env: Some(env),
            working_dir: spec.workdir.clone(),
            hostname: Some(spec.hostname.clone()),
            // The agent is root inside, without capabilities, as on the local backend.
            user: Some("0:0".into()),
            labels: Some(labels),
            host_config: Some(host_config),
            ..Default::default()
        }
    }

    /// The client for the agent of container `name`.
    pub(super) async fn agent_client(
        &self,
        spec: &SandboxSpec,
        name: &str,
        secret: Option<String>,
    ) -> Result<AsyncAgentClient> {
        match (self.settings.connection, secret) {
            (AgentConnection::Tcp, Some(secret)) => {
                let ip = self.container_ip(&spec.id, name).await?;
                let addr = std::net::SocketAddr::new(ip, self.settings.agent_port);
                Ok(AsyncAgentClient::tcp(addr, Some(secret)))
            }
            _ => Ok(AsyncAgentClient::unix(
                self.settings.run_dir(spec.id.as_str()).join("agent.sock"),
            )),
        }
    }

    /// The container's address on the configured network.
    async fn container_ip(&self, id: &SandboxId, name: &str) -> Result<std::net::IpAddr> {
        let inspect = self
            .docker
            .inspect_container(name, None)
            .await
            .map_err(|e| engine_err(id, "cannot inspect the container", &e))?;
        let network = self.settings.network.clone().unwrap_or_default();
        inspect
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|mut n| n.remove(&network))
            .and_then(|e| e.ip_address)
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| RuntimeError::StartFailed {
                id: id.to_string(),
                reason: format!("the container has no address on network {network:?}"),
            })
    }

    /// Asks the agent until it answers; a container that stopped meanwhile fails at once,
    /// with why (out of memory, exit code, the end of its output).
    async fn wait_ready(
        &self,
        id: &SandboxId,
        name: &str,
        client: AsyncAgentClient,
    ) -> Result<Started> {
        let deadline = Instant::now() + self.settings.start_timeout;
        let client = client.with_request_timeout(Duration::from_secs(2));
        let mut tries = 0u32;
        loop {
            match client.connect().await {
                Ok(conn) => {
                    let agent_version = conn.agent_version().to_string();
                    return Ok(Started {
                        client: client.with_request_timeout(kiln_protocol::DEFAULT_REQUEST_TIMEOUT),
                        agent_version,
                    });
                }
                Err(err) if err.agent_error().is_some() => {
                    return Err(RuntimeError::Agent {
                        id: id.to_string(),
                        source: err,
                    })
                }
                Err(err) => {
                    tries += 1;
                    if tries.is_multiple_of(10) {
                        if let Some(why) = self.stopped_reason(name).await {
                            return Err(RuntimeError::StartFailed {
                                id: id.to_string(),
                                reason: why,
                            });
                        }
                    }
                    if Instant::now() >= deadline {
                        return Err(RuntimeError::StartFailed {
                            id: id.to_string(),
                            reason: format!(
                                "its agent did not answer within {:?}: {err}",
                                self.settings.start_timeout
                            ),
                        });
                    }
                }
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// `None` while the container runs; else why it stopped, for people.
    pub(super) async fn stopped_reason(&self, name: &str) -> Option<String> {
        let inspect = self.docker.inspect_container(name, None).await.ok()?;
        let state = inspect.state?;
        if state.running == Some(true) {
            return None;
        }
        let mut reason = if state.oom_killed == Some(true) {
            "it was killed for lack of memory (out of memory)".to_string()
        } else {
            format!(
                "its init exited with status {}",
                state.exit_code.unwrap_or(-1)
            )
        };
        if let Some(error) = state.error.filter(|e| !e.is_empty()) {
            reason.push_str(&format!(": {error}"));
        }
        let tail = self.log_tail(name).await;
        if !tail.is_empty() {
            reason.push_str(&format!("; its output ends: {tail}"));
        }
        Some(reason)
    }

    async fn log_tail(&self, name: &str) -> String {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: "5".into(),
            ..Default::default()
        };
        let mut logs = self.docker.logs(name, Some(options));
        let mut out = String::new();
        while let Some(Ok(chunk)) = logs.next().await {
            out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            if out.len() > 2000 {
                break;
            }
        }
        out.trim().to_string()
    }

    /// Resolves to how the container ended once it stops.
    pub(super) fn watch_exit(
        &self,
        name: &str,
        destroying: Arc<AtomicBool>,
    ) -> watch::Receiver<Option<SandboxExit>> {
        let (tx, rx) = watch::channel(None);
        let (docker, name) = (self.docker.clone(), name.to_string());
        tokio::spawn(async move {
            // Any answer (an exit status, an error for a non-zero one, a removed
            // container) means it is not running any more.
            let _ = docker.wait_container(&name, None).next().await;
            let exit = if destroying.load(Ordering::SeqCst) {
                SandboxExit::Destroyed
            } else {
                SandboxExit::Died {
                    reason: exit_reason(&docker, &name).await,
                }
            };
            tx.send_replace(Some(exit));
        });
        rx
    }

    /// Removes a container and its volumes, whatever its state; a missing one is fine.
    pub(super) async fn remove_container(&self, name: &str) -> bool {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        self.docker
            .remove_container(name, Some(options))
            .await
            .is_ok()
    }
}

/// Why a container stopped on its own, for people.
async fn exit_reason(docker: &bollard::Docker, name: &str) -> String {
    {
        match docker.inspect_container(name, None).await {
            Ok(inspect) => match inspect.state {
                Some(state) if state.oom_killed == Some(true) => {
                    "killed for lack of memory (out of memory)".into()
                }
                Some(state) => format!(
                    "its init exited with status {}",
                    state.exit_code.unwrap_or(-1)
                ),
                None => "stopped".into(),
            },
            Err(_) => "its container was removed from outside Kiln".into(),
        }
    }
}

/// A fresh directory for the agent's socket, only root may enter.
fn prepare_run_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io("cannot create", dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| RuntimeError::io("cannot chmod", dir, e))?;
    let socket = dir.join("agent.sock");
    if socket.as_os_str().len() > 107 {
        return Err(RuntimeError::InvalidSpec(format!(
            "the agent socket path {} is too long for a unix socket (use a shorter \
             runtime.docker.label_prefix)",
            socket.display()
        )));
    }
    Ok(())
}

//! The `docker` backend: one container per sandbox in a Docker engine (`bollard`), from
//! an image the engine has or one imported from Kiln's image store, with the static
//! `kiln-agent` as its init. The server talks to the agent over the same protocol as the
//! local backend: through a unix socket in a directory bound into the container (the
//! container then has no network at all), or over TCP with a per-sandbox secret (an engine
//! elsewhere; the container joins a configured network).
//!
//! Reconciliation goes by label: `<prefix>.sandbox=<id>` names the sandbox a container
//! is, so a restarted server finds its containers and removes those no session owns.

mod disk_usage;
mod image;
mod limits;
mod proc_paths;
mod runtime_impl;
mod seal;
mod snapshot;
mod start;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bollard::Docker;
use kiln_config::AgentConnection;
use kiln_protocol::AsyncAgentClient;
use tokio::sync::watch;

use crate::error::{Result, RuntimeError};
use crate::runtime::SandboxExit;
use crate::slots::Slots;
use crate::spec::SandboxId;

pub use limits::DiskLimitSupport;

/// Where the agent is inside every container.
pub const AGENT_PATH: &str = "/.kiln/agent";
/// The directory bound from the host for the agent's socket (`socket` connection).
pub const RUN_DIR: &str = "/.kiln/run";
/// The agent's socket inside.
pub const SOCKET_PATH: &str = "/.kiln/run/agent.sock";
/// Host directories for the agents' sockets: short, since a socket path is at most 107 bytes.
const SOCKET_ROOT: &str = "/run/kiln/docker";

/// Settings of the Docker backend.
#[derive(Debug, Clone)]
pub struct DockerSettings {
    /// The engine (`unix://…`, `tcp://…`); `None`: `DOCKER_HOST` or the default socket.
    pub host: Option<String>,
    /// How the server reaches the agents.
    pub connection: AgentConnection,
    /// The network containers join with a TCP connection.
    pub network: Option<String>,
    /// Label and container-name prefix.
    pub label_prefix: String,
    /// The agent's port with a TCP connection.
    pub agent_port: u16,
    /// From create to the agent's answer.
    pub start_timeout: Duration,
    /// The static `kiln-agent` on this machine.
    pub agent_binary: PathBuf,
    /// Scratch space (image archives on their way into the engine).
    pub root: PathBuf,
    /// Admission: memory for all containers (`None`: the engine's MemTotal minus an
    /// eighth), and the overcommit ratios, as on the local backend (`limits.rs`).
    pub memory_budget: Option<u64>,
    pub memory_overcommit: f64,
    pub disk_overcommit: f64,
}

impl DockerSettings {
    /// Defaults for everything but the agent binary and the root.
    pub fn new(agent_binary: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Self {
        let defaults = kiln_config::DockerConfig::default();
        DockerSettings {
            host: defaults.host,
            connection: defaults.agent_connection,
            network: defaults.network,
            label_prefix: defaults.label_prefix,
            agent_port: defaults.agent_port,
            start_timeout: Duration::from_secs(defaults.start_timeout_secs),
            agent_binary: agent_binary.into(),
            root: root.into(),
            memory_budget: None,
            memory_overcommit: 10.0,
            disk_overcommit: 20.0,
        }
    }

    fn sandbox_label(&self) -> String {
        format!("{}.sandbox", self.label_prefix)
    }

    fn container_name(&self, id: &SandboxId) -> String {
        format!("{}-{id}", self.label_prefix)
    }

    fn run_dir(&self, id: &str) -> PathBuf {
        PathBuf::from(SOCKET_ROOT).join(&self.label_prefix).join(id)
    }
}

/// One running container.
#[derive(Debug)]
pub(crate) struct Sandbox {
    id: SandboxId,
    /// The container's name.
    container: String,
    client: AsyncAgentClient,
    /// Default working directory of commands.
    workdir: Option<String>,
    created_at: SystemTime,
    agent_version: String,
    exit: watch::Receiver<Option<SandboxExit>>,
    destroying: Arc<AtomicBool>,
    /// The disk limit the engine enforces on it, if any.
    disk_limit: Option<u64>,
    /// Its egress socket's accept loop, if it has one (`crate::egress_socket`).
    egress: crate::egress_socket::EgressSlot,
}

impl Sandbox {
    fn mark_destroying(&self) {
        self.destroying.store(true, Ordering::SeqCst);
    }
}

/// The Docker backend. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct DockerRuntime {
    docker: Docker,
    settings: DockerSettings,
    images: Option<kiln_image::ImageStore>,
    /// The sandboxes this runtime runs or is starting.
    slots: Slots<Sandbox>,
    /// One import into the engine at a time: two creates of a new image load it once.
    loading: tokio::sync::Mutex<()>,
    /// Set once the API version is agreed on.
    negotiated: tokio::sync::OnceCell<()>,
    /// Admission and the engine's disk limit support.
    limits: limits::DockerLimits,
}

impl DockerRuntime {
    /// A client of the engine `settings` names. Makes no request: the API version is
    /// agreed on first use ([`DockerRuntime::negotiate`]), so that opening works outside
    /// an async context and a server starts even while the engine is down.
    pub fn new(settings: DockerSettings) -> Result<Self> {
        if !settings.agent_binary.is_file() {
            return Err(RuntimeError::HostNotReady(format!(
                "kiln-agent not found at {}",
                settings.agent_binary.display()
            )));
        }
        let docker = match &settings.host {
            Some(host) => Docker::connect_with_host(host),
            None => Docker::connect_with_defaults(),
        }
        .map_err(|e| engine_down(&settings, &e))?;
        std::fs::create_dir_all(&settings.root)
            .map_err(|e| RuntimeError::io("cannot create", &settings.root, e))?;
        let limits = limits::DockerLimits::new(
            settings.memory_budget,
            settings.memory_overcommit,
            settings.disk_overcommit,
        );
        Ok(DockerRuntime {
            limits,
            docker,
            settings,
            images: None,
            slots: Slots::default(),
            loading: tokio::sync::Mutex::default(),
            negotiated: tokio::sync::OnceCell::new(),
        })
    }

    /// Agrees on an API version with the engine, once: an engine older than the client
    /// is spoken to in its own version. `HostNotReady` while the engine does not answer.
    pub async fn negotiate(&self) -> Result<()> {
        self.negotiated
            .get_or_try_init(|| async {
                // Clones share the version: negotiating on one sets it for all.
                self.docker
                    .clone()
                    .negotiate_version()
                    .await
                    .map(|_| ())
                    .map_err(|e| engine_down(&self.settings, &e))?;
                self.limits.learn(&self.docker).await;
                Ok::<(), RuntimeError>(())
            })
            .await
            .map(|_| ())
    }

    /// Resolves image references in Kiln's store first (importing them into the engine
    /// on first use), then among the engine's own images.
    pub fn with_images(mut self, images: kiln_image::ImageStore) -> Self {
        self.images = Some(images);
        self
    }

    /// Whether the engine enforces disk limits, and why not.
    pub fn disk_limit_support(&self) -> (DiskLimitSupport, String) {
        self.limits.disk_support()
    }

    /// The engine client, for tests and benchmarks that compare with plain Docker.
    pub fn engine(&self) -> &Docker {
        &self.docker
    }
}

/// The engine cannot be reached: say where and how to fix it.
fn engine_down(settings: &DockerSettings, err: &bollard::errors::Error) -> RuntimeError {
    let host = settings
        .host
        .clone()
        .or_else(|| std::env::var("DOCKER_HOST").ok())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
    RuntimeError::HostNotReady(format!(
        "the Docker engine at {host} does not answer ({err}): start dockerd, or set \
         runtime.docker.host"
    ))
}

/// Any other engine error, about sandbox `id`.
fn engine_err(id: &SandboxId, what: &str, err: &bollard::errors::Error) -> RuntimeError {
    RuntimeError::StartFailed {
        id: id.to_string(),
        reason: format!("{what}: {err}"),
    }
}

/// Whether the engine answered 404.
fn is_not_found(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

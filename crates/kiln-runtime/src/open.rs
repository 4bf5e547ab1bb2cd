//! Picks and builds the sandbox backend the configuration names, so that the server
//! never names a backend's own settings (`LocalConfig`), host checks or paths.

use std::path::Path;
use std::sync::Arc;

use kiln_config::{RuntimeBackend, RuntimeConfig};

use crate::docker::{DockerRuntime, DockerSettings};
use crate::local::{default_agent_binary, layer_users, LocalConfig, LocalRuntime};
use crate::runtime::Runtime;
use crate::spec::Limits;

/// A backend ready to make sandboxes, and what its users need to know of it.
pub struct Opened {
    /// The backend.
    pub runtime: Arc<dyn Runtime>,
    /// The limits a sandbox gets unless asked otherwise ([`default_limits`]).
    pub limits: Limits,
    /// Where its sandboxes run, for records and people (e.g. `local:<hostname>`).
    pub location: String,
}

/// Why this server cannot make sandboxes, and what to install or set to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Unavailable {
    /// For people: the cause and the fix.
    pub reason: String,
}

impl Unavailable {
    fn new(reason: impl Into<String>) -> Self {
        Unavailable {
            reason: reason.into(),
        }
    }
}

/// The backend `config.backend` names, with its state under `data_dir` and its images
/// in `images_dir`; or why this host cannot run it (so that `kiln serve` can say so at
/// start instead of failing on the first session). Opening makes no sandbox.
pub fn open(
    config: &RuntimeConfig,
    data_dir: &Path,
    images_dir: &Path,
) -> Result<Opened, Unavailable> {
    match config.backend {
        RuntimeBackend::None => Err(Unavailable::new("runtime.backend is \"none\"")),
        RuntimeBackend::Local => open_local(config, data_dir, images_dir, None),
        RuntimeBackend::Docker => open_docker(config, data_dir, images_dir, None),
        RuntimeBackend::Kubernetes => Ok(open_kubernetes(config, None)),
    }
}

/// [`open`] for a node of the data directory (`crate::node`): the local backend keeps its
/// sandboxes under `runtime_root` instead of `<data-dir>/runtime`; the Docker backend keeps
/// its state there and labels its containers with the node, so neither touches another
/// node's sandboxes.
pub fn open_at(
    config: &RuntimeConfig,
    runtime_root: &Path,
    data_dir: &Path,
    images_dir: &Path,
) -> Result<Opened, Unavailable> {
    match config.backend {
        RuntimeBackend::Local => open_local(config, data_dir, images_dir, Some(runtime_root)),
        RuntimeBackend::Docker => open_docker(config, data_dir, images_dir, Some(runtime_root)),
        RuntimeBackend::Kubernetes => Ok(open_kubernetes(config, Some(runtime_root))),
        RuntimeBackend::None => open(config, data_dir, images_dir),
    }
}

/// The per-sandbox limits the configuration sets.
pub fn default_limits(config: &RuntimeConfig) -> Limits {
    Limits {
        memory_bytes: Some(config.memory_mib.saturating_mul(1024 * 1024)),
        disk_bytes: disk_bytes(config),
        pids: Some(config.pids),
        cpu_millicores: Some(config.cpu_millicores),
    }
}

fn disk_bytes(config: &RuntimeConfig) -> Option<u64> {
    (config.disk_mib > 0).then(|| config.disk_mib.saturating_mul(1 << 20))
}

fn agent_binary(config: &RuntimeConfig) -> Result<std::path::PathBuf, Unavailable> {
    config
        .agent_binary
        .clone()
        .or_else(default_agent_binary)
        .ok_or_else(|| {
            Unavailable::new(
                "no kiln-agent binary found (set runtime.agent_binary or KILN_AGENT_BIN; \
                 scripts/build-agent.sh builds one)",
            )
        })
}

/// The Docker backend: containers in the engine `[runtime.docker]` names, from images of
/// the store in `images_dir` (loaded into the engine on first use) or of the engine.
fn open_docker(
    config: &RuntimeConfig,
    data_dir: &Path,
    images_dir: &Path,
    runtime_root: Option<&Path>,
) -> Result<Opened, Unavailable> {
    let docker = &config.docker;
    let state = runtime_root.map_or_else(|| data_dir.join("docker"), |r| r.join("docker"));
    let mut settings = DockerSettings::new(agent_binary(config)?, state);
    settings.host.clone_from(&docker.host);
    settings.connection = docker.agent_connection;
    settings.network.clone_from(&docker.network);
    settings.label_prefix.clone_from(&docker.label_prefix);
    if let Some(node) = runtime_root.and_then(Path::file_name) {
        // Reconcile removes the containers its label finds that no session owns: a node
        // of its own must only ever find its own.
        settings.label_prefix = format!("{}.{}", settings.label_prefix, node.to_string_lossy());
    }
    settings.agent_port = docker.agent_port;
    settings.start_timeout = std::time::Duration::from_secs(docker.start_timeout_secs);
    // Admission as on the local backend (`docker/limits.rs`).
    settings.memory_budget = config.memory_budget_mib.map(|m| m.saturating_mul(1 << 20));
    settings.memory_overcommit = config.memory_overcommit;
    settings.disk_overcommit = config.disk_overcommit;
    let images = kiln_image::ImageStore::open(images_dir)
        .map_err(|e| Unavailable::new(format!("cannot open the image store: {e}")))?;
    let runtime = DockerRuntime::new(settings)
        .map_err(|e| Unavailable::new(format!("cannot use the Docker engine: {e}")))?
        .with_images(images);
    let location = format!(
        "docker:{}",
        docker.host.clone().unwrap_or_else(|| "local".into())
    );
    Ok(Opened {
        runtime: Arc::new(runtime),
        // The engine enforces the disk limit where its storage can (`storage_opt`);
        // admission counts it either way.
        limits: default_limits(config),
        location,
    })
}

fn open_local(
    config: &RuntimeConfig,
    data_dir: &Path,
    images_dir: &Path,
    runtime_root: Option<&Path>,
) -> Result<Opened, Unavailable> {
    let agent = agent_binary(config)?;
    let root = runtime_root.map_or_else(|| data_dir.join("runtime"), Path::to_path_buf);
    let mut local = LocalConfig::new(root, agent);
    local.default_disk_bytes = disk_bytes(config);
    local.memory_budget = config.memory_budget_mib.map(|m| m.saturating_mul(1 << 20));
    local.memory_overcommit = config.memory_overcommit;
    local.disk_overcommit = config.disk_overcommit;
    local.disk_pool = config.disk_pool;
    local.warm_pools = config.warm_pools.clone();
    local.favor_dynmods = config.cgroup_favordynmods;
    local.disk_limit_mode = match config.disk_limit_mode {
        kiln_config::DiskLimitMode::Auto => crate::local::DiskLimitMode::Auto,
        kiln_config::DiskLimitMode::ProjectQuota => crate::local::DiskLimitMode::ProjectQuota,
        kiln_config::DiskLimitMode::LoopDisk => crate::local::DiskLimitMode::LoopDisk,
        kiln_config::DiskLimitMode::None => crate::local::DiskLimitMode::None,
    };
    let report = crate::local::host_check::check_host(&local);
    if !report.is_ready() {
        let missing: Vec<String> = report
            .missing()
            .map(|c| {
                format!(
                    "{} ({}){}",
                    c.name,
                    c.detail,
                    c.fix.as_ref().map(|f| format!(": {f}")).unwrap_or_default()
                )
            })
            .collect();
        return Err(Unavailable::new(format!(
            "this host cannot run sandboxes: {}",
            missing.join("; ")
        )));
    }
    let images = open_images(data_dir, images_dir)
        .map_err(|e| Unavailable::new(format!("cannot open the image store: {e}")))?;
    let runtime = LocalRuntime::new(local)
        .map_err(|e| Unavailable::new(format!("cannot start the local runtime: {e}")))?
        .with_images(images);
    Ok(Opened {
        runtime: Arc::new(runtime),
        limits: default_limits(config),
        location: format!("local:{}", hostname()),
    })
}

/// The image store in `images_dir` as the local backend with its state under `data_dir`
/// shares it: no removal or collection deletes a layer one of its sandboxes has mounted.
/// For the server's own image management (base images), which must not race sandboxes.
pub fn open_images(
    data_dir: &Path,
    images_dir: &Path,
) -> kiln_image::Result<kiln_image::ImageStore> {
    // Every node's runtime root: a sandbox of another process on this data directory
    // (`kiln datasets validate` beside `kiln serve`) holds its layers as much as ours.
    let data_dir = data_dir.to_path_buf();
    Ok(
        kiln_image::ImageStore::open(images_dir)?.with_layer_users(Arc::new(move || {
            crate::node::runtime_roots(&data_dir)
                .iter()
                .flat_map(|root| layer_users(root))
                .collect()
        })),
    )
}

/// The Kubernetes backend: a Pod per sandbox in the cluster `[runtime.kubernetes]` names.
/// The client is built on first use, so opening needs no cluster yet.
fn open_kubernetes(config: &RuntimeConfig, runtime_root: Option<&Path>) -> Opened {
    let kube = &config.kubernetes;
    let mut node = hostname();
    if let Some(name) = runtime_root.and_then(Path::file_name) {
        // Nodes sharing a data directory each reconcile their own Pods only.
        node = format!("{node}-{}", name.to_string_lossy());
    }
    let settings = crate::kubernetes::KubeSettings::from_config(kube, &node);
    let location = format!("kubernetes:{}/{}", settings.node, settings.namespace);
    Opened {
        runtime: Arc::new(crate::kubernetes::KubeRuntime::new(settings)),
        limits: default_limits(config),
        location,
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

//! The `kubernetes` backend, pods mode: one Pod per sandbox from the sandbox's image,
//! the static `kiln-agent` copied in by an init container and run as the main
//! container's entrypoint, listening on the Pod's IP with a per-sandbox secret; the
//! server speaks the same protocol to it as to every agent (no `kubectl exec`).
//!
//! Readiness and deaths come from a watch of the Pod (resumed from its last
//! resourceVersion when it breaks, re-listed on 410 Gone), not from polling; a Pod that
//! cannot start (image pull, scheduling, init container, OOM, eviction) fails the create
//! at once with a typed [`PodFailure`]. Reconciliation goes by label:
//! `kiln.dev/node=<node>` names the server that owns a Pod.

mod pod;
mod retry;
mod runtime_impl;
mod start;
mod status;
mod watch;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kiln_protocol::AsyncAgentClient;
use tokio::sync::watch as channel;

use crate::error::{Result, RuntimeError};
use crate::runtime::SandboxExit;
use crate::slots::Slots;
use crate::spec::SandboxId;

pub use pod::{network_policy, node_selector, pod_name, sandbox_pod};
pub use status::PodFailure;

/// Settings of the Kubernetes backend.
#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// A kubeconfig file; `None`: in-cluster, else `KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Where sandbox Pods live.
    pub namespace: String,
    /// `runtimeClassName` of sandbox Pods.
    pub runtime_class: Option<String>,
    /// The image holding the static agent.
    pub agent_image: String,
    /// Copies the agent to the path appended to it.
    pub agent_copy_command: Vec<String>,
    /// The agent's port.
    pub agent_port: u16,
    /// From create to the agent's answer.
    pub ready_timeout: Duration,
    /// This server's Pods carry `kiln.dev/node=<node>`.
    pub node: String,
    /// Pods get `hostUsers: false`.
    pub user_namespace: bool,
}

impl KubeSettings {
    /// Defaults for everything but the node label.
    pub fn new(node: impl Into<String>) -> Self {
        let defaults = kiln_config::KubernetesConfig::default();
        KubeSettings {
            kubeconfig: defaults.kubeconfig,
            namespace: defaults.namespace,
            runtime_class: defaults.runtime_class,
            agent_image: defaults.agent_image,
            agent_copy_command: defaults.agent_copy_command,
            agent_port: defaults.agent_port,
            ready_timeout: Duration::from_secs(defaults.ready_timeout_secs),
            node: node.into(),
            user_namespace: defaults.user_namespace,
        }
    }

    /// From `[runtime.kubernetes]`; the node label defaults to `fallback_node`.
    pub fn from_config(config: &kiln_config::KubernetesConfig, fallback_node: &str) -> Self {
        KubeSettings {
            kubeconfig: config.kubeconfig.clone(),
            namespace: config.namespace.clone(),
            runtime_class: config.runtime_class.clone(),
            agent_image: config.agent_image.clone(),
            agent_copy_command: config.agent_copy_command.clone(),
            agent_port: config.agent_port,
            ready_timeout: Duration::from_secs(config.ready_timeout_secs),
            node: config
                .node
                .clone()
                .unwrap_or_else(|| node_label(fallback_node)),
            user_namespace: config.user_namespace,
        }
    }
}

/// A host name as a label value: lower case, `[a-z0-9-]`, at most 63.
fn node_label(host: &str) -> String {
    let label: String = host
        .chars()
        .take(63)
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let label = label.trim_matches('-');
    if label.is_empty() {
        "kiln".into()
    } else {
        label.to_string()
    }
}

/// One running Pod.
#[derive(Debug)]
pub(crate) struct Sandbox {
    id: SandboxId,
    /// The Pod's (and NetworkPolicy's) name.
    pod: String,
    client: AsyncAgentClient,
    agent_version: String,
    created_at: SystemTime,
    exit: channel::Receiver<Option<SandboxExit>>,
    destroying: Arc<AtomicBool>,
    /// Ends the Pod's watch with the sandbox.
    watch: tokio::task::AbortHandle,
}

impl Sandbox {
    fn mark_destroying(&self) {
        self.destroying.store(true, Ordering::SeqCst);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

/// The Kubernetes backend. Cheap to share behind an `Arc`.
pub struct KubeRuntime {
    settings: KubeSettings,
    client: tokio::sync::OnceCell<kube::Client>,
    /// The sandboxes this runtime runs or is starting.
    slots: Slots<Sandbox>,
}

impl std::fmt::Debug for KubeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeRuntime")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl KubeRuntime {
    /// A backend for the cluster `settings` names. Makes no request: the client is
    /// built on first use, so a server starts while the cluster is unreachable.
    pub fn new(settings: KubeSettings) -> Self {
        KubeRuntime {
            settings,
            client: tokio::sync::OnceCell::new(),
            slots: Slots::default(),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &KubeSettings {
        &self.settings
    }

    async fn client(&self) -> Result<kube::Client> {
        self.client
            .get_or_try_init(|| async {
                let config = match &self.settings.kubeconfig {
                    Some(path) => {
                        let file = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                            cluster_down(format!("cannot read kubeconfig {}: {e}", path.display()))
                        })?;
                        kube::Config::from_custom_kubeconfig(file, &Default::default())
                            .await
                            .map_err(|e| {
                                cluster_down(format!("kubeconfig {}: {e}", path.display()))
                            })?
                    }
                    None => kube::Config::infer()
                        .await
                        .map_err(|e| cluster_down(format!("no cluster configuration: {e}")))?,
                };
                kube::Client::try_from(config)
                    .map_err(|e| cluster_down(format!("cannot build a client: {e}")))
            })
            .await
            .cloned()
    }
}

fn cluster_down(what: String) -> RuntimeError {
    RuntimeError::HostNotReady(format!(
        "the Kubernetes cluster cannot be reached: {what} (set runtime.kubernetes.kubeconfig)"
    ))
}

/// An API error about sandbox `id` while doing `what`.
fn api_err(id: &SandboxId, what: &str, err: &kube::Error) -> RuntimeError {
    RuntimeError::StartFailed {
        id: id.to_string(),
        reason: format!("{what}: {err}"),
    }
}

/// The API's HTTP status in an error, if it answered one.
fn api_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

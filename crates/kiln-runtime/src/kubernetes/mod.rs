//! The `kubernetes` backend. Pods mode: one Pod per sandbox from the sandbox's image,
//! the static `kiln-agent` copied in by an init container and run as the main
//! container's entrypoint, listening on the Pod's IP with a per-sandbox secret; the
//! server speaks the same protocol to it as to every agent (no `kubectl exec`).
//!
//! Readiness and deaths come from a watch of the Pod (resumed from its last
//! resourceVersion when it breaks, re-listed on 410 Gone), not from polling; a Pod that
//! cannot start (image pull, scheduling, init container, OOM, eviction) fails the create
//! at once with a typed [`PodFailure`]. Reconciliation goes by label:
//! `kiln.dev/node=<node>` names the server that owns a Pod.
//!
//! agent-sandbox mode (`claim.rs`, `claim_start.rs`), chosen by discovery: the same Pod
//! as a SandboxTemplate per image and resource class, a SandboxWarmPool per template,
//! a SandboxClaim per sandbox; readiness and failures from the claim's and its Pod's
//! watches; the agent reached the same way.

mod claim;
mod claim_start;
mod pod;
mod retry;
mod runtime_impl;
mod start;
mod status;
mod warm;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kiln_protocol::AsyncAgentClient;
use tokio::sync::watch as channel;

use crate::egress_tcp::EgressListener;
use crate::error::{Result, RuntimeError};
use crate::runtime::SandboxExit;
use crate::slots::Slots;
use crate::spec::SandboxId;

pub use claim::{claim_name, template_name, ClaimFailure};
pub use kiln_config::KubernetesMode;
pub use pod::{network_policy, node_selector, pod_name, sandbox_pod};
pub use status::PodFailure;
pub use warm::WARM_LABEL;

/// The objects sandboxes are made of, once discovery has decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeMode {
    /// A Pod (with its NetworkPolicy and Secret) per sandbox.
    Pods,
    /// A SandboxClaim per sandbox (kubernetes-sigs/agent-sandbox).
    AgentSandbox,
}

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
    /// Pods, agent-sandbox, or whichever the cluster serves.
    pub mode: KubernetesMode,
    /// Warm sandboxes per image.
    pub warm_pools: BTreeMap<String, u32>,
    /// A claim's `shutdownTime`, from its create.
    pub sandbox_ttl: Duration,
    /// Where sandboxes' egress connections are served (`None`: egress refused).
    pub egress_listen: Option<SocketAddr>,
    /// What Pods dial for it, if not `egress_listen`'s bound address.
    pub egress_advertise: Option<SocketAddr>,
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
            mode: defaults.mode,
            warm_pools: defaults.warm_pools,
            sandbox_ttl: Duration::from_secs(u64::from(defaults.sandbox_ttl_minutes) * 60),
            egress_listen: defaults.egress_listen,
            egress_advertise: defaults.egress_advertise,
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
            mode: config.mode,
            warm_pools: config.warm_pools.clone(),
            sandbox_ttl: Duration::from_secs(u64::from(config.sandbox_ttl_minutes) * 60),
            egress_listen: config.egress_listen,
            egress_advertise: config.egress_advertise,
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
    /// agent-sandbox mode: the SandboxClaim, whose delete ends the sandbox.
    claim: Option<String>,
    client: AsyncAgentClient,
    /// The agent's secret (pods mode), which its egress connections show.
    secret: Option<String>,
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
    /// Decided by discovery on first use.
    mode: tokio::sync::OnceCell<KubeMode>,
    /// agent-sandbox mode: the agent secret of each template made or found so far.
    templates: Mutex<HashMap<String, String>>,
    /// pods mode: warm Pods by class.
    warm: Arc<warm::WarmPools>,
    /// The sandboxes this runtime runs or is starting.
    slots: Slots<Sandbox>,
    /// Sandboxes' egress connections (`egress_listen`), bound on first use.
    egress: Mutex<Option<Arc<EgressListener>>>,
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
            mode: tokio::sync::OnceCell::new(),
            templates: Mutex::default(),
            warm: Arc::default(),
            slots: Slots::default(),
            egress: Mutex::default(),
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

impl KubeRuntime {
    /// The mode in force: configured, or (`auto`) agent-sandbox when discovery finds
    /// both of its groups at `v1beta1`, else pods. Asked once.
    pub async fn mode(&self) -> Result<KubeMode> {
        let client = self.client().await?;
        self.mode
            .get_or_try_init(|| async {
                let wanted = self.settings.mode;
                if wanted == KubernetesMode::Pods {
                    return Ok(KubeMode::Pods);
                }
                let groups = retry::retry(|| client.list_api_groups())
                    .await
                    .0
                    .map_err(|e| cluster_down(format!("discovery failed: {e}")))?;
                let served = |group: &str| {
                    groups.groups.iter().any(|g| {
                        g.name == group && g.versions.iter().any(|v| v.version == claim::VERSION)
                    })
                };
                let found = served(claim::SANDBOX_GROUP) && served(claim::EXTENSIONS_GROUP);
                match (wanted, found) {
                    (_, true) => Ok(KubeMode::AgentSandbox),
                    (KubernetesMode::AgentSandbox, false) => Err(RuntimeError::HostNotReady(
                        "runtime.kubernetes.mode is agent-sandbox but the cluster does not \
                         serve agents.x-k8s.io/v1beta1 and extensions.agents.x-k8s.io/v1beta1 \
                         (install kubernetes-sigs/agent-sandbox with its extensions)"
                            .into(),
                    )),
                    _ => Ok(KubeMode::Pods),
                }
            })
            .await
            .copied()
    }
}

/// What a Kubernetes runtime without `egress_listen` cannot do.
const NO_EGRESS: &str = "egress through the server (a sandbox network allowlist) without \
     runtime.kubernetes.egress_listen";

impl KubeRuntime {
    /// The egress listener, bound on first use; [`RuntimeError::Unsupported`] without
    /// `egress_listen`.
    fn egress_listener(&self) -> Result<Arc<EgressListener>> {
        let addr = self
            .settings
            .egress_listen
            .ok_or(RuntimeError::Unsupported { what: NO_EGRESS })?;
        let mut held = self.egress.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(listener) = &*held {
            return Ok(Arc::clone(listener));
        }
        let listener = Arc::new(EgressListener::bind(addr)?);
        *held = Some(Arc::clone(&listener));
        Ok(listener)
    }

    /// Where a sandbox's relay dials: the advertised address, else the bound one.
    fn egress_target(&self, listener: &EgressListener) -> SocketAddr {
        self.settings
            .egress_advertise
            .unwrap_or_else(|| listener.local_addr())
    }

    /// Stops serving `id`'s egress connections, if any were served.
    fn forget_egress(&self, id: &SandboxId) {
        let held = self.egress.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(listener) = &*held {
            listener.remove(id);
        }
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

//! `[runtime.kubernetes]`: the Kubernetes backend (`runtime.backend = "kubernetes"`):
//! pods mode (one Pod per sandbox) or agent-sandbox mode (a SandboxClaim per sandbox).
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// A kubeconfig file (its current context is used); unset: the in-cluster service
    /// account (`KUBERNETES_SERVICE_HOST` and the mounted token), else `KUBECONFIG` or
    /// `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// The namespace sandbox Pods and their NetworkPolicies live in.
    pub namespace: String,
    /// `runtimeClassName` of every sandbox Pod (e.g. `gvisor`, `kata`); unset: the
    /// cluster's default runtime.
    pub runtime_class: Option<String>,
    /// The image whose `/kiln-agent` (the static agent) an init container copies into
    /// the Pod; it needs a `cp` (`agent_copy_command` names it).
    pub agent_image: String,
    /// The init container's command: copies the agent to its first argument's target.
    pub agent_copy_command: Vec<String>,
    /// The agent's TCP port inside each Pod.
    pub agent_port: u16,
    /// From create to the agent's answer (image pulls included), in seconds.
    pub ready_timeout_secs: u64,
    /// Labels this server's Pods with `kiln.dev/node=<node>`: reconciliation only ever
    /// removes Pods of its own node. Unset: the host name.
    pub node: Option<String>,
    /// Pods run in a user namespace (`hostUsers: false`): the sandbox's root is an
    /// unprivileged user on the node, so it cannot change node-wide `/proc` entries it
    /// would otherwise own. Needs a cluster and runtime with user namespace support
    /// (Kubernetes 1.33+, containerd 2 / CRI-O 1.25+, Linux 6.3+).
    pub user_namespace: bool,
    /// Which objects sandboxes are made of; `auto`: agent-sandbox's when the cluster
    /// serves its API (discovery), else Pods.
    pub mode: KubernetesMode,
    /// Warm sandboxes kept ready per image (`"image" = count`, at most
    /// [`MAX_WARM_POOL`] each), per image and resource class: agent-sandbox's
    /// SandboxWarmPool, or started Pods in pods mode. One SWE-bench image per task makes
    /// a pool shared by images useless.
    pub warm_pools: BTreeMap<String, u32>,
    /// agent-sandbox mode: a SandboxClaim's `shutdownTime` is this far after its create
    /// when its sandbox has no end of its own (sessions give theirs: their TTL, moved
    /// with it), so the cluster ends a sandbox its server forgot (a crash). Keep it ≥
    /// `sessions.max_ttl_minutes`.
    pub sandbox_ttl_minutes: u32,
    /// Where this server listens (TCP) for its sandboxes' egress connections (a
    /// session's network allowlist): one listener for all, each connection proving its
    /// sandbox with the agent's secret. Unset: sandboxes with an allowlist are refused.
    pub egress_listen: Option<SocketAddr>,
    /// The address Pods dial for it when it differs from `egress_listen` (a listen on
    /// `0.0.0.0`, a Service's IP); the sandbox's NetworkPolicy allows egress to exactly
    /// this IP and port.
    pub egress_advertise: Option<SocketAddr>,
}

/// `runtime.kubernetes.mode`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum KubernetesMode {
    /// agent-sandbox when discovery finds `agents.x-k8s.io/v1beta1` and
    /// `extensions.agents.x-k8s.io/v1beta1`, else pods.
    #[default]
    Auto,
    /// A Pod per sandbox, whatever the cluster serves.
    Pods,
    /// A SandboxClaim per sandbox; a cluster without agent-sandbox fails creates.
    AgentSandbox,
}

/// The most warm sandboxes one image's pool may hold.
pub const MAX_WARM_POOL: u32 = 64;

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            namespace: "kiln-sandboxes".into(),
            runtime_class: None,
            agent_image: "ghcr.io/kiln/kiln-agent:latest".into(),
            agent_copy_command: vec!["cp".into(), "/kiln-agent".into()],
            agent_port: 7171,
            ready_timeout_secs: 300,
            node: None,
            user_namespace: false,
            mode: KubernetesMode::Auto,
            warm_pools: BTreeMap::new(),
            sandbox_ttl_minutes: 24 * 60,
            egress_listen: None,
            egress_advertise: None,
        }
    }
}

/// A DNS label (RFC 1123): what namespaces and label values of node names must be.
fn dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl KubernetesConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if !dns_label(&self.namespace) {
            return Err(ConfigError::Rule(
                "runtime.kubernetes.namespace must be a DNS label ([a-z0-9-], at most 63)".into(),
            ));
        }
        if let Some(node) = &self.node {
            if !dns_label(node) {
                return Err(ConfigError::Rule(
                    "runtime.kubernetes.node must be a DNS label ([a-z0-9-], at most 63)".into(),
                ));
            }
        }
        if self.agent_image.is_empty() || self.agent_copy_command.is_empty() {
            return Err(ConfigError::Rule(
                "runtime.kubernetes.agent_image and agent_copy_command must be set".into(),
            ));
        }
        if self.agent_port == 0 || !(1..=3600).contains(&self.ready_timeout_secs) {
            return Err(ConfigError::Rule(
                "runtime.kubernetes.agent_port must be 1-65535, ready_timeout_secs 1-3600".into(),
            ));
        }
        if self
            .warm_pools
            .iter()
            .any(|(image, &n)| image.is_empty() || n > MAX_WARM_POOL)
        {
            return Err(ConfigError::Rule(format!(
                "runtime.kubernetes.warm_pools: image names must be set, sizes 0-{MAX_WARM_POOL}"
            )));
        }
        if !(1..=7 * 24 * 60).contains(&self.sandbox_ttl_minutes) {
            return Err(ConfigError::Rule(
                "runtime.kubernetes.sandbox_ttl_minutes must be 1-10080".into(),
            ));
        }
        self.check_egress()
    }

    fn check_egress(&self) -> Result<(), ConfigError> {
        match (self.egress_listen, self.egress_advertise) {
            (None, Some(_)) => Err(ConfigError::Rule(
                "runtime.kubernetes.egress_advertise needs egress_listen".into(),
            )),
            (Some(_), Some(to)) if to.ip().is_unspecified() || to.port() == 0 => {
                Err(ConfigError::Rule(
                    "runtime.kubernetes.egress_advertise must be an IP and port Pods can dial"
                        .into(),
                ))
            }
            (Some(listen), None) if listen.ip().is_unspecified() || listen.port() == 0 => {
                Err(ConfigError::Rule(
                    "runtime.kubernetes.egress_listen on any address or port 0 needs \
                     egress_advertise (the IP and port Pods dial)"
                        .into(),
                ))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
mod tests {
    use crate::{Config, Overrides, RuntimeBackend};

    #[test]
    fn the_kubernetes_backend_is_configured_and_checked() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("KILN_RUNTIME__BACKEND", "kubernetes");
            jail.set_env("KILN_RUNTIME__KUBERNETES__NAMESPACE", "sandboxes");
            jail.set_env("KILN_RUNTIME__KUBERNETES__RUNTIME_CLASS", "gvisor");
            let config = Config::load(None, &Overrides::default()).expect("loads");
            assert_eq!(config.runtime.backend, RuntimeBackend::Kubernetes);
            let k = &config.runtime.kubernetes;
            assert_eq!(k.namespace, "sandboxes");
            assert_eq!(k.runtime_class.as_deref(), Some("gvisor"));
            assert_eq!(k.agent_port, 7171);
            assert_eq!(k.mode, crate::KubernetesMode::Auto);
            jail.create_file(
                "kiln.toml",
                "[runtime.kubernetes]\nmode = \"agent-sandbox\"\n\
                 warm_pools = { \"python:3.12\" = 2 }\n",
            )?;
            let file = std::path::Path::new("kiln.toml");
            let config = Config::load(Some(file), &Overrides::default()).expect("loads");
            let k = &config.runtime.kubernetes;
            assert_eq!(k.mode, crate::KubernetesMode::AgentSandbox);
            assert_eq!(k.warm_pools.get("python:3.12"), Some(&2));
            jail.create_file(
                "kiln.toml",
                "[runtime.kubernetes]\nwarm_pools = { \"python:3.12\" = 1000 }\n",
            )?;
            let err = Config::load(Some(file), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("warm_pools"), "{err}");
            jail.create_file(
                "kiln.toml",
                "[runtime.kubernetes]\negress_listen = \"0.0.0.0:3129\"\n\
                 egress_advertise = \"10.0.0.5:3129\"\n",
            )?;
            let config = Config::load(Some(file), &Overrides::default()).expect("loads");
            let k = &config.runtime.kubernetes;
            assert_eq!(
                k.egress_advertise,
                Some("10.0.0.5:3129".parse().expect("an address"))
            );
            jail.create_file(
                "kiln.toml",
                "[runtime.kubernetes]\negress_listen = \"0.0.0.0:3129\"\n",
            )?;
            let err = Config::load(Some(file), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("egress_advertise"), "{err}");
            jail.set_env("KILN_RUNTIME__KUBERNETES__NAMESPACE", "Not_A_Label");
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("namespace"), "{err}");
            Ok(())
        });
    }
}

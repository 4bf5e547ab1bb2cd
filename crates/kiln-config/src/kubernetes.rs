//! `[runtime.kubernetes]`: the Kubernetes backend (`runtime.backend = "kubernetes"`),
//! pods mode: one Pod per sandbox.
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
}

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
        Ok(())
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
            jail.set_env("KILN_RUNTIME__KUBERNETES__NAMESPACE", "Not_A_Label");
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("namespace"), "{err}");
            Ok(())
        });
    }
}

//! `[runtime.docker]`: the Docker backend (`runtime.backend = "docker"`).
use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DockerConfig {
    /// The engine's address: `unix:///path/docker.sock` or `tcp://host:port`; unset:
    /// `DOCKER_HOST`, else `unix:///var/run/docker.sock`.
    pub host: Option<String>,
    /// How the server reaches each sandbox's agent: `socket` (a unix socket in a
    /// directory bound into the container: the engine must run on this machine; the
    /// container has no network at all) or `tcp` (the agent listens on `agent_port` with a
    /// per-sandbox secret and the server dials the container's address on `network`).
    pub agent_connection: AgentConnection,
    /// The Docker network containers join with `agent_connection = "tcp"` (create it
    /// `--internal`, so it has no route out); ignored with `socket` (network `none`).
    pub network: Option<String>,
    /// Labels (`<prefix>.sandbox`) and container names (`<prefix>-<id>`) start with
    /// this, so one engine can serve several Kiln servers: each reconciles its own.
    pub label_prefix: String,
    /// The agent's TCP port inside each container (`agent_connection = "tcp"`).
    pub agent_port: u16,
    /// How long a container may take from create to its agent's answer, in seconds
    /// (importing its image into the engine is not counted).
    pub start_timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AgentConnection {
    #[default]
    Socket,
    Tcp,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            host: None,
            agent_connection: AgentConnection::Socket,
            network: None,
            label_prefix: "kiln".into(),
            agent_port: 7171,
            start_timeout_secs: 30,
        }
    }
}

impl DockerConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let prefix_ok = (1..=32).contains(&self.label_prefix.len())
            && self
                .label_prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !prefix_ok {
            return Err(ConfigError::Rule(
                "runtime.docker.label_prefix must be 1 to 32 characters from [a-z0-9.-]".into(),
            ));
        }
        if self.agent_connection == AgentConnection::Tcp && self.network.is_none() {
            return Err(ConfigError::Rule(
                "runtime.docker.agent_connection = \"tcp\" needs runtime.docker.network".into(),
            ));
        }
        if self.agent_port == 0 || !(1..=3600).contains(&self.start_timeout_secs) {
            return Err(ConfigError::Rule(
                "runtime.docker.agent_port must be 1-65535, start_timeout_secs 1-3600".into(),
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
    fn the_docker_backend_is_configured_and_checked() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("KILN_RUNTIME__BACKEND", "docker");
            jail.set_env("KILN_RUNTIME__DOCKER__HOST", "unix:///tmp/d.sock");
            let config = Config::load(None, &Overrides::default()).expect("loads");
            assert_eq!(config.runtime.backend, RuntimeBackend::Docker);
            assert_eq!(
                config.runtime.docker.host.as_deref(),
                Some("unix:///tmp/d.sock")
            );
            assert_eq!(config.runtime.docker.label_prefix, "kiln");
            jail.set_env("KILN_RUNTIME__DOCKER__AGENT_CONNECTION", "tcp");
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("network"), "{err}");
            jail.set_env("KILN_RUNTIME__DOCKER__NETWORK", "kiln-agents");
            jail.set_env("KILN_RUNTIME__DOCKER__LABEL_PREFIX", "Bad Prefix");
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("label_prefix"), "{err}");
            Ok(())
        });
    }
}

//! `[cluster]`: many `kiln serve` on one PostgreSQL (issue 12). Each registers itself as
//! a node, heartbeats, and marks down nodes that stopped heartbeating. On SQLite a server
//! is the only node and none of this applies.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{ConfigError, Secret};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Where the other nodes reach this one (`http://10.0.0.5:8000`); by default
    /// `http://<listen>` (`https://<listen>` when `server.tls_cert_file` is set), which is
    /// right when `listen` is a routable address.
    pub advertise_url: Option<String>,
    /// How often this node records its heartbeat and looks for nodes that stopped.
    pub heartbeat_interval_ms: u64,
    /// A node whose last heartbeat is older than this is marked `down` and its sessions
    /// end `node_lost`. At least twice the interval.
    pub down_after_ms: u64,
    /// Sessions this node takes at most (what placement counts free room against).
    pub max_sessions: u64,
    /// Shared by the nodes: authenticates the internal hop between them. Unset, nodes
    /// register and heartbeat but forward nothing.
    pub secret: Option<Secret>,
    /// PEM file of the CA certificate(s) that signed the nodes' certificates: the hop to an
    /// `https://` node address verifies the node against these (and only these). Unset,
    /// against the system's trusted roots. `http://` addresses are spoken to in plain HTTP.
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            advertise_url: None,
            heartbeat_interval_ms: 2_000,
            down_after_ms: 15_000,
            max_sessions: 500,
            secret: None,
            tls_ca_file: None,
        }
    }
}

impl ClusterConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval_ms < 10 || self.heartbeat_interval_ms > 600_000 {
            return Err(ConfigError::Rule(
                "cluster.heartbeat_interval_ms must be between 10 and 600000".into(),
            ));
        }
        if self.down_after_ms < 2 * self.heartbeat_interval_ms {
            return Err(ConfigError::Rule(
                "cluster.down_after_ms must be at least twice cluster.heartbeat_interval_ms".into(),
            ));
        }
        if let Some(url) = &self.advertise_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::Rule(
                    "cluster.advertise_url must be an http:// or https:// URL".into(),
                ));
            }
        }
        if self.secret.as_ref().is_some_and(|s| s.expose().len() < 16) {
            return Err(ConfigError::Rule(
                "cluster.secret must be at least 16 characters".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_down_window_must_cover_two_heartbeats() {
        assert!(ClusterConfig::default().check().is_ok());
        let tight = ClusterConfig {
            heartbeat_interval_ms: 100,
            down_after_ms: 150,
            ..ClusterConfig::default()
        };
        assert!(tight.check().is_err());
        let bad_url = ClusterConfig {
            advertise_url: Some("10.0.0.5:8000".into()),
            ..ClusterConfig::default()
        };
        assert!(bad_url.check().is_err());
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
    fn the_hop_ca_file_is_read_from_the_environment() {
        use crate::{Config, Overrides};
        figment::Jail::expect_with(|jail| {
            let config = Config::load(None, &Overrides::default()).expect("loads");
            assert_eq!(config.cluster.tls_ca_file, None);
            jail.set_env("KILN_CLUSTER__TLS_CA_FILE", "/etc/kiln/nodes-ca.pem");
            jail.set_env("KILN_CLUSTER__ADVERTISE_URL", "https://10.0.0.5:8000");
            let config = Config::load(None, &Overrides::default()).expect("loads");
            assert_eq!(
                config.cluster.tls_ca_file.as_deref(),
                Some(std::path::Path::new("/etc/kiln/nodes-ca.pem"))
            );
            Ok(())
        });
    }
}

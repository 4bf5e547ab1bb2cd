//! `[network]`: what a session may reach outside its sandbox. By default nothing: a
//! sandbox's network namespace has only loopback. A sample (its record's
//! `network_allowlist`) or a whole dataset (`datasets` here) may name hosts; its sessions
//! then reach those, and only those, through the server's egress proxy (HTTP and HTTPS
//! proxies inside point at it), under the same rules as every request the server makes
//! for a user (no internal addresses unless allowed below).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Allowlists by dataset name, for every sample of it (a sample's own
    /// `network_allowlist` is added): entries `host`, `host:port`, `*.domain` or
    /// `*.domain:port`.
    pub datasets: BTreeMap<String, Vec<String>>,
    /// Internal hosts an allowlist may still reach (`host` or `host:port`, as
    /// `agent_jobs.allowed_internal_hosts`); empty by default: destinations that resolve
    /// to loopback, private or link-local addresses are refused whatever a list says.
    pub allowed_internal_hosts: Vec<String>,
}

impl NetworkConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        for (dataset, entries) in &self.datasets {
            if entries.iter().any(|e| e.trim().is_empty()) {
                return Err(ConfigError::Rule(format!(
                    "network.datasets.{dataset}: an entry is empty"
                )));
            }
        }
        Ok(())
    }
}

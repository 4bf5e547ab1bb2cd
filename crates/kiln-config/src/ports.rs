//! `[ports]`: port forwards into instances (`/v1/instances/{id}/port-forwards`).
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PortsConfig {
    /// Where `host_port` forwards listen. Only this address: the default keeps them on
    /// this machine; `0.0.0.0` exposes every forward to the network, unauthenticated.
    pub bind_address: IpAddr,
    /// First and last host port a `host_port` forward may take, e.g. `[20000, 20999]`;
    /// `[0, 0]` (the default): an ephemeral port the system picks.
    pub host_port_range: [u16; 2],
    /// Open forwards one instance may have.
    pub max_per_instance: usize,
    /// Open forwards one user may have, over all their instances.
    pub max_per_user: usize,
    /// Connections one forward carries at once (each holds a thread of the sandbox's
    /// agent, which serves 256); more wait to be accepted.
    pub max_connections_per_forward: usize,
    /// How long reaching the port inside may take before the caller gets a 502.
    pub connect_timeout_secs: u64,
    /// A forwarded connection with no byte either way for this long is closed.
    pub idle_timeout_secs: u64,
    /// Largest request body the HTTP path proxy (`/v1/instances/{id}/ports/{port}/…`)
    /// passes on, in bytes.
    pub max_proxy_body_bytes: u64,
}

impl Default for PortsConfig {
    fn default() -> Self {
        Self {
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            host_port_range: [0, 0],
            max_per_instance: 8,
            max_per_user: 32,
            max_connections_per_forward: 64,
            connect_timeout_secs: 10,
            idle_timeout_secs: 300,
            max_proxy_body_bytes: 64 * 1024 * 1024,
        }
    }
}

impl PortsConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let [first, last] = self.host_port_range;
        if (first == 0) != (last == 0) || first > last {
            return Err(ConfigError::Rule(
                "ports.host_port_range must be [0, 0] or [first, last] with 0 < first <= last"
                    .into(),
            ));
        }
        if self.max_connections_per_forward == 0 || self.max_connections_per_forward > 200 {
            return Err(ConfigError::Rule(
                "ports.max_connections_per_forward must be 1 to 200 (the agent serves 256 connections)"
                    .into(),
            ));
        }
        if self.connect_timeout_secs == 0 || self.idle_timeout_secs == 0 {
            return Err(ConfigError::Rule(
                "ports.connect_timeout_secs and ports.idle_timeout_secs must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
mod tests {
    use std::path::Path;

    use crate::{Config, Overrides};

    use super::*;

    #[test]
    fn defaults_pass_and_bad_ranges_and_caps_are_refused() {
        assert!(PortsConfig::default().check().is_ok());
        for bad in [
            PortsConfig {
                host_port_range: [2000, 0],
                ..PortsConfig::default()
            },
            PortsConfig {
                host_port_range: [3000, 2000],
                ..PortsConfig::default()
            },
            PortsConfig {
                max_connections_per_forward: 0,
                ..PortsConfig::default()
            },
            PortsConfig {
                idle_timeout_secs: 0,
                ..PortsConfig::default()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn read_from_the_file_and_checked_at_load() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "kiln.toml",
                "[ports]\nbind_address = \"0.0.0.0\"\nhost_port_range = [20000, 20099]\n",
            )?;
            let config =
                Config::load(Some(Path::new("kiln.toml")), &Overrides::default()).expect("loads");
            assert_eq!(config.ports.host_port_range, [20000, 20099]);
            assert_eq!(config.ports.bind_address.to_string(), "0.0.0.0");
            jail.create_file("bad.toml", "[ports]\nhost_port_range = [5, 1]\n")?;
            assert!(Config::load(Some(Path::new("bad.toml")), &Overrides::default()).is_err());
            Ok(())
        });
    }
}

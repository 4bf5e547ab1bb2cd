//! `[runtime]`: the sandbox backend and each sandbox's default limits.
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// `local` (sandboxes on this machine), `docker` (containers in a Docker engine,
    /// `[runtime.docker]`), `kubernetes` (a Pod per sandbox, `[runtime.kubernetes]`) or `none` (no sessions; datasets only).
    pub backend: RuntimeBackend,
    /// The static `kiln-agent` to put in sandboxes; by default the one built into `kiln`.
    pub agent_binary: Option<PathBuf>,
    /// Per-sandbox memory limit, in MiB.
    pub memory_mib: u64,
    /// Per-sandbox process limit.
    pub pids: u64,
    /// Per-sandbox CPU limit, in thousandths of a core.
    pub cpu_millicores: u32,
    /// Per-sandbox disk limit (its writable layer, `/tmp` included), in MiB; 0: none.
    pub disk_mib: u64,
    /// Memory of all sandboxes together (their parent cgroup's limit), in MiB; by
    /// default MemTotal minus an eighth (at least 1 GiB) for the host.
    pub memory_budget_mib: Option<u64>,
    /// Admission: a create is refused (503) when the sandboxes' memory limits would sum
    /// past the budget × this, or their disk limits past the usable disk × `disk_overcommit`.
    pub memory_overcommit: f64,
    pub disk_overcommit: f64,
    /// The largest disk a sample may ask for (its record's `disk_mib`, overriding
    /// `disk_mib` for its sessions), in MiB. A sample asking for more cannot be started.
    pub max_disk_mib: u64,
    /// Disks of `disk_mib` kept formatted and mounted ahead of creates, refilled in the
    /// background: a burst of more creates than this formats the rest inline (tens of
    /// milliseconds each). 0–256.
    pub disk_pool: usize,
    /// How the disk limit is enforced: `auto` (project quotas where the runtime root's
    /// filesystem has them on, else loop disks), `project_quota`, `loop_disk` or `none`.
    pub disk_limit_mode: crate::quota::DiskLimitMode,
    /// `[runtime.warm_pools]`, local backend: sandboxes kept started ahead per image
    /// reference (at most [`MAX_LOCAL_WARM_POOL`] each), so that a burst of creates of that
    /// image takes them instead of starting its own. Filled after the image's first create;
    /// a create takes one when it asks for what they were started with (the server's
    /// default limits, no network allowlist). Each costs ≈ 1 MiB of memory while idle,
    /// and none of the memory budget until taken. (Kubernetes has its own, in
    /// `[runtime.kubernetes]`.)
    pub warm_pools: BTreeMap<String, usize>,
    /// Local backend: before its first sandbox starts, set the kernel's `favordynmods` on
    /// the host's cgroup2 mount (Linux ≥ 6.0), so that moving a sandbox into its cgroup
    /// does not wait for an RCU grace period (≈ 6 ms of each start on an idle host). A
    /// host-wide setting (forks and exits take a slightly slower path), which some
    /// kernels keep until reboot; `false` leaves the host as it is.
    pub cgroup_favordynmods: bool,
    /// `[runtime.docker]`: the Docker backend's engine and agent connection.
    pub docker: crate::docker::DockerConfig,
    /// `[runtime.kubernetes]`: the Kubernetes backend's cluster, namespace and Pods.
    pub kubernetes: crate::kubernetes::KubernetesConfig,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeBackend {
    Local,
    Docker,
    Kubernetes,
    None,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            backend: RuntimeBackend::Local,
            agent_binary: None,
            memory_mib: 2048,
            pids: 512,
            cpu_millicores: 1000,
            disk_mib: 10 * 1024,
            memory_budget_mib: None,
            memory_overcommit: 10.0,
            disk_overcommit: 20.0,
            max_disk_mib: 100 * 1024,
            disk_pool: 4,
            disk_limit_mode: crate::quota::DiskLimitMode::Auto,
            warm_pools: BTreeMap::new(),
            cgroup_favordynmods: true,
            docker: crate::docker::DockerConfig::default(),
            kubernetes: crate::kubernetes::KubernetesConfig::default(),
        }
    }
}

impl RuntimeConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let positive = |x: f64| x > 0.0 && x.is_finite();
        if !positive(self.memory_overcommit) || !positive(self.disk_overcommit) {
            return Err(ConfigError::Rule(
                "runtime.memory_overcommit and disk_overcommit must be positive numbers".into(),
            ));
        }
        if self.disk_pool > 256 {
            return Err(ConfigError::Rule(
                "runtime.disk_pool must be at most 256".into(),
            ));
        }
        if self
            .warm_pools
            .iter()
            .any(|(image, &n)| image.is_empty() || n > MAX_LOCAL_WARM_POOL)
        {
            return Err(ConfigError::Rule(format!(
                "runtime.warm_pools: image references must be set, sizes 0-{MAX_LOCAL_WARM_POOL}"
            )));
        }
        self.docker.check()?;
        self.kubernetes.check()
    }
}

/// The most warm sandboxes one image may keep (`runtime.warm_pools`).
pub const MAX_LOCAL_WARM_POOL: usize = 1024;

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
mod tests {
    use crate::{Config, Overrides};

    #[test]
    fn the_disk_pool_reads_the_environment_and_is_bounded() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load(None, &Overrides::default()).expect("loads");
            assert_eq!(config.runtime.disk_pool, 4);
            jail.set_env("KILN_RUNTIME__DISK_POOL", "32");
            let config = Config::load(None, &Overrides::default()).expect("loads");
            assert_eq!(config.runtime.disk_pool, 32);
            jail.set_env("KILN_RUNTIME__DISK_POOL", "257");
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("disk_pool"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn warm_pools_are_read_from_the_file_and_bounded() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "kiln.toml",
                "[runtime.warm_pools]\n\"kiln-demo/sample/x:1\" = 100\n",
            )?;
            let file = std::path::Path::new("kiln.toml");
            let config = Config::load(Some(file), &Overrides::default()).expect("loads");
            assert_eq!(
                config.runtime.warm_pools.get("kiln-demo/sample/x:1"),
                Some(&100)
            );
            jail.create_file("kiln.toml", "[runtime.warm_pools]\n\"x:1\" = 1025\n")?;
            let err = Config::load(Some(file), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("warm_pools"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_disk_limit_mode_defaults_to_auto_and_reads_the_environment() {
        use crate::DiskLimitMode;
        figment::Jail::expect_with(|jail| {
            let config = Config::load(None, &Overrides::default()).expect("loads");
            assert_eq!(config.runtime.disk_limit_mode, DiskLimitMode::Auto);
            jail.set_env("KILN_RUNTIME__DISK_LIMIT_MODE", "project_quota");
            let config = Config::load(None, &Overrides::default()).expect("loads");
            assert_eq!(config.runtime.disk_limit_mode, DiskLimitMode::ProjectQuota);
            jail.set_env("KILN_RUNTIME__DISK_LIMIT_MODE", "xfs");
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("project_quota"), "{err}");
            Ok(())
        });
    }
}

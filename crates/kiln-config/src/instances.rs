//! `[instances]`: what a caller may attach to an instance (`/v1/instances`) and how much of
//! the server one instance may ask for.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct InstancesConfig {
    /// Longest instance name, in characters.
    pub max_name_chars: usize,
    /// Labels one instance may carry.
    pub max_labels: usize,
    /// Longest label key, in characters (`[A-Za-z0-9._/-]`, starting with a letter or digit).
    pub max_label_key_chars: usize,
    /// Longest label value, in characters (any printable characters).
    pub max_label_value_chars: usize,
    /// The most memory one instance may ask for (`resources.memory_mib`); the disk is
    /// bounded by `runtime.max_disk_mib`.
    pub max_memory_mib: u64,
    /// The most CPU one instance may ask for (`resources.cpu`), in thousandths of a core.
    pub max_cpu_millicores: u64,
}

impl Default for InstancesConfig {
    fn default() -> Self {
        Self {
            max_name_chars: 128,
            max_labels: 32,
            max_label_key_chars: 63,
            max_label_value_chars: 256,
            max_memory_mib: 16 * 1024,
            max_cpu_millicores: 8000,
        }
    }
}

//! `[snapshots]`: snapshots, checkpoints and forks of instances (`/v1`).
use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotsConfig {
    /// Most snapshots and checkpoints one user may keep (deleted ones do not count).
    pub max_per_user: u32,
    /// Most bytes one user's snapshots may hold together (their own changes, not the
    /// image below them).
    pub max_bytes_per_user: u64,
    /// Most copies one `POST /v1/instances/{id}/fork` may ask for.
    pub max_fork_count: u32,
    /// How often snapshots that were deleted are removed from the runtime once nothing
    /// refers to them any more (it also runs when one is deleted and when an instance
    /// ends), in seconds.
    pub gc_interval_secs: u64,
}

impl Default for SnapshotsConfig {
    fn default() -> Self {
        Self {
            max_per_user: 100,
            max_bytes_per_user: 20 * 1024 * 1024 * 1024,
            max_fork_count: 100,
            gc_interval_secs: 60,
        }
    }
}

impl SnapshotsConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if !(1..=1000).contains(&self.max_fork_count) {
            return Err(ConfigError::Rule(
                "snapshots.max_fork_count must be between 1 and 1000".into(),
            ));
        }
        if self.gc_interval_secs == 0 {
            return Err(ConfigError::Rule(
                "snapshots.gc_interval_secs must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

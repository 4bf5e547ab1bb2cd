//! `runtime.disk_limit_mode`: how the local backend enforces a sandbox's disk limit.
use serde::{Deserialize, Serialize};

/// How each sandbox's writable layer is held to its disk limit (local backend).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DiskLimitMode {
    /// Project quotas where the runtime root's filesystem has them on, else loop disks.
    #[default]
    Auto,
    /// A project quota per sandbox (XFS with `prjquota`, ext4 with `quota,project` and
    /// `prjquota`); the server refuses to start where they are not on.
    ProjectQuota,
    /// A size-limited ext4 image per sandbox, kept formatted ahead in a pool.
    LoopDisk,
    /// Not enforced (limits still count for admission).
    None,
}

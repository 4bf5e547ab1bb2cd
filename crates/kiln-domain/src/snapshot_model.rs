//! Records of snapshots and checkpoints of instances (`/v1`), and which snapshot an
//! instance was started from (so a snapshot is never removed while something stands on it).
use chrono::{DateTime, Utc};

/// A snapshot a user asked for, or a checkpoint (what `rollback` goes back to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotKind {
    Snapshot,
    Checkpoint,
}

impl SnapshotKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::Snapshot => "snapshot",
            SnapshotKind::Checkpoint => "checkpoint",
        }
    }

    pub fn parse(kind: &str) -> Option<Self> {
        match kind {
            "snapshot" => Some(SnapshotKind::Snapshot),
            "checkpoint" => Some(SnapshotKind::Checkpoint),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSnapshot {
    pub snapshot_id: String,
    pub user_id: String,
    /// The instance (session) it was taken of.
    pub instance_id: String,
    /// The snapshot that instance was started (forked or restored) from, if any: this one
    /// is stacked on it, so it must outlive this one.
    pub parent_snapshot_id: Option<String>,
    /// Unique among the instance's snapshots that are not deleted.
    pub name: String,
    pub kind: SnapshotKind,
    pub size_bytes: u64,
    /// What the runtime calls it (`SnapshotId`).
    pub runtime_ref: String,
    pub created_at: DateTime<Utc>,
    /// Stored already deleted (hidden, outside the quota, collected once nothing stands
    /// on it).
    pub deleted: bool,
}

/// A stored snapshot. Deleted ones (`deleted_at`) are hidden from their owner but kept in
/// the runtime until nothing refers to them; `purged_at` says they are gone from it too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub snapshot_id: String,
    pub user_id: String,
    pub instance_id: String,
    pub parent_snapshot_id: Option<String>,
    pub name: String,
    pub kind: SnapshotKind,
    pub size_bytes: u64,
    pub runtime_ref: String,
    pub created_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub purged_at: Option<DateTime<Utc>>,
}

/// What a user's snapshots hold against the quota: the ones not deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotUsage {
    pub count: u64,
    pub bytes: u64,
}

/// The quota an insert is checked against, in the same transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotQuota {
    pub max_count: u64,
    pub max_bytes: u64,
}

/// How an insert under a quota went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotInsert {
    Inserted(SnapshotRecord),
    /// The user's snapshots already hold this much; nothing was stored.
    OverQuota(SnapshotUsage),
}

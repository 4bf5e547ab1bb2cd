//! Shapes of the snapshot, rollback and fork routes.
use chrono::{DateTime, Utc};
use kiln_domain::{SessionRecord, SnapshotKind, SnapshotRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::models::rfc3339;
use crate::routes::sessions_models::SessionStatusView;

/// What a snapshot is for.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Default)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKindView {
    /// Kept until deleted; restorable into its instance or a new one.
    #[default]
    Snapshot,
    /// The same, and what `POST /instances/{id}/rollback` goes back to.
    Checkpoint,
}

impl From<SnapshotKindView> for SnapshotKind {
    fn from(kind: SnapshotKindView) -> Self {
        match kind {
            SnapshotKindView::Snapshot => SnapshotKind::Snapshot,
            SnapshotKindView::Checkpoint => SnapshotKind::Checkpoint,
        }
    }
}

impl From<SnapshotKind> for SnapshotKindView {
    fn from(kind: SnapshotKind) -> Self {
        match kind {
            SnapshotKind::Snapshot => SnapshotKindView::Snapshot,
            SnapshotKind::Checkpoint => SnapshotKindView::Checkpoint,
        }
    }
}

/// Take a snapshot (or a checkpoint) of a ready instance's files.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreateRequest {
    /// Unique among the instance's snapshots; 1 to 128 characters from `A-Za-z0-9-_.`.
    /// Default: the snapshot's id.
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]+$")]
    pub name: Option<String>,
    #[serde(default)]
    pub kind: SnapshotKindView,
}

/// A snapshot of an instance.
#[derive(Serialize, ToSchema)]
pub struct SnapshotView {
    pub snapshot_id: String,
    /// The instance it was taken of.
    pub instance_id: String,
    pub name: String,
    pub kind: SnapshotKindView,
    /// What it holds of its own (the instance's changes, not the image), in bytes.
    pub size_bytes: u64,
    /// The snapshot its instance was forked or restored from, if any.
    pub parent_snapshot_id: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
}

impl From<SnapshotRecord> for SnapshotView {
    fn from(s: SnapshotRecord) -> Self {
        Self {
            snapshot_id: s.snapshot_id,
            instance_id: s.instance_id,
            name: s.name,
            kind: s.kind.into(),
            size_bytes: s.size_bytes,
            parent_snapshot_id: s.parent_snapshot_id,
            created_at: s.created_at,
        }
    }
}

/// An instance's snapshots that are not deleted, newest first.
#[derive(Serialize, ToSchema)]
pub struct SnapshotListResponse {
    pub snapshots: Vec<SnapshotView>,
}

/// What a delete did.
#[derive(Serialize, ToSchema)]
pub struct SnapshotDeleteResponse {
    pub snapshot_id: String,
    /// `true`: its files are gone from the server too. `false`: instances or snapshots
    /// still stand on it; they are removed once nothing does.
    pub removed: bool,
}

/// Where to restore a snapshot.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// `true`: into a new instance (201, `creating`). `false` (default): into this
    /// instance, whose sandbox is replaced (files as in the snapshot; running processes
    /// are not kept).
    #[serde(default)]
    pub new_instance: bool,
}

/// Go back to a checkpoint.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The checkpoint's name; default: the latest checkpoint.
    pub checkpoint: Option<String>,
}

/// Copies of an instance.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkRequest {
    /// How many copies, 1 to `snapshots.max_fork_count` (100 by default).
    #[schema(minimum = 1)]
    pub count: i64,
}

/// An instance a fork or a restore made, or restored into.
#[derive(Serialize, ToSchema)]
pub struct InstanceRef {
    pub instance_id: String,
    pub status: SessionStatusView,
    #[serde(serialize_with = "rfc3339")]
    pub expires_at: DateTime<Utc>,
}

impl From<SessionRecord> for InstanceRef {
    fn from(s: SessionRecord) -> Self {
        Self {
            instance_id: s.session_id,
            status: s.status.into(),
            expires_at: s.expires_at,
        }
    }
}

/// The copies, `creating`; GET each (it long-polls) to wait until it is ready.
#[derive(Serialize, ToSchema)]
pub struct ForkResponse {
    /// The copies, in no particular order.
    pub instances: Vec<InstanceRef>,
}

/// A restore's or rollback's outcome.
#[derive(Serialize, ToSchema)]
pub struct RestoreResponse {
    pub snapshot_id: String,
    /// Where the snapshot now runs.
    pub instance: InstanceRef,
    pub new_instance: bool,
}

//! Records of base images: numbered versions of a family (`python`), each an image in
//! the server's image store under [`BaseImageRecord::reference`].
use chrono::{DateTime, Utc};

/// Where a version is in its pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BaseImageStatus {
    /// Being pulled, imported or copied in the background.
    Preparing,
    /// In the store, ready to be promoted.
    Prepared,
    /// Was made current once (it may not be current any more after a rollback).
    Promoted,
    /// Stopped or discarded by an admin; its image is removed.
    Aborted,
    /// Preparing it failed (`error` says why).
    Failed,
}

impl BaseImageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Preparing => "preparing",
            Self::Prepared => "prepared",
            Self::Promoted => "promoted",
            Self::Aborted => "aborted",
            Self::Failed => "failed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "preparing" => Some(Self::Preparing),
            "prepared" => Some(Self::Prepared),
            "promoted" => Some(Self::Promoted),
            "aborted" => Some(Self::Aborted),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// A version to record, in `preparing`; the store numbers it (one more than the last
/// number its family gave: numbers are never reused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBaseImage {
    pub image_id: String,
    pub family: String,
    /// What it is made from, for people (`pull:…`, `import:…`, `from:…`).
    pub source: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// The node whose process prepares it (`None` without a node of its own).
    pub node_id: Option<String>,
}

/// How far a preparation got (layers and compressed bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BaseImageProgress {
    pub layers_done: u64,
    pub layers_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// How a preparation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseImageOutcome {
    Prepared { size_bytes: u64, digest: String },
    Failed { error: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseImageRecord {
    pub image_id: String,
    pub family: String,
    pub version: u64,
    pub status: BaseImageStatus,
    pub source: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub progress: BaseImageProgress,
    pub size_bytes: Option<u64>,
    /// The manifest digest, once prepared.
    pub digest: Option<String>,
    pub error: Option<String>,
    pub promoted_at: Option<DateTime<Utc>>,
    /// The family's current version.
    pub current: bool,
    /// The node that prepares (or prepared) it: only that node's restart, or its loss,
    /// fails a preparation.
    pub node_id: Option<String>,
}

impl BaseImageRecord {
    /// The image store reference of this version.
    pub fn reference(&self) -> String {
        base_image_reference(&self.family, self.version)
    }
}

/// `base/<family>:<version>`: where a family's version lives in the image store.
pub fn base_image_reference(family: &str, version: u64) -> String {
    format!("base/{family}:{version}")
}

/// Limits checked when a version is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseImageLimits {
    pub max_versions_per_family: u64,
    /// Over all families.
    pub max_preparing: u64,
}

/// What recording a new version did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseImageInsert {
    Inserted(Box<BaseImageRecord>),
    TooManyVersions,
    TooManyPreparing,
}

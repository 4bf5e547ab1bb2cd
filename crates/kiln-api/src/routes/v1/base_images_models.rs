//! Shapes of the base image routes.
use chrono::{DateTime, Utc};
use kiln_domain::{BaseImageRecord, BaseImageStatus};
use kiln_services::base_images::BaseImageSource;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::models::{rfc3339, rfc3339_opt};

/// Where a version is in its pipeline.
#[derive(Serialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum BaseImageStatusView {
    Preparing,
    Prepared,
    Promoted,
    Aborted,
    Failed,
}

impl From<BaseImageStatus> for BaseImageStatusView {
    fn from(status: BaseImageStatus) -> Self {
        match status {
            BaseImageStatus::Preparing => Self::Preparing,
            BaseImageStatus::Prepared => Self::Prepared,
            BaseImageStatus::Promoted => Self::Promoted,
            BaseImageStatus::Aborted => Self::Aborted,
            BaseImageStatus::Failed => Self::Failed,
        }
    }
}

/// How far a preparation got: layers stored, and (pulls) compressed bytes received.
#[derive(Serialize, ToSchema)]
pub struct BaseImageProgressView {
    pub layers_done: u64,
    pub layers_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// One version of a base image family.
#[derive(Serialize, ToSchema)]
pub struct BaseImageView {
    pub id: String,
    pub family: String,
    pub version: u64,
    /// Where it is in the server's image store (`base/<family>:<version>`).
    pub reference: String,
    pub status: BaseImageStatusView,
    /// Whether it is its family's current version.
    pub current: bool,
    /// What it was made from (`pull:…`, `import:…`, `from:…`).
    pub source: String,
    /// The admin who prepared it.
    pub created_by: String,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub promoted_at: Option<DateTime<Utc>>,
    pub progress: BaseImageProgressView,
    /// Compressed size of its layers, once prepared.
    pub size_bytes: Option<u64>,
    /// Manifest digest, once prepared.
    pub digest: Option<String>,
    /// Why preparing it failed.
    pub error: Option<String>,
}

impl From<BaseImageRecord> for BaseImageView {
    fn from(r: BaseImageRecord) -> Self {
        Self {
            reference: r.reference(),
            id: r.image_id,
            family: r.family,
            version: r.version,
            status: r.status.into(),
            current: r.current,
            source: r.source,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
            promoted_at: r.promoted_at,
            progress: BaseImageProgressView {
                layers_done: r.progress.layers_done,
                layers_total: r.progress.layers_total,
                bytes_done: r.progress.bytes_done,
                bytes_total: r.progress.bytes_total,
            },
            size_bytes: r.size_bytes,
            digest: r.digest,
            error: r.error,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct BaseImageList {
    pub base_images: Vec<BaseImageView>,
    /// Pass as `cursor` for the next page; absent on the last one (and on a family's
    /// versions, which are one page).
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BaseImageListParams {
    /// Versions per page, 1–100 (default 100).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page. A cursor this server did not give out is a 422.
    #[param(max_length = 256)]
    pub cursor: Option<String>,
}

/// What a new version is made from: exactly one of the three.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceRequest {
    /// A registry reference; the registry must be in `base_images.allowed_registries`.
    Pull(String),
    /// A path (absolute, or relative to `base_images.import_dir`) of an OCI layout or an
    /// OCI / `docker save` tar inside that directory.
    Import(String),
    /// An image already in the server's image store.
    From(String),
}

impl From<SourceRequest> for BaseImageSource {
    fn from(source: SourceRequest) -> Self {
        match source {
            SourceRequest::Pull(r) => Self::Pull(r),
            SourceRequest::Import(p) => Self::Import(p),
            SourceRequest::From(r) => Self::From(r),
        }
    }
}

/// Prepare a new version of a family in the background.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrepareRequest {
    /// 1 to 64 lowercase letters, digits, `-`, `_`, `.`; begins and ends with a letter or digit.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$"
    )]
    pub family: String,
    pub source: SourceRequest,
}

/// A version, by id.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BaseImageIdRequest {
    pub id: String,
}

#[derive(Serialize, ToSchema)]
pub struct BaseImageDeleteResponse {
    pub id: String,
    pub deleted: bool,
}

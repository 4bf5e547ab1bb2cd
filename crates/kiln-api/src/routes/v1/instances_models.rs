//! Request and response shapes of `/v1/instances`.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kiln_domain::{SessionRecord, SessionSource};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::models::{rfc3339, rfc3339_opt, ErrorInfo};
use crate::routes::sessions_models::{SessionResources, SessionStatusView};

/// Resources asked for an instance; each one left out is the server's default. Each must be
/// within the server's maximum (`instances.max_cpu_millicores`, `instances.max_memory_mib`,
/// `runtime.max_disk_mib`).
#[derive(Deserialize, ToSchema, Debug, Clone, Copy, Default)]
#[serde(deny_unknown_fields)]
pub struct ResourcesRequest {
    /// Cores (0.5 is half a core; thousandths at most).
    #[schema(minimum = 0.001)]
    pub cpu: Option<f64>,
    #[schema(minimum = 1)]
    pub memory_mib: Option<u64>,
    /// Size of the instance's writable disk.
    #[schema(minimum = 1)]
    pub disk_mib: Option<u64>,
}

/// A new instance, from an image in the server's image store (`image`) or from a dataset's
/// sample (`dataset` and `sample_id`): exactly one of the two.
#[derive(Deserialize, ToSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct InstanceCreateRequest {
    /// An image reference as `kiln images list` shows it, e.g. `kiln-demo/python:1`.
    pub image: Option<String>,
    /// A base image family (`/v1/base-images`): the instance runs on its current version.
    /// Instead of `image`.
    pub base_image: Option<String>,
    pub dataset: Option<String>,
    pub sample_id: Option<String>,
    /// Up to `instances.max_name_chars` (128) characters.
    pub name: Option<String>,
    /// Up to `instances.max_labels` (32); keys `[A-Za-z0-9][A-Za-z0-9._/-]*` up to 63
    /// characters, values up to 256 printable characters.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Minutes until the instance is terminated (default `sessions.default_ttl_minutes`).
    #[schema(minimum = 1)]
    pub ttl_minutes: Option<i64>,
    pub resources: Option<ResourcesRequest>,
}

/// A change to an instance; what is left out stays.
#[derive(Deserialize, ToSchema, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct InstanceUpdateRequest {
    /// A new name; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    /// Replaces every label.
    pub labels: Option<BTreeMap<String, String>>,
    /// The instance's whole lifetime, in minutes from its creation (longer or shorter
    /// than now, up to `sessions.max_ttl_minutes`).
    #[schema(minimum = 1)]
    pub ttl_minutes: Option<i64>,
    /// Refused (409 `resources_fixed`): this backend cannot resize a running sandbox.
    pub resources: Option<ResourcesRequest>,
}

/// `Some(None)` for an explicit `null`, `None` (by `default`) when the field is absent.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InstanceGetParams {
    /// While the instance is `creating`, wait (up to `sessions.long_poll_secs`) and answer
    /// the moment it is `ready` or `error`.
    pub wait: Option<bool>,
}

/// Documentation of the listing's query (the handler reads repeated keys itself).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct InstanceListParams {
    /// Instances per page (default 20, at most 100).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// How many to skip (newest first). Not with `cursor`.
    #[param(minimum = 0)]
    pub offset: Option<i64>,
    /// `next_cursor` of the previous page: the page after it, stable while instances are
    /// created (keyset paging). A cursor this server did not give out is a 422.
    #[param(max_length = 256)]
    pub cursor: Option<String>,
    /// Only these statuses (repeat, or separate with commas).
    pub status: Option<Vec<SessionStatusView>>,
    /// `key:value`; repeat for several (all must match).
    pub label: Option<Vec<String>>,
    /// Text to find, ignoring case and taken literally (`%` and `_` are no wildcards), in
    /// the id, name, dataset, sample id, image or a label's value. Empty is no filter.
    #[param(max_length = 200)]
    pub q: Option<String>,
}

/// Where an instance comes from.
#[derive(Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InstanceSourceView {
    Image {
        image: String,
    },
    Sample {
        dataset: String,
        sample_id: String,
        version: i64,
    },
}

/// The limits an instance's sandbox was given (`null`: none, or not recorded).
#[derive(Serialize, ToSchema)]
pub struct InstanceResources {
    pub cpu: Option<f64>,
    pub memory_mib: Option<u64>,
    pub disk_mib: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct InstanceView {
    pub id: String,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub status: SessionStatusView,
    pub source: InstanceSourceView,
    pub resources: InstanceResources,
    /// What its sandbox used, as last sampled.
    pub usage: Option<SessionResources>,
    /// Where its sandbox runs, e.g. `local:<hostname>`.
    pub location: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub ready_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339")]
    pub expires_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub ended_at: Option<DateTime<Utc>>,
    pub error: Option<ErrorInfo>,
}

impl From<SessionRecord> for InstanceView {
    fn from(s: SessionRecord) -> Self {
        let source = match s.source {
            SessionSource::Image { reference } => InstanceSourceView::Image { image: reference },
            SessionSource::Sample {
                dataset,
                sample_id,
                version,
            } => InstanceSourceView::Sample {
                dataset,
                sample_id,
                version,
            },
        };
        let error = s.error_code.map(|code| ErrorInfo {
            code,
            message: s.error_message.unwrap_or_default(),
        });
        Self {
            id: s.session_id,
            name: s.name,
            labels: s.labels,
            status: s.status.into(),
            source,
            resources: InstanceResources {
                cpu: s.limits.cpu_millicores.map(|m| m as f64 / 1000.0),
                memory_mib: s.limits.memory_bytes.map(|b| b >> 20),
                disk_mib: s.limits.disk_bytes.map(|b| b >> 20),
            },
            usage: s.usage.map(SessionResources::from),
            location: s.location,
            created_at: s.requested_at,
            ready_at: s.ready_at,
            expires_at: s.expires_at,
            ended_at: s.ended_at,
            error,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct InstanceListResponse {
    pub instances: Vec<InstanceView>,
    /// Instances that match, over all pages.
    pub total: u64,
    pub limit: u64,
    pub offset: u64,
    pub has_more: bool,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

/// An instance's usage over time, sampled from its sandbox (cgroup, or the engine) at the
/// heartbeat's pace and kept in memory on the node that runs it (the last 240 samples;
/// none once it has ended or after a restart).
#[derive(Serialize, ToSchema)]
pub struct InstanceMetricsView {
    pub instance_id: String,
    /// Whether the instance is live (only a live instance has samples).
    pub live: bool,
    /// Seconds between two samples.
    pub interval_seconds: u64,
    /// Oldest first. `cpu_seconds` is cumulative (its slope is the CPU use),
    /// `memory_peak_bytes` the highest so far, `pids_peak` the processes at that sample.
    pub samples: Vec<SessionResources>,
}

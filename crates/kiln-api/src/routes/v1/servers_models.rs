//! Shapes of the node registry's admin routes (`/v1/admin/servers`).
use chrono::{DateTime, Utc};
use kiln_domain::{NodeRecord, NodeStatus};
use kiln_services::cluster::NodeMetrics;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::models::{rfc3339, rfc3339_opt};

/// Whether a server takes new sessions.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum ServerStatusView {
    Active,
    Draining,
    Down,
}

impl From<NodeStatus> for ServerStatusView {
    fn from(status: NodeStatus) -> Self {
        match status {
            NodeStatus::Active => Self::Active,
            NodeStatus::Draining => Self::Draining,
            NodeStatus::Down => Self::Down,
        }
    }
}

impl From<ServerStatusView> for NodeStatus {
    fn from(status: ServerStatusView) -> Self {
        match status {
            ServerStatusView::Active => Self::Active,
            ServerStatusView::Draining => Self::Draining,
            ServerStatusView::Down => Self::Down,
        }
    }
}

/// What a server offers.
#[derive(Serialize, ToSchema)]
pub struct ServerCapacityView {
    pub sessions: u64,
    /// The memory budget its sandboxes share (0: not configured).
    pub memory_mib: u64,
    /// The largest disk one sandbox may have.
    pub disk_mib: u64,
}

/// One node: a `kiln serve` on this database.
#[derive(Serialize, ToSchema)]
pub struct ServerView {
    pub id: String,
    /// Where the other servers reach it.
    pub address: String,
    /// Its sandbox backend (`local`, `docker`).
    pub backend: String,
    pub version: String,
    pub status: ServerStatusView,
    pub capacity: ServerCapacityView,
    /// Live sessions at its last heartbeat.
    pub live_sessions: u64,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub registered_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub last_heartbeat_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub down_at: Option<DateTime<Utc>>,
}

impl From<NodeRecord> for ServerView {
    fn from(node: NodeRecord) -> Self {
        Self {
            id: node.node_id,
            address: node.address,
            backend: node.backend,
            version: node.version,
            status: node.status.into(),
            capacity: ServerCapacityView {
                sessions: node.max_sessions,
                memory_mib: node.memory_mib,
                disk_mib: node.disk_mib,
            },
            live_sessions: node.live_sessions,
            registered_at: node.registered_at,
            last_heartbeat_at: node.last_heartbeat_at,
            down_at: node.down_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ServerList {
    pub servers: Vec<ServerView>,
}

/// `PATCH /admin/servers/{id}/status`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerStatusRequest {
    pub status: ServerStatusView,
}

/// A server's figures as of its last heartbeat.
#[derive(Serialize, ToSchema)]
pub struct ServerMetricsView {
    pub id: String,
    pub status: ServerStatusView,
    pub live_sessions: u64,
    pub max_sessions: u64,
    pub free_sessions: u64,
    /// Milliseconds since its last heartbeat.
    pub heartbeat_age_ms: i64,
}

impl From<NodeMetrics> for ServerMetricsView {
    fn from(m: NodeMetrics) -> Self {
        Self {
            id: m.node.node_id,
            status: m.node.status.into(),
            live_sessions: m.node.live_sessions,
            max_sessions: m.node.max_sessions,
            free_sessions: m.free_sessions,
            heartbeat_age_ms: m.heartbeat_age_ms,
        }
    }
}

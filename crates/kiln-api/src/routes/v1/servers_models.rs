//! Shapes of the node registry's admin routes (`/v1/admin/servers`).
use chrono::{DateTime, Utc};
use kiln_domain::{Latency, NodeRecord, NodeStatus};
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
    /// The CPUs it runs on, as its last heartbeat reported (0: none reported yet).
    pub cpus: u64,
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
    /// Images it started sandboxes from lately, newest first, then others it has (at most
    /// 32), as of its last heartbeat: placement prefers a server that has the image.
    pub images: Vec<String>,
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
                cpus: node.stats.cpus,
                memory_mib: node.memory_mib,
                disk_mib: node.disk_mib,
            },
            live_sessions: node.live_sessions,
            registered_at: node.registered_at,
            last_heartbeat_at: node.last_heartbeat_at,
            down_at: node.down_at,
            images: node.images,
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

/// A resource of a server's sandboxes: in use (as last sampled), held as limits, and the
/// budget the limits are admitted against (0: none configured).
#[derive(Serialize, ToSchema)]
pub struct ServerResourceView {
    pub used_bytes: u64,
    pub reserved_bytes: u64,
    pub budget_bytes: u64,
}

/// Percentiles of a server's recent durations (its last 1,024), in milliseconds.
#[derive(Serialize, ToSchema)]
pub struct LatencyView {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

impl From<Latency> for LatencyView {
    fn from(l: Latency) -> Self {
        // Microseconds of recent commands: exact in f64.
        #[allow(clippy::cast_precision_loss)]
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: l.count,
            p50_ms: ms(l.p50_us),
            p90_ms: ms(l.p90_us),
            p99_ms: ms(l.p99_us),
        }
    }
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
    /// CPU its live sandboxes used between their last two usage samples, in cores (null
    /// before there are two).
    pub cpu_cores: Option<f64>,
    pub memory: ServerResourceView,
    pub disk: ServerResourceView,
    /// Processes and threads in its sandboxes, as last sampled.
    pub pids: u64,
    /// Sandbox creates: from asking the backend to the agent answering (null: none yet).
    pub create_latency: Option<LatencyView>,
    /// Commands run through it (the Codeset API's and `/v1` execs), the command's own
    /// time included (null: none yet).
    pub exec_latency: Option<LatencyView>,
}

impl From<NodeMetrics> for ServerMetricsView {
    fn from(m: NodeMetrics) -> Self {
        let stats = m.node.stats;
        // Thousandths of a core: exact in f64.
        #[allow(clippy::cast_precision_loss)]
        let cores = stats.sandbox_cpu_millicores.map(|m| m as f64 / 1000.0);
        Self {
            id: m.node.node_id,
            status: m.node.status.into(),
            live_sessions: m.node.live_sessions,
            max_sessions: m.node.max_sessions,
            free_sessions: m.free_sessions,
            heartbeat_age_ms: m.heartbeat_age_ms,
            cpu_cores: cores,
            memory: ServerResourceView {
                used_bytes: stats.memory_used_bytes,
                reserved_bytes: stats.memory_reserved_bytes,
                budget_bytes: stats.memory_budget_bytes,
            },
            disk: ServerResourceView {
                used_bytes: stats.disk_used_bytes,
                reserved_bytes: stats.disk_reserved_bytes,
                budget_bytes: stats.disk_budget_bytes,
            },
            pids: stats.pids,
            create_latency: stats.create_latency.map(LatencyView::from),
            exec_latency: stats.exec_latency.map(LatencyView::from),
        }
    }
}

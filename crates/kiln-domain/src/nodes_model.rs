//! The node registry (issue 12): every `kiln serve` on PostgreSQL is a row that it
//! heartbeats; one that stops heartbeating is marked `down` by another node.
use chrono::{DateTime, Utc};

/// Whether a node takes new sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeStatus {
    /// Heartbeating and taking new sessions.
    Active,
    /// Heartbeating, keeping its sessions, taking no new ones.
    Draining,
    /// Missed its heartbeats (or was set down): its sessions ended `node_lost`.
    Down,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Draining => "draining",
            Self::Down => "down",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "active" => Some(Self::Active),
            "draining" => Some(Self::Draining),
            "down" => Some(Self::Down),
            _ => None,
        }
    }
}

/// What a node says of itself when it registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRegistration {
    pub node_id: String,
    /// Where other nodes reach it (`http://10.0.0.5:8000`).
    pub address: String,
    /// The sandbox backend (`local`, `docker`, …).
    pub backend: String,
    pub version: String,
    pub max_sessions: u64,
    pub memory_mib: u64,
    pub disk_mib: u64,
}

/// A node as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub node_id: String,
    pub address: String,
    pub backend: String,
    pub version: String,
    pub status: NodeStatus,
    pub max_sessions: u64,
    pub memory_mib: u64,
    pub disk_mib: u64,
    /// Live sessions at its last heartbeat.
    pub live_sessions: u64,
    pub registered_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    /// When it was last marked down.
    pub down_at: Option<DateTime<Utc>>,
    /// Image references it started sandboxes from lately, newest first (at most
    /// [`MAX_NODE_IMAGES`]), as of its last heartbeat: placement prefers a node that
    /// has the new session's image.
    pub images: Vec<String>,
}

/// How many image references a node's row carries.
pub const MAX_NODE_IMAGES: usize = 32;

impl NodeRecord {
    /// Sessions it can still take, by its last heartbeat.
    pub fn free_sessions(&self) -> u64 {
        self.max_sessions.saturating_sub(self.live_sessions)
    }
}

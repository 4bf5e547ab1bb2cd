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
    /// What it measured of itself, as of its last heartbeat.
    pub stats: NodeStats,
}

/// What a node reports with each heartbeat besides being alive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeBeat {
    /// Its live sessions.
    pub live_sessions: u64,
    /// Image references it started sandboxes from lately, newest first.
    pub images: Vec<String>,
    pub stats: NodeStats,
}

/// A node's own figures (`GET /v1/admin/servers/{id}/metrics`): its sandboxes' resources
/// as last sampled, the limits they hold against its budgets, and the latency of its
/// recent creates and commands. Zero or `None` where it has nothing to say (no sample
/// yet, a backend without budgets).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct NodeStats {
    /// The CPUs its process may run on (its capacity in cores; 0: not reported).
    pub cpus: u64,
    /// CPU its live sandboxes used between their last two samples, in thousandths of a
    /// core.
    pub sandbox_cpu_millicores: Option<u64>,
    /// Sum of the live sandboxes' memory peaks, as last sampled.
    pub memory_used_bytes: u64,
    /// Memory limits its sandboxes hold, and the budget they share.
    pub memory_reserved_bytes: u64,
    pub memory_budget_bytes: u64,
    /// Disk in use by the live sandboxes, as last sampled.
    pub disk_used_bytes: u64,
    /// Disk limits its sandboxes hold, and the budget they share.
    pub disk_reserved_bytes: u64,
    pub disk_budget_bytes: u64,
    /// Processes and threads in its sandboxes.
    pub pids: u64,
    /// Sandbox creates (asked of the runtime to the agent answering), recent ones.
    pub create_latency: Option<Latency>,
    /// Commands (interactions and `/v1` execs), command time included, recent ones.
    pub exec_latency: Option<Latency>,
}

/// Percentiles of recent durations, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Latency {
    /// How many recent durations they are of.
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
}

impl Latency {
    /// Percentiles of `durations` (microseconds, any order; sorted here), or `None` when
    /// there are none. Nearest rank.
    pub fn of(durations: &mut [u64]) -> Option<Self> {
        if durations.is_empty() {
            return None;
        }
        durations.sort_unstable();
        let n = durations.len();
        let at = |q: usize| durations[(n * q).div_ceil(100).clamp(1, n) - 1];
        Some(Self {
            count: u64::try_from(n).unwrap_or(u64::MAX),
            p50_us: at(50),
            p90_us: at(90),
            p99_us: at(99),
        })
    }
}

/// How many image references a node's row carries.
pub const MAX_NODE_IMAGES: usize = 32;

impl NodeRecord {
    /// Sessions it can still take, by its last heartbeat.
    pub fn free_sessions(&self) -> u64 {
        self.max_sessions.saturating_sub(self.live_sessions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(Latency::of(&mut []), None);
        let one = Latency::of(&mut [7]).unwrap_or_default();
        assert_eq!((one.count, one.p50_us, one.p99_us), (1, 7, 7));
        let mut hundred: Vec<u64> = (1..=100).rev().collect();
        let l = Latency::of(&mut hundred).unwrap_or_default();
        assert_eq!((l.count, l.p50_us, l.p90_us, l.p99_us), (100, 50, 90, 99));
        let l = Latency::of(&mut [10, 1000]).unwrap_or_default();
        assert_eq!((l.p50_us, l.p90_us), (10, 1000));
    }
}

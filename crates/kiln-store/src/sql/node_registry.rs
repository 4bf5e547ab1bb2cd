//! The node registry (`nodes`, migration 0017). Liveness is one conditional UPDATE per
//! question: a heartbeat counts only while the node is not `down`, and marking stale nodes
//! down returns each node to exactly one caller, so of several nodes noticing the same
//! death exactly one reclaims its sessions. Every instant here (registration, heartbeat,
//! the staleness cut-off, `down_at`) is the database's clock, never a node's: a node whose
//! clock is off cannot look dead to the others, nor make them look dead.
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::dialect::{parse_column, Dialect, QueryExt};
use super::{as_i64, SqlStore};
use crate::{NodeBeat, NodeRecord, NodeRegistration, NodeRegistryStore, NodeStatus, Result};

const COLUMNS: &str = "node_id, address, backend, version, status, max_sessions, memory_mib, \
     disk_mib, live_sessions, registered_at, last_heartbeat_at, down_at, images, stats";

/// The database's clock, as the column form of each backend (SQLite: the fixed-width text
/// of `crate::timestamp`, six fractional digits, of which it keeps milliseconds).
fn db_now<D: Dialect>() -> &'static str {
    if D::BACKEND == "postgres" {
        "now()"
    } else {
        "strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')"
    }
}

/// The database's clock minus the milliseconds bound as `$1`.
fn db_ago<D: Dialect>() -> &'static str {
    if D::BACKEND == "postgres" {
        "(now() - $1 * INTERVAL '1 millisecond')"
    } else {
        "strftime('%Y-%m-%dT%H:%M:%f000Z', 'now', printf('-%.3f seconds', $1 / 1000.0))"
    }
}

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn node_row<D: Dialect>(row: &D::Row) -> Result<NodeRecord> {
    let status: String = D::get(row, "status")?;
    Ok(NodeRecord {
        node_id: D::get(row, "node_id")?,
        address: D::get(row, "address")?,
        backend: D::get(row, "backend")?,
        version: D::get(row, "version")?,
        status: parse_column(&status, "node status", NodeStatus::parse)?,
        max_sessions: count(D::get(row, "max_sessions")?),
        memory_mib: count(D::get(row, "memory_mib")?),
        disk_mib: count(D::get(row, "disk_mib")?),
        live_sessions: count(D::get(row, "live_sessions")?),
        registered_at: D::time(row, "registered_at")?,
        last_heartbeat_at: D::time(row, "last_heartbeat_at")?,
        down_at: D::opt_time(row, "down_at")?,
        images: {
            let text: String = D::get(row, "images")?;
            serde_json::from_str(&text)
                .map_err(|e| crate::StoreError::Corrupt(format!("nodes.images: {e}")))?
        },
        stats: {
            let text: String = D::get(row, "stats")?;
            serde_json::from_str(&text)
                .map_err(|e| crate::StoreError::Corrupt(format!("nodes.stats: {e}")))?
        },
    })
}

impl<D: Dialect> SqlStore<D> {
    /// The registered node that `node_id_of` (a query of one row's `node_id`, bound to
    /// `id` as `$1`) names, in one read.
    async fn node_of(&self, node_id_of: &str, id: &str) -> Result<Option<NodeRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM nodes WHERE node_id = ({node_id_of})");
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(id)
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.as_ref().map(node_row::<D>).transpose()
    }
}

#[async_trait]
impl<D: Dialect> NodeRegistryStore for SqlStore<D> {
    async fn register_node(&self, node: &NodeRegistration) -> Result<NodeRecord> {
        // A node that comes back keeps `draining` (an operator's choice); `down` is over
        // once it has reconciled, which its caller does before registering.
        let now = db_now::<D>();
        let sql = format!(
            "INSERT INTO nodes (node_id, address, backend, version, status, max_sessions, \
                 memory_mib, disk_mib, live_sessions, registered_at, last_heartbeat_at) \
             VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, 0, {now}, {now}) \
             ON CONFLICT (node_id) DO UPDATE SET address = excluded.address, \
                 backend = excluded.backend, version = excluded.version, \
                 max_sessions = excluded.max_sessions, memory_mib = excluded.memory_mib, \
                 disk_mib = excluded.disk_mib, registered_at = excluded.registered_at, \
                 last_heartbeat_at = excluded.last_heartbeat_at, down_at = NULL, \
                 status = CASE WHEN nodes.status = 'draining' THEN 'draining' ELSE 'active' END \
             RETURNING {COLUMNS}"
        );
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(node.node_id.as_str())
            .arg(node.address.as_str())
            .arg(node.backend.as_str())
            .arg(node.version.as_str())
            .arg(as_i64(node.max_sessions))
            .arg(as_i64(node.memory_mib))
            .arg(as_i64(node.disk_mib))
            .fetch_one(D::exec(&mut conn))
            .await?;
        node_row::<D>(&row)
    }

    async fn heartbeat_node(&self, node_id: &str, beat: &NodeBeat) -> Result<Option<NodeStatus>> {
        let sql = format!(
            "UPDATE nodes SET last_heartbeat_at = {}, live_sessions = $2, images = $3, \
                 stats = $4 \
             WHERE node_id = $1 AND status <> 'down' RETURNING status",
            db_now::<D>()
        );
        let images = &beat.images[..beat.images.len().min(crate::MAX_NODE_IMAGES)];
        let images = serde_json::to_string(images)
            .map_err(|e| crate::StoreError::Corrupt(format!("nodes.images: {e}")))?;
        let stats = serde_json::to_string(&beat.stats)
            .map_err(|e| crate::StoreError::Corrupt(format!("nodes.stats: {e}")))?;
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(node_id)
            .arg(as_i64(beat.live_sessions))
            .arg(images)
            .arg(stats)
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.map(|row| {
            let status: String = D::get(&row, "status")?;
            parse_column(&status, "node status", NodeStatus::parse)
        })
        .transpose()
    }

    async fn mark_stale_nodes_down(&self, silent_for_ms: u64) -> Result<Vec<NodeRecord>> {
        let sql = format!(
            "UPDATE nodes SET status = 'down', down_at = {} \
             WHERE status <> 'down' AND last_heartbeat_at < {} RETURNING {COLUMNS}",
            db_now::<D>(),
            db_ago::<D>()
        );
        let mut conn = self.conn().await?;
        let rows = sqlx::query(&sql)
            .arg(as_i64(silent_for_ms))
            .fetch_all(D::exec(&mut conn))
            .await?;
        rows.iter().map(node_row::<D>).collect()
    }

    async fn set_node_status(
        &self,
        node_id: &str,
        status: NodeStatus,
    ) -> Result<Option<(bool, NodeRecord)>> {
        // Conditional on a change: of two callers setting `down`, only one sees it change
        // (and reclaims the node's sessions).
        let sql = format!(
            "UPDATE nodes SET status = $2, \
                 down_at = CASE WHEN $2 = 'down' THEN {} ELSE down_at END \
             WHERE node_id = $1 AND status <> $2 RETURNING {COLUMNS}",
            db_now::<D>()
        );
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(node_id)
            .arg(status.as_str())
            .fetch_optional(D::exec(&mut conn))
            .await?;
        drop(conn);
        match row {
            Some(row) => Ok(Some((true, node_row::<D>(&row)?))),
            None => Ok(self.get_node(node_id).await?.map(|node| (false, node))),
        }
    }

    async fn get_node(&self, node_id: &str) -> Result<Option<NodeRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM nodes WHERE node_id = $1");
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(node_id)
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.as_ref().map(node_row::<D>).transpose()
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM nodes ORDER BY node_id");
        let mut conn = self.conn().await?;
        let rows = sqlx::query(&sql).fetch_all(D::exec(&mut conn)).await?;
        rows.iter().map(node_row::<D>).collect()
    }

    async fn database_now(&self) -> Result<DateTime<Utc>> {
        let sql = format!("SELECT {} AS now", db_now::<D>());
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql).fetch_one(D::exec(&mut conn)).await?;
        D::time(&row, "now")
    }

    async fn session_owner(&self, session_id: &str) -> Result<Option<NodeRecord>> {
        // One read on every routed request: the session's node and its row together.
        self.node_of(
            "SELECT node_id FROM sessions WHERE session_id = $1",
            session_id,
        )
        .await
    }

    async fn agent_job_owner(&self, job_id: &str) -> Result<Option<NodeRecord>> {
        self.node_of("SELECT node_id FROM agent_jobs WHERE job_id = $1", job_id)
            .await
    }
}

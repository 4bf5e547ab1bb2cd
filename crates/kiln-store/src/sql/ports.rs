//! Port forwards into instances. A forward is open until `closed_at` is set, once: of racing
//! closes (a DELETE, the instance's end, a restart) exactly one records its reason.
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::dialect::{parse_column, Dialect, QueryExt};
use super::SqlStore;
use crate::missing_reference::insert_error;
use crate::timestamp::Stamp;
use crate::{NewPortForward, PortForwardMode, PortForwardRecord, PortForwardStore, Result};

const COLUMNS: &str =
    "forward_id, session_id, user_id, port, mode, host_address, created_at, closed_at, close_reason";

#[async_trait]
impl<D: Dialect> PortForwardStore for SqlStore<D> {
    async fn insert_port_forward(&self, forward: &NewPortForward) -> Result<PortForwardRecord> {
        let sql = format!(
            "INSERT INTO port_forwards (forward_id, session_id, user_id, port, mode, host_address, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
        );
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(forward.forward_id.as_str())
            .arg(forward.session_id.as_str())
            .arg(forward.user_id.as_str())
            .arg(i64::from(forward.port))
            .arg(forward.mode.as_str())
            .arg(forward.host_address.as_deref())
            .arg(Stamp(forward.created_at))
            .fetch_one(D::exec(&mut conn))
            .await
            .map_err(|e| insert_error(e, "forward_id", "session or user"))?;
        forward_row::<D>(&row)
    }

    async fn get_port_forward(&self, forward_id: &str) -> Result<Option<PortForwardRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM port_forwards WHERE forward_id = $1");
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(forward_id)
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.as_ref().map(forward_row::<D>).transpose()
    }

    async fn list_open_port_forwards(
        &self,
        session_id: Option<&str>,
    ) -> Result<Vec<PortForwardRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM port_forwards WHERE closed_at IS NULL \
             AND ($1 IS NULL OR session_id = $1) ORDER BY created_at, forward_id"
        );
        let mut conn = self.conn().await?;
        let found = sqlx::query(&sql)
            .arg(session_id)
            .fetch_all(D::exec(&mut conn))
            .await?;
        found.iter().map(forward_row::<D>).collect()
    }

    async fn count_open_port_forwards(&self, user_id: &str) -> Result<u64> {
        let mut conn = self.conn().await?;
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM port_forwards WHERE user_id = $1 AND closed_at IS NULL",
        )
        .arg(user_id)
        .fetch_one(D::exec(&mut conn))
        .await?;
        let n: i64 = D::get(&row, "n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn close_port_forward(
        &self,
        forward_id: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<PortForwardRecord>> {
        let sql = format!(
            "UPDATE port_forwards SET closed_at = $2, close_reason = $3 \
             WHERE forward_id = $1 AND closed_at IS NULL RETURNING {COLUMNS}"
        );
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(forward_id)
            .arg(Stamp(at))
            .arg(reason)
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.as_ref().map(forward_row::<D>).transpose()
    }
}

fn forward_row<D: Dialect>(row: &D::Row) -> Result<PortForwardRecord> {
    let mode: String = D::get(row, "mode")?;
    let port: i64 = D::get(row, "port")?;
    Ok(PortForwardRecord {
        forward_id: D::get(row, "forward_id")?,
        session_id: D::get(row, "session_id")?,
        user_id: D::get(row, "user_id")?,
        port: parse_column(&port.to_string(), "port", |p| p.parse().ok())?,
        mode: parse_column(&mode, "port forward mode", PortForwardMode::parse)?,
        host_address: D::get(row, "host_address")?,
        created_at: D::time(row, "created_at")?,
        closed_at: D::opt_time(row, "closed_at")?,
        close_reason: D::get(row, "close_reason")?,
    })
}

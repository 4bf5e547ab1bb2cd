//! Snapshots and checkpoints of instances, and which snapshot each instance stands on.
//!
//! A snapshot's quota is checked in the transaction that inserts it, with the owner's user
//! row locked (`FOR UPDATE` on PostgreSQL; SQLite's `BEGIN IMMEDIATE` locks the database),
//! so racing inserts of one user cannot both pass it.
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use sqlx::QueryBuilder;

use super::dialect::{BuilderExt, Dialect, QueryExt};
use super::{as_i64, outbox, rows, SqlStore};
use crate::columns;
use crate::missing_reference::insert_error;
use crate::timestamp::Stamp;
use crate::unique_violation::conflict_or;
use crate::{
    Announcing, NewSnapshot, Result, SessionRecord, SnapshotInsert, SnapshotKind, SnapshotQuota,
    SnapshotRecord, SnapshotStore, SnapshotUsage, StoreError,
};

const SNAPSHOT_COLUMNS: &str = "snapshot_id, user_id, instance_id, parent_snapshot_id, name, \
     kind, size_bytes, runtime_ref, created_at, deleted_at, purged_at";

fn snapshot_row<D: Dialect>(row: &D::Row) -> Result<SnapshotRecord> {
    let kind: String = D::get(row, "kind")?;
    let size: i64 = D::get(row, "size_bytes")?;
    Ok(SnapshotRecord {
        snapshot_id: D::get(row, "snapshot_id")?,
        user_id: D::get(row, "user_id")?,
        instance_id: D::get(row, "instance_id")?,
        parent_snapshot_id: D::get(row, "parent_snapshot_id")?,
        name: D::get(row, "name")?,
        kind: SnapshotKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown snapshot kind {kind:?}")))?,
        size_bytes: size.unsigned_abs(),
        runtime_ref: D::get(row, "runtime_ref")?,
        created_at: D::time(row, "created_at")?,
        deleted_at: D::opt_time(row, "deleted_at")?,
        purged_at: D::opt_time(row, "purged_at")?,
    })
}

/// Counts and sums of a user's snapshots that are not deleted (`CAST`: PostgreSQL's `SUM`
/// of a `BIGINT` is a `NUMERIC`).
const USAGE_SQL: &str =
    "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) AS bytes \
     FROM snapshots WHERE user_id = $1 AND deleted_at IS NULL";

fn usage_row<D: Dialect>(row: &D::Row) -> Result<SnapshotUsage> {
    let count: i64 = D::get(row, "n")?;
    let bytes: i64 = D::get(row, "bytes")?;
    Ok(SnapshotUsage {
        count: count.unsigned_abs(),
        bytes: bytes.unsigned_abs(),
    })
}

/// A foreign key: `Missing`; the live-name index: `Conflict("name")`.
fn insert_snapshot_error(err: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        if db.is_foreign_key_violation() {
            return StoreError::Missing("user, instance or parent snapshot");
        }
    }
    conflict_or(err, "snapshot_id", &["name"])
}

#[async_trait]
impl<D: Dialect> SnapshotStore for SqlStore<D> {
    async fn insert_snapshot(
        &self,
        snapshot: &NewSnapshot,
        quota: SnapshotQuota,
        announce: Announcing<'_, SnapshotRecord>,
    ) -> Result<SnapshotInsert> {
        let mut tx = D::begin_write(self.pool()).await?;
        if !snapshot.deleted {
            let lock = format!(
                "SELECT user_id FROM users WHERE user_id = $1{}",
                D::FOR_UPDATE
            );
            sqlx::query(&lock)
                .arg(snapshot.user_id.as_str())
                .fetch_optional(D::exec(&mut tx))
                .await?;
            let row = sqlx::query(USAGE_SQL)
                .arg(snapshot.user_id.as_str())
                .fetch_one(D::exec(&mut tx))
                .await?;
            let usage = usage_row::<D>(&row)?;
            if usage.count.saturating_add(1) > quota.max_count
                || usage.bytes.saturating_add(snapshot.size_bytes) > quota.max_bytes
            {
                return Ok(SnapshotInsert::OverQuota(usage));
            }
        }
        let sql = format!(
            "INSERT INTO snapshots (snapshot_id, user_id, instance_id, parent_snapshot_id, name, \
                 kind, size_bytes, runtime_ref, created_at, deleted_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {SNAPSHOT_COLUMNS}"
        );
        let deleted_at = snapshot.deleted.then_some(Stamp(snapshot.created_at));
        let row = sqlx::query(&sql)
            .arg(snapshot.snapshot_id.as_str())
            .arg(snapshot.user_id.as_str())
            .arg(snapshot.instance_id.as_str())
            .arg(snapshot.parent_snapshot_id.as_deref())
            .arg(snapshot.name.as_str())
            .arg(snapshot.kind.as_str())
            .arg(as_i64(snapshot.size_bytes))
            .arg(snapshot.runtime_ref.as_str())
            .arg(Stamp(snapshot.created_at))
            .arg(deleted_at)
            .fetch_one(D::exec(&mut tx))
            .await
            .map_err(insert_snapshot_error)?;
        let record = snapshot_row::<D>(&row)?;
        let deliveries = outbox::stage::<D, _>(&mut tx, announce, &record).await?;
        tx.commit().await?;
        outbox::stored(announce, deliveries);
        Ok(SnapshotInsert::Inserted(record))
    }

    async fn get_snapshot(&self, snapshot_id: &str) -> Result<Option<SnapshotRecord>> {
        let sql = format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE snapshot_id = $1");
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(snapshot_id)
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.as_ref().map(snapshot_row::<D>).transpose()
    }

    async fn list_snapshots(&self, instance_id: &str) -> Result<Vec<SnapshotRecord>> {
        let sql = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots \
             WHERE instance_id = $1 AND deleted_at IS NULL \
             ORDER BY created_at DESC, snapshot_id DESC"
        );
        let mut conn = self.conn().await?;
        let found = sqlx::query(&sql)
            .arg(instance_id)
            .fetch_all(D::exec(&mut conn))
            .await?;
        found.iter().map(snapshot_row::<D>).collect()
    }

    async fn snapshot_usage(&self, user_id: &str) -> Result<SnapshotUsage> {
        let mut conn = self.conn().await?;
        let row = sqlx::query(USAGE_SQL)
            .arg(user_id)
            .fetch_one(D::exec(&mut conn))
            .await?;
        usage_row::<D>(&row)
    }

    async fn mark_snapshot_deleted(
        &self,
        snapshot_id: &str,
        at: DateTime<Utc>,
        announce: Announcing<'_, SnapshotRecord>,
    ) -> Result<Option<SnapshotRecord>> {
        let sql = format!(
            "UPDATE snapshots SET deleted_at = $2 \
             WHERE snapshot_id = $1 AND deleted_at IS NULL RETURNING {SNAPSHOT_COLUMNS}"
        );
        let mut tx = D::begin_write(self.pool()).await?;
        let row = sqlx::query(&sql)
            .arg(snapshot_id)
            .arg(Stamp(at))
            .fetch_optional(D::exec(&mut tx))
            .await?;
        let Some(record) = row.as_ref().map(snapshot_row::<D>).transpose()? else {
            return Ok(None);
        };
        let deliveries = outbox::stage::<D, _>(&mut tx, announce, &record).await?;
        tx.commit().await?;
        outbox::stored(announce, deliveries);
        Ok(Some(record))
    }

    async fn set_instance_source(
        &self,
        instance_id: &str,
        snapshot_id: &str,
        at: DateTime<Utc>,
        announce: Announcing<'_, str>,
    ) -> Result<()> {
        let mut tx = D::begin_write(self.pool()).await?;
        sqlx::query(
            "INSERT INTO instance_sources (instance_id, snapshot_id, recorded_at) \
             VALUES ($1, $2, $3) ON CONFLICT (instance_id) \
             DO UPDATE SET snapshot_id = excluded.snapshot_id, recorded_at = excluded.recorded_at",
        )
        .arg(instance_id)
        .arg(snapshot_id)
        .arg(Stamp(at))
        .execute(D::exec(&mut tx))
        .await
        .map_err(|e| insert_error(e, "instance_id", "instance or snapshot"))?;
        let deliveries = outbox::stage::<D, _>(&mut tx, announce, instance_id).await?;
        tx.commit().await?;
        outbox::stored(announce, deliveries);
        Ok(())
    }

    async fn instance_source(&self, instance_id: &str) -> Result<Option<String>> {
        let mut conn = self.conn().await?;
        let row = sqlx::query("SELECT snapshot_id FROM instance_sources WHERE instance_id = $1")
            .arg(instance_id)
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.as_ref()
            .map(|row| D::get::<String>(row, "snapshot_id"))
            .transpose()
    }

    async fn purgeable_snapshots(&self, limit: u64) -> Result<Vec<SnapshotRecord>> {
        let sql = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots s \
             WHERE s.deleted_at IS NOT NULL AND s.purged_at IS NULL \
               AND NOT EXISTS (SELECT 1 FROM instance_sources i \
                   JOIN sessions ses ON ses.session_id = i.instance_id \
                   WHERE i.snapshot_id = s.snapshot_id AND ses.status IN ('creating', 'ready')) \
               AND NOT EXISTS (SELECT 1 FROM snapshots c \
                   WHERE c.parent_snapshot_id = s.snapshot_id AND c.purged_at IS NULL) \
             ORDER BY s.deleted_at, s.snapshot_id LIMIT $1"
        );
        let mut conn = self.conn().await?;
        let found = sqlx::query(&sql)
            .arg(as_i64(limit))
            .fetch_all(D::exec(&mut conn))
            .await?;
        found.iter().map(snapshot_row::<D>).collect()
    }

    async fn recorded_snapshot_refs(&self, runtime_refs: &[String]) -> Result<Vec<String>> {
        let mut known = Vec::new();
        let mut conn = self.conn().await?;
        // Chunks keep each statement well under SQLite's limit of bound arguments.
        for chunk in runtime_refs.chunks(500) {
            let mut select = QueryBuilder::<D>::new(
                "SELECT runtime_ref FROM snapshots WHERE purged_at IS NULL AND runtime_ref IN (",
            );
            select
                .push_args(chunk.iter().map(String::as_str))
                .push_sql(")");
            let rows = D::build(&mut select).fetch_all(D::exec(&mut conn)).await?;
            for row in &rows {
                known.push(D::get::<String>(row, "runtime_ref")?);
            }
        }
        Ok(known)
    }

    async fn mark_snapshot_purged(&self, snapshot_id: &str, at: DateTime<Utc>) -> Result<bool> {
        let mut conn = self.conn().await?;
        let done = sqlx::query(
            "UPDATE snapshots SET purged_at = $2 \
             WHERE snapshot_id = $1 AND deleted_at IS NOT NULL AND purged_at IS NULL",
        )
        .arg(snapshot_id)
        .arg(Stamp(at))
        .execute(D::exec(&mut conn))
        .await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn replace_session_sandbox(
        &self,
        session_id: &str,
        old_sandbox: &str,
        new_sandbox: &str,
    ) -> Result<Option<SessionRecord>> {
        let sql = format!(
            "UPDATE sessions SET sandbox_id = $3 \
             WHERE session_id = $1 AND sandbox_id = $2 AND status = 'ready' RETURNING {}",
            columns::plain(columns::SESSION)
        );
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(session_id)
            .arg(old_sandbox)
            .arg(new_sandbox)
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.as_ref().map(rows::session::<D>).transpose()
    }
}

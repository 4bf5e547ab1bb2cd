//! Interactions. `seq` comes from the session's `last_interaction_seq`, bumped in the same
//! [`Dialect::begin_write`] transaction as the insert: concurrent inserts into one session
//! take the lock in turn (SQLite's write lock; on PostgreSQL the session's row lock, taken by
//! the `UPDATE` and held to commit), so each reads the number the previous one committed. A
//! failed insert rolls the counter back with it: no gap.
use chrono::{DateTime, Utc};

use super::dialect::{Dialect, QueryExt};
use super::output::Output;
use super::SqlStore;
use crate::columns;
use crate::json_column;
use crate::missing_reference::insert_error;
use crate::sql::dialect::parse_column;
use crate::timestamp::Stamp;
use crate::{
    InteractionKind, InteractionOutcome, InteractionRecord, NewInteraction, Result, StoreError,
};

pub(super) async fn insert<D: Dialect>(
    store: &SqlStore<D>,
    interaction: &NewInteraction,
) -> Result<InteractionRecord> {
    let request = json_column::encode(&interaction.request)?;
    let mut tx = D::begin_write(store.pool()).await?;
    let row = sqlx::query(
        "UPDATE sessions SET last_interaction_seq = last_interaction_seq + 1 \
         WHERE session_id = $1 RETURNING last_interaction_seq",
    )
    .arg(interaction.session_id.as_str())
    .fetch_optional(D::exec(&mut tx))
    .await?;
    let Some(row) = row else {
        return Err(StoreError::Missing("session"));
    };
    let seq: i64 = D::get(&row, "last_interaction_seq")?;
    let sql = format!(
        "INSERT INTO interactions (interaction_id, session_id, seq, kind, created_at, request) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {}",
        columns::plain(columns::INTERACTION)
    );
    let row = sqlx::query(&sql)
        .arg(interaction.interaction_id.as_str())
        .arg(interaction.session_id.as_str())
        .arg(seq)
        .arg(interaction.kind.as_str())
        .arg(Stamp(interaction.created_at))
        .arg(request)
        .fetch_one(D::exec(&mut tx))
        .await
        .map_err(|e| insert_error(e, "interaction_id", "session"))?;
    let record = interaction_row::<D>(&row)?;
    tx.commit().await?;
    Ok(record)
}

pub(super) async fn complete<D: Dialect>(
    store: &SqlStore<D>,
    interaction_id: &str,
    outcome: &InteractionOutcome,
) -> Result<bool> {
    let mut conn = store.conn().await?;
    let done = sqlx::query(
        "UPDATE interactions SET exit_code = $2, stdout = $3, stderr = $4, \
             execution_time_seconds = $5, success = $6, message = $7, finished_at = $8 \
         WHERE interaction_id = $1 AND finished_at IS NULL",
    )
    .arg(interaction_id)
    .arg(outcome.exit_code)
    .arg(Output::of(&outcome.stdout))
    .arg(Output::of(&outcome.stderr))
    .arg(outcome.execution_time_seconds)
    .arg(outcome.success)
    .arg(outcome.message.as_deref())
    .arg(Stamp(outcome.finished_at))
    .execute(D::exec(&mut conn))
    .await?;
    Ok(D::rows_affected(&done) == 1)
}

/// The interaction of this session; with `user`, only if the session is theirs.
pub(super) async fn get<D: Dialect>(
    store: &SqlStore<D>,
    session_id: &str,
    interaction_id: &str,
    user: Option<&str>,
) -> Result<Option<InteractionRecord>> {
    let owner = match user {
        Some(_) => {
            " AND EXISTS (SELECT 1 FROM sessions s WHERE s.session_id = $2 AND s.user_id = $3)"
        }
        None => "",
    };
    let sql = format!(
        "SELECT {} FROM interactions WHERE interaction_id = $1 AND session_id = $2{owner}",
        columns::plain(columns::INTERACTION)
    );
    let mut conn = store.conn().await?;
    let mut query = sqlx::query(&sql).arg(interaction_id).arg(session_id);
    if let Some(user) = user {
        query = query.arg(user);
    }
    let row = query.fetch_optional(D::exec(&mut conn)).await?;
    row.as_ref().map(interaction_row::<D>).transpose()
}

pub(super) async fn list_unfinished<D: Dialect>(
    store: &SqlStore<D>,
) -> Result<Vec<InteractionRecord>> {
    let sql = format!(
        "SELECT {} FROM interactions WHERE finished_at IS NULL \
         ORDER BY created_at, session_id, seq",
        columns::plain(columns::INTERACTION)
    );
    let mut conn = store.conn().await?;
    let found = sqlx::query(&sql).fetch_all(D::exec(&mut conn)).await?;
    found.iter().map(interaction_row::<D>).collect()
}

/// Retention: see [`crate::SessionStore::expire_interaction_output`]. Both backends order
/// `finished_at` as time (TIMESTAMPTZ; fixed-width UTC text on SQLite).
pub(super) async fn expire_output<D: Dialect>(
    store: &SqlStore<D>,
    finished_before: DateTime<Utc>,
    at: DateTime<Utc>,
    limit: u64,
) -> Result<u64> {
    let mut conn = store.conn().await?;
    let done = sqlx::query(
        "UPDATE interactions SET stdout = $3, stderr = $3, output_expired_at = $2 \
         WHERE interaction_id IN (SELECT interaction_id FROM interactions \
             WHERE output_expired_at IS NULL AND finished_at IS NOT NULL AND finished_at < $1 \
             ORDER BY finished_at LIMIT $4)",
    )
    .arg(Stamp(finished_before))
    .arg(Stamp(at))
    .arg(Output::of(""))
    .arg(i64::try_from(limit).unwrap_or(i64::MAX))
    .execute(D::exec(&mut conn))
    .await?;
    Ok(D::rows_affected(&done))
}

fn interaction_row<D: Dialect>(row: &D::Row) -> Result<InteractionRecord> {
    let kind: String = D::get(row, "kind")?;
    let request: String = D::get(row, "request")?;
    let outcome = match D::opt_time(row, "finished_at")? {
        None => None,
        Some(finished_at) => Some(InteractionOutcome {
            exit_code: D::get(row, "exit_code")?,
            stdout: D::get::<Output<'static>>(row, "stdout")?.into_string(),
            stderr: D::get::<Output<'static>>(row, "stderr")?.into_string(),
            execution_time_seconds: D::get(row, "execution_time_seconds")?,
            success: D::get(row, "success")?,
            message: D::get(row, "message")?,
            finished_at,
        }),
    };
    Ok(InteractionRecord {
        interaction_id: D::get(row, "interaction_id")?,
        session_id: D::get(row, "session_id")?,
        seq: D::get(row, "seq")?,
        kind: parse_column(&kind, "interaction kind", InteractionKind::parse)?,
        created_at: D::time(row, "created_at")?,
        request: json_column::decode("interaction request", &request)?,
        outcome,
        output_expired_at: D::opt_time(row, "output_expired_at")?,
    })
}

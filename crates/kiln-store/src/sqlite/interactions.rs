//! Interactions on SQLite. `seq` comes from the session's `last_interaction_seq`, bumped in
//! the same `BEGIN IMMEDIATE` transaction as the insert: concurrent inserts into one session
//! take the write lock in turn, so each reads the previous one's number.
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::Row;

use super::rows::{optional_time, time};
use crate::columns;
use crate::json_column;
use crate::missing_reference::insert_error;
use crate::timestamp::to_sqlite_text;
use crate::{
    InteractionKind, InteractionOutcome, InteractionRecord, NewInteraction, Result, StoreError,
};

pub(super) async fn insert_interaction(
    pool: &SqlitePool,
    interaction: &NewInteraction,
) -> Result<InteractionRecord> {
    let request = json_column::encode(&interaction.request)?;
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let seq: Option<i64> = sqlx::query_scalar(
        "UPDATE sessions SET last_interaction_seq = last_interaction_seq + 1 \
         WHERE session_id = $1 RETURNING last_interaction_seq",
    )
    .bind(&interaction.session_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(seq) = seq else {
        return Err(StoreError::Missing("session"));
    };
    let sql = format!(
        "INSERT INTO interactions (interaction_id, session_id, seq, kind, created_at, request) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {}",
        columns::plain(columns::INTERACTION)
    );
    let row = sqlx::query(&sql)
        .bind(&interaction.interaction_id)
        .bind(&interaction.session_id)
        .bind(seq)
        .bind(interaction.kind.as_str())
        .bind(to_sqlite_text(interaction.created_at))
        .bind(request)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| insert_error(e, "interaction_id", "session"))?;
    let record = interaction_row(&row)?;
    tx.commit().await?;
    Ok(record)
}

pub(super) async fn complete_interaction(
    pool: &SqlitePool,
    interaction_id: &str,
    outcome: &InteractionOutcome,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE interactions SET exit_code = $2, stdout = $3, stderr = $4, \
             execution_time_seconds = $5, success = $6, message = $7, finished_at = $8 \
         WHERE interaction_id = $1 AND finished_at IS NULL",
    )
    .bind(interaction_id)
    .bind(outcome.exit_code)
    .bind(&outcome.stdout)
    .bind(&outcome.stderr)
    .bind(outcome.execution_time_seconds)
    .bind(outcome.success)
    .bind(&outcome.message)
    .bind(to_sqlite_text(outcome.finished_at))
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn get_interaction(
    pool: &SqlitePool,
    session_id: &str,
    interaction_id: &str,
) -> Result<Option<InteractionRecord>> {
    let sql = format!(
        "SELECT {} FROM interactions WHERE interaction_id = $1 AND session_id = $2",
        columns::plain(columns::INTERACTION)
    );
    let row = sqlx::query(&sql)
        .bind(interaction_id)
        .bind(session_id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(interaction_row).transpose()
}

pub(super) async fn list_unfinished_interactions(
    pool: &SqlitePool,
) -> Result<Vec<InteractionRecord>> {
    let sql = format!(
        "SELECT {} FROM interactions WHERE finished_at IS NULL \
         ORDER BY created_at, session_id, seq",
        columns::plain(columns::INTERACTION)
    );
    let found = sqlx::query(&sql).fetch_all(pool).await?;
    found.iter().map(interaction_row).collect()
}

pub(super) async fn expire_interaction_output(
    pool: &SqlitePool,
    finished_before: chrono::DateTime<chrono::Utc>,
    at: chrono::DateTime<chrono::Utc>,
    limit: u64,
) -> Result<u64> {
    // Fixed-width UTC text compares in time order.
    let done = sqlx::query(
        "UPDATE interactions SET stdout = '', stderr = '', output_expired_at = $2 \
         WHERE interaction_id IN (SELECT interaction_id FROM interactions \
             WHERE output_expired_at IS NULL AND finished_at IS NOT NULL AND finished_at < $1 \
             ORDER BY finished_at LIMIT $3)",
    )
    .bind(to_sqlite_text(finished_before))
    .bind(to_sqlite_text(at))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

fn interaction_row(row: &SqliteRow) -> Result<InteractionRecord> {
    let kind: String = row.try_get("kind")?;
    let request: String = row.try_get("request")?;
    let outcome = match optional_time(row, "finished_at")? {
        None => None,
        Some(finished_at) => Some(InteractionOutcome {
            exit_code: row.try_get("exit_code")?,
            stdout: row.try_get("stdout")?,
            stderr: row.try_get("stderr")?,
            execution_time_seconds: row.try_get("execution_time_seconds")?,
            success: row.try_get("success")?,
            message: row.try_get("message")?,
            finished_at,
        }),
    };
    Ok(InteractionRecord {
        interaction_id: row.try_get("interaction_id")?,
        session_id: row.try_get("session_id")?,
        seq: row.try_get("seq")?,
        kind: InteractionKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown interaction kind {kind:?}")))?,
        created_at: time(row, "created_at")?,
        request: json_column::decode("interaction request", &request)?,
        outcome,
        output_expired_at: optional_time(row, "output_expired_at")?,
    })
}

//! Interactions on PostgreSQL. `seq` comes from the session's `last_interaction_seq`, bumped
//! by an `UPDATE` in the same statement as the insert: concurrent inserts into one session
//! queue on the session's row lock, and each re-reads the counter the previous one committed.
//!
//! stdout and stderr are BYTEA holding UTF-8, because TEXT cannot hold NUL characters.
use sqlx::postgres::{PgPool, PgRow};
use sqlx::Row;

use crate::columns;
use crate::json_column;
use crate::missing_reference::insert_error;
use crate::timestamp::to_micros;
use crate::{
    InteractionKind, InteractionOutcome, InteractionRecord, NewInteraction, Result, StoreError,
};

pub(super) async fn insert_interaction(
    pool: &PgPool,
    interaction: &NewInteraction,
) -> Result<InteractionRecord> {
    let request = json_column::encode(&interaction.request)?;
    // If the insert fails (a taken interaction_id), the whole statement rolls back, the
    // counter included: no gap.
    let sql = format!(
        "WITH next AS ( \
             UPDATE sessions SET last_interaction_seq = last_interaction_seq + 1 \
             WHERE session_id = $2 RETURNING last_interaction_seq \
         ) \
         INSERT INTO interactions (interaction_id, session_id, seq, kind, created_at, request) \
         SELECT $1, $2, last_interaction_seq, $3, $4, $5 FROM next RETURNING {}",
        columns::plain(columns::INTERACTION)
    );
    let row = sqlx::query(&sql)
        .bind(&interaction.interaction_id)
        .bind(&interaction.session_id)
        .bind(interaction.kind.as_str())
        .bind(to_micros(interaction.created_at))
        .bind(request)
        .fetch_optional(pool)
        .await
        .map_err(|e| insert_error(e, "interaction_id", "session"))?;
    match row {
        Some(row) => interaction_row(&row),
        None => Err(StoreError::Missing("session")),
    }
}

pub(super) async fn complete_interaction(
    pool: &PgPool,
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
    .bind(outcome.stdout.as_bytes())
    .bind(outcome.stderr.as_bytes())
    .bind(outcome.execution_time_seconds)
    .bind(outcome.success)
    .bind(&outcome.message)
    .bind(to_micros(outcome.finished_at))
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn get_interaction(
    pool: &PgPool,
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

pub(super) async fn list_unfinished_interactions(pool: &PgPool) -> Result<Vec<InteractionRecord>> {
    let sql = format!(
        "SELECT {} FROM interactions WHERE finished_at IS NULL \
         ORDER BY created_at, session_id, seq",
        columns::plain(columns::INTERACTION)
    );
    let found = sqlx::query(&sql).fetch_all(pool).await?;
    found.iter().map(interaction_row).collect()
}

pub(super) async fn expire_interaction_output(
    pool: &PgPool,
    finished_before: chrono::DateTime<chrono::Utc>,
    at: chrono::DateTime<chrono::Utc>,
    limit: u64,
) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE interactions SET stdout = ''::bytea, stderr = ''::bytea, output_expired_at = $2 \
         WHERE interaction_id IN (SELECT interaction_id FROM interactions \
             WHERE output_expired_at IS NULL AND finished_at IS NOT NULL AND finished_at < $1 \
             ORDER BY finished_at LIMIT $3)",
    )
    .bind(to_micros(finished_before))
    .bind(to_micros(at))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

fn utf8_column(row: &PgRow, name: &str) -> Result<String> {
    let bytes: Vec<u8> = row.try_get(name)?;
    String::from_utf8(bytes).map_err(|e| StoreError::Corrupt(format!("{name} is not UTF-8: {e}")))
}

fn interaction_row(row: &PgRow) -> Result<InteractionRecord> {
    let kind: String = row.try_get("kind")?;
    let request: String = row.try_get("request")?;
    let finished_at: Option<chrono::DateTime<chrono::Utc>> = row.try_get("finished_at")?;
    let outcome = match finished_at {
        None => None,
        Some(finished_at) => Some(InteractionOutcome {
            exit_code: row.try_get("exit_code")?,
            stdout: utf8_column(row, "stdout")?,
            stderr: utf8_column(row, "stderr")?,
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
        created_at: row.try_get("created_at")?,
        request: json_column::decode("interaction request", &request)?,
        outcome,
        output_expired_at: row.try_get("output_expired_at")?,
    })
}

//! Sessions on SQLite. Every status change is one conditional `UPDATE … RETURNING`: SQLite
//! runs writers one at a time, so of racing callers only the first still finds the status it
//! expects, and the others match nothing.
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::as_i64;
use super::rows::{optional_time, time};
use crate::columns;
use crate::missing_reference::insert_error;
use crate::timestamp::to_sqlite_text;
use crate::{NewSession, Result, SessionRecord, SessionStatus, StoreError};

pub(super) async fn insert_session(
    pool: &SqlitePool,
    session: &NewSession,
) -> Result<SessionRecord> {
    let sql = format!(
        "INSERT INTO sessions (session_id, user_id, dataset, sample_id, sample_version, status, \
             requested_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, 'creating', $6, $7) RETURNING {}",
        columns::plain(columns::SESSION)
    );
    let row = sqlx::query(&sql)
        .bind(&session.session_id)
        .bind(&session.user_id)
        .bind(&session.dataset)
        .bind(&session.sample_id)
        .bind(session.sample_version)
        .bind(to_sqlite_text(session.requested_at))
        .bind(to_sqlite_text(session.expires_at))
        .fetch_one(pool)
        .await
        .map_err(|e| insert_error(e, "session_id", "user or sample version"))?;
    session_row(&row)
}

pub(super) async fn get_session(
    pool: &SqlitePool,
    session_id: &str,
) -> Result<Option<SessionRecord>> {
    let sql = format!(
        "SELECT {} FROM sessions WHERE session_id = $1",
        columns::plain(columns::SESSION)
    );
    let row = sqlx::query(&sql)
        .bind(session_id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(session_row).transpose()
}

pub(super) async fn list_sessions(
    pool: &SqlitePool,
    user_id: &str,
    limit: u64,
    offset: u64,
) -> Result<(Vec<SessionRecord>, u64)> {
    // One read transaction: the total and the page come from the same snapshot.
    let mut tx = pool.begin().await?;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?;
    let sql = format!(
        "SELECT {} FROM sessions WHERE user_id = $1 \
         ORDER BY requested_at DESC, session_id DESC LIMIT $2 OFFSET $3",
        columns::plain(columns::SESSION)
    );
    let found = sqlx::query(&sql)
        .bind(user_id)
        .bind(as_i64(limit))
        .bind(as_i64(offset))
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    let sessions = found.iter().map(session_row).collect::<Result<_>>()?;
    Ok((sessions, total.unsigned_abs()))
}

pub(super) async fn count_live_sessions(pool: &SqlitePool, user_id: &str) -> Result<u64> {
    let count: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sessions WHERE user_id = $1 AND status IN ('creating', 'ready')",
    )
    .bind(user_id)
    .fetch_one(pool)
    .await?;
    Ok(count.unsigned_abs())
}

pub(super) async fn list_sessions_in(
    pool: &SqlitePool,
    statuses: &[SessionStatus],
) -> Result<Vec<SessionRecord>> {
    if statuses.is_empty() {
        return Ok(Vec::new());
    }
    let mut select = QueryBuilder::<Sqlite>::new(format!(
        "SELECT {} FROM sessions WHERE status IN (",
        columns::plain(columns::SESSION)
    ));
    let mut list = select.separated(", ");
    for status in statuses {
        list.push_bind(status.as_str());
    }
    select.push(") ORDER BY requested_at, session_id");
    let found = select.build().fetch_all(pool).await?;
    found.iter().map(session_row).collect()
}

pub(super) async fn mark_session_ready(
    pool: &SqlitePool,
    session_id: &str,
    sandbox_id: &str,
    location: &str,
    at: DateTime<Utc>,
) -> Result<Option<SessionRecord>> {
    let sql = format!(
        "UPDATE sessions SET status = 'ready', sandbox_id = $2, location = $3, ready_at = $4 \
         WHERE session_id = $1 AND status = 'creating' RETURNING {}",
        columns::plain(columns::SESSION)
    );
    let row = sqlx::query(&sql)
        .bind(session_id)
        .bind(sandbox_id)
        .bind(location)
        .bind(to_sqlite_text(at))
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(session_row).transpose()
}

pub(super) async fn mark_session_error(
    pool: &SqlitePool,
    session_id: &str,
    code: &str,
    message: &str,
    at: DateTime<Utc>,
) -> Result<Option<SessionRecord>> {
    let sql = format!(
        "UPDATE sessions SET status = 'error', error_code = $2, error_message = $3, ended_at = $4 \
         WHERE session_id = $1 AND status = 'creating' RETURNING {}",
        columns::plain(columns::SESSION)
    );
    let row = sqlx::query(&sql)
        .bind(session_id)
        .bind(code)
        .bind(message)
        .bind(to_sqlite_text(at))
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(session_row).transpose()
}

pub(super) async fn end_session(
    pool: &SqlitePool,
    session_id: &str,
    status: SessionStatus,
    at: DateTime<Utc>,
) -> Result<Option<SessionRecord>> {
    crate::session_rules::check_end_status(status)?;
    let sql = format!(
        "UPDATE sessions SET status = $2, ended_at = $3 \
         WHERE session_id = $1 AND status IN ('creating', 'ready') RETURNING {}",
        columns::plain(columns::SESSION)
    );
    let row = sqlx::query(&sql)
        .bind(session_id)
        .bind(status.as_str())
        .bind(to_sqlite_text(at))
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(session_row).transpose()
}

pub(super) fn session_row(row: &SqliteRow) -> Result<SessionRecord> {
    let status: String = row.try_get("status")?;
    Ok(SessionRecord {
        session_id: row.try_get("session_id")?,
        user_id: row.try_get("user_id")?,
        dataset: row.try_get("dataset")?,
        sample_id: row.try_get("sample_id")?,
        sample_version: row.try_get("sample_version")?,
        status: SessionStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown session status {status:?}")))?,
        requested_at: time(row, "requested_at")?,
        ready_at: optional_time(row, "ready_at")?,
        expires_at: time(row, "expires_at")?,
        ended_at: optional_time(row, "ended_at")?,
        sandbox_id: row.try_get("sandbox_id")?,
        location: row.try_get("location")?,
        error_code: row.try_get("error_code")?,
        error_message: row.try_get("error_message")?,
    })
}

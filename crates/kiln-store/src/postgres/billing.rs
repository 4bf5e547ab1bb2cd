//! The billing ledger on PostgreSQL. Writes that must happen together (ending a session
//! and charging it, recording a Stripe event and its credit) share one transaction; the
//! session's row lock (`FOR UPDATE`) orders racing ends, and idempotency rests on the
//! ledger's `UNIQUE (kind, reference)`.
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};

use super::as_i64;
use super::sessions::session_row;
use crate::billing_model::{end_time, parse_kind, usage, TRANSACTION_COLUMNS};
use crate::columns;
use crate::missing_reference::insert_error;
use crate::timestamp::to_micros;
use crate::{
    Balance, EndedSession, KindTotal, NewTransaction, Result, SessionEnd, Transaction,
    TransactionKind, TransactionPage, TransactionQuery,
};

async fn insert_in(conn: &mut PgConnection, new: &NewTransaction) -> Result<Option<Transaction>> {
    let sql = format!(
        "INSERT INTO billing_transactions ({TRANSACTION_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (kind, reference) DO NOTHING RETURNING {TRANSACTION_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(&new.transaction_id)
        .bind(&new.user_id)
        .bind(new.kind.as_str())
        .bind(new.amount_cents)
        .bind(&new.description)
        .bind(to_micros(new.created_at))
        .bind(&new.session_id)
        .bind(&new.job_id)
        .bind(new.duration_minutes)
        .bind(&new.reference)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| insert_error(e, "transaction_id", "user"))?;
    row.as_ref().map(transaction_row).transpose()
}

pub(super) async fn insert_transaction(
    pool: &PgPool,
    new: &NewTransaction,
) -> Result<Option<Transaction>> {
    let mut conn = pool.acquire().await?;
    insert_in(&mut conn, new).await
}

pub(super) async fn find_transaction(
    pool: &PgPool,
    kind: TransactionKind,
    reference: &str,
) -> Result<Option<Transaction>> {
    let sql = format!(
        "SELECT {TRANSACTION_COLUMNS} FROM billing_transactions WHERE kind = $1 AND reference = $2"
    );
    let row = sqlx::query(&sql)
        .bind(kind.as_str())
        .bind(reference)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(transaction_row).transpose()
}

pub(super) async fn record_stripe_credit(
    pool: &PgPool,
    event_id: &str,
    credit: &NewTransaction,
) -> Result<Option<Transaction>> {
    let mut tx = pool.begin().await?;
    let fresh = sqlx::query(
        "INSERT INTO stripe_events (event_id, received_at) VALUES ($1, $2) \
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event_id)
    .bind(to_micros(credit.created_at))
    .execute(&mut *tx)
    .await?;
    if fresh.rows_affected() == 0 {
        return Ok(None);
    }
    let written = insert_in(&mut tx, credit).await?;
    tx.commit().await?;
    Ok(written)
}

pub(super) async fn balance(pool: &PgPool, user_id: &str) -> Result<Balance> {
    let row = sqlx::query(
        "SELECT COALESCE(SUM(amount_cents), 0)::BIGINT AS balance, \
             COALESCE(SUM(CASE WHEN kind = 'deposit' THEN amount_cents ELSE 0 END), 0)::BIGINT AS deposited, \
             MAX(created_at) AS last_at \
         FROM billing_transactions WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_one(pool)
    .await?;
    let balance: i64 = row.try_get("balance")?;
    let deposited: i64 = row.try_get("deposited")?;
    Ok(Balance {
        balance_cents: balance,
        total_deposited_cents: deposited,
        total_spent_cents: deposited - balance,
        last_transaction_at: row.try_get("last_at")?,
    })
}

/// `WITH matches AS (…)`: the user's transactions that the query considers.
fn matches(query: &TransactionQuery) -> QueryBuilder<'_, Postgres> {
    let mut q = QueryBuilder::<Postgres>::new(format!(
        "WITH matches AS (SELECT {TRANSACTION_COLUMNS} FROM billing_transactions WHERE user_id = "
    ));
    q.push_bind(&query.user_id);
    if !query.kinds.is_empty() {
        q.push(" AND kind IN (");
        let mut list = q.separated(", ");
        for kind in &query.kinds {
            list.push_bind(kind.as_str());
        }
        q.push(")");
    }
    if let Some(from) = query.from {
        q.push(" AND created_at >= ").push_bind(to_micros(from));
    }
    if let Some(until) = query.until {
        q.push(" AND created_at <= ").push_bind(to_micros(until));
    }
    q.push(" ORDER BY created_at DESC, transaction_id DESC");
    if let Some(max) = query.max_items {
        q.push(" LIMIT ").push_bind(as_i64(max));
    }
    q.push(") ");
    q
}

pub(super) async fn list_transactions(
    pool: &PgPool,
    query: &TransactionQuery,
) -> Result<TransactionPage> {
    // One read transaction: the page and the totals come from the same snapshot.
    let mut tx = pool.begin().await?;
    let mut totals = matches(query);
    totals.push(
        "SELECT kind, COUNT(*) AS n, COALESCE(SUM(amount_cents), 0)::BIGINT AS amount, \
         COALESCE(SUM(duration_minutes), 0.0)::DOUBLE PRECISION AS minutes \
         FROM matches GROUP BY kind ORDER BY kind",
    );
    let rows = totals.build().fetch_all(&mut *tx).await?;
    let mut by_kind = Vec::new();
    for row in &rows {
        let kind: String = row.try_get("kind")?;
        let count: i64 = row.try_get("n")?;
        by_kind.push(KindTotal {
            kind: parse_kind(&kind)?,
            count: count.unsigned_abs(),
            amount_cents: row.try_get("amount")?,
            minutes: row.try_get("minutes")?,
        });
    }
    let mut page = matches(query);
    page.push(format!(
        "SELECT {TRANSACTION_COLUMNS} FROM matches \
         ORDER BY created_at DESC, transaction_id DESC LIMIT "
    ));
    page.push_bind(as_i64(query.limit))
        .push(" OFFSET ")
        .push_bind(as_i64(query.offset));
    let found = page.build().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(TransactionPage {
        transactions: found.iter().map(transaction_row).collect::<Result<_>>()?,
        total: by_kind.iter().map(|k| k.count).sum(),
        by_kind,
    })
}

pub(super) async fn end_session_billed(
    pool: &PgPool,
    end: &SessionEnd,
) -> Result<Option<EndedSession>> {
    crate::session_rules::check_end_status(end.status)?;
    // The row lock makes the check, the end and the charge one step that racing callers
    // (close, expiry, the balance reaper) take in turn.
    let mut tx = pool.begin().await?;
    let row = sqlx::query(
        "SELECT ready_at, alive_at FROM sessions \
         WHERE session_id = $1 AND status IN ('creating', 'ready') FOR UPDATE",
    )
    .bind(&end.session_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let ready_at: Option<DateTime<Utc>> = row.try_get("ready_at")?;
    let alive_at: Option<DateTime<Utc>> = row.try_get("alive_at")?;
    let ended_at = end_time(end, ready_at, alive_at);
    let (code, message) = end.reason.clone().unzip();
    let sql = format!(
        "UPDATE sessions SET status = $2, ended_at = $3, \
             error_code = COALESCE($4, error_code), error_message = COALESCE($5, error_message) \
         WHERE session_id = $1 RETURNING {}",
        columns::plain(columns::SESSION)
    );
    let updated = sqlx::query(&sql)
        .bind(&end.session_id)
        .bind(end.status.as_str())
        .bind(to_micros(ended_at))
        .bind(code)
        .bind(message)
        .fetch_one(&mut *tx)
        .await?;
    let session = session_row(&updated)?;
    let charge = match ready_at {
        Some(ready_at) => insert_in(&mut tx, &usage(end, &session, ready_at, ended_at)).await?,
        None => None,
    };
    tx.commit().await?;
    Ok(Some(EndedSession { session, charge }))
}

pub(super) async fn record_heartbeats(
    pool: &PgPool,
    session_ids: &[String],
    at: DateTime<Utc>,
) -> Result<u64> {
    if session_ids.is_empty() {
        return Ok(0);
    }
    let mut q = QueryBuilder::<Postgres>::new("UPDATE sessions SET alive_at = ");
    q.push_bind(to_micros(at))
        .push(" WHERE status = 'ready' AND session_id IN (");
    let mut list = q.separated(", ");
    for id in session_ids {
        list.push_bind(id);
    }
    q.push(")");
    Ok(q.build().execute(pool).await?.rows_affected())
}

pub(super) async fn session_heartbeat(
    pool: &PgPool,
    session_id: &str,
) -> Result<Option<DateTime<Utc>>> {
    let row = sqlx::query("SELECT alive_at FROM sessions WHERE session_id = $1")
        .bind(session_id)
        .fetch_optional(pool)
        .await?;
    match row {
        Some(row) => Ok(row.try_get("alive_at")?),
        None => Ok(None),
    }
}

fn transaction_row(row: &PgRow) -> Result<Transaction> {
    let kind: String = row.try_get("kind")?;
    Ok(Transaction {
        transaction_id: row.try_get("transaction_id")?,
        user_id: row.try_get("user_id")?,
        kind: parse_kind(&kind)?,
        amount_cents: row.try_get("amount_cents")?,
        description: row.try_get("description")?,
        created_at: row.try_get("created_at")?,
        session_id: row.try_get("session_id")?,
        job_id: row.try_get("job_id")?,
        duration_minutes: row.try_get("duration_minutes")?,
        reference: row.try_get("reference")?,
    })
}

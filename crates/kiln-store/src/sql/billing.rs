//! The billing ledger. Writes that must happen together (ending a session and charging it,
//! recording a Stripe event and its credit) share one [`Dialect::begin_write`] transaction;
//! racing ends of one session take it in turn (SQLite's write lock, PostgreSQL's row lock
//! from `FOR UPDATE`), and idempotency rests on the ledger's `UNIQUE (kind, reference)`.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;

use super::dialect::{BuilderExt, Dialect, QueryExt};
use super::{as_i64, outbox, rows, SqlStore};
use crate::columns;
use crate::missing_reference::insert_error;
use crate::timestamp::Stamp;
use crate::{
    Announcing, Balance, BillingStore, EndedSession, KindTotal, NewTransaction, Result, SessionEnd,
    SessionRecord, Transaction, TransactionKind, TransactionPage, TransactionQuery,
};
use kiln_domain::{end_time, usage};

/// The ledger's columns, in the order both backends' row readers expect.
const TRANSACTION_COLUMNS: &str = "transaction_id, user_id, kind, amount_cents, \
     description, created_at, session_id, job_id, duration_minutes, reference";

fn parse_kind(kind: &str) -> Result<TransactionKind> {
    TransactionKind::parse(kind)
        .ok_or_else(|| crate::StoreError::Corrupt(format!("unknown transaction kind {kind:?}")))
}

/// Appends `new` on `conn` (a transaction's or the pool's), unless its reference was used.
async fn insert_in<D: Dialect>(
    conn: &mut D::Connection,
    new: &NewTransaction,
) -> Result<Option<Transaction>> {
    let sql = format!(
        "INSERT INTO billing_transactions ({TRANSACTION_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (kind, reference) DO NOTHING RETURNING {TRANSACTION_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .arg(new.transaction_id.as_str())
        .arg(new.user_id.as_str())
        .arg(new.kind.as_str())
        .arg(new.amount_cents)
        .arg(new.description.as_str())
        .arg(Stamp(new.created_at))
        .arg(new.session_id.as_deref())
        .arg(new.job_id.as_deref())
        .arg(new.duration_minutes)
        .arg(new.reference.as_deref())
        .fetch_optional(D::exec(conn))
        .await
        .map_err(|e| insert_error(e, "transaction_id", "user"))?;
    row.as_ref().map(transaction_row::<D>).transpose()
}

/// `WITH matches AS (…)`: the user's transactions that the query considers.
fn matches<D: Dialect>(query: &TransactionQuery) -> QueryBuilder<'static, D> {
    let mut q = QueryBuilder::<D>::new(format!(
        "WITH matches AS (SELECT {TRANSACTION_COLUMNS} FROM billing_transactions WHERE user_id = "
    ));
    q.push_arg(query.user_id.clone());
    if !query.kinds.is_empty() {
        q.push(" AND kind IN (")
            .push_args(query.kinds.iter().map(|k| k.as_str()))
            .push(")");
    }
    if let Some(from) = query.from {
        q.push(" AND created_at >= ").push_arg(Stamp(from));
    }
    if let Some(until) = query.until {
        q.push(" AND created_at <= ").push_arg(Stamp(until));
    }
    q.push(" ORDER BY created_at DESC, transaction_id DESC");
    if let Some(max) = query.max_items {
        q.push(" LIMIT ").push_arg(as_i64(max));
    }
    q.push(") ");
    q
}

#[async_trait]
impl<D: Dialect> BillingStore for SqlStore<D> {
    async fn insert_transaction(
        &self,
        transaction: &NewTransaction,
    ) -> Result<Option<Transaction>> {
        let mut conn = self.conn().await?;
        insert_in::<D>(&mut conn, transaction).await
    }

    async fn record_stripe_credit(
        &self,
        event_id: &str,
        credit: &NewTransaction,
    ) -> Result<Option<Transaction>> {
        let mut tx = D::begin_write(self.pool()).await?;
        let fresh = sqlx::query(
            "INSERT INTO stripe_events (event_id, received_at) VALUES ($1, $2) \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .arg(event_id)
        .arg(Stamp(credit.created_at))
        .execute(D::exec(&mut tx))
        .await?;
        if D::rows_affected(&fresh) == 0 {
            return Ok(None);
        }
        let written = insert_in::<D>(&mut tx, credit).await?;
        tx.commit().await?;
        Ok(written)
    }

    async fn find_transaction(
        &self,
        kind: TransactionKind,
        reference: &str,
    ) -> Result<Option<Transaction>> {
        let sql = format!(
            "SELECT {TRANSACTION_COLUMNS} FROM billing_transactions WHERE kind = $1 AND reference = $2"
        );
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(kind.as_str())
            .arg(reference)
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.as_ref().map(transaction_row::<D>).transpose()
    }

    async fn balance(&self, user_id: &str) -> Result<Balance> {
        // The casts: PostgreSQL sums BIGINT as NUMERIC.
        let mut conn = self.conn().await?;
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(amount_cents), 0) AS BIGINT) AS balance, \
                 CAST(COALESCE(SUM(CASE WHEN kind = 'deposit' THEN amount_cents ELSE 0 END), 0) AS BIGINT) \
                     AS deposited, \
                 MAX(created_at) AS last_at \
             FROM billing_transactions WHERE user_id = $1",
        )
        .arg(user_id)
        .fetch_one(D::exec(&mut conn))
        .await?;
        let balance: i64 = D::get(&row, "balance")?;
        let deposited: i64 = D::get(&row, "deposited")?;
        Ok(Balance {
            balance_cents: balance,
            total_deposited_cents: deposited,
            total_spent_cents: deposited - balance,
            last_transaction_at: D::opt_time(&row, "last_at")?,
        })
    }

    async fn list_transactions(&self, query: &TransactionQuery) -> Result<TransactionPage> {
        // The page and the totals come from the same snapshot.
        let mut tx = D::begin_snapshot(self.pool()).await?;
        let mut totals = matches::<D>(query);
        totals.push(
            "SELECT kind, COUNT(*) AS n, CAST(COALESCE(SUM(amount_cents), 0) AS BIGINT) AS amount, \
             CAST(COALESCE(SUM(duration_minutes), 0.0) AS DOUBLE PRECISION) AS minutes \
             FROM matches GROUP BY kind ORDER BY kind",
        );
        let rows = D::build(&mut totals).fetch_all(D::exec(&mut tx)).await?;
        let mut by_kind = Vec::new();
        for row in &rows {
            let kind: String = D::get(row, "kind")?;
            let count: i64 = D::get(row, "n")?;
            by_kind.push(KindTotal {
                kind: parse_kind(&kind)?,
                count: count.unsigned_abs(),
                amount_cents: D::get(row, "amount")?,
                minutes: D::get(row, "minutes")?,
            });
        }
        let mut page = matches::<D>(query);
        page.push(format!(
            "SELECT {TRANSACTION_COLUMNS} FROM matches \
             ORDER BY created_at DESC, transaction_id DESC LIMIT "
        ));
        page.push_arg(as_i64(query.limit))
            .push(" OFFSET ")
            .push_arg(as_i64(query.offset));
        let found = D::build(&mut page).fetch_all(D::exec(&mut tx)).await?;
        tx.commit().await?;
        Ok(TransactionPage {
            transactions: found
                .iter()
                .map(transaction_row::<D>)
                .collect::<Result<_>>()?,
            total: by_kind.iter().map(|k| k.count).sum(),
            by_kind,
        })
    }

    async fn end_session_billed(
        &self,
        end: &SessionEnd,
        announce: Announcing<'_, SessionRecord>,
    ) -> Result<Option<EndedSession>> {
        crate::session_rules::check_end_status(end.status)?;
        // The check, the end and the charge are one step that racing callers (close, expiry,
        // the balance reaper) take in turn.
        let mut tx = D::begin_write(self.pool()).await?;
        let sql = format!(
            "SELECT ready_at, alive_at FROM sessions \
             WHERE session_id = $1 AND status IN ('creating', 'ready'){}",
            D::FOR_UPDATE
        );
        let row = sqlx::query(&sql)
            .arg(end.session_id.as_str())
            .fetch_optional(D::exec(&mut tx))
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let ready_at = D::opt_time(&row, "ready_at")?;
        let alive_at = D::opt_time(&row, "alive_at")?;
        let ended_at = end_time(end, ready_at, alive_at);
        let (code, message) = end.reason.clone().unzip();
        let sql = format!(
            "UPDATE sessions SET status = $2, ended_at = $3, \
                 error_code = COALESCE($4, error_code), error_message = COALESCE($5, error_message) \
             WHERE session_id = $1 RETURNING {}",
            columns::plain(columns::SESSION)
        );
        let updated = sqlx::query(&sql)
            .arg(end.session_id.as_str())
            .arg(end.status.as_str())
            .arg(Stamp(ended_at))
            .arg(code)
            .arg(message)
            .fetch_one(D::exec(&mut tx))
            .await?;
        let session = rows::session::<D>(&updated)?;
        let charge = match ready_at {
            Some(ready_at) => {
                insert_in::<D>(&mut tx, &usage(end, &session, ready_at, ended_at)).await?
            }
            None => None,
        };
        let deliveries = outbox::stage::<D, _>(&mut tx, announce, &session).await?;
        tx.commit().await?;
        outbox::stored(announce, deliveries);
        Ok(Some(EndedSession { session, charge }))
    }

    async fn record_heartbeats(&self, session_ids: &[String], at: DateTime<Utc>) -> Result<u64> {
        if session_ids.is_empty() {
            return Ok(0);
        }
        let mut q = QueryBuilder::<D>::new("UPDATE sessions SET alive_at = ");
        q.push_arg(Stamp(at))
            .push(" WHERE status = 'ready' AND session_id IN (")
            .push_args(session_ids.iter().map(String::as_str))
            .push(")");
        let mut conn = self.conn().await?;
        let done = D::build(&mut q).execute(D::exec(&mut conn)).await?;
        Ok(D::rows_affected(&done))
    }

    async fn session_heartbeat(&self, session_id: &str) -> Result<Option<DateTime<Utc>>> {
        let mut conn = self.conn().await?;
        let row = sqlx::query("SELECT alive_at FROM sessions WHERE session_id = $1")
            .arg(session_id)
            .fetch_optional(D::exec(&mut conn))
            .await?;
        match row {
            Some(row) => D::opt_time(&row, "alive_at"),
            None => Ok(None),
        }
    }
}

fn transaction_row<D: Dialect>(row: &D::Row) -> Result<Transaction> {
    let kind: String = D::get(row, "kind")?;
    Ok(Transaction {
        transaction_id: D::get(row, "transaction_id")?,
        user_id: D::get(row, "user_id")?,
        kind: parse_kind(&kind)?,
        amount_cents: D::get(row, "amount_cents")?,
        description: D::get(row, "description")?,
        created_at: D::time(row, "created_at")?,
        session_id: D::get(row, "session_id")?,
        job_id: D::get(row, "job_id")?,
        duration_minutes: D::get(row, "duration_minutes")?,
        reference: D::get(row, "reference")?,
    })
}

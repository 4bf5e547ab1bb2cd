//! Webhooks and the delivery outbox. An event's deliveries (one per webhook that wants it)
//! are written in one transaction before anything is sent; senders claim due deliveries
//! with one conditional `UPDATE … RETURNING` that takes a lease, so two senders never
//! attempt one delivery at once, and a sender that died mid-attempt leaves a lease that
//! runs out. An attempt's result is recorded only by the claim that made it (its attempt
//! number), never by a stale sender.
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::dialect::{parse_column, Dialect, QueryExt};
use super::{as_i64, SqlStore};
use crate::missing_reference::insert_error;
use crate::timestamp::Stamp;
use crate::{
    AttemptResult, DeliveryRecord, DeliveryStatus, NewWebhookEvent, Result, StoreError,
    WebhookRecord, WebhookStore, WebhookUpdate,
};

const WEBHOOK_COLUMNS: &str =
    "webhook_id, user_id, url, description, events, active, secret_sealed, created_at, updated_at";
const DELIVERY_COLUMNS: &str = "delivery_id, webhook_id, user_id, event_id, event_type, body, \
     status, attempts, next_attempt_at, lease_until, last_attempt_at, last_status_code, \
     last_error, last_response, created_at, delivered_at";

#[async_trait]
impl<D: Dialect> WebhookStore for SqlStore<D> {
    async fn insert_webhook(
        &self,
        hook: &WebhookRecord,
        max_per_user: u64,
    ) -> Result<Option<WebhookRecord>> {
        let mut tx = D::begin_write(self.pool()).await?;
        // Lock the user's row so concurrent creates count one after the other (SQLite's
        // write transaction already serializes them).
        sqlx::query(&format!(
            "SELECT user_id FROM users WHERE user_id = $1{}",
            D::FOR_UPDATE
        ))
        .arg(hook.user_id.as_str())
        .fetch_optional(D::exec(&mut tx))
        .await?;
        let row = sqlx::query("SELECT COUNT(*) AS n FROM webhooks WHERE user_id = $1")
            .arg(hook.user_id.as_str())
            .fetch_one(D::exec(&mut tx))
            .await?;
        let count: i64 = D::get(&row, "n")?;
        if count >= as_i64(max_per_user) {
            return Ok(None);
        }
        let sql = format!(
            "INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             RETURNING {WEBHOOK_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .arg(hook.webhook_id.as_str())
            .arg(hook.user_id.as_str())
            .arg(hook.url.as_str())
            .arg(hook.description.as_str())
            .arg(events_json(&hook.events)?)
            .arg(hook.active)
            .arg(hook.secret_sealed.as_str())
            .arg(Stamp(hook.created_at))
            .arg(Stamp(hook.updated_at))
            .fetch_one(D::exec(&mut tx))
            .await
            .map_err(|e| insert_error(e, "webhook_id", "user"))?;
        let stored = webhook_row::<D>(&row)?;
        tx.commit().await?;
        Ok(Some(stored))
    }

    async fn get_webhook(&self, webhook_id: &str) -> Result<Option<WebhookRecord>> {
        let mut conn = self.conn().await?;
        let row = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE webhook_id = $1"
        ))
        .arg(webhook_id)
        .fetch_optional(D::exec(&mut conn))
        .await?;
        row.as_ref().map(webhook_row::<D>).transpose()
    }

    async fn list_webhooks(&self, user_id: &str) -> Result<Vec<WebhookRecord>> {
        let mut conn = self.conn().await?;
        let rows = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE user_id = $1 \
             ORDER BY created_at, webhook_id"
        ))
        .arg(user_id)
        .fetch_all(D::exec(&mut conn))
        .await?;
        rows.iter().map(webhook_row::<D>).collect()
    }

    async fn update_webhook(
        &self,
        webhook_id: &str,
        update: &WebhookUpdate,
        at: DateTime<Utc>,
    ) -> Result<Option<WebhookRecord>> {
        let events = update.events.as_deref().map(events_json).transpose()?;
        let sql = format!(
            "UPDATE webhooks SET url = COALESCE($2, url), description = COALESCE($3, description), \
             events = COALESCE($4, events), active = CASE WHEN $5 THEN $8 ELSE active END, \
             secret_sealed = COALESCE($6, secret_sealed), updated_at = $7 \
             WHERE webhook_id = $1 RETURNING {WEBHOOK_COLUMNS}"
        );
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(webhook_id)
            .arg(update.url.as_deref())
            .arg(update.description.as_deref())
            .arg(events)
            .arg(update.active.is_some())
            .arg(update.secret_sealed.as_deref())
            .arg(Stamp(at))
            .arg(update.active.unwrap_or(false))
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.as_ref().map(webhook_row::<D>).transpose()
    }

    async fn delete_webhook(&self, webhook_id: &str) -> Result<bool> {
        let mut tx = D::begin_write(self.pool()).await?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1")
            .arg(webhook_id)
            .execute(D::exec(&mut tx))
            .await?;
        let done = sqlx::query("DELETE FROM webhooks WHERE webhook_id = $1")
            .arg(webhook_id)
            .execute(D::exec(&mut tx))
            .await?;
        tx.commit().await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn enqueue_webhook_event(
        &self,
        event: &NewWebhookEvent,
        only_webhook: Option<&str>,
        new_delivery_id: &(dyn Fn() -> String + Send + Sync),
    ) -> Result<Vec<String>> {
        // Most users have no webhook: a plain read first spares every session event a
        // write transaction (SQLite's lock) when nothing would be written.
        let wanted = |hook: &WebhookRecord| match only_webhook {
            Some(only) => hook.webhook_id == only,
            None => hook.active && wants(&hook.events, &event.event_type),
        };
        if !self.list_webhooks(&event.user_id).await?.iter().any(wanted) {
            return Ok(Vec::new());
        }
        let mut tx = D::begin_write(self.pool()).await?;
        let ids = insert_deliveries::<D>(&mut tx, event, only_webhook, new_delivery_id).await?;
        tx.commit().await?;
        Ok(ids)
    }

    async fn claim_webhook_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<DeliveryRecord>> {
        // The conditions are repeated outside the sub-select: on PostgreSQL a claimer that
        // waited for another's row lock re-checks them on the row as the other left it, so
        // a row just leased is skipped instead of claimed twice.
        let sql = format!(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, lease_until = $2, \
             last_attempt_at = $1 \
             WHERE delivery_id IN (SELECT delivery_id FROM webhook_deliveries \
               WHERE status = 'pending' AND next_attempt_at <= $1 \
               AND (lease_until IS NULL OR lease_until <= $1) \
               ORDER BY next_attempt_at LIMIT $3) \
             AND status = 'pending' AND (lease_until IS NULL OR lease_until <= $1) \
             RETURNING {DELIVERY_COLUMNS}"
        );
        let mut conn = self.conn().await?;
        let rows = sqlx::query(&sql)
            .arg(Stamp(now))
            .arg(Stamp(lease_until))
            .arg(as_i64(limit))
            .fetch_all(D::exec(&mut conn))
            .await?;
        let mut claimed: Vec<DeliveryRecord> =
            rows.iter().map(delivery_row::<D>).collect::<Result<_>>()?;
        claimed.sort_by_key(|d| d.next_attempt_at);
        Ok(claimed)
    }

    async fn record_webhook_attempt(
        &self,
        delivery_id: &str,
        result: &AttemptResult,
    ) -> Result<bool> {
        let delivered_at = (result.status == DeliveryStatus::Delivered).then_some(Stamp(result.at));
        let mut conn = self.conn().await?;
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = $3, next_attempt_at = $4, lease_until = NULL, \
             last_status_code = $5, last_error = $6, last_response = $7, \
             delivered_at = COALESCE($8, delivered_at) \
             WHERE delivery_id = $1 AND attempts = $2 AND status = 'pending'",
        )
        .arg(delivery_id)
        .arg(i64::from(result.attempt))
        .arg(result.status.as_str())
        .arg(Stamp(result.next_attempt_at))
        .arg(result.status_code.map(i64::from))
        .arg(result.error.as_deref())
        .arg(result.response.as_deref())
        .arg(delivered_at)
        .execute(D::exec(&mut conn))
        .await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn list_webhook_deliveries(
        &self,
        webhook_id: &str,
        status: Option<DeliveryStatus>,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<DeliveryRecord>> {
        let mut conn = self.conn().await?;
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 \
             AND ($2 IS NULL OR status = $2) \
             ORDER BY created_at DESC, delivery_id DESC LIMIT $3 OFFSET $4"
        ))
        .arg(webhook_id)
        .arg(status.map(DeliveryStatus::as_str))
        .arg(as_i64(limit))
        .arg(as_i64(offset))
        .fetch_all(D::exec(&mut conn))
        .await?;
        rows.iter().map(delivery_row::<D>).collect()
    }

    async fn get_webhook_delivery(
        &self,
        webhook_id: &str,
        delivery_id: &str,
    ) -> Result<Option<DeliveryRecord>> {
        let mut conn = self.conn().await?;
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
             WHERE webhook_id = $1 AND delivery_id = $2"
        ))
        .arg(webhook_id)
        .arg(delivery_id)
        .fetch_optional(D::exec(&mut conn))
        .await?;
        row.as_ref().map(delivery_row::<D>).transpose()
    }

    async fn expire_webhook_deliveries(&self, before: DateTime<Utc>, limit: u64) -> Result<u64> {
        let mut conn = self.conn().await?;
        let done = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE delivery_id IN (SELECT delivery_id \
             FROM webhook_deliveries WHERE status <> 'pending' AND created_at < $1 LIMIT $2)",
        )
        .arg(Stamp(before))
        .arg(as_i64(limit))
        .execute(D::exec(&mut conn))
        .await?;
        Ok(D::rows_affected(&done))
    }

    async fn retry_webhook_delivery(
        &self,
        webhook_id: &str,
        delivery_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<DeliveryRecord>> {
        let mut conn = self.conn().await?;
        let row = sqlx::query(&format!(
            "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, \
             next_attempt_at = $3, lease_until = NULL \
             WHERE webhook_id = $1 AND delivery_id = $2 AND status = 'dead' \
             RETURNING {DELIVERY_COLUMNS}"
        ))
        .arg(webhook_id)
        .arg(delivery_id)
        .arg(Stamp(now))
        .fetch_optional(D::exec(&mut conn))
        .await?;
        row.as_ref().map(delivery_row::<D>).transpose()
    }
}

/// Stores one `pending` delivery of `event` per webhook that wants it (see
/// [`WebhookStore::enqueue_webhook_event`]) in the transaction `conn` is in; their ids.
pub(super) async fn insert_deliveries<D: Dialect>(
    conn: &mut D::Connection,
    event: &NewWebhookEvent,
    only_webhook: Option<&str>,
    new_delivery_id: &(dyn Fn() -> String + Send + Sync),
) -> Result<Vec<String>> {
    let rows = sqlx::query(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE user_id = $1 ORDER BY created_at, webhook_id"
    ))
    .arg(event.user_id.as_str())
    .fetch_all(D::exec(&mut *conn))
    .await?;
    let mut ids = Vec::new();
    for row in &rows {
        let hook = webhook_row::<D>(row)?;
        let wanted = match only_webhook {
            Some(only) => hook.webhook_id == only,
            None => hook.active && wants(&hook.events, &event.event_type),
        };
        if !wanted {
            continue;
        }
        let id = new_delivery_id();
        sqlx::query(
            "INSERT INTO webhook_deliveries (delivery_id, webhook_id, user_id, event_id, \
             event_type, body, status, attempts, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7)",
        )
        .arg(id.as_str())
        .arg(hook.webhook_id.as_str())
        .arg(event.user_id.as_str())
        .arg(event.event_id.as_str())
        .arg(event.event_type.as_str())
        .arg(event.body.as_str())
        .arg(Stamp(event.created_at))
        .execute(D::exec(&mut *conn))
        .await
        .map_err(|e| insert_error(e, "delivery_id", "webhook"))?;
        ids.push(id);
    }
    Ok(ids)
}

/// Whether a webhook subscribed to `events` receives `event_type`.
fn wants(events: &[String], event_type: &str) -> bool {
    events.iter().any(|e| e == "*" || e == event_type)
}

fn events_json(events: &[String]) -> Result<String> {
    serde_json::to_string(events).map_err(|e| StoreError::Invalid(e.to_string()))
}

fn webhook_row<D: Dialect>(row: &D::Row) -> Result<WebhookRecord> {
    let events: String = D::get(row, "events")?;
    Ok(WebhookRecord {
        webhook_id: D::get(row, "webhook_id")?,
        user_id: D::get(row, "user_id")?,
        url: D::get(row, "url")?,
        description: D::get(row, "description")?,
        events: serde_json::from_str(&events)
            .map_err(|e| StoreError::Corrupt(format!("webhook events {events:?}: {e}")))?,
        active: D::get(row, "active")?,
        secret_sealed: D::get(row, "secret_sealed")?,
        created_at: D::time(row, "created_at")?,
        updated_at: D::time(row, "updated_at")?,
    })
}

fn delivery_row<D: Dialect>(row: &D::Row) -> Result<DeliveryRecord> {
    let status: String = D::get(row, "status")?;
    let attempts: i64 = D::get(row, "attempts")?;
    let code: Option<i64> = D::get(row, "last_status_code")?;
    Ok(DeliveryRecord {
        delivery_id: D::get(row, "delivery_id")?,
        webhook_id: D::get(row, "webhook_id")?,
        user_id: D::get(row, "user_id")?,
        event_id: D::get(row, "event_id")?,
        event_type: D::get(row, "event_type")?,
        body: D::get(row, "body")?,
        status: parse_column(&status, "delivery status", DeliveryStatus::parse)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_at: D::time(row, "next_attempt_at")?,
        lease_until: D::opt_time(row, "lease_until")?,
        last_attempt_at: D::opt_time(row, "last_attempt_at")?,
        last_status_code: code.and_then(|c| u16::try_from(c).ok()),
        last_error: D::get(row, "last_error")?,
        last_response: D::get(row, "last_response")?,
        created_at: D::time(row, "created_at")?,
        delivered_at: D::opt_time(row, "delivered_at")?,
    })
}

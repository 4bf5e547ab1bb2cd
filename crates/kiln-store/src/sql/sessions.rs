//! Sessions, and (through [`super::interactions`]) the interactions run in them.
//!
//! Every status change is one conditional `UPDATE … RETURNING`, so of racing callers exactly
//! one gets the row back: SQLite runs writers one at a time, and the later ones no longer find
//! the status they expect; on PostgreSQL a racing caller blocks on the row lock, then
//! re-checks the WHERE clause against the row the winner committed (READ COMMITTED) and
//! matches nothing.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;

use super::dialect::{BuilderExt, Dialect, QueryExt};
use super::{instances, interactions, outbox, rows, SqlStore};
use crate::columns;
use crate::timestamp::Stamp;
use crate::{
    Announcing, InteractionOutcome, InteractionRecord, NewInteraction, NewSession, Result,
    SessionChange, SessionFilter, SessionRecord, SessionStatus, SessionStore, SessionUsage,
};

impl<D: Dialect> SqlStore<D> {
    /// `UPDATE sessions SET {set_and_where} RETURNING …`, with `$1` the session id, `$2` and
    /// `$3` the `args`, `$4` the instant, and what `announce` makes of the changed row in
    /// the same transaction.
    async fn update_session(
        &self,
        set_and_where: &str,
        session_id: &str,
        args: [&str; 2],
        at: DateTime<Utc>,
        announce: Announcing<'_, SessionRecord>,
    ) -> Result<Option<SessionRecord>> {
        let sql = format!(
            "UPDATE sessions SET {set_and_where} RETURNING {}",
            columns::plain(columns::SESSION)
        );
        let mut tx = D::begin_write(self.pool()).await?;
        let row = sqlx::query(&sql)
            .arg(session_id)
            .arg(args[0])
            .arg(args[1])
            .arg(Stamp(at))
            .fetch_optional(D::exec(&mut tx))
            .await?;
        let Some(record) = row.as_ref().map(rows::session::<D>).transpose()? else {
            return Ok(None);
        };
        let deliveries = outbox::stage::<D, _>(&mut tx, announce, &record).await?;
        tx.commit().await?;
        outbox::stored(announce, deliveries);
        Ok(Some(record))
    }
}

#[async_trait]
impl<D: Dialect> SessionStore for SqlStore<D> {
    async fn insert_session(
        &self,
        session: &NewSession,
        announce: Announcing<'_, SessionRecord>,
    ) -> Result<SessionRecord> {
        instances::insert(self, session, None, announce).await
    }

    async fn get_session(&self, session_id: &str) -> Result<Option<SessionRecord>> {
        let sql = format!(
            "SELECT {} FROM sessions WHERE session_id = $1",
            columns::plain(columns::SESSION)
        );
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(session_id)
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.as_ref().map(rows::session::<D>).transpose()
    }

    async fn list_sessions(
        &self,
        user_id: &str,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<SessionRecord>, u64)> {
        let filter = SessionFilter {
            samples_only: true,
            ..SessionFilter::default()
        };
        instances::list(self, user_id, &filter, limit, offset).await
    }

    async fn list_instances(
        &self,
        user_id: &str,
        filter: &SessionFilter,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<SessionRecord>, u64)> {
        instances::list(self, user_id, filter, limit, offset).await
    }

    async fn change_session(
        &self,
        session_id: &str,
        change: &SessionChange,
    ) -> Result<Option<SessionRecord>> {
        instances::change(self, session_id, change).await
    }

    async fn count_live_sessions(&self, user_id: &str) -> Result<u64> {
        let mut conn = self.conn().await?;
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM sessions WHERE user_id = $1 AND status IN ('creating', 'ready')",
        )
        .arg(user_id)
        .fetch_one(D::exec(&mut conn))
        .await?;
        Ok(D::get::<i64>(&row, "n")?.unsigned_abs())
    }

    async fn list_sessions_in(&self, statuses: &[SessionStatus]) -> Result<Vec<SessionRecord>> {
        if statuses.is_empty() {
            return Ok(Vec::new());
        }
        let mut select = QueryBuilder::<D>::new(format!(
            "SELECT {} FROM sessions WHERE status IN (",
            columns::plain(columns::SESSION)
        ));
        select
            .push_args(statuses.iter().map(|s| s.as_str()))
            .push(") ORDER BY requested_at, session_id");
        let mut conn = self.conn().await?;
        let found = D::build(&mut select).fetch_all(D::exec(&mut conn)).await?;
        found.iter().map(rows::session::<D>).collect()
    }

    async fn mark_session_ready(
        &self,
        session_id: &str,
        sandbox_id: &str,
        location: &str,
        at: DateTime<Utc>,
        announce: Announcing<'_, SessionRecord>,
    ) -> Result<Option<SessionRecord>> {
        self.update_session(
            "status = 'ready', sandbox_id = $2, location = $3, ready_at = $4 \
             WHERE session_id = $1 AND status = 'creating'",
            session_id,
            [sandbox_id, location],
            at,
            announce,
        )
        .await
    }

    async fn mark_session_error(
        &self,
        session_id: &str,
        code: &str,
        message: &str,
        at: DateTime<Utc>,
        announce: Announcing<'_, SessionRecord>,
    ) -> Result<Option<SessionRecord>> {
        self.update_session(
            "status = 'error', error_code = $2, error_message = $3, ended_at = $4 \
             WHERE session_id = $1 AND status = 'creating'",
            session_id,
            [code, message],
            at,
            announce,
        )
        .await
    }

    async fn end_session(
        &self,
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
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(session_id)
            .arg(status.as_str())
            .arg(Stamp(at))
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.as_ref().map(rows::session::<D>).transpose()
    }

    async fn record_session_usage(&self, session_id: &str, usage: &SessionUsage) -> Result<bool> {
        let number = |n: Option<u64>| n.map(super::as_i64);
        let mut conn = self.conn().await?;
        let done = sqlx::query(
            "UPDATE sessions SET usage_cpu_micros = COALESCE($2, usage_cpu_micros), \
                 usage_memory_peak_bytes = COALESCE($3, usage_memory_peak_bytes), \
                 usage_disk_used_bytes = COALESCE($4, usage_disk_used_bytes), \
                 usage_disk_limit_bytes = COALESCE($5, usage_disk_limit_bytes), \
                 usage_pids_peak = CASE WHEN usage_pids_peak IS NULL OR usage_pids_peak < $6 \
                     THEN $6 ELSE usage_pids_peak END, \
                 usage_at = $7 \
             WHERE session_id = $1 AND (usage_at IS NULL OR usage_at <= $7)",
        )
        .arg(session_id)
        .arg(number(usage.cpu_micros))
        .arg(number(usage.memory_peak_bytes))
        .arg(number(usage.disk_used_bytes))
        .arg(number(usage.disk_limit_bytes))
        .arg(number(usage.pids_peak))
        .arg(Stamp(usage.sampled_at))
        .execute(D::exec(&mut conn))
        .await?;
        Ok(D::rows_affected(&done) > 0)
    }

    async fn insert_interaction(&self, interaction: &NewInteraction) -> Result<InteractionRecord> {
        interactions::insert(self, interaction).await
    }

    async fn complete_interaction(
        &self,
        interaction_id: &str,
        outcome: &InteractionOutcome,
    ) -> Result<bool> {
        interactions::complete(self, interaction_id, outcome).await
    }

    async fn get_users_interaction(
        &self,
        user_id: &str,
        session_id: &str,
        interaction_id: &str,
    ) -> Result<Option<InteractionRecord>> {
        interactions::get(self, session_id, interaction_id, Some(user_id)).await
    }

    async fn get_interaction(
        &self,
        session_id: &str,
        interaction_id: &str,
    ) -> Result<Option<InteractionRecord>> {
        interactions::get(self, session_id, interaction_id, None).await
    }

    async fn list_unfinished_interactions(&self) -> Result<Vec<InteractionRecord>> {
        interactions::list_unfinished(self).await
    }

    async fn expire_interaction_output(
        &self,
        finished_before: DateTime<Utc>,
        at: DateTime<Utc>,
        limit: u64,
    ) -> Result<u64> {
        interactions::expire_output(self, finished_before, at, limit).await
    }
}

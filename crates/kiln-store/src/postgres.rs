//! PostgreSQL: a connection pool, TIMESTAMPTZ columns. The queries are [`crate::sql`]'s;
//! this module connects and says how PostgreSQL differs (row locks where SQLite locks the
//! database, REPEATABLE READ for one snapshot, ILIKE, BOOLEAN).
mod agent_jobs;
mod billing;
mod interactions;
mod sessions;
mod verification_jobs;

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgQueryResult};
use sqlx::{Connection, Executor, Pool, Postgres, QueryBuilder, Transaction};

use crate::sql::dialect::SqlQuery;
use crate::sql::{Dialect, SqlStore};
use crate::{
    Balance, EndedSession, NewTransaction, SessionEnd, Transaction as LedgerTransaction,
    TransactionKind, TransactionPage, TransactionQuery,
};
use crate::{
    InteractionOutcome, InteractionRecord, JobUpdate, NewInteraction, NewSession,
    NewVerificationJob, Result, SessionRecord, SessionStatus, StoreError, VerificationJobRecord,
};

/// Enough for the API's concurrency on a small server; PostgreSQL's default limit is 100.
const MAX_CONNECTIONS: u32 = 10;
/// How long a query waits for a free connection before failing instead of hanging.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The PostgreSQL store.
pub type PgStore = SqlStore<Postgres>;

impl Dialect for Postgres {
    const BACKEND: &'static str = "postgres";
    const TRUE: &'static str = "TRUE";
    const FALSE: &'static str = "FALSE";
    const LIKE_IGNORING_CASE: &'static str = "ILIKE";
    const FOR_UPDATE: &'static str = " FOR UPDATE";

    fn exec<'c>(conn: &'c mut PgConnection) -> impl Executor<'c, Database = Self> {
        conn
    }

    fn build<'b, 'a: 'b>(builder: &'b mut QueryBuilder<'a, Self>) -> SqlQuery<'b, Self> {
        builder.build()
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }

    fn begin_write(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Transaction<'static, Self>>> + Send {
        let pool = pool.clone();
        async move { Ok(pool.begin().await?) }
    }

    fn begin_snapshot(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Transaction<'static, Self>>> + Send {
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
            Ok(tx)
        }
    }
}

impl SqlStore<Postgres> {
    /// Connects to `postgres://…` (or `postgresql://…`) and applies the embedded migrations.
    /// sqlx holds an advisory lock while migrating, so replicas starting together are safe.
    pub async fn open(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url).map_err(|e| open_error(url, e))?;
        // One plain connection first: a pool would retry a refused connection until its
        // acquire timeout, while a wrong URL or a stopped server should fail at once.
        let mut first = PgConnection::connect_with(&options)
            .await
            .map_err(|e| open_error(url, e))?;
        sqlx::migrate!("./migrations/postgres")
            .run_direct(&mut first)
            .await?;
        if let Err(e) = first.close().await {
            tracing::debug!(error = %e, "closing the migration connection");
        }
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        tracing::debug!(url = %crate::redact_url(url), "postgres store open");
        Ok(Self::from_pool(pool))
    }
}

/// The URL is shown without its password.
fn open_error(url: &str, e: sqlx::Error) -> StoreError {
    StoreError::Open(format!("{}: {e}", crate::redact_url(url)))
}

/// Clamps a count from the API to what a BIGINT can hold.
fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[async_trait]
impl crate::SessionStore for PgStore {
    async fn insert_session(&self, session: &NewSession) -> Result<SessionRecord> {
        sessions::insert_session(self.pool(), session).await
    }

    async fn get_session(&self, session_id: &str) -> Result<Option<SessionRecord>> {
        sessions::get_session(self.pool(), session_id).await
    }

    async fn list_sessions(
        &self,
        user_id: &str,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<SessionRecord>, u64)> {
        sessions::list_sessions(self.pool(), user_id, limit, offset).await
    }

    async fn count_live_sessions(&self, user_id: &str) -> Result<u64> {
        sessions::count_live_sessions(self.pool(), user_id).await
    }

    async fn list_sessions_in(&self, statuses: &[SessionStatus]) -> Result<Vec<SessionRecord>> {
        sessions::list_sessions_in(self.pool(), statuses).await
    }

    async fn mark_session_ready(
        &self,
        session_id: &str,
        sandbox_id: &str,
        location: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<SessionRecord>> {
        sessions::mark_session_ready(self.pool(), session_id, sandbox_id, location, at).await
    }

    async fn mark_session_error(
        &self,
        session_id: &str,
        code: &str,
        message: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<SessionRecord>> {
        sessions::mark_session_error(self.pool(), session_id, code, message, at).await
    }

    async fn end_session(
        &self,
        session_id: &str,
        status: SessionStatus,
        at: DateTime<Utc>,
    ) -> Result<Option<SessionRecord>> {
        sessions::end_session(self.pool(), session_id, status, at).await
    }

    async fn insert_interaction(&self, interaction: &NewInteraction) -> Result<InteractionRecord> {
        interactions::insert_interaction(self.pool(), interaction).await
    }

    async fn complete_interaction(
        &self,
        interaction_id: &str,
        outcome: &InteractionOutcome,
    ) -> Result<bool> {
        interactions::complete_interaction(self.pool(), interaction_id, outcome).await
    }

    async fn get_interaction(
        &self,
        session_id: &str,
        interaction_id: &str,
    ) -> Result<Option<InteractionRecord>> {
        interactions::get_interaction(self.pool(), session_id, interaction_id).await
    }

    async fn list_unfinished_interactions(&self) -> Result<Vec<InteractionRecord>> {
        interactions::list_unfinished_interactions(self.pool()).await
    }
}

#[async_trait]
impl crate::VerificationStore for PgStore {
    async fn insert_verification_job(
        &self,
        job: &NewVerificationJob,
    ) -> Result<VerificationJobRecord> {
        verification_jobs::insert_verification_job(self.pool(), job).await
    }

    async fn get_verification_job(
        &self,
        session_id: &str,
        job_id: &str,
    ) -> Result<Option<VerificationJobRecord>> {
        verification_jobs::get_verification_job(self.pool(), session_id, job_id).await
    }

    async fn update_verification_job(
        &self,
        job_id: &str,
        update: &JobUpdate,
    ) -> Result<Option<VerificationJobRecord>> {
        verification_jobs::update_verification_job(self.pool(), job_id, update).await
    }

    async fn list_unfinished_verification_jobs(&self) -> Result<Vec<VerificationJobRecord>> {
        verification_jobs::list_unfinished_verification_jobs(self.pool()).await
    }
}

#[async_trait]
impl crate::BillingStore for PgStore {
    async fn insert_transaction(
        &self,
        transaction: &NewTransaction,
    ) -> Result<Option<LedgerTransaction>> {
        billing::insert_transaction(self.pool(), transaction).await
    }

    async fn record_stripe_credit(
        &self,
        event_id: &str,
        credit: &NewTransaction,
    ) -> Result<Option<LedgerTransaction>> {
        billing::record_stripe_credit(self.pool(), event_id, credit).await
    }

    async fn find_transaction(
        &self,
        kind: TransactionKind,
        reference: &str,
    ) -> Result<Option<LedgerTransaction>> {
        billing::find_transaction(self.pool(), kind, reference).await
    }

    async fn balance(&self, user_id: &str) -> Result<Balance> {
        billing::balance(self.pool(), user_id).await
    }

    async fn list_transactions(&self, query: &TransactionQuery) -> Result<TransactionPage> {
        billing::list_transactions(self.pool(), query).await
    }

    async fn end_session_billed(&self, end: &SessionEnd) -> Result<Option<EndedSession>> {
        billing::end_session_billed(self.pool(), end).await
    }

    async fn record_heartbeats(&self, session_ids: &[String], at: DateTime<Utc>) -> Result<u64> {
        billing::record_heartbeats(self.pool(), session_ids, at).await
    }

    async fn session_heartbeat(&self, session_id: &str) -> Result<Option<DateTime<Utc>>> {
        billing::session_heartbeat(self.pool(), session_id).await
    }
}

#[async_trait]
impl crate::AgentJobStore for PgStore {
    async fn insert_agent_job(&self, job: &crate::NewAgentJob) -> Result<crate::AgentJobRecord> {
        agent_jobs::insert_agent_job(self.pool(), job).await
    }

    async fn get_agent_job(&self, job_id: &str) -> Result<Option<crate::AgentJobRecord>> {
        agent_jobs::get_agent_job(self.pool(), job_id).await
    }

    async fn list_agent_jobs(
        &self,
        user_id: &str,
        after: Option<&crate::AgentJobCursor>,
        limit: u64,
    ) -> Result<Vec<crate::AgentJobRecord>> {
        agent_jobs::list_agent_jobs(self.pool(), user_id, after, limit).await
    }

    async fn update_agent_job(
        &self,
        job_id: &str,
        update: &crate::AgentJobUpdate,
    ) -> Result<Option<crate::AgentJobRecord>> {
        agent_jobs::update_agent_job(self.pool(), job_id, update).await
    }

    async fn set_agent_job_result(&self, job_id: &str, result_path: &str) -> Result<bool> {
        agent_jobs::set_agent_job_result(self.pool(), job_id, result_path).await
    }

    async fn list_unfinished_agent_jobs(&self) -> Result<Vec<crate::AgentJobRecord>> {
        agent_jobs::list_unfinished_agent_jobs(self.pool()).await
    }
}

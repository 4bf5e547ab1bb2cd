//! SQLite: one file, WAL journal, a small connection pool. The queries are
//! [`crate::sql`]'s; this module opens the database and says how SQLite differs.
mod agent_jobs;
mod billing;
mod interactions;
mod rows;
mod sessions;
mod verification_jobs;

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions,
    SqliteQueryResult, SqliteSynchronous,
};
use sqlx::{Executor, Pool, QueryBuilder, Sqlite, Transaction};

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

/// How long a connection waits for another one's write lock before giving up with "busy".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// SQLite serializes writers anyway; a few connections let reads run beside a write.
const MAX_CONNECTIONS: u32 = 8;

/// The SQLite store.
pub type SqliteStore = SqlStore<Sqlite>;

impl Dialect for Sqlite {
    const BACKEND: &'static str = "sqlite";
    const TRUE: &'static str = "1";
    const FALSE: &'static str = "0";
    const LIKE_IGNORING_CASE: &'static str = "LIKE";
    const FOR_UPDATE: &'static str = "";

    fn exec<'c>(conn: &'c mut SqliteConnection) -> impl Executor<'c, Database = Self> {
        conn
    }

    fn build<'b, 'a: 'b>(builder: &'b mut QueryBuilder<'a, Self>) -> SqlQuery<'b, Self> {
        builder.build()
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    fn begin_write(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Transaction<'static, Self>>> + Send {
        let pool = pool.clone();
        async move { Ok(pool.begin_with("BEGIN IMMEDIATE").await?) }
    }

    fn begin_snapshot(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Transaction<'static, Self>>> + Send {
        let pool = pool.clone();
        async move { Ok(pool.begin().await?) }
    }
}

impl SqlStore<Sqlite> {
    /// Opens (creating if missing, parent directory included) the database at
    /// `sqlite://PATH` or `sqlite:PATH` and applies the embedded migrations.
    pub async fn open(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Open(format!("{url}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .synchronous(SqliteSynchronous::Normal);

        let mut pool_options = SqlitePoolOptions::new().max_connections(MAX_CONNECTIONS);
        if url.contains(":memory:") || url.contains("mode=memory") {
            // An in-memory database lives only while a connection to it is open.
            pool_options = pool_options
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        } else if let Some(parent) = options
            .get_filename()
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Open(format!("cannot create {}: {e}", parent.display()))
            })?;
        }

        let pool = pool_options
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Open(format!("{url}: {e}")))?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        tracing::debug!(url, "sqlite store open");
        Ok(Self::from_pool(pool))
    }
}

/// Clamps a count from the API to what SQLite's 64-bit integers can hold.
fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[async_trait]
impl crate::SessionStore for SqliteStore {
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
impl crate::VerificationStore for SqliteStore {
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
impl crate::BillingStore for SqliteStore {
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
impl crate::AgentJobStore for SqliteStore {
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

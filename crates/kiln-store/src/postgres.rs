//! PostgreSQL implementation of the store: a connection pool, TIMESTAMPTZ columns.
//!
//! The SQL mirrors [`crate::sqlite`] statement for statement; the two differ in types
//! (TIMESTAMPTZ, BOOLEAN), in case-insensitive matching (ILIKE) and in how imports are
//! serialized (a row lock on the dataset, see `samples::import_samples`).
mod agent_jobs;
mod billing;
mod github;
mod interactions;
mod rows;
mod samples;
mod sessions;
mod verification_jobs;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Row};

use crate::columns;
use crate::timestamp::to_micros;
use crate::unique_violation::conflict_or;
use crate::{
    ApiKeyRecord, Dataset, ImportSummary, InteractionOutcome, InteractionRecord, JobUpdate,
    NewApiKey, NewInteraction, NewRefreshToken, NewSession, NewUser, NewVerificationJob,
    RefreshOutcome, Result, Sample, SampleImport, SamplePage, SampleQuery, SessionRecord,
    SessionStatus, Store, StoreError, User, VerificationJobRecord,
};
use crate::{
    Balance, EndedSession, NewTransaction, SessionEnd, Transaction, TransactionKind,
    TransactionPage, TransactionQuery,
};

/// Enough for the API's concurrency on a small server; PostgreSQL's default limit is 100.
const MAX_CONNECTIONS: u32 = 10;
/// How long a query waits for a free connection before failing instead of hanging.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
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
        Ok(Self { pool })
    }

    /// Waits for every connection to close.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The URL is shown without its password.
fn open_error(url: &str, e: sqlx::Error) -> StoreError {
    StoreError::Open(format!("{}: {e}", crate::redact_url(url)))
}

fn opt_micros(value: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    value.map(to_micros)
}

/// Clamps a count from the API to what a BIGINT can hold.
fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_user(&self, user: &NewUser) -> Result<User> {
        let sql = format!(
            "INSERT INTO users (user_id, name, email, github_id, github_login, is_admin, is_active, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, TRUE, $7) RETURNING {}",
            columns::plain(columns::USER)
        );
        let row = sqlx::query(&sql)
            .bind(&user.user_id)
            .bind(&user.name)
            .bind(&user.email)
            .bind(&user.github_id)
            .bind(&user.github_login)
            .bind(user.is_admin)
            .bind(to_micros(user.created_at))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| conflict_or(e, "user_id", &["github_id"]))?;
        rows::user(&row, "")
    }

    async fn get_user(&self, user_id: &str) -> Result<Option<User>> {
        let sql = format!(
            "SELECT {} FROM users WHERE user_id = $1",
            columns::plain(columns::USER)
        );
        let row = sqlx::query(&sql)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| rows::user(&r, "")).transpose()
    }

    async fn get_user_by_github_id(&self, github_id: &str) -> Result<Option<User>> {
        let sql = format!(
            "SELECT {} FROM users WHERE github_id = $1",
            columns::plain(columns::USER)
        );
        let row = sqlx::query(&sql)
            .bind(github_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| rows::user(&r, "")).transpose()
    }

    async fn count_users(&self) -> Result<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(count.unsigned_abs())
    }

    async fn set_terms_accepted(&self, user_id: &str, at: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE users SET terms_accepted_at = $1 WHERE user_id = $2")
            .bind(to_micros(at))
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_last_login(&self, user_id: &str, at: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE users SET last_login_at = $1 WHERE user_id = $2")
            .bind(to_micros(at))
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert_api_key(&self, key: &NewApiKey) -> Result<ApiKeyRecord> {
        let sql = format!(
            "INSERT INTO api_keys (key_id, user_id, name, key_hash, masked, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {}",
            columns::plain(columns::API_KEY)
        );
        let row = sqlx::query(&sql)
            .bind(&key.key_id)
            .bind(&key.user_id)
            .bind(&key.name)
            .bind(&key.key_hash)
            .bind(&key.masked)
            .bind(to_micros(key.created_at))
            .bind(opt_micros(key.expires_at))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| conflict_or(e, "key_id", &["key_hash"]))?;
        rows::api_key(&row, "")
    }

    async fn find_api_key(
        &self,
        key_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(ApiKeyRecord, User)>> {
        let sql = format!(
            "SELECT {}, {} FROM api_keys k JOIN users u ON u.user_id = k.user_id \
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > $2)",
            columns::aliased("k", "k_", columns::API_KEY),
            columns::aliased("u", "u_", columns::USER)
        );
        let row = sqlx::query(&sql)
            .bind(key_hash)
            .bind(to_micros(now))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((rows::api_key(&r, "k_")?, rows::user(&r, "u_")?)))
            .transpose()
    }

    async fn list_api_keys(&self, user_id: &str) -> Result<Vec<ApiKeyRecord>> {
        let sql = format!(
            "SELECT {} FROM api_keys WHERE user_id = $1 ORDER BY created_at, key_id",
            columns::plain(columns::API_KEY)
        );
        let found = sqlx::query(&sql)
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        found.iter().map(|r| rows::api_key(r, "")).collect()
    }

    async fn revoke_api_key(&self, user_id: &str, key_id: &str, at: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE key_id = $2 AND user_id = $3 AND revoked_at IS NULL",
        )
        .bind(to_micros(at))
        .bind(key_id)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn touch_api_key(&self, key_id: &str, at: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE key_id = $2")
            .bind(to_micros(at))
            .bind(key_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert_refresh_token(&self, token: &NewRefreshToken) -> Result<()> {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_id, family_id, user_id, issued_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&token.token_id)
        .bind(&token.family_id)
        .bind(&token.user_id)
        .bind(to_micros(token.issued_at))
        .bind(to_micros(token.expires_at))
        .execute(&self.pool)
        .await
        .map_err(|e| conflict_or(e, "token_id", &[]))?;
        Ok(())
    }

    async fn consume_refresh_token(
        &self,
        token_id: &str,
        now: DateTime<Utc>,
    ) -> Result<RefreshOutcome> {
        let now = to_micros(now);
        // One statement: a concurrent caller blocks on the row lock, then re-checks the WHERE
        // clause against the committed row (READ COMMITTED), finds `used_at` set and matches
        // nothing. Of N callers, exactly one gets the row back.
        let consumed = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 \
             WHERE token_id = $2 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $1 \
             AND NOT EXISTS (SELECT 1 FROM refresh_tokens f \
                             WHERE f.family_id = refresh_tokens.family_id AND f.revoked_at IS NOT NULL) \
             RETURNING user_id, family_id",
        )
        .bind(now)
        .bind(token_id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = consumed {
            return Ok(RefreshOutcome::Consumed {
                user_id: row.try_get("user_id")?,
                family_id: row.try_get("family_id")?,
            });
        }

        let row = sqlx::query(
            "SELECT user_id, family_id, expires_at, used_at IS NOT NULL OR EXISTS \
                 (SELECT 1 FROM refresh_tokens f WHERE f.family_id = t.family_id AND f.revoked_at IS NOT NULL) \
                 AS spent \
             FROM refresh_tokens t WHERE token_id = $1",
        )
        .bind(token_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(RefreshOutcome::Unknown);
        };
        let (user_id, family_id): (String, String) =
            (row.try_get("user_id")?, row.try_get("family_id")?);
        let spent: bool = row.try_get("spent")?;
        let expires_at: DateTime<Utc> = row.try_get("expires_at")?;
        if !spent && expires_at <= now {
            return Ok(RefreshOutcome::Expired);
        }
        // Not consumable, not expired: used, or its family revoked (a live token that failed
        // the UPDATE can only be one that another caller marked in between).
        Ok(RefreshOutcome::Reused { user_id, family_id })
    }

    async fn revoke_refresh_family(&self, family_id: &str, at: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
        )
        .bind(to_micros(at))
        .bind(family_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_datasets(&self) -> Result<Vec<Dataset>> {
        samples::list_datasets(&self.pool).await
    }

    async fn get_dataset(&self, name: &str) -> Result<Option<Dataset>> {
        samples::get_dataset(&self.pool, name).await
    }

    async fn import_samples(&self, import: &SampleImport) -> Result<ImportSummary> {
        samples::import_samples(&self.pool, import).await
    }

    async fn list_samples(&self, query: &SampleQuery) -> Result<SamplePage> {
        samples::list_samples(&self.pool, query).await
    }

    async fn get_sample(
        &self,
        dataset: &str,
        sample_id: &str,
        version: Option<i64>,
    ) -> Result<Option<Sample>> {
        samples::get_sample(&self.pool, dataset, sample_id, version).await
    }

    async fn insert_session(&self, session: &NewSession) -> Result<SessionRecord> {
        sessions::insert_session(&self.pool, session).await
    }

    async fn get_session(&self, session_id: &str) -> Result<Option<SessionRecord>> {
        sessions::get_session(&self.pool, session_id).await
    }

    async fn list_sessions(
        &self,
        user_id: &str,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<SessionRecord>, u64)> {
        sessions::list_sessions(&self.pool, user_id, limit, offset).await
    }

    async fn count_live_sessions(&self, user_id: &str) -> Result<u64> {
        sessions::count_live_sessions(&self.pool, user_id).await
    }

    async fn list_sessions_in(&self, statuses: &[SessionStatus]) -> Result<Vec<SessionRecord>> {
        sessions::list_sessions_in(&self.pool, statuses).await
    }

    async fn mark_session_ready(
        &self,
        session_id: &str,
        sandbox_id: &str,
        location: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<SessionRecord>> {
        sessions::mark_session_ready(&self.pool, session_id, sandbox_id, location, at).await
    }

    async fn mark_session_error(
        &self,
        session_id: &str,
        code: &str,
        message: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<SessionRecord>> {
        sessions::mark_session_error(&self.pool, session_id, code, message, at).await
    }

    async fn end_session(
        &self,
        session_id: &str,
        status: SessionStatus,
        at: DateTime<Utc>,
    ) -> Result<Option<SessionRecord>> {
        sessions::end_session(&self.pool, session_id, status, at).await
    }

    async fn insert_interaction(&self, interaction: &NewInteraction) -> Result<InteractionRecord> {
        interactions::insert_interaction(&self.pool, interaction).await
    }

    async fn complete_interaction(
        &self,
        interaction_id: &str,
        outcome: &InteractionOutcome,
    ) -> Result<bool> {
        interactions::complete_interaction(&self.pool, interaction_id, outcome).await
    }

    async fn get_interaction(
        &self,
        session_id: &str,
        interaction_id: &str,
    ) -> Result<Option<InteractionRecord>> {
        interactions::get_interaction(&self.pool, session_id, interaction_id).await
    }

    async fn list_unfinished_interactions(&self) -> Result<Vec<InteractionRecord>> {
        interactions::list_unfinished_interactions(&self.pool).await
    }

    async fn expire_interaction_output(
        &self,
        finished_before: DateTime<Utc>,
        at: DateTime<Utc>,
        limit: u64,
    ) -> Result<u64> {
        interactions::expire_interaction_output(&self.pool, finished_before, at, limit).await
    }

    async fn insert_verification_job(
        &self,
        job: &NewVerificationJob,
    ) -> Result<VerificationJobRecord> {
        verification_jobs::insert_verification_job(&self.pool, job).await
    }

    async fn get_verification_job(
        &self,
        session_id: &str,
        job_id: &str,
    ) -> Result<Option<VerificationJobRecord>> {
        verification_jobs::get_verification_job(&self.pool, session_id, job_id).await
    }

    async fn update_verification_job(
        &self,
        job_id: &str,
        update: &JobUpdate,
    ) -> Result<Option<VerificationJobRecord>> {
        verification_jobs::update_verification_job(&self.pool, job_id, update).await
    }

    async fn list_unfinished_verification_jobs(&self) -> Result<Vec<VerificationJobRecord>> {
        verification_jobs::list_unfinished_verification_jobs(&self.pool).await
    }

    async fn insert_transaction(
        &self,
        transaction: &NewTransaction,
    ) -> Result<Option<Transaction>> {
        billing::insert_transaction(&self.pool, transaction).await
    }

    async fn record_stripe_credit(
        &self,
        event_id: &str,
        credit: &NewTransaction,
    ) -> Result<Option<Transaction>> {
        billing::record_stripe_credit(&self.pool, event_id, credit).await
    }

    async fn find_transaction(
        &self,
        kind: TransactionKind,
        reference: &str,
    ) -> Result<Option<Transaction>> {
        billing::find_transaction(&self.pool, kind, reference).await
    }

    async fn balance(&self, user_id: &str) -> Result<Balance> {
        billing::balance(&self.pool, user_id).await
    }

    async fn list_transactions(&self, query: &TransactionQuery) -> Result<TransactionPage> {
        billing::list_transactions(&self.pool, query).await
    }

    async fn end_session_billed(&self, end: &SessionEnd) -> Result<Option<EndedSession>> {
        billing::end_session_billed(&self.pool, end).await
    }

    async fn record_heartbeats(&self, session_ids: &[String], at: DateTime<Utc>) -> Result<u64> {
        billing::record_heartbeats(&self.pool, session_ids, at).await
    }

    async fn session_heartbeat(&self, session_id: &str) -> Result<Option<DateTime<Utc>>> {
        billing::session_heartbeat(&self.pool, session_id).await
    }

    async fn insert_agent_job(&self, job: &crate::NewAgentJob) -> Result<crate::AgentJobRecord> {
        agent_jobs::insert_agent_job(&self.pool, job).await
    }

    async fn get_agent_job(&self, job_id: &str) -> Result<Option<crate::AgentJobRecord>> {
        agent_jobs::get_agent_job(&self.pool, job_id).await
    }

    async fn list_agent_jobs(
        &self,
        user_id: &str,
        after: Option<&crate::AgentJobCursor>,
        limit: u64,
    ) -> Result<Vec<crate::AgentJobRecord>> {
        agent_jobs::list_agent_jobs(&self.pool, user_id, after, limit).await
    }

    async fn update_agent_job(
        &self,
        job_id: &str,
        update: &crate::AgentJobUpdate,
    ) -> Result<Option<crate::AgentJobRecord>> {
        agent_jobs::update_agent_job(&self.pool, job_id, update).await
    }

    async fn set_agent_job_result(&self, job_id: &str, result_path: &str) -> Result<bool> {
        agent_jobs::set_agent_job_result(&self.pool, job_id, result_path).await
    }

    async fn list_unfinished_agent_jobs(&self) -> Result<Vec<crate::AgentJobRecord>> {
        agent_jobs::list_unfinished_agent_jobs(&self.pool).await
    }

    async fn update_github_profile(
        &self,
        user_id: &str,
        github_login: &str,
        name: &str,
    ) -> Result<Option<User>> {
        github::update_github_profile(&self.pool, user_id, github_login, name).await
    }

    async fn put_github_token(
        &self,
        user_id: &str,
        sealed_token: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        github::put_github_token(&self.pool, user_id, sealed_token, at).await
    }

    async fn get_github_token(&self, user_id: &str) -> Result<Option<String>> {
        github::get_github_token(&self.pool, user_id).await
    }
}

//! Agent jobs on SQLite. A status change is one conditional `UPDATE … RETURNING` that
//! matches only an unfinished job, so of racing finishers (the runner, the completion
//! endpoint, restart recovery) exactly one wins.
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::Row;

use super::rows::{optional_time, time};
use crate::columns;
use crate::missing_reference::insert_error;
use crate::session_rules::{job_starts, UNFINISHED_JOB_STATUSES};
use crate::timestamp::to_sqlite_text;
use crate::{
    AgentJobCursor, AgentJobRecord, AgentJobUpdate, JobStatus, NewAgentJob, Result, StoreError,
};

pub(super) async fn insert_agent_job(
    pool: &SqlitePool,
    job: &NewAgentJob,
) -> Result<AgentJobRecord> {
    let sql = format!(
        "INSERT INTO agent_jobs (job_id, user_id, repo, git_ref, agent_id, status, secret_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7) RETURNING {}",
        columns::plain(columns::AGENT_JOB)
    );
    let row = sqlx::query(&sql)
        .bind(&job.job_id)
        .bind(&job.user_id)
        .bind(&job.repo)
        .bind(&job.git_ref)
        .bind(&job.agent_id)
        .bind(&job.secret_hash)
        .bind(to_sqlite_text(job.created_at))
        .fetch_one(pool)
        .await
        .map_err(|e| insert_error(e, "job_id", "user"))?;
    job_row(&row)
}

pub(super) async fn get_agent_job(
    pool: &SqlitePool,
    job_id: &str,
) -> Result<Option<AgentJobRecord>> {
    let sql = format!(
        "SELECT {} FROM agent_jobs WHERE job_id = $1",
        columns::plain(columns::AGENT_JOB)
    );
    let row = sqlx::query(&sql).bind(job_id).fetch_optional(pool).await?;
    row.as_ref().map(job_row).transpose()
}

pub(super) async fn list_agent_jobs(
    pool: &SqlitePool,
    user_id: &str,
    after: Option<&AgentJobCursor>,
    limit: u64,
) -> Result<Vec<AgentJobRecord>> {
    let sql = format!(
        "SELECT {} FROM agent_jobs WHERE user_id = $1 \
           AND ($2 IS NULL OR created_at < $2 OR (created_at = $2 AND job_id < $3)) \
         ORDER BY created_at DESC, job_id DESC LIMIT $4",
        columns::plain(columns::AGENT_JOB)
    );
    let found = sqlx::query(&sql)
        .bind(user_id)
        .bind(after.map(|c| to_sqlite_text(c.created_at)))
        .bind(after.map(|c| c.job_id.as_str()).unwrap_or_default())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await?;
    found.iter().map(job_row).collect()
}

pub(super) async fn update_agent_job(
    pool: &SqlitePool,
    job_id: &str,
    update: &AgentJobUpdate,
) -> Result<Option<AgentJobRecord>> {
    let sql = format!(
        "UPDATE agent_jobs SET status = $2, \
             started_at = CASE WHEN $3 THEN COALESCE(started_at, $5) ELSE started_at END, \
             completed_at = CASE WHEN $4 THEN $5 ELSE completed_at END, \
             progress = COALESCE($6, progress), \
             error_message = COALESCE($7, error_message) \
         WHERE job_id = $1 AND status IN {UNFINISHED_JOB_STATUSES} RETURNING {}",
        columns::plain(columns::AGENT_JOB)
    );
    let row = sqlx::query(&sql)
        .bind(job_id)
        .bind(update.status.as_str())
        .bind(job_starts(update.status))
        .bind(update.status.is_finished())
        .bind(to_sqlite_text(update.at))
        .bind(&update.progress)
        .bind(&update.error_message)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(job_row).transpose()
}

pub(super) async fn set_agent_job_result(
    pool: &SqlitePool,
    job_id: &str,
    result_path: &str,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE agent_jobs SET result_path = $2 WHERE job_id = $1 AND result_path IS NULL",
    )
    .bind(job_id)
    .bind(result_path)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn list_unfinished_agent_jobs(pool: &SqlitePool) -> Result<Vec<AgentJobRecord>> {
    let sql = format!(
        "SELECT {} FROM agent_jobs WHERE status IN {UNFINISHED_JOB_STATUSES} \
         ORDER BY created_at, job_id",
        columns::plain(columns::AGENT_JOB)
    );
    let found = sqlx::query(&sql).fetch_all(pool).await?;
    found.iter().map(job_row).collect()
}

fn job_row(row: &SqliteRow) -> Result<AgentJobRecord> {
    let status: String = row.try_get("status")?;
    Ok(AgentJobRecord {
        job_id: row.try_get("job_id")?,
        user_id: row.try_get("user_id")?,
        repo: row.try_get("repo")?,
        git_ref: row.try_get("git_ref")?,
        agent_id: row.try_get("agent_id")?,
        status: JobStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown agent job status {status:?}")))?,
        progress: row.try_get("progress")?,
        secret_hash: row.try_get("secret_hash")?,
        error_message: row.try_get("error_message")?,
        result_path: row.try_get("result_path")?,
        created_at: time(row, "created_at")?,
        started_at: optional_time(row, "started_at")?,
        completed_at: optional_time(row, "completed_at")?,
    })
}

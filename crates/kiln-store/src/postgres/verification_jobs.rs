//! Verification jobs on PostgreSQL. An update is one conditional `UPDATE … RETURNING` that
//! matches only an unfinished job, so nothing changes a job once it has finished.
use sqlx::postgres::{PgPool, PgRow};
use sqlx::Row;

use crate::columns;
use crate::json_column;
use crate::missing_reference::insert_error;
use crate::session_rules::{job_starts, UNFINISHED_JOB_STATUSES};
use crate::timestamp::to_micros;
use crate::{JobStatus, JobUpdate, NewVerificationJob, Result, StoreError, VerificationJobRecord};

pub(super) async fn insert_verification_job(
    pool: &PgPool,
    job: &NewVerificationJob,
) -> Result<VerificationJobRecord> {
    let sql = format!(
        "INSERT INTO verification_jobs (job_id, session_id, user_id, sample_id, status, created_at) \
         VALUES ($1, $2, $3, $4, 'pending', $5) RETURNING {}",
        columns::plain(columns::VERIFICATION_JOB)
    );
    let row = sqlx::query(&sql)
        .bind(&job.job_id)
        .bind(&job.session_id)
        .bind(&job.user_id)
        .bind(&job.sample_id)
        .bind(to_micros(job.created_at))
        .fetch_one(pool)
        .await
        .map_err(|e| insert_error(e, "job_id", "session or user"))?;
    job_row(&row)
}

pub(super) async fn get_verification_job(
    pool: &PgPool,
    session_id: &str,
    job_id: &str,
) -> Result<Option<VerificationJobRecord>> {
    let sql = format!(
        "SELECT {} FROM verification_jobs WHERE job_id = $1 AND session_id = $2",
        columns::plain(columns::VERIFICATION_JOB)
    );
    let row = sqlx::query(&sql)
        .bind(job_id)
        .bind(session_id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(job_row).transpose()
}

pub(super) async fn update_verification_job(
    pool: &PgPool,
    job_id: &str,
    update: &JobUpdate,
) -> Result<Option<VerificationJobRecord>> {
    let result = update
        .result
        .as_ref()
        .map(json_column::encode)
        .transpose()?;
    let sql = format!(
        "UPDATE verification_jobs SET status = $2, \
             started_at = CASE WHEN $3 THEN COALESCE(started_at, $5) ELSE started_at END, \
             completed_at = CASE WHEN $4 THEN $5 ELSE completed_at END, \
             result = COALESCE($6, result), \
             error_code = COALESCE($7, error_code), \
             error_message = COALESCE($8, error_message) \
         WHERE job_id = $1 AND status IN {UNFINISHED_JOB_STATUSES} RETURNING {}",
        columns::plain(columns::VERIFICATION_JOB)
    );
    let row = sqlx::query(&sql)
        .bind(job_id)
        .bind(update.status.as_str())
        .bind(job_starts(update.status))
        .bind(update.status.is_finished())
        .bind(to_micros(update.at))
        .bind(result)
        .bind(&update.error_code)
        .bind(&update.error_message)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(job_row).transpose()
}

pub(super) async fn list_unfinished_verification_jobs(
    pool: &PgPool,
) -> Result<Vec<VerificationJobRecord>> {
    let sql = format!(
        "SELECT {} FROM verification_jobs WHERE status IN {UNFINISHED_JOB_STATUSES} \
         ORDER BY created_at, job_id",
        columns::plain(columns::VERIFICATION_JOB)
    );
    let found = sqlx::query(&sql).fetch_all(pool).await?;
    found.iter().map(job_row).collect()
}

fn job_row(row: &PgRow) -> Result<VerificationJobRecord> {
    let status: String = row.try_get("status")?;
    let result: Option<String> = row.try_get("result")?;
    Ok(VerificationJobRecord {
        job_id: row.try_get("job_id")?,
        session_id: row.try_get("session_id")?,
        user_id: row.try_get("user_id")?,
        sample_id: row.try_get("sample_id")?,
        status: JobStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown job status {status:?}")))?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        completed_at: row.try_get("completed_at")?,
        result: result
            .as_deref()
            .map(|text| json_column::decode("verification job result", text))
            .transpose()?,
        error_code: row.try_get("error_code")?,
        error_message: row.try_get("error_message")?,
    })
}

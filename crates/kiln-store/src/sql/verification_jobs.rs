//! Verification jobs. An update is one conditional `UPDATE … RETURNING` that matches only an
//! unfinished job, so nothing changes a job once it has finished.
use async_trait::async_trait;

use sqlx::QueryBuilder;

use super::dialect::{parse_column, BuilderExt, Dialect, QueryExt};
use super::jobs::{bind_status_change, status_change_sql};
use super::{outbox, push_newest_first, SqlStore};
use crate::columns;
use crate::json_column;
use crate::missing_reference::insert_error;
use crate::timestamp::Stamp;
use crate::{
    Announcing, JobStatus, JobUpdate, NewVerificationJob, Result, VerificationCursor,
    VerificationJobRecord, VerificationStore,
};

#[async_trait]
impl<D: Dialect> VerificationStore for SqlStore<D> {
    async fn insert_verification_job(
        &self,
        job: &NewVerificationJob,
    ) -> Result<VerificationJobRecord> {
        let sql = format!(
            "INSERT INTO verification_jobs (job_id, session_id, user_id, sample_id, status, created_at) \
             VALUES ($1, $2, $3, $4, 'pending', $5) RETURNING {}",
            columns::plain(columns::VERIFICATION_JOB)
        );
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(job.job_id.as_str())
            .arg(job.session_id.as_str())
            .arg(job.user_id.as_str())
            .arg(job.sample_id.as_str())
            .arg(Stamp(job.created_at))
            .fetch_one(D::exec(&mut conn))
            .await
            .map_err(|e| insert_error(e, "job_id", "session or user"))?;
        job_row::<D>(&row)
    }

    async fn get_verification_job(
        &self,
        session_id: &str,
        job_id: &str,
    ) -> Result<Option<VerificationJobRecord>> {
        let sql = format!(
            "SELECT {} FROM verification_jobs WHERE job_id = $1 AND session_id = $2",
            columns::plain(columns::VERIFICATION_JOB)
        );
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(job_id)
            .arg(session_id)
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.as_ref().map(job_row::<D>).transpose()
    }

    async fn update_verification_job(
        &self,
        job_id: &str,
        update: &JobUpdate,
        announce: Announcing<'_, VerificationJobRecord>,
    ) -> Result<Option<VerificationJobRecord>> {
        let result = update
            .result
            .as_ref()
            .map(json_column::encode)
            .transpose()?;
        let sql = status_change_sql(
            "verification_jobs",
            "result = COALESCE($6, result), \
             error_code = COALESCE($7, error_code), \
             error_message = COALESCE($8, error_message)",
            &columns::plain(columns::VERIFICATION_JOB),
        );
        let mut tx = D::begin_write(self.pool()).await?;
        let row = bind_status_change(sqlx::query(&sql), job_id, update.status, update.at)
            .arg(result)
            .arg(update.error_code.as_deref())
            .arg(update.error_message.as_deref())
            .fetch_optional(D::exec(&mut tx))
            .await?;
        let Some(job) = row.as_ref().map(job_row::<D>).transpose()? else {
            return Ok(None);
        };
        let deliveries = outbox::stage::<D, _>(&mut tx, announce, &job).await?;
        tx.commit().await?;
        outbox::stored(announce, deliveries);
        Ok(Some(job))
    }

    async fn list_unfinished_verification_jobs(&self) -> Result<Vec<VerificationJobRecord>> {
        self.unfinished_jobs(
            "verification_jobs",
            &columns::plain(columns::VERIFICATION_JOB),
            job_row::<D>,
        )
        .await
    }

    async fn list_verification_jobs(
        &self,
        session_id: &str,
        after: Option<&VerificationCursor>,
        limit: u64,
    ) -> Result<Vec<VerificationJobRecord>> {
        // `verification_jobs_by_session` narrows to the session; a session has few jobs.
        let mut select = QueryBuilder::<D>::new(format!(
            "SELECT {} FROM verification_jobs WHERE session_id = ",
            columns::plain(columns::VERIFICATION_JOB)
        ));
        select.push_arg(session_id);
        push_newest_first(
            &mut select,
            "job_id",
            after.map(|a| (a.created_at, a.job_id.as_str())),
            limit,
        );
        let mut conn = self.conn().await?;
        let found = D::build(&mut select).fetch_all(D::exec(&mut conn)).await?;
        found.iter().map(job_row::<D>).collect()
    }
}

fn job_row<D: Dialect>(row: &D::Row) -> Result<VerificationJobRecord> {
    let status: String = D::get(row, "status")?;
    let result: Option<String> = D::get(row, "result")?;
    Ok(VerificationJobRecord {
        job_id: D::get(row, "job_id")?,
        session_id: D::get(row, "session_id")?,
        user_id: D::get(row, "user_id")?,
        sample_id: D::get(row, "sample_id")?,
        status: parse_column(&status, "job status", JobStatus::parse)?,
        created_at: D::time(row, "created_at")?,
        started_at: D::opt_time(row, "started_at")?,
        completed_at: D::opt_time(row, "completed_at")?,
        result: result
            .as_deref()
            .map(|text| json_column::decode("verification job result", text))
            .transpose()?,
        error_code: D::get(row, "error_code")?,
        error_message: D::get(row, "error_message")?,
    })
}

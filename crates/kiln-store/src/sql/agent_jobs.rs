//! Agent jobs. A status change is one conditional `UPDATE … RETURNING` that matches only an
//! unfinished job, so of racing finishers (the runner, the completion endpoint, restart
//! recovery) exactly one wins.
use async_trait::async_trait;
use sqlx::QueryBuilder;

use super::dialect::{parse_column, BuilderExt, Dialect, QueryExt};
use super::jobs::{bind_status_change, status_change_sql};
use super::{push_newest_first, SqlStore};
use crate::columns;
use crate::missing_reference::insert_error;
use crate::timestamp::Stamp;
use crate::{
    AgentJobCursor, AgentJobRecord, AgentJobStore, AgentJobUpdate, JobStatus, NewAgentJob, Result,
};

#[async_trait]
impl<D: Dialect> AgentJobStore for SqlStore<D> {
    async fn insert_agent_job(&self, job: &NewAgentJob) -> Result<AgentJobRecord> {
        let sql = format!(
            "INSERT INTO agent_jobs (job_id, user_id, repo, git_ref, agent_id, status, secret_hash, created_at, node_id) \
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8) RETURNING {}",
            columns::plain(columns::AGENT_JOB)
        );
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(job.job_id.as_str())
            .arg(job.user_id.as_str())
            .arg(job.repo.as_str())
            .arg(job.git_ref.as_deref())
            .arg(job.agent_id.as_str())
            .arg(job.secret_hash.as_str())
            .arg(Stamp(job.created_at))
            .arg(job.node_id.as_deref())
            .fetch_one(D::exec(&mut conn))
            .await
            .map_err(|e| insert_error(e, "job_id", "user"))?;
        job_row::<D>(&row)
    }

    async fn get_agent_job(&self, job_id: &str) -> Result<Option<AgentJobRecord>> {
        let sql = format!(
            "SELECT {} FROM agent_jobs WHERE job_id = $1",
            columns::plain(columns::AGENT_JOB)
        );
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(job_id)
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.as_ref().map(job_row::<D>).transpose()
    }

    async fn list_agent_jobs(
        &self,
        user_id: &str,
        after: Option<&AgentJobCursor>,
        limit: u64,
    ) -> Result<Vec<AgentJobRecord>> {
        let mut select = QueryBuilder::<D>::new(format!(
            "SELECT {} FROM agent_jobs WHERE user_id = ",
            columns::plain(columns::AGENT_JOB)
        ));
        select.push_arg(user_id);
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

    async fn update_agent_job(
        &self,
        job_id: &str,
        update: &AgentJobUpdate,
    ) -> Result<Option<AgentJobRecord>> {
        let sql = status_change_sql(
            "agent_jobs",
            "progress = COALESCE($6, progress), error_message = COALESCE($7, error_message)",
            &columns::plain(columns::AGENT_JOB),
        );
        let mut conn = self.conn().await?;
        let row = bind_status_change(sqlx::query(&sql), job_id, update.status, update.at)
            .arg(update.progress.as_deref())
            .arg(update.error_message.as_deref())
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.as_ref().map(job_row::<D>).transpose()
    }

    async fn set_agent_job_result(&self, job_id: &str, result_path: &str) -> Result<bool> {
        let mut conn = self.conn().await?;
        let done = sqlx::query(
            "UPDATE agent_jobs SET result_path = $2 WHERE job_id = $1 AND result_path IS NULL",
        )
        .arg(job_id)
        .arg(result_path)
        .execute(D::exec(&mut conn))
        .await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn list_unfinished_agent_jobs(&self) -> Result<Vec<AgentJobRecord>> {
        self.unfinished_jobs(
            "agent_jobs",
            &columns::plain(columns::AGENT_JOB),
            job_row::<D>,
        )
        .await
    }
}

fn job_row<D: Dialect>(row: &D::Row) -> Result<AgentJobRecord> {
    let status: String = D::get(row, "status")?;
    Ok(AgentJobRecord {
        job_id: D::get(row, "job_id")?,
        user_id: D::get(row, "user_id")?,
        repo: D::get(row, "repo")?,
        git_ref: D::get(row, "git_ref")?,
        agent_id: D::get(row, "agent_id")?,
        status: parse_column(&status, "agent job status", JobStatus::parse)?,
        progress: D::get(row, "progress")?,
        secret_hash: D::get(row, "secret_hash")?,
        error_message: D::get(row, "error_message")?,
        result_path: D::get(row, "result_path")?,
        created_at: D::time(row, "created_at")?,
        started_at: D::opt_time(row, "started_at")?,
        completed_at: D::opt_time(row, "completed_at")?,
        node_id: D::get(row, "node_id")?,
    })
}

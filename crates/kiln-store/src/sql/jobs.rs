//! What agent and verification jobs share: a status change is one conditional
//! `UPDATE … RETURNING` that matches only an unfinished job, so of racing finishers exactly
//! one wins and nothing changes a job once it has finished.
use chrono::{DateTime, Utc};

use super::dialect::{Dialect, QueryExt, SqlQuery};
use super::SqlStore;
use crate::session_rules::{job_starts, UNFINISHED_JOB_STATUSES};
use crate::timestamp::Stamp;
use crate::{JobStatus, Result};

/// The status change of a job in `table`, setting `more` too, returning `columns`:
/// `$1` the job, `$2` the status, `$3` whether it starts, `$4` whether it finishes, `$5`
/// when (bound by [`bind_status_change`]); `more` uses `$6` on.
pub(super) fn status_change_sql(table: &str, more: &str, columns: &str) -> String {
    format!(
        "UPDATE {table} SET status = $2, \
             started_at = CASE WHEN $3 THEN COALESCE(started_at, $5) ELSE started_at END, \
             completed_at = CASE WHEN $4 THEN $5 ELSE completed_at END, \
             {more} \
         WHERE job_id = $1 AND status IN {UNFINISHED_JOB_STATUSES} RETURNING {columns}"
    )
}

/// Binds `$1` to `$5` of [`status_change_sql`].
pub(super) fn bind_status_change<'q, D: Dialect>(
    query: SqlQuery<'q, D>,
    job_id: &'q str,
    status: JobStatus,
    at: DateTime<Utc>,
) -> SqlQuery<'q, D> {
    query
        .arg(job_id)
        .arg(status.as_str())
        .arg(job_starts(status))
        .arg(status.is_finished())
        .arg(Stamp(at))
}

impl<D: Dialect> SqlStore<D> {
    /// The unfinished jobs of `table` (its `columns` read by `row`), oldest first: what
    /// restart recovery has to settle.
    pub(super) async fn unfinished_jobs<T>(
        &self,
        table: &str,
        columns: &str,
        row: fn(&D::Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        let sql = format!(
            "SELECT {columns} FROM {table} WHERE status IN {UNFINISHED_JOB_STATUSES} \
             ORDER BY created_at, job_id"
        );
        let mut conn = self.conn().await?;
        let found = sqlx::query(&sql).fetch_all(D::exec(&mut conn)).await?;
        found.iter().map(row).collect()
    }
}

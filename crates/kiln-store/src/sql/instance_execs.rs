//! Execs of the instance API. The finish is one conditional `UPDATE` matching only a running
//! exec, so of racing finishers (the exec's own task, restart recovery) exactly one wins.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;

use super::dialect::{parse_column, BuilderExt, Dialect, QueryExt};
use super::output::Output;
use super::{as_i64, push_newest_first, SqlStore};
use crate::missing_reference::insert_error;
use crate::timestamp::Stamp;
use crate::{
    ExecCursor, ExecFinish, ExecStatus, ExecStore, InstanceExecRecord, NewInstanceExec, Result,
};

const COLUMNS: &str = "exec_id, session_id, user_id, command, cwd, mode, status, exit_code, \
    signal, stdout, stderr, truncated, duration_ms, error, created_at, finished_at";

#[async_trait]
impl<D: Dialect> ExecStore for SqlStore<D> {
    async fn insert_instance_exec(&self, exec: &NewInstanceExec) -> Result<InstanceExecRecord> {
        let sql = format!(
            "INSERT INTO instance_execs (exec_id, session_id, user_id, command, cwd, mode, \
             status, stdout, stderr, truncated, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'running', $7, $8, $9, $10) RETURNING {COLUMNS}"
        );
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(exec.exec_id.as_str())
            .arg(exec.session_id.as_str())
            .arg(exec.user_id.as_str())
            .arg(exec.command.as_str())
            .arg(exec.cwd.as_deref())
            .arg(exec.mode.as_str())
            .arg(Output::of(""))
            .arg(Output::of(""))
            .arg(false)
            .arg(Stamp(exec.created_at))
            .fetch_one(D::exec(&mut conn))
            .await
            .map_err(|e| insert_error(e, "exec_id", "session or user"))?;
        exec_row::<D>(&row)
    }

    async fn finish_instance_exec(
        &self,
        exec_id: &str,
        finish: &ExecFinish,
    ) -> Result<Option<InstanceExecRecord>> {
        let sql = format!(
            "UPDATE instance_execs SET status = $2, exit_code = $3, signal = $4, stdout = $5, \
             stderr = $6, truncated = $7, duration_ms = $8, error = $9, finished_at = $10 \
             WHERE exec_id = $1 AND status = 'running' RETURNING {COLUMNS}"
        );
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(exec_id)
            .arg(finish.status.as_str())
            .arg(finish.exit_code.map(i64::from))
            .arg(finish.signal.map(i64::from))
            .arg(Output::of(&finish.stdout))
            .arg(Output::of(&finish.stderr))
            .arg(finish.truncated)
            .arg(finish.duration_ms.map(as_i64))
            .arg(finish.error.as_deref())
            .arg(Stamp(finish.finished_at))
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.as_ref().map(exec_row::<D>).transpose()
    }

    async fn get_instance_exec(
        &self,
        session_id: &str,
        exec_id: &str,
    ) -> Result<Option<InstanceExecRecord>> {
        let sql =
            format!("SELECT {COLUMNS} FROM instance_execs WHERE session_id = $1 AND exec_id = $2");
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(session_id)
            .arg(exec_id)
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.as_ref().map(exec_row::<D>).transpose()
    }

    async fn list_instance_execs(
        &self,
        session_id: &str,
        after: Option<&ExecCursor>,
        limit: u64,
    ) -> Result<Vec<InstanceExecRecord>> {
        let mut select = QueryBuilder::<D>::new(format!(
            "SELECT {COLUMNS} FROM instance_execs WHERE session_id = "
        ));
        select.push_arg(session_id);
        push_newest_first(
            &mut select,
            "exec_id",
            after.map(|a| (a.created_at, a.exec_id.as_str())),
            limit,
        );
        let mut conn = self.conn().await?;
        let found = D::build(&mut select).fetch_all(D::exec(&mut conn)).await?;
        found.iter().map(exec_row::<D>).collect()
    }

    async fn fail_running_instance_execs(
        &self,
        error: &str,
        at: DateTime<Utc>,
        node: Option<&str>,
        unowned_too: bool,
    ) -> Result<u64> {
        let mut conn = self.conn().await?;
        let done =
            match node {
                None => sqlx::query(
                    "UPDATE instance_execs SET status = 'failed', error = $1, finished_at = $2 \
                     WHERE status = 'running'",
                )
                .arg(error)
                .arg(Stamp(at))
                .execute(D::exec(&mut conn))
                .await?,
                // Left running: execs of a live session that another node runs.
                Some(node) => sqlx::query(
                    "UPDATE instance_execs SET status = 'failed', error = $1, finished_at = $2 \
                     WHERE status = 'running' AND NOT EXISTS (SELECT 1 FROM sessions s \
                       WHERE s.session_id = instance_execs.session_id \
                       AND s.status IN ('creating', 'ready') \
                       AND COALESCE(s.node_id, '') <> $3 \
                       AND NOT (s.node_id IS NULL AND $4))",
                )
                .arg(error)
                .arg(Stamp(at))
                .arg(node)
                .arg(unowned_too)
                .execute(D::exec(&mut conn))
                .await?,
            };
        Ok(D::rows_affected(&done))
    }
}

fn exec_row<D: Dialect>(row: &D::Row) -> Result<InstanceExecRecord> {
    let status: String = D::get(row, "status")?;
    let small = |v: Option<i64>| v.map(|v| i32::try_from(v).unwrap_or(i32::MIN));
    let stdout: Output<'static> = D::get(row, "stdout")?;
    let stderr: Output<'static> = D::get(row, "stderr")?;
    Ok(InstanceExecRecord {
        exec_id: D::get(row, "exec_id")?,
        session_id: D::get(row, "session_id")?,
        user_id: D::get(row, "user_id")?,
        command: D::get(row, "command")?,
        cwd: D::get(row, "cwd")?,
        mode: D::get(row, "mode")?,
        status: parse_column(&status, "exec status", ExecStatus::parse)?,
        exit_code: small(D::get(row, "exit_code")?),
        signal: small(D::get(row, "signal")?),
        stdout: stdout.into_string(),
        stderr: stderr.into_string(),
        truncated: D::get(row, "truncated")?,
        duration_ms: D::get::<Option<i64>>(row, "duration_ms")?
            .map(|v| u64::try_from(v).unwrap_or(0)),
        error: D::get(row, "error")?,
        created_at: D::time(row, "created_at")?,
        finished_at: D::opt_time(row, "finished_at")?,
    })
}

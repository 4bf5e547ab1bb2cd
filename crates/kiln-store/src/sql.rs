//! The one implementation of the store, for both backends: [`SqlStore`] over a [`Dialect`].
//!
//! Every query is written once, here, in the SQL both databases accept (`$1`-style
//! placeholders, `RETURNING`, `ON CONFLICT`, …). What really differs — lock taking, snapshot
//! reads, boolean literals, case-insensitive `LIKE`, and how timestamps and command output
//! are stored — is in [`Dialect`] and the column types it binds.
mod accounts;
mod accounts_v1;
mod agent_jobs;
mod base_images;
mod billing;
mod catalog;
pub mod dialect;
mod github;
mod instance_execs;
mod instances;
mod interactions;
mod jobs;
mod mfa;
mod node_registry;
mod nodes;
mod org_security;
mod orgs;
mod outbox;
mod output;
mod ports;
mod rows;
mod sessions;
mod snapshots;
mod verification_jobs;
mod webhooks;

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::Pool;

pub use crate::timestamp::Stamp;
pub use dialect::Dialect;
pub use output::Output;

use crate::{Backend, Result};

/// A store on the database of dialect `D`: [`crate::sqlite::SqliteStore`] or
/// [`crate::postgres::PgStore`]. Opened by the backend's `open`.
pub struct SqlStore<D: Dialect> {
    pool: Pool<D>,
}

impl<D: Dialect> SqlStore<D> {
    pub(crate) fn from_pool(pool: Pool<D>) -> Self {
        Self { pool }
    }

    pub(crate) fn pool(&self) -> &Pool<D> {
        &self.pool
    }

    /// A connection of the pool, for one statement (`D::exec(&mut conn)`).
    async fn conn(&self) -> Result<PoolConnection<D>> {
        Ok(self.pool.acquire().await?)
    }

    /// Waits for every connection to close (on SQLite, so that the file is checkpointed and
    /// released).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Clamps a count from the API to what a 64-bit integer column can hold.
fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The end of a newest-first list's query: the rows after `after` (the last row of the
/// previous page: its `created_at` and id, ties broken by the id), then the order and the
/// page size. Keyset paging, so a page stays right while rows are added.
fn push_newest_first<D: Dialect>(
    select: &mut sqlx::QueryBuilder<'_, D>,
    id_column: &str,
    after: Option<(chrono::DateTime<chrono::Utc>, &str)>,
    limit: u64,
) {
    use dialect::BuilderExt;
    if let Some((created_at, id)) = after {
        select
            .push(" AND (created_at < ")
            .push_arg(Stamp(created_at))
            .push(" OR (created_at = ")
            .push_arg(Stamp(created_at))
            .push(format!(" AND {id_column} < "))
            .push_arg(id.to_string())
            .push("))");
    }
    select
        .push(format!(
            " ORDER BY created_at DESC, {id_column} DESC LIMIT "
        ))
        .push_arg(as_i64(limit));
}

#[async_trait]
impl<D: Dialect> Backend for SqlStore<D> {
    fn backend(&self) -> &'static str {
        D::BACKEND
    }

    async fn ping(&self) -> Result<()> {
        let mut conn = self.conn().await?;
        sqlx::query("SELECT 1").execute(D::exec(&mut conn)).await?;
        Ok(())
    }

    fn change_feed(&self) -> Option<std::sync::Arc<dyn crate::ChangeFeed>> {
        D::change_feed(&self.pool)
    }
}

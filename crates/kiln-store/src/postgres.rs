//! PostgreSQL: a connection pool, TIMESTAMPTZ columns. The queries are [`crate::sql`]'s;
//! this module connects and says how PostgreSQL differs (row locks where SQLite locks the
//! database, REPEATABLE READ for one snapshot, ILIKE, BOOLEAN).

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgQueryResult};
use sqlx::{Connection, Executor, Pool, Postgres, QueryBuilder, Transaction};

use crate::sql::dialect::SqlQuery;
use crate::sql::{Dialect, SqlStore};
use crate::{Result, StoreError};

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

    fn change_feed(pool: &Pool<Self>) -> Option<std::sync::Arc<dyn crate::ChangeFeed>> {
        Some(crate::change_feed::postgres(pool))
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

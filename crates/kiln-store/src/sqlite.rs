//! SQLite: one file, WAL journal, a small connection pool. The queries are
//! [`crate::sql`]'s; this module opens the database and says how SQLite differs.
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions,
    SqliteQueryResult, SqliteSynchronous,
};
use sqlx::{Executor, Pool, QueryBuilder, Sqlite, Transaction};

use crate::sql::dialect::SqlQuery;
use crate::sql::{Dialect, SqlStore};
use crate::{Result, StoreError};

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

//! The migration tests' harness: a database of either backend migrated with sqlx's own
//! migrator up to just before one migration, filled with plain SQL as an older Kiln left
//! it, then opened by the store (which applies the rest) and handed to the test's check.
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use kiln_store::Store;
use kiln_test_support::postgres::{self, Locale, TestDatabase};
use sqlx::migrate::Migrator;

/// The backend's migrations before `version` (there must be `version - 1` of them).
async fn migrations_before(backend: &str, version: i64) -> Migrator {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let mut migrator = Migrator::new(dir).await.unwrap();
    let before: Vec<_> = migrator
        .migrations
        .iter()
        .filter(|m| m.version < version)
        .cloned()
        .collect();
    assert_eq!(before.len() as i64, version - 1, "{backend} migrations");
    migrator.migrations = before.into();
    migrator
}

/// SQLite: migrate to just before `version`, run `fill`, open with the store, `check` it.
pub async fn sqlite<F, Fut>(version: i64, fill: Vec<String>, check: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("kiln.db").display());
    let options: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
    let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true).foreign_keys(true))
        .await
        .unwrap();
    migrations_before("sqlite", version)
        .await
        .run(&pool)
        .await
        .unwrap();
    for sql in fill {
        sqlx::query(&sql).execute(&pool).await.unwrap();
    }
    pool.close().await;
    check(kiln_store::connect(&url).await.unwrap()).await;
}

/// PostgreSQL (skipped without `KILN_TEST_POSTGRES_URL`): as [`sqlite`], in a database of
/// its own that is dropped even when the check fails.
pub async fn postgres<F, Fut>(version: i64, fill: Vec<String>, check: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let Some(admin_url) = postgres::admin_url() else {
        return;
    };
    let database = TestDatabase::create(&admin_url, "kiln_test", Locale::IcuEnUs).await;
    let outcome = tokio::spawn({
        let url = database.url.clone();
        async move {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            migrations_before("postgres", version)
                .await
                .run(&pool)
                .await
                .unwrap();
            for sql in fill {
                sqlx::query(&sql).execute(&pool).await.unwrap();
            }
            pool.close().await;
            check(kiln_store::connect(&url).await.unwrap()).await;
        }
    })
    .await;
    database.drop_now().await.unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}

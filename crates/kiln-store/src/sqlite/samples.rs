//! Datasets and samples on SQLite.
//!
//! Imports start with `BEGIN IMMEDIATE` (see the parent module): they read the latest
//! versions before writing the next ones.
use std::collections::HashSet;

use sqlx::sqlite::SqlitePool;
use sqlx::{QueryBuilder, Sqlite};

use super::{as_i64, rows};
use crate::columns;
use crate::search_pattern::contains_pattern;
use crate::timestamp::to_sqlite_text;
use crate::{
    Dataset, ImportSummary, Result, Sample, SampleImport, SamplePage, SampleQuery, StoreError,
};

fn push_sample_filter(builder: &mut QueryBuilder<'_, Sqlite>, query: &SampleQuery) {
    builder.push(" FROM samples WHERE latest = 1");
    if let Some(dataset) = &query.dataset {
        builder.push(" AND dataset = ").push_bind(dataset.clone());
    }
    if let Some(search) = &query.search {
        // SQLite's LIKE ignores the case of ASCII letters.
        builder
            .push(" AND instance_id LIKE ")
            .push_bind(contains_pattern(search))
            .push(" ESCAPE '\\'");
    }
}

pub(super) async fn list_datasets(pool: &SqlitePool) -> Result<Vec<Dataset>> {
    let found = sqlx::query(
        "SELECT d.name, d.description, d.created_at, \
             (SELECT COUNT(*) FROM samples s WHERE s.dataset = d.name AND s.latest = 1) AS sample_count \
         FROM datasets d ORDER BY d.name",
    )
    .fetch_all(pool)
    .await?;
    found.iter().map(rows::dataset).collect()
}

pub(super) async fn get_dataset(pool: &SqlitePool, name: &str) -> Result<Option<Dataset>> {
    let row = sqlx::query(
        "SELECT d.name, d.description, d.created_at, \
             (SELECT COUNT(*) FROM samples s WHERE s.dataset = d.name AND s.latest = 1) AS sample_count \
         FROM datasets d WHERE d.name = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(rows::dataset).transpose()
}

pub(super) async fn import_samples(
    pool: &SqlitePool,
    import: &SampleImport,
) -> Result<ImportSummary> {
    let now = to_sqlite_text(import.now);
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;

    sqlx::query(
        "INSERT INTO datasets (name, description, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET description = COALESCE(excluded.description, datasets.description)",
    )
    .bind(&import.dataset)
    .bind(&import.description)
    .bind(&now)
    .execute(&mut *tx)
    .await?;

    let mut summary = ImportSummary {
        created: 0,
        updated: 0,
    };
    // Checked as the import goes rather than up front, so that a duplicate leaves through the
    // same path as any other failure: the transaction is dropped and rolls back.
    let mut seen = HashSet::with_capacity(import.samples.len());
    for sample in &import.samples {
        if !seen.insert(sample.sample_id.as_str()) {
            return Err(StoreError::Conflict("sample_id"));
        }
        let previous: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(version) FROM samples WHERE dataset = $1 AND sample_id = $2",
        )
        .bind(&import.dataset)
        .bind(&sample.sample_id)
        .fetch_one(&mut *tx)
        .await?;
        if previous.is_some() {
            sqlx::query("UPDATE samples SET latest = 0 WHERE dataset = $1 AND sample_id = $2 AND latest = 1")
                .bind(&import.dataset)
                .bind(&sample.sample_id)
                .execute(&mut *tx)
                .await?;
            summary.updated += 1;
        } else {
            summary.created += 1;
        }
        let record = &sample.record;
        sqlx::query(
            "INSERT INTO samples (dataset, sample_id, version, latest, created_at, instance_id, repo, \
                 base_commit, version_description, record) \
             VALUES ($1, $2, $3, 1, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&import.dataset)
        .bind(&sample.sample_id)
        .bind(previous.unwrap_or(0) + 1)
        .bind(&now)
        .bind(&record.instance_id)
        .bind(&record.repo)
        .bind(&record.base_commit)
        .bind(&import.version_description)
        .bind(crate::sample_json::encode(record)?)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(summary)
}

pub(super) async fn list_samples(pool: &SqlitePool, query: &SampleQuery) -> Result<SamplePage> {
    // One read transaction: the total and the page come from the same snapshot.
    let mut tx = pool.begin().await?;

    let mut count = QueryBuilder::<Sqlite>::new("SELECT COUNT(*)");
    push_sample_filter(&mut count, query);
    let total: i64 = count.build_query_scalar().fetch_one(&mut *tx).await?;

    let mut page =
        QueryBuilder::<Sqlite>::new(format!("SELECT {}", columns::plain(columns::SAMPLE)));
    push_sample_filter(&mut page, query);
    // SQLite takes a negative LIMIT as "no limit".
    page.push(" ORDER BY dataset, sample_id LIMIT ")
        .push_bind(query.limit.map_or(-1, as_i64))
        .push(" OFFSET ")
        .push_bind(as_i64(query.offset));
    let found = page.build().fetch_all(&mut *tx).await?;
    tx.commit().await?;

    Ok(SamplePage {
        samples: found.iter().map(rows::sample).collect::<Result<_>>()?,
        total: total.unsigned_abs(),
    })
}

pub(super) async fn get_sample(
    pool: &SqlitePool,
    dataset: &str,
    sample_id: &str,
    version: Option<i64>,
) -> Result<Option<Sample>> {
    let mut select =
        QueryBuilder::<Sqlite>::new(format!("SELECT {}", columns::plain(columns::SAMPLE)));
    select
        .push(" FROM samples WHERE dataset = ")
        .push_bind(dataset.to_string());
    select
        .push(" AND sample_id = ")
        .push_bind(sample_id.to_string());
    match version {
        Some(version) => select.push(" AND version = ").push_bind(version),
        None => select.push(" AND latest = 1"),
    };
    let row = select.build().fetch_optional(pool).await?;
    row.as_ref().map(rows::sample).transpose()
}

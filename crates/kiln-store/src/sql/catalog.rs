//! Datasets and samples.
//!
//! Imports run in a [`Dialect::begin_write`] transaction: they read the latest versions
//! before writing the next ones. On SQLite that takes the write lock up front; on PostgreSQL
//! the dataset upsert locks the dataset's row until commit, whether it inserts or updates, so
//! a concurrent import of the same dataset waits there and then reads the versions this one
//! committed, instead of computing the same next version and failing on the key.
use std::collections::HashSet;

use async_trait::async_trait;
use sqlx::QueryBuilder;

use super::dialect::{BuilderExt, Dialect, QueryExt};
use super::{as_i64, rows, SqlStore};
use crate::columns;
use crate::search_pattern::contains_pattern;
use crate::timestamp::Stamp;
use crate::{
    CatalogStore, Dataset, ImportSummary, Result, Sample, SampleImport, SamplePage, SampleQuery,
    StoreError,
};

/// `FROM samples WHERE …` for the latest versions matching `query`.
fn push_sample_filter<D: Dialect>(builder: &mut QueryBuilder<'_, D>, query: &SampleQuery) {
    builder.push(format!(" FROM samples WHERE latest = {}", D::TRUE));
    // No stored text holds a NUL (PostgreSQL's text cannot), and PostgreSQL refuses one in a
    // parameter: a filter with one matches nothing, and the query is not sent with it.
    let nul = |text: &Option<String>| text.as_deref().is_some_and(|t| t.contains('\0'));
    if nul(&query.dataset) || nul(&query.search) {
        builder.push(format!(" AND {}", D::FALSE));
        return;
    }
    if let Some(dataset) = &query.dataset {
        builder.push(" AND dataset = ").push_arg(dataset.clone());
    }
    if let Some(viewer) = &query.visible_to {
        builder
            .push(
                " AND dataset IN (SELECT name FROM datasets \
                 WHERE owner_user_id IS NULL OR owner_user_id = ",
            )
            .push_arg(viewer.clone())
            .push(")");
    }
    if let Some(search) = &query.search {
        builder
            .push(format!(" AND instance_id {} ", D::LIKE_IGNORING_CASE))
            .push_arg(contains_pattern(search))
            .push(" ESCAPE '\\'");
    }
}

fn dataset_select<D: Dialect>(filter: &str) -> String {
    format!(
        "SELECT d.name, d.description, d.created_at, d.owner_user_id, \
             (SELECT COUNT(*) FROM samples s WHERE s.dataset = d.name AND s.latest = {}) AS sample_count \
         FROM datasets d {filter}",
        D::TRUE
    )
}

#[async_trait]
impl<D: Dialect> CatalogStore for SqlStore<D> {
    async fn list_datasets(&self) -> Result<Vec<Dataset>> {
        let sql = dataset_select::<D>("ORDER BY d.name");
        let mut conn = self.conn().await?;
        let found = sqlx::query(&sql).fetch_all(D::exec(&mut conn)).await?;
        found.iter().map(rows::dataset::<D>).collect()
    }

    async fn get_dataset(&self, name: &str) -> Result<Option<Dataset>> {
        let sql = dataset_select::<D>("WHERE d.name = $1");
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(name)
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.as_ref().map(rows::dataset::<D>).transpose()
    }

    async fn dataset_owner(&self, name: &str) -> Result<Option<Option<String>>> {
        let mut conn = self.conn().await?;
        let row = sqlx::query("SELECT owner_user_id FROM datasets WHERE name = $1")
            .arg(name)
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.map(|row| D::get(&row, "owner_user_id")).transpose()
    }

    async fn set_dataset_owner(&self, name: &str, owner_user_id: Option<&str>) -> Result<bool> {
        let mut conn = self.conn().await?;
        let done = sqlx::query("UPDATE datasets SET owner_user_id = $1 WHERE name = $2")
            .arg(owner_user_id)
            .arg(name)
            .execute(D::exec(&mut conn))
            .await?;
        Ok(D::rows_affected(&done) > 0)
    }

    async fn import_samples(&self, import: &SampleImport) -> Result<ImportSummary> {
        let now = Stamp::from(import.now);
        let mut tx = D::begin_write(self.pool()).await?;

        sqlx::query(
            "INSERT INTO datasets (name, description, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET description = COALESCE(excluded.description, datasets.description)",
        )
        .arg(import.dataset.as_str())
        .arg(import.description.as_deref())
        .arg(now)
        .execute(D::exec(&mut tx))
        .await?;

        let mut summary = ImportSummary {
            created: 0,
            updated: 0,
        };
        // Checked as the import goes rather than up front, so that a duplicate leaves through
        // the same path as any other failure: the transaction is dropped and rolls back.
        let mut seen = HashSet::with_capacity(import.samples.len());
        let unset_latest = format!(
            "UPDATE samples SET latest = {} WHERE dataset = $1 AND sample_id = $2 AND latest = {}",
            D::FALSE,
            D::TRUE
        );
        let insert = format!(
            "INSERT INTO samples (dataset, sample_id, version, latest, created_at, instance_id, repo, \
                 base_commit, version_description, record) \
             VALUES ($1, $2, $3, {}, $4, $5, $6, $7, $8, $9)",
            D::TRUE
        );
        for sample in &import.samples {
            if !seen.insert(sample.sample_id.as_str()) {
                return Err(StoreError::Conflict("sample_id"));
            }
            let row = sqlx::query(
                "SELECT MAX(version) AS previous FROM samples WHERE dataset = $1 AND sample_id = $2",
            )
            .arg(import.dataset.as_str())
            .arg(sample.sample_id.as_str())
            .fetch_one(D::exec(&mut tx))
            .await?;
            let previous: Option<i64> = D::get(&row, "previous")?;
            if previous.is_some() {
                sqlx::query(&unset_latest)
                    .arg(import.dataset.as_str())
                    .arg(sample.sample_id.as_str())
                    .execute(D::exec(&mut tx))
                    .await?;
                summary.updated += 1;
            } else {
                summary.created += 1;
            }
            let record = &sample.record;
            sqlx::query(&insert)
                .arg(import.dataset.as_str())
                .arg(sample.sample_id.as_str())
                .arg(previous.unwrap_or(0) + 1)
                .arg(now)
                .arg(record.instance_id.as_str())
                .arg(record.repo.as_str())
                .arg(record.base_commit.as_str())
                .arg(import.version_description.as_deref())
                .arg(crate::sample_json::encode(record)?)
                .execute(D::exec(&mut tx))
                .await?;
        }
        tx.commit().await?;
        Ok(summary)
    }

    async fn list_samples(&self, query: &SampleQuery) -> Result<SamplePage> {
        // The total and the page come from the same snapshot, even while an import commits.
        let mut tx = D::begin_snapshot(self.pool()).await?;

        let mut count = QueryBuilder::<D>::new("SELECT COUNT(*) AS n");
        push_sample_filter(&mut count, query);
        let row = D::build(&mut count).fetch_one(D::exec(&mut tx)).await?;
        let total: i64 = D::get(&row, "n")?;

        let mut page =
            QueryBuilder::<D>::new(format!("SELECT {}", columns::plain(columns::SAMPLE)));
        push_sample_filter(&mut page, query);
        // The largest LIMIT is "no limit" on both (SQLite's -1 and PostgreSQL's NULL are not).
        page.push(" ORDER BY dataset, sample_id LIMIT ")
            .push_arg(query.limit.map_or(i64::MAX, as_i64))
            .push(" OFFSET ")
            .push_arg(as_i64(query.offset));
        let found = D::build(&mut page).fetch_all(D::exec(&mut tx)).await?;
        tx.commit().await?;

        Ok(SamplePage {
            samples: found.iter().map(rows::sample::<D>).collect::<Result<_>>()?,
            total: total.unsigned_abs(),
        })
    }

    async fn get_sample(
        &self,
        dataset: &str,
        sample_id: &str,
        version: Option<i64>,
    ) -> Result<Option<Sample>> {
        let which = match version {
            Some(_) => "version = $3".to_string(),
            None => format!("latest = {}", D::TRUE),
        };
        let sql = format!(
            "SELECT {} FROM samples WHERE dataset = $1 AND sample_id = $2 AND {which}",
            columns::plain(columns::SAMPLE)
        );
        let mut select = sqlx::query(&sql).arg(dataset).arg(sample_id);
        if let Some(version) = version {
            select = select.arg(version);
        }
        let mut conn = self.conn().await?;
        let row = select.fetch_optional(D::exec(&mut conn)).await?;
        row.as_ref().map(rows::sample::<D>).transpose()
    }
}

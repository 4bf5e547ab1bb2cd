//! Base images: numbered versions of a family and which one is current.
//!
//! A version's number is one more than the last its family gave (`base_image_families`,
//! whose row the inserting transaction locks): numbers are never reused, even after a
//! delete, so `base/<family>:<n>` names one image for good.
//! Status changes are conditional updates, so a preparation that ends after an abort does
//! not bring the version back; promoting and rolling back change the family's current
//! version in the same transaction as the status.
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use sqlx::QueryBuilder;

use super::dialect::{parse_column, BuilderExt, Dialect, QueryExt};
use super::{as_i64, SqlStore};
use crate::missing_reference::insert_error;
use crate::timestamp::Stamp;
use crate::{
    BaseImageInsert, BaseImageLimits, BaseImageOutcome, BaseImageProgress, BaseImageRecord,
    BaseImageStatus, BaseImageStore, NewBaseImage, Result, StoreError,
};

const SELECT: &str = "SELECT b.image_id, b.family, b.version, b.status, b.source, b.created_by, \
     b.created_at, b.updated_at, b.layers_done, b.layers_total, b.bytes_done, b.bytes_total, \
     b.size_bytes, b.digest, b.error, b.promoted_at, b.node_id, f.current_id \
     FROM base_images b LEFT JOIN base_image_families f ON f.current_id = b.image_id";

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn base_image_row<D: Dialect>(row: &D::Row) -> Result<BaseImageRecord> {
    let status: String = D::get(row, "status")?;
    let version: i64 = D::get(row, "version")?;
    let size: Option<i64> = D::get(row, "size_bytes")?;
    let current: Option<String> = D::get(row, "current_id")?;
    Ok(BaseImageRecord {
        image_id: D::get(row, "image_id")?,
        family: D::get(row, "family")?,
        version: count(version),
        status: parse_column(&status, "base image status", BaseImageStatus::parse)?,
        source: D::get(row, "source")?,
        created_by: D::get(row, "created_by")?,
        created_at: D::time(row, "created_at")?,
        updated_at: D::time(row, "updated_at")?,
        progress: BaseImageProgress {
            layers_done: count(D::get(row, "layers_done")?),
            layers_total: count(D::get(row, "layers_total")?),
            bytes_done: count(D::get(row, "bytes_done")?),
            bytes_total: count(D::get(row, "bytes_total")?),
        },
        size_bytes: size.map(count),
        digest: D::get(row, "digest")?,
        error: D::get(row, "error")?,
        promoted_at: D::opt_time(row, "promoted_at")?,
        current: current.is_some(),
        node_id: D::get(row, "node_id")?,
    })
}

#[async_trait]
impl<D: Dialect> BaseImageStore for SqlStore<D> {
    async fn insert_base_image(
        &self,
        image: &NewBaseImage,
        limits: BaseImageLimits,
    ) -> Result<BaseImageInsert> {
        let mut tx = D::begin_write(self.pool()).await?;
        let row = sqlx::query("SELECT COUNT(*) AS n FROM base_images WHERE family = $1")
            .arg(image.family.as_str())
            .fetch_one(D::exec(&mut tx))
            .await?;
        let versions: i64 = D::get(&row, "n")?;
        if count(versions) >= limits.max_versions_per_family {
            return Ok(BaseImageInsert::TooManyVersions);
        }
        let row = sqlx::query("SELECT COUNT(*) AS n FROM base_images WHERE status = 'preparing'")
            .fetch_one(D::exec(&mut tx))
            .await?;
        let preparing: i64 = D::get(&row, "n")?;
        if count(preparing) >= limits.max_preparing {
            return Ok(BaseImageInsert::TooManyPreparing);
        }
        // The family's row, locked until commit, numbers its versions.
        let row = sqlx::query(
            "INSERT INTO base_image_families (family, last_version) VALUES ($1, 1) \
             ON CONFLICT (family) DO UPDATE \
             SET last_version = base_image_families.last_version + 1 RETURNING last_version",
        )
        .arg(image.family.as_str())
        .fetch_one(D::exec(&mut tx))
        .await?;
        let version: i64 = D::get(&row, "last_version")?;
        sqlx::query(
            "INSERT INTO base_images (image_id, family, version, status, source, created_by, \
                 created_at, updated_at, node_id) \
             VALUES ($1, $2, $3, 'preparing', $4, $5, $6, $6, $7)",
        )
        .arg(image.image_id.as_str())
        .arg(image.family.as_str())
        .arg(version)
        .arg(image.source.as_str())
        .arg(image.created_by.as_str())
        .arg(Stamp(image.created_at))
        .arg(image.node_id.as_deref())
        .execute(D::exec(&mut tx))
        .await
        .map_err(|e| insert_error(e, "image_id", "user"))?;
        tx.commit().await?;
        self.get_base_image(&image.image_id)
            .await?
            .map(|record| BaseImageInsert::Inserted(Box::new(record)))
            .ok_or(StoreError::Missing("base image"))
    }

    async fn get_base_image(&self, image_id: &str) -> Result<Option<BaseImageRecord>> {
        let sql = format!("{SELECT} WHERE b.image_id = $1");
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(image_id)
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.as_ref().map(base_image_row::<D>).transpose()
    }

    async fn list_base_images(&self, family: Option<&str>) -> Result<Vec<BaseImageRecord>> {
        let sql = format!(
            "{SELECT} WHERE ($1 IS NULL OR b.family = $1) ORDER BY b.family, b.version DESC"
        );
        let mut conn = self.conn().await?;
        let rows = sqlx::query(&sql)
            .arg(family)
            .fetch_all(D::exec(&mut conn))
            .await?;
        rows.iter().map(base_image_row::<D>).collect()
    }

    async fn page_base_images(
        &self,
        after: Option<(&str, u64)>,
        limit: u64,
    ) -> Result<Vec<BaseImageRecord>> {
        // Keyset on the listing's order (family up, version down): the family's older
        // versions, then the later families.
        let mut select = QueryBuilder::<D>::new(SELECT);
        if let Some((family, version)) = after {
            select
                .push_sql(" WHERE b.family > ")
                .push_arg(family)
                .push_sql(" OR (b.family = ")
                .push_arg(family)
                .push_sql(" AND b.version < ")
                .push_arg(as_i64(version))
                .push_sql(")");
        }
        select
            .push_sql(" ORDER BY b.family, b.version DESC LIMIT ")
            .push_arg(as_i64(limit));
        let mut conn = self.conn().await?;
        let rows = D::build(&mut select).fetch_all(D::exec(&mut conn)).await?;
        rows.iter().map(base_image_row::<D>).collect()
    }

    async fn current_base_image(&self, family: &str) -> Result<Option<BaseImageRecord>> {
        let sql = format!("{SELECT} WHERE b.family = $1 AND f.current_id IS NOT NULL");
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(family)
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.as_ref().map(base_image_row::<D>).transpose()
    }

    async fn set_base_image_progress(
        &self,
        image_id: &str,
        progress: BaseImageProgress,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let mut conn = self.conn().await?;
        sqlx::query(
            "UPDATE base_images SET layers_done = $2, layers_total = $3, bytes_done = $4, \
                 bytes_total = $5, updated_at = $6 \
             WHERE image_id = $1 AND status = 'preparing'",
        )
        .arg(image_id)
        .arg(as_i64(progress.layers_done))
        .arg(as_i64(progress.layers_total))
        .arg(as_i64(progress.bytes_done))
        .arg(as_i64(progress.bytes_total))
        .arg(Stamp(at))
        .execute(D::exec(&mut conn))
        .await?;
        Ok(())
    }

    async fn finish_base_image(
        &self,
        image_id: &str,
        outcome: &BaseImageOutcome,
        at: DateTime<Utc>,
    ) -> Result<Option<BaseImageRecord>> {
        let (status, size, digest, error) = match outcome {
            BaseImageOutcome::Prepared { size_bytes, digest } => (
                BaseImageStatus::Prepared,
                Some(as_i64(*size_bytes)),
                Some(digest.as_str()),
                None,
            ),
            BaseImageOutcome::Failed { error } => {
                (BaseImageStatus::Failed, None, None, Some(error.as_str()))
            }
        };
        let mut conn = self.conn().await?;
        let done = sqlx::query(
            "UPDATE base_images SET status = $2, size_bytes = $3, digest = $4, error = $5, \
                 updated_at = $6 \
             WHERE image_id = $1 AND status = 'preparing'",
        )
        .arg(image_id)
        .arg(status.as_str())
        .arg(size)
        .arg(digest)
        .arg(error)
        .arg(Stamp(at))
        .execute(D::exec(&mut conn))
        .await?;
        drop(conn);
        if D::rows_affected(&done) == 0 {
            return Ok(None);
        }
        self.get_base_image(image_id).await
    }

    async fn abort_base_image(
        &self,
        image_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<BaseImageRecord>> {
        let mut conn = self.conn().await?;
        let done = sqlx::query(
            "UPDATE base_images SET status = 'aborted', updated_at = $2 \
             WHERE image_id = $1 AND status IN ('preparing', 'prepared')",
        )
        .arg(image_id)
        .arg(Stamp(at))
        .execute(D::exec(&mut conn))
        .await?;
        drop(conn);
        if D::rows_affected(&done) == 0 {
            return Ok(None);
        }
        self.get_base_image(image_id).await
    }

    async fn promote_base_image(
        &self,
        image_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<BaseImageRecord>> {
        let mut tx = D::begin_write(self.pool()).await?;
        let row = sqlx::query(
            "UPDATE base_images SET status = 'promoted', promoted_at = $2, updated_at = $2 \
             WHERE image_id = $1 AND status = 'prepared' RETURNING family",
        )
        .arg(image_id)
        .arg(Stamp(at))
        .fetch_optional(D::exec(&mut tx))
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let family: String = D::get(&row, "family")?;
        set_current::<D>(&mut tx, &family, image_id).await?;
        tx.commit().await?;
        self.get_base_image(image_id).await
    }

    async fn rollback_base_image_family(&self, family: &str) -> Result<Option<BaseImageRecord>> {
        let mut tx = D::begin_write(self.pool()).await?;
        let lock = format!(
            "SELECT b.version FROM base_image_families f \
             JOIN base_images b ON b.image_id = f.current_id WHERE f.family = $1{}",
            D::FOR_UPDATE
        );
        let row = sqlx::query(&lock)
            .arg(family)
            .fetch_optional(D::exec(&mut tx))
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let current: i64 = D::get(&row, "version")?;
        let row = sqlx::query(
            "SELECT image_id FROM base_images \
             WHERE family = $1 AND status = 'promoted' AND version < $2 \
             ORDER BY version DESC LIMIT 1",
        )
        .arg(family)
        .arg(current)
        .fetch_optional(D::exec(&mut tx))
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let previous: String = D::get(&row, "image_id")?;
        set_current::<D>(&mut tx, family, &previous).await?;
        tx.commit().await?;
        self.get_base_image(&previous).await
    }

    async fn delete_base_image(&self, image_id: &str) -> Result<bool> {
        let mut conn = self.conn().await?;
        let done = sqlx::query(
            "DELETE FROM base_images WHERE image_id = $1 AND status <> 'preparing' \
             AND NOT EXISTS (SELECT 1 FROM base_image_families WHERE current_id = $1)",
        )
        .arg(image_id)
        .execute(D::exec(&mut conn))
        .await?;
        Ok(D::rows_affected(&done) == 1)
    }
}

async fn set_current<D: Dialect>(
    tx: &mut sqlx::Transaction<'static, D>,
    family: &str,
    image_id: &str,
) -> Result<()> {
    sqlx::query("UPDATE base_image_families SET current_id = $2 WHERE family = $1")
        .arg(family)
        .arg(image_id)
        .execute(D::exec(tx))
        .await?;
    Ok(())
}

//! Reading PostgreSQL rows into records. TIMESTAMPTZ and BOOLEAN decode directly.
use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::{Dataset, Result, Sample, SampleRecord};

pub(super) fn dataset(row: &PgRow) -> Result<Dataset> {
    Ok(Dataset {
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        sample_count: row.try_get("sample_count")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) fn sample(row: &PgRow) -> Result<Sample> {
    let record: String = row.try_get("record")?;
    let record: SampleRecord = crate::sample_json::decode(&record)?;
    Ok(Sample {
        dataset: row.try_get("dataset")?,
        sample_id: row.try_get("sample_id")?,
        version: row.try_get("version")?,
        latest: row.try_get("latest")?,
        version_description: row.try_get("version_description")?,
        created_at: row.try_get("created_at")?,
        instance_id: row.try_get("instance_id")?,
        repo: row.try_get("repo")?,
        base_commit: row.try_get("base_commit")?,
        record,
    })
}

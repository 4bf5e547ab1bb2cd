//! Reading SQLite rows into records. Timestamps are the store's fixed-width text
//! (see [`crate::timestamp`]); booleans are INTEGER 0/1, which sqlx decodes as `bool`.
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::timestamp::from_sqlite_text;
use crate::{Dataset, Result, Sample, SampleRecord};

pub(super) fn time(row: &SqliteRow, name: &str) -> Result<DateTime<Utc>> {
    let text: String = row.try_get(name)?;
    from_sqlite_text(&text)
}

pub(super) fn optional_time(row: &SqliteRow, name: &str) -> Result<Option<DateTime<Utc>>> {
    let text: Option<String> = row.try_get(name)?;
    text.as_deref().map(from_sqlite_text).transpose()
}

pub(super) fn dataset(row: &SqliteRow) -> Result<Dataset> {
    Ok(Dataset {
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        sample_count: row.try_get("sample_count")?,
        created_at: time(row, "created_at")?,
    })
}

pub(super) fn sample(row: &SqliteRow) -> Result<Sample> {
    let record: String = row.try_get("record")?;
    let record: SampleRecord = crate::sample_json::decode(&record)?;
    Ok(Sample {
        dataset: row.try_get("dataset")?,
        sample_id: row.try_get("sample_id")?,
        version: row.try_get("version")?,
        latest: row.try_get("latest")?,
        version_description: row.try_get("version_description")?,
        created_at: time(row, "created_at")?,
        instance_id: row.try_get("instance_id")?,
        repo: row.try_get("repo")?,
        base_commit: row.try_get("base_commit")?,
        record,
    })
}

//! Reading SQLite rows into records. Timestamps are the store's fixed-width text
//! (see [`crate::timestamp`]); booleans are INTEGER 0/1, which sqlx decodes as `bool`.
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::timestamp::from_sqlite_text;
use crate::{ApiKeyRecord, Dataset, Result, Sample, SampleRecord, User};

/// `prefix` lets one decoder read aliased columns of a join (`u_name`, …).
fn column(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}")
}

pub(super) fn time(row: &SqliteRow, name: &str) -> Result<DateTime<Utc>> {
    let text: String = row.try_get(name)?;
    from_sqlite_text(&text)
}

pub(super) fn optional_time(row: &SqliteRow, name: &str) -> Result<Option<DateTime<Utc>>> {
    let text: Option<String> = row.try_get(name)?;
    text.as_deref().map(from_sqlite_text).transpose()
}

pub(super) fn user(row: &SqliteRow, prefix: &str) -> Result<User> {
    let c = |name| column(prefix, name);
    Ok(User {
        user_id: row.try_get(c("user_id").as_str())?,
        name: row.try_get(c("name").as_str())?,
        email: row.try_get(c("email").as_str())?,
        github_id: row.try_get(c("github_id").as_str())?,
        github_login: row.try_get(c("github_login").as_str())?,
        is_admin: row.try_get(c("is_admin").as_str())?,
        is_active: row.try_get(c("is_active").as_str())?,
        created_at: time(row, &c("created_at"))?,
        last_login_at: optional_time(row, &c("last_login_at"))?,
        terms_accepted_at: optional_time(row, &c("terms_accepted_at"))?,
    })
}

pub(super) fn api_key(row: &SqliteRow, prefix: &str) -> Result<ApiKeyRecord> {
    let c = |name| column(prefix, name);
    Ok(ApiKeyRecord {
        key_id: row.try_get(c("key_id").as_str())?,
        user_id: row.try_get(c("user_id").as_str())?,
        name: row.try_get(c("name").as_str())?,
        masked: row.try_get(c("masked").as_str())?,
        created_at: time(row, &c("created_at"))?,
        expires_at: optional_time(row, &c("expires_at"))?,
        revoked_at: optional_time(row, &c("revoked_at"))?,
        last_used_at: optional_time(row, &c("last_used_at"))?,
    })
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

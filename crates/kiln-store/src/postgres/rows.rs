//! Reading PostgreSQL rows into records. TIMESTAMPTZ and BOOLEAN decode directly.
use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::{ApiKeyRecord, Dataset, Result, Sample, SampleRecord, User};

/// `prefix` lets one decoder read aliased columns of a join (`u_name`, …).
fn column(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}")
}

pub(super) fn user(row: &PgRow, prefix: &str) -> Result<User> {
    let c = |name| column(prefix, name);
    Ok(User {
        user_id: row.try_get(c("user_id").as_str())?,
        name: row.try_get(c("name").as_str())?,
        email: row.try_get(c("email").as_str())?,
        github_id: row.try_get(c("github_id").as_str())?,
        github_login: row.try_get(c("github_login").as_str())?,
        is_admin: row.try_get(c("is_admin").as_str())?,
        is_active: row.try_get(c("is_active").as_str())?,
        created_at: row.try_get(c("created_at").as_str())?,
        last_login_at: row.try_get(c("last_login_at").as_str())?,
        terms_accepted_at: row.try_get(c("terms_accepted_at").as_str())?,
    })
}

pub(super) fn api_key(row: &PgRow, prefix: &str) -> Result<ApiKeyRecord> {
    let c = |name| column(prefix, name);
    Ok(ApiKeyRecord {
        key_id: row.try_get(c("key_id").as_str())?,
        user_id: row.try_get(c("user_id").as_str())?,
        name: row.try_get(c("name").as_str())?,
        masked: row.try_get(c("masked").as_str())?,
        created_at: row.try_get(c("created_at").as_str())?,
        expires_at: row.try_get(c("expires_at").as_str())?,
        revoked_at: row.try_get(c("revoked_at").as_str())?,
        last_used_at: row.try_get(c("last_used_at").as_str())?,
    })
}

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

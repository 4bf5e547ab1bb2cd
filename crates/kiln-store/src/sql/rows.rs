//! Reading rows into records, on either backend. Booleans decode as `bool` on both (SQLite's
//! INTEGER 0/1 included); timestamps through [`Dialect::time`].
use super::dialect::{parse_column, Dialect};
use crate::{
    ApiKeyRecord, Dataset, OrgMembership, OrgRole, Organization, Result, Sample, SampleRecord,
    SessionLimits, SessionRecord, SessionSource, SessionStatus, SessionUsage, StoreError, User,
};

/// `prefix` lets one decoder read aliased columns of a join (`u_name`, …).
fn column(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}")
}

pub(super) fn user<D: Dialect>(row: &D::Row, prefix: &str) -> Result<User> {
    let c = |name| column(prefix, name);
    Ok(User {
        user_id: D::get(row, &c("user_id"))?,
        name: D::get(row, &c("name"))?,
        email: D::get(row, &c("email"))?,
        github_id: D::get(row, &c("github_id"))?,
        github_login: D::get(row, &c("github_login"))?,
        is_admin: D::get(row, &c("is_admin"))?,
        is_active: D::get(row, &c("is_active"))?,
        created_at: D::time(row, &c("created_at"))?,
        last_login_at: D::opt_time(row, &c("last_login_at"))?,
        terms_accepted_at: D::opt_time(row, &c("terms_accepted_at"))?,
    })
}

pub(super) fn api_key<D: Dialect>(row: &D::Row, prefix: &str) -> Result<ApiKeyRecord> {
    let c = |name| column(prefix, name);
    Ok(ApiKeyRecord {
        key_id: D::get(row, &c("key_id"))?,
        user_id: D::get(row, &c("user_id"))?,
        name: D::get(row, &c("name"))?,
        masked: D::get(row, &c("masked"))?,
        created_at: D::time(row, &c("created_at"))?,
        expires_at: D::opt_time(row, &c("expires_at"))?,
        revoked_at: D::opt_time(row, &c("revoked_at"))?,
        last_used_at: D::opt_time(row, &c("last_used_at"))?,
    })
}

pub(super) fn organization<D: Dialect>(row: &D::Row, prefix: &str) -> Result<Organization> {
    let c = |name| column(prefix, name);
    Ok(Organization {
        org_id: D::get(row, &c("org_id"))?,
        slug: D::get(row, &c("slug"))?,
        name: D::get(row, &c("name"))?,
        personal_of: D::get(row, &c("personal_of"))?,
        account_user_id: D::get(row, &c("account_user_id"))?,
        created_at: D::time(row, &c("created_at"))?,
    })
}

/// An organization's columns and the membership's `role` and `is_default`, all under
/// `prefix`.
pub(super) fn membership<D: Dialect>(row: &D::Row, prefix: &str) -> Result<OrgMembership> {
    Ok(OrgMembership {
        org: organization::<D>(row, prefix)?,
        role: role::<D>(row, prefix)?,
        is_default: D::get(row, &column(prefix, "is_default"))?,
    })
}

pub(super) fn role<D: Dialect>(row: &D::Row, prefix: &str) -> Result<OrgRole> {
    let role: String = D::get(row, &column(prefix, "role"))?;
    OrgRole::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("unknown org role {role:?}")))
}

pub(super) fn dataset<D: Dialect>(row: &D::Row) -> Result<Dataset> {
    Ok(Dataset {
        name: D::get(row, "name")?,
        description: D::get(row, "description")?,
        sample_count: D::get(row, "sample_count")?,
        created_at: D::time(row, "created_at")?,
        owner_user_id: D::get(row, "owner_user_id")?,
    })
}

pub(super) fn sample<D: Dialect>(row: &D::Row) -> Result<Sample> {
    let record: String = D::get(row, "record")?;
    let record: SampleRecord = crate::sample_json::decode(&record)?;
    Ok(Sample {
        dataset: D::get(row, "dataset")?,
        sample_id: D::get(row, "sample_id")?,
        version: D::get(row, "version")?,
        latest: D::get(row, "latest")?,
        version_description: D::get(row, "version_description")?,
        created_at: D::time(row, "created_at")?,
        instance_id: D::get(row, "instance_id")?,
        repo: D::get(row, "repo")?,
        base_commit: D::get(row, "base_commit")?,
        record,
    })
}

pub(super) fn session<D: Dialect>(row: &D::Row) -> Result<SessionRecord> {
    let status: String = D::get(row, "status")?;
    Ok(SessionRecord {
        session_id: D::get(row, "session_id")?,
        user_id: D::get(row, "user_id")?,
        source: session_source::<D>(row)?,
        name: D::get(row, "name")?,
        labels: crate::json_column::decode("labels", &D::get::<String>(row, "labels")?)?,
        limits: SessionLimits {
            cpu_millicores: number::<D>(row, "limit_cpu_millicores")?,
            memory_bytes: number::<D>(row, "limit_memory_bytes")?,
            disk_bytes: number::<D>(row, "limit_disk_bytes")?,
        },
        status: parse_column(&status, "session status", SessionStatus::parse)?,
        requested_at: D::time(row, "requested_at")?,
        ready_at: D::opt_time(row, "ready_at")?,
        expires_at: D::time(row, "expires_at")?,
        ended_at: D::opt_time(row, "ended_at")?,
        sandbox_id: D::get(row, "sandbox_id")?,
        location: D::get(row, "location")?,
        error_code: D::get(row, "error_code")?,
        error_message: D::get(row, "error_message")?,
        usage: session_usage::<D>(row)?,
    })
}

/// A sample's three columns, or the image's; the schema's CHECK keeps exactly one.
fn session_source<D: Dialect>(row: &D::Row) -> Result<SessionSource> {
    let image: Option<String> = D::get(row, "image")?;
    let dataset: Option<String> = D::get(row, "dataset")?;
    let sample_id: Option<String> = D::get(row, "sample_id")?;
    let version: Option<i64> = D::get(row, "sample_version")?;
    match (image, dataset, sample_id, version) {
        (Some(reference), None, None, None) => Ok(SessionSource::Image { reference }),
        (None, Some(dataset), Some(sample_id), Some(version)) => Ok(SessionSource::Sample {
            dataset,
            sample_id,
            version,
        }),
        _ => Err(crate::StoreError::Corrupt(
            "a session has neither one image nor one sample version".into(),
        )),
    }
}

fn number<D: Dialect>(row: &D::Row, column: &str) -> Result<Option<u64>> {
    let value: Option<i64> = D::get(row, column)?;
    Ok(value.map(i64::unsigned_abs))
}

fn session_usage<D: Dialect>(row: &D::Row) -> Result<Option<SessionUsage>> {
    let Some(sampled_at) = D::opt_time(row, "usage_at")? else {
        return Ok(None);
    };
    let number = |column: &str| -> Result<Option<u64>> {
        let value: Option<i64> = D::get(row, column)?;
        Ok(value.map(i64::unsigned_abs))
    };
    Ok(Some(SessionUsage {
        cpu_micros: number("usage_cpu_micros")?,
        memory_peak_bytes: number("usage_memory_peak_bytes")?,
        disk_used_bytes: number("usage_disk_used_bytes")?,
        disk_limit_bytes: number("usage_disk_limit_bytes")?,
        pids_peak: number("usage_pids_peak")?,
        sampled_at,
    }))
}

//! Org security (migration 0018): sudo grants on device sessions and API keys, org IP
//! allowlists, the default org.
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::dialect::{Dialect, QueryExt};
use super::SqlStore;
use crate::missing_reference::insert_error;
use crate::timestamp::{opt, Stamp};
use crate::{IpAllowEntry, KeyAllowlist, OrgSecurityStore, Result, SudoHolder};

const ENTRY_COLUMNS: &str = "entry_id, org_id, cidr, note, created_by, created_at";

/// The table and key column a holder's grant lives in (never caller text).
fn sudo_place(holder: &SudoHolder) -> (&'static str, &'static str, &str) {
    match holder {
        SudoHolder::DeviceSession(id) => ("device_sessions", "session_id", id),
        SudoHolder::ApiKey(id) => ("api_keys", "key_id", id),
    }
}

#[async_trait]
impl<D: Dialect> OrgSecurityStore for SqlStore<D> {
    async fn set_sudo(
        &self,
        holder: &SudoHolder,
        user_id: &str,
        until: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let (table, key, id) = sudo_place(holder);
        let mut conn = self.conn().await?;
        let done = sqlx::query(&format!(
            "UPDATE {table} SET sudo_until = $1 WHERE {key} = $2 AND user_id = $3 \
             AND revoked_at IS NULL"
        ))
        .arg(opt(until))
        .arg(id)
        .arg(user_id)
        .execute(D::exec(&mut conn))
        .await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn get_sudo(&self, holder: &SudoHolder) -> Result<Option<DateTime<Utc>>> {
        let (table, key, id) = sudo_place(holder);
        let mut conn = self.conn().await?;
        let row = sqlx::query(&format!(
            "SELECT sudo_until FROM {table} WHERE {key} = $1 AND revoked_at IS NULL"
        ))
        .arg(id)
        .fetch_optional(D::exec(&mut conn))
        .await?;
        match row {
            Some(row) => D::opt_time(&row, "sudo_until"),
            None => Ok(None),
        }
    }

    async fn list_ip_allowlist(&self, org_id: &str) -> Result<Vec<IpAllowEntry>> {
        let mut conn = self.conn().await?;
        let found = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS} FROM org_ip_allowlist WHERE org_id = $1 \
             ORDER BY created_at, entry_id"
        ))
        .arg(org_id)
        .fetch_all(D::exec(&mut conn))
        .await?;
        found.iter().map(entry_row::<D>).collect()
    }

    async fn replace_ip_allowlist(&self, org_id: &str, entries: &[IpAllowEntry]) -> Result<()> {
        let mut tx = D::begin_write(self.pool()).await?;
        sqlx::query("DELETE FROM org_ip_allowlist WHERE org_id = $1")
            .arg(org_id)
            .execute(D::exec(&mut tx))
            .await?;
        for entry in entries {
            insert_entry::<D>(&mut tx, entry).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn add_ip_allow_entry(&self, entry: &IpAllowEntry, max_entries: u32) -> Result<bool> {
        let mut tx = D::begin_write(self.pool()).await?;
        let row = sqlx::query("SELECT COUNT(*) AS n FROM org_ip_allowlist WHERE org_id = $1")
            .arg(entry.org_id.as_str())
            .fetch_one(D::exec(&mut tx))
            .await?;
        let n: i64 = D::get(&row, "n")?;
        if n >= i64::from(max_entries) {
            return Ok(false);
        }
        insert_entry::<D>(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn delete_ip_allow_entry(&self, org_id: &str, entry_id: &str) -> Result<bool> {
        let mut conn = self.conn().await?;
        let done = sqlx::query("DELETE FROM org_ip_allowlist WHERE org_id = $1 AND entry_id = $2")
            .arg(org_id)
            .arg(entry_id)
            .execute(D::exec(&mut conn))
            .await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn key_allowlist(&self, key_id: &str) -> Result<Option<KeyAllowlist>> {
        let mut conn = self.conn().await?;
        let found = sqlx::query(
            "SELECT k.org_id, a.cidr FROM org_api_keys k \
             LEFT JOIN org_ip_allowlist a ON a.org_id = k.org_id WHERE k.key_id = $1",
        )
        .arg(key_id)
        .fetch_all(D::exec(&mut conn))
        .await?;
        let Some(first) = found.first() else {
            return Ok(None);
        };
        let mut cidrs = Vec::with_capacity(found.len());
        for row in &found {
            if let Some(cidr) = D::get::<Option<String>>(row, "cidr")? {
                cidrs.push(cidr);
            }
        }
        Ok(Some(KeyAllowlist {
            org_id: D::get(first, "org_id")?,
            cidrs,
        }))
    }

    async fn set_default_org(&self, user_id: &str, org_id: &str) -> Result<bool> {
        let mut tx = D::begin_write(self.pool()).await?;
        let member =
            sqlx::query("SELECT 1 AS one FROM org_members WHERE org_id = $1 AND user_id = $2")
                .arg(org_id)
                .arg(user_id)
                .fetch_optional(D::exec(&mut tx))
                .await?;
        if member.is_none() {
            return Ok(false);
        }
        // Cleared first: at most one default per user (a unique partial index).
        sqlx::query(&format!(
            "UPDATE org_members SET is_default = {} WHERE user_id = $1 AND is_default = {}",
            D::FALSE,
            D::TRUE
        ))
        .arg(user_id)
        .execute(D::exec(&mut tx))
        .await?;
        sqlx::query(&format!(
            "UPDATE org_members SET is_default = {} WHERE org_id = $1 AND user_id = $2",
            D::TRUE
        ))
        .arg(org_id)
        .arg(user_id)
        .execute(D::exec(&mut tx))
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

async fn insert_entry<D: Dialect>(
    tx: &mut sqlx::Transaction<'static, D>,
    entry: &IpAllowEntry,
) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO org_ip_allowlist ({ENTRY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
    ))
    .arg(entry.entry_id.as_str())
    .arg(entry.org_id.as_str())
    .arg(entry.cidr.as_str())
    .arg(entry.note.as_str())
    .arg(entry.created_by.as_deref())
    .arg(Stamp(entry.created_at))
    .execute(D::exec(&mut **tx))
    .await
    .map_err(|e| insert_error(e, "entry_id", "organization"))?;
    Ok(())
}

fn entry_row<D: Dialect>(row: &D::Row) -> Result<IpAllowEntry> {
    Ok(IpAllowEntry {
        entry_id: D::get(row, "entry_id")?,
        org_id: D::get(row, "org_id")?,
        cidr: D::get(row, "cidr")?,
        note: D::get(row, "note")?,
        created_by: D::get(row, "created_by")?,
        created_at: D::time(row, "created_at")?,
    })
}

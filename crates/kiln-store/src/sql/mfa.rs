//! Second factors (migration 0014): TOTP factors, backup codes and sign-in challenges. A
//! TOTP step, a backup code and a challenge are each accepted by one conditional `UPDATE`,
//! so two concurrent requests with the same code cannot both pass.
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::dialect::{Dialect, QueryExt};
use super::SqlStore;
use crate::missing_reference::insert_error;
use crate::timestamp::{opt, Stamp};
use crate::{MfaChallenge, MfaFactor, MfaStore, Result};

const FACTOR_COLUMNS: &str = "factor_id, user_id, kind, secret_sealed, created_at, confirmed_at, \
     last_used_step, last_used_at";
const CHALLENGE_COLUMNS: &str = "challenge_hash, user_id, created_at, expires_at, used_at, \
     failures, user_agent, ip_address";

#[async_trait]
impl<D: Dialect> MfaStore for SqlStore<D> {
    async fn insert_mfa_factor(&self, factor: &MfaFactor) -> Result<()> {
        let mut tx = D::begin_write(self.pool()).await?;
        sqlx::query("DELETE FROM mfa_factors WHERE user_id = $1 AND confirmed_at IS NULL")
            .arg(factor.user_id.as_str())
            .execute(D::exec(&mut tx))
            .await?;
        sqlx::query(&format!(
            "INSERT INTO mfa_factors ({FACTOR_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .arg(factor.factor_id.as_str())
        .arg(factor.user_id.as_str())
        .arg(factor.kind.as_str())
        .arg(factor.secret_sealed.as_str())
        .arg(Stamp(factor.created_at))
        .arg(opt(factor.confirmed_at))
        .arg(factor.last_used_step)
        .arg(opt(factor.last_used_at))
        .execute(D::exec(&mut tx))
        .await
        .map_err(|e| insert_error(e, "factor_id", "user"))?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_mfa_factor(&self, factor_id: &str) -> Result<Option<MfaFactor>> {
        let mut conn = self.conn().await?;
        let row = sqlx::query(&format!(
            "SELECT {FACTOR_COLUMNS} FROM mfa_factors WHERE factor_id = $1"
        ))
        .arg(factor_id)
        .fetch_optional(D::exec(&mut conn))
        .await?;
        row.map(|r| factor_row::<D>(&r)).transpose()
    }

    async fn list_mfa_factors(&self, user_id: &str) -> Result<Vec<MfaFactor>> {
        let mut conn = self.conn().await?;
        let found = sqlx::query(&format!(
            "SELECT {FACTOR_COLUMNS} FROM mfa_factors WHERE user_id = $1 \
             AND confirmed_at IS NOT NULL ORDER BY created_at, factor_id"
        ))
        .arg(user_id)
        .fetch_all(D::exec(&mut conn))
        .await?;
        found.iter().map(factor_row::<D>).collect()
    }

    async fn confirm_mfa_factor(
        &self,
        user_id: &str,
        factor_id: &str,
        step: i64,
        backup_codes: &[String],
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = D::begin_write(self.pool()).await?;
        let done = sqlx::query(
            "UPDATE mfa_factors SET confirmed_at = $1, last_used_step = $2, last_used_at = $1 \
             WHERE factor_id = $3 AND user_id = $4 AND confirmed_at IS NULL",
        )
        .arg(Stamp(at))
        .arg(step)
        .arg(factor_id)
        .arg(user_id)
        .execute(D::exec(&mut tx))
        .await?;
        if D::rows_affected(&done) != 1 {
            return Ok(false);
        }
        if !backup_codes.is_empty() {
            replace_codes::<D>(&mut tx, user_id, backup_codes, at).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn use_totp_step(&self, factor_id: &str, step: i64, at: DateTime<Utc>) -> Result<bool> {
        let mut conn = self.conn().await?;
        let done = sqlx::query(
            "UPDATE mfa_factors SET last_used_step = $1, last_used_at = $2 WHERE factor_id = $3 \
             AND confirmed_at IS NOT NULL AND (last_used_step IS NULL OR last_used_step < $1)",
        )
        .arg(step)
        .arg(Stamp(at))
        .arg(factor_id)
        .execute(D::exec(&mut conn))
        .await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn delete_mfa_factor(&self, user_id: &str, factor_id: &str) -> Result<bool> {
        let mut tx = D::begin_write(self.pool()).await?;
        let done = sqlx::query(
            "DELETE FROM mfa_factors WHERE factor_id = $1 AND user_id = $2 \
             AND confirmed_at IS NOT NULL",
        )
        .arg(factor_id)
        .arg(user_id)
        .execute(D::exec(&mut tx))
        .await?;
        // Backup codes stand in for a factor: with none left, they go too.
        sqlx::query(
            "DELETE FROM mfa_backup_codes WHERE user_id = $1 AND NOT EXISTS \
             (SELECT 1 FROM mfa_factors WHERE user_id = $1 AND confirmed_at IS NOT NULL)",
        )
        .arg(user_id)
        .execute(D::exec(&mut tx))
        .await?;
        tx.commit().await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn replace_backup_codes(
        &self,
        user_id: &str,
        code_hashes: &[String],
        at: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = D::begin_write(self.pool()).await?;
        replace_codes::<D>(&mut tx, user_id, code_hashes, at).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn use_backup_code(
        &self,
        user_id: &str,
        code_hash: &str,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let mut conn = self.conn().await?;
        let done = sqlx::query(
            "UPDATE mfa_backup_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 \
             AND used_at IS NULL",
        )
        .arg(Stamp(at))
        .arg(user_id)
        .arg(code_hash)
        .execute(D::exec(&mut conn))
        .await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn count_backup_codes(&self, user_id: &str) -> Result<u64> {
        let mut conn = self.conn().await?;
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM mfa_backup_codes WHERE user_id = $1 AND used_at IS NULL",
        )
        .arg(user_id)
        .fetch_one(D::exec(&mut conn))
        .await?;
        Ok(D::get::<i64>(&row, "n")?.unsigned_abs())
    }

    async fn insert_mfa_challenge(&self, c: &MfaChallenge) -> Result<()> {
        let mut conn = self.conn().await?;
        sqlx::query(&format!(
            "INSERT INTO mfa_challenges ({CHALLENGE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .arg(c.challenge_hash.as_str())
        .arg(c.user_id.as_str())
        .arg(Stamp(c.created_at))
        .arg(Stamp(c.expires_at))
        .arg(opt(c.used_at))
        .arg(i64::from(c.failures))
        .arg(c.user_agent.as_str())
        .arg(c.ip_address.as_str())
        .execute(D::exec(&mut conn))
        .await
        .map_err(|e| insert_error(e, "challenge_hash", "user"))?;
        Ok(())
    }

    async fn get_mfa_challenge(
        &self,
        challenge_hash: &str,
        now: DateTime<Utc>,
        max_failures: u32,
    ) -> Result<Option<MfaChallenge>> {
        let mut conn = self.conn().await?;
        let row = sqlx::query(&format!(
            "SELECT {CHALLENGE_COLUMNS} FROM mfa_challenges WHERE challenge_hash = $1 \
             AND used_at IS NULL AND expires_at > $2 AND failures < $3"
        ))
        .arg(challenge_hash)
        .arg(Stamp(now))
        .arg(i64::from(max_failures))
        .fetch_optional(D::exec(&mut conn))
        .await?;
        row.map(|r| challenge_row::<D>(&r)).transpose()
    }

    async fn fail_mfa_challenge(&self, challenge_hash: &str) -> Result<()> {
        let mut conn = self.conn().await?;
        sqlx::query("UPDATE mfa_challenges SET failures = failures + 1 WHERE challenge_hash = $1")
            .arg(challenge_hash)
            .execute(D::exec(&mut conn))
            .await?;
        Ok(())
    }

    async fn consume_mfa_challenge(
        &self,
        challenge_hash: &str,
        now: DateTime<Utc>,
        max_failures: u32,
    ) -> Result<bool> {
        let mut conn = self.conn().await?;
        let done = sqlx::query(
            "UPDATE mfa_challenges SET used_at = $1 WHERE challenge_hash = $2 \
             AND used_at IS NULL AND expires_at > $1 AND failures < $3",
        )
        .arg(Stamp(now))
        .arg(challenge_hash)
        .arg(i64::from(max_failures))
        .execute(D::exec(&mut conn))
        .await?;
        Ok(D::rows_affected(&done) == 1)
    }
}

async fn replace_codes<D: Dialect>(
    tx: &mut sqlx::Transaction<'static, D>,
    user_id: &str,
    code_hashes: &[String],
    at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query("DELETE FROM mfa_backup_codes WHERE user_id = $1")
        .arg(user_id)
        .execute(D::exec(&mut **tx))
        .await?;
    for hash in code_hashes {
        sqlx::query(
            "INSERT INTO mfa_backup_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)",
        )
        .arg(user_id)
        .arg(hash.as_str())
        .arg(Stamp(at))
        .execute(D::exec(&mut **tx))
        .await
        .map_err(|e| insert_error(e, "code_hash", "user"))?;
    }
    Ok(())
}

fn factor_row<D: Dialect>(row: &D::Row) -> Result<MfaFactor> {
    Ok(MfaFactor {
        factor_id: D::get(row, "factor_id")?,
        user_id: D::get(row, "user_id")?,
        kind: D::get(row, "kind")?,
        secret_sealed: D::get(row, "secret_sealed")?,
        created_at: D::time(row, "created_at")?,
        confirmed_at: D::opt_time(row, "confirmed_at")?,
        last_used_step: D::get(row, "last_used_step")?,
        last_used_at: D::opt_time(row, "last_used_at")?,
    })
}

fn challenge_row<D: Dialect>(row: &D::Row) -> Result<MfaChallenge> {
    let failures: i64 = D::get(row, "failures")?;
    Ok(MfaChallenge {
        challenge_hash: D::get(row, "challenge_hash")?,
        user_id: D::get(row, "user_id")?,
        created_at: D::time(row, "created_at")?,
        expires_at: D::time(row, "expires_at")?,
        used_at: D::opt_time(row, "used_at")?,
        failures: u32::try_from(failures).unwrap_or(u32::MAX),
        user_agent: D::get(row, "user_agent")?,
        ip_address: D::get(row, "ip_address")?,
    })
}

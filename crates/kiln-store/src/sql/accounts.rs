//! Users, API keys and refresh tokens.
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::dialect::{Dialect, QueryExt};
use super::{rows, SqlStore};
use crate::columns;
use crate::timestamp::{opt, to_micros, Stamp};
use crate::unique_violation::conflict_or;
use crate::{
    AccountStore, ApiKeyRecord, FoundApiKey, KeyOrg, NewApiKey, NewRefreshToken, NewUser,
    RefreshOutcome, Result, User,
};

#[async_trait]
impl<D: Dialect> AccountStore for SqlStore<D> {
    async fn create_user(&self, user: &NewUser) -> Result<User> {
        let sql = format!(
            "INSERT INTO users (user_id, name, email, github_id, github_login, is_admin, is_active, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, {}, $7) RETURNING {}",
            D::TRUE,
            columns::plain(columns::USER)
        );
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(user.user_id.as_str())
            .arg(user.name.as_str())
            .arg(user.email.as_str())
            .arg(user.github_id.as_deref())
            .arg(user.github_login.as_deref())
            .arg(user.is_admin)
            .arg(Stamp(user.created_at))
            .fetch_one(D::exec(&mut conn))
            .await
            .map_err(|e| conflict_or(e, "user_id", &["github_id"]))?;
        rows::user::<D>(&row, "")
    }

    async fn get_user(&self, user_id: &str) -> Result<Option<User>> {
        let sql = format!(
            "SELECT {} FROM users WHERE user_id = $1",
            columns::plain(columns::USER)
        );
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(user_id)
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.map(|r| rows::user::<D>(&r, "")).transpose()
    }

    async fn get_user_by_github_id(&self, github_id: &str) -> Result<Option<User>> {
        let sql = format!(
            "SELECT {} FROM users WHERE github_id = $1",
            columns::plain(columns::USER)
        );
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(github_id)
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.map(|r| rows::user::<D>(&r, "")).transpose()
    }

    async fn count_users(&self) -> Result<u64> {
        let mut conn = self.conn().await?;
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(D::exec(&mut conn))
            .await?;
        Ok(D::get::<i64>(&row, "n")?.unsigned_abs())
    }

    async fn set_terms_accepted(&self, user_id: &str, at: DateTime<Utc>) -> Result<()> {
        let mut conn = self.conn().await?;
        sqlx::query("UPDATE users SET terms_accepted_at = $1 WHERE user_id = $2")
            .arg(Stamp(at))
            .arg(user_id)
            .execute(D::exec(&mut conn))
            .await?;
        Ok(())
    }

    async fn set_last_login(&self, user_id: &str, at: DateTime<Utc>) -> Result<()> {
        let mut conn = self.conn().await?;
        sqlx::query("UPDATE users SET last_login_at = $1 WHERE user_id = $2")
            .arg(Stamp(at))
            .arg(user_id)
            .execute(D::exec(&mut conn))
            .await?;
        Ok(())
    }

    async fn insert_api_key(&self, key: &NewApiKey) -> Result<ApiKeyRecord> {
        let sql = format!(
            "INSERT INTO api_keys (key_id, user_id, name, key_hash, masked, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {}",
            columns::plain(columns::API_KEY)
        );
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(key.key_id.as_str())
            .arg(key.user_id.as_str())
            .arg(key.name.as_deref())
            .arg(key.key_hash.as_str())
            .arg(key.masked.as_str())
            .arg(Stamp(key.created_at))
            .arg(opt(key.expires_at))
            .fetch_one(D::exec(&mut conn))
            .await
            .map_err(|e| conflict_or(e, "key_id", &["key_hash"]))?;
        rows::api_key::<D>(&row, "")
    }

    async fn find_api_key(
        &self,
        key_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<FoundApiKey>> {
        // The default membership rides along (a LEFT JOIN on the first default by
        // `created_at`, `org_id`, as `list_memberships` orders them), so a personal key's
        // request resolves its org without a second query.
        let sql = format!(
            "SELECT {}, {}, o.org_id AS o_org_id, \
                 EXISTS (SELECT 1 FROM org_ip_allowlist a WHERE a.org_id = o.org_id) AS o_restricted, \
                 {}, m.role AS d_role, m.is_default AS d_is_default \
             FROM api_keys k JOIN users u ON u.user_id = k.user_id \
             LEFT JOIN org_api_keys o ON o.key_id = k.key_id \
             LEFT JOIN org_members m ON m.user_id = k.user_id AND m.org_id = ( \
                 SELECT m2.org_id FROM org_members m2 WHERE m2.user_id = k.user_id \
                 AND m2.is_default = {} ORDER BY m2.created_at, m2.org_id LIMIT 1) \
             LEFT JOIN organizations d ON d.org_id = m.org_id \
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > $2)",
            columns::aliased("k", "k_", columns::API_KEY),
            columns::aliased("u", "u_", columns::USER),
            columns::aliased("d", "d_", columns::ORGANIZATION),
            D::TRUE,
        );
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(key_hash)
            .arg(Stamp(now))
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.map(|r| {
            let org = D::get::<Option<String>>(&r, "o_org_id")?
                .map(|org_id| {
                    Ok::<_, crate::StoreError>(KeyOrg {
                        org_id,
                        restricted: D::get(&r, "o_restricted")?,
                    })
                })
                .transpose()?;
            let default_membership = match D::get::<Option<String>>(&r, "d_org_id")? {
                Some(_) => Some(rows::membership::<D>(&r, "d_")?),
                None => None,
            };
            Ok(FoundApiKey {
                key: rows::api_key::<D>(&r, "k_")?,
                user: rows::user::<D>(&r, "u_")?,
                org,
                default_membership,
            })
        })
        .transpose()
    }

    async fn list_api_keys(&self, user_id: &str) -> Result<Vec<ApiKeyRecord>> {
        let sql = format!(
            "SELECT {} FROM api_keys WHERE user_id = $1 ORDER BY created_at, key_id",
            columns::plain(columns::API_KEY)
        );
        let mut conn = self.conn().await?;
        let found = sqlx::query(&sql)
            .arg(user_id)
            .fetch_all(D::exec(&mut conn))
            .await?;
        found.iter().map(|r| rows::api_key::<D>(r, "")).collect()
    }

    async fn revoke_api_key(&self, user_id: &str, key_id: &str, at: DateTime<Utc>) -> Result<bool> {
        let mut conn = self.conn().await?;
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE key_id = $2 AND user_id = $3 AND revoked_at IS NULL",
        )
        .arg(Stamp(at))
        .arg(key_id)
        .arg(user_id)
        .execute(D::exec(&mut conn))
        .await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn touch_api_key(&self, key_id: &str, at: DateTime<Utc>) -> Result<()> {
        let mut conn = self.conn().await?;
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE key_id = $2")
            .arg(Stamp(at))
            .arg(key_id)
            .execute(D::exec(&mut conn))
            .await?;
        Ok(())
    }

    async fn insert_refresh_token(&self, token: &NewRefreshToken) -> Result<()> {
        let mut conn = self.conn().await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_id, family_id, user_id, issued_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .arg(token.token_id.as_str())
        .arg(token.family_id.as_str())
        .arg(token.user_id.as_str())
        .arg(Stamp(token.issued_at))
        .arg(Stamp(token.expires_at))
        .execute(D::exec(&mut conn))
        .await
        .map_err(|e| conflict_or(e, "token_id", &[]))?;
        Ok(())
    }

    async fn consume_refresh_token(
        &self,
        token_id: &str,
        now: DateTime<Utc>,
    ) -> Result<RefreshOutcome> {
        let now = to_micros(now);
        let mut conn = self.conn().await?;
        // One statement, so that check-and-mark is atomic: on SQLite writers run one at a
        // time; on PostgreSQL a concurrent caller blocks on the row lock, then re-checks the
        // WHERE clause against the committed row (READ COMMITTED), finds `used_at` set and
        // matches nothing. Of N callers, exactly one gets the row back.
        let consumed = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 \
             WHERE token_id = $2 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $1 \
             AND NOT EXISTS (SELECT 1 FROM refresh_tokens f \
                             WHERE f.family_id = refresh_tokens.family_id AND f.revoked_at IS NOT NULL) \
             RETURNING user_id, family_id",
        )
        .arg(Stamp(now))
        .arg(token_id)
        .fetch_optional(D::exec(&mut conn))
        .await?;
        if let Some(row) = consumed {
            return Ok(RefreshOutcome::Consumed {
                user_id: D::get(&row, "user_id")?,
                family_id: D::get(&row, "family_id")?,
            });
        }

        let row = sqlx::query(
            "SELECT user_id, family_id, expires_at, used_at IS NOT NULL OR EXISTS \
                 (SELECT 1 FROM refresh_tokens f WHERE f.family_id = t.family_id AND f.revoked_at IS NOT NULL) \
                 AS spent \
             FROM refresh_tokens t WHERE token_id = $1",
        )
        .arg(token_id)
        .fetch_optional(D::exec(&mut conn))
        .await?;
        let Some(row) = row else {
            return Ok(RefreshOutcome::Unknown);
        };
        let (user_id, family_id): (String, String) =
            (D::get(&row, "user_id")?, D::get(&row, "family_id")?);
        let spent: bool = D::get(&row, "spent")?;
        if !spent && D::time(&row, "expires_at")? <= now {
            return Ok(RefreshOutcome::Expired);
        }
        // Not consumable, not expired: used, or its family revoked (a live token that failed
        // the UPDATE can only be one that another caller marked in between).
        Ok(RefreshOutcome::Reused { user_id, family_id })
    }

    async fn revoke_refresh_family(&self, family_id: &str, at: DateTime<Utc>) -> Result<()> {
        let mut conn = self.conn().await?;
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
        )
        .arg(Stamp(at))
        .arg(family_id)
        .execute(D::exec(&mut conn))
        .await?;
        Ok(())
    }
}

//! Password accounts, device sessions, emailed tokens and the mail outbox (migration 0014).
//! A token is spent by one conditional `UPDATE … WHERE used_at IS NULL AND expires_at > now
//! RETURNING`, so two requests with one token cannot both succeed; mails are claimed with a
//! lease like webhook deliveries.
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::dialect::{Dialect, QueryExt};
use super::{as_i64, rows, SqlStore};
use crate::columns;
use crate::missing_reference::insert_error;
use crate::timestamp::Stamp;
use crate::unique_violation::conflict_or;
use crate::{
    AccountCredential, AccountDeletion, AccountToken, AccountTokenPurpose, DeviceSession,
    MailStatus, NewAccount, OutboxMail, PasswordAccountStore, Result, StoreError, User,
};

const CREDENTIAL_COLUMNS: &str =
    "user_id, email, password_hash, email_verified_at, password_changed_at, created_at, deleted_at";
const SESSION_COLUMNS: &str =
    "session_id, user_id, created_at, last_seen_at, user_agent, ip_address, revoked_at, revoked_reason";
const TOKEN_COLUMNS: &str = "token_hash, user_id, purpose, email, created_at, expires_at, used_at";
const MAIL_COLUMNS: &str = "mail_id, user_id, to_address, subject, body, link, status, attempts, \
     next_attempt_at, last_error, created_at, sent_at";

#[async_trait]
impl<D: Dialect> PasswordAccountStore for SqlStore<D> {
    async fn create_account(
        &self,
        account: &NewAccount,
        verification: Option<(&AccountToken, &OutboxMail)>,
    ) -> Result<User> {
        let mut tx = D::begin_write(self.pool()).await?;
        let sql = format!(
            "INSERT INTO users (user_id, name, email, is_admin, is_active, created_at) \
             VALUES ($1, $2, $3, {}, {}, $4) RETURNING {}",
            D::FALSE,
            D::TRUE,
            columns::plain(columns::USER)
        );
        let row = sqlx::query(&sql)
            .arg(account.user_id.as_str())
            .arg(account.name.as_str())
            .arg(account.email.as_str())
            .arg(Stamp(account.created_at))
            .fetch_one(D::exec(&mut tx))
            .await
            .map_err(|e| conflict_or(e, "user_id", &[]))?;
        let user = rows::user::<D>(&row, "")?;
        sqlx::query(
            "INSERT INTO account_credentials (user_id, email, email_lower, password_hash, \
             password_changed_at, created_at) VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .arg(account.user_id.as_str())
        .arg(account.email.as_str())
        .arg(account.email.to_lowercase())
        .arg(account.password_hash.as_str())
        .arg(Stamp(account.created_at))
        .execute(D::exec(&mut tx))
        .await
        .map_err(|e| conflict_or(e, "user_id", &["email_lower"]))?;
        if let Some((token, mail)) = verification {
            insert_token::<D>(&mut tx, token).await?;
            insert_mail::<D>(&mut tx, mail).await?;
        }
        tx.commit().await?;
        Ok(user)
    }

    async fn find_account_by_email(
        &self,
        email_lower: &str,
    ) -> Result<Option<(AccountCredential, User)>> {
        let sql = format!(
            "SELECT {}, {} FROM account_credentials c JOIN users u ON u.user_id = c.user_id \
             WHERE c.email_lower = $1 AND c.deleted_at IS NULL",
            prefixed("c", "c_", CREDENTIAL_COLUMNS),
            columns::aliased("u", "u_", columns::USER)
        );
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(email_lower)
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.map(|r| Ok((credential_row::<D>(&r, "c_")?, rows::user::<D>(&r, "u_")?)))
            .transpose()
    }

    async fn get_account(&self, user_id: &str) -> Result<Option<AccountCredential>> {
        let sql = format!(
            "SELECT {CREDENTIAL_COLUMNS} FROM account_credentials \
             WHERE user_id = $1 AND deleted_at IS NULL"
        );
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(user_id)
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.map(|r| credential_row::<D>(&r, "")).transpose()
    }

    async fn set_account_name(&self, user_id: &str, name: &str) -> Result<()> {
        let mut conn = self.conn().await?;
        sqlx::query("UPDATE users SET name = $1 WHERE user_id = $2")
            .arg(name)
            .arg(user_id)
            .execute(D::exec(&mut conn))
            .await?;
        Ok(())
    }

    async fn set_password(
        &self,
        user_id: &str,
        password_hash: &str,
        at: DateTime<Utc>,
        keep: Option<&str>,
    ) -> Result<u64> {
        let mut tx = D::begin_write(self.pool()).await?;
        sqlx::query(
            "UPDATE account_credentials SET password_hash = $1, password_changed_at = $2 \
             WHERE user_id = $3 AND deleted_at IS NULL",
        )
        .arg(password_hash)
        .arg(Stamp(at))
        .arg(user_id)
        .execute(D::exec(&mut tx))
        .await?;
        let revoked = revoke_sessions::<D>(&mut tx, user_id, keep, at, "password_changed").await?;
        tx.commit().await?;
        Ok(revoked)
    }

    async fn insert_token_with_mail(&self, token: &AccountToken, mail: &OutboxMail) -> Result<()> {
        let mut tx = D::begin_write(self.pool()).await?;
        insert_token::<D>(&mut tx, token).await?;
        insert_mail::<D>(&mut tx, mail).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn consume_account_token(
        &self,
        token_hash: &str,
        purpose: AccountTokenPurpose,
        now: DateTime<Utc>,
    ) -> Result<Option<AccountToken>> {
        let sql = format!(
            "UPDATE account_tokens SET used_at = $1 WHERE token_hash = $2 AND purpose = $3 \
             AND used_at IS NULL AND expires_at > $1 RETURNING {TOKEN_COLUMNS}"
        );
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(Stamp(now))
            .arg(token_hash)
            .arg(purpose.as_str())
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.map(|r| token_row::<D>(&r)).transpose()
    }

    async fn get_account_token(
        &self,
        token_hash: &str,
        purpose: AccountTokenPurpose,
    ) -> Result<Option<AccountToken>> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM account_tokens WHERE token_hash = $1 AND purpose = $2"
        );
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(token_hash)
            .arg(purpose.as_str())
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.map(|r| token_row::<D>(&r)).transpose()
    }

    async fn void_account_tokens(
        &self,
        user_id: &str,
        purpose: AccountTokenPurpose,
        at: DateTime<Utc>,
    ) -> Result<u64> {
        let mut conn = self.conn().await?;
        let done = sqlx::query(
            "UPDATE account_tokens SET used_at = $1 WHERE user_id = $2 AND purpose = $3 \
             AND used_at IS NULL",
        )
        .arg(Stamp(at))
        .arg(user_id)
        .arg(purpose.as_str())
        .execute(D::exec(&mut conn))
        .await?;
        Ok(D::rows_affected(&done))
    }

    async fn mark_email_verified(
        &self,
        user_id: &str,
        email: &str,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let mut conn = self.conn().await?;
        let done = sqlx::query(
            "UPDATE account_credentials SET email_verified_at = COALESCE(email_verified_at, $1) \
             WHERE user_id = $2 AND email_lower = $3 AND deleted_at IS NULL",
        )
        .arg(Stamp(at))
        .arg(user_id)
        .arg(email.to_lowercase())
        .execute(D::exec(&mut conn))
        .await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn change_account_email(
        &self,
        user_id: &str,
        email: &str,
        at: DateTime<Utc>,
    ) -> Result<u64> {
        let mut tx = D::begin_write(self.pool()).await?;
        let done = sqlx::query(
            "UPDATE account_credentials SET email = $1, email_lower = $2, email_verified_at = $3 \
             WHERE user_id = $4 AND deleted_at IS NULL",
        )
        .arg(email)
        .arg(email.to_lowercase())
        .arg(Stamp(at))
        .arg(user_id)
        .execute(D::exec(&mut tx))
        .await
        .map_err(|e| conflict_or(e, "user_id", &["email_lower"]))?;
        if D::rows_affected(&done) != 1 {
            return Err(StoreError::Missing("account"));
        }
        sqlx::query("UPDATE users SET email = $1 WHERE user_id = $2")
            .arg(email)
            .arg(user_id)
            .execute(D::exec(&mut tx))
            .await?;
        let revoked = revoke_sessions::<D>(&mut tx, user_id, None, at, "email_changed").await?;
        tx.commit().await?;
        Ok(revoked)
    }

    async fn soft_delete_account(
        &self,
        user_id: &str,
        at: DateTime<Utc>,
    ) -> Result<AccountDeletion> {
        let mut tx = D::begin_write(self.pool()).await?;
        sqlx::query(
            "UPDATE account_credentials SET deleted_at = $1 WHERE user_id = $2 AND deleted_at IS NULL",
        )
        .arg(Stamp(at))
        .arg(user_id)
        .execute(D::exec(&mut tx))
        .await?;
        sqlx::query(&format!(
            "UPDATE users SET is_active = {} WHERE user_id = $1",
            D::FALSE
        ))
        .arg(user_id)
        .execute(D::exec(&mut tx))
        .await?;
        let keys = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .arg(Stamp(at))
        .arg(user_id)
        .execute(D::exec(&mut tx))
        .await?;
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .arg(Stamp(at))
        .arg(user_id)
        .execute(D::exec(&mut tx))
        .await?;
        let sessions = revoke_sessions::<D>(&mut tx, user_id, None, at, "account_deleted").await?;
        // Second factors go with the account (a new sign-up at this address starts clean).
        for table in ["mfa_backup_codes", "mfa_factors"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1"))
                .arg(user_id)
                .execute(D::exec(&mut tx))
                .await?;
        }
        tx.commit().await?;
        Ok(AccountDeletion {
            api_keys_revoked: D::rows_affected(&keys),
            sessions_revoked: sessions,
        })
    }

    async fn insert_device_session(&self, session: &DeviceSession) -> Result<()> {
        let mut conn = self.conn().await?;
        sqlx::query(
            "INSERT INTO device_sessions (session_id, user_id, created_at, last_seen_at, \
             user_agent, ip_address) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .arg(session.session_id.as_str())
        .arg(session.user_id.as_str())
        .arg(Stamp(session.created_at))
        .arg(Stamp(session.last_seen_at))
        .arg(session.user_agent.as_str())
        .arg(session.ip_address.as_str())
        .execute(D::exec(&mut conn))
        .await
        .map_err(|e| insert_error(e, "session_id", "user"))?;
        Ok(())
    }

    async fn get_device_session(&self, session_id: &str) -> Result<Option<DeviceSession>> {
        let mut conn = self.conn().await?;
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM device_sessions WHERE session_id = $1"
        ))
        .arg(session_id)
        .fetch_optional(D::exec(&mut conn))
        .await?;
        row.map(|r| session_row::<D>(&r)).transpose()
    }

    async fn list_device_sessions(&self, user_id: &str, limit: u64) -> Result<Vec<DeviceSession>> {
        let mut conn = self.conn().await?;
        let found = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM device_sessions WHERE user_id = $1 \
             AND revoked_at IS NULL ORDER BY created_at DESC, session_id DESC LIMIT $2"
        ))
        .arg(user_id)
        .arg(as_i64(limit))
        .fetch_all(D::exec(&mut conn))
        .await?;
        found.iter().map(session_row::<D>).collect()
    }

    async fn touch_device_session(
        &self,
        session_id: &str,
        at: DateTime<Utc>,
        unless_after: DateTime<Utc>,
    ) -> Result<()> {
        let mut conn = self.conn().await?;
        sqlx::query(
            "UPDATE device_sessions SET last_seen_at = $1 WHERE session_id = $2 \
             AND last_seen_at < $3",
        )
        .arg(Stamp(at))
        .arg(session_id)
        .arg(Stamp(unless_after))
        .execute(D::exec(&mut conn))
        .await?;
        Ok(())
    }

    async fn revoke_device_session(
        &self,
        user_id: &str,
        session_id: &str,
        at: DateTime<Utc>,
        reason: &str,
    ) -> Result<bool> {
        let mut tx = D::begin_write(self.pool()).await?;
        let done = sqlx::query(
            "UPDATE device_sessions SET revoked_at = $1, revoked_reason = $2 \
             WHERE session_id = $3 AND user_id = $4 AND revoked_at IS NULL",
        )
        .arg(Stamp(at))
        .arg(reason)
        .arg(session_id)
        .arg(user_id)
        .execute(D::exec(&mut tx))
        .await?;
        // The session id is the refresh family: its refresh tokens die with it.
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND user_id = $3 \
             AND revoked_at IS NULL",
        )
        .arg(Stamp(at))
        .arg(session_id)
        .arg(user_id)
        .execute(D::exec(&mut tx))
        .await?;
        tx.commit().await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn revoke_device_sessions(
        &self,
        user_id: &str,
        keep: Option<&str>,
        at: DateTime<Utc>,
        reason: &str,
    ) -> Result<u64> {
        let mut tx = D::begin_write(self.pool()).await?;
        let revoked = revoke_sessions::<D>(&mut tx, user_id, keep, at, reason).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    async fn claim_mail(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<OutboxMail>> {
        // As for webhook deliveries: the conditions are repeated outside the sub-select so a
        // PostgreSQL claimer that waited on a row lock re-checks the row as it now is.
        let sql = format!(
            "UPDATE mail_outbox SET attempts = attempts + 1, lease_until = $2 \
             WHERE mail_id IN (SELECT mail_id FROM mail_outbox \
               WHERE status = 'pending' AND next_attempt_at <= $1 \
               AND (lease_until IS NULL OR lease_until <= $1) \
               ORDER BY next_attempt_at LIMIT $3) \
             AND status = 'pending' AND (lease_until IS NULL OR lease_until <= $1) \
             RETURNING {MAIL_COLUMNS}"
        );
        let mut conn = self.conn().await?;
        let found = sqlx::query(&sql)
            .arg(Stamp(now))
            .arg(Stamp(lease_until))
            .arg(as_i64(limit))
            .fetch_all(D::exec(&mut conn))
            .await?;
        let mut claimed: Vec<OutboxMail> =
            found.iter().map(mail_row::<D>).collect::<Result<_>>()?;
        claimed.sort_by_key(|m| m.next_attempt_at);
        Ok(claimed)
    }

    async fn record_mail_attempt(
        &self,
        mail_id: &str,
        attempt: u32,
        status: MailStatus,
        next_at: DateTime<Utc>,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let sent = status == MailStatus::Sent;
        let sql = "UPDATE mail_outbox SET status = $1, next_attempt_at = $2, last_error = $3, \
             lease_until = NULL, sent_at = CASE WHEN $4 THEN $5 ELSE sent_at END, \
             body = CASE WHEN $8 THEN '' ELSE body END \
             WHERE mail_id = $6 AND attempts = $7";
        let mut conn = self.conn().await?;
        let done = sqlx::query(sql)
            .arg(status.as_str())
            .arg(Stamp(next_at))
            .arg(error)
            .arg(sent || status == MailStatus::Logged)
            .arg(Stamp(at))
            .arg(mail_id)
            .arg(i64::from(attempt))
            .arg(sent)
            .execute(D::exec(&mut conn))
            .await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn list_unsent_mail(&self, limit: u64) -> Result<Vec<OutboxMail>> {
        let mut conn = self.conn().await?;
        let found = sqlx::query(&format!(
            "SELECT {MAIL_COLUMNS} FROM mail_outbox WHERE status <> 'sent' AND link IS NOT NULL \
             ORDER BY created_at DESC, mail_id DESC LIMIT $1"
        ))
        .arg(as_i64(limit))
        .fetch_all(D::exec(&mut conn))
        .await?;
        found.iter().map(mail_row::<D>).collect()
    }

    async fn list_user_mail(&self, user_id: &str, limit: u64) -> Result<Vec<OutboxMail>> {
        let mut conn = self.conn().await?;
        let found = sqlx::query(&format!(
            "SELECT {MAIL_COLUMNS} FROM mail_outbox WHERE user_id = $1 \
             ORDER BY created_at DESC, mail_id DESC LIMIT $2"
        ))
        .arg(user_id)
        .arg(as_i64(limit))
        .fetch_all(D::exec(&mut conn))
        .await?;
        found.iter().map(mail_row::<D>).collect()
    }
}

async fn revoke_sessions<D: Dialect>(
    tx: &mut sqlx::Transaction<'static, D>,
    user_id: &str,
    keep: Option<&str>,
    at: DateTime<Utc>,
    reason: &str,
) -> Result<u64> {
    // Refresh families of the sessions first (the session id is the family id), while the
    // sessions are still live and so selectable.
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL \
         AND family_id IN (SELECT session_id FROM device_sessions WHERE user_id = $2 \
           AND revoked_at IS NULL AND ($3 IS NULL OR session_id <> $3))",
    )
    .arg(Stamp(at))
    .arg(user_id)
    .arg(keep)
    .execute(D::exec(&mut **tx))
    .await?;
    let done = sqlx::query(
        "UPDATE device_sessions SET revoked_at = $1, revoked_reason = $2 \
         WHERE user_id = $3 AND revoked_at IS NULL AND ($4 IS NULL OR session_id <> $4)",
    )
    .arg(Stamp(at))
    .arg(reason)
    .arg(user_id)
    .arg(keep)
    .execute(D::exec(&mut **tx))
    .await?;
    Ok(D::rows_affected(&done))
}

async fn insert_token<D: Dialect>(
    tx: &mut sqlx::Transaction<'static, D>,
    token: &AccountToken,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO account_tokens (token_hash, user_id, purpose, email, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .arg(token.token_hash.as_str())
    .arg(token.user_id.as_str())
    .arg(token.purpose.as_str())
    .arg(token.email.as_deref())
    .arg(Stamp(token.created_at))
    .arg(Stamp(token.expires_at))
    .execute(D::exec(&mut **tx))
    .await
    .map_err(|e| insert_error(e, "token_hash", "user"))?;
    Ok(())
}

pub(super) async fn insert_mail<D: Dialect>(
    tx: &mut sqlx::Transaction<'static, D>,
    mail: &OutboxMail,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO mail_outbox (mail_id, user_id, to_address, subject, body, link, status, \
         attempts, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9)",
    )
    .arg(mail.mail_id.as_str())
    .arg(mail.user_id.as_deref())
    .arg(mail.to_address.as_str())
    .arg(mail.subject.as_str())
    .arg(mail.body.as_str())
    .arg(mail.link.as_deref())
    .arg(mail.status.as_str())
    .arg(Stamp(mail.next_attempt_at))
    .arg(Stamp(mail.created_at))
    .execute(D::exec(&mut **tx))
    .await
    .map_err(|e| conflict_or(e, "mail_id", &[]))?;
    Ok(())
}

/// `c.user_id AS c_user_id, …` for a comma-separated column list.
fn prefixed(table: &str, prefix: &str, list: &str) -> String {
    list.split(',')
        .map(|c| {
            let c = c.trim();
            format!("{table}.{c} AS {prefix}{c}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn credential_row<D: Dialect>(row: &D::Row, prefix: &str) -> Result<AccountCredential> {
    let c = |name: &str| format!("{prefix}{name}");
    Ok(AccountCredential {
        user_id: D::get(row, &c("user_id"))?,
        email: D::get(row, &c("email"))?,
        password_hash: D::get(row, &c("password_hash"))?,
        email_verified_at: D::opt_time(row, &c("email_verified_at"))?,
        password_changed_at: D::time(row, &c("password_changed_at"))?,
        created_at: D::time(row, &c("created_at"))?,
        deleted_at: D::opt_time(row, &c("deleted_at"))?,
    })
}

fn session_row<D: Dialect>(row: &D::Row) -> Result<DeviceSession> {
    Ok(DeviceSession {
        session_id: D::get(row, "session_id")?,
        user_id: D::get(row, "user_id")?,
        created_at: D::time(row, "created_at")?,
        last_seen_at: D::time(row, "last_seen_at")?,
        user_agent: D::get(row, "user_agent")?,
        ip_address: D::get(row, "ip_address")?,
        revoked_at: D::opt_time(row, "revoked_at")?,
        revoked_reason: D::get(row, "revoked_reason")?,
    })
}

fn token_row<D: Dialect>(row: &D::Row) -> Result<AccountToken> {
    let purpose: String = D::get(row, "purpose")?;
    let purpose = match purpose.as_str() {
        "verify_email" => AccountTokenPurpose::VerifyEmail,
        "reset_password" => AccountTokenPurpose::ResetPassword,
        "change_email" => AccountTokenPurpose::ChangeEmail,
        "mfa_recovery" => AccountTokenPurpose::MfaRecovery,
        other => {
            return Err(StoreError::Corrupt(format!(
                "account_tokens.purpose {other:?}"
            )))
        }
    };
    Ok(AccountToken {
        token_hash: D::get(row, "token_hash")?,
        user_id: D::get(row, "user_id")?,
        purpose,
        email: D::get(row, "email")?,
        created_at: D::time(row, "created_at")?,
        expires_at: D::time(row, "expires_at")?,
        used_at: D::opt_time(row, "used_at")?,
    })
}

fn mail_row<D: Dialect>(row: &D::Row) -> Result<OutboxMail> {
    let status: String = D::get(row, "status")?;
    let status = MailStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("mail_outbox.status {status:?}")))?;
    let attempts: i64 = D::get(row, "attempts")?;
    Ok(OutboxMail {
        mail_id: D::get(row, "mail_id")?,
        user_id: D::get(row, "user_id")?,
        to_address: D::get(row, "to_address")?,
        subject: D::get(row, "subject")?,
        body: D::get(row, "body")?,
        link: D::get(row, "link")?,
        status,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_at: D::time(row, "next_attempt_at")?,
        last_error: D::get(row, "last_error")?,
        created_at: D::time(row, "created_at")?,
        sent_at: D::opt_time(row, "sent_at")?,
    })
}

//! MFA recovery (document 002's `/v1/auth/recovery/request|complete`), for someone who lost
//! their authenticator and their backup codes: a mailed link that works only after a
//! cooldown (`accounts.mfa_recovery_cooldown_secs`, 24 h) and then removes every second
//! factor and ends every sign-in. Whoever holds the mailbox therefore cannot skip the
//! second factor in real time, and the owner, warned by the mail, cancels it by signing in
//! with their second factor meanwhile (`login_mfa` voids pending recovery links).
use chrono::{DateTime, Duration, Utc};
use kiln_store::AccountTokenPurpose;

use super::emailed::invalid_token;
use super::{mail, validate, AccountService, ClientInfo};
use crate::error::{ServiceError, ServiceResult};
use crate::ids::sha256_hex;

/// What a completed recovery did.
#[derive(Debug)]
pub struct Recovered {
    pub user_id: String,
    pub factors_removed: usize,
    pub sessions_ended: u64,
}

fn secs(secs: u64) -> Duration {
    Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000))
}

impl AccountService {
    /// Mails a recovery link if an account with this address has a second factor. The
    /// answer is the same either way, so this cannot find accounts.
    pub async fn request_mfa_recovery(
        &self,
        email: &str,
        client: &ClientInfo,
    ) -> ServiceResult<()> {
        let email = validate::email(email, &["email"])?;
        self.count_mail_request(client)?;
        let Some((account, _)) = self
            .store
            .find_account_by_email(&email.to_lowercase())
            .await?
        else {
            return Ok(());
        };
        if self
            .store
            .list_mfa_factors(&account.user_id)
            .await?
            .is_empty()
        {
            return Ok(());
        }
        let cooldown = self.config.mfa_recovery_cooldown_secs;
        let (token, secret) = self.token(
            &account.user_id,
            AccountTokenPurpose::MfaRecovery,
            None,
            cooldown.saturating_add(self.config.mfa_recovery_window_secs),
        );
        let ready = token.created_at + secs(cooldown);
        let body = format!(
            "Someone asked to remove the second factors of your Kiln account (you lost your \
             authenticator and backup codes). From {} until {}, this link removes them and \
             ends every sign-in (POST it to /v1/auth/recovery/complete). If it was not you, \
             sign in with your second factor before then: that cancels it.",
            ready.to_rfc3339(),
            token.expires_at.to_rfc3339(),
        );
        let mail = mail::compose(
            &account.user_id,
            &account.email,
            "Recover your account's second factor",
            &body,
            self.link("/recover-mfa", &secret),
        );
        self.store.insert_token_with_mail(&token, &mail).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Completes a recovery whose cooldown has passed: every second factor and backup
    /// code is removed and every sign-in ended. Before the cooldown: 409
    /// `recovery_cooldown` (the link keeps working later).
    pub async fn complete_mfa_recovery(&self, token: &str) -> ServiceResult<Recovered> {
        let token = token.trim();
        if token.is_empty() || token.len() > 128 {
            return Err(invalid_token());
        }
        let hash = sha256_hex(token);
        let now = Utc::now();
        let found = self
            .store
            .get_account_token(&hash, AccountTokenPurpose::MfaRecovery)
            .await?
            .filter(|t| t.used_at.is_none() && t.expires_at > now)
            .ok_or_else(invalid_token)?;
        let ready: DateTime<Utc> = found.created_at + secs(self.config.mfa_recovery_cooldown_secs);
        if now < ready {
            return Err(ServiceError::Refused {
                code: "recovery_cooldown",
                message: format!(
                    "this recovery link works from {} (a cooldown after the request, so a \
                     second factor cannot be skipped at once); try again then",
                    ready.to_rfc3339()
                ),
            });
        }
        // Spent first: only one caller goes on, and a sign-in that voided it meanwhile wins.
        self.store
            .consume_account_token(&hash, AccountTokenPurpose::MfaRecovery, now)
            .await?
            .ok_or_else(invalid_token)?;
        let user_id = found.user_id;
        let factors = self.store.list_mfa_factors(&user_id).await?;
        for factor in &factors {
            self.store
                .delete_mfa_factor(&user_id, &factor.factor_id)
                .await?;
        }
        self.store.replace_backup_codes(&user_id, &[], now).await?;
        let sessions_ended = self
            .store
            .revoke_device_sessions(&user_id, None, now, "mfa recovery")
            .await?;
        Ok(Recovered {
            user_id,
            factors_removed: factors.len(),
            sessions_ended,
        })
    }

    /// A full sign-in (second factor included) proves the owner has their factor: any
    /// recovery they did not ask for is cancelled.
    pub(super) async fn cancel_mfa_recovery(&self, user_id: &str) -> ServiceResult<u64> {
        let voided = self
            .store
            .void_account_tokens(user_id, AccountTokenPurpose::MfaRecovery, Utc::now())
            .await?;
        if voided > 0 {
            tracing::info!(
                user = user_id,
                voided,
                "a sign-in with a second factor cancelled MFA recovery"
            );
        }
        Ok(voided)
    }
}

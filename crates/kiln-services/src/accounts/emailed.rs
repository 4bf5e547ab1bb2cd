//! What goes through a mailed link: e-mail verification, password reset, e-mail change.
//! Requests that name an address answer the same whether or not an account has it.
use chrono::{Duration, Utc};
use kiln_store::{AccountToken, AccountTokenPurpose, OutboxMail, StoreError};

use super::{mail, validate, AccountService, ClientInfo};
use crate::auth::Principal;
use crate::error::{ServiceError, ServiceResult};
use crate::ids::{random_token, sha256_hex};

/// ≈ 256 bits of alphanumerics.
const TOKEN_LEN: usize = 43;

fn ttl(secs: u64) -> Duration {
    Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000))
}

impl AccountService {
    pub(super) fn token(
        &self,
        user_id: &str,
        purpose: AccountTokenPurpose,
        email: Option<&str>,
        ttl_secs: u64,
    ) -> (AccountToken, String) {
        let secret = random_token(TOKEN_LEN);
        let now = Utc::now();
        let token = AccountToken {
            token_hash: sha256_hex(&secret),
            user_id: user_id.to_string(),
            purpose,
            email: email.map(str::to_string),
            created_at: now,
            expires_at: now + ttl(ttl_secs),
            used_at: None,
        };
        (token, secret)
    }

    pub(super) fn link(&self, path: &str, secret: &str) -> String {
        format!(
            "{}{path}?token={secret}",
            self.mail.public_url.trim_end_matches('/')
        )
    }

    /// The verification token of a new address and the mail that carries it.
    pub(super) fn verification_for(
        &self,
        user_id: &str,
        email: &str,
    ) -> (AccountToken, OutboxMail) {
        let (token, secret) = self.token(
            user_id,
            AccountTokenPurpose::VerifyEmail,
            Some(email),
            self.config.verify_email_ttl_secs,
        );
        let mail = mail::compose(
            user_id,
            email,
            "Verify your e-mail address",
            "Open this link to verify your e-mail address for Kiln:",
            self.link("/v1/auth/verify-email", &secret),
        );
        (token, mail)
    }

    /// Mails a reset link if an account has this address; the answer never says.
    pub async fn forgot_password(&self, email: &str, client: &ClientInfo) -> ServiceResult<()> {
        let email = validate::email(email, &["email"])?;
        self.count_mail_request(client)?;
        let Some((account, _)) = self
            .store
            .find_account_by_email(&email.to_lowercase())
            .await?
        else {
            return Ok(());
        };
        let (token, secret) = self.token(
            &account.user_id,
            AccountTokenPurpose::ResetPassword,
            None,
            self.config.reset_password_ttl_secs,
        );
        let mail = mail::compose(
            &account.user_id,
            &account.email,
            "Reset your password",
            "Someone asked to reset the password of your Kiln account. To choose a new one, \
             open this link (it works once):",
            self.link("/reset-password", &secret),
        );
        self.store.insert_token_with_mail(&token, &mail).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Sets a new password with a reset token; every sign-in of the account ends.
    pub async fn reset_password(&self, token: &str, new_password: &str) -> ServiceResult<()> {
        validate::password(new_password, &self.config, &["new_password"])?;
        let hash = self.passwords.hash(new_password).await?;
        let spent = self
            .spend(token, AccountTokenPurpose::ResetPassword)
            .await?;
        self.store
            .set_password(&spent.user_id, &hash, Utc::now(), None)
            .await?;
        Ok(())
    }

    /// Marks the address of a verification link verified.
    pub async fn verify_email(&self, token: &str) -> ServiceResult<()> {
        let spent = self.spend(token, AccountTokenPurpose::VerifyEmail).await?;
        let email = spent.email.unwrap_or_default();
        if self
            .store
            .mark_email_verified(&spent.user_id, &email, Utc::now())
            .await?
        {
            Ok(())
        } else {
            Err(ServiceError::BadRequest {
                code: "invalid_token",
                message: "this link is for an address the account no longer has".into(),
            })
        }
    }

    /// Mails a confirmation link to the new address. The answer is the same when the
    /// address is taken (nothing is sent then), so this cannot find accounts.
    pub async fn request_email_change(
        &self,
        me: &Principal,
        new_email: &str,
        password: &str,
        client: &ClientInfo,
    ) -> ServiceResult<()> {
        let new_email = validate::email(new_email, &["new_email"])?;
        self.require_sudo(me).await?;
        self.recheck_password(me, Some(password), &["password"])
            .await?;
        self.count_mail_request(client)?;
        if self
            .store
            .find_account_by_email(&new_email.to_lowercase())
            .await?
            .is_some()
        {
            return Ok(());
        }
        let (token, secret) = self.token(
            &me.user.user_id,
            AccountTokenPurpose::ChangeEmail,
            Some(&new_email),
            self.config.change_email_ttl_secs,
        );
        let mail = mail::compose(
            &me.user.user_id,
            &new_email,
            "Confirm your new e-mail address",
            "Open this link to make this the e-mail address of your Kiln account:",
            self.link("/confirm-email", &secret),
        );
        self.store.insert_token_with_mail(&token, &mail).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Moves the account to the confirmed address; every sign-in ends.
    pub async fn confirm_email_change(&self, token: &str) -> ServiceResult<u64> {
        let spent = self.spend(token, AccountTokenPurpose::ChangeEmail).await?;
        let email = spent.email.unwrap_or_default();
        self.store
            .change_account_email(&spent.user_id, &email, Utc::now())
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => {
                    ServiceError::Conflict("this address now belongs to another account".into())
                }
                other => other.into(),
            })
    }

    async fn spend(
        &self,
        token: &str,
        purpose: AccountTokenPurpose,
    ) -> ServiceResult<AccountToken> {
        let token = token.trim();
        if token.is_empty() || token.len() > 128 {
            return Err(invalid_token());
        }
        self.store
            .consume_account_token(&sha256_hex(token), purpose, Utc::now())
            .await?
            .ok_or_else(invalid_token)
    }
}

pub(super) fn invalid_token() -> ServiceError {
    ServiceError::BadRequest {
        code: "invalid_token",
        message: "this link is invalid, expired or already used".into(),
    }
}

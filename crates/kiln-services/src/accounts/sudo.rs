//! Sudo (document 002's `POST /v1/auth/sudo`): the password again (and a second factor when
//! the account has one) lets the credential that asked — its device session, or its API
//! key — call destructive routes for a few minutes (`accounts.sudo_ttl_secs`). A stolen
//! access token or key alone then cannot delete the account, remove a factor, move the
//! e-mail address or revoke an org's keys. Wrong passwords count with the sign-in failures
//! (same keys, same limits), so sudo is no side door for guessing.

use chrono::{DateTime, Duration, Utc};

use super::{AccountService, ClientInfo};
use crate::auth::sudo::{holder_of, require};
use crate::auth::Principal;
use crate::error::{ServiceError, ServiceResult};

impl AccountService {
    /// Re-verifies the caller and grants sudo to their credential; returns its end.
    pub async fn sudo(
        &self,
        me: &Principal,
        password: &str,
        code: Option<&str>,
        client: &ClientInfo,
    ) -> ServiceResult<DateTime<Utc>> {
        let holder = holder_of(me).ok_or_else(|| ServiceError::Refused {
            code: "sudo_unavailable",
            message: "this token has no device session to hold a sudo grant; sign in with \
                      POST /v1/auth/login or use an API key"
                .into(),
        })?;
        let Some(account) = self.store.get_account(&me.user.user_id).await? else {
            return Err(ServiceError::Conflict(
                "this account has no password sign-in; an admin manages it".into(),
            ));
        };
        let (email_key, address_key, now) =
            self.password_attempt(&account.email, client, "too many failed attempts")?;
        let fail = |message: &str| {
            self.login_failures.hit(&email_key, now);
            self.login_failures.hit(&address_key, now);
            ServiceError::Unauthorized(message.into())
        };
        if !self
            .passwords
            .verify(password, Some(&account.password_hash))
            .await?
        {
            return Err(fail("the password is wrong"));
        }
        if !self
            .store
            .list_mfa_factors(&me.user.user_id)
            .await?
            .is_empty()
        {
            let Some(code) = code else {
                return Err(ServiceError::invalid(
                    &["code"],
                    "Field required (this account has a second factor)",
                    "missing",
                ));
            };
            if !self.second_factor_ok(&me.user, code).await? {
                return Err(fail("the code is wrong or was already used"));
            }
        }
        self.login_failures.clear(&email_key);
        let ttl = i64::try_from(self.config.sudo_ttl_secs).unwrap_or(i64::MAX / 1000);
        let until = Utc::now() + Duration::seconds(ttl);
        if !self
            .store
            .set_sudo(&holder, &me.user.user_id, Some(until))
            .await?
        {
            return Err(ServiceError::Unauthorized(
                "this sign-in or key has ended".into(),
            ));
        }
        Ok(until)
    }

    /// 403 `sudo_required` unless the caller holds a live grant.
    pub async fn require_sudo(&self, me: &Principal) -> ServiceResult<()> {
        require(&self.store, me).await
    }
}

//! Second factors: TOTP (RFC 6238: SHA-1, 6 digits, 30 s, the form every authenticator app
//! reads from an `otpauth://` URI) and single-use backup codes; a sign-in whose account has
//! a confirmed factor stops at a challenge (`/v1/auth/login/mfa`). A TOTP code is accepted
//! within one step either side of now, and each step once per factor (the store keeps the
//! last accepted step), so an observed code cannot be replayed.
use chrono::{DateTime, Duration, Utc};
use kiln_store::{MfaChallenge, MfaFactor};
use rand::RngCore;
use totp_rs::{Algorithm, TOTP};

use super::{AccountService, ClientInfo, SignIn};
use crate::auth::Principal;
use crate::error::{ServiceError, ServiceResult};
use crate::ids::{new_id, random_token, sha256_hex};

const STEP_SECS: i64 = 30;
const DIGITS: usize = 6;
const SECRET_BYTES: usize = 20;
const BACKUP_CODES: usize = 10;
/// How long the second step of a sign-in may wait, and how many wrong codes it takes.
const CHALLENGE_TTL_SECS: i64 = 300;
pub(crate) const CHALLENGE_MAX_FAILURES: u32 = 5;
const ISSUER: &str = "Kiln";

/// A TOTP enrolment begun: the secret, shown once, for the authenticator app.
#[derive(Debug, Clone)]
pub struct TotpEnrolment {
    pub factor_id: String,
    pub secret_base32: String,
    pub otpauth_uri: String,
}

/// What a sign-in with the right password leads to.
#[derive(Debug, Clone)]
pub enum LoginOutcome {
    SignedIn(SignIn),
    /// A second factor is owed: finish with `/v1/auth/login/mfa`.
    MfaRequired {
        challenge_token: String,
        expires_at: DateTime<Utc>,
        factors: Vec<&'static str>,
    },
}

/// The confirmed factors of the caller and how many backup codes are left.
#[derive(Debug, Clone)]
pub struct FactorList {
    pub factors: Vec<MfaFactor>,
    pub backup_codes_remaining: u64,
}

fn totp(secret: Vec<u8>, account: &str) -> ServiceResult<TOTP> {
    let make = |name: String| {
        TOTP::new(
            Algorithm::SHA1,
            DIGITS,
            1,
            STEP_SECS as u64,
            secret.clone(),
            Some(ISSUER.into()),
            name,
        )
    };
    // An account name may not hold ':' in an otpauth label: fall back to a plain one.
    make(account.to_string())
        .or_else(|_| make("account".into()))
        .map_err(|e| ServiceError::Internal(format!("totp: {e}")))
}

/// Constant-time equality of two short codes.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn backup_hash(user_id: &str, code: &str) -> String {
    let normal: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    sha256_hex(&format!("{user_id}:{normal}"))
}

fn new_backup_codes(user_id: &str) -> (Vec<String>, Vec<String>) {
    let codes: Vec<String> = (0..BACKUP_CODES)
        .map(|_| {
            let raw = random_token(10).to_ascii_lowercase();
            format!("{}-{}", &raw[..5], &raw[5..])
        })
        .collect();
    let hashes = codes.iter().map(|c| backup_hash(user_id, c)).collect();
    (codes, hashes)
}

impl AccountService {
    fn totp_of(&self, factor: &MfaFactor, account: &str) -> ServiceResult<TOTP> {
        let secret = self
            .mfa_secrets
            .open(&factor.secret_sealed, factor.factor_id.as_bytes())
            .map_err(|e| ServiceError::Internal(format!("cannot open a TOTP secret: {e}")))?;
        let bytes = hex::decode(secret)
            .map_err(|e| ServiceError::Internal(format!("stored TOTP secret: {e}")))?;
        totp(bytes, account)
    }

    /// The time step whose code `code` is (now ± one step), if any.
    fn matching_step(totp: &TOTP, code: &str) -> Option<i64> {
        let now = Utc::now().timestamp() / STEP_SECS;
        [now, now - 1, now + 1].into_iter().find(|step| {
            let at = u64::try_from(step * STEP_SECS).unwrap_or(0);
            same(&totp.generate(at), code.trim())
        })
    }

    /// Begins a TOTP enrolment (replacing an unfinished one).
    pub async fn totp_begin(&self, me: &Principal) -> ServiceResult<TotpEnrolment> {
        let Some(account) = self.store.get_account(&me.user.user_id).await? else {
            return Err(ServiceError::Conflict(
                "second factors protect password sign-ins; this account has none".into(),
            ));
        };
        let mut secret = vec![0u8; SECRET_BYTES];
        rand::thread_rng().fill_bytes(&mut secret);
        let factor_id = new_id("mfa");
        let t = totp(secret.clone(), &account.email)?;
        let factor = MfaFactor {
            secret_sealed: self
                .mfa_secrets
                .seal(&hex::encode(&secret), factor_id.as_bytes()),
            factor_id: factor_id.clone(),
            user_id: me.user.user_id.clone(),
            kind: "totp".into(),
            created_at: Utc::now(),
            confirmed_at: None,
            last_used_step: None,
            last_used_at: None,
        };
        self.store.insert_mfa_factor(&factor).await?;
        Ok(TotpEnrolment {
            factor_id,
            secret_base32: t.get_secret_base32(),
            otpauth_uri: t.get_url(),
        })
    }

    /// Finishes an enrolment with a code from the app. The first factor of an account
    /// comes with its backup codes (returned this once).
    pub async fn totp_finish(
        &self,
        me: &Principal,
        factor_id: &str,
        code: &str,
    ) -> ServiceResult<Option<Vec<String>>> {
        let factor = self
            .store
            .get_mfa_factor(factor_id)
            .await?
            .filter(|f| f.user_id == me.user.user_id && f.confirmed_at.is_none())
            .ok_or_else(|| ServiceError::not_found(format!("unfinished factor {factor_id:?}")))?;
        let t = self.totp_of(&factor, &me.user.email)?;
        let step = Self::matching_step(&t, code).ok_or_else(|| {
            ServiceError::invalid(&["code"], "the code does not match", "value_error")
        })?;
        let first = self
            .store
            .list_mfa_factors(&me.user.user_id)
            .await?
            .is_empty();
        let (codes, hashes) = if first {
            new_backup_codes(&me.user.user_id)
        } else {
            (Vec::new(), Vec::new())
        };
        if !self
            .store
            .confirm_mfa_factor(&me.user.user_id, factor_id, step, &hashes, Utc::now())
            .await?
        {
            return Err(ServiceError::not_found(format!(
                "unfinished factor {factor_id:?}"
            )));
        }
        Ok(first.then_some(codes))
    }

    pub async fn factors(&self, me: &Principal) -> ServiceResult<FactorList> {
        Ok(FactorList {
            factors: self.store.list_mfa_factors(&me.user.user_id).await?,
            backup_codes_remaining: self.store.count_backup_codes(&me.user.user_id).await?,
        })
    }

    /// Removes a factor; the password again stands in for a recent sign-in.
    pub async fn remove_factor(
        &self,
        me: &Principal,
        factor_id: &str,
        password: Option<&str>,
    ) -> ServiceResult<()> {
        self.require_sudo(me).await?;
        self.recheck_password(me, password, &["password"]).await?;
        if self
            .store
            .delete_mfa_factor(&me.user.user_id, factor_id)
            .await?
        {
            Ok(())
        } else {
            Err(ServiceError::not_found(format!("factor {factor_id:?}")))
        }
    }

    /// New backup codes (the old ones stop working); needs a factor and the password.
    pub async fn regenerate_backup_codes(
        &self,
        me: &Principal,
        password: Option<&str>,
    ) -> ServiceResult<Vec<String>> {
        self.recheck_password(me, password, &["password"]).await?;
        if self
            .store
            .list_mfa_factors(&me.user.user_id)
            .await?
            .is_empty()
        {
            return Err(ServiceError::Conflict(
                "enrol a second factor first; backup codes stand in for one".into(),
            ));
        }
        let (codes, hashes) = new_backup_codes(&me.user.user_id);
        self.store
            .replace_backup_codes(&me.user.user_id, &hashes, Utc::now())
            .await?;
        Ok(codes)
    }

    /// After the right password: a sign-in, or a challenge when a factor is owed.
    pub(super) async fn after_password(
        &self,
        user: kiln_store::User,
        client: &ClientInfo,
    ) -> ServiceResult<LoginOutcome> {
        if self.store.list_mfa_factors(&user.user_id).await?.is_empty() {
            return Ok(LoginOutcome::SignedIn(
                self.start_session(user, client).await?,
            ));
        }
        let token = random_token(43);
        let now = Utc::now();
        let challenge = MfaChallenge {
            challenge_hash: sha256_hex(&token),
            user_id: user.user_id,
            created_at: now,
            expires_at: now + Duration::seconds(CHALLENGE_TTL_SECS),
            used_at: None,
            failures: 0,
            user_agent: client.user_agent.chars().take(256).collect(),
            ip_address: client.address.clone(),
        };
        self.store.insert_mfa_challenge(&challenge).await?;
        Ok(LoginOutcome::MfaRequired {
            challenge_token: token,
            expires_at: challenge.expires_at,
            factors: vec!["totp", "backup_code"],
        })
    }

    async fn live_challenge(&self, token: &str) -> ServiceResult<MfaChallenge> {
        let expired = || {
            ServiceError::Unauthorized(
                "the sign-in challenge is invalid, expired, used or failed too often; sign in again"
                    .into(),
            )
        };
        if token.is_empty() || token.len() > 128 {
            return Err(expired());
        }
        self.store
            .get_mfa_challenge(&sha256_hex(token), Utc::now(), CHALLENGE_MAX_FAILURES)
            .await?
            .ok_or_else(expired)
    }

    /// The factors a pending challenge accepts and when it expires.
    pub async fn mfa_state(
        &self,
        challenge_token: &str,
    ) -> ServiceResult<(Vec<&'static str>, DateTime<Utc>)> {
        let challenge = self.live_challenge(challenge_token).await?;
        Ok((vec!["totp", "backup_code"], challenge.expires_at))
    }

    /// Completes a sign-in with a TOTP code or a backup code (each accepted once).
    pub async fn login_mfa(
        &self,
        challenge_token: &str,
        code: &str,
        client: &ClientInfo,
    ) -> ServiceResult<SignIn> {
        let challenge = self.live_challenge(challenge_token).await?;
        let user = self
            .store
            .get_user(&challenge.user_id)
            .await?
            .filter(|u| u.is_active)
            .ok_or_else(|| ServiceError::Unauthorized("the account is gone".into()))?;
        if !self.second_factor_ok(&user, code).await? {
            self.store
                .fail_mfa_challenge(&challenge.challenge_hash)
                .await?;
            return Err(ServiceError::Unauthorized(
                "the code is wrong or was already used".into(),
            ));
        }
        if !self
            .store
            .consume_mfa_challenge(
                &challenge.challenge_hash,
                Utc::now(),
                CHALLENGE_MAX_FAILURES,
            )
            .await?
        {
            return Err(ServiceError::Unauthorized(
                "the sign-in challenge was already used; sign in again".into(),
            ));
        }
        self.cancel_mfa_recovery(&user.user_id).await?;
        self.start_session(user, client).await
    }

    pub(super) async fn second_factor_ok(
        &self,
        user: &kiln_store::User,
        code: &str,
    ) -> ServiceResult<bool> {
        let code = code.trim();
        if code.len() > 64 {
            return Ok(false);
        }
        if code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit()) {
            for factor in self.store.list_mfa_factors(&user.user_id).await? {
                let t = self.totp_of(&factor, &user.email)?;
                if let Some(step) = Self::matching_step(&t, code) {
                    return Ok(self
                        .store
                        .use_totp_step(&factor.factor_id, step, Utc::now())
                        .await?);
                }
            }
            return Ok(false);
        }
        Ok(self
            .store
            .use_backup_code(&user.user_id, &backup_hash(&user.user_id, code), Utc::now())
            .await?)
    }

    /// SMS and phone factors: no SMS provider here.
    pub fn sms_unsupported(&self) -> ServiceResult<()> {
        Err(ServiceError::NotImplemented {
            code: "sms_not_supported",
            message: "SMS and phone factors are not offered by this server (it has no SMS provider); use TOTP"
                .into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_codes_are_normalised_before_hashing() {
        let (codes, hashes) = new_backup_codes("usr_1");
        assert_eq!(codes.len(), BACKUP_CODES);
        assert_eq!(backup_hash("usr_1", &codes[0].to_uppercase()), hashes[0]);
        assert_eq!(backup_hash("usr_1", &codes[0].replace('-', " ")), hashes[0]);
        assert_ne!(
            backup_hash("usr_2", &codes[0]),
            hashes[0],
            "bound to the user"
        );
    }

    #[test]
    fn codes_match_within_one_step() {
        let t = totp(vec![7u8; SECRET_BYTES], "a@b.co").expect("totp");
        let now = u64::try_from(Utc::now().timestamp()).expect("after 1970");
        assert!(AccountService::matching_step(&t, &t.generate(now)).is_some());
        assert!(AccountService::matching_step(&t, &t.generate(now - 30)).is_some());
        assert!(AccountService::matching_step(&t, &t.generate(now - 300)).is_none());
        assert!(
            t.get_url().starts_with("otpauth://totp/Kiln:"),
            "{}",
            t.get_url()
        );
        assert!(!same("123456", "123457") && same("123456", "123456"));
    }
}

//! Password accounts (`/v1/auth`): sign-up, sign-in, device sessions, password and e-mail
//! changes, deletion and export. A sign-in is a device session (`device_sessions`) whose id
//! is both the refresh family and the `sid` claim of its JWT pair ([`AuthService`] checks it
//! on every use), so revoking the row ends the sign-in at once. Emailed links are
//! single-use tokens stored as hashes, written in one transaction with their mail
//! ([`mail`]).
mod emailed;
mod export;
mod limiter;
pub(crate) mod mail;
mod mfa;
mod password;
mod recovery;
pub use recovery::Recovered;
pub(crate) mod sudo;
mod validate;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use kiln_config::{AccountsConfig, AuthConfig, MailConfig};
use kiln_store::{AccountCredential, AccountDeletion, DeviceSession, NewAccount, Store, User};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::auth::{AuthService, Principal, TokenPair};
use crate::error::{ServiceError, ServiceResult};
use crate::ids::new_id;
use crate::secret_box::SecretBox;
use limiter::Limiter;
pub use mfa::{FactorList, LoginOutcome, TotpEnrolment};
use password::Passwords;

/// Longest user agent kept with a session.
const MAX_USER_AGENT: usize = 256;
/// Device sessions listed at most.
const MAX_SESSIONS_LISTED: u64 = 200;

/// Who is on the other end of a request, as the HTTP edge saw it.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub address: String,
    pub user_agent: String,
}

/// A completed sign-in (sign-up, login).
#[derive(Debug, Clone)]
pub struct SignIn {
    pub user: User,
    pub session_id: String,
    pub tokens: TokenPair,
}

/// The caller's account: the user, and the password sign-in when there is one.
#[derive(Debug, Clone)]
pub struct AccountView {
    pub user: User,
    pub credential: Option<AccountCredential>,
}

pub struct AccountService {
    store: Arc<dyn Store>,
    config: AccountsConfig,
    mail: MailConfig,
    tokens: AuthService,
    passwords: Passwords,
    /// Seals TOTP secrets (bound to their factor id).
    mfa_secrets: SecretBox,
    login_failures: Limiter,
    mail_requests: Limiter,
    wake: Arc<Notify>,
    sender: Mutex<Option<JoinHandle<()>>>,
}

impl AccountService {
    pub fn new(
        store: Arc<dyn Store>,
        config: AccountsConfig,
        mail: MailConfig,
        auth: AuthConfig,
        jwt_secret: &[u8],
    ) -> ServiceResult<Self> {
        let window = Duration::from_secs(config.login_window_secs);
        Ok(Self {
            tokens: AuthService::new(store.clone(), auth, jwt_secret),
            passwords: Passwords::new(&config)?,
            mfa_secrets: SecretBox::new(jwt_secret, "mfa-totp"),
            login_failures: Limiter::new(window),
            mail_requests: Limiter::new(window),
            store,
            config,
            mail,
            wake: Arc::new(Notify::new()),
            sender: Mutex::new(None),
        })
    }

    /// Starts the mail sender (at bootstrap, once).
    pub fn spawn_sender(&self) {
        let sender = Arc::new(mail::Sender {
            store: self.store.clone(),
            config: self.mail.clone(),
            wake: self.wake.clone(),
        });
        let task = tokio::spawn(sender.run());
        if let Some(old) = self.lock_sender().replace(task) {
            old.abort();
        }
    }

    /// Stops the mail sender; a mail in flight is left to its lease and sent again later.
    pub fn shutdown(&self) {
        if let Some(task) = self.lock_sender().take() {
            task.abort();
        }
    }

    fn lock_sender(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        self.sender.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new account, signed in, with its verification mail in the outbox.
    pub async fn signup(
        &self,
        name: &str,
        email: &str,
        password: &str,
        client: &ClientInfo,
    ) -> ServiceResult<SignIn> {
        let name = validate::name(name)?;
        let email = validate::email(email, &["email"])?;
        validate::password(password, &self.config, &["password"])?;
        self.count_mail_request(client)?;
        let account = NewAccount {
            user_id: new_id("usr"),
            name,
            email: email.clone(),
            password_hash: self.passwords.hash(password).await?,
            created_at: Utc::now(),
        };
        let (token, mail) = self.verification_for(&account.user_id, &email);
        let user = self
            .store
            .create_account(&account, Some((&token, &mail)))
            .await
            .map_err(|e| match e {
                kiln_store::StoreError::Conflict(_) => {
                    ServiceError::Conflict("an account with this e-mail address exists".into())
                }
                other => other.into(),
            })?;
        // Every account acts in an organization: its personal one is its default.
        self.store
            .ensure_personal_org(&user.user_id, &user.name, Utc::now())
            .await?;
        self.wake.notify_one();
        self.start_session(user, client).await
    }

    /// The failure-count keys of a password attempt (per account, per address) and its
    /// time; a 429 while either has failed too often, right password or not.
    pub(super) fn password_attempt(
        &self,
        email: &str,
        client: &ClientInfo,
        too_many: &str,
    ) -> ServiceResult<(String, String, Instant)> {
        let email_key = format!("acct:{}", email.trim().to_lowercase());
        let address_key = format!("addr:{}", client.address);
        let now = Instant::now();
        let blocked = self
            .login_failures
            .blocked(&email_key, self.config.login_failures_per_account, now)
            .or_else(|| {
                self.login_failures.blocked(
                    &address_key,
                    self.config.login_failures_per_address,
                    now,
                )
            });
        match blocked {
            Some(retry_after_secs) => Err(ServiceError::TooManyAttempts {
                message: format!("{too_many}; wait before trying again"),
                retry_after_secs,
            }),
            None => Ok((email_key, address_key, now)),
        }
    }

    /// Signs in with e-mail and password (then a second factor, when the account has one).
    /// Failures count per account and per address; past either limit the answer is a 429
    /// until the window passes, right password or not.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        client: &ClientInfo,
    ) -> ServiceResult<LoginOutcome> {
        let (email_key, address_key, now) =
            self.password_attempt(email, client, "too many failed sign-ins")?;
        let found = self
            .store
            .find_account_by_email(&email.trim().to_lowercase())
            .await?;
        let hash = found.as_ref().map(|(c, _)| c.password_hash.as_str());
        let matched = self.passwords.verify(password, hash).await?;
        match found {
            Some((_, user)) if matched && user.is_active => {
                self.login_failures.clear(&email_key);
                self.after_password(user, client).await
            }
            _ => {
                self.login_failures.hit(&email_key, now);
                self.login_failures.hit(&address_key, now);
                Err(ServiceError::Unauthorized(
                    "wrong e-mail address or password".into(),
                ))
            }
        }
    }

    async fn start_session(&self, user: User, client: &ClientInfo) -> ServiceResult<SignIn> {
        let now = Utc::now();
        let live = self
            .store
            .list_device_sessions(&user.user_id, u64::from(self.config.max_sessions_per_user))
            .await?;
        // At the cap, the oldest sign-in makes room (the list is newest first).
        if live.len() >= self.config.max_sessions_per_user as usize {
            if let Some(oldest) = live.last() {
                self.store
                    .revoke_device_session(&user.user_id, &oldest.session_id, now, "session_limit")
                    .await?;
            }
        }
        let session = DeviceSession {
            session_id: new_id("dses"),
            user_id: user.user_id.clone(),
            created_at: now,
            last_seen_at: now,
            user_agent: client.user_agent.chars().take(MAX_USER_AGENT).collect(),
            ip_address: client.address.clone(),
            revoked_at: None,
            revoked_reason: None,
        };
        self.store.insert_device_session(&session).await?;
        let tokens = self
            .tokens
            .issue_session_tokens(&user, &session.session_id)
            .await?;
        Ok(SignIn {
            user,
            session_id: session.session_id,
            tokens,
        })
    }

    /// A new pair for a refresh token (the old one is spent).
    pub async fn refresh(&self, refresh_token: &str) -> ServiceResult<TokenPair> {
        self.tokens.refresh(refresh_token).await
    }

    /// Ends the caller's sign-in. With an API key there is none to end: nothing changes.
    pub async fn logout(&self, me: &Principal) -> ServiceResult<()> {
        if let Some(sid) = &me.session_id {
            self.store
                .revoke_device_session(&me.user.user_id, sid, Utc::now(), "logout")
                .await?;
        }
        Ok(())
    }

    pub async fn me(&self, me: &Principal) -> ServiceResult<AccountView> {
        Ok(AccountView {
            user: me.user.clone(),
            credential: self.store.get_account(&me.user.user_id).await?,
        })
    }

    pub async fn update_me(
        &self,
        me: &Principal,
        name: Option<&str>,
    ) -> ServiceResult<AccountView> {
        if let Some(name) = name {
            let name = validate::name(name)?;
            self.store.set_account_name(&me.user.user_id, &name).await?;
        }
        let user = self
            .store
            .get_user(&me.user.user_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("user"))?;
        Ok(AccountView {
            user,
            credential: self.store.get_account(&me.user.user_id).await?,
        })
    }

    /// Soft-deletes the caller's password account; its password must be given again (a
    /// stolen access token or API key alone cannot delete it).
    pub async fn delete_me(
        &self,
        me: &Principal,
        password: Option<&str>,
    ) -> ServiceResult<AccountDeletion> {
        self.require_sudo(me).await?;
        self.recheck_password(me, password, &["password"]).await?;
        Ok(self
            .store
            .soft_delete_account(&me.user.user_id, Utc::now())
            .await?)
    }

    /// Changes the password; every other sign-in of the account ends.
    pub async fn change_password(
        &self,
        me: &Principal,
        current: &str,
        new: &str,
    ) -> ServiceResult<u64> {
        validate::password(new, &self.config, &["new_password"])?;
        self.recheck_password(me, Some(current), &["current_password"])
            .await?;
        let hash = self.passwords.hash(new).await?;
        Ok(self
            .store
            .set_password(
                &me.user.user_id,
                &hash,
                Utc::now(),
                me.session_id.as_deref(),
            )
            .await?)
    }

    /// The caller's password must match. An account without one (API keys, GitHub) cannot
    /// prove itself again this way, so what needs it is refused (409) rather than allowed
    /// on the strength of a bearer credential alone.
    async fn recheck_password(
        &self,
        me: &Principal,
        password: Option<&str>,
        field: &[&str],
    ) -> ServiceResult<()> {
        let Some(account) = self.store.get_account(&me.user.user_id).await? else {
            return Err(ServiceError::Conflict(
                "this account has no password sign-in; an admin manages it".into(),
            ));
        };
        let Some(password) = password else {
            return Err(ServiceError::invalid(field, "Field required", "missing"));
        };
        if self
            .passwords
            .verify(password, Some(&account.password_hash))
            .await?
        {
            Ok(())
        } else {
            Err(ServiceError::Unauthorized("the password is wrong".into()))
        }
    }

    /// The caller's live device sessions, newest first.
    pub async fn sessions(&self, me: &Principal) -> ServiceResult<Vec<DeviceSession>> {
        Ok(self
            .store
            .list_device_sessions(&me.user.user_id, MAX_SESSIONS_LISTED)
            .await?)
    }

    /// Ends one of the caller's sessions; another user's or an ended one is a 404.
    pub async fn revoke_session(&self, me: &Principal, session_id: &str) -> ServiceResult<()> {
        if self
            .store
            .revoke_device_session(&me.user.user_id, session_id, Utc::now(), "revoked")
            .await?
        {
            Ok(())
        } else {
            Err(ServiceError::not_found(format!("session {session_id:?}")))
        }
    }

    /// Ends every session but the caller's own (all of them when called with an API key).
    pub async fn revoke_other_sessions(&self, me: &Principal) -> ServiceResult<u64> {
        Ok(self
            .store
            .revoke_device_sessions(
                &me.user.user_id,
                me.session_id.as_deref(),
                Utc::now(),
                "revoked",
            )
            .await?)
    }

    /// Counts a request that sends mail from `client`; 429 past the limit.
    fn count_mail_request(&self, client: &ClientInfo) -> ServiceResult<()> {
        let key = format!("addr:{}", client.address);
        let now = Instant::now();
        if let Some(retry_after_secs) =
            self.mail_requests
                .blocked(&key, self.config.mails_per_address, now)
        {
            return Err(ServiceError::TooManyAttempts {
                message: "too many mail requests from this address; wait before trying again"
                    .into(),
                retry_after_secs,
            });
        }
        self.mail_requests.hit(&key, now);
        Ok(())
    }
}

/// A mail that did not go out over SMTP, for an admin to pass on by hand.
#[derive(Debug, Clone)]
pub struct PendingLink {
    pub to: String,
    pub subject: String,
    pub link: String,
    pub status: &'static str,
    pub created_at: chrono::DateTime<Utc>,
}

impl AccountService {
    /// Links of mails not sent over SMTP (no server configured, or still failing), newest
    /// first: what `kiln accounts pending-links` prints.
    pub async fn pending_links(&self, limit: u64) -> ServiceResult<Vec<PendingLink>> {
        Ok(self
            .store
            .list_unsent_mail(limit)
            .await?
            .into_iter()
            .filter_map(|m| {
                Some(PendingLink {
                    link: m.link?,
                    to: m.to_address,
                    subject: m.subject,
                    status: m.status.as_str(),
                    created_at: m.created_at,
                })
            })
            .collect())
    }
}

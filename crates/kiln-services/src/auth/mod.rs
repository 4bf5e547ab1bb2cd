//! Who is calling: API keys (long-lived, for scripts and the SDK) and JWT pairs
//! (short-lived access tokens, rotating refresh tokens, for interactive clients).
pub(crate) mod sudo;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use kiln_config::AuthConfig;
use kiln_store::{ApiKeyRecord, NewApiKey, NewRefreshToken, NewUser, RefreshOutcome, Store, User};
use serde::{Deserialize, Serialize};

use crate::error::{ServiceError, ServiceResult};
use crate::ids::{new_id, random_token, sha256_hex};

/// Every API key starts with this, so a leaked key is recognisable (and greppable by
/// secret scanners) and the server can tell it from a JWT without trying to decode it.
pub const API_KEY_PREFIX: &str = "kiln_";
const API_KEY_SECRET_LEN: usize = 32;
const MAX_KEY_NAME_LEN: usize = 100;
/// How fresh an API key's `last_used_at` is kept: at most one write per key per minute.
const LAST_USED_RESOLUTION_SECS: i64 = 60;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    pub via: Credential,
    /// The device session (`/v1/auth` sign-in) the access token belongs to, if any.
    pub session_id: Option<String>,
    /// Set once the request's organization is resolved (`OrgService::acting`): the org, and
    /// the person behind `user` (which is then the org's account).
    pub acting: Option<Acting>,
}

/// Who really acts, and in which organization, when a principal acts for an org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acting {
    pub org_id: String,
    pub person_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `org`: the org an org key belongs to (read with the key, so resolving the org and
    /// checking its IP allowlist cost no more queries for the keys that have none).
    ApiKey {
        key_id: String,
        org: Option<kiln_store::KeyOrg>,
        /// The user's default membership as it was read with the key: the org a
        /// personal key's request acts in when it names none, without another query.
        default_membership: Option<kiln_store::OrgMembership>,
    },
    AccessToken,
}

/// A freshly minted key: the only moment its secret exists outside the caller.
#[derive(Debug, Clone)]
pub struct CreatedApiKey {
    pub record: ApiKeyRecord,
    pub secret: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: i64,
    exp: i64,
    jti: String,
    /// `access` or `refresh`: a refresh token is never accepted as an access token.
    typ: String,
    /// The refresh family, on refresh tokens only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fam: Option<String>,
    /// The device session (`device_sessions`) of a `/v1/auth` sign-in, on both tokens of
    /// its pair: each use checks the session is live, so revoking it stops them at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
}

const ACCESS: &str = "access";
const REFRESH: &str = "refresh";

pub struct AuthService {
    store: Arc<dyn Store>,
    config: AuthConfig,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl AuthService {
    pub fn new(store: Arc<dyn Store>, config: AuthConfig, jwt_secret: &[u8]) -> Self {
        Self {
            store,
            config,
            encoding: EncodingKey::from_secret(jwt_secret),
            decoding: DecodingKey::from_secret(jwt_secret),
        }
    }

    pub async fn create_user(
        &self,
        name: &str,
        email: &str,
        is_admin: bool,
    ) -> ServiceResult<User> {
        self.insert_user(name, email, None, is_admin).await
    }

    /// A user made by their first GitHub sign-in. `Store(Conflict("github_id"))` if that
    /// GitHub account already has a user.
    pub async fn create_github_user(
        &self,
        name: &str,
        email: &str,
        github_id: &str,
        github_login: &str,
    ) -> ServiceResult<User> {
        self.insert_user(name, email, Some((github_id, github_login)), false)
            .await
    }

    async fn insert_user(
        &self,
        name: &str,
        email: &str,
        github: Option<(&str, &str)>,
        is_admin: bool,
    ) -> ServiceResult<User> {
        let user = NewUser {
            user_id: new_id("usr"),
            name: name.to_string(),
            email: email.to_string(),
            github_id: github.map(|(id, _)| id.to_string()),
            github_login: github.map(|(_, login)| login.to_string()),
            is_admin,
            created_at: Utc::now(),
        };
        Ok(self.store.create_user(&user).await?)
    }

    pub async fn create_api_key(
        &self,
        user_id: &str,
        name: Option<String>,
    ) -> ServiceResult<CreatedApiKey> {
        let name = name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
        if name
            .as_ref()
            .is_some_and(|n| n.chars().count() > MAX_KEY_NAME_LEN)
        {
            return Err(ServiceError::invalid(
                &["name"],
                format!("String should have at most {MAX_KEY_NAME_LEN} characters"),
                "string_too_long",
            ));
        }
        let active = self
            .store
            .list_api_keys(user_id)
            .await?
            .iter()
            .filter(|k| k.revoked_at.is_none())
            .count();
        if active >= self.config.max_api_keys_per_user as usize {
            return Err(ServiceError::LimitExceeded(format!(
                "this user already has {active} active API keys (the limit is {}); revoke one first",
                self.config.max_api_keys_per_user
            )));
        }
        let secret = format!("{API_KEY_PREFIX}{}", random_token(API_KEY_SECRET_LEN));
        let key = NewApiKey {
            key_id: new_id("key"),
            user_id: user_id.to_string(),
            name,
            key_hash: sha256_hex(&secret),
            masked: mask_key(&secret),
            created_at: Utc::now(),
            expires_at: None,
        };
        let record = self.store.insert_api_key(&key).await?;
        Ok(CreatedApiKey { record, secret })
    }

    pub async fn get_user(&self, user_id: &str) -> ServiceResult<Option<User>> {
        Ok(self.store.get_user(user_id).await?)
    }

    /// The user's API keys, masked (the store never had their secrets).
    pub async fn list_api_keys(&self, user_id: &str) -> ServiceResult<Vec<ApiKeyRecord>> {
        Ok(self.store.list_api_keys(user_id).await?)
    }

    pub async fn accept_terms(&self, user_id: &str, at: DateTime<Utc>) -> ServiceResult<()> {
        Ok(self.store.set_terms_accepted(user_id, at).await?)
    }

    /// The caller revokes one of their own keys. A key may revoke itself at once (a leaked
    /// key's holder can only end it); any other needs sudo when the caller signs in with a
    /// password, so a stolen token or key cannot lock its owner out of their other keys.
    pub async fn revoke_own_api_key(&self, me: &Principal, key_id: &str) -> ServiceResult<()> {
        let itself = matches!(&me.via, Credential::ApiKey { key_id: own, .. } if own == key_id);
        if !itself {
            sudo::require(&self.store, me).await?;
        }
        self.revoke_api_key(&me.user.user_id, key_id).await
    }

    pub async fn revoke_api_key(&self, user_id: &str, key_id: &str) -> ServiceResult<()> {
        if self
            .store
            .revoke_api_key(user_id, key_id, Utc::now())
            .await?
        {
            Ok(())
        } else {
            Err(ServiceError::not_found(format!(
                "active API key {key_id:?}"
            )))
        }
    }

    /// Resolves a bearer credential to its user. Every failure is `Unauthorized`, with a
    /// message that says what to do, but never which part of a secret was wrong.
    pub async fn authenticate(&self, bearer: &str) -> ServiceResult<Principal> {
        let now = Utc::now();
        if bearer.starts_with(API_KEY_PREFIX) {
            let Some(kiln_store::FoundApiKey {
                key,
                user,
                org,
                default_membership,
            }) = self.store.find_api_key(&sha256_hex(bearer), now).await?
            else {
                return Err(ServiceError::Unauthorized(
                    "invalid, revoked or expired API key".into(),
                ));
            };
            ensure_active(&user)?;
            // Last-used is informative only: recorded to the minute, so a busy key does
            // not cost a write per request (writes queue behind each other on SQLite),
            // and a failed write must not fail the request.
            let stale = key
                .last_used_at
                .is_none_or(|at| now - at >= chrono::Duration::seconds(LAST_USED_RESOLUTION_SECS));
            if stale {
                if let Err(e) = self.store.touch_api_key(&key.key_id, now).await {
                    tracing::warn!(error = %e, "could not record API key use");
                }
            }
            return Ok(Principal {
                user,
                via: Credential::ApiKey {
                    key_id: key.key_id,
                    org,
                    default_membership,
                },
                session_id: None,
                acting: None,
            });
        }
        let claims = self.decode(bearer, ACCESS)?;
        let user = self.store.get_user(&claims.sub).await?.ok_or_else(|| {
            ServiceError::Unauthorized("the token's user no longer exists".into())
        })?;
        // A deleted account's sign-ins were ended with it: that (401) comes first.
        if let Some(sid) = &claims.sid {
            self.check_session(sid, &user.user_id, now).await?;
        }
        ensure_active(&user)?;
        Ok(Principal {
            user,
            via: Credential::AccessToken,
            session_id: claims.sid,
            acting: None,
        })
    }

    /// Starts a new refresh family for `user` (a sign-in).
    pub async fn issue_tokens(&self, user: &User) -> ServiceResult<TokenPair> {
        let now = Utc::now();
        self.store.set_last_login(&user.user_id, now).await?;
        self.mint_pair(&user.user_id, &new_id("fam"), None, now)
            .await
    }

    /// A pair for a device session (a `/v1/auth` sign-in): the session id is the refresh
    /// family and the `sid` of both tokens.
    pub async fn issue_session_tokens(
        &self,
        user: &User,
        session_id: &str,
    ) -> ServiceResult<TokenPair> {
        let now = Utc::now();
        self.store.set_last_login(&user.user_id, now).await?;
        self.mint_pair(&user.user_id, session_id, Some(session_id), now)
            .await
    }

    /// The device session must exist, be the user's and not be revoked. Its last use is
    /// recorded at most once a minute (informative; a failed write fails nothing).
    async fn check_session(
        &self,
        sid: &str,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> ServiceResult<()> {
        let live = self
            .store
            .get_device_session(sid)
            .await?
            .filter(|s| s.user_id == user_id && s.revoked_at.is_none());
        if live.is_none() {
            return Err(ServiceError::Unauthorized(
                "this sign-in was ended (signed out, revoked or the account changed); sign in again"
                    .into(),
            ));
        }
        if let Err(e) = self
            .store
            .touch_device_session(sid, now, now - Duration::seconds(60))
            .await
        {
            tracing::warn!(error = %e, "could not record device session use");
        }
        Ok(())
    }

    /// Exchanges a refresh token for a new pair. The old refresh token is spent: using
    /// it again is treated as theft, and revokes every token of its family.
    pub async fn refresh(&self, refresh_token: &str) -> ServiceResult<TokenPair> {
        let claims = self.decode(refresh_token, REFRESH)?;
        let now = Utc::now();
        if let Some(sid) = &claims.sid {
            self.check_session(sid, &claims.sub, now).await?;
        }
        match self.store.consume_refresh_token(&claims.jti, now).await? {
            RefreshOutcome::Consumed { user_id, family_id } => {
                let user = self.store.get_user(&user_id).await?.ok_or_else(|| {
                    ServiceError::Unauthorized("the token's user no longer exists".into())
                })?;
                ensure_active(&user)?;
                self.mint_pair(&user_id, &family_id, claims.sid.as_deref(), now)
                    .await
            }
            RefreshOutcome::Reused { family_id, .. } => {
                self.store.revoke_refresh_family(&family_id, now).await?;
                Err(ServiceError::Unauthorized(
                    "refresh token already used or revoked; sign in again (all tokens of this sign-in are now revoked)"
                        .into(),
                ))
            }
            RefreshOutcome::Expired => Err(ServiceError::Unauthorized(
                "refresh token expired; sign in again".into(),
            )),
            RefreshOutcome::Unknown => {
                Err(ServiceError::Unauthorized("unknown refresh token".into()))
            }
        }
    }

    pub fn access_token_ttl_secs(&self) -> u64 {
        self.config.access_token_ttl_secs
    }

    async fn mint_pair(
        &self,
        user_id: &str,
        family_id: &str,
        sid: Option<&str>,
        now: DateTime<Utc>,
    ) -> ServiceResult<TokenPair> {
        let access_exp = now + secs(self.config.access_token_ttl_secs);
        let refresh_exp = now + secs(self.config.refresh_token_ttl_secs);
        let access = self.sign(&Claims {
            sub: user_id.to_string(),
            iat: now.timestamp(),
            exp: access_exp.timestamp(),
            jti: new_id("jti"),
            typ: ACCESS.into(),
            fam: None,
            sid: sid.map(str::to_string),
        })?;
        let refresh_id = new_id("rtk");
        let refresh = self.sign(&Claims {
            sub: user_id.to_string(),
            iat: now.timestamp(),
            exp: refresh_exp.timestamp(),
            jti: refresh_id.clone(),
            typ: REFRESH.into(),
            fam: Some(family_id.to_string()),
            sid: sid.map(str::to_string),
        })?;
        self.store
            .insert_refresh_token(&NewRefreshToken {
                token_id: refresh_id,
                family_id: family_id.to_string(),
                user_id: user_id.to_string(),
                issued_at: now,
                expires_at: refresh_exp,
            })
            .await?;
        Ok(TokenPair {
            access_token: access,
            refresh_token: refresh,
            expires_in: self.config.access_token_ttl_secs,
        })
    }

    fn sign(&self, claims: &Claims) -> ServiceResult<String> {
        encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| ServiceError::Internal(format!("cannot sign token: {e}")))
    }

    fn decode(&self, token: &str, typ: &str) -> ServiceResult<Claims> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        let claims = decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    ServiceError::Unauthorized(format!("{typ} token expired"))
                }
                _ => ServiceError::Unauthorized(format!(
                    "invalid credentials: expected an API key ({API_KEY_PREFIX}…) or a valid {typ} token"
                )),
            })?
            .claims;
        if claims.typ != typ {
            return Err(ServiceError::Unauthorized(format!(
                "a {} token was given where a {typ} token is needed",
                claims.typ
            )));
        }
        Ok(claims)
    }
}

fn ensure_active(user: &User) -> ServiceResult<()> {
    if user.is_active {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(
            "this account is deactivated".into(),
        ))
    }
}

fn secs(n: u64) -> Duration {
    Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX / 1000))
}

/// `kiln_AbCd…wXyZ`: enough to recognise a key in a list, not enough to use it.
pub fn mask_key(secret: &str) -> String {
    let body = secret.strip_prefix(API_KEY_PREFIX).unwrap_or(secret);
    let chars: Vec<char> = body.chars().collect();
    if chars.len() < 12 {
        return format!("{API_KEY_PREFIX}…");
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{API_KEY_PREFIX}{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_keys_hide_the_secret() {
        let secret = "kiln_abcdEFGHijklMNOPqrstUVWXyz012345";
        let masked = mask_key(secret);
        assert_eq!(masked, "kiln_abcd…2345");
        assert!(!masked.contains("EFGH"));
    }
}

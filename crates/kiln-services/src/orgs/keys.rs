//! Org API keys (`/v1/orgs/{slug}/api-keys`): ordinary API keys of their creator that carry
//! the organization, so every request made with one acts in that org. Owners and admins
//! create, list and revoke them; the secret is shown once.
use chrono::Utc;
use kiln_store::{ApiKeyRecord, NewApiKey};

use super::OrgService;
use crate::accounts::ClientInfo;
use crate::auth::{mask_key, CreatedApiKey, Principal, API_KEY_PREFIX};
use crate::error::{ServiceError, ServiceResult};
use crate::ids::{new_id, random_token, sha256_hex};

/// As for personal keys (`auth.rs`): ≈ 190 bits.
const SECRET_LEN: usize = 32;
const MAX_KEY_NAME_LEN: usize = 100;

impl OrgService {
    pub async fn create_key(
        &self,
        caller: &Principal,
        org: &str,
        name: Option<String>,
        client: &ClientInfo,
    ) -> ServiceResult<CreatedApiKey> {
        let ctx = self.manager_context(caller, org).await?;
        let name = name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
        if name
            .as_ref()
            .is_some_and(|n| n.chars().count() > MAX_KEY_NAME_LEN)
        {
            return Err(ServiceError::invalid(
                &["body", "name"],
                format!("String should have at most {MAX_KEY_NAME_LEN} characters"),
                "string_too_long",
            ));
        }
        let active = self
            .store
            .list_org_api_keys(&ctx.org.org_id)
            .await?
            .iter()
            .filter(|k| k.revoked_at.is_none())
            .count();
        if active >= self.config.max_api_keys_per_org as usize {
            return Err(ServiceError::LimitExceeded(format!(
                "this organization already has {active} active API keys (the limit is {})",
                self.config.max_api_keys_per_org
            )));
        }
        let secret = format!("{API_KEY_PREFIX}{}", random_token(SECRET_LEN));
        let key = NewApiKey {
            key_id: new_id("key"),
            user_id: caller.user.user_id.clone(),
            name,
            key_hash: sha256_hex(&secret),
            masked: mask_key(&secret),
            created_at: Utc::now(),
            expires_at: None,
        };
        let record = self.store.insert_org_api_key(&key, &ctx.org.org_id).await?;
        let details = serde_json::json!({"name": record.name, "masked": record.masked});
        self.record(
            caller,
            Some(&ctx.org.org_id),
            "api_key.created",
            Some(&record.key_id),
            client,
            Some(details),
        )
        .await?;
        Ok(CreatedApiKey { record, secret })
    }

    pub async fn keys(&self, caller: &Principal, org: &str) -> ServiceResult<Vec<ApiKeyRecord>> {
        let ctx = self.manager_context(caller, org).await?;
        Ok(self.store.list_org_api_keys(&ctx.org.org_id).await?)
    }

    pub async fn revoke_key(
        &self,
        caller: &Principal,
        org: &str,
        key_id: &str,
        client: &ClientInfo,
    ) -> ServiceResult<()> {
        let ctx = self.manager_context(caller, org).await?;
        crate::auth::sudo::require(&self.store, caller).await?;
        if !self
            .store
            .revoke_org_api_key(&ctx.org.org_id, key_id, Utc::now())
            .await?
        {
            return Err(ServiceError::not_found(format!(
                "active API key {key_id:?}"
            )));
        }
        self.record(
            caller,
            Some(&ctx.org.org_id),
            "api_key.revoked",
            Some(key_id),
            client,
            None,
        )
        .await
    }
}

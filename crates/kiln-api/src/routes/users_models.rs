//! The contract's shapes of users and their API keys.
use chrono::{DateTime, Utc};
use kiln_domain::{ApiKeyRecord, User};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::models::{rfc3339, rfc3339_opt};

/// Represents an API key for a user. `key` is the full secret only in the response
/// that creates it; listings show it masked.
#[derive(Serialize, ToSchema)]
pub struct ApiKey {
    pub key_id: String,
    pub key: String,
    pub name: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub expires_at: Option<DateTime<Utc>>,
    pub is_active: bool,
    #[serde(serialize_with = "rfc3339_opt")]
    pub last_used_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    pub fn from_record(record: &ApiKeyRecord, key: String) -> Self {
        Self {
            key_id: record.key_id.clone(),
            key,
            name: record.name.clone(),
            created_at: record.created_at,
            expires_at: record.expires_at,
            is_active: record.revoked_at.is_none()
                && record.expires_at.is_none_or(|e| e > Utc::now()),
            last_used_at: record.last_used_at,
        }
    }
}

/// Represents a user in the system.
#[derive(Serialize, ToSchema)]
#[schema(as = User)]
pub struct UserView {
    pub user_id: String,
    pub name: String,
    pub email: String,
    pub github_id: Option<String>,
    pub github_login: Option<String>,
    pub api_keys: Vec<ApiKey>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub last_login_at: Option<DateTime<Utc>>,
    pub is_active: bool,
    #[serde(serialize_with = "rfc3339_opt")]
    pub terms_accepted_at: Option<DateTime<Utc>>,
}

impl UserView {
    pub fn new(user: User, keys: &[ApiKeyRecord]) -> Self {
        Self {
            api_keys: keys
                .iter()
                .map(|k| ApiKey::from_record(k, k.masked.clone()))
                .collect(),
            user_id: user.user_id,
            name: user.name,
            email: user.email,
            github_id: user.github_id,
            github_login: user.github_login,
            created_at: user.created_at,
            last_login_at: user.last_login_at,
            is_active: user.is_active,
            terms_accepted_at: user.terms_accepted_at,
        }
    }
}

/// Request to create a new API key for a user.
#[derive(Deserialize, Default, ToSchema)]
pub struct ApiKeyCreateRequest {
    pub name: Option<String>,
}

/// Response for creating an API key.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyCreateResponse {
    pub api_key: ApiKey,
}

/// Request to revoke an API key.
#[derive(Deserialize, ToSchema)]
pub struct ApiKeyRevokeRequest {
    pub key_id: String,
}

/// Response for revoking an API key.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyRevokeResponse {
    pub message: String,
    pub revoked_key_id: String,
}

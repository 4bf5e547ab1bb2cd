//! `[auth]`: tokens and API keys.
use serde::{Deserialize, Serialize};

use crate::{ConfigError, Secret};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Key that signs JWTs (HS256). When unset, one is generated on first start and kept
    /// in `<data_dir>/jwt.secret`, so tokens survive restarts.
    pub jwt_secret: Option<Secret>,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    /// How many active API keys one user may hold.
    pub max_api_keys_per_user: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            max_api_keys_per_user: 100,
        }
    }
}

impl AuthConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.access_token_ttl_secs == 0 || self.refresh_token_ttl_secs == 0 {
            return Err(ConfigError::Rule(
                "token lifetimes must be at least one second".into(),
            ));
        }
        Ok(())
    }
}

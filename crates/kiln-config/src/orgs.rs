//! `[orgs]`: organizations under `/v1/orgs` (members, invitations, org keys, audit).
use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct OrgsConfig {
    /// How long an emailed invitation can be accepted.
    pub invitation_ttl_secs: u64,
    /// Organizations one user may create (their personal one not counted).
    pub max_orgs_per_user: u32,
    /// Members of one organization (pending invitations count).
    pub max_members: u32,
    /// Active API keys of one organization.
    pub max_api_keys_per_org: u32,
    /// Networks in one organization's IP allowlist.
    pub max_ip_allowlist_entries: u32,
}

impl Default for OrgsConfig {
    fn default() -> Self {
        Self {
            invitation_ttl_secs: 7 * 24 * 3600,
            max_orgs_per_user: 20,
            max_members: 500,
            max_api_keys_per_org: 50,
            max_ip_allowlist_entries: 100,
        }
    }
}

impl OrgsConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.invitation_ttl_secs == 0
            || self.max_orgs_per_user == 0
            || self.max_members == 0
            || self.max_api_keys_per_org == 0
            || self.max_ip_allowlist_entries == 0
        {
            return Err(ConfigError::Rule(
                "orgs.invitation_ttl_secs, max_orgs_per_user, max_members, max_api_keys_per_org and max_ip_allowlist_entries must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_zeroes_fail() {
        assert!(OrgsConfig::default().check().is_ok());
        let bad = OrgsConfig {
            max_members: 0,
            ..OrgsConfig::default()
        };
        assert!(bad.check().is_err());
    }
}

//! Org security (issue 15): sudo grants and org IP allowlists.
use chrono::{DateTime, Utc};

/// The credential a sudo grant belongs to: the device session of a signed-in token, or an
/// API key. A grant never spreads to the account's other sessions or keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SudoHolder {
    DeviceSession(String),
    ApiKey(String),
}

/// One network an organization's API keys may be used from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpAllowEntry {
    pub entry_id: String,
    pub org_id: String,
    /// Canonical CIDR (host bits cleared).
    pub cidr: String,
    pub note: String,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The organization an org API key belongs to, as authentication finds it with the key:
/// whether its org restricts keys to an IP allowlist decides if the list is read at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOrg {
    pub org_id: String,
    /// The org has an IP allowlist (its keys are bound to it).
    pub restricted: bool,
}

/// What authentication reads with one query for an API key: the key, its user, the org
/// of an org key, and the user's default membership (the org a personal key acts in when
/// the request names none), so resolving that org costs no second query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundApiKey {
    pub key: crate::ApiKeyRecord,
    pub user: crate::User,
    pub org: Option<KeyOrg>,
    /// The user's membership marked default (the first by `created_at`, `org_id`).
    pub default_membership: Option<crate::OrgMembership>,
}

/// The org an API key acts in and the networks it may be used from (empty: anywhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAllowlist {
    pub org_id: String,
    pub cidrs: Vec<String>,
}

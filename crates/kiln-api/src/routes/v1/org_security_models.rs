//! Shapes of sudo (`/v1/auth/sudo`) and org IP allowlists (`/v1/orgs/{org}/ip-allowlist`).
use chrono::{DateTime, Utc};
use kiln_domain::IpAllowEntry;
use kiln_services::orgs::AllowInput;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::models::rfc3339;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SudoRequest {
    pub password: String,
    /// A TOTP code or a backup code; required when the account has a second factor.
    #[serde(default)]
    pub code: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SudoResponse {
    /// Until when this sign-in (or API key) may call destructive routes.
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub sudo_until: DateTime<Utc>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowEntryRequest {
    /// A network (`203.0.113.0/24`, `2001:db8::/32`) or one address.
    #[schema(max_length = 64)]
    pub cidr: String,
    #[serde(default)]
    #[schema(max_length = 200)]
    pub note: Option<String>,
}

impl From<AllowEntryRequest> for AllowInput {
    fn from(r: AllowEntryRequest) -> Self {
        AllowInput {
            cidr: r.cidr,
            note: r.note,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAllowlistRequest {
    /// The whole list (`orgs.max_ip_allowlist_entries` at most); empty: anywhere.
    pub entries: Vec<AllowEntryRequest>,
}

#[derive(Serialize, ToSchema)]
pub struct AllowEntryView {
    pub id: String,
    /// Canonical: host bits cleared, a lone address as /32 or /128.
    pub cidr: String,
    pub note: String,
    pub created_by: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
}

impl From<IpAllowEntry> for AllowEntryView {
    fn from(e: IpAllowEntry) -> Self {
        Self {
            id: e.entry_id,
            cidr: e.cidr,
            note: e.note,
            created_by: e.created_by,
            created_at: e.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AllowlistView {
    /// Empty: the org's API keys work from anywhere.
    pub items: Vec<AllowEntryView>,
}

impl AllowlistView {
    pub fn new(entries: Vec<IpAllowEntry>) -> Self {
        Self {
            items: entries.into_iter().map(AllowEntryView::from).collect(),
        }
    }
}

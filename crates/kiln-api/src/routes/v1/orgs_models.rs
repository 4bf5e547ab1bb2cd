//! Shapes of `/v1/orgs` (organizations, members, invitations, org keys, audit).
use chrono::{DateTime, Utc};
use kiln_domain::{ApiKeyRecord, AuditEvent, OrgInvitation, OrgMember, OrgMembership, OrgRole};
use kiln_services::orgs::{InvitationView, OrgContext};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::models::{rfc3339, rfc3339_opt};

/// `owner`, `admin` or `member`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Member,
}

impl From<Role> for OrgRole {
    fn from(r: Role) -> Self {
        match r {
            Role::Owner => OrgRole::Owner,
            Role::Admin => OrgRole::Admin,
            Role::Member => OrgRole::Member,
        }
    }
}

impl From<OrgRole> for Role {
    fn from(r: OrgRole) -> Self {
        match r {
            OrgRole::Owner => Role::Owner,
            OrgRole::Admin => Role::Admin,
            OrgRole::Member => Role::Member,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrgRequest {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// 3-40 of `a-z`, `0-9`, `-`; by default made from the name.
    #[serde(default)]
    pub slug: Option<String>,
}

/// An organization as the caller sees it (with their role).
#[derive(Serialize, ToSchema)]
pub struct OrgView {
    pub id: String,
    pub slug: String,
    pub name: String,
    /// The caller's personal organization.
    pub personal: bool,
    pub role: Role,
    /// The org requests act in without an org key or `X-Org-Slug`.
    pub is_default: bool,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
}

impl OrgView {
    pub fn from_membership(m: OrgMembership) -> Self {
        Self {
            id: m.org.org_id,
            slug: m.org.slug,
            name: m.org.name,
            personal: m.org.personal_of.is_some(),
            role: m.role.into(),
            is_default: m.is_default,
            created_at: m.org.created_at,
        }
    }

    pub fn from_context(c: OrgContext) -> Self {
        Self::from_membership(OrgMembership {
            org: c.org,
            role: c.role,
            is_default: c.is_default,
        })
    }
}

#[derive(Serialize, ToSchema)]
pub struct OrgList {
    pub items: Vec<OrgView>,
}

#[derive(Serialize, ToSchema)]
pub struct MemberView {
    pub user_id: String,
    pub name: String,
    pub email: String,
    pub role: Role,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub joined_at: DateTime<Utc>,
}

impl From<OrgMember> for MemberView {
    fn from(m: OrgMember) -> Self {
        Self {
            user_id: m.user_id,
            name: m.name,
            email: m.email,
            role: m.role.into(),
            joined_at: m.joined_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct MemberList {
    pub items: Vec<MemberView>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleChange {
    pub role: Role,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    #[schema(max_length = 254)]
    pub email: String,
    /// `member` by default.
    #[serde(default)]
    pub role: Option<Role>,
}

/// An invitation; its token is only in the mail.
#[derive(Serialize, ToSchema)]
pub struct InvitationOut {
    pub id: String,
    pub org_id: String,
    pub email: String,
    pub role: Role,
    pub invited_by: String,
    /// `pending`, `accepted`, `revoked` or `expired`.
    pub state: String,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: DateTime<Utc>,
}

impl InvitationOut {
    pub fn new(i: OrgInvitation, state: &str) -> Self {
        Self {
            id: i.invitation_id,
            org_id: i.org_id,
            email: i.email,
            role: i.role.into(),
            invited_by: i.invited_by,
            state: state.to_string(),
            created_at: i.created_at,
            expires_at: i.expires_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct InvitationList {
    pub items: Vec<InvitationOut>,
}

/// What an invitation token shows before it is accepted.
#[derive(Serialize, ToSchema)]
pub struct InvitationDetail {
    #[serde(flatten)]
    pub invitation: InvitationOut,
    pub org_slug: String,
    pub org_name: String,
}

impl From<InvitationView> for InvitationDetail {
    fn from(v: InvitationView) -> Self {
        Self {
            invitation: InvitationOut::new(v.invitation, v.state),
            org_slug: v.org.slug,
            org_name: v.org.name,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct InvitationDetailList {
    pub items: Vec<InvitationDetail>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    #[serde(default)]
    #[schema(max_length = 100)]
    pub name: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct OrgKeyView {
    pub id: String,
    pub name: Option<String>,
    /// The key with its middle hidden.
    pub masked: String,
    pub created_by: String,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<ApiKeyRecord> for OrgKeyView {
    fn from(k: ApiKeyRecord) -> Self {
        Self {
            id: k.key_id,
            name: k.name,
            masked: k.masked,
            created_by: k.user_id,
            created_at: k.created_at,
            revoked_at: k.revoked_at,
            last_used_at: k.last_used_at,
        }
    }
}

/// A new key: `key` is shown this once.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    pub key: String,
    #[serde(flatten)]
    pub record: OrgKeyView,
}

#[derive(Serialize, ToSchema)]
pub struct OrgKeyList {
    pub items: Vec<OrgKeyView>,
}

#[derive(Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this action (e.g. `member.role_changed`).
    #[serde(default)]
    pub action: Option<String>,
    /// Only this actor's events.
    #[serde(default)]
    pub actor_id: Option<String>,
    /// Events at or after (RFC 3339).
    #[serde(default)]
    pub since: Option<String>,
    /// Events before (RFC 3339).
    #[serde(default)]
    pub until: Option<String>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// 1-200, default 50.
    #[serde(default)]
    pub limit: Option<u64>,
}

pub fn parse_time(field: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    ApiError::invalid(
                        &["query", field],
                        format!("Input should be an RFC 3339 date-time: {e}"),
                        "datetime_parsing",
                    )
                })
        })
        .transpose()
}

#[derive(Serialize, ToSchema)]
pub struct AuditEventView {
    pub id: String,
    pub org_id: Option<String>,
    pub actor_id: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub ip_address: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
}

impl From<AuditEvent> for AuditEventView {
    fn from(e: AuditEvent) -> Self {
        Self {
            id: e.event_id,
            org_id: e.org_id,
            actor_id: e.actor_id,
            action: e.action,
            target: e.target,
            ip_address: e.ip_address,
            details: serde_json::from_str(&e.details).unwrap_or(serde_json::Value::Null),
            created_at: e.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AuditPageView {
    pub items: Vec<AuditEventView>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

//! Organizations (`/v1/orgs`): who belongs to which, in which role, invitations, the keys
//! that carry an org, and the append-only audit log.
use chrono::{DateTime, Utc};

/// What a member may do in an organization, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OrgRole {
    Owner,
    Admin,
    Member,
}

impl OrgRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "owner" => Some(Self::Owner),
            "admin" => Some(Self::Admin),
            "member" => Some(Self::Member),
            _ => None,
        }
    }

    /// Owners and admins manage members, invitations, keys and read the audit log.
    pub fn can_manage(self) -> bool {
        matches!(self, Self::Owner | Self::Admin)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    pub org_id: String,
    pub slug: String,
    pub name: String,
    /// The user whose personal organization this is.
    pub personal_of: Option<String>,
    /// The user row that owns what the org owns (sessions, ledger, …): the person for a
    /// personal org, a row of its own that never signs in for a team org.
    pub account_user_id: String,
    pub created_at: DateTime<Utc>,
}

/// An organization as one of its members sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgMembership {
    pub org: Organization,
    pub role: OrgRole,
    pub is_default: bool,
}

/// A member as the organization sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgMember {
    pub user_id: String,
    pub name: String,
    pub email: String,
    pub role: OrgRole,
    pub joined_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgInvitation {
    pub invitation_id: String,
    pub org_id: String,
    pub email: String,
    pub role: OrgRole,
    /// SHA-256 of the emailed token; the token itself is never stored.
    pub token_hash: String,
    pub invited_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub accepted_by: Option<String>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// How a membership change ended, when the store refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    Done,
    /// No such member.
    NotMember,
    /// The change would leave the organization without an owner.
    LastOwner,
}

/// One audit record. `org_id` is the organization the action concerns (the actor's default
/// org for account-level actions such as a sign-in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub event_id: String,
    pub org_id: Option<String>,
    pub actor_id: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub ip_address: String,
    /// A JSON object.
    pub details: String,
    pub created_at: DateTime<Utc>,
}

/// Filters of an audit listing; `before` is the `event_id` of the last event of the previous
/// page (cursor).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub actor_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub before: Option<String>,
}

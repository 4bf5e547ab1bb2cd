//! Organizations (`/v1/orgs`, document 004): every user has a personal organization (their
//! default), may create team organizations and be invited into others. A request acts in
//! one organization, resolved as document 004 says: the API key's org, else the
//! `X-Org-Slug` header (membership checked; a non-member sees 404), else the caller's
//! default membership. Security-relevant actions go to the append-only audit log.
mod audit;
mod invitations;
mod ip_allowlist;
mod keys;
pub mod roles;

use std::sync::Arc;

use chrono::Utc;
use kiln_config::{MailConfig, OrgsConfig};
use kiln_store::{MemberChange, OrgMember, OrgMembership, OrgRole, Organization, Store};

pub use audit::{AuditPage, Recorded};
pub use invitations::{CreatedInvitation, InvitationView};
pub use ip_allowlist::AllowInput;

use crate::accounts::ClientInfo;
use crate::auth::{Acting, Credential, Principal};
use crate::error::{ServiceError, ServiceResult};
use crate::ids::new_id;

const MAX_NAME_LEN: usize = 100;

/// The organization a request acts in, and the caller's role there.
#[derive(Debug, Clone)]
pub struct OrgContext {
    pub org: Organization,
    pub role: OrgRole,
    /// Whether this is the caller's default organization.
    pub is_default: bool,
}

pub struct OrgService {
    store: Arc<dyn Store>,
    config: OrgsConfig,
    mail: MailConfig,
}

impl OrgService {
    pub fn new(store: Arc<dyn Store>, config: OrgsConfig, mail: MailConfig) -> Self {
        Self {
            store,
            config,
            mail,
        }
    }

    /// The organization of this request: the API key's org, else `header_slug` (a
    /// non-member gets 404, as for an org that does not exist), else the default.
    pub async fn resolve(
        &self,
        caller: &Principal,
        header_slug: Option<&str>,
    ) -> ServiceResult<OrgContext> {
        if let Credential::ApiKey { org: Some(org), .. } = &caller.via {
            // An org key acts only in its own org, whatever the header says.
            let ctx = self.member_context(caller, &org.org_id).await?;
            if header_slug.is_some_and(|s| s != ctx.org.slug && s != ctx.org.org_id) {
                return Err(ServiceError::not_found(format!(
                    "organization {:?} (this API key belongs to another organization)",
                    header_slug.unwrap_or_default()
                )));
            }
            return Ok(ctx);
        }
        if let Some(slug) = header_slug {
            return self.member_context(caller, slug).await;
        }
        self.default_context(caller).await
    }

    /// The principal whose resources this request makes and sees: the resolved org's
    /// account user (the caller themself in their personal org). Sessions, instances, agent
    /// jobs and the ledger are keyed by user, so acting through the org's account makes them
    /// the org's: shared by its members, a 404 for everyone else, one balance.
    pub async fn acting(
        &self,
        caller: Principal,
        header_slug: Option<&str>,
    ) -> ServiceResult<Principal> {
        let ctx = self.resolve(&caller, header_slug).await?;
        let acting = Some(Acting {
            org_id: ctx.org.org_id.clone(),
            person_id: caller.user.user_id.clone(),
        });
        if ctx.org.account_user_id == caller.user.user_id {
            return Ok(Principal { acting, ..caller });
        }
        let account = self
            .store
            .get_user(&ctx.org.account_user_id)
            .await?
            .ok_or_else(|| ServiceError::Internal("an organization lost its account".into()))?;
        Ok(Principal {
            user: account,
            acting,
            ..caller
        })
    }

    /// The caller's role in the org named by id or slug; 404 when they are no member.
    /// An organization by id or slug, whoever asks (the operator's CLI).
    pub async fn find(&self, id_or_slug: &str) -> ServiceResult<Organization> {
        self.store
            .find_org(id_or_slug)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("organization {id_or_slug:?}")))
    }

    pub async fn member_context(
        &self,
        caller: &Principal,
        id_or_slug: &str,
    ) -> ServiceResult<OrgContext> {
        let hidden = || ServiceError::not_found(format!("organization {id_or_slug:?}"));
        let org = self.store.find_org(id_or_slug).await?.ok_or_else(hidden)?;
        let membership = self
            .store
            .get_membership(&org.org_id, &caller.user.user_id)
            .await?
            .ok_or_else(hidden)?;
        Ok(OrgContext {
            org: membership.org,
            role: membership.role,
            is_default: membership.is_default,
        })
    }

    /// Like [`Self::member_context`], for what only owners and admins may do (403 for a
    /// plain member: they can see the org exists).
    pub async fn manager_context(
        &self,
        caller: &Principal,
        id_or_slug: &str,
    ) -> ServiceResult<OrgContext> {
        let ctx = self.member_context(caller, id_or_slug).await?;
        if !ctx.role.can_manage() {
            return Err(ServiceError::Forbidden(
                "only an owner or admin of this organization may do this".into(),
            ));
        }
        Ok(ctx)
    }

    async fn default_context(&self, caller: &Principal) -> ServiceResult<OrgContext> {
        if let Credential::ApiKey {
            default_membership: Some(membership),
            ..
        } = &caller.via
        {
            // Read with the key, by the rule below (the first membership marked default).
            return Ok(OrgContext {
                org: membership.org.clone(),
                role: membership.role,
                is_default: membership.is_default,
            });
        }
        let mut memberships = self.store.list_memberships(&caller.user.user_id).await?;
        if memberships.is_empty() {
            // An org's own account (a key made while acting in the org) acts in that org.
            if let Some(org) = self.store.org_of_account(&caller.user.user_id).await? {
                return Ok(OrgContext {
                    org,
                    role: OrgRole::Member,
                    is_default: true,
                });
            }
        }
        if !memberships.iter().any(|m| m.is_default) {
            // Users made before organizations or by other paths (API-key users, GitHub
            // sign-in) get their personal org on first use.
            self.ensure_personal(&caller.user.user_id, &caller.user.name)
                .await?;
            memberships = self.store.list_memberships(&caller.user.user_id).await?;
        }
        let chosen = memberships
            .iter()
            .find(|m| m.is_default)
            .or_else(|| {
                memberships
                    .iter()
                    .find(|m| m.org.personal_of.as_deref() == Some(&caller.user.user_id))
            })
            .ok_or_else(|| ServiceError::Internal("the caller has no organization".into()))?;
        Ok(OrgContext {
            org: chosen.org.clone(),
            role: chosen.role,
            is_default: chosen.is_default,
        })
    }

    /// The user's personal organization exists (sign-up; idempotent).
    pub async fn ensure_personal(&self, user_id: &str, name: &str) -> ServiceResult<()> {
        Ok(self
            .store
            .ensure_personal_org(user_id, name, Utc::now())
            .await?)
    }

    pub async fn list(&self, caller: &Principal) -> ServiceResult<Vec<OrgMembership>> {
        self.default_context(caller).await?;
        Ok(self.store.list_memberships(&caller.user.user_id).await?)
    }

    /// A team organization, with the caller as its owner.
    pub async fn create(
        &self,
        caller: &Principal,
        name: &str,
        slug: Option<&str>,
        client: &ClientInfo,
    ) -> ServiceResult<OrgContext> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
            return Err(ServiceError::invalid(
                &["body", "name"],
                format!("name must be 1 to {MAX_NAME_LEN} characters"),
                "string_length",
            ));
        }
        let slug = match slug {
            Some(s) => check_slug(s)?,
            None => slug_from(name),
        };
        let owned = self
            .store
            .list_memberships(&caller.user.user_id)
            .await?
            .iter()
            .filter(|m| m.role == OrgRole::Owner && m.org.personal_of.is_none())
            .count();
        if owned >= self.config.max_orgs_per_user as usize {
            return Err(ServiceError::LimitExceeded(format!(
                "you already own {owned} organizations (the limit is {})",
                self.config.max_orgs_per_user
            )));
        }
        let org = Organization {
            org_id: new_id("org"),
            slug,
            name: name.to_string(),
            personal_of: None,
            account_user_id: new_id("usr"),
            created_at: Utc::now(),
        };
        match self.store.create_org(&org, &caller.user.user_id).await {
            Err(kiln_store::StoreError::Conflict(_)) => {
                return Err(ServiceError::Conflict(format!(
                    "the slug {:?} is taken; choose another",
                    org.slug
                )))
            }
            other => other?,
        }
        self.record(
            caller,
            Some(&org.org_id),
            "org.created",
            Some(&org.slug),
            client,
            None,
        )
        .await?;
        Ok(OrgContext {
            org,
            role: OrgRole::Owner,
            is_default: false,
        })
    }

    /// Makes the org the caller's default: where their JWT and personal-key requests act
    /// without `X-Org-Slug`. A non-member gets 404.
    pub async fn set_default(&self, caller: &Principal, org: &str) -> ServiceResult<OrgContext> {
        // A user made outside sign-up gets their personal org on first use: before a
        // default elsewhere would stop it from ever being made.
        self.default_context(caller).await?;
        let ctx = self.member_context(caller, org).await?;
        if !self
            .store
            .set_default_org(&caller.user.user_id, &ctx.org.org_id)
            .await?
        {
            return Err(ServiceError::not_found(format!("organization {org:?}")));
        }
        Ok(OrgContext {
            is_default: true,
            ..ctx
        })
    }

    pub async fn members(&self, caller: &Principal, org: &str) -> ServiceResult<Vec<OrgMember>> {
        let ctx = self.member_context(caller, org).await?;
        Ok(self.store.list_org_members(&ctx.org.org_id).await?)
    }

    /// Changes a member's role (roles::may_change_role); the last owner stays (409).
    pub async fn set_role(
        &self,
        caller: &Principal,
        org: &str,
        user_id: &str,
        role: OrgRole,
        client: &ClientInfo,
    ) -> ServiceResult<()> {
        let ctx = self.member_context(caller, org).await?;
        let target = self.target_member(&ctx, user_id).await?;
        if !roles::may_change_role(ctx.role, target.role, role) {
            return Err(ServiceError::Forbidden(format!(
                "a {} may not change a {}'s role to {}",
                ctx.role.as_str(),
                target.role.as_str(),
                role.as_str()
            )));
        }
        let change = self
            .store
            .set_member_role(&ctx.org.org_id, user_id, role)
            .await?;
        member_outcome(change, user_id)?;
        let details = serde_json::json!({"from": target.role.as_str(), "to": role.as_str()});
        self.record(
            caller,
            Some(&ctx.org.org_id),
            "member.role_changed",
            Some(user_id),
            client,
            Some(details),
        )
        .await
    }

    /// Removes a member (or the caller leaves); the last owner cannot leave (409).
    pub async fn remove_member(
        &self,
        caller: &Principal,
        org: &str,
        user_id: &str,
        client: &ClientInfo,
    ) -> ServiceResult<()> {
        let ctx = self.member_context(caller, org).await?;
        let target = self.target_member(&ctx, user_id).await?;
        let is_self = user_id == caller.user.user_id;
        if !roles::may_remove(ctx.role, target.role, is_self) {
            return Err(ServiceError::Forbidden(format!(
                "a {} may not remove a {}",
                ctx.role.as_str(),
                target.role.as_str()
            )));
        }
        if ctx.org.personal_of.as_deref() == Some(user_id) {
            return Err(ServiceError::Conflict(
                "nobody leaves their personal organization".into(),
            ));
        }
        let change = self
            .store
            .remove_member(&ctx.org.org_id, user_id, Utc::now())
            .await?;
        member_outcome(change, user_id)?;
        let action = if is_self {
            "member.left"
        } else {
            "member.removed"
        };
        self.record(
            caller,
            Some(&ctx.org.org_id),
            action,
            Some(user_id),
            client,
            None,
        )
        .await
    }

    async fn target_member(&self, ctx: &OrgContext, user_id: &str) -> ServiceResult<OrgMember> {
        self.store
            .list_org_members(&ctx.org.org_id)
            .await?
            .into_iter()
            .find(|m| m.user_id == user_id)
            .ok_or_else(|| ServiceError::not_found(format!("member {user_id:?}")))
    }
}

fn member_outcome(change: MemberChange, user_id: &str) -> ServiceResult<()> {
    match change {
        MemberChange::Done => Ok(()),
        MemberChange::NotMember => Err(ServiceError::not_found(format!("member {user_id:?}"))),
        MemberChange::LastOwner => Err(ServiceError::Refused {
            code: "last_owner",
            message: "an organization keeps at least one owner: make someone else owner first"
                .into(),
        }),
    }
}

/// 3 to 40 of `a-z`, `0-9` and `-`, not starting or ending with `-`; `p-…` is reserved
/// for personal organizations.
fn check_slug(slug: &str) -> ServiceResult<String> {
    let ok = (3..=40).contains(&slug.len())
        && slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !slug.starts_with('-')
        && !slug.ends_with('-')
        && !slug.starts_with("p-")
        && !slug.starts_with("org_");
    if ok {
        Ok(slug.to_string())
    } else {
        Err(ServiceError::invalid(
            &["body", "slug"],
            "slug must be 3 to 40 of a-z, 0-9 and '-', not starting or ending with '-' (and not starting with 'p-')",
            "string_pattern_mismatch",
        ))
    }
}

/// A slug made from a name, with a random tail so two orgs of one name do not collide.
fn slug_from(name: &str) -> String {
    let mut base: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    base = base
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    base.truncate(30);
    let base = base.trim_matches('-');
    let base = if base.len() < 2 || base.starts_with("p-") {
        "org"
    } else {
        base
    };
    let tail: String = crate::ids::random_token(6).to_lowercase();
    format!("{base}-{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_checked_and_derived() {
        assert!(check_slug("acme-labs").is_ok());
        for bad in ["ab", "Acme", "-acme", "acme-", "p-acme", "a_b_c", "org_x1"] {
            assert!(check_slug(bad).is_err(), "{bad}");
        }
        let made = slug_from("Acme Labs, Inc.");
        assert!(made.starts_with("acme-labs-inc-"), "{made}");
        assert!(check_slug(&made).is_ok(), "{made}");
        assert!(check_slug(&slug_from("!!")).is_ok());
    }
}

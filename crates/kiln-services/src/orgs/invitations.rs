//! Invitations: an owner or admin invites an address with a role; the token travels only in
//! the mail (stored as SHA-256) and is spent once by the account that accepts it, before it
//! expires and unless it was revoked.
use chrono::{DateTime, Duration, Utc};
use kiln_store::{OrgInvitation, OrgRole, Organization};

use super::{roles, OrgService};
use crate::accounts::{mail, ClientInfo};
use crate::auth::Principal;
use crate::error::{ServiceError, ServiceResult};
use crate::ids::{new_id, random_token, sha256_hex};

/// ≈ 256 bits of alphanumerics, like the other mailed tokens.
const TOKEN_LEN: usize = 43;
const MAX_EMAIL_LEN: usize = 254;

/// A new invitation; its token is in the outbox mail only.
#[derive(Debug, Clone)]
pub struct CreatedInvitation {
    pub invitation: OrgInvitation,
}

/// What the holder of an invitation token may see before accepting.
#[derive(Debug, Clone)]
pub struct InvitationView {
    pub invitation: OrgInvitation,
    pub org: Organization,
    /// `pending`, `accepted`, `revoked` or `expired`.
    pub state: &'static str,
}

fn state_of(inv: &OrgInvitation, now: DateTime<Utc>) -> &'static str {
    if inv.accepted_at.is_some() {
        "accepted"
    } else if inv.revoked_at.is_some() {
        "revoked"
    } else if inv.expires_at <= now {
        "expired"
    } else {
        "pending"
    }
}

impl OrgService {
    pub async fn invite(
        &self,
        caller: &Principal,
        org: &str,
        email: &str,
        role: OrgRole,
        client: &ClientInfo,
    ) -> ServiceResult<CreatedInvitation> {
        let ctx = self.member_context(caller, org).await?;
        if !roles::may_invite(ctx.role, role) {
            return Err(ServiceError::Forbidden(format!(
                "a {} may not invite a {}",
                ctx.role.as_str(),
                role.as_str()
            )));
        }
        let email = email.trim().to_lowercase();
        let valid = email.len() <= MAX_EMAIL_LEN
            && email
                .split_once('@')
                .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
        if !valid {
            return Err(ServiceError::invalid(
                &["body", "email"],
                "value is not a valid email address",
                "value_error",
            ));
        }
        let members = self.store.list_org_members(&ctx.org.org_id).await?;
        if members.iter().any(|m| m.email.eq_ignore_ascii_case(&email)) {
            return Err(ServiceError::Conflict(format!(
                "{email} is already a member"
            )));
        }
        let pending = self.store.list_pending_invitations(&ctx.org.org_id).await?;
        if members.len() + pending.len() >= self.config.max_members as usize {
            return Err(ServiceError::LimitExceeded(format!(
                "this organization has {} members and pending invitations (the limit is {})",
                members.len() + pending.len(),
                self.config.max_members
            )));
        }
        let secret = random_token(TOKEN_LEN);
        let now = Utc::now();
        let ttl = i64::try_from(self.config.invitation_ttl_secs).unwrap_or(i64::MAX / 1000);
        let invitation = OrgInvitation {
            invitation_id: new_id("inv"),
            org_id: ctx.org.org_id.clone(),
            email: email.clone(),
            role,
            token_hash: sha256_hex(&secret),
            invited_by: caller.user.user_id.clone(),
            created_at: now,
            expires_at: now + Duration::seconds(ttl),
            accepted_at: None,
            accepted_by: None,
            revoked_at: None,
        };
        let link = format!(
            "{}/v1/auth/invitations/{secret}",
            self.mail.public_url.trim_end_matches('/')
        );
        let mut message = mail::compose(
            &caller.user.user_id,
            &email,
            &format!("You are invited to {} on Kiln", ctx.org.name),
            &format!(
                "{} invites you to the organization {} as {}. Accept with POST to this link (signed in):",
                caller.user.name,
                ctx.org.name,
                role.as_str()
            ),
            link,
        );
        // The invitee may have no account: the mail is not theirs to export.
        message.user_id = None;
        self.store.insert_invitation(&invitation, &message).await?;
        let details = serde_json::json!({"email": email, "role": role.as_str()});
        self.record(
            caller,
            Some(&ctx.org.org_id),
            "invitation.created",
            Some(&invitation.invitation_id),
            client,
            Some(details),
        )
        .await?;
        Ok(CreatedInvitation { invitation })
    }

    pub async fn invitations(
        &self,
        caller: &Principal,
        org: &str,
    ) -> ServiceResult<Vec<OrgInvitation>> {
        let ctx = self.manager_context(caller, org).await?;
        Ok(self.store.list_pending_invitations(&ctx.org.org_id).await?)
    }

    pub async fn revoke_invitation(
        &self,
        caller: &Principal,
        org: &str,
        invitation_id: &str,
        client: &ClientInfo,
    ) -> ServiceResult<()> {
        let ctx = self.manager_context(caller, org).await?;
        if !self
            .store
            .revoke_invitation(&ctx.org.org_id, invitation_id, Utc::now())
            .await?
        {
            return Err(ServiceError::not_found(format!(
                "pending invitation {invitation_id:?}"
            )));
        }
        self.record(
            caller,
            Some(&ctx.org.org_id),
            "invitation.revoked",
            Some(invitation_id),
            client,
            None,
        )
        .await
    }

    /// What an invitation token invites to (any state; unknown tokens are 404).
    pub async fn invitation(&self, token: &str) -> ServiceResult<InvitationView> {
        let unknown = || ServiceError::not_found("invitation");
        let invitation = self
            .store
            .get_invitation_by_hash(&sha256_hex(token))
            .await?
            .ok_or_else(unknown)?;
        let org = self
            .store
            .find_org(&invitation.org_id)
            .await?
            .ok_or_else(unknown)?;
        let state = state_of(&invitation, Utc::now());
        Ok(InvitationView {
            invitation,
            org,
            state,
        })
    }

    /// Joins the invitation's organization. The invitation is for one address: another
    /// account cannot spend it. Spent, revoked and expired tokens are refused (409 `invitation_not_pending`).
    pub async fn accept(
        &self,
        caller: &Principal,
        token: &str,
        client: &ClientInfo,
    ) -> ServiceResult<super::OrgContext> {
        let view = self.invitation(token).await?;
        if !view
            .invitation
            .email
            .eq_ignore_ascii_case(caller.user.email.trim())
        {
            return Err(ServiceError::not_found("invitation"));
        }
        // Anyone can sign up with any address: only a proven one may take its invitations.
        if self.verified_address(caller).await?.is_none() {
            return Err(ServiceError::Denied {
                code: "email_not_verified",
                message: "verify your e-mail address first (the link is in the mail sent at \
                          sign-up), then accept the invitation"
                    .into(),
            });
        }
        if view.state != "pending" {
            return Err(gone(view.state));
        }
        let accepted = self
            .store
            .accept_invitation(
                &view.invitation.token_hash,
                &caller.user.user_id,
                Utc::now(),
            )
            .await?
            .ok_or_else(|| gone("accepted, revoked or expired"))?;
        let details = serde_json::json!({"role": accepted.role.as_str()});
        self.record(
            caller,
            Some(&accepted.org_id),
            "invitation.accepted",
            Some(&accepted.invitation_id),
            client,
            Some(details),
        )
        .await?;
        self.member_context(caller, &accepted.org_id).await
    }

    /// Live invitations to the caller's address (none until that address is verified: an
    /// unproven address must not learn who invites it where).
    pub async fn my_invitations(&self, caller: &Principal) -> ServiceResult<Vec<InvitationView>> {
        let now = Utc::now();
        let Some(address) = self.verified_address(caller).await? else {
            return Ok(Vec::new());
        };
        let found = self.store.list_invitations_to(&address, now).await?;
        let mut views = Vec::with_capacity(found.len());
        for invitation in found {
            if let Some(org) = self.store.find_org(&invitation.org_id).await? {
                views.push(InvitationView {
                    state: state_of(&invitation, now),
                    invitation,
                    org,
                });
            }
        }
        Ok(views)
    }
}

impl OrgService {
    /// The caller's address, lower-cased, when it is proven: a password account's once its
    /// verification link was followed; an account without a password sign-in has the
    /// address an operator gave it (`kiln users create`) or GitHub's verified primary one,
    /// and cannot change it. `None` for a password account not verified yet.
    async fn verified_address(&self, caller: &Principal) -> ServiceResult<Option<String>> {
        let address = match self.store.get_account(&caller.user.user_id).await? {
            Some(credential) if credential.email_verified_at.is_none() => return Ok(None),
            Some(credential) => credential.email,
            None => caller.user.email.clone(),
        };
        Ok(Some(address.trim().to_lowercase()))
    }
}

fn gone(state: &str) -> ServiceError {
    ServiceError::Refused {
        code: "invitation_not_pending",
        message: format!("this invitation can no longer be accepted ({state})"),
    }
}

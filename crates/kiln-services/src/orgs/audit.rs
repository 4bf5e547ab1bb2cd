//! The audit log: who did what, in which organization, when and from where. Append-only
//! (the database refuses updates and deletes); read by owners and admins.
use chrono::{DateTime, Utc};
use kiln_store::{AuditEvent, AuditFilter};

use super::OrgService;
use crate::accounts::ClientInfo;
use crate::auth::Principal;
use crate::error::ServiceResult;
use crate::ids::new_id;

/// Events listed per page at most.
pub const MAX_PAGE: u64 = 200;

/// One page of the log, newest first; `next` is the cursor of the following page.
#[derive(Debug, Clone)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    pub next: Option<String>,
}

/// What a caller asked for an audit page.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    pub action: Option<String>,
    pub actor_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub cursor: Option<String>,
    pub limit: u64,
}

impl OrgService {
    /// Appends one event.
    pub async fn record(
        &self,
        actor: &Principal,
        org_id: Option<&str>,
        action: &str,
        target: Option<&str>,
        client: &ClientInfo,
        details: Option<serde_json::Value>,
    ) -> ServiceResult<()> {
        self.record_as(&actor.user.user_id, org_id, action, target, client, details)
            .await
    }

    /// [`Self::record`] for an actor known by id (a sign-in, before there is a principal).
    pub async fn record_as(
        &self,
        actor_id: &str,
        org_id: Option<&str>,
        action: &str,
        target: Option<&str>,
        client: &ClientInfo,
        details: Option<serde_json::Value>,
    ) -> ServiceResult<()> {
        let event = AuditEvent {
            event_id: new_id("aud"),
            org_id: org_id.map(str::to_string),
            actor_id: Some(actor_id.to_string()),
            action: action.to_string(),
            target: target.map(str::to_string),
            ip_address: client.address.clone(),
            details: details.unwrap_or_else(|| serde_json::json!({})).to_string(),
            created_at: Utc::now(),
        };
        Ok(self.store.insert_audit(&event).await?)
    }

    /// Records an account-level action (sign-in, MFA change) in the user's default
    /// organization, where its owners can see it.
    pub async fn record_account(
        &self,
        actor: &Principal,
        action: &str,
        client: &ClientInfo,
        details: Option<serde_json::Value>,
    ) -> ServiceResult<()> {
        let ctx = self.resolve(actor, None).await?;
        self.record(actor, Some(&ctx.org.org_id), action, None, client, details)
            .await
    }

    /// Records what a principal acting for an org did (a session created or closed), as
    /// the person, in that org. The action already happened: a failed write is logged,
    /// not the request's failure.
    pub async fn record_acting(
        &self,
        principal: &Principal,
        action: &str,
        target: &str,
        client: &ClientInfo,
    ) {
        let Some(acting) = &principal.acting else {
            return;
        };
        if let Err(e) = self
            .record_as(
                &acting.person_id,
                Some(&acting.org_id),
                action,
                Some(target),
                client,
                None,
            )
            .await
        {
            tracing::warn!(error = %e, action, "could not write an audit record");
        }
    }

    /// A page of the org's log (owners and admins only).
    pub async fn audit(
        &self,
        caller: &Principal,
        org: &str,
        query: Recorded,
    ) -> ServiceResult<AuditPage> {
        let ctx = self.manager_context(caller, org).await?;
        let limit = query.limit.clamp(1, MAX_PAGE);
        let filter = AuditFilter {
            action: query.action,
            actor_id: query.actor_id,
            since: query.since,
            until: query.until,
            before: query.cursor,
        };
        let events = self
            .store
            .list_audit(&ctx.org.org_id, &filter, limit)
            .await?;
        let next = (events.len() as u64 == limit)
            .then(|| events.last().map(|e| e.event_id.clone()))
            .flatten();
        Ok(AuditPage { events, next })
    }
}

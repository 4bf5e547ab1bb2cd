//! Organizations (migration 0016): orgs, memberships, invitations, org keys, audit log.
//! The last-owner rule is checked inside the writing transaction (`begin_write` locks on
//! both backends), so two concurrent demotions cannot both pass.
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::accounts_v1::insert_mail;
use super::dialect::{BuilderExt, Dialect, QueryExt};
use super::{rows, SqlStore};
use crate::columns;
use crate::missing_reference::insert_error;
use crate::timestamp::{opt, Stamp};
use crate::unique_violation::conflict_or;
use crate::{
    ApiKeyRecord, AuditEvent, AuditFilter, MemberChange, NewApiKey, OrgInvitation, OrgMember,
    OrgMembership, OrgRole, OrgStore, Organization, OutboxMail, Result, StoreError,
};

const ORG_COLUMNS: &str =
    "o.org_id, o.slug, o.name, o.personal_of, o.account_user_id, o.created_at";
const INVITATION_COLUMNS: &str = "invitation_id, org_id, email, role, token_hash, invited_by, \
     created_at, expires_at, accepted_at, accepted_by, revoked_at";
const AUDIT_COLUMNS: &str =
    "event_id, org_id, actor_id, action, target, ip_address, details, created_at";

#[async_trait]
impl<D: Dialect> OrgStore for SqlStore<D> {
    async fn create_org(&self, org: &Organization, owner_id: &str) -> Result<()> {
        let mut tx = D::begin_write(self.pool()).await?;
        if org.personal_of.as_deref() != Some(org.account_user_id.as_str()) {
            // A team org's own account: no credential, no key, so it never signs in.
            sqlx::query(
                "INSERT INTO users (user_id, name, email, created_at) VALUES ($1, $2, $3, $4)",
            )
            .arg(org.account_user_id.as_str())
            .arg(org.name.as_str())
            .arg(format!("{}@orgs.kiln.invalid", org.org_id))
            .arg(Stamp(org.created_at))
            .execute(D::exec(&mut tx))
            .await
            .map_err(|e| conflict_or(e, "account_user_id", &[]))?;
        }
        sqlx::query(
            "INSERT INTO organizations (org_id, slug, name, personal_of, account_user_id, \
             created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .arg(org.org_id.as_str())
        .arg(org.slug.as_str())
        .arg(org.name.as_str())
        .arg(org.personal_of.as_deref())
        .arg(org.account_user_id.as_str())
        .arg(owner_id)
        .arg(Stamp(org.created_at))
        .execute(D::exec(&mut tx))
        .await
        .map_err(|e| conflict_or(e, "org_id", &["slug"]))?;
        sqlx::query(
            "INSERT INTO org_members (org_id, user_id, role, created_at) VALUES ($1, $2, 'owner', $3)",
        )
        .arg(org.org_id.as_str())
        .arg(owner_id)
        .arg(Stamp(org.created_at))
        .execute(D::exec(&mut tx))
        .await
        .map_err(|e| insert_error(e, "org_id", "user"))?;
        tx.commit().await?;
        Ok(())
    }

    async fn ensure_personal_org(
        &self,
        user_id: &str,
        name: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let org_id = format!("org_p_{user_id}");
        let slug = format!("p-{}", user_id.to_lowercase().replace('_', "-"));
        let mut tx = D::begin_write(self.pool()).await?;
        sqlx::query(
            "INSERT INTO organizations (org_id, slug, name, personal_of, account_user_id, \
             created_by, created_at) VALUES ($1, $2, $3, $4, $4, $4, $5) ON CONFLICT DO NOTHING",
        )
        .arg(org_id.as_str())
        .arg(slug.as_str())
        .arg(name)
        .arg(user_id)
        .arg(Stamp(at))
        .execute(D::exec(&mut tx))
        .await
        .map_err(|e| insert_error(e, "org_id", "user"))?;
        let default = format!(
            "INSERT INTO org_members (org_id, user_id, role, is_default, created_at) \
             SELECT $1, $2, 'owner', NOT EXISTS (SELECT 1 FROM org_members \
             WHERE user_id = $2 AND is_default = {}), $3 ON CONFLICT DO NOTHING",
            D::TRUE
        );
        sqlx::query(&default)
            .arg(org_id.as_str())
            .arg(user_id)
            .arg(Stamp(at))
            .execute(D::exec(&mut tx))
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn find_org(&self, id_or_slug: &str) -> Result<Option<Organization>> {
        let mut conn = self.conn().await?;
        let row = sqlx::query(&format!(
            "SELECT {ORG_COLUMNS} FROM organizations o WHERE o.org_id = $1 OR o.slug = $1"
        ))
        .arg(id_or_slug)
        .fetch_optional(D::exec(&mut conn))
        .await?;
        row.map(|r| rows::organization::<D>(&r, "")).transpose()
    }

    async fn org_of_account(&self, user_id: &str) -> Result<Option<Organization>> {
        let mut conn = self.conn().await?;
        let row = sqlx::query(&format!(
            "SELECT {ORG_COLUMNS} FROM organizations o WHERE o.account_user_id = $1 \
             AND o.personal_of IS NULL"
        ))
        .arg(user_id)
        .fetch_optional(D::exec(&mut conn))
        .await?;
        row.map(|r| rows::organization::<D>(&r, "")).transpose()
    }

    async fn list_memberships(&self, user_id: &str) -> Result<Vec<OrgMembership>> {
        let mut conn = self.conn().await?;
        let found = sqlx::query(&format!(
            "SELECT {ORG_COLUMNS}, m.role, m.is_default FROM org_members m \
             JOIN organizations o ON o.org_id = m.org_id WHERE m.user_id = $1 \
             ORDER BY m.created_at, o.org_id"
        ))
        .arg(user_id)
        .fetch_all(D::exec(&mut conn))
        .await?;
        found.iter().map(|r| rows::membership::<D>(r, "")).collect()
    }

    async fn get_membership(&self, org_id: &str, user_id: &str) -> Result<Option<OrgMembership>> {
        let mut conn = self.conn().await?;
        let row = sqlx::query(&format!(
            "SELECT {ORG_COLUMNS}, m.role, m.is_default FROM org_members m \
             JOIN organizations o ON o.org_id = m.org_id WHERE m.org_id = $1 AND m.user_id = $2"
        ))
        .arg(org_id)
        .arg(user_id)
        .fetch_optional(D::exec(&mut conn))
        .await?;
        row.map(|r| rows::membership::<D>(&r, "")).transpose()
    }

    async fn list_org_members(&self, org_id: &str) -> Result<Vec<OrgMember>> {
        let mut conn = self.conn().await?;
        let found = sqlx::query(
            "SELECT m.user_id, u.name, u.email, m.role, m.created_at FROM org_members m \
             JOIN users u ON u.user_id = m.user_id WHERE m.org_id = $1 \
             ORDER BY m.created_at, m.user_id",
        )
        .arg(org_id)
        .fetch_all(D::exec(&mut conn))
        .await?;
        found
            .iter()
            .map(|r| {
                Ok(OrgMember {
                    user_id: D::get(r, "user_id")?,
                    name: D::get(r, "name")?,
                    email: D::get(r, "email")?,
                    role: rows::role::<D>(r, "")?,
                    joined_at: D::time(r, "created_at")?,
                })
            })
            .collect()
    }

    async fn set_member_role(
        &self,
        org_id: &str,
        user_id: &str,
        role: OrgRole,
    ) -> Result<MemberChange> {
        let mut tx = D::begin_write(self.pool()).await?;
        match owner_check::<D>(&mut tx, org_id, user_id).await? {
            Check::NotMember => return Ok(MemberChange::NotMember),
            Check::LastOwner if role != OrgRole::Owner => return Ok(MemberChange::LastOwner),
            _ => {}
        }
        sqlx::query("UPDATE org_members SET role = $1 WHERE org_id = $2 AND user_id = $3")
            .arg(role.as_str())
            .arg(org_id)
            .arg(user_id)
            .execute(D::exec(&mut tx))
            .await?;
        tx.commit().await?;
        Ok(MemberChange::Done)
    }

    async fn remove_member(
        &self,
        org_id: &str,
        user_id: &str,
        at: DateTime<Utc>,
    ) -> Result<MemberChange> {
        let mut tx = D::begin_write(self.pool()).await?;
        match owner_check::<D>(&mut tx, org_id, user_id).await? {
            Check::NotMember => return Ok(MemberChange::NotMember),
            Check::LastOwner => return Ok(MemberChange::LastOwner),
            Check::Other => {}
        }
        sqlx::query("DELETE FROM org_members WHERE org_id = $1 AND user_id = $2")
            .arg(org_id)
            .arg(user_id)
            .execute(D::exec(&mut tx))
            .await?;
        // A former member's org keys must not keep acting in the org.
        sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL \
             AND key_id IN (SELECT key_id FROM org_api_keys WHERE org_id = $3)",
        )
        .arg(Stamp(at))
        .arg(user_id)
        .arg(org_id)
        .execute(D::exec(&mut tx))
        .await?;
        tx.commit().await?;
        Ok(MemberChange::Done)
    }

    async fn insert_invitation(&self, inv: &OrgInvitation, mail: &OutboxMail) -> Result<()> {
        let mut tx = D::begin_write(self.pool()).await?;
        sqlx::query(&format!(
            "INSERT INTO org_invitations ({INVITATION_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .arg(inv.invitation_id.as_str())
        .arg(inv.org_id.as_str())
        .arg(inv.email.as_str())
        .arg(inv.role.as_str())
        .arg(inv.token_hash.as_str())
        .arg(inv.invited_by.as_str())
        .arg(Stamp(inv.created_at))
        .arg(Stamp(inv.expires_at))
        .arg(opt(inv.accepted_at))
        .arg(inv.accepted_by.as_deref())
        .arg(opt(inv.revoked_at))
        .execute(D::exec(&mut tx))
        .await
        .map_err(|e| insert_error(e, "invitation_id", "organization"))?;
        insert_mail::<D>(&mut tx, mail).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_pending_invitations(&self, org_id: &str) -> Result<Vec<OrgInvitation>> {
        let mut conn = self.conn().await?;
        let found = sqlx::query(&format!(
            "SELECT {INVITATION_COLUMNS} FROM org_invitations WHERE org_id = $1 \
             AND accepted_at IS NULL AND revoked_at IS NULL \
             ORDER BY created_at DESC, invitation_id DESC LIMIT 500"
        ))
        .arg(org_id)
        .fetch_all(D::exec(&mut conn))
        .await?;
        found.iter().map(invitation_row::<D>).collect()
    }

    async fn list_invitations_to(
        &self,
        email_lower: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<OrgInvitation>> {
        let mut conn = self.conn().await?;
        let found = sqlx::query(&format!(
            "SELECT {INVITATION_COLUMNS} FROM org_invitations WHERE email = $1 \
             AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $2 \
             ORDER BY created_at DESC, invitation_id DESC LIMIT 100"
        ))
        .arg(email_lower)
        .arg(Stamp(now))
        .fetch_all(D::exec(&mut conn))
        .await?;
        found.iter().map(invitation_row::<D>).collect()
    }

    async fn get_invitation_by_hash(&self, token_hash: &str) -> Result<Option<OrgInvitation>> {
        let mut conn = self.conn().await?;
        let row = sqlx::query(&format!(
            "SELECT {INVITATION_COLUMNS} FROM org_invitations WHERE token_hash = $1"
        ))
        .arg(token_hash)
        .fetch_optional(D::exec(&mut conn))
        .await?;
        row.map(|r| invitation_row::<D>(&r)).transpose()
    }

    async fn revoke_invitation(
        &self,
        org_id: &str,
        invitation_id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let mut conn = self.conn().await?;
        let done = sqlx::query(
            "UPDATE org_invitations SET revoked_at = $1 WHERE org_id = $2 AND invitation_id = $3 \
             AND accepted_at IS NULL AND revoked_at IS NULL",
        )
        .arg(Stamp(at))
        .arg(org_id)
        .arg(invitation_id)
        .execute(D::exec(&mut conn))
        .await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn accept_invitation(
        &self,
        token_hash: &str,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<OrgInvitation>> {
        let mut tx = D::begin_write(self.pool()).await?;
        let row = sqlx::query(&format!(
            "UPDATE org_invitations SET accepted_at = $1, accepted_by = $2 WHERE token_hash = $3 \
             AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $1 \
             RETURNING {INVITATION_COLUMNS}"
        ))
        .arg(Stamp(now))
        .arg(user_id)
        .arg(token_hash)
        .fetch_optional(D::exec(&mut tx))
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let invitation = invitation_row::<D>(&row)?;
        sqlx::query(
            "INSERT INTO org_members (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .arg(invitation.org_id.as_str())
        .arg(user_id)
        .arg(invitation.role.as_str())
        .arg(Stamp(now))
        .execute(D::exec(&mut tx))
        .await
        .map_err(|e| insert_error(e, "org_id", "user"))?;
        tx.commit().await?;
        Ok(Some(invitation))
    }

    async fn insert_org_api_key(&self, key: &NewApiKey, org_id: &str) -> Result<ApiKeyRecord> {
        let mut tx = D::begin_write(self.pool()).await?;
        let row = sqlx::query(&format!(
            "INSERT INTO api_keys (key_id, user_id, name, key_hash, masked, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {}",
            columns::plain(columns::API_KEY)
        ))
        .arg(key.key_id.as_str())
        .arg(key.user_id.as_str())
        .arg(key.name.as_deref())
        .arg(key.key_hash.as_str())
        .arg(key.masked.as_str())
        .arg(Stamp(key.created_at))
        .arg(opt(key.expires_at))
        .fetch_one(D::exec(&mut tx))
        .await
        .map_err(|e| conflict_or(e, "key_id", &["key_hash"]))?;
        let record = rows::api_key::<D>(&row, "")?;
        sqlx::query("INSERT INTO org_api_keys (key_id, org_id) VALUES ($1, $2)")
            .arg(key.key_id.as_str())
            .arg(org_id)
            .execute(D::exec(&mut tx))
            .await
            .map_err(|e| insert_error(e, "key_id", "organization"))?;
        tx.commit().await?;
        Ok(record)
    }

    async fn list_org_api_keys(&self, org_id: &str) -> Result<Vec<ApiKeyRecord>> {
        let mut conn = self.conn().await?;
        let found = sqlx::query(&format!(
            "SELECT {} FROM api_keys k JOIN org_api_keys o ON o.key_id = k.key_id \
             WHERE o.org_id = $1 ORDER BY k.created_at, k.key_id",
            columns::aliased("k", "", columns::API_KEY)
        ))
        .arg(org_id)
        .fetch_all(D::exec(&mut conn))
        .await?;
        found.iter().map(|r| rows::api_key::<D>(r, "")).collect()
    }

    async fn revoke_org_api_key(
        &self,
        org_id: &str,
        key_id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let mut conn = self.conn().await?;
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE key_id = $2 AND revoked_at IS NULL \
             AND key_id IN (SELECT key_id FROM org_api_keys WHERE org_id = $3)",
        )
        .arg(Stamp(at))
        .arg(key_id)
        .arg(org_id)
        .execute(D::exec(&mut conn))
        .await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn insert_audit(&self, e: &AuditEvent) -> Result<()> {
        let mut conn = self.conn().await?;
        sqlx::query(&format!(
            "INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .arg(e.event_id.as_str())
        .arg(e.org_id.as_deref())
        .arg(e.actor_id.as_deref())
        .arg(e.action.as_str())
        .arg(e.target.as_deref())
        .arg(e.ip_address.as_str())
        .arg(e.details.as_str())
        .arg(Stamp(e.created_at))
        .execute(D::exec(&mut conn))
        .await
        .map_err(|err| conflict_or(err, "event_id", &[]))?;
        Ok(())
    }

    async fn list_audit(
        &self,
        org_id: &str,
        filter: &AuditFilter,
        limit: u64,
    ) -> Result<Vec<AuditEvent>> {
        let mut q = sqlx::QueryBuilder::<D>::new(format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log a WHERE org_id = "
        ));
        q.push_arg(org_id.to_string());
        if let Some(action) = &filter.action {
            q.push(" AND action = ").push_arg(action.clone());
        }
        if let Some(actor) = &filter.actor_id {
            q.push(" AND actor_id = ").push_arg(actor.clone());
        }
        if let Some(since) = filter.since {
            q.push(" AND created_at >= ").push_arg(Stamp(since));
        }
        if let Some(until) = filter.until {
            q.push(" AND created_at < ").push_arg(Stamp(until));
        }
        if let Some(before) = &filter.before {
            // Keyset cursor: strictly after the previous page's last event, in list order.
            q.push(" AND EXISTS (SELECT 1 FROM audit_log c WHERE c.event_id = ")
                .push_arg(before.clone())
                .push(
                    " AND (a.created_at < c.created_at OR \
                 (a.created_at = c.created_at AND a.event_id < c.event_id)))",
                );
        }
        q.push(" ORDER BY created_at DESC, event_id DESC LIMIT ")
            .push_arg(i64::try_from(limit).unwrap_or(i64::MAX));
        let mut conn = self.conn().await?;
        let found = D::build(&mut q).fetch_all(D::exec(&mut conn)).await?;
        found.iter().map(audit_row::<D>).collect()
    }
}

enum Check {
    NotMember,
    /// The member is the only owner.
    LastOwner,
    Other,
}

async fn owner_check<D: Dialect>(
    tx: &mut sqlx::Transaction<'static, D>,
    org_id: &str,
    user_id: &str,
) -> Result<Check> {
    let row = sqlx::query(
        "SELECT m.role, (SELECT COUNT(*) FROM org_members o WHERE o.org_id = m.org_id \
         AND o.role = 'owner') AS owners FROM org_members m WHERE m.org_id = $1 AND m.user_id = $2",
    )
    .arg(org_id)
    .arg(user_id)
    .fetch_optional(D::exec(&mut **tx))
    .await?;
    let Some(row) = row else {
        return Ok(Check::NotMember);
    };
    let owners: i64 = D::get(&row, "owners")?;
    Ok(
        if rows::role::<D>(&row, "")? == OrgRole::Owner && owners <= 1 {
            Check::LastOwner
        } else {
            Check::Other
        },
    )
}

fn invitation_row<D: Dialect>(row: &D::Row) -> Result<OrgInvitation> {
    let role: String = D::get(row, "role")?;
    Ok(OrgInvitation {
        invitation_id: D::get(row, "invitation_id")?,
        org_id: D::get(row, "org_id")?,
        email: D::get(row, "email")?,
        role: OrgRole::parse(&role)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown org role {role:?}")))?,
        token_hash: D::get(row, "token_hash")?,
        invited_by: D::get(row, "invited_by")?,
        created_at: D::time(row, "created_at")?,
        expires_at: D::time(row, "expires_at")?,
        accepted_at: D::opt_time(row, "accepted_at")?,
        accepted_by: D::get(row, "accepted_by")?,
        revoked_at: D::opt_time(row, "revoked_at")?,
    })
}

fn audit_row<D: Dialect>(row: &D::Row) -> Result<AuditEvent> {
    Ok(AuditEvent {
        event_id: D::get(row, "event_id")?,
        org_id: D::get(row, "org_id")?,
        actor_id: D::get(row, "actor_id")?,
        action: D::get(row, "action")?,
        target: D::get(row, "target")?,
        ip_address: D::get(row, "ip_address")?,
        details: D::get(row, "details")?,
        created_at: D::time(row, "created_at")?,
    })
}

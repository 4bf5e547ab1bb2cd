//! `POST /v1/auth/me/export`: every record kept about the caller, as one JSON document.
//! Secrets are left out (password hash, key hashes, webhook secrets, mail bodies and links,
//! which carry tokens); what identifies them (masked key, ids) stays.
use serde_json::{json, Value};

use super::AccountService;
use crate::auth::Principal;
use crate::error::ServiceResult;

/// Records of one kind exported at most (the export is one response, not a stream).
const CAP: u64 = 1000;

fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn opt_time(t: Option<chrono::DateTime<chrono::Utc>>) -> Value {
    t.map(time).map_or(Value::Null, Value::String)
}

impl AccountService {
    pub async fn export(&self, me: &Principal) -> ServiceResult<Value> {
        let user_id = &me.user.user_id;
        let user = &me.user;
        let account = self.store.get_account(user_id).await?.map(|a| {
            json!({"email": a.email, "email_verified_at": opt_time(a.email_verified_at),
                   "password_changed_at": time(a.password_changed_at),
                   "created_at": time(a.created_at), "password": "[redacted]"})
        });
        let keys: Vec<Value> = self
            .store
            .list_api_keys(user_id)
            .await?
            .into_iter()
            .take(CAP as usize)
            .map(|k| {
                json!({"key_id": k.key_id, "name": k.name, "masked": k.masked,
                       "created_at": time(k.created_at), "expires_at": opt_time(k.expires_at),
                       "revoked_at": opt_time(k.revoked_at), "last_used_at": opt_time(k.last_used_at)})
            })
            .collect();
        let sessions: Vec<Value> = self
            .store
            .list_device_sessions(user_id, CAP)
            .await?
            .into_iter()
            .map(|s| {
                json!({"id": s.session_id, "created_at": time(s.created_at),
                       "last_seen_at": time(s.last_seen_at), "user_agent": s.user_agent,
                       "ip_address": s.ip_address})
            })
            .collect();
        let mails: Vec<Value> = self
            .store
            .list_user_mail(user_id, CAP)
            .await?
            .into_iter()
            .map(|m| {
                json!({"id": m.mail_id, "to": m.to_address, "subject": m.subject,
                       "status": m.status.as_str(), "created_at": time(m.created_at),
                       "sent_at": opt_time(m.sent_at), "body": "[redacted]"})
            })
            .collect();
        let webhooks: Vec<Value> = self
            .store
            .list_webhooks(user_id)
            .await?
            .into_iter()
            .take(CAP as usize)
            .map(|w| {
                json!({"id": w.webhook_id, "url": w.url, "events": w.events, "active": w.active,
                       "created_at": time(w.created_at), "secret": "[redacted]"})
            })
            .collect();
        Ok(json!({
            "exported_at": time(chrono::Utc::now()),
            "user": {"id": user.user_id, "name": user.name, "email": user.email,
                     "github_login": user.github_login, "is_admin": user.is_admin,
                     "created_at": time(user.created_at),
                     "last_login_at": opt_time(user.last_login_at),
                     "terms_accepted_at": opt_time(user.terms_accepted_at)},
            "account": account,
            "api_keys": keys,
            "device_sessions": sessions,
            "mails": mails,
            "webhooks": webhooks,
        }))
    }
}

//! Webhooks: a user's URLs that receive signed events (sessions, verifications, and what
//! other areas add to [`EventType`]). Events go to an outbox in the store before anything
//! is sent ([`Events::publish`]); a background sender ([`sender`]) delivers them with
//! retries, and the API lists deliveries, dead ones included, and retries them.
mod backoff;
mod events;
mod sender;
pub mod signing;

use std::sync::{Arc, Mutex};

use chrono::Utc;
use kiln_config::WebhooksConfig;
use kiln_store::{DeliveryRecord, DeliveryStatus, Store, WebhookRecord, WebhookUpdate};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use url::Url;

use crate::error::{FieldError, ServiceError, ServiceResult};
use crate::ids::{new_id, random_token};
use crate::outbound::OutboundPolicy;
use crate::secret_box::SecretBox;

pub use backoff::delay as backoff_delay;
pub(crate) use events::Draft;
pub use events::{session_data, snapshot_data, verification_data, EventType, Events};

/// The configuration key named when a URL is refused for its address.
const ALLOW_KEY: &str = "webhooks.allowed_internal_hosts";
/// Subscribes to every event type.
pub const ALL_EVENTS: &str = "*";

pub struct WebhookService {
    store: Arc<dyn Store>,
    config: WebhooksConfig,
    secrets: Arc<SecretBox>,
    policy: OutboundPolicy,
    events: Events,
    wake: Arc<Notify>,
    sender: Mutex<Option<JoinHandle<()>>>,
}

/// A webhook as asked for (create), or the fields to change (update: `None` keeps).
#[derive(Debug, Default, Clone)]
pub struct WebhookInput {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub active: Option<bool>,
}

impl WebhookService {
    pub fn new(store: Arc<dyn Store>, config: WebhooksConfig, server_secret: &[u8]) -> Self {
        let wake = Arc::new(Notify::new());
        Self {
            events: Events::new(store.clone(), config.max_payload_bytes, wake.clone()),
            policy: OutboundPolicy::new(&config.allowed_internal_hosts, ALLOW_KEY),
            secrets: Arc::new(SecretBox::new(server_secret, "webhook-secret")),
            store,
            config,
            wake,
            sender: Mutex::new(None),
        }
    }

    /// Where other services publish events.
    pub fn events(&self) -> Events {
        self.events.clone()
    }

    /// Starts the background sender (at bootstrap, once).
    pub fn spawn_sender(&self) {
        let sender = Arc::new(sender::Sender {
            store: self.store.clone(),
            config: self.config.clone(),
            secrets: self.secrets.clone(),
            policy: self.policy.clone(),
            wake: self.wake.clone(),
            clients: Mutex::default(),
        });
        let task = tokio::spawn(sender.run());
        if let Some(old) = self.lock_sender().replace(task) {
            old.abort();
        }
    }

    /// Stops the sender; attempts in flight are abandoned to their leases.
    pub fn shutdown(&self) {
        if let Some(task) = self.lock_sender().take() {
            task.abort();
        }
    }

    fn lock_sender(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        self.sender.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new webhook and its signing secret, which is shown this once.
    pub async fn create(
        &self,
        user_id: &str,
        input: WebhookInput,
    ) -> ServiceResult<(WebhookRecord, String)> {
        let url = match &input.url {
            Some(url) => self.check_url(url).await?,
            None => return Err(ServiceError::invalid(&["url"], "Field required", "missing")),
        };
        let events = self.check_events(input.events.as_deref().unwrap_or(&[]))?;
        let description = self.check_description(input.description.unwrap_or_default())?;
        let webhook_id = new_id("whk");
        let secret = new_secret();
        let now = Utc::now();
        let record = WebhookRecord {
            secret_sealed: self.secrets.seal(&secret, webhook_id.as_bytes()),
            webhook_id,
            user_id: user_id.to_string(),
            url,
            description,
            events,
            active: input.active.unwrap_or(true),
            created_at: now,
            updated_at: now,
        };
        let max = self.config.max_per_user;
        match self.store.insert_webhook(&record, u64::from(max)).await? {
            Some(stored) => Ok((stored, secret)),
            None => Err(ServiceError::LimitExceeded(format!(
                "you have {max} webhooks (the limit is {max}); delete one first"
            ))),
        }
    }

    pub async fn list(&self, user_id: &str) -> ServiceResult<Vec<WebhookRecord>> {
        Ok(self.store.list_webhooks(user_id).await?)
    }

    /// The caller's webhook; someone else's is "not found" as a missing one is.
    pub async fn get(&self, user_id: &str, webhook_id: &str) -> ServiceResult<WebhookRecord> {
        match self.store.get_webhook(webhook_id).await? {
            Some(hook) if hook.user_id == user_id => Ok(hook),
            _ => Err(ServiceError::not_found(format!("webhook {webhook_id}"))),
        }
    }

    /// Changes what `input` sets; `rotate_secret` makes a new secret, returned this once
    /// (deliveries already claimed may still be signed with the old one).
    pub async fn update(
        &self,
        user_id: &str,
        webhook_id: &str,
        input: WebhookInput,
        rotate_secret: bool,
    ) -> ServiceResult<(WebhookRecord, Option<String>)> {
        self.get(user_id, webhook_id).await?;
        let url = match &input.url {
            Some(url) => Some(self.check_url(url).await?),
            None => None,
        };
        let events = input
            .events
            .as_deref()
            .map(|e| self.check_events(e))
            .transpose()?;
        let description = input
            .description
            .map(|d| self.check_description(d))
            .transpose()?;
        let secret = rotate_secret.then(new_secret);
        let update = WebhookUpdate {
            url,
            description,
            events,
            active: input.active,
            secret_sealed: secret
                .as_deref()
                .map(|s| self.secrets.seal(s, webhook_id.as_bytes())),
        };
        let stored = self
            .store
            .update_webhook(webhook_id, &update, Utc::now())
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("webhook {webhook_id}")))?;
        if input.active == Some(true) {
            self.wake.notify_one();
        }
        Ok((stored, secret))
    }

    pub async fn delete(&self, user_id: &str, webhook_id: &str) -> ServiceResult<()> {
        self.get(user_id, webhook_id).await?;
        self.store.delete_webhook(webhook_id).await?;
        Ok(())
    }

    /// A page of the webhook's deliveries, newest first (`status: Dead` is the dead-letter
    /// list).
    pub async fn deliveries(
        &self,
        user_id: &str,
        webhook_id: &str,
        status: Option<DeliveryStatus>,
        limit: u64,
        offset: u64,
    ) -> ServiceResult<Vec<DeliveryRecord>> {
        self.get(user_id, webhook_id).await?;
        Ok(self
            .store
            .list_webhook_deliveries(webhook_id, status, limit, offset)
            .await?)
    }

    /// Sends a dead delivery again (same event id and body), with a fresh count of
    /// attempts.
    pub async fn retry(
        &self,
        user_id: &str,
        webhook_id: &str,
        delivery_id: &str,
    ) -> ServiceResult<DeliveryRecord> {
        self.get(user_id, webhook_id).await?;
        if let Some(retried) = self
            .store
            .retry_webhook_delivery(webhook_id, delivery_id, Utc::now())
            .await?
        {
            self.wake.notify_one();
            return Ok(retried);
        }
        match self
            .store
            .get_webhook_delivery(webhook_id, delivery_id)
            .await?
        {
            Some(d) => Err(ServiceError::Conflict(format!(
                "delivery {delivery_id} is {}: only dead deliveries are retried",
                d.status.as_str()
            ))),
            None => Err(ServiceError::not_found(format!("delivery {delivery_id}"))),
        }
    }

    /// Queues a `webhook.test` event to this webhook only (whatever its events, active or
    /// not): the delivery, as stored.
    pub async fn test(&self, user_id: &str, webhook_id: &str) -> ServiceResult<DeliveryRecord> {
        self.get(user_id, webhook_id).await?;
        let max = self.config.max_pending_for_test;
        let pending = self
            .store
            .list_webhook_deliveries(webhook_id, Some(DeliveryStatus::Pending), u64::from(max), 0)
            .await?;
        if pending.len() as u64 >= u64::from(max) {
            return Err(ServiceError::LimitExceeded(format!(
                "{max} deliveries of webhook {webhook_id} are pending (the limit for a test); \
                 wait for them or delete the webhook"
            )));
        }
        let data = json!({"webhook_id": webhook_id, "message": "a test event from Kiln"});
        let ids = self
            .events
            .enqueue(user_id, EventType::WebhookTest, data, Some(webhook_id))
            .await?;
        let id = ids
            .first()
            .ok_or_else(|| ServiceError::not_found(format!("webhook {webhook_id}")))?;
        self.store
            .get_webhook_delivery(webhook_id, id)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("webhook {webhook_id}")))
    }

    async fn check_url(&self, raw: &str) -> ServiceResult<String> {
        let max = self.config.max_url_bytes;
        if raw.len() > max {
            return Err(ServiceError::invalid(
                &["url"],
                format!("String should have at most {max} bytes"),
                "string_too_long",
            ));
        }
        let url = Url::parse(raw).map_err(|e| {
            ServiceError::invalid(&["url"], format!("not a URL: {e}"), "url_parsing")
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(ServiceError::invalid(
                &["url"],
                "must be an http or https URL with a host",
                "url_scheme",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ServiceError::invalid(
                &["url"],
                "must not carry credentials: verify the Kiln-Signature header instead",
                "value_error",
            ));
        }
        self.policy
            .vet(&url)
            .await
            .map_err(|e| ServiceError::invalid(&["url"], e.to_string(), "value_error"))?;
        Ok(url.to_string())
    }

    fn check_events(&self, events: &[String]) -> ServiceResult<Vec<String>> {
        let max = self.config.max_events_per_hook;
        if events.is_empty() {
            return Err(ServiceError::invalid(
                &["events"],
                "List should have at least 1 item (an event type, or \"*\" for all)",
                "too_short",
            ));
        }
        if events.len() > max {
            return Err(ServiceError::invalid(
                &["events"],
                format!("List should have at most {max} items"),
                "too_long",
            ));
        }
        let mut errors = Vec::new();
        let mut kept: Vec<String> = Vec::new();
        for (i, event) in events.iter().enumerate() {
            let known = event == ALL_EVENTS
                || EventType::subscribable().any(|t| t.as_str() == event.as_str());
            if !known {
                let names: Vec<&str> = EventType::subscribable().map(|t| t.as_str()).collect();
                errors.push(FieldError::new(
                    &["events", &i.to_string()],
                    format!("unknown event type; one of \"*\", {}", names.join(", ")),
                    "enum",
                ));
            } else if !kept.contains(event) {
                kept.push(event.clone());
            }
        }
        if !errors.is_empty() {
            return Err(ServiceError::Validation(errors));
        }
        Ok(kept)
    }

    fn check_description(&self, description: String) -> ServiceResult<String> {
        let max = self.config.max_description_bytes;
        if description.len() > max {
            return Err(ServiceError::invalid(
                &["description"],
                format!("String should have at most {max} bytes"),
                "string_too_long",
            ));
        }
        Ok(description)
    }
}

impl Drop for WebhookService {
    /// A server dropped without a graceful stop (a test's crash) sends nothing more.
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A signing secret: `whsec_` and 32 random alphanumerics (≈ 190 bits).
fn new_secret() -> String {
    format!("whsec_{}", random_token(32))
}

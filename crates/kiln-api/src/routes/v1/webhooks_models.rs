//! Shapes of the webhook routes.
use chrono::{DateTime, Utc};
use kiln_domain::{DeliveryRecord, DeliveryStatus, WebhookRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::models::{rfc3339, rfc3339_opt};

/// A new webhook.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookCreateRequest {
    /// Where deliveries are POSTed: an http(s) URL of a public host (internal addresses
    /// only when the server allows them, `webhooks.allowed_internal_hosts`).
    #[schema(max_length = 2048)]
    pub url: String,
    /// Event types to receive (`session.created`, `session.ready`, `session.closed`,
    /// `session.terminated`, `session.error`, `verification.completed`,
    /// `verification.error`), or `["*"]` for all.
    #[schema(min_items = 1)]
    pub events: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Deliver to it (default true).
    #[serde(default)]
    pub active: Option<bool>,
}

/// Changes to a webhook; absent fields keep their value.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct WebhookUpdateRequest {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub active: Option<bool>,
    /// Make a new signing secret (returned once, in this response).
    #[serde(default)]
    pub rotate_secret: bool,
}

/// A webhook. `secret` is present only in the response that made it (creation, or a
/// PATCH with `rotate_secret`): store it then, it is never shown again.
#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    pub webhook_id: String,
    pub url: String,
    pub description: String,
    pub events: Vec<String>,
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

impl WebhookView {
    pub fn new(hook: WebhookRecord, secret: Option<String>) -> Self {
        Self {
            webhook_id: hook.webhook_id,
            url: hook.url,
            description: hook.description,
            events: hook.events,
            active: hook.active,
            secret,
            created_at: hook.created_at,
            updated_at: hook.updated_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct WebhookListResponse {
    pub webhooks: Vec<WebhookView>,
}

/// Where a delivery stands.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatusView {
    Pending,
    Delivered,
    Dead,
}

impl From<DeliveryStatus> for DeliveryStatusView {
    fn from(s: DeliveryStatus) -> Self {
        match s {
            DeliveryStatus::Pending => Self::Pending,
            DeliveryStatus::Delivered => Self::Delivered,
            DeliveryStatus::Dead => Self::Dead,
        }
    }
}

impl From<DeliveryStatusView> for DeliveryStatus {
    fn from(s: DeliveryStatusView) -> Self {
        match s {
            DeliveryStatusView::Pending => Self::Pending,
            DeliveryStatusView::Delivered => Self::Delivered,
            DeliveryStatusView::Dead => Self::Dead,
        }
    }
}

/// One event's delivery to the webhook.
#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    pub delivery_id: String,
    /// The event's id: the body's `id` and the `Kiln-Webhook-Id` header of every attempt.
    pub event_id: String,
    pub event_type: String,
    pub status: DeliveryStatusView,
    pub attempts: u32,
    /// When it is tried next (pending ones).
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The receiver's last HTTP status, if it answered.
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    /// The start of the receiver's last response body (capped).
    pub last_response: Option<String>,
    /// The JSON body sent.
    pub payload: serde_json::Value,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub delivered_at: Option<DateTime<Utc>>,
}

impl From<DeliveryRecord> for DeliveryView {
    fn from(d: DeliveryRecord) -> Self {
        let pending = d.status == DeliveryStatus::Pending;
        Self {
            payload: serde_json::from_str(&d.body).unwrap_or(serde_json::Value::Null),
            delivery_id: d.delivery_id,
            event_id: d.event_id,
            event_type: d.event_type,
            status: d.status.into(),
            attempts: d.attempts,
            next_attempt_at: pending.then_some(d.next_attempt_at),
            last_attempt_at: d.last_attempt_at,
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            last_response: d.last_response,
            created_at: d.created_at,
            delivered_at: d.delivered_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryListResponse {
    pub deliveries: Vec<DeliveryView>,
    pub has_more: bool,
}

/// `status=dead` is the dead-letter list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryListParams {
    pub status: Option<DeliveryStatusView>,
    /// 1–100 (default 50).
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookDeleteResponse {
    pub message: String,
}

//! Records of webhooks and their deliveries (the outbox: a delivery is stored before it is
//! sent, and stays until it is delivered or dead).
use chrono::{DateTime, Utc};

/// A user's webhook. The signing secret is kept sealed (the store never sees it in the
/// clear).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRecord {
    pub webhook_id: String,
    pub user_id: String,
    pub url: String,
    pub description: String,
    /// Event types it receives; `["*"]` for all.
    pub events: Vec<String>,
    pub active: bool,
    pub secret_sealed: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A change of a webhook; fields left `None` keep their value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookUpdate {
    pub url: Option<String>,
    pub description: Option<String>,
    pub events: Option<Vec<String>>,
    pub active: Option<bool>,
    pub secret_sealed: Option<String>,
}

/// One event, to be delivered to each of the user's active webhooks that want it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhookEvent {
    pub event_id: String,
    pub user_id: String,
    pub event_type: String,
    /// The exact body every delivery of this event sends (and resends).
    pub body: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (or being attempted, under a lease).
    Pending,
    Delivered,
    /// Every attempt failed; retried only when asked.
    Dead,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "dead" => Some(Self::Dead),
            _ => None,
        }
    }
}

/// One event's delivery to one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub delivery_id: String,
    pub webhook_id: String,
    pub user_id: String,
    pub event_id: String,
    pub event_type: String,
    pub body: String,
    pub status: DeliveryStatus,
    /// Attempts started (a claim counts, so a crash mid-send uses one up).
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    /// Until when the current attempt holds it; another sender may claim it after.
    pub lease_until: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    /// The start of the receiver's last response body (capped by the sender).
    pub last_response: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// How an attempt went, as the sender records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    /// The attempt's number (the claim's `attempts`): a stale sender, whose lease ran out
    /// and whose delivery was claimed again, records nothing.
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// `Delivered`, `Pending` (to be retried at `next_attempt_at`) or `Dead`.
    pub status: DeliveryStatus,
    pub next_attempt_at: DateTime<Utc>,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub response: Option<String>,
}

//! `[webhooks]`: limits of users' webhooks and how their deliveries are sent and retried.
use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Webhooks one user may have.
    pub max_per_user: u32,
    /// Longest webhook URL, in bytes.
    pub max_url_bytes: usize,
    /// Event types one webhook may name.
    pub max_events_per_hook: usize,
    /// Longest description, in bytes.
    pub max_description_bytes: usize,
    /// Largest delivery body, in bytes: an event whose data is larger is sent with its
    /// scalar fields only and `"truncated": true`.
    pub max_payload_bytes: usize,
    /// Attempts of one delivery before it is `dead` (listed, and retryable by hand).
    pub max_attempts: u32,
    /// Delay before the second attempt; each later one doubles it, up to the cap.
    pub backoff_base_ms: u64,
    pub backoff_cap_secs: u64,
    /// How long one attempt may take (connect, send, response head and capped body).
    pub attempt_timeout_secs: u64,
    /// Bytes of a receiver's response body kept with the delivery (for debugging).
    pub max_response_bytes: usize,
    /// How often the sender looks for due deliveries when nothing woke it.
    pub poll_interval_ms: u64,
    /// A test event is refused (429) while this many deliveries of the webhook are
    /// pending, so `POST …/test` cannot grow the outbox without bound.
    pub max_pending_for_test: u32,
    /// Days delivered and dead deliveries are kept (then deleted); 0 keeps them.
    pub delivery_retention_days: u32,
    /// Internal hosts webhook URLs may still name (`host` or `host:port`, as
    /// `agent_jobs.allowed_internal_hosts`); empty by default: URLs that resolve to
    /// loopback or private addresses are refused.
    pub allowed_internal_hosts: Vec<String>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            max_per_user: 20,
            max_url_bytes: 2048,
            max_events_per_hook: 32,
            max_description_bytes: 500,
            max_payload_bytes: 64 * 1024,
            max_attempts: 8,
            backoff_base_ms: 10_000,
            backoff_cap_secs: 6 * 3600,
            attempt_timeout_secs: 10,
            max_response_bytes: 1024,
            poll_interval_ms: 1000,
            delivery_retention_days: 30,
            max_pending_for_test: 100,
            allowed_internal_hosts: Vec::new(),
        }
    }
}

impl WebhooksConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let rule = |m: &str| Err(ConfigError::Rule(format!("webhooks.{m}")));
        if self.max_attempts == 0 {
            return rule("max_attempts must be at least 1");
        }
        if self.attempt_timeout_secs == 0 {
            return rule("attempt_timeout_secs must be at least 1");
        }
        if self.poll_interval_ms == 0 {
            return rule("poll_interval_ms must be at least 1");
        }
        if self.max_payload_bytes < 1024 {
            return rule("max_payload_bytes must be at least 1024");
        }
        Ok(())
    }
}

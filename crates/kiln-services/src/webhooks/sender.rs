//! The background sender: claims due deliveries from the outbox with a lease, POSTs each
//! signed to its webhook's URL (checked again against the outbound policy and pinned to
//! the checked addresses), and records the result: delivered on a 2xx, else retried with
//! backoff until `max_attempts`, then dead. A delivery whose sender died mid-attempt is
//! claimed again once its lease runs out, so delivery is at least once; every attempt of
//! a delivery sends the same body and `Kiln-Webhook-Id`, by which receivers deduplicate.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use kiln_config::WebhooksConfig;
use kiln_store::{AttemptResult, DeliveryRecord, DeliveryStatus, Store};
use rand::Rng;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use url::Url;

use super::{backoff, signing, EventType};
use crate::outbound::{OutboundPolicy, Vetted};
use crate::secret_box::SecretBox;

/// Attempts in flight at once, per server.
const MAX_IN_FLIGHT: usize = 32;
/// A lease outlasts an attempt's timeout by this much (time to record its result).
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// How often finished deliveries past their retention are deleted.
const RETENTION_EVERY: Duration = Duration::from_secs(600);
/// Destinations whose clients are kept (all are dropped when it is reached).
const MAX_CLIENTS: usize = 256;

pub(crate) struct Sender {
    pub store: Arc<dyn Store>,
    pub config: WebhooksConfig,
    pub secrets: Arc<SecretBox>,
    pub policy: OutboundPolicy,
    pub wake: Arc<Notify>,
    /// HTTP clients by destination, see [`Sender::client_for`].
    pub clients: Mutex<HashMap<String, reqwest::Client>>,
}

/// What one attempt got back.
struct Answer {
    status: Option<u16>,
    error: Option<String>,
    response: Option<String>,
}

impl Sender {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.attempt_timeout_secs)
    }

    /// Runs until the task is aborted (attempts in flight are dropped with it: their
    /// leases run out and another sender, or the next start, sends them again).
    pub async fn run(self: Arc<Self>) {
        let mut in_flight = JoinSet::new();
        let poll = Duration::from_millis(self.config.poll_interval_ms);
        let mut swept: Option<std::time::Instant> = None;
        loop {
            if swept.is_none_or(|at| at.elapsed() >= RETENTION_EVERY) {
                swept = Some(std::time::Instant::now());
                self.expire_old().await;
            }
            let room = MAX_IN_FLIGHT.saturating_sub(in_flight.len());
            if room > 0 {
                let now = Utc::now();
                let lease = now
                    + chrono::Duration::from_std(self.timeout() + LEASE_MARGIN)
                        .unwrap_or_else(|_| chrono::Duration::seconds(60));
                match self
                    .store
                    .claim_webhook_deliveries(now, lease, room as u64)
                    .await
                {
                    Ok(claimed) => {
                        let full = claimed.len() == room;
                        for delivery in claimed {
                            let this = self.clone();
                            in_flight.spawn(async move { this.attempt(delivery).await });
                        }
                        if full && in_flight.len() < MAX_IN_FLIGHT {
                            continue;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot claim webhook deliveries"),
                }
            }
            tokio::select! {
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// A client whose connections go only to `vetted`'s addresses: one per destination
    /// (host, port and checked addresses), kept so that connections and TLS set-up are
    /// reused; a name that resolves elsewhere later gets a new one.
    fn client_for(&self, url: &Url, vetted: &Vetted) -> reqwest::Result<reqwest::Client> {
        let key = format!("{}:{}:{:?}", vetted.host, vetted.port, vetted.addrs);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the name itself, past the pin.
            .no_proxy()
            .timeout(self.timeout())
            .user_agent("Kiln-Webhooks/1");
        if let Some(url::Host::Domain(name)) = url.host() {
            let addrs: Vec<SocketAddr> = vetted
                .addrs
                .iter()
                .map(|ip| SocketAddr::new(*ip, vetted.port))
                .collect();
            builder = builder.resolve_to_addrs(name, &addrs);
        }
        let client = builder.build()?;
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// Deletes finished deliveries past `delivery_retention_days`, in batches.
    async fn expire_old(&self) {
        let days = self.config.delivery_retention_days;
        if days == 0 {
            return;
        }
        let before = Utc::now() - chrono::Duration::days(i64::from(days));
        const BATCH: u64 = 500;
        loop {
            match self.store.expire_webhook_deliveries(before, BATCH).await {
                Ok(BATCH) => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(error = %e, "cannot expire old webhook deliveries");
                    break;
                }
            }
        }
    }

    async fn attempt(&self, delivery: DeliveryRecord) {
        let answer = self.send(&delivery).await;
        let now = Utc::now();
        let ok = answer.status.is_some_and(|s| (200..300).contains(&s));
        let (status, next) = if ok {
            (DeliveryStatus::Delivered, now)
        } else if delivery.attempts >= self.config.max_attempts {
            (DeliveryStatus::Dead, now)
        } else {
            let wait = backoff::delay(
                delivery.attempts,
                Duration::from_millis(self.config.backoff_base_ms),
                Duration::from_secs(self.config.backoff_cap_secs),
                rand::thread_rng().gen::<f64>(),
            );
            let wait = chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
            (
                DeliveryStatus::Pending,
                now.checked_add_signed(wait).unwrap_or(now),
            )
        };
        let result = AttemptResult {
            attempt: delivery.attempts,
            at: now,
            status,
            next_attempt_at: next,
            status_code: answer.status,
            error: answer.error,
            response: answer.response,
        };
        match self
            .store
            .record_webhook_attempt(&delivery.delivery_id, &result)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::info!(
                delivery = delivery.delivery_id,
                "a webhook attempt ended after its lease: its result is not recorded"
            ),
            Err(e) => {
                tracing::error!(delivery = delivery.delivery_id, error = %e, "cannot record a webhook attempt")
            }
        }
    }

    async fn send(&self, delivery: &DeliveryRecord) -> Answer {
        let failed = |error: String| Answer {
            status: None,
            error: Some(error),
            response: None,
        };
        let hook = match self.store.get_webhook(&delivery.webhook_id).await {
            Ok(Some(hook)) => hook,
            Ok(None) => return failed("the webhook was deleted".into()),
            Err(e) => return failed(format!("storage failure: {e}")),
        };
        // A test event is sent whatever the state: it is how a disabled one is checked.
        if !hook.active && delivery.event_type != EventType::WebhookTest.as_str() {
            return failed("the webhook is disabled".into());
        }
        let Ok(secret) = self
            .secrets
            .open(&hook.secret_sealed, hook.webhook_id.as_bytes())
        else {
            return failed("the webhook's secret cannot be opened with this server's key".into());
        };
        let Ok(url) = Url::parse(&hook.url) else {
            return failed("the webhook's URL does not parse".into());
        };
        // Checked again at every attempt: the name may resolve elsewhere since creation.
        let vetted = match self.policy.vet(&url).await {
            Ok(vetted) => vetted,
            Err(e) => return failed(e.to_string()),
        };
        let client = match self.client_for(&url, &vetted) {
            Ok(client) => client,
            Err(e) => return failed(format!("cannot build an HTTP client: {e}")),
        };
        let t = Utc::now().timestamp();
        let request = client
            .post(url)
            .header("Content-Type", "application/json")
            .header("Kiln-Webhook-Id", delivery.event_id.as_str())
            .header("Kiln-Delivery-Id", delivery.delivery_id.as_str())
            .header("Kiln-Event-Type", delivery.event_type.as_str())
            .header(
                "Kiln-Signature",
                signing::signature_header(&secret, t, &delivery.body),
            )
            .body(delivery.body.clone());
        let exchange = async {
            let mut response = request.send().await?;
            let status = response.status().as_u16();
            let mut kept = Vec::new();
            while kept.len() < self.config.max_response_bytes {
                match response.chunk().await? {
                    Some(chunk) => kept.extend_from_slice(&chunk),
                    None => break,
                }
            }
            kept.truncate(self.config.max_response_bytes);
            // PostgreSQL TEXT cannot hold NUL.
            let text = String::from_utf8_lossy(&kept).replace('\0', "");
            Ok::<_, reqwest::Error>((status, text))
        };
        match tokio::time::timeout(self.timeout(), exchange).await {
            Ok(Ok((status, body))) => Answer {
                status: Some(status),
                error: (!(200..300).contains(&status))
                    .then(|| format!("the receiver answered {status}")),
                response: Some(body),
            },
            Ok(Err(e)) => failed(describe(&e)),
            Err(_) => failed(format!(
                "no answer within {} s",
                self.config.attempt_timeout_secs
            )),
        }
    }
}

/// A transport error in words, without the URL (already known from the webhook).
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {detail}")
    }
}

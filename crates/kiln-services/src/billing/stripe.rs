//! Stripe's wire protocol: creating a Checkout Session (form-encoded POST with the secret
//! key as bearer token) and verifying webhook signatures the way Stripe's libraries do.
use hmac::{Hmac, Mac};
use kiln_config::StripeConfig;
use serde::Deserialize;
use sha2::Sha256;

use crate::error::{ServiceError, ServiceResult};

/// A Checkout Session: where the user pays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    pub id: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    Credited {
        user_id: String,
        amount_cents: i64,
    },
    /// The event or its checkout was handled before.
    AlreadyProcessed,
    /// Not an event that credits anything.
    Ignored,
}

pub(super) async fn create_checkout(
    http: &reqwest::Client,
    config: &StripeConfig,
    secret_key: &str,
    user_id: &str,
    amount_cents: i64,
) -> ServiceResult<Checkout> {
    let amount = amount_cents.to_string();
    let form: [(&str, &str); 9] = [
        ("mode", "payment"),
        ("line_items[0][price_data][currency]", "usd"),
        ("line_items[0][price_data][unit_amount]", &amount),
        (
            "line_items[0][price_data][product_data][name]",
            "Kiln credits",
        ),
        ("line_items[0][quantity]", "1"),
        ("client_reference_id", user_id),
        ("metadata[user_id]", user_id),
        ("success_url", &config.success_url),
        ("cancel_url", &config.cancel_url),
    ];
    let url = format!(
        "{}/v1/checkout/sessions",
        config.api_base.trim_end_matches('/')
    );
    let unreachable = |e: reqwest::Error| {
        tracing::warn!(error = %e, "Stripe request failed");
        ServiceError::Unavailable(format!("cannot reach Stripe to create a checkout: {e}"))
    };
    let response = http
        .post(&url)
        .bearer_auth(secret_key)
        .form(&form)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.map_err(unreachable)?;
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("no message");
        tracing::warn!(%status, message, "Stripe refused a checkout");
        return Err(ServiceError::Unavailable(format!(
            "Stripe refused the checkout ({status}): {message}"
        )));
    }
    match (body["id"].as_str(), body["url"].as_str()) {
        (Some(id), Some(url)) => Ok(Checkout {
            id: id.to_string(),
            url: url.to_string(),
        }),
        _ => Err(ServiceError::Unavailable(
            "Stripe's checkout answer has no id or url".into(),
        )),
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is malformed: expected t=<unix time>,v1=<hex>")]
    Malformed,
    #[error("no v1 signature of the Stripe-Signature header matches the payload")]
    Mismatch,
    #[error("the signature's timestamp is {age} s away from now (tolerance {tolerance} s)")]
    Stale { age: i64, tolerance: u64 },
}

impl SignatureError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed_signature",
            Self::Mismatch => "invalid_signature",
            Self::Stale { .. } => "stale_signature",
        }
    }
}

/// Verifies `t=<unix>,v1=<hex>[,v1=…]` as Stripe signs it: HMAC-SHA256 over
/// `"{t}.{payload}"` keyed with the endpoint's secret, any `v1` may match (secrets roll),
/// compared in constant time, and the timestamp within `tolerance_secs` of `now`. Other
/// schemes (`v0`, …) are ignored.
pub fn verify_signature(
    payload: &[u8],
    header: &str,
    secret: &[u8],
    now: i64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => {
                timestamp = Some(t.parse::<i64>().map_err(|_| SignatureError::Malformed)?)
            }
            Some(("v1", hex_sig)) => {
                // A v1 that is not hex cannot match; it is skipped like a wrong one.
                if let Ok(bytes) = hex::decode(hex_sig) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() && !header.contains("v1=") {
        return Err(SignatureError::Malformed);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    // `verify_slice` compares in constant time.
    let matched = signatures
        .iter()
        .any(|sig| mac.clone().verify_slice(sig).is_ok());
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    let age = now.saturating_sub(timestamp);
    if age.unsigned_abs() > tolerance_secs {
        return Err(SignatureError::Stale {
            age,
            tolerance: tolerance_secs,
        });
    }
    Ok(())
}

/// What a `checkout.session.completed` event with `payment_status = paid` credits.
pub(super) struct PaidCheckout {
    pub event_id: String,
    pub checkout_id: String,
    pub user_id: String,
    pub amount_cents: i64,
}

#[derive(Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    object: serde_json::Value,
}

/// The credit a (verified) event brings, if any. A body that is not an event is a 400.
pub(super) fn paid_checkout(payload: &[u8]) -> ServiceResult<Option<PaidCheckout>> {
    let event: Event = serde_json::from_slice(payload).map_err(|e| ServiceError::BadRequest {
        code: "invalid_event",
        message: format!("the webhook body is not a Stripe event: {e}"),
    })?;
    if event.kind != "checkout.session.completed" {
        return Ok(None);
    }
    let object = &event.data.object;
    if object["payment_status"].as_str() != Some("paid") {
        return Ok(None);
    }
    let user_id = object["metadata"]["user_id"]
        .as_str()
        .or_else(|| object["client_reference_id"].as_str());
    let (Some(checkout_id), Some(user_id), Some(amount)) = (
        object["id"].as_str(),
        user_id,
        object["amount_total"].as_i64(),
    ) else {
        tracing::warn!(event = %event.id, "a paid checkout without id, user or amount_total");
        return Ok(None);
    };
    if amount <= 0 {
        return Ok(None);
    }
    Ok(Some(PaidCheckout {
        event_id: event.id,
        checkout_id: checkout_id.to_string(),
        user_id: user_id.to_string(),
        amount_cents: amount,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn sign(payload: &[u8], t: i64, secret: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(payload);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn signatures_verify_like_stripe() {
        let (body, secret, t) = (
            br#"{"id":"evt_1"}"#.as_slice(),
            b"whsec_test",
            1_700_000_000,
        );
        let good = sign(body, t, secret);
        let ok = |h: &str, now| verify_signature(body, h, secret, now, 300);
        assert_eq!(ok(&format!("t={t},v1={good}"), t), Ok(()));
        assert_eq!(
            ok(&format!("t={t},v1=00ff,v1={good},v0=zz"), t + 300),
            Ok(())
        );
        assert_eq!(
            ok(&format!("t={t},v1={}", "ab".repeat(32)), t),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            ok(&format!("t={},v1={good}", t + 1), t),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            ok(&format!("t={t},v1={good}"), t + 301),
            Err(SignatureError::Stale { .. })
        ));
        assert!(matches!(
            ok(&format!("t={t},v1={good}"), t - 301),
            Err(SignatureError::Stale { .. })
        ));
        assert_eq!(ok(&format!("v1={good}"), t), Err(SignatureError::Malformed));
        assert_eq!(ok(&format!("t={t}"), t), Err(SignatureError::Malformed));
        assert_eq!(ok("garbage", t), Err(SignatureError::Malformed));
        let other = verify_signature(body, &format!("t={t},v1={good}"), b"whsec_other", t, 300);
        assert_eq!(other, Err(SignatureError::Mismatch));
    }
}

//! Billing over real HTTP: pricing, balance, usage, deposits through a stand-in Stripe (a
//! local axum server that checks what Kiln sends), and signed webhooks. Sessions' billing,
//! with real sandboxes, is in `billing_sessions.rs`.
use crate::common;

use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use common::{assert_error, assert_validation, bearer, json, TestServer};
use hmac::{Hmac, Mac};
use kiln_config::Secret;
use serde_json::{json, Value};
use sha2::Sha256;

const WEBHOOK_SECRET: &str = "whsec_test_kiln";

fn sign(payload: &str, t: i64, secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{t}.{payload}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn paid_event(event_id: &str, checkout_id: &str, user_id: &str, cents: i64) -> String {
    json!({
        "id": event_id, "object": "event", "type": "checkout.session.completed",
        "data": {"object": {
            "id": checkout_id, "object": "checkout.session", "payment_status": "paid",
            "amount_total": cents, "currency": "usd", "client_reference_id": user_id,
            "metadata": {"user_id": user_id}
        }}
    })
    .to_string()
}

async fn deliver(s: &TestServer, payload: &str, signature: Option<String>) -> (u16, Value) {
    let mut request = s
        .post("/billing/webhook")
        .header("Content-Type", "application/json")
        .body(payload.to_string());
    if let Some(signature) = signature {
        request = request.header("Stripe-Signature", signature);
    }
    json(request.send().await.expect("send")).await
}

async fn balance(s: &TestServer, key: &str) -> Value {
    s.get_ok(key, "/billing/balance").await
}

async fn webhook_server() -> TestServer {
    TestServer::start_with(|c| {
        c.billing.stripe.webhook_secret = Some(Secret::new(WEBHOOK_SECRET));
    })
    .await
}

#[tokio::test]
async fn pricing_is_public_and_configurable() {
    let s = TestServer::start_with(|c| {
        c.billing.cost_per_minute_cents = 7;
        c.billing.agent_job_cost_cents = 120;
    })
    .await;
    if std::env::var_os("KILN_TEST_DATABASE_URL").is_some() {
        assert_eq!(s.backend(), "postgres");
    }
    let (status, body) = json(s.get("/billing/pricing").send().await.expect("send")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cost_per_minute_cents"], 7);
    assert_eq!(body["cost_per_minute_dollars"], 0.07);
    assert_eq!(body["agent_job_cost_cents"], 120);
    assert_eq!(body["billing_enabled"], false);

    let d = TestServer::start().await;
    let (_, body) = json(d.get("/billing/pricing").send().await.expect("send")).await;
    assert_eq!(body["cost_per_minute_cents"], 5, "the default price");
    let (status, body) = json(d.get("/billing/balance").send().await.expect("send")).await;
    assert_error(status, &body, 401, "unauthorized");
}

#[tokio::test]
async fn a_paid_checkout_delivered_twice_credits_once() {
    let s = webhook_server().await;
    let (user, key) = s.user("payer").await;
    let now = chrono::Utc::now().timestamp();
    let payload = paid_event("evt_1", "cs_1", &user, 2500);
    let (status, body) = deliver(&s, &payload, Some(sign(&payload, now, WEBHOOK_SECRET))).await;
    assert_eq!((status, &body["credited"]), (200, &json!(true)), "{body}");
    // Stripe redelivers the same event, and may send another event for the same checkout.
    let (status, body) = deliver(&s, &payload, Some(sign(&payload, now + 1, WEBHOOK_SECRET))).await;
    assert_eq!((status, &body["credited"]), (200, &json!(false)), "{body}");
    let other = paid_event("evt_2", "cs_1", &user, 2500);
    let (status, body) = deliver(&s, &other, Some(sign(&other, now, WEBHOOK_SECRET))).await;
    assert_eq!((status, &body["credited"]), (200, &json!(false)), "{body}");

    let body = balance(&s, &key).await;
    assert_eq!(
        (body["balance"].as_i64(), body["total_deposited"].as_i64()),
        (Some(2500), Some(2500)),
        "{body}"
    );
    assert_eq!(body["user_id"], user.as_str());

    // Other events, and unpaid checkouts, are acknowledged and ignored.
    let ignored = json!({"id": "evt_3", "type": "payment_intent.created", "data": {"object": {}}})
        .to_string();
    let (status, body) = deliver(&s, &ignored, Some(sign(&ignored, now, WEBHOOK_SECRET))).await;
    assert_eq!((status, &body["credited"]), (200, &json!(false)), "{body}");
    let unpaid = paid_event("evt_4", "cs_2", &user, 900).replace("\"paid\"", "\"unpaid\"");
    let (status, _) = deliver(&s, &unpaid, Some(sign(&unpaid, now, WEBHOOK_SECRET))).await;
    assert_eq!(status, 200);
    assert_eq!(balance(&s, &key).await["balance"], 2500);
}

#[tokio::test]
async fn forged_stale_and_unsigned_webhooks_are_refused() {
    let s = webhook_server().await;
    let (user, key) = s.user("victim").await;
    let now = chrono::Utc::now().timestamp();
    let payload = paid_event("evt_9", "cs_9", &user, 100_000);

    let (status, body) = deliver(&s, &payload, None).await;
    assert_error(status, &body, 400, "missing_signature");
    let forged = sign(&payload, now, "whsec_not_the_secret");
    let (status, body) = deliver(&s, &payload, Some(forged)).await;
    assert_error(status, &body, 400, "invalid_signature");
    // Signed for another body: a tampered amount does not verify.
    let tampered = payload.replace("100000", "100001");
    let (status, body) = deliver(&s, &tampered, Some(sign(&payload, now, WEBHOOK_SECRET))).await;
    assert_error(status, &body, 400, "invalid_signature");
    let stale = sign(&payload, now - 301 - 30, WEBHOOK_SECRET);
    let (status, body) = deliver(&s, &payload, Some(stale)).await;
    assert_error(status, &body, 400, "stale_signature");
    let (status, body) = deliver(&s, &payload, Some("v1=abc".into())).await;
    assert_error(status, &body, 400, "malformed_signature");
    assert_eq!(
        balance(&s, &key).await["balance"],
        0,
        "nothing was credited"
    );

    // A server without a webhook secret refuses webhooks clearly, not with a 500.
    let bare = TestServer::start().await;
    let (status, body) = deliver(&bare, &payload, Some(sign(&payload, now, WEBHOOK_SECRET))).await;
    assert_error(status, &body, 503, "unavailable");
}

/// What the stand-in Stripe received: (authorization header, form fields).
type Seen = Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>;

async fn stand_in_stripe() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/v1/checkout/sessions",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let record = record.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                let ok = auth == "Bearer sk_test_kiln"
                    && headers.get("content-type").and_then(|v| v.to_str().ok())
                        == Some("application/x-www-form-urlencoded");
                record.lock().expect("lock").push((auth, form));
                if ok {
                    (
                        axum::http::StatusCode::OK,
                        axum::Json(json!({"id": "cs_test_1", "object": "checkout.session",
                                          "url": "https://checkout.stripe.test/c/pay/cs_test_1"})),
                    )
                } else {
                    (
                        axum::http::StatusCode::UNAUTHORIZED,
                        axum::Json(json!({"error": {"message": "Invalid API Key provided"}})),
                    )
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, seen)
}

#[tokio::test]
async fn a_deposit_creates_a_checkout_at_stripe() {
    let (stripe, seen) = stand_in_stripe().await;
    let s = TestServer::start_with(|c| {
        c.billing.stripe.api_base = stripe.clone();
        c.billing.stripe.secret_key = Some(Secret::new("sk_test_kiln"));
        c.billing.stripe.success_url = "https://kiln.test/paid".into();
        c.billing.stripe.cancel_url = "https://kiln.test/cancelled".into();
    })
    .await;
    let (user, key) = s.user("depositor").await;
    let deposit = |body: Value| {
        s.post("/billing/deposit")
            .header("Authorization", bearer(&key))
            .json(&body)
            .send()
    };
    let (status, body) = json(deposit(json!({"amount_cents": 499})).await.expect("send")).await;
    assert_validation(status, &body, &["body", "amount_cents"]);
    let (status, body) = json(
        deposit(json!({"amount_cents": "lots"}))
            .await
            .expect("send"),
    )
    .await;
    assert_validation(status, &body, &["body", "amount_cents"]);
    let (status, body) = json(
        deposit(json!({"amount_cents": 900, "currency": "eur"}))
            .await
            .expect("send"),
    )
    .await;
    assert_validation(status, &body, &["body", "currency"]);
    assert!(
        seen.lock().expect("lock").is_empty(),
        "nothing reached Stripe"
    );

    let (status, body) = json(deposit(json!({"amount_cents": 1500})).await.expect("send")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["checkout_url"],
        "https://checkout.stripe.test/c/pay/cs_test_1"
    );
    assert_eq!(
        (body["amount_cents"].as_i64(), body["currency"].as_str()),
        (Some(1500), Some("usd"))
    );
    let calls = seen.lock().expect("lock").clone();
    assert_eq!(calls.len(), 1);
    let (authorization, form) = &calls[0];
    assert_eq!(authorization, "Bearer sk_test_kiln");
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{name} missing from {form:?}"))
    };
    assert_eq!(field("mode"), "payment");
    assert_eq!(field("line_items[0][price_data][currency]"), "usd");
    assert_eq!(field("line_items[0][price_data][unit_amount]"), "1500");
    assert!(!field("line_items[0][price_data][product_data][name]").is_empty());
    assert_eq!(field("line_items[0][quantity]"), "1");
    assert_eq!(field("client_reference_id"), user);
    assert_eq!(field("metadata[user_id]"), user);
    assert_eq!(field("success_url"), "https://kiln.test/paid");
    assert_eq!(field("cancel_url"), "https://kiln.test/cancelled");
    assert_eq!(
        balance(&s, &key).await["balance"],
        0,
        "credited only when Stripe says paid"
    );

    // Stripe refusing (a wrong key) is a clear 503, and so is a server without a key.
    let wrong = TestServer::start_with(|c| {
        c.billing.stripe.api_base = stripe.clone();
        c.billing.stripe.secret_key = Some(Secret::new("sk_wrong"));
    })
    .await;
    let (status, body) = wrong
        .post_as(
            &wrong.admin_key,
            "/billing/deposit",
            &json!({"amount_cents": 500}),
        )
        .await;
    assert_error(status, &body, 503, "unavailable");
    let bare = TestServer::start().await;
    let (status, body) = bare
        .post_as(
            &bare.admin_key,
            "/billing/deposit",
            &json!({"amount_cents": 500}),
        )
        .await;
    assert_error(status, &body, 503, "unavailable");
    assert!(
        body["detail"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("secret_key"),
        "{body}"
    );
}

async fn usage(s: &TestServer, key: &str, query: &str) -> (u16, Value) {
    s.get_as(key, &format!("/billing/usage{query}")).await
}

#[tokio::test]
async fn usage_is_paged_filtered_and_private() {
    let s = TestServer::start().await;
    let (ann, ann_key) = s.user("ann").await;
    let (bob, bob_key) = s.user("bob").await;
    for cents in [100, 200, 300] {
        s.kiln
            .billing
            .grant(&ann, cents, None)
            .await
            .expect("grant");
    }
    let billing = &s.kiln.billing;
    use kiln_domain::TransactionKind::*;
    billing
        .record(&ann, AgentJobUsage, -50, "job".into(), Some("job-1".into()))
        .await
        .expect("charge");
    assert_eq!(
        billing
            .record(&ann, AgentJobUsage, -50, "job".into(), Some("job-1".into()))
            .await
            .expect("again"),
        None,
        "a job is charged once"
    );
    billing
        .record(
            &ann,
            AgentJobRefund,
            50,
            "refund".into(),
            Some("job-1".into()),
        )
        .await
        .expect("refund");
    billing
        .grant(&bob, 7, Some("bob's".into()))
        .await
        .expect("grant");

    let (status, body) = usage(&s, &ann_key, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["current_balance_cents"], 600);
    assert_eq!(body["total_deposits_cents"], 600);
    assert_eq!(body["total_usage_cents"], 0, "charged 50, refunded 50");
    assert_eq!(body["transactions"].as_array().map(Vec::len), Some(5));
    assert_eq!(
        body["transactions"][0]["type"], "agent_job_refund",
        "newest first"
    );
    assert_eq!(body["transactions"][0]["job_id"], "job-1");
    assert_eq!(body["pagination"]["total_items"], 5);
    assert_eq!(body["pagination"]["limit"], 25);
    assert_eq!(body["summary"]["deposits_cents"], 600);
    assert_eq!(body["summary"]["usage_cents"], 50);
    assert_eq!(body["summary"]["refunds_cents"], 50);

    let (_, body) = usage(&s, &ann_key, "?page=2&limit=2").await;
    assert_eq!(body["transactions"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        body["pagination"],
        json!({"page": 2, "limit": 2, "total_items": 5, "total_pages": 3,
                                          "has_next": true, "has_previous": true})
    );
    let (_, body) = usage(
        &s,
        &ann_key,
        "?transaction_types=deposit&transaction_types=agent_job_refund",
    )
    .await;
    assert_eq!(body["pagination"]["total_items"], 4);
    let (_, body) = usage(&s, &ann_key, "?transaction_types=charge").await;
    assert_eq!(body["pagination"]["total_items"], 1);
    let (_, body) = usage(&s, &ann_key, "?max_items=2").await;
    assert_eq!(body["pagination"]["total_items"], 2);
    let today = chrono::Utc::now().date_naive();
    let (_, body) = usage(
        &s,
        &ann_key,
        &format!("?start_date={today}&end_date={today}&max_items=1"),
    )
    .await;
    assert_eq!(
        body["pagination"]["total_items"], 5,
        "max_items is ignored with dates"
    );
    let (_, body) = usage(&s, &ann_key, "?end_date=2000-01-01").await;
    assert_eq!(body["pagination"]["total_items"], 0);

    let (_, body) = usage(&s, &bob_key, "").await;
    assert_eq!(
        body["current_balance_cents"], 7,
        "bob sees only his own ledger"
    );
    assert_eq!(body["transactions"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["transactions"][0]["description"], "bob's");
    let _ = bob;

    for (query, field) in [
        ("?page=0", "page"),
        ("?page=x", "page"),
        ("?limit=101", "limit"),
        ("?limit=0", "limit"),
        ("?max_items=10001", "max_items"),
        ("?start_date=yesterday", "start_date"),
        ("?end_date=2024-13-01", "end_date"),
        ("?transaction_types=bogus", "transaction_types"),
        ("?start_date=2024-02-02&end_date=2024-02-01", "end_date"),
    ] {
        let (status, body) = usage(&s, &ann_key, query).await;
        assert_validation(status, &body, &["query", field]);
    }
}

//! Webhooks and the delivery outbox: the per-user limit, event fan-out to the webhooks
//! that want it, leases (one claimer wins, an expired lease is claimed again), results
//! recorded only by the current attempt, the dead-letter retry.
use std::sync::Arc;

use chrono::Duration;
use kiln_store::{AttemptResult, DeliveryStatus, NewWebhookEvent, WebhookRecord, WebhookUpdate};
use tokio::sync::Barrier;

use crate::harness::{base_time, create_user, TestDb};

fn hook(id: &str, user: &str, events: &[&str], seconds: i64) -> WebhookRecord {
    WebhookRecord {
        webhook_id: id.into(),
        user_id: user.into(),
        url: format!("https://example.test/{id}"),
        description: String::new(),
        events: events.iter().map(|e| e.to_string()).collect(),
        active: true,
        secret_sealed: format!("v1:sealed-{id}"),
        created_at: base_time() + Duration::seconds(seconds),
        updated_at: base_time() + Duration::seconds(seconds),
    }
}

fn event(id: &str, user: &str, kind: &str, seconds: i64) -> NewWebhookEvent {
    NewWebhookEvent {
        event_id: id.into(),
        user_id: user.into(),
        event_type: kind.into(),
        body: format!(r#"{{"id":"{id}"}}"#),
        created_at: base_time() + Duration::seconds(seconds),
    }
}

fn counter(prefix: &'static str) -> impl Fn() -> String + Send + Sync {
    let n = std::sync::atomic::AtomicU32::new(0);
    move || {
        format!(
            "{prefix}-{}",
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        )
    }
}

pub async fn webhooks_fan_out_and_are_limited(db: TestDb) {
    let store = db.store.as_ref();
    create_user(store, "alice").await;
    create_user(store, "bob").await;
    assert!(store
        .insert_webhook(&hook("w1", "alice", &["*"], 1), 3)
        .await
        .unwrap()
        .is_some());
    let w2 = store
        .insert_webhook(&hook("w2", "alice", &["session.ready"], 2), 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(w2.events, ["session.ready"]);
    assert!(store
        .insert_webhook(&hook("w3", "alice", &["session.error"], 3), 3)
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        store
            .insert_webhook(&hook("w4", "alice", &["*"], 4), 3)
            .await
            .unwrap(),
        None,
        "the fourth is over the limit"
    );
    assert!(store
        .insert_webhook(&hook("b1", "bob", &["*"], 5), 3)
        .await
        .unwrap()
        .is_some());
    let ids: Vec<_> = store
        .list_webhooks("alice")
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.webhook_id)
        .collect();
    assert_eq!(ids, ["w1", "w2", "w3"]);

    // w3 is disabled: it gets nothing, except a test delivery addressed to it.
    let off = WebhookUpdate {
        active: Some(false),
        ..Default::default()
    };
    let w3 = store
        .update_webhook("w3", &off, base_time())
        .await
        .unwrap()
        .unwrap();
    assert!(!w3.active);
    assert_eq!(w3.events, ["session.error"], "untouched fields stay");
    let ready = store
        .enqueue_webhook_event(
            &event("e1", "alice", "session.ready", 10),
            None,
            &counter("d"),
        )
        .await
        .unwrap();
    assert_eq!(ready.len(), 2, "w1 (*) and w2");
    let error = store
        .enqueue_webhook_event(
            &event("e2", "alice", "session.error", 11),
            None,
            &counter("x"),
        )
        .await
        .unwrap();
    assert_eq!(error.len(), 1, "w1 only: w3 is disabled");
    let test = store
        .enqueue_webhook_event(
            &event("e3", "alice", "webhook.test", 12),
            Some("w3"),
            &counter("t"),
        )
        .await
        .unwrap();
    assert_eq!(test.len(), 1);
    let w2_got = store
        .list_webhook_deliveries("w2", None, 10, 0)
        .await
        .unwrap();
    assert_eq!(w2_got.len(), 1);
    assert_eq!(
        (w2_got[0].event_id.as_str(), w2_got[0].status),
        ("e1", DeliveryStatus::Pending)
    );
    assert!(store
        .list_webhook_deliveries("b1", None, 10, 0)
        .await
        .unwrap()
        .is_empty());

    // Deleting a webhook deletes its deliveries.
    assert!(store.delete_webhook("w1").await.unwrap());
    assert!(!store.delete_webhook("w1").await.unwrap());
    assert!(store
        .list_webhook_deliveries("w1", None, 10, 0)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.get_webhook("w1").await.unwrap(), None);
}

pub async fn deliveries_are_leased_retried_and_dead_lettered(db: TestDb) {
    let store = db.store.clone();
    create_user(store.as_ref(), "alice").await;
    store
        .insert_webhook(&hook("w1", "alice", &["*"], 0), 10)
        .await
        .unwrap();
    let ids = store
        .enqueue_webhook_event(
            &event("e1", "alice", "session.ready", 10),
            None,
            &counter("d"),
        )
        .await
        .unwrap();
    let id = ids[0].clone();
    let t = |s| base_time() + Duration::seconds(s);

    // Not due before it was created.
    assert!(store
        .claim_webhook_deliveries(t(9), t(40), 10)
        .await
        .unwrap()
        .is_empty());
    // Racing claimers: exactly one gets it.
    let barrier = Arc::new(Barrier::new(8));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, barrier) = (store.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .claim_webhook_deliveries(t(11), t(41), 10)
                .await
                .unwrap()
                .len()
        }));
    }
    let mut claimed = 0;
    for task in tasks {
        claimed += task.await.unwrap();
    }
    assert_eq!(claimed, 1, "one claimer wins");
    // Still leased at 40; the lease has run out at 41 (a crashed sender): claimed again.
    assert!(store
        .claim_webhook_deliveries(t(40), t(70), 10)
        .await
        .unwrap()
        .is_empty());
    let again = store
        .claim_webhook_deliveries(t(41), t(71), 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);
    assert_eq!(again[0].lease_until, Some(t(71)));

    // The first attempt's late result changes nothing; the current one's is kept.
    let failed = |attempt, status, next| AttemptResult {
        attempt,
        at: t(50),
        status,
        next_attempt_at: next,
        status_code: Some(503),
        error: Some("the receiver answered 503".into()),
        response: Some("busy".into()),
    };
    assert!(!store
        .record_webhook_attempt(&id, &failed(1, DeliveryStatus::Delivered, t(50)))
        .await
        .unwrap());
    assert!(store
        .record_webhook_attempt(&id, &failed(2, DeliveryStatus::Pending, t(60)))
        .await
        .unwrap());
    let d = store
        .get_webhook_delivery("w1", &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (d.status, d.attempts, d.lease_until),
        (DeliveryStatus::Pending, 2, None)
    );
    assert_eq!(
        (d.last_status_code, d.last_response.as_deref()),
        (Some(503), Some("busy"))
    );
    assert_eq!(d.next_attempt_at, t(60));
    assert!(
        store
            .claim_webhook_deliveries(t(59), t(90), 10)
            .await
            .unwrap()
            .is_empty(),
        "backing off"
    );

    // Third attempt fails for good: dead, listed as such, and retried by hand.
    let third = store
        .claim_webhook_deliveries(t(60), t(90), 10)
        .await
        .unwrap();
    assert_eq!(third[0].attempts, 3);
    assert!(store
        .record_webhook_attempt(&id, &failed(3, DeliveryStatus::Dead, t(61)))
        .await
        .unwrap());
    assert!(store
        .claim_webhook_deliveries(t(1000), t(1030), 10)
        .await
        .unwrap()
        .is_empty());
    let dead = store
        .list_webhook_deliveries("w1", Some(DeliveryStatus::Dead), 10, 0)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert!(store
        .list_webhook_deliveries("w1", Some(DeliveryStatus::Pending), 10, 0)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .retry_webhook_delivery("w2", &id, t(100))
            .await
            .unwrap(),
        None,
        "other webhook"
    );
    let retried = store
        .retry_webhook_delivery("w1", &id, t(100))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (retried.status, retried.attempts),
        (DeliveryStatus::Pending, 0)
    );
    assert_eq!(
        store
            .retry_webhook_delivery("w1", &id, t(100))
            .await
            .unwrap(),
        None,
        "not dead now"
    );
    let fourth = store
        .claim_webhook_deliveries(t(100), t(130), 10)
        .await
        .unwrap();
    assert_eq!(fourth[0].attempts, 1);
    let ok = AttemptResult {
        status_code: Some(200),
        error: None,
        ..failed(1, DeliveryStatus::Delivered, t(101))
    };
    assert!(store.record_webhook_attempt(&id, &ok).await.unwrap());
    let d = store
        .get_webhook_delivery("w1", &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (d.status, d.delivered_at),
        (DeliveryStatus::Delivered, Some(t(50)))
    );
    assert_eq!(d.body, r#"{"id":"e1"}"#, "the body never changes");

    // Retention deletes finished deliveries by age, never pending ones.
    let pending = store
        .enqueue_webhook_event(
            &event("e2", "alice", "session.ready", 20),
            None,
            &counter("p"),
        )
        .await
        .unwrap();
    assert_eq!(
        store.expire_webhook_deliveries(t(10), 100).await.unwrap(),
        0,
        "not older"
    );
    assert_eq!(
        store.expire_webhook_deliveries(t(1000), 100).await.unwrap(),
        1
    );
    let left = store
        .list_webhook_deliveries("w1", None, 10, 0)
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].delivery_id, pending[0]);
}

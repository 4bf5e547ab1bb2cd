//! Session events reach the webhook outbox from the paths that end or fail a session
//! (here: a failed start and a sandbox that dies), only for the types a webhook asked,
//! each with the session as it was stored.
use kiln_runtime::SandboxId;
use kiln_services::sessions::SANDBOX_LOST;
use kiln_services::webhooks::WebhookInput;
use kiln_store::{DeliveryRecord, SessionStatus};
use serde_json::Value;

use crate::harness::{eventually, start, Env};

/// A webhook of `env.user` for `events`, pointed at a closed port (deliveries stay in
/// the outbox, which is what these tests read).
async fn hook(env: &Env, events: &[&str]) -> String {
    let input = WebhookInput {
        url: Some("http://127.0.0.1:9/hook".into()),
        events: Some(events.iter().map(|e| e.to_string()).collect()),
        ..Default::default()
    };
    let (hook, _) = env.kiln.webhooks.create(&env.user, input).await.unwrap();
    hook.webhook_id
}

async fn outbox(env: &Env, hook: &str) -> Vec<(String, Value)> {
    let found: Vec<DeliveryRecord> = env
        .kiln
        .webhooks
        .deliveries(&env.user, hook, None, 100, 0)
        .await
        .unwrap();
    let mut events: Vec<(String, Value)> = found
        .into_iter()
        .map(|d| (d.event_type, serde_json::from_str(&d.body).unwrap()))
        .collect();
    events.sort_by_key(|(_, body)| body["created_at"].as_str().map(str::to_string));
    events
}

fn allow_loopback(c: &mut kiln_config::Config) {
    c.webhooks.allowed_internal_hosts = vec!["127.0.0.1".into()];
}

#[tokio::test]
async fn a_failed_start_is_a_session_error_event() {
    let env = start(allow_loopback).await;
    let all = hook(&env, &["*"]).await;
    let errors_only = hook(&env, &["session.error"]).await;
    env.fake.fail_creates(Some("no room for it"));
    let created = env.create().await;
    let failed = env.settled(&created.session_id).await;
    assert_eq!(failed.status, SessionStatus::Error);

    let events = outbox(&env, &all).await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["session.created", "session.error"]);
    let data = &events[1].1["data"];
    assert_eq!(data["session_id"], created.session_id.as_str());
    assert_eq!(data["status"], "error");
    assert_eq!(data["error_code"], "sandbox_start_failed");
    let only: Vec<String> = outbox(&env, &errors_only)
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(only, ["session.error"]);
}

#[tokio::test]
async fn a_lost_sandbox_is_a_session_terminated_event() {
    let env = start(allow_loopback).await;
    let hook = hook(&env, &["session.terminated", "session.closed"]).await;
    let session = env.ready().await;
    let sandbox = SandboxId::new(session.sandbox_id.clone().unwrap()).unwrap();
    assert!(env.fake.die(&sandbox, "killed by the test"));
    eventually("the session ends", || async {
        let s = env.session(&session.session_id).await;
        (s.status != SessionStatus::Ready).then_some(())
    })
    .await;
    let events = eventually("the event is stored", || async {
        let events = outbox(&env, &hook).await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(events.len(), 1, "{events:?}");
    let (kind, body) = &events[0];
    assert_eq!(kind, "session.terminated");
    assert_eq!(body["data"]["error_code"], SANDBOX_LOST);
    assert_eq!(body["data"]["status"], "terminated");
    assert!(body["data"]["ended_at"].is_string(), "{body}");
}

//! The events webhooks receive, and [`Events::publish`], which every service calls where a
//! state change it announces has been stored. One family names them: `session.*` (an
//! instance is a session, so instance routes publish the same types).
use std::sync::Arc;

use chrono::Utc;
use kiln_store::{Announce, NewWebhookEvent, SessionRecord, Store, VerificationJobRecord};
use serde_json::{json, Map, Value};
use tokio::sync::Notify;

use crate::ids::new_id;

/// Declares [`EventType`]: adding an event is one line here.
macro_rules! event_types {
    ($($variant:ident => $name:literal,)*) => {
        /// A type of event a webhook can subscribe to.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventType { $($variant,)* }

        impl EventType {
            /// Every type, in the order documented.
            pub const ALL: &'static [EventType] = &[$(EventType::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(EventType::$variant => $name,)* }
            }
        }
    };
}

event_types! {
    SessionCreated => "session.created",
    SessionReady => "session.ready",
    SessionClosed => "session.closed",
    SessionTerminated => "session.terminated",
    SessionError => "session.error",
    VerificationCompleted => "verification.completed",
    VerificationError => "verification.error",
    SnapshotCreated => "snapshot.created",
    SnapshotDeleted => "snapshot.deleted",
    SnapshotRestored => "snapshot.restored",
    SessionForked => "session.forked",
    WebhookTest => "webhook.test",
}

impl EventType {
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|t| t.as_str() == name)
    }

    /// The event of a session that ended with `status` (`closed`, else `terminated`).
    pub fn ended(status: kiln_store::SessionStatus) -> Self {
        match status {
            kiln_store::SessionStatus::Closed => Self::SessionClosed,
            kiln_store::SessionStatus::Error => Self::SessionError,
            _ => Self::SessionTerminated,
        }
    }

    /// What a webhook may subscribe to: every type but the test ping, which goes to the
    /// webhook it is asked for whatever its events.
    pub fn subscribable() -> impl Iterator<Item = EventType> {
        Self::ALL
            .iter()
            .copied()
            .filter(|t| *t != EventType::WebhookTest)
    }
}

/// Where services publish events: stores one delivery per interested webhook (the
/// outbox) and wakes the sender. Cheap to clone.
#[derive(Clone)]
pub struct Events {
    store: Arc<dyn Store>,
    max_payload_bytes: usize,
    wake: Arc<Notify>,
}

impl Events {
    pub(crate) fn new(store: Arc<dyn Store>, max_payload_bytes: usize, wake: Arc<Notify>) -> Self {
        Self {
            store,
            max_payload_bytes,
            wake,
        }
    }

    /// Records `event` for `user_id`'s webhooks. A failure is logged, never returned: the
    /// state change it announces has happened already and must not be undone by it.
    pub async fn publish(&self, user_id: &str, event: EventType, data: Value) {
        if let Err(e) = self.enqueue(user_id, event, data, None).await {
            tracing::error!(user = user_id, event = event.as_str(), error = %e, "cannot store a webhook event");
        }
    }

    /// What a store method writes in the transaction of the change it makes: the event
    /// `make` draws from the changed record (`None`: no event for this change).
    pub(crate) fn announcing<R: ?Sized, F>(&self, make: F) -> Announcement<'_, F>
    where
        F: Fn(&R) -> Option<Draft> + Send + Sync,
    {
        Announcement { events: self, make }
    }

    /// The event as stored: its id, and its body cut to the payload limit.
    fn new_event(&self, draft: Draft) -> NewWebhookEvent {
        let event_id = new_id("evt");
        let now = Utc::now();
        let body = event_body(
            &event_id,
            draft.event,
            now,
            draft.data,
            self.max_payload_bytes,
        );
        NewWebhookEvent {
            event_id,
            user_id: draft.user_id,
            event_type: draft.event.as_str().to_string(),
            body,
            created_at: now,
        }
    }

    /// Stores the event's deliveries (to `only` when given): their ids.
    pub(crate) async fn enqueue(
        &self,
        user_id: &str,
        event: EventType,
        data: Value,
        only: Option<&str>,
    ) -> Result<Vec<String>, kiln_store::StoreError> {
        let draft = Draft {
            user_id: user_id.to_string(),
            event,
            data,
        };
        let ids = self
            .store
            .enqueue_webhook_event(&self.new_event(draft), only, &|| new_id("dlv"))
            .await?;
        if !ids.is_empty() {
            self.wake.notify_one();
        }
        Ok(ids)
    }
}

/// An event before it is stored: whose, which, and its data.
pub(crate) struct Draft {
    pub user_id: String,
    pub event: EventType,
    pub data: Value,
}

/// An event stored by the store in the transaction of the change it announces
/// ([`kiln_store::Announce`]); wakes the sender once that committed with deliveries.
pub(crate) struct Announcement<'a, F> {
    events: &'a Events,
    make: F,
}

impl<R: ?Sized, F> Announce<R> for Announcement<'_, F>
where
    F: Fn(&R) -> Option<Draft> + Send + Sync,
{
    fn event(&self, record: &R) -> Option<NewWebhookEvent> {
        (self.make)(record).map(|draft| self.events.new_event(draft))
    }

    fn delivery_id(&self) -> String {
        new_id("dlv")
    }

    fn stored(&self, deliveries: usize) {
        if deliveries > 0 {
            self.events.wake.notify_one();
        }
    }
}

/// The JSON body of an event: `{id, type, created_at, data}`. Data past `max_bytes` is
/// cut to its scalar fields (ids, statuses) and marked `"truncated": true`; the receiver
/// reads the rest from the API.
pub(crate) fn event_body(
    event_id: &str,
    event: EventType,
    at: chrono::DateTime<Utc>,
    data: Value,
    max_bytes: usize,
) -> String {
    let body = |data: &Value| {
        json!({"id": event_id, "type": event.as_str(), "created_at": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true), "data": data})
            .to_string()
    };
    let full = body(&data);
    if full.len() <= max_bytes {
        return full;
    }
    let mut small = Map::new();
    if let Value::Object(fields) = data {
        for (key, value) in fields {
            let scalar = !matches!(value, Value::Object(_) | Value::Array(_));
            if scalar && value.to_string().len() <= 256 {
                small.insert(key, value);
            }
        }
    }
    small.insert("truncated".into(), Value::Bool(true));
    body(&Value::Object(small))
}

/// What a `session.*` event says of the session.
pub fn session_data(session: &SessionRecord) -> Value {
    let (dataset, sample_id, image) = match &session.source {
        kiln_store::SessionSource::Sample {
            dataset, sample_id, ..
        } => (Some(dataset), Some(sample_id), None),
        kiln_store::SessionSource::Image { reference } => (None, None, Some(reference)),
    };
    json!({
        "session_id": session.session_id,
        "dataset": dataset,
        "sample_id": sample_id,
        "image": image,
        "status": session.status.as_str(),
        "requested_at": session.requested_at,
        "ready_at": session.ready_at,
        "expires_at": session.expires_at,
        "ended_at": session.ended_at,
        "error_code": session.error_code,
        "error_message": session.error_message,
    })
}

/// What a `snapshot.*` event says of the snapshot (or checkpoint).
pub fn snapshot_data(snapshot: &kiln_store::SnapshotRecord) -> Value {
    json!({
        "snapshot_id": snapshot.snapshot_id,
        "instance_id": snapshot.instance_id,
        "parent_snapshot_id": snapshot.parent_snapshot_id,
        "name": snapshot.name,
        "kind": snapshot.kind.as_str(),
        "size_bytes": snapshot.size_bytes,
        "created_at": snapshot.created_at,
    })
}

/// What a `verification.*` event says of the job (the result, when completed).
pub fn verification_data(job: &VerificationJobRecord) -> Value {
    json!({
        "job_id": job.job_id,
        "session_id": job.session_id,
        "sample_id": job.sample_id,
        "status": job.status.as_str(),
        "completed_at": job.completed_at,
        "result": job.result,
        "error_code": job.error_code,
        "error_message": job.error_message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let names: std::collections::HashSet<_> =
            EventType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(names.len(), EventType::ALL.len());
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(*t));
        }
        assert_eq!(EventType::parse("session.exploded"), None);
        assert!(!EventType::subscribable().any(|t| t == EventType::WebhookTest));
    }

    #[test]
    fn large_data_keeps_its_scalars_only() {
        let at = Utc::now();
        let data =
            json!({"session_id": "ses_1", "status": "ready", "result": {"log": "x".repeat(5000)}});
        let small = event_body("evt_1", EventType::SessionReady, at, data.clone(), 100_000);
        let parsed: Value = serde_json::from_str(&small).expect("json");
        assert_eq!(parsed["data"], data);
        assert_eq!(parsed["type"], "session.ready");
        assert_eq!(parsed["id"], "evt_1");

        let cut = event_body("evt_1", EventType::SessionReady, at, data, 1024);
        assert!(cut.len() <= 1024, "{}", cut.len());
        let parsed: Value = serde_json::from_str(&cut).expect("json");
        assert_eq!(
            parsed["data"],
            json!({"session_id": "ses_1", "status": "ready", "truncated": true})
        );
    }
}

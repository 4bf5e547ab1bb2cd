//! Events stored in the transaction of the change they announce (`Announce`): a change
//! that commits has its event's deliveries, one that does not (the status moved on, a
//! conflicting insert) has none, and an event that cannot be stored takes its change down
//! with it.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use chrono::Duration;
use kiln_store::{
    Announce, DeliveryRecord, JobStatus, NewSnapshot, NewWebhookEvent, SessionEnd, SessionRecord,
    SessionStatus, SnapshotInsert, SnapshotKind, SnapshotQuota, SnapshotRecord, StoreError,
    VerificationJobRecord, WebhookRecord,
};

use crate::harness::{base_time, creating_session, new_session, TestDb};
use crate::verification_jobs::{new_job, update};

/// Announces `<kind>:<id>` of every record; `taken` makes every delivery id the same one.
struct Probe {
    kind: &'static str,
    next: AtomicUsize,
    taken: Option<&'static str>,
    stored: Mutex<Vec<usize>>,
}

impl Probe {
    fn new(kind: &'static str) -> Self {
        Self {
            kind,
            next: AtomicUsize::new(0),
            taken: None,
            stored: Mutex::new(Vec::new()),
        }
    }

    fn event(&self, id: &str, user: &str) -> NewWebhookEvent {
        NewWebhookEvent {
            event_id: format!("{}:{id}", self.kind),
            user_id: user.into(),
            event_type: self.kind.into(),
            body: format!(r#"{{"id":"{id}"}}"#),
            created_at: base_time(),
        }
    }

    fn stored(&self) -> Vec<usize> {
        self.stored.lock().unwrap().clone()
    }
}

impl Announce<SessionRecord> for Probe {
    fn event(&self, record: &SessionRecord) -> Option<NewWebhookEvent> {
        Some(self.event(&record.session_id, &record.user_id))
    }
    fn delivery_id(&self) -> String {
        match self.taken {
            Some(id) => id.to_string(),
            None => format!("{}-{}", self.kind, self.next.fetch_add(1, Ordering::SeqCst)),
        }
    }
    fn stored(&self, deliveries: usize) {
        self.stored.lock().unwrap().push(deliveries);
    }
}

impl Announce<VerificationJobRecord> for Probe {
    fn event(&self, record: &VerificationJobRecord) -> Option<NewWebhookEvent> {
        // Like the service's: only a job's end is announced.
        record
            .status
            .is_finished()
            .then(|| self.event(&record.job_id, &record.user_id))
    }
    fn delivery_id(&self) -> String {
        <Self as Announce<SessionRecord>>::delivery_id(self)
    }
    fn stored(&self, deliveries: usize) {
        <Self as Announce<SessionRecord>>::stored(self, deliveries)
    }
}

impl Announce<SnapshotRecord> for Probe {
    fn event(&self, record: &SnapshotRecord) -> Option<NewWebhookEvent> {
        Some(self.event(&record.snapshot_id, &record.user_id))
    }
    fn delivery_id(&self) -> String {
        <Self as Announce<SessionRecord>>::delivery_id(self)
    }
    fn stored(&self, deliveries: usize) {
        <Self as Announce<SessionRecord>>::stored(self, deliveries)
    }
}

/// Of an instance's id (`set_instance_source`).
impl Announce<str> for Probe {
    fn event(&self, instance_id: &str) -> Option<NewWebhookEvent> {
        Some(self.event(instance_id, "alice"))
    }
    fn delivery_id(&self) -> String {
        <Self as Announce<SessionRecord>>::delivery_id(self)
    }
    fn stored(&self, deliveries: usize) {
        <Self as Announce<SessionRecord>>::stored(self, deliveries)
    }
}

async fn deliveries(db: &TestDb) -> Vec<DeliveryRecord> {
    let mut all = db
        .store
        .list_webhook_deliveries("hook", None, 100, 0)
        .await
        .unwrap();
    all.sort_by(|a, b| a.delivery_id.cmp(&b.delivery_id));
    all
}

fn events(found: &[DeliveryRecord]) -> Vec<String> {
    let mut ids: Vec<String> = found.iter().map(|d| d.event_id.clone()).collect();
    ids.sort();
    ids
}

pub async fn events_are_stored_with_their_change(db: TestDb) {
    let store = db.store.as_ref();
    creating_session(store, "plain", "alice").await;
    store
        .insert_webhook(
            &WebhookRecord {
                webhook_id: "hook".into(),
                user_id: "alice".into(),
                url: "https://example.test/hook".into(),
                description: String::new(),
                events: vec!["*".into()],
                active: true,
                secret_sealed: "v1:sealed".into(),
                created_at: base_time(),
                updated_at: base_time(),
            },
            5,
        )
        .await
        .unwrap()
        .unwrap();

    // Created: the event is there with the row; a conflicting insert stores neither.
    let created = Probe::new("created");
    store
        .insert_session(&new_session("s1", "alice", base_time()), Some(&created))
        .await
        .unwrap();
    let again = store
        .insert_session(&new_session("s1", "alice", base_time()), Some(&created))
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(events(&deliveries(&db).await), ["created:s1"]);
    assert_eq!(created.stored(), [1], "told once, after the commit");
    let pending = &deliveries(&db).await[0];
    assert_eq!(pending.body, r#"{"id":"s1"}"#);
    assert_eq!(pending.event_type, "created");

    // Ready: once; a second move from `creating` changes nothing and announces nothing,
    // and an error after ready is no change either.
    let ready = Probe::new("ready");
    let at = base_time() + Duration::seconds(1);
    assert!(store
        .mark_session_ready("s1", "s1", "local:test", at, Some(&ready))
        .await
        .unwrap()
        .is_some());
    assert!(store
        .mark_session_ready("s1", "s1", "local:test", at, Some(&ready))
        .await
        .unwrap()
        .is_none());
    let failed = Probe::new("failed");
    assert!(store
        .mark_session_error("s1", "boom", "late", at, Some(&failed))
        .await
        .unwrap()
        .is_none());
    assert_eq!(events(&deliveries(&db).await), ["created:s1", "ready:s1"]);
    assert_eq!(ready.stored(), [1]);
    assert!(failed.stored().is_empty());

    // An event that cannot be stored (its delivery id is taken) undoes its change: the
    // session is still `creating`, and no half of either is visible.
    let broken = Probe {
        taken: Some("created-0"),
        ..Probe::new("broken")
    };
    let lost = store
        .mark_session_error("plain", "boom", "no", at, Some(&broken))
        .await;
    assert!(lost.is_err(), "{lost:?}");
    let plain = store.get_session("plain").await.unwrap().unwrap();
    assert_eq!(
        plain.status,
        SessionStatus::Creating,
        "rolled back with its event"
    );
    assert!(broken.stored().is_empty());
    let failed_start = Probe::new("error");
    store
        .mark_session_error("plain", "boom", "no", at, Some(&failed_start))
        .await
        .unwrap()
        .unwrap();

    // A verification job: announced at its end only, once.
    store
        .insert_verification_job(&new_job("job", "s1", "alice", 2))
        .await
        .unwrap();
    let job = Probe::new("job");
    store
        .update_verification_job("job", &update(JobStatus::Running, 3), Some(&job))
        .await
        .unwrap()
        .unwrap();
    store
        .update_verification_job("job", &update(JobStatus::Cancelled, 4), Some(&job))
        .await
        .unwrap()
        .unwrap();
    assert!(store
        .update_verification_job("job", &update(JobStatus::Error, 5), Some(&job))
        .await
        .unwrap()
        .is_none());
    assert_eq!(job.stored(), [0, 1], "running is stored without an event");

    // A snapshot: created (not over the quota), deleted once.
    let new = |id: &str| NewSnapshot {
        snapshot_id: id.into(),
        user_id: "alice".into(),
        instance_id: "s1".into(),
        parent_snapshot_id: None,
        name: id.into(),
        kind: SnapshotKind::Snapshot,
        size_bytes: 10,
        runtime_ref: format!("rt-{id}"),
        created_at: base_time(),
        deleted: false,
    };
    let one = SnapshotQuota {
        max_count: 1,
        max_bytes: 100,
    };
    let snap = Probe::new("snap");
    let first = store.insert_snapshot(&new("p1"), one, Some(&snap)).await;
    assert!(
        matches!(first, Ok(SnapshotInsert::Inserted(_))),
        "{first:?}"
    );
    let over = store.insert_snapshot(&new("p2"), one, Some(&snap)).await;
    assert!(matches!(over, Ok(SnapshotInsert::OverQuota(_))), "{over:?}");
    let gone = Probe::new("gone");
    for _ in 0..2 {
        store
            .mark_snapshot_deleted("p1", base_time(), Some(&gone))
            .await
            .unwrap();
    }
    assert_eq!((snap.stored(), gone.stored()), (vec![1], vec![1]));

    // What an instance stands on (a restore): with its event, or, when the event cannot
    // be stored, not at all.
    store.insert_snapshot(&new("p3"), one, None).await.unwrap();
    let restored = Probe::new("restored");
    store
        .set_instance_source("s1", "p3", base_time(), Some(&restored))
        .await
        .unwrap();
    assert_eq!(restored.stored(), [1]);
    let broken = Probe {
        taken: Some("created-0"),
        ..Probe::new("broken")
    };
    let lost = store
        .set_instance_source("s1", "p1", base_time(), Some(&broken))
        .await;
    assert!(lost.is_err(), "{lost:?}");
    assert_eq!(
        store.instance_source("s1").await.unwrap().as_deref(),
        Some("p3"),
        "rolled back with its event"
    );

    // The end and its charge: once, with its event; a racing second end gets nothing.
    let ended = Probe::new("ended");
    let end = SessionEnd {
        session_id: "s1".into(),
        status: SessionStatus::Closed,
        at: base_time() + Duration::seconds(90),
        at_last_heartbeat: false,
        reason: None,
        cost_per_minute_cents: 0,
        transaction_id: "txn-s1".into(),
    };
    assert!(store
        .end_session_billed(&end, Some(&ended))
        .await
        .unwrap()
        .is_some());
    assert!(store
        .end_session_billed(&end, Some(&ended))
        .await
        .unwrap()
        .is_none());
    assert_eq!(ended.stored(), [1]);
    assert_eq!(
        events(&deliveries(&db).await),
        [
            "created:s1",
            "ended:s1",
            "error:plain",
            "gone:p1",
            "job:job",
            "ready:s1",
            "restored:s1",
            "snap:p1"
        ]
    );
}

//! Snapshots: the quota checked in the insert, live names unique per instance, deletes
//! that hide, what the GC may purge (nothing a live instance or a kept snapshot stands
//! on), and the conditional swap of a session's sandbox.
use std::sync::Arc;

use chrono::Duration;
use kiln_store::{
    NewSnapshot, SessionStatus, SnapshotInsert, SnapshotKind, SnapshotQuota, Store, StoreError,
};
use tokio::sync::Barrier;

use crate::harness::{base_time, creating_session, TestDb};

fn snap(id: &str, instance: &str, name: &str, size: u64, parent: Option<&str>) -> NewSnapshot {
    NewSnapshot {
        snapshot_id: id.to_string(),
        user_id: "alice".into(),
        instance_id: instance.to_string(),
        parent_snapshot_id: parent.map(str::to_string),
        name: name.to_string(),
        kind: SnapshotKind::Snapshot,
        size_bytes: size,
        runtime_ref: format!("rt-{id}"),
        created_at: base_time() + Duration::seconds(id.len() as i64),
        deleted: false,
    }
}

const ROOMY: SnapshotQuota = SnapshotQuota {
    max_count: 100,
    max_bytes: 1 << 40,
};

async fn insert(store: &dyn Store, new: &NewSnapshot) {
    match store.insert_snapshot(new, ROOMY, None).await.unwrap() {
        SnapshotInsert::Inserted(record) => {
            assert_eq!(record.name, new.name);
            assert_eq!(record.size_bytes, new.size_bytes);
            assert_eq!(record.deleted_at.is_some(), new.deleted);
        }
        other => panic!("not inserted: {other:?}"),
    }
}

pub async fn snapshot_quota_names_and_deletes(db: TestDb) {
    let store = db.store.as_ref();
    creating_session(store, "ses-1", "alice").await;
    let quota = SnapshotQuota {
        max_count: 2,
        max_bytes: 100,
    };
    let first = store
        .insert_snapshot(&snap("s1", "ses-1", "a", 60, None), quota, None)
        .await
        .unwrap();
    assert!(matches!(first, SnapshotInsert::Inserted(_)), "{first:?}");
    // Bytes: 60 + 50 > 100.
    let over = store
        .insert_snapshot(&snap("s2", "ses-1", "b", 50, None), quota, None)
        .await
        .unwrap();
    assert_eq!(
        over,
        SnapshotInsert::OverQuota(kiln_store::SnapshotUsage {
            count: 1,
            bytes: 60
        })
    );
    assert!(store.get_snapshot("s2").await.unwrap().is_none());
    // The name is taken while "a" lives.
    let taken = store
        .insert_snapshot(&snap("s3", "ses-1", "a", 1, None), quota, None)
        .await;
    assert!(
        matches!(taken, Err(StoreError::Conflict("name"))),
        "{taken:?}"
    );
    insert(store, &snap("s4", "ses-1", "b", 40, None)).await;
    // Count: 2 of 2.
    let over = store
        .insert_snapshot(&snap("s5", "ses-1", "c", 0, None), quota, None)
        .await
        .unwrap();
    assert!(matches!(over, SnapshotInsert::OverQuota(_)), "{over:?}");

    let listed = store.list_snapshots("ses-1").await.unwrap();
    let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["b", "a"], "newest first");

    // A delete hides it, frees its name and its room, once.
    let at = base_time() + Duration::minutes(1);
    assert!(store
        .mark_snapshot_deleted("s1", at, None)
        .await
        .unwrap()
        .is_some());
    assert!(store
        .mark_snapshot_deleted("s1", at, None)
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.list_snapshots("ses-1").await.unwrap().len(), 1);
    assert_eq!(store.snapshot_usage("alice").await.unwrap().bytes, 40);
    insert(store, &snap("s6", "ses-1", "a", 60, None)).await;

    // A snapshot stored deleted is outside the quota.
    let mut hidden = snap("s7", "ses-1", "fork-s7", 1 << 30, None);
    hidden.deleted = true;
    insert(store, &hidden).await;
    assert_eq!(store.snapshot_usage("alice").await.unwrap().count, 2);
    let missing = store
        .insert_snapshot(&snap("s8", "nope", "x", 1, None), ROOMY, None)
        .await;
    assert!(
        matches!(missing, Err(StoreError::Missing(_))),
        "{missing:?}"
    );
}

pub async fn racing_snapshot_inserts_keep_the_quota(db: TestDb) {
    let store: Arc<dyn Store> = db.store.clone();
    creating_session(store.as_ref(), "ses-1", "alice").await;
    let quota = SnapshotQuota {
        max_count: 3,
        max_bytes: 1 << 40,
    };
    let barrier = Arc::new(Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let new = snap(&format!("r{n}"), "ses-1", &format!("n{n}"), 1, None);
                store.insert_snapshot(&new, quota, None).await.unwrap()
            })
        })
        .collect();
    let mut inserted = 0;
    for task in tasks {
        if matches!(task.await.unwrap(), SnapshotInsert::Inserted(_)) {
            inserted += 1;
        }
    }
    assert_eq!(inserted, 3);
}

pub async fn only_snapshots_nothing_stands_on_are_purgeable(db: TestDb) {
    let store = db.store.as_ref();
    creating_session(store, "ses-1", "alice").await;
    insert(store, &snap("base", "ses-1", "base", 1, None)).await;
    // A fork of "base", and a snapshot of that fork (stacked on "base").
    creating_session(store, "fork", "alice").await;
    let at = base_time() + Duration::minutes(1);
    store
        .set_instance_source("fork", "base", at, None)
        .await
        .unwrap();
    assert_eq!(
        store.instance_source("fork").await.unwrap().as_deref(),
        Some("base")
    );
    insert(store, &snap("child", "fork", "child", 1, Some("base"))).await;

    store.mark_snapshot_deleted("base", at, None).await.unwrap();
    let ids = |found: Vec<kiln_store::SnapshotRecord>| -> Vec<String> {
        found.into_iter().map(|s| s.snapshot_id).collect()
    };
    assert!(store.purgeable_snapshots(10).await.unwrap().is_empty());
    // The fork ends; the child snapshot still stands on "base".
    store
        .end_session("fork", SessionStatus::Closed, at)
        .await
        .unwrap()
        .unwrap();
    assert!(store.purgeable_snapshots(10).await.unwrap().is_empty());
    // The child is deleted: it goes first, then "base".
    store
        .mark_snapshot_deleted("child", at, None)
        .await
        .unwrap();
    assert_eq!(ids(store.purgeable_snapshots(10).await.unwrap()), ["child"]);
    assert!(store.mark_snapshot_purged("child", at).await.unwrap());
    assert!(!store.mark_snapshot_purged("child", at).await.unwrap());
    assert_eq!(ids(store.purgeable_snapshots(10).await.unwrap()), ["base"]);
    assert!(store.mark_snapshot_purged("base", at).await.unwrap());
    assert!(store.purgeable_snapshots(10).await.unwrap().is_empty());
    // Not deleted: never purged.
    assert!(!store.mark_snapshot_purged("nope", at).await.unwrap());
}

pub async fn a_sandbox_swap_needs_the_old_sandbox_and_a_ready_session(db: TestDb) {
    let store = db.store.as_ref();
    creating_session(store, "ses-1", "alice").await;
    let at = base_time();
    assert!(store
        .replace_session_sandbox("ses-1", "ses-1", "ses-1-r1")
        .await
        .unwrap()
        .is_none());
    store
        .mark_session_ready("ses-1", "ses-1", "local:test", at, None)
        .await
        .unwrap()
        .unwrap();
    assert!(store
        .replace_session_sandbox("ses-1", "other", "ses-1-r1")
        .await
        .unwrap()
        .is_none());
    let swapped = store
        .replace_session_sandbox("ses-1", "ses-1", "ses-1-r1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(swapped.sandbox_id.as_deref(), Some("ses-1-r1"));
    assert_eq!(swapped.status, SessionStatus::Ready);
    store
        .end_session("ses-1", SessionStatus::Closed, at)
        .await
        .unwrap();
    assert!(store
        .replace_session_sandbox("ses-1", "ses-1-r1", "ses-1-r2")
        .await
        .unwrap()
        .is_none());
}

/// The runtime copies the store knows: every snapshot's not purged, deleted ones included;
/// an unknown name and a purged snapshot's are not.
pub async fn recorded_runtime_refs_are_those_not_purged(db: TestDb) {
    let store = db.store.as_ref();
    creating_session(store, "ses-1", "alice").await;
    insert(store, &snap("kept", "ses-1", "a", 1, None)).await;
    insert(store, &snap("gone", "ses-1", "b", 1, None)).await;
    insert(store, &snap("hidden", "ses-1", "c", 1, None)).await;
    let at = base_time() + Duration::seconds(60);
    assert!(store
        .mark_snapshot_deleted("gone", at, None)
        .await
        .unwrap()
        .is_some());
    assert!(store.mark_snapshot_purged("gone", at).await.unwrap());
    assert!(store
        .mark_snapshot_deleted("hidden", at, None)
        .await
        .unwrap()
        .is_some());
    let mut asked: Vec<String> = ["rt-kept", "rt-gone", "rt-hidden", "rt-never"]
        .into_iter()
        .map(String::from)
        .collect();
    // More than one statement's worth of names.
    asked.extend((0..1200).map(|n| format!("rt-none-{n}")));
    let mut known = store.recorded_snapshot_refs(&asked).await.unwrap();
    known.sort();
    assert_eq!(known, ["rt-hidden", "rt-kept"]);
    assert!(store.recorded_snapshot_refs(&[]).await.unwrap().is_empty());
}

//! Sessions: insertion, status moves, listings.
use chrono::Duration;
use kiln_store::{SessionSource, SessionStatus, SessionUsage, StoreError};

use crate::harness::{
    base_time, create_user, creating_session, new_session, prepare_sessions, TestDb,
    SESSION_DATASET, SESSION_SAMPLE,
};

pub async fn session_lifecycle_creating_ready_closed(db: TestDb) {
    let store = db.store.as_ref();
    prepare_sessions(store, "alice").await;
    let requested = base_time() + Duration::nanoseconds(999);
    let new = new_session("sess-1", "alice", requested);
    let created = store.insert_session(&new, None).await.unwrap();
    assert_eq!(created.session_id, "sess-1");
    assert_eq!(created.user_id, "alice");
    assert_eq!(
        created.source.sample(),
        Some((SESSION_DATASET, SESSION_SAMPLE, 1))
    );
    assert_eq!(created.status, SessionStatus::Creating);
    assert_eq!(
        created.requested_at,
        base_time(),
        "truncated to microseconds"
    );
    assert_eq!(created.expires_at, base_time() + Duration::minutes(30));
    assert_eq!((created.ready_at, created.ended_at), (None, None));
    assert_eq!(
        (created.sandbox_id.clone(), created.location.clone()),
        (None, None)
    );
    assert_eq!(
        (created.error_code.clone(), created.error_message.clone()),
        (None, None)
    );
    assert_eq!(
        store.get_session("sess-1").await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(store.count_live_sessions("alice").await.unwrap(), 1);

    let ready_at = base_time() + Duration::microseconds(1_500_001);
    let ready = store
        .mark_session_ready("sess-1", "kiln-sbx-1", "local:host", ready_at, None)
        .await
        .unwrap()
        .expect("creating → ready");
    assert_eq!(ready.status, SessionStatus::Ready);
    assert_eq!(ready.ready_at, Some(ready_at));
    assert_eq!(ready.sandbox_id.as_deref(), Some("kiln-sbx-1"));
    assert_eq!(ready.location.as_deref(), Some("local:host"));
    assert_eq!(ready.ended_at, None);
    assert_eq!(
        store.get_session("sess-1").await.unwrap(),
        Some(ready.clone())
    );
    assert_eq!(store.count_live_sessions("alice").await.unwrap(), 1);

    // Only `Creating` moves to Ready or Error.
    let again = store
        .mark_session_ready("sess-1", "other", "elsewhere", ready_at, None)
        .await
        .unwrap();
    assert_eq!(again, None);
    assert_eq!(
        store
            .mark_session_error("sess-1", "x", "y", ready_at, None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.get_session("sess-1").await.unwrap(),
        Some(ready.clone()),
        "unchanged"
    );

    let ended_at = ready_at + Duration::seconds(90);
    let closed = store
        .end_session("sess-1", SessionStatus::Closed, ended_at)
        .await
        .unwrap()
        .expect("ready → closed");
    assert_eq!(closed.status, SessionStatus::Closed);
    assert_eq!(closed.ended_at, Some(ended_at));
    assert_eq!(closed.ready_at, Some(ready_at), "kept for billing");
    assert_eq!(
        closed.sandbox_id.as_deref(),
        Some("kiln-sbx-1"),
        "kept for cleanup"
    );
    assert_eq!(store.count_live_sessions("alice").await.unwrap(), 0);

    // Nothing leaves Closed.
    let later = ended_at + Duration::seconds(1);
    assert_eq!(
        store
            .end_session("sess-1", SessionStatus::Terminated, later)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .end_session("sess-1", SessionStatus::Closed, later)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .mark_session_ready("sess-1", "s", "l", later, None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.get_session("sess-1").await.unwrap(), Some(closed));
}

pub async fn session_creation_can_fail_or_be_terminated(db: TestDb) {
    let store = db.store.as_ref();
    creating_session(store, "failing", "alice").await;
    let at = base_time() + Duration::seconds(3);
    let failed = store
        .mark_session_error(
            "failing",
            "sandbox_failed",
            "image missing: ünïcödé",
            at,
            None,
        )
        .await
        .unwrap()
        .expect("creating → error");
    assert_eq!(failed.status, SessionStatus::Error);
    assert_eq!(failed.error_code.as_deref(), Some("sandbox_failed"));
    assert_eq!(
        failed.error_message.as_deref(),
        Some("image missing: ünïcödé")
    );
    assert_eq!(failed.ended_at, Some(at));
    assert_eq!(failed.ready_at, None);
    // Nothing leaves Error.
    assert_eq!(
        store
            .mark_session_ready("failing", "s", "l", at, None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .end_session("failing", SessionStatus::Closed, at)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.get_session("failing").await.unwrap(), Some(failed));

    // A session closed while its sandbox is being created: the late `ready` loses.
    creating_session(store, "abandoned", "alice").await;
    let terminated = store
        .end_session("abandoned", SessionStatus::Terminated, at)
        .await
        .unwrap()
        .expect("creating → terminated");
    assert_eq!(terminated.status, SessionStatus::Terminated);
    assert_eq!(terminated.ended_at, Some(at));
    assert_eq!(
        store
            .mark_session_ready("abandoned", "late", "l", at, None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .get_session("abandoned")
            .await
            .unwrap()
            .unwrap()
            .sandbox_id,
        None
    );
}

pub async fn end_session_accepts_only_closed_or_terminated(db: TestDb) {
    let store = db.store.as_ref();
    let created = creating_session(store, "sess", "alice").await;
    for status in [
        SessionStatus::Creating,
        SessionStatus::Ready,
        SessionStatus::Error,
    ] {
        let outcome = store.end_session("sess", status, base_time()).await;
        assert!(
            matches!(outcome, Err(StoreError::Invalid(_))),
            "{status:?}: {outcome:?}"
        );
    }
    assert_eq!(
        store.get_session("sess").await.unwrap(),
        Some(created),
        "unchanged"
    );
}

pub async fn unknown_session_ids_give_none(db: TestDb) {
    let store = db.store.as_ref();
    creating_session(store, "known", "alice").await;
    let at = base_time();
    assert_eq!(store.get_session("nope").await.unwrap(), None);
    assert_eq!(
        store
            .mark_session_ready("nope", "s", "l", at, None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .mark_session_error("nope", "c", "m", at, None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .end_session("nope", SessionStatus::Closed, at)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.count_live_sessions("nobody").await.unwrap(), 0);
    assert_eq!(
        store.list_sessions("nobody", 10, 0).await.unwrap(),
        (vec![], 0)
    );
}

pub async fn session_insert_checks_ids_and_references(db: TestDb) {
    let store = db.store.as_ref();
    prepare_sessions(store, "alice").await;
    let first = store
        .insert_session(&new_session("sess", "alice", base_time()), None)
        .await
        .unwrap();

    let mut same_id = new_session("sess", "alice", base_time() + Duration::seconds(1));
    same_id.expires_at = base_time() + Duration::hours(9);
    let outcome = store.insert_session(&same_id, None).await;
    assert!(
        matches!(outcome, Err(StoreError::Conflict("session_id"))),
        "{outcome:?}"
    );
    assert_eq!(
        store.get_session("sess").await.unwrap(),
        Some(first),
        "unchanged"
    );

    let unknown_user = store
        .insert_session(&new_session("s2", "nobody", base_time()), None)
        .await;
    assert!(
        matches!(unknown_user, Err(StoreError::Missing(_))),
        "{unknown_user:?}"
    );
    let mut unknown_version = new_session("s3", "alice", base_time());
    unknown_version.source = SessionSource::Sample {
        dataset: SESSION_DATASET.into(),
        sample_id: SESSION_SAMPLE.into(),
        version: 2,
    };
    let outcome = store.insert_session(&unknown_version, None).await;
    assert!(
        matches!(outcome, Err(StoreError::Missing(_))),
        "{outcome:?}"
    );
    let mut unknown_sample = new_session("s4", "alice", base_time());
    unknown_sample.source = SessionSource::Sample {
        dataset: SESSION_DATASET.into(),
        sample_id: "org__other-9".into(),
        version: 1,
    };
    let outcome = store.insert_session(&unknown_sample, None).await;
    assert!(
        matches!(outcome, Err(StoreError::Missing(_))),
        "{outcome:?}"
    );
    for id in ["s2", "s3", "s4"] {
        assert_eq!(
            store.get_session(id).await.unwrap(),
            None,
            "{id} not written"
        );
    }
}

pub async fn sessions_listed_newest_first_with_total(db: TestDb) {
    let store = db.store.as_ref();
    prepare_sessions(store, "alice").await;
    create_user(store, "bob").await;
    let t = |seconds| base_time() + Duration::seconds(seconds);
    // Inserted out of order; three share one instant, so the id breaks the tie, by bytes:
    // "s-a" > "s-_" > "s-B".
    for (id, at) in [
        ("s-old", t(0)),
        ("s-B", t(5)),
        ("s-new", t(9)),
        ("s-a", t(5)),
        ("s-_", t(5)),
    ] {
        store
            .insert_session(&new_session(id, "alice", at), None)
            .await
            .unwrap();
    }
    store
        .insert_session(&new_session("bobs", "bob", t(7)), None)
        .await
        .unwrap();
    // A microsecond apart is apart.
    store
        .insert_session(
            &new_session("s-micro", "alice", t(9) + Duration::microseconds(1)),
            None,
        )
        .await
        .unwrap();

    let (all, total) = store.list_sessions("alice", 100, 0).await.unwrap();
    let ids: Vec<_> = all.iter().map(|s| s.session_id.as_str()).collect();
    assert_eq!(ids, ["s-micro", "s-new", "s-a", "s-_", "s-B", "s-old"]);
    assert_eq!(total, 6);
    assert!(all.iter().all(|s| s.user_id == "alice"));

    let (page, total) = store.list_sessions("alice", 2, 2).await.unwrap();
    let ids: Vec<_> = page.iter().map(|s| s.session_id.as_str()).collect();
    assert_eq!((ids, total), (vec!["s-a", "s-_"], 6));
    let (tail, total) = store.list_sessions("alice", 10, 5).await.unwrap();
    assert_eq!(
        (tail.len(), tail[0].session_id.as_str(), total),
        (1, "s-old", 6)
    );
    let (beyond, total) = store.list_sessions("alice", 10, 50).await.unwrap();
    assert_eq!((beyond.len(), total), (0, 6));
    let (none, total) = store.list_sessions("alice", 0, 0).await.unwrap();
    assert_eq!((none.len(), total), (0, 6));
    let (huge, _) = store.list_sessions("alice", u64::MAX, 0).await.unwrap();
    assert_eq!(huge.len(), 6, "a limit beyond i64 means everything");

    let (bobs, total) = store.list_sessions("bob", 10, 0).await.unwrap();
    assert_eq!(
        (bobs.len(), bobs[0].session_id.as_str(), total),
        (1, "bobs", 1)
    );
}

pub async fn live_sessions_counted_and_listed_by_status(db: TestDb) {
    let store = db.store.as_ref();
    prepare_sessions(store, "alice").await;
    create_user(store, "bob").await;
    let t = |seconds| base_time() + Duration::seconds(seconds);
    for (id, user, at) in [
        ("a-creating", "alice", t(1)),
        ("a-ready", "alice", t(2)),
        ("a-error", "alice", t(3)),
        ("a-closed", "alice", t(4)),
        ("b-ready", "bob", t(0)),
        ("b-terminated", "bob", t(5)),
    ] {
        store
            .insert_session(&new_session(id, user, at), None)
            .await
            .unwrap();
    }
    let at = t(10);
    for id in ["a-ready", "a-closed", "b-ready"] {
        store
            .mark_session_ready(id, "sbx", "local:x", at, None)
            .await
            .unwrap()
            .unwrap();
    }
    store
        .mark_session_error("a-error", "c", "m", at, None)
        .await
        .unwrap()
        .unwrap();
    store
        .end_session("a-closed", SessionStatus::Closed, at)
        .await
        .unwrap()
        .unwrap();
    store
        .end_session("b-terminated", SessionStatus::Terminated, at)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(store.count_live_sessions("alice").await.unwrap(), 2);
    assert_eq!(store.count_live_sessions("bob").await.unwrap(), 1);

    let ids = |sessions: Vec<kiln_store::SessionRecord>| {
        sessions
            .into_iter()
            .map(|s| s.session_id)
            .collect::<Vec<_>>()
    };
    let live = store
        .list_sessions_in(&[SessionStatus::Creating, SessionStatus::Ready])
        .await
        .unwrap();
    assert_eq!(
        ids(live),
        ["b-ready", "a-creating", "a-ready"],
        "oldest first, all users"
    );
    let ended = store
        .list_sessions_in(&[
            SessionStatus::Closed,
            SessionStatus::Terminated,
            SessionStatus::Error,
        ])
        .await
        .unwrap();
    assert_eq!(ids(ended), ["a-error", "a-closed", "b-terminated"]);
    let errors = store
        .list_sessions_in(&[SessionStatus::Error])
        .await
        .unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].error_code.as_deref(), Some("c"));
    assert!(store.list_sessions_in(&[]).await.unwrap().is_empty());
}

pub async fn session_usage_samples_are_kept_with_the_session(db: TestDb) {
    let store = db.store.as_ref();
    prepare_sessions(store, "alice").await;
    store
        .insert_session(&new_session("used", "alice", base_time()), None)
        .await
        .unwrap();
    assert_eq!(
        store.get_session("used").await.unwrap().unwrap().usage,
        None
    );
    assert!(!store
        .record_session_usage("nope", &usage_at(base_time(), Some(1)))
        .await
        .unwrap());

    let first = SessionUsage {
        cpu_micros: Some(1_500_000),
        memory_peak_bytes: Some(50 << 20),
        disk_used_bytes: Some(4 << 20),
        disk_limit_bytes: Some(10 << 30),
        pids_peak: Some(7),
        sampled_at: base_time() + Duration::seconds(10),
    };
    assert!(store.record_session_usage("used", &first).await.unwrap());
    assert_eq!(
        store.get_session("used").await.unwrap().unwrap().usage,
        Some(first)
    );

    // Ending the session keeps its usage; the last sample (taken after the end, before
    // the sandbox goes) still lands. Fewer processes now: the peak stays; a field the
    // sample lacks keeps its value.
    let closed = store
        .end_session("used", SessionStatus::Closed, first.sampled_at)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed.usage, Some(first));
    let last = SessionUsage {
        cpu_micros: Some(2_000_000),
        memory_peak_bytes: None,
        pids_peak: Some(2),
        sampled_at: first.sampled_at + Duration::seconds(5),
        ..first
    };
    assert!(store.record_session_usage("used", &last).await.unwrap());
    let expected = SessionUsage {
        memory_peak_bytes: first.memory_peak_bytes,
        pids_peak: Some(7),
        ..last
    };
    assert_eq!(
        store.get_session("used").await.unwrap().unwrap().usage,
        Some(expected)
    );

    // A periodic sample that lost the race with the last one changes nothing.
    let stale = usage_at(first.sampled_at + Duration::seconds(1), Some(99));
    assert!(!store.record_session_usage("used", &stale).await.unwrap());
    let (listed, _) = store.list_sessions("alice", 10, 0).await.unwrap();
    assert_eq!(listed[0].usage, Some(expected));
}

fn usage_at(sampled_at: chrono::DateTime<chrono::Utc>, pids: Option<u64>) -> SessionUsage {
    SessionUsage {
        cpu_micros: None,
        memory_peak_bytes: None,
        disk_used_bytes: None,
        disk_limit_bytes: None,
        pids_peak: pids,
        sampled_at,
    }
}

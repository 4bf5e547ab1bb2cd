//! Instances: sessions made from an image, with names, labels and limits; the filtered
//! listing; changes; and migration 0008 over a database that already holds sessions.
use chrono::Duration;
use kiln_store::{
    Labels, NewSession, SessionChange, SessionFilter, SessionLimits, SessionSource, SessionStatus,
    StoreError,
};

use crate::harness::{base_time, new_session, prepare_sessions, TestDb};

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn image_instance(id: &str, user: &str, minutes: i64, with: &[(&str, &str)]) -> NewSession {
    NewSession {
        source: SessionSource::Image {
            reference: "kiln/busybox:1".into(),
        },
        name: Some(format!("instance {id} ✓")),
        labels: labels(with),
        limits: SessionLimits {
            cpu_millicores: Some(500),
            memory_bytes: Some(256 << 20),
            disk_bytes: Some(1 << 30),
        },
        ..new_session(id, user, base_time() + Duration::minutes(minutes))
    }
}

pub async fn image_instances_keep_name_labels_and_limits(db: TestDb) {
    let store = db.store.as_ref();
    prepare_sessions(store, "alice").await;
    let new = image_instance("i-1", "alice", 0, &[("team", "rl"), ("run", "a:b=c")]);
    let created = store.insert_session(&new, None).await.unwrap();
    assert_eq!(created.source, new.source);
    assert_eq!(created.source.sample(), None);
    assert_eq!(created.name, new.name);
    assert_eq!(created.labels, new.labels);
    assert_eq!(created.limits, new.limits);
    assert_eq!(created.status, SessionStatus::Creating);
    assert_eq!(store.get_session("i-1").await.unwrap(), Some(created));

    // A sample session has no name, labels or limits unless given.
    let sample = store
        .insert_session(&new_session("s-1", "alice", base_time()), None)
        .await
        .unwrap();
    assert_eq!((sample.name, sample.labels), (None, Labels::new()));
    assert_eq!(sample.limits, SessionLimits::default());

    // An image instance needs no sample, but still a user.
    let orphan = store
        .insert_session(&image_instance("i-2", "nobody", 0, &[]), None)
        .await;
    assert!(matches!(orphan, Err(StoreError::Missing(_))), "{orphan:?}");
}

pub async fn instances_listed_by_status_and_labels(db: TestDb) {
    let store = db.store.as_ref();
    prepare_sessions(store, "alice").await;
    prepare_sessions(store, "bob").await;
    for (id, minute, with) in [
        ("i-a", 1, vec![("team", "rl"), ("env", "py")]),
        ("i-b", 2, vec![("team", "rl")]),
        ("i-c", 3, vec![("team", "evals"), ("env", "py")]),
    ] {
        store
            .insert_session(&image_instance(id, "alice", minute, &with), None)
            .await
            .unwrap();
    }
    store
        .insert_session(&new_session("s-a", "alice", base_time()), None)
        .await
        .unwrap();
    store
        .insert_session(&image_instance("i-bob", "bob", 9, &[("team", "rl")]), None)
        .await
        .unwrap();
    store
        .mark_session_ready("i-b", "i-b", "local:test", base_time(), None)
        .await
        .unwrap();

    let ids = |page: &(Vec<kiln_store::SessionRecord>, u64)| {
        page.0
            .iter()
            .map(|s| s.session_id.clone())
            .collect::<Vec<_>>()
    };
    let all = store
        .list_instances("alice", &SessionFilter::default(), 10, 0)
        .await
        .unwrap();
    assert_eq!(ids(&all), ["i-c", "i-b", "i-a", "s-a"], "newest first");
    assert_eq!(all.1, 4);
    let page = store
        .list_instances("alice", &SessionFilter::default(), 2, 1)
        .await
        .unwrap();
    assert_eq!((ids(&page), page.1), (vec!["i-b".into(), "i-a".into()], 4));

    let filter = |statuses: Vec<SessionStatus>, pairs: &[(&str, &str)]| SessionFilter {
        statuses,
        labels: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..SessionFilter::default()
    };
    let rl = store
        .list_instances("alice", &filter(vec![], &[("team", "rl")]), 10, 0)
        .await
        .unwrap();
    assert_eq!((ids(&rl), rl.1), (vec!["i-b".into(), "i-a".into()], 2));
    let both = filter(vec![], &[("team", "rl"), ("env", "py")]);
    let both = store.list_instances("alice", &both, 10, 0).await.unwrap();
    assert_eq!(ids(&both), ["i-a"], "every label must match");
    let ready = filter(vec![SessionStatus::Ready], &[]);
    let ready = store.list_instances("alice", &ready, 10, 0).await.unwrap();
    assert_eq!((ids(&ready), ready.1), (vec!["i-b".into()], 1));
    let creating_rl = filter(vec![SessionStatus::Creating], &[("team", "rl")]);
    let creating_rl = store
        .list_instances("alice", &creating_rl, 10, 0)
        .await
        .unwrap();
    assert_eq!(ids(&creating_rl), ["i-a"]);
    // A key or value matches exactly, not as a pattern or a prefix.
    for pairs in [[("team", "r%")], [("tea", "rl")], [("team", "RL")]] {
        let none = store
            .list_instances("alice", &filter(vec![], &pairs), 10, 0)
            .await
            .unwrap();
        assert_eq!(none.1, 0, "{pairs:?}");
    }

    // The Codeset listing shows sample sessions only.
    let codeset = store.list_sessions("alice", 10, 0).await.unwrap();
    assert_eq!((ids(&codeset), codeset.1), (vec!["s-a".into()], 1));
}

pub async fn instance_changes_apply_and_expiry_only_while_live(db: TestDb) {
    let store = db.store.as_ref();
    prepare_sessions(store, "alice").await;
    store
        .insert_session(&image_instance("i-1", "alice", 0, &[("a", "1")]), None)
        .await
        .unwrap();
    let later = base_time() + Duration::minutes(90);
    let changed = store
        .change_session(
            "i-1",
            &SessionChange {
                name: Some(Some("renamed".into())),
                labels: Some(labels(&[("b", "2")])),
                expires_at: Some(later),
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed.name.as_deref(), Some("renamed"));
    assert_eq!(changed.labels, labels(&[("b", "2")]));
    assert_eq!(changed.expires_at, later);
    assert_eq!(
        store.get_session("i-1").await.unwrap(),
        Some(changed.clone())
    );

    // Nothing asked: nothing changes. The name can be removed, the rest stays.
    let same = store
        .change_session("i-1", &SessionChange::default())
        .await
        .unwrap();
    assert_eq!(same, Some(changed.clone()));
    let unnamed = store
        .change_session(
            "i-1",
            &SessionChange {
                name: Some(None),
                ..SessionChange::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(unnamed.name, None);
    assert_eq!(unnamed.labels, changed.labels);

    store
        .end_session("i-1", SessionStatus::Closed, base_time())
        .await
        .unwrap()
        .unwrap();
    let expiry = SessionChange {
        expires_at: Some(later + Duration::minutes(1)),
        ..SessionChange::default()
    };
    assert_eq!(store.change_session("i-1", &expiry).await.unwrap(), None);
    assert_eq!(
        store.get_session("i-1").await.unwrap().unwrap().expires_at,
        later,
        "an ended instance keeps its expiry"
    );
    let relabel = SessionChange {
        labels: Some(labels(&[("after", "end")])),
        ..SessionChange::default()
    };
    let relabelled = store.change_session("i-1", &relabel).await.unwrap();
    assert_eq!(relabelled.unwrap().labels, labels(&[("after", "end")]));
    assert_eq!(store.change_session("nope", &relabel).await.unwrap(), None);
}

pub async fn instances_found_by_search(db: TestDb) {
    let store = db.store.as_ref();
    prepare_sessions(store, "alice").await;
    prepare_sessions(store, "bob").await;
    for (id, minute, with) in [
        ("i-a", 1, vec![("team", "RL-Gym")]),
        ("i-b", 2, vec![("pct", "50%")]),
        ("i-c", 3, vec![("under", "a_b")]),
    ] {
        store
            .insert_session(&image_instance(id, "alice", minute, &with), None)
            .await
            .unwrap();
    }
    store
        .insert_session(&new_session("s-a", "alice", base_time()), None)
        .await
        .unwrap();
    store
        .insert_session(
            &image_instance("i-bob", "bob", 9, &[("team", "rl-gym")]),
            None,
        )
        .await
        .unwrap();
    store
        .mark_session_ready("i-b", "i-b", "local:test", base_time(), None)
        .await
        .unwrap();
    let found = |search: &str, statuses: Vec<SessionStatus>| SessionFilter {
        statuses,
        search: Some(search.to_string()),
        ..SessionFilter::default()
    };
    let ids = |page: (Vec<kiln_store::SessionRecord>, u64)| {
        let ids: Vec<String> = page.0.into_iter().map(|s| s.session_id).collect();
        (ids, page.1)
    };
    let cases: [(&str, &[&str]); 9] = [
        ("I-B", &["i-b"]),                   // the id, any case
        ("instance i-c", &["i-c"]),          // the name
        ("rl-gym", &["i-a"]),                // a label's value, not bob's
        ("team", &[]),                       // a label's key is not searched
        ("org__REPO", &["s-a"]),             // the sample id
        ("AGENTS", &["s-a"]),                // the dataset
        ("busybox", &["i-c", "i-b", "i-a"]), // the image
        ("%", &["i-b"]),                     // literally, not a wildcard
        ("a_b", &["i-c"]),                   // `_` too
    ];
    for (search, want) in cases {
        let page = store
            .list_instances("alice", &found(search, vec![]), 10, 0)
            .await
            .unwrap();
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        let n = want.len() as u64;
        assert_eq!(ids(page), (want, n), "{search}");
    }
    // With a status filter and a page: the total counts every match.
    let ready = store
        .list_instances(
            "alice",
            &found("busybox", vec![SessionStatus::Ready]),
            10,
            0,
        )
        .await
        .unwrap();
    assert_eq!(ids(ready), (vec!["i-b".to_string()], 1));
    let page = store
        .list_instances("alice", &found("instance", vec![]), 1, 1)
        .await
        .unwrap();
    assert_eq!(ids(page), (vec!["i-b".to_string()], 3));
    // An empty search is no filter.
    let all = store
        .list_instances("alice", &found("", vec![]), 10, 0)
        .await
        .unwrap();
    assert_eq!(all.1, 4);
}

//! What is written survives closing the store and opening it again from its URL.
use chrono::Duration;
use kiln_store::{NewApiKey, NewRefreshToken, RefreshOutcome, SampleQuery};

use crate::harness::{base_time, create_user, import, TestDb};

pub async fn data_survives_reopen(db: TestDb) {
    let TestDb {
        store,
        url,
        backend,
    } = db;
    let alice = create_user(store.as_ref(), "alice").await;
    let key = NewApiKey {
        key_id: "k1".into(),
        user_id: "alice".into(),
        name: None,
        key_hash: "hash-1".into(),
        masked: "kiln_k1…".into(),
        created_at: base_time(),
        expires_at: None,
    };
    let key = store.insert_api_key(&key).await.unwrap();
    let token = NewRefreshToken {
        token_id: "t1".into(),
        family_id: "f1".into(),
        user_id: "alice".into(),
        issued_at: base_time(),
        expires_at: base_time() + Duration::hours(1),
    };
    store.insert_refresh_token(&token).await.unwrap();
    store
        .import_samples(&import("swe", &["a", "b"], 1, base_time()))
        .await
        .unwrap();
    store
        .import_samples(&import("swe", &["a"], 2, base_time()))
        .await
        .unwrap();
    let samples = store.list_samples(&SampleQuery::default()).await.unwrap();
    let datasets = store.list_datasets().await.unwrap();
    drop(store);

    // Opening again also re-runs the migrations, which must find nothing to do.
    let store = kiln_store::connect(&url).await.expect("reopen");
    assert_eq!(store.backend(), backend);
    assert_eq!(store.get_user("alice").await.unwrap(), Some(alice.clone()));
    assert_eq!(
        store.find_api_key("hash-1", base_time()).await.unwrap(),
        Some(kiln_store::FoundApiKey {
            key,
            user: alice,
            org: None,
            default_membership: None,
        })
    );
    assert_eq!(
        store.list_samples(&SampleQuery::default()).await.unwrap(),
        samples
    );
    assert_eq!(store.list_datasets().await.unwrap(), datasets);
    assert_eq!(
        store
            .get_sample("swe", "a", Some(1))
            .await
            .unwrap()
            .map(|s| s.latest),
        Some(false)
    );
    assert!(matches!(
        store
            .consume_refresh_token("t1", base_time())
            .await
            .unwrap(),
        RefreshOutcome::Consumed { .. }
    ));
}

pub async fn sessions_survive_reopen(db: TestDb) {
    let TestDb { store, url, .. } = db;
    crate::harness::creating_session(store.as_ref(), "sess", "alice").await;
    let ready = store
        .mark_session_ready("sess", "sbx", "local:h", base_time(), None)
        .await
        .unwrap()
        .unwrap();
    for id in ["i-1", "i-2"] {
        let new = crate::harness::new_interaction(
            id,
            "sess",
            crate::harness::exec_request(id),
            base_time(),
        );
        store.insert_interaction(&new).await.unwrap();
    }
    let outcome = kiln_store::InteractionOutcome {
        stdout: "out".into(),
        finished_at: base_time(),
        ..Default::default()
    };
    assert!(store.complete_interaction("i-1", &outcome).await.unwrap());
    let done = store.get_interaction("sess", "i-1").await.unwrap();
    let pending = store.list_unfinished_interactions().await.unwrap();
    let job = crate::verification_jobs::new_job("job", "sess", "alice", 1);
    let job = store.insert_verification_job(&job).await.unwrap();
    drop(store);

    let store = kiln_store::connect(&url).await.expect("reopen");
    assert_eq!(store.get_session("sess").await.unwrap(), Some(ready));
    assert_eq!(store.get_interaction("sess", "i-1").await.unwrap(), done);
    assert_eq!(store.list_unfinished_interactions().await.unwrap(), pending);
    assert_eq!(
        store.list_unfinished_verification_jobs().await.unwrap(),
        vec![job]
    );
    // Numbering continues where it was.
    let next = crate::harness::new_interaction(
        "i-3",
        "sess",
        crate::harness::exec_request("x"),
        base_time(),
    );
    assert_eq!(store.insert_interaction(&next).await.unwrap().seq, 3);
}

//! Users, API keys and refresh tokens.
use chrono::{Duration, TimeZone, Utc};
use kiln_store::{NewApiKey, NewRefreshToken, RefreshOutcome, StoreError};

use crate::harness::{base_time, create_user, new_user, TestDb};

pub async fn backend_answers_ping(db: TestDb) {
    assert_eq!(db.store.backend(), db.backend);
    db.store.ping().await.expect("ping");
}

pub async fn users_round_trip(db: TestDb) {
    let store = db.store.as_ref();
    assert_eq!(store.count_users().await.unwrap(), 0);

    let mut alice_new = new_user("alice", Some("101"));
    alice_new.is_admin = true;
    let alice = store.create_user(&alice_new).await.unwrap();
    assert_eq!(alice.user_id, "alice");
    assert_eq!(alice.name, alice_new.name);
    assert_eq!(alice.email, alice_new.email);
    assert_eq!(alice.github_id.as_deref(), Some("101"));
    assert_eq!(alice.github_login.as_deref(), Some("login-101"));
    assert!(alice.is_admin);
    assert!(alice.is_active, "new users are active");
    assert_eq!(alice.created_at, alice_new.created_at);
    assert_eq!((alice.last_login_at, alice.terms_accepted_at), (None, None));

    // Users without a GitHub identity do not collide with each other on github_id.
    let bob = create_user(store, "bob").await;
    let carol = create_user(store, "carol").await;
    assert!(!bob.is_admin);
    assert_eq!(store.count_users().await.unwrap(), 3);

    assert_eq!(store.get_user("alice").await.unwrap(), Some(alice.clone()));
    assert_eq!(store.get_user("carol").await.unwrap(), Some(carol));
    assert_eq!(store.get_user("nobody").await.unwrap(), None);
    assert_eq!(
        store.get_user_by_github_id("101").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(store.get_user_by_github_id("999").await.unwrap(), None);

    let same_id = store.create_user(&new_user("alice", Some("202"))).await;
    assert!(
        matches!(same_id, Err(StoreError::Conflict("user_id"))),
        "{same_id:?}"
    );
    let same_github = store.create_user(&new_user("dave", Some("101"))).await;
    assert!(
        matches!(same_github, Err(StoreError::Conflict("github_id"))),
        "{same_github:?}"
    );
    assert_eq!(
        store.count_users().await.unwrap(),
        3,
        "failed creations write nothing"
    );

    let terms_at = base_time() + Duration::seconds(5);
    let login_at = base_time() + Duration::seconds(9);
    store.set_terms_accepted("alice", terms_at).await.unwrap();
    store.set_last_login("alice", login_at).await.unwrap();
    let alice_now = store.get_user("alice").await.unwrap().unwrap();
    assert_eq!(alice_now.terms_accepted_at, Some(terms_at));
    assert_eq!(alice_now.last_login_at, Some(login_at));
    assert_eq!(
        store.get_user("bob").await.unwrap(),
        Some(bob),
        "other users untouched"
    );
}

pub async fn timestamps_keep_microseconds_in_utc(db: TestDb) {
    let store = db.store.as_ref();
    let cases = [
        ("micros", base_time(), base_time()),
        (
            "nanos are truncated",
            base_time() + Duration::nanoseconds(999),
            base_time(),
        ),
        (
            "before 1970",
            Utc.with_ymd_and_hms(1969, 12, 31, 23, 59, 59).unwrap()
                + Duration::microseconds(999_999),
            Utc.with_ymd_and_hms(1969, 12, 31, 23, 59, 59).unwrap()
                + Duration::microseconds(999_999),
        ),
        (
            "from another offset",
            chrono::DateTime::parse_from_rfc3339("2025-06-01T02:03:04.000001+05:30")
                .unwrap()
                .with_timezone(&Utc),
            Utc.with_ymd_and_hms(2025, 5, 31, 20, 33, 4).unwrap() + Duration::microseconds(1),
        ),
    ];
    for (i, (what, written, expected)) in cases.into_iter().enumerate() {
        let mut user = new_user(&format!("u{i}"), None);
        user.created_at = written;
        let created = store.create_user(&user).await.unwrap();
        assert_eq!(
            created.created_at, expected,
            "{what}: as returned by create_user"
        );
        let read = store.get_user(&user.user_id).await.unwrap().unwrap();
        assert_eq!(read.created_at, expected, "{what}: as read back");
        store.set_last_login(&user.user_id, written).await.unwrap();
        let read = store.get_user(&user.user_id).await.unwrap().unwrap();
        assert_eq!(read.last_login_at, Some(expected), "{what}: last_login_at");
    }

    // Comparisons in the database see microseconds too: a key expiring at T is live 1 µs
    // before T and dead at T.
    create_user(store, "owner").await;
    let expires_at = base_time() + Duration::hours(1);
    store
        .insert_api_key(&new_key("k", "owner", "hash-k", Some(expires_at)))
        .await
        .unwrap();
    let just_before = expires_at - Duration::microseconds(1);
    assert!(store
        .find_api_key("hash-k", just_before)
        .await
        .unwrap()
        .is_some());
    assert!(store
        .find_api_key("hash-k", expires_at)
        .await
        .unwrap()
        .is_none());
}

fn new_key(
    key_id: &str,
    user_id: &str,
    key_hash: &str,
    expires_at: Option<chrono::DateTime<Utc>>,
) -> NewApiKey {
    NewApiKey {
        key_id: key_id.to_string(),
        user_id: user_id.to_string(),
        name: Some(format!("{key_id} name")),
        key_hash: key_hash.to_string(),
        masked: format!("kiln_{key_id}…"),
        created_at: base_time(),
        expires_at,
    }
}

pub async fn api_keys_lifecycle(db: TestDb) {
    let store = db.store.as_ref();
    let alice = create_user(store, "alice").await;
    create_user(store, "bob").await;

    // Inserted newest first: the listing must order by created_at, not by insertion.
    let mut later = new_key(
        "k-later",
        "alice",
        "hash-later",
        Some(base_time() + Duration::days(30)),
    );
    later.created_at = base_time() + Duration::seconds(1);
    later.name = None;
    let later = store.insert_api_key(&later).await.unwrap();
    let first = store
        .insert_api_key(&new_key("k-first", "alice", "hash-first", None))
        .await
        .unwrap();
    store
        .insert_api_key(&new_key("k-bob", "bob", "hash-bob", None))
        .await
        .unwrap();

    assert_eq!(first.key_id, "k-first");
    assert_eq!(first.user_id, "alice");
    assert_eq!(first.name.as_deref(), Some("k-first name"));
    assert_eq!(first.masked, "kiln_k-first…");
    assert_eq!(first.created_at, base_time());
    assert_eq!(
        (first.expires_at, first.revoked_at, first.last_used_at),
        (None, None, None)
    );
    assert_eq!(later.name, None);
    assert_eq!(later.expires_at, Some(base_time() + Duration::days(30)));

    let kiln_store::FoundApiKey {
        key: found,
        user: owner,
        org,
        default_membership,
    } = store
        .find_api_key("hash-first", base_time())
        .await
        .unwrap()
        .expect("live key");
    assert_eq!(found, first);
    assert_eq!(owner, alice);
    assert_eq!(org, None, "a personal key belongs to no organization");
    assert_eq!(default_membership, None, "alice is in no organization yet");
    assert_eq!(
        store
            .find_api_key("hash-unknown", base_time())
            .await
            .unwrap(),
        None
    );

    let listed = store.list_api_keys("alice").await.unwrap();
    assert_eq!(listed, vec![first.clone(), later.clone()]);
    assert_eq!(store.list_api_keys("nobody").await.unwrap(), vec![]);

    let used_at = base_time() + Duration::minutes(3);
    store.touch_api_key("k-first", used_at).await.unwrap();
    let listed = store.list_api_keys("alice").await.unwrap();
    assert_eq!(listed[0].last_used_at, Some(used_at));
    assert_eq!(listed[1].last_used_at, None, "only the touched key changes");

    let same_hash = store
        .insert_api_key(&new_key("k-other", "alice", "hash-first", None))
        .await;
    assert!(
        matches!(same_hash, Err(StoreError::Conflict("key_hash"))),
        "{same_hash:?}"
    );
    let same_id = store
        .insert_api_key(&new_key("k-first", "alice", "hash-new", None))
        .await;
    assert!(
        matches!(same_id, Err(StoreError::Conflict("key_id"))),
        "{same_id:?}"
    );
    let no_user = store
        .insert_api_key(&new_key("k-ghost", "ghost", "hash-ghost", None))
        .await;
    assert!(no_user.is_err(), "a key needs an existing user");
    assert_eq!(store.list_api_keys("alice").await.unwrap().len(), 2);
}

pub async fn expired_and_revoked_keys_are_not_found(db: TestDb) {
    let store = db.store.as_ref();
    create_user(store, "alice").await;
    create_user(store, "bob").await;
    let now = base_time();

    let expires_at = now + Duration::seconds(10);
    store
        .insert_api_key(&new_key("k-exp", "alice", "hash-exp", Some(expires_at)))
        .await
        .unwrap();
    assert!(store.find_api_key("hash-exp", now).await.unwrap().is_some());
    assert!(
        store
            .find_api_key("hash-exp", expires_at)
            .await
            .unwrap()
            .is_none(),
        "expired at expires_at"
    );
    assert!(store
        .find_api_key("hash-exp", expires_at + Duration::days(1))
        .await
        .unwrap()
        .is_none());

    store
        .insert_api_key(&new_key("k-live", "alice", "hash-live", None))
        .await
        .unwrap();
    assert!(
        !store.revoke_api_key("bob", "k-live", now).await.unwrap(),
        "not bob's key"
    );
    assert!(
        store
            .find_api_key("hash-live", now)
            .await
            .unwrap()
            .is_some(),
        "bob's attempt changed nothing"
    );
    assert!(!store
        .revoke_api_key("alice", "k-unknown", now)
        .await
        .unwrap());

    let revoked_at = now + Duration::seconds(1);
    assert!(store
        .revoke_api_key("alice", "k-live", revoked_at)
        .await
        .unwrap());
    assert!(
        store
            .find_api_key("hash-live", now)
            .await
            .unwrap()
            .is_none(),
        "revoked keys are not found"
    );
    assert!(
        !store
            .revoke_api_key("alice", "k-live", now + Duration::seconds(2))
            .await
            .unwrap(),
        "already revoked"
    );

    // An expired key can still be revoked (so that listings show it as revoked).
    assert!(store
        .revoke_api_key("alice", "k-exp", expires_at + Duration::days(2))
        .await
        .unwrap());

    let listed = store.list_api_keys("alice").await.unwrap();
    let live = listed
        .iter()
        .find(|k| k.key_id == "k-live")
        .expect("revoked keys stay listed");
    assert_eq!(
        live.revoked_at,
        Some(revoked_at),
        "the first revocation's time is kept"
    );
}

pub(crate) fn new_token(
    token_id: &str,
    family_id: &str,
    expires_at: chrono::DateTime<Utc>,
) -> NewRefreshToken {
    NewRefreshToken {
        token_id: token_id.to_string(),
        family_id: family_id.to_string(),
        user_id: "alice".to_string(),
        issued_at: base_time(),
        expires_at,
    }
}

pub async fn refresh_token_outcomes(db: TestDb) {
    let store = db.store.as_ref();
    create_user(store, "alice").await;
    let now = base_time();
    let expiry = now + Duration::hours(1);
    let consumed = |family: &str| RefreshOutcome::Consumed {
        user_id: "alice".into(),
        family_id: family.into(),
    };
    let reused = |family: &str| RefreshOutcome::Reused {
        user_id: "alice".into(),
        family_id: family.into(),
    };

    assert_eq!(
        store.consume_refresh_token("nope", now).await.unwrap(),
        RefreshOutcome::Unknown
    );

    store
        .insert_refresh_token(&new_token("t1", "f1", expiry))
        .await
        .unwrap();
    assert_eq!(
        store.consume_refresh_token("t1", now).await.unwrap(),
        consumed("f1")
    );
    assert_eq!(
        store.consume_refresh_token("t1", now).await.unwrap(),
        reused("f1")
    );

    let duplicate = store
        .insert_refresh_token(&new_token("t1", "f9", expiry))
        .await;
    assert!(
        matches!(duplicate, Err(StoreError::Conflict("token_id"))),
        "{duplicate:?}"
    );

    store
        .insert_refresh_token(&new_token("t2", "f2", expiry))
        .await
        .unwrap();
    assert_eq!(
        store.consume_refresh_token("t2", expiry).await.unwrap(),
        RefreshOutcome::Expired
    );
    assert_eq!(
        store
            .consume_refresh_token("t2", expiry - Duration::microseconds(1))
            .await
            .unwrap(),
        consumed("f2"),
        "an Expired answer does not mark the token; 1 µs before expiry it is live"
    );
    // A replay of a used token stays a replay after it expired.
    assert_eq!(
        store
            .consume_refresh_token("t2", expiry + Duration::days(1))
            .await
            .unwrap(),
        reused("f2")
    );

    // Revoking a family makes its unused tokens replays, including one issued after the
    // revocation (a rotation racing with reuse detection).
    store
        .insert_refresh_token(&new_token("t3", "f3", expiry))
        .await
        .unwrap();
    store
        .insert_refresh_token(&new_token("t4", "f3", expiry))
        .await
        .unwrap();
    store
        .insert_refresh_token(&new_token("other", "f4", expiry))
        .await
        .unwrap();
    assert_eq!(
        store.consume_refresh_token("t3", now).await.unwrap(),
        consumed("f3")
    );
    store.revoke_refresh_family("f3", now).await.unwrap();
    assert_eq!(
        store.consume_refresh_token("t4", now).await.unwrap(),
        reused("f3")
    );
    store
        .insert_refresh_token(&new_token("t5", "f3", expiry))
        .await
        .unwrap();
    assert_eq!(
        store.consume_refresh_token("t5", now).await.unwrap(),
        reused("f3")
    );
    assert_eq!(
        store.consume_refresh_token("other", now).await.unwrap(),
        consumed("f4"),
        "other families live on"
    );
    store
        .revoke_refresh_family("no-such-family", now)
        .await
        .unwrap();
}

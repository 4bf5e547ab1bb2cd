//! GitHub identities: profile updates of returning users and their sealed tokens.
use chrono::Duration;
use kiln_store::StoreError;

use crate::harness::{base_time, create_user, new_user, TestDb};

pub async fn github_profile_updates_touch_only_login_and_name(db: TestDb) {
    let store = db.store.as_ref();
    let octo = store
        .create_user(&new_user("octo", Some("583231")))
        .await
        .unwrap();
    let other = create_user(store, "other").await;

    let updated = store
        .update_github_profile("octo", "octocat-renamed", "The Octocat")
        .await
        .unwrap()
        .expect("known user");
    assert_eq!(updated.github_login.as_deref(), Some("octocat-renamed"));
    assert_eq!(updated.name, "The Octocat");
    assert_eq!(
        (&updated.user_id, &updated.email, &updated.github_id),
        (&octo.user_id, &octo.email, &octo.github_id),
        "the identity itself does not change"
    );
    assert_eq!(updated.created_at, octo.created_at);
    assert_eq!(store.get_user("octo").await.unwrap(), Some(updated.clone()));
    assert_eq!(
        store.get_user_by_github_id("583231").await.unwrap(),
        Some(updated)
    );
    assert_eq!(store.get_user("other").await.unwrap(), Some(other));

    assert_eq!(
        store
            .update_github_profile("nobody", "x", "y")
            .await
            .unwrap(),
        None
    );
}

pub async fn github_tokens_are_kept_per_user_and_replaced(db: TestDb) {
    let store = db.store.as_ref();
    create_user(store, "alice").await;
    create_user(store, "bob").await;
    assert_eq!(store.get_github_token("alice").await.unwrap(), None);

    store
        .put_github_token("alice", "v1:first", base_time())
        .await
        .unwrap();
    store
        .put_github_token("bob", "v1:bobs", base_time())
        .await
        .unwrap();
    assert_eq!(
        store.get_github_token("alice").await.unwrap().as_deref(),
        Some("v1:first")
    );

    // A new sign-in replaces the token.
    store
        .put_github_token("alice", "v1:second", base_time() + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(
        store.get_github_token("alice").await.unwrap().as_deref(),
        Some("v1:second")
    );
    assert_eq!(
        store.get_github_token("bob").await.unwrap().as_deref(),
        Some("v1:bobs"),
        "other users untouched"
    );

    let unknown = store.put_github_token("nobody", "v1:x", base_time()).await;
    assert!(
        matches!(unknown, Err(StoreError::Missing("user"))),
        "{unknown:?}"
    );
    assert_eq!(store.get_github_token("nobody").await.unwrap(), None);
}

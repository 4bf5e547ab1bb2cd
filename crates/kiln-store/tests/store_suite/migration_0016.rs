//! Migration 0016 (organizations) over a database that already holds users with keys,
//! sessions and a ledger: applied up to 0015 with sqlx's own migrator, filled with plain
//! SQL, then opened by the store, which applies 0016. Each user must end up the owner of a
//! personal organization (their default) with their keys, sessions and balance intact.
use kiln_store::prelude::*;
use kiln_store::OrgRole;

use crate::upgrade;

fn fill(at: &str) -> Vec<String> {
    vec![
        format!("INSERT INTO users (user_id, name, email, created_at) VALUES ('usr_Alice', 'Alice', 'a@x.test', '{at}')"),
        format!("INSERT INTO users (user_id, name, email, created_at) VALUES ('usr_bob', 'Bob', 'b@x.test', '{at}')"),
        format!(
            "INSERT INTO api_keys (key_id, user_id, name, key_hash, masked, created_at) \
             VALUES ('key-1', 'usr_Alice', 'laptop', 'hash-1', 'kiln_ab…cd', '{at}')"
        ),
        format!(
            "INSERT INTO sessions (session_id, user_id, image, status, requested_at, expires_at, ended_at) \
             VALUES ('old-1', 'usr_Alice', 'busybox', 'closed', '{at}', '{at}', '{at}')"
        ),
        format!(
            "INSERT INTO billing_transactions (transaction_id, user_id, kind, amount_cents, description, \
             created_at, reference) VALUES ('tx-1', 'usr_Alice', 'deposit', 1000, 'top-up', '{at}', 'cs_1')"
        ),
        format!(
            "INSERT INTO billing_transactions (transaction_id, user_id, kind, amount_cents, description, \
             created_at, session_id, reference) VALUES ('tx-2', 'usr_Alice', 'session_usage', -250, \
             'session', '{at}', 'old-1', 'old-1')"
        ),
    ]
}

async fn check_migrated(store: &dyn Store) {
    for (user, name) in [("usr_Alice", "Alice"), ("usr_bob", "Bob")] {
        let orgs = store.list_memberships(user).await.unwrap();
        assert_eq!(orgs.len(), 1, "{orgs:?}");
        let personal = &orgs[0];
        assert_eq!(personal.org.personal_of.as_deref(), Some(user));
        assert_eq!((personal.role, personal.is_default), (OrgRole::Owner, true));
        assert_eq!(personal.org.name, name);
        assert!(
            personal.org.slug.starts_with("p-usr-"),
            "{}",
            personal.org.slug
        );
    }
    // The slug is lower case, and found by id or slug.
    let alice = store.find_org("p-usr-alice").await.unwrap().unwrap();
    assert_eq!(alice.org_id, "org_p_usr_Alice");
    // Keys, sessions and the ledger are as they were.
    let keys = store.list_api_keys("usr_Alice").await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].name.as_deref(), Some("laptop"));
    assert!(store.get_session("old-1").await.unwrap().is_some());
    assert_eq!(store.balance("usr_Alice").await.unwrap().balance_cents, 750);
    // Creating it again changes nothing.
    store
        .ensure_personal_org("usr_Alice", "Alice", chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(store.list_memberships("usr_Alice").await.unwrap().len(), 1);
}

#[tokio::test]
async fn sqlite_migration_0016_gives_users_personal_orgs() {
    upgrade::sqlite(
        16,
        fill("2025-03-14T15:09:26.535897Z"),
        |store| async move { check_migrated(store.as_ref()).await },
    )
    .await;
}

#[tokio::test]
async fn postgres_migration_0016_gives_users_personal_orgs() {
    upgrade::postgres(
        16,
        fill("2025-03-14T15:09:26.535897Z"),
        |store| async move { check_migrated(store.as_ref()).await },
    )
    .await;
}

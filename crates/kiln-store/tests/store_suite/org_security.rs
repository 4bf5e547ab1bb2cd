//! Org security (migration 0018): sudo grants belong to one live session or key; IP
//! allowlists are replaced whole, capped and unique per network; an org key finds its
//! allowlist in one read; one default org per user.
use chrono::Duration;
use kiln_store::{
    DeviceSession, IpAllowEntry, KeyOrg, NewApiKey, Organization, StoreError, SudoHolder,
};

use crate::harness::{base_time, create_user, TestDb};

fn org(id: &str, slug: &str, account: &str) -> Organization {
    Organization {
        org_id: id.into(),
        slug: slug.into(),
        name: slug.into(),
        personal_of: None,
        account_user_id: account.into(),
        created_at: base_time(),
    }
}

fn entry(id: &str, org_id: &str, cidr: &str) -> IpAllowEntry {
    IpAllowEntry {
        entry_id: id.into(),
        org_id: org_id.into(),
        cidr: cidr.into(),
        note: String::new(),
        created_by: None,
        created_at: base_time(),
    }
}

fn key(id: &str, user: &str) -> NewApiKey {
    NewApiKey {
        key_id: id.into(),
        user_id: user.into(),
        name: None,
        key_hash: format!("hash-{id}"),
        masked: "kiln_…".into(),
        created_at: base_time(),
        expires_at: None,
    }
}

pub async fn sudo_grants_are_per_live_credential(db: TestDb) {
    let store = db.store.clone();
    create_user(store.as_ref(), "u1").await;
    create_user(store.as_ref(), "u2").await;
    for id in ["s1", "s2"] {
        store
            .insert_device_session(&DeviceSession {
                session_id: id.into(),
                user_id: "u1".into(),
                created_at: base_time(),
                last_seen_at: base_time(),
                user_agent: String::new(),
                ip_address: String::new(),
                revoked_at: None,
                revoked_reason: None,
            })
            .await
            .expect("session");
    }
    store.insert_api_key(&key("k1", "u1")).await.expect("key");
    let until = base_time() + Duration::minutes(5);
    let s1 = SudoHolder::DeviceSession("s1".into());
    let k1 = SudoHolder::ApiKey("k1".into());
    assert!(
        !store.set_sudo(&s1, "u2", Some(until)).await.unwrap(),
        "another user's session"
    );
    assert!(store.set_sudo(&s1, "u1", Some(until)).await.unwrap());
    assert!(store.set_sudo(&k1, "u1", Some(until)).await.unwrap());
    assert_eq!(store.get_sudo(&s1).await.unwrap(), Some(until));
    assert_eq!(store.get_sudo(&k1).await.unwrap(), Some(until));
    assert_eq!(
        store
            .get_sudo(&SudoHolder::DeviceSession("s2".into()))
            .await
            .unwrap(),
        None
    );
    // A revoked session holds nothing, and cannot be granted again.
    store
        .revoke_device_session("u1", "s1", base_time(), "logout")
        .await
        .unwrap();
    assert_eq!(store.get_sudo(&s1).await.unwrap(), None);
    assert!(!store.set_sudo(&s1, "u1", Some(until)).await.unwrap());
    assert!(store.set_sudo(&k1, "u1", None).await.unwrap());
    assert_eq!(store.get_sudo(&k1).await.unwrap(), None);
}

pub async fn ip_allowlists_and_default_orgs(db: TestDb) {
    let store = db.store.clone();
    create_user(store.as_ref(), "u1").await;
    create_user(store.as_ref(), "u2").await;
    store
        .create_org(&org("o1", "acme", "acct-1"), "u1")
        .await
        .unwrap();
    store
        .create_org(&org("o2", "beta", "acct-2"), "u2")
        .await
        .unwrap();
    store
        .insert_org_api_key(&key("k1", "u1"), "o1")
        .await
        .unwrap();
    store.insert_api_key(&key("k2", "u1")).await.unwrap();

    let found = store
        .key_allowlist("k1")
        .await
        .unwrap()
        .expect("an org key");
    assert_eq!((found.org_id.as_str(), found.cidrs.len()), ("o1", 0));
    assert_eq!(
        store.key_allowlist("k2").await.unwrap(),
        None,
        "a personal key"
    );

    // Authentication reads the key's org, and whether that org has a list, with the key.
    let find = |hash: &'static str| {
        let store = store.clone();
        async move {
            store
                .find_api_key(hash, base_time())
                .await
                .unwrap()
                .expect("a live key")
        }
    };
    let bound = |hash: &'static str| async move { find(hash).await.org };
    assert_eq!(
        bound("hash-k1").await,
        Some(KeyOrg {
            org_id: "o1".into(),
            restricted: false
        })
    );
    assert_eq!(bound("hash-k2").await, None, "a personal key");

    let two = [
        entry("e1", "o1", "10.0.0.0/8"),
        entry("e2", "o1", "127.0.0.2/32"),
    ];
    store.replace_ip_allowlist("o1", &two).await.unwrap();
    store
        .replace_ip_allowlist("o2", &[entry("e9", "o2", "192.0.2.0/24")])
        .await
        .unwrap();
    let mut cidrs = store
        .key_allowlist("k1")
        .await
        .unwrap()
        .expect("org key")
        .cidrs;
    cidrs.sort();
    assert_eq!(cidrs, ["10.0.0.0/8", "127.0.0.2/32"]);
    assert_eq!(
        bound("hash-k1").await,
        Some(KeyOrg {
            org_id: "o1".into(),
            restricted: true
        }),
        "one row per key however long its org's list"
    );
    // Capped, unique per network, deleted by the org only.
    assert!(!store
        .add_ip_allow_entry(&entry("e3", "o1", "::1/128"), 2)
        .await
        .unwrap());
    assert!(store
        .add_ip_allow_entry(&entry("e3", "o1", "::1/128"), 3)
        .await
        .unwrap());
    let dup = store
        .add_ip_allow_entry(&entry("e4", "o1", "::1/128"), 10)
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    assert!(!store.delete_ip_allow_entry("o2", "e3").await.unwrap());
    assert!(store.delete_ip_allow_entry("o1", "e3").await.unwrap());
    store.replace_ip_allowlist("o1", &[]).await.unwrap();
    assert!(store.list_ip_allowlist("o1").await.unwrap().is_empty());
    assert_eq!(store.list_ip_allowlist("o2").await.unwrap().len(), 1);

    // One default per user; a non-member cannot pick an org.
    store
        .ensure_personal_org("u1", "u1", base_time())
        .await
        .unwrap();
    assert!(!store.set_default_org("u1", "o2").await.unwrap());
    assert!(store.set_default_org("u1", "o1").await.unwrap());
    let defaults: Vec<_> = store
        .list_memberships("u1")
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.is_default)
        .map(|m| m.org.org_id)
        .collect();
    assert_eq!(defaults, ["o1"]);

    // A key finds its user's default membership with it, as `list_memberships` has it.
    let default_of = |hash: &'static str| async move { find(hash).await.default_membership };
    let listed = |user: &'static str| {
        let store = store.clone();
        async move {
            store
                .list_memberships(user)
                .await
                .unwrap()
                .into_iter()
                .find(|m| m.is_default)
        }
    };
    let found = default_of("hash-k2").await.expect("u1 has a default");
    assert_eq!(found.org.org_id, "o1");
    assert_eq!(Some(found), listed("u1").await);
    let personal_id = store
        .list_memberships("u1")
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.org.personal_of.as_deref() == Some("u1"))
        .expect("u1's personal org")
        .org
        .org_id;
    assert!(store.set_default_org("u1", &personal_id).await.unwrap());
    let moved = default_of("hash-k1").await.expect("still a default");
    assert_eq!(moved.org.org_id, personal_id, "follows the user's choice");
    assert_eq!(Some(moved), listed("u1").await);
    // Another user's key finds that user's default (or none), never u1's.
    store.insert_api_key(&key("k3", "u2")).await.unwrap();
    assert_eq!(default_of("hash-k3").await, listed("u2").await);
}

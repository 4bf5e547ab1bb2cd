//! Migration 0019 (MFA recovery tokens) over a database that already holds mailed tokens:
//! on SQLite it rebuilds `account_tokens` to widen the CHECK on `purpose`. Applied up to
//! 0018, filled with plain SQL, then opened by the store (which applies the rest): every
//! token must still be there as it was, and a recovery token must now be accepted.
use chrono::{Duration, Utc};
use kiln_store::prelude::*;
use kiln_store::{AccountToken, AccountTokenPurpose};

use crate::upgrade;

fn fill(at: &str, later: &str) -> Vec<String> {
    vec![
        format!("INSERT INTO users (user_id, name, email, created_at) VALUES ('usr_a', 'A', 'a@x.test', '{at}')"),
        format!(
            "INSERT INTO account_tokens (token_hash, user_id, purpose, email, created_at, expires_at) \
             VALUES ('hash-verify', 'usr_a', 'verify_email', 'a@x.test', '{at}', '{later}')"
        ),
        format!(
            "INSERT INTO account_tokens (token_hash, user_id, purpose, created_at, expires_at, used_at) \
             VALUES ('hash-reset', 'usr_a', 'reset_password', '{at}', '{later}', '{at}')"
        ),
    ]
}

async fn check_migrated(store: &dyn Store) {
    let verify = store
        .get_account_token("hash-verify", AccountTokenPurpose::VerifyEmail)
        .await
        .unwrap()
        .expect("the verification token survived");
    assert_eq!(verify.email.as_deref(), Some("a@x.test"));
    assert!(verify.used_at.is_none());
    let reset = store
        .get_account_token("hash-reset", AccountTokenPurpose::ResetPassword)
        .await
        .unwrap()
        .expect("the reset token survived");
    assert!(reset.used_at.is_some(), "spent stays spent");
    // The new purpose is accepted, and the old token still spends once.
    let now = Utc::now();
    let recovery = AccountToken {
        token_hash: "hash-recovery".into(),
        user_id: "usr_a".into(),
        purpose: AccountTokenPurpose::MfaRecovery,
        email: None,
        created_at: now,
        expires_at: now + Duration::hours(1),
        used_at: None,
    };
    let mail = kiln_store::OutboxMail {
        mail_id: "mail-1".into(),
        user_id: Some("usr_a".into()),
        to_address: "a@x.test".into(),
        subject: "Recover".into(),
        body: "link".into(),
        link: None,
        status: kiln_store::MailStatus::Pending,
        attempts: 0,
        next_attempt_at: now,
        last_error: None,
        created_at: now,
        sent_at: None,
    };
    store
        .insert_token_with_mail(&recovery, &mail)
        .await
        .unwrap();
    assert!(store
        .get_account_token("hash-recovery", AccountTokenPurpose::MfaRecovery)
        .await
        .unwrap()
        .is_some());
    assert!(store
        .consume_account_token("hash-verify", AccountTokenPurpose::VerifyEmail, now)
        .await
        .unwrap()
        .is_some());
}

const AT: &str = "2025-03-14T15:09:26.535897Z";
const LATER: &str = "2999-03-14T15:09:26.535897Z";

#[tokio::test]
async fn sqlite_migration_0019_keeps_mailed_tokens() {
    upgrade::sqlite(19, fill(AT, LATER), |store| async move {
        check_migrated(store.as_ref()).await
    })
    .await;
}

#[tokio::test]
async fn postgres_migration_0019_keeps_mailed_tokens() {
    upgrade::postgres(19, fill(AT, LATER), |store| async move {
        check_migrated(store.as_ref()).await
    })
    .await;
}

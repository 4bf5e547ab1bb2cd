//! Password accounts (migration 0014): mailed tokens spent once (also concurrently), the
//! mail outbox's leases and outcomes, the soft delete's cascade, TOTP steps and backup
//! codes accepted once.
use std::sync::Arc;

use chrono::Duration;
use kiln_store::{
    AccountToken, AccountTokenPurpose, DeviceSession, MailStatus, MfaFactor, NewAccount, NewApiKey,
    NewRefreshToken, OutboxMail, RefreshOutcome, StoreError,
};
use tokio::sync::Barrier;

use crate::harness::{base_time, TestDb};

fn account(id: &str, email: &str) -> NewAccount {
    NewAccount {
        user_id: id.into(),
        name: format!("{id} name"),
        email: email.into(),
        password_hash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA".into(),
        created_at: base_time(),
    }
}

fn token(hash: &str, user: &str, purpose: AccountTokenPurpose, ttl_secs: i64) -> AccountToken {
    AccountToken {
        token_hash: hash.into(),
        user_id: user.into(),
        purpose,
        email: Some(format!("{user}@example.test")),
        created_at: base_time(),
        expires_at: base_time() + Duration::seconds(ttl_secs),
        used_at: None,
    }
}

fn mail(id: &str, user: &str) -> OutboxMail {
    OutboxMail {
        mail_id: id.into(),
        user_id: Some(user.into()),
        to_address: format!("{user}@example.test"),
        subject: "Verify".into(),
        body: "open https://kiln.test/v?token=secret".into(),
        link: Some("https://kiln.test/v?token=secret".into()),
        status: MailStatus::Pending,
        attempts: 0,
        next_attempt_at: base_time(),
        last_error: None,
        created_at: base_time(),
        sent_at: None,
    }
}

pub async fn mailed_tokens_are_spent_once(db: TestDb) {
    let store = db.store.clone();
    let verify = token("h-verify", "u1", AccountTokenPurpose::VerifyEmail, 60);
    store
        .create_account(
            &account("u1", "U1@Example.test"),
            Some((&verify, &mail("m1", "u1"))),
        )
        .await
        .expect("account");
    let taken = store
        .create_account(&account("u2", "u1@example.TEST"), None)
        .await;
    assert!(
        matches!(taken, Err(StoreError::Conflict("email_lower"))),
        "{taken:?}"
    );
    assert!(
        store.get_user("u2").await.expect("get").is_none(),
        "all or nothing"
    );
    let found = store
        .find_account_by_email("u1@example.test")
        .await
        .expect("find");
    assert_eq!(found.expect("found").0.email, "U1@Example.test");

    let now = base_time() + Duration::seconds(1);
    let wrong = store
        .consume_account_token("h-verify", AccountTokenPurpose::ResetPassword, now)
        .await
        .expect("consume");
    assert!(wrong.is_none(), "a token serves its own purpose only");
    // Eight at once: one wins.
    let barrier = Arc::new(Barrier::new(8));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, barrier) = (store.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .consume_account_token("h-verify", AccountTokenPurpose::VerifyEmail, now)
                .await
                .expect("consume")
        }));
    }
    let mut won = 0;
    for task in tasks {
        won += usize::from(task.await.expect("task").is_some());
    }
    assert_eq!(won, 1);

    let reset = token("h-reset", "u1", AccountTokenPurpose::ResetPassword, 60);
    store
        .insert_token_with_mail(&reset, &mail("m2", "u1"))
        .await
        .expect("insert");
    let late = base_time() + Duration::seconds(60);
    let expired = store
        .consume_account_token("h-reset", AccountTokenPurpose::ResetPassword, late)
        .await
        .expect("consume");
    assert!(expired.is_none(), "dead from expires_at on");
}

pub async fn mail_outbox_leases_and_outcomes(db: TestDb) {
    let store = db.store.as_ref();
    store
        .create_account(&account("u1", "u1@example.test"), None)
        .await
        .expect("account");
    let t = token("h1", "u1", AccountTokenPurpose::VerifyEmail, 60);
    store
        .insert_token_with_mail(&t, &mail("m1", "u1"))
        .await
        .expect("insert");
    let t2 = token("h2", "u1", AccountTokenPurpose::VerifyEmail, 60);
    store
        .insert_token_with_mail(&t2, &mail("m2", "u1"))
        .await
        .expect("insert");

    let now = base_time() + Duration::seconds(1);
    let lease = now + Duration::seconds(30);
    let claimed = store.claim_mail(now, lease, 10).await.expect("claim");
    assert_eq!(claimed.len(), 2);
    assert!(claimed.iter().all(|m| m.attempts == 1));
    assert!(
        store
            .claim_mail(now, lease, 10)
            .await
            .expect("claim")
            .is_empty(),
        "leased"
    );
    // A stale attempt number records nothing.
    assert!(!store
        .record_mail_attempt("m1", 7, MailStatus::Sent, now, None, now)
        .await
        .expect("record"));
    assert!(store
        .record_mail_attempt("m1", 1, MailStatus::Sent, now, None, now)
        .await
        .expect("record"));
    assert!(store
        .record_mail_attempt(
            "m2",
            1,
            MailStatus::Pending,
            now + Duration::seconds(5),
            Some("refused"),
            now
        )
        .await
        .expect("record"));
    assert!(
        store
            .claim_mail(now, lease, 10)
            .await
            .expect("claim")
            .is_empty(),
        "not due yet"
    );
    let later = now + Duration::seconds(5);
    let again = store
        .claim_mail(later, later + Duration::seconds(30), 10)
        .await
        .expect("claim");
    assert_eq!((again.len(), again[0].attempts), (1, 2));
    store
        .record_mail_attempt("m2", 2, MailStatus::Logged, later, None, later)
        .await
        .expect("record");

    let mails = store.list_user_mail("u1", 10).await.expect("list");
    let sent = mails.iter().find(|m| m.mail_id == "m1").expect("m1");
    assert_eq!(
        (sent.status, sent.body.as_str()),
        (MailStatus::Sent, ""),
        "a sent body is cleared"
    );
    let unsent = store.list_unsent_mail(10).await.expect("unsent");
    assert_eq!(unsent.len(), 1);
    assert_eq!(
        (unsent[0].mail_id.as_str(), unsent[0].status),
        ("m2", MailStatus::Logged)
    );
    assert!(unsent[0].link.is_some());
}

pub async fn soft_delete_revokes_everything(db: TestDb) {
    let store = db.store.as_ref();
    store
        .create_account(&account("u1", "u1@example.test"), None)
        .await
        .expect("account");
    let key = NewApiKey {
        key_id: "k1".into(),
        user_id: "u1".into(),
        name: None,
        key_hash: "kh1".into(),
        masked: "kiln_…".into(),
        created_at: base_time(),
        expires_at: None,
    };
    store.insert_api_key(&key).await.expect("key");
    for id in ["s1", "s2"] {
        store
            .insert_device_session(&DeviceSession {
                session_id: id.into(),
                user_id: "u1".into(),
                created_at: base_time(),
                last_seen_at: base_time(),
                user_agent: "ua".into(),
                ip_address: "127.0.0.1".into(),
                revoked_at: None,
                revoked_reason: None,
            })
            .await
            .expect("session");
        store
            .insert_refresh_token(&NewRefreshToken {
                token_id: format!("rt-{id}"),
                family_id: id.into(),
                user_id: "u1".into(),
                issued_at: base_time(),
                expires_at: base_time() + Duration::days(1),
            })
            .await
            .expect("refresh");
    }
    let now = base_time() + Duration::seconds(1);
    assert_eq!(
        store
            .revoke_device_sessions("u1", Some("s1"), now, "test")
            .await
            .expect("revoke"),
        1
    );
    let outcome = store
        .consume_refresh_token("rt-s2", now)
        .await
        .expect("consume");
    assert!(
        matches!(outcome, RefreshOutcome::Reused { .. }),
        "{outcome:?}"
    );
    assert_eq!(
        store
            .list_device_sessions("u1", 10)
            .await
            .expect("list")
            .len(),
        1
    );

    let deleted = store.soft_delete_account("u1", now).await.expect("delete");
    assert_eq!((deleted.api_keys_revoked, deleted.sessions_revoked), (1, 1));
    assert!(store
        .find_api_key("kh1", now)
        .await
        .expect("find")
        .is_none());
    assert!(store
        .list_device_sessions("u1", 10)
        .await
        .expect("list")
        .is_empty());
    assert!(
        !store
            .get_user("u1")
            .await
            .expect("get")
            .expect("kept")
            .is_active
    );
    assert!(store
        .find_account_by_email("u1@example.test")
        .await
        .expect("find")
        .is_none());
    store
        .create_account(&account("u9", "u1@example.test"), None)
        .await
        .expect("the address is free again");
}

pub async fn second_factors_are_accepted_once(db: TestDb) {
    let store = db.store.as_ref();
    store
        .create_account(&account("u1", "u1@example.test"), None)
        .await
        .expect("account");
    let factor = MfaFactor {
        factor_id: "f1".into(),
        user_id: "u1".into(),
        kind: "totp".into(),
        secret_sealed: "v1:sealed".into(),
        created_at: base_time(),
        confirmed_at: None,
        last_used_step: None,
        last_used_at: None,
    };
    store.insert_mfa_factor(&factor).await.expect("factor");
    assert!(
        store.list_mfa_factors("u1").await.expect("list").is_empty(),
        "unconfirmed"
    );
    let at = base_time();
    let codes = vec!["c1".to_string(), "c2".to_string()];
    assert!(!store
        .confirm_mfa_factor("u2", "f1", 100, &codes, at)
        .await
        .expect("confirm"));
    assert!(store
        .confirm_mfa_factor("u1", "f1", 100, &codes, at)
        .await
        .expect("confirm"));
    assert!(!store
        .confirm_mfa_factor("u1", "f1", 101, &codes, at)
        .await
        .expect("confirm"));
    assert!(
        !store.use_totp_step("f1", 100, at).await.expect("step"),
        "the enrolment's step"
    );
    assert!(store.use_totp_step("f1", 101, at).await.expect("step"));
    assert!(
        !store.use_totp_step("f1", 101, at).await.expect("step"),
        "once"
    );
    assert!(
        !store.use_totp_step("f1", 99, at).await.expect("step"),
        "never backwards"
    );
    assert_eq!(store.count_backup_codes("u1").await.expect("count"), 2);
    assert!(store.use_backup_code("u1", "c1", at).await.expect("code"));
    assert!(
        !store.use_backup_code("u1", "c1", at).await.expect("code"),
        "once"
    );
    assert_eq!(store.count_backup_codes("u1").await.expect("count"), 1);
    assert!(store.delete_mfa_factor("u1", "f1").await.expect("delete"));
    assert_eq!(
        store.count_backup_codes("u1").await.expect("count"),
        0,
        "with the last factor"
    );
}

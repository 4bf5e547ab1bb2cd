//! The billing ledger: idempotent charges, exactly-once session billing under races,
//! Stripe credits, usage queries, heartbeats. After every scenario, each user's balance and
//! totals must equal what their ledger sums to.
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use kiln_store::{
    session_price, NewTransaction, SessionEnd, SessionStatus, Store, StoreError, Transaction,
    TransactionKind, TransactionQuery,
};
use tokio::sync::Barrier;

use crate::harness::{base_time, create_user, creating_session, TestDb};

fn tx(
    id: &str,
    user: &str,
    kind: TransactionKind,
    cents: i64,
    reference: Option<&str>,
) -> NewTransaction {
    NewTransaction {
        transaction_id: id.to_string(),
        user_id: user.to_string(),
        kind,
        amount_cents: cents,
        description: format!("{} {cents}", kind.as_str()),
        created_at: base_time(),
        session_id: None,
        job_id: None,
        duration_minutes: None,
        reference: reference.map(str::to_string),
    }
}

fn query(user: &str) -> TransactionQuery {
    TransactionQuery {
        user_id: user.to_string(),
        kinds: Vec::new(),
        from: None,
        until: None,
        max_items: None,
        limit: 10_000,
        offset: 0,
    }
}

fn end(session_id: &str, status: SessionStatus, at: DateTime<Utc>, per_minute: i64) -> SessionEnd {
    SessionEnd {
        session_id: session_id.to_string(),
        status,
        at,
        at_last_heartbeat: false,
        reason: None,
        cost_per_minute_cents: per_minute,
        transaction_id: format!("txn-{session_id}-{}", at.timestamp_micros()),
    }
}

/// The invariant: balance, deposits and spending are what the ledger sums to.
pub async fn assert_ledger_consistent(store: &dyn Store, user: &str) {
    let all: Vec<Transaction> = store
        .list_transactions(&query(user))
        .await
        .unwrap()
        .transactions;
    let balance = store.balance(user).await.unwrap();
    let sum: i64 = all.iter().map(|t| t.amount_cents).sum();
    let deposited: i64 = all
        .iter()
        .filter(|t| t.kind == TransactionKind::Deposit)
        .map(|t| t.amount_cents)
        .sum();
    assert_eq!(
        balance.balance_cents, sum,
        "{user}: balance is the ledger's sum"
    );
    assert_eq!(balance.total_deposited_cents, deposited, "{user}");
    assert_eq!(balance.total_spent_cents, deposited - sum, "{user}");
    assert_eq!(
        balance.last_transaction_at,
        all.iter().map(|t| t.created_at).max()
    );
    for t in &all {
        let positive = matches!(
            t.kind,
            TransactionKind::Deposit | TransactionKind::Refund | TransactionKind::AgentJobRefund
        );
        assert!(
            if positive {
                t.amount_cents >= 0
            } else {
                t.amount_cents <= 0
            },
            "{t:?}: credits are positive, charges negative"
        );
    }
}

pub async fn charges_with_a_reference_apply_once(db: TestDb) {
    let store = db.store.as_ref();
    create_user(store, "ann").await;
    create_user(store, "bob").await;
    assert_eq!(store.balance("ann").await.unwrap().balance_cents, 0);
    store
        .insert_transaction(&tx("t1", "ann", TransactionKind::Deposit, 1000, None))
        .await
        .unwrap()
        .expect("written");
    // Free-form credits (no reference) may repeat.
    store
        .insert_transaction(&tx("t2", "ann", TransactionKind::Deposit, 1000, None))
        .await
        .unwrap()
        .expect("written");
    let job = tx(
        "t3",
        "ann",
        TransactionKind::AgentJobUsage,
        -50,
        Some("job-1"),
    );
    assert!(store.insert_transaction(&job).await.unwrap().is_some());
    let again = NewTransaction {
        transaction_id: "t4".into(),
        ..job.clone()
    };
    assert_eq!(
        store.insert_transaction(&again).await.unwrap(),
        None,
        "charged once"
    );
    // The refund of that job is another kind: allowed once too.
    let refund = tx(
        "t5",
        "ann",
        TransactionKind::AgentJobRefund,
        50,
        Some("job-1"),
    );
    assert!(store.insert_transaction(&refund).await.unwrap().is_some());
    let refund_again = NewTransaction {
        transaction_id: "t6".into(),
        ..refund
    };
    assert_eq!(store.insert_transaction(&refund_again).await.unwrap(), None);

    let balance = store.balance("ann").await.unwrap();
    assert_eq!(
        (
            balance.balance_cents,
            balance.total_deposited_cents,
            balance.total_spent_cents
        ),
        (2000, 2000, 0)
    );
    assert_eq!(
        store.balance("bob").await.unwrap().balance_cents,
        0,
        "a ledger is per user"
    );

    assert!(matches!(
        store
            .insert_transaction(&tx("t1", "bob", TransactionKind::Deposit, 1, None))
            .await,
        Err(StoreError::Conflict("transaction_id"))
    ));
    assert!(matches!(
        store
            .insert_transaction(&tx("t9", "nobody", TransactionKind::Deposit, 1, None))
            .await,
        Err(StoreError::Missing(_))
    ));
    // Concurrent attempts at one reference: exactly one is written.
    let store_arc = db.store.clone();
    let barrier = Arc::new(Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (store, barrier) = (store_arc.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let t = tx(
                    &format!("c{i}"),
                    "bob",
                    TransactionKind::AgentJobUsage,
                    -7,
                    Some("job-9"),
                );
                store.insert_transaction(&t).await.unwrap().is_some()
            })
        })
        .collect();
    let mut written = 0;
    for t in tasks {
        written += usize::from(t.await.unwrap());
    }
    assert_eq!(written, 1);
    assert_eq!(store.balance("bob").await.unwrap().balance_cents, -7);
    assert_ledger_consistent(store, "ann").await;
    assert_ledger_consistent(store, "bob").await;
}

pub async fn a_session_is_billed_once_for_its_ready_time(db: TestDb) {
    let store = db.store.as_ref();
    creating_session(store, "s1", "ann").await;
    let ready_at = base_time();
    store
        .mark_session_ready("s1", "sbx", "local:x", ready_at, None)
        .await
        .unwrap()
        .unwrap();
    let closed_at = ready_at + Duration::seconds(90) + Duration::microseconds(1);
    let ended = store
        .end_session_billed(&end("s1", SessionStatus::Closed, closed_at, 5), None)
        .await
        .unwrap()
        .expect("ends");
    assert_eq!(ended.session.status, SessionStatus::Closed);
    assert_eq!(ended.session.ended_at, Some(closed_at));
    let charge = ended.charge.expect("charged");
    let (minutes, cents) = session_price(ready_at, closed_at, 5);
    assert_eq!(
        cents, 8,
        "1.5 minutes and a microsecond at 5 cents, rounded up"
    );
    assert_eq!(charge.amount_cents, -8);
    assert_eq!(charge.kind, TransactionKind::SessionUsage);
    assert_eq!(charge.session_id.as_deref(), Some("s1"));
    assert_eq!(charge.reference.as_deref(), Some("s1"));
    assert!((charge.duration_minutes.unwrap() - minutes).abs() < 1e-9);
    assert!(
        charge.description.contains("1.5000 minutes"),
        "{}",
        charge.description
    );
    assert_eq!(
        store
            .end_session_billed(&end("s1", SessionStatus::Terminated, closed_at, 5), None)
            .await
            .unwrap(),
        None,
        "ended sessions are not ended (or billed) again"
    );

    // A session that never became ready is ended without a charge; unknown ones are None.
    creating_session(store, "s2", "ann").await;
    let ended = store
        .end_session_billed(&end("s2", SessionStatus::Closed, closed_at, 5), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.charge, None);
    assert_eq!(
        store
            .end_session_billed(&end("nope", SessionStatus::Closed, closed_at, 5), None)
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        store
            .end_session_billed(&end("s2", SessionStatus::Ready, closed_at, 5), None)
            .await,
        Err(StoreError::Invalid(_))
    ));
    let page = store.list_transactions(&query("ann")).await.unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(store.balance("ann").await.unwrap().balance_cents, -8);
    assert_ledger_consistent(store, "ann").await;
}

pub async fn racing_close_and_expiry_charge_once(db: TestDb) {
    const CALLERS: usize = 8;
    for round in 0..4 {
        let id = format!("race-{round}");
        creating_session(db.store.as_ref(), &id, "ann").await;
        db.store
            .mark_session_ready(&id, "sbx", "local:x", base_time(), None)
            .await
            .unwrap()
            .unwrap();
        let barrier = Arc::new(Barrier::new(CALLERS));
        let tasks: Vec<_> = (0..CALLERS)
            .map(|i| {
                let (store, barrier, id) = (db.store.clone(), barrier.clone(), id.clone());
                tokio::spawn(async move {
                    let status = if i % 2 == 0 {
                        SessionStatus::Closed
                    } else {
                        SessionStatus::Terminated
                    };
                    let at = base_time() + Duration::seconds(60 + i as i64);
                    barrier.wait().await;
                    store
                        .end_session_billed(&end(&id, status, at, 5), None)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            if let Some(ended) = t.await.unwrap() {
                winners.push(ended);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}");
        let winner = &winners[0];
        let stored = db.store.get_session(&id).await.unwrap().unwrap();
        assert_eq!(stored, winner.session);
        let charges: Vec<_> = db
            .store
            .list_transactions(&query("ann"))
            .await
            .unwrap()
            .transactions
            .into_iter()
            .filter(|t| t.session_id.as_deref() == Some(id.as_str()))
            .collect();
        assert_eq!(charges.len(), 1, "round {round}: {charges:?}");
        assert_eq!(Some(&charges[0]), winner.charge.as_ref());
    }
    assert_ledger_consistent(db.store.as_ref(), "ann").await;
}

pub async fn heartbeats_touch_ready_sessions_and_bound_the_bill(db: TestDb) {
    let store = db.store.as_ref();
    creating_session(store, "ready", "ann").await;
    creating_session(store, "creating", "ann").await;
    creating_session(store, "closed", "ann").await;
    let t0 = base_time();
    store
        .mark_session_ready("ready", "sbx1", "local:x", t0, None)
        .await
        .unwrap()
        .unwrap();
    store
        .mark_session_ready("closed", "sbx2", "local:x", t0, None)
        .await
        .unwrap()
        .unwrap();
    store
        .end_session_billed(
            &end(
                "closed",
                SessionStatus::Closed,
                t0 + Duration::seconds(1),
                5,
            ),
            None,
        )
        .await
        .unwrap()
        .unwrap();
    let beat = t0 + Duration::seconds(120) + Duration::microseconds(7);
    let ids: Vec<String> = ["ready", "creating", "closed", "unknown"]
        .map(String::from)
        .to_vec();
    assert_eq!(
        store.record_heartbeats(&ids, beat).await.unwrap(),
        1,
        "only the ready one"
    );
    assert_eq!(store.record_heartbeats(&[], beat).await.unwrap(), 0);
    assert_eq!(store.session_heartbeat("ready").await.unwrap(), Some(beat));
    assert_eq!(store.session_heartbeat("creating").await.unwrap(), None);
    assert_eq!(store.session_heartbeat("closed").await.unwrap(), None);

    // Lost while nobody watched: ended at the heartbeat, billed ready → heartbeat.
    let restart = t0 + Duration::hours(5);
    let mut lost = end("ready", SessionStatus::Terminated, restart, 5);
    lost.at_last_heartbeat = true;
    let ended = store
        .end_session_billed(&lost, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.session.ended_at, Some(beat));
    assert_eq!(
        ended.charge.unwrap().amount_cents,
        -11,
        "2 minutes and 7 µs at 5 cents"
    );

    // Without a heartbeat, at its ready time: nothing to pay.
    creating_session(store, "silent", "ann").await;
    store
        .mark_session_ready("silent", "sbx3", "local:x", t0, None)
        .await
        .unwrap()
        .unwrap();
    let mut lost = end("silent", SessionStatus::Terminated, restart, 5);
    lost.at_last_heartbeat = true;
    let ended = store
        .end_session_billed(&lost, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.session.ended_at, Some(t0));
    assert_eq!(ended.charge.unwrap().amount_cents, 0);
    assert_ledger_consistent(store, "ann").await;
}

pub async fn the_end_reason_is_set_by_the_call_that_ends(db: TestDb) {
    let store = db.store.as_ref();
    creating_session(store, "s", "ann").await;
    store
        .mark_session_ready("s", "sbx", "local:x", base_time(), None)
        .await
        .unwrap()
        .unwrap();
    let mut first = end(
        "s",
        SessionStatus::Terminated,
        base_time() + Duration::seconds(30),
        5,
    );
    first.reason = Some((
        "insufficient_balance".into(),
        "terminated: the balance ran out".into(),
    ));
    let ended = store
        .end_session_billed(&first, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ended.session.error_code.as_deref(),
        Some("insufficient_balance")
    );
    let mut second = end(
        "s",
        SessionStatus::Closed,
        base_time() + Duration::seconds(40),
        5,
    );
    second.reason = Some(("other".into(), "other".into()));
    assert_eq!(store.end_session_billed(&second, None).await.unwrap(), None);
    let stored = store.get_session("s").await.unwrap().unwrap();
    assert_eq!(stored.status, SessionStatus::Terminated);
    assert_eq!(stored.error_code.as_deref(), Some("insufficient_balance"));
    assert_eq!(
        stored.error_message.as_deref(),
        Some("terminated: the balance ran out")
    );
    // Without a reason, none is recorded.
    creating_session(store, "plain", "ann").await;
    let ended = store
        .end_session_billed(&end("plain", SessionStatus::Closed, base_time(), 5), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (ended.session.error_code, ended.session.error_message),
        (None, None)
    );
    assert_ledger_consistent(store, "ann").await;
}

pub async fn stripe_credits_apply_once_per_event_and_checkout(db: TestDb) {
    let store = db.store.as_ref();
    create_user(store, "ann").await;
    let credit = |id: &str| tx(id, "ann", TransactionKind::Deposit, 2500, Some("cs_1"));
    assert!(store
        .record_stripe_credit("evt_1", &credit("d1"))
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        store
            .record_stripe_credit("evt_1", &credit("d2"))
            .await
            .unwrap(),
        None,
        "redelivery"
    );
    assert_eq!(
        store
            .record_stripe_credit("evt_2", &credit("d3"))
            .await
            .unwrap(),
        None,
        "same checkout"
    );
    assert_eq!(store.balance("ann").await.unwrap().balance_cents, 2500);
    // A failed credit records no event: the redelivery can still succeed.
    let bad = tx("d4", "nobody", TransactionKind::Deposit, 100, Some("cs_2"));
    assert!(store.record_stripe_credit("evt_3", &bad).await.is_err());
    let good = tx("d5", "ann", TransactionKind::Deposit, 100, Some("cs_2"));
    assert!(store
        .record_stripe_credit("evt_3", &good)
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        store.balance("ann").await.unwrap().total_deposited_cents,
        2600
    );
    assert_ledger_consistent(store, "ann").await;
}

pub async fn usage_is_filtered_paged_and_summed(db: TestDb) {
    let store = db.store.as_ref();
    create_user(store, "ann").await;
    create_user(store, "bob").await;
    let day = Duration::days(1);
    let kinds = [
        (TransactionKind::Deposit, 1000),
        (TransactionKind::SessionUsage, -30),
        (TransactionKind::AgentJobUsage, -50),
        (TransactionKind::AgentJobRefund, 50),
        (TransactionKind::SessionUsage, -20),
    ];
    for (i, (kind, cents)) in kinds.into_iter().enumerate() {
        let mut t = tx(&format!("a{i}"), "ann", kind, cents, None);
        t.created_at = base_time() + day * i as i32;
        if kind == TransactionKind::SessionUsage {
            t.duration_minutes = Some(1.5);
        }
        store.insert_transaction(&t).await.unwrap().unwrap();
    }
    store
        .insert_transaction(&tx("b0", "bob", TransactionKind::Deposit, 7, None))
        .await
        .unwrap();

    let all = store.list_transactions(&query("ann")).await.unwrap();
    assert_eq!(all.total, 5);
    let ids: Vec<_> = all
        .transactions
        .iter()
        .map(|t| t.transaction_id.as_str())
        .collect();
    assert_eq!(
        ids,
        ["a4", "a3", "a2", "a1", "a0"],
        "newest first, only ann's"
    );
    let usage = all
        .by_kind
        .iter()
        .find(|k| k.kind == TransactionKind::SessionUsage)
        .unwrap();
    assert_eq!((usage.count, usage.amount_cents), (2, -50));
    assert!((usage.minutes - 3.0).abs() < 1e-9);

    let page = store
        .list_transactions(&TransactionQuery {
            limit: 2,
            offset: 2,
            ..query("ann")
        })
        .await
        .unwrap();
    let ids: Vec<_> = page
        .transactions
        .iter()
        .map(|t| t.transaction_id.as_str())
        .collect();
    assert_eq!((ids, page.total), (vec!["a2", "a1"], 5));

    let typed = store
        .list_transactions(&TransactionQuery {
            kinds: vec![TransactionKind::SessionUsage, TransactionKind::Deposit],
            ..query("ann")
        })
        .await
        .unwrap();
    let ids: Vec<_> = typed
        .transactions
        .iter()
        .map(|t| t.transaction_id.as_str())
        .collect();
    assert_eq!(ids, ["a4", "a1", "a0"]);

    let dated = store
        .list_transactions(&TransactionQuery {
            from: Some(base_time() + day),
            until: Some(base_time() + day * 3),
            ..query("ann")
        })
        .await
        .unwrap();
    let ids: Vec<_> = dated
        .transactions
        .iter()
        .map(|t| t.transaction_id.as_str())
        .collect();
    assert_eq!(ids, ["a3", "a2", "a1"], "bounds are inclusive");

    let newest = store
        .list_transactions(&TransactionQuery {
            max_items: Some(2),
            limit: 1,
            offset: 1,
            ..query("ann")
        })
        .await
        .unwrap();
    assert_eq!(newest.total, 2, "max_items bounds what is considered");
    assert_eq!(newest.transactions[0].transaction_id, "a3");
    let sum: i64 = newest.by_kind.iter().map(|k| k.amount_cents).sum();
    assert_eq!(sum, 30, "totals over the newest two only");
    assert_ledger_consistent(store, "ann").await;
    assert_ledger_consistent(store, "bob").await;
}

/// `find_transaction` is how a refund finds its charge: by kind and reference together,
/// across users, and only once something was written.
pub async fn transactions_are_found_by_kind_and_reference(db: TestDb) {
    let store = db.store.as_ref();
    create_user(store, "ann").await;
    create_user(store, "bob").await;
    let usage = TransactionKind::AgentJobUsage;
    assert_eq!(store.find_transaction(usage, "job-1").await.unwrap(), None);

    let charge = tx("t1", "ann", usage, -75, Some("job-1"));
    let written = store
        .insert_transaction(&charge)
        .await
        .unwrap()
        .expect("written");
    let found = store
        .find_transaction(usage, "job-1")
        .await
        .unwrap()
        .expect("found after the write");
    assert_eq!(found, written);
    assert_eq!(
        (
            found.user_id.as_str(),
            found.amount_cents,
            found.reference.as_deref()
        ),
        ("ann", -75, Some("job-1"))
    );

    // The kind matters: the same reference under another kind is another transaction.
    assert_eq!(
        store
            .find_transaction(TransactionKind::AgentJobRefund, "job-1")
            .await
            .unwrap(),
        None
    );
    let refund = tx(
        "t2",
        "ann",
        TransactionKind::AgentJobRefund,
        75,
        Some("job-1"),
    );
    store
        .insert_transaction(&refund)
        .await
        .unwrap()
        .expect("written");
    let found_refund = store
        .find_transaction(TransactionKind::AgentJobRefund, "job-1")
        .await
        .unwrap()
        .expect("the refund");
    assert_eq!(
        (
            found_refund.transaction_id.as_str(),
            found_refund.amount_cents
        ),
        ("t2", 75)
    );
    assert_eq!(
        store
            .find_transaction(usage, "job-1")
            .await
            .unwrap()
            .map(|t| t.transaction_id),
        Some("t1".to_string()),
        "the charge is still the one found for its kind"
    );

    // The reference matters: exact, not a prefix, and found whoever's it is.
    for other in ["job-2", "job-", "job-10", "JOB-1", ""] {
        assert_eq!(
            store.find_transaction(usage, other).await.unwrap(),
            None,
            "{other:?}"
        );
    }
    store
        .insert_transaction(&tx("t3", "bob", usage, -75, Some("job-2")))
        .await
        .unwrap()
        .expect("written");
    assert_eq!(
        store
            .find_transaction(usage, "job-2")
            .await
            .unwrap()
            .map(|t| (t.transaction_id, t.user_id)),
        Some(("t3".to_string(), "bob".to_string()))
    );
    // Transactions without a reference are never found by one.
    store
        .insert_transaction(&tx("t4", "ann", TransactionKind::Deposit, 500, None))
        .await
        .unwrap()
        .expect("written");
    assert_eq!(
        store
            .find_transaction(TransactionKind::Deposit, "")
            .await
            .unwrap(),
        None
    );
    assert_ledger_consistent(store, "ann").await;
    assert_ledger_consistent(store, "bob").await;
}

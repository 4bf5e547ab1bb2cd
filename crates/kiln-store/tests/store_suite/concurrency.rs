//! Races: what must hold when many callers hit one row at once.
use std::sync::Arc;

use chrono::Duration;
use kiln_store::RefreshOutcome;
use tokio::sync::Barrier;

use crate::accounts::new_token;
use crate::harness::{base_time, create_user, import, TestDb};

pub async fn refresh_token_consumed_exactly_once_under_concurrency(db: TestDb) {
    const CALLERS: usize = 16;
    create_user(db.store.as_ref(), "alice").await;
    for round in 0..5 {
        let token_id = format!("race-{round}");
        let family_id = format!("family-{round}");
        db.store
            .insert_refresh_token(&new_token(
                &token_id,
                &family_id,
                base_time() + Duration::hours(1),
            ))
            .await
            .unwrap();

        let barrier = Arc::new(Barrier::new(CALLERS));
        let callers: Vec<_> = (0..CALLERS)
            .map(|_| {
                let (store, barrier, token_id) =
                    (db.store.clone(), barrier.clone(), token_id.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store
                        .consume_refresh_token(&token_id, base_time())
                        .await
                        .expect("consume")
                })
            })
            .collect();
        let mut outcomes = Vec::with_capacity(CALLERS);
        for caller in callers {
            outcomes.push(caller.await.expect("caller task"));
        }
        let consumed = outcomes
            .iter()
            .filter(|o| matches!(o, RefreshOutcome::Consumed { .. }))
            .count();
        let reused = outcomes
            .iter()
            .filter(|o| matches!(o, RefreshOutcome::Reused { family_id: f, .. } if *f == family_id))
            .count();
        assert_eq!(
            (consumed, reused),
            (1, CALLERS - 1),
            "round {round}: {outcomes:?}"
        );
    }
}

pub async fn concurrent_imports_of_one_dataset_are_serialized(db: TestDb) {
    const IMPORTS: u32 = 6;
    let tasks: Vec<_> = (1..=IMPORTS)
        .map(|revision| {
            let store = db.store.clone();
            tokio::spawn(async move {
                let batch = import(
                    "race",
                    &["shared", &format!("own-{revision}")],
                    revision,
                    base_time(),
                );
                store.import_samples(&batch).await
            })
        })
        .collect();
    let (mut created, mut updated) = (0, 0);
    for task in tasks {
        let summary = task
            .await
            .unwrap()
            .expect("every concurrent import succeeds");
        (created, updated) = (created + summary.created, updated + summary.updated);
    }
    // `shared` is new to exactly one import; each import adds its own sample.
    assert_eq!(
        (created, updated),
        (u64::from(IMPORTS) + 1, u64::from(IMPORTS) - 1)
    );

    let latest = db
        .store
        .get_sample("race", "shared", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.version, i64::from(IMPORTS));
    for version in 1..i64::from(IMPORTS) {
        let old = db
            .store
            .get_sample("race", "shared", Some(version))
            .await
            .unwrap();
        assert_eq!(old.map(|s| s.latest), Some(false), "version {version}");
    }
    let dataset = db.store.get_dataset("race").await.unwrap().unwrap();
    assert_eq!(dataset.sample_count, i64::from(IMPORTS) + 1);
}

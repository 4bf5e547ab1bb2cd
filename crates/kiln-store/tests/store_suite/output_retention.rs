//! Output retention: old interactions lose their stdout and stderr once, oldest first,
//! in bounded batches, and say when; nothing else of them changes.
use chrono::Duration;
use kiln_store::InteractionOutcome;

use crate::harness::{base_time, creating_session, exec_request, new_interaction, TestDb};

pub async fn old_output_is_expired_once_oldest_first(db: TestDb) {
    let store = db.store.as_ref();
    creating_session(store, "sess", "alice").await;
    let t = |seconds| base_time() + Duration::seconds(seconds);
    for (id, finished) in [("i-1", 10), ("i-2", 20), ("i-3", 30), ("i-4", 0)] {
        let new = new_interaction(id, "sess", exec_request(id), t(1));
        store.insert_interaction(&new).await.unwrap();
        if finished > 0 {
            let outcome = InteractionOutcome {
                exit_code: 7,
                stdout: format!("{id} out \u{0} ✓"),
                stderr: "err".into(),
                execution_time_seconds: 1.5,
                success: false,
                message: Some("kept".into()),
                finished_at: t(finished),
            };
            assert!(store.complete_interaction(id, &outcome).await.unwrap());
        }
    }
    let get =
        |id: &'static str| async move { store.get_interaction("sess", id).await.unwrap().unwrap() };
    let before = get("i-1").await;
    assert_eq!(before.output_expired_at, None);

    // Finished before t(25): i-1 and i-2; a batch of one takes the oldest.
    assert_eq!(
        store
            .expire_interaction_output(t(25), t(100), 1)
            .await
            .unwrap(),
        1
    );
    let trimmed = get("i-1").await;
    assert_eq!(trimmed.output_expired_at, Some(t(100)));
    let outcome = trimmed.outcome.clone().unwrap();
    assert_eq!((outcome.stdout.as_str(), outcome.stderr.as_str()), ("", ""));
    assert_eq!(
        outcome,
        InteractionOutcome {
            stdout: String::new(),
            stderr: String::new(),
            ..before.outcome.clone().unwrap()
        },
        "only the output goes"
    );
    assert_eq!(
        (trimmed.seq, &trimmed.request),
        (before.seq, &before.request)
    );
    assert_eq!(get("i-2").await.output_expired_at, None);

    assert_eq!(
        store
            .expire_interaction_output(t(25), t(101), 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(get("i-2").await.output_expired_at, Some(t(101)));
    // Once: a second pass finds nothing and keeps the first time.
    assert_eq!(
        store
            .expire_interaction_output(t(25), t(102), 10)
            .await
            .unwrap(),
        0
    );
    assert_eq!(get("i-1").await.output_expired_at, Some(t(100)));
    assert!(get("i-3")
        .await
        .outcome
        .unwrap()
        .stdout
        .starts_with("i-3 out"));

    // Unfinished interactions have no output to expire, however old.
    assert_eq!(
        store
            .expire_interaction_output(t(1000), t(103), 10)
            .await
            .unwrap(),
        1
    );
    let unfinished = get("i-4").await;
    assert_eq!(
        (unfinished.outcome, unfinished.output_expired_at),
        (None, None)
    );
    // An expired outcome is still never overwritten.
    let late = InteractionOutcome {
        finished_at: t(200),
        ..InteractionOutcome::default()
    };
    assert!(!store.complete_interaction("i-1", &late).await.unwrap());
}

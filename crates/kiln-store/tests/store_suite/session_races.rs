//! Races on sessions, interactions and jobs: what must hold when callers collide.
use std::future::Future;
use std::sync::Arc;

use chrono::Duration;
use kiln_store::{JobStatus, SessionStatus, Store};
use tokio::sync::Barrier;

use crate::harness::{base_time, creating_session, exec_request, new_interaction, TestDb};
use crate::verification_jobs::{new_job, update};

/// Runs `callers` copies of `call` (given its index) released at once, and their results.
async fn all_at_once<T, F, Fut>(store: &Arc<dyn Store>, callers: usize, call: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(Arc<dyn Store>, usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(callers));
    let tasks: Vec<_> = (0..callers)
        .map(|i| {
            let (barrier, work) = (barrier.clone(), call(store.clone(), i));
            tokio::spawn(async move {
                barrier.wait().await;
                work.await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(callers);
    for task in tasks {
        results.push(task.await.expect("caller task"));
    }
    results
}

pub async fn racing_ends_of_a_session_have_one_winner(db: TestDb) {
    const CALLERS: usize = 8;
    for round in 0..6 {
        let session_id = format!("race-{round}");
        creating_session(db.store.as_ref(), &session_id, "alice").await;
        if round % 2 == 1 {
            db.store
                .mark_session_ready(&session_id, "sbx", "local:x", base_time(), None)
                .await
                .unwrap()
                .unwrap();
        }
        let outcomes = all_at_once(&db.store, CALLERS, |store, i| {
            let session_id = session_id.clone();
            async move {
                let status = if i % 2 == 0 {
                    SessionStatus::Closed
                } else {
                    SessionStatus::Terminated
                };
                let at = base_time() + Duration::seconds(i as i64 + 1);
                (
                    status,
                    at,
                    store
                        .end_session(&session_id, status, at)
                        .await
                        .expect("end"),
                )
            }
        })
        .await;
        let winners: Vec<_> = outcomes.iter().filter(|(_, _, o)| o.is_some()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        let (status, at, record) = winners[0];
        let record = record.clone().unwrap();
        assert_eq!((record.status, record.ended_at), (*status, Some(*at)));
        let stored = db.store.get_session(&session_id).await.unwrap().unwrap();
        assert_eq!(
            stored, record,
            "round {round}: the winner's change is what is stored"
        );
    }
}

pub async fn creation_failure_racing_a_close_has_one_winner(db: TestDb) {
    for round in 0..6 {
        let session_id = format!("race-{round}");
        creating_session(db.store.as_ref(), &session_id, "alice").await;
        let outcomes = all_at_once(&db.store, 2, |store, i| {
            let session_id = session_id.clone();
            async move {
                let at = base_time();
                let record = if i == 0 {
                    store
                        .mark_session_error(&session_id, "boom", "failed", at, None)
                        .await
                } else {
                    store
                        .end_session(&session_id, SessionStatus::Closed, at)
                        .await
                };
                record.expect("no error")
            }
        })
        .await;
        let winners: Vec<_> = outcomes.into_iter().flatten().collect();
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let stored = db.store.get_session(&session_id).await.unwrap().unwrap();
        assert_eq!(stored.status, winners[0].status);
    }
}

pub async fn concurrent_interactions_get_consecutive_seqs(db: TestDb) {
    const CALLERS: usize = 16;
    creating_session(db.store.as_ref(), "left", "alice").await;
    creating_session(db.store.as_ref(), "right", "alice").await;
    // Two sessions at once, so that one session's counter cannot leak into the other.
    let records = all_at_once(&db.store, CALLERS * 2, |store, i| async move {
        let session = if i % 2 == 0 { "left" } else { "right" };
        let id = format!("{session}-{i}");
        let new = new_interaction(&id, session, exec_request(&id), base_time());
        store
            .insert_interaction(&new)
            .await
            .expect("insert interaction")
    })
    .await;
    for session in ["left", "right"] {
        let mut seqs: Vec<i64> = records
            .iter()
            .filter(|r| r.session_id == session)
            .map(|r| r.seq)
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=CALLERS as i64).collect::<Vec<_>>(), "{session}");
    }
    for record in &records {
        let stored = db
            .store
            .get_interaction(&record.session_id, &record.interaction_id)
            .await;
        assert_eq!(stored.unwrap().as_ref(), Some(record));
    }
}

pub async fn racing_outcomes_of_an_interaction_have_one_winner(db: TestDb) {
    const CALLERS: usize = 8;
    creating_session(db.store.as_ref(), "sess", "alice").await;
    let new = new_interaction("i", "sess", exec_request("true"), base_time());
    db.store.insert_interaction(&new).await.unwrap();
    let wrote = all_at_once(&db.store, CALLERS, |store, i| async move {
        let outcome = kiln_store::InteractionOutcome {
            exit_code: i as i64,
            stdout: format!("caller {i}"),
            finished_at: base_time(),
            ..Default::default()
        };
        (
            i,
            store
                .complete_interaction("i", &outcome)
                .await
                .expect("complete"),
        )
    })
    .await;
    let winners: Vec<usize> = wrote.iter().filter(|(_, w)| *w).map(|(i, _)| *i).collect();
    assert_eq!(winners.len(), 1, "{wrote:?}");
    let stored = db
        .store
        .get_interaction("sess", "i")
        .await
        .unwrap()
        .unwrap()
        .outcome
        .unwrap();
    assert_eq!(
        stored.stdout,
        format!("caller {}", winners[0]),
        "the winner's outcome is kept"
    );
}

pub async fn racing_job_finishes_have_one_winner(db: TestDb) {
    creating_session(db.store.as_ref(), "sess", "alice").await;
    for round in 0..6 {
        let job_id = format!("job-{round}");
        db.store
            .insert_verification_job(&new_job(&job_id, "sess", "alice", 0))
            .await
            .unwrap();
        let outcomes = all_at_once(&db.store, 6, |store, i| {
            let job_id = job_id.clone();
            async move {
                let status = [JobStatus::Completed, JobStatus::Cancelled, JobStatus::Error][i % 3];
                store
                    .update_verification_job(&job_id, &update(status, 1), None)
                    .await
                    .expect("update")
            }
        })
        .await;
        let winners: Vec<_> = outcomes.into_iter().flatten().collect();
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let stored = db
            .store
            .get_verification_job("sess", &job_id)
            .await
            .unwrap();
        assert_eq!(stored.as_ref(), Some(&winners[0]));
    }
}

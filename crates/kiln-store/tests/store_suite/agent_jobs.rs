//! Agent jobs: status moves, one winner among racing finishers, results attached once,
//! cursor pagination newest first without duplicates, and restart recovery's listing.
use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Duration;
use kiln_store::{AgentJobCursor, AgentJobUpdate, JobStatus, NewAgentJob, Store, StoreError};
use tokio::sync::Barrier;

use crate::harness::{base_time, create_user, TestDb};

fn new_job(job_id: &str, user_id: &str, seconds: i64) -> NewAgentJob {
    NewAgentJob {
        job_id: job_id.to_string(),
        user_id: user_id.to_string(),
        repo: "https://example.test/org/repo.git".into(),
        git_ref: Some("main".into()),
        agent_id: "script".into(),
        secret_hash: format!("hash-of-{job_id}"),
        created_at: base_time() + Duration::seconds(seconds),
        node_id: (seconds % 2 == 1).then(|| format!("node-of-{job_id}")),
    }
}

fn update(status: JobStatus, seconds: i64, progress: Option<&str>) -> AgentJobUpdate {
    AgentJobUpdate {
        status,
        at: base_time() + Duration::seconds(seconds),
        progress: progress.map(str::to_string),
        error_message: None,
    }
}

pub async fn agent_job_runs_to_completion(db: TestDb) {
    let store = db.store.as_ref();
    create_user(store, "alice").await;
    let t = |seconds| base_time() + Duration::seconds(seconds);

    let created = store
        .insert_agent_job(&new_job("aj-1", "alice", 1))
        .await
        .unwrap();
    assert_eq!(created.status, JobStatus::Pending);
    assert_eq!(
        (
            created.repo.as_str(),
            created.git_ref.as_deref(),
            created.agent_id.as_str()
        ),
        ("https://example.test/org/repo.git", Some("main"), "script")
    );
    assert_eq!(created.secret_hash, "hash-of-aj-1");
    assert_eq!(created.node_id.as_deref(), Some("node-of-aj-1"));
    assert_eq!(created.created_at, t(1));
    assert_eq!((created.started_at, created.completed_at), (None, None));
    assert_eq!(
        (created.progress.clone(), created.result_path.clone()),
        (None, None)
    );
    assert_eq!(
        store.get_agent_job("aj-1").await.unwrap(),
        Some(created.clone())
    );

    let starting = store
        .update_agent_job("aj-1", &update(JobStatus::Starting, 2, Some("cloning")))
        .await
        .unwrap()
        .expect("pending → starting");
    assert_eq!(
        (
            starting.status,
            starting.started_at,
            starting.progress.as_deref()
        ),
        (JobStatus::Starting, Some(t(2)), Some("cloning"))
    );
    let running = store
        .update_agent_job("aj-1", &update(JobStatus::Running, 3, None))
        .await
        .unwrap()
        .expect("starting → running");
    assert_eq!(running.started_at, Some(t(2)), "started_at is kept");
    assert_eq!(
        running.progress.as_deref(),
        Some("cloning"),
        "progress kept when None"
    );
    assert_eq!(
        store.list_unfinished_agent_jobs().await.unwrap(),
        vec![running.clone()]
    );

    assert!(store
        .set_agent_job_result("aj-1", "/data/aj-1.tar.gz")
        .await
        .unwrap());
    assert!(
        !store
            .set_agent_job_result("aj-1", "/elsewhere")
            .await
            .unwrap(),
        "a result is attached once"
    );
    let done = store
        .update_agent_job("aj-1", &update(JobStatus::Completed, 4, Some("done")))
        .await
        .unwrap()
        .expect("running → completed");
    assert_eq!(
        (done.status, done.completed_at, done.result_path.as_deref()),
        (JobStatus::Completed, Some(t(4)), Some("/data/aj-1.tar.gz"))
    );
    assert_eq!(
        store
            .update_agent_job("aj-1", &update(JobStatus::Error, 5, None))
            .await
            .unwrap(),
        None,
        "nothing changes a finished job"
    );
    assert_eq!(store.get_agent_job("aj-1").await.unwrap(), Some(done));
    assert!(store.list_unfinished_agent_jobs().await.unwrap().is_empty());
}

pub async fn agent_job_errors_keep_their_message_and_ids_are_checked(db: TestDb) {
    let store = db.store.as_ref();
    create_user(store, "alice").await;
    store
        .insert_agent_job(&new_job("aj-1", "alice", 1))
        .await
        .unwrap();
    let failed = store
        .update_agent_job(
            "aj-1",
            &AgentJobUpdate {
                error_message: Some("fatal: bad ref".into()),
                ..update(JobStatus::Error, 2, None)
            },
        )
        .await
        .unwrap()
        .expect("pending → error");
    assert_eq!(failed.error_message.as_deref(), Some("fatal: bad ref"));
    assert_eq!(
        failed.started_at, None,
        "an error before starting has no start"
    );
    assert_eq!(
        failed.completed_at,
        Some(base_time() + Duration::seconds(2))
    );

    assert!(matches!(
        store.insert_agent_job(&new_job("aj-1", "alice", 3)).await,
        Err(StoreError::Conflict(field)) if field == "job_id"
    ));
    assert!(matches!(
        store.insert_agent_job(&new_job("aj-2", "nobody", 3)).await,
        Err(StoreError::Missing(_))
    ));
    assert_eq!(store.get_agent_job("aj-unknown").await.unwrap(), None);
    assert_eq!(
        store
            .update_agent_job("aj-unknown", &update(JobStatus::Running, 3, None))
            .await
            .unwrap(),
        None
    );
    assert!(!store
        .set_agent_job_result("aj-unknown", "/x")
        .await
        .unwrap());
}

pub async fn agent_jobs_paginate_newest_first_by_cursor(db: TestDb) {
    let store = db.store.as_ref();
    create_user(store, "alice").await;
    create_user(store, "bob").await;
    // Ties on created_at are ordered by job_id, so a cursor inside a tie still works.
    let mut expected = Vec::new();
    for i in 0..7 {
        let id = format!("aj-{i}");
        store
            .insert_agent_job(&new_job(&id, "alice", i / 2))
            .await
            .unwrap();
        expected.push(id);
    }
    store
        .insert_agent_job(&new_job("aj-bob", "bob", 100))
        .await
        .unwrap();
    expected.sort_by(|a, b| b.cmp(a));

    let mut seen = Vec::new();
    let mut cursor: Option<AgentJobCursor> = None;
    loop {
        let page = store
            .list_agent_jobs("alice", cursor.as_ref(), 3)
            .await
            .unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        cursor = Some(AgentJobCursor {
            created_at: last.created_at,
            job_id: last.job_id.clone(),
        });
        seen.extend(page.iter().map(|j| j.job_id.clone()));
    }
    assert_eq!(seen, expected, "newest first, every job once, only alice's");
    let unique: BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len());
    assert!(store
        .list_agent_jobs("carol", None, 10)
        .await
        .unwrap()
        .is_empty());
}

pub async fn racing_agent_job_finishes_have_one_winner(db: TestDb) {
    create_user(db.store.as_ref(), "alice").await;
    for round in 0..4 {
        let job_id = format!("aj-{round}");
        db.store
            .insert_agent_job(&new_job(&job_id, "alice", 0))
            .await
            .unwrap();
        let barrier = Arc::new(Barrier::new(6));
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let (store, barrier, job_id): (Arc<dyn Store>, _, _) =
                    (db.store.clone(), barrier.clone(), job_id.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let status = [JobStatus::Completed, JobStatus::Error][i % 2];
                    store
                        .update_agent_job(&job_id, &update(status, 1, None))
                        .await
                        .expect("update")
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            winners.extend(task.await.expect("task"));
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(
            db.store.get_agent_job(&job_id).await.unwrap().as_ref(),
            Some(&winners[0])
        );
    }
}

//! Verification jobs: status moves, timestamps, results, and the end of changes.
use chrono::Duration;
use kiln_store::{
    JobStatus, JobUpdate, NewVerificationJob, StoreError, VerificationCursor, VerificationResult,
};

use crate::harness::{base_time, creating_session, TestDb};

pub fn new_job(job_id: &str, session_id: &str, user_id: &str, seconds: i64) -> NewVerificationJob {
    NewVerificationJob {
        job_id: job_id.to_string(),
        session_id: session_id.to_string(),
        user_id: user_id.to_string(),
        sample_id: "org__repo-1".into(),
        created_at: base_time() + Duration::seconds(seconds),
    }
}

pub fn update(status: JobStatus, seconds: i64) -> JobUpdate {
    JobUpdate {
        status,
        at: base_time() + Duration::seconds(seconds),
        result: None,
        error_code: None,
        error_message: None,
    }
}

pub async fn job_runs_to_completion(db: TestDb) {
    let store = db.store.as_ref();
    creating_session(store, "sess", "alice").await;
    let t = |seconds| base_time() + Duration::seconds(seconds);

    let created = store
        .insert_verification_job(&new_job("job-1", "sess", "alice", 1))
        .await
        .unwrap();
    assert_eq!(created.status, JobStatus::Pending);
    assert_eq!(
        (created.job_id.as_str(), created.session_id.as_str()),
        ("job-1", "sess")
    );
    assert_eq!(
        (created.user_id.as_str(), created.sample_id.as_str()),
        ("alice", "org__repo-1")
    );
    assert_eq!(created.created_at, t(1));
    assert_eq!(
        (
            created.started_at,
            created.completed_at,
            created.result.clone()
        ),
        (None, None, None)
    );
    assert_eq!(
        store.get_verification_job("sess", "job-1").await.unwrap(),
        Some(created.clone())
    );

    let starting = store
        .update_verification_job("job-1", &update(JobStatus::Starting, 2), None)
        .await
        .unwrap();
    let starting = starting.expect("pending → starting");
    assert_eq!(
        (starting.status, starting.started_at, starting.completed_at),
        (JobStatus::Starting, Some(t(2)), None)
    );
    let running = store
        .update_verification_job("job-1", &update(JobStatus::Running, 3), None)
        .await
        .unwrap();
    let running = running.expect("starting → running");
    assert_eq!(
        (running.status, running.started_at),
        (JobStatus::Running, Some(t(2))),
        "started_at kept"
    );
    assert_eq!(
        store.list_unfinished_verification_jobs().await.unwrap(),
        vec![running.clone()]
    );

    let result = a_result("ok\u{0}\nü\n");
    let mut finish = update(JobStatus::Completed, 9);
    finish.at += Duration::nanoseconds(999);
    finish.result = Some(result.clone());
    let completed = store
        .update_verification_job("job-1", &finish, None)
        .await
        .unwrap()
        .expect("completes");
    assert_eq!(completed.status, JobStatus::Completed);
    assert_eq!(
        (completed.started_at, completed.completed_at),
        (Some(t(2)), Some(t(9)))
    );
    assert_eq!(completed.result, Some(result));
    assert_eq!(
        (
            completed.error_code.clone(),
            completed.error_message.clone()
        ),
        (None, None)
    );
    assert_eq!(
        store.get_verification_job("sess", "job-1").await.unwrap(),
        Some(completed.clone())
    );
    assert!(store
        .list_unfinished_verification_jobs()
        .await
        .unwrap()
        .is_empty());

    // Finished is final, whatever the update.
    for status in [
        JobStatus::Cancelled,
        JobStatus::Running,
        JobStatus::Error,
        JobStatus::Completed,
    ] {
        let mut late = update(status, 20);
        late.error_code = Some("late".into());
        late.result = Some(a_result("overwrite"));
        assert_eq!(
            store
                .update_verification_job("job-1", &late, None)
                .await
                .unwrap(),
            None,
            "{status:?}"
        );
    }
    assert_eq!(
        store.get_verification_job("sess", "job-1").await.unwrap(),
        Some(completed)
    );
}

pub async fn jobs_fail_cancel_and_skip_states(db: TestDb) {
    let store = db.store.as_ref();
    creating_session(store, "sess", "alice").await;
    let t = |seconds| base_time() + Duration::seconds(seconds);
    for (id, at) in [("cancelled", 3), ("failed", 1), ("jumped", 2)] {
        store
            .insert_verification_job(&new_job(id, "sess", "alice", at))
            .await
            .unwrap();
    }
    let unfinished: Vec<_> = store
        .list_unfinished_verification_jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.job_id)
        .collect();
    assert_eq!(
        unfinished,
        ["failed", "jumped", "cancelled"],
        "oldest first"
    );

    // Cancelled before it started: no started_at.
    let cancelled = store
        .update_verification_job("cancelled", &update(JobStatus::Cancelled, 4), None)
        .await
        .unwrap();
    let cancelled = cancelled.unwrap();
    assert_eq!(
        (
            cancelled.status,
            cancelled.started_at,
            cancelled.completed_at
        ),
        (JobStatus::Cancelled, None, Some(t(4)))
    );

    // Error fields are set when given and kept when not.
    let mut failing = update(JobStatus::Starting, 5);
    failing.error_code = Some("image_pull".into());
    let starting = store
        .update_verification_job("failed", &failing, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            starting.error_code.as_deref(),
            starting.error_message.as_deref()
        ),
        (Some("image_pull"), None)
    );
    let mut failed = update(JobStatus::Error, 6);
    failed.error_message = Some("could not pull".into());
    let failed = store
        .update_verification_job("failed", &failed, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.status, JobStatus::Error);
    assert_eq!(
        (
            failed.error_code.as_deref(),
            failed.error_message.as_deref()
        ),
        (Some("image_pull"), Some("could not pull"))
    );
    assert_eq!(
        (failed.started_at, failed.completed_at),
        (Some(t(5)), Some(t(6)))
    );

    // Straight to Running still records a start.
    let jumped = store
        .update_verification_job("jumped", &update(JobStatus::Running, 7), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((jumped.started_at, jumped.completed_at), (Some(t(7)), None));

    let unfinished = store.list_unfinished_verification_jobs().await.unwrap();
    assert_eq!(unfinished, vec![jumped]);
}

pub async fn job_ids_and_references_are_checked(db: TestDb) {
    let store = db.store.as_ref();
    creating_session(store, "sess", "alice").await;
    let first = store
        .insert_verification_job(&new_job("job", "sess", "alice", 0))
        .await
        .unwrap();
    let taken = store
        .insert_verification_job(&new_job("job", "sess", "alice", 5))
        .await;
    assert!(
        matches!(taken, Err(StoreError::Conflict("job_id"))),
        "{taken:?}"
    );
    let no_session = store
        .insert_verification_job(&new_job("j2", "nope", "alice", 0))
        .await;
    assert!(
        matches!(no_session, Err(StoreError::Missing(_))),
        "{no_session:?}"
    );
    let no_user = store
        .insert_verification_job(&new_job("j3", "sess", "nobody", 0))
        .await;
    assert!(
        matches!(no_user, Err(StoreError::Missing(_))),
        "{no_user:?}"
    );
    assert_eq!(
        store.list_unfinished_verification_jobs().await.unwrap(),
        vec![first]
    );

    assert_eq!(
        store.get_verification_job("sess", "nope").await.unwrap(),
        None
    );
    assert_eq!(
        store.get_verification_job("other", "job").await.unwrap(),
        None,
        "other session"
    );
    let unknown = store
        .update_verification_job("nope", &update(JobStatus::Running, 1), None)
        .await;
    assert_eq!(unknown.unwrap(), None);
}

/// A verification result as the verifier makes them, with `stdout` as given.
fn a_result(stdout: &str) -> VerificationResult {
    serde_json::from_value(serde_json::json!({
        "tool": "test_suite", "is_success": true, "execution_duration_seconds": 1.5,
        "total": 2, "passed": 2, "failed": 0, "skipped": 0,
        "passes": [{"name": "t::a", "status": "PASSED"}, {"name": "t::b", "status": "PASSED"}],
        "failures": [], "skips": [], "stdout": stdout, "stderr": "",
        "grading": {
            "rules": "codeset_gym", "expected_passes_correct": true,
            "expected_failures_correct": true, "actual_passes": ["t::a", "t::b"],
            "actual_failures": [], "actual_skipped": [],
        },
    }))
    .expect("a verification result")
}

pub async fn a_sessions_jobs_are_listed_newest_first(db: TestDb) {
    let store = db.store.as_ref();
    creating_session(store, "sess", "alice").await;
    creating_session(store, "other", "alice").await;
    assert!(store
        .list_verification_jobs("sess", None, 10)
        .await
        .unwrap()
        .is_empty());
    // job-b and job-c share a time: the id orders them.
    for (id, session, second) in [
        ("job-a", "sess", 1),
        ("job-b", "sess", 2),
        ("job-c", "sess", 2),
        ("job-d", "sess", 3),
        ("job-x", "other", 4),
    ] {
        store
            .insert_verification_job(&new_job(id, session, "alice", second))
            .await
            .unwrap();
    }
    store
        .update_verification_job("job-d", &update(JobStatus::Error, 5), None)
        .await
        .unwrap();
    let ids = |jobs: Vec<kiln_store::VerificationJobRecord>| {
        jobs.into_iter().map(|j| j.job_id).collect::<Vec<_>>()
    };
    let all = store
        .list_verification_jobs("sess", None, 10)
        .await
        .unwrap();
    assert_eq!(all[0].status, JobStatus::Error);
    assert_eq!(ids(all), ["job-d", "job-c", "job-b", "job-a"]);
    let first = store.list_verification_jobs("sess", None, 2).await.unwrap();
    let last = first.last().unwrap();
    let after = VerificationCursor {
        created_at: last.created_at,
        job_id: last.job_id.clone(),
    };
    assert_eq!(ids(first), ["job-d", "job-c"]);
    let rest = store
        .list_verification_jobs("sess", Some(&after), 2)
        .await
        .unwrap();
    assert_eq!(ids(rest), ["job-b", "job-a"]);
}

//! Admission control over HTTP, with real sandboxes: a node whose memory budget is taken
//! refuses a new session or agent job with 503 `node_full` and `Retry-After` before
//! storing anything, and a closed session gives its room back.
mod agent_job_support;
mod common;
mod sandbox;

use common::{assert_error, Database};
use sandbox::{create_ready, DATASET, SAMPLE};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_answers_503_node_full_with_retry_after() {
    // Room for exactly one session of the default 2 GiB: a 2 GiB budget, no overcommit.
    let Some(s) = sandbox::start_if_possible(|c| {
        c.runtime.memory_budget_mib = Some(2048);
        c.runtime.memory_overcommit = 1.0;
        c.runtime.disk_mib = 256;
    })
    .await
    else {
        return;
    };
    let key = s.admin_key.clone();
    let create = json!({"dataset": DATASET, "sample_id": SAMPLE});
    let first = create_ready(&s, &key).await;

    let (status, body, retry_after) = s.post_retry_after(&key, "/sessions", &create).await;
    let retry_after = retry_after.and_then(|v| v.parse::<u64>().ok());
    assert!(retry_after.is_some_and(|secs| secs > 0), "{retry_after:?}");
    assert_error(status, &body, 503, "node_full");
    let (_, listing) = s.get_as(&key, "/sessions").await;
    assert_eq!(
        listing["total_count"], 1,
        "a refused create stores nothing: {listing}"
    );

    let (status, _) = s.delete_as(&key, &format!("/sessions/{first}")).await;
    assert_eq!(status, 200);
    let (status, second) = s.post_as(&key, "/sessions", &create).await;
    assert_eq!(
        status, 201,
        "the closed session's room is free again: {second}"
    );
    let second = second["session_id"].as_str().expect("id").to_string();
    let (_, session) = s.get_as(&key, &format!("/sessions/{second}")).await;
    assert_eq!(session["status"], "ready", "{session}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_jobs_do_not_bypass_admission() {
    if !sandbox::prerequisites() {
        return;
    }
    let repos = tempfile::tempdir().expect("tempdir");
    let repo = repos.path().join("calc");
    let (first, _) = agent_job_support::make_repo(&repo, "echo done\n");
    let s = agent_job_support::start_with(Database::from_env(), repos.path(), |c| {
        c.runtime.memory_budget_mib = Some(2048);
        c.runtime.memory_overcommit = 1.0;
        c.runtime.disk_mib = 256;
    })
    .await;
    let key = s.admin_key.clone();
    let session = create_ready(&s, &key).await;

    let job = json!({"repo": repo.to_str().expect("utf8"), "ref": first, "agent_id": "script"});
    let (status, body, retry_after) = s.post_retry_after(&key, "/agent-jobs", &job).await;
    assert!(retry_after.is_some());
    assert_error(status, &body, 503, "node_full");
    let (_, jobs) = s.get_as(&key, "/agent-jobs").await;
    assert_eq!(jobs["jobs"].as_array().map(Vec::len), Some(0), "{jobs}");

    let (status, _) = s.delete_as(&key, &format!("/sessions/{session}")).await;
    assert_eq!(status, 200);
    let id = agent_job_support::start_job(&s, &key, &repo, Some(&first)).await;
    let done = agent_job_support::wait_for(&s, &key, &id, agent_job_support::finished).await;
    assert_eq!(done["status"], "completed", "{done}");
}

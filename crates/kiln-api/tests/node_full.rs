//! Admission control over HTTP, with real sandboxes: a node whose memory budget is taken
//! refuses a new session or agent job with 503 `node_full` and `Retry-After` before
//! storing anything, and a closed session gives its room back. Warm sandboxes
//! (`runtime.warm_pools`) are taken by sessions, survive a restart once taken, and hold
//! none of the budget until then.
use crate::{agent_job_support, common, sandbox};

use std::path::Path;
use std::time::{Duration, Instant};

use common::{assert_error, Database, TestServer};
use sandbox::{create_ready, DATASET, SAMPLE};
use serde_json::{json, Value};

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

/// The warm sandboxes' directories under `sandboxes` (ready ones have their state file).
fn warm_ready(sandboxes: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(sandboxes)
        .expect("sandboxes dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("warm-") && sandboxes.join(n).join("state.json").exists())
        .collect();
    names.sort();
    names
}

async fn wait_warm(sandboxes: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = warm_ready(sandboxes);
        if ready.len() == n {
            return ready;
        }
        assert!(Instant::now() < deadline, "{ready:?} warm, not {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The cgroup named in `id`'s state: a sandbox taken warm keeps its warm name's.
fn state_cgroup(sandboxes: &Path, id: &str) -> String {
    let state: Value = serde_json::from_slice(
        &std::fs::read(sandboxes.join(id).join("state.json")).expect("state"),
    )
    .expect("state JSON");
    state["cgroup"]
        .as_str()
        .unwrap_or_else(|| panic!("{id} did not take a warm sandbox: {state}"))
        .to_string()
}

/// One copy of `id` over `/v1`, ready.
async fn fork_ready(s: &TestServer, key: &str, id: &str) -> String {
    let (status, forked) = s
        .v1_as(
            key,
            reqwest::Method::POST,
            &format!("/instances/{id}/fork"),
            Some(&serde_json::json!({"count": 1})),
        )
        .await;
    assert_eq!(status, 201, "{forked}");
    let fork = forked["instances"][0]["instance_id"]
        .as_str()
        .expect("fork id")
        .to_string();
    // The GET long-polls while the session is creating.
    let session = s.get_ok(key, &format!("/sessions/{fork}")).await;
    assert_eq!(session["status"], "ready", "{session}");
    fork
}

async fn sh(s: &TestServer, key: &str, id: &str, command: &str) -> Value {
    let iid = sandbox::start_exec(s, key, id, command).await;
    sandbox::finished(s, key, id, &iid).await
}

/// A session of a pooled image takes a sandbox started ahead: renamed to its own id,
/// keeping the cgroup it started in (its state says which), working like any other, and
/// adopted by a restarted server, which tears the unclaimed ones down. A fork of it takes
/// one as well, given the snapshot's root, and still does after the restart. The pool
/// holds none of the memory budget: with room for two sessions (2 GiB each), two warm
/// ones refuse neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_take_warm_sandboxes_which_outlive_a_restart() {
    let reference = kiln_services::sessions::sample_image_reference(DATASET, SAMPLE);
    let Some(s) = sandbox::start_if_possible(|c| {
        c.runtime.warm_pools.insert(reference.clone(), 2);
        c.runtime.memory_budget_mib = Some(4096);
        c.runtime.memory_overcommit = 1.0;
        c.runtime.disk_mib = 256;
    })
    .await
    else {
        return;
    };
    let key = s.admin_key.clone();
    let sandboxes = s.kiln.config.data_dir.join("runtime/sandboxes");
    // The image's first session starts its own and fills the pool.
    let first = create_ready(&s, &key).await;
    let warm = wait_warm(&sandboxes, 2).await;
    let (status, _) = s.delete_as(&key, &format!("/sessions/{first}")).await;
    assert_eq!(status, 200);

    let second = create_ready(&s, &key).await;
    let cgroup = state_cgroup(&sandboxes, &second);
    assert!(warm.contains(&cgroup), "{cgroup} not in {warm:?}");
    assert!(!sandboxes.join(&cgroup).exists(), "renamed, not copied");
    let done = sh(
        &s,
        &key,
        &second,
        "cat /testbed/hello.txt; hostname; echo kept > /tmp/k",
    )
    .await;
    assert_eq!(done["stdout"], "hello from the image\nkiln\n", "{done}");
    let refilled = wait_warm(&sandboxes, 2).await;

    // A fork of the session takes one too: it gets the snapshot's root when taken (and,
    // as every fork, an empty /tmp).
    sh(&s, &key, &second, "echo forked > /root/f").await;
    let fork = fork_ready(&s, &key, &second).await;
    let cgroup = state_cgroup(&sandboxes, &fork);
    assert!(refilled.contains(&cgroup), "{cgroup} not in {refilled:?}");
    let done = sh(
        &s,
        &key,
        &fork,
        "cat /root/f /testbed/hello.txt; ls -A /tmp | wc -l; ls -a /",
    )
    .await;
    assert_eq!(
        done["stdout"],
        "forked\nhello from the image\n0\n.\n..\n.kiln\nbin\ndev\netc\nproc\nroot\nsys\ntestbed\ntmp\n",
        "{done}"
    );
    let (status, _) = s.delete_as(&key, &format!("/sessions/{fork}")).await;
    assert_eq!(status, 200);
    let refilled = wait_warm(&sandboxes, 2).await;

    // A crash: the taken one is adopted (same process), the unclaimed ones removed.
    let pid = sandbox::init_pid(&s, &second);
    let s = s.restart(false).await;
    assert!(
        warm_ready(&sandboxes).is_empty(),
        "{refilled:?} outlived the server"
    );
    assert_eq!(sandbox::init_pid(&s, &second), pid);
    let done = sh(&s, &key, &second, "cat /tmp/k").await;
    assert_eq!(done["stdout"], "kept\n", "{done}");
    // Its forks still know its image's pool, before any create of the image (the image
    // is in the sandbox's state and in the snapshot's record): the first copy starts on
    // its own and fills the pool, the next one takes a warm sandbox.
    sh(&s, &key, &second, "echo again > /root/g").await;
    let cold = fork_ready(&s, &key, &second).await;
    let refilled = wait_warm(&sandboxes, 2).await;
    let (status, _) = s.delete_as(&key, &format!("/sessions/{cold}")).await;
    assert_eq!(status, 200);
    let fork = fork_ready(&s, &key, &second).await;
    let cgroup = state_cgroup(&sandboxes, &fork);
    assert!(refilled.contains(&cgroup), "{cgroup} not in {refilled:?}");
    let done = sh(&s, &key, &fork, "cat /root/g /testbed/hello.txt").await;
    assert_eq!(done["stdout"], "again\nhello from the image\n", "{done}");
    let (status, _) = s.delete_as(&key, &format!("/sessions/{fork}")).await;
    assert_eq!(status, 200);
    let (status, body) = s.delete_as(&key, &format!("/sessions/{second}")).await;
    assert_eq!(status, 200, "{body}");
    // The sandbox ends with its session (a zombie until its monitor reaps it).
    let deadline = Instant::now() + Duration::from_secs(10);
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "))
    };
    while alive() {
        assert!(
            Instant::now() < deadline,
            "the taken sandbox outlived its session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

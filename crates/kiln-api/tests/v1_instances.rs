//! `/v1/instances` over real HTTP with real sandboxes (SQLite, or PostgreSQL with
//! `KILN_TEST_DATABASE_URL`): an instance from an image in the server's store with its own
//! resources, one from a sample, the Codeset routes on both, PATCH, DELETE, ownership.
use crate::{common, sandbox};

use common::{assert_error, TestServer};
use reqwest::Method;
use sandbox::{DATASET, SAMPLE};
use serde_json::{json, Value};

async fn run(s: &TestServer, key: &str, id: &str, command: &str) -> Value {
    let iid = sandbox::start_exec(s, key, id, command).await;
    sandbox::finished(s, key, id, &iid).await
}

async fn user_id(s: &TestServer, key: &str) -> String {
    let principal = s.kiln.auth.authenticate(key).await.expect("key");
    principal.user.user_id
}

/// Creates an instance and waits (`?wait=true`) until it is ready.
async fn ready(s: &TestServer, key: &str, body: Value) -> Value {
    let (status, created) = s.v1_as(key, Method::POST, "/instances", Some(&body)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "creating", "answered at once: {created}");
    let id = created["id"].as_str().expect("id");
    let (status, instance) = s
        .v1_as(
            key,
            Method::GET,
            &format!("/instances/{id}?wait=true"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(instance["status"], "ready", "{instance}");
    instance
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_instance_runs_with_its_own_resources() {
    let Some(s) = sandbox::start_if_possible(|c| c.billing.heartbeat_secs = 3600).await else {
        return;
    };
    let key = s.admin_key.clone();
    // An image the store holds (imported by the sandbox set-up), named by its reference.
    let image = kiln_services::sessions::sample_image_reference(DATASET, SAMPLE);
    let instance = ready(
        &s,
        &key,
        json!({"image": image, "name": "rl worker", "labels": {"team": "rl"},
               "resources": {"disk_mib": 64, "memory_mib": 256, "cpu": 0.5}}),
    )
    .await;
    let id = instance["id"].as_str().expect("id").to_string();
    assert_eq!(instance["source"], json!({"type": "image", "image": image}));
    assert_eq!(
        instance["resources"],
        json!({"cpu": 0.5, "memory_mib": 256, "disk_mib": 64})
    );
    assert!(instance["location"]
        .as_str()
        .is_some_and(|l| l.starts_with("local:")));

    // The Codeset exec works on it; its disk is the 64 MiB asked for, not the server's.
    let fill = run(
        &s,
        &key,
        &id,
        "cat /testbed/hello.txt; dd if=/dev/zero of=/testbed/fill bs=1M count=200; \
         echo size=$(stat -c %s /testbed/fill)",
    )
    .await;
    assert!(
        fill["stdout"]
            .as_str()
            .is_some_and(|o| o.starts_with("hello from the image")),
        "{fill}"
    );
    assert!(
        fill["stderr"]
            .as_str()
            .is_some_and(|e| e.contains("No space left on device")),
        "{fill}"
    );
    let sandbox = s
        .kiln
        .instances
        .sandbox(&user_id(&s, &key).await, &id)
        .await;
    assert!(sandbox.is_ok(), "the instance's sandbox is reachable");

    // Usage, once sampled, shows on the instance.
    assert_eq!(s.kiln.sessions.sample_usage().await, 1);
    let (_, sampled) = s
        .v1_as(&key, Method::GET, &format!("/instances/{id}"), None)
        .await;
    assert_eq!(sampled["usage"]["disk_limit_bytes"], 64 << 20, "{sampled}");

    // Verification needs a sample; the Codeset listing keeps to sample sessions.
    let (status, refused) = s
        .post_as(&key, &format!("/sessions/{id}/verify"), &json!({}))
        .await;
    assert_error(status, &refused, 409, "not_made_from_sample");
    let (_, listed) = s.get_as(&key, "/sessions").await;
    assert_eq!(listed["total_count"], 0, "{listed}");

    // Someone else sees nothing of it, on any route.
    let (_, other) = s.user("mallory").await;
    for (method, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(json!({"name": "mine"}))),
        (Method::DELETE, None),
    ] {
        let (status, answer) = s
            .v1_as(
                &other,
                method.clone(),
                &format!("/instances/{id}"),
                body.as_ref(),
            )
            .await;
        assert_error(status, &answer, 404, "not_found");
    }
    let (_, theirs) = s.v1_as(&other, Method::GET, "/instances", None).await;
    assert_eq!(theirs["total"], 0);

    // PATCH; resources are fixed on this backend.
    let (status, changed) = s
        .v1_as(
            &key,
            Method::PATCH,
            &format!("/instances/{id}"),
            Some(&json!({"name": "renamed", "labels": {"team": "evals"}, "ttl_minutes": 90})),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["labels"], json!({"team": "evals"}));
    let (status, refused) = s
        .v1_as(
            &key,
            Method::PATCH,
            &format!("/instances/{id}"),
            Some(&json!({"resources": {"disk_mib": 128}})),
        )
        .await;
    assert_error(status, &refused, 409, "resources_fixed");

    // DELETE destroys the sandbox; a second is a conflict.
    let (status, deleted) = s
        .v1_as(&key, Method::DELETE, &format!("/instances/{id}"), None)
        .await;
    assert_eq!(
        (status, &deleted["status"]),
        (200, &json!("closed")),
        "{deleted}"
    );
    let runtime = s
        .kiln
        .instances
        .sandbox(&user_id(&s, &key).await, &id)
        .await;
    assert!(runtime.is_err(), "no sandbox after the delete");
    let (status, again) = s
        .v1_as(&key, Method::DELETE, &format!("/instances/{id}"), None)
        .await;
    assert_error(status, &again, 409, "conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_instance_is_a_codeset_session() {
    let Some(s) = sandbox::start_if_possible(|_| {}).await else {
        return;
    };
    let key = s.admin_key.clone();
    let instance = ready(
        &s,
        &key,
        json!({"dataset": DATASET, "sample_id": SAMPLE, "labels": {"kind": "sample"}}),
    )
    .await;
    let id = instance["id"].as_str().expect("id").to_string();
    assert_eq!(instance["source"]["type"], "sample");
    assert_eq!(instance["source"]["version"], 1);
    let done = run(&s, &key, &id, "cat hello.txt").await;
    assert_eq!(done["stdout"], "hello from the image\n", "{done}");

    // The Codeset routes see it as any session; a Codeset session is an instance.
    let session = s.get_ok(&key, &format!("/sessions/{id}")).await;
    assert_eq!(
        (&session["dataset"], &session["sample_id"]),
        (&json!(DATASET), &json!(SAMPLE))
    );
    let codeset = sandbox::create_ready(&s, &key).await;
    let (status, seen) = s
        .v1_as(&key, Method::GET, &format!("/instances/{codeset}"), None)
        .await;
    assert_eq!((status, &seen["status"]), (200, &json!("ready")), "{seen}");
    let (_, page) = s
        .v1_as(&key, Method::GET, "/instances?label=kind:sample", None)
        .await;
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(page["instances"][0]["id"], id.as_str());
    let (_, all) = s
        .v1_as(&key, Method::GET, "/instances?status=ready", None)
        .await;
    assert_eq!(all["total"], 2, "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_instance_and_its_changes_survive_a_crash() {
    let Some(s) = sandbox::start_if_possible(|_| {}).await else {
        return;
    };
    let key = s.admin_key.clone();
    let image = kiln_services::sessions::sample_image_reference(DATASET, SAMPLE);
    let instance = ready(&s, &key, json!({"image": image, "ttl_minutes": 10})).await;
    let id = instance["id"].as_str().expect("id").to_string();
    let (status, changed) = s
        .v1_as(
            &key,
            Method::PATCH,
            &format!("/instances/{id}"),
            Some(&json!({"name": "survivor", "labels": {"a": "b"}, "ttl_minutes": 100})),
        )
        .await;
    assert_eq!(status, 200, "{changed}");

    // After a crash its sandbox is adopted again, with what the PATCH stored.
    let s = s.restart(false).await;
    let (_, after) = s
        .v1_as(&key, Method::GET, &format!("/instances/{id}"), None)
        .await;
    assert_eq!(after["status"], "ready", "{after}");
    for field in ["name", "labels", "source", "expires_at", "resources"] {
        assert_eq!(after[field], changed[field], "{field}");
    }
    let done = run(&s, &key, &id, "cat /testbed/hello.txt").await;
    assert_eq!(done["stdout"], "hello from the image\n", "{done}");
    // The reaper reads the stored expiry: not expired 20 minutes on, expired 2 hours on.
    let now = chrono::Utc::now();
    assert_eq!(
        s.kiln
            .sessions
            .reap_expired(now + chrono::Duration::minutes(20))
            .await,
        0
    );
    assert_eq!(
        s.kiln
            .sessions
            .reap_expired(now + chrono::Duration::hours(2))
            .await,
        1
    );
    let (_, ended) = s
        .v1_as(&key, Method::GET, &format!("/instances/{id}"), None)
        .await;
    assert_eq!(ended["status"], "terminated", "{ended}");
}

/// `GET /v1/instances/{id}/metrics`: the instance's samples over time while it lives
/// (CPU time growing under a busy command), 404 to another user, none once it has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_reports_its_usage_over_time() {
    let Some(s) = sandbox::start_if_possible(|c| c.billing.heartbeat_secs = 1).await else {
        return;
    };
    let key = s.admin_key.clone();
    let instance = ready(&s, &key, json!({"dataset": DATASET, "sample_id": SAMPLE})).await;
    let id = instance["id"].as_str().expect("id").to_string();
    let path = format!("/instances/{id}/metrics");
    // A fixed amount of work (1-2.5 CPU-seconds by the shell), then samples after it: a
    // loop bounded by wall time got too little CPU on a loaded machine.
    let done = run(
        &s,
        &key,
        &id,
        "i=0; while [ $i -lt 1000000 ]; do i=$((i+1)); done; echo $i",
    )
    .await;
    assert_eq!(done["exit_code"], 0, "{done}");
    let started = std::time::Instant::now();
    let metrics = loop {
        let (status, metrics) = s.v1_as(&key, Method::GET, &path, None).await;
        assert_eq!(status, 200, "{metrics}");
        let busy = metrics["samples"]
            .as_array()
            .and_then(|v| v.last())
            .and_then(|last| last["cpu_seconds"].as_f64())
            .is_some_and(|cpu| cpu >= 0.5);
        if busy {
            break metrics;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "no sample shows the busy command's CPU time: {metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    assert_eq!(metrics["live"], true);
    assert_eq!(metrics["interval_seconds"], 1);
    let samples = metrics["samples"].as_array().expect("samples");
    let cpu: Vec<f64> = samples
        .iter()
        .filter_map(|x| x["cpu_seconds"].as_f64())
        .collect();
    assert!(
        cpu.windows(2).all(|w| w[0] <= w[1]),
        "CPU time is cumulative: {cpu:?}"
    );
    let times: Vec<&str> = samples
        .iter()
        .filter_map(|x| x["sampled_at"].as_str())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {times:?}"
    );
    assert!(samples.iter().all(|x| x["pids_peak"].as_u64() >= Some(1)));

    let (_, other) = s.user("metrics-outsider").await;
    let (status, body) = s.v1_as(&other, Method::GET, &path, None).await;
    assert_error(status, &body, 404, "not_found");

    let (status, _) = s
        .v1_as(&key, Method::DELETE, &format!("/instances/{id}"), None)
        .await;
    assert!(status == 200 || status == 204, "{status}");
    let (status, ended) = s.v1_as(&key, Method::GET, &path, None).await;
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["live"], false, "{ended}");
    assert_eq!(ended["samples"], json!([]), "{ended}");
    let (status, body) = s
        .v1_as(&key, Method::GET, "/instances/inst_nope/metrics", None)
        .await;
    assert_error(status, &body, 404, "not_found");
}

//! Per-session resource usage over real HTTP with real sandboxes: sampled while the
//! session runs and once more before its sandbox goes, shown as `resources`; a sample's
//! own disk size; `/dev/shm` bounded; and `/metrics` and who may read it.
use crate::{common, sandbox};

use std::time::{Duration, Instant};

use common::{assert_error, TestServer};
use sandbox::{create_ready_sample, create_session, HUGE_DISK_SAMPLE, SAMPLE, SMALL_DISK_SAMPLE};
use serde_json::Value;

async fn run(s: &TestServer, key: &str, id: &str, command: &str) -> Value {
    let iid = sandbox::start_exec(s, key, id, command).await;
    sandbox::finished(s, key, id, &iid).await
}

/// `GET /metrics` (beside `/api/v1`, not under it), with an optional bearer token.
async fn scrape(s: &TestServer, token: Option<&str>) -> (u16, String) {
    let url = format!("{}/metrics", s.base.trim_end_matches("/api/v1"));
    let mut request = s.client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("GET /metrics");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_sampled_and_kept_and_a_sample_sizes_its_disk() {
    // No periodic sample during the test: what shows comes from the explicit sample or
    // from the one taken before the sandbox is destroyed.
    let Some(s) = sandbox::start_if_possible(|c| c.billing.heartbeat_secs = 3600).await else {
        return;
    };
    let key = s.admin_key.clone();

    let (status, body) = create_session(&s, &key, HUGE_DISK_SAMPLE).await;
    assert_error(status, &body, 409, "conflict");
    assert!(body.to_string().contains("runtime.max_disk_mib"), "{body}");

    let id = create_ready_sample(&s, &key, SMALL_DISK_SAMPLE).await;
    let session = s.get_ok(&key, &format!("/sessions/{id}")).await;
    assert!(session["resources"].is_null(), "no sample yet: {session}");

    // The sample's 64 MiB disk, not the server's 10 GiB, holds /testbed.
    let fill = run(
        &s,
        &key,
        &id,
        "dd if=/dev/zero of=/testbed/fill bs=1M count=200; echo size=$(stat -c %s /testbed/fill)",
    )
    .await;
    assert!(
        fill["stderr"]
            .as_str()
            .is_some_and(|e| e.contains("No space left on device")),
        "{fill}"
    );
    let size: u64 = fill["stdout"]
        .as_str()
        .and_then(|o| o.trim().strip_prefix("size="))
        .and_then(|n| n.parse().ok())
        .expect("size");
    assert!(
        (32 << 20..=64 << 20).contains(&size),
        "{size} bytes: {fill}"
    );

    assert_eq!(s.kiln.sessions.sample_usage().await, 1);
    let session = s.get_ok(&key, &format!("/sessions/{id}")).await;
    let sampled = &session["resources"];
    assert_eq!(sampled["disk_limit_bytes"], 64 << 20, "{session}");
    let used = sampled["disk_used_bytes"].as_u64().expect("disk used");
    assert!(used >= 32 << 20, "{sampled}");
    assert!(
        sampled["memory_peak_bytes"].as_u64().is_some_and(|m| m > 0),
        "{sampled}"
    );
    assert!(
        sampled["pids_peak"].as_u64().is_some_and(|p| p >= 1),
        "{sampled}"
    );

    let (status, text) = scrape(&s, None).await;
    assert_eq!(status, 200, "loopback may read /metrics: {text}");
    assert_eq!(
        metric(&text, "kiln_sessions_created_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "kiln_sessions_live{status=\"ready\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "kiln_sandbox_create_seconds_count"),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "kiln_interactions_total{kind=\"exec_command\"}"),
        Some(1.0)
    );
    assert_eq!(metric(&text, "kiln_exec_seconds_count"), Some(1.0));
    assert!(
        metric(
            &text,
            "kiln_node_capacity_bytes{kind=\"reserved\",resource=\"disk\"}"
        ) == Some(f64::from(64u32 << 20)),
        "{text}"
    );
    assert!(metric(
        &text,
        "kiln_node_capacity_bytes{kind=\"budget\",resource=\"memory\"}"
    )
    .is_some_and(|b| b > 0.0));
    assert!(metric(&text, "kiln_live_sandbox_disk_used_bytes").is_some_and(|d| d >= 32e6));

    // Burn some CPU, then close: the last sample is taken before the sandbox goes.
    run(
        &s,
        &key,
        &id,
        "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done",
    )
    .await;
    let (status, _) = s.delete_as(&key, &format!("/sessions/{id}")).await;
    assert_eq!(status, 200);
    let session = s.get_ok(&key, &format!("/sessions/{id}")).await;
    let last = &session["resources"];
    assert!(
        last["sampled_at"].as_str() > sampled["sampled_at"].as_str(),
        "sampled again at close: {last} after {sampled}"
    );
    let cpu = |v: &Value| v["cpu_seconds"].as_f64().expect("cpu seconds");
    assert!(cpu(last) > cpu(sampled), "{last} after {sampled}");
    let (_, text) = scrape(&s, None).await;
    assert_eq!(
        metric(&text, "kiln_sessions_ended_total{status=\"closed\"}"),
        Some(1.0)
    );
    assert!(metric(&text, "kiln_session_cpu_seconds_total").is_some_and(|c| c > 0.0));
    assert_eq!(
        metric(&text, "kiln_sessions_live{status=\"ready\"}"),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_sampled_with_the_heartbeat() {
    let Some(s) = sandbox::start_if_possible(|c| c.billing.heartbeat_secs = 1).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready_sample(&s, &key, SAMPLE).await;
    let start = Instant::now();
    let session = loop {
        let session = s.get_ok(&key, &format!("/sessions/{id}")).await;
        if !session["resources"].is_null() || start.elapsed() > Duration::from_secs(20) {
            break session;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        session["resources"]["disk_limit_bytes"],
        10u64 << 30,
        "the server's default disk: {session}"
    );
}

#[tokio::test]
async fn metrics_need_the_token_when_one_is_set() {
    let s = TestServer::start_with(|c| {
        c.server.metrics_token = Some(kiln_config::Secret::new("0123456789abcdef"));
    })
    .await;
    for token in [None, Some("0123456789abcdeX")] {
        let (status, body) = scrape(&s, token).await;
        assert_eq!(status, 401, "{token:?}: {body}");
    }
    let (status, text) = scrape(&s, Some("0123456789abcdef")).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("kiln_sessions_created_total 0"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_sandbox_still_leaves_its_last_sample() {
    let Some(s) = sandbox::start_if_possible(|c| c.billing.heartbeat_secs = 3600).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready_sample(&s, &key, SAMPLE).await;
    run(&s, &key, &id, "echo busy > /testbed/busy").await;
    // The agent (the sandbox's init) killed from the host, as an OOM or an admin would.
    let state = s
        .kiln
        .config
        .data_dir
        .join("runtime/sandboxes")
        .join(&id)
        .join("state.json");
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(state).expect("state")).expect("JSON");
    let pid = state["init_pid"].as_u64().expect("init_pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let session = sandbox::once_not_ready(&s, &key, &id, Instant::now()).await;
    assert_eq!(session["error"]["code"], "sandbox_lost", "{session}");
    let resources = &session["resources"];
    assert!(
        resources["memory_peak_bytes"]
            .as_u64()
            .is_some_and(|m| m > 0),
        "sampled before the dead sandbox was removed: {session}"
    );
    assert_eq!(resources["disk_limit_bytes"], 10u64 << 30, "{session}");
}

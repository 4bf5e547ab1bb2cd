//! A Codeset session end to end over HTTP with `runtime.backend = "docker"`: the sample's
//! image goes from Kiln's store into a private Docker engine, the session's commands,
//! files and verification run in a container, and closing the session removes it.
//! Skipped, saying why, where dockerd cannot start (`scripts/start-dockerd.sh`).
use crate::{common, sandbox};

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{assert_error, bearer, json};
use serde_json::json;

/// A server on the private engine, its containers labelled `prefix`; `None` (the test is
/// skipped, saying why) where dockerd cannot start.
async fn docker_server(prefix: &str) -> Option<(common::TestServer, String)> {
    let host = kiln_test_support::docker::docker_host()?;
    if !sandbox::prerequisites() {
        return None;
    }
    let s = sandbox::start(|c| {
        c.runtime.backend = kiln_config::RuntimeBackend::Docker;
        c.runtime.docker.host = Some(host.clone());
        c.runtime.docker.label_prefix = prefix.into();
    })
    .await;
    Some((s, host))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_runs_exec_files_and_verification_in_a_container() {
    let Some((s, _)) = docker_server("kilntest-api").await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = sandbox::create_ready(&s, &key).await;

    let iid = sandbox::start_exec(&s, &key, &id, "cat hello.txt; ls /sys/class/net").await;
    let done = sandbox::finished(&s, &key, &id, &iid).await;
    assert_eq!(done["exit_code"], 0, "{done}");
    assert_eq!(done["stdout"], "hello from the image\nlo\n", "{done}");

    let upload = json!({"file_path": "run-tests.sh",
        "content_base64": base64::engine::general_purpose::STANDARD.encode("echo 'PASSED t1'\n")});
    let (status, body) = s
        .post_as(&key, &format!("/sessions/{id}/upload"), &upload)
        .await;
    assert!(status < 300, "{status} {body}");
    let response = s
        .post(&format!("/sessions/{id}/verify"))
        .header("Authorization", bearer(&key))
        .header("content-type", "application/json")
        .send()
        .await
        .expect("send");
    let (status, started) = json(response).await;
    assert_eq!(status, 202, "{started}");
    let job = started["job_id"].as_str().expect("job").to_string();
    let finished = loop {
        let body = s
            .get_ok(&key, &format!("/sessions/{id}/verify/{job}"))
            .await;
        if ["completed", "error", "cancelled"]
            .contains(&body["status"].as_str().unwrap_or_default())
        {
            break body;
        }
    };
    assert_eq!(finished["status"], "completed", "{finished}");
    assert_eq!(finished["result"]["is_success"], true, "{finished}");

    let (status, body) = s.delete_as(&key, &format!("/sessions/{id}")).await;
    assert!(status < 300, "{status} {body}");
    let closed = s.get_ok(&key, &format!("/sessions/{id}")).await;
    assert_eq!(closed["status"], "closed", "{closed}");
}

/// The Docker backend keeps the local one's promise: a container killed from outside Kiln
/// (an operator's `docker kill`, the engine's OOM killer) ends its session at once as
/// `sandbox_lost`, the running command ends -1000 saying why, and later calls answer 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_killed_from_outside_ends_its_session_as_sandbox_lost() {
    let Some((s, host)) = docker_server("kilntest-apikill").await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = sandbox::create_ready(&s, &key).await;
    let running = sandbox::start_exec(&s, &key, &id, "sleep 30").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The session's one container: the prefix is this test's own (names are
    // `{prefix}.{node}-{sandbox}`).
    let listed = std::process::Command::new("docker")
        .args(["-H", &host, "ps", "-q", "--filter", "name=kilntest-apikill"])
        .output()
        .expect("run docker ps");
    let containers = String::from_utf8_lossy(&listed.stdout).to_string();
    let container = match containers.split_whitespace().collect::<Vec<_>>()[..] {
        [one] => one.to_string(),
        ref other => panic!("expected the session's one container, found {other:?}"),
    };
    let killed = std::process::Command::new("docker")
        .args(["-H", &host, "kill", &container])
        .output()
        .expect("run docker kill");
    assert!(
        killed.status.success(),
        "docker kill {container}: {}",
        String::from_utf8_lossy(&killed.stderr)
    );
    let killed_at = Instant::now();

    let session = sandbox::once_not_ready(&s, &key, &id, killed_at).await;
    let noticed = killed_at.elapsed();
    eprintln!("container death noticed after {noticed:?}");
    assert_eq!(session["status"], "terminated", "{session}");
    assert_eq!(session["error"]["code"], "sandbox_lost", "{session}");
    assert!(noticed < Duration::from_secs(2), "took {noticed:?}");

    let done = sandbox::finished(&s, &key, &id, &running).await;
    assert_eq!(done["exit_code"], -1000, "{done}");
    assert!(
        done["message"]
            .as_str()
            .is_some_and(|m| m.contains("sandbox")),
        "{done}"
    );
    let (status, body) = s
        .post_as(
            &key,
            &format!("/sessions/{id}/exec"),
            &json!({"command": "true"}),
        )
        .await;
    assert_error(status, &body, 409, "sandbox_lost");
    let (status, body) = s
        .post_as(
            &key,
            &format!("/sessions/{id}/upload"),
            &json!({"file_path": "x.txt", "content_base64": "eA=="}),
        )
        .await;
    assert_error(status, &body, 409, "sandbox_lost");
}

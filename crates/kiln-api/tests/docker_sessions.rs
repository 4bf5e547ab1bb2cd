//! A Codeset session end to end over HTTP with `runtime.backend = "docker"`: the sample's
//! image goes from Kiln's store into a private Docker engine, the session's commands,
//! files and verification run in a container, and closing the session removes it.
//! Skipped, saying why, where dockerd cannot start (`scripts/start-dockerd.sh`).

mod common;
mod sandbox;

use base64::Engine as _;
use common::{bearer, json};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_runs_exec_files_and_verification_in_a_container() {
    let Some(host) = kiln_test_support::docker::docker_host() else {
        return;
    };
    if !sandbox::prerequisites() {
        return;
    }
    let s = sandbox::start(|c| {
        c.runtime.backend = kiln_config::RuntimeBackend::Docker;
        c.runtime.docker.host = Some(host);
        c.runtime.docker.label_prefix = "kilntest-api".into();
    })
    .await;
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

//! Port forwards survive a crash: the real `kiln` binary opens a host-port and a path
//! forward into a session, is killed with SIGKILL and started again on the same data
//! directory; the adopted session's forwards are listed again, the host port listens again
//! on the same address, and both reach a server started inside after the restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod server_harness;
use server_harness::{free_port, install_busybox_sample, kiln, prerequisites, serve};

use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Calls `method root+path` with the admin's key: status and JSON body.
async fn call(
    root: &str,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{root}{path}"))
        .bearer_auth(key)
        .timeout(Duration::from_secs(60));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// GET `url` (with `key`, if any) until it answers 200 within 10 s: the body.
async fn fetch_ok(url: &str, key: Option<&str>) -> String {
    let start = Instant::now();
    loop {
        let mut request = reqwest::Client::new().get(url);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Ok(response) = request.send().await {
            if response.status().as_u16() == 200 {
                return response.text().await.expect("body");
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{url} never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_of_an_adopted_session_listen_again_after_a_crash() {
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::canonicalize(dir.path()).unwrap().join("data");
    std::fs::create_dir_all(&data).unwrap();
    install_busybox_sample(&|args| kiln(&data, args), dir.path());
    let port = free_port();
    let mut server = serve(&data, port, &dir.path().join("first.log"));
    let key = std::fs::read_to_string(data.join("admin.key"))
        .unwrap()
        .trim()
        .to_string();
    let root = format!("http://127.0.0.1:{port}");
    let (status, created) = call(
        &root,
        &key,
        reqwest::Method::POST,
        "/api/v1/sessions",
        Some(json!({"dataset": "test", "sample_id": "test-1"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["session_id"].as_str().unwrap().to_string();
    let (_, session) = call(
        &root,
        &key,
        reqwest::Method::GET,
        &format!("/api/v1/sessions/{id}"),
        None,
    )
    .await;
    assert_eq!(session["status"], "ready", "{session}");
    let forwards = format!("/v1/instances/{id}/port-forwards");
    let (status, host) = call(
        &root,
        &key,
        reqwest::Method::POST,
        &forwards,
        Some(json!({"port": 8080})),
    )
    .await;
    assert_eq!(status, 201, "{host}");
    let address = host["host_address"].as_str().unwrap().to_string();
    let (status, path) = call(
        &root,
        &key,
        reqwest::Method::POST,
        &forwards,
        Some(json!({"port": 8080, "mode": "path"})),
    )
    .await;
    assert_eq!(status, 201, "{path}");

    server.0.kill().unwrap();
    server.0.wait().unwrap();
    let port = free_port();
    let _server = serve(&data, port, &dir.path().join("second.log"));
    let root = format!("http://127.0.0.1:{port}");

    let (status, list) = call(&root, &key, reqwest::Method::GET, &forwards, None).await;
    assert_eq!(status, 200, "{list}");
    let listed: Vec<&Value> = list["port_forwards"].as_array().unwrap().iter().collect();
    assert_eq!(listed.len(), 2, "both forwards are open again: {list}");
    assert!(listed
        .iter()
        .any(|f| f["forward_id"] == host["forward_id"] && f["host_address"] == address.as_str()));
    assert!(listed.iter().any(|f| f["forward_id"] == path["forward_id"]));

    // A server inside, started after the restart, is reached through both.
    let command =
        "mkdir -p /srv && echo hello > /srv/hello.txt && httpd -f -p 127.0.0.1:8080 -h /srv";
    let (status, started) = call(
        &root,
        &key,
        reqwest::Method::POST,
        &format!("/api/v1/sessions/{id}/exec"),
        Some(json!({"command": command, "command_timeout": 120})),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(
        fetch_ok(&format!("http://{address}/hello.txt"), None).await,
        "hello\n"
    );
    let through_api = format!("{root}/v1/instances/{id}/ports/8080/hello.txt");
    assert_eq!(fetch_ok(&through_api, Some(&key)).await, "hello\n");

    let (status, _) = call(
        &root,
        &key,
        reqwest::Method::DELETE,
        &format!("/api/v1/sessions/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
}

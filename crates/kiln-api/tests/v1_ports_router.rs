//! Port forwards in-process over `FakeRuntime` (no root): a host port carries bytes both
//! ways to the fake's echo port, nothing listening is a 502, and a forward of an instance
//! that ends is closed.
#![allow(clippy::unwrap_used)]
use crate::inproc;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use kiln_test_support::fake::ECHO_PORT;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use inproc::App;

async fn app() -> (App, String) {
    let app = inproc::app().await;
    let key = app.key.clone();
    (app, key)
}

async fn call(
    app: &App,
    key: &str,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (status, _, json) = app.send_json(method, uri, Some(key), body.as_ref()).await;
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_port_reaches_the_fake_echo_and_closes_with_the_instance() {
    let (router, key) = app().await;
    let (status, created) = call(
        &router,
        &key,
        "POST",
        "/api/v1/sessions",
        Some(json!({"dataset": "test", "sample_id": "test-1"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["session_id"].as_str().unwrap().to_string();
    let (_, ready) = call(
        &router,
        &key,
        "GET",
        &format!("/api/v1/sessions/{id}"),
        None,
    )
    .await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let forwards = format!("/v1/instances/{id}/port-forwards");

    let (status, forward) = call(
        &router,
        &key,
        "POST",
        &forwards,
        Some(json!({"port": ECHO_PORT})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{forward}");
    let address = forward["host_address"].as_str().unwrap().to_string();
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    socket.write_all(&sent).await.unwrap();
    let mut echoed = vec![0u8; sent.len()];
    socket.read_exact(&mut echoed).await.unwrap();
    assert!(echoed == sent, "the echo came back intact");

    let (status, body) = call(
        &router,
        &key,
        "POST",
        &forwards,
        Some(json!({"port": 9, "mode": "path"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = call(
        &router,
        &key,
        "GET",
        &format!("/v1/instances/{id}/ports/9/"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["detail"]["code"], "bad_gateway");

    let (status, _) = call(
        &router,
        &key,
        "DELETE",
        &format!("/api/v1/sessions/{id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let start = Instant::now();
    loop {
        let (status, list) = call(&router, &key, "GET", &forwards, None).await;
        assert_eq!(status, StatusCode::OK);
        if list["port_forwards"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still open: {list}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the open connection ends with its forward");
}

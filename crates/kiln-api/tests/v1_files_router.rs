//! The instance file routes in-process over `FakeRuntime` (no root, no TCP): what the
//! HTTP edge and the service add to the agent's answers, where sandboxes cannot run.
#![allow(clippy::unwrap_used)]
use crate::inproc;

use axum::http::StatusCode;
use serde_json::{json, Value};

use inproc::{app, App};

impl App {
    /// One request as the admin: status, headers, body bytes.
    async fn call_bytes(
        &self,
        method: &str,
        uri: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        self.send(method, uri, Some(&self.key), content_type, body)
            .await
    }

    async fn json(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (content_type, bytes) = match body {
            Some(b) => (Some("application/json"), b.to_string().into_bytes()),
            None => (None, Vec::new()),
        };
        let (status, _, bytes) = self.call_bytes(method, uri, content_type, bytes).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

fn has_loc(body: &Value, loc: &[&str]) -> bool {
    body["detail"]
        .as_array()
        .is_some_and(|d| d.iter().any(|e| e["loc"] == json!(loc)))
}

#[tokio::test]
async fn files_through_the_service_and_the_edge() {
    let app = app().await;
    let (status, created) = app
        .json(
            "POST",
            "/api/v1/sessions",
            Some(json!({"dataset": "test", "sample_id": "test-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["session_id"].as_str().unwrap().to_string();
    let (_, session) = app
        .json("GET", &format!("/api/v1/sessions/{id}"), None)
        .await;
    assert_eq!(session["status"], "ready", "{session}");
    let files = format!("/v1/instances/{id}/files");

    // 5 MiB: more than one agent read, so the service reads it in two.
    let big: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let (status, _, body) = app
        .call_bytes(
            "POST",
            &format!("{files}?path=big.bin&mode=0640"),
            Some("application/octet-stream"),
            big.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let (status, headers, body) = app
        .call_bytes("GET", &format!("{files}?path=big.bin"), None, Vec::new())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-kiln-file-mode"], "0640");
    assert!(body == big, "the read differs from the write");

    let (status, edited) = app
        .json(
            "POST",
            &format!("{files}/edit"),
            Some(json!({"path": "t.txt", "start_line": 1, "end_line": 0, "new_text": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{edited}");
    app.json(
        "POST",
        &files,
        Some(json!({"path": "t.txt", "content": "a\nb\n"})),
    )
    .await;
    let (status, edited) = app
        .json(
            "POST",
            &format!("{files}/edit"),
            Some(json!({"path": "t.txt", "start_line": 2, "end_line": 2, "new_text": "B"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    let (_, read) = app
        .json("GET", &format!("{files}?path=t.txt&format=json"), None)
        .await;
    assert_eq!(read["content"], "a\nB\n", "{read}");

    let (status, listing) = app
        .json("GET", &format!("{files}/list?path=/testbed"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{listing}");
    assert!(listing.to_string().contains("/testbed/t.txt"), "{listing}");

    let (status, body) = app.json("GET", &format!("{files}?path=a%00b"), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(has_loc(&body, &["query", "path"]), "{body}");
    let (status, body) = app
        .json("GET", &format!("{files}/list?depth=0"), None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(has_loc(&body, &["query", "depth"]), "{body}");
}

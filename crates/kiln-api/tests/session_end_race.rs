//! An upload or edit waiting behind a command when its session is closed answers 409, not
//! 500: found by API fuzzing (tests/fuzz), whose workers close sessions while others
//! upload into them.
use crate::{common, sandbox};

use std::time::Duration;

use base64::Engine;
use common::{bearer, json, TestServer};
use sandbox::create_ready;
use serde_json::{json, Value};

/// Queues `body` on `path` behind a long command, closes the session, and returns what
/// the queued request answered.
async fn queued_then_closed(s: &TestServer, key: &str, path: &str, body: Value) -> (u16, Value) {
    let id = create_ready(s, key).await;
    let (status, started) = s
        .post_as(
            key,
            &format!("/sessions/{id}/exec"),
            &json!({"command": "sleep 60", "command_timeout": 120}),
        )
        .await;
    assert_eq!(status, 202, "{started}");

    let request = s
        .post(&format!("/sessions/{id}{path}"))
        .header("Authorization", bearer(key))
        .json(&body)
        .send();
    let waiting = tokio::spawn(async move { json(request.await.expect("send")).await });
    // The request is queued once its interaction is stored (unfinished, behind the sleep).
    let store = s.store().await;
    loop {
        let unfinished = store.list_unfinished_interactions().await.expect("list");
        if unfinished.iter().filter(|i| i.session_id == id).count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, closed) = s.delete_as(key, &format!("/sessions/{id}")).await;
    assert_eq!(status, 200, "{closed}");
    waiting.await.expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_queued_on_a_session_that_closes_are_409() {
    let Some(s) = sandbox::start_if_possible(|_| {}).await else {
        return;
    };
    let key = s.admin_key.clone();

    let content = base64::engine::general_purpose::STANDARD.encode(b"data");
    let (status, body) = queued_then_closed(
        &s,
        &key,
        "/upload",
        json!({"file_path": "up.txt", "content_base64": content}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["detail"]["code"], "conflict", "{body}");

    let (status, body) = queued_then_closed(
        &s,
        &key,
        "/str_replace",
        json!({"file_path": "hello.txt", "str_to_replace": "a", "str_to_insert": "b"}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
}

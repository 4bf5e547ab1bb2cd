//! The router in-process (`tower::ServiceExt::oneshot`, no TCP, no root) over a Kiln whose
//! sandboxes come from `FakeRuntime`: statuses and body shapes at the HTTP edge.
#![allow(clippy::unwrap_used)]
use crate::inproc;

use axum::http::{header, StatusCode};
use serde_json::{json, Value};

use inproc::{app, App, DATASET, SAMPLE};

impl App {
    /// One request (`body`: JSON text, sent as it is, malformed or not); the status and
    /// the body as JSON (`Null` when empty).
    async fn call(
        &self,
        method: &str,
        uri: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let content_type = body.map(|_| "application/json");
        let bytes = body.unwrap_or_default().as_bytes().to_vec();
        let (status, headers, bytes) = self.send(method, uri, key, content_type, bytes).await;
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, headers, json)
    }

    async fn as_admin(&self, method: &str, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
        let (status, _, json) = self.call(method, uri, Some(&self.key), body).await;
        (status, json)
    }
}

/// `{"detail":{"code","message"}}` with this code.
fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["detail"]["code"], code, "{body}");
    assert!(body["detail"]["message"].is_string(), "{body}");
}

/// FastAPI's `{"detail":[{"loc","msg","type"}]}`, with an entry at `loc`.
fn assert_validation(body: &Value, loc: &[&str]) {
    let entries = body["detail"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"));
    assert!(
        entries
            .iter()
            .all(|e| e["loc"].is_array() && e["msg"].is_string() && e["type"].is_string()),
        "{body}"
    );
    assert!(
        entries.iter().any(|e| e["loc"] == json!(loc)),
        "no entry at {loc:?}: {body}"
    );
}

#[tokio::test]
async fn health_answers_without_a_key() {
    let app = app().await;
    let (status, _, body) = app.call("GET", "/api/v1/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["status"].as_str(), body["service"].as_str()),
        (Some("healthy"), Some("kiln"))
    );
}

#[tokio::test]
async fn no_key_or_a_wrong_key_is_401() {
    let app = app().await;
    let (status, headers, body) = app.call("GET", "/api/v1/sessions", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
    assert_error(&body, "unauthorized");
    let (status, _, body) = app
        .call("GET", "/api/v1/sessions", Some("kiln_not-a-key"), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_error(&body, "unauthorized");
}

#[tokio::test]
async fn malformed_json_and_bad_queries_are_422_in_fastapis_shape() {
    let app = app().await;
    let (status, body) = app
        .as_admin("POST", "/api/v1/sessions", Some("{not json"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["detail"][0]["type"], "json_invalid", "{body}");
    assert_eq!(body["detail"][0]["loc"][0], "body", "{body}");
    assert!(body["detail"][0]["msg"].is_string(), "{body}");
    let (status, body) = app
        .as_admin("POST", "/api/v1/sessions", Some(r#"{"dataset": "test"}"#))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_validation(&body, &["body", "sample_id"]);
    let (status, body) = app
        .as_admin("GET", "/api/v1/sessions?page_size=abc", None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_validation(&body, &["query", "page_size"]);
    let (status, body) = app
        .as_admin("GET", "/api/v1/sessions?page_size=1000", None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_validation(&body, &["query", "page_size"]);
}

#[tokio::test]
async fn a_session_round_trip_create_ready_exec_close() {
    let app = app().await;
    let (status, created) = app
        .as_admin(
            "POST",
            "/api/v1/sessions",
            Some(&json!({"dataset": DATASET, "sample_id": SAMPLE}).to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["session_id"].as_str().unwrap().to_string();
    let (status, session) = app
        .as_admin("GET", &format!("/api/v1/sessions/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(session["status"], "ready", "{session}");

    let (status, started) = app
        .as_admin(
            "POST",
            &format!("/api/v1/sessions/{id}/exec"),
            Some(r#"{"command": "echo hi"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let interaction = started["interaction_id"].as_str().unwrap();
    let (status, done) = app
        .as_admin(
            "GET",
            &format!("/api/v1/sessions/{id}/interactions/{interaction}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (done["exit_code"].as_i64(), done["stdout"].as_str()),
        (Some(0), Some("hi\n")),
        "{done}"
    );

    let (status, closed) = app
        .as_admin("DELETE", &format!("/api/v1/sessions/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{closed}");
    assert!(app.fake.running().is_empty());
    let (status, body) = app
        .as_admin(
            "POST",
            &format!("/api/v1/sessions/{id}/exec"),
            Some(r#"{"command": "true"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_error(&body, "conflict");
}

#[tokio::test]
async fn another_users_session_is_404() {
    let app = app().await;
    let (_, created) = app
        .as_admin(
            "POST",
            "/api/v1/sessions",
            Some(&json!({"dataset": DATASET, "sample_id": SAMPLE}).to_string()),
        )
        .await;
    let id = created["session_id"].as_str().unwrap();
    let other = app
        .kiln
        .auth
        .create_user("other", "other@example.test", false)
        .await
        .unwrap();
    let other_key = app
        .kiln
        .auth
        .create_api_key(&other.user_id, None)
        .await
        .unwrap()
        .secret;
    for (method, uri, body) in [
        ("GET", format!("/api/v1/sessions/{id}"), None),
        ("DELETE", format!("/api/v1/sessions/{id}"), None),
        (
            "POST",
            format!("/api/v1/sessions/{id}/exec"),
            Some(r#"{"command": "true"}"#),
        ),
    ] {
        let (status, _, body) = app.call(method, &uri, Some(&other_key), body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {body}");
        assert_error(&body, "not_found");
    }
}

#[tokio::test]
async fn a_full_node_is_503_with_retry_after() {
    let app = app().await;
    app.fake.set_capacity(Some(0));
    let (status, headers, body) = app
        .call(
            "POST",
            "/api/v1/sessions",
            Some(&app.key),
            Some(&json!({"dataset": DATASET, "sample_id": SAMPLE}).to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(headers.contains_key(header::RETRY_AFTER));
    assert!(body["detail"]["code"].is_string(), "{body}");
}

#[tokio::test]
async fn the_v1_root_serves_its_own_document_and_json_errors() {
    let app = app().await;
    let (status, _, doc) = app.call("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["servers"][0]["url"], "/v1");
    // The Codeset document stays the contract: no /v1 route leaks into it.
    let (_, _, codeset) = app.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(codeset["servers"][0]["url"], "/api/v1");
    let (status, body) = app.as_admin("GET", "/v1/no-such-thing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "not_found");
}

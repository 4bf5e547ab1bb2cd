//! The served OpenAPI document against what the server answers, for the failures API
//! fuzzing (`tests/fuzz`, schemathesis) found: every operation that needs a credential
//! answers 401 without one, and documents it (body and `WWW-Authenticate`); every
//! operation with a body answers a malformed one with a 422 whose `loc` holds an integer,
//! and documents it with `loc` items that may be integers.
use crate::common;

use common::{bearer, json, TestServer};
use reqwest::Method;
use serde_json::Value;

/// Every (method, path with its parameters filled, operation) of the served document.
fn operations(doc: &Value) -> Vec<(Method, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let concrete = path
                .split('/')
                .map(|s| if s.starts_with('{') { "x" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            out.push((method, concrete, op.clone()));
        }
    }
    out
}

fn schema_ref<'a>(op: &'a Value, status: &str) -> &'a str {
    op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        .as_str()
        .unwrap_or_default()
}

fn secured(op: &Value) -> bool {
    op["security"].as_array().is_some_and(|s| !s.is_empty())
}

#[tokio::test]
async fn every_operation_that_needs_a_credential_documents_its_401() {
    let s = TestServer::start().await;
    let (_, doc) = json(s.get("/openapi.json").send().await.expect("send")).await;
    let mut checked = 0;
    for (method, path, op) in operations(&doc) {
        if !secured(&op) {
            continue;
        }
        let response = s
            .client
            .request(method.clone(), format!("{}{path}", s.base))
            .json(&serde_json::json!({}))
            .send()
            .await
            .expect("send");
        let challenge = response.headers().get("www-authenticate").cloned();
        let (status, body) = json(response).await;
        assert_eq!(status, 401, "{method} {path}: {body}");
        assert_eq!(body["detail"]["code"], "unauthorized", "{method} {path}");
        assert_eq!(
            challenge.as_ref().map(|v| v.as_bytes()),
            Some(&b"Bearer"[..])
        );
        assert_eq!(
            schema_ref(&op, "401"),
            "#/components/schemas/ErrorBody",
            "{method} {path}: 401 not documented with the error body"
        );
        assert!(
            op["responses"]["401"]["headers"]["WWW-Authenticate"].is_object(),
            "{method} {path}: WWW-Authenticate not documented"
        );
        assert_eq!(
            schema_ref(&op, "403"),
            "#/components/schemas/ErrorBody",
            "{method} {path}: 403 (deactivated account) not documented"
        );
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} secured operations");
}

#[tokio::test]
async fn malformed_bodies_are_documented_422s_with_integer_locations() {
    let s = TestServer::start().await;
    let (_, doc) = json(s.get("/openapi.json").send().await.expect("send")).await;
    let loc_items = &doc["components"]["schemas"]["ValidationError"]["properties"]["loc"]["items"];
    let kinds: Vec<&str> = loc_items["anyOf"]
        .as_array()
        .unwrap_or_else(|| panic!("loc items are not anyOf: {loc_items}"))
        .iter()
        .filter_map(|k| k["type"].as_str())
        .collect();
    assert_eq!(kinds, ["string", "integer"]);

    let mut checked = 0;
    for (method, path, op) in operations(&doc) {
        if op["requestBody"].is_null() {
            continue;
        }
        let mut request = s
            .client
            .request(method.clone(), format!("{}{path}", s.base))
            .header("Content-Type", "application/json")
            .body("\0");
        if secured(&op) {
            request = request.header("Authorization", bearer(&s.admin_key));
        }
        let (status, body) = json(request.send().await.expect("send")).await;
        assert_eq!(status, 422, "{method} {path}: {body}");
        assert_eq!(
            body["detail"][0]["loc"],
            serde_json::json!(["body", 1]),
            "{method} {path}"
        );
        assert_eq!(
            schema_ref(&op, "422"),
            "#/components/schemas/HTTPValidationError",
            "{method} {path}: 422 not documented"
        );
        assert_eq!(
            schema_ref(&op, "413"),
            "#/components/schemas/ErrorBody",
            "{method} {path}: 413 (body limit) not documented"
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} operations with a body");
}

//! A Kiln in-process for router tests (`tower::ServiceExt::oneshot`, no TCP, no root):
//! its sandboxes come from `FakeRuntime`, its store is a SQLite file in a temporary
//! directory, and dataset `test` holds one sample, `test-1`.
#![allow(clippy::unwrap_used, dead_code)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use kiln_config::Config;
use kiln_services::datasets::ImportRequest;
use kiln_services::Kiln;
use kiln_test_support::FakeRuntime;
use serde_json::{json, Value};
use tower::ServiceExt;

pub const DATASET: &str = "test";
pub const SAMPLE: &str = "test-1";

pub struct App {
    pub router: Router,
    pub kiln: Arc<Kiln>,
    pub fake: Arc<FakeRuntime>,
    /// The admin's API key.
    pub key: String,
    _dir: tempfile::TempDir,
}

/// A server with the default configuration.
pub async fn app() -> App {
    app_with(|_| {}).await
}

/// A server with the default configuration after `tweak`.
pub async fn app_with(tweak: impl FnOnce(&mut Config)) -> App {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().join("data"),
        load_demo_dataset: false,
        build_demo_images: false,
        ..Config::default()
    };
    tweak(&mut config);
    let fake = FakeRuntime::new();
    let kiln = Kiln::open_with_runtime(config, fake.clone(), "fake")
        .await
        .unwrap();
    let key = kiln.bootstrap().await.unwrap().admin_key.unwrap();
    let record = json!({"instance_id": SAMPLE, "repo": "test/hello",
        "base_commit": "0000000000000000000000000000000000000000",
        "FAIL_TO_PASS": ["t1"], "PASS_TO_PASS": []})
    .to_string();
    kiln.datasets
        .import(ImportRequest {
            dataset: DATASET,
            description: None,
            version_description: None,
            text: &record,
            repos_dir: None,
        })
        .await
        .unwrap();
    let kiln = Arc::new(kiln);
    App {
        router: kiln_api::router(kiln.clone()),
        kiln,
        fake,
        key,
        _dir: dir,
    }
}

impl App {
    /// One request (as the holder of `key`, if any): status, headers, body bytes.
    pub async fn send(
        &self,
        method: &str,
        uri: &str,
        key: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(key) = key {
            request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .unwrap();
        (status, headers, bytes.to_vec())
    }

    /// One request with an optional JSON body: status, headers, the body as JSON (`Null`
    /// when empty).
    pub async fn send_json(
        &self,
        method: &str,
        uri: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let (content_type, bytes) = match body {
            Some(b) => (Some("application/json"), b.to_string().into_bytes()),
            None => (None, Vec::new()),
        };
        let (status, headers, bytes) = self.send(method, uri, key, content_type, bytes).await;
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, headers, json)
    }
}

//! The health probes in-process (no root, no TCP): `/health/live`, `/health/ready` and
//! `/health/startup` under `/api/v1` and at the server's root, before and after start-up,
//! with a backend that is not usable, and in the OpenAPI document.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::inproc;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use kiln_config::Config;
use kiln_runtime::{HostCheck, HostReport};
use kiln_services::Kiln;
use kiln_test_support::FakeRuntime;
use serde_json::Value;
use tower::ServiceExt;

const ROOTS: [&str; 2] = ["/api/v1", ""];

async fn probe(router: &Router, root: &str, which: &str) -> (StatusCode, Value) {
    let request = Request::get(format!("{root}/health/{which}"))
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn a_started_server_is_live_started_and_ready() {
    let app = inproc::app().await;
    for root in ROOTS {
        let (status, body) = probe(&app.router, root, "live").await;
        assert_eq!(
            (status, body["status"].as_str()),
            (StatusCode::OK, Some("live"))
        );
        let (status, body) = probe(&app.router, root, "startup").await;
        assert_eq!(
            (status, body["status"].as_str()),
            (StatusCode::OK, Some("started"))
        );
        let (status, body) = probe(&app.router, root, "ready").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "ready");
        let names: Vec<&str> = body["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["startup", "store", "runtime"]);
        assert_eq!(body["checks"][1]["detail"], "sqlite answers");
        assert_eq!(body["checks"][2]["detail"], "fake");
    }
}

#[tokio::test]
async fn an_unusable_backend_makes_the_server_unready_but_live() {
    let app = inproc::app().await;
    app.fake.set_health(HostReport {
        checks: vec![HostCheck {
            name: "docker engine",
            ok: false,
            detail: "connection refused".into(),
            fix: Some("start dockerd".into()),
        }],
    });
    for root in ROOTS {
        let (status, body) = probe(&app.router, root, "ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["detail"]["code"], "unavailable");
        let message = body["detail"]["message"].as_str().unwrap();
        assert!(
            message.contains("runtime: docker engine (connection refused; fix: start dockerd)"),
            "{message}"
        );
        assert_eq!(probe(&app.router, root, "live").await.0, StatusCode::OK);
        assert_eq!(probe(&app.router, root, "startup").await.0, StatusCode::OK);
    }
    app.fake.set_health(HostReport::default());
    assert_eq!(probe(&app.router, "", "ready").await.0, StatusCode::OK);
}

/// Before [`Kiln::bootstrap`] (recovery) finished: live, neither started nor ready.
#[tokio::test]
async fn a_server_whose_start_up_has_not_finished_is_neither_started_nor_ready() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().join("data"),
        load_demo_dataset: false,
        build_demo_images: false,
        ..Config::default()
    };
    let kiln = Arc::new(
        Kiln::open_with_runtime(config, FakeRuntime::new(), "fake")
            .await
            .unwrap(),
    );
    let router = kiln_api::router(kiln.clone());
    for root in ROOTS {
        assert_eq!(probe(&router, root, "live").await.0, StatusCode::OK);
        let (status, body) = probe(&router, root, "startup").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["detail"]["code"], "unavailable");
        let (status, body) = probe(&router, root, "ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        let message = body["detail"]["message"].as_str().unwrap();
        assert!(
            message.contains("startup: start-up recovery has not finished"),
            "{message}"
        );
    }
    kiln.bootstrap().await.unwrap();
    for root in ROOTS {
        assert_eq!(probe(&router, root, "startup").await.0, StatusCode::OK);
        assert_eq!(probe(&router, root, "ready").await.0, StatusCode::OK);
    }
}

#[test]
fn the_probes_are_documented_without_authentication_or_rate_limits() {
    let doc = serde_json::to_value(kiln_api::openapi()).unwrap();
    for (path, statuses) in [
        ("/health/live", &["200"][..]),
        ("/health/ready", &["200", "503"][..]),
        ("/health/startup", &["200", "503"][..]),
    ] {
        let op = &doc["paths"][path]["get"];
        let mut documented: Vec<&str> = op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{path} is not documented"))
            .keys()
            .map(String::as_str)
            .collect();
        documented.sort_unstable();
        assert_eq!(documented, statuses, "{path}");
        assert!(
            op.get("security")
                .is_none_or(|s| s.as_array().unwrap().is_empty()),
            "{path} asks for a credential"
        );
    }
}

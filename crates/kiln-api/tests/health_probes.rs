//! The health probes over real HTTP, on a server opened as `kiln serve` opens it (its
//! configured backend, its store): ready with no backend configured, unready (but live
//! and started) when the configured backend cannot run, never rate-limited.
use crate::common;

use common::{assert_error, json, TestServer};
use kiln_config::RuntimeBackend;

/// `{root}/health/{which}` for both roots the probes answer at.
fn urls(s: &TestServer, which: &str) -> [String; 2] {
    [
        format!("{}/health/{which}", s.base),
        format!("{}/health/{which}", s.base.trim_end_matches("/api/v1")),
    ]
}

async fn get(s: &TestServer, url: &str) -> (u16, serde_json::Value) {
    json(s.client.get(url).send().await.expect("send")).await
}

#[tokio::test]
async fn without_a_backend_the_server_is_ready() {
    let s = TestServer::start_with(|c| c.runtime.backend = RuntimeBackend::None).await;
    for url in urls(&s, "ready") {
        let (status, body) = get(&s, &url).await;
        assert_eq!(status, 200, "{url}: {body}");
        assert_eq!(body["checks"][2]["name"], "runtime");
        assert_eq!(
            body["checks"][2]["detail"],
            "disabled (runtime.backend = \"none\")"
        );
    }
    for which in ["live", "startup"] {
        for url in urls(&s, which) {
            assert_eq!(get(&s, &url).await.0, 200, "{url}");
        }
    }
}

#[tokio::test]
async fn a_backend_that_cannot_run_makes_the_server_unready_but_live() {
    let s = TestServer::start_with(|c| {
        c.runtime.backend = RuntimeBackend::Local;
        c.runtime.agent_binary = Some("/nonexistent/kiln-agent".into());
    })
    .await;
    for url in urls(&s, "ready") {
        let (status, body) = get(&s, &url).await;
        assert_error(status, &body, 503, "unavailable");
        let message = body["detail"]["message"].as_str().expect("message");
        assert!(message.starts_with("not ready: runtime: "), "{message}");
        assert!(message.contains("/nonexistent/kiln-agent"), "{message}");
    }
    for which in ["live", "startup"] {
        for url in urls(&s, which) {
            assert_eq!(get(&s, &url).await.0, 200, "{url}");
        }
    }
}

#[tokio::test]
async fn probes_are_never_rate_limited() {
    let s = TestServer::start_with(|c| {
        c.runtime.backend = RuntimeBackend::None;
        c.server.ip_requests_per_sec = 1;
        c.server.ip_burst = 1;
    })
    .await;
    for _ in 0..5 {
        for which in ["live", "ready", "startup"] {
            for url in urls(&s, which) {
                assert_eq!(get(&s, &url).await.0, 200, "{url}");
            }
        }
    }
    // The limiter is on: an ordinary anonymous request is limited by now.
    let mut limited = false;
    for _ in 0..3 {
        limited |= s.get("/datasets").send().await.expect("send").status() == 429;
    }
    assert!(limited, "the limiter never answered 429");
}

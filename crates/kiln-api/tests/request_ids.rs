//! Request ids in-process: every response carries `x-request-id`, a client's short token
//! is echoed, anything else is replaced by a new UUID, and the id and matched route are
//! fields of the request's span (so of every log line under it).
#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::inproc;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, Request};
use tower::ServiceExt;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

async fn get(app: &inproc::App, uri: &str, ids: &[&str]) -> HeaderMap {
    let mut request = Request::get(uri);
    for id in ids {
        request = request.header("x-request-id", *id);
    }
    let response = app
        .router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    response.headers().clone()
}

fn answered(headers: &HeaderMap) -> String {
    let ids: Vec<_> = headers.get_all("x-request-id").iter().collect();
    assert_eq!(ids.len(), 1, "{headers:?}");
    ids[0].to_str().unwrap().to_string()
}

fn is_uuid(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok()
}

#[tokio::test]
async fn every_response_has_an_id_and_a_sane_one_is_echoed() {
    let app = inproc::app().await;
    // Found, not found, unauthenticated and at the root: all answered with an id.
    for uri in [
        "/api/v1/health",
        "/v1/nope",
        "/api/v1/datasets",
        "/health/live",
        "/",
    ] {
        let first = answered(&get(&app, uri, &[]).await);
        let second = answered(&get(&app, uri, &[]).await);
        assert!(
            is_uuid(&first) && first != second,
            "{uri}: {first} {second}"
        );
    }
    for sane in ["req-42", "0f8e:11.22_x", &"a".repeat(64)] {
        assert_eq!(answered(&get(&app, "/api/v1/health", &[sane]).await), sane);
    }
}

#[tokio::test]
async fn an_unfit_id_is_replaced() {
    let app = inproc::app().await;
    let long = "a".repeat(65);
    for unfit in [
        &[long.as_str()][..],
        &["a b"],
        &["x\"}{"],
        &["é"],
        &["", ""],
        &["one", "two"],
    ] {
        let id = answered(&get(&app, "/api/v1/health", unfit).await);
        assert!(is_uuid(&id), "{unfit:?} answered with {id}");
    }
}

/// What the JSON formatter wrote.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_response_line_carries_the_id_route_and_status() {
    let app = inproc::app().await;
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    get(&app, "/v1/instances/abc", &["trace-me-1"]).await;
    get(&app, "/health/live", &["probe-1"]).await;
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let responses: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["fields"]["message"] == "response")
        .collect();
    assert_eq!(responses.len(), 1, "probes are not logged at info: {text}");
    let span = &responses[0]["span"];
    assert_eq!(span["request_id"], "trace-me-1", "{text}");
    assert_eq!(span["route"], "/v1/instances/{id}", "{text}");
    assert_eq!(span["method"], "GET");
    assert_eq!(responses[0]["fields"]["status"], 401, "{text}");
}

/// `method uri` as the admin with a JSON body and our request id: the JSON answer.
async fn admin_call(
    app: &inproc::App,
    method: &str,
    uri: &str,
    body: Option<serde_json::Value>,
    id: &str,
) -> serde_json::Value {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {}", app.key))
        .header("content-type", "application/json")
        .header("x-request-id", id)
        .body(Body::from(body.map(|b| b.to_string()).unwrap_or_default()))
        .unwrap();
    let response = app.router.clone().oneshot(request).await.unwrap();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The fields a span was opened with.
#[derive(Clone, Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }
}

/// Each span opened: its name, its `session`, and the `request_id` of the nearest
/// ancestor that has one.
#[derive(Clone, Default)]
struct Opened(Arc<Mutex<Vec<OpenedSpan>>>);

/// (name, session, request_id)
type OpenedSpan = (String, Option<String>, Option<String>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Opened {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let span = ctx.span(id).unwrap();
        let request_id = span.scope().skip(1).find_map(|parent| {
            let extensions = parent.extensions();
            extensions.get::<Fields>()?.0.get("request_id").cloned()
        });
        let session = fields.0.get("session").cloned();
        span.extensions_mut().insert(fields);
        let name = span.name().to_string();
        self.0.lock().unwrap().push((name, session, request_id));
    }
}

#[tokio::test]
async fn session_work_runs_in_spans_with_the_session_under_the_request() {
    let app = inproc::app().await;
    let opened = Opened::default();
    let subscriber = tracing_subscriber::registry().with(opened.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let body = serde_json::json!({"dataset": inproc::DATASET, "sample_id": inproc::SAMPLE});
    let created = admin_call(&app, "POST", "/api/v1/sessions", Some(body), "create-1").await;
    let session = created["session_id"].as_str().unwrap().to_string();
    admin_call(
        &app,
        "GET",
        &format!("/api/v1/sessions/{session}"),
        None,
        "wait-1",
    )
    .await;
    let exec = serde_json::json!({"command": "echo hi"});
    let uri = format!("/api/v1/sessions/{session}/exec");
    let started = admin_call(&app, "POST", &uri, Some(exec), "exec-1").await;
    let interaction = started["interaction_id"].as_str().unwrap();
    let uri = format!("/api/v1/sessions/{session}/interactions/{interaction}");
    let done = admin_call(&app, "GET", &uri, None, "read-1").await;
    assert_eq!(done["stdout"], "hi\n", "{done}");

    let opened = opened.0.lock().unwrap().clone();
    let under = |name: &str, request_id: &str| {
        opened.iter().any(|(n, s, r)| {
            n == name && s.as_deref() == Some(session.as_str()) && r.as_deref() == Some(request_id)
        })
    };
    assert!(under("start_sandbox", "create-1"), "{opened:?}");
    assert!(under("interaction", "exec-1"), "{opened:?}");
}

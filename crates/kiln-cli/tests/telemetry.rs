//! `[telemetry]` on the real binary: with `telemetry.otlp_endpoint` set, `kiln serve`
//! exports its request spans over OTLP/HTTP (protobuf) to a collector, flushed when it
//! stops gracefully, and exports nothing when unset; with `telemetry.log_format = "json"`
//! every log line is JSON and carries the request id of the request it was written in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod server_harness;
use server_harness::{free_port, Server};

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;

/// `kiln serve` on a fresh data directory with `env`, once it says it serves: the
/// server, its base URL and the file its stderr (the log) goes to.
fn serve_with(dir: &Path, env: &[(&str, &str)]) -> (Server, String, std::path::PathBuf) {
    let port = free_port();
    let (out, log) = (dir.join("stdout"), dir.join("stderr"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("KILN_LOAD_DEMO_DATASET", "false")
        .env("KILN_BUILD_DEMO_IMAGES", "false")
        .env_remove("KILN_DATABASE_URL")
        .env_remove("KILN_IMAGES_DIR")
        .env_remove("KILN_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&log).unwrap());
    for (key, value) in env {
        command.env(key, value);
    }
    let server = Server(command.spawn().unwrap());
    let start = Instant::now();
    while !std::fs::read_to_string(&out).is_ok_and(|l| l.contains("Kiln is serving")) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "kiln serve did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, format!("http://127.0.0.1:{port}"), log)
}

/// One request with our id; the server must answer with it.
async fn request_with_id(base: &str, id: &str) {
    let response = reqwest::Client::new()
        .get(format!("{base}/api/v1/health"))
        .header("x-request-id", id)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], id);
}

/// A collector: the bodies of the `POST /v1/traces` it received, and its base URL.
async fn collector() -> (Arc<Mutex<Vec<Bytes>>>, String) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| async move {
            kept.lock().unwrap().push(body);
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (bodies, url)
}

fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(AnyValue::StringValue(s)) => Some(s.as_str()),
            _ => None,
        }
    })
}

/// The request spans the collector received (service name, span name, request id).
fn exported(bodies: &[Bytes]) -> Vec<(String, String, String)> {
    let mut spans = Vec::new();
    for body in bodies {
        let export = ExportTraceServiceRequest::decode(body.as_ref()).expect("OTLP protobuf");
        for resource in export.resource_spans {
            let service = resource
                .resource
                .as_ref()
                .and_then(|r| string_attribute(&r.attributes, "service.name"))
                .unwrap_or_default()
                .to_string();
            for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
                let id = string_attribute(&span.attributes, "request_id").unwrap_or_default();
                spans.push((service.clone(), span.name.clone(), id.to_string()));
            }
        }
    }
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_are_exported_over_otlp_only_when_configured() {
    let (bodies, endpoint) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut server, base, log) =
        serve_with(dir.path(), &[("KILN_TELEMETRY__OTLP_ENDPOINT", &endpoint)]);
    request_with_id(&base, "otlp-e2e-1").await;
    // The batch is sent at the graceful stop, if not before.
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    let spans = exported(&bodies.lock().unwrap());
    let wanted = (
        "kiln".to_string(),
        "request".to_string(),
        "otlp-e2e-1".to_string(),
    );
    assert!(
        spans.contains(&wanted),
        "{spans:?}; log: {}",
        std::fs::read_to_string(log).unwrap()
    );

    // Unset (the default): nothing leaves the server.
    bodies.lock().unwrap().clear();
    let dir = tempfile::tempdir().unwrap();
    let (mut server, base, _) = serve_with(dir.path(), &[]);
    request_with_id(&base, "otlp-e2e-2").await;
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    assert!(bodies.lock().unwrap().is_empty());
}

#[tokio::test]
async fn json_log_lines_carry_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, base, log) = serve_with(dir.path(), &[("KILN_TELEMETRY__LOG_FORMAT", "json")]);
    request_with_id(&base, "json-log-1").await;
    server.stop();
    let log = std::fs::read_to_string(log).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["span"]["request_id"] == "json-log-1"
            && l["span"]["route"] == "/api/v1/health"
            && l["fields"]["status"] == 200),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l["fields"]["message"] == "stopped"),
        "{log}"
    );
}

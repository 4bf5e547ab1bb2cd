//! Logs and traces of the `kiln` process (`[telemetry]`). Logs go to stderr as text or
//! JSON lines, each with the fields of the spans it was written in (an HTTP request's
//! `request_id`, a session's `session`). With `telemetry.otlp_endpoint` set, `kiln serve`
//! also exports its spans to an OpenTelemetry collector over OTLP/HTTP (protobuf), in
//! batches from a thread of the exporter's own, flushed when the server stops.
use std::time::Duration;

use anyhow::Context;
use kiln_config::{Config, LogFormat};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// How long one export may take, and so how long the last flush holds up a stop.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// What must outlive the program's work: the span exporter, flushed by [`Self::shutdown`].
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still batched. Called once the server has stopped.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                eprintln!("kiln: cannot flush the trace export: {e}");
            }
        }
    }
}

/// Installs the global subscriber: `RUST_LOG` (default `info,sqlx=warn`) filters both the
/// log lines and the exported spans. `export`: whether this command exports traces (only
/// the server does; a one-shot command's spans are not worth a collector's time).
pub fn init(config: &Config, export: bool) -> anyhow::Result<Telemetry> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let json = config.telemetry.log_format_or(config.log_format) == LogFormat::Json;
    let text_logs = (!json).then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    let json_logs = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
    });
    let provider = match &config.telemetry.otlp_endpoint {
        Some(endpoint) if export => Some(tracer_provider(config, endpoint)?),
        _ => None,
    };
    let traces = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("kiln")));
    tracing_subscriber::registry()
        .with(filter)
        .with(text_logs)
        .with(json_logs)
        .with(traces)
        .init();
    Ok(Telemetry { provider })
}

fn tracer_provider(config: &Config, endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(&url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .with_context(|| format!("cannot export traces to {url}"))?;
    let mut attributes = vec![KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))];
    if let Some(node) = &config.cluster.advertise_url {
        attributes.push(KeyValue::new("service.instance.id", node.clone()));
    }
    let resource = Resource::builder()
        .with_service_name("kiln")
        .with_attributes(attributes)
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

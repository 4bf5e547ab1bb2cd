//! `[telemetry]`: the server's logs and traces. Logs go to stderr, as text or JSON lines;
//! traces (each HTTP request's span and the session work under it) can also be exported
//! to an OpenTelemetry collector over OTLP/HTTP.
use serde::{Deserialize, Serialize};

use crate::{ConfigError, LogFormat};

/// Longest `telemetry.otlp_endpoint` accepted.
const MAX_ENDPOINT_LEN: usize = 2048;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `text` for people, `json` for log collectors (one object per line, with the
    /// fields of the spans it happened in: `request_id`, `session`). Unset: the
    /// top-level `log_format`, which it replaces.
    pub log_format: Option<LogFormat>,
    /// Base URL of an OTLP/HTTP collector (`http://127.0.0.1:4318`); spans are sent as
    /// protobuf to `<endpoint>/v1/traces`. Unset (the default): nothing is exported.
    /// Plain `http://` only: the exporter carries no TLS client, so a remote collector is
    /// reached through a local agent or sidecar.
    pub otlp_endpoint: Option<String>,
}

impl TelemetryConfig {
    /// The log format in force: this section's, else the older top-level key's.
    pub fn log_format_or(&self, top_level: LogFormat) -> LogFormat {
        self.log_format.unwrap_or(top_level)
    }

    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let Some(endpoint) = &self.otlp_endpoint else {
            return Ok(());
        };
        let rest = endpoint.strip_prefix("http://").ok_or_else(|| {
            ConfigError::Rule(
                "telemetry.otlp_endpoint must be an http:// URL (the exporter has no TLS client: \
                 send to a local collector)"
                    .into(),
            )
        })?;
        if rest.is_empty()
            || rest.starts_with('/')
            || endpoint.len() > MAX_ENDPOINT_LEN
            || endpoint
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ConfigError::Rule(format!(
                "telemetry.otlp_endpoint must be http://HOST[:PORT][/PATH], at most \
                 {MAX_ENDPOINT_LEN} characters"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_endpoint(endpoint: &str) -> TelemetryConfig {
        TelemetryConfig {
            otlp_endpoint: Some(endpoint.into()),
            ..TelemetryConfig::default()
        }
    }

    #[test]
    fn only_plain_http_endpoints_with_a_host_pass() {
        assert!(with_endpoint("http://127.0.0.1:4318").check().is_ok());
        assert!(with_endpoint("http://collector/otlp").check().is_ok());
        for bad in [
            "https://collector:4318",
            "127.0.0.1:4318",
            "http://",
            "http:///x",
            "http://a b",
        ] {
            assert!(with_endpoint(bad).check().is_err(), "{bad}");
        }
        assert!(TelemetryConfig::default().check().is_ok());
    }

    #[test]
    fn the_section_overrides_the_top_level_format() {
        let unset = TelemetryConfig::default();
        assert_eq!(unset.log_format_or(LogFormat::Json), LogFormat::Json);
        let json = TelemetryConfig {
            log_format: Some(LogFormat::Json),
            ..TelemetryConfig::default()
        };
        assert_eq!(json.log_format_or(LogFormat::Text), LogFormat::Json);
    }
}

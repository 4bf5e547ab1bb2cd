//! Shapes of the port-forward routes.
use chrono::{DateTime, Utc};
use kiln_domain::{PortForwardMode, PortForwardRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::models::{rfc3339, rfc3339_opt};

/// How a forward is reached.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Default)]
#[serde(rename_all = "snake_case")]
pub enum PortForwardModeView {
    /// A listener on the server's host (`host_address`), each connection piped to the
    /// port inside; no authentication: it is reachable by whoever can reach that address
    /// (by default only this machine).
    #[default]
    HostPort,
    /// HTTP under the API at `url`, with the owner's bearer token only.
    Path,
}

impl From<PortForwardModeView> for PortForwardMode {
    fn from(mode: PortForwardModeView) -> Self {
        match mode {
            PortForwardModeView::HostPort => Self::HostPort,
            PortForwardModeView::Path => Self::Path,
        }
    }
}

impl From<PortForwardMode> for PortForwardModeView {
    fn from(mode: PortForwardMode) -> Self {
        match mode {
            PortForwardMode::HostPort => Self::HostPort,
            PortForwardMode::Path => Self::Path,
        }
    }
}

/// A forward to open.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortForwardCreateRequest {
    /// The TCP port inside the instance (on its loopback interface).
    #[schema(minimum = 1, maximum = 65535)]
    pub port: i64,
    /// `host_port` (the default) or `path`.
    #[serde(default)]
    pub mode: PortForwardModeView,
}

/// A port forward.
#[derive(Serialize, ToSchema)]
pub struct PortForwardView {
    pub forward_id: String,
    pub instance_id: String,
    pub port: u16,
    pub mode: PortForwardModeView,
    /// `host_port`: where to connect (`127.0.0.1:40123`).
    pub host_address: Option<String>,
    /// `path`: the API path that reaches the port (`/v1/instances/{id}/ports/{port}/`).
    pub url: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// Set once the forward is closed (by its owner, or because the instance ended).
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>)]
    pub closed_at: Option<DateTime<Utc>>,
    pub close_reason: Option<String>,
}

impl From<PortForwardRecord> for PortForwardView {
    fn from(f: PortForwardRecord) -> Self {
        let url = (f.mode == PortForwardMode::Path)
            .then(|| format!("/v1/instances/{}/ports/{}/", f.session_id, f.port));
        Self {
            forward_id: f.forward_id,
            instance_id: f.session_id,
            port: f.port,
            mode: f.mode.into(),
            host_address: f.host_address,
            url,
            created_at: f.created_at,
            closed_at: f.closed_at,
            close_reason: f.close_reason,
        }
    }
}

/// The open forwards of an instance, oldest first.
#[derive(Serialize, ToSchema)]
pub struct PortForwardList {
    pub port_forwards: Vec<PortForwardView>,
}

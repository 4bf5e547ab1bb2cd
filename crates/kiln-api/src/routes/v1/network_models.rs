//! Shapes of the instance network route.
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::models::rfc3339;

/// An instance's network.
#[derive(Serialize, ToSchema)]
pub struct NetworkView {
    pub instance_id: String,
    /// `none` (only loopback inside) or `allowlist` (the hosts below, through the proxy).
    pub policy: String,
    /// `host`, `host:port`, `*.domain` or `*.domain:port` entries.
    pub allow: Vec<String>,
    /// The proxy commands inside use (`http_proxy`, `https_proxy` are set to it); null
    /// without an allowlist.
    pub proxy: Option<String>,
    /// Connections let through (on the server that runs the instance).
    pub connections: u64,
    /// Connections refused, all of them.
    pub blocked_total: u64,
    /// The newest refusals, newest first (at most 100).
    pub blocked: Vec<BlockedView>,
}

/// A refused connection.
#[derive(Serialize, ToSchema)]
pub struct BlockedView {
    pub host: String,
    pub port: u16,
    /// Why: not in the allowlist, or refused by the server's outbound rules.
    pub reason: String,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: DateTime<Utc>,
}

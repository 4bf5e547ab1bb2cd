//! Records of port forwards: a way in to a TCP port inside an instance's sandbox.
use chrono::{DateTime, Utc};

/// How a forward is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortForwardMode {
    /// A listener on the server's host, each connection piped to the port inside.
    HostPort,
    /// HTTP under the API, `/v1/instances/{id}/ports/{port}/…`, for the owner only.
    Path,
}

impl PortForwardMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HostPort => "host_port",
            Self::Path => "path",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "host_port" => Some(Self::HostPort),
            "path" => Some(Self::Path),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPortForward {
    pub forward_id: String,
    pub session_id: String,
    pub user_id: String,
    pub port: u16,
    pub mode: PortForwardMode,
    /// Where a `HostPort` forward listens (`127.0.0.1:20001`); `None` for `Path`.
    pub host_address: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A forward, open until `closed_at` is set (with why in `close_reason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardRecord {
    pub forward_id: String,
    pub session_id: String,
    pub user_id: String,
    pub port: u16,
    pub mode: PortForwardMode,
    pub host_address: Option<String>,
    pub created_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub close_reason: Option<String>,
}

//! Errors the agent reports in-band, and the handshake's version check.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A failed request, as sent in [`crate::Response::Error`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} ({code})")]
pub struct AgentError {
    /// Machine-readable reason.
    pub code: ErrorCode,
    /// Human-readable message, safe to show to the end user.
    pub message: String,
}

impl AgentError {
    /// Builds an error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AgentError {
            code,
            message: message.into(),
        }
    }
}

/// Why a request failed. Unit codes serialize as a string (`"not_found"`), codes with
/// data as an object (`{"multiple_matches":{"count":2,"lines":[3,9]}}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The path (or program, or cwd) does not exist.
    NotFound,
    /// A file operation was given a directory.
    IsDirectory,
    /// A directory operation was given something else.
    NotADirectory,
    /// The OS refused access.
    PermissionDenied,
    /// `str_replace`: `old` does not occur.
    NoMatch,
    /// `str_replace`: `old` occurs more than once.
    MultipleMatches {
        /// Non-overlapping occurrences.
        count: u64,
        /// 1-based line where each occurrence starts.
        lines: Vec<u64>,
    },
    /// `edit_lines`: the range is not inside the file (or is reversed).
    LinesOutOfRange {
        /// Lines the file has.
        line_count: u64,
    },
    /// Something exceeds a limit (frame, file, output cap, timeout).
    TooLarge,
    /// The request is malformed or not allowed at this point.
    InvalidRequest,
    /// Client and agent speak different protocol versions.
    VersionMismatch,
    /// `kill` named an exec that is not running.
    UnknownExec,
    /// The agent is at its connection limit.
    Busy,
    /// Any other I/O failure.
    Io,
    /// `connect_port`: nothing accepts connections on that port inside the sandbox.
    ConnectionRefused,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::IsDirectory => "is_directory",
            ErrorCode::NotADirectory => "not_a_directory",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::NoMatch => "no_match",
            ErrorCode::MultipleMatches { count, .. } => {
                return write!(f, "multiple_matches, count {count}")
            }
            ErrorCode::LinesOutOfRange { line_count } => {
                return write!(f, "lines_out_of_range, {line_count} lines")
            }
            ErrorCode::TooLarge => "too_large",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::VersionMismatch => "version_mismatch",
            ErrorCode::UnknownExec => "unknown_exec",
            ErrorCode::Busy => "busy",
            ErrorCode::Io => "io",
            ErrorCode::ConnectionRefused => "connection_refused",
        };
        f.write_str(name)
    }
}

/// The two sides of a connection speak different protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("protocol version mismatch: client speaks version {client}, agent speaks version {agent}")]
pub struct VersionMismatch {
    /// The client's version.
    pub client: u32,
    /// The agent's version.
    pub agent: u32,
}

/// Both sides call this with the two versions; exact equality is required while the
/// protocol is young (no negotiation of ranges yet).
pub fn check_versions(client: u32, agent: u32) -> Result<(), VersionMismatch> {
    if client == agent {
        Ok(())
    } else {
        Err(VersionMismatch { client, agent })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_readably() {
        assert_eq!(
            serde_json::to_value(ErrorCode::NotFound).unwrap(),
            serde_json::json!("not_found")
        );
        assert_eq!(
            serde_json::to_value(ErrorCode::MultipleMatches {
                count: 2,
                lines: vec![3, 9]
            })
            .unwrap(),
            serde_json::json!({"multiple_matches": {"count": 2, "lines": [3, 9]}})
        );
    }

    #[test]
    fn mismatch_names_both_versions() {
        let err = check_versions(1, 2).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("client speaks version 1"), "{msg}");
        assert!(msg.contains("agent speaks version 2"), "{msg}");
        assert!(check_versions(3, 3).is_ok());
    }
}

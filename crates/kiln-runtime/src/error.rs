//! What can go wrong creating, using and tearing down sandboxes.

use std::io;
use std::path::PathBuf;

use kiln_protocol::ClientError;

/// A failed runtime operation.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The sandbox id is not usable as a directory and cgroup name.
    #[error("invalid sandbox id {0:?}: use 1 to 64 characters from [A-Za-z0-9_-]")]
    InvalidId(String),
    /// The spec cannot be run (e.g. no layers, a layer path overlayfs cannot take).
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    /// No sandbox with this id.
    #[error("no sandbox {0}")]
    NotFound(String),
    /// A sandbox with this id already exists.
    #[error("sandbox {0} already exists")]
    AlreadyExists(String),
    /// The host lacks something the backend needs.
    #[error("host not ready: {0}")]
    HostNotReady(String),
    /// A filesystem or process operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Mounting or unmounting failed.
    #[error("{what} {path}: {source}")]
    Mount {
        /// What was being done.
        what: &'static str,
        /// The mount point.
        path: PathBuf,
        /// The OS error.
        source: nix::Error,
    },
    /// A cgroup could not be set up, limited, frozen or removed.
    #[error("cgroup {path}: {message}")]
    Cgroup {
        /// The cgroup directory or file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The sandbox process failed to start or its agent never answered.
    #[error("sandbox {id} did not start: {reason}")]
    StartFailed {
        /// The sandbox.
        id: String,
        /// Why, including the tail of the sandbox's stderr when there is one.
        reason: String,
    },
    /// The agent inside the sandbox answered with an error or could not be reached.
    #[error("sandbox {id}: {source}")]
    Agent {
        /// The sandbox.
        id: String,
        /// The client-side error (which may carry the agent's own error).
        source: ClientError,
    },
    /// The seccomp filter could not be compiled.
    #[error("seccomp filter: {0}")]
    Seccomp(String),
}

impl RuntimeError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        RuntimeError::Io {
            what,
            path: path.into(),
            source,
        }
    }

    /// The agent's own error, when the agent answered with one (e.g. file not found).
    pub fn agent_error(&self) -> Option<&kiln_protocol::AgentError> {
        match self {
            RuntimeError::Agent { source, .. } => source.agent_error(),
            _ => None,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

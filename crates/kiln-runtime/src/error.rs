//! What can go wrong creating, using and tearing down sandboxes.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

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
    /// The image reference names no image this backend has.
    #[error("image {reference}: {reason}")]
    ImageNotFound {
        /// The reference asked for.
        reference: String,
        /// What the image store said.
        reason: String,
    },
    /// This backend cannot do this (e.g. snapshots on a backend without them).
    #[error("this sandbox backend does not support {what}")]
    Unsupported {
        /// What was asked for.
        what: &'static str,
    },
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
    /// Admission control: this node has no room for another sandbox of this size now.
    #[error("this node is full ({resource}): {message}")]
    Capacity {
        /// What ran out.
        resource: Resource,
        /// The numbers behind the refusal.
        message: String,
        /// When asking again may succeed (sandboxes end, space frees).
        retry_after: Duration,
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

/// What a node can run out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// The memory budget of all sandboxes (the parent cgroup's limit).
    Memory,
    /// Free space on the filesystem holding the sandboxes' writable layers.
    Disk,
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Resource::Memory => "memory",
            Resource::Disk => "disk",
        })
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

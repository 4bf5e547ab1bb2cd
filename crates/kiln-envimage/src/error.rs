//! The one error type of image building.

use std::path::PathBuf;

/// Everything that can go wrong while building an environment image.
#[derive(Debug, thiserror::Error)]
pub enum EnvImageError {
    /// An I/O error, with what we were doing and on which path.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A tool (debootstrap, git, …) could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// A tool ran and failed; `output` is the tail of what it printed.
    #[error("{command} failed ({status}):\n{output}")]
    CommandFailed {
        command: String,
        status: String,
        output: String,
    },
    /// git failed (a sample's checkout).
    #[error(transparent)]
    Git(#[from] kiln_git::GitError),
    /// The image store refused an operation.
    #[error(transparent)]
    Image(#[from] kiln_image::ImageError),
    /// A spec or dataset record is not usable.
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    /// JSON we wrote or read could not be (de)serialised.
    #[error("{what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

impl EnvImageError {
    /// A closure for `map_err` that names the action and path.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            reason: reason.into(),
        }
    }
}

/// Result with [`EnvImageError`].
pub type Result<T, E = EnvImageError> = std::result::Result<T, E>;

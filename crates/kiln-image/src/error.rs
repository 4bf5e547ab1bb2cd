//! The one error type of the image store.

use std::path::PathBuf;

/// Everything that can go wrong while importing, pulling, unpacking or indexing images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// An I/O error, with what we were doing and on which path.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Content did not hash to the digest that names it.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// Content was not the size its descriptor announced.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    /// A string that should be `sha256:<64 hex>` is not.
    #[error("invalid digest {0:?} (only sha256:<64 lowercase hex> is supported)")]
    InvalidDigest(String),
    /// An image reference that does not parse.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    /// A layer tar entry that would write outside the layer directory.
    #[error("unsafe path in layer tar: {path:?}: {reason}")]
    UnsafePath { path: String, reason: &'static str },
    /// A malformed tar stream or an entry we cannot represent.
    #[error("bad layer tar: {0}")]
    BadTar(String),
    /// The archive or layout is not an OCI layout nor a `docker save` tarball, or is inconsistent.
    #[error("bad image archive {}: {reason}", path.display())]
    BadArchive { path: PathBuf, reason: String },
    /// A manifest, index or config that does not parse or makes no sense.
    #[error("bad {what}: {reason}")]
    BadMetadata { what: &'static str, reason: String },
    /// The image has no manifest for linux/amd64.
    #[error("no linux/amd64 image in {0}")]
    NoMatchingPlatform(String),
    /// An imported image has no name and none was given.
    #[error("image {0} has no reference; give one explicitly")]
    NoReference(String),
    /// No image under this reference.
    #[error("image not found: {0}")]
    NotFound(String),
    /// Removing the image would delete layers that live sandboxes use.
    #[error(
        "image {reference} is in use by {}: its layers are those sandboxes' root file systems; \
         end them first, or remove the image with --force (the layers then stay until they are \
         unused)",
        users.join(", ")
    )]
    InUse {
        reference: String,
        users: Vec<String>,
    },
    /// A registry request failed at the HTTP level.
    #[error("registry request {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// A registry answered with a status we cannot continue from.
    #[error("registry answered {status} for {url}: {body}")]
    RegistryStatus {
        url: String,
        status: u16,
        body: String,
    },
    /// Registry authentication failed or was required and not configured.
    #[error("registry authentication failed for {url}: {reason}")]
    Auth { url: String, reason: String },
    /// A blocking task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(String),
    /// The caller gave up ([`crate::Progress::cancelled_by`]); nothing was recorded.
    #[error("cancelled")]
    Cancelled,
}

impl ImageError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ImageError::Io {
            action,
            path,
            source,
        }
    }
}

/// Result alias used across the crate.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;

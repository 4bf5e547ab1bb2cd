//! Sandboxes: the backend-neutral [`Runtime`] trait, [`open`] that builds the backend
//! the configuration names, and the `local` backend (overlayfs + bubblewrap + cgroups,
//! with `kiln-agent` as PID 1). Knows nothing of HTTP.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use kiln_runtime::{Runtime, SandboxId, SandboxSpec};
//! let config = kiln_config::RuntimeConfig::default();
//! let opened = kiln_runtime::open(
//!     &config,
//!     "/var/lib/kiln".as_ref(),
//!     "/var/lib/kiln/images".as_ref(),
//! )?;
//! let id = SandboxId::new("s1")?;
//! let mut spec = SandboxSpec::image(id.clone(), "kiln/python:3.12");
//! spec.limits = opened.limits;
//! opened.runtime.create(spec).await?;
//! let done = opened
//!     .runtime
//!     .exec(&id, kiln_protocol::ExecRequest::shell("echo hi"))
//!     .await?;
//! assert_eq!(done.stdout.as_bytes(), b"hi\n");
//! opened.runtime.destroy(&id).await?;
//! # Ok(()) }
//! ```

mod backend;
pub mod docker;
mod egress_socket;
mod egress_tcp;
pub mod error;
pub mod host_report;
pub mod kubernetes;
pub mod local;
pub mod node;
mod open;
pub mod runtime;
mod slots;
pub mod spec;

pub use error::{Resource, Result, RuntimeError};
pub use host_report::{HostCheck, HostReport};
pub use open::{default_limits, open, open_at, open_images, Opened, Unavailable};
pub use runtime::{ExecEventSink, NodeCapacity, PortStream, ReconcileReport, Runtime, SandboxExit};
pub use spec::{
    Egress, EgressHandler, EgressStream, Limits, Network, ResourceUsage, SandboxHandle, SandboxId,
    SandboxInfo, SandboxSource, SandboxSpec, Snapshot, SnapshotId, Workspace, EGRESS_PROXY_ADDR,
};

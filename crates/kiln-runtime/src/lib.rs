//! Sandboxes: the [`Runtime`] trait and its `local` backend (overlayfs + bubblewrap +
//! cgroups, with `kiln-agent` as PID 1). Knows nothing of HTTP.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kiln_runtime::RuntimeError> {
//! use kiln_runtime::{LocalConfig, LocalRuntime, RootLayers, Runtime, SandboxId, SandboxSpec};
//! let runtime = LocalRuntime::new(LocalConfig::new("/var/lib/kiln/runtime", "/usr/lib/kiln/kiln-agent"))?;
//! let id = SandboxId::new("s1")?;
//! runtime.create(SandboxSpec::new(id.clone(), RootLayers::single("/srv/rootfs"))).await?;
//! let done = runtime.exec(&id, kiln_protocol::ExecRequest::shell("echo hi")).await?;
//! assert_eq!(done.stdout.as_bytes(), b"hi\n");
//! runtime.destroy(&id).await?;
//! # Ok(()) }
//! ```

pub mod error;
pub mod host_report;
pub mod local;
pub mod runtime;
pub mod spec;

pub use error::{Resource, Result, RuntimeError};
pub use host_report::{HostCheck, HostReport};
pub use local::host_check::check_host;
pub use local::{default_agent_binary, LocalConfig, LocalRuntime};
pub use runtime::{ExecEventSink, NodeCapacity, ReconcileReport, Runtime, SandboxExit};
pub use spec::{
    BindMount, Limits, Network, ResourceUsage, RootLayers, SandboxHandle, SandboxId, SandboxInfo,
    SandboxSpec, Snapshot,
};

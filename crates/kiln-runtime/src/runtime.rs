//! The `Runtime` trait: what the services layer asks of any sandbox backend.

use async_trait::async_trait;
use kiln_protocol::{
    DirListing, EditLinesRequest, ExecDone, ExecEvent, ExecRequest, FileContent, Metadata,
    Replaced, WriteFileRequest,
};

use crate::error::{Result, RuntimeError};
use crate::host_report::HostReport;
use crate::spec::{
    Egress, Limits, ResourceUsage, SandboxHandle, SandboxId, SandboxInfo, SandboxSpec, Snapshot,
    SnapshotId,
};

/// A TCP connection to a port inside a sandbox, as a byte stream ([`Runtime::connect_port`]).
pub type PortStream = Box<dyn kiln_protocol::AsyncStream>;

/// Receives the start and the output chunks of a streaming exec, in order.
pub type ExecEventSink<'a> = &'a mut (dyn FnMut(ExecEvent) + Send);

/// What start-up reconciliation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Sandboxes (or their leftovers: mounts, cgroups, directories) torn down because
    /// nobody knows them.
    pub removed: Vec<String>,
    /// Known sandboxes found alive and taken over.
    pub adopted: Vec<SandboxId>,
    /// Known sandboxes that were not running any more (their leftovers are removed).
    pub lost: Vec<SandboxId>,
}

/// Why a sandbox stopped running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxExit {
    /// Destroyed through this runtime (`destroy`, `shutdown`, reconciliation).
    Destroyed,
    /// It stopped on its own: its init process ended (killed from outside, out of memory,
    /// crashed). `reason` says what is known, for people.
    Died {
        /// What is known of the cause.
        reason: String,
    },
}

/// What a node's sandboxes hold against what admission lets them hold, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct NodeCapacity {
    /// Sum of the memory limits of the sandboxes held (running, starting or reserved).
    pub memory_reserved_bytes: u64,
    /// Memory for all sandboxes (the parent cgroup's limit).
    pub memory_budget_bytes: u64,
    /// Admission allows memory limits up to the budget × this.
    pub memory_overcommit: f64,
    /// Sum of the disk limits held.
    pub disk_reserved_bytes: u64,
    /// Disk space sandboxes can use: free space plus what their disks already hold.
    pub disk_budget_bytes: u64,
    /// Admission allows disk limits up to the disk budget × this.
    pub disk_overcommit: f64,
}

/// Creates, runs commands in, snapshots and destroys sandboxes. Object-safe, so the
/// server holds an `Arc<dyn Runtime>` and picks the backend from its configuration
/// ([`open`](crate::open)). Everything here is backend-neutral: a sandbox is asked for
/// by image reference, limits, network, environment and workspace ([`SandboxSpec`]);
/// host paths, bind mounts and pids are the business of each backend alone.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Admission control: holds room for sandbox `id` with these limits until
    /// `create(id)` takes it over (or `release`/`destroy` of `id`, or a lapse of ten
    /// minutes), or refuses with [`RuntimeError::Capacity`](crate::RuntimeError) when
    /// the node is full. Lets a caller refuse a request before accepting it.
    fn reserve(&self, id: &SandboxId, limits: &Limits) -> Result<()>;

    /// Gives back room reserved for a sandbox that will not be created.
    fn release(&self, id: &SandboxId);

    /// Starts a sandbox and returns once its agent answers. Admitted like `reserve`
    /// unless its id holds a reservation; `Capacity` when the node is full;
    /// `ImageNotFound` for an image this backend does not have; `Unsupported` for a fork
    /// ([`SandboxSource::Snapshot`](crate::SandboxSource)) on a backend without snapshots.
    async fn create(&self, spec: SandboxSpec) -> Result<SandboxHandle>;

    /// Whether `create` could find the image `reference`: `ImageNotFound` if not. Lets a
    /// caller refuse a request before accepting it.
    async fn check_image(&self, reference: &str) -> Result<()>;

    /// Runs a command and returns its (capped) output.
    async fn exec(&self, id: &SandboxId, request: ExecRequest) -> Result<ExecDone>;

    /// Runs a command, handing its start and each output chunk to `on_event` as they come.
    async fn exec_streaming(
        &self,
        id: &SandboxId,
        request: ExecRequest,
        on_event: ExecEventSink<'_>,
    ) -> Result<ExecDone>;

    /// Signals a running exec's process group (SIGKILL when `signal` is `None`).
    async fn kill_exec(&self, id: &SandboxId, exec_id: u64, signal: Option<i32>) -> Result<()>;

    /// Reads at most `max_bytes` of a file.
    async fn read_file(
        &self,
        id: &SandboxId,
        path: &str,
        max_bytes: Option<u64>,
    ) -> Result<FileContent>;

    /// Reads at most `max_bytes` of a file from byte `offset` on. The default serves
    /// reads from the start through [`Runtime::read_file`] and answers
    /// [`RuntimeError::Unsupported`] for others.
    async fn read_file_at(
        &self,
        id: &SandboxId,
        path: &str,
        offset: u64,
        max_bytes: Option<u64>,
    ) -> Result<FileContent> {
        if offset == 0 {
            return self.read_file(id, path, max_bytes).await;
        }
        Err(RuntimeError::Unsupported {
            what: "reads from an offset",
        })
    }

    /// Replaces a file atomically; returns the bytes written.
    async fn write_file(&self, id: &SandboxId, request: WriteFileRequest) -> Result<u64>;

    /// Replaces the single verbatim occurrence of `old` by `new`.
    async fn str_replace(
        &self,
        id: &SandboxId,
        path: &str,
        old: &str,
        new: &str,
    ) -> Result<Replaced>;

    /// Replaces (or inserts) whole lines of a file, atomically, inside the sandbox
    /// ([`kiln_protocol::line_edit`]). [`RuntimeError::Unsupported`] by default.
    async fn edit_lines(&self, id: &SandboxId, request: EditLinesRequest) -> Result<Replaced> {
        let _ = (id, request);
        Err(RuntimeError::Unsupported { what: "line edits" })
    }

    /// Lists a directory.
    async fn list_dir(&self, id: &SandboxId, path: &str) -> Result<DirListing>;

    /// Metadata of a path.
    async fn stat(&self, id: &SandboxId, path: &str) -> Result<Metadata>;

    /// Freezes the sandbox's files into a snapshot that forks start from
    /// ([`SandboxSpec::fork`]); the sandbox keeps running. A backend that cannot
    /// answers [`RuntimeError::Unsupported`] (the default).
    async fn snapshot(&self, id: &SandboxId) -> Result<Snapshot> {
        let _ = id;
        Err(RuntimeError::Unsupported { what: "snapshots" })
    }

    /// Deletes a snapshot. Sandboxes forked from it must be destroyed first.
    /// [`RuntimeError::Unsupported`] (the default) on a backend without snapshots.
    async fn remove_snapshot(&self, snapshot_id: &SnapshotId) -> Result<()> {
        let _ = snapshot_id;
        Err(RuntimeError::Unsupported { what: "snapshots" })
    }

    /// The snapshots this runtime holds, whoever took them: what start-up compares with
    /// the store to remove copies taken but never recorded (a crash between the two).
    /// Empty (the default) on a backend that cannot list them.
    async fn list_snapshots(&self) -> Result<Vec<SnapshotId>> {
        Ok(Vec::new())
    }

    /// Connects to TCP `port` on the sandbox's own loopback interface (its network stays
    /// isolated: nothing else is reachable this way) and returns the connection as a byte
    /// stream. Nothing listening there is an agent error with code `connection_refused`.
    /// [`RuntimeError::Unsupported`] (the default) on a backend that cannot.
    async fn connect_port(&self, id: &SandboxId, port: u16) -> Result<PortStream> {
        let _ = (id, port);
        Err(RuntimeError::Unsupported {
            what: "port forwarding",
        })
    }

    /// Serves a running sandbox's egress ([`SandboxSpec::egress`]) with `egress` from now
    /// on: for a sandbox adopted after a restart, whose agent still relays the proxy
    /// address while the server's end went with the old process. A sandbox started
    /// without an egress stays without one (its agent relays nothing).
    /// [`RuntimeError::Unsupported`] (the default) on a backend without egress.
    async fn attach_egress(&self, id: &SandboxId, egress: Egress) -> Result<()> {
        let _ = (id, egress);
        Err(RuntimeError::Unsupported {
            what: "egress through the server (a sandbox network allowlist)",
        })
    }

    /// Kills everything in the sandbox and removes all trace of it.
    async fn destroy(&self, id: &SandboxId) -> Result<()>;

    /// Moves the end a cluster enforces for the sandbox ([`SandboxSpec::expires_at`])
    /// when its owner's expiry moves (a session's TTL changed). Nothing to do (the
    /// default) on backends that ignore that end.
    async fn set_expiry(&self, id: &SandboxId, at: std::time::SystemTime) -> Result<()> {
        let _ = (id, at);
        Ok(())
    }

    /// Resolves when the sandbox stops running, however it stops (at once if it already
    /// has), so its owner can react to a sandbox that died under it. `NotFound` for a
    /// sandbox this runtime does not run (any more).
    async fn wait_exit(&self, id: &SandboxId) -> Result<SandboxExit>;

    /// The sandboxes this runtime runs.
    async fn list(&self) -> Result<Vec<SandboxInfo>>;

    /// What a sandbox has used so far: CPU time, memory peak, disk, processes.
    async fn usage(&self, id: &SandboxId) -> Result<ResourceUsage>;

    /// Whether the host can run sandboxes, and what to install if not.
    async fn health(&self) -> HostReport;

    /// Start-up: tears down every sandbox not in `known`, takes over the known ones
    /// still alive.
    async fn reconcile(&self, known: &[SandboxId]) -> Result<ReconcileReport>;

    /// Destroys every sandbox, leaving nothing mounted or running.
    async fn shutdown(&self) -> Result<()>;

    /// What the node holds against its admission budget; `None` for a backend without
    /// admission control.
    async fn capacity(&self) -> Option<NodeCapacity> {
        None
    }
}

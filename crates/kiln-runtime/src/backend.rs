//! One [`Runtime`] for every backend whose sandboxes run `kiln-agent`: the agent calls
//! (exec, streaming, kill, files, ports) are made here, once, through the sandbox's
//! [`AgentSandbox::client`]. A backend ([`Backend`]) supplies its table of sandboxes and
//! what is its own: how a sandbox is admitted, started, adopted, measured and destroyed.

use std::sync::Arc;

use async_trait::async_trait;
use kiln_protocol::{
    ClientError, DirListing, EditLinesRequest, ExecDone, ExecRequest, FileContent, Metadata,
    Replaced, WriteFileRequest,
};
use tokio::sync::watch;

use crate::error::{Result, RuntimeError};
use crate::host_report::HostReport;
use crate::runtime::{
    ExecEventSink, NodeCapacity, PortStream, ReconcileReport, Runtime, SandboxExit,
};
use crate::slots::{AgentSandbox, Slots};
use crate::spec::{
    Egress, Limits, ResourceUsage, SandboxHandle, SandboxId, SandboxInfo, SandboxSpec, Snapshot,
    SnapshotId,
};

/// What a backend supplies to be a [`Runtime`]; each method is the [`Runtime`] method of
/// the same name, documented there.
#[async_trait]
pub(crate) trait Backend: Send + Sync {
    /// The backend's record of a running sandbox.
    type Sandbox: AgentSandbox;

    /// The table of sandboxes.
    fn slots(&self) -> &Slots<Self::Sandbox>;

    /// The running sandbox `id`, or `NotFound`.
    fn sandbox(&self, id: &SandboxId) -> Result<Arc<Self::Sandbox>> {
        self.slots().get(id)
    }

    // Admission: what the node lets sandboxes hold.
    fn reserve(&self, id: &SandboxId, limits: &Limits) -> Result<()>;
    fn release(&self, id: &SandboxId);
    async fn capacity(&self) -> Option<NodeCapacity> {
        None
    }

    // One sandbox: how it starts, what it uses, how it ends.
    async fn check_image(&self, reference: &str) -> Result<()>;
    async fn create(&self, spec: SandboxSpec) -> Result<SandboxHandle>;
    async fn usage(&self, id: &SandboxId) -> Result<ResourceUsage>;
    async fn snapshot(&self, id: &SandboxId) -> Result<Snapshot>;
    async fn remove_snapshot(&self, snapshot_id: &SnapshotId) -> Result<()>;
    fn attach_egress(&self, id: &SandboxId, egress: Egress) -> Result<()> {
        let _ = (id, egress);
        Err(RuntimeError::Unsupported {
            what: "egress through the server (a sandbox network allowlist)",
        })
    }
    async fn list_snapshots(&self) -> Result<Vec<SnapshotId>> {
        Ok(Vec::new())
    }
    async fn destroy(&self, id: &SandboxId) -> Result<()>;
    async fn set_expiry(&self, id: &SandboxId, at: std::time::SystemTime) -> Result<()> {
        let _ = (id, at);
        Ok(())
    }

    // The whole node.
    async fn list(&self) -> Result<Vec<SandboxInfo>> {
        // The backend has no cheap figure of each sandbox's memory.
        Ok(self.slots().infos(|_| None))
    }
    async fn health(&self) -> HostReport;
    async fn reconcile(&self, known: &[SandboxId]) -> Result<ReconcileReport>;
    async fn shutdown(&self) -> Result<()>;
}

/// An agent's failure, about sandbox `id`.
pub(crate) fn agent_err(id: &SandboxId) -> impl FnOnce(ClientError) -> RuntimeError + '_ {
    move |source| RuntimeError::Agent {
        id: id.to_string(),
        source,
    }
}

/// `request`, run in the sandbox's working directory unless it names its own.
fn with_default_cwd(sandbox: &impl AgentSandbox, mut request: ExecRequest) -> ExecRequest {
    if request.cwd.is_none() {
        request.cwd = sandbox.view().workdir.map(str::to_owned);
    }
    request
}

/// 32 random alphanumerics: the secret an agent reached over TCP asks for.
pub(crate) fn agent_secret() -> String {
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// How a sandbox ended, from the watch its backend's watcher fills in once (at once if
/// it already has).
async fn wait_exit(mut exit: watch::Receiver<Option<SandboxExit>>) -> SandboxExit {
    match exit.wait_for(Option::is_some).await {
        Ok(value) => value.clone().unwrap_or(SandboxExit::Destroyed),
        // The watcher only stops after sending: gone, it has nothing more to tell.
        Err(_) => SandboxExit::Destroyed,
    }
}

// One blanket impl rather than one per backend, so the agent calls exist once. `Backend`
// is crate-private: no type outside this crate gets it, and a type of another crate
// (a test's fake) implements `Runtime` itself.
#[async_trait]
impl<B: Backend> Runtime for B {
    fn reserve(&self, id: &SandboxId, limits: &Limits) -> Result<()> {
        Backend::reserve(self, id, limits)
    }

    fn release(&self, id: &SandboxId) {
        Backend::release(self, id);
    }

    async fn create(&self, spec: SandboxSpec) -> Result<SandboxHandle> {
        Backend::create(self, spec).await
    }

    async fn check_image(&self, reference: &str) -> Result<()> {
        Backend::check_image(self, reference).await
    }

    async fn exec(&self, id: &SandboxId, request: ExecRequest) -> Result<ExecDone> {
        let sandbox = self.sandbox(id)?;
        let request = with_default_cwd(sandbox.as_ref(), request);
        sandbox.client().exec(request).await.map_err(agent_err(id))
    }

    async fn exec_streaming(
        &self,
        id: &SandboxId,
        request: ExecRequest,
        on_event: ExecEventSink<'_>,
    ) -> Result<ExecDone> {
        let sandbox = self.sandbox(id)?;
        let request = with_default_cwd(sandbox.as_ref(), request);
        sandbox
            .client()
            .exec_streaming(request, on_event)
            .await
            .map_err(agent_err(id))
    }

    async fn kill_exec(&self, id: &SandboxId, exec_id: u64, signal: Option<i32>) -> Result<()> {
        let sandbox = self.sandbox(id)?;
        let kill = sandbox.client().kill(exec_id, signal);
        kill.await.map_err(agent_err(id))
    }

    async fn read_file(
        &self,
        id: &SandboxId,
        path: &str,
        max_bytes: Option<u64>,
    ) -> Result<FileContent> {
        let sandbox = self.sandbox(id)?;
        let read = sandbox.client().read_file(path, max_bytes);
        read.await.map_err(agent_err(id))
    }

    async fn read_file_at(
        &self,
        id: &SandboxId,
        path: &str,
        offset: u64,
        max_bytes: Option<u64>,
    ) -> Result<FileContent> {
        let sandbox = self.sandbox(id)?;
        let read = sandbox.client().read_file_at(path, offset, max_bytes);
        read.await.map_err(agent_err(id))
    }

    async fn write_file(&self, id: &SandboxId, request: WriteFileRequest) -> Result<u64> {
        let sandbox = self.sandbox(id)?;
        let write = sandbox.client().write_file(request);
        write.await.map_err(agent_err(id))
    }

    async fn str_replace(
        &self,
        id: &SandboxId,
        path: &str,
        old: &str,
        new: &str,
    ) -> Result<Replaced> {
        let sandbox = self.sandbox(id)?;
        let replace = sandbox.client().str_replace(path, old, new);
        replace.await.map_err(agent_err(id))
    }

    async fn edit_lines(&self, id: &SandboxId, request: EditLinesRequest) -> Result<Replaced> {
        let sandbox = self.sandbox(id)?;
        let edit = sandbox.client().edit_lines(request);
        edit.await.map_err(agent_err(id))
    }

    async fn list_dir(&self, id: &SandboxId, path: &str) -> Result<DirListing> {
        let sandbox = self.sandbox(id)?;
        sandbox.client().list_dir(path).await.map_err(agent_err(id))
    }

    async fn stat(&self, id: &SandboxId, path: &str) -> Result<Metadata> {
        let sandbox = self.sandbox(id)?;
        sandbox.client().stat(path).await.map_err(agent_err(id))
    }

    async fn snapshot(&self, id: &SandboxId) -> Result<Snapshot> {
        Backend::snapshot(self, id).await
    }

    async fn remove_snapshot(&self, snapshot_id: &SnapshotId) -> Result<()> {
        Backend::remove_snapshot(self, snapshot_id).await
    }

    async fn attach_egress(&self, id: &SandboxId, egress: Egress) -> Result<()> {
        Backend::attach_egress(self, id, egress)
    }

    async fn list_snapshots(&self) -> Result<Vec<SnapshotId>> {
        Backend::list_snapshots(self).await
    }

    async fn connect_port(&self, id: &SandboxId, port: u16) -> Result<PortStream> {
        let sandbox = self.sandbox(id)?;
        let connect = sandbox.client().connect_port(port);
        connect.await.map_err(agent_err(id))
    }

    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        Backend::destroy(self, id).await
    }

    async fn set_expiry(&self, id: &SandboxId, at: std::time::SystemTime) -> Result<()> {
        Backend::set_expiry(self, id, at).await
    }

    async fn wait_exit(&self, id: &SandboxId) -> Result<SandboxExit> {
        // The record is not held while waiting: a destroy may drop it meanwhile.
        let exit = self.sandbox(id)?.view().exit.clone();
        Ok(wait_exit(exit).await)
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>> {
        Backend::list(self).await
    }

    async fn usage(&self, id: &SandboxId) -> Result<ResourceUsage> {
        Backend::usage(self, id).await
    }

    async fn health(&self) -> HostReport {
        Backend::health(self).await
    }

    async fn reconcile(&self, known: &[SandboxId]) -> Result<ReconcileReport> {
        Backend::reconcile(self, known).await
    }

    async fn shutdown(&self) -> Result<()> {
        Backend::shutdown(self).await
    }

    async fn capacity(&self) -> Option<NodeCapacity> {
        Backend::capacity(self).await
    }
}

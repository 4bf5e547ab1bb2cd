//! `Runtime` for the local backend: the table of sandboxes and the agent calls.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kiln_protocol::{
    ClientError, DirListing, EditLinesRequest, ExecDone, ExecRequest, FileContent, Metadata,
    Replaced, WriteFileRequest,
};

use super::host_check;
use crate::error::{Result, RuntimeError};
use crate::host_report::HostReport;
use crate::local::layout::SandboxDirs;
use crate::local::sandbox::Sandbox;
use crate::local::spec::LocalSpec;
use crate::local::{remove_socket_link, teardown, usage, workspace, LocalRuntime, Slot};
use crate::runtime::{
    ExecEventSink, NodeCapacity, PortStream, ReconcileReport, Runtime, SandboxExit,
};
use crate::spec::{
    Limits, ResourceUsage, SandboxHandle, SandboxId, SandboxInfo, SandboxSpec, Snapshot, SnapshotId,
};

/// How long destroy waits for bwrap's monitor to be reaped after the kill.
const REAP_TIMEOUT: Duration = Duration::from_secs(2);

impl LocalRuntime {
    fn agent_err(id: &SandboxId) -> impl FnOnce(ClientError) -> RuntimeError + '_ {
        move |source| RuntimeError::Agent {
            id: id.to_string(),
            source,
        }
    }

    fn with_default_cwd(sandbox: &Sandbox, mut request: ExecRequest) -> ExecRequest {
        if request.cwd.is_none() {
            request.cwd.clone_from(&sandbox.spec.workdir);
        }
        request
    }

    /// What admission holds against its budget (a `statvfs` and a short directory read).
    fn node_capacity(&self) -> NodeCapacity {
        let budget = self.admission.budget();
        let (memory, disk) = self.admission.held();
        NodeCapacity {
            memory_reserved_bytes: memory,
            memory_budget_bytes: budget.memory_bytes,
            memory_overcommit: budget.memory_overcommit,
            disk_reserved_bytes: disk,
            disk_budget_bytes: self.disk_space(),
            disk_overcommit: budget.disk_overcommit,
        }
    }

    /// Removes a sandbox from the table and tears it down; `None` when it was not there.
    pub(crate) async fn destroy_sandbox(&self, sandbox: Arc<Sandbox>) -> Result<()> {
        sandbox.exit.mark_destroying();
        self.admission.release(&sandbox.spec.id);
        let cgroups = Arc::clone(&self.cgroups);
        let (cgroup, dirs) = (sandbox.cgroup.clone(), sandbox.dirs.clone());
        let (binds, limited) = (
            sandbox.spec.binds.clone(),
            sandbox.spec.limits.disk_bytes.is_some(),
        );
        tokio::task::spawn_blocking(move || {
            // The workspaces' changes go back to the host once nothing in the sandbox
            // can write any more, before their filesystem goes away.
            let copied = if binds.is_empty() {
                Ok(())
            } else {
                cgroups
                    .kill_all(&cgroup)
                    .and_then(|()| workspace::copy_back(&dirs, limited, &binds))
            };
            let torn = teardown::teardown(cgroups.as_ref(), &cgroup, &dirs);
            copied.and(torn)
        })
        .await
        .map_err(|e| {
            RuntimeError::io(
                "teardown task failed for",
                &sandbox.dirs.base,
                std::io::Error::other(e),
            )
        })??;
        if let Some(mut child) = sandbox.monitor.lock().await.take() {
            let _ = tokio::time::timeout(REAP_TIMEOUT, child.wait()).await;
        }
        Ok(())
    }

    /// Starts a sandbox from layer directories and host binds: what `create` does once
    /// the spec is resolved (and how the runtime's own tests start one from a directory).
    pub async fn create_local(&self, spec: LocalSpec) -> Result<SandboxHandle> {
        {
            let mut table = self.table();
            if table.contains_key(&spec.id) {
                return Err(RuntimeError::AlreadyExists(spec.id.to_string()));
            }
            table.insert(spec.id.clone(), Slot::Starting);
        }
        if let Err(err) = self
            .admission
            .claim(&spec.id, &spec.limits, self.disk_space())
        {
            self.table().remove(&spec.id);
            return Err(err);
        }
        match self.start(&spec).await {
            Ok(sandbox) => {
                let handle = sandbox.handle();
                self.table().insert(spec.id.clone(), Slot::Running(sandbox));
                Ok(handle)
            }
            Err(err) => {
                self.table().remove(&spec.id);
                self.admission.release(&spec.id);
                Err(err)
            }
        }
    }

    /// Tears down whatever is on disk for `id` (no table entry needed).
    pub(crate) async fn teardown_leftovers(&self, id: &str) -> Result<()> {
        if let Ok(id) = SandboxId::new(id) {
            self.admission.release(&id);
        }
        let cgroups = Arc::clone(&self.cgroups);
        let cgroup = self.cgroups.cgroup_of(id);
        let dirs = SandboxDirs::new(&self.sandboxes_dir(), &self.socket_root, id);
        tokio::task::spawn_blocking(move || teardown::teardown(cgroups.as_ref(), &cgroup, &dirs))
            .await
            .map_err(|e| {
                RuntimeError::io("teardown task failed for", id, std::io::Error::other(e))
            })?
    }
}

#[async_trait]
impl Runtime for LocalRuntime {
    fn reserve(&self, id: &SandboxId, limits: &Limits) -> Result<()> {
        self.admission.reserve(id, limits, self.disk_space())
    }

    fn release(&self, id: &SandboxId) {
        // Only a reservation: a sandbox's room goes with the sandbox (destroy).
        if !self.table().contains_key(id) {
            self.admission.release(id);
        }
    }

    async fn create(&self, spec: SandboxSpec) -> Result<SandboxHandle> {
        let spec = self.resolve(spec)?;
        self.create_local(spec).await
    }

    async fn check_image(&self, reference: &str) -> Result<()> {
        self.image(reference).map(|_| ())
    }

    async fn exec(&self, id: &SandboxId, request: ExecRequest) -> Result<ExecDone> {
        let sandbox = self.get(id)?;
        let request = Self::with_default_cwd(&sandbox, request);
        sandbox
            .client
            .exec(request)
            .await
            .map_err(Self::agent_err(id))
    }

    async fn exec_streaming(
        &self,
        id: &SandboxId,
        request: ExecRequest,
        on_event: ExecEventSink<'_>,
    ) -> Result<ExecDone> {
        let sandbox = self.get(id)?;
        let request = Self::with_default_cwd(&sandbox, request);
        sandbox
            .client
            .exec_streaming(request, on_event)
            .await
            .map_err(Self::agent_err(id))
    }

    async fn kill_exec(&self, id: &SandboxId, exec_id: u64, signal: Option<i32>) -> Result<()> {
        let sandbox = self.get(id)?;
        sandbox
            .client
            .kill(exec_id, signal)
            .await
            .map_err(Self::agent_err(id))
    }

    async fn read_file(
        &self,
        id: &SandboxId,
        path: &str,
        max_bytes: Option<u64>,
    ) -> Result<FileContent> {
        let sandbox = self.get(id)?;
        sandbox
            .client
            .read_file(path, max_bytes)
            .await
            .map_err(Self::agent_err(id))
    }

    async fn read_file_at(
        &self,
        id: &SandboxId,
        path: &str,
        offset: u64,
        max_bytes: Option<u64>,
    ) -> Result<FileContent> {
        let sandbox = self.get(id)?;
        sandbox
            .client
            .read_file_at(path, offset, max_bytes)
            .await
            .map_err(Self::agent_err(id))
    }

    async fn edit_lines(&self, id: &SandboxId, request: EditLinesRequest) -> Result<Replaced> {
        let sandbox = self.get(id)?;
        sandbox
            .client
            .edit_lines(request)
            .await
            .map_err(Self::agent_err(id))
    }

    async fn write_file(&self, id: &SandboxId, request: WriteFileRequest) -> Result<u64> {
        let sandbox = self.get(id)?;
        sandbox
            .client
            .write_file(request)
            .await
            .map_err(Self::agent_err(id))
    }

    async fn str_replace(
        &self,
        id: &SandboxId,
        path: &str,
        old: &str,
        new: &str,
    ) -> Result<Replaced> {
        let sandbox = self.get(id)?;
        sandbox
            .client
            .str_replace(path, old, new)
            .await
            .map_err(Self::agent_err(id))
    }

    async fn list_dir(&self, id: &SandboxId, path: &str) -> Result<DirListing> {
        let sandbox = self.get(id)?;
        sandbox
            .client
            .list_dir(path)
            .await
            .map_err(Self::agent_err(id))
    }

    async fn stat(&self, id: &SandboxId, path: &str) -> Result<Metadata> {
        let sandbox = self.get(id)?;
        sandbox.client.stat(path).await.map_err(Self::agent_err(id))
    }

    async fn connect_port(&self, id: &SandboxId, port: u16) -> Result<PortStream> {
        let sandbox = self.get(id)?;
        sandbox
            .client
            .connect_port(port)
            .await
            .map_err(Self::agent_err(id))
    }

    async fn snapshot(&self, id: &SandboxId) -> Result<Snapshot> {
        let sandbox = self.get(id)?;
        self.snapshot_sandbox(&sandbox).await
    }

    async fn remove_snapshot(&self, snapshot_id: &SnapshotId) -> Result<()> {
        self.remove_snapshot_layer(snapshot_id).await
    }

    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        let slot = {
            let mut table = self.table();
            match table.get(id) {
                Some(Slot::Starting) => {
                    return Err(RuntimeError::NotFound(format!("{id} (still starting)")))
                }
                Some(Slot::Running(_)) => table.remove(id),
                None => None,
            }
        };
        match slot {
            Some(Slot::Running(sandbox)) => self.destroy_sandbox(sandbox).await,
            _ if self.sandbox_dir(id).exists() => self.teardown_leftovers(id.as_str()).await,
            _ => {
                // A reservation that never became a sandbox ends here too.
                self.admission.release(id);
                Err(RuntimeError::NotFound(id.to_string()))
            }
        }
    }

    async fn wait_exit(&self, id: &SandboxId) -> Result<SandboxExit> {
        // The record is not held while waiting: a destroy may drop it meanwhile.
        let exit = self.get(id)?.exit.wait();
        Ok(exit.await)
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>> {
        let running: Vec<Arc<Sandbox>> = self
            .table()
            .values()
            .filter_map(|slot| match slot {
                Slot::Running(sandbox) => Some(Arc::clone(sandbox)),
                Slot::Starting => None,
            })
            .collect();
        let mut infos: Vec<SandboxInfo> = running
            .iter()
            .map(|sandbox| SandboxInfo {
                id: sandbox.spec.id.clone(),
                created_at: sandbox.created_at,
                memory_bytes: self.cgroups.memory_usage(&sandbox.cgroup),
            })
            .collect();
        infos.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(infos)
    }

    async fn usage(&self, id: &SandboxId) -> Result<ResourceUsage> {
        let sandbox = self.get(id)?;
        // Not enforced (`disk_limit_mode = "none"`): neither a limit nor a usage to show.
        let limit = sandbox
            .spec
            .limits
            .disk_bytes
            .filter(|_| self.disk_mode != crate::local::DiskLimitMode::None);
        let (cgroup, disk) = (sandbox.cgroup.clone(), sandbox.dirs.disk.clone());
        tokio::task::spawn_blocking(move || {
            let disk = limit.is_some().then_some(disk.as_path());
            ResourceUsage {
                disk_limit_bytes: limit,
                ..usage::read(&cgroup, disk)
            }
        })
        .await
        .map_err(|e| {
            RuntimeError::io(
                "usage task failed for",
                &sandbox.dirs.base,
                std::io::Error::other(e),
            )
        })
    }

    async fn health(&self) -> HostReport {
        let config = self.config.clone();
        tokio::task::spawn_blocking(move || host_check::check_host(&config))
            .await
            .unwrap_or_default()
    }

    async fn reconcile(&self, known: &[SandboxId]) -> Result<ReconcileReport> {
        let report = self.reconcile_with(known).await;
        // The owner of this root has started: have disks ready for its first creates.
        self.disks.refill();
        report
    }

    async fn capacity(&self) -> Option<NodeCapacity> {
        Some(self.node_capacity())
    }

    async fn shutdown(&self) -> Result<()> {
        let all: Vec<Arc<Sandbox>> = self
            .table()
            .drain()
            .filter_map(|(_, slot)| match slot {
                Slot::Running(sandbox) => Some(sandbox),
                Slot::Starting => None,
            })
            .collect();
        let mut first_error = None;
        for sandbox in all {
            if let Err(err) = self.destroy_sandbox(sandbox).await {
                first_error.get_or_insert(err);
            }
        }
        if let Err(err) = self.reconcile_with(&[]).await {
            first_error.get_or_insert(err);
        }
        self.cgroups.remove_parents();
        // Only this process's sandboxes used the short link (a next start makes it again);
        // a crash leaves it for the next start to sweep.
        remove_socket_link(&self.socket_root, &self.sandboxes_dir());
        let disks = Arc::clone(&self.disks);
        let _ = tokio::task::spawn_blocking(move || disks.drain()).await;
        first_error.map_or(Ok(()), Err)
    }
}

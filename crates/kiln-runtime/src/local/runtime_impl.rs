//! What the local backend supplies to the shared `Runtime` (`crate::backend`): how a
//! sandbox is admitted, started, measured and torn down.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::host_check;
use crate::backend::Backend;
use crate::error::{Result, RuntimeError};
use crate::host_report::HostReport;
use crate::local::layout::SandboxDirs;
use crate::local::sandbox::Sandbox;
use crate::local::spec::LocalSpec;
use crate::local::{remove_socket_link, teardown, usage, workspace, LocalRuntime};
use crate::runtime::{NodeCapacity, ReconcileReport};
use crate::slots::{AgentSandbox, AgentView, Slots};
use crate::spec::{
    Egress, Limits, ResourceUsage, SandboxHandle, SandboxId, SandboxInfo, SandboxSpec, Snapshot,
    SnapshotId,
};

/// How long destroy waits for bwrap's monitor to be reaped after the kill.
const REAP_TIMEOUT: Duration = Duration::from_secs(2);

impl LocalRuntime {
    /// Removes a sandbox from the table and tears it down; `None` when it was not there.
    pub(crate) async fn destroy_sandbox(&self, sandbox: Arc<Sandbox>) -> Result<()> {
        sandbox.exit.mark_destroying();
        sandbox.egress.stop();
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
        self.create_resolved(spec, None).await
    }

    /// Starts `spec`, or takes a warm sandbox for it when its image has a pool of
    /// `warm_pool`, or its class one from an earlier create (`warm.rs`).
    async fn create_resolved(
        &self,
        spec: LocalSpec,
        warm_pool: Option<usize>,
    ) -> Result<SandboxHandle> {
        let id = spec.id.clone();
        let start = async {
            if let Some(warm) = self.take_warm(&spec, warm_pool).await {
                return Ok(Arc::new(warm));
            }
            self.start(&spec).await
        };
        let sandbox = self
            .slots
            .create(
                &id,
                || self.admission.claim(&id, &spec.limits, self.disk_space()),
                start,
                || self.admission.release(&id),
            )
            .await?;
        Ok(sandbox.handle())
    }

    /// Tears down whatever is on disk for `id` (no table entry needed).
    pub(crate) async fn teardown_leftovers(&self, id: &str) -> Result<()> {
        if let Ok(id) = SandboxId::new(id) {
            self.admission.release(&id);
        }
        let cgroups = Arc::clone(&self.cgroups);
        let dirs = SandboxDirs::new(&self.sandboxes_dir(), &self.socket_root, id);
        // A sandbox taken warm keeps the cgroup it started in (its state names it).
        let state = dirs.read_state();
        let cgroup = self
            .cgroups
            .cgroup_of(state.as_ref().map_or(id, |s| s.cgroup_name(id)));
        tokio::task::spawn_blocking(move || teardown::teardown(cgroups.as_ref(), &cgroup, &dirs))
            .await
            .map_err(|e| {
                RuntimeError::io("teardown task failed for", id, std::io::Error::other(e))
            })?
    }
}

impl AgentSandbox for Sandbox {
    fn view(&self) -> AgentView<'_> {
        AgentView {
            id: &self.spec.id,
            client: &self.client,
            workdir: self.spec.workdir.as_deref(),
            created_at: self.created_at,
            agent_version: &self.agent_version,
            exit: self.exit.receiver(),
        }
    }
}

#[async_trait]
impl Backend for LocalRuntime {
    type Sandbox = Sandbox;

    fn slots(&self) -> &Slots<Sandbox> {
        &self.slots
    }

    fn sandbox(&self, id: &SandboxId) -> Result<Arc<Sandbox>> {
        self.get(id)
    }

    fn reserve(&self, id: &SandboxId, limits: &Limits) -> Result<()> {
        self.admission.reserve(id, limits, self.disk_space())
    }

    fn release(&self, id: &SandboxId) {
        // Only a reservation: a sandbox's room goes with the sandbox (destroy).
        if !self.slots.contains(id) {
            self.admission.release(id);
        }
    }

    async fn create(&self, spec: SandboxSpec) -> Result<SandboxHandle> {
        let spec = self.resolve(spec)?;
        // A fork or a restore stands on its snapshot's image: that image's pool serves it,
        // after a restart too, before any create of the image.
        let warm_pool = spec
            .image
            .as_ref()
            .and_then(|reference| self.config.warm_pools.get(reference).copied())
            .filter(|&size| size > 0);
        self.create_resolved(spec, warm_pool).await
    }

    async fn check_image(&self, reference: &str) -> Result<()> {
        self.image(reference).map(|_| ())
    }

    async fn snapshot(&self, id: &SandboxId) -> Result<Snapshot> {
        let sandbox = self.get(id)?;
        self.snapshot_sandbox(&sandbox).await
    }

    async fn remove_snapshot(&self, snapshot_id: &SnapshotId) -> Result<()> {
        self.remove_snapshot_layer(snapshot_id).await
    }

    fn attach_egress(&self, id: &SandboxId, egress: Egress) -> Result<()> {
        let sandbox = self.get(id)?;
        sandbox.egress.attach(&sandbox.dirs.run, egress)
    }

    async fn list_snapshots(&self) -> Result<Vec<SnapshotId>> {
        self.snapshot_layers_held().await
    }

    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        match self.slots.take(id)? {
            Some(sandbox) => self.destroy_sandbox(sandbox).await,
            None if self.sandbox_dir(id).exists() => self.teardown_leftovers(id.as_str()).await,
            None => {
                // A reservation that never became a sandbox ends here too.
                self.admission.release(id);
                Err(RuntimeError::NotFound(id.to_string()))
            }
        }
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>> {
        Ok(self
            .slots
            .infos(|sandbox| self.cgroups.memory_usage(&sandbox.cgroup)))
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
        // The owner of this root has started: have disks ready for its first creates,
        // and the host set up for them.
        self.disks.refill();
        self.tune_host();
        report
    }

    async fn capacity(&self) -> Option<NodeCapacity> {
        Some(self.admission.capacity(self.disk_space()))
    }

    async fn shutdown(&self) -> Result<()> {
        self.drain_warm().await;
        let mut first_error = None;
        for sandbox in self.slots.drain() {
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

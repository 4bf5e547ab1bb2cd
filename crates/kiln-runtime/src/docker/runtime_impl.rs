//! What the Docker backend supplies to the shared `Runtime` (`crate::backend`): how a
//! container is admitted, started, adopted, measured and removed.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bollard::query_parameters::{ListContainersOptions, StatsOptions};
use futures_util::StreamExt;
use kiln_config::AgentConnection;

use super::{DockerRuntime, Sandbox};
use crate::backend::{agent_err, Backend};
use crate::error::{Result, RuntimeError};
use crate::host_report::HostReport;
use crate::runtime::ReconcileReport;
use crate::slots::{AgentSandbox, AgentView, Slots};
use crate::spec::{
    Egress, Limits, ResourceUsage, SandboxHandle, SandboxId, SandboxSource, SandboxSpec, Snapshot,
    SnapshotId,
};

impl AgentSandbox for Sandbox {
    fn view(&self) -> AgentView<'_> {
        AgentView {
            id: &self.id,
            client: &self.client,
            workdir: self.workdir.as_deref(),
            created_at: self.created_at,
            agent_version: &self.agent_version,
            exit: &self.exit,
        }
    }
}

impl DockerRuntime {
    async fn destroy_sandbox(&self, sandbox: &Sandbox) {
        sandbox.mark_destroying();
        sandbox.egress.stop();
        self.limits.release(&sandbox.id);
        self.remove_container(&sandbox.container).await;
        let _ = std::fs::remove_dir_all(self.settings.run_dir(sandbox.id.as_str()));
    }

    /// Kiln's containers in the engine, by sandbox id (running or not).
    async fn labelled_containers(&self) -> Result<Vec<(String, String, bool)>> {
        let label = self.settings.sandbox_label();
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_string(), vec![label.clone()])])),
            ..Default::default()
        };
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| RuntimeError::HostNotReady(format!("cannot list containers: {e}")))?;
        Ok(containers
            .into_iter()
            .filter_map(|c| {
                let id = c.labels?.remove(&label)?;
                let name = c.names?.first()?.trim_start_matches('/').to_string();
                let running = c.state.map(|s| s.to_string()) == Some("running".into());
                Some((id, name, running))
            })
            .collect())
    }

    /// Takes over a running container of a sandbox the caller knows.
    async fn adopt(&self, id: &SandboxId, name: &str) -> Result<()> {
        let inspect = self
            .docker
            .inspect_container(name, None)
            .await
            .map_err(|e| super::engine_err(id, "cannot inspect the container", &e))?;
        let config = inspect.config.unwrap_or_default();
        // Its limits count against the budget again, whatever it says: it runs already.
        let host = inspect.host_config.unwrap_or_default();
        let disk_limit = host
            .storage_opt
            .and_then(|o| o.get("size").and_then(|s| s.parse().ok()));
        self.limits.adopt(
            id,
            &Limits {
                memory_bytes: host.memory.and_then(|m| u64::try_from(m).ok()),
                disk_bytes: disk_limit,
                ..Limits::default()
            },
        );
        let secret = config
            .env
            .unwrap_or_default()
            .into_iter()
            .find_map(|kv| kv.strip_prefix("KILN_AGENT_SECRET=").map(str::to_owned));
        let spec = SandboxSpec::image(id.clone(), String::new());
        let client = self.agent_client(&spec, name, secret).await?;
        let hello = client.connect().await.map_err(agent_err(id))?;
        let destroying = Arc::new(AtomicBool::new(false));
        let sandbox = Sandbox {
            id: id.clone(),
            container: name.to_string(),
            client,
            workdir: config.working_dir.filter(|w| !w.is_empty()),
            created_at: SystemTime::now(),
            agent_version: hello.agent_version().to_string(),
            exit: self.watch_exit(name, Arc::clone(&destroying)),
            destroying,
            disk_limit,
            egress: crate::egress_socket::EgressSlot::default(),
        };
        self.slots.insert(id, Arc::new(sandbox));
        Ok(())
    }
}

#[async_trait]
impl Backend for DockerRuntime {
    type Sandbox = Sandbox;

    fn slots(&self) -> &Slots<Sandbox> {
        &self.slots
    }

    fn reserve(&self, id: &SandboxId, limits: &Limits) -> Result<()> {
        self.limits.reserve(id, limits)
    }

    fn release(&self, id: &SandboxId) {
        // Only a reservation: a sandbox's room goes with the sandbox (destroy).
        if !self.slots.contains(id) {
            self.limits.release(id);
        }
    }

    async fn create(&self, spec: SandboxSpec) -> Result<SandboxHandle> {
        if spec.egress.is_some() && self.settings.connection != AgentConnection::Socket {
            // The server's end is a socket in a directory the container shares.
            return Err(RuntimeError::Unsupported {
                what: "egress through the server with an engine reached over TCP",
            });
        }
        self.negotiate().await?;
        let start = async {
            let image = match &spec.source {
                SandboxSource::Image(reference) => self.image(reference).await?,
                SandboxSource::Snapshot(snapshot) => self.snapshot_engine_image(snapshot).await?,
            };
            self.start(&spec, &image).await
        };
        let sandbox = self
            .slots
            .create(
                &spec.id,
                || self.limits.claim(&spec.id, &spec.limits),
                start,
                || self.limits.release(&spec.id),
            )
            .await?;
        Ok(sandbox.handle())
    }

    async fn check_image(&self, reference: &str) -> Result<()> {
        self.negotiate().await?;
        self.find_image(reference).await
    }

    async fn snapshot(&self, id: &SandboxId) -> Result<Snapshot> {
        let sandbox = self.slots.get(id)?;
        self.commit(id, &sandbox.container).await
    }

    async fn remove_snapshot(&self, snapshot_id: &SnapshotId) -> Result<()> {
        self.remove_snapshot_image(snapshot_id).await
    }

    async fn list_snapshots(&self) -> Result<Vec<SnapshotId>> {
        self.snapshot_images().await
    }

    fn attach_egress(&self, id: &SandboxId, egress: Egress) -> Result<()> {
        if self.settings.connection != AgentConnection::Socket {
            return Err(RuntimeError::Unsupported {
                what: "egress through the server with an engine reached over TCP",
            });
        }
        let sandbox = self.slots.get(id)?;
        sandbox
            .egress
            .attach(&self.settings.run_dir(id.as_str()), egress)
    }

    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        if let Some(sandbox) = self.slots.take(id)? {
            self.destroy_sandbox(&sandbox).await;
            return Ok(());
        }
        // A container this server does not hold (a crash's leftover) goes too.
        if self
            .remove_container(&self.settings.container_name(id))
            .await
        {
            let _ = std::fs::remove_dir_all(self.settings.run_dir(id.as_str()));
            Ok(())
        } else {
            Err(RuntimeError::NotFound(id.to_string()))
        }
    }

    async fn usage(&self, id: &SandboxId) -> Result<ResourceUsage> {
        let sandbox = self.slots.get(id)?;
        let options = StatsOptions {
            stream: false,
            one_shot: true,
        };
        let stats = self
            .docker
            .stats(&sandbox.container, Some(options))
            .next()
            .await
            .transpose()
            .map_err(|e| RuntimeError::NotFound(format!("{id}: {e}")))?
            .unwrap_or_default();
        let memory = stats.memory_stats.unwrap_or_default();
        Ok(ResourceUsage {
            cpu_time: stats
                .cpu_stats
                .and_then(|c| c.cpu_usage)
                .and_then(|u| u.total_usage)
                .map(std::time::Duration::from_nanos),
            // cgroup v1 reports the peak; v2 only the current use.
            memory_peak_bytes: memory.max_usage.or(memory.usage),
            disk_used_bytes: super::disk_usage::disk_used(&self.docker, &sandbox.container).await,
            pids: stats.pids_stats.and_then(|p| p.current),
            disk_limit_bytes: sandbox.disk_limit,
        })
    }

    async fn health(&self) -> HostReport {
        let mut report = HostReport::default();
        let _ = self.negotiate().await;
        match self.docker.version().await {
            Ok(version) => report.push(
                "docker engine",
                true,
                format!(
                    "Docker {} (API {})",
                    version.version.unwrap_or_default(),
                    version.api_version.unwrap_or_default()
                ),
                "",
            ),
            Err(err) => report.push(
                "docker engine",
                false,
                err.to_string(),
                "start dockerd, or set runtime.docker.host",
            ),
        }
        let (support, why) = self.limits.disk_support();
        report.push(
            "disk limits",
            true,
            match support {
                super::DiskLimitSupport::Supported => {
                    "enforced by the engine (storage_opt size)".into()
                }
                super::DiskLimitSupport::Unknown => "unknown until the first limited create".into(),
                super::DiskLimitSupport::Unsupported => format!("unsupported: {why}"),
            },
            "",
        );
        let agent = &self.settings.agent_binary;
        report.push(
            "kiln-agent",
            agent.is_file(),
            agent.display().to_string(),
            "set runtime.agent_binary or KILN_AGENT_BIN (scripts/build-agent.sh builds one)",
        );
        report
    }

    async fn reconcile(&self, known: &[SandboxId]) -> Result<ReconcileReport> {
        self.negotiate().await?;
        let mut report = ReconcileReport::default();
        let containers = self.labelled_containers().await?;
        for (id, name, running) in &containers {
            let known_id = SandboxId::new(id.as_str())
                .ok()
                .filter(|id| known.contains(id));
            let held = known_id.as_ref().is_some_and(|id| self.slots.contains(id));
            match known_id {
                Some(_) if held => {}
                Some(id) if *running => match self.adopt(&id, name).await {
                    Ok(()) => report.adopted.push(id),
                    Err(err) => {
                        tracing::warn!(sandbox = %id, error = %err, "cannot adopt container");
                        self.remove_container(name).await;
                        report.lost.push(id);
                    }
                },
                Some(id) => {
                    self.remove_container(name).await;
                    let _ = std::fs::remove_dir_all(self.settings.run_dir(id.as_str()));
                    report.lost.push(id);
                }
                None => {
                    self.remove_container(name).await;
                    let _ = std::fs::remove_dir_all(self.settings.run_dir(id));
                    report.removed.push(name.clone());
                }
            }
        }
        for id in known {
            let seen = containers.iter().any(|(c, _, _)| c == id.as_str());
            if !seen && !self.slots.contains(id) {
                report.lost.push(id.clone());
            }
        }
        Ok(report)
    }

    async fn capacity(&self) -> Option<crate::runtime::NodeCapacity> {
        Some(self.limits.capacity())
    }

    async fn shutdown(&self) -> Result<()> {
        for sandbox in self.slots.drain() {
            self.destroy_sandbox(&sandbox).await;
        }
        Ok(())
    }
}

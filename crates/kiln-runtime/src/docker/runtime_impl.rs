//! `Runtime` for the Docker backend: the table of containers and the agent calls.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bollard::query_parameters::{ListContainersOptions, StatsOptions};
use futures_util::StreamExt;
use kiln_protocol::{
    ClientError, DirListing, EditLinesRequest, ExecDone, ExecRequest, FileContent, Metadata,
    Replaced, WriteFileRequest,
};

use super::{DockerRuntime, Sandbox, Slot};
use crate::error::{Result, RuntimeError};
use crate::host_report::HostReport;
use crate::runtime::{ExecEventSink, PortStream, ReconcileReport, Runtime, SandboxExit};
use crate::spec::{
    Limits, ResourceUsage, SandboxHandle, SandboxId, SandboxInfo, SandboxSource, SandboxSpec,
    Snapshot, SnapshotId,
};

fn agent_err(id: &SandboxId) -> impl FnOnce(ClientError) -> RuntimeError + '_ {
    move |source| RuntimeError::Agent {
        id: id.to_string(),
        source,
    }
}

fn with_default_cwd(sandbox: &Sandbox, mut request: ExecRequest) -> ExecRequest {
    if request.cwd.is_none() {
        request.cwd.clone_from(&sandbox.workdir);
    }
    request
}

impl DockerRuntime {
    async fn destroy_sandbox(&self, sandbox: &Sandbox) {
        sandbox.mark_destroying();
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
        };
        self.table()
            .insert(id.clone(), Slot::Running(Arc::new(sandbox)));
        Ok(())
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn reserve(&self, id: &SandboxId, limits: &Limits) -> Result<()> {
        self.limits.reserve(id, limits)
    }

    fn release(&self, id: &SandboxId) {
        // Only a reservation: a sandbox's room goes with the sandbox (destroy).
        if !self.table().contains_key(id) {
            self.limits.release(id);
        }
    }

    async fn create(&self, spec: SandboxSpec) -> Result<SandboxHandle> {
        self.negotiate().await?;
        {
            let mut table = self.table();
            if table.contains_key(&spec.id) {
                return Err(RuntimeError::AlreadyExists(spec.id.to_string()));
            }
            table.insert(spec.id.clone(), Slot::Starting);
        }
        if let Err(err) = self.limits.claim(&spec.id, &spec.limits) {
            self.table().remove(&spec.id);
            return Err(err);
        }
        let image = match &spec.source {
            SandboxSource::Image(reference) => self.image(reference).await,
            SandboxSource::Snapshot(snapshot) => self.snapshot_engine_image(snapshot).await,
        };
        let started = match image {
            Ok(image) => self.start(&spec, &image).await,
            Err(err) => Err(err),
        };
        match started {
            Ok(sandbox) => {
                let handle = SandboxHandle {
                    id: spec.id.clone(),
                    agent_version: sandbox.agent_version.clone(),
                    created_at: sandbox.created_at,
                };
                self.table()
                    .insert(spec.id.clone(), Slot::Running(Arc::new(sandbox)));
                Ok(handle)
            }
            Err(err) => {
                self.table().remove(&spec.id);
                self.limits.release(&spec.id);
                Err(err)
            }
        }
    }

    async fn check_image(&self, reference: &str) -> Result<()> {
        self.negotiate().await?;
        self.find_image(reference).await
    }

    async fn exec(&self, id: &SandboxId, request: ExecRequest) -> Result<ExecDone> {
        let sandbox = self.get(id)?;
        let request = with_default_cwd(&sandbox, request);
        sandbox.client.exec(request).await.map_err(agent_err(id))
    }

    async fn exec_streaming(
        &self,
        id: &SandboxId,
        request: ExecRequest,
        on_event: ExecEventSink<'_>,
    ) -> Result<ExecDone> {
        let sandbox = self.get(id)?;
        let request = with_default_cwd(&sandbox, request);
        sandbox
            .client
            .exec_streaming(request, on_event)
            .await
            .map_err(agent_err(id))
    }

    async fn kill_exec(&self, id: &SandboxId, exec_id: u64, signal: Option<i32>) -> Result<()> {
        let sandbox = self.get(id)?;
        sandbox
            .client
            .kill(exec_id, signal)
            .await
            .map_err(agent_err(id))
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
            .map_err(agent_err(id))
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
            .map_err(agent_err(id))
    }

    async fn write_file(&self, id: &SandboxId, request: WriteFileRequest) -> Result<u64> {
        let sandbox = self.get(id)?;
        sandbox
            .client
            .write_file(request)
            .await
            .map_err(agent_err(id))
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
            .map_err(agent_err(id))
    }

    async fn edit_lines(&self, id: &SandboxId, request: EditLinesRequest) -> Result<Replaced> {
        let sandbox = self.get(id)?;
        sandbox
            .client
            .edit_lines(request)
            .await
            .map_err(agent_err(id))
    }

    async fn list_dir(&self, id: &SandboxId, path: &str) -> Result<DirListing> {
        let sandbox = self.get(id)?;
        sandbox.client.list_dir(path).await.map_err(agent_err(id))
    }

    async fn stat(&self, id: &SandboxId, path: &str) -> Result<Metadata> {
        let sandbox = self.get(id)?;
        sandbox.client.stat(path).await.map_err(agent_err(id))
    }

    async fn connect_port(&self, id: &SandboxId, port: u16) -> Result<PortStream> {
        let sandbox = self.get(id)?;
        sandbox
            .client
            .connect_port(port)
            .await
            .map_err(agent_err(id))
    }

    async fn snapshot(&self, id: &SandboxId) -> Result<Snapshot> {
        let sandbox = self.get(id)?;
        self.commit(id, &sandbox.container).await
    }

    async fn remove_snapshot(&self, snapshot_id: &SnapshotId) -> Result<()> {
        self.remove_snapshot_image(snapshot_id).await
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
            Some(Slot::Running(sandbox)) => {
                self.destroy_sandbox(&sandbox).await;
                Ok(())
            }
            _ => {
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
        }
    }

    async fn wait_exit(&self, id: &SandboxId) -> Result<SandboxExit> {
        let mut exit = self.get(id)?.exit.clone();
        let ended = exit.wait_for(Option::is_some).await;
        Ok(match ended {
            Ok(value) => value.clone().unwrap_or(SandboxExit::Destroyed),
            // The watcher is gone only with the runtime.
            Err(_) => SandboxExit::Destroyed,
        })
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>> {
        let mut infos: Vec<SandboxInfo> = self
            .table()
            .values()
            .filter_map(|slot| match slot {
                Slot::Running(sandbox) => Some(SandboxInfo {
                    id: sandbox.id.clone(),
                    created_at: sandbox.created_at,
                    memory_bytes: None,
                }),
                Slot::Starting => None,
            })
            .collect();
        infos.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(infos)
    }

    async fn usage(&self, id: &SandboxId) -> Result<ResourceUsage> {
        let sandbox = self.get(id)?;
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
            let held = known_id
                .as_ref()
                .is_some_and(|id| self.table().contains_key(id));
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
            if !seen && !self.table().contains_key(id) {
                report.lost.push(id.clone());
            }
        }
        Ok(report)
    }

    async fn capacity(&self) -> Option<crate::runtime::NodeCapacity> {
        Some(self.limits.capacity())
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
        for sandbox in all {
            self.destroy_sandbox(&sandbox).await;
        }
        Ok(())
    }
}

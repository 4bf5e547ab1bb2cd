//! `Runtime` for the Kubernetes backend: the table of Pods and the agent calls.

use std::sync::Arc;

use async_trait::async_trait;
use kiln_protocol::{
    ClientError, DirListing, EditLinesRequest, ExecDone, ExecRequest, FileContent, Metadata,
    Replaced, WriteFileRequest,
};
use kube::api::ListParams;

use super::pod::{node_selector, ID_ANNOTATION};
use super::retry::retry;
use super::{KubeRuntime, Sandbox, Slot};
use crate::error::{Result, RuntimeError};
use crate::host_report::HostReport;
use crate::runtime::{ExecEventSink, PortStream, ReconcileReport, Runtime, SandboxExit};
use crate::spec::{Limits, ResourceUsage, SandboxHandle, SandboxId, SandboxInfo, SandboxSpec};

fn agent_err(id: &SandboxId) -> impl FnOnce(ClientError) -> RuntimeError + '_ {
    move |source| RuntimeError::Agent {
        id: id.to_string(),
        source,
    }
}

impl KubeRuntime {
    async fn destroy_sandbox(&self, sandbox: &Sandbox) -> Result<()> {
        sandbox.mark_destroying();
        let client = self.client().await?;
        self.delete_objects(&client, &sandbox.pod).await.map(|_| ())
    }
}

#[async_trait]
impl Runtime for KubeRuntime {
    fn reserve(&self, _id: &SandboxId, _limits: &Limits) -> Result<()> {
        // The scheduler admits Pods (an unschedulable one fails its create, typed).
        Ok(())
    }

    fn release(&self, _id: &SandboxId) {}

    async fn create(&self, spec: SandboxSpec) -> Result<SandboxHandle> {
        let client = self.client().await?;
        {
            let mut table = self.table();
            if table.contains_key(&spec.id) {
                return Err(RuntimeError::AlreadyExists(spec.id.to_string()));
            }
            table.insert(spec.id.clone(), Slot::Starting);
        }
        match self.start(&client, &spec).await {
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
                Err(err)
            }
        }
    }

    async fn check_image(&self, _reference: &str) -> Result<()> {
        // Only the kubelet's pull knows; a missing image fails the create, typed.
        Ok(())
    }

    async fn exec(&self, id: &SandboxId, request: ExecRequest) -> Result<ExecDone> {
        let sandbox = self.get(id)?;
        sandbox.client.exec(request).await.map_err(agent_err(id))
    }

    async fn exec_streaming(
        &self,
        id: &SandboxId,
        request: ExecRequest,
        on_event: ExecEventSink<'_>,
    ) -> Result<ExecDone> {
        let sandbox = self.get(id)?;
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
            Some(Slot::Running(sandbox)) => self.destroy_sandbox(&sandbox).await,
            _ => {
                // A Pod this server does not hold (a crash's leftover) goes too.
                let client = self.client().await?;
                if self.delete_objects(&client, &super::pod_name(id)).await? {
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
        // Usage lives in metrics-server, not in the core API: not read (yet).
        self.get(id)?;
        Ok(ResourceUsage::default())
    }

    async fn health(&self) -> HostReport {
        let mut report = HostReport::default();
        let version = match self.client().await {
            Ok(client) => client.apiserver_version().await.map_err(|e| e.to_string()),
            Err(err) => Err(err.to_string()),
        };
        match version {
            Ok(info) => report.push(
                "kubernetes api",
                true,
                format!(
                    "Kubernetes {} (namespace {})",
                    info.git_version, self.settings.namespace
                ),
                "",
            ),
            Err(err) => report.push(
                "kubernetes api",
                false,
                err,
                "set runtime.kubernetes.kubeconfig, or run in the cluster",
            ),
        }
        report
    }

    async fn reconcile(&self, known: &[SandboxId]) -> Result<ReconcileReport> {
        let client = self.client().await?;
        let mut report = ReconcileReport::default();
        let params = ListParams::default().labels(&node_selector(&self.settings));
        let pods = self.pods(&client);
        let (listed, _) = retry(|| pods.list(&params)).await;
        let pods = listed
            .map_err(|e| RuntimeError::HostNotReady(format!("cannot list Pods: {e}")))?
            .items;
        let mut seen = Vec::new();
        for pod in &pods {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let id = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ID_ANNOTATION))
                .and_then(|id| SandboxId::new(id.as_str()).ok())
                .filter(|id| known.contains(id));
            let Some(id) = id else {
                self.delete_objects(&client, &name).await?;
                report.removed.push(name);
                continue;
            };
            seen.push(id.clone());
            if self.table().contains_key(&id) {
                continue;
            }
            match self.adopt(&client, &id, pod).await {
                Ok(sandbox) => {
                    self.table()
                        .insert(id.clone(), Slot::Running(Arc::new(sandbox)));
                    report.adopted.push(id);
                }
                Err(err) => {
                    tracing::warn!(sandbox = %id, error = %err, "cannot adopt Pod");
                    self.delete_objects(&client, &name).await?;
                    report.lost.push(id);
                }
            }
        }
        // Policies and Secrets whose Pod never came (a crash between the creates) go too.
        let (policies, secrets) = (self.policies(&client), self.secrets(&client));
        let (listed, _) = retry(|| policies.list(&params)).await;
        let mut names: Vec<String> = listed
            .map(|l| {
                l.items
                    .into_iter()
                    .filter_map(|p| p.metadata.name)
                    .collect()
            })
            .unwrap_or_default();
        let (listed, _) = retry(|| secrets.list(&params)).await;
        for secret in listed.map(|l| l.items).unwrap_or_default() {
            names.extend(secret.metadata.name);
        }
        names.sort();
        names.dedup();
        let live: Vec<String> = pods
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        for name in names {
            if !live.contains(&name) {
                self.delete_objects(&client, &name).await?;
                report.removed.push(name);
            }
        }
        for id in known {
            if !seen.contains(id) && !self.table().contains_key(id) {
                report.lost.push(id.clone());
            }
        }
        Ok(report)
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
            self.destroy_sandbox(&sandbox).await?;
        }
        Ok(())
    }
}

//! What the Kubernetes backend supplies to the shared `Runtime` (`crate::backend`): how
//! a Pod is started, adopted and deleted.

use std::sync::Arc;

use async_trait::async_trait;
use kube::api::ListParams;

use super::pod::{node_selector, ID_ANNOTATION};
use super::retry::retry;
use super::{KubeMode, KubeRuntime, Sandbox};
use crate::backend::Backend;
use crate::error::{Result, RuntimeError};
use crate::host_report::HostReport;
use crate::runtime::ReconcileReport;
use crate::slots::{AgentSandbox, AgentView, Slots};
use crate::spec::{
    Egress, Limits, ResourceUsage, SandboxHandle, SandboxId, SandboxSpec, Snapshot, SnapshotId,
};

impl AgentSandbox for Sandbox {
    fn view(&self) -> AgentView<'_> {
        AgentView {
            id: &self.id,
            client: &self.client,
            // Commands run where the agent does: the image's working directory.
            workdir: None,
            created_at: self.created_at,
            agent_version: &self.agent_version,
            exit: &self.exit,
        }
    }
}

impl KubeRuntime {
    async fn destroy_sandbox(&self, sandbox: &Sandbox) -> Result<()> {
        sandbox.mark_destroying();
        self.forget_egress(&sandbox.id);
        let client = self.client().await?;
        match &sandbox.claim {
            Some(claim) => self.delete_claim(&client, claim).await.map(|_| ()),
            None => self.delete_objects(&client, &sandbox.pod).await.map(|_| ()),
        }
    }
}

#[async_trait]
impl Backend for KubeRuntime {
    type Sandbox = Sandbox;

    fn slots(&self) -> &Slots<Sandbox> {
        &self.slots
    }

    fn reserve(&self, _id: &SandboxId, _limits: &Limits) -> Result<()> {
        // The scheduler admits Pods (an unschedulable one fails its create, typed).
        Ok(())
    }

    fn release(&self, _id: &SandboxId) {}

    async fn create(&self, spec: SandboxSpec) -> Result<SandboxHandle> {
        if spec.egress.is_some() {
            // Refused before anything is made (the listener binds on first use).
            self.egress_listener()?;
        }
        let client = self.client().await?;
        let mode = self.mode().await?;
        if spec.egress.is_some() && mode == KubeMode::AgentSandbox {
            return Err(RuntimeError::Unsupported {
                what: "egress through the server in agent-sandbox mode",
            });
        }
        let start = async {
            match mode {
                KubeMode::Pods => {
                    let image = super::claim_start::image_of(&spec)?;
                    match self.take_warm(&client, &spec, &image).await {
                        Some(warm) => Ok(warm),
                        None => self.start(&client, &spec).await,
                    }
                }
                KubeMode::AgentSandbox => self.start_claim(&client, &spec).await,
            }
        };
        // No admission here: the scheduler's (see `reserve`).
        let sandbox = self.slots.create(&spec.id, || Ok(()), start, || {}).await?;
        Ok(sandbox.handle())
    }

    async fn check_image(&self, _reference: &str) -> Result<()> {
        // Only the kubelet's pull knows; a missing image fails the create, typed.
        Ok(())
    }

    async fn snapshot(&self, _id: &SandboxId) -> Result<Snapshot> {
        Err(RuntimeError::Unsupported { what: "snapshots" })
    }

    async fn remove_snapshot(&self, _snapshot_id: &SnapshotId) -> Result<()> {
        Err(RuntimeError::Unsupported { what: "snapshots" })
    }

    fn attach_egress(&self, id: &SandboxId, egress: Egress) -> Result<()> {
        let sandbox = self.slots.get(id)?;
        // Only pods mode relays (a Pod made with an egress: its agent still dials the
        // listener, which a restarted server binds anew).
        let Some(secret) = sandbox.secret.clone().filter(|_| sandbox.claim.is_none()) else {
            return Err(RuntimeError::Unsupported {
                what: "egress through the server in agent-sandbox mode",
            });
        };
        self.egress_listener()?.register(id, secret, egress);
        Ok(())
    }

    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        self.forget_egress(id);
        if let Some(sandbox) = self.slots.take(id)? {
            return self.destroy_sandbox(&sandbox).await;
        }
        // A sandbox this server does not hold (a crash's leftover) goes too.
        let client = self.client().await?;
        let existed = match self.mode().await? {
            KubeMode::Pods => self.delete_objects(&client, &super::pod_name(id)).await?,
            KubeMode::AgentSandbox => self.delete_claim(&client, &super::claim_name(id)).await?,
        };
        if existed {
            Ok(())
        } else {
            Err(RuntimeError::NotFound(id.to_string()))
        }
    }

    async fn set_expiry(&self, id: &SandboxId, at: std::time::SystemTime) -> Result<()> {
        let sandbox = self.slots.get(id)?;
        // A Pod has no end of its own: only a claim's `shutdownTime` moves.
        let Some(claim) = &sandbox.claim else {
            return Ok(());
        };
        let client = self.client().await?;
        self.set_claim_shutdown(&client, claim, at).await
    }

    async fn usage(&self, id: &SandboxId) -> Result<ResourceUsage> {
        // Usage lives in metrics-server, not in the core API: not read (yet).
        self.slots.get(id)?;
        Ok(ResourceUsage::default())
    }

    async fn health(&self) -> HostReport {
        let mut report = HostReport::default();
        let version = match self.client().await {
            Ok(client) => client.apiserver_version().await.map_err(|e| e.to_string()),
            Err(err) => Err(err.to_string()),
        };
        match version {
            Ok(info) => {
                let mode = match self.mode().await {
                    Ok(KubeMode::Pods) => "pods mode".to_string(),
                    Ok(KubeMode::AgentSandbox) => "agent-sandbox mode".to_string(),
                    Err(err) => err.to_string(),
                };
                report.push(
                    "kubernetes api",
                    true,
                    format!(
                        "Kubernetes {} (namespace {}, {mode})",
                        info.git_version, self.settings.namespace
                    ),
                    "",
                )
            }
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
        if self.mode().await? == KubeMode::AgentSandbox {
            return self.reconcile_claims(&client, known).await;
        }
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
            if id.is_none() && self.warm.holds(&name) {
                continue;
            }
            let Some(id) = id else {
                self.delete_objects(&client, &name).await?;
                report.removed.push(name);
                continue;
            };
            seen.push(id.clone());
            if self.slots.contains(&id) {
                continue;
            }
            match self.adopt(&client, &id, pod).await {
                Ok(sandbox) => {
                    self.slots.insert(&id, Arc::new(sandbox));
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
            if !seen.contains(id) && !self.slots.contains(id) {
                report.lost.push(id.clone());
            }
        }
        Ok(report)
    }

    async fn shutdown(&self) -> Result<()> {
        for sandbox in self.slots.drain() {
            self.destroy_sandbox(&sandbox).await?;
        }
        for sandbox in self.warm.drain() {
            self.destroy_sandbox(&sandbox).await?;
        }
        Ok(())
    }
}

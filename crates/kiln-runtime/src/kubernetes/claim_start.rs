//! agent-sandbox mode: a sandbox is a SandboxClaim on its template's warm pool. The
//! template, its pool and its agent Secret are made on the first create of their
//! image and resource class; the claim's watch names the sandbox (warm or cold), the
//! Pod's watch says ready or why not, as in pods mode; deleting the claim ends it.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::core::{ApiResource, DynamicObject};
use tokio::sync::watch as channel;

use super::claim::{self, ClaimState};
use super::pod;
use super::retry::retry;
use super::start::watch_exit;
use super::watch::{watch_object, PodView, View};
use super::{api_code, api_err, KubeRuntime, Sandbox};
use crate::backend::agent_secret;
use crate::error::{Result, RuntimeError};
use crate::runtime::ReconcileReport;
use crate::spec::{SandboxId, SandboxSource, SandboxSpec};

/// What a ready claim hands over.
struct Claimed {
    agent: kiln_protocol::AsyncAgentClient,
    agent_version: String,
    /// The Sandbox's (and its Pod's) name.
    pod: String,
    view: channel::Receiver<PodView>,
    watch: tokio::task::AbortHandle,
}

/// The image of a spec Kubernetes can start; forks and workspaces cannot be.
pub(super) fn image_of(spec: &SandboxSpec) -> Result<String> {
    if spec.workspace.is_some() {
        return Err(RuntimeError::Unsupported {
            what: "workspaces (server directories) on Kubernetes",
        });
    }
    match &spec.source {
        SandboxSource::Image(reference) => Ok(reference.clone()),
        SandboxSource::Snapshot(_) => Err(RuntimeError::Unsupported {
            what: "forks of snapshots on Kubernetes",
        }),
    }
}

impl KubeRuntime {
    fn dynamic(&self, client: &kube::Client, resource: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(client.clone(), &self.settings.namespace, resource)
    }

    /// Creates `body` unless it exists (ours by name: the same content).
    async fn create_once(
        &self,
        api: &Api<DynamicObject>,
        id: &SandboxId,
        what: &str,
        body: &DynamicObject,
    ) -> Result<()> {
        let post = PostParams::default();
        match retry(|| api.create(&post, body)).await.0 {
            Ok(_) => Ok(()),
            Err(err) if api_code(&err) == Some(409) => Ok(()),
            Err(err) => Err(api_err(
                id,
                &format!("the cluster refused the {what}"),
                &err,
            )),
        }
    }

    /// The template of `spec` with its Secret and warm pool, made if missing; its name
    /// and the agent secret of its sandboxes.
    async fn ensure_template(
        &self,
        client: &kube::Client,
        spec: &SandboxSpec,
        image: &str,
    ) -> Result<(String, String)> {
        let name = claim::template_name(&self.settings, spec, image);
        if let Some(secret) = self.known_template(&name) {
            return Ok((name, secret));
        }
        let id = &spec.id;
        // Secret first: a template's Pods cannot start without it.
        let fresh = agent_secret();
        let body = pod::secret_named(&self.settings, &name, &fresh);
        let secrets = self.secrets(client);
        let post = PostParams::default();
        let secret = match retry(|| secrets.create(&post, &body)).await.0 {
            Ok(_) => fresh,
            Err(err) if api_code(&err) == Some(409) => self
                .read_secret(client, &name)
                .await
                .ok_or_else(|| api_err(id, "cannot read the template's agent Secret", &err))?,
            Err(err) => return Err(api_err(id, "the cluster refused the Secret", &err)),
        };
        let template = claim::sandbox_template(&self.settings, spec, image);
        self.create_once(
            &self.dynamic(client, &claim::templates()),
            id,
            "SandboxTemplate",
            &template,
        )
        .await?;
        let replicas = self.settings.warm_pools.get(image).copied().unwrap_or(0);
        let pool = claim::warm_pool(&self.settings, &name, replicas);
        self.create_once(
            &self.dynamic(client, &claim::warm_pools()),
            id,
            "SandboxWarmPool",
            &pool,
        )
        .await?;
        self.templates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), secret.clone());
        Ok((name, secret))
    }

    fn known_template(&self, name: &str) -> Option<String> {
        self.templates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Makes the warm pool of `spec`'s image and resource class now (agent-sandbox mode:
    /// its template and SandboxWarmPool; pods mode: starts its warm Pods), so the first
    /// sessions find warm sandboxes. Returns the class (the template's name).
    pub async fn prepare(&self, spec: &SandboxSpec) -> Result<String> {
        let client = self.client().await?;
        let image = image_of(spec)?;
        match self.mode().await? {
            super::KubeMode::Pods => Ok(self.prepare_pods(&client, spec, &image)),
            super::KubeMode::AgentSandbox => {
                Ok(self.ensure_template(&client, spec, &image).await?.0)
            }
        }
    }

    /// Claims a sandbox for `spec`; returns once its agent answers. On failure the
    /// claim is deleted (and with it whatever the cluster made for it).
    pub(super) async fn start_claim(
        &self,
        client: &kube::Client,
        spec: &SandboxSpec,
    ) -> Result<Sandbox> {
        let image = image_of(spec)?;
        let id = &spec.id;
        let (template, secret) = self.ensure_template(client, spec, &image).await?;
        let claims = self.dynamic(client, &claim::claims());
        let body = claim::sandbox_claim(
            &self.settings,
            spec,
            &template,
            SystemTime::now(),
            self.settings.sandbox_ttl,
        );
        let name = claim::claim_name(id);
        let post = PostParams::default();
        match retry(|| claims.create(&post, &body)).await {
            (Ok(_), _) => {}
            (Err(err), true) if api_code(&err) == Some(409) => {}
            (Err(err), _) if api_code(&err) == Some(409) => {
                return Err(RuntimeError::AlreadyExists(id.to_string()))
            }
            (Err(err), _) => {
                let _ = self.delete_claim(client, &name).await;
                return Err(api_err(id, "the cluster refused the SandboxClaim", &err));
            }
        }
        let (claim_view, claim_watch) = watch_object(claims, &name, true);
        let timeout = self.settings.ready_timeout;
        let waited = tokio::time::timeout(
            timeout,
            self.claimed(client, id, &image, claim_view.clone(), secret),
        )
        .await;
        claim_watch.abort();
        let failure = match waited {
            Ok(Ok(claimed)) => {
                let destroying = Arc::new(AtomicBool::new(false));
                return Ok(Sandbox {
                    id: id.clone(),
                    pod: claimed.pod,
                    claim: Some(name),
                    secret: None,
                    client: claimed.agent,
                    agent_version: claimed.agent_version,
                    created_at: SystemTime::now(),
                    exit: watch_exit(claimed.view, Arc::clone(&destroying)),
                    destroying,
                    watch: claimed.watch,
                });
            }
            Ok(Err(err)) => err,
            Err(_) => RuntimeError::StartFailed {
                id: id.to_string(),
                reason: format!(
                    "its SandboxClaim was not ready within {timeout:?} ({})",
                    describe_claim(&claim_view.borrow())
                ),
            },
        };
        let _ = self.delete_claim(client, &name).await;
        Err(failure)
    }

    /// Waits for the claim to name its sandbox, then for that sandbox's Pod (ready, or
    /// failed and why) while the claim may still fail on its own.
    async fn claimed(
        &self,
        client: &kube::Client,
        id: &SandboxId,
        image: &str,
        mut claim_view: channel::Receiver<View<DynamicObject>>,
        secret: String,
    ) -> Result<Claimed> {
        let settled = |v: &View<DynamicObject>| match v {
            View::Unknown => false,
            View::Gone => true,
            View::Present(c) => claim::claim_state(c) != ClaimState::Pending,
        };
        let state = claim_view
            .wait_for(settled)
            .await
            .map(|v| claim_outcome(&v))
            .unwrap_or(Outcome::Ended);
        let sandbox = match state {
            Outcome::Bound(sandbox) => sandbox,
            other => return Err(other.into_error(id)),
        };
        let (view, watch) = watch_object(self.pods(client), &sandbox, false);
        let failed = async {
            let outcome = claim_view
                .wait_for(|v| !matches!(claim_outcome(v), Outcome::Bound(_)))
                .await
                .map(|v| claim_outcome(&v))
                .unwrap_or(Outcome::Ended);
            outcome.into_error(id)
        };
        let ready = tokio::select! {
            ready = self.ready(id, image, view.clone(), secret) => ready,
            err = failed => Err(err),
        };
        match ready {
            Ok((agent, agent_version)) => Ok(Claimed {
                agent,
                agent_version,
                pod: sandbox,
                view,
                watch,
            }),
            Err(err) => {
                watch.abort();
                Err(err)
            }
        }
    }

    /// Deletes claim `name`; the cluster removes its Sandbox and Pod (owner
    /// references). Whether it was there.
    /// Moves claim `name`'s `shutdownTime` (a merge patch of that field alone).
    pub(super) async fn set_claim_shutdown(
        &self,
        client: &kube::Client,
        name: &str,
        at: SystemTime,
    ) -> Result<()> {
        let claims = self.dynamic(client, &claim::claims());
        let patch = kube::api::Patch::Merge(claim::shutdown_patch(at));
        let params = kube::api::PatchParams::default();
        match retry(|| claims.patch(name, &params, &patch)).await.0 {
            Ok(_) => Ok(()),
            Err(err) if api_code(&err) == Some(404) => Err(RuntimeError::NotFound(name.into())),
            Err(err) => Err(RuntimeError::HostNotReady(format!(
                "cannot move SandboxClaim {name}'s shutdownTime: {err}"
            ))),
        }
    }

    pub(super) async fn delete_claim(&self, client: &kube::Client, name: &str) -> Result<bool> {
        let claims = self.dynamic(client, &claim::claims());
        let params = DeleteParams::background();
        match retry(|| claims.delete(name, &params)).await.0 {
            Ok(_) => Ok(true),
            Err(err) if api_code(&err) == Some(404) => Ok(false),
            Err(err) => Err(RuntimeError::HostNotReady(format!(
                "cannot delete SandboxClaim {name}: {err}"
            ))),
        }
    }

    /// agent-sandbox mode's reconcile: this node's claims of unknown ids are deleted,
    /// ready ones of known ids adopted. Templates and pools stay (shared, and warm).
    pub(super) async fn reconcile_claims(
        &self,
        client: &kube::Client,
        known: &[SandboxId],
    ) -> Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        let params = ListParams::default().labels(&pod::node_selector(&self.settings));
        let claims = self.dynamic(client, &claim::claims());
        let listed = retry(|| claims.list(&params)).await.0;
        let listed = listed
            .map_err(|e| RuntimeError::HostNotReady(format!("cannot list SandboxClaims: {e}")))?
            .items;
        let mut seen = Vec::new();
        for item in &listed {
            let name = item.metadata.name.clone().unwrap_or_default();
            let id = item
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(pod::ID_ANNOTATION))
                .and_then(|id| SandboxId::new(id.as_str()).ok())
                .filter(|id| known.contains(id));
            let Some(id) = id else {
                self.delete_claim(client, &name).await?;
                report.removed.push(name);
                continue;
            };
            seen.push(id.clone());
            if self.slots.contains(&id) {
                continue;
            }
            match self.adopt_claim(client, &id, item).await {
                Ok(sandbox) => {
                    self.slots.insert(&id, Arc::new(sandbox));
                    report.adopted.push(id);
                }
                Err(err) => {
                    tracing::warn!(sandbox = %id, error = %err, "cannot adopt SandboxClaim");
                    self.delete_claim(client, &name).await?;
                    report.lost.push(id);
                }
            }
        }
        for id in known {
            if !seen.contains(id) && !self.slots.contains(id) {
                report.lost.push(id.clone());
            }
        }
        Ok(report)
    }

    async fn adopt_claim(
        &self,
        client: &kube::Client,
        id: &SandboxId,
        item: &DynamicObject,
    ) -> Result<Sandbox> {
        let not_ready = |reason: String| RuntimeError::StartFailed {
            id: id.to_string(),
            reason,
        };
        let ClaimState::Bound { sandbox } = claim::claim_state(item) else {
            return Err(not_ready("its SandboxClaim has no ready sandbox".into()));
        };
        let template = claim::claim_template(item)
            .ok_or_else(|| not_ready("its SandboxClaim names no warm pool".into()))?;
        let secret = match self.known_template(&template) {
            Some(secret) => Some(secret),
            None => self.read_secret(client, &template).await,
        };
        let pods: Api<Pod> = self.pods(client);
        let pod = retry(|| pods.get(&sandbox))
            .await
            .0
            .map_err(|e| not_ready(format!("its Pod {sandbox}: {e}")))?;
        let name = item.metadata.name.clone();
        self.adopt_pod(client, id, &pod, secret, name).await
    }
}

/// Where a claim stands, for the waits above.
enum Outcome {
    Pending,
    Bound(String),
    Failed(claim::ClaimFailure),
    Deleted,
    /// The watch ended (the runtime is going away).
    Ended,
}

impl Outcome {
    fn into_error(self, id: &SandboxId) -> RuntimeError {
        let reason = match self {
            Outcome::Failed(failure) => failure.to_string(),
            Outcome::Deleted => "its SandboxClaim was deleted from outside Kiln".into(),
            Outcome::Pending | Outcome::Bound(_) | Outcome::Ended => {
                "its SandboxClaim's watch ended before it was ready".into()
            }
        };
        RuntimeError::StartFailed {
            id: id.to_string(),
            reason,
        }
    }
}

fn claim_outcome(view: &View<DynamicObject>) -> Outcome {
    match view {
        View::Unknown => Outcome::Pending,
        View::Gone => Outcome::Deleted,
        View::Present(c) => match claim::claim_state(c) {
            ClaimState::Pending => Outcome::Pending,
            ClaimState::Bound { sandbox } => Outcome::Bound(sandbox),
            ClaimState::Failed(failure) => Outcome::Failed(failure),
        },
    }
}

/// What the claim was doing, for a timeout's message.
fn describe_claim(view: &View<DynamicObject>) -> String {
    match view {
        View::Present(c) => {
            let ready = c.data["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready")
                .map(|r| {
                    format!(
                        "Ready={} {}: {}",
                        r["status"].as_str().unwrap_or("?"),
                        r["reason"].as_str().unwrap_or(""),
                        r["message"].as_str().unwrap_or("")
                    )
                });
            let sandbox = c.data["status"]["sandbox"]["name"].as_str().unwrap_or("");
            match (ready, sandbox.is_empty()) {
                (Some(ready), _) => format!("{ready}; sandbox {sandbox:?}"),
                (None, true) => "no sandbox yet".into(),
                (None, false) => format!("sandbox {sandbox}"),
            }
        }
        View::Gone => "deleted".into(),
        View::Unknown => "the watch saw nothing yet".into(),
    }
}

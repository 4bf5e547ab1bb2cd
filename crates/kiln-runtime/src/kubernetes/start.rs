//! Starting a sandbox Pod: its objects, readiness from the watch, the agent's answer;
//! taking over a Pod at reconciliation; removing a Pod and its policy.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kiln_protocol::AsyncAgentClient;
use kube::api::{Api, DeleteParams, PostParams};
use tokio::sync::watch as channel;

use super::pod::{self, SANDBOX_CONTAINER, SECRET_KEY};
use super::retry::retry;
use super::status::{self, PodFailure};
use super::watch::{watch_pod, PodView};
use super::{api_code, api_err, KubeRuntime, Sandbox};
use crate::backend::agent_secret;
use crate::error::{Result, RuntimeError};
use crate::runtime::SandboxExit;
use crate::spec::{SandboxId, SandboxSpec};

/// How often the agent is asked once the Pod is ready (its port is open by then).
const CONNECT_POLL: Duration = Duration::from_millis(20);

impl KubeRuntime {
    pub(super) fn pods(&self, client: &kube::Client) -> Api<Pod> {
        Api::namespaced(client.clone(), &self.settings.namespace)
    }

    pub(super) fn secrets(&self, client: &kube::Client) -> Api<Secret> {
        Api::namespaced(client.clone(), &self.settings.namespace)
    }

    pub(super) fn policies(&self, client: &kube::Client) -> Api<NetworkPolicy> {
        Api::namespaced(client.clone(), &self.settings.namespace)
    }

    /// Creates the sandbox's NetworkPolicy and Pod; returns once its agent answers. On
    /// failure both are deleted.
    pub(super) async fn start(&self, client: &kube::Client, spec: &SandboxSpec) -> Result<Sandbox> {
        self.start_labelled(client, spec, None).await
    }

    /// [`Self::start`]; a warm Pod carries its class in [`super::WARM_LABEL`].
    pub(super) async fn start_labelled(
        &self,
        client: &kube::Client,
        spec: &SandboxSpec,
        warm_class: Option<&str>,
    ) -> Result<Sandbox> {
        let id = &spec.id;
        let secret = self.make_secret(client, id).await?;
        // Served before the Pod exists, so its relay's first connection finds its route.
        let egress_to = match &spec.egress {
            Some(egress) => {
                let listener = self.egress_listener()?;
                listener.register(id, secret.clone(), egress.clone());
                Some(self.egress_target(&listener))
            }
            None => None,
        };
        let started = self
            .start_objects(client, spec, secret, egress_to, warm_class)
            .await;
        if started.is_err() {
            self.forget_egress(id);
        }
        started
    }

    /// The NetworkPolicy and Pod of [`Self::start_labelled`], then readiness.
    async fn start_objects(
        &self,
        client: &kube::Client,
        spec: &SandboxSpec,
        secret: String,
        egress_to: Option<SocketAddr>,
        warm_class: Option<&str>,
    ) -> Result<Sandbox> {
        let image = super::claim_start::image_of(spec)?;
        let id = &spec.id;
        let name = pod::pod_name(id);
        let policy = pod::network_policy(&self.settings, id, egress_to);
        let (policies, pods, post) = (
            self.policies(client),
            self.pods(client),
            PostParams::default(),
        );
        let (created, _) = retry(|| policies.create(&post, &policy)).await;
        match created {
            // A leftover of ours by the same name selects the same Pod the same way.
            Ok(_) => {}
            Err(err) if api_code(&err) == Some(409) => {}
            Err(err) => {
                let _ = self.delete_objects(client, &name).await;
                return Err(api_err(id, "the cluster refused the NetworkPolicy", &err));
            }
        }
        let mut body = pod::sandbox_pod(&self.settings, spec, &image);
        if let Some(to) = egress_to {
            pod::relay_egress(&mut body, id, to);
        }
        if let Some(class) = warm_class {
            body.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(super::WARM_LABEL.to_string(), class.to_string());
        }
        let (created, retried) = retry(|| pods.create(&post, &body)).await;
        match created {
            Ok(_) => {}
            // A retry meeting the Pod its first, failed-looking try made.
            Err(err) if api_code(&err) == Some(409) && retried => {}
            Err(err) => {
                let _ = self.delete_objects(client, &name).await;
                return Err(if api_code(&err) == Some(409) {
                    RuntimeError::AlreadyExists(id.to_string())
                } else {
                    api_err(id, "the cluster refused the Pod", &err)
                });
            }
        }
        let (view, watch) = watch_pod(pods, &name);
        match self.ready(id, &image, view.clone(), secret.clone()).await {
            Ok((client_, agent_version)) => {
                let destroying = Arc::new(AtomicBool::new(false));
                Ok(Sandbox {
                    id: id.clone(),
                    pod: name,
                    claim: None,
                    client: client_,
                    secret: Some(secret),
                    agent_version,
                    created_at: SystemTime::now(),
                    exit: watch_exit(view, Arc::clone(&destroying)),
                    destroying,
                    watch,
                })
            }
            Err(err) => {
                watch.abort();
                let _ = self.delete_objects(client, &name).await;
                Err(err)
            }
        }
    }

    /// Waits for the watch to show the Pod ready (or failed), then for its agent.
    pub(super) async fn ready(
        &self,
        id: &SandboxId,
        image: &str,
        mut view: channel::Receiver<PodView>,
        secret: String,
    ) -> Result<(AsyncAgentClient, String)> {
        let timeout = self.settings.ready_timeout;
        let deadline = Instant::now() + timeout;
        let timed_out = tokio::time::timeout(
            timeout,
            view.wait_for(|v| match v {
                PodView::Unknown => false,
                PodView::Gone => true,
                PodView::Present(pod) => status::is_ready(pod) || status::failure(pod).is_some(),
            }),
        )
        .await
        .is_err();
        if timed_out {
            return Err(RuntimeError::StartFailed {
                id: id.to_string(),
                reason: format!(
                    "its Pod was not ready within {timeout:?} ({})",
                    describe(&view.borrow())
                ),
            });
        }
        let current = view.borrow().clone();
        let PodView::Present(pod) = current else {
            return Err(failed(id, image, PodFailure::Deleted));
        };
        if let Some(failure) = status::failure(&pod) {
            return Err(failed(id, image, failure));
        }
        if !status::is_ready(&pod) {
            // The watch ended without an answer (the runtime is going away).
            return Err(RuntimeError::StartFailed {
                id: id.to_string(),
                reason: format!(
                    "its Pod's watch ended before it was ready ({})",
                    describe(&view.borrow())
                ),
            });
        }
        let ip = status::pod_ip(&pod).ok_or_else(|| RuntimeError::StartFailed {
            id: id.to_string(),
            reason: "its Pod is ready without an address".into(),
        })?;
        let addr = SocketAddr::new(ip, self.settings.agent_port);
        connect(id, AsyncAgentClient::tcp(addr, Some(secret)), deadline).await
    }

    /// Takes over a ready Pod of a sandbox the caller knows (reconciliation).
    pub(super) async fn adopt(
        &self,
        client: &kube::Client,
        id: &SandboxId,
        pod: &Pod,
    ) -> Result<Sandbox> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let secret = self.read_secret(client, &name).await;
        self.adopt_pod(client, id, pod, secret, None).await
    }

    /// Takes over a ready Pod whose agent has `secret`; `claim` is the SandboxClaim
    /// behind it (agent-sandbox mode).
    pub(super) async fn adopt_pod(
        &self,
        client: &kube::Client,
        id: &SandboxId,
        pod: &Pod,
        secret: Option<String>,
        claim: Option<String>,
    ) -> Result<Sandbox> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if !status::is_ready(pod) {
            return Err(RuntimeError::StartFailed {
                id: id.to_string(),
                reason: "its Pod is not ready".into(),
            });
        }
        let ip = status::pod_ip(pod).ok_or_else(|| RuntimeError::StartFailed {
            id: id.to_string(),
            reason: "its Pod has no address".into(),
        })?;
        let addr = SocketAddr::new(ip, self.settings.agent_port);
        let deadline = Instant::now() + Duration::from_secs(5);
        let (agent, agent_version) =
            connect(id, AsyncAgentClient::tcp(addr, secret.clone()), deadline).await?;
        let (view, watch) = watch_pod(self.pods(client), &name);
        let destroying = Arc::new(AtomicBool::new(false));
        Ok(Sandbox {
            id: id.clone(),
            pod: name,
            claim,
            client: agent,
            secret,
            agent_version,
            created_at: SystemTime::now(),
            exit: watch_exit(view, Arc::clone(&destroying)),
            destroying,
            watch,
        })
    }

    /// Creates the sandbox's Secret with a fresh secret and returns it; a leftover of
    /// the same name (a crashed create) is used as it is.
    async fn make_secret(&self, client: &kube::Client, id: &SandboxId) -> Result<String> {
        let secrets = self.secrets(client);
        let fresh = agent_secret();
        let body = pod::agent_secret(&self.settings, id, &fresh);
        let post = PostParams::default();
        let (created, _) = retry(|| secrets.create(&post, &body)).await;
        match created {
            Ok(_) => Ok(fresh),
            Err(err) if api_code(&err) == Some(409) => self
                .read_secret(client, &pod::pod_name(id))
                .await
                .ok_or_else(|| api_err(id, "cannot read the agent's Secret", &err)),
            Err(err) => Err(api_err(id, "the cluster refused the Secret", &err)),
        }
    }

    /// The agent's secret from Secret `name`.
    pub(super) async fn read_secret(&self, client: &kube::Client, name: &str) -> Option<String> {
        let secrets = self.secrets(client);
        let (found, _) = retry(|| secrets.get(name)).await;
        let bytes = found.ok()?.data?.remove(SECRET_KEY)?.0;
        String::from_utf8(bytes).ok()
    }

    /// Deletes Pod, NetworkPolicy and Secret `name` at once (no grace: the sandbox is thrown
    /// away); whether the Pod was there.
    pub(super) async fn delete_objects(&self, client: &kube::Client, name: &str) -> Result<bool> {
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        let (pods, policies) = (self.pods(client), self.policies(client));
        let (deleted, _) = retry(|| pods.delete(name, &now)).await;
        let existed = match deleted {
            Ok(_) => true,
            Err(err) if api_code(&err) == Some(404) => false,
            Err(err) => {
                return Err(RuntimeError::HostNotReady(format!(
                    "cannot delete Pod {name}: {err}"
                )))
            }
        };
        let (deleted, _) = retry(|| policies.delete(name, &now)).await;
        if let Err(err) = deleted {
            if api_code(&err) != Some(404) {
                tracing::warn!(policy = name, error = %err, "cannot delete NetworkPolicy");
            }
        }
        let secrets = self.secrets(client);
        let (deleted, _) = retry(|| secrets.delete(name, &now)).await;
        if let Err(err) = deleted {
            if api_code(&err) != Some(404) {
                tracing::warn!(secret = name, error = %err, "cannot delete Secret");
            }
        }
        Ok(existed)
    }
}

/// Asks the agent until it answers or `deadline` passes; an agent's refusal (a wrong
/// secret) fails at once.
pub(super) async fn connect(
    id: &SandboxId,
    client: AsyncAgentClient,
    deadline: Instant,
) -> Result<(AsyncAgentClient, String)> {
    let client = client.with_request_timeout(Duration::from_secs(2));
    loop {
        match client.connect().await {
            Ok(conn) => {
                let version = conn.agent_version().to_string();
                let client = client.with_request_timeout(kiln_protocol::DEFAULT_REQUEST_TIMEOUT);
                return Ok((client, version));
            }
            Err(err) if err.agent_error().is_some() || Instant::now() >= deadline => {
                return Err(RuntimeError::Agent {
                    id: id.to_string(),
                    source: err,
                })
            }
            Err(_) => tokio::time::sleep(CONNECT_POLL).await,
        }
    }
}

/// A Pod failure as the runtime's error: the sandbox's own image not pullable is
/// `ImageNotFound` (the caller's to fix), the rest `StartFailed` with why.
pub(super) fn failed(id: &SandboxId, image: &str, failure: PodFailure) -> RuntimeError {
    match &failure {
        PodFailure::ImagePull { container, .. } if container == SANDBOX_CONTAINER => {
            RuntimeError::ImageNotFound {
                reference: image.to_string(),
                reason: failure.to_string(),
            }
        }
        _ => RuntimeError::StartFailed {
            id: id.to_string(),
            reason: failure.to_string(),
        },
    }
}

/// What the Pod was doing, for a timeout's message.
pub(super) fn describe(view: &PodView) -> String {
    match view {
        PodView::Unknown => "the watch saw nothing yet".into(),
        PodView::Gone => "deleted".into(),
        PodView::Present(pod) => {
            let status = pod.status.clone().unwrap_or_default();
            format!(
                "phase {}{}",
                status.phase.unwrap_or_else(|| "unknown".into()),
                status.message.map(|m| format!(": {m}")).unwrap_or_default()
            )
        }
    }
}

/// Resolves to how the sandbox ended once its Pod fails or is gone.
pub(super) fn watch_exit(
    mut view: channel::Receiver<PodView>,
    destroying: Arc<AtomicBool>,
) -> channel::Receiver<Option<SandboxExit>> {
    let (tx, rx) = channel::channel(None);
    tokio::spawn(async move {
        let ended = view
            .wait_for(|v| match v {
                PodView::Gone => true,
                PodView::Present(pod) => status::failure(pod).is_some(),
                PodView::Unknown => false,
            })
            .await
            .ok()
            .map(|v| match &*v {
                PodView::Present(pod) => status::failure(pod),
                _ => Some(PodFailure::Deleted),
            });
        let exit = match ended {
            Some(Some(failure)) if !destroying.load(Ordering::SeqCst) => SandboxExit::Died {
                reason: failure.to_string(),
            },
            // Destroyed, or the watch ended with the sandbox's record.
            _ => SandboxExit::Destroyed,
        };
        tx.send_replace(Some(exit));
    });
    rx
}

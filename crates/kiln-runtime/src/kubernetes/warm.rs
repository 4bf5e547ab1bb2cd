//! Warm Pods in pods mode: `warm_pools[image]` Pods per image and resource class
//! started ahead (agent injected, answering, each with its own Secret and policy),
//! taken by a create that fits (same class, no env of its own: a Pod's env is fixed),
//! and refilled in the background. A taken Pod's id annotation is patched to its
//! sandbox's, so reconciliation knows it; unclaimed warm Pods are labelled
//! `kiln.dev/warm=<class>` and live only as long as this server (a restarted one deletes
//! them as unknown, then fills its pools again).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::pod::ID_ANNOTATION;
use super::retry::retry;
use super::{claim, KubeRuntime, Sandbox};
use crate::error::Result;
use crate::spec::{SandboxId, SandboxSpec};

/// The label of an unclaimed warm Pod: its class.
pub const WARM_LABEL: &str = "kiln.dev/warm";

/// The warm Pods of one runtime, by class ([`claim::template_name`]).
#[derive(Debug, Default)]
pub(super) struct WarmPools {
    ready: Mutex<HashMap<String, Vec<Sandbox>>>,
    /// Starts under way, by class.
    filling: Mutex<HashMap<String, usize>>,
    next: AtomicU64,
}

impl WarmPools {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ready warm Pods of `class`.
    pub(super) fn ready(&self, class: &str) -> usize {
        Self::lock(&self.ready).get(class).map_or(0, Vec::len)
    }

    /// Whether Pod `name` is an unclaimed warm one of this runtime.
    pub(super) fn holds(&self, name: &str) -> bool {
        Self::lock(&self.ready)
            .values()
            .flatten()
            .any(|s| s.pod == name)
    }

    /// A live warm Pod of `class`, out of the pool; dead ones are dropped on the way.
    fn take(&self, class: &str) -> Option<Sandbox> {
        let mut ready = Self::lock(&self.ready);
        let pool = ready.get_mut(class)?;
        while let Some(sandbox) = pool.pop() {
            if sandbox.exit.borrow().is_none() {
                return Some(sandbox);
            }
        }
        None
    }

    /// Every warm Pod, out of the pools (shutdown).
    pub(super) fn drain(&self) -> Vec<Sandbox> {
        Self::lock(&self.ready)
            .drain()
            .flat_map(|(_, pool)| pool)
            .collect()
    }
}

impl KubeRuntime {
    /// The size configured for `spec`'s image, and its class; `None` when it has no
    /// pool or cannot use one (its own env).
    fn warm_class(&self, spec: &SandboxSpec, image: &str) -> Option<(String, usize)> {
        let size = *self.settings.warm_pools.get(image)?;
        (size > 0 && spec.env.is_empty() && spec.egress.is_none()).then(|| {
            (
                claim::template_name(&self.settings, spec, image),
                size as usize,
            )
        })
    }

    /// A warm Pod for `spec`, made its own (id annotation and label patched), and the
    /// pool refilled; `None`: start one the usual way.
    pub(super) async fn take_warm(
        &self,
        client: &kube::Client,
        spec: &SandboxSpec,
        image: &str,
    ) -> Option<Sandbox> {
        let (class, size) = self.warm_class(spec, image)?;
        let taken = self.warm.take(&class);
        self.fill(client, spec, image, &class, size);
        let mut sandbox = taken?;
        let patch = json!({"metadata": {
            "annotations": {ID_ANNOTATION: spec.id.to_string()},
            "labels": {WARM_LABEL: null},
        }});
        let pods = self.pods(client);
        let params = PatchParams::default();
        let patch = Patch::Merge(&patch);
        let patched = retry(|| pods.patch(&sandbox.pod, &params, &patch)).await.0;
        if let Err(err) = patched {
            tracing::warn!(pod = %sandbox.pod, error = %err, "cannot claim a warm Pod");
            sandbox.mark_destroying();
            let _ = self.delete_objects(client, &sandbox.pod).await;
            return None;
        }
        sandbox.id = spec.id.clone();
        sandbox.created_at = std::time::SystemTime::now();
        Some(sandbox)
    }

    /// Starts warm Pods of `spec`'s image and class in the background, up to its size.
    pub(super) fn fill(
        &self,
        client: &kube::Client,
        spec: &SandboxSpec,
        image: &str,
        class: &str,
        size: usize,
    ) {
        let missing = {
            let mut filling = WarmPools::lock(&self.warm.filling);
            let under_way = filling.entry(class.to_string()).or_default();
            let missing = size.saturating_sub(self.warm.ready(class) + *under_way);
            *under_way += missing;
            missing
        };
        if missing == 0 {
            return;
        }
        let worker = self.sibling(client);
        let mut template = spec.clone();
        template.env.clear();
        let (class, image) = (class.to_string(), image.to_string());
        tokio::spawn(async move {
            for _ in 0..missing {
                let n = worker.warm.next.fetch_add(1, Ordering::Relaxed);
                let warm_id = format!("warm-{}-{n}", class.trim_start_matches("kiln-tpl-"));
                let Ok(id) = SandboxId::new(warm_id) else {
                    break;
                };
                template.id = id;
                let started = worker.start_warm(&template, &class).await;
                WarmPools::lock(&worker.warm.filling)
                    .entry(class.clone())
                    .and_modify(|n| *n = n.saturating_sub(1));
                match started {
                    Ok(sandbox) => WarmPools::lock(&worker.warm.ready)
                        .entry(class.clone())
                        .or_default()
                        .push(sandbox),
                    Err(err) => {
                        tracing::warn!(image, error = %err, "cannot start a warm Pod");
                        WarmPools::lock(&worker.warm.filling).remove(&class);
                        break;
                    }
                }
            }
        });
    }

    async fn start_warm(&self, spec: &SandboxSpec, class: &str) -> Result<Sandbox> {
        let client = self.client().await?;
        self.start_labelled(&client, spec, Some(class)).await
    }

    /// pods mode's `prepare`: fills `spec`'s pool now.
    pub(super) fn prepare_pods(
        &self,
        client: &kube::Client,
        spec: &SandboxSpec,
        image: &str,
    ) -> String {
        let class = claim::template_name(&self.settings, spec, image);
        if let Some((class, size)) = self.warm_class(spec, image) {
            self.fill(client, spec, image, &class, size);
        }
        class
    }

    /// Warm Pods of `class` ready to be taken (pods mode).
    pub fn warm_ready(&self, class: &str) -> usize {
        self.warm.ready(class)
    }

    /// A runtime on the same client, settings and pools, owned by a background task.
    fn sibling(&self, client: &kube::Client) -> KubeRuntime {
        KubeRuntime {
            settings: self.settings.clone(),
            client: tokio::sync::OnceCell::new_with(Some(client.clone())),
            mode: tokio::sync::OnceCell::new(),
            templates: Mutex::default(),
            slots: Default::default(),
            warm: Arc::clone(&self.warm),
            // Warm Pods have no egress (a create with one starts cold).
            egress: Mutex::default(),
        }
    }
}

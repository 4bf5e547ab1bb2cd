//! The node registry (issue 12; ARCHITECTURE.md, "Nodes on PostgreSQL"). Every
//! `kiln serve` on PostgreSQL registers a `nodes` row and heartbeats it; on each beat it
//! also marks down the nodes whose last heartbeat is older than `cluster.down_after_ms`
//! (one conditional UPDATE: each death is seen by exactly one node) and ends their live
//! sessions `node_lost`. A node that finds itself marked down while still running drops
//! what the store no longer has live and registers again. On SQLite a server is the only
//! node: nothing is registered and the admin API says so. Every instant compared here is
//! the database's clock (`Store::database_now`, `now()` in the registry's SQL), so the
//! nodes' own clocks may disagree without marking a live node down.
mod metrics;
mod placement;

pub use metrics::ForwardOutcome;
pub use placement::place;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kiln_config::{ClusterConfig, Config};
use kiln_store::{NodeBeat, NodeRecord, NodeRegistration, NodeStatus, Store, User};

use crate::agent_jobs::AgentJobService;
use crate::error::{ServiceError, ServiceResult};
use crate::sessions::SessionService;
use metrics::ClusterMetrics;

/// What the admin API tells about one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeMetrics {
    pub node: NodeRecord,
    /// How long ago its last heartbeat was, at the time of asking.
    pub heartbeat_age_ms: i64,
    pub free_sessions: u64,
}

pub struct ClusterService {
    store: Arc<dyn Store>,
    sessions: Arc<SessionService>,
    /// A lost node's agent jobs end with its sessions.
    agent_jobs: Arc<AgentJobService>,
    config: ClusterConfig,
    /// This server's registration, or why it has none (SQLite, no sandbox backend).
    me: Result<NodeRegistration, String>,
    stopped: AtomicBool,
    metrics: ClusterMetrics,
    /// The node's image store, whose images it reports with its heartbeat.
    images: Option<kiln_image::ImageStore>,
    /// Its references as last read, and when.
    stored_images: tokio::sync::Mutex<(Option<std::time::Instant>, Vec<String>)>,
}

/// How often the image store is listed again for the heartbeat (a directory read).
const IMAGE_LIST_EVERY: Duration = Duration::from_secs(10);

impl ClusterService {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        sessions: Arc<SessionService>,
        agent_jobs: Arc<AgentJobService>,
        config: &Config,
        node_id: Option<&str>,
        images: Option<kiln_image::ImageStore>,
    ) -> Self {
        let me = if store.backend() != "postgres" {
            Err(
                "this server stores on SQLite and is a single node; the node registry \
                 needs PostgreSQL (database_url = \"postgres://…\")"
                    .to_string(),
            )
        } else if let Some(id) = node_id {
            Ok(NodeRegistration {
                node_id: id.to_string(),
                address: config.cluster.advertise_url.clone().unwrap_or_else(|| {
                    let scheme = if config.server.tls() { "https" } else { "http" };
                    format!("{scheme}://{}", config.listen)
                }),
                backend: serde_json::to_value(config.runtime.backend)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                max_sessions: config.cluster.max_sessions,
                memory_mib: config.runtime.memory_budget_mib.unwrap_or(0),
                disk_mib: config.runtime.max_disk_mib,
            })
        } else {
            Err("this server runs no sandbox backend of its own and is no node".to_string())
        };
        Self {
            metrics: ClusterMetrics::new(sessions.metrics()),
            store,
            sessions,
            agent_jobs,
            config: config.cluster.clone(),
            me,
            stopped: AtomicBool::new(false),
            images,
            stored_images: Default::default(),
        }
    }

    /// What the heartbeat reports: the images this node started sandboxes from lately,
    /// then the rest of its image store's, at most `MAX_NODE_IMAGES`.
    async fn images_present(&self) -> Vec<String> {
        let mut list = self.sessions.recent_images();
        if let Some(store) = &self.images {
            let mut stored = self.stored_images.lock().await;
            if stored.0.is_none_or(|at| at.elapsed() >= IMAGE_LIST_EVERY) {
                let store = store.clone();
                let listed = tokio::task::spawn_blocking(move || store.list()).await;
                stored.1 = match listed {
                    Ok(Ok(images)) => images.iter().map(|i| i.reference().to_string()).collect(),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "cannot list the image store for the heartbeat");
                        Vec::new()
                    }
                    Err(_) => Vec::new(),
                };
                stored.0 = Some(std::time::Instant::now());
            }
            for reference in &stored.1 {
                if list.len() >= kiln_store::MAX_NODE_IMAGES {
                    break;
                }
                if !list.contains(reference) {
                    list.push(reference.clone());
                }
            }
        }
        list
    }

    /// This server's node id, when it is a registered node.
    pub fn node_id(&self) -> Option<&str> {
        self.me.as_ref().ok().map(|me| me.node_id.as_str())
    }

    /// Registers this node (after start-up recovery) and starts its heartbeat.
    pub async fn start(self: &Arc<Self>) -> ServiceResult<()> {
        let Ok(me) = &self.me else { return Ok(()) };
        let node = self.store.register_node(me).await?;
        tracing::info!(node = %node.node_id, address = %node.address, status = node.status.as_str(),
            "registered in the node registry");
        let weak = Arc::downgrade(self);
        let every = Duration::from_millis(self.config.heartbeat_interval_ms);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { break };
                if this.stopped.load(Ordering::Acquire) {
                    break;
                }
                if let Err(e) = this.beat().await {
                    tracing::warn!(error = %e, "node heartbeat failed");
                }
            }
        });
        Ok(())
    }

    /// Stops heartbeating (a graceful stop): the row stays; if this node does not come
    /// back within `down_after_ms`, another marks it down and ends its sessions, billed
    /// up to the last heartbeat the stop recorded.
    pub fn shutdown(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    /// One heartbeat: this node's (with its live sessions, images and figures), then the
    /// reclaim of nodes that stopped, then the heartbeat ages `/metrics` shows.
    pub async fn beat(&self) -> ServiceResult<()> {
        let Ok(me) = &self.me else { return Ok(()) };
        let beat = NodeBeat {
            live_sessions: u64::try_from(self.sessions.running_count()).unwrap_or(u64::MAX),
            images: self.images_present().await,
            stats: self.sessions.node_stats().await,
        };
        if self
            .store
            .heartbeat_node(&me.node_id, &beat)
            .await?
            .is_none()
        {
            // Marked down while alive: its sessions and jobs are ended elsewhere. The node
            // that marked it may still be ending them, so finish that here first
            // (idempotent): otherwise a job it had not yet ended would be kept, and run on
            // after this node registers again, though the cluster ends it.
            if let Some(node) = self.store.get_node(&me.node_id).await? {
                if node.status == NodeStatus::Down {
                    self.reclaim(&node).await;
                }
            }
            let dropped = self.sessions.drop_sessions_no_longer_live().await?;
            let jobs = self.agent_jobs.drop_jobs_no_longer_running().await?;
            tracing::warn!(node = %me.node_id, dropped, jobs,
                "this node had been marked down; it dropped what is no longer its own and registers again");
            self.store.register_node(me).await?;
        }
        for node in self
            .store
            .mark_stale_nodes_down(self.config.down_after_ms)
            .await?
        {
            self.reclaim(&node).await;
        }
        let now = self.store.database_now().await?;
        for node in self.store.list_nodes().await? {
            self.metrics
                .heartbeat_age(&node.node_id, now - node.last_heartbeat_at);
        }
        Ok(())
    }

    /// Ends a node's sessions as of the moment it was marked down (the database's clock),
    /// and its agent jobs.
    async fn reclaim(&self, node: &NodeRecord) {
        let now = node.down_at.unwrap_or_else(Utc::now);
        match self.sessions.reclaim_lost_node(&node.node_id, now).await {
            Ok(ended) => tracing::warn!(node = %node.node_id, sessions = ended,
                last_heartbeat = %node.last_heartbeat_at, "node marked down; its sessions ended node_lost"),
            Err(e) => tracing::error!(node = %node.node_id, error = %e,
                "cannot end the sessions of a node marked down"),
        }
        match self.agent_jobs.reclaim_lost_node(&node.node_id).await {
            Ok(0) => {}
            Ok(ended) => tracing::warn!(node = %node.node_id, jobs = ended,
                "node marked down; its agent jobs ended in error"),
            Err(e) => tracing::error!(node = %node.node_id, error = %e,
                "cannot end the agent jobs of a node marked down"),
        }
    }

    fn registry(&self, actor: &User) -> ServiceResult<()> {
        if !actor.is_admin {
            return Err(ServiceError::Forbidden(
                "only an admin may see or change servers".into(),
            ));
        }
        match &self.me {
            Err(why) if self.store.backend() != "postgres" => Err(ServiceError::Refused {
                code: "single_node",
                message: why.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Every node, by id (admins).
    pub async fn list(&self, actor: &User) -> ServiceResult<Vec<NodeRecord>> {
        self.registry(actor)?;
        Ok(self.store.list_nodes().await?)
    }

    /// One node (admins).
    pub async fn get(&self, actor: &User, node_id: &str) -> ServiceResult<NodeRecord> {
        self.registry(actor)?;
        self.store
            .get_node(node_id)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("server {node_id}")))
    }

    /// No new sessions are placed on the node; its live ones run on until they end.
    pub async fn drain(&self, actor: &User, node_id: &str) -> ServiceResult<NodeRecord> {
        let node = self.get(actor, node_id).await?;
        if node.status == NodeStatus::Down {
            return Err(ServiceError::Conflict(format!(
                "server {node_id} is down: only a running server can drain"
            )));
        }
        self.set_status(actor, node_id, NodeStatus::Draining).await
    }

    /// Sets a node's status (admins). `down` ends its live sessions `node_lost` at once
    /// (the operator knows the machine is gone); a node that is in fact running drops
    /// them at its next heartbeat and registers again.
    pub async fn set_status(
        &self,
        actor: &User,
        node_id: &str,
        status: NodeStatus,
    ) -> ServiceResult<NodeRecord> {
        self.registry(actor)?;
        let (changed, node) = self
            .store
            .set_node_status(node_id, status)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("server {node_id}")))?;
        if changed && status == NodeStatus::Down {
            self.reclaim(&node).await;
        }
        Ok(node)
    }

    /// The node's figures as of its last heartbeat (admins).
    pub async fn metrics(&self, actor: &User, node_id: &str) -> ServiceResult<NodeMetrics> {
        let node = self.get(actor, node_id).await?;
        let now = self.store.database_now().await?;
        Ok(NodeMetrics {
            heartbeat_age_ms: (now - node.last_heartbeat_at).num_milliseconds(),
            free_sessions: node.free_sessions(),
            node,
        })
    }
}

/// Which node answers a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This one.
    Local,
    /// The node at this address (`cluster.advertise_url` of it).
    Remote(String),
}

impl ClusterService {
    /// The secret of the internal hop, when this node forwards (a registered node with
    /// `cluster.secret` set).
    pub fn forwarding_secret(&self) -> Option<&str> {
        self.me.as_ref().ok()?;
        self.config.secret.as_ref().map(|s| s.expose())
    }

    /// Where a new session goes: [`place`] over the registry, sampled at random,
    /// preferring a node that has `image` (the session's image reference, when known).
    /// Every node full (or draining, or down) is a 429 with `Retry-After`.
    pub async fn place_create(&self, image: Option<&str>) -> ServiceResult<Route> {
        let Ok(me) = &self.me else {
            return Ok(Route::Local);
        };
        let nodes = self.store.list_nodes().await?;
        let fresh_after = self.store.database_now().await?
            - chrono::Duration::milliseconds(
                i64::try_from(self.config.down_after_ms).unwrap_or(i64::MAX),
            );
        let chosen = {
            use rand::Rng;
            let mut rng = rand::thread_rng();
            place(&nodes, Some(&me.node_id), fresh_after, image, |n| {
                rng.gen_range(0..n.max(1))
            })
            .cloned()
        };
        match chosen {
            Some(node) if node.node_id == me.node_id => {
                self.metrics.placed(&node.node_id, "local");
                Ok(Route::Local)
            }
            Some(node) => {
                self.metrics.placed(&node.node_id, "remote");
                Ok(Route::Remote(node.address))
            }
            None => {
                self.metrics.placed("", "refused");
                Err(ServiceError::TooManyAttempts {
                    message: "every server is full, draining or down; try again later".into(),
                    retry_after_secs: (self.config.heartbeat_interval_ms / 1000).max(1),
                })
            }
        }
    }

    /// Whether a long-poll for another node's session (a session, interaction or
    /// verification job read) is answered by the node that received it: its waiters wake
    /// on the owner's changes through the store's change feed (PostgreSQL NOTIFY).
    pub fn answers_long_polls_here(&self) -> bool {
        self.sessions.long_polls_wake_across_nodes()
    }

    /// Counts a request another node should answer (`/metrics`).
    pub fn count_forward(&self, outcome: ForwardOutcome) {
        self.metrics.forwarded(outcome);
    }

    /// Which node answers for a session: the node it was placed on while that node is
    /// not down; this one otherwise (the store has the answer: it ended `node_lost`).
    pub async fn owner_of(&self, session_id: &str) -> ServiceResult<Route> {
        let Ok(me) = &self.me else {
            return Ok(Route::Local);
        };
        Ok(route_to(me, self.store.session_owner(session_id).await?))
    }

    /// Which node answers for an agent job's files (its result archive): the node that
    /// ran it, unless that is this one or it is down (then this one says why not).
    pub async fn owner_of_agent_job(&self, job_id: &str) -> ServiceResult<Route> {
        let Ok(me) = &self.me else {
            return Ok(Route::Local);
        };
        Ok(route_to(me, self.store.agent_job_owner(job_id).await?))
    }
}

/// Another node that is not down answers; this one otherwise.
fn route_to(me: &NodeRegistration, owner: Option<NodeRecord>) -> Route {
    match owner {
        Some(node) if node.node_id != me.node_id && node.status != NodeStatus::Down => {
            Route::Remote(node.address)
        }
        _ => Route::Local,
    }
}

//! The one place the server's sandbox backend lives: built (or found unavailable) once
//! by the composition root and shared by sessions, verification and agent jobs.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kiln_config::{Config, RuntimeConfig};
use kiln_runtime::node::{DeadNode, NodeLease};
use kiln_runtime::{Limits, Runtime};

/// The sandbox backend, when this server can make sandboxes.
pub struct Sandboxes {
    state: Result<Available, String>,
    /// Which node of its data directory this process is (ARCHITECTURE.md, "Nodes on one
    /// data directory"); `None` for a backend the caller supplied, which owns everything.
    node: Option<Node>,
}

/// This process's node, and what it needs to tear down a dead node's sandboxes.
struct Node {
    id: String,
    primary: bool,
    lease: Mutex<Option<NodeLease>>,
    runtime: RuntimeConfig,
    data_dir: PathBuf,
    images_dir: PathBuf,
}

impl Node {
    fn new(config: &Config, lease: NodeLease) -> Self {
        Node {
            id: lease.id().to_string(),
            primary: lease.is_primary(),
            lease: Mutex::new(Some(lease)),
            runtime: config.runtime.clone(),
            data_dir: config.data_dir.clone(),
            images_dir: config.images_dir(),
        }
    }
}

/// Whose work a stored row is (`Sandboxes::owner_of_work`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkOwner {
    /// This process's node's: a restart cut it off.
    Mine,
    /// A node the registry has `down`, named.
    Lost(String),
    /// Another node's, which is alive (or not in the registry): its process runs it.
    Live,
}

/// A backend ready for use, with the limits its sandboxes get and where they run.
pub struct Available {
    pub runtime: Arc<dyn Runtime>,
    pub limits: Limits,
    pub location: String,
    /// The largest disk a sample may ask for (`runtime.max_disk_mib`), in bytes.
    pub max_disk_bytes: u64,
}

impl Sandboxes {
    /// The backend the configuration names, or why this host cannot run it, as the data
    /// directory's own node (`kiln serve`).
    pub fn open(config: &Config) -> Self {
        // No backend, no node (and nothing written for one).
        if config.runtime.backend == kiln_config::RuntimeBackend::None {
            return Sandboxes::unavailable("runtime.backend is \"none\"");
        }
        match NodeLease::primary(&config.data_dir) {
            Ok(lease) => Self::open_node(config, lease),
            Err(e) => Sandboxes::unavailable(format!(
                "cannot read or write {}: {e}",
                config.data_dir.join("node-id").display()
            )),
        }
    }

    /// [`Sandboxes::open`] as a node of its own beside the data directory's (a one-off
    /// process such as `kiln datasets validate`): its sandboxes, its runtime root, and a
    /// lease that tells others when it is gone.
    pub fn open_ephemeral(config: &Config, label: &str) -> Self {
        match NodeLease::ephemeral(&config.data_dir, label) {
            Ok(lease) => Self::open_node(config, lease),
            Err(e) => Sandboxes::unavailable(format!(
                "cannot make a node under {}: {e}",
                config.data_dir.join("nodes").display()
            )),
        }
    }

    fn open_node(config: &Config, lease: NodeLease) -> Self {
        let state = kiln_runtime::open_at(
            &config.runtime,
            lease.runtime_root(),
            &config.data_dir,
            &config.images_dir(),
        )
        .map(|opened| Available {
            runtime: opened.runtime,
            limits: opened.limits,
            location: opened.location,
            max_disk_bytes: config.runtime.max_disk_mib.saturating_mul(1 << 20),
        })
        .map_err(|unavailable| unavailable.reason);
        Sandboxes {
            state,
            node: Some(Node::new(config, lease)),
        }
    }

    /// This process's node id, which its sessions record; `None` with a supplied backend.
    pub fn node_id(&self) -> Option<&str> {
        self.node.as_ref().map(|n| n.id.as_str())
    }

    /// Whether this process is a one-off node beside the data directory's server: it
    /// recovers only its own sessions and leaves every other area's state (execs, agent
    /// jobs, base images, port forwards, webhook deliveries) to the server.
    pub fn is_ephemeral(&self) -> bool {
        self.node.as_ref().is_some_and(|n| !n.primary)
    }

    /// Whether a session stored with `node_id` is this process's to recover and stop:
    /// its own node's, and those stored before nodes existed (NULL) when this is the
    /// data directory's own node (or a supplied backend, which owns everything).
    pub fn owns(&self, node_id: Option<&str>) -> bool {
        match (&self.node, node_id) {
            (None, _) => true,
            (Some(node), None) => node.primary,
            (Some(node), Some(id)) => node.id == id,
        }
    }

    /// Whose work a row stored with `node_id` is, for start-up recovery: this process's
    /// (see [`Sandboxes::owns`]), a node the registry has `down` (lost: nobody will finish
    /// it), or a live node's (left alone).
    pub async fn owner_of_work(
        &self,
        store: &dyn kiln_store::Store,
        node_id: Option<&str>,
    ) -> Result<WorkOwner, kiln_store::StoreError> {
        if self.owns(node_id) {
            return Ok(WorkOwner::Mine);
        }
        let Some(node_id) = node_id else {
            return Ok(WorkOwner::Live);
        };
        Ok(match store.get_node(node_id).await? {
            Some(node) if node.status == kiln_store::NodeStatus::Down => {
                WorkOwner::Lost(node.node_id)
            }
            _ => WorkOwner::Live,
        })
    }

    /// The live sessions another node runs: theirs to end, serve and forward.
    pub async fn others_live_sessions(
        &self,
        store: &dyn kiln_store::Store,
    ) -> Result<std::collections::HashSet<String>, kiln_store::StoreError> {
        Ok(store
            .live_session_nodes()
            .await?
            .into_iter()
            .filter(|(_, node)| !self.owns(node.as_deref()))
            .map(|(session_id, _)| session_id)
            .collect())
    }

    /// Ephemeral nodes of this data directory whose process is gone, leased to the caller.
    pub fn dead_nodes(&self) -> Vec<DeadNode> {
        self.node
            .as_ref()
            .map(|n| kiln_runtime::node::dead_nodes(&n.data_dir, &n.id))
            .unwrap_or_default()
    }

    /// Tears down everything a dead node left under its runtime root (sandboxes, mounts,
    /// disks), then its directory.
    pub async fn reclaim_node(&self, dead: DeadNode) -> Result<(), String> {
        let Some(node) = &self.node else {
            return Ok(());
        };
        let root = dead.runtime_root();
        if root.exists() {
            let opened =
                kiln_runtime::open_at(&node.runtime, &root, &node.data_dir, &node.images_dir)
                    .map_err(|u| u.reason)?;
            // `shutdown` tears down every sandbox under the root, running or not.
            opened.runtime.shutdown().await.map_err(|e| e.to_string())?;
        }
        dead.remove().map_err(|e| e.to_string())
    }

    /// At a graceful stop, after the runtime's shutdown: an ephemeral node's directory
    /// goes and its lease is let go.
    pub fn retire_node(&self) {
        if let Some(node) = &self.node {
            let lease = node.lease.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(lease) = lease {
                lease.retire();
            }
        }
    }

    /// A backend supplied by the caller (a test's fake, another backend's crate), with
    /// the configuration's default limits.
    pub fn with_runtime(
        config: &Config,
        runtime: Arc<dyn Runtime>,
        location: impl Into<String>,
    ) -> Self {
        Sandboxes {
            state: Ok(Available {
                runtime,
                limits: kiln_runtime::default_limits(&config.runtime),
                location: location.into(),
                max_disk_bytes: config.runtime.max_disk_mib.saturating_mul(1 << 20),
            }),
            node: None,
        }
    }

    /// [`Sandboxes::with_runtime`] as the data directory's own node: its id is recorded
    /// with the sessions and jobs it runs and registered on PostgreSQL, so a supplied
    /// backend can be one node of several.
    pub fn with_runtime_as_node(
        config: &Config,
        runtime: Arc<dyn Runtime>,
        location: impl Into<String>,
    ) -> Self {
        match NodeLease::primary(&config.data_dir) {
            Ok(lease) => Sandboxes {
                node: Some(Node::new(config, lease)),
                ..Self::with_runtime(config, runtime, location)
            },
            Err(e) => Sandboxes::unavailable(format!(
                "cannot read or write {}: {e}",
                config.data_dir.join("node-id").display()
            )),
        }
    }

    /// No backend, for this reason.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Sandboxes {
            state: Err(reason.into()),
            node: None,
        }
    }

    /// The backend, or why there is none (the cause and the fix, for people).
    pub fn available(&self) -> Result<&Available, &str> {
        self.state.as_ref().map_err(String::as_str)
    }

    /// Why sandboxes cannot be made here, when they cannot.
    pub fn unavailable_reason(&self) -> Option<String> {
        self.state.as_ref().err().cloned()
    }
}

impl std::fmt::Debug for Sandboxes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.state {
            Ok(available) => f
                .debug_struct("Sandboxes")
                .field("location", &available.location)
                .field("limits", &available.limits)
                .finish(),
            Err(why) => f.debug_tuple("Sandboxes::Unavailable").field(why).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_none_is_unavailable_with_its_reason() {
        let mut config = Config::default();
        config.runtime.backend = kiln_config::RuntimeBackend::None;
        let sandboxes = Sandboxes::open(&config);
        assert_eq!(
            sandboxes.unavailable_reason().as_deref(),
            Some("runtime.backend is \"none\"")
        );
        assert!(sandboxes.available().is_err());
    }
}

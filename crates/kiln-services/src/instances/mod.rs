//! Instances: the general sandbox API served under `/v1` (document 002). An instance is
//! a session: a Codeset session's id works on every instance route, so an agent loop
//! started with the Codeset SDK can be forked, snapshotted or streamed from. Each area
//! (exec, files, snapshots, forks, port forwards) has its own module here; they all
//! reach a sandbox through [`InstanceService::sandbox`], which is where ownership and
//! readiness are checked, once.
mod crud;
pub mod exec;
pub mod files;
mod instance_locks;
pub mod network;
pub mod snapshots;
pub mod verifications;

use std::path::PathBuf;
use std::sync::Arc;

use kiln_config::InstancesConfig;
use kiln_runtime::{Runtime, SandboxId};
use kiln_store::{SessionRecord, SessionStatus, Store};

use crate::error::{ServiceError, ServiceResult};
use crate::sandboxes::Sandboxes;
use crate::sessions::SessionService;

pub use crud::{
    check_labels, valid_label_key, InstancePage, InstanceQuery, InstanceSource, InstanceUpdate,
    NewInstance, ResourceRequest, MAX_SEARCH_CHARS,
};
pub mod ports;

pub struct InstanceService {
    store: Arc<dyn Store>,
    /// `[instances]`: limits on what a caller attaches to an instance.
    config: InstancesConfig,
    sessions: Arc<SessionService>,
    sandboxes: Arc<Sandboxes>,
    ports: Arc<ports::PortRegistry>,
    /// `[snapshots]`: quotas, fork size, GC interval (`snapshots.rs`).
    snapshot_config: kiln_config::SnapshotsConfig,
    exec: Arc<exec::ExecHub>,
    /// Snapshots, forks and restores of one instance, one at a time.
    locks: instance_locks::InstanceLocks,
}

/// A running instance's sandbox, reached by its owner.
pub struct InstanceSandbox {
    pub runtime: Arc<dyn Runtime>,
    pub id: SandboxId,
    pub session: SessionRecord,
}

impl InstanceService {
    pub fn new(
        store: Arc<dyn Store>,
        sessions: Arc<SessionService>,
        sandboxes: Arc<Sandboxes>,
    ) -> Self {
        let exec = exec::ExecHub::new(
            kiln_config::ExecConfig::default(),
            sessions.config().max_output_bytes,
            std::env::temp_dir().join("kiln-exec-streams"),
        );
        Self {
            store,
            config: InstancesConfig::default(),
            sessions,
            sandboxes,
            ports: Arc::default(),
            snapshot_config: kiln_config::SnapshotsConfig::default(),
            exec: Arc::new(exec),
            locks: Default::default(),
        }
    }

    /// With the server's `[instances]` limits instead of the defaults.
    pub fn with_config(mut self, config: InstancesConfig) -> Self {
        self.config = config;
        self
    }

    pub fn config(&self) -> &InstancesConfig {
        &self.config
    }

    /// With these snapshot quotas and limits instead of the defaults.
    pub fn with_snapshot_config(mut self, config: kiln_config::SnapshotsConfig) -> Self {
        self.snapshot_config = config;
        self
    }

    /// The caller's instance in any status; anyone else's (or none) is "not found".
    pub(crate) async fn owned_instance(
        &self,
        user_id: &str,
        instance_id: &str,
    ) -> ServiceResult<SessionRecord> {
        self.sessions
            .owned(user_id, instance_id)
            .await
            .map_err(|e| match e {
                ServiceError::NotFound { .. } => {
                    ServiceError::not_found(format!("instance {instance_id}"))
                }
                other => other,
            })
    }

    /// Exec limits from the configuration, streams spooled under `spool_dir`.
    pub fn with_exec(mut self, config: kiln_config::ExecConfig, spool_dir: PathBuf) -> Self {
        let max_output = self.sessions.config().max_output_bytes;
        self.exec = Arc::new(exec::ExecHub::new(config, max_output, spool_dir));
        let hub = Arc::downgrade(&self.exec);
        self.sessions.on_end(move |session_id| {
            if let Some(hub) = hub.upgrade() {
                hub.instance_ended(session_id);
            }
        });
        self
    }

    /// The sandbox of `user_id`'s ready instance `instance_id`. Someone else's (or no)
    /// instance is "not found"; one that is starting or has ended is a conflict that
    /// says which.
    pub async fn sandbox(
        &self,
        user_id: &str,
        instance_id: &str,
    ) -> ServiceResult<InstanceSandbox> {
        let session = self.owned_instance(user_id, instance_id).await?;
        let status = session.status;
        let sandbox_id = match (&session.sandbox_id, status) {
            (Some(id), SessionStatus::Ready) => id.clone(),
            (_, SessionStatus::Creating) => {
                return Err(ServiceError::Conflict(format!(
                    "instance {instance_id} is still starting: wait until it is ready"
                )))
            }
            _ => {
                return Err(ServiceError::Conflict(format!(
                    "instance {instance_id} is {} and has no running sandbox",
                    status.as_str()
                )))
            }
        };
        let runtime = self
            .sandboxes
            .available()
            .map_err(|why| {
                ServiceError::Unavailable(format!(
                    "instances are not available on this server: {why}"
                ))
            })?
            .runtime
            .clone();
        let id = SandboxId::new(sandbox_id).map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok(InstanceSandbox {
            runtime,
            id,
            session,
        })
    }
}

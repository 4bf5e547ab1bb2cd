//! Replacing a ready session's sandbox by one started from a snapshot (a restore or a
//! rollback into the same instance). The session keeps its id, its worker, its queue and
//! its TTL; its sandbox gets a new id, recorded on the session (`sessions.sandbox_id`), so
//! restart recovery and every area reach the new one.
//!
//! Order: the new sandbox is started first (the old one keeps serving until then; a
//! failed start changes nothing), the worker is held (`Creating`) so queued work waits,
//! the store swaps the id only if the session is still ready with the old one (a close
//! racing the restore wins, and the new sandbox is destroyed), the new sandbox is watched,
//! then the old one is destroyed (after the answer). Its watcher sees a destroy, not a death, so the session
//! is not reported lost. Files come back as they were in the snapshot; processes do not
//! (the new sandbox starts with only its agent), and a command running in the old sandbox
//! at the swap is cut off.
use std::sync::Arc;

use kiln_runtime::{SandboxId, SandboxSource, SandboxSpec, SnapshotId};
use kiln_store::{SessionRecord, SessionStatus};

use super::{Readiness, SessionService};
use crate::error::{ServiceError, ServiceResult};
use crate::ids::random_token;

impl SessionService {
    /// Replaces `session`'s sandbox by a new one started from `snapshot`; returns the
    /// session as stored after the swap. `Conflict` if the session is not ready (or ended,
    /// or was replaced by someone else meanwhile).
    pub async fn replace_sandbox(
        self: &Arc<Self>,
        session: &SessionRecord,
        snapshot: &SnapshotId,
    ) -> ServiceResult<SessionRecord> {
        let id = &session.session_id;
        let not_ready = || {
            ServiceError::Conflict(format!(
                "instance {id} is not ready: nothing to restore into"
            ))
        };
        let old = match (&session.sandbox_id, session.status) {
            (Some(old), SessionStatus::Ready) => {
                SandboxId::new(old.clone()).map_err(|e| ServiceError::Internal(e.to_string()))?
            }
            _ => return Err(not_ready()),
        };
        let live = self.lock_live().get(id).cloned().ok_or_else(not_ready)?;
        let (runtime, base_limits, _) = self.runtime()?;
        let runtime = Arc::clone(runtime);
        // The same limits as the sandbox it replaces.
        let (limits, network) = self.fork_settings(session, base_limits).await?;
        let new = SandboxId::new(format!("{id}-r{}", random_token(8).to_ascii_lowercase()))
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let mut spec = SandboxSpec::new(new.clone(), SandboxSource::Snapshot(snapshot.clone()));
        spec.limits = limits;
        spec.hostname = "kiln".into();
        self.attach_egress(id, network, &mut spec);
        runtime.create(spec).await.map_err(|e| match e {
            kiln_runtime::RuntimeError::Capacity { .. } => ServiceError::admission(e),
            other => ServiceError::Internal(format!("cannot start the restored sandbox: {other}")),
        })?;
        // Queued work waits for the swap rather than running in a sandbox about to go.
        live.readiness.send_if_modified(|state| match state {
            Readiness::Ready(current) if *current == old => {
                *state = Readiness::Creating;
                true
            }
            _ => false,
        });
        let swapped = self
            .store
            .replace_session_sandbox(id, old.as_str(), new.as_str())
            .await;
        let back_to = match &swapped {
            Ok(Some(_)) => new.clone(),
            _ => old.clone(),
        };
        live.readiness.send_if_modified(|state| {
            if *state == Readiness::Creating {
                *state = Readiness::Ready(back_to.clone());
                true
            } else {
                false
            }
        });
        match swapped {
            Ok(Some(record)) => {
                self.watch_sandbox(id, new);
                // Nothing reaches the old sandbox any more: it goes after the answer (a
                // crash first leaves it to start-up reconciliation, which removes sandboxes
                // the store does not name).
                let this = Arc::clone(self);
                tokio::spawn(async move { this.destroy_sandbox(&old).await });
                self.changes.notify(id);
                Ok(record)
            }
            Ok(None) => {
                self.destroy_sandbox(&new).await;
                Err(ServiceError::Conflict(format!(
                    "instance {id} was closed or restored by another call meanwhile"
                )))
            }
            Err(e) => {
                self.destroy_sandbox(&new).await;
                Err(e.into())
            }
        }
    }
}

//! What other session work (verification jobs, `crate::verification_jobs`) may use of a
//! session: its store, its change feed, and a place in its worker's queue. Kept here so the
//! session's own state stays private to `sessions`.
use std::sync::Arc;
use std::time::Duration;

use kiln_store::{SessionRecord, Store};
use tokio::sync::mpsc::OwnedPermit;

use super::SessionService;
use crate::changes::Changes;
use crate::error::{ServiceError, ServiceResult};

pub(crate) use super::lost::not_live;
pub(crate) use super::worker::Work;

impl SessionService {
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub(crate) fn changes(&self) -> &Changes {
        &self.changes
    }

    /// How long a waiting read may wait for a change.
    pub(crate) fn long_poll_window(&self) -> Duration {
        self.long_poll()
    }

    /// A place in the queue of a running session's worker: work sent through it runs after
    /// everything queued before. `Conflict` when the session no longer runs here,
    /// `LimitExceeded` when its queue is full.
    pub(crate) fn reserve_work(&self, session: &SessionRecord) -> ServiceResult<OwnedPermit<Work>> {
        let session_id = &session.session_id;
        let live = self.lock_live().get(session_id).cloned().ok_or_else(|| {
            ServiceError::Conflict(format!("session {session_id} is no longer running"))
        })?;
        live.queue.clone().try_reserve_owned().map_err(|_| {
            ServiceError::LimitExceeded(format!(
                "session {session_id} has too much work queued; wait for some to finish"
            ))
        })
    }
}

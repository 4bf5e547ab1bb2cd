//! What the node registry (`crate::cluster`) asks of sessions: end another node's live
//! sessions when it is marked down, and drop what this node still runs after it was.
use chrono::{DateTime, Utc};
use kiln_runtime::SandboxId;
use kiln_store::{InteractionOutcome, JobStatus, SessionStatus};

use super::recovery::NODE_LOST;
use super::{Ended, Readiness, SessionService, INFRA_EXIT_CODE};
use crate::error::ServiceResult;

impl SessionService {
    /// The server's metrics registry, which the node registry adds its series to.
    pub(crate) fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// Sessions this process runs now (what its heartbeat reports).
    pub fn running_count(&self) -> usize {
        self.lock_live().len()
    }

    /// Ends the live sessions of `node_id`, a node marked down: `terminated` with error
    /// `node_lost`, billed up to their last heartbeat (once: `end_session_billed`), their
    /// unfinished interactions failed with [`INFRA_EXIT_CODE`] and their jobs in `error`.
    /// Its sandboxes run on its own machine: the node removes them when it comes back.
    /// Returns how many sessions this call ended.
    pub async fn reclaim_lost_node(
        &self,
        node_id: &str,
        now: DateTime<Utc>,
    ) -> ServiceResult<usize> {
        let message = format!("the node that ran this session ({node_id}) stopped heartbeating");
        let sessions: Vec<String> = self
            .store
            .live_session_nodes()
            .await?
            .into_iter()
            .filter(|(_, node)| node.as_deref() == Some(node_id))
            .map(|(id, _)| id)
            .collect();
        let mut ended = 0;
        for session_id in &sessions {
            let reason = Some((NODE_LOST.to_string(), message.clone()));
            if self
                .end_billed(session_id, SessionStatus::Terminated, now, true, reason)
                .await?
                .is_some()
            {
                ended += 1;
            }
            self.end_jobs(Some(session_id), JobStatus::Error, NODE_LOST, &message)
                .await?;
            self.changes.notify(session_id);
        }
        // After the ends: an interaction stored meanwhile would be refused (not live).
        for interaction in self.store.list_unfinished_interactions().await? {
            if !sessions.contains(&interaction.session_id) {
                continue;
            }
            let outcome = InteractionOutcome {
                exit_code: INFRA_EXIT_CODE,
                message: Some(message.clone()),
                finished_at: now,
                ..InteractionOutcome::default()
            };
            if self
                .store
                .complete_interaction(&interaction.interaction_id, &outcome)
                .await?
            {
                self.changes.notify(&interaction.session_id);
            }
        }
        Ok(ended)
    }

    /// After this node was marked down while it still ran (a network partition, a stall):
    /// every session it runs that the store no longer has live is forgotten and its
    /// sandbox destroyed. Returns how many it dropped.
    pub async fn drop_sessions_no_longer_live(&self) -> ServiceResult<usize> {
        let ids: Vec<String> = self.lock_live().keys().cloned().collect();
        let mut dropped = 0;
        for id in ids {
            let session = self.store.get_session(&id).await?;
            if session.as_ref().is_some_and(|s| s.status.is_live()) {
                continue;
            }
            if let Some(live) = self.forget(&id) {
                live.readiness
                    .send_replace(Readiness::Gone(Ended::lost(NODE_LOST)));
            }
            if let Some(sandbox) = session
                .and_then(|s| s.sandbox_id)
                .and_then(|s| SandboxId::new(s).ok())
            {
                self.destroy_sandbox(&sandbox).await;
            }
            dropped += 1;
        }
        Ok(dropped)
    }
}

//! The life around sessions: TTL expiry, start-up recovery, shutdown.
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln_runtime::SandboxId;
use kiln_store::{InteractionOutcome, JobStatus, SessionStatus};

use super::{Ended, Readiness, SessionService, INFRA_EXIT_CODE};
use crate::error::{ServiceError, ServiceResult};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub sessions_resumed: usize,
    pub sessions_ended: usize,
    pub sandboxes_removed: usize,
    pub interactions_failed: usize,
    pub jobs_failed: usize,
}

impl SessionService {
    /// Ends every live session whose TTL has passed at `now`. Returns how many it ended.
    pub async fn reap_expired(&self, now: DateTime<Utc>) -> usize {
        let expired: Vec<String> = self
            .lock_live()
            .iter()
            .filter(|(_, l)| *l.expires_at.lock().unwrap_or_else(|p| p.into_inner()) <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let mut ended = 0;
        for id in expired {
            match self.end(&id, SessionStatus::Terminated, None).await {
                Ok(Some(_)) => ended += 1,
                Ok(None) => {
                    self.forget(&id);
                }
                Err(e) => tracing::error!(session = %id, error = %e, "cannot expire session"),
            }
        }
        ended
    }

    /// Runs the TTL reaper until the service is dropped.
    pub fn spawn_reaper(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { break };
                let n = this.reap_expired(Utc::now()).await;
                if n > 0 {
                    tracing::info!(sessions = n, "expired sessions terminated");
                }
            }
        });
    }

    /// Start-up recovery: the store and the runtime are made to agree. Sandboxes nobody
    /// knows are removed; sessions whose sandbox is gone end (`error` while creating,
    /// `terminated` when ready); interactions cut off by the restart fail with
    /// [`INFRA_EXIT_CODE`]; sessions whose sandbox survived get a worker again.
    pub async fn recover(self: &Arc<Self>) -> ServiceResult<RecoveryReport> {
        let mut report = RecoveryReport::default();
        let now = Utc::now();
        for interaction in self.store.list_unfinished_interactions().await? {
            let outcome = InteractionOutcome {
                exit_code: INFRA_EXIT_CODE,
                message: Some("the server restarted before this interaction finished".into()),
                finished_at: now,
                ..InteractionOutcome::default()
            };
            if self
                .store
                .complete_interaction(&interaction.interaction_id, &outcome)
                .await?
            {
                report.interactions_failed += 1;
            }
        }
        report.jobs_failed = self
            .end_jobs(
                None,
                JobStatus::Error,
                "server_restarted",
                "the server restarted before this job finished",
            )
            .await?;
        let live = self
            .store
            .list_sessions_in(&[SessionStatus::Creating, SessionStatus::Ready])
            .await?;
        let known: Vec<SandboxId> = live
            .iter()
            .filter(|s| s.status == SessionStatus::Ready)
            .filter_map(|s| {
                s.sandbox_id
                    .as_deref()
                    .and_then(|id| SandboxId::new(id).ok())
            })
            .collect();
        let adopted = match self.runtime() {
            Ok((runtime, ..)) => {
                let r = runtime
                    .reconcile(&known)
                    .await
                    .map_err(|e| ServiceError::Internal(e.to_string()))?;
                report.sandboxes_removed = r.removed.len();
                r.adopted
            }
            Err(_) => Vec::new(),
        };
        for session in live {
            let alive = session
                .sandbox_id
                .as_deref()
                .is_some_and(|id| adopted.iter().any(|a| a.as_str() == id));
            if alive && session.expires_at > now {
                let id = SandboxId::new(session.sandbox_id.clone().unwrap_or_default())
                    .map_err(|e| ServiceError::Internal(e.to_string()))?;
                self.start_worker(&session, Readiness::Ready(id.clone()));
                self.watch_sandbox(&session.session_id, id);
                report.sessions_resumed += 1;
            } else if session.status == SessionStatus::Creating {
                let failed = self
                    .store
                    .mark_session_error(
                        &session.session_id,
                        "server_restarted",
                        "the server restarted while the sandbox was starting",
                        now,
                    )
                    .await?;
                if let Some(failed) = failed {
                    self.announce(crate::webhooks::EventType::SessionError, &failed)
                        .await;
                }
                report.sessions_ended += 1;
            } else {
                // A sandbox that vanished while nobody watched is billed up to its last
                // heartbeat; one that outlived its TTL, up to the TTL.
                let at = if alive {
                    now.min(session.expires_at)
                } else {
                    now
                };
                self.end_billed(
                    &session.session_id,
                    SessionStatus::Terminated,
                    at,
                    !alive,
                    None,
                )
                .await?;
                if let Some(sandbox) = session
                    .sandbox_id
                    .as_deref()
                    .filter(|_| alive)
                    .and_then(|id| SandboxId::new(id).ok())
                {
                    self.destroy_sandbox(&sandbox).await;
                }
                report.sessions_ended += 1;
            }
        }
        Ok(report)
    }

    /// Ends nothing in the store (a restart resumes or terminates sessions, billing them up
    /// to the heartbeat recorded here), but stops every sandbox so nothing is left running
    /// or mounted.
    pub async fn shutdown(&self) {
        // A last heartbeat: the next start bills these sessions up to now, not up to the
        // previous beat.
        if let Err(e) = self.record_heartbeats(Utc::now()).await {
            tracing::warn!(error = %e, "cannot record the last heartbeats");
        }
        let sessions: Vec<String> = self.lock_live().keys().cloned().collect();
        for id in &sessions {
            if let Some(live) = self.forget(id) {
                live.readiness.send_replace(Readiness::Gone(Ended::closed(
                    "the server is shutting down",
                )));
            }
        }
        if let Ok((runtime, ..)) = self.runtime() {
            if let Err(e) = runtime.shutdown().await {
                tracing::error!(error = %e, "runtime shutdown failed");
            }
        }
    }
}

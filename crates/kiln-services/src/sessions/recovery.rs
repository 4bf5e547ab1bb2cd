//! The life around sessions: TTL expiry, start-up recovery, shutdown.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln_runtime::node::DeadNode;
use kiln_runtime::SandboxId;
use kiln_store::{InteractionOutcome, JobStatus, SessionStatus};

use super::{Ended, Readiness, SessionService, INFRA_EXIT_CODE};
use crate::error::{ServiceError, ServiceResult};

/// The error code of a session whose node's process ended without stopping it.
pub const NODE_LOST: &str = "node_lost";

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
    /// [`INFRA_EXIT_CODE`]; sessions whose sandbox survived get a worker again. Only this
    /// node's sessions (and those of nodes whose process is gone, which end `node_lost`):
    /// another process's on the same store are left alone (ARCHITECTURE.md, "Nodes on
    /// one data directory").
    pub async fn recover(self: &Arc<Self>) -> ServiceResult<RecoveryReport> {
        let mut report = RecoveryReport::default();
        let now = Utc::now();
        // Listed before the owners, so every session they name is in `owners` if live.
        let interactions = self.store.list_unfinished_interactions().await?;
        let jobs = self.store.list_unfinished_verification_jobs().await?;
        let owners = Owners::read(self).await?;
        report.sessions_ended += self.reclaim_dead_nodes(&owners, now).await?;
        for interaction in interactions {
            if !owners.recovers(self, &interaction.session_id).await? {
                continue;
            }
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
        let mut job_sessions: Vec<String> = jobs.into_iter().map(|j| j.session_id).collect();
        job_sessions.sort();
        job_sessions.dedup();
        for session_id in job_sessions {
            if owners.recovers(self, &session_id).await? {
                report.jobs_failed += self
                    .end_jobs(
                        Some(&session_id),
                        JobStatus::Error,
                        "server_restarted",
                        "the server restarted before this job finished",
                    )
                    .await?;
            }
        }
        let live: Vec<_> = self
            .store
            .list_sessions_in(&[SessionStatus::Creating, SessionStatus::Ready])
            .await?
            .into_iter()
            .filter(|s| owners.is_mine(&s.session_id))
            .collect();
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
                self.reattach_egress(&session, &id).await;
                self.start_worker(&session, Readiness::Ready(id.clone()));
                self.watch_sandbox(&session.session_id, id);
                report.sessions_resumed += 1;
            } else if session.status == SessionStatus::Creating {
                let announce = self.session_event(|_| crate::webhooks::EventType::SessionError);
                self.store
                    .mark_session_error(
                        &session.session_id,
                        "server_restarted",
                        "the server restarted while the sandbox was starting",
                        now,
                        announce.as_deref(),
                    )
                    .await?;
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

    /// Closes every session this process runs, as a close would (billed, sandbox
    /// destroyed): a one-off process that stops early (`kiln datasets validate` on a
    /// signal) leaves nothing live behind. Returns how many it closed.
    pub async fn close_all(&self) -> usize {
        let ids: Vec<String> = self.lock_live().keys().cloned().collect();
        let mut closed = 0;
        for id in ids {
            match self.end(&id, SessionStatus::Closed, None).await {
                Ok(Some(_)) => closed += 1,
                Ok(None) => {
                    self.forget(&id);
                }
                Err(e) => tracing::error!(session = %id, error = %e, "cannot close session"),
            }
        }
        closed
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

/// Which node each live session belongs to, at the start of a recovery.
struct Owners {
    nodes: HashMap<String, Option<String>>,
    /// Sessions of this node (and, on the data directory's own node, of none).
    mine: HashSet<String>,
    /// Ephemeral nodes whose process is gone, leased to this recovery until reclaimed.
    dead: Mutex<Vec<DeadNode>>,
    dead_ids: HashSet<String>,
}

impl Owners {
    async fn read(service: &SessionService) -> ServiceResult<Self> {
        let nodes: HashMap<String, Option<String>> = service
            .store
            .live_session_nodes()
            .await?
            .into_iter()
            .collect();
        let mine = nodes
            .iter()
            .filter(|(_, node)| service.sandboxes.owns(node.as_deref()))
            .map(|(id, _)| id.clone())
            .collect();
        let dead = service.sandboxes.dead_nodes();
        Ok(Self {
            nodes,
            mine,
            dead_ids: dead.iter().map(|d| d.id.clone()).collect(),
            dead: Mutex::new(dead),
        })
    }

    fn is_mine(&self, session_id: &str) -> bool {
        self.mine.contains(session_id)
    }

    /// Whether what a session left unfinished (interactions, jobs) is this recovery's to
    /// fail: the session is this node's, a dead node's, or no longer live. A live session
    /// of another node, or one made after the owners were read, is not.
    async fn recovers(&self, service: &SessionService, session_id: &str) -> ServiceResult<bool> {
        if self.is_mine(session_id) {
            return Ok(true);
        }
        if let Some(node) = self.nodes.get(session_id) {
            return Ok(node.as_deref().is_some_and(|n| self.is_dead(n)));
        }
        let session = service.store.get_session(session_id).await?;
        Ok(!session.is_some_and(|s| s.status.is_live()))
    }

    fn is_dead(&self, node: &str) -> bool {
        self.dead_ids.contains(node)
    }
}

impl SessionService {
    /// Ends the sessions of nodes whose process is gone (`terminated`, `node_lost`, billed
    /// up to their last heartbeat; their jobs end in `error`) and tears down what those
    /// nodes left running. Returns how many sessions it ended.
    async fn reclaim_dead_nodes(
        &self,
        owners: &Owners,
        now: DateTime<Utc>,
    ) -> ServiceResult<usize> {
        let dead: Vec<DeadNode> =
            std::mem::take(&mut *owners.dead.lock().unwrap_or_else(|p| p.into_inner()));
        let mut ended = 0;
        for node in &dead {
            let message = format!("the process that ran this session (node {}) ended", node.id);
            for (session_id, _) in owners
                .nodes
                .iter()
                .filter(|(_, n)| n.as_deref() == Some(node.id.as_str()))
            {
                self.end_jobs(Some(session_id), JobStatus::Error, NODE_LOST, &message)
                    .await?;
                let reason = Some((NODE_LOST.to_string(), message.clone()));
                if self
                    .end_billed(session_id, SessionStatus::Terminated, now, true, reason)
                    .await?
                    .is_some()
                {
                    ended += 1;
                }
            }
        }
        // Their interactions are failed with this node's (`Owners::recovers`).
        for node in dead {
            let id = node.id.clone();
            if let Err(e) = self.sandboxes.reclaim_node(node).await {
                tracing::error!(node = %id, error = %e, "cannot tear down a dead node's sandboxes");
            } else {
                tracing::info!(node = %id, "reclaimed the sandboxes of a node whose process ended");
            }
        }
        Ok(ended)
    }
}

//! Sessions started from a snapshot instead of their sample's image: the copies of a fork
//! (`POST /v1/instances/{id}/fork`) and a restore into a new instance. Each is an ordinary
//! session of the same user and the same sample (so a fork of a Codeset session can still
//! be verified), `creating` until its sandbox answers, long-polled like any other.
use std::sync::Arc;

use chrono::Utc;
use kiln_runtime::{Limits, SandboxId, SandboxSource, SnapshotId};
use kiln_store::{Announcing, NewSession, SessionLimits, SessionRecord};
use tracing::Instrument;

use super::{sample_limits, Readiness, SessionService};
use crate::error::{ServiceError, ServiceResult};
use crate::ids::new_id;
use crate::network::NetworkPolicy;

impl SessionService {
    /// Starts `count` sessions of `parent`'s user and sample from `snapshot` (the runtime's
    /// id of one of `parent`'s snapshots) and returns them at once, `creating`. `source` is
    /// recorded as the snapshot each stands on before its sandbox starts, so the snapshot is
    /// never collected under it.
    ///
    /// All or nothing where it can be: the balance, the live-session limit and admission
    /// (room on the node for all `count` sandboxes) are checked for the whole call before
    /// any session exists, and a refusal refuses all of them. A store failure midway
    /// leaves the sessions made so far running (they are ordinary sessions; they expire).
    pub async fn create_forks(
        self: &Arc<Self>,
        parent: &SessionRecord,
        snapshot: &SnapshotId,
        source: &str,
        count: u32,
        announce: Announcing<'_, str>,
    ) -> ServiceResult<Vec<SessionRecord>> {
        let (runtime, base_limits, _) = self.runtime()?;
        let runtime = Arc::clone(runtime);
        let (limits, network) = self.fork_settings(parent, base_limits).await?;
        self.check_balance(&parent.user_id).await?;
        let live = self.store.count_live_sessions(&parent.user_id).await?;
        let max = u64::from(self.config.max_live_sessions_per_user);
        if live.saturating_add(u64::from(count)) > max {
            return Err(ServiceError::LimitExceeded(format!(
                "you have {live} live sessions and asked for {count} more (the limit is {max}); \
                 close some first or ask for fewer"
            )));
        }
        let mut reserved: Vec<SandboxId> = Vec::new();
        for _ in 0..count {
            let id =
                SandboxId::new(new_id("ses")).map_err(|e| ServiceError::Internal(e.to_string()))?;
            if let Err(e) = runtime.reserve(&id, &limits) {
                for id in &reserved {
                    runtime.release(id);
                }
                return Err(ServiceError::admission(e));
            }
            reserved.push(id);
        }
        // The parent's TTL, counted from now.
        let ttl = (parent.expires_at - parent.requested_at)
            .num_minutes()
            .clamp(1, i64::from(self.config.max_ttl_minutes));
        let mut made = Vec::with_capacity(reserved.len());
        let mut pending = reserved.into_iter();
        while let Some(id) = pending.next() {
            match self
                .insert_fork(parent, &id, (source, announce), &limits, ttl)
                .await
            {
                Ok(record) => {
                    self.metrics.session_created();
                    let live = self.start_worker(&record, Readiness::Creating);
                    let this = Arc::clone(self);
                    let session = record.clone();
                    let from = SandboxSource::Snapshot(snapshot.clone());
                    let network = network.clone();
                    tokio::spawn(
                        async move {
                            this.start_sandbox(session, from, limits, network, live)
                                .await
                        }
                        .in_current_span(),
                    );
                    made.push(record);
                }
                Err(e) => {
                    runtime.release(&id);
                    for id in pending {
                        runtime.release(&id);
                    }
                    return Err(e);
                }
            }
        }
        Ok(made)
    }

    async fn insert_fork(
        &self,
        parent: &SessionRecord,
        id: &SandboxId,
        (source, announce): (&str, Announcing<'_, str>),
        limits: &Limits,
        ttl_minutes: i64,
    ) -> ServiceResult<SessionRecord> {
        let now = Utc::now();
        let record = self
            .insert_session(&NewSession {
                session_id: id.as_str().to_string(),
                user_id: parent.user_id.clone(),
                source: parent.source.clone(),
                name: None,
                labels: parent.labels.clone(),
                limits: SessionLimits {
                    cpu_millicores: limits.cpu_millicores.map(u64::from),
                    memory_bytes: limits.memory_bytes,
                    disk_bytes: limits.disk_bytes,
                },
                requested_at: now,
                expires_at: now + chrono::Duration::minutes(ttl_minutes),
            })
            .await?;
        self.store
            .set_instance_source(&record.session_id, source, now, announce)
            .await?;
        Ok(record)
    }

    /// A fork's (or a restored) sandbox gets its parent's network policy (its sample's, read
    /// once here for every copy) and its limits: those recorded on the parent, else
    /// what its sample asks for (sessions made before limits were recorded), else the
    /// server's. A sample parent whose sample is gone cannot be forked (forks are verified
    /// against it).
    pub(super) async fn fork_settings(
        &self,
        parent: &SessionRecord,
        base: &Limits,
    ) -> ServiceResult<(Limits, Option<Arc<NetworkPolicy>>)> {
        let mut limits = *base;
        let mut network = None;
        if let Some((dataset, sample_id, version)) = parent.source.sample() {
            let sample = self
                .store
                .get_sample(dataset, sample_id, Some(version))
                .await?
                .ok_or_else(|| {
                    ServiceError::Conflict(format!(
                        "the sample {dataset}/{sample_id} of instance {} is gone",
                        parent.session_id
                    ))
                })?;
            limits = sample_limits::sample_limits(&sample.record, base, self.max_disk_bytes())?;
            network = self.sample_network(dataset, &sample.record)?.map(Arc::new);
        }
        let recorded = &parent.limits;
        if let Some(cpu) = recorded.cpu_millicores {
            limits.cpu_millicores = Some(u32::try_from(cpu).unwrap_or(u32::MAX));
        }
        limits.memory_bytes = recorded.memory_bytes.or(limits.memory_bytes);
        limits.disk_bytes = recorded.disk_bytes.or(limits.disk_bytes);
        Ok((limits, network))
    }

    /// Told at every session end: the snapshot GC looks again then, as what the session
    /// stood on may be free. (A handle of its own, so the GC need not keep the service.)
    pub(crate) fn ended_signal(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.ended)
    }
}

//! Snapshots, checkpoints, rollback and forks of instances.
//!
//! A snapshot is the runtime's frozen copy of an instance's files (`Runtime::snapshot`)
//! plus its row in the store: name (unique per instance among those not deleted), kind
//! (`snapshot` or `checkpoint`, what `rollback` goes back to), size, and the snapshot the
//! instance stood on (its parent: the runtime stacks a snapshot on its instance's layers,
//! so a parent must outlive its children). Quotas per user: count and bytes
//! (`[snapshots]`).
//!
//! Deleting hides a snapshot at once; the runtime's copy goes when nothing stands on it
//! (no live instance started from it, no snapshot above it): [`SnapshotGc`] removes such
//! copies when a snapshot is deleted, when a session ends, and every
//! `snapshots.gc_interval_secs`. A fork takes one snapshot of its own, outside the quota,
//! deleted as soon as its copies stand on it, so it goes with the last of them.
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::Utc;
use kiln_runtime::{RuntimeError, SnapshotId};
use kiln_store::{
    NewSnapshot, SessionRecord, SnapshotInsert, SnapshotKind, SnapshotQuota, SnapshotRecord, Store,
    StoreError,
};
use tokio::sync::Notify;

use super::InstanceService;
use crate::error::{ServiceError, ServiceResult};
use crate::ids::new_id;
use crate::sandboxes::Sandboxes;
use crate::sessions::SessionService;
use crate::webhooks::EventType;

/// Longest snapshot name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// A restore's result: the instance the snapshot now runs in.
pub struct Restored {
    /// A new instance (`creating`), or the same one with its sandbox replaced (`ready`).
    pub instance: SessionRecord,
    pub new_instance: bool,
}

impl InstanceService {
    /// Snapshots (or checkpoints) the caller's ready instance.
    pub async fn create_snapshot(
        &self,
        user_id: &str,
        instance_id: &str,
        name: Option<&str>,
        kind: SnapshotKind,
    ) -> ServiceResult<SnapshotRecord> {
        if let Some(name) = name {
            check_name(name)?;
        }
        self.sandbox(user_id, instance_id).await?;
        let config = &self.snapshot_config;
        let quota = SnapshotQuota {
            max_count: u64::from(config.max_per_user),
            max_bytes: config.max_bytes_per_user,
        };
        let usage = self.store.snapshot_usage(user_id).await?;
        if usage.count >= quota.max_count {
            return Err(over_quota(usage, quota));
        }
        if let Some(name) = name {
            let taken = self.store.list_snapshots(instance_id).await?;
            if taken.iter().any(|s| s.name == name) {
                return Err(name_taken(instance_id, name));
            }
        }
        let (sandbox, taken) = self.take_snapshot(user_id, instance_id).await?;
        let snapshot_id = new_id("snp");
        let record = NewSnapshot {
            name: name.map_or_else(|| snapshot_id.clone(), str::to_string),
            snapshot_id,
            user_id: user_id.to_string(),
            instance_id: instance_id.to_string(),
            parent_snapshot_id: self.store.instance_source(instance_id).await?,
            kind,
            size_bytes: taken.size_bytes,
            runtime_ref: taken.id.as_str().to_string(),
            created_at: Utc::now(),
            deleted: false,
        };
        let announce = self.sessions.snapshot_event(EventType::SnapshotCreated);
        let inserted = self
            .store
            .insert_snapshot(&record, quota, announce.as_deref())
            .await;
        let outcome = match inserted {
            Ok(SnapshotInsert::Inserted(record)) => return Ok(record),
            Ok(SnapshotInsert::OverQuota(usage)) => over_quota(usage, quota),
            Err(StoreError::Conflict("name")) => name_taken(instance_id, &record.name),
            Err(e) => e.into(),
        };
        if let Err(e) = sandbox.runtime.remove_snapshot(&taken.id).await {
            tracing::warn!(snapshot = %taken.id, error = %e, "cannot remove a snapshot that was not stored");
        }
        Err(outcome)
    }

    /// The instance's snapshots that are not deleted, newest first. Works on an instance
    /// that has ended too (its snapshots outlive it).
    pub async fn list_snapshots(
        &self,
        user_id: &str,
        instance_id: &str,
    ) -> ServiceResult<Vec<SnapshotRecord>> {
        self.owned_instance(user_id, instance_id).await?;
        Ok(self.store.list_snapshots(instance_id).await?)
    }

    /// One of the instance's snapshots; a deleted one, or one of another instance or
    /// user, is "not found".
    pub async fn get_snapshot(
        &self,
        user_id: &str,
        instance_id: &str,
        snapshot_id: &str,
    ) -> ServiceResult<SnapshotRecord> {
        self.owned_instance(user_id, instance_id).await?;
        match self.store.get_snapshot(snapshot_id).await? {
            Some(s)
                if s.user_id == user_id
                    && s.instance_id == instance_id
                    && s.deleted_at.is_none() =>
            {
                Ok(s)
            }
            _ => Err(ServiceError::not_found(format!("snapshot {snapshot_id}"))),
        }
    }

    /// Deletes a snapshot: hidden (and out of the quota) at once, removed from the runtime
    /// as soon as nothing stands on it. Returns whether it is gone from the runtime too.
    pub async fn delete_snapshot(
        &self,
        user_id: &str,
        instance_id: &str,
        snapshot_id: &str,
    ) -> ServiceResult<bool> {
        self.get_snapshot(user_id, instance_id, snapshot_id).await?;
        let announce = self.sessions.snapshot_event(EventType::SnapshotDeleted);
        if self
            .store
            .mark_snapshot_deleted(snapshot_id, Utc::now(), announce.as_deref())
            .await?
            .is_none()
        {
            return Err(ServiceError::not_found(format!("snapshot {snapshot_id}")));
        }
        self.snapshot_gc().run().await;
        let now = self.store.get_snapshot(snapshot_id).await?;
        Ok(now.is_some_and(|s| s.purged_at.is_some()))
    }

    /// Restores a snapshot into its instance (its sandbox replaced, the id kept) or, with
    /// `new_instance`, into a new instance of the same user and sample.
    pub async fn restore(
        &self,
        user_id: &str,
        instance_id: &str,
        snapshot_id: &str,
        new_instance: bool,
    ) -> ServiceResult<Restored> {
        let snapshot = self.get_snapshot(user_id, instance_id, snapshot_id).await?;
        self.restore_record(user_id, &snapshot, new_instance).await
    }

    /// Restores the instance's latest checkpoint, or the one named `name`, into it.
    pub async fn rollback(
        &self,
        user_id: &str,
        instance_id: &str,
        name: Option<&str>,
    ) -> ServiceResult<(SnapshotRecord, SessionRecord)> {
        self.owned_instance(user_id, instance_id).await?;
        let checkpoints = self.store.list_snapshots(instance_id).await?;
        let checkpoint = checkpoints
            .into_iter()
            .filter(|s| s.kind == SnapshotKind::Checkpoint)
            .find(|s| name.is_none_or(|name| s.name == name))
            .ok_or_else(|| match name {
                Some(name) => ServiceError::not_found(format!("checkpoint {name:?}")),
                None => ServiceError::Conflict(format!(
                    "instance {instance_id} has no checkpoint to roll back to: make one with \
                     POST /v1/instances/{instance_id}/snapshots {{\"kind\": \"checkpoint\"}}"
                )),
            })?;
        let restored = self.restore_record(user_id, &checkpoint, false).await?;
        Ok((checkpoint, restored.instance))
    }

    /// `count` new instances from one snapshot of the caller's ready instance, taken now.
    pub async fn fork(
        &self,
        user_id: &str,
        instance_id: &str,
        count: u32,
    ) -> ServiceResult<Vec<SessionRecord>> {
        let max = self.snapshot_config.max_fork_count;
        if !(1..=max).contains(&count) {
            return Err(ServiceError::invalid(
                &["count"],
                format!("Input should be between 1 and {max}"),
                if count < 1 {
                    "greater_than_equal"
                } else {
                    "less_than_equal"
                },
            ));
        }
        let (sandbox, taken) = self.take_snapshot(user_id, instance_id).await?;
        let snapshot_id = new_id("snp");
        let record = NewSnapshot {
            name: format!("fork-{snapshot_id}"),
            snapshot_id: snapshot_id.clone(),
            user_id: user_id.to_string(),
            instance_id: instance_id.to_string(),
            parent_snapshot_id: self.store.instance_source(instance_id).await?,
            kind: SnapshotKind::Snapshot,
            size_bytes: taken.size_bytes,
            runtime_ref: taken.id.as_str().to_string(),
            created_at: Utc::now(),
            deleted: false,
        };
        // Stored visible (outside the quota) until its forks stand on it, then deleted:
        // the GC cannot take it in between.
        let unlimited = SnapshotQuota {
            max_count: u64::MAX,
            max_bytes: u64::MAX,
        };
        // Not announced: a fork's own snapshot is never the user's to see.
        if let Err(e) = self.store.insert_snapshot(&record, unlimited, None).await {
            let _ = sandbox.runtime.remove_snapshot(&taken.id).await;
            return Err(e.into());
        }
        let forks = self
            .sessions
            .create_forks(&sandbox.session, &taken.id, &snapshot_id, count, None)
            .await;
        // `session.forked` goes in the same transaction: no crash can lose it.
        let announce = match &forks {
            Ok(made) => self.sessions.forked_event(
                instance_id,
                made.iter().map(|f| f.session_id.clone()).collect(),
            ),
            Err(_) => None,
        };
        self.store
            .mark_snapshot_deleted(&snapshot_id, Utc::now(), announce.as_deref())
            .await?;
        if forks.is_err() {
            self.snapshot_gc().run().await;
        }
        forks
    }

    /// Restores `snapshot`; the owner's webhooks hear of it (`snapshot.restored`) in the
    /// transaction that records what the instance now stands on.
    async fn restore_record(
        &self,
        user_id: &str,
        snapshot: &SnapshotRecord,
        new_instance: bool,
    ) -> ServiceResult<Restored> {
        let runtime_ref = SnapshotId::new(snapshot.runtime_ref.clone())
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let instance = self.owned_instance(user_id, &snapshot.instance_id).await?;
        if new_instance {
            let announce = self.sessions.restored_event(snapshot, true);
            let mut made = self
                .sessions
                .create_forks(
                    &instance,
                    &runtime_ref,
                    &snapshot.snapshot_id,
                    1,
                    announce.as_deref(),
                )
                .await?;
            let instance = made
                .pop()
                .ok_or_else(|| ServiceError::Internal("no instance was made".into()))?;
            return Ok(Restored {
                instance,
                new_instance: true,
            });
        }
        // No snapshot of this instance is freezing the sandbox about to be replaced.
        let _held = self.locks.lock(&snapshot.instance_id).await;
        // Checked (and the sandbox's id read) through the one gate every area uses.
        let current = self.sandbox(user_id, &snapshot.instance_id).await?.session;
        let instance = self
            .sessions
            .replace_sandbox(&current, &runtime_ref)
            .await?;
        let announce = self.sessions.restored_event(snapshot, false);
        self.store
            .set_instance_source(
                &instance.session_id,
                &snapshot.snapshot_id,
                Utc::now(),
                announce.as_deref(),
            )
            .await?;
        // What it stood on before may be free now.
        self.snapshot_gc().run().await;
        Ok(Restored {
            instance,
            new_instance: false,
        })
    }

    /// Start-up, before any request can take a snapshot: removes the runtime's copies that
    /// no snapshot row names (a stop between the copy and its row leaves one); how many.
    /// Copies the store knows, deleted ones included, are the GC's.
    pub async fn remove_unrecorded_snapshots(&self) -> ServiceResult<usize> {
        let Ok(available) = self.sandboxes.available() else {
            return Ok(0);
        };
        let runtime = &available.runtime;
        let held = match runtime.list_snapshots().await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the runtime's snapshots");
                return Ok(0);
            }
        };
        if held.is_empty() {
            return Ok(0);
        }
        let refs: Vec<String> = held.iter().map(|id| id.as_str().to_string()).collect();
        let known: std::collections::HashSet<String> = self
            .store
            .recorded_snapshot_refs(&refs)
            .await?
            .into_iter()
            .collect();
        let mut removed = 0;
        for id in held.iter().filter(|id| !known.contains(id.as_str())) {
            match runtime.remove_snapshot(id).await {
                Ok(()) | Err(RuntimeError::NotFound(_)) => removed += 1,
                Err(e) => {
                    tracing::warn!(snapshot = %id, error = %e, "cannot remove a snapshot that was never recorded")
                }
            }
        }
        Ok(removed)
    }

    /// The snapshot collector, to run once or in the background.
    pub fn snapshot_gc(&self) -> SnapshotGc {
        SnapshotGc {
            store: Arc::clone(&self.store),
            sandboxes: Arc::clone(&self.sandboxes),
            sessions: Arc::downgrade(&self.sessions),
            ended: self.sessions.ended_signal(),
            interval: Duration::from_secs(self.snapshot_config.gc_interval_secs),
        }
    }
}

/// Removes from the runtime the deleted snapshots nothing stands on any more.
pub struct SnapshotGc {
    store: Arc<dyn Store>,
    sandboxes: Arc<Sandboxes>,
    /// Weak: the collector stops with the service, and never keeps it (or its watchers)
    /// alive.
    sessions: Weak<SessionService>,
    ended: Arc<Notify>,
    interval: Duration,
}

/// How many snapshots one pass looks at per query.
const GC_BATCH: u64 = 100;

impl SnapshotGc {
    /// One collection; returns how many snapshots it removed. Removing one can free its
    /// parent, so it goes on until a pass finds nothing. Failures are logged, never fatal.
    pub async fn run(&self) -> usize {
        let Ok(available) = self.sandboxes.available() else {
            return 0;
        };
        let runtime = &available.runtime;
        let mut removed = 0;
        loop {
            let found = match self.store.purgeable_snapshots(GC_BATCH).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(error = %e, "snapshot GC cannot list its work");
                    return removed;
                }
            };
            let mut progress = false;
            for snapshot in &found {
                let gone = match SnapshotId::new(snapshot.runtime_ref.clone()) {
                    Ok(id) => match runtime.remove_snapshot(&id).await {
                        Ok(()) | Err(RuntimeError::NotFound(_)) => true,
                        Err(e) => {
                            tracing::warn!(snapshot = %snapshot.snapshot_id, error = %e, "cannot remove a snapshot");
                            false
                        }
                    },
                    // Not an id the runtime could have made: nothing there to remove.
                    Err(_) => true,
                };
                if gone {
                    match self
                        .store
                        .mark_snapshot_purged(&snapshot.snapshot_id, Utc::now())
                        .await
                    {
                        Ok(true) => {
                            removed += 1;
                            progress = true;
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(snapshot = %snapshot.snapshot_id, error = %e, "cannot record a removed snapshot");
                            return removed;
                        }
                    }
                }
            }
            if !progress {
                return removed;
            }
        }
    }

    /// Runs at once, then after every session end and every interval, while the
    /// session service lives.
    pub fn spawn(self) {
        tokio::spawn(async move {
            while self.sessions.strong_count() > 0 {
                let n = self.run().await;
                if n > 0 {
                    tracing::info!(snapshots = n, "snapshots nothing refers to removed");
                }
                tokio::select! {
                    _ = self.ended.notified() => {}
                    _ = tokio::time::sleep(self.interval) => {}
                }
            }
        });
    }
}

fn check_name(name: &str) -> ServiceResult<()> {
    let ok = (1..=MAX_NAME_BYTES).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            &["name"],
            format!(
                "a snapshot name is 1 to {MAX_NAME_BYTES} characters from A-Z, a-z, 0-9, '-', '_' and '.'"
            ),
            "string_pattern_mismatch",
        ))
    }
}

fn name_taken(instance_id: &str, name: &str) -> ServiceError {
    ServiceError::Conflict(format!(
        "instance {instance_id} already has a snapshot named {name:?}"
    ))
}

fn over_quota(usage: kiln_store::SnapshotUsage, quota: SnapshotQuota) -> ServiceError {
    ServiceError::LimitExceeded(format!(
        "your snapshots hold {} of {} allowed, {} of {} bytes (snapshots.max_per_user, \
         snapshots.max_bytes_per_user); delete some first",
        usage.count, quota.max_count, usage.bytes, quota.max_bytes
    ))
}

impl InstanceService {
    /// Snapshots the instance's current sandbox (returned with it), one snapshot or restore of it at a time.
    /// A failure because the instance ended (or its sandbox was replaced) meanwhile is the
    /// caller's conflict, not a server error.
    async fn take_snapshot(
        &self,
        user_id: &str,
        instance_id: &str,
    ) -> ServiceResult<(super::InstanceSandbox, kiln_runtime::Snapshot)> {
        let _held = self.locks.lock(instance_id).await;
        let sandbox = self.sandbox(user_id, instance_id).await?;
        match sandbox.runtime.snapshot(&sandbox.id).await {
            Ok(taken) => Ok((sandbox, taken)),
            Err(e) => {
                let now = self.sandbox(user_id, instance_id).await;
                match now {
                    Ok(still) if still.id == sandbox.id => Err(runtime_error(e)),
                    _ => Err(ServiceError::Conflict(format!(
                        "instance {instance_id} ended, or its sandbox was replaced, during the \
                         snapshot"
                    ))),
                }
            }
        }
    }
}

fn runtime_error(e: RuntimeError) -> ServiceError {
    match e {
        RuntimeError::Unsupported { what } => {
            ServiceError::Unavailable(format!("this server's sandbox backend has no {what}"))
        }
        RuntimeError::NotFound(_) => {
            ServiceError::Conflict("the instance's sandbox is gone".into())
        }
        other => ServiceError::Internal(format!("cannot snapshot the instance: {other}")),
    }
}

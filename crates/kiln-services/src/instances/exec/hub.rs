//! What runs on this server: each running exec (the agent's id for kill, the spool's
//! progress for readers) and the spools on disk, swept after their retention.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use kiln_config::ExecConfig;
use kiln_runtime::{Runtime, SandboxId};
use kiln_store::Store;
use tokio::sync::watch;

use super::spool::{spool_path, Progress};
use crate::error::{ServiceError, ServiceResult};

/// The running execs of this server, and the spools kept for reconnects.
pub struct ExecHub {
    pub(super) config: ExecConfig,
    pub(super) max_output_bytes: usize,
    pub(super) spool_dir: PathBuf,
    live: Mutex<HashMap<String, Arc<LiveExec>>>,
    /// Spools on disk this server wrote, by exec id.
    spools: Mutex<HashMap<String, SpoolEntry>>,
    sweeping: AtomicBool,
}

/// A spool this server wrote.
#[derive(Clone)]
pub(super) struct SpoolEntry {
    pub(super) session_id: String,
    /// Whose quota it counts against.
    pub(super) user_id: String,
    /// When its exec ended.
    pub(super) ended: Option<Instant>,
    /// Its instance ended: removed as soon as its exec has (nothing can reconnect to it).
    pub(super) instance_gone: bool,
}

pub(super) struct LiveExec {
    pub(super) session_id: String,
    pub(super) runtime: Arc<dyn Runtime>,
    pub(super) sandbox: SandboxId,
    /// The agent's id of the exec, once it started: what `kill` names.
    pub(super) agent_exec: Mutex<Option<u64>>,
    pub(super) progress: Option<watch::Receiver<Progress>>,
}

impl ExecHub {
    /// Execs keeping `max_output_bytes` per stream, spooling streams under `spool_dir`.
    pub fn new(config: ExecConfig, max_output_bytes: usize, spool_dir: PathBuf) -> Self {
        Self {
            config,
            max_output_bytes,
            spool_dir,
            live: Mutex::new(HashMap::new()),
            spools: Mutex::new(HashMap::new()),
            sweeping: AtomicBool::new(false),
        }
    }

    pub(super) fn live(&self) -> MutexGuard<'_, HashMap<String, Arc<LiveExec>>> {
        // Every critical section is one map operation: a poisoned map is consistent.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn spools(&self) -> MutexGuard<'_, HashMap<String, SpoolEntry>> {
        self.spools.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new exec, within `max_running_per_instance` for its instance.
    pub(super) fn admit(&self, exec_id: &str, live: Arc<LiveExec>) -> ServiceResult<()> {
        let mut map = self.live();
        let running = map
            .values()
            .filter(|l| l.session_id == live.session_id)
            .count();
        if running >= self.config.max_running_per_instance {
            return Err(ServiceError::LimitExceeded(format!(
                "instance {} already runs {running} execs (the limit is {}): wait for one to end",
                live.session_id, self.config.max_running_per_instance
            )));
        }
        map.insert(exec_id.to_string(), live);
        Ok(())
    }

    pub(super) fn ended(&self, exec_id: &str) {
        self.live().remove(exec_id);
        let mut spools = self.spools();
        let gone = match spools.get_mut(exec_id) {
            Some(entry) => {
                entry.ended = Some(Instant::now());
                entry.instance_gone
            }
            None => false,
        };
        if gone {
            spools.remove(exec_id);
            // A reader still streaming holds the file open and reads it to its end.
            let _ = std::fs::remove_file(spool_path(&self.spool_dir, exec_id));
        }
    }

    /// An instance ended (told by the session service, whatever ended it): its spools go
    /// now, or as soon as their exec has ended. The sweep is the fallback for instances
    /// ended on another node.
    pub(crate) fn instance_ended(&self, session_id: &str) {
        let mut spools = self.spools();
        let live = self.live();
        let mut gone = Vec::new();
        for (exec_id, entry) in spools.iter_mut() {
            if entry.session_id != session_id {
                continue;
            }
            entry.instance_gone = true;
            if !live.contains_key(exec_id) {
                gone.push(exec_id.clone());
            }
        }
        drop(live);
        for exec_id in gone {
            spools.remove(&exec_id);
            let _ = std::fs::remove_file(spool_path(&self.spool_dir, &exec_id));
        }
    }

    /// Bytes the spools of `user_id`'s execs take on disk now.
    pub(super) fn user_spool_bytes(&self, user_id: &str) -> u64 {
        let mine: Vec<String> = self
            .spools()
            .iter()
            .filter(|(_, e)| e.user_id == user_id)
            .map(|(id, _)| id.clone())
            .collect();
        mine.iter()
            .filter_map(|id| std::fs::metadata(spool_path(&self.spool_dir, id)).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Bytes the spools take on disk now.
    pub(super) fn spool_disk_used(&self) -> u64 {
        let Ok(entries) = std::fs::read_dir(&self.spool_dir) else {
            return 0;
        };
        entries
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    }

    pub(super) async fn signal(&self, exec_id: &str, signal: i32) -> ServiceResult<()> {
        let live = self.live().get(exec_id).cloned();
        let Some(live) = live else {
            return Err(ServiceError::Conflict(format!(
                "exec {exec_id} is not running"
            )));
        };
        let agent_exec = *live.agent_exec.lock().unwrap_or_else(|p| p.into_inner());
        let Some(agent_exec) = agent_exec else {
            return Err(ServiceError::Conflict(format!(
                "exec {exec_id} cannot be signalled: it has not started yet"
            )));
        };
        match live
            .runtime
            .kill_exec(&live.sandbox, agent_exec, Some(signal))
            .await
        {
            Ok(()) => Ok(()),
            // It ended between our look-up and the agent's.
            Err(e) if e.agent_error().is_some() => Err(ServiceError::Conflict(format!(
                "exec {exec_id} is not running"
            ))),
            Err(e) => Err(ServiceError::Internal(format!("cannot signal exec: {e}"))),
        }
    }

    /// Removes the spools whose exec ended more than the retention ago, or whose
    /// instance ended; spools left by an earlier run go by their age.
    pub(super) async fn sweep(&self, store: &dyn Store) {
        let retention = Duration::from_secs(self.config.stream_retention_secs);
        let Ok(entries) = std::fs::read_dir(&self.spool_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(exec_id) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            if self.live().contains_key(&exec_id) {
                continue;
            }
            let known = self.spools().get(&exec_id).cloned();
            let expired = match known {
                Some(SpoolEntry {
                    session_id, ended, ..
                }) => {
                    ended.is_some_and(|at| at.elapsed() >= retention)
                        || !matches!(store.get_session(&session_id).await,
                                     Ok(Some(s)) if s.status.is_live())
                }
                None => entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|at| at.elapsed().ok())
                    .is_none_or(|age| age >= retention),
            };
            if expired {
                let _ = std::fs::remove_file(&path);
                self.spools().remove(&exec_id);
            }
        }
    }

    pub(super) fn start_sweeper(self: &Arc<Self>, store: Arc<dyn Store>) {
        if self.sweeping.swap(true, Ordering::SeqCst) {
            return;
        }
        let hub: Weak<Self> = Arc::downgrade(self);
        let period = Duration::from_secs(self.config.stream_retention_secs.clamp(1, 60));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(hub) = hub.upgrade() else { return };
                hub.sweep(store.as_ref()).await;
            }
        });
    }
}

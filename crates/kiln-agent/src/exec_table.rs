//! The execs currently running, so `kill` and shutdown can signal their process groups.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Running execs by id, each with its process group.
#[derive(Default)]
pub struct ExecTable {
    next_id: AtomicU64,
    running: Mutex<HashMap<u64, Pid>>,
    emptied: Condvar,
}

/// Keeps an exec listed until dropped.
pub struct ExecRegistration {
    table: Arc<ExecTable>,
    id: u64,
}

impl ExecRegistration {
    /// The exec's id, as sent in `exec_started`.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for ExecRegistration {
    fn drop(&mut self) {
        let mut running = self.table.lock();
        running.remove(&self.id);
        if running.is_empty() {
            self.table.emptied.notify_all();
        }
    }
}

impl ExecTable {
    /// Lists a new exec whose process group is `pgid`.
    pub fn register(self: &Arc<Self>, pgid: Pid) -> ExecRegistration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.lock().insert(id, pgid);
        ExecRegistration {
            table: Arc::clone(self),
            id,
        }
    }

    /// Signals one exec's group; false when no such exec is running.
    pub fn signal(&self, id: u64, signal: Signal) -> bool {
        let Some(pgid) = self.lock().get(&id).copied() else {
            return false;
        };
        // ESRCH: the group emptied in the meantime; it is still "running" until its
        // exec thread reports, so this counts as delivered.
        let _ = killpg(pgid, signal);
        true
    }

    /// Signals every running exec's group.
    pub fn signal_all(&self, signal: Signal) {
        for pgid in self.lock().values() {
            let _ = killpg(*pgid, signal);
        }
    }

    /// Waits until no exec is running; false on timeout.
    pub fn wait_empty(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut running = self.lock();
        while !running.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            running = match self.emptied.wait_timeout(running, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Pid>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

//! The execs currently running, so `kill` and shutdown can signal their process groups.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Running execs by id, each with its process group.
#[derive(Default)]
pub struct ExecTable {
    next_id: AtomicU64,
    state: Mutex<TableState>,
    emptied: Condvar,
}

#[derive(Default)]
struct TableState {
    /// Execs whose command may still be running: `kill` and shutdown signal these.
    running: HashMap<u64, Pid>,
    /// Execs whose client has not been sent the result yet: shutdown waits for these.
    unreported: usize,
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

    /// The command is over: from now on `kill` answers `unknown_exec`, so a client that
    /// has its result can never signal a recycled process group.
    pub fn mark_finished(&self) {
        self.table.lock().running.remove(&self.id);
    }
}

impl Drop for ExecRegistration {
    /// Dropped once the result is sent (or could not be).
    fn drop(&mut self) {
        let mut state = self.table.lock();
        state.running.remove(&self.id);
        state.unreported -= 1;
        if state.unreported == 0 {
            self.table.emptied.notify_all();
        }
    }
}

impl ExecTable {
    /// Lists a new exec whose process group is `pgid`.
    pub fn register(self: &Arc<Self>, pgid: Pid) -> ExecRegistration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut state = self.lock();
        state.running.insert(id, pgid);
        state.unreported += 1;
        drop(state);
        ExecRegistration {
            table: Arc::clone(self),
            id,
        }
    }

    /// Signals one exec's group; false when no such exec is running.
    pub fn signal(&self, id: u64, signal: Signal) -> bool {
        let Some(pgid) = self.lock().running.get(&id).copied() else {
            return false;
        };
        // ESRCH: the group emptied an instant ago; the exec is still being wound up, so
        // this counts as delivered.
        let _ = killpg(pgid, signal);
        true
    }

    /// The process groups of the execs whose command is still running.
    pub fn running_groups(&self) -> HashSet<i32> {
        self.lock()
            .running
            .values()
            .map(|pgid| pgid.as_raw())
            .collect()
    }

    /// Signals every running exec's group.
    pub fn signal_all(&self, signal: Signal) {
        for pgid in self.lock().running.values() {
            let _ = killpg(*pgid, signal);
        }
    }

    /// Waits until every exec has reported its result; false on timeout.
    pub fn wait_all_reported(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while state.unreported > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = match self.emptied.wait_timeout(state, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }

    fn lock(&self) -> MutexGuard<'_, TableState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

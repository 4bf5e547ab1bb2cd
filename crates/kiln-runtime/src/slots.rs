//! The table of sandboxes every backend keeps: which ids are taken by a `create` still
//! starting, and which sandboxes run. One copy for the local, Docker and Kubernetes
//! backends; what a sandbox record holds is each backend's own (`S`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use kiln_protocol::AsyncAgentClient;

use crate::error::{Result, RuntimeError};
use crate::spec::{SandboxHandle, SandboxId, SandboxInfo};

/// What every backend's sandbox record tells: who it is and how to reach its agent.
pub(crate) trait AgentSandbox: Send + Sync + 'static {
    /// Its id.
    fn id(&self) -> &SandboxId;
    /// Talks to its agent.
    fn client(&self) -> &AsyncAgentClient;
    /// The working directory of commands that name none; `None`: the agent's own.
    fn workdir(&self) -> Option<&str>;
    /// When it became ready.
    fn created_at(&self) -> SystemTime;
    /// From the agent's hello.
    fn agent_version(&self) -> &str;

    /// What `create` returns.
    fn handle(&self) -> SandboxHandle {
        SandboxHandle {
            id: self.id().clone(),
            agent_version: self.agent_version().to_string(),
            created_at: self.created_at(),
        }
    }
}

/// A slot in the table of sandboxes.
#[derive(Debug)]
enum Slot<S> {
    /// `create` is in progress (the id is taken).
    Starting,
    /// Ready.
    Running(Arc<S>),
}

/// The table of sandboxes, by id.
#[derive(Debug)]
pub(crate) struct Slots<S> {
    table: Mutex<HashMap<SandboxId, Slot<S>>>,
}

impl<S> Default for Slots<S> {
    fn default() -> Self {
        Slots {
            table: Mutex::new(HashMap::new()),
        }
    }
}

impl<S> Slots<S> {
    fn lock(&self) -> MutexGuard<'_, HashMap<SandboxId, Slot<S>>> {
        // A panic while holding the lock leaves a consistent map (every update is a
        // single insert or remove), so a poisoned lock is still usable.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `id` is taken, starting or running.
    pub fn contains(&self, id: &SandboxId) -> bool {
        self.lock().contains_key(id)
    }

    /// Whether a `create` of `id` is in progress.
    pub fn is_starting(&self, id: &SandboxId) -> bool {
        matches!(self.lock().get(id), Some(Slot::Starting))
    }

    /// The running sandbox `id`, if there is one.
    pub fn running(&self, id: &SandboxId) -> Option<Arc<S>> {
        match self.lock().get(id) {
            Some(Slot::Running(sandbox)) => Some(Arc::clone(sandbox)),
            _ => None,
        }
    }

    /// The running sandbox `id`; `NotFound` (saying so while it starts) otherwise.
    pub fn get(&self, id: &SandboxId) -> Result<Arc<S>> {
        match self.lock().get(id) {
            Some(Slot::Running(sandbox)) => Ok(Arc::clone(sandbox)),
            Some(Slot::Starting) => Err(still_starting(id)),
            None => Err(RuntimeError::NotFound(id.to_string())),
        }
    }

    /// Takes `id` for a `create` (`AlreadyExists` if it is taken), runs `admit` then
    /// `start`, and puts the started sandbox in the table. When `admit` fails the id is
    /// free again; when `start` fails, too, and `release` gives back what `admit` held.
    pub async fn create<T>(
        &self,
        id: &SandboxId,
        admit: impl FnOnce() -> Result<()>,
        start: impl Future<Output = Result<T>>,
        release: impl FnOnce(),
    ) -> Result<Arc<S>>
    where
        T: Into<Arc<S>>,
    {
        {
            let mut table = self.lock();
            if table.contains_key(id) {
                return Err(RuntimeError::AlreadyExists(id.to_string()));
            }
            table.insert(id.clone(), Slot::Starting);
        }
        if let Err(err) = admit() {
            self.remove(id);
            return Err(err);
        }
        match start.await {
            Ok(sandbox) => {
                let sandbox = sandbox.into();
                self.insert(id, Arc::clone(&sandbox));
                Ok(sandbox)
            }
            Err(err) => {
                self.remove(id);
                release();
                Err(err)
            }
        }
    }

    /// Puts a running sandbox in the table (a create's, or one adopted after a restart).
    pub fn insert(&self, id: &SandboxId, sandbox: Arc<S>) {
        self.lock().insert(id.clone(), Slot::Running(sandbox));
    }

    /// Frees `id`, whatever its slot held.
    pub fn remove(&self, id: &SandboxId) {
        self.lock().remove(id);
    }

    /// For `destroy`: takes the running sandbox `id` out of the table. `None` when the
    /// table does not hold it; `NotFound` while it starts (its `create` cleans up).
    pub fn take(&self, id: &SandboxId) -> Result<Option<Arc<S>>> {
        let mut table = self.lock();
        match table.get(id) {
            Some(Slot::Starting) => Err(still_starting(id)),
            Some(Slot::Running(_)) => match table.remove(id) {
                Some(Slot::Running(sandbox)) => Ok(Some(sandbox)),
                _ => Ok(None),
            },
            None => Ok(None),
        }
    }

    /// For `shutdown`: empties the table and returns the running sandboxes.
    pub fn drain(&self) -> Vec<Arc<S>> {
        self.lock()
            .drain()
            .filter_map(|(_, slot)| match slot {
                Slot::Running(sandbox) => Some(sandbox),
                Slot::Starting => None,
            })
            .collect()
    }

    /// The running sandboxes.
    pub fn all(&self) -> Vec<Arc<S>> {
        self.lock()
            .values()
            .filter_map(|slot| match slot {
                Slot::Running(sandbox) => Some(Arc::clone(sandbox)),
                Slot::Starting => None,
            })
            .collect()
    }
}

impl<S: AgentSandbox> Slots<S> {
    /// For `list`: the running sandboxes by id, with the memory `memory` reads of each.
    pub fn infos(&self, memory: impl Fn(&S) -> Option<u64>) -> Vec<SandboxInfo> {
        let mut infos: Vec<SandboxInfo> = self
            .all()
            .iter()
            .map(|sandbox| SandboxInfo {
                id: sandbox.id().clone(),
                created_at: sandbox.created_at(),
                memory_bytes: memory(sandbox),
            })
            .collect();
        infos.sort_by(|a, b| a.id.cmp(&b.id));
        infos
    }
}

fn still_starting(id: &SandboxId) -> RuntimeError {
    RuntimeError::NotFound(format!("{id} (still starting)"))
}

//! The table of sandboxes every backend keeps: which ids are taken by a `create` still
//! starting, and which sandboxes run. One copy for the local, Docker and Kubernetes
//! backends; what a sandbox record holds is each backend's own (`S`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use kiln_protocol::AsyncAgentClient;
use tokio::sync::watch;

use crate::error::{Result, RuntimeError};
use crate::runtime::SandboxExit;
use crate::spec::{SandboxHandle, SandboxId, SandboxInfo};

/// What the shared code reads of a backend's sandbox record.
pub(crate) struct AgentView<'a> {
    pub id: &'a SandboxId,
    /// Talks to its agent.
    pub client: &'a AsyncAgentClient,
    /// The working directory of commands that name none; `None`: the agent's own.
    pub workdir: Option<&'a str>,
    /// When it became ready.
    pub created_at: SystemTime,
    /// From the agent's hello.
    pub agent_version: &'a str,
    /// Holds how the sandbox ended, once it has.
    pub exit: &'a watch::Receiver<Option<SandboxExit>>,
}

/// A backend's record of a running sandbox, whose agent the shared code calls.
pub(crate) trait AgentSandbox: Send + Sync + 'static {
    /// Who it is and how its agent is reached.
    fn view(&self) -> AgentView<'_>;

    /// Talks to its agent.
    fn client(&self) -> &AsyncAgentClient {
        self.view().client
    }

    /// What `create` returns.
    fn handle(&self) -> SandboxHandle {
        let view = self.view();
        SandboxHandle {
            id: view.id.clone(),
            agent_version: view.agent_version.to_string(),
            created_at: view.created_at,
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
            .map(|sandbox| {
                let view = sandbox.view();
                SandboxInfo {
                    id: view.id.clone(),
                    created_at: view.created_at,
                    memory_bytes: memory(sandbox),
                }
            })
            .collect();
        infos.sort_by(|a, b| a.id.cmp(&b.id));
        infos
    }
}

fn still_starting(id: &SandboxId) -> RuntimeError {
    RuntimeError::NotFound(format!("{id} (still starting)"))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[derive(Debug)]
    struct Fake {
        id: SandboxId,
        client: AsyncAgentClient,
        exit: watch::Receiver<Option<SandboxExit>>,
    }

    impl AgentSandbox for Fake {
        fn view(&self) -> AgentView<'_> {
            AgentView {
                id: &self.id,
                client: &self.client,
                workdir: None,
                created_at: SystemTime::UNIX_EPOCH,
                agent_version: "test",
                exit: &self.exit,
            }
        }
    }

    fn fake(id: &str) -> Fake {
        Fake {
            id: SandboxId::new(id).unwrap(),
            client: AsyncAgentClient::unix("/nonexistent/agent.sock"),
            exit: watch::channel(None).1,
        }
    }

    fn id(id: &str) -> SandboxId {
        SandboxId::new(id).unwrap()
    }

    #[tokio::test]
    async fn a_starting_id_is_taken_but_not_found() {
        let slots = Slots::<Fake>::default();
        let (a, released) = (id("a"), Cell::new(false));
        let start = async {
            // While `start` runs, the id is taken and neither found nor destroyable.
            assert!(slots.contains(&a) && slots.is_starting(&a));
            let again = slots.create(&a, || Ok(()), async { Ok(fake("a")) }, || {});
            assert!(matches!(again.await, Err(RuntimeError::AlreadyExists(_))));
            let err = slots.get(&a).unwrap_err().to_string();
            assert!(err.contains("still starting"), "{err}");
            assert!(slots.take(&a).is_err());
            assert!(slots.running(&a).is_none());
            Ok(fake("a"))
        };
        let made = slots.create(&a, || Ok(()), start, || released.set(true));
        let handle = made.await.unwrap().handle();
        assert_eq!(
            (handle.id, handle.agent_version),
            (a.clone(), "test".into())
        );
        assert!(!released.get());
        assert!(slots.get(&a).is_ok() && !slots.is_starting(&a));
        assert!(slots.take(&a).unwrap().is_some());
        assert!(!slots.contains(&a) && slots.take(&a).unwrap().is_none());
    }

    #[tokio::test]
    async fn a_failed_create_frees_its_id() {
        let slots = Slots::<Fake>::default();
        let (a, released) = (id("a"), Cell::new(0));
        // Admission refused: nothing was held, so nothing is released.
        let refused = slots.create(
            &a,
            || Err(RuntimeError::AlreadyExists("full".into())),
            async { Ok(fake("a")) },
            || released.set(released.get() + 1),
        );
        assert!(refused.await.is_err());
        assert_eq!((slots.contains(&a), released.get()), (false, 0));
        // The start failed: what admission held is given back.
        let failed = slots.create(
            &a,
            || Ok(()),
            async { Err::<Fake, _>(RuntimeError::NotFound("image".into())) },
            || released.set(released.get() + 1),
        );
        assert!(matches!(failed.await, Err(RuntimeError::NotFound(_))));
        assert_eq!((slots.contains(&a), released.get()), (false, 1));
    }

    #[test]
    fn list_and_shutdown_see_only_running_sandboxes() {
        let slots = Slots::<Fake>::default();
        for name in ["b", "a"] {
            slots.insert(&id(name), Arc::new(fake(name)));
        }
        slots.lock().insert(id("c"), Slot::Starting);
        let listed: Vec<_> = slots.infos(|_| Some(7)).into_iter().map(|i| i.id).collect();
        assert_eq!(listed, [id("a"), id("b")]);
        assert_eq!(slots.drain().len(), 2);
        assert!(!slots.contains(&id("c")) && slots.all().is_empty());
    }
}

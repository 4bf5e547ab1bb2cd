//! Warm sandboxes (`LocalConfig::warm_pools`): per image, up to N sandboxes started ahead
//! with exactly what a create of that image asks for (layers, environment, working
//! directory, hostname, limits), taken by a create that fits, and refilled in the
//! background. A burst of creates then costs a rename each instead of a sandbox start
//! each (mounts, cgroup, bubblewrap, the agent's start), which is what a 2-core host
//! spends its time on (`bench/concurrency`).
//!
//! A taken sandbox's directory is renamed to its new id; its processes stay in the cgroup
//! they were started in, whose name its state file records (cgroup v2 cannot rename
//! one, and moving the processes would put them outside their cgroup namespace). Unclaimed
//! warm sandboxes live only as long as this runtime: a restarted server tears them
//! down as unknown, like the Kubernetes backend's warm Pods (`kubernetes/warm.rs`).
//! A create with host binds or an egress never takes one.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use kiln_protocol::AsyncAgentClient;

use crate::error::RuntimeError;
use crate::local::admission::{Admission, Budget};
use crate::local::layout::{SandboxDirs, SandboxState};
use crate::local::sandbox::Sandbox;
use crate::local::spec::LocalSpec;
use crate::local::LocalRuntime;
use crate::slots::Slots;
use crate::spec::{Limits, SandboxId};

/// How long no create must have taken a warm sandbox before the pool is refilled.
const QUIET: Duration = Duration::from_millis(50);

/// What a warm sandbox was started with, which a create must ask for to take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WarmClass {
    layers: Vec<PathBuf>,
    env: BTreeMap<String, String>,
    workdir: Option<String>,
    hostname: String,
    limits: Limits,
}

impl WarmClass {
    /// `None` for a spec no warm sandbox can serve (host binds, an egress).
    fn of(spec: &LocalSpec) -> Option<Self> {
        (spec.binds.is_empty() && spec.egress.is_none()).then(|| WarmClass {
            layers: spec.layers.dirs().to_vec(),
            env: spec.env.clone(),
            workdir: spec.workdir.clone(),
            hostname: spec.hostname.clone(),
            limits: spec.limits,
        })
    }
}

/// The warm sandboxes of one runtime.
#[derive(Debug, Default)]
pub(crate) struct WarmPools {
    /// Ready ones, by class (few classes: a linear search).
    ready: Mutex<Vec<(WarmClass, Vec<Sandbox>)>>,
    /// The classes a filler task is refilling now (one per class).
    filling: Mutex<Vec<WarmClass>>,
    /// When a create last took one: a filler waits for a quiet moment, so that a burst
    /// of creates does not pay for its own refill.
    last_take: Mutex<Option<Instant>>,
    /// Set at shutdown: fillers stop, and what they were starting is torn down.
    closed: AtomicBool,
    /// The directory (and cgroup) names of warm sandboxes ready or starting: reconcile
    /// leaves them alone.
    names: Mutex<HashSet<String>>,
    next: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WarmPools {
    /// Whether `name` is a warm sandbox of this runtime, ready or starting.
    pub(crate) fn holds(&self, name: &str) -> bool {
        lock(&self.names).contains(name)
    }

    fn ready_of(&self, class: &WarmClass) -> usize {
        lock(&self.ready)
            .iter()
            .find(|(c, _)| c == class)
            .map_or(0, |(_, pool)| pool.len())
    }

    /// A live warm sandbox of `class`, out of the pool; dead ones are dropped (and
    /// returned for teardown) on the way.
    fn take(&self, class: &WarmClass) -> (Option<Sandbox>, Vec<Sandbox>) {
        *lock(&self.last_take) = Some(Instant::now());
        let mut dead = Vec::new();
        let mut ready = lock(&self.ready);
        let Some((_, pool)) = ready.iter_mut().find(|(c, _)| c == class) else {
            return (None, dead);
        };
        while let Some(sandbox) = pool.pop() {
            if sandbox.exit.receiver().borrow().is_none() {
                return (Some(sandbox), dead);
            }
            dead.push(sandbox);
        }
        (None, dead)
    }

    /// Marks a filler of `class` running; `false` if one already is (it will see the
    /// new deficit).
    fn begin_fill(&self, class: &WarmClass) -> bool {
        let mut filling = lock(&self.filling);
        if filling.contains(class) {
            return false;
        }
        filling.push(class.clone());
        true
    }

    /// Whether the filler of `class` should start another (the pool is short of `size`
    /// and it has not failed); when not, it is marked stopped under the same lock that
    /// `begin_fill` takes, so no deficit is left without a filler.
    fn go_on_filling(&self, class: &WarmClass, size: usize, failed: bool) -> bool {
        let mut filling = lock(&self.filling);
        if !failed && !self.closed.load(Ordering::SeqCst) && self.ready_of(class) < size {
            return true;
        }
        filling.retain(|c| c != class);
        false
    }

    /// How long to wait before the next start, for creates to stop taking ones.
    fn quiet_wait(&self) -> Option<Duration> {
        let last = (*lock(&self.last_take))?;
        QUIET.checked_sub(last.elapsed())
    }

    /// Adds a started one to the pool; hands it back once the pools are closed.
    fn put(&self, class: &WarmClass, sandbox: Sandbox) -> Option<Sandbox> {
        let mut ready = lock(&self.ready);
        if self.closed.load(Ordering::SeqCst) {
            return Some(sandbox);
        }
        match ready.iter_mut().find(|(c, _)| c == class) {
            Some((_, pool)) => pool.push(sandbox),
            None => ready.push((class.clone(), vec![sandbox])),
        }
        None
    }

    /// Every ready warm sandbox, out of the pools, which take no more (shutdown).
    pub(crate) fn drain(&self) -> Vec<Sandbox> {
        let mut ready = lock(&self.ready);
        self.closed.store(true, Ordering::SeqCst);
        ready.drain(..).flat_map(|(_, pool)| pool).collect()
    }
}

impl LocalRuntime {
    /// A warm sandbox of `spec`'s class made `spec.id`'s, when the pool (of `size`) has
    /// one; the pool is refilled either way. `None`: start one the usual way.
    pub(crate) async fn take_warm(&self, spec: &LocalSpec, size: usize) -> Option<Sandbox> {
        let class = WarmClass::of(spec)?;
        let (taken, dead) = self.warm.take(&class);
        for sandbox in dead {
            self.discard_warm(sandbox).await;
        }
        self.fill_warm(spec, &class, size);
        let warm = taken?;
        let name = warm.spec.id.to_string();
        match self.claim(warm, spec) {
            Ok(sandbox) => {
                lock(&self.warm.names).remove(&name);
                Some(sandbox)
            }
            Err((err, warm)) => {
                tracing::warn!(sandbox = %spec.id, warm = name, error = %err,
                    "cannot take a warm sandbox; starting one");
                self.discard_warm(*warm).await;
                None
            }
        }
    }

    /// Records the warm sandbox's cgroup in its state, then renames its directory to
    /// `spec.id`'s (in that order: a crash in between leaves a state that names the right
    /// cgroup under either name); on failure it is handed back for teardown.
    fn claim(
        &self,
        warm: Sandbox,
        spec: &LocalSpec,
    ) -> std::result::Result<Sandbox, (RuntimeError, Box<Sandbox>)> {
        let dirs = SandboxDirs::new(&self.sandboxes_dir(), &self.socket_root, spec.id.as_str());
        if dirs.base.exists() {
            return Err((
                RuntimeError::AlreadyExists(spec.id.to_string()),
                Box::new(warm),
            ));
        }
        let created_at = SystemTime::now();
        let state = SandboxState {
            cgroup: Some(warm.spec.id.to_string()),
            ..SandboxState::new(spec, warm.init_pid, created_at)
        };
        if let Err(err) = warm.dirs.write_state(&state) {
            return Err((err, Box::new(warm)));
        }
        if let Err(e) = fs::rename(&warm.dirs.base, &dirs.base) {
            let err = RuntimeError::io("cannot rename", &warm.dirs.base, e);
            return Err((err, Box::new(warm)));
        }
        Ok(Sandbox {
            spec: spec.clone(),
            client: AsyncAgentClient::unix(dirs.socket()),
            dirs,
            cgroup: warm.cgroup,
            init_pid: warm.init_pid,
            created_at,
            agent_version: warm.agent_version,
            monitor: warm.monitor,
            stderr_tail: warm.stderr_tail,
            exit: warm.exit,
            egress: warm.egress,
        })
    }

    /// Starts warm sandboxes of `spec`'s class in the background, one at a time, up to
    /// `size`, each once creates have stopped taking them for a moment ([`QUIET`]).
    fn fill_warm(&self, spec: &LocalSpec, class: &WarmClass, size: usize) {
        if !self.warm.begin_fill(class) {
            return;
        }
        let worker = self.warm_worker();
        let (mut template, class) = (spec.clone(), class.clone());
        tokio::spawn(async move {
            let mut failed = false;
            while worker.warm.go_on_filling(&class, size, failed) {
                if let Some(wait) = worker.warm.quiet_wait() {
                    tokio::time::sleep(wait).await;
                    continue;
                }
                let n = worker.warm.next.fetch_add(1, Ordering::Relaxed);
                let Ok(id) = SandboxId::new(format!("warm-{}-{n}", std::process::id())) else {
                    failed = true;
                    continue;
                };
                lock(&worker.warm.names).insert(id.to_string());
                template.id = id.clone();
                match worker.start(&template).await.map(Arc::try_unwrap) {
                    Ok(Ok(sandbox)) => match worker.warm.put(&class, sandbox) {
                        None => continue,
                        Some(closed) => worker.discard_warm(closed).await,
                    },
                    Ok(Err(shared)) => {
                        let _ = worker.destroy_sandbox(shared).await;
                    }
                    // Stop filling after a failure: the next create tries again.
                    Err(err) => tracing::warn!(error = %err, "cannot start a warm sandbox"),
                }
                lock(&worker.warm.names).remove(id.as_str());
                failed = true;
            }
            if !failed {
                tracing::info!(
                    ready = worker.warm.ready_of(&class),
                    size,
                    "warm pool filled"
                );
            }
        });
    }

    /// Tears down a warm sandbox nobody will take.
    async fn discard_warm(&self, sandbox: Sandbox) {
        let name = sandbox.spec.id.to_string();
        if let Err(err) = self.destroy_sandbox(Arc::new(sandbox)).await {
            tracing::warn!(warm = name, error = %err, "cannot tear down a warm sandbox");
        }
        lock(&self.warm.names).remove(&name);
    }

    /// Tears down every warm sandbox (shutdown).
    pub(crate) async fn drain_warm(&self) {
        for sandbox in self.warm.drain() {
            self.discard_warm(sandbox).await;
        }
    }

    /// A runtime on the same root, cgroups, disks and pools, for a background task:
    /// what `start` uses. Its own table and admission stay empty (warm sandboxes are
    /// nobody's until taken).
    fn warm_worker(&self) -> LocalRuntime {
        LocalRuntime {
            config: self.config.clone(),
            cgroups: Arc::clone(&self.cgroups),
            staged: self.staged.clone(),
            seccomp_files: self.seccomp_files.clone(),
            slots: Slots::default(),
            socket_root: self.socket_root.clone(),
            disks: Arc::clone(&self.disks),
            disk_mode: self.disk_mode,
            admission: Admission::new(Budget {
                memory_bytes: self.memory_budget(),
                memory_overcommit: self.config.memory_overcommit,
                disk_overcommit: self.config.disk_overcommit,
            }),
            images: None,
            warm: Arc::clone(&self.warm),
            host_tuned: Arc::clone(&self.host_tuned),
        }
    }
}
